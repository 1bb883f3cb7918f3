//! The `parallax-mcp` command line: the server's entry points (`serve`, `stdio`, `migrate`) and the
//! human side of the product (workspaces, members, work, agents, assignments, delegations,
//! activity).
//!
//! Member commands resolve the caller from `--workspace` and `--as` through [`crate::auth::member`]
//! and call one [`Service`] method; the service checks the role. This module only parses, renders
//! and maps errors to exit codes ([`CliError::exit_code`]), in one place.

pub mod args;
mod commands;
mod generate;
mod output;

pub use args::Cli;

use crate::config::Config;
use crate::mcp::ServeError;
use crate::service::ServiceError;
use crate::store::StoreError;
use std::io::Write;

/// Why a command failed. The message is the one line the user sees after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A missing flag or variable the command needs (exit 2, like clap's own usage errors).
    #[error("{0}")]
    Usage(String),
    /// Input the CLI itself checks before calling a service (e.g. `--metadata` JSON).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
    /// `activity verify` found the chain broken; the message names where.
    #[error("{0}")]
    Tampered(String),
}

/// Exit codes, also listed in `--help`.
pub mod exit {
    pub const INTERNAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INVALID: u8 = 3;
    pub const NOT_FOUND: u8 = 4;
    pub const NOT_ALLOWED: u8 = 5;
    pub const CONFLICT: u8 = 6;
    pub const QUOTA: u8 = 7;
    pub const UNAVAILABLE: u8 = 8;
    pub const TAMPERED: u8 = 9;
}

impl CliError {
    /// The process exit code for this error; distinct per kind so scripts can branch on it.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Invalid(_) => exit::INVALID,
            CliError::Service(e) | CliError::Serve(ServeError::Service(e)) => service_code(e),
            CliError::Store(e) | CliError::Serve(ServeError::Store(e)) => store_code(e),
            CliError::Serve(ServeError::Config(_)) => exit::USAGE,
            CliError::Tampered(_) => exit::TAMPERED,
            CliError::Serve(_) | CliError::Output(_) => exit::INTERNAL,
        }
    }
}

fn service_code(e: &ServiceError) -> u8 {
    match e.code() {
        "invalid" => exit::INVALID,
        "not_found" => exit::NOT_FOUND,
        "forbidden" | "unauthenticated" => exit::NOT_ALLOWED,
        "conflict" => exit::CONFLICT,
        "quota_exceeded" => exit::QUOTA,
        "unavailable" => exit::UNAVAILABLE,
        _ => exit::INTERNAL,
    }
}

fn store_code(e: &StoreError) -> u8 {
    match e {
        StoreError::Unavailable(_) => exit::UNAVAILABLE,
        StoreError::Misconfigured(_) => exit::USAGE,
        _ => exit::INTERNAL,
    }
}

/// Runs one parsed command against `config`, printing its result on stdout.
pub async fn run(cli: Cli, config: &Config) -> Result<(), CliError> {
    let text = commands::dispatch(cli, config).await?;
    print(&text)
}

/// Runs the commands that describe the CLI itself (`completions`, `man`), which need neither
/// configuration nor a database, so a broken config file cannot stop them. `None` for the rest.
pub fn run_standalone(cli: &Cli) -> Option<Result<(), CliError>> {
    let text = match &cli.command {
        args::Command::Completions { shell } => Ok(generate::completions(*shell)),
        args::Command::Man { out } => generate::man(out.as_deref()),
        _ => return None,
    };
    Some(text.and_then(|t| print(&t)))
}

/// Writes a command's answer on stdout.
fn print(text: &str) -> Result<(), CliError> {
    if text.is_empty() {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A reader that went away (`… | head`) is not our failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(CliError::Output),
    }
}

/// Whether a command serves MCP (and so logs at `info` by default) rather than answering once.
pub fn is_server(cli: &Cli) -> bool {
    matches!(
        cli.command,
        args::Command::Serve { .. } | args::Command::Stdio
    )
}
