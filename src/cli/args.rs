//! The command tree, as clap types. Every command and flag carries a one-line doc: that line is
//! the help a newcomer reads.

use crate::domain::*;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const QUICKSTART: &str = "\
parallax-mcp gives AI agents human-approved, scoped, audited access to a team's workspace, over \
MCP (stdio or streamable HTTP). This binary runs the server and is the admin tool for humans.

Quickstart (SQLite database in ~/.local/share/parallax-mcp/parallax.db, or under $XDG_DATA_HOME, \
created by `workspace create` or `serve`; every other command, stdio included, only opens it):

  1. Create a workspace and its first admin:
       parallax-mcp workspace create acme --name \"Acme\" --admin-email alice@acme.test
  2. Act as that admin in the commands that follow:
       export PARALLAX_WORKSPACE=acme PARALLAX_AS=alice@acme.test
  3. Request and approve access for an agent (the key is printed once):
       parallax-mcp agent request docs-bot --name \"Docs bot\" --permission read:tasks,write:tasks
       parallax-mcp agent approve docs-bot --grant read:tasks,write:tasks
  4. Serve MCP to agents, over HTTP or stdio:
       parallax-mcp serve          # http://127.0.0.1:8720/mcp, bearer = the agent's key
       PARALLAX_API_KEY=mcp_agent_… parallax-mcp stdio";

/// Where the flags every command accepts are listed in help.
const GLOBAL: &str = "Global options";

const AFTER_HELP: &str = "\
Configuration, lowest to highest precedence: defaults, the --config TOML file, environment \
variables (PARALLAX_DATABASE_URL or DATABASE_URL, PARALLAX_DB, PARALLAX_LISTEN and one PARALLAX_* \
variable per key; see parallax.example.toml), then flags. `parallax-mcp config check` prints the \
effective configuration and where each value came from.

Database: --database-url, else the configuration, else $XDG_DATA_HOME/parallax-mcp/parallax.db \
(default ~/.local/share/parallax-mcp/parallax.db), whatever the working directory. A relative \
SQLite path is taken from the working directory. Only `serve` and `workspace create` create a \
missing database; other commands name the path they looked at and exit 2.

Exit codes: 0 success; 1 internal or database error; 2 usage or configuration error (bad flags, \
missing --workspace or --as, no database at the path, unwritable file or directory, unknown \
PostgreSQL database or user, listen address malformed or in use); 3 invalid input; 4 not found; \
5 not allowed (wrong role, not a member); 6 conflict (already exists, wrong state); 7 quota \
exceeded; 8 database unavailable (PostgreSQL refuses or does not answer; try again); 9 the audit \
trail's hash chain is broken or does not extend the given checkpoint (activity verify).";

/// The `parallax-mcp` command line.
#[derive(Debug, Parser)]
#[command(
    name = "parallax-mcp",
    version,
    about = "MCP server and admin CLI for human-approved AI agent access"
)]
#[command(long_about = QUICKSTART, after_long_help = AFTER_HELP, propagate_version = true)]
#[command(max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, before or after the subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Workspace to act in (its slug)
    #[arg(short = 'w', long, global = true, help_heading = GLOBAL, env = "PARALLAX_WORKSPACE", value_name = "SLUG")]
    pub workspace: Option<String>,
    /// Member to act as (their email); the member's role decides what is allowed
    #[arg(long = "as", global = true, help_heading = GLOBAL, env = "PARALLAX_AS", value_name = "EMAIL")]
    pub as_member: Option<String>,
    /// Print JSON instead of tables, for scripts
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// Database URL: sqlite:///ABSOLUTE/PATH.db or postgres://USER@HOST/DB [default: ~/.local/share/parallax-mcp/parallax.db; env: PARALLAX_DATABASE_URL]
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "URL", conflicts_with = "db")]
    pub database_url: Option<String>,
    /// SQLite database file (shorthand for --database-url; only serve and workspace create create it)
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// TOML configuration file; every key is in parallax.example.toml (see `config check`)
    #[arg(long, global = true, help_heading = GLOBAL, env = "PARALLAX_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP over streamable HTTP at /mcp (agents authenticate with their API key)
    Serve {
        /// Address to listen on [default: 127.0.0.1:8720; env: PARALLAX_LISTEN]
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Serve MCP over stdin/stdout for one agent, whose key is in PARALLAX_API_KEY
    Stdio,
    /// Apply pending database migrations (the server also applies them on start)
    Migrate {
        /// Only show which migrations are pending; change nothing
        #[arg(long)]
        status: bool,
    },
    /// Create, list and configure workspaces
    #[command(subcommand)]
    Workspace(WorkspaceCmd),
    /// Add members and change their roles (read, write, admin)
    #[command(subcommand)]
    Member(MemberCmd),
    /// Create and list projects
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Create, list and update tasks
    #[command(subcommand)]
    Task(TaskCmd),
    /// Create and list pages
    #[command(subcommand)]
    Page(PageCmd),
    /// Request, approve, deny and revoke agent access; manage permissions and keys
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Assign an approved agent to a project or a task (needs role write)
    Assign(AssignArgs),
    /// End an assignment; its history is kept (needs role write)
    Unassign {
        /// Assignment id (from `assignments`)
        assignment_id: String,
    },
    /// List assignments, active ones unless --all
    Assignments(AssignmentsArgs),
    /// List and resolve agents' requests to hand a task to another agent
    #[command(subcommand)]
    Delegation(DelegationCmd),
    /// Read the audit trail, newest first, or prune it
    Activity(ActivityArgs),
    /// Webhook deliveries to the control plane: their state, and redelivery (needs role admin)
    #[command(subcommand)]
    Delivery(DeliveryCmd),
    /// Manage the keys that sign member and agent tokens
    #[command(subcommand)]
    SigningKey(SigningKeyCmd),
    /// Encrypt the secrets stored in the database under a master key, or move them to a new one
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Inspect the configuration
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print a shell completion script, e.g. `parallax-mcp completions bash > /etc/bash_completion.d/parallax-mcp`
    Completions {
        /// The shell to complete in
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one page per command into a directory
    Man {
        /// Write parallax-mcp.1 and one parallax-mcp-COMMAND.1 per command here (created if missing)
        #[arg(long, short = 'o', value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the effective configuration (secrets hidden) and where each value came from
    Check,
}

#[derive(Debug, Subcommand)]
pub enum DeliveryCmd {
    /// List the workspace's webhook deliveries, oldest event first
    List {
        /// Only deliveries in this state
        #[arg(long, value_parser = delivery_status_parser())]
        status: Option<DeliveryStatus>,
    },
    /// Send a delivery again (same webhook-id), whatever its state
    Redeliver {
        /// Delivery id (from `delivery list`)
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCmd {
    /// Make a new current signing key; tokens signed by the previous one stay valid until they expire
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCmd {
    /// Encrypt every secret still stored in clear under the configured master key (PARALLAX_MASTER_KEY or [secrets] master_key_file)
    Encrypt,
    /// Re-encrypt every secret under a new master key; the configured key must be the current one. Stop the servers first, then start them with the new key
    RotateMaster {
        /// File holding the new master key (64 hex digits or base64, e.g. from `openssl rand -hex 32`)
        #[arg(long, value_name = "FILE")]
        new_key_file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCmd {
    /// Create a workspace and its first admin (operator bootstrap: no --as needed)
    Create {
        /// Short name: 2-64 lowercase letters, digits and inner hyphens
        slug: String,
        /// Display name
        #[arg(long)]
        name: String,
        /// Email of the first admin
        #[arg(long, value_name = "EMAIL")]
        admin_email: String,
        /// Display name of the first admin [default: the email]
        #[arg(
            long,
            value_name = "NAME",
            default_value = "",
            hide_default_value = true
        )]
        admin_name: String,
    },
    /// List every workspace in the database (operator view: no --as needed)
    List,
    /// Show the workspace and its settings
    Show,
    /// Show the settings, or change them with --set (needs role admin)
    Settings {
        /// Change a setting, e.g. --set max_agents=5 (repeatable; `none` clears an optional value)
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
    },
    /// Manage the secret that signs webhooks to and from the control plane (needs role admin)
    #[command(subcommand)]
    WebhookSecret(WebhookSecretCmd),
}

#[derive(Debug, Subcommand)]
pub enum WebhookSecretCmd {
    /// Make a new secret current and print it, once; the previous one stays valid for the grace period
    Rotate {
        /// How long the previous secret stays valid, in seconds (at most 30 days)
        #[arg(long, default_value_t = crate::service::DEFAULT_SECRET_GRACE_SECS, value_name = "N")]
        grace_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// Add a member with a role (needs role admin)
    Add {
        /// The member's email
        email: String,
        /// What the member may do: read (view), write (projects, tasks, assignments), admin (agents, settings)
        #[arg(long, value_parser = role_parser())]
        role: Role,
        /// Display name [default: the email]
        #[arg(long, default_value = "", hide_default_value = true)]
        name: String,
    },
    /// List members and their roles
    List,
    /// Print a short-lived token for the member given by --as (for the admin API)
    Token {
        /// Lifetime in seconds [default: the configured token_ttl_secs, 900]
        #[arg(long, value_name = "N")]
        ttl_secs: Option<u64>,
    },
    /// Print a one-time link that signs the member given by --as in to the web console
    LoginLink {
        /// How long the link works, in seconds (at most a day)
        #[arg(long, value_name = "N", default_value_t = crate::service::console::LOGIN_LINK_TTL_SECS)]
        ttl_secs: u64,
    },
    /// Change a member's role (needs role admin; the last admin cannot be demoted)
    Role {
        /// The member's email
        email: String,
        /// The new role
        #[arg(value_parser = role_parser())]
        role: Role,
    },
    /// Remove a member; their tokens stop working (needs role admin; the last admin cannot be removed)
    Remove {
        /// The member's email
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCmd {
    /// Create a project (needs role write)
    Create {
        /// Project name
        name: String,
        /// What the project is about
        #[arg(long, default_value = "", hide_default_value = true)]
        description: String,
    },
    /// List projects
    List,
}

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// Create a task in a project, or several: one per title (needs role write)
    Create {
        /// Project the task belongs to (its id)
        #[arg(long, value_name = "ID")]
        project: String,
        /// Task title; several titles create several tasks (`--json` then prints a list)
        #[arg(required = true, num_args = 1.., value_name = "TITLE")]
        titles: Vec<String>,
        /// Details of the task
        #[arg(long, default_value = "", hide_default_value = true)]
        description: String,
    },
    /// List tasks
    List {
        /// Only tasks of this project
        #[arg(long, value_name = "ID")]
        project: Option<String>,
        /// Only tasks with this status
        #[arg(long, value_parser = task_status_parser())]
        status: Option<TaskStatus>,
    },
    /// Change a task's title, description or status (needs role write)
    Update {
        /// Task id
        id: String,
        /// New title
        #[arg(long)]
        title: Option<String>,
        /// New description
        #[arg(long)]
        description: Option<String>,
        /// New status
        #[arg(long, value_parser = task_status_parser())]
        status: Option<TaskStatus>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PageCmd {
    /// Create a page, optionally in a project (needs role write)
    Create {
        /// Page title
        title: String,
        /// Project the page belongs to (its id)
        #[arg(long, value_name = "ID")]
        project: Option<String>,
        /// Page body
        #[arg(long, default_value = "", hide_default_value = true)]
        content: String,
    },
    /// List pages
    List {
        /// Only pages of this project
        #[arg(long, value_name = "ID")]
        project: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// File an access request on an agent's behalf; it waits for an admin unless auto-approved
    Request(AgentRequestArgs),
    /// List agents with their status, permissions and active assignments
    List {
        /// Only agents with this status
        #[arg(long, value_parser = agent_status_parser())]
        status: Option<AgentStatus>,
    },
    /// Show an agent, its keys (never the secrets) and its assignment history
    Show {
        /// Agent id
        agent_id: String,
    },
    /// Approve a pending agent and print its API key, once (needs role admin)
    Approve {
        /// Agent id
        agent_id: String,
        /// Permissions to grant, comma-separated; a subset of those requested [default: the workspace's default_permissions]
        #[arg(long, value_name = "PERMS")]
        grant: Option<String>,
        #[command(flatten)]
        end: GrantEnd,
    },
    /// Move the end of an approved agent's access, also after it expired (needs role admin)
    Extend {
        /// Agent id
        agent_id: String,
        #[command(flatten)]
        end: GrantEnd,
        /// Remove the end: access lasts until revoked
        #[arg(long, conflicts_with_all = ["for_", "until"])]
        forever: bool,
    },
    /// Deny a pending request (needs role admin)
    Deny {
        /// Agent id
        agent_id: String,
        /// Why, for the requester and the audit trail
        #[arg(long)]
        reason: String,
    },
    /// Revoke an approved agent: its keys stop working, its assignments end (needs role admin)
    Revoke {
        /// Agent id
        agent_id: String,
        /// Why, for the audit trail
        #[arg(long)]
        reason: String,
    },
    /// Replace an approved agent's permissions with a subset of those it requested (needs role admin)
    Permissions {
        /// Agent id
        agent_id: String,
        /// The complete new grant, comma-separated, e.g. read:tasks,write:tasks; with --for or
        /// --until, extra permissions added on top of the grant until then
        permissions: String,
        #[command(flatten)]
        end: GrantEnd,
    },
    /// Revoke an agent's keys and print a new one, once (needs role admin)
    RotateKey {
        /// Agent id
        agent_id: String,
        /// Make the new key expire after this many days [default: the workspace's key_ttl_days]
        #[arg(long, value_name = "N")]
        expires_in_days: Option<u32>,
    },
}

#[derive(Debug, Args)]
pub struct AgentRequestArgs {
    /// The agent's id (e.g. its Parallax agent id): letters, digits and - _ . : @
    pub agent_id: String,
    /// Display name
    #[arg(long)]
    pub name: String,
    /// What the agent does
    #[arg(long, default_value = "", hide_default_value = true)]
    pub description: String,
    /// A capability the agent has, e.g. summarize (repeatable or comma-separated)
    #[arg(long = "capability", value_name = "CAP", value_delimiter = ',')]
    pub capabilities: Vec<String>,
    /// A permission the agent asks for, e.g. read:tasks (repeatable or comma-separated) [default: the workspace's default_permissions]
    #[arg(long = "permission", value_name = "PERM", value_delimiter = ',')]
    pub permissions: Vec<String>,
    /// Where the agent can be reached, if anywhere
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Why the agent needs access, for the approver
    #[arg(long)]
    pub justification: Option<String>,
    /// Extra facts about the agent, as a JSON object
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
}

#[derive(Debug, Args)]
pub struct AssignArgs {
    /// Agent id (must be approved)
    pub agent_id: String,
    /// Assign to this project (its id)
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "task",
        conflicts_with = "task"
    )]
    pub project: Option<String>,
    /// Assign to this task (its id)
    #[arg(long, value_name = "ID")]
    pub task: Option<String>,
    /// The agent's role in the assignment
    #[arg(long, default_value = "member", value_parser = assignment_role_parser())]
    pub role: AssignmentRole,
}

#[derive(Debug, Args)]
pub struct AssignmentsArgs {
    /// Only this agent's assignments
    #[arg(long, value_name = "AGENT_ID")]
    pub agent: Option<String>,
    /// Only assignments in this project (to it or to its tasks)
    #[arg(long, value_name = "ID")]
    pub project: Option<String>,
    /// Include ended assignments
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum DelegationCmd {
    /// List delegations, newest first
    List {
        /// Only delegations with this status
        #[arg(long, value_parser = delegation_status_parser())]
        status: Option<DelegationStatus>,
    },
    /// Approve a pending delegation: the task moves to the target agent (needs role write)
    Approve {
        /// Delegation id
        id: String,
        /// A note for the audit trail
        #[arg(long)]
        note: Option<String>,
    },
    /// Deny a pending delegation (needs role write)
    Deny {
        /// Delegation id
        id: String,
        /// Why, for the agents and the audit trail
        #[arg(long)]
        reason: String,
    },
}

/// When access ends: `--for 8h` or `--until 2026-12-31T18:00:00Z`.
#[derive(Debug, Args)]
pub struct GrantEnd {
    /// For how long, e.g. 30m, 8h, 7d
    #[arg(
        long = "for",
        id = "for_",
        value_name = "DURATION",
        conflicts_with = "until"
    )]
    pub for_: Option<String>,
    /// Until this time (RFC 3339, e.g. 2026-12-31T18:00:00Z)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

impl GrantEnd {
    /// The end, from whichever flag was given.
    pub fn resolve(&self) -> Result<Option<Timestamp>, ParseError> {
        grant_end(
            self.for_.as_deref(),
            self.until.as_deref(),
            chrono::Utc::now(),
        )
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ActivityArgs {
    #[command(subcommand)]
    pub command: Option<ActivityCmd>,
    #[command(flatten)]
    pub filter: ActivityFilter,
}

#[derive(Debug, Subcommand)]
pub enum ActivityCmd {
    /// Delete entries older than the workspace's activity_retention_days (needs role admin)
    Prune,
    /// Check the hash chain and name the first altered, deleted, inserted or reordered entry;
    /// exit 0 only when intact, 9 when not. Without --as, an operator check of every workspace
    /// (or the one given with -w)
    Verify {
        /// Start at this position (the entry before it is trusted)
        #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(i64).range(1..))]
        from: Option<i64>,
        /// Prove the chain still extends this exported checkpoint (`activity checkpoint --out`):
        /// its signature holds, and the entry at its seq still has its hash with the chain intact
        #[arg(long, value_name = "FILE", conflicts_with = "from")]
        checkpoint: Option<PathBuf>,
    },
    /// List the signed checkpoints of the chain, newest first. Without --as, an operator listing
    /// of the workspace given with -w
    Checkpoints,
    /// Sign a checkpoint of the chain's head now (or take the latest if nothing was added since)
    /// and write it, with the public key that checks it, to FILE or stdout (needs role admin;
    /// without --as, as the operator)
    Checkpoint {
        /// Where to write the checkpoint (JSON)
        #[arg(long, short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print entries oldest first with their chain position and hash, one JSON object a line
    Export {
        /// Output format
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
        format: String,
        /// Only entries after this position
        #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(i64).range(0..))]
        since: Option<i64>,
    },
}

#[derive(Debug, Args)]
pub struct ActivityFilter {
    /// Only entries about this agent
    #[arg(long, value_name = "AGENT_ID")]
    pub agent: Option<String>,
    /// Only entries about this project
    #[arg(long, value_name = "ID")]
    pub project: Option<String>,
    /// Only entries about this task
    #[arg(long, value_name = "ID")]
    pub task: Option<String>,
    /// Only entries of this type, e.g. agent.access_approved or tool.call
    #[arg(long = "type", value_name = "TYPE")]
    pub activity_type: Option<String>,
    /// How many entries to show, 1 to 500
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=500))]
    pub limit: u64,
    /// Only entries older than this entry id: the last id of the previous page
    #[arg(long, value_name = "ID")]
    pub before: Option<String>,
}

/// A parser that lists a vocabulary's words in `--help` and maps them to the domain type.
macro_rules! vocabulary_parser {
    ($fn:ident, $ty:ty) => {
        fn $fn() -> impl TypedValueParser<Value = $ty> {
            PossibleValuesParser::new(<$ty>::ALL.iter().map(|v| v.as_str()))
                .try_map(|s| <$ty>::parse(&s))
        }
    };
}

vocabulary_parser!(role_parser, Role);
vocabulary_parser!(task_status_parser, TaskStatus);
vocabulary_parser!(agent_status_parser, AgentStatus);
vocabulary_parser!(delegation_status_parser, DelegationStatus);
vocabulary_parser!(delivery_status_parser, DeliveryStatus);
vocabulary_parser!(assignment_role_parser, AssignmentRole);

fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {raw:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.get_help().is_none() && !["help", "version"].contains(&arg.get_id().as_str())
                {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "parallax-mcp", &mut missing);
        assert!(missing.is_empty(), "undocumented: {missing:?}");
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let a = Cli::try_parse_from([
            "parallax-mcp",
            "-w",
            "acme",
            "--as",
            "a@b.c",
            "agent",
            "list",
        ])
        .unwrap();
        let b = Cli::try_parse_from([
            "parallax-mcp",
            "agent",
            "list",
            "-w",
            "acme",
            "--as",
            "a@b.c",
        ])
        .unwrap();
        assert_eq!(a.global.workspace, b.global.workspace);
        assert_eq!(a.global.as_member.as_deref(), Some("a@b.c"));
        assert!(
            Cli::try_parse_from(["parallax-mcp", "member", "add", "x@y.z", "--role", "owner"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from(["parallax-mcp", "assign", "bot"]).is_err(),
            "needs --project or --task"
        );
        assert!(
            Cli::try_parse_from(["parallax-mcp", "activity", "prune", "--limit", "3"]).is_err()
        );
    }
}
