//! The services on a real database with the real migrations: SQLite by default, PostgreSQL when
//! `PARALLAX_TEST_DATABASE_URL` is set (same test bodies). Every rule of docs/design.md §1–§3, each refusal
//! with its exact error, and what each change leaves behind: its activity entry and its outbox
//! event, or — for a refused change — nothing (compared with a snapshot of the whole workspace).

use crate::support::*;
use chrono::{Duration, Utc};
use parallax_mcp::auth::{self, AgentAuthError, AgentCaller};
use parallax_mcp::domain::Permission as P;
use parallax_mcp::domain::*;
use parallax_mcp::service::{
    AgentLogEntry, AssignTarget, DelegationResolution, Service, ServiceError, ServiceResult,
    TaskUpdate,
};
use parallax_mcp::store::{ActivityQuery, Store};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::json;
use std::future::Future;

/// A fresh database with workspace `acme` seeded.
async fn setup() -> (TestDb, Service, Seeded) {
    let db = TestDb::new().await;
    let svc = db.service().await;
    let s = seed_workspace(&svc, "acme").await;
    (db, svc, s)
}

fn perms(list: &[Permission]) -> PermissionSet {
    PermissionSet::new(list.iter().copied())
}

fn project(p: &Project) -> AssignTarget {
    AssignTarget::Project(p.id.clone())
}

fn task(t: &Task) -> AssignTarget {
    AssignTarget::Task(t.id.clone())
}

async fn assign(svc: &Service, s: &Seeded, agent: &str, target: AssignTarget) -> Assignment {
    svc.assign(&s.admin, agent, target, AssignmentRole::Member)
        .await
        .expect("assign")
        .0
}

async fn agent_row(svc: &Service, ws: &str, id: &str) -> Agent {
    svc.store()
        .read()
        .await
        .unwrap()
        .agent(ws, id)
        .await
        .unwrap()
        .expect("agent row")
}

async fn credentials(svc: &Service, ws: &str, id: &str) -> Vec<Credential> {
    svc.store()
        .read()
        .await
        .unwrap()
        .list_credentials(ws, id)
        .await
        .unwrap()
}

async fn assignments(svc: &Service, ws: &str, agent: &str, include_ended: bool) -> Vec<Assignment> {
    svc.store()
        .read()
        .await
        .unwrap()
        .agent_assignments(ws, agent, include_ended)
        .await
        .unwrap()
}

async fn delegation_row(svc: &Service, ws: &str, id: &str) -> Delegation {
    svc.store()
        .read()
        .await
        .unwrap()
        .delegation(ws, id)
        .await
        .unwrap()
        .expect("delegation row")
}

/// Runs `n` copies of a future at once on the runtime's worker threads; returns their results in
/// the order of `i`.
/// The store's pool is warmed first with `n` open connections, so the racers start together
/// instead of queueing behind connection setup (which would serialise them and hide a race).
async fn concurrently<T, Fut>(svc: &Service, n: usize, f: impl Fn(usize) -> Fut) -> Vec<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let mut open = Vec::new();
    for _ in 0..n {
        open.push(svc.store().read().await.expect("warm the pool"));
    }
    drop(open);
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (start, racer) = (start.clone(), f(i));
        set.spawn(async move {
            start.wait().await;
            (i, racer.await)
        });
    }
    let mut results = set.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Asserts that exactly `k` results succeeded and every other one is a quota refusal of `limit`.
#[track_caller]
fn exactly_k_succeed<T: std::fmt::Debug>(results: &[ServiceResult<T>], k: usize, limit: &str) {
    let outcomes: Vec<String> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.to_string(), |_| "ok".into()))
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "ok").count(),
        k,
        "outcomes: {outcomes:?}"
    );
    for r in results.iter().filter(|r| r.is_err()) {
        match r {
            Err(ServiceError::QuotaExceeded { limit: l, .. }) => assert_eq!(*l, limit),
            other => panic!("expected a {limit} quota refusal, got {other:?}"),
        }
    }
}

/// The number of `member.denied` entries, to check that a role refusal was audited once.
async fn denials(svc: &Service, ws: &str) -> Vec<ActivityEntry> {
    activity_of(svc, ws, "member.denied").await
}

// ---------------------------------------------------------------------------------------------
// Workspaces, settings, members, roles
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn workspace_slug_must_be_unique() {
    let (_db, svc, s) = setup().await;
    refused(
        svc.create_workspace("acme", "Another", "someone@else.test", "")
            .await,
        "conflict",
        "workspace \"acme\" already exists",
    );
    let all = svc.list_workspaces().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, s.workspace.id);
    assert!(
        auth::member(svc.store(), "acme", "someone@else.test")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn workspace_create_refuses_bad_slug_email_and_name() {
    let db = TestDb::new().await;
    let svc = db.service().await;
    for slug in ["Acme", "-acme", "a", "has space", "acme-"] {
        refused(
            svc.create_workspace(slug, "Acme", "a@acme.test", "").await,
            "invalid",
            "invalid workspace slug",
        );
    }
    refused(
        svc.create_workspace("acme", "Acme", "not-an-email", "")
            .await,
        "invalid",
        "invalid email address",
    );
    refused(
        svc.create_workspace("acme", "  ", "a@acme.test", "").await,
        "invalid",
        "workspace name must not be empty",
    );
    assert!(svc.list_workspaces().await.unwrap().is_empty());

    let (ws, admin) = svc
        .create_workspace("acme", "Acme", " Ada@ACME.test ", "")
        .await
        .unwrap();
    assert_eq!(admin.email, "ada@acme.test", "emails are stored lowercase");
    assert_eq!(
        admin.name, "ada@acme.test",
        "the name defaults to the email"
    );
    assert_eq!(admin.role, Role::Admin);
    assert_eq!(ws.settings, WorkspaceSettings::default());
    let created = activity_of(&svc, &ws.id, "workspace.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].actor_kind, ActorKind::System);
}

#[tokio::test]
async fn settings_update_applies_known_valid_values() {
    let (_db, svc, s) = setup().await;
    let ws = set(
        &svc,
        &s.admin,
        &[
            ("max_agents", "3"),
            ("default_permissions", "read:tasks,read:agents"),
        ],
    )
    .await;
    assert_eq!(ws.settings.max_agents, 3);
    assert_eq!(
        ws.settings.default_permissions,
        perms(&[P::ReadTasks, P::ReadAgents])
    );
    assert_eq!(
        svc.workspace(&s.admin).await.unwrap().settings,
        ws.settings,
        "stored"
    );
    let logged = activity_of(&svc, s.ws(), "workspace.settings_updated").await;
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].actor_kind, ActorKind::Member);
    assert_eq!(logged[0].actor_id, "admin@acme.test");
    assert_eq!(
        logged[0].metadata,
        json!({ "max_agents": "3", "default_permissions": "read:tasks,read:agents" })
    );
}

#[tokio::test]
async fn settings_update_refuses_unknown_keys_and_bad_values_changing_nothing() {
    let (_db, svc, s) = setup().await;
    let before = snapshot(&svc, s.ws()).await;
    let change = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    // A valid change next to a bad one is not applied either: all or none.
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("max_agents", "3"), ("max_agnets", "4")],
            "unknown setting \"max_agnets\"",
        ),
        (&[("max_agents", "0")], "max_agents must be at least 1"),
        (&[("max_agents", "-1")], "max_agents must be a whole number"),
        (&[("enabled", "maybe")], "enabled must be true or false"),
        (
            &[("default_permissions", "read:tasks,admin:all")],
            "unknown permission \"admin:all\"",
        ),
        (
            &[("control_plane_url", "ftp://x")],
            "control_plane_url must be an http(s) URL",
        ),
        (&[], "no setting to change"),
    ];
    for (pairs, needle) in cases {
        refused(
            svc.update_settings(&s.admin, &change(pairs)).await,
            "invalid",
            needle,
        );
    }
    assert_eq!(snapshot(&svc, s.ws()).await, before);
}

#[tokio::test]
async fn members_are_unique_per_workspace() {
    let (_db, svc, s) = setup().await;
    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.add_member(&s.admin, "writer@acme.test", "", Role::Read)
            .await,
        "conflict",
        "already a member",
    );
    refused(
        svc.add_member(&s.admin, " WRITER@Acme.TEST", "", Role::Read)
            .await,
        "conflict",
        "already a member",
    );
    refused(
        svc.add_member(&s.admin, "nobody", "", Role::Read).await,
        "invalid",
        "invalid email address",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);

    // The same person may be a member of another workspace.
    let rival = seed_workspace(&svc, "rival").await;
    svc.add_member(&rival.admin, "writer@acme.test", "W", Role::Admin)
        .await
        .unwrap();

    let members = svc.list_members(&s.reader).await.unwrap();
    let listed: Vec<(&str, Role)> = members.iter().map(|m| (m.email.as_str(), m.role)).collect();
    assert_eq!(
        listed,
        [
            ("admin@acme.test", Role::Admin),
            ("reader@acme.test", Role::Read),
            ("writer@acme.test", Role::Write)
        ]
    );
    let added = activity_of(&svc, s.ws(), "member.added").await;
    assert_eq!(added.len(), 2, "writer and reader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_of_one_slug_make_one_workspace() {
    let db = TestDb::new().await;
    let svc = db.service().await;
    let results = concurrently(&svc, RACERS, |i| {
        let svc = svc.clone();
        async move {
            svc.create_workspace("acme", "Acme", &format!("admin{i}@acme.test"), "")
                .await
        }
    })
    .await;
    let outcomes: Vec<&str> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.code(), |_| "ok"))
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "ok").count(),
        1,
        "{results:?}"
    );
    assert!(
        outcomes.iter().all(|o| *o == "ok" || *o == "conflict"),
        "{results:?}"
    );
    assert_eq!(svc.list_workspaces().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_additions_of_one_member_add_it_once() {
    let (_db, svc, s) = setup().await;
    let results = concurrently(&svc, RACERS, |_| {
        let (svc, admin) = (svc.clone(), s.admin.clone());
        async move {
            svc.add_member(&admin, "new@acme.test", "", Role::Read)
                .await
        }
    })
    .await;
    let outcomes: Vec<&str> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.code(), |_| "ok"))
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "ok").count(),
        1,
        "{results:?}"
    );
    assert!(
        outcomes.iter().all(|o| *o == "ok" || *o == "conflict"),
        "{results:?}"
    );
    assert_eq!(svc.list_members(&s.admin).await.unwrap().len(), 4);
}

#[tokio::test]
async fn member_role_changes_and_the_last_admin_cannot_be_demoted() {
    let (_db, svc, s) = setup().await;
    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.set_member_role(&s.admin, "admin@acme.test", Role::Write)
            .await,
        "conflict",
        "admin@acme.test is the last admin",
    );
    refused(
        svc.set_member_role(&s.admin, "ghost@acme.test", Role::Write)
            .await,
        "not_found",
        "member",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);

    let promoted = svc
        .set_member_role(&s.admin, "writer@acme.test", Role::Admin)
        .await
        .unwrap();
    assert_eq!(promoted.role, Role::Admin);
    // With a second admin, the first may step down; then the new one is the last.
    svc.set_member_role(&s.admin, "admin@acme.test", Role::Read)
        .await
        .unwrap();
    let writer = member(&svc, "acme", "writer").await;
    assert_eq!(writer.member().role, Role::Admin);
    refused(
        svc.set_member_role(&writer, "writer@acme.test", Role::Read)
            .await,
        "conflict",
        "last admin",
    );
    let changes: Vec<String> = activity_of(&svc, s.ws(), "member.role_changed")
        .await
        .into_iter()
        .map(|e| e.description)
        .collect();
    assert_eq!(
        changes,
        [
            "admin@acme.test: admin -> read",
            "writer@acme.test: write -> admin"
        ]
    );
    // The demoted admin's next call sees the new role.
    let old_admin = member(&svc, "acme", "admin").await;
    refused(
        svc.add_member(&old_admin, "x@acme.test", "", Role::Read)
            .await,
        "forbidden",
        "needs admin",
    );
}

#[tokio::test]
async fn admins_remove_members_but_never_the_last_admin() {
    let (_db, svc, s) = setup().await;
    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.remove_member(&s.admin, "ghost@acme.test").await,
        "not_found",
        "member",
    );
    refused(
        svc.remove_member(&s.admin, "admin@acme.test").await,
        "conflict",
        "admin@acme.test is the last admin",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);

    let removed = svc
        .remove_member(&s.admin, "writer@acme.test")
        .await
        .unwrap();
    assert_eq!(
        (removed.email.as_str(), removed.role),
        ("writer@acme.test", Role::Write)
    );
    let left: Vec<String> = svc
        .list_members(&s.admin)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.email)
        .collect();
    assert_eq!(left, ["admin@acme.test", "reader@acme.test"]);
    // The removed member can no longer act, and removing them again finds nobody.
    refused(
        auth::member(svc.store(), "acme", "writer@acme.test").await,
        "unauthenticated",
        "not a member",
    );
    refused(
        svc.remove_member(&s.admin, "writer@acme.test").await,
        "not_found",
        "member",
    );
    let entries = activity_of(&svc, s.ws(), "member.removed").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor_kind, ActorKind::Member);
    assert_eq!(entries[0].actor_id, "admin@acme.test");
    assert_eq!(entries[0].description, "writer@acme.test (write) removed");
    assert_eq!(
        entries[0].metadata,
        json!({ "email": "writer@acme.test", "role": "write" })
    );

    // With a second admin, an admin may remove themselves; then the other is the last.
    svc.set_member_role(&s.admin, "reader@acme.test", Role::Admin)
        .await
        .unwrap();
    svc.remove_member(&s.admin, "admin@acme.test")
        .await
        .unwrap();
    let last = member(&svc, "acme", "reader").await;
    refused(
        svc.remove_member(&last, "reader@acme.test").await,
        "conflict",
        "last admin",
    );
    assert_eq!(svc.list_members(&last).await.unwrap().len(), 1);
}

#[tokio::test]
async fn non_admins_cannot_remove_members_and_are_audited() {
    let (_db, svc, s) = setup().await;
    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.remove_member(&s.writer, "reader@acme.test").await,
        "forbidden",
        "has role write but removing members needs admin",
    );
    refused(
        svc.remove_member(&s.reader, "reader@acme.test").await,
        "forbidden",
        "has role read but removing members needs admin",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
    let denied = denials(&svc, s.ws()).await;
    let who: Vec<&str> = denied.iter().map(|e| e.actor_id.as_str()).collect();
    assert_eq!(who, ["reader@acme.test", "writer@acme.test"]);
    assert!(
        denied
            .iter()
            .all(|e| e.metadata == json!({ "action": "removing members", "neededRole": "admin" }))
    );
    assert!(activity_of(&svc, s.ws(), "member.removed").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_admins_removing_each_other_at_once_leave_one() {
    let (_db, svc, s) = setup().await;
    svc.set_member_role(&s.admin, "writer@acme.test", Role::Admin)
        .await
        .unwrap();
    let second = member(&svc, "acme", "writer").await;
    let results = concurrently(&svc, 2, |i| {
        let svc = svc.clone();
        let (caller, target) = if i == 0 {
            (s.admin.clone(), "writer@acme.test")
        } else {
            (second.clone(), "admin@acme.test")
        };
        async move { svc.remove_member(&caller, target).await }
    })
    .await;
    let outcomes: Vec<&str> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.code(), |_| "ok"))
        .collect();
    let mut sorted = outcomes.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["conflict", "ok"], "{results:?}");
    let admins = svc
        .store()
        .read()
        .await
        .unwrap()
        .list_members(s.ws())
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.role == Role::Admin)
        .count();
    assert_eq!(admins, 1);
}

#[tokio::test]
async fn member_callers_must_belong_to_the_workspace() {
    let (_db, svc, _s) = setup().await;
    seed_workspace(&svc, "rival").await;
    refused(
        auth::member(svc.store(), "acme", "admin@rival.test").await,
        "unauthenticated",
        "not a member",
    );
    refused(
        auth::member(svc.store(), "nowhere", "admin@acme.test").await,
        "not_found",
        "workspace",
    );
    refused(
        auth::member(svc.store(), "acme", "bad email").await,
        "invalid",
        "invalid email",
    );
}

#[tokio::test]
async fn read_member_cannot_change_anything_and_is_audited() {
    let (_db, svc, s) = setup().await;
    request(&svc, &s.admin, "bot", &[]).await;
    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.create_project(&s.reader, "P", "").await,
        "forbidden",
        "has role read but creating projects needs write",
    );
    refused(
        svc.create_task(&s.reader, &s.project.id, "T", "").await,
        "forbidden",
        "needs write",
    );
    refused(
        svc.approve_agent(&s.reader, "bot", None).await,
        "forbidden",
        "approving agents needs admin",
    );
    refused(
        svc.assign(
            &s.reader,
            "bot",
            project(&s.project),
            AssignmentRole::Member,
        )
        .await,
        "forbidden",
        "needs write",
    );
    assert_eq!(
        snapshot(&svc, s.ws()).await,
        before,
        "nothing but the audit entries was written"
    );

    let denied = denials(&svc, s.ws()).await;
    assert_eq!(denied.len(), 4);
    let newest = &denied[0];
    assert_eq!(newest.actor_kind, ActorKind::Member);
    assert_eq!(newest.actor_id, "reader@acme.test");
    assert_eq!(newest.outcome.as_deref(), Some("denied"));
    assert_eq!(
        newest.metadata,
        json!({ "action": "assigning agents", "neededRole": "write" })
    );
    // Reading is allowed.
    assert_eq!(svc.list_agents(&s.reader, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn write_member_cannot_approve_or_change_settings() {
    let (_db, svc, s) = setup().await;
    request(&svc, &s.admin, "bot", &[]).await;
    let before = snapshot(&svc, s.ws()).await;
    let max = vec![("max_agents".to_owned(), "1".to_owned())];
    refused(
        svc.approve_agent(&s.writer, "bot", None).await,
        "forbidden",
        "has role write but approving agents needs admin",
    );
    refused(
        svc.deny_agent(&s.writer, "bot", "no").await,
        "forbidden",
        "needs admin",
    );
    refused(
        svc.update_settings(&s.writer, &max).await,
        "forbidden",
        "changing settings needs admin",
    );
    refused(
        svc.add_member(&s.writer, "new@acme.test", "", Role::Admin)
            .await,
        "forbidden",
        "needs admin",
    );
    refused(
        svc.set_member_role(&s.writer, "writer@acme.test", Role::Admin)
            .await,
        "forbidden",
        "needs admin",
    );
    refused(
        svc.prune_activity(&s.writer).await,
        "forbidden",
        "needs admin",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
    let denied = denials(&svc, s.ws()).await;
    assert_eq!(denied.len(), 6);
    assert!(
        denied
            .iter()
            .all(|e| e.actor_id == "writer@acme.test" && e.agent_id.is_none())
    );
    // What a writer may do, it does.
    svc.create_project(&s.writer, "Writer's", "").await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Access requests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn access_request_is_idempotent_per_workspace_and_agent_id() {
    let (_db, svc, s) = setup().await;
    let first = request(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    assert!(first.created);
    assert_eq!(first.agent.status, AgentStatus::Pending);
    assert!(first.api_key.is_none());
    let events = all_events(&svc, s.ws()).await.len();

    let again = request(&svc, &s.admin, "bot", &[P::WriteTasks]).await;
    assert!(!again.created);
    assert_eq!(
        again.agent.requested_permissions,
        perms(&[P::ReadTasks]),
        "the first request stands"
    );
    assert_eq!(
        activity_of(&svc, s.ws(), "agent.access_requested")
            .await
            .len(),
        1
    );
    assert_eq!(
        all_events(&svc, s.ws()).await.len(),
        events,
        "no second event"
    );

    // Once approved, asking again changes nothing either.
    svc.approve_agent(&s.admin, "bot", None).await.unwrap();
    let after_approval = snapshot(&svc, s.ws()).await;
    let approved = request(&svc, &s.admin, "bot", &[]).await;
    assert!(!approved.created);
    assert!(approved.api_key.is_none());
    assert_eq!(approved.agent.status, AgentStatus::Approved);
    assert_eq!(snapshot(&svc, s.ws()).await, after_approval);

    // The same agent id in another workspace is another agent.
    let rival = seed_workspace(&svc, "rival").await;
    assert!(request(&svc, &rival.admin, "bot", &[]).await.created);
}

#[tokio::test]
async fn access_request_records_activity_and_event() {
    let (_db, svc, s) = setup().await;
    let mut req = access_request("bot", &[P::ReadTasks, P::WriteTasks]);
    req.endpoint = Some("https://bot.example/hook".into());
    req.metadata = Some(json!({ "model": "x" }));
    req.justification = Some("docs".into());
    let out = svc.request_access(&s.writer, req).await.unwrap();
    assert_eq!(
        out.agent.endpoint.as_deref(),
        Some("https://bot.example/hook")
    );
    assert_eq!(out.agent.metadata, json!({ "model": "x" }));
    let entry = &activity_of(&svc, s.ws(), "agent.access_requested").await[0];
    assert_eq!(
        (entry.actor_kind, entry.actor_id.as_str()),
        (ActorKind::Member, "writer@acme.test")
    );
    assert_eq!(entry.agent_id.as_deref(), Some("bot"));
    let events = all_events(&svc, s.ws()).await;
    let ev = events.last().unwrap();
    assert_eq!(ev.event_type, EventType::AccessRequested);
    assert_eq!(ev.agent_id.as_deref(), Some("bot"));
    assert_eq!(ev.data["status"], "pending");
    assert_eq!(
        ev.data["requestedPermissions"],
        json!(["read:tasks", "write:tasks"])
    );
}

#[tokio::test]
async fn access_request_without_permissions_asks_for_the_workspace_default() {
    let (_db, svc, s) = setup().await;
    let out = request(&svc, &s.admin, "bot", &[]).await;
    assert_eq!(out.agent.requested_permissions, perms(&P::DEFAULT_GRANT));
    set(&svc, &s.admin, &[("default_permissions", "read:agents")]).await;
    let out = request(&svc, &s.admin, "bot-2", &[]).await;
    assert_eq!(out.agent.requested_permissions, perms(&[P::ReadAgents]));
}

#[tokio::test]
async fn access_request_refuses_bad_fields_writing_nothing() {
    let (_db, svc, s) = setup().await;
    let before = snapshot(&svc, s.ws()).await;
    let bad = |f: &dyn Fn(&mut parallax_mcp::service::AccessRequest)| {
        let mut r = access_request("bot", &[]);
        f(&mut r);
        r
    };
    let cases: Vec<(parallax_mcp::service::AccessRequest, &str)> = vec![
        (
            bad(&|r| r.agent_id = "has space".into()),
            "invalid agent id \"has space\"",
        ),
        (bad(&|r| r.agent_id = String::new()), "invalid agent id"),
        (bad(&|r| r.agent_id = "a".repeat(129)), "invalid agent id"),
        (
            bad(&|r| r.permissions = vec!["read:tasks".into(), "admin:all".into()]),
            "unknown permission \"admin:all\"",
        ),
        (
            bad(&|r| r.name = " ".into()),
            "agent name must not be empty",
        ),
        (
            bad(&|r| r.capabilities = vec!["two words".into()]),
            "invalid capability",
        ),
        (
            bad(&|r| r.metadata = Some(json!([1]))),
            "metadata must be a JSON object",
        ),
    ];
    for (req, needle) in cases {
        refused(svc.request_access(&s.admin, req).await, "invalid", needle);
    }
    assert_eq!(snapshot(&svc, s.ws()).await, before);
}

#[tokio::test]
async fn denied_or_revoked_agent_requesting_again_is_pending_again() {
    let (_db, svc, s) = setup().await;
    request(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    let denied = svc
        .deny_agent(&s.admin, "bot", "unknown vendor")
        .await
        .unwrap();
    assert_eq!(denied.status, AgentStatus::Denied);

    let again = request(&svc, &s.admin, "bot", &[P::ReadTasks, P::ReadPages]).await;
    assert!(again.created);
    assert_eq!(again.agent.status, AgentStatus::Pending);
    assert_eq!(again.agent.denial_reason, None);
    assert_eq!(
        again.agent.requested_permissions,
        perms(&[P::ReadTasks, P::ReadPages]),
        "the new request counts"
    );
    assert!(again.agent.access_version > denied.access_version);

    let (_, key) = svc.approve_agent(&s.admin, "bot", None).await.unwrap();
    svc.revoke_agent(&s.admin, "bot", "done").await.unwrap();
    let third = request(&svc, &s.admin, "bot", &[]).await;
    assert!(third.created);
    assert_eq!(third.agent.status, AgentStatus::Pending);
    assert_eq!(third.agent.granted_permissions, PermissionSet::default());
    assert_eq!(third.agent.revocation_reason, None);
    // The old key stays dead: a new request is not a new approval.
    assert_eq!(
        agent_refusal(&svc, key.expose()).await,
        AgentAuthError::KeyRevoked
    );
    assert_eq!(
        activity_of(&svc, s.ws(), "agent.access_requested")
            .await
            .len(),
        3
    );
}

#[tokio::test]
async fn disabled_workspace_refuses_requests_and_keys() {
    let (_db, svc, s) = setup().await;
    let (_, key) = approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    set(&svc, &s.admin, &[("enabled", "false")]).await;
    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.request_access(&s.admin, access_request("new", &[]))
            .await,
        "forbidden",
        "agents are disabled in workspace acme",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
    assert_eq!(
        agent_refusal(&svc, key.expose()).await,
        AgentAuthError::WorkspaceDisabled
    );
    set(&svc, &s.admin, &[("enabled", "true")]).await;
    agent_caller(&svc, &key).await;
}

// ---------------------------------------------------------------------------------------------
// Approval, denial, revocation, permissions, keys
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn approve_grants_a_subset_of_the_request() {
    let (_db, svc, s) = setup().await;
    request(
        &svc,
        &s.admin,
        "bot",
        &[P::ReadTasks, P::WriteTasks, P::ReadAgents],
    )
    .await;
    let events = all_events(&svc, s.ws()).await.len();
    let (agent, key) = svc
        .approve_agent(&s.admin, "bot", Some(perms(&[P::ReadTasks, P::ReadAgents])))
        .await
        .unwrap();
    assert_eq!(agent.status, AgentStatus::Approved);
    assert_eq!(
        agent.granted_permissions,
        perms(&[P::ReadTasks, P::ReadAgents])
    );
    assert_eq!(agent.resolved_by.as_deref(), Some("member:admin@acme.test"));
    assert!(agent.resolved_at.is_some());
    assert_eq!(
        agent_row(&svc, s.ws(), "bot").await.granted_permissions,
        agent.granted_permissions,
        "stored"
    );

    let caller = agent_caller(&svc, &key).await;
    assert_eq!((caller.workspace_id(), caller.agent_id()), (s.ws(), "bot"));
    assert!(caller.has(P::ReadAgents) && !caller.has(P::WriteTasks));

    let approved = &activity_of(&svc, s.ws(), "agent.access_approved").await[0];
    assert_eq!(
        (approved.actor_kind, approved.actor_id.as_str()),
        (ActorKind::Member, "admin@acme.test")
    );
    assert_eq!(approved.outcome.as_deref(), Some("allowed"));
    let new_events = all_events(&svc, s.ws()).await.split_off(events);
    assert_eq!(new_events.len(), 1);
    assert_eq!(new_events[0].event_type, EventType::AccessApproved);
    assert_eq!(
        new_events[0].data["grantedPermissions"],
        json!(["read:tasks", "read:agents"])
    );
}

#[tokio::test]
async fn approve_refuses_a_grant_beyond_the_request() {
    let (_db, svc, s) = setup().await;
    request(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.approve_agent(&s.admin, "bot", Some(perms(&[P::ReadTasks, P::WriteTasks])))
            .await,
        "invalid",
        "cannot grant write:tasks: agent bot requested only read:tasks",
    );
    assert_eq!(
        snapshot(&svc, s.ws()).await,
        before,
        "still pending, no credential, no event"
    );
    assert_eq!(
        agent_row(&svc, s.ws(), "bot").await.status,
        AgentStatus::Pending
    );
    assert!(credentials(&svc, s.ws(), "bot").await.is_empty());
}

#[tokio::test]
async fn approve_without_a_grant_gives_default_permissions_within_the_request() {
    let (_db, svc, s) = setup().await;
    request(
        &svc,
        &s.admin,
        "bot",
        &[P::ReadTasks, P::WriteTasks, P::ReadPages],
    )
    .await;
    let (agent, _) = svc.approve_agent(&s.admin, "bot", None).await.unwrap();
    assert_eq!(
        agent.granted_permissions,
        perms(&[P::ReadTasks, P::ReadPages])
    );

    set(
        &svc,
        &s.admin,
        &[("default_permissions", "write:tasks,read:agents")],
    )
    .await;
    request(&svc, &s.admin, "bot-2", &[P::ReadTasks, P::WriteTasks]).await;
    let (agent, _) = svc.approve_agent(&s.admin, "bot-2", None).await.unwrap();
    assert_eq!(agent.granted_permissions, perms(&[P::WriteTasks]));
}

#[tokio::test]
async fn approve_twice_or_after_denial_conflicts() {
    let (_db, svc, s) = setup().await;
    approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    request(&svc, &s.admin, "denied", &[]).await;
    svc.deny_agent(&s.admin, "denied", "no").await.unwrap();
    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.approve_agent(&s.admin, "bot", None).await,
        "conflict",
        "agent bot is already approved",
    );
    refused(
        svc.approve_agent(&s.admin, "denied", None).await,
        "conflict",
        "agent denied is denied; it must request access again",
    );
    refused(
        svc.approve_agent(&s.admin, "ghost", None).await,
        "not_found",
        "agent \"ghost\" not found",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
    assert_eq!(credentials(&svc, s.ws(), "bot").await.len(), 1);
}

#[tokio::test]
async fn api_key_is_shown_once_and_only_its_hash_is_stored() {
    let (db, svc, s) = setup().await;
    let (_, key) = approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    let raw = key.expose();
    assert!(raw.starts_with("mcp_agent_"), "{key:?}");
    assert_eq!(ApiKey::parse(raw).unwrap(), key);
    assert!(!format!("{key:?}").contains(raw), "Debug hides the secret");

    // The listing shows the prefix only.
    let details = svc.agent_details(&s.reader, "bot").await.unwrap();
    assert_eq!(details.credentials.len(), 1);
    let cred = &details.credentials[0];
    assert_eq!(cred.key_prefix, key.display_prefix());
    assert!(raw.starts_with(cred.key_prefix.trim_end_matches('…')));
    assert!(cred.key_prefix.chars().count() < 20);
    assert_eq!(
        cred.expires_at, None,
        "no key_ttl_days: the key lasts until rotated or revoked"
    );

    // The row holds the blake3 hash, and the secret is nowhere in the workspace's data.
    let (found, stored) = svc
        .store()
        .read()
        .await
        .unwrap()
        .credential_by_hash(&key.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, cred.id);
    assert_eq!(
        stored.as_str(),
        blake3::hash(raw.as_bytes()).to_hex().as_str()
    );
    let conn = Database::connect(&db.url).await.unwrap();
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT key_hash, key_prefix FROM credentials",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let hash: String = rows[0].try_get("", "key_hash").unwrap();
    let prefix: String = rows[0].try_get("", "key_prefix").unwrap();
    assert_eq!(hash, stored.as_str());
    assert!(!hash.contains(raw) && !prefix.contains(raw));
    conn.close().await.unwrap();
    let everything = snapshot(&svc, s.ws()).await.to_string();
    assert!(
        !everything.contains(&raw["mcp_agent_".len()..]),
        "the key leaked into stored data"
    );

    // The key authenticates; garbage and unknown keys do not.
    assert_eq!(agent_caller(&svc, &key).await.agent_id(), "bot");
    assert_eq!(
        agent_refusal(&svc, "mcp_agent_nonsense").await,
        AgentAuthError::Malformed
    );
    assert_eq!(
        agent_refusal(&svc, &raw.replace("mcp_agent_", "mcp_agent_x")).await,
        AgentAuthError::Malformed
    );
    assert_eq!(
        agent_refusal(&svc, ApiKey::generate().expose()).await,
        AgentAuthError::UnknownKey
    );
}

#[tokio::test]
async fn deny_needs_a_reason() {
    let (_db, svc, s) = setup().await;
    request(&svc, &s.admin, "bot", &[]).await;
    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.deny_agent(&s.admin, "bot", "").await,
        "invalid",
        "reason must not be empty",
    );
    refused(
        svc.deny_agent(&s.admin, "bot", "   ").await,
        "invalid",
        "reason must not be empty",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);

    let events = all_events(&svc, s.ws()).await.len();
    let agent = svc
        .deny_agent(&s.admin, "bot", "unknown vendor")
        .await
        .unwrap();
    assert_eq!(agent.status, AgentStatus::Denied);
    assert_eq!(agent.denial_reason.as_deref(), Some("unknown vendor"));
    assert!(credentials(&svc, s.ws(), "bot").await.is_empty());
    let new_events = all_events(&svc, s.ws()).await.split_off(events);
    assert_eq!(new_events.len(), 1);
    assert_eq!(new_events[0].event_type, EventType::AccessDenied);
    assert_eq!(new_events[0].data["reason"], "unknown vendor");
    let entry = &activity_of(&svc, s.ws(), "agent.access_denied").await[0];
    assert_eq!(
        (entry.outcome.as_deref(), entry.description.as_str()),
        (Some("denied"), "unknown vendor")
    );

    refused(
        svc.deny_agent(&s.admin, "bot", "again").await,
        "conflict",
        "only a pending request can be denied",
    );
}

#[tokio::test]
async fn revoke_refuses_the_key_ends_assignments_and_cancels_delegations() {
    let (_db, svc, s) = setup().await;
    let (_, key) = approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks, P::DelegateAgents]).await;
    approved_agent(&svc, &s.admin, "helper", &[P::ReadTasks]).await;
    assign(&svc, &s, "bot", project(&s.project)).await;
    assign(&svc, &s, "bot", task(&s.task)).await;
    let caller = agent_caller(&svc, &key).await;
    let d = svc
        .request_delegation(&caller, &s.task.id, "helper", "too busy")
        .await
        .unwrap();
    refused(
        svc.revoke_agent(&s.admin, "bot", " ").await,
        "invalid",
        "reason must not be empty",
    );
    let events = all_events(&svc, s.ws()).await.len();

    let agent = svc
        .revoke_agent(&s.admin, "bot", "key leaked")
        .await
        .unwrap();
    assert_eq!(agent.status, AgentStatus::Revoked);
    assert_eq!(agent.revocation_reason.as_deref(), Some("key leaked"));
    assert!(agent.granted_permissions.is_empty());

    assert_eq!(
        agent_refusal(&svc, key.expose()).await,
        AgentAuthError::KeyRevoked
    );
    assert!(
        credentials(&svc, s.ws(), "bot")
            .await
            .iter()
            .all(|c| c.revoked_at.is_some())
    );
    assert!(assignments(&svc, s.ws(), "bot", false).await.is_empty());
    let history = assignments(&svc, s.ws(), "bot", true).await;
    assert_eq!(history.len(), 2, "ended assignments are kept");
    assert!(history.iter().all(|a| a.unassigned_at.is_some()
        && a.unassigned_by.as_deref() == Some("member:admin@acme.test")));
    let d = delegation_row(&svc, s.ws(), &d.id).await;
    assert_eq!(d.status, DelegationStatus::Cancelled);
    assert_eq!(d.resolution_note.as_deref(), Some("agent bot was revoked"));

    let mut names = event_names_after(&svc, s.ws(), events).await;
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "agent.access_revoked",
            "agent.unassigned",
            "agent.unassigned"
        ]
    );
    let entry = &activity_of(&svc, s.ws(), "agent.access_revoked").await[0];
    assert_eq!(entry.metadata, json!({ "keysRevoked": 1 }));

    refused(
        svc.revoke_agent(&s.admin, "bot", "again").await,
        "conflict",
        "only an approved agent can be revoked",
    );
    refused(
        svc.assign(&s.admin, "bot", task(&s.task), AssignmentRole::Member)
            .await,
        "conflict",
        "agent bot is revoked",
    );
}

#[tokio::test]
async fn revoking_the_target_cancels_delegations_to_it() {
    let (_db, svc, s) = setup().await;
    let (_, key) = approved_agent(&svc, &s.admin, "bot", &[P::DelegateAgents]).await;
    approved_agent(&svc, &s.admin, "helper", &[P::ReadTasks]).await;
    assign(&svc, &s, "bot", task(&s.task)).await;
    let d = svc
        .request_delegation(
            &agent_caller(&svc, &key).await,
            &s.task.id,
            "helper",
            "busy",
        )
        .await
        .unwrap();
    svc.revoke_agent(&s.admin, "helper", "gone").await.unwrap();
    assert_eq!(
        delegation_row(&svc, s.ws(), &d.id).await.status,
        DelegationStatus::Cancelled
    );
    assert_eq!(
        assignments(&svc, s.ws(), "bot", false).await.len(),
        1,
        "the delegating agent keeps its task"
    );
}

#[tokio::test]
async fn permission_changes_apply_to_the_next_authentication() {
    let (_db, svc, s) = setup().await;
    request(
        &svc,
        &s.admin,
        "bot",
        &[P::ReadTasks, P::WriteTasks, P::ReadAgents],
    )
    .await;
    let (_, key) = svc
        .approve_agent(&s.admin, "bot", Some(perms(&[P::ReadTasks])))
        .await
        .unwrap();
    let caller = agent_caller(&svc, &key).await;
    assert!(!caller.has(P::WriteTasks));

    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.set_agent_permissions(&s.admin, "bot", perms(&[P::ReadTasks, P::DelegateAgents]))
            .await,
        "invalid",
        "cannot grant delegate:agents",
    );
    refused(
        svc.set_agent_permissions(&s.writer, "bot", perms(&[P::ReadTasks]))
            .await,
        "forbidden",
        "needs admin",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);

    let agent = svc
        .set_agent_permissions(&s.admin, "bot", perms(&[P::WriteTasks, P::ReadAgents]))
        .await
        .unwrap();
    assert!(agent.access_version > caller.agent().access_version);
    let next = agent_caller(&svc, &key).await;
    assert!(next.has(P::WriteTasks) && next.has(P::ReadAgents) && !next.has(P::ReadTasks));
    let entry = &activity_of(&svc, s.ws(), "agent.permissions_changed").await[0];
    assert_eq!(
        entry.metadata,
        json!({ "old": ["read:tasks"], "new": ["write:tasks", "read:agents"] })
    );

    request(&svc, &s.admin, "pending", &[]).await;
    refused(
        svc.set_agent_permissions(&s.admin, "pending", perms(&[]))
            .await,
        "conflict",
        "permissions apply to approved agents",
    );
}

#[tokio::test]
async fn rotating_a_key_revokes_the_old_one() {
    let (_db, svc, s) = setup().await;
    let (_, old) = approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    refused(
        svc.rotate_agent_key(&s.admin, "bot", Some(0)).await,
        "invalid",
        "key lifetime must be at least 1 day",
    );
    refused(
        svc.rotate_agent_key(&s.writer, "bot", None).await,
        "forbidden",
        "needs admin",
    );
    agent_caller(&svc, &old).await;

    let (cred, new) = svc
        .rotate_agent_key(&s.admin, "bot", Some(7))
        .await
        .unwrap();
    assert_ne!(new, old);
    assert_eq!(cred.key_prefix, new.display_prefix());
    let expires = cred.expires_at.expect("a 7-day key");
    assert!(
        (expires - (Utc::now() + Duration::days(7)))
            .num_seconds()
            .abs()
            < 60
    );
    assert_eq!(
        agent_refusal(&svc, old.expose()).await,
        AgentAuthError::KeyRevoked
    );
    assert_eq!(agent_caller(&svc, &new).await.agent_id(), "bot");
    let creds = credentials(&svc, s.ws(), "bot").await;
    assert_eq!(creds.len(), 2);
    assert_eq!(creds.iter().filter(|c| c.revoked_at.is_none()).count(), 1);
    assert_eq!(
        activity_of(&svc, s.ws(), "agent.key_rotated").await.len(),
        1
    );

    request(&svc, &s.admin, "pending", &[]).await;
    refused(
        svc.rotate_agent_key(&s.admin, "pending", None).await,
        "conflict",
        "only an approved agent has keys",
    );
}

#[tokio::test]
async fn keys_get_the_workspace_lifetime_and_expired_keys_are_refused() {
    let (_db, svc, s) = setup().await;
    set(&svc, &s.admin, &[("key_ttl_days", "1")]).await;
    let (_, key) = approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    let cred = credentials(&svc, s.ws(), "bot").await.remove(0);
    let expires = cred.expires_at.expect("key_ttl_days gives keys an expiry");
    assert!(
        (expires - (cred.created_at + Duration::days(1)))
            .num_seconds()
            .abs()
            < 1
    );
    agent_caller(&svc, &key).await;

    // A key of the same agent issued two days ago with a one-day lifetime: written through the
    // store with past timestamps, which is what time passing would leave.
    let stale = ApiKey::generate();
    let issued = Utc::now() - Duration::days(2);
    let tx = svc.store().write().await.unwrap();
    tx.insert_credential(
        &Credential {
            id: new_id(),
            workspace_id: s.ws().to_owned(),
            agent_id: "bot".into(),
            key_prefix: stale.display_prefix(),
            created_at: issued,
            last_used_at: None,
            expires_at: Some(issued + Duration::days(1)),
            revoked_at: None,
        },
        &stale.hash(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        agent_refusal(&svc, stale.expose()).await,
        AgentAuthError::KeyExpired
    );
    agent_caller(&svc, &key).await;
}

// ---------------------------------------------------------------------------------------------
// Auto-approval
// ---------------------------------------------------------------------------------------------

async fn enable_auto_approval(svc: &Service, s: &Seeded) {
    set(
        svc,
        &s.admin,
        &[
            ("auto_approve_permissions", "read:tasks,read:pages"),
            ("auto_approve_capabilities", "docs,summarize"),
        ],
    )
    .await;
}

#[tokio::test]
async fn request_within_the_auto_approve_lists_is_approved_with_a_key() {
    let (_db, svc, s) = setup().await;
    enable_auto_approval(&svc, &s).await;
    let out = request(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    assert!(out.created);
    assert_eq!(out.agent.status, AgentStatus::Approved);
    assert!(out.agent.auto_approved);
    assert_eq!(out.agent.granted_permissions, perms(&[P::ReadTasks]));
    assert_eq!(out.agent.resolved_by.as_deref(), Some("system"));
    let key = out.api_key.expect("auto-approval returns the key");
    assert_eq!(agent_caller(&svc, &key).await.agent_id(), "bot");
    assert_eq!(
        event_names_after(&svc, s.ws(), 0).await,
        ["agent.access_requested", "agent.access_approved"]
    );
    let approved = &activity_of(&svc, s.ws(), "agent.access_approved").await[0];
    assert_eq!(
        (approved.actor_kind, approved.actor_id.as_str()),
        (ActorKind::System, "system")
    );
}

#[tokio::test]
async fn request_outside_the_auto_approve_lists_stays_pending() {
    let (_db, svc, s) = setup().await;
    enable_auto_approval(&svc, &s).await;
    let beyond_permissions =
        request(&svc, &s.admin, "writer-bot", &[P::ReadTasks, P::WriteTasks]).await;
    let mut req = access_request("deployer", &[P::ReadTasks]);
    req.capabilities = vec!["docs".into(), "deploy".into()];
    let beyond_capabilities = svc.request_access(&s.admin, req).await.unwrap();
    for out in [beyond_permissions, beyond_capabilities] {
        assert_eq!(out.agent.status, AgentStatus::Pending, "{}", out.agent.id);
        assert!(out.api_key.is_none());
        assert!(credentials(&svc, s.ws(), &out.agent.id).await.is_empty());
    }
    assert!(
        activity_of(&svc, s.ws(), "agent.access_approved")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn auto_approval_is_off_without_an_opt_in() {
    let (_db, svc, s) = setup().await;
    let out = request(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    assert_eq!(out.agent.status, AgentStatus::Pending);
    assert!(out.api_key.is_none());
}

#[tokio::test]
async fn auto_approval_respects_max_agents() {
    let (_db, svc, s) = setup().await;
    enable_auto_approval(&svc, &s).await;
    set(&svc, &s.admin, &[("max_agents", "1")]).await;
    assert!(
        request(&svc, &s.admin, "first", &[P::ReadTasks])
            .await
            .api_key
            .is_some()
    );
    let before = snapshot(&svc, s.ws()).await;
    let err = refused(
        svc.request_access(&s.admin, access_request("second", &[P::ReadTasks]))
            .await,
        "quota_exceeded",
        "quota exceeded: max_agents is 1",
    );
    assert!(matches!(
        err,
        ServiceError::QuotaExceeded {
            limit: "max_agents",
            max: 1,
            ..
        }
    ));
    assert_eq!(snapshot(&svc, s.ws()).await, before);
}

// ---------------------------------------------------------------------------------------------
// Quotas
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn max_agents_refuses_a_request() {
    let (_db, svc, s) = setup().await;
    set(&svc, &s.admin, &[("max_agents", "2")]).await;
    request(&svc, &s.admin, "a", &[]).await;
    approved_agent(&svc, &s.admin, "b", &[P::ReadTasks]).await;
    let before = snapshot(&svc, s.ws()).await;
    let err = refused(
        svc.request_access(&s.admin, access_request("c", &[])).await,
        "quota_exceeded",
        "max_agents is 2 and the workspace has 2 pending or approved agents",
    );
    assert!(matches!(
        err,
        ServiceError::QuotaExceeded {
            limit: "max_agents",
            max: 2,
            ..
        }
    ));
    assert_eq!(snapshot(&svc, s.ws()).await, before);
    // A denied agent no longer counts.
    svc.deny_agent(&s.admin, "a", "no").await.unwrap();
    assert!(request(&svc, &s.admin, "c", &[]).await.created);
}

#[tokio::test]
async fn max_agents_refuses_an_approval() {
    let (_db, svc, s) = setup().await;
    request(&svc, &s.admin, "a", &[]).await;
    request(&svc, &s.admin, "b", &[]).await;
    svc.approve_agent(&s.admin, "a", None).await.unwrap();
    set(&svc, &s.admin, &[("max_agents", "1")]).await;
    let before = snapshot(&svc, s.ws()).await;
    let err = refused(
        svc.approve_agent(&s.admin, "b", None).await,
        "quota_exceeded",
        "max_agents is 1 and 1 agents are approved",
    );
    assert!(matches!(
        err,
        ServiceError::QuotaExceeded {
            limit: "max_agents",
            max: 1,
            ..
        }
    ));
    assert_eq!(
        snapshot(&svc, s.ws()).await,
        before,
        "b stays pending without a key"
    );
}

#[tokio::test]
async fn max_agents_per_project_counts_agents_on_the_project_or_its_tasks() {
    let (_db, svc, s) = setup().await;
    set(&svc, &s.admin, &[("max_agents_per_project", "2")]).await;
    for id in ["a", "b", "c"] {
        approved_agent(&svc, &s.admin, id, &[P::ReadTasks]).await;
    }
    let other_task = svc
        .create_task(&s.admin, &s.project.id, "Another", "")
        .await
        .unwrap();
    assign(&svc, &s, "a", project(&s.project)).await;
    let on_task = assign(&svc, &s, "b", task(&s.task)).await;
    let before = snapshot(&svc, s.ws()).await;
    for target in [project(&s.project), task(&other_task)] {
        let err = refused(
            svc.assign(&s.admin, "c", target, AssignmentRole::Member)
                .await,
            "quota_exceeded",
            "max_agents_per_project is 2",
        );
        assert!(matches!(
            err,
            ServiceError::QuotaExceeded {
                limit: "max_agents_per_project",
                max: 2,
                ..
            }
        ));
    }
    assert_eq!(snapshot(&svc, s.ws()).await, before);
    // Agents already on the project take more of its work without counting twice.
    assign(&svc, &s, "a", task(&other_task)).await;
    assign(&svc, &s, "b", project(&s.project)).await;
    // Another project has its own room.
    let other = svc.create_project(&s.admin, "Other", "").await.unwrap();
    assign(&svc, &s, "c", project(&other)).await;
    // Ending b's assignments frees its place.
    svc.unassign(&s.admin, &on_task.id).await.unwrap();
    let b_project = assignments(&svc, s.ws(), "b", false).await.remove(0);
    svc.unassign(&s.admin, &b_project.id).await.unwrap();
    assign(&svc, &s, "c", task(&s.task)).await;
}

#[tokio::test]
async fn max_active_assignments_per_agent_refuses_one_more() {
    let (_db, svc, s) = setup().await;
    set(&svc, &s.admin, &[("max_active_assignments_per_agent", "2")]).await;
    approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    let t2 = svc
        .create_task(&s.admin, &s.project.id, "Two", "")
        .await
        .unwrap();
    let t3 = svc
        .create_task(&s.admin, &s.project.id, "Three", "")
        .await
        .unwrap();
    let first = assign(&svc, &s, "bot", task(&s.task)).await;
    assign(&svc, &s, "bot", task(&t2)).await;
    let before = snapshot(&svc, s.ws()).await;
    let err = refused(
        svc.assign(&s.admin, "bot", task(&t3), AssignmentRole::Member)
            .await,
        "quota_exceeded",
        "max_active_assignments_per_agent is 2 and agent bot has 2 active assignments",
    );
    assert!(matches!(
        err,
        ServiceError::QuotaExceeded {
            limit: "max_active_assignments_per_agent",
            max: 2,
            ..
        }
    ));
    refused(
        svc.assign(&s.admin, "bot", project(&s.project), AssignmentRole::Lead)
            .await,
        "quota_exceeded",
        "max_active_assignments_per_agent",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
    // Re-assigning an existing assignment is not one more.
    assert!(
        !svc.assign(&s.admin, "bot", task(&t2), AssignmentRole::Member)
            .await
            .unwrap()
            .1
    );
    svc.unassign(&s.admin, &first.id).await.unwrap();
    assign(&svc, &s, "bot", task(&t3)).await;
}

const RACERS: usize = 8;
const ROOM: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_respect_max_agents() {
    let (_db, svc, s) = setup().await;
    set(&svc, &s.admin, &[("max_agents", ROOM.to_string().as_str())]).await;
    let results = concurrently(&svc, RACERS, |i| {
        let (svc, admin) = (svc.clone(), s.admin.clone());
        async move {
            svc.request_access(&admin, access_request(&format!("bot-{i}"), &[]))
                .await
        }
    })
    .await;
    exactly_k_succeed(&results, ROOM, "max_agents");
    assert_eq!(svc.list_agents(&s.admin, None).await.unwrap().len(), ROOM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_for_one_agent_create_it_once() {
    let (_db, svc, s) = setup().await;
    let results = concurrently(&svc, RACERS, |_| {
        let (svc, admin) = (svc.clone(), s.admin.clone());
        async move { svc.request_access(&admin, access_request("bot", &[])).await }
    })
    .await;
    let created = results
        .iter()
        .filter(|r| r.as_ref().expect("request").created)
        .count();
    assert_eq!(created, 1);
    assert_eq!(
        activity_of(&svc, s.ws(), "agent.access_requested")
            .await
            .len(),
        1
    );
    assert_eq!(all_events(&svc, s.ws()).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_approvals_respect_max_agents() {
    let (_db, svc, s) = setup().await;
    for i in 0..RACERS {
        request(&svc, &s.admin, &format!("bot-{i}"), &[]).await;
    }
    set(&svc, &s.admin, &[("max_agents", ROOM.to_string().as_str())]).await;
    let results = concurrently(&svc, RACERS, |i| {
        let (svc, admin) = (svc.clone(), s.admin.clone());
        async move { svc.approve_agent(&admin, &format!("bot-{i}"), None).await }
    })
    .await;
    exactly_k_succeed(&results, ROOM, "max_agents");
    assert_eq!(
        svc.list_agents(&s.admin, Some(AgentStatus::Approved))
            .await
            .unwrap()
            .len(),
        ROOM
    );
    let mut keys = 0;
    for i in 0..RACERS {
        keys += credentials(&svc, s.ws(), &format!("bot-{i}")).await.len();
    }
    assert_eq!(keys, ROOM, "a refused approval issues no key");
    assert_eq!(
        activity_of(&svc, s.ws(), "agent.access_approved")
            .await
            .len(),
        ROOM
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_assignments_respect_max_agents_per_project() {
    let (_db, svc, s) = setup().await;
    set(
        &svc,
        &s.admin,
        &[("max_agents_per_project", ROOM.to_string().as_str())],
    )
    .await;
    for i in 0..RACERS {
        approved_agent(&svc, &s.admin, &format!("bot-{i}"), &[P::ReadTasks]).await;
    }
    let results = concurrently(&svc, RACERS, |i| {
        let (svc, writer, target) = (
            svc.clone(),
            s.writer.clone(),
            if i % 2 == 0 {
                project(&s.project)
            } else {
                task(&s.task)
            },
        );
        async move {
            svc.assign(&writer, &format!("bot-{i}"), target, AssignmentRole::Member)
                .await
        }
    })
    .await;
    exactly_k_succeed(&results, ROOM, "max_agents_per_project");
    let active = svc
        .store()
        .read()
        .await
        .unwrap()
        .list_assignments(s.ws(), Some(s.project.id.as_str()), None, false)
        .await
        .unwrap();
    assert_eq!(active.len(), ROOM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_assignments_respect_max_active_assignments_per_agent() {
    let (_db, svc, s) = setup().await;
    set(
        &svc,
        &s.admin,
        &[(
            "max_active_assignments_per_agent",
            ROOM.to_string().as_str(),
        )],
    )
    .await;
    approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        tasks.push(
            svc.create_task(&s.admin, &s.project.id, &format!("Task {i}"), "")
                .await
                .unwrap(),
        );
    }
    let results = concurrently(&svc, RACERS, |i| {
        let (svc, writer, target) = (svc.clone(), s.writer.clone(), task(&tasks[i]));
        async move {
            svc.assign(&writer, "bot", target, AssignmentRole::Member)
                .await
        }
    })
    .await;
    exactly_k_succeed(&results, ROOM, "max_active_assignments_per_agent");
    assert_eq!(assignments(&svc, s.ws(), "bot", false).await.len(), ROOM);
}

/// Live (unrevoked) keys of an agent.
async fn live_keys(svc: &Service, ws: &str, id: &str) -> usize {
    credentials(svc, ws, id)
        .await
        .iter()
        .filter(|c| c.revoked_at.is_none())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_approval_and_denial_leave_the_winner_consistent() {
    let (_db, svc, s) = setup().await;
    for round in 0..5 {
        let id = format!("bot-{round}");
        request(&svc, &s.admin, &id, &[]).await;
        let results = concurrently(&svc, 2, |i| {
            let (svc, admin, id) = (svc.clone(), s.admin.clone(), id.clone());
            async move {
                match i {
                    0 => svc.approve_agent(&admin, &id, None).await.map(drop),
                    _ => svc.deny_agent(&admin, &id, "no").await.map(drop),
                }
            }
        })
        .await;
        let (approved, denied) = (results[0].is_ok(), results[1].is_ok());
        assert!(approved != denied, "exactly one decision wins: {results:?}");
        let agent = agent_row(&svc, s.ws(), &id).await;
        let live = live_keys(&svc, s.ws(), &id).await;
        if approved {
            assert_eq!(
                (agent.status, live),
                (AgentStatus::Approved, 1),
                "{results:?}"
            );
        } else {
            assert_eq!(
                (agent.status, live),
                (AgentStatus::Denied, 0),
                "a denied agent holds no live key: {results:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_racing_other_changes_to_the_agent_is_never_lost() {
    let (_db, svc, s) = setup().await;
    for round in 0..5 {
        let id = format!("bot-{round}");
        let (_, key) = approved_agent(&svc, &s.admin, &id, &[P::ReadTasks, P::WriteTasks]).await;
        let caller = agent_caller(&svc, &key).await;
        let results = concurrently(&svc, 4, |i| {
            let (svc, admin, id, caller) =
                (svc.clone(), s.admin.clone(), id.clone(), caller.clone());
            async move {
                match i {
                    0 => svc.revoke_agent(&admin, &id, "compromised").await.map(drop),
                    1 => svc.rotate_agent_key(&admin, &id, None).await.map(drop),
                    2 => svc
                        .set_agent_permissions(&admin, &id, perms(&[P::ReadTasks]))
                        .await
                        .map(drop),
                    _ => {
                        let audit = tool_audit(&caller, "agent_update_status");
                        svc.update_working_status(
                            &caller,
                            &audit,
                            WorkingStatus::Working,
                            None,
                            None,
                        )
                        .await
                        .map(drop)
                    }
                }
            }
        })
        .await;
        assert!(
            results[0].is_ok(),
            "the revocation itself succeeds: {results:?}"
        );
        let agent = agent_row(&svc, s.ws(), &id).await;
        assert_eq!(agent.status, AgentStatus::Revoked, "{results:?}");
        assert!(agent.granted_permissions.is_empty(), "{results:?}");
        assert_eq!(
            live_keys(&svc, s.ws(), &id).await,
            0,
            "no key outlives the revocation: {results:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Assignments
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn only_approved_agents_can_be_assigned() {
    let (_db, svc, s) = setup().await;
    request(&svc, &s.admin, "pending", &[]).await;
    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.assign(&s.writer, "pending", task(&s.task), AssignmentRole::Member)
            .await,
        "conflict",
        "agent pending is pending; only approved agents can be assigned",
    );
    refused(
        svc.assign(&s.writer, "ghost", task(&s.task), AssignmentRole::Member)
            .await,
        "not_found",
        "agent \"ghost\"",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
}

#[tokio::test]
async fn assigning_to_a_project_and_a_task_and_twice_returns_the_existing_one() {
    let (_db, svc, s) = setup().await;
    approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    let events = all_events(&svc, s.ws()).await.len();
    let (on_project, created) = svc
        .assign(&s.writer, "bot", project(&s.project), AssignmentRole::Lead)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(
        (
            on_project.kind,
            on_project.role,
            on_project.task_id.as_deref()
        ),
        (AssignmentKind::Project, AssignmentRole::Lead, None)
    );
    assert_eq!(on_project.assigned_by, "member:writer@acme.test");
    let (on_task, created) = svc
        .assign(&s.writer, "bot", task(&s.task), AssignmentRole::Member)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(
        (on_task.kind, on_task.project_id.as_str()),
        (AssignmentKind::Task, s.project.id.as_str())
    );
    assert_eq!(on_task.task_id.as_deref(), Some(s.task.id.as_str()));

    let after = snapshot(&svc, s.ws()).await;
    let (again, created) = svc
        .assign(&s.writer, "bot", task(&s.task), AssignmentRole::Lead)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, on_task.id);
    assert_eq!(
        again.role,
        AssignmentRole::Member,
        "the existing assignment is returned unchanged"
    );
    let (again, created) = svc
        .assign(&s.writer, "bot", project(&s.project), AssignmentRole::Lead)
        .await
        .unwrap();
    assert!(!created && again.id == on_project.id);
    assert_eq!(
        snapshot(&svc, s.ws()).await,
        after,
        "no second activity or event"
    );

    assert_eq!(
        event_names_after(&svc, s.ws(), events).await,
        ["agent.project_assigned", "agent.task_assigned"]
    );
    let ev = all_events(&svc, s.ws()).await.pop().unwrap();
    assert_eq!(ev.data["assignmentId"], json!(on_task.id));
    assert_eq!(ev.data["taskId"], json!(s.task.id));
    let entry = &activity_of(&svc, s.ws(), "agent.task_assigned").await[0];
    assert_eq!(entry.agent_id.as_deref(), Some("bot"));
    assert_eq!(entry.task_id.as_deref(), Some(s.task.id.as_str()));
    assert_eq!(entry.project_id.as_deref(), Some(s.project.id.as_str()));
}

#[tokio::test]
async fn unassigning_keeps_history_and_twice_conflicts() {
    let (_db, svc, s) = setup().await;
    approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    let a = assign(&svc, &s, "bot", task(&s.task)).await;
    let events = all_events(&svc, s.ws()).await.len();
    let ended = svc.unassign(&s.writer, &a.id).await.unwrap();
    assert!(ended.unassigned_at.is_some());
    assert_eq!(
        ended.unassigned_by.as_deref(),
        Some("member:writer@acme.test")
    );
    assert!(
        svc.list_assignments(&s.reader, Some("bot"), None, false)
            .await
            .unwrap()
            .is_empty()
    );
    let history = svc
        .list_assignments(&s.reader, Some("bot"), None, true)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].id, a.id);
    assert_eq!(history[0].unassigned_at, ended.unassigned_at);
    assert_eq!(
        event_names_after(&svc, s.ws(), events).await,
        ["agent.unassigned"]
    );
    assert_eq!(activity_of(&svc, s.ws(), "agent.unassigned").await.len(), 1);

    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.unassign(&s.writer, &a.id).await,
        "conflict",
        "already ended",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
    // Assigning again makes a new row; the old one stays in the history.
    let again = assign(&svc, &s, "bot", task(&s.task)).await;
    assert_ne!(again.id, a.id);
    assert_eq!(
        svc.list_assignments(&s.reader, Some("bot"), Some(s.project.id.as_str()), true)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn ids_from_another_workspace_are_not_found() {
    let (_db, svc, s) = setup().await;
    let rival = seed_workspace(&svc, "rival").await;
    approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks, P::DelegateAgents]).await;
    let (_, rival_key) = approved_agent(
        &svc,
        &rival.admin,
        "spy",
        &[P::ReadTasks, P::DelegateAgents],
    )
    .await;
    approved_agent(&svc, &rival.admin, "spy-helper", &[P::ReadTasks]).await;
    let rival_assignment = assign(&svc, &rival, "spy", task(&rival.task)).await;
    let spy = agent_caller(&svc, &rival_key).await;
    let rival_delegation = svc
        .request_delegation(&spy, &rival.task.id, "spy-helper", "busy")
        .await
        .unwrap();
    let (ours, theirs) = (
        snapshot(&svc, s.ws()).await,
        snapshot(&svc, rival.ws()).await,
    );

    let role = AssignmentRole::Member;
    refused(
        svc.assign(&s.admin, "bot", project(&rival.project), role)
            .await,
        "not_found",
        "project",
    );
    refused(
        svc.assign(&s.admin, "bot", task(&rival.task), role).await,
        "not_found",
        "task",
    );
    refused(
        svc.assign(&s.admin, "spy", task(&s.task), role).await,
        "not_found",
        "agent \"spy\"",
    );
    refused(
        svc.unassign(&s.admin, &rival_assignment.id).await,
        "not_found",
        "assignment",
    );
    refused(
        svc.create_task(&s.admin, &rival.project.id, "T", "").await,
        "not_found",
        "project",
    );
    refused(
        svc.create_page(&s.admin, Some(&rival.project.id), "P", "")
            .await,
        "not_found",
        "project",
    );
    refused(
        svc.approve_agent(&s.admin, "spy", None).await,
        "not_found",
        "agent",
    );
    refused(
        svc.revoke_agent(&s.admin, "spy", "x").await,
        "not_found",
        "agent",
    );
    refused(
        svc.agent_details(&s.admin, "spy").await,
        "not_found",
        "agent",
    );
    refused(
        svc.resolve_delegation(
            &s.admin,
            &rival_delegation.id,
            DelegationResolution::Approve,
            None,
        )
        .await,
        "not_found",
        "delegation",
    );
    // An agent cannot reach into the other workspace either.
    refused(
        svc.request_delegation(&spy, &s.task.id, "spy-helper", "x")
            .await,
        "not_found",
        "task",
    );
    refused(
        svc.request_delegation(&spy, &rival.task.id, "bot", "x")
            .await,
        "not_found",
        "agent \"bot\"",
    );
    assert!(
        svc.list_assignments(&s.admin, Some("spy"), None, true)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(snapshot(&svc, s.ws()).await, ours);
    assert_eq!(snapshot(&svc, rival.ws()).await, theirs);
}

#[tokio::test]
async fn malformed_ids_are_invalid() {
    let (_db, svc, s) = setup().await;
    let (_, key) = approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks, P::DelegateAgents]).await;
    let caller = agent_caller(&svc, &key).await;
    let before = snapshot(&svc, s.ws()).await;
    let role = AssignmentRole::Member;
    refused(
        svc.assign(&s.admin, "bot", AssignTarget::Project("nope".into()), role)
            .await,
        "invalid",
        "invalid project id \"nope\"",
    );
    refused(
        svc.assign(&s.admin, "bot", AssignTarget::Task("1234".into()), role)
            .await,
        "invalid",
        "invalid task id",
    );
    refused(
        svc.unassign(&s.admin, "x").await,
        "invalid",
        "invalid assignment id",
    );
    refused(
        svc.create_task(&s.admin, "x", "T", "").await,
        "invalid",
        "invalid project id",
    );
    refused(
        svc.resolve_delegation(&s.admin, "x", DelegationResolution::Approve, None)
            .await,
        "invalid",
        "invalid delegation id",
    );
    refused(
        svc.list_assignments(&s.admin, None, Some("x"), true).await,
        "invalid",
        "invalid project id",
    );
    refused(
        svc.request_delegation(&caller, "x", "helper", "r").await,
        "invalid",
        "invalid task id",
    );
    refused(
        svc.request_delegation(&caller, &s.task.id, "bad id", "r")
            .await,
        "invalid",
        "invalid agent id",
    );
    let page = ActivityQuery {
        before: Some("x".into()),
        ..Default::default()
    };
    refused(
        svc.list_activity(&s.admin, page).await,
        "invalid",
        "invalid activity id",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
    // Ids are UUIDs in any case.
    let (a, _) = svc
        .assign(
            &s.admin,
            "bot",
            AssignTarget::Task(s.task.id.to_uppercase()),
            role,
        )
        .await
        .unwrap();
    assert_eq!(a.task_id.as_deref(), Some(s.task.id.as_str()));
}

// ---------------------------------------------------------------------------------------------
// Delegation
// ---------------------------------------------------------------------------------------------

/// `bot` (may delegate, assigned to the seeded task) and `helper` (approved), with `bot`'s caller.
async fn delegation_setup(svc: &Service, s: &Seeded) -> AgentCaller {
    let (_, key) = approved_agent(svc, &s.admin, "bot", &[P::ReadTasks, P::DelegateAgents]).await;
    approved_agent(svc, &s.admin, "helper", &[P::ReadTasks]).await;
    svc.assign(&s.admin, "bot", task(&s.task), AssignmentRole::Lead)
        .await
        .unwrap();
    agent_caller(svc, &key).await
}

#[tokio::test]
async fn delegating_needs_the_delegate_permission() {
    let (_db, svc, s) = setup().await;
    let (_, key) = approved_agent(&svc, &s.admin, "plain", &[P::ReadTasks]).await;
    approved_agent(&svc, &s.admin, "helper", &[P::ReadTasks]).await;
    assign(&svc, &s, "plain", task(&s.task)).await;
    let before = snapshot(&svc, s.ws()).await;
    let caller = agent_caller(&svc, &key).await;
    refused(
        svc.request_delegation(&caller, &s.task.id, "helper", "busy")
            .await,
        "forbidden",
        "needs the delegate:agents permission",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
}

#[tokio::test]
async fn delegating_needs_the_caller_assigned_to_the_task() {
    let (_db, svc, s) = setup().await;
    let caller = delegation_setup(&svc, &s).await;
    let unassigned = svc
        .create_task(&s.admin, &s.project.id, "Not mine", "")
        .await
        .unwrap();
    // Being on the project is not being on the task.
    assign(&svc, &s, "bot", project(&s.project)).await;
    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.request_delegation(&caller, &unassigned.id, "helper", "busy")
            .await,
        "forbidden",
        "you are not assigned to task",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
}

#[tokio::test]
async fn delegation_target_must_be_another_approved_agent_of_the_workspace() {
    let (_db, svc, s) = setup().await;
    let caller = delegation_setup(&svc, &s).await;
    request(&svc, &s.admin, "pending", &[]).await;
    let rival = seed_workspace(&svc, "rival").await;
    approved_agent(&svc, &rival.admin, "outsider", &[P::ReadTasks]).await;
    let before = snapshot(&svc, s.ws()).await;
    let t = &s.task.id;
    refused(
        svc.request_delegation(&caller, t, "bot", "me").await,
        "invalid",
        "cannot delegate a task to yourself",
    );
    refused(
        svc.request_delegation(&caller, t, "pending", "x").await,
        "conflict",
        "agent pending is pending; delegate only to approved agents",
    );
    refused(
        svc.request_delegation(&caller, t, "outsider", "x").await,
        "not_found",
        "agent \"outsider\"",
    );
    refused(
        svc.request_delegation(&caller, t, "ghost", "x").await,
        "not_found",
        "agent \"ghost\"",
    );
    refused(
        svc.request_delegation(&caller, t, "helper", "  ").await,
        "invalid",
        "reason must not be empty",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
}

#[tokio::test]
async fn a_pending_duplicate_delegation_conflicts() {
    let (_db, svc, s) = setup().await;
    let caller = delegation_setup(&svc, &s).await;
    approved_agent(&svc, &s.admin, "other", &[P::ReadTasks]).await;
    let events = all_events(&svc, s.ws()).await.len();
    let d = svc
        .request_delegation(&caller, &s.task.id, "helper", "too busy")
        .await
        .unwrap();
    assert_eq!(d.status, DelegationStatus::Pending);
    assert_eq!(
        (
            d.from_agent_id.as_str(),
            d.to_agent_id.as_str(),
            d.reason.as_str()
        ),
        ("bot", "helper", "too busy")
    );
    assert!(
        (d.expires_at - d.requested_at - Duration::hours(168))
            .num_seconds()
            .abs()
            < 1,
        "delegation_ttl_hours"
    );
    assert_eq!(
        event_names_after(&svc, s.ws(), events).await,
        ["agent.delegation_requested"]
    );
    let entry = &activity_of(&svc, s.ws(), "agent.delegation_requested").await[0];
    assert_eq!(
        (entry.actor_kind, entry.actor_id.as_str()),
        (ActorKind::Agent, "bot")
    );
    assert_eq!(entry.task_id.as_deref(), Some(s.task.id.as_str()));

    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.request_delegation(&caller, &s.task.id, "other", "still busy")
            .await,
        "conflict",
        "is already pending",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
}

#[tokio::test]
async fn approving_a_delegation_moves_the_assignment_atomically() {
    let (_db, svc, s) = setup().await;
    let caller = delegation_setup(&svc, &s).await;
    let old = assignments(&svc, s.ws(), "bot", false).await.remove(0);
    let d = svc
        .request_delegation(&caller, &s.task.id, "helper", "too busy")
        .await
        .unwrap();
    let events = all_events(&svc, s.ws()).await.len();
    refused(
        svc.resolve_delegation(&s.reader, &d.id, DelegationResolution::Approve, None)
            .await,
        "forbidden",
        "needs write",
    );

    let resolved = svc
        .resolve_delegation(&s.writer, &d.id, DelegationResolution::Approve, Some("ok"))
        .await
        .unwrap();
    assert_eq!(resolved.status, DelegationStatus::Approved);
    assert_eq!(
        resolved.resolved_by.as_deref(),
        Some("member:writer@acme.test")
    );
    assert_eq!(
        delegation_row(&svc, s.ws(), &d.id).await.status,
        DelegationStatus::Approved
    );

    assert!(assignments(&svc, s.ws(), "bot", false).await.is_empty());
    let ended = assignments(&svc, s.ws(), "bot", true).await.remove(0);
    assert_eq!(ended.id, old.id);
    assert!(ended.unassigned_at.is_some());
    let new = assignments(&svc, s.ws(), "helper", false).await;
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].task_id.as_deref(), Some(s.task.id.as_str()));
    assert_eq!(
        new[0].role,
        AssignmentRole::Lead,
        "the role moves with the task"
    );

    let logged: Vec<Option<String>> = activity_of(&svc, s.ws(), "agent.delegation_approved")
        .await
        .into_iter()
        .map(|e| e.agent_id)
        .collect();
    assert_eq!(logged.len(), 2);
    assert!(logged.contains(&Some("bot".into())) && logged.contains(&Some("helper".into())));
    let mut names = event_names_after(&svc, s.ws(), events).await;
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "agent.delegation_approved",
            "agent.task_assigned",
            "agent.unassigned"
        ]
    );

    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.resolve_delegation(&s.writer, &d.id, DelegationResolution::Approve, None)
            .await,
        "conflict",
        "is approved",
    );
    refused(
        svc.resolve_delegation(&s.writer, &d.id, DelegationResolution::Deny, Some("late"))
            .await,
        "conflict",
        "is approved",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
}

#[tokio::test]
async fn a_delegation_the_target_has_no_room_for_changes_nothing() {
    let (_db, svc, s) = setup().await;
    let caller = delegation_setup(&svc, &s).await;
    set(&svc, &s.admin, &[("max_active_assignments_per_agent", "1")]).await;
    let elsewhere = svc
        .create_task(&s.admin, &s.project.id, "Helper's own", "")
        .await
        .unwrap();
    assign(&svc, &s, "helper", task(&elsewhere)).await;
    let d = svc
        .request_delegation(&caller, &s.task.id, "helper", "too busy")
        .await
        .unwrap();
    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.resolve_delegation(&s.writer, &d.id, DelegationResolution::Approve, None)
            .await,
        "quota_exceeded",
        "max_active_assignments_per_agent is 1 and agent helper has 1 active assignments",
    );
    assert_eq!(
        snapshot(&svc, s.ws()).await,
        before,
        "bot keeps the task: the move is all or nothing"
    );
    assert_eq!(
        delegation_row(&svc, s.ws(), &d.id).await.status,
        DelegationStatus::Pending
    );
}

#[tokio::test]
async fn a_delegation_of_a_task_no_longer_held_cannot_be_approved() {
    let (_db, svc, s) = setup().await;
    let caller = delegation_setup(&svc, &s).await;
    let d = svc
        .request_delegation(&caller, &s.task.id, "helper", "too busy")
        .await
        .unwrap();
    let held = assignments(&svc, s.ws(), "bot", false).await.remove(0);
    svc.unassign(&s.writer, &held.id).await.unwrap();
    let before = snapshot(&svc, s.ws()).await;
    refused(
        svc.resolve_delegation(&s.writer, &d.id, DelegationResolution::Approve, None)
            .await,
        "conflict",
        "agent bot is no longer assigned to task",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
    assert!(assignments(&svc, s.ws(), "helper", true).await.is_empty());
}

#[tokio::test]
async fn denying_a_delegation_needs_a_reason_and_leaves_the_assignment() {
    let (_db, svc, s) = setup().await;
    let caller = delegation_setup(&svc, &s).await;
    let d = svc
        .request_delegation(&caller, &s.task.id, "helper", "too busy")
        .await
        .unwrap();
    let before = snapshot(&svc, s.ws()).await;
    for note in [None, Some(""), Some("   ")] {
        refused(
            svc.resolve_delegation(&s.writer, &d.id, DelegationResolution::Deny, note)
                .await,
            "invalid",
            "a denial needs a reason",
        );
    }
    assert_eq!(snapshot(&svc, s.ws()).await, before);

    let events = all_events(&svc, s.ws()).await.len();
    let denied = svc
        .resolve_delegation(
            &s.writer,
            &d.id,
            DelegationResolution::Deny,
            Some("finish it"),
        )
        .await
        .unwrap();
    assert_eq!(denied.status, DelegationStatus::Denied);
    assert_eq!(denied.resolution_note.as_deref(), Some("finish it"));
    assert_eq!(assignments(&svc, s.ws(), "bot", false).await.len(), 1);
    assert!(assignments(&svc, s.ws(), "helper", true).await.is_empty());
    assert_eq!(
        event_names_after(&svc, s.ws(), events).await,
        ["agent.delegation_denied"]
    );
    let entry = &activity_of(&svc, s.ws(), "agent.delegation_denied").await[0];
    assert_eq!(
        (entry.outcome.as_deref(), entry.description.as_str()),
        (Some("denied"), "finish it")
    );

    refused(
        svc.resolve_delegation(&s.writer, &d.id, DelegationResolution::Approve, None)
            .await,
        "conflict",
        "is denied",
    );
    // A new request is allowed once the last one is resolved.
    svc.request_delegation(&caller, &s.task.id, "helper", "really busy")
        .await
        .unwrap();
}

#[tokio::test]
async fn delegation_without_required_approval_applies_at_once() {
    let (_db, svc, s) = setup().await;
    set(&svc, &s.admin, &[("delegation_requires_approval", "false")]).await;
    let caller = delegation_setup(&svc, &s).await;
    let events = all_events(&svc, s.ws()).await.len();
    let d = svc
        .request_delegation(&caller, &s.task.id, "helper", "too busy")
        .await
        .unwrap();
    assert_eq!(d.status, DelegationStatus::Approved);
    assert_eq!(d.resolved_by.as_deref(), Some("system"));
    assert_eq!(
        delegation_row(&svc, s.ws(), &d.id).await.status,
        DelegationStatus::Approved
    );
    assert!(assignments(&svc, s.ws(), "bot", false).await.is_empty());
    assert_eq!(assignments(&svc, s.ws(), "helper", false).await.len(), 1);
    let mut names = event_names_after(&svc, s.ws(), events).await;
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "agent.delegation_approved",
            "agent.delegation_requested",
            "agent.task_assigned",
            "agent.unassigned"
        ]
    );
}

#[tokio::test]
async fn an_expired_delegation_cannot_be_approved() {
    let (_db, svc, s) = setup().await;
    let caller = delegation_setup(&svc, &s).await;
    let mut d = svc
        .request_delegation(&caller, &s.task.id, "helper", "too busy")
        .await
        .unwrap();
    // Let its time-to-live pass: move its deadline into the past through the store.
    d.expires_at = Utc::now() - Duration::minutes(1);
    let tx = svc.store().write().await.unwrap();
    tx.update_delegation(&d).await.unwrap();
    tx.commit().await.unwrap();

    refused(
        svc.resolve_delegation(&s.writer, &d.id, DelegationResolution::Approve, None)
            .await,
        "conflict",
        "is expired",
    );
    let stored = delegation_row(&svc, s.ws(), &d.id).await;
    assert_eq!(
        stored.status,
        DelegationStatus::Expired,
        "the expiry is recorded even though the approval was refused"
    );
    assert_eq!(stored.resolved_by.as_deref(), Some("system"));
    assert_eq!(
        assignments(&svc, s.ws(), "bot", false).await.len(),
        1,
        "the task stays with bot"
    );
    assert!(assignments(&svc, s.ws(), "helper", true).await.is_empty());
    let expired = svc
        .list_delegations(&s.reader, Some(DelegationStatus::Expired))
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    // An expired request does not block a new one.
    svc.request_delegation(&caller, &s.task.id, "helper", "again")
        .await
        .unwrap();
}

#[tokio::test]
async fn listing_delegations_expires_overdue_ones() {
    let (_db, svc, s) = setup().await;
    let caller = delegation_setup(&svc, &s).await;
    let mut d = svc
        .request_delegation(&caller, &s.task.id, "helper", "too busy")
        .await
        .unwrap();
    d.expires_at = Utc::now() - Duration::seconds(1);
    let tx = svc.store().write().await.unwrap();
    tx.update_delegation(&d).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        svc.list_delegations(&s.reader, Some(DelegationStatus::Pending))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        delegation_row(&svc, s.ws(), &d.id).await.status,
        DelegationStatus::Expired
    );
}

// ---------------------------------------------------------------------------------------------
// Projects, tasks and pages
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tasks_and_pages_are_created_updated_and_listed_in_their_workspace() {
    let (_db, svc, s) = setup().await;
    let other = svc.create_project(&s.writer, "Other", "").await.unwrap();
    let t2 = svc
        .create_task(&s.writer, &other.id, "Elsewhere", "")
        .await
        .unwrap();
    refused(
        svc.create_project(&s.writer, " ", "").await,
        "invalid",
        "project name must not be empty",
    );
    refused(
        svc.create_task(&s.writer, &other.id, "", "").await,
        "invalid",
        "task title must not be empty",
    );
    refused(
        svc.update_task(&s.writer, &t2.id, TaskUpdate::default())
            .await,
        "invalid",
        "nothing to update",
    );

    let update = TaskUpdate {
        status: Some(TaskStatus::Blocked),
        ..Default::default()
    };
    let updated = svc.update_task(&s.writer, &t2.id, update).await.unwrap();
    assert_eq!(updated.status, TaskStatus::Blocked);
    let entry = &activity_of(&svc, s.ws(), "task.updated").await[0];
    assert_eq!(entry.description, "status todo -> blocked");
    assert_eq!(entry.task_id.as_deref(), Some(t2.id.as_str()));

    let in_other = svc
        .list_tasks(&s.reader, Some(&other.id), None)
        .await
        .unwrap();
    assert_eq!(
        in_other.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [t2.id.as_str()]
    );
    let blocked = svc
        .list_tasks(&s.reader, None, Some(TaskStatus::Blocked))
        .await
        .unwrap();
    assert_eq!(blocked.len(), 1);
    assert_eq!(
        svc.list_tasks(&s.reader, None, None).await.unwrap().len(),
        2
    );

    let page = svc
        .create_page(&s.writer, Some(&other.id), "Notes", "# hi")
        .await
        .unwrap();
    svc.create_page(&s.writer, None, "Loose", "").await.unwrap();
    assert_eq!(
        svc.list_pages(&s.reader, Some(&other.id)).await.unwrap()[0].id,
        page.id
    );
    assert_eq!(svc.list_pages(&s.reader, None).await.unwrap().len(), 2);
    assert_eq!(activity_of(&svc, s.ws(), "page.created").await.len(), 2);

    let rival = seed_workspace(&svc, "rival").await;
    assert_eq!(
        svc.list_projects(&rival.reader).await.unwrap().len(),
        1,
        "only its own"
    );
    assert!(
        svc.list_pages(&rival.reader, None)
            .await
            .unwrap()
            .is_empty()
    );
    refused(
        svc.update_task(
            &rival.writer,
            &t2.id,
            TaskUpdate {
                title: Some("x".into()),
                ..Default::default()
            },
        )
        .await,
        "not_found",
        "task",
    );
}

// ---------------------------------------------------------------------------------------------
// Agents' own changes (the services behind the agent tools)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn agents_see_only_their_own_assignments_and_their_workspace() {
    let (_db, svc, s) = setup().await;
    let (_, key) = approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks, P::ReadAgents]).await;
    let (_, plain_key) = approved_agent(&svc, &s.admin, "plain", &[P::ReadProjects]).await;
    let mut req = access_request("pending", &[]);
    req.capabilities = vec!["review".into()];
    svc.request_access(&s.admin, req).await.unwrap();
    let rival = seed_workspace(&svc, "rival").await;
    approved_agent(&svc, &rival.admin, "spy", &[P::ReadTasks]).await;
    assign(&svc, &rival, "spy", task(&rival.task)).await;
    let done = svc
        .create_task(&s.admin, &s.project.id, "Done", "")
        .await
        .unwrap();
    let finished = TaskUpdate {
        status: Some(TaskStatus::Completed),
        ..Default::default()
    };
    svc.update_task(&s.admin, &done.id, finished).await.unwrap();
    assign(&svc, &s, "bot", task(&s.task)).await;
    assign(&svc, &s, "bot", task(&done)).await;
    assign(&svc, &s, "bot", project(&s.project)).await;
    assign(&svc, &s, "plain", task(&s.task)).await;
    let bot = agent_caller(&svc, &key).await;

    let mine = svc.my_assignments(&bot, None).await.unwrap();
    assert_eq!(mine.projects().len(), 1);
    let mut tasks: Vec<&str> = mine.tasks().map(|(_, t)| t.id.as_str()).collect();
    tasks.sort_unstable();
    let mut expected = [s.task.id.as_str(), done.id.as_str()];
    expected.sort_unstable();
    assert_eq!(tasks, expected);
    assert!(mine.tasks().all(|(a, _)| a.agent_id == "bot"));
    let open = svc
        .my_assignments(&bot, Some(TaskStatus::Todo))
        .await
        .unwrap();
    let open: Vec<_> = open.tasks().collect();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].1.id, s.task.id);

    let agents = svc.list_workspace_agents(&bot, None, &[]).await.unwrap();
    let ids: Vec<&str> = agents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        ["bot", "pending", "plain"],
        "never the other workspace's agents"
    );
    let reviewers = svc
        .list_workspace_agents(&bot, None, &["review".into()])
        .await
        .unwrap();
    assert_eq!(
        reviewers.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["pending"]
    );
    let approved = svc
        .list_workspace_agents(&bot, Some(AgentStatus::Approved), &[])
        .await
        .unwrap();
    assert_eq!(approved.len(), 2);

    let plain = agent_caller(&svc, &plain_key).await;
    refused(
        svc.my_assignments(&plain, None).await,
        "forbidden",
        "needs the read:tasks permission",
    );
    refused(
        svc.list_workspace_agents(&plain, None, &[]).await,
        "forbidden",
        "needs the read:agents permission",
    );
}

/// The gate's audit entry for a tool call, as the MCP layer would build it.
fn tool_audit(caller: &AgentCaller, tool: &str) -> ActivityEntry {
    ActivityEntry {
        id: new_id(),
        workspace_id: caller.workspace_id().to_owned(),
        actor_kind: ActorKind::Agent,
        actor_id: caller.agent_id().to_owned(),
        agent_id: Some(caller.agent_id().to_owned()),
        activity_type: "tool.call".into(),
        outcome: Some("allowed".into()),
        description: tool.into(),
        metadata: json!({ "tool": tool }),
        project_id: None,
        task_id: None,
        page_id: None,
        created_at: Utc::now(),
    }
}

#[tokio::test]
async fn agent_status_and_log_entries_write_their_events() {
    let (_db, svc, s) = setup().await;
    let (_, key) = approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks, P::WriteTasks]).await;
    assign(&svc, &s, "bot", task(&s.task)).await;
    let caller = agent_caller(&svc, &key).await;
    let events = all_events(&svc, s.ws()).await.len();

    let audit = tool_audit(&caller, "agent_update_status");
    let agent = svc
        .update_working_status(
            &caller,
            &audit,
            WorkingStatus::Working,
            Some(&s.task.id),
            Some("on it"),
        )
        .await
        .unwrap();
    assert_eq!(agent.current_task_id.as_deref(), Some(s.task.id.as_str()));
    let entry = AgentLogEntry {
        kind: AgentActivityKind::TaskStarted,
        description: "started".into(),
        project_id: None,
        task_id: Some(s.task.id.clone()),
        page_id: None,
        metadata: None,
    };
    let logged = svc
        .log_agent_activity(&caller, &tool_audit(&caller, "agent_log_activity"), entry)
        .await
        .unwrap();
    assert_eq!(logged.task_status, Some(TaskStatus::InProgress));
    assert_eq!(
        logged.entry.project_id.as_deref(),
        Some(s.project.id.as_str())
    );
    assert_eq!(
        event_names_after(&svc, s.ws(), events).await,
        ["agent.status_changed", "agent.task_started"]
    );
    assert_eq!(
        activity_of(&svc, s.ws(), "tool.call").await.len(),
        2,
        "the audit entries commit with the change"
    );

    // A refused change writes neither its entry, its audit entry, nor its event.
    let other = svc
        .create_task(&s.admin, &s.project.id, "Not mine", "")
        .await
        .unwrap();
    let before = snapshot(&svc, s.ws()).await;
    let audit = tool_audit(&caller, "agent_update_status");
    refused(
        svc.update_working_status(
            &caller,
            &audit,
            WorkingStatus::Working,
            Some(&other.id),
            None,
        )
        .await,
        "forbidden",
        "is not assigned to you",
    );
    assert_eq!(snapshot(&svc, s.ws()).await, before);
}

// ---------------------------------------------------------------------------------------------
// Activity
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_change_is_recorded_with_its_actor() {
    let (_db, svc, s) = setup().await;
    let caller = delegation_setup(&svc, &s).await;
    enable_auto_approval(&svc, &s).await;
    request(&svc, &s.admin, "auto", &[P::ReadTasks]).await;
    let d = svc
        .request_delegation(&caller, &s.task.id, "helper", "busy")
        .await
        .unwrap();
    svc.resolve_delegation(&s.writer, &d.id, DelegationResolution::Approve, None)
        .await
        .unwrap();
    svc.revoke_agent(&s.admin, "bot", "done").await.unwrap();

    let all = svc
        .list_activity(
            &s.reader,
            ActivityQuery {
                limit: 500,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let find = |ty: &str, agent: &str| {
        all.iter()
            .find(|e| e.activity_type == ty && e.agent_id.as_deref() == Some(agent))
            .unwrap_or_else(|| panic!("no {ty} entry for {agent}"))
    };
    let member =
        |e: &ActivityEntry, who: &str| e.actor_kind == ActorKind::Member && e.actor_id == who;
    assert!(member(
        find("agent.access_requested", "bot"),
        "admin@acme.test"
    ));
    assert!(member(
        find("agent.access_approved", "bot"),
        "admin@acme.test"
    ));
    assert!(member(
        find("agent.task_assigned", "bot"),
        "admin@acme.test"
    ));
    let auto = find("agent.access_approved", "auto");
    assert_eq!(
        (auto.actor_kind, auto.actor_id.as_str()),
        (ActorKind::System, "system")
    );
    let requested = find("agent.delegation_requested", "bot");
    assert_eq!(
        (requested.actor_kind, requested.actor_id.as_str()),
        (ActorKind::Agent, "bot")
    );
    assert!(member(
        find("agent.delegation_approved", "helper"),
        "writer@acme.test"
    ));
    assert!(member(
        find("agent.task_assigned", "helper"),
        "writer@acme.test"
    ));
    assert!(member(
        find("agent.access_revoked", "bot"),
        "admin@acme.test"
    ));
    for ty in [
        "workspace.created",
        "member.added",
        "workspace.settings_updated",
        "project.created",
        "task.created",
    ] {
        assert!(all.iter().any(|e| e.activity_type == ty), "no {ty} entry");
    }

    // Newest first, by id and by time.
    assert!(
        all.windows(2)
            .all(|w| w[0].id > w[1].id && w[0].created_at >= w[1].created_at)
    );
}

#[tokio::test]
async fn activity_filters_by_agent_project_task_and_type() {
    let (_db, svc, s) = setup().await;
    approved_agent(&svc, &s.admin, "bot", &[P::ReadTasks]).await;
    approved_agent(&svc, &s.admin, "other", &[P::ReadTasks]).await;
    let other_project = svc.create_project(&s.admin, "Other", "").await.unwrap();
    let other_task = svc
        .create_task(&s.admin, &other_project.id, "Elsewhere", "")
        .await
        .unwrap();
    assign(&svc, &s, "bot", task(&s.task)).await;
    assign(&svc, &s, "other", task(&other_task)).await;
    assign(&svc, &s, "bot", project(&other_project)).await;
    let list = |q: ActivityQuery| svc.list_activity(&s.reader, ActivityQuery { limit: 500, ..q });

    let by_agent = list(ActivityQuery {
        agent_id: Some("bot".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let types: Vec<&str> = by_agent.iter().map(|e| e.activity_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "agent.project_assigned",
            "agent.task_assigned",
            "agent.access_approved",
            "agent.access_requested"
        ]
    );

    let by_project = list(ActivityQuery {
        project_id: Some(other_project.id.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let types: Vec<&str> = by_project
        .iter()
        .map(|e| e.activity_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "agent.project_assigned",
            "agent.task_assigned",
            "task.created",
            "project.created"
        ]
    );

    let by_task = list(ActivityQuery {
        task_id: Some(s.task.id.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(by_task.len(), 2, "created, then bot assigned");
    assert!(
        by_task
            .iter()
            .all(|e| e.task_id.as_deref() == Some(s.task.id.as_str()))
    );

    let by_type = list(ActivityQuery {
        activity_type: Some("agent.task_assigned".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let agents: Vec<_> = by_type
        .iter()
        .map(|e| e.agent_id.as_deref().unwrap())
        .collect();
    assert_eq!(agents, ["other", "bot"]);

    let both = list(ActivityQuery {
        agent_id: Some("bot".into()),
        activity_type: Some("agent.task_assigned".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(both.len(), 1);

    // Another workspace's activity never shows.
    let rival = seed_workspace(&svc, "rival").await;
    approved_agent(&svc, &rival.admin, "bot", &[P::ReadTasks]).await;
    assert_eq!(
        list(ActivityQuery {
            agent_id: Some("bot".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        4
    );
}

#[tokio::test]
async fn activity_pages_are_disjoint_and_consecutive() {
    let (_db, svc, s) = setup().await;
    set(&svc, &s.admin, &[("max_agents", "100")]).await;
    for i in 0..30 {
        request(&svc, &s.admin, &format!("bot-{i:02}"), &[]).await;
    }
    let everything = svc
        .list_activity(
            &s.reader,
            ActivityQuery {
                limit: 500,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(everything.len() > 25);
    let mut paged: Vec<ActivityEntry> = Vec::new();
    let mut before = None;
    loop {
        let page = svc
            .list_activity(
                &s.reader,
                ActivityQuery {
                    limit: 7,
                    before: before.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(page.len() <= 7);
        if page.is_empty() {
            break;
        }
        if let Some(last) = paged.last() {
            assert!(
                page[0].id < last.id,
                "the next page starts after the previous one"
            );
        }
        before = Some(page.last().unwrap().id.clone());
        paged.extend(page);
    }
    let ids = |v: &[ActivityEntry]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&paged),
        ids(&everything),
        "pages cover everything once, in order"
    );

    // The default page is 50 and no page is larger than 500.
    assert_eq!(
        svc.list_activity(&s.reader, ActivityQuery::default())
            .await
            .unwrap()
            .len(),
        everything.len().min(50)
    );
}

/// Writes an entry dated `days_ago` through the store, as an old deployment would have left it.
async fn old_entry(store: &Store, ws: &str, days_ago: i64, ty: &str) {
    let tx = store.write().await.unwrap();
    tx.insert_activity(&ActivityEntry {
        id: new_id(),
        workspace_id: ws.to_owned(),
        actor_kind: ActorKind::System,
        actor_id: "system".into(),
        agent_id: None,
        activity_type: ty.into(),
        outcome: None,
        description: format!("{days_ago} days old"),
        metadata: json!({}),
        project_id: None,
        task_id: None,
        page_id: None,
        created_at: Utc::now() - Duration::days(days_ago),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Moves every entry of `ws` written so far `days` into the past. Pruning cuts the hash chain as a
/// prefix, so the tests' old entries must follow an old history, as they do in a live workspace.
async fn backdate_history(db: &TestDb, ws: &str, days: i64) -> usize {
    let conn = Database::connect(&db.url).await.unwrap();
    let backend = conn.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => {
            "UPDATE activity SET created_at = $1 WHERE workspace_id = $2"
        }
        _ => "UPDATE activity SET created_at = ? WHERE workspace_id = ?",
    };
    let at = Utc::now() - Duration::days(days);
    conn.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [at.into(), ws.into()],
    ))
    .await
    .unwrap()
    .rows_affected() as usize
}

#[tokio::test]
async fn pruning_removes_only_entries_older_than_the_retention() {
    let (db, svc, s) = setup().await;
    let rival = seed_workspace(&svc, "rival").await;
    let history = backdate_history(&db, s.ws(), 100).await;
    assert!(history > 0, "the seed wrote entries");
    for days in [40, 31, 90] {
        old_entry(svc.store(), s.ws(), days, "test.old").await;
    }
    old_entry(svc.store(), s.ws(), 29, "test.recent").await;
    old_entry(svc.store(), rival.ws(), 40, "test.old").await;
    refused(
        svc.prune_activity(&s.admin).await,
        "invalid",
        "activity_retention_days is not set",
    );

    set(&svc, &s.admin, &[("activity_retention_days", "30")]).await;
    let kept: Vec<String> = all_activity(&svc, s.ws())
        .await
        .into_iter()
        .filter(|e| e.created_at > Utc::now() - Duration::days(30))
        .map(|e| e.id)
        .collect();
    assert_eq!(kept.len(), 2, "test.recent and the settings change");
    assert_eq!(
        svc.prune_activity(&s.admin).await.unwrap(),
        3 + history as u64
    );

    let after = all_activity(&svc, s.ws()).await;
    assert!(after.iter().all(|e| e.activity_type != "test.old"));
    let pruned: Vec<&ActivityEntry> = after
        .iter()
        .filter(|e| e.activity_type == "activity.pruned")
        .collect();
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0].metadata["removed"], 3 + history);
    assert_eq!(
        (pruned[0].actor_kind, pruned[0].actor_id.as_str()),
        (ActorKind::Member, "admin@acme.test")
    );
    let mut remaining: Vec<String> = after
        .iter()
        .filter(|e| e.activity_type != "activity.pruned")
        .map(|e| e.id.clone())
        .collect();
    remaining.sort();
    let mut kept = kept;
    kept.sort();
    assert_eq!(
        remaining, kept,
        "everything younger than the retention is kept"
    );
    assert_eq!(
        activity_of(&svc, rival.ws(), "test.old").await.len(),
        1,
        "other workspaces are untouched"
    );

    // Nothing left to prune: nothing removed, and no empty `activity.pruned` entry.
    assert_eq!(svc.prune_activity(&s.admin).await.unwrap(), 0);
    assert_eq!(activity_of(&svc, s.ws(), "activity.pruned").await.len(), 1);
}

#[tokio::test]
async fn periodic_pruning_covers_only_workspaces_with_a_retention() {
    let (db, svc, s) = setup().await;
    let rival = seed_workspace(&svc, "rival").await;
    let history = backdate_history(&db, s.ws(), 10).await;
    old_entry(svc.store(), s.ws(), 10, "test.old").await;
    old_entry(svc.store(), rival.ws(), 10, "test.old").await;
    set(&svc, &s.admin, &[("activity_retention_days", "7")]).await;
    assert_eq!(svc.prune_all_activity().await.unwrap(), 1 + history as u64);
    assert!(activity_of(&svc, s.ws(), "test.old").await.is_empty());
    let pruned = activity_of(&svc, s.ws(), "activity.pruned").await;
    assert_eq!(
        (pruned[0].actor_kind, pruned[0].actor_id.as_str()),
        (ActorKind::System, "system")
    );
    assert_eq!(activity_of(&svc, rival.ws(), "test.old").await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn migrate_applies_pending_migrations_once() {
    let db = TestDb::new().await;
    let store = Store::connect(&db.url).await.unwrap();
    let pending = store.pending_migrations().await.unwrap();
    assert!(!pending.is_empty());
    let applied = store.migrate().await.unwrap();
    assert_eq!(applied, pending);
    assert!(store.pending_migrations().await.unwrap().is_empty());
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "a second run is a no-op"
    );
    // A store opened on a migrated database works and migrates nothing.
    let svc = Service::new(Store::open(&db.url).await.unwrap());
    svc.create_workspace("acme", "Acme", "a@acme.test", "")
        .await
        .unwrap();
    assert!(svc.store().migrate().await.unwrap().is_empty());
    store.close().await;
}

/// Replicas starting together on one brand-new database: every `Store::open` succeeds, each
/// migration is recorded exactly once, and the schema is the one a single start builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_starts_migrate_the_database_once() {
    let db = TestDb::new().await;
    let opens = (0..6).map(|_| Store::open(&db.url));
    let stores: Vec<Store> = futures_util::future::join_all(opens)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("replica {i} failed to start: {e}")))
        .collect();
    for store in &stores {
        assert!(store.pending_migrations().await.unwrap().is_empty());
    }
    let all = Store::connect(&TestDb::new().await.url)
        .await
        .unwrap()
        .pending_migrations()
        .await
        .unwrap();
    let conn = Database::connect(&db.url).await.unwrap();
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT version FROM seaql_migrations ORDER BY version",
        ))
        .await
        .unwrap();
    let recorded: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", "version").unwrap())
        .collect();
    assert_eq!(recorded, all, "each migration recorded exactly once");
    let _ = conn.close().await;

    let reference_db = TestDb::new().await;
    let reference = reference_db.store().await;
    let schema =
        |store: Store| async move { store.read().await.unwrap().describe_schema().await.unwrap() };
    assert_eq!(
        schema(stores[0].clone()).await,
        schema(reference.clone()).await
    );
    // And the started stores work.
    let svc = Service::new(stores[5].clone());
    svc.create_workspace("acme", "Acme", "a@acme.test", "")
        .await
        .unwrap();
    for store in stores {
        store.close().await;
    }
    reference.close().await;
}

#[tokio::test]
async fn a_database_migrated_step_by_step_has_the_fresh_schema() {
    let fresh_db = TestDb::new().await;
    let fresh = fresh_db.store().await;
    let stepped_db = TestDb::new().await;
    let stepped = Store::connect(&stepped_db.url).await.unwrap();
    let total = stepped.pending_migrations().await.unwrap();
    let mut applied = Vec::new();
    loop {
        let step = stepped.migrate_steps(1).await.unwrap();
        if step.is_empty() {
            break;
        }
        assert_eq!(step.len(), 1, "one migration per step");
        applied.extend(step);
    }
    assert_eq!(applied, total);
    let schema =
        |store: Store| async move { store.read().await.unwrap().describe_schema().await.unwrap() };
    let (a, b) = (schema(fresh.clone()).await, schema(stepped.clone()).await);
    assert!(
        a.iter().any(|c| c.starts_with("agents.access_version:")),
        "{a:?}"
    );
    // Indexes are compared too: the activity table's slimmer set (partial project and task
    // indexes, no created_at index), the same whichever way the database got there.
    let index = |name: &str| a.iter().find(|d| d.starts_with(&format!("index {name}:")));
    for partial in ["ix_activity_project", "ix_activity_task"] {
        let def = index(partial).unwrap_or_else(|| panic!("{partial} missing: {a:?}"));
        assert!(
            def.to_uppercase().contains("WHERE") && def.to_uppercase().contains("IS NOT NULL"),
            "{def}"
        );
    }
    assert!(index("ix_activity_created").is_none(), "{a:?}");
    assert!(index("ux_activity_workspace_seq").is_some(), "{a:?}");
    assert_eq!(a, b);
    fresh.close().await;
    stepped.close().await;
}
