//! The admin HTTP API and the control plane's signed access requests, on the real server
//! (`spawn_http`) with a real HTTP client, member tokens minted by the real CLI.

use crate::support::server::{BIN, HttpServer, World, spawn_http, world};
use crate::support::{all_activity, all_events, set, snapshot};
use parallax_mcp::domain::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

// ---- helpers ----

/// Runs the real CLI on the test database; returns stdout, panicking on failure.
async fn cli(db_url: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(BIN)
        .arg("--database-url")
        .arg(db_url)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("PARALLAX_WORKSPACE")
        .env_remove("PARALLAX_AS")
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

/// A member token from `parallax-mcp member token`.
async fn token(db_url: &str, ws: &str, email: &str) -> String {
    cli(
        db_url,
        &["member", "token", "--workspace", ws, "--as", email],
    )
    .await
    .trim()
    .to_owned()
}

struct Api {
    base: String,
    http: reqwest::Client,
    _server: HttpServer,
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// Asserts the stable error shape with `code`.
    #[track_caller]
    fn error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.text);
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "body: {v}");
        let msg = v["error"]["message"].as_str().expect("message").to_owned();
        assert!(!msg.is_empty());
        assert_eq!(v.as_object().unwrap().len(), 1, "only `error`: {v}");
        msg
    }

    #[track_caller]
    fn ok(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text);
        self.json()
    }
}

impl Api {
    async fn start(w: &World) -> Api {
        let server = spawn_http(&w.db.url).await;
        let base = server.url.trim_end_matches("/mcp").to_owned();
        Api {
            base,
            http: reqwest::Client::new(),
            _server: server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.expect("request");
        Reply {
            status: res.status(),
            headers: res.headers().clone(),
            text: res.text().await.unwrap(),
        }
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .http
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, token, None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, token, Some(body)).await
    }

    /// A signed access request for workspace `ws`.
    async fn signed(&self, ws: &str, id: &str, ts: i64, sig: Option<&str>, body: &[u8]) -> Reply {
        let mut req = self
            .http
            .post(self.url(&format!("/api/v1/workspaces/{ws}/access-requests")))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .body(body.to_vec());
        if let Some(s) = sig {
            req = req.header("webhook-signature", s);
        }
        self.send(req).await
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn request_body(agent_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "agentId": agent_id,
        "name": "Docs bot",
        "description": "writes docs",
        "capabilities": ["summarize"],
        "requestedPermissions": ["read:tasks", "write:tasks"],
        "metadata": { "model": "m1" },
        "endpoint": "http://agent.test/docs-bot",
        "justification": "the docs are stale",
    }))
    .unwrap()
}

async fn webhook_secret(w: &World) -> WebhookSecret {
    w.svc.rotate_webhook_secret(&w.admin, 0).await.unwrap()
}

// ---- inbound signed access requests ----

#[tokio::test]
async fn signed_access_request_is_processed_once() {
    let w = world().await;
    let secret = webhook_secret(&w).await;
    let api = Api::start(&w).await;
    let body = request_body("docs-bot");
    let ts = now();
    let sig = secret.sign("msg_1", ts, &body);

    let first = api.signed("acme", "msg_1", ts, Some(&sig), &body).await;
    let v = first.ok(StatusCode::CREATED);
    assert_eq!(v["agent"]["id"], "docs-bot");
    assert_eq!(v["agent"]["status"], "pending");
    assert_eq!(v["created"], true);
    assert_eq!(v["apiKey"], Value::Null);
    assert!(first.headers.get("webhook-replayed").is_none());

    let ws = &w.admin.workspace().id;
    let agent = w
        .svc
        .agent_details(&w.admin, "docs-bot")
        .await
        .unwrap()
        .agent;
    assert_eq!(agent.status, AgentStatus::Pending);
    assert_eq!(agent.justification.as_deref(), Some("the docs are stale"));
    assert_eq!(
        agent.endpoint.as_deref(),
        Some("http://agent.test/docs-bot")
    );
    assert_eq!(agent.metadata, json!({ "model": "m1" }));
    assert_eq!(
        agent.requested_permissions.to_string(),
        "read:tasks,write:tasks"
    );
    let requested: Vec<_> = all_activity(&w.svc, ws)
        .await
        .into_iter()
        .filter(|e| e.activity_type == "agent.access_requested")
        .collect();
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0].actor_kind, ActorKind::ControlPlane);

    // The same delivery again: the stored answer, nothing processed.
    let before = snapshot(&w.svc, ws).await;
    let events = all_events(&w.svc, ws).await.len();
    let again = api.signed("acme", "msg_1", ts, Some(&sig), &body).await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.json(), first.json());
    assert_eq!(again.headers.get("webhook-replayed").unwrap(), "true");
    assert_eq!(snapshot(&w.svc, ws).await, before);
    assert_eq!(all_events(&w.svc, ws).await.len(), events);
    let access_events = all_events(&w.svc, ws)
        .await
        .iter()
        .filter(|e| e.event_type == EventType::AccessRequested)
        .count();
    assert_eq!(access_events, 1, "one agent.access_requested event");
    assert_eq!(w.svc.list_agents(&w.admin, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_deliveries_of_one_id_are_processed_once() {
    let w = world().await;
    let secret = webhook_secret(&w).await;
    let api = Api::start(&w).await;
    let body = request_body("race-bot");
    let ts = now();
    let sig = secret.sign("msg_race", ts, &body);
    let replies = join_all(
        (0..6)
            .map(|_| Box::pin(api.signed("acme", "msg_race", ts, Some(&sig), &body)))
            .collect(),
    )
    .await;
    let fresh = replies
        .iter()
        .filter(|r| r.headers.get("webhook-replayed").is_none())
        .count();
    assert_eq!(fresh, 1, "exactly one delivery processed");
    for r in &replies {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json(), replies[0].json());
    }
    let ws = &w.admin.workspace().id;
    let requested = all_events(&w.svc, ws)
        .await
        .iter()
        .filter(|e| e.event_type == EventType::AccessRequested)
        .count();
    assert_eq!(requested, 1);
}

/// Polls every future together until all are done (no extra crate needed).
async fn join_all<F: std::future::Future<Output = Reply> + Unpin>(futs: Vec<F>) -> Vec<Reply> {
    let mut futs: Vec<Option<F>> = futs.into_iter().map(Some).collect();
    let mut out: Vec<Option<Reply>> = (0..futs.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, slot) in futs.iter_mut().enumerate() {
            if let Some(f) = slot {
                match std::pin::Pin::new(f).poll(cx) {
                    std::task::Poll::Ready(r) => {
                        out[i] = Some(r);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn old_receipts_are_pruned() {
    let w = world().await;
    let secret = webhook_secret(&w).await;
    let ws = w.admin.workspace().id.clone();
    let old = chrono::Utc::now() - chrono::Duration::seconds(2 * TOLERANCE_SECS + 5);
    let recent = chrono::Utc::now() - chrono::Duration::seconds(2 * TOLERANCE_SECS - 60);
    let tx = w.svc.store().write().await.unwrap();
    for (id, at) in [("msg_old", old), ("msg_recent", recent)] {
        let receipt = parallax_mcp::store::InboundReceipt {
            status_code: 201,
            response_body: "{}".into(),
            received_at: at,
        };
        tx.insert_inbound_receipt(&ws, id, &receipt).await.unwrap();
    }
    tx.commit().await.unwrap();
    let api = Api::start(&w).await;
    let body = request_body("prune-bot");
    let ts = now();
    let sig = secret.sign("msg_new", ts, &body);
    api.signed("acme", "msg_new", ts, Some(&sig), &body)
        .await
        .ok(StatusCode::CREATED);
    let tx = w.svc.store().read().await.unwrap();
    assert!(tx.inbound_receipt(&ws, "msg_old").await.unwrap().is_none());
    assert!(
        tx.inbound_receipt(&ws, "msg_recent")
            .await
            .unwrap()
            .is_some()
    );
    assert!(tx.inbound_receipt(&ws, "msg_new").await.unwrap().is_some());
}

#[tokio::test]
async fn signed_access_request_follows_auto_approval() {
    let w = world().await;
    set(
        &w.svc,
        &w.admin,
        &[
            ("auto_approve_capabilities", "summarize"),
            ("auto_approve_permissions", "read:tasks,write:tasks"),
        ],
    )
    .await;
    let secret = webhook_secret(&w).await;
    let api = Api::start(&w).await;
    let body = request_body("auto-bot");
    let ts = now();
    let sig = secret.sign("msg_auto", ts, &body);
    let v = api
        .signed("acme", "msg_auto", ts, Some(&sig), &body)
        .await
        .ok(StatusCode::CREATED);
    assert_eq!(v["agent"]["status"], "approved");
    let key = v["apiKey"].as_str().expect("key shown once");
    assert!(ApiKey::parse(key).is_ok());
    // A replay never shows the key again: it is not stored in clear.
    let again = api
        .signed("acme", "msg_auto", ts, Some(&sig), &body)
        .await
        .ok(StatusCode::CREATED);
    assert_eq!(again["apiKey"], Value::Null);
    assert_eq!(again["agent"], v["agent"]);
}

#[tokio::test]
async fn bad_signatures_and_bodies_are_refused_and_change_nothing() {
    let w = world().await;
    let secret = webhook_secret(&w).await;
    let api = Api::start(&w).await;
    let ws = w.admin.workspace().id.clone();
    let before = snapshot(&w.svc, &ws).await;
    let body = request_body("docs-bot");
    let ts = now();
    let good = secret.sign("msg_x", ts, &body);

    // Stale and future stamps sit 10 s past the ±300 s window: at 1 s past, a clock tick between
    // signing and the server's check (likely under load) moved "future" back inside it. The exact
    // boundary is tested without a clock in `domain::webhook`.
    let cases: Vec<(&str, i64, Option<String>)> = vec![
        (
            "wrong secret",
            ts,
            Some(WebhookSecret::generate().sign("msg_x", ts, &body)),
        ),
        (
            "stale",
            ts - 310,
            Some(secret.sign("msg_x", ts - 310, &body)),
        ),
        (
            "future",
            ts + 310,
            Some(secret.sign("msg_x", ts + 310, &body)),
        ),
        ("missing", ts, None),
        ("empty", ts, Some(String::new())),
        ("truncated", ts, Some(good[..good.len() - 5].to_owned())),
        (
            "no version",
            ts,
            Some(good.trim_start_matches("v1,").to_owned()),
        ),
        ("malformed", ts, Some("v1,!!!not-base64!!!".into())),
        ("bare prefix", ts, Some("v1,".into())),
        ("other id", ts, Some(secret.sign("msg_y", ts, &body))),
    ];
    for (what, ts, sig) in cases {
        let r = api.signed("acme", "msg_x", ts, sig.as_deref(), &body).await;
        let msg = r.error(StatusCode::UNAUTHORIZED, "unauthenticated");
        assert!(!msg.contains(&good), "{what}: no signature echoed");
        // The challenge names the signature scheme, not a bearer token this route never takes.
        let challenge = r.headers["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Webhook-Signature "),
            "{what}: {challenge}"
        );
    }
    // A signature over another body.
    let tampered = request_body("evil-bot");
    api.signed("acme", "msg_x", ts, Some(&good), &tampered)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthenticated");
    // Unknown workspace and a workspace without a secret: the same refusal.
    let a = api.signed("nowhere", "msg_x", ts, Some(&good), &body).await;
    let b = api.signed("rival", "msg_x", ts, Some(&good), &body).await;
    assert_eq!(
        a.error(StatusCode::UNAUTHORIZED, "unauthenticated"),
        b.error(StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    // Well signed but not a valid request: 400, with the stable shape.
    for bad in [
        json!({ "agentId": "docs-bot", "name": "x", "surprise": 1 }),
        json!({ "name": "no id" }),
        json!({ "agentId": "docs-bot", "name": "x", "requestedPermissions": ["root"] }),
        json!({ "agentId": "has space", "name": "x" }),
    ] {
        let raw = serde_json::to_vec(&bad).unwrap();
        let sig = secret.sign("msg_bad", ts, &raw);
        api.signed("acme", "msg_bad", ts, Some(&sig), &raw)
            .await
            .error(StatusCode::BAD_REQUEST, "invalid");
    }
    let raw = b"{\"agentId\": ".to_vec();
    let sig = secret.sign("msg_trunc", ts, &raw);
    api.signed("acme", "msg_trunc", ts, Some(&sig), &raw)
        .await
        .error(StatusCode::BAD_REQUEST, "invalid");
    assert_eq!(snapshot(&w.svc, &ws).await, before);
}

#[tokio::test]
async fn rotation_accepts_any_active_secret_among_several_signatures() {
    let w = world().await;
    let api = Api::start(&w).await;
    let db = &w.db.url;
    let rotate = |grace: &'static str| async move {
        let out = cli(
            db,
            &[
                "workspace",
                "webhook-secret",
                "rotate",
                "--grace-secs",
                grace,
                "-w",
                "acme",
                "--as",
                "admin@acme.test",
                "--json",
            ],
        )
        .await;
        let v: Value = serde_json::from_str(&out).unwrap();
        WebhookSecret::parse(v["secret"].as_str().unwrap()).unwrap()
    };
    let old = rotate("0").await;
    let new = rotate("3600").await;
    let ts = now();
    let send = |id: &'static str, secrets: Vec<WebhookSecret>| {
        let body = request_body(&format!("bot-{id}"));
        let header = signature_header(&secrets, id, ts, &body);
        let api = &api;
        async move { api.signed("acme", id, ts, Some(&header), &body).await }
    };
    // Old and new both sign during the grace; either alone is accepted too.
    send(
        "both",
        vec![WebhookSecret::generate(), old.clone(), new.clone()],
    )
    .await
    .ok(StatusCode::CREATED);
    send("old", vec![old.clone()]).await.ok(StatusCode::CREATED);
    send("new", vec![new.clone()]).await.ok(StatusCode::CREATED);
    // A rotation with no grace ends the previous secrets at once.
    let newest = rotate("0").await;
    send("stale-old", vec![new.clone()])
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthenticated");
    send("newest", vec![WebhookSecret::generate(), newest])
        .await
        .ok(StatusCode::CREATED);
    // Rotation is audited, and needs an admin.
    let rotations = all_activity(&w.svc, &w.admin.workspace().id)
        .await
        .iter()
        .filter(|e| e.activity_type == "workspace.webhook_secret_rotated")
        .count();
    assert_eq!(rotations, 3);
}

// ---- the admin API ----

#[tokio::test]
async fn full_flow_through_the_api() {
    let w = world().await;
    let api = Api::start(&w).await;
    let admin = token(&w.db.url, "acme", "admin@acme.test").await;
    let ws = "/api/v1/workspaces/acme";

    let project = api
        .post(
            &format!("{ws}/projects"),
            &admin,
            json!({ "name": "Docs", "description": "d" }),
        )
        .await
        .ok(StatusCode::CREATED);
    let pid = project["id"].as_str().unwrap();
    let task = api
        .post(
            &format!("{ws}/tasks"),
            &admin,
            json!({ "projectId": pid, "title": "Write intro" }),
        )
        .await
        .ok(StatusCode::CREATED);
    let tid = task["id"].as_str().unwrap();
    let updated = api
        .call(
            "PATCH",
            &format!("{ws}/tasks/{tid}"),
            &admin,
            Some(json!({ "status": "in_progress" })),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(updated["status"], "in_progress");

    let req = api
        .post(
            &format!("{ws}/agents"),
            &admin,
            json!({ "agentId": "docs-bot", "name": "Docs bot", "permissions": ["read:tasks", "write:tasks", "read:pages"] }),
        )
        .await
        .ok(StatusCode::CREATED);
    assert_eq!(req["agent"]["status"], "pending");
    assert_eq!(req["apiKey"], Value::Null);

    let approved = api
        .post(
            &format!("{ws}/agents/docs-bot/approve"),
            &admin,
            json!({ "grant": ["read:tasks", "write:tasks"] }),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        approved["agent"]["grantedPermissions"],
        json!(["read:tasks", "write:tasks"])
    );
    let key = approved["apiKey"].as_str().unwrap().to_owned();
    let caller = parallax_mcp::auth::agent(w.svc.store(), &key)
        .await
        .unwrap();
    assert!(caller.is_ok(), "the shown key works");
    // Shown once: never in later answers.
    let shown = api.get(&format!("{ws}/agents/docs-bot"), &admin).await;
    let details = shown.ok(StatusCode::OK);
    assert!(!shown.text.contains(&key));
    assert_eq!(details["credentials"].as_array().unwrap().len(), 1);
    let listed = api
        .get(&format!("{ws}/agents?status=approved"), &admin)
        .await;
    assert!(!listed.text.contains(&key));
    assert_eq!(listed.ok(StatusCode::OK).as_array().unwrap().len(), 1);
    // A grant beyond the request is refused (already approved → conflict, checked by the service).
    api.post(&format!("{ws}/agents/docs-bot/approve"), &admin, json!({}))
        .await
        .error(StatusCode::CONFLICT, "conflict");

    let assigned = api
        .post(
            &format!("{ws}/assignments"),
            &admin,
            json!({ "agentId": "docs-bot", "taskId": tid }),
        )
        .await
        .ok(StatusCode::CREATED);
    assert_eq!(assigned["created"], true);
    let list = api
        .get(&format!("{ws}/assignments?agent=docs-bot"), &admin)
        .await
        .ok(StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Activity, paged two at a time, newest first, without overlap.
    let mut seen = Vec::new();
    let mut path = format!("{ws}/activity?limit=2");
    loop {
        let page = api.get(&path, &admin).await.ok(StatusCode::OK);
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 2);
        seen.extend(entries.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match page["nextBefore"].as_str() {
            Some(b) => path = format!("{ws}/activity?limit=2&before={b}"),
            None => break,
        }
    }
    let all: Vec<String> = all_activity(&w.svc, &w.admin.workspace().id)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(seen, all, "paging walks the whole trail once");
    let approvals = api
        .get(
            &format!("{ws}/activity?type=agent.access_approved&agent=docs-bot"),
            &admin,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(approvals["entries"].as_array().unwrap().len(), 1);

    let rotated = api
        .post(
            &format!("{ws}/agents/docs-bot/rotate-key"),
            &admin,
            json!({}),
        )
        .await
        .ok(StatusCode::OK);
    let new_key = rotated["apiKey"].as_str().unwrap();
    assert_ne!(new_key, key);
    assert!(
        parallax_mcp::auth::agent(w.svc.store(), &key)
            .await
            .unwrap()
            .is_err()
    );
    let revoked = api
        .post(
            &format!("{ws}/agents/docs-bot/revoke"),
            &admin,
            json!({ "reason": "done" }),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(revoked["status"], "revoked");
}

#[tokio::test]
async fn roles_are_enforced_and_refusals_audited() {
    let w = world().await;
    let api = Api::start(&w).await;
    let admin = token(&w.db.url, "acme", "admin@acme.test").await;
    let ws = "/api/v1/workspaces/acme";
    api.post(
        &format!("{ws}/members"),
        &admin,
        json!({ "email": "rita@acme.test", "role": "read" }),
    )
    .await
    .ok(StatusCode::CREATED);
    let reader = token(&w.db.url, "acme", "rita@acme.test").await;
    let wsid = w.admin.workspace().id.clone();
    let before = snapshot(&w.svc, &wsid).await;
    api.post(
        &format!("{ws}/projects"),
        &reader,
        json!({ "name": "Nope" }),
    )
    .await
    .error(StatusCode::FORBIDDEN, "forbidden");
    api.call(
        "PATCH",
        &format!("{ws}/settings"),
        &reader,
        Some(json!({ "maxAgents": 1 })),
    )
    .await
    .error(StatusCode::FORBIDDEN, "forbidden");
    api.post(&format!("{ws}/webhook-secret/rotate"), &reader, json!({}))
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(snapshot(&w.svc, &wsid).await, before);
    let denied: Vec<_> = all_activity(&w.svc, &wsid)
        .await
        .into_iter()
        .filter(|e| e.activity_type == "member.denied" && e.actor_id == "rita@acme.test")
        .collect();
    assert_eq!(denied.len(), 3);
    // Reading is allowed, and the admin can change settings and roles.
    api.get(&format!("{ws}/projects"), &reader)
        .await
        .ok(StatusCode::OK);
    let s = api
        .call(
            "PATCH",
            &format!("{ws}/settings"),
            &admin,
            Some(json!({ "maxAgents": 7, "autoApproveCapabilities": ["a", "b"] })),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(s["maxAgents"], 7);
    assert_eq!(s["autoApproveCapabilities"], json!(["a", "b"]));
    api.call(
        "PATCH",
        &format!("{ws}/settings"),
        &admin,
        Some(json!({ "no_such_key": 1 })),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid");
    let m = api
        .call(
            "PATCH",
            &format!("{ws}/members/rita@acme.test"),
            &admin,
            Some(json!({ "role": "write" })),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(m["role"], "write");
}

#[tokio::test]
async fn a_removed_members_token_is_refused() {
    let w = world().await;
    w.svc
        .add_member(&w.admin, "rita@acme.test", "Rita", Role::Write)
        .await
        .unwrap();
    let api = Api::start(&w).await;
    let admin = token(&w.db.url, "acme", "admin@acme.test").await;
    let rita = token(&w.db.url, "acme", "rita@acme.test").await;
    let ws = "/api/v1/workspaces/acme";
    api.get(&format!("{ws}/projects"), &rita)
        .await
        .ok(StatusCode::OK);

    let removed = api
        .call(
            "DELETE",
            &format!("{ws}/members/rita@acme.test"),
            &admin,
            None,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(removed["email"], "rita@acme.test");
    assert_eq!(removed["role"], "write");
    // The token was valid a moment ago and has not expired; the member is gone, so it is refused.
    api.get(&format!("{ws}/projects"), &rita)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let members = api
        .get(&format!("{ws}/members"), &admin)
        .await
        .ok(StatusCode::OK);
    let emails: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["email"].as_str().unwrap())
        .collect();
    assert!(!emails.contains(&"rita@acme.test"), "{emails:?}");
    api.call(
        "DELETE",
        &format!("{ws}/members/rita@acme.test"),
        &admin,
        None,
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    api.call(
        "DELETE",
        &format!("{ws}/members/admin@acme.test"),
        &admin,
        None,
    )
    .await
    .error(StatusCode::CONFLICT, "conflict");
    let wsid = w.admin.workspace().id.clone();
    let removals: Vec<String> = all_activity(&w.svc, &wsid)
        .await
        .into_iter()
        .filter(|e| e.activity_type == "member.removed")
        .map(|e| e.description)
        .collect();
    assert_eq!(removals, ["rita@acme.test (write) removed"]);
}

#[tokio::test]
async fn other_workspaces_are_not_found() {
    let w = world().await;
    let api = Api::start(&w).await;
    let admin = token(&w.db.url, "acme", "admin@acme.test").await;
    // Another workspace in the path: 404, audited in the caller's workspace.
    let before = snapshot(&w.svc, &w.other_admin.workspace().id).await;
    api.get("/api/v1/workspaces/rival/projects", &admin)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    api.post(
        "/api/v1/workspaces/rival/projects",
        &admin,
        json!({ "name": "x" }),
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        snapshot(&w.svc, &w.other_admin.workspace().id).await,
        before
    );
    let audited = all_activity(&w.svc, &w.admin.workspace().id)
        .await
        .into_iter()
        .filter(|e| e.activity_type == "member.denied" && e.description.contains("rival"))
        .count();
    assert_eq!(audited, 2);
    // Another workspace's ids in our own path: not found.
    let tid = &w.other_task.id;
    api.call(
        "PATCH",
        &format!("/api/v1/workspaces/acme/tasks/{tid}"),
        &admin,
        Some(json!({ "title": "mine now" })),
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    api.post(
        "/api/v1/workspaces/acme/assignments",
        &admin,
        json!({ "agentId": "nobody", "taskId": tid }),
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        snapshot(&w.svc, &w.other_admin.workspace().id).await,
        before
    );
}

#[tokio::test]
async fn bad_input_and_bad_credentials_get_the_stable_shape() {
    let w = world().await;
    let api = Api::start(&w).await;
    let admin = token(&w.db.url, "acme", "admin@acme.test").await;
    let ws = "/api/v1/workspaces/acme";
    let before = snapshot(&w.svc, &w.admin.workspace().id).await;
    // Malformed JSON, unknown fields, wrong types.
    let raw = api
        .send(
            api.http
                .post(api.url(&format!("{ws}/projects")))
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body("{\"name\": "),
        )
        .await;
    raw.error(StatusCode::BAD_REQUEST, "invalid");
    api.post(
        &format!("{ws}/projects"),
        &admin,
        json!({ "name": "x", "colour": "red" }),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid");
    api.post(&format!("{ws}/projects"), &admin, json!({ "name": 5 }))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid");
    api.post(&format!("{ws}/projects"), &admin, json!({ "name": "  " }))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid");
    api.get(&format!("{ws}/tasks?status=sleeping"), &admin)
        .await
        .error(StatusCode::BAD_REQUEST, "invalid");
    api.get(&format!("{ws}/activity?limit=0"), &admin)
        .await
        .error(StatusCode::BAD_REQUEST, "invalid");
    api.post(
        &format!("{ws}/assignments"),
        &admin,
        json!({ "agentId": "x", "taskId": "a", "projectId": "b" }),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid");
    assert_eq!(snapshot(&w.svc, &w.admin.workspace().id).await, before);

    // Missing, malformed and wrong-kind credentials: 401 with a Bearer challenge.
    let agent_key = crate::support::server::approved_agent(
        &w.svc,
        &w.admin,
        "key-bot",
        &[Permission::ReadTasks],
    )
    .await;
    // An agent access token (a JWT, signed by the same keys) is not a member token either.
    let tokens = parallax_mcp::auth::Tokens::load(
        w.svc.store().clone(),
        &parallax_mcp::config::AuthConfig::default(),
    )
    .await
    .unwrap();
    let agent = parallax_mcp::auth::agent(w.svc.store(), &agent_key)
        .await
        .unwrap()
        .unwrap();
    let agent_jwt = tokens
        .mint_agent(
            &agent,
            PermissionSet::new([Permission::ReadTasks]),
            &format!("{}/mcp", api.base),
        )
        .await
        .unwrap()
        .access_token;
    let none = api
        .send(api.http.get(api.url(&format!("{ws}/projects"))))
        .await;
    for (what, r) in [
        ("none", none),
        (
            "garbage",
            api.get(&format!("{ws}/projects"), "not-a-token").await,
        ),
        (
            "agent key",
            api.get(&format!("{ws}/projects"), &agent_key).await,
        ),
        (
            "agent token",
            api.get(&format!("{ws}/projects"), &agent_jwt).await,
        ),
        (
            "tampered",
            api.get(&format!("{ws}/projects"), &format!("{admin}x"))
                .await,
        ),
    ] {
        r.error(StatusCode::UNAUTHORIZED, "unauthenticated");
        let challenge = r
            .headers
            .get("www-authenticate")
            .unwrap_or_else(|| panic!("{what}: no challenge"));
        assert!(challenge.to_str().unwrap().starts_with("Bearer"), "{what}");
        assert!(!r.text.contains(&agent_key), "{what}: key never echoed");
    }
    // Unknown routes and methods answer in the same shape; the rest of the server is untouched.
    api.call("DELETE", &format!("{ws}/projects"), &admin, None)
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let other = api.send(api.http.get(api.url("/not-api"))).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert!(other.text.is_empty());
    api.get("/api/v1/nothing", &admin)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn cli_and_api_see_the_same_workspace() {
    let w = world().await;
    let api = Api::start(&w).await;
    let db = &w.db.url;
    let admin = token(db, "acme", "admin@acme.test").await;
    let as_admin = ["-w", "acme", "--as", "admin@acme.test", "--json"];
    // CLI → API.
    let out = cli(
        db,
        &[&["project", "create", "From CLI"][..], &as_admin[..]].concat(),
    )
    .await;
    let p: Value = serde_json::from_str(&out).unwrap();
    let listed = api
        .get("/api/v1/workspaces/acme/projects", &admin)
        .await
        .ok(StatusCode::OK);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == p["id"] && x["name"] == "From CLI")
    );
    // API → CLI.
    let pid = p["id"].as_str().unwrap();
    let t = api
        .post(
            "/api/v1/workspaces/acme/tasks",
            &admin,
            json!({ "projectId": pid, "title": "From API" }),
        )
        .await
        .ok(StatusCode::CREATED);
    let out = cli(
        db,
        &[&["task", "list", "--project", pid][..], &as_admin[..]].concat(),
    )
    .await;
    let tasks: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 1);
    assert_eq!(tasks[0]["id"], t["id"]);
    assert_eq!(tasks[0]["title"], "From API");
    // A request filed through the API is approved through the CLI and seen approved by the API.
    api.post(
        "/api/v1/workspaces/acme/agents",
        &admin,
        json!({ "agentId": "x-bot", "name": "X", "permissions": ["read:tasks"] }),
    )
    .await
    .ok(StatusCode::CREATED);
    cli(
        db,
        &[
            &["agent", "approve", "x-bot", "--grant", "read:tasks"][..],
            &as_admin[..],
        ]
        .concat(),
    )
    .await;
    let shown = api
        .get("/api/v1/workspaces/acme/agents/x-bot", &admin)
        .await
        .ok(StatusCode::OK);
    assert_eq!(shown["agent"]["status"], "approved");
}

// ---- the OpenAPI document ----

/// `schemas/openapi.json` matches the code; `PARALLAX_UPDATE_SCHEMAS=1` rewrites it.
#[test]
fn committed_openapi_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/openapi.json");
    let text =
        serde_json::to_string_pretty(&parallax_mcp::api::openapi::document()).unwrap() + "\n";
    if std::env::var("PARALLAX_UPDATE_SCHEMAS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
    }
    // Every reference resolves inside the document.
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r.trim_start_matches('#');
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "schemas/openapi.json drifted (run with PARALLAX_UPDATE_SCHEMAS=1 and commit)"
    );
}

/// Every JSON property the API documents is camelCase, like MCP's: one casing for everything the
/// server emits.
#[test]
fn every_documented_property_is_camel_case() {
    fn walk(v: &Value, path: &str, bad: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    for name in props.keys() {
                        if name.contains('_') || name.contains('-') {
                            bad.push(format!("{path}.{name}"));
                        }
                    }
                }
                for (k, child) in map {
                    walk(child, &format!("{path}/{k}"), bad);
                }
            }
            Value::Array(items) => items.iter().for_each(|c| walk(c, path, bad)),
            _ => {}
        }
    }
    let mut bad = Vec::new();
    walk(&parallax_mcp::api::openapi::document(), "", &mut bad);
    assert!(bad.is_empty(), "not camelCase: {bad:?}");
}

/// The document is served at `/api/v1/openapi.json` without credentials, and every non-MCP
/// refusal (API, `/mcp`'s 401, Host checks, health) has the API's one error shape.
#[tokio::test]
async fn the_openapi_document_is_served_and_refusals_share_one_shape() {
    let w = world().await;
    let api = Api::start(&w).await;
    let doc = api
        .send(api.http.get(api.url("/api/v1/openapi.json")))
        .await;
    assert_eq!(
        doc.ok(StatusCode::OK),
        parallax_mcp::api::openapi::document()
    );

    let msg = api
        .get("/api/v1/workspaces/acme/agents", "nonsense")
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(!msg.contains("nonsense"), "{msg}");
    api.get("/api/v1/no-such-route", "x")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    let mcp = api
        .send(
            api.http
                .post(api.url("/mcp"))
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
    mcp.error(StatusCode::UNAUTHORIZED, "unauthorized");
    let host = api
        .send(
            api.http
                .get(api.url("/api/v1/openapi.json"))
                .header("host", "evil.example"),
        )
        .await;
    host.error(StatusCode::FORBIDDEN, "host_not_allowed");
}

/// Every route in the table is served: without credentials it is refused (401), never 404/405.
#[tokio::test]
async fn every_documented_route_is_routed() {
    let w = world().await;
    let api = Api::start(&w).await;
    let doc = parallax_mcp::api::openapi::document();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, _) in ops.as_object().unwrap() {
            let concrete = path
                .replace("{workspace}", "acme")
                .replace("{email}", "admin@acme.test")
                .replace(['{', '}'], "");
            let r = api
                .send(
                    api.http
                        .request(method.to_uppercase().parse().unwrap(), api.url(&concrete))
                        .header("content-type", "application/json")
                        .body("{}"),
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {}",
                r.text
            );
            checked += 1;
        }
    }
    assert_eq!(checked, parallax_mcp::api::routes::table().len());
    assert!(checked >= 30);
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// The role each route documents is the one the services enforce: one role below is refused
/// (403), the role itself is not.
#[tokio::test]
async fn documented_roles_match_the_services() {
    use parallax_mcp::api::routes::{Access, table};
    let w = world().await;
    for (email, role) in [
        ("rita@acme.test", Role::Read),
        ("wes@acme.test", Role::Write),
    ] {
        w.svc.add_member(&w.admin, email, "", role).await.unwrap();
    }
    // removeMember really removes: it gets a member of its own, so the tokens above stay valid.
    w.svc
        .add_member(&w.admin, "gone@acme.test", "", Role::Read)
        .await
        .unwrap();
    let api = Api::start(&w).await;
    let db = &w.db.url;
    let tokens = [
        (Role::Read, token(db, "acme", "rita@acme.test").await),
        (Role::Write, token(db, "acme", "wes@acme.test").await),
        (Role::Admin, token(db, "acme", "admin@acme.test").await),
    ];
    let token_for = |r: Role| tokens.iter().find(|(x, _)| *x == r).unwrap().1.clone();
    let (pid, tid) = (w.project.id.clone(), w.task.id.clone());
    let sample = |op: &str| -> Option<Value> {
        Some(match op {
            "updateSettings" => json!({ "maxAgents": 20 }),
            "rotateWebhookSecret" | "approveAgent" | "rotateAgentKey" | "approveDelegation" => {
                json!({})
            }
            "addMember" => json!({ "email": "new@acme.test", "role": "read" }),
            "setMemberRole" => json!({ "role": "read" }),
            "createProject" => json!({ "name": "P" }),
            "createTask" => json!({ "projectId": pid, "title": "T" }),
            "updateTask" => json!({ "title": "T2" }),
            "createPage" => json!({ "title": "Pg" }),
            "denyAgent" | "revokeAgent" | "denyDelegation" => json!({ "reason": "r" }),
            "setAgentPermissions" => json!({ "permissions": [] }),
            "extendAgentAccess" => json!({ "forever": true }),
            "assignAgent" => json!({ "agentId": "nobody", "taskId": tid }),
            _ => return None,
        })
    };
    let mut checked = 0;
    for route in table() {
        let Access::Member(role) = route.access else {
            continue;
        };
        let below = match role {
            Role::Read => continue,
            Role::Write => Role::Read,
            Role::Admin => Role::Write,
        };
        let body = sample(route.operation_id);
        assert_eq!(
            body.is_some(),
            route.request.is_some(),
            "{}: sample body needed",
            route.operation_id
        );
        let path = route
            .path
            .replace("{workspace}", "acme")
            .replace(
                "{email}",
                if route.operation_id == "removeMember" {
                    "gone@acme.test"
                } else {
                    "rita@acme.test"
                },
            )
            .replace("{task_id}", &w.task.id)
            .replace(['{', '}'], "");
        let refused = api
            .call(route.method, &path, &token_for(below), body.clone())
            .await;
        refused.error(StatusCode::FORBIDDEN, "forbidden");
        let allowed = api.call(route.method, &path, &token_for(role), body).await;
        assert_ne!(
            allowed.status,
            StatusCode::FORBIDDEN,
            "{} with role {role}: {}",
            route.operation_id,
            allowed.text
        );
        checked += 1;
    }
    assert!(checked >= 15, "checked {checked}");
}

#[tokio::test]
async fn failed_member_logins_are_rate_limited_and_good_tokens_still_pass() {
    let w = world().await;
    let api = Api::start(&w).await;
    let admin = token(&w.db.url, "acme", "admin@acme.test").await;
    let path = "/api/v1/workspaces/acme/projects";
    // Good tokens are never counted.
    for _ in 0..15 {
        api.get(path, &admin).await.ok(StatusCode::OK);
    }
    let mut limited = None;
    for i in 0..40 {
        let r = api.get(path, &format!("bad-token-{i}")).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        r.error(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    let r = limited.expect("refused tokens are rate-limited");
    r.error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(secs >= 1);
    // While the address is blocked, another bad token is refused without a check, but a good
    // token (a neighbour behind the same NAT) still passes.
    api.get(path, "bad-token-after")
        .await
        .error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    api.get(path, &admin).await.ok(StatusCode::OK);
}

#[tokio::test]
async fn delegations_are_listed_and_resolved_through_the_api() {
    let w = world().await;
    let from_key = crate::support::server::approved_agent(
        &w.svc,
        &w.admin,
        "from-bot",
        &[Permission::ReadTasks, Permission::DelegateAgents],
    )
    .await;
    crate::support::server::approved_agent(&w.svc, &w.admin, "to-bot", &[Permission::ReadTasks])
        .await;
    w.svc
        .assign(
            &w.admin,
            "from-bot",
            parallax_mcp::service::AssignTarget::Task(w.task.id.clone()),
            AssignmentRole::Member,
        )
        .await
        .unwrap();
    let from = parallax_mcp::auth::agent(w.svc.store(), &from_key)
        .await
        .unwrap()
        .unwrap();
    let d = w
        .svc
        .request_delegation(&from, &w.task.id, "to-bot", "I am busy")
        .await
        .unwrap();
    let api = Api::start(&w).await;
    let admin = token(&w.db.url, "acme", "admin@acme.test").await;
    let ws = "/api/v1/workspaces/acme";
    let pending = api
        .get(&format!("{ws}/delegations?status=pending"), &admin)
        .await
        .ok(StatusCode::OK);
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["id"], d.id.as_str());
    // Another workspace's admin cannot see or resolve it.
    let rival = token(&w.db.url, "rival", "admin@rival.test").await;
    api.post(
        &format!("/api/v1/workspaces/rival/delegations/{}/approve", d.id),
        &rival,
        json!({}),
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    let approved = api
        .post(
            &format!("{ws}/delegations/{}/approve", d.id),
            &admin,
            json!({ "note": "fine" }),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(approved["status"], "approved");
    api.post(
        &format!("{ws}/delegations/{}/deny", d.id),
        &admin,
        json!({ "reason": "too late" }),
    )
    .await
    .error(StatusCode::CONFLICT, "conflict");
    let active = api
        .get(&format!("{ws}/assignments?agent=to-bot"), &admin)
        .await
        .ok(StatusCode::OK);
    assert_eq!(active[0]["taskId"], w.task.id.as_str());
}

// ---- signed checkpoints ----

#[tokio::test]
async fn checkpoints_are_signed_listed_and_verified_over_the_api() {
    let w = world().await;
    let api = Api::start(&w).await;
    let admin = token(&w.db.url, "acme", "admin@acme.test").await;
    let base = "/api/v1/workspaces/acme/activity/checkpoints";
    let cp = api
        .call("POST", base, &admin, None)
        .await
        .ok(StatusCode::CREATED);
    assert_eq!(cp["format"], "parallax-mcp-checkpoint/v1");
    assert_eq!(cp["algorithm"], "ed25519");
    let list = api.call("GET", base, &admin, None).await.ok(StatusCode::OK);
    assert_eq!(list[0]["id"], cp["id"]);
    let checked = api
        .call("POST", &format!("{base}/verify"), &admin, Some(cp.clone()))
        .await
        .ok(StatusCode::OK);
    assert_eq!(checked["extends"], true, "{checked}");
    // A checkpoint whose hash was changed no longer carries a valid signature.
    let mut forged = cp.clone();
    forged["hash"] = json!("0".repeat(64));
    let checked = api
        .call("POST", &format!("{base}/verify"), &admin, Some(forged))
        .await
        .ok(StatusCode::OK);
    assert_eq!(checked["extends"], false, "{checked}");
    assert!(
        checked["problem"]
            .as_str()
            .unwrap()
            .contains("signature does not verify")
    );
    // Another workspace's member cannot read or check acme's.
    let rival = token(&w.db.url, "rival", "admin@rival.test").await;
    let r = api.call("GET", base, &rival, None).await;
    assert!(r.status.is_client_error(), "{}", r.text);
}
