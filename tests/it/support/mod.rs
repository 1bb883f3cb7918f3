//! Shared test helpers: a fresh database per test, on SQLite by default or on PostgreSQL when
//! `PARALLAX_TEST_DATABASE_URL` points at a server (the URL of an existing database used to create
//! and drop the per-test databases, e.g. `postgres://postgres@127.0.0.1:5432/postgres`).

#![allow(dead_code)]

pub mod browser;
pub mod server;

use parallax_mcp::auth::{self, AgentCaller, MemberCaller};
use parallax_mcp::domain::*;
use parallax_mcp::service::{AccessOutcome, AccessRequest, Service, ServiceError, ServiceResult};
use parallax_mcp::store::{ActivityQuery, Store};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

pub const PG_ENV: &str = "PARALLAX_TEST_DATABASE_URL";

/// A fresh, empty database that is removed when dropped.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn new() -> TestDb {
        match std::env::var(PG_ENV) {
            Ok(admin) if !admin.is_empty() => {
                let name = format!("parallax_test_{}", uuid::Uuid::now_v7().simple());
                let conn = Database::connect(&admin)
                    .await
                    .expect("connect to PARALLAX_TEST_DATABASE_URL");
                conn.execute_raw(Statement::from_string(
                    conn.get_database_backend(),
                    format!("CREATE DATABASE {name}"),
                ))
                .await
                .expect("create test database");
                let _ = conn.close().await;
                let url = replace_db_name(&admin, &name);
                TestDb {
                    url,
                    _dir: None,
                    pg: Some((admin, name)),
                }
            }
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                    pg: None,
                }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// Makes the database exist without a schema, as a new PostgreSQL database does: commands
    /// other than `serve` and `workspace create` refuse to create a SQLite file. An empty file is
    /// an empty SQLite database.
    pub fn ensure_exists(&self) {
        if let Some(path) = parallax_mcp::store::preflight::sqlite_path(&self.url)
            && !path.exists()
        {
            std::fs::File::create(&path).expect("create the empty SQLite file");
        }
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> Store {
        Store::open(&self.url).await.expect("open store")
    }

    pub async fn service(&self) -> Service {
        Service::new(self.store().await)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            // Drop runs outside async; use a private runtime on another thread to clean up.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok(conn) = Database::connect(&admin).await {
                        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = conn
                            .execute_raw(Statement::from_string(conn.get_database_backend(), sql))
                            .await;
                        let _ = conn.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// Swaps the database name in a postgres URL (`postgres://u@h:p/db?opts`).
fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let new_base = match base[scheme_end..].rfind('/') {
        Some(i) => format!("{}/{name}", &base[..scheme_end + i]),
        None => format!("{base}/{name}"),
    };
    match query {
        Some(q) => format!("{new_base}?{q}"),
        None => new_base,
    }
}

// ---- service-level helpers ----

/// A workspace with one member of each role, a project and a task in it.
pub struct Seeded {
    pub workspace: Workspace,
    pub admin: MemberCaller,
    pub writer: MemberCaller,
    pub reader: MemberCaller,
    pub project: Project,
    pub task: Task,
}

impl Seeded {
    pub fn ws(&self) -> &str {
        &self.workspace.id
    }
}

/// Creates workspace `slug` with `admin@<slug>.test` (admin), `writer@…` (write) and `reader@…`
/// (read), a project and a task.
pub async fn seed_workspace(svc: &Service, slug: &str) -> Seeded {
    let (workspace, _) = svc
        .create_workspace(
            slug,
            &format!("Workspace {slug}"),
            &format!("admin@{slug}.test"),
            "Admin",
        )
        .await
        .expect("create workspace");
    let admin = member(svc, slug, "admin").await;
    svc.add_member(
        &admin,
        &format!("writer@{slug}.test"),
        "Writer",
        Role::Write,
    )
    .await
    .expect("add writer");
    svc.add_member(&admin, &format!("reader@{slug}.test"), "Reader", Role::Read)
        .await
        .expect("add reader");
    let writer = member(svc, slug, "writer").await;
    let reader = member(svc, slug, "reader").await;
    let project = svc
        .create_project(&admin, "Launch", "ship it")
        .await
        .expect("create project");
    let task = svc
        .create_task(&admin, &project.id, "Write the docs", "")
        .await
        .expect("create task");
    Seeded {
        workspace,
        admin,
        writer,
        reader,
        project,
        task,
    }
}

/// The member `<who>@<slug>.test` as a caller.
pub async fn member(svc: &Service, slug: &str, who: &str) -> MemberCaller {
    auth::member(svc.store(), slug, &format!("{who}@{slug}.test"))
        .await
        .expect("member caller")
}

/// An access request for `id` asking for `perms` (none: the workspace default).
pub fn access_request(id: &str, perms: &[Permission]) -> AccessRequest {
    AccessRequest {
        agent_id: id.into(),
        name: format!("Agent {id}"),
        description: "test agent".into(),
        capabilities: vec!["docs".into()],
        permissions: perms.iter().map(|p| p.as_str().to_owned()).collect(),
        ..Default::default()
    }
}

/// Files an access request for `id` asking for `perms`.
pub async fn request(
    svc: &Service,
    admin: &MemberCaller,
    id: &str,
    perms: &[Permission],
) -> AccessOutcome {
    svc.request_access(admin, access_request(id, perms))
        .await
        .expect("request access")
}

/// An agent that requested and was granted exactly `perms`, and its key.
pub async fn approved_agent(
    svc: &Service,
    admin: &MemberCaller,
    id: &str,
    perms: &[Permission],
) -> (Agent, ApiKey) {
    request(svc, admin, id, perms).await;
    svc.approve_agent(admin, id, Some(PermissionSet::new(perms.iter().copied())))
        .await
        .expect("approve agent")
}

/// Authenticates `key`, expecting success.
pub async fn agent_caller(svc: &Service, key: &ApiKey) -> AgentCaller {
    match auth::agent(svc.store(), key.expose())
        .await
        .expect("auth store")
    {
        Ok(caller) => caller,
        Err(refusal) => panic!("key refused: {:?}", refusal.error),
    }
}

/// Authenticates `key`, expecting a refusal; returns why.
pub async fn agent_refusal(svc: &Service, key: &str) -> auth::AgentAuthError {
    match auth::agent(svc.store(), key).await.expect("auth store") {
        Ok(caller) => panic!("key accepted for agent {}", caller.agent_id()),
        Err(refusal) => refusal.error,
    }
}

/// Applies `key=value` settings as the admin.
pub async fn set(svc: &Service, admin: &MemberCaller, changes: &[(&str, &str)]) -> Workspace {
    let changes: Vec<(String, String)> = changes
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    svc.update_settings(admin, &changes)
        .await
        .expect("update settings")
}

/// Lifts the workspace's per-agent rate limit, for tests that make many calls from one agent and
/// test something else (the limit itself is tested in `attack_tokens`).
pub async fn lift_rate_limits(svc: &Service, admin: &MemberCaller) {
    set(
        svc,
        admin,
        &[
            ("rate_limit_per_minute", "100000"),
            ("rate_limit_burst", "10000"),
        ],
    )
    .await;
}

/// Asserts `result` was refused with error code `code` (see `ServiceError::code`) and a message
/// containing `needle`; returns the error for further checks.
#[track_caller]
pub fn refused<T: std::fmt::Debug>(
    result: ServiceResult<T>,
    code: &str,
    needle: &str,
) -> ServiceError {
    let err = result.expect_err("expected a refusal");
    assert_eq!(err.code(), code, "wrong error kind: {err:?}");
    assert!(
        err.to_string().contains(needle),
        "message {:?} lacks {needle:?}",
        err.to_string()
    );
    err
}

/// Every activity entry of a workspace, newest first (read straight from the store).
pub async fn all_activity(svc: &Service, ws: &str) -> Vec<ActivityEntry> {
    let q = ActivityQuery {
        limit: 100_000,
        ..Default::default()
    };
    svc.store()
        .read()
        .await
        .unwrap()
        .query_activity(ws, &q)
        .await
        .unwrap()
}

/// Activity entries of one type, newest first.
pub async fn activity_of(svc: &Service, ws: &str, activity_type: &str) -> Vec<ActivityEntry> {
    all_activity(svc, ws)
        .await
        .into_iter()
        .filter(|e| e.activity_type == activity_type)
        .collect()
}

/// Every outbox event of a workspace, oldest first.
pub async fn all_events(svc: &Service, ws: &str) -> Vec<Event> {
    svc.store()
        .read()
        .await
        .unwrap()
        .list_events(ws, None, 100_000)
        .await
        .unwrap()
}

/// The names of the events written after the first `skip`, oldest first.
pub async fn event_names_after(svc: &Service, ws: &str, skip: usize) -> Vec<&'static str> {
    all_events(svc, ws)
        .await
        .iter()
        .skip(skip)
        .map(|e| e.event_type.as_str())
        .collect()
}

/// Everything a workspace holds, as JSON, except `member.denied` audit entries: two equal
/// snapshots around a refused change prove it left nothing behind.
pub async fn snapshot(svc: &Service, ws: &str) -> Value {
    let tx = svc.store().read().await.unwrap();
    let agents = tx.list_agents(ws, None).await.unwrap();
    let mut credentials = Vec::new();
    for a in &agents {
        credentials.extend(tx.list_credentials(ws, &a.id).await.unwrap());
    }
    drop(tx);
    let activity: Vec<ActivityEntry> = all_activity(svc, ws)
        .await
        .into_iter()
        .filter(|e| e.activity_type != "member.denied")
        .collect();
    let tx = svc.store().read().await.unwrap();
    json!({
        "workspace": tx.workspace_by_id(ws).await.unwrap(),
        "members": tx.list_members(ws).await.unwrap(),
        "projects": tx.list_projects(ws).await.unwrap(),
        "tasks": tx.list_tasks(ws, None, None).await.unwrap(),
        "pages": tx.list_pages(ws, None).await.unwrap(),
        "agents": agents,
        "credentials": credentials,
        "assignments": tx.list_assignments(ws, None, None, true).await.unwrap(),
        "delegations": tx.list_delegations(ws, None).await.unwrap(),
        "activity": activity,
        "events": tx.list_events(ws, None, 100_000).await.unwrap(),
    })
}
