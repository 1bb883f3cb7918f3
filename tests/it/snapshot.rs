//! The server keeps credentials and members in memory (the store's authentication snapshot), and
//! each agent's current work (the work snapshot). These tests prove it never serves a decision or
//! a read that a committed change has overturned: each change is made by another process — the
//! real CLI on the same database, or a second server (a replica) — and the very next request to
//! the first server must see it, with no wait in between.

use crate::support::server::*;
use parallax_mcp::domain::Permission;
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};

/// Who makes the change.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// `parallax-mcp` admin commands run as a separate process on the same database.
    Cli,
    /// The admin API of a second server process on the same database.
    Replica,
}

struct Changer {
    via: Via,
    db_url: String,
    replica: Option<HttpServer>,
    admin_token: String,
    http: reqwest::Client,
}

/// Runs the CLI as the workspace admin; returns stdout, failing the test on a non-zero exit.
async fn cli(db_url: &str, args: &[&str]) -> String {
    cli_as(db_url, "admin@acme.test", args).await
}

async fn cli_as(db_url: &str, who: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(BIN)
        .args(["--database-url", db_url, "-w", "acme", "--as", who])
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("PARALLAX_WORKSPACE")
        .env_remove("PARALLAX_AS")
        .env_remove("PARALLAX_CONFIG")
        .output()
        .await
        .expect("run parallax-mcp");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

impl Changer {
    async fn new(via: Via, db_url: &str) -> Changer {
        let replica = match via {
            Via::Cli => None,
            Via::Replica => Some(spawn_http(db_url).await),
        };
        let admin_token = cli(db_url, &["member", "token"]).await.trim().to_owned();
        Changer {
            via,
            db_url: db_url.to_owned(),
            replica,
            admin_token,
            http: reqwest::Client::new(),
        }
    }

    /// Sends an admin API request to the replica; it must succeed.
    async fn api(&self, method: &str, path: &str, body: Value) {
        self.api_json(method, path, body).await;
    }

    /// Like `api`, returning the response body.
    async fn api_json(&self, method: &str, path: &str, body: Value) -> Value {
        let replica = self.replica.as_ref().expect("a replica");
        let origin = replica.url.trim_end_matches("/mcp");
        let res = self
            .http
            .request(method.parse().unwrap(), format!("{origin}{path}"))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "{method} {path} on the replica: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Assigns `agent` to `task`; returns the assignment id.
    async fn assign(&self, agent: &str, task: &str) -> String {
        let out: Value = match self.via {
            Via::Cli => {
                let out = cli(&self.db_url, &["--json", "assign", agent, "--task", task]).await;
                serde_json::from_str(&out).expect("assign --json prints JSON")
            }
            Via::Replica => {
                self.api_json(
                    "POST",
                    "/api/v1/workspaces/acme/assignments",
                    json!({ "agentId": agent, "taskId": task }),
                )
                .await
            }
        };
        let id = out["assignment"]["id"].as_str().or(out["id"].as_str());
        id.unwrap_or_else(|| panic!("no assignment id in {out}"))
            .to_owned()
    }

    async fn unassign(&self, assignment: &str) {
        match self.via {
            Via::Cli => {
                cli(&self.db_url, &["unassign", assignment]).await;
            }
            Via::Replica => {
                let path = format!("/api/v1/workspaces/acme/assignments/{assignment}");
                self.api("DELETE", &path, Value::Null).await
            }
        }
    }

    async fn set_task_status(&self, task: &str, status: &str) {
        match self.via {
            Via::Cli => {
                cli(&self.db_url, &["task", "update", task, "--status", status]).await;
            }
            Via::Replica => {
                let path = format!("/api/v1/workspaces/acme/tasks/{task}");
                self.api("PATCH", &path, json!({ "status": status })).await
            }
        }
    }

    async fn revoke(&self, agent: &str) {
        match self.via {
            Via::Cli => {
                cli(
                    &self.db_url,
                    &["agent", "revoke", agent, "--reason", "test"],
                )
                .await;
            }
            Via::Replica => {
                let path = format!("/api/v1/workspaces/acme/agents/{agent}/revoke");
                self.api("POST", &path, json!({ "reason": "test" })).await
            }
        }
    }

    async fn set_permissions(&self, agent: &str, perms: &[&str]) {
        match self.via {
            Via::Cli => {
                cli(
                    &self.db_url,
                    &["agent", "permissions", agent, &perms.join(",")],
                )
                .await;
            }
            Via::Replica => {
                let path = format!("/api/v1/workspaces/acme/agents/{agent}/permissions");
                self.api("PUT", &path, json!({ "permissions": perms }))
                    .await
            }
        }
    }

    async fn rotate_key(&self, agent: &str) {
        match self.via {
            Via::Cli => {
                cli(&self.db_url, &["agent", "rotate-key", agent]).await;
            }
            Via::Replica => {
                let path = format!("/api/v1/workspaces/acme/agents/{agent}/rotate-key");
                self.api("POST", &path, json!({})).await
            }
        }
    }

    async fn remove_member(&self, email: &str) {
        match self.via {
            Via::Cli => {
                cli(&self.db_url, &["member", "remove", email]).await;
            }
            Via::Replica => {
                let path = format!("/api/v1/workspaces/acme/members/{email}");
                self.api("DELETE", &path, Value::Null).await
            }
        }
    }

    async fn disable_workspace(&self) {
        match self.via {
            Via::Cli => {
                cli(
                    &self.db_url,
                    &["workspace", "settings", "--set", "enabled=false"],
                )
                .await;
            }
            Via::Replica => {
                self.api(
                    "PATCH",
                    "/api/v1/workspaces/acme/settings",
                    json!({ "enabled": false }),
                )
                .await
            }
        }
    }
}

/// The call each case makes first after its change: the read tool, or a note naming nothing
/// (a write that is only entries). Both are decided on the snapshot's credential when it holds
/// it, so each must be refused on the change the snapshot has not seen yet.
#[derive(Clone, Copy, PartialEq)]
enum Probe {
    Read,
    Note,
}

impl Probe {
    fn call(self) -> (&'static str, Value) {
        match self {
            Probe::Read => ("agent_my_assignments", json!({})),
            Probe::Note => (
                "agent_log_activity",
                json!({ "type": "note", "description": "still here" }),
            ),
        }
    }
}

/// The probe's call, which must succeed (twice: the second is served from the warm snapshot).
async fn works(client: &Client, probe: Probe) {
    let (tool, args) = probe.call();
    for _ in 0..2 {
        ok(client, tool, args.clone()).await;
    }
}

/// The probe's call, which must not run: refused at the transport (401) or as a tool error.
async fn refused_now(client: &Client, probe: Probe, what: &str) {
    let (tool, args) = probe.call();
    match call(client, tool, args).await {
        Err(_) => {}
        Ok(res) => assert_eq!(
            res.is_error,
            Some(true),
            "{what}: the next {tool} call was answered from a stale decision: {res:?}"
        ),
    }
}

/// A member token's admin API status on `url`'s server.
async fn member_status(http: &reqwest::Client, url: &str, token: &str) -> u16 {
    let origin = url.trim_end_matches("/mcp");
    http.get(format!("{origin}/api/v1/workspaces/acme/projects"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// How the agents' clients reach the server: a session over HTTP with the key or with an access
/// token minted from it, or a `stdio` process of their own on the same database.
#[derive(Clone, Copy)]
enum Over {
    Http,
    Token,
    Stdio,
}

/// A client of `key`'s agent: on the server at `url`, or over stdio on `db_url`.
async fn connect(over: Over, url: &str, db_url: &str, key: &str) -> Client {
    match over {
        Over::Http => http_client(url, key, ProtocolVersion::V_2025_11_25).await,
        Over::Token => {
            let token = access_token(url, key).await;
            http_client(url, &token, ProtocolVersion::V_2025_11_25).await
        }
        Over::Stdio => stdio_client(db_url, key).await,
    }
}

async fn no_stale_decision(via: Via, over: Over, probe: Probe) {
    let w = world().await;
    let read = [Permission::ReadTasks, Permission::ReadProjects];
    let revoked = approved_agent(&w.svc, &w.admin, "revoked", &read).await;
    let narrowed = approved_agent(&w.svc, &w.admin, "narrowed", &read).await;
    let rotated = approved_agent(&w.svc, &w.admin, "rotated", &read).await;
    let last = approved_agent(&w.svc, &w.admin, "last", &read).await;
    cli(
        &w.db.url,
        &["member", "add", "bob@acme.test", "--role", "read"],
    )
    .await;
    let bob = cli_as(&w.db.url, "bob@acme.test", &["member", "token"])
        .await
        .trim()
        .to_owned();

    let server = spawn_http(&w.db.url).await;
    let changer = Changer::new(via, &w.db.url).await;
    let agent = |key| connect(over, &server.url, &w.db.url, key);
    let http = reqwest::Client::new();

    // Revocation.
    let client = agent(&revoked).await;
    works(&client, probe).await;
    changer.revoke("revoked").await;
    refused_now(&client, probe, "revoke").await;

    // A permission change: the grant loses read:tasks. (A note needs no permission.)
    let client = agent(&narrowed).await;
    works(&client, probe).await;
    if probe == Probe::Read {
        changer
            .set_permissions("narrowed", &["read:projects"])
            .await;
        let res = call(&client, "agent_my_assignments", json!({}))
            .await
            .expect("still authenticated");
        assert_eq!(
            res.is_error,
            Some(true),
            "permission change: the next call ran with the old grant: {res:?}"
        );
    }

    // A key rotation: the old key stops working.
    let client = agent(&rotated).await;
    works(&client, probe).await;
    changer.rotate_key("rotated").await;
    refused_now(&client, probe, "rotate key").await;

    // A member removal: the member's token stops working on the admin API.
    assert_eq!(member_status(&http, &server.url, &bob).await, 200);
    assert_eq!(member_status(&http, &server.url, &bob).await, 200);
    changer.remove_member("bob@acme.test").await;
    assert_eq!(
        member_status(&http, &server.url, &bob).await,
        401,
        "member removal: the removed member's token still worked"
    );

    // Disabling the workspace: every agent in it is refused.
    let client = agent(&last).await;
    works(&client, probe).await;
    changer.disable_workspace().await;
    refused_now(&client, probe, "workspace disabled").await;

    // Each refused note left nothing in the trail: the notes there are the warm-up calls'.
    let notes = crate::support::activity_of(&w.svc, &w.admin.workspace().id, "agent.note").await;
    let expected = if probe == Probe::Note { 8 } else { 0 };
    assert_eq!(notes.len(), expected, "notes written: {notes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_by_the_cli_apply_to_the_very_next_call() {
    no_stale_decision(Via::Cli, Over::Http, Probe::Read).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_on_another_replica_apply_to_the_very_next_call() {
    no_stale_decision(Via::Replica, Over::Http, Probe::Read).await;
}

/// An access token's read is decided on its credential as the snapshot holds it, as a key's is:
/// the same changes still apply to its very next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_by_the_cli_apply_to_the_very_next_call_with_a_token() {
    no_stale_decision(Via::Cli, Over::Token, Probe::Read).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_on_another_replica_apply_to_the_very_next_call_with_a_token() {
    no_stale_decision(Via::Replica, Over::Token, Probe::Read).await;
}

/// A note that is only entries is decided on the snapshot's credential too, and commits only if
/// the snapshot is still current: the same changes apply to the very next note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_by_the_cli_apply_to_the_very_next_note() {
    no_stale_decision(Via::Cli, Over::Http, Probe::Note).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_on_another_replica_apply_to_the_very_next_note() {
    no_stale_decision(Via::Replica, Over::Http, Probe::Note).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_by_the_cli_apply_to_the_very_next_note_with_a_token() {
    no_stale_decision(Via::Cli, Over::Token, Probe::Note).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_by_the_cli_apply_to_the_very_next_stdio_note() {
    no_stale_decision(Via::Cli, Over::Stdio, Probe::Note).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_changed_by_the_cli_shows_in_the_very_next_read_with_a_token() {
    no_stale_work(Via::Cli, Over::Token).await;
}

/// stdio decides the read tool on the key as its snapshot holds it, as HTTP does: the same
/// changes by another process still apply to its very next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_by_the_cli_apply_to_the_very_next_stdio_call() {
    no_stale_decision(Via::Cli, Over::Stdio, Probe::Read).await;
}

/// The agent's assigned tasks as `(id, status)`, read twice so the second is served warm; both
/// reads must agree.
async fn my_tasks(client: &Client) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    for _ in 0..2 {
        let mine = ok(client, "agent_my_assignments", json!({})).await;
        let tasks: Vec<(String, String)> = mine["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .map(|t| {
                let task = &t["task"];
                (
                    task["id"].as_str().unwrap().to_owned(),
                    task["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        seen.push(tasks);
    }
    assert_eq!(seen[0], seen[1], "a warm read differs from the cold one");
    seen.pop().unwrap()
}

async fn no_stale_work(via: Via, over: Over) {
    let w = world().await;
    let read = [Permission::ReadTasks, Permission::ReadProjects];
    let worker = approved_agent(&w.svc, &w.admin, "worker", &read).await;
    let server = spawn_http(&w.db.url).await;
    let changer = Changer::new(via, &w.db.url).await;
    let client = connect(over, &server.url, &w.db.url, &worker).await;
    let task = w.task.id.clone();

    assert_eq!(my_tasks(&client).await, vec![], "not assigned yet");
    let assignment = changer.assign("worker", &task).await;
    assert_eq!(
        my_tasks(&client).await,
        vec![(task.clone(), "todo".to_owned())],
        "assignment: the next read missed it"
    );
    // A filtered read of the same snapshot is its own answer, not the unfiltered one's.
    let count = |v: Value| v["tasks"].as_array().map(Vec::len);
    let filtered = |status: &str| ok(&client, "agent_my_assignments", json!({ "status": status }));
    assert_eq!(count(filtered("todo").await), Some(1));
    assert_eq!(count(filtered("in_progress").await), Some(0));
    changer.set_task_status(&task, "in_progress").await;
    assert_eq!(
        my_tasks(&client).await,
        vec![(task.clone(), "in_progress".to_owned())],
        "task status: the next read served the old status"
    );
    assert_eq!(
        count(filtered("todo").await),
        Some(0),
        "a filtered read served the old status"
    );
    assert_eq!(count(filtered("in_progress").await), Some(1));
    changer.unassign(&assignment).await;
    assert_eq!(
        my_tasks(&client).await,
        vec![],
        "unassignment: the next read still listed the task"
    );

    // A note naming one of the agent's tasks is only entries, the task looked up in the work
    // snapshot: the first note after each change must see it too.
    let note = json!({ "type": "note", "description": "on it", "taskId": task });
    let assignment = changer.assign("worker", &task).await;
    let logged = ok(&client, "agent_log_activity", note.clone()).await;
    let id = logged["activityId"]
        .as_str()
        .expect("activityId")
        .to_owned();
    changer.unassign(&assignment).await;
    let res = call(&client, "agent_log_activity", note)
        .await
        .expect("still authenticated");
    assert_eq!(
        res.is_error,
        Some(true),
        "unassignment: the next note named the task as the agent's: {res:?}"
    );
    let notes = crate::support::activity_of(&w.svc, &w.admin.workspace().id, "agent.note").await;
    assert_eq!(
        notes
            .iter()
            .map(|e| (e.id.as_str(), e.task_id.as_deref()))
            .collect::<Vec<_>>(),
        [(id.as_str(), Some(task.as_str()))],
        "only the note made while assigned is in the trail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_changed_by_the_cli_shows_in_the_very_next_read() {
    no_stale_work(Via::Cli, Over::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_changed_by_the_cli_shows_in_the_very_next_stdio_read() {
    no_stale_work(Via::Cli, Over::Stdio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_changed_on_another_replica_shows_in_the_very_next_read() {
    no_stale_work(Via::Replica, Over::Http).await;
}

/// A key the snapshot holds is taken without reading the generations
/// (`auth::agent_unconfirmed`), and a decision made on it stands only if its entry commits while
/// they are still the ones it was made on (`AuditWriter::record_checked`). A change committed on
/// another replica in between (on SQLite, another store on the same file: another process)
/// leaves the entry out, writes nothing of it, and the key checked again sees the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_an_unconfirmed_key_commits_only_while_the_snapshot_is_current() {
    use crate::support::*;
    use parallax_mcp::auth::{self, AgentAuthError};
    use parallax_mcp::domain::{ActivityEntry, ActorKind, new_id};

    let db = TestDb::new().await;
    let svc = db.service().await;
    let s = seed_workspace(&svc, "acme").await;
    let read = [Permission::ReadTasks];
    let (_, key) = approved_agent(&svc, &s.admin, "reader", &read).await;
    approved_agent(&svc, &s.admin, "bystander", &read).await;
    // A second store on the same database: another replica.
    let replica = db.service().await;
    let replica_admin = member(&replica, "acme", "admin").await;

    // A confirmed authentication puts the key in the snapshot.
    agent_caller(&svc, &key).await;
    let unconfirmed = auth::agent_unconfirmed(svc.store(), key.expose())
        .expect("a key the snapshot holds is taken unconfirmed");
    assert_eq!(unconfirmed.caller().agent_id(), "reader");
    let entry = |what: &str| ActivityEntry {
        id: new_id(),
        workspace_id: s.ws().to_owned(),
        actor_kind: ActorKind::Agent,
        actor_id: "reader".into(),
        agent_id: Some("reader".into()),
        activity_type: "tool.call".into(),
        outcome: Some("allowed".into()),
        description: what.into(),
        metadata: json!({ "tool": "agent_my_assignments" }),
        project_id: None,
        task_id: None,
        page_id: None,
        created_at: chrono::Utc::now(),
    };
    let writer = svc.writer();
    assert!(
        writer
            .record_checked(entry("current"), unconfirmed.seen())
            .await
            .unwrap(),
        "nothing changed: the decision commits"
    );

    // Another agent revoked on the replica: the generations move, so the entry is left out.
    replica
        .revoke_agent(&replica_admin, "bystander", "test")
        .await
        .unwrap();
    assert!(
        !writer
            .record_checked(entry("stale"), unconfirmed.seen())
            .await
            .unwrap(),
        "a decision made before a committed change must not stand"
    );
    // Entries that were not checked commit beside it as ever.
    writer.record(entry("unchecked")).await.unwrap();

    // Checked again, the key is still good, and decisions on the new snapshot commit.
    agent_caller(&svc, &key).await;
    let again = auth::agent_unconfirmed(svc.store(), key.expose()).expect("in the snapshot");
    assert_ne!(again.seen(), unconfirmed.seen());
    assert!(
        writer
            .record_checked(entry("again"), again.seen())
            .await
            .unwrap()
    );

    // The key's own agent revoked on the replica: the snapshot still holds the key approved,
    // but nothing decided on it stands, and the key checked again is refused.
    replica
        .revoke_agent(&replica_admin, "reader", "test")
        .await
        .unwrap();
    let stale = auth::agent_unconfirmed(svc.store(), key.expose()).expect("still in the snapshot");
    assert!(
        !writer
            .record_checked(entry("after revocation"), stale.seen())
            .await
            .unwrap()
    );
    assert_eq!(
        agent_refusal(&svc, key.expose()).await,
        AgentAuthError::KeyRevoked
    );
    assert!(
        auth::agent_unconfirmed(svc.store(), key.expose()).is_none(),
        "a refused key is not served unconfirmed"
    );

    let described: Vec<String> = all_activity(&svc, s.ws())
        .await
        .into_iter()
        .filter(|e| e.activity_type == "tool.call")
        .map(|e| e.description)
        .collect();
    for kept in ["current", "unchecked", "again"] {
        assert!(
            described.iter().any(|d| d == kept),
            "{kept} missing: {described:?}"
        );
    }
    for left in ["stale", "after revocation"] {
        assert!(
            !described.iter().any(|d| d == left),
            "{left} written: {described:?}"
        );
    }
    let report = svc.verify_chain(&s.workspace, None).await.unwrap();
    assert!(report.intact, "{report:?}");
}

/// A note that is only entries, decided on a key taken unconfirmed
/// (`Service::log_agent_note_checked`), commits its decision and its note together only while
/// the snapshot is current; otherwise, and for a note that needs more than entries or that the
/// service refuses, nothing of it is written, and the call is decided again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_on_an_unconfirmed_key_commits_only_while_the_snapshot_is_current() {
    use crate::support::*;
    use parallax_mcp::auth;
    use parallax_mcp::domain::{ActivityEntry, ActorKind, AgentActivityKind, new_id};
    use parallax_mcp::service::{AgentLogEntry, CheckedChange};

    let db = TestDb::new().await;
    let svc = db.service().await;
    let s = seed_workspace(&svc, "acme").await;
    let (_, key) = approved_agent(&svc, &s.admin, "writer", &[Permission::ReadTasks]).await;
    approved_agent(&svc, &s.admin, "bystander", &[Permission::ReadTasks]).await;
    let replica = db.service().await;
    let replica_admin = member(&replica, "acme", "admin").await;
    agent_caller(&svc, &key).await;

    let decision = |what: &str| ActivityEntry {
        id: new_id(),
        workspace_id: s.ws().to_owned(),
        actor_kind: ActorKind::Agent,
        actor_id: "writer".into(),
        agent_id: Some("writer".into()),
        activity_type: "tool.call".into(),
        outcome: Some("allowed".into()),
        description: format!("decision {what}"),
        metadata: json!({ "tool": "agent_log_activity" }),
        project_id: None,
        task_id: None,
        page_id: None,
        created_at: chrono::Utc::now(),
    };
    let note = |what: &str| AgentLogEntry {
        kind: AgentActivityKind::Note,
        description: format!("note {what}"),
        project_id: None,
        task_id: None,
        page_id: None,
        metadata: None,
    };
    let taken = || auth::agent_unconfirmed(svc.store(), key.expose()).expect("in the snapshot");

    let current = taken();
    let outcome = svc
        .log_agent_note_checked(&current, &decision("current"), note("current"))
        .await
        .unwrap();
    let CheckedChange::Committed(logged) = outcome else {
        panic!("nothing changed: the note commits, got {outcome:?}");
    };
    assert_eq!(logged.entry.description, "note current");

    // Another agent revoked on the replica: neither the decision nor the note is written.
    replica
        .revoke_agent(&replica_admin, "bystander", "test")
        .await
        .unwrap();
    let outcome = svc
        .log_agent_note_checked(&current, &decision("stale"), note("stale"))
        .await
        .unwrap();
    assert!(
        matches!(outcome, CheckedChange::Stale),
        "a note decided before a committed change must not stand: {outcome:?}"
    );

    // Checked again, the key is current: a note naming a page needs a transaction, and an
    // empty one is refused; neither is written here, both go to a confirmed caller.
    agent_caller(&svc, &key).await;
    let again = taken();
    assert_ne!(again.seen(), current.seen());
    let on_page = AgentLogEntry {
        page_id: Some(new_id()),
        ..note("on a page")
    };
    let empty = AgentLogEntry {
        description: String::new(),
        ..note("empty")
    };
    for (what, entry) in [("on a page", on_page), ("empty", empty)] {
        let outcome = svc
            .log_agent_note_checked(&again, &decision(what), entry)
            .await
            .unwrap();
        assert!(
            matches!(outcome, CheckedChange::NeedsCaller),
            "{what}: {outcome:?}"
        );
    }
    let outcome = svc
        .log_agent_note_checked(&again, &decision("again"), note("again"))
        .await
        .unwrap();
    assert!(
        matches!(outcome, CheckedChange::Committed(_)),
        "{outcome:?}"
    );

    // The writer itself revoked on the replica: its snapshot still holds the key approved, but
    // its note does not stand.
    replica
        .revoke_agent(&replica_admin, "writer", "test")
        .await
        .unwrap();
    let outcome = svc
        .log_agent_note_checked(&taken(), &decision("revoked"), note("revoked"))
        .await
        .unwrap();
    assert!(matches!(outcome, CheckedChange::Stale), "{outcome:?}");

    let described: Vec<String> = all_activity(&svc, s.ws())
        .await
        .into_iter()
        .map(|e| e.description)
        .collect();
    for kept in ["current", "again"] {
        for entry in ["decision", "note"] {
            let d = format!("{entry} {kept}");
            assert!(described.contains(&d), "{d} missing: {described:?}");
        }
    }
    for left in ["stale", "on a page", "empty", "revoked"] {
        assert!(
            !described.iter().any(|d| d.ends_with(left)),
            "{left} written: {described:?}"
        );
    }
    let report = svc.verify_chain(&s.workspace, None).await.unwrap();
    assert!(report.intact, "{report:?}");
}

/// A key revoked by another process while this server's snapshot still holds it (it is taken
/// unconfirmed at first): whatever the first request after the change — the read
/// tool on its session or without one, a message the envelope refuses, another method, a new
/// session — the answer is the refused key's 401, and the refusal is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_elsewhere_is_refused_before_its_request_is_looked_at() {
    use crate::transport::{init_body, open_session, post};
    let w = world().await;
    let ws = w.admin.workspace().id.clone();
    let read = [Permission::ReadTasks, Permission::ReadProjects];
    let server = spawn_http(&w.db.url).await;
    let changer = Changer::new(Via::Cli, &w.db.url).await;
    let http = reqwest::Client::new();
    let read_call = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "agent_my_assignments", "arguments": {} } });
    let cases = [
        ("the read tool on its session", true, read_call.clone()),
        ("the read tool without a session", false, read_call.clone()),
        (
            "a message the envelope refuses",
            true,
            json!("not a message"),
        ),
        (
            "another method",
            true,
            json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/list" }),
        ),
        ("a new session", false, init_body("2025-11-25")),
    ];
    for (i, (what, on_session, body)) in cases.iter().enumerate() {
        // Each case is the first request after its own revocation: the first refusal brings
        // the snapshot up to date.
        let agent = format!("reader-{i}");
        let key = approved_agent(&w.svc, &w.admin, &agent, &read).await;
        let session = open_session(&http, &server.url, &key).await;
        for _ in 0..2 {
            let res = post(&http, &server.url, &key, Some(&session), &read_call)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{what}: warming up");
        }
        changer.revoke(&agent).await;
        let before = crate::support::activity_of(&w.svc, &ws, "auth.refused")
            .await
            .len();
        let session = on_session.then_some(session.as_str());
        let res = post(&http, &server.url, &key, session, body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{what}");
        let after = crate::support::activity_of(&w.svc, &ws, "auth.refused")
            .await
            .len();
        assert_eq!(after, before + 1, "{what}: the refusal is audited");
    }
}

/// A key revoked by another process while its agent is over its rate, and while this server's
/// snapshot still holds it: the next request is refused as revoked and audited, over HTTP (with
/// the key and with a token: 401, not 429) and over stdio (not the rate limit's error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_elsewhere_while_over_its_rate_is_refused_as_revoked() {
    use crate::transport::{open_session, post};
    let w = world().await;
    let ws = w.admin.workspace().id.clone();
    let read = [Permission::ReadTasks, Permission::ReadProjects];
    crate::support::set(
        &w.svc,
        &w.admin,
        &[("rate_limit_per_minute", "1"), ("rate_limit_burst", "6")],
    )
    .await;
    let server = spawn_http(&w.db.url).await;
    let changer = Changer::new(Via::Cli, &w.db.url).await;
    let http = reqwest::Client::new();
    let refusals = || async {
        crate::support::activity_of(&w.svc, &ws, "auth.refused")
            .await
            .len()
    };
    let read_call = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "agent_my_assignments", "arguments": {} } });
    for (agent, with_token) in [("keyed", false), ("tokened", true)] {
        let key = approved_agent(&w.svc, &w.admin, agent, &read).await;
        let bearer = if with_token {
            access_token(&server.url, &key).await
        } else {
            key
        };
        let session = open_session(&http, &server.url, &bearer).await;
        let mut statuses = Vec::new();
        while statuses.last() != Some(&429) && statuses.len() < 10 {
            let res = post(&http, &server.url, &bearer, Some(&session), &read_call)
                .send()
                .await
                .unwrap();
            statuses.push(res.status().as_u16());
        }
        assert_eq!(statuses.last(), Some(&429), "{agent}: {statuses:?}");
        assert!(statuses.contains(&200), "{agent}: {statuses:?}");
        changer.revoke(agent).await;
        let before = refusals().await;
        let res = post(&http, &server.url, &bearer, Some(&session), &read_call)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{agent}");
        assert_eq!(
            refusals().await,
            before + 1,
            "{agent}: the refusal is audited"
        );
    }

    let key = approved_agent(&w.svc, &w.admin, "piped", &read).await;
    let client = stdio_client(&w.db.url, &key).await;
    let mut limited = false;
    for _ in 0..10 {
        match call(&client, "agent_my_assignments", json!({})).await {
            Ok(res) => assert_ne!(res.is_error, Some(true), "{res:?}"),
            Err(rmcp::ServiceError::McpError(e)) if e.code.0 == -32029 => {
                limited = true;
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(limited, "stdio: the rate limit was never reached");
    changer.revoke("piped").await;
    let before = refusals().await;
    match call(&client, "agent_my_assignments", json!({})).await {
        Err(rmcp::ServiceError::McpError(e)) => {
            assert_ne!(e.code.0, -32029, "stdio: refused as over its rate: {e:?}")
        }
        Err(e) => panic!("{e:?}"),
        Ok(res) => assert_eq!(res.is_error, Some(true), "stdio: served: {res:?}"),
    }
    assert_eq!(
        refusals().await,
        before + 1,
        "stdio: the refusal is audited"
    );
    client.cancel().await.unwrap();
}
