//! Issue 13: human approvals as MCP tasks (SEP-2663). A client that declares the tasks extension
//! gets a task handle from `agent_delegate_task` while a human decides; `tasks/get` shows it
//! working, then completed once a human approves with the real CLI. Cancel, expiry, isolation
//! between agents, and clients without the extension are covered too, on every transport.

use crate::support::server::{
    self, BIN, Client, World, approved_agent, spawn_http, stdio_command, world,
};
use parallax_mcp::domain::*;
use parallax_mcp::service::AssignTarget;
use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig,
    GetTaskParams, ProtocolVersion, TaskPayload, TaskStatus,
};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};
use std::process::Stdio;

fn with_tasks(version: ProtocolVersion) -> ClientConfig {
    let mut config = ClientConfig::default().with_protocol_version(version);
    config.capabilities = ClientCapabilities::builder().enable_tasks().build();
    config
}

async fn tasks_http(url: &str, key: &str, version: ProtocolVersion) -> Client {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(key.to_owned()),
    );
    with_tasks(version)
        .serve(transport)
        .await
        .expect("connect over HTTP")
}

async fn tasks_stdio(db_url: &str, key: &str) -> Client {
    let transport = TokioChildProcess::builder(stdio_command(db_url, Some(key)))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn stdio")
        .0;
    with_tasks(ProtocolVersion::V_2025_11_25)
        .serve(transport)
        .await
        .expect("connect over stdio")
}

/// `lead` (may delegate) assigned to a fresh task, `helper` to hand it to; lead's key.
async fn delegator(w: &World) -> String {
    let key = approved_agent(
        &w.svc,
        &w.admin,
        "lead",
        &[Permission::ReadTasks, Permission::DelegateAgents],
    )
    .await;
    approved_agent(&w.svc, &w.admin, "helper", &[Permission::ReadTasks]).await;
    key
}

/// A new task assigned to `lead`.
async fn lead_task(w: &World, title: &str) -> String {
    let t = w
        .svc
        .create_task(&w.admin, &w.project.id, title, "")
        .await
        .unwrap();
    w.svc
        .assign(
            &w.admin,
            "lead",
            AssignTarget::Task(t.id.clone()),
            AssignmentRole::Member,
        )
        .await
        .unwrap();
    t.id
}

async fn delegate(client: &Client, task_id: &str) -> CallToolResponse {
    let Value::Object(args) =
        json!({ "taskId": task_id, "toAgentId": "helper", "reason": "needs a specialist" })
    else {
        unreachable!()
    };
    client
        .call_tool_once(
            CallToolRequestParams::new("agent_delegate_task".to_owned()).with_arguments(args),
        )
        .await
        .expect("agent_delegate_task")
}

/// Delegates and expects a task handle; returns its id.
async fn delegate_as_task(client: &Client, task_id: &str) -> String {
    match delegate(client, task_id).await {
        CallToolResponse::Task(t) => {
            assert_eq!(t.task.status, TaskStatus::Working, "{t:?}");
            assert!(t.task.ttl_ms.is_some_and(|ms| ms > 0), "{t:?}");
            t.task.task_id
        }
        other => panic!("expected a task handle, got {other:?}"),
    }
}

async fn get(client: &Client, id: &str) -> rmcp::model::GetTaskResult {
    client
        .get_task(GetTaskParams::new(id))
        .await
        .unwrap_or_else(|e| panic!("tasks/get {id}: {e}"))
}

/// Runs the real CLI as the workspace admin; (exit code, stdout, stderr).
async fn admin_cli(w: &World, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args([
            "--database-url",
            &w.db.url,
            "-w",
            "acme",
            "--as",
            "admin@acme.test",
        ])
        .args(args)
        .env_remove("PARALLAX_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run parallax-mcp");
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Working while it waits, completed with the tool's answer once a human approves with the CLI.
async fn approve_flow(w: &World, client: &Client, title: &str) -> String {
    let task_id = lead_task(w, title).await;
    let id = delegate_as_task(client, &task_id).await;
    let r = get(client, &id).await;
    assert_eq!(r.task.status(), TaskStatus::Working);
    assert!(
        r.task
            .task
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains("waiting for a human")),
        "{r:?}"
    );
    let (code, _, err) = admin_cli(w, &["delegation", "approve", &id, "--note", "go"]).await;
    assert_eq!(code, 0, "{err}");
    id
}

fn completed(r: &rmcp::model::GetTaskResult) -> Value {
    match &r.task.payload {
        TaskPayload::Completed { result } => Value::Object(result.clone()),
        other => panic!("expected completed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_delegation_task_completes_when_a_human_approves_on_every_transport() {
    let w = world().await;
    let key = delegator(&w).await;

    // stdio
    let client = tasks_stdio(&w.db.url, &key).await;
    let id = approve_flow(&w, &client, "over stdio").await;
    let r = get(&client, &id).await;
    let result = completed(&r);
    assert_eq!(
        result["structuredContent"]["status"], "approved",
        "{result}"
    );
    assert_eq!(result["structuredContent"]["delegationId"], id.as_str());
    assert_eq!(result["structuredContent"]["toAgentId"], "helper");
    assert!(
        r.task
            .task
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains("approved by")),
        "{r:?}"
    );
    client.cancel().await.unwrap();

    // Both HTTP protocol versions; the task outlives the server process that created it.
    for version in [ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2026_07_28] {
        let first = spawn_http(&w.db.url).await;
        let client = tasks_http(&first.url, &key, version.clone()).await;
        let id = approve_flow(&w, &client, &format!("over HTTP {version}")).await;
        drop(client);
        drop(first);
        let second = spawn_http(&w.db.url).await;
        let client = tasks_http(&second.url, &key, version.clone()).await;
        let result = completed(&get(&client, &id).await);
        assert_eq!(
            result["structuredContent"]["status"], "approved",
            "{version}: {result}"
        );
    }

    // Every tasks/get was audited, allowed.
    let entries = server::audit(&w.svc, &w.admin, "lead").await;
    let gets = entries
        .iter()
        .filter(|e| e.activity_type == "mcp.task" && e.description.starts_with("tasks/get"))
        .count();
    assert!(gets >= 6, "{gets} audited tasks/get");
}

#[tokio::test]
async fn a_denial_completes_the_task_with_the_reason() {
    let w = world().await;
    let key = delegator(&w).await;
    let client = tasks_stdio(&w.db.url, &key).await;
    let task_id = lead_task(&w, "to deny").await;
    let id = delegate_as_task(&client, &task_id).await;
    let (code, _, err) = admin_cli(&w, &["delegation", "deny", &id, "--reason", "keep it"]).await;
    assert_eq!(code, 0, "{err}");
    let r = get(&client, &id).await;
    assert_eq!(completed(&r)["structuredContent"]["status"], "denied");
    assert!(
        r.task
            .task
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains("keep it")),
        "{r:?}"
    );
}

#[tokio::test]
async fn clients_without_the_extension_get_todays_answer() {
    let w = world().await;
    let key = delegator(&w).await;
    let server = spawn_http(&w.db.url).await;
    let task_id = lead_task(&w, "plain").await;
    let client = server::http_client(&server.url, &key, ProtocolVersion::V_2025_11_25).await;
    let out = server::ok(
        &client,
        "agent_delegate_task",
        json!({ "taskId": task_id, "toAgentId": "helper", "reason": "plain answer" }),
    )
    .await;
    assert_eq!(out["awaitingApproval"], true);
    assert_eq!(out["status"], "pending");
    // And tasks/* is refused to them (the client did not declare the extension).
    let id = out["delegationId"].as_str().unwrap();
    assert!(client.get_task(GetTaskParams::new(id)).await.is_err());
}

#[tokio::test]
async fn cancelling_the_task_withdraws_the_delegation() {
    let w = world().await;
    let key = delegator(&w).await;
    let server = spawn_http(&w.db.url).await;
    let client = tasks_http(&server.url, &key, ProtocolVersion::V_2026_07_28).await;
    let task_id = lead_task(&w, "to cancel").await;
    let id = delegate_as_task(&client, &task_id).await;
    client
        .cancel_task(CancelTaskParams::new(id.clone()))
        .await
        .unwrap();
    let r = get(&client, &id).await;
    assert_eq!(r.task.status(), TaskStatus::Cancelled);
    let d = w
        .svc
        .list_delegations(&w.admin, Some(DelegationStatus::Cancelled))
        .await
        .unwrap();
    assert!(d.iter().any(|d| d.id == id));
    // A human can no longer approve it, and cancelling again is refused.
    let (code, _, _) = admin_cli(&w, &["delegation", "approve", &id]).await;
    assert_eq!(code, 6, "a cancelled delegation is a conflict");
    assert!(
        client
            .cancel_task(CancelTaskParams::new(id.clone()))
            .await
            .is_err()
    );
    // Audited: the gate's entry and the cancellation itself.
    let entries = server::audit(&w.svc, &w.admin, "lead").await;
    assert!(
        entries
            .iter()
            .any(|e| e.activity_type == "agent.delegation_cancelled")
    );
    assert!(entries.iter().any(|e| e.activity_type == "mcp.task"
        && e.outcome.as_deref() == Some("allowed")
        && e.description.starts_with("tasks/cancel")));
    let events = w.svc.events_after(&w.admin, 0, 1000).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.event_type == EventType::DelegationCancelled)
    );
}

#[tokio::test]
async fn the_task_expires_with_the_delegation() {
    let w = world().await;
    let key = delegator(&w).await;
    let client = tasks_stdio(&w.db.url, &key).await;
    let task_id = lead_task(&w, "to expire").await;
    let id = delegate_as_task(&client, &task_id).await;
    // The shortest TTL a workspace may set is an hour: move this one's end into the past.
    let conn = Database::connect(&w.db.url).await.unwrap();
    conn.execute_raw(Statement::from_string(
        conn.get_database_backend(),
        format!(
            "UPDATE delegations SET expires_at = '2020-01-01 00:00:00+00:00' WHERE id = '{id}'"
        ),
    ))
    .await
    .unwrap();
    let r = get(&client, &id).await;
    match &r.task.payload {
        TaskPayload::Failed { error } => {
            assert!(
                error["message"].as_str().unwrap().contains("expired"),
                "{error:?}"
            );
        }
        other => panic!("expected failed, got {other:?}"),
    }
    let (code, _, _) = admin_cli(&w, &["delegation", "approve", &id]).await;
    assert_eq!(code, 6, "an expired delegation cannot be approved");
}

#[tokio::test]
async fn another_agent_cannot_see_or_cancel_the_task() {
    let w = world().await;
    let key = delegator(&w).await;
    let spy_key = approved_agent(&w.svc, &w.admin, "spy", &[Permission::DelegateAgents]).await;
    let server = spawn_http(&w.db.url).await;
    let client = tasks_http(&server.url, &key, ProtocolVersion::V_2025_11_25).await;
    let task_id = lead_task(&w, "mine").await;
    let id = delegate_as_task(&client, &task_id).await;
    for version in [ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2026_07_28] {
        let spy = tasks_http(&server.url, &spy_key, version).await;
        let err = spy
            .get_task(GetTaskParams::new(id.clone()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
        let err = spy
            .cancel_task(CancelTaskParams::new(id.clone()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }
    let spy_stdio = tasks_stdio(&w.db.url, &spy_key).await;
    assert!(
        spy_stdio
            .get_task(GetTaskParams::new(id.clone()))
            .await
            .is_err()
    );
    // Still pending for its owner; every refusal audited against the spy.
    assert_eq!(get(&client, &id).await.task.status(), TaskStatus::Working);
    let denied = server::audit(&w.svc, &w.admin, "spy")
        .await
        .into_iter()
        .filter(|e| e.activity_type == "mcp.task" && e.outcome.as_deref() == Some("denied"))
        .count();
    assert_eq!(denied, 5);
    // An agent without the delegation permission is refused before any lookup.
    let reader_key = approved_agent(&w.svc, &w.admin, "reader-bot", &[Permission::ReadTasks]).await;
    let reader = tasks_http(&server.url, &reader_key, ProtocolVersion::V_2025_11_25).await;
    let err = reader
        .get_task(GetTaskParams::new(id.clone()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}
