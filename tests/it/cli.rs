//! The admin CLI as a user runs it: the built binary, one process per command, on a fresh
//! database (SQLite, or PostgreSQL when `PARALLAX_TEST_DATABASE_URL` is set). The quickstart test
//! runs the README's quickstart command for command.

use crate::support::{TestDb, agent_caller};
use parallax_mcp::auth;
use parallax_mcp::domain::ApiKey;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_parallax-mcp");

/// Variables that would change what the binary does; the tests set what they need explicitly.
const AMBIENT: &[&str] = &[
    "PARALLAX_WORKSPACE",
    "PARALLAX_AS",
    "PARALLAX_CONFIG",
    "PARALLAX_DATABASE_URL",
    "DATABASE_URL",
    "PARALLAX_DB",
    "PARALLAX_LOG",
    "RUST_LOG",
];

/// A finished run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary on one database, optionally as a member of a workspace (set through the
/// environment, as the README does).
struct Cli<'a> {
    db: &'a TestDb,
    env: Vec<(String, String)>,
}

impl<'a> Cli<'a> {
    fn new(db: &'a TestDb) -> Self {
        Self {
            db,
            env: Vec::new(),
        }
    }

    /// Acts as `email` in `workspace` via PARALLAX_WORKSPACE and PARALLAX_AS.
    fn acting(db: &'a TestDb, workspace: &str, email: &str) -> Self {
        let env = [("PARALLAX_WORKSPACE", workspace), ("PARALLAX_AS", email)];
        Self {
            db,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("--database-url")
            .arg(&self.db.url)
            .args(args)
            .env("NO_COLOR", "1");
        for var in AMBIENT {
            cmd.env_remove(var);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().await.expect("run parallax-mcp");
        Run {
            code: out.status.code().expect("exited normally"),
            stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
        }
    }

    /// Runs a command that must succeed; returns its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args).await;
        assert_eq!(r.code, 0, "{args:?} failed: {}", r.stderr);
        r.stdout
    }

    /// Runs a command with `--json`; returns the parsed output.
    async fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(&[args, &["--json"]].concat()).await;
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?} printed invalid JSON ({e}): {out}"))
    }

    /// Runs a command that must fail with exit `code` and exactly the one line `error: {message}`.
    async fn fails(&self, args: &[&str], code: i32, message: &str) {
        let r = self.run(args).await;
        assert_eq!(
            (r.code, r.stderr.as_str()),
            (code, format!("error: {message}\n").as_str()),
            "{args:?}"
        );
        assert_eq!(r.stdout, "", "{args:?} printed on stdout while failing");
    }
}

fn str_of<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

/// The table row whose first cell is `first`, split into cells (cells here contain no spaces).
fn row<'t>(table: &'t str, first: &str) -> Vec<&'t str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{table}"))
}

/// A line of the README quickstart that the test acts on.
#[derive(Debug)]
enum Line {
    /// `export K=V …`
    Export(Vec<(String, String)>),
    /// `parallax-mcp ARGS`, or `VAR=$(parallax-mcp ARGS --json | jq -r .id)` capturing an id.
    Run {
        capture: Option<String>,
        args: Vec<String>,
    },
}

/// The commands of the README's "Five-minute quickstart" block, so the test runs exactly what a
/// reader would (building the binary and setting PATH aside).
fn readme_quickstart() -> Vec<Line> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("## Five-minute quickstart")
        .nth(1)
        .expect("quickstart section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("sh block");
    let joined = block.replace("\\\n", " ");
    let mut lines = Vec::new();
    for line in joined.lines().map(str::trim) {
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with("cargo ")
            || line.starts_with("export PATH=")
        {
            continue;
        }
        if let Some(rest) = line.strip_prefix("export ") {
            let pairs = words(rest).into_iter().map(|w| {
                w.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .expect("K=V")
            });
            lines.push(Line::Export(pairs.collect()));
        } else if let Some((var, rest)) = line.split_once("=$(parallax-mcp ") {
            let inner = rest
                .strip_suffix(" --json | jq -r .id)")
                .unwrap_or_else(|| panic!("unexpected capture: {line}"));
            lines.push(Line::Run {
                capture: Some(var.to_owned()),
                args: words(inner),
            });
        } else if let Some(rest) = line.strip_prefix("parallax-mcp ") {
            lines.push(Line::Run {
                capture: None,
                args: words(rest),
            });
        } else {
            panic!("the quickstart test does not know how to run: {line}");
        }
    }
    lines
}

/// Splits a command line into words the way the shell would for the README's simple lines:
/// whitespace separates, double quotes group.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => (quoted, any) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => (cur, any) = (cur + &c.to_string(), true),
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[tokio::test]
async fn readme_quickstart_end_to_end() {
    let db = TestDb::new().await;
    let mut cli = Cli::new(&db);
    let mut vars: Vec<(String, String)> = Vec::new();
    // The output of each command run, by its arguments.
    let mut ran: Vec<(Vec<String>, String)> = Vec::new();
    for line in readme_quickstart() {
        match line {
            Line::Export(pairs) => cli.env.extend(pairs),
            Line::Run { capture, args } => {
                let mut args: Vec<String> = args
                    .iter()
                    .map(|a| {
                        vars.iter()
                            .fold(a.clone(), |a, (k, v)| a.replace(&format!("${k}"), v))
                    })
                    .collect();
                // The key is read from JSON, as a script would; the text form is checked in
                // `agent_lifecycle_and_delegation_through_the_cli`.
                if capture.is_some() || args.starts_with(&["agent".into(), "approve".into()]) {
                    args.push("--json".into());
                }
                let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = cli.ok(&argv).await;
                if let Some(var) = capture {
                    let v: Value = serde_json::from_str(&out).expect("JSON");
                    vars.push((var, str_of(&v, "/id").to_owned()));
                }
                ran.push((args, out));
            }
        }
    }
    let output = |prefix: &[&str]| -> &str {
        ran.iter()
            .find(|(args, _)| {
                args.len() >= prefix.len() && args.iter().zip(prefix).all(|(a, p)| a == p)
            })
            .map(|(_, out)| out.as_str())
            .unwrap_or_else(|| panic!("the quickstart has no `{}`", prefix.join(" ")))
    };
    let var = |name: &str| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .expect(name)
    };
    let (project_id, task_id) = (var("PROJECT"), var("TASK"));

    assert!(
        output(&["workspace", "create", "acme"])
            .starts_with("Created workspace acme (\"Acme\") with admin alice@acme.test."),
        "{ran:?}"
    );
    assert_eq!(
        output(&["member", "add", "bob@acme.test"]),
        "Added bob@acme.test to acme as write.\n"
    );
    let task: Value = serde_json::from_str(output(&["task", "create"])).unwrap();
    assert_eq!(
        (str_of(&task, "/projectId"), str_of(&task, "/status")),
        (project_id.as_str(), "todo")
    );

    // The request waits; the approval grants part of it and shows the key, once.
    let requested = output(&["agent", "request", "docs-bot"]);
    assert!(
        requested.contains("asking for read:tasks,write:tasks,read:projects; it is pending."),
        "{requested}"
    );
    let approved: Value = serde_json::from_str(output(&["agent", "approve", "docs-bot"])).unwrap();
    assert_eq!(str_of(&approved, "/agent/status"), "approved");
    assert_eq!(
        approved["agent"]["grantedPermissions"],
        serde_json::json!(["read:tasks", "write:tasks"])
    );
    let key = str_of(&approved, "/apiKey").to_owned();
    assert!(
        key.starts_with("mcp_agent_") && ApiKey::parse(&key).is_ok(),
        "not an API key: {key}"
    );
    // The printed key is the one that works.
    let svc = db.service().await;
    assert_eq!(
        agent_caller(&svc, &ApiKey::parse(&key).unwrap())
            .await
            .agent_id(),
        "docs-bot"
    );

    // Bob (role write, via --as over PARALLAX_AS) assigned it the task.
    let assigned = output(&["--as", "bob@acme.test", "assign", "docs-bot"]);
    assert!(
        assigned.starts_with(&format!(
            "Assigned docs-bot to task {task_id} as lead (assignment "
        )),
        "{assigned}"
    );

    let cells = row(output(&["agent", "list"]), "docs-bot");
    // ID, NAME (two words), STATUS, GRANTED, REQUESTED, ASSIGNMENTS, WORKING, LAST SEEN
    assert_eq!(
        &cells[3..8],
        [
            "approved",
            "read:tasks,write:tasks",
            "read:tasks,write:tasks,read:projects",
            "1",
            "idle"
        ]
    );

    let show = output(&["agent", "show", "docs-bot"]);
    assert_eq!(row(show, "status"), ["status", "approved"]);
    assert_eq!(row(show, "granted"), ["granted", "read:tasks,write:tasks"]);
    assert!(
        show.contains(&format!("task {task_id}")) && show.contains("member:bob@acme.test"),
        "{show}"
    );
    assert!(
        show.contains(&key[..14]) && !show.contains(&key),
        "keys show a prefix, never the secret:\n{show}"
    );
    let details = cli.json(&["agent", "show", "docs-bot"]).await;
    assert_eq!(str_of(&details, "/assignments/0/taskId"), task_id);
    assert_eq!(details["credentials"].as_array().map(Vec::len), Some(1));
    assert!(
        !details.to_string().contains(&key),
        "no secret in JSON either"
    );

    // The activity, newest first.
    let text = output(&["activity"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TIME") && lines.len() == 8, "{text}");
    assert!(
        lines[1].contains("member:bob@acme.test") && lines[1].contains("agent.task_assigned"),
        "{text}"
    );
    // The table names the task and its project by title (the description alone has the id).
    let title = str_of(&task, "/title");
    assert!(
        lines[1].contains(title) && lines[1].contains("Launch"),
        "{title:?} in {text}"
    );
    assert!(
        lines[7].contains("system") && lines[7].contains("workspace.created"),
        "{text}"
    );
    let activity = cli.json(&["activity"]).await;
    let entries = activity.as_array().expect("a list");
    let types: Vec<&str> = entries.iter().map(|e| str_of(e, "/activityType")).collect();
    assert_eq!(
        types,
        [
            "agent.task_assigned",
            "agent.access_approved",
            "agent.access_requested",
            "task.created",
            "project.created",
            "member.added",
            "workspace.created"
        ]
    );
    let ids: Vec<&str> = entries.iter().map(|e| str_of(e, "/id")).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "ids descend: {ids:?}");
}

#[test]
fn readme_words_split_like_the_shell() {
    assert_eq!(words(r#"a "b c"  "" d"#), ["a", "b c", "", "d"]);
}

#[tokio::test]
async fn refusals_exit_non_zero_with_one_line() {
    let db = TestDb::new().await;
    let operator = Cli::new(&db);
    operator
        .ok(&[
            "workspace",
            "create",
            "acme",
            "--name",
            "Acme",
            "--admin-email",
            "alice@acme.test",
        ])
        .await;
    let alice = Cli::acting(&db, "acme", "alice@acme.test");
    alice
        .ok(&["member", "add", "rita@acme.test", "--role", "read"])
        .await;
    alice
        .ok(&[
            "agent",
            "request",
            "helper",
            "--name",
            "Helper",
            "--permission",
            "read:tasks",
        ])
        .await;

    alice
        .fails(&["agent", "show", "ghost"], 4, "agent \"ghost\" not found")
        .await;
    alice
        .fails(
            &["agent", "approve", "ghost"],
            4,
            "agent \"ghost\" not found",
        )
        .await;
    alice
        .fails(
            &["agent", "request", "x", "--name", "X", "--permission", "read:tasks,admin:all"],
            3,
            "unknown permission \"admin:all\"; known: read:tasks, write:tasks, read:projects, write:projects, \
             read:pages, write:pages, read:agents, assign:tasks, delegate:agents",
        )
        .await;
    alice
        .fails(
            &[
                "agent",
                "approve",
                "helper",
                "--grant",
                "read:tasks,write:tasks",
            ],
            3,
            "cannot grant write:tasks: agent helper requested only read:tasks",
        )
        .await;
    let rita = Cli::acting(&db, "acme", "rita@acme.test");
    rita.fails(
        &["agent", "approve", "helper"],
        5,
        "rita@acme.test has role read but approving agents needs admin",
    )
    .await;
    let stranger = Cli::acting(&db, "acme", "eve@acme.test");
    stranger
        .fails(
            &["agent", "list"],
            5,
            "eve@acme.test is not a member of workspace acme",
        )
        .await;
    Cli::acting(&db, "nope", "alice@acme.test")
        .fails(&["agent", "list"], 4, "workspace \"nope\" not found")
        .await;
    alice
        .fails(
            &["task", "update", "42", "--status", "blocked"],
            3,
            "invalid task id \"42\": expected a UUID",
        )
        .await;
    alice
        .fails(
            &["agent", "request", "x", "--name", "X", "--metadata", "[1]"],
            3,
            "metadata must be a JSON object",
        )
        .await;

    // None of the refusals changed the request.
    let helper = alice.json(&["agent", "show", "helper"]).await;
    assert_eq!(str_of(&helper, "/agent/status"), "pending");

    // Who and where must be given, by flag or variable.
    operator
        .fails(
            &["--workspace", "acme", "agent", "list"],
            2,
            "no member given: pass --as <email> or set PARALLAX_AS to act as a member",
        )
        .await;
    operator
        .fails(
            &["--as", "alice@acme.test", "agent", "list"],
            2,
            "no workspace given: pass --workspace <slug> or set PARALLAX_WORKSPACE",
        )
        .await;
    assert_eq!(
        operator
            .ok(&["-w", "acme", "--as", "alice@acme.test", "agent", "list"])
            .await,
        alice.ok(&["agent", "list"]).await
    );

    // Quotas name the limit.
    alice
        .ok(&["workspace", "settings", "--set", "max_agents=1"])
        .await;
    alice
        .fails(
            &["agent", "request", "second", "--name", "Second"],
            7,
            "quota exceeded: max_agents is 1 and the workspace has 1 pending or approved agents",
        )
        .await;

    // Clap's own usage errors keep its exit code.
    let r = alice
        .run(&["member", "add", "x@acme.test", "--role", "owner"])
        .await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .starts_with("error: invalid value 'owner' for '--role <ROLE>'"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn migrate_twice_is_a_no_op() {
    let db = TestDb::new().await;
    db.ensure_exists();
    let cli = Cli::new(&db);
    let status = cli.ok(&["migrate", "--status"]).await;
    assert!(
        status.contains("pending migration(s)") && status.contains("m20"),
        "{status}"
    );
    let first = cli.ok(&["migrate"]).await;
    assert!(first.starts_with("Applied "), "{first}");
    assert_eq!(
        cli.ok(&["migrate"]).await,
        "Database is up to date: no pending migrations.\n"
    );
    assert_eq!(
        cli.ok(&["migrate", "--status"]).await,
        "Database is up to date: no pending migrations.\n"
    );
    assert_eq!(
        cli.json(&["migrate"]).await,
        serde_json::json!({ "applied": [], "upToDate": true })
    );
}

/// Four `migrate` processes at once on a brand-new database (replicas deploying together): all
/// succeed, and between them each migration is applied exactly once.
#[tokio::test]
async fn concurrent_migrate_processes_apply_each_migration_once() {
    let db = TestDb::new().await;
    db.ensure_exists();
    let cli = Cli::new(&db);
    let all: Vec<Value> = match cli.json(&["migrate", "--status"]).await["pending"].clone() {
        Value::Array(names) => names,
        other => panic!("no pending list: {other}"),
    };
    assert!(!all.is_empty());
    let runs = futures_util::future::join_all((0..4).map(|_| cli.json(&["migrate"]))).await;
    let mut applied: Vec<Value> = runs
        .iter()
        .flat_map(|r| r["applied"].as_array().expect("applied list").clone())
        .collect();
    applied.sort_by_key(|v| v.as_str().map(str::to_owned));
    assert_eq!(
        applied, all,
        "each migration applied by exactly one process"
    );
    assert_eq!(
        cli.json(&["migrate", "--status"]).await,
        serde_json::json!({ "pending": [], "upToDate": true })
    );
}

#[tokio::test]
async fn every_listing_prints_json_for_scripts() {
    let db = TestDb::new().await;
    Cli::new(&db)
        .ok(&[
            "workspace",
            "create",
            "acme",
            "--name",
            "Acme",
            "--admin-email",
            "alice@acme.test",
        ])
        .await;
    let alice = Cli::acting(&db, "acme", "alice@acme.test");
    let project = alice.json(&["project", "create", "Launch"]).await;
    let project_id = str_of(&project, "/id");
    alice
        .ok(&[
            "page",
            "create",
            "Runbook",
            "--project",
            project_id,
            "--content",
            "Step 1",
        ])
        .await;

    let workspaces = Cli::new(&db).json(&["workspace", "list"]).await;
    assert_eq!(str_of(&workspaces, "/0/slug"), "acme");
    for args in [
        &["member", "list"][..],
        &["project", "list"],
        &["task", "list"],
        &["page", "list", "--project", project_id],
        &["agent", "list"],
        &["assignments", "--all"],
        &["delegation", "list"],
        &["activity"],
    ] {
        assert!(
            alice.json(args).await.is_array(),
            "{args:?} is not a JSON list"
        );
    }
    let settings = alice.json(&["workspace", "settings"]).await;
    assert_eq!(settings["maxAgents"], 20);
    assert_eq!(
        str_of(&alice.json(&["page", "list"]).await, "/0/title"),
        "Runbook"
    );
}

#[tokio::test]
async fn agent_lifecycle_and_delegation_through_the_cli() {
    let db = TestDb::new().await;
    Cli::new(&db)
        .ok(&[
            "workspace",
            "create",
            "acme",
            "--name",
            "Acme",
            "--admin-email",
            "alice@acme.test",
        ])
        .await;
    let alice = Cli::acting(&db, "acme", "alice@acme.test");
    let project = alice.json(&["project", "create", "Launch"]).await;
    let task = alice
        .json(&[
            "task",
            "create",
            "--project",
            str_of(&project, "/id"),
            "Docs",
        ])
        .await;
    let task_id = str_of(&task, "/id");
    for id in ["writer", "reviewer"] {
        alice
            .ok(&[
                "agent",
                "request",
                id,
                "--name",
                id,
                "--permission",
                "read:tasks,delegate:agents",
            ])
            .await;
        let out = alice
            .ok(&[
                "agent",
                "approve",
                id,
                "--grant",
                "read:tasks,delegate:agents",
            ])
            .await;
        assert!(
            out.contains(&format!(
                "API key for {id} (store it now, it will not be shown again):"
            )),
            "{out}"
        );
        assert!(
            out.lines().any(|l| ApiKey::parse(l.trim()).is_ok()),
            "no key line in:\n{out}"
        );
    }
    let assigned = alice.json(&["assign", "writer", "--task", task_id]).await;
    assert_eq!(assigned["created"], true);
    let again = alice.json(&["assign", "writer", "--task", task_id]).await;
    assert_eq!(
        (again["created"].as_bool(), &again["assignment"]["id"]),
        (Some(false), &assigned["assignment"]["id"])
    );

    // Rotation prints the new key once, in plain text, with the warning.
    let out = alice
        .ok(&["agent", "rotate-key", "writer", "--expires-in-days", "30"])
        .await;
    assert!(
        out.contains("API key for writer (store it now, it will not be shown again):"),
        "{out}"
    );
    let key = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("mcp_agent_"))
        .expect("key line");
    let svc = db.service().await;
    let writer = agent_caller(&svc, &ApiKey::parse(key).unwrap()).await;

    // The agent asks (over MCP, here through the service) to hand its task over; a human approves.
    let d = svc
        .request_delegation(&writer, task_id, "reviewer", "needs a second pair of eyes")
        .await
        .unwrap();
    let pending = alice
        .ok(&["delegation", "list", "--status", "pending"])
        .await;
    assert_eq!(
        row(&pending, &d.id)[1..5],
        ["pending", task_id, "writer", "reviewer"]
    );
    let out = alice
        .ok(&["delegation", "approve", &d.id, "--note", "ok"])
        .await;
    assert_eq!(
        out,
        format!(
            "Approved delegation {}: task {task_id} moved from writer to reviewer.\n",
            d.id
        )
    );
    let active = alice.json(&["assignments", "--agent", "reviewer"]).await;
    assert_eq!(str_of(&active, "/0/taskId"), task_id);
    assert_eq!(
        alice.json(&["assignments", "--agent", "writer"]).await,
        serde_json::json!([])
    );
    assert_eq!(
        alice
            .json(&["assignments", "--agent", "writer", "--all"])
            .await
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Narrowing permissions, then revoking: the key stops working.
    let narrowed = alice
        .json(&["agent", "permissions", "reviewer", "read:tasks"])
        .await;
    assert_eq!(
        narrowed["grantedPermissions"],
        serde_json::json!(["read:tasks"])
    );
    alice
        .fails(
            &["agent", "permissions", "reviewer", "write:pages"],
            3,
            "cannot grant write:pages: agent reviewer requested only read:tasks,delegate:agents",
        )
        .await;
    assert_eq!(
        alice
            .ok(&["agent", "revoke", "writer", "--reason", "done"])
            .await,
        "Revoked writer: its keys no longer work and its assignments have ended.\n"
    );
    let refused = auth::agent(svc.store(), key)
        .await
        .unwrap()
        .expect_err("revoked key refused");
    assert_eq!(refused.error, auth::AgentAuthError::KeyRevoked);
    let revoked = alice.ok(&["agent", "list", "--status", "revoked"]).await;
    assert_eq!(row(&revoked, "writer")[2], "revoked");

    // A pending request can be denied; its reason is kept.
    alice
        .ok(&["agent", "request", "spammer", "--name", "Spam"])
        .await;
    alice
        .ok(&["agent", "deny", "spammer", "--reason", "not needed"])
        .await;
    let spammer = alice.json(&["agent", "show", "spammer"]).await;
    assert_eq!(
        (
            str_of(&spammer, "/agent/status"),
            str_of(&spammer, "/agent/denialReason")
        ),
        ("denied", "not needed")
    );

    // Task updates and ending an assignment show up in the activity for that task.
    alice
        .ok(&["task", "update", task_id, "--status", "in_progress"])
        .await;
    let reviewer_assignment = str_of(&active, "/0/id").to_owned();
    alice.ok(&["unassign", &reviewer_assignment]).await;
    alice
        .fails(
            &["unassign", &reviewer_assignment],
            6,
            &format!("assignment {reviewer_assignment} already ended"),
        )
        .await;
    let for_task = alice
        .json(&["activity", "--task", task_id, "--limit", "2"])
        .await;
    let types: Vec<&str> = for_task
        .as_array()
        .unwrap()
        .iter()
        .map(|e| str_of(e, "/activityType"))
        .collect();
    assert_eq!(types, ["agent.unassigned", "task.updated"]);
}
