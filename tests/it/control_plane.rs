//! The control plane's round trip, end to end through the real binary (issue 5): a local receiver
//! plays the control plane, the workspace is wired to it with the real CLI, the control plane sends
//! a signed access request, a member approves a subset through the admin API, the receiver gets and
//! verifies the signed `agent.access_requested` and `agent.access_approved` webhooks, and the
//! approved key works over MCP.

use crate::support::TestDb;
use crate::support::server::{BIN, call, http_client, ok, spawn_http_env, tool_names};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use parallax_mcp::domain::*;
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WS: &str = "acme";
const ADMIN: &str = "admin@acme.test";
const AGENT: &str = "docs-bot";

// ---- the real CLI and server ----

/// Runs the real CLI on the test database as `ADMIN` in `WS`; returns stdout, panicking on failure.
async fn cli(db_url: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(BIN)
        .arg("--database-url")
        .arg(db_url)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("PARALLAX_WORKSPACE")
        .env_remove("PARALLAX_AS")
        .env_remove("PARALLAX_SIGNING_KEY")
        .output()
        .await
        .expect("run the CLI");
    assert!(
        out.status.success(),
        "parallax-mcp {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn cli_json(db_url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-w", WS, "--as", ADMIN, "--json"]);
    let out = cli(db_url, &all).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out:?}"))
}

struct Server {
    _child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`, without `/mcp`.
    base: String,
}

/// `parallax-mcp serve` with short webhook delays (as in `events.rs`), signing keys in the store
/// (shared with the CLI that mints member tokens).
async fn spawn(db_url: &str) -> Server {
    let server = spawn_http_env(
        db_url,
        &[
            ("PARALLAX_WEBHOOK_BASE_DELAY_MS", "50"),
            ("PARALLAX_WEBHOOK_MAX_DELAY_MS", "200"),
            ("PARALLAX_WEBHOOK_TIMEOUT_MS", "2000"),
            ("PARALLAX_WEBHOOK_POLL_MS", "50"),
        ],
    )
    .await;
    Server {
        base: server.url.trim_end_matches("/mcp").to_owned(),
        _child: server.child,
    }
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- the control plane: a receiver that verifies every webhook ----

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hook {
    webhook_id: String,
    verified: Result<(), SignatureError>,
    body: Value,
}

#[derive(Clone)]
struct ControlPlane {
    url: String,
    secret: WebhookSecret,
    hooks: Arc<Mutex<Vec<Hook>>>,
}

impl ControlPlane {
    async fn start(secret: WebhookSecret) -> ControlPlane {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cp = ControlPlane {
            url: format!("http://{}/hooks", listener.local_addr().unwrap()),
            secret,
            hooks: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(cp.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        cp
    }

    fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }

    /// The verified webhooks, first copy of each webhook-id, in arrival order.
    fn processed(&self) -> Vec<Hook> {
        let mut seen = HashSet::new();
        self.hooks()
            .into_iter()
            .filter(|h| h.verified.is_ok() && seen.insert(h.webhook_id.clone()))
            .collect()
    }
}

async fn receive(State(cp): State<ControlPlane>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let verified = verify_webhook(
        std::slice::from_ref(&cp.secret),
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
        &body,
        chrono::Utc::now().timestamp(),
    );
    let ok = verified.is_ok();
    cp.hooks.lock().unwrap().push(Hook {
        webhook_id: h("webhook-id").unwrap_or_default().to_owned(),
        verified,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    if ok {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    }
}

// ---- the test ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_request_api_approval_signed_webhooks_and_a_working_key() {
    let db = TestDb::new().await;
    let url = db.url.as_str();

    // 1–2. The workspace, set up with the real CLI: a fresh webhook secret the control plane keeps,
    // and the control plane's URL.
    cli(
        url,
        &[
            "workspace",
            "create",
            WS,
            "--name",
            "Acme",
            "--admin-email",
            ADMIN,
        ],
    )
    .await;
    let rotated = cli_json(
        url,
        &["workspace", "webhook-secret", "rotate", "--grace-secs", "0"],
    )
    .await;
    let secret = WebhookSecret::parse(rotated["secret"].as_str().expect("secret shown")).unwrap();
    let cp = ControlPlane::start(secret.clone()).await;
    let settings = cli_json(
        url,
        &[
            "workspace",
            "settings",
            "--set",
            &format!("control_plane_url={}", cp.url),
        ],
    )
    .await;
    assert_eq!(settings["controlPlaneUrl"], cp.url.as_str(), "{settings}");

    let server = spawn(url).await;
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}/api/v1/workspaces/{WS}{path}", server.base);

    // 3. The control plane asks for access, signed with the workspace secret.
    let body = serde_json::to_vec(&json!({
        "agentId": AGENT,
        "name": "Docs bot",
        "description": "writes docs",
        "capabilities": ["summarize"],
        "requestedPermissions": ["read:tasks", "read:agents"],
        "metadata": { "model": "m1" },
        "endpoint": "http://agent.test/docs-bot",
        "justification": "the docs are stale",
    }))
    .unwrap();
    let ts = chrono::Utc::now().timestamp();
    let inbound_id = "msg_cp_request_1";
    let res = http
        .post(api("/access-requests"))
        .header("content-type", "application/json")
        .header("webhook-id", inbound_id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            signature_header(std::slice::from_ref(&secret), inbound_id, ts, &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let requested: Value = res.json().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::CREATED, "{requested}");
    assert_eq!(requested["created"], true);
    assert_eq!(requested["agent"]["id"], AGENT);
    assert_eq!(requested["agent"]["status"], "pending");
    assert_eq!(requested["apiKey"], Value::Null, "no key before approval");

    // The control plane hears about the request first.
    eventually(
        "agent.access_requested",
        Duration::from_secs(15),
        || async { !cp.processed().is_empty() },
    )
    .await;
    let first = &cp.processed()[0];
    assert_eq!(first.body["type"], "agent.access_requested", "{:?}", first);
    assert_eq!(first.body["data"]["agentId"], AGENT);
    assert_eq!(first.body["data"]["status"], "pending");
    assert_eq!(
        first.body["data"]["requestedPermissions"],
        json!(["read:tasks", "read:agents"])
    );
    assert_eq!(first.body["data"]["grantedPermissions"], json!([]));

    // 4. A member (the admin, with a token from the real CLI) approves a subset.
    let token = cli(url, &["member", "token", "-w", WS, "--as", ADMIN])
        .await
        .trim()
        .to_owned();
    let res = http
        .post(api(&format!("/agents/{AGENT}/approve")))
        .bearer_auth(&token)
        .json(&json!({ "grant": ["read:tasks"] }))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let approved: Value = res.json().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{approved}");
    assert_eq!(approved["agent"]["status"], "approved");
    assert_eq!(
        approved["agent"]["grantedPermissions"],
        json!(["read:tasks"])
    );
    let key = approved["apiKey"]
        .as_str()
        .expect("the approval carries the key")
        .to_owned();
    assert!(key.starts_with("mcp_agent_"), "key shape");
    // Once: later answers never carry it, and approving again is a conflict without a key.
    let details = http
        .get(api(&format!("/agents/{AGENT}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(details.status(), reqwest::StatusCode::OK);
    let details = details.text().await.unwrap();
    assert!(!details.contains(&key), "the key is shown only once");
    let again = http
        .post(api(&format!("/agents/{AGENT}/approve")))
        .bearer_auth(&token)
        .json(&json!({ "grant": ["read:tasks"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), reqwest::StatusCode::CONFLICT);
    assert!(!again.text().await.unwrap().contains(&key));

    // 5. The control plane gets the signed approval, after the request, for the same agent.
    eventually("agent.access_approved", Duration::from_secs(15), || async {
        cp.processed().len() >= 2
    })
    .await;
    let processed = cp.processed();
    assert_eq!(processed.len(), 2, "{processed:#?}");
    let second = &processed[1];
    assert_eq!(second.body["type"], "agent.access_approved", "{second:?}");
    assert_eq!(second.body["data"]["agentId"], AGENT);
    assert_eq!(second.body["data"]["status"], "approved");
    assert_eq!(
        second.body["data"]["grantedPermissions"],
        json!(["read:tasks"])
    );
    assert_eq!(
        second.body["data"]["requestedPermissions"],
        json!(["read:tasks", "read:agents"])
    );
    assert_eq!(second.body["data"]["resolvedBy"], format!("member:{ADMIN}"));
    assert!(second.body["timestamp"].is_string());
    assert_ne!(first.webhook_id, second.webhook_id);
    // Every request the control plane got was signed with the workspace secret, and none carried
    // the agent's key.
    let hooks = cp.hooks();
    assert!(
        hooks.iter().all(|h| h.verified.is_ok()),
        "a webhook failed verification: {hooks:#?}"
    );
    assert!(
        hooks.iter().all(|h| !h.body.to_string().contains(&key)),
        "the key leaked into a webhook"
    );
    // The server's delivery log agrees: both delivered, under the webhook-ids the receiver saw.
    let deliveries = cli_json(url, &["delivery", "list"]).await;
    let deliveries = deliveries.as_array().expect("a list of deliveries");
    assert_eq!(deliveries.len(), 2, "{deliveries:#?}");
    for (d, h) in deliveries.iter().zip(&processed) {
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["agentId"], AGENT, "{d}");
        assert_eq!(d["webhookId"], h.webhook_id.as_str(), "{d}");
        assert_eq!(d["eventType"], h.body["type"], "{d}");
        assert_eq!(
            d["webhookId"],
            format!("msg_{}", d["eventId"].as_str().unwrap())
        );
    }

    // 6. The approved key works over MCP, within the granted subset.
    let project = cli_json(url, &["project", "create", "Docs"]).await;
    let pid = project["id"].as_str().unwrap();
    let task = cli_json(url, &["task", "create", "--project", pid, "Write intro"]).await;
    let tid = task["id"].as_str().unwrap();
    let res = http
        .post(api("/assignments"))
        .bearer_auth(&token)
        .json(&json!({ "agentId": AGENT, "taskId": tid }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::CREATED);

    let client = http_client(
        &format!("{}/mcp", server.base),
        &key,
        ProtocolVersion::V_2025_11_25,
    )
    .await;
    let mine = ok(&client, "agent_my_assignments", json!({})).await;
    let tasks = mine["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{mine}");
    assert_eq!(tasks[0]["task"]["id"], tid);
    assert_eq!(tasks[0]["task"]["title"], "Write intro");
    // read:agents was requested but not granted: its tool is neither listed nor callable.
    let names = tool_names(&client).await;
    assert!(
        names.iter().any(|n| n == "agent_my_assignments"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "agent_list_workspace"),
        "{names:?}"
    );
    let denied = call(&client, "agent_list_workspace", json!({}))
        .await
        .expect("a refusal is a tool error, not a protocol error");
    assert_eq!(denied.is_error, Some(true), "{denied:?}");
    let why = denied.content[0].as_text().map(|t| t.text.as_str());
    assert!(why.is_some_and(|t| t.contains("read:agents")), "{denied:?}");
    let _ = client.cancel().await;
}

/// A signed checkpoint of the audit trail reaches the control plane as a signed
/// `audit.checkpoint` webhook whose data verifies on its own (Ed25519, the key it carries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_checkpoints_reach_the_control_plane_as_signed_webhooks() {
    let db = TestDb::new().await;
    let url = db.url.as_str();
    cli(
        url,
        &[
            "workspace",
            "create",
            WS,
            "--name",
            "Acme",
            "--admin-email",
            ADMIN,
        ],
    )
    .await;
    let rotated = cli_json(
        url,
        &["workspace", "webhook-secret", "rotate", "--grace-secs", "0"],
    )
    .await;
    let secret = WebhookSecret::parse(rotated["secret"].as_str().expect("secret shown")).unwrap();
    let cp = ControlPlane::start(secret).await;
    cli_json(
        url,
        &[
            "workspace",
            "settings",
            "--set",
            &format!("control_plane_url={}", cp.url),
            "--set",
            "checkpoint_every_entries=1",
        ],
    )
    .await;
    let _server = spawn(url).await;
    eventually("audit.checkpoint", Duration::from_secs(20), || async {
        cp.processed()
            .iter()
            .any(|h| h.body["type"] == "audit.checkpoint")
    })
    .await;
    let hook = cp
        .processed()
        .into_iter()
        .find(|h| h.body["type"] == "audit.checkpoint")
        .unwrap();
    let signed: SignedCheckpoint = serde_json::from_value(hook.body["data"].clone())
        .unwrap_or_else(|e| panic!("{e}: {:?}", hook.body));
    parallax_mcp::service::check_signature(&signed).unwrap();
    let listed = cli_json(url, &["activity", "checkpoints"]).await;
    assert_eq!(listed[0]["id"], signed.id.as_str(), "{listed}");
}
