//! The MCP server end to end: the real binary over stdio and streamable HTTP, driven by rmcp's
//! client, with workspace data set up through the services on the same database.

use crate::support::server::*;
use parallax_mcp::domain::*;
use parallax_mcp::mcp::catalogue::{CATALOGUE, Requirement};
use parallax_mcp::service::AssignTarget;
use parallax_mcp::store::ActivityQuery;
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;

// ---- the lifecycle, on every transport ----

#[derive(Clone, Debug)]
enum Transport {
    Stdio,
    Http(ProtocolVersion),
}

async fn lifecycle(transport: Transport) {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "bot-1", &Permission::ALL).await;
    approved_agent(&w.svc, &w.admin, "bot-2", &[Permission::ReadTasks]).await;
    approved_agent(&w.svc, &w.other_admin, "spy", &Permission::ALL).await;
    w.svc
        .assign(
            &w.admin,
            "bot-1",
            AssignTarget::Project(w.project.id.clone()),
            AssignmentRole::Lead,
        )
        .await
        .unwrap();
    w.assign_to_task("bot-1").await;

    let server = match &transport {
        Transport::Http(_) => Some(spawn_http(&w.db.url).await),
        Transport::Stdio => None,
    };
    let client = match (transport, &server) {
        (Transport::Http(v), Some(s)) => http_client(&s.url, &key, v).await,
        _ => stdio_client(&w.db.url, &key).await,
    };

    let all: Vec<String> = {
        let mut v: Vec<String> = CATALOGUE.iter().map(|t| t.name.to_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(
        tool_names(&client).await,
        all,
        "an agent with every permission sees every tool"
    );

    let mine = ok(&client, "agent_my_assignments", json!({})).await;
    assert_eq!(mine["tasks"][0]["task"]["id"], w.task.id);
    assert_eq!(mine["tasks"][0]["task"]["status"], "todo");
    assert_eq!(mine["projects"][0]["project"]["id"], w.project.id);
    assert_eq!(mine["projects"][0]["role"], "lead");
    let done = ok(
        &client,
        "agent_my_assignments",
        json!({ "status": "completed" }),
    )
    .await;
    assert_eq!(done["tasks"], json!([]));

    let status = ok(
        &client,
        "agent_update_status",
        json!({ "status": "working", "currentTask": w.task.id, "message": "on it" }),
    )
    .await;
    assert_eq!(status["status"], "working");
    let listed = w.svc.list_agents(&w.admin, None).await.unwrap();
    let me = listed.iter().find(|a| a.id == "bot-1").unwrap();
    assert_eq!(me.working_status, WorkingStatus::Working);
    assert_eq!(me.current_task_id.as_deref(), Some(w.task.id.as_str()));
    assert_eq!(me.status_message.as_deref(), Some("on it"));

    // Another workspace's task is not found, and the refusal is audited.
    let msg = refused(
        &client,
        "agent_update_status",
        json!({ "status": "working", "currentTask": w.other_task.id }),
    )
    .await;
    assert!(msg.contains("not found"), "{msg}");
    let msg = refused(
        &client,
        "agent_log_activity",
        json!({ "type": "note", "description": "peek", "taskId": w.other_task.id }),
    )
    .await;
    assert!(msg.contains("not found"), "{msg}");
    let msg = refused(
        &client,
        "agent_delegate_task",
        json!({ "taskId": w.other_task.id, "toAgentId": "bot-2", "reason": "x" }),
    )
    .await;
    assert!(msg.contains("not found"), "{msg}");
    let trail = audit(&w.svc, &w.admin, "bot-1").await;
    let denied: Vec<_> = trail
        .iter()
        .filter(|e| e.activity_type == "tool.call" && e.outcome.as_deref() == Some("denied"))
        .collect();
    assert_eq!(
        denied.len(),
        3,
        "each cross-workspace attempt is audited: {denied:#?}"
    );
    assert!(denied.iter().all(|e| e.description.contains("not found")));
    let other_trail = w
        .svc
        .list_activity(
            &w.other_admin,
            ActivityQuery {
                limit: 500,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        other_trail.iter().all(|e| e.actor_id != "bot-1"),
        "nothing lands in the other workspace"
    );

    let logged = ok(
        &client,
        "agent_log_activity",
        json!({ "type": "task_started", "description": "starting", "taskId": w.task.id }),
    )
    .await;
    assert_eq!(logged["taskStatus"], "in_progress");
    let tasks = w
        .svc
        .list_tasks(&w.admin, None, Some(TaskStatus::InProgress))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1);

    let agents = ok(&client, "agent_list_workspace", json!({})).await;
    let ids: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bot-1", "bot-2"], "only this workspace's agents");
    let none = ok(
        &client,
        "agent_list_workspace",
        json!({ "capabilities": ["deploy"] }),
    )
    .await;
    assert_eq!(none["agents"], json!([]));

    let d = ok(
        &client,
        "agent_delegate_task",
        json!({ "taskId": w.task.id, "toAgentId": "bot-2", "reason": "bot-2 writes better docs" }),
    )
    .await;
    assert_eq!(d["status"], "pending");
    assert_eq!(d["awaitingApproval"], true);
    assert_eq!(
        w.svc
            .list_delegations(&w.admin, Some(DelegationStatus::Pending))
            .await
            .unwrap()
            .len(),
        1
    );

    // Malformed arguments and unknown tools are protocol errors.
    let err = call(
        &client,
        "agent_update_status",
        json!({ "status": "working", "agentId": "bot-2" }),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let err = call(
        &client,
        "agent_update_status",
        json!({ "status": "sleeping" }),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("sleeping"), "{err}");
    let err = call(&client, "agent_drop_tables", json!({}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown tool"), "{err}");

    let shown = w.svc.agent_details(&w.admin, "bot-1").await.unwrap();
    assert!(
        shown.agent.last_seen_at.is_some(),
        "calls mark the agent as seen"
    );
    assert!(
        shown.credentials.iter().any(|c| c.last_used_at.is_some()),
        "calls mark the key as used"
    );

    let allowed = audit(&w.svc, &w.admin, "bot-1")
        .await
        .into_iter()
        .filter(|e| e.activity_type == "tool.call" && e.outcome.as_deref() == Some("allowed"))
        .count();
    assert_eq!(allowed, 7, "every allowed call is audited once");

    // Revocation applies to the very next call.
    w.svc
        .revoke_agent(&w.admin, "bot-1", "project over")
        .await
        .unwrap();
    let err = call(&client, "agent_my_assignments", json!({}))
        .await
        .expect_err("a revoked agent is refused");
    // stdio answers with a JSON-RPC error; HTTP with a 401 whose challenge says why.
    let reason = err
        .auth_challenge()
        .map(str::to_owned)
        .unwrap_or_else(|| err.to_string());
    assert!(reason.contains("revoked"), "{reason}");
    let refusals = audit(&w.svc, &w.admin, "bot-1")
        .await
        .into_iter()
        .filter(|e| e.activity_type == "auth.refused")
        .count();
    assert!(refusals >= 1, "the refused call is audited");
    let _ = client.cancel().await;
    drop(server);
}

#[tokio::test]
async fn lifecycle_over_stdio() {
    lifecycle(Transport::Stdio).await;
}

#[tokio::test]
async fn lifecycle_over_http_2025_11_25_sessions() {
    lifecycle(Transport::Http(ProtocolVersion::V_2025_11_25)).await;
}

#[tokio::test]
async fn lifecycle_over_http_2026_07_28_stateless() {
    lifecycle(Transport::Http(ProtocolVersion::V_2026_07_28)).await;
}

/// Minimal valid arguments for each tool, for an agent assigned to `task`.
fn sample_args(tool: &str, task: &Task) -> Value {
    match tool {
        "agent_my_assignments" | "agent_list_workspace" => json!({}),
        "agent_update_status" => json!({ "status": "idle" }),
        "agent_log_activity" => json!({ "type": "note", "description": "checking in" }),
        "agent_delegate_task" => {
            json!({ "taskId": task.id, "toAgentId": "helper", "reason": "walk" })
        }
        other => panic!("no sample arguments for {other}: add them when adding a tool"),
    }
}

#[tokio::test]
async fn every_tool_is_refused_without_its_requirement_and_runs_with_it() {
    let w = world().await;
    approved_agent(&w.svc, &w.admin, "helper", &[]).await;
    let server = spawn_http(&w.db.url).await;
    for (i, spec) in CATALOGUE.iter().enumerate() {
        let args = sample_args(spec.name, &w.task);
        match spec.requirement {
            Requirement::Permission(p) => {
                // Everything except the one permission: hidden, refused, audited.
                let without: Vec<Permission> =
                    Permission::ALL.into_iter().filter(|x| *x != p).collect();
                let id = format!("without-{i}");
                let key = approved_agent(&w.svc, &w.admin, &id, &without).await;
                let client = http_client(&server.url, &key, ProtocolVersion::V_2025_11_25).await;
                assert!(
                    !tool_names(&client).await.contains(&spec.name.to_owned()),
                    "{} is listed without {p}",
                    spec.name
                );
                let msg = refused(&client, spec.name, args.clone()).await;
                assert!(
                    msg.contains("permission denied") && msg.contains(p.as_str()),
                    "{msg}"
                );
                let trail = audit(&w.svc, &w.admin, &id).await;
                assert!(
                    trail.iter().any(|e| e.outcome.as_deref() == Some("denied")
                        && e.description.contains(spec.name)),
                    "refusal of {} not audited",
                    spec.name
                );
                let _ = client.cancel().await;

                // Only that permission: listed, and it runs.
                let id = format!("with-{i}");
                let key = approved_agent(&w.svc, &w.admin, &id, &[p]).await;
                w.svc
                    .assign(
                        &w.admin,
                        &id,
                        AssignTarget::Task(w.task.id.clone()),
                        AssignmentRole::Member,
                    )
                    .await
                    .unwrap();
                let client = http_client(&server.url, &key, ProtocolVersion::V_2025_11_25).await;
                assert!(tool_names(&client).await.contains(&spec.name.to_owned()));
                ok(&client, spec.name, args).await;
                let _ = client.cancel().await;
            }
            Requirement::ApprovedAgent => {
                // No permissions at all: an approved agent may still act on itself.
                let id = format!("bare-{i}");
                let key = approved_agent(&w.svc, &w.admin, &id, &[]).await;
                let client = http_client(&server.url, &key, ProtocolVersion::V_2025_11_25).await;
                assert!(tool_names(&client).await.contains(&spec.name.to_owned()));
                ok(&client, spec.name, args).await;
                let _ = client.cancel().await;
            }
        }
    }
}

/// A note that names nothing, or names one of the agent's tasks, is the tool's whole change: it
/// is appended in the call's batch right after the call's decision (without a transaction of its
/// own; the task checked against the agent's work as of the call's authentication). A note on
/// another workspace's task, on a task of its own workspace not assigned to the agent, or with a
/// project that is not the task's is refused and leaves no note; and once the agent is unassigned
/// from its task by another process, the very next note on that task is refused. The chain
/// verifies throughout.
#[tokio::test]
async fn logged_notes_land_right_after_their_decisions_in_the_chain() {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "bot-1", &Permission::ALL).await;
    let assignment = w.assign_to_task("bot-1").await;
    let unassigned_task = w
        .svc
        .create_task(&w.admin, &w.project.id, "Someone else's", "")
        .await
        .unwrap();
    let client = stdio_client(&w.db.url, &key).await;
    let mut notes = Vec::new();
    for (i, args) in [
        json!({ "type": "note", "description": "plain 1" }),
        json!({ "type": "note", "description": "on the task", "taskId": w.task.id }),
        json!({ "type": "note", "description": "plain 2", "metadata": { "step": 2 } }),
    ]
    .into_iter()
    .enumerate()
    {
        let out = ok(&client, "agent_log_activity", args).await;
        notes.push((i, out["activityId"].as_str().unwrap().to_owned()));
    }
    let refusals = [
        json!({ "type": "note", "description": "elsewhere", "taskId": w.other_task.id }),
        json!({ "type": "note", "description": "elsewhere", "taskId": unassigned_task.id }),
        json!({ "type": "note", "description": "elsewhere", "taskId": w.task.id,
                "projectId": w.other_task.project_id }),
    ];
    for args in refusals {
        let why = refused(&client, "agent_log_activity", args.clone()).await;
        assert!(!why.is_empty(), "{args} is refused");
    }
    w.svc.unassign(&w.admin, &assignment).await.unwrap();
    let why = refused(
        &client,
        "agent_log_activity",
        json!({ "type": "note", "description": "elsewhere", "taskId": w.task.id }),
    )
    .await;
    assert!(why.contains("not assigned"), "{why}");
    let _ = client.cancel().await;

    let ws = w.admin.workspace();
    let chain = w
        .svc
        .store()
        .read()
        .await
        .unwrap()
        .chained_activity(&ws.id, 1, i64::MAX, 1000)
        .await
        .unwrap();
    for (i, id) in &notes {
        let at = chain
            .iter()
            .position(|e| &e.entry.id == id)
            .unwrap_or_else(|| panic!("note {i} ({id}) is in the trail"));
        let (note, decision) = (&chain[at].entry, &chain[at - 1].entry);
        assert_eq!(note.activity_type, "agent.note");
        assert_eq!(note.agent_id.as_deref(), Some("bot-1"));
        assert_eq!(chain[at].seq.unwrap(), chain[at - 1].seq.unwrap() + 1);
        assert_eq!(decision.activity_type, "tool.call", "{decision:?}");
        assert_eq!(decision.outcome.as_deref(), Some("allowed"));
        assert_eq!(decision.metadata["tool"], "agent_log_activity");
        assert_eq!(decision.agent_id.as_deref(), Some("bot-1"));
    }
    let on_task = chain.iter().find(|e| e.entry.id == notes[1].1).unwrap();
    assert_eq!(on_task.entry.task_id.as_deref(), Some(w.task.id.as_str()));
    assert!(
        !chain.iter().any(|e| e.entry.description == "elsewhere"),
        "no refused note is stored"
    );
    assert_eq!(
        chain
            .iter()
            .filter(|e| e.entry.activity_type == "agent.note")
            .count(),
        3
    );
    let report = w.svc.verify_chain(ws, None).await.unwrap();
    assert!(report.intact, "{report:?}");
}

/// The trail's type and outcome filters return exactly the entries that match, whether the
/// entries are ones the partial indexes leave out (allowed `tool.call` decisions, which every
/// call appends) or ones they keep (other types, denied decisions): each filtered list equals
/// the whole trail filtered here.
#[tokio::test]
async fn activity_filters_by_type_and_outcome_match_the_whole_trail() {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "bot-1", &[Permission::ReadTasks]).await;
    let client = stdio_client(&w.db.url, &key).await;
    for _ in 0..3 {
        ok(&client, "agent_my_assignments", json!({})).await;
    }
    // Without `read_agents`: refused, and audited as denied.
    for _ in 0..2 {
        refused(&client, "agent_list_workspace", json!({})).await;
    }
    let _ = client.cancel().await;
    let list = |activity_type: Option<&str>, outcome: Option<&str>| {
        w.svc.list_activity(
            &w.admin,
            ActivityQuery {
                activity_type: activity_type.map(str::to_owned),
                outcome: outcome.map(str::to_owned),
                limit: 500,
                ..Default::default()
            },
        )
    };
    let all = list(None, None).await.unwrap();
    let count = |t: &str, o: &str| {
        all.iter()
            .filter(|e| e.activity_type == t && e.outcome.as_deref() == Some(o))
            .count()
    };
    assert_eq!(count("tool.call", "allowed"), 3, "{all:#?}");
    assert_eq!(count("tool.call", "denied"), 2, "{all:#?}");
    for activity_type in [None, Some("tool.call"), Some("agent.access_approved")] {
        for outcome in [None, Some("allowed"), Some("denied")] {
            let expected: Vec<&str> = all
                .iter()
                .filter(|e| activity_type.is_none_or(|t| e.activity_type == t))
                .filter(|e| outcome.is_none_or(|o| e.outcome.as_deref() == Some(o)))
                .map(|e| e.id.as_str())
                .collect();
            let got = list(activity_type, outcome).await.unwrap();
            let got: Vec<&str> = got.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(got, expected, "type {activity_type:?}, outcome {outcome:?}");
        }
    }
    // The approval is there to be found by its type (kept by the type index).
    assert_eq!(
        list(Some("agent.access_approved"), None)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn http_refuses_missing_and_bad_credentials_with_a_challenge() {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "bot", &[Permission::ReadTasks]).await;
    let server = spawn_http(&w.db.url).await;
    let http = reqwest::Client::new();
    let base = server.url.trim_end_matches("/mcp").to_owned();
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    let post = |auth: Option<String>| {
        let mut req = http
            .post(&server.url)
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    for auth in [
        None,
        Some("Bearer mcp_agent_nope".to_owned()),
        Some(format!("Bearer {}", &key[..key.len() - 1])),
    ] {
        let res = post(auth.clone()).await.unwrap();
        assert_eq!(res.status(), 401, "{auth:?}");
        let challenge = res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer resource_metadata=\""),
            "{challenge}"
        );
        assert!(
            challenge.contains("/.well-known/oauth-protected-resource"),
            "{challenge}"
        );
    }
    assert_eq!(
        post(Some(format!("Bearer {key}"))).await.unwrap().status(),
        200
    );

    let meta: Value = http
        .get(format!("{base}/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["resource"], server.url);
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // DNS rebinding and browser origins are refused before authentication matters.
    let res = http
        .post(&server.url)
        .header("host", "evil.example.com")
        .header("authorization", format!("Bearer {key}"))
        .json(&init)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
    let res = http
        .post(&server.url)
        .header("origin", "https://evil.example.com")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {key}"))
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // An oversized body is refused, not buffered.
    let huge = json!({ "jsonrpc": "2.0", "id": 1, "method": "ping", "params": { "pad": "x".repeat(2 * 1024 * 1024) } });
    let res = http
        .post(&server.url)
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {key}"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn stdio_refuses_to_start_without_a_good_key() {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "bot", &[Permission::ReadTasks]).await;
    for (k, expected) in [
        (None, "PARALLAX_API_KEY is not set"),
        (Some("mcp_agent_garbage"), "malformed API key"),
    ] {
        let out = stdio_command(&w.db.url, k)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "stdio mode never prints to stdout on failure"
        );
    }
    w.svc.revoke_agent(&w.admin, "bot", "gone").await.unwrap();
    let out = stdio_command(&w.db.url, Some(&key))
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(&key[12..]),
        "the key is never echoed"
    );
}

#[tokio::test]
async fn serve_shuts_down_gracefully_on_sigterm() {
    let w = world().await;
    let mut server = spawn_http(&w.db.url).await;
    let pid = server.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), server.child.wait())
        .await
        .expect("server stops")
        .unwrap();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
}

/// The committed `schemas/` match the code; `PARALLAX_UPDATE_SCHEMAS=1` rewrites them.
#[test]
fn committed_tool_schemas_match_the_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/tools");
    let update = std::env::var("PARALLAX_UPDATE_SCHEMAS").is_ok_and(|v| v == "1");
    let mut drift = Vec::new();
    for (name, def) in parallax_mcp::mcp::server::tool_definitions() {
        let path = dir.join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(&def).unwrap() + "\n";
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            drift.push(path.display().to_string());
        }
    }
    assert!(
        drift.is_empty(),
        "tool schemas drifted (run with PARALLAX_UPDATE_SCHEMAS=1 and commit): {drift:?}"
    );
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        CATALOGUE.len(),
        "schemas/tools has a file per tool and no stale ones"
    );
}

/// The read tool's ten-task answer is about 6.6 kB, so Linux's default 64 kB pipe holds ten: the
/// server widens the pipe on its stdout, so that the answers ready together leave in one write
/// instead of one for every pipeful, each waking the client (`mcp::stdio::widen_output_pipe`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn stdio_widens_the_pipe_its_answers_leave_by() {
    use std::os::fd::AsRawFd;
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "bot", &[Permission::ReadTasks]).await;
    let mut s = RawStdio::start(&w.db.url, &key).await;
    s.initialize().await;
    let fd = s.out.get_ref().get_ref().as_raw_fd();
    // SAFETY: F_GETPIPE_SZ reads the capacity of the pipe behind our own descriptor.
    let widened = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    // 1 MB where the system allows it (Linux's default limit), else one batch of answers.
    assert!(widened >= 256 * 1024, "stdout's pipe holds {widened} bytes");
}

/// Calls that reach stdin together, in one write, are each decided on the store as it is after
/// every change committed before that write: each burst here follows a change made by another
/// process (this test's store), and every call in it must see that change, none a decision from
/// before. It guards any sharing of the per-request generation read between such calls.
#[tokio::test]
async fn stdio_calls_read_together_see_every_change_made_before_them() {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "bot", &[Permission::ReadTasks]).await;
    w.assign_to_task("bot").await;
    let mut s = RawStdio::start(&w.db.url, &key).await;
    s.initialize().await;
    s.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
        .await;
    let mut next_id = 1;
    let mut burst = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|_| {
                next_id += 1;
                json!({ "jsonrpc": "2.0", "id": next_id, "method": "tools/call",
                    "params": { "name": "agent_my_assignments", "arguments": {} } })
            })
            .collect()
    };
    let task_of = |a: &Value| a["result"]["structuredContent"]["tasks"][0]["task"]["id"].clone();
    let refusal = |a: &Value| {
        a["error"]["message"]
            .as_str()
            .or(a["result"]["content"][0]["text"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let set = |p: &[Permission]| {
        w.svc
            .set_agent_permissions(&w.admin, "bot", PermissionSet::new(p.iter().copied()))
    };

    for round in 0..3 {
        for a in s.ask_together(&burst(8)).await {
            assert_eq!(task_of(&a), w.task.id, "round {round}: {a}");
        }
        set(&[]).await.unwrap();
        for a in s.ask_together(&burst(8)).await {
            assert!(
                refusal(&a).contains("permission denied"),
                "round {round}, read:tasks taken away: {a}"
            );
        }
        set(&[Permission::ReadTasks]).await.unwrap();
    }
    w.svc.revoke_agent(&w.admin, "bot", "done").await.unwrap();
    for a in s.ask_together(&burst(8)).await {
        assert!(refusal(&a).contains("revoked"), "after revocation: {a}");
    }
}

/// Over stdio, a plain call is answered by `mcp::direct::Stdio`; with another key in `_meta`
/// than trace context and a progress token it is rmcp's. Both answer alike: a result, a string id, a refusal, an unknown tool
/// and bad arguments; a call before the handshake ends is rmcp's; and calls still running when
/// stdin closes are answered before the server exits.
#[tokio::test]
async fn a_plain_stdio_call_answers_as_rmcp_would() {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "bot", &[Permission::ReadTasks]).await;
    w.assign_to_task("bot").await;
    let mut s = RawStdio::start(&w.db.url, &key).await;
    s.initialize().await;
    // Before `notifications/initialized` (rmcp answers; nothing here yet).
    let read = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "agent_my_assignments", "arguments": {} } });
    let early = s.ask(&read).await;
    assert_eq!(
        early["result"]["structuredContent"]["tasks"][0]["task"]["id"], w.task.id,
        "{early}"
    );
    s.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
        .await;

    for (id, params) in [
        (json!(2), read["params"].clone()),
        (json!("call-3"), read["params"].clone()),
        (
            json!(4),
            json!({ "name": "agent_list_workspace", "arguments": {} }),
        ),
        (json!(5), json!({ "name": "no_such_tool", "arguments": {} })),
        (
            json!(6),
            json!({ "name": "agent_my_assignments", "arguments": { "status": 5 } }),
        ),
    ] {
        let plain = json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params });
        let direct = s.ask(&plain).await;
        let mut tracked = plain.clone();
        tracked["params"]["_meta"] = json!({ "example.com/hint": "p" });
        let through_rmcp = s.ask(&tracked).await;
        assert_eq!(through_rmcp, direct, "{plain}");
        if id == 2 || id == "call-3" {
            // The same answer rmcp gave before the handshake ended.
            let mut expected = early.clone();
            expected["id"] = id.clone();
            assert_eq!(direct, expected);
        } else {
            assert!(
                direct["error"].is_object() || direct["result"]["isError"] == true,
                "refused: {direct}"
            );
        }
    }

    // A listing answers alike on both paths.
    let list = json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/list" });
    let direct = s.ask(&list).await;
    assert_eq!(
        direct["result"]["tools"].as_array().unwrap().len(),
        3,
        "{direct}"
    );
    let mut hinted = list.clone();
    hinted["params"] = json!({ "_meta": { "example.com/hint": 1 } });
    assert_eq!(s.ask(&hinted).await, direct);

    // Calls in flight when stdin closes are all answered, then the server exits cleanly.
    for id in 100..120 {
        let mut call = read.clone();
        call["id"] = json!(id);
        s.send(&call).await;
    }
    drop(s.stdin.take());
    let mut answered: Vec<i64> = Vec::new();
    for _ in 100..120 {
        let m = s.next().await;
        assert!(m["result"]["structuredContent"].is_object(), "{m}");
        answered.push(m["id"].as_i64().unwrap());
    }
    answered.sort();
    assert_eq!(answered, (100..120).collect::<Vec<_>>());
    let status = tokio::time::timeout(Duration::from_secs(10), s.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
