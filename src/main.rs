//! The `parallax-mcp` binary: parse the command line, load configuration, set up logging, run the
//! command, and turn any failure into one `error: …` line and an exit code.

use clap::Parser;
use parallax_mcp::cli::{self, Cli, CliError};
use parallax_mcp::config::{Config, ConfigError, LogFormat, Overrides};
use parallax_mcp::telemetry::traces::Traces;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

// mimalloc, not glibc's malloc: a response is built on one worker thread and dropped on another,
// and glibc's arena locks made those threads wait on each other (most of the server's futex
// calls under load); mimalloc frees across threads without a lock. See docs/performance.md
// (the allocator change).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Clap prints its own usage errors and exits 2; `--help` and `--version` exit 0.
    let cli = Cli::parse();
    // `stdio` serves one client over one pipe: one thread runs it without handing each call
    // between threads (most of its CPU was wake-ups and context switches); `serve` and the
    // commands keep a thread per core.
    let runtime = match cli.command {
        cli::args::Command::Stdio => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    // Each thread hands its allocator's free memory back as it goes idle, when asked to (after
    // MCP sessions are put to sleep): mimalloc collects only the calling thread's heap.
    .on_thread_park(parallax_mcp::memory::release_on_park)
    .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Boxed: the command's future is large, and on the main thread's stack every page it ever
    // touched would stay resident for the life of the server.
    match runtime.block_on(Box::pin(run(cli))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the source said: scripts read the first line of stderr.
            let msg = format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("error: {msg}");
            ExitCode::from(exit_code(&e))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(result) = cli::run_standalone(&cli) {
        return Ok(result?);
    }
    let listen = match &cli.command {
        cli::args::Command::Serve { listen } => listen.clone(),
        _ => None,
    };
    let flags = Overrides {
        config_file: cli.global.config.clone(),
        database_url: cli.global.database_url.clone(),
        db_path: cli.global.db.clone(),
        listen,
    };
    // Once per run, before anything else is logged: a misspelt variable is otherwise silent.
    let names = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok());
    let mut warnings = parallax_mcp::config::reference::unknown_variables(names);
    // Logging waits for the configuration, which says its format; a misspelt variable may be
    // why the configuration failed, so say so first.
    let config = match Config::load(&flags) {
        Ok(config) => config,
        Err(e) => {
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            return Err(e.into());
        }
    };
    let (warning, traces) = init_logging(cli::is_server(&cli), &config);
    warnings.extend(warning);
    for warning in warnings {
        match config.log.format {
            LogFormat::Text => eprintln!("warning: {warning}"),
            LogFormat::Json => tracing::warn!("{warning}"),
        }
    }
    let result = cli::run(cli, &config).await;
    // Spans still buffered are sent before the process exits.
    if let Some(traces) = traces {
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    result?;
    Ok(())
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(e) = e.downcast_ref::<CliError>() {
        e.exit_code()
    } else if e.downcast_ref::<ConfigError>().is_some() {
        cli::exit::USAGE
    } else {
        cli::exit::INTERNAL
    }
}

/// Logs go to stderr only: in `stdio` mode stdout carries the MCP protocol, and for the admin
/// commands stdout is the answer. Servers log at `info` by default, one-shot commands at `warn` so
/// their output stays clean; `PARALLAX_LOG` (or `RUST_LOG`) overrides either. In `json` format
/// every line is one JSON object, so the warning about a bad filter is returned to be logged.
/// Servers export spans over OTLP when `[otel] endpoint` is set.
fn init_logging(server: bool, config: &Config) -> (Option<String>, Option<Traces>) {
    use tracing_subscriber::prelude::*;
    // rmcp logs every stateless request at `info`; its warnings are what an operator needs.
    let default = if server { "info,rmcp=warn" } else { "warn" };
    let spec = std::env::var("PARALLAX_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .filter(|s| !s.trim().is_empty());
    let (filter, mut warning) = match spec.as_deref().map(EnvFilter::try_new) {
        Some(Ok(f)) => (f, None),
        Some(Err(e)) => (
            EnvFilter::new(default),
            Some(format!(
                "ignoring invalid PARALLAX_LOG/RUST_LOG filter: {e}"
            )),
        ),
        None => (EnvFilter::new(default), None),
    };
    let (otel, traces) = match config.otel.endpoint.as_deref().filter(|_| server) {
        Some(endpoint) => match parallax_mcp::telemetry::traces::layer(
            endpoint,
            &config.otel.service_name,
            tokio::runtime::Handle::current(),
        ) {
            Ok((layer, traces)) => (Some(layer), Some(traces)),
            Err(e) => {
                warning = Some(format!("traces are off: {e}"));
                (None, None)
            }
        },
        None => (None, None),
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            registry.with(logs.with_ansi(color)).init();
        }
        LogFormat::Json => registry.with(logs.json().with_ansi(false)).init(),
    }
    (warning, traces)
}
