//! The outbox delivered, through the real binary: signed webhooks to a local receiver (failures,
//! timeouts, a SIGKILL mid-retry, 410, Retry-After, redelivery) and the members' SSE stream.

use crate::support::server::{BIN, HttpServer, World, approved_agent, spawn_http_env, world};
use crate::support::{TestDb, set};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parallax_mcp::auth::Tokens;
use parallax_mcp::config::AuthConfig;
use parallax_mcp::domain::*;
use parallax_mcp::service::{AccessRequest, AssignTarget, Service};
use sea_orm::{ConnectionTrait, Database, Statement};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SIGNING_KEY: &str = "events-test-signing-key-0123456789abcdef";

// ---- the server, with short delays ----

struct Server {
    child: tokio::process::Child,
    url: String,
}

async fn spawn(db_url: &str) -> Server {
    spawn_with(db_url, &[]).await
}

/// The server with short delays; `url` is the origin (no `/mcp`).
async fn spawn_with(db_url: &str, env: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("PARALLAX_SIGNING_KEY", SIGNING_KEY),
        ("PARALLAX_WEBHOOK_BASE_DELAY_MS", "50"),
        ("PARALLAX_WEBHOOK_MAX_DELAY_MS", "200"),
        ("PARALLAX_WEBHOOK_TIMEOUT_MS", "300"),
        ("PARALLAX_WEBHOOK_POLL_MS", "50"),
        ("PARALLAX_EVENTS_POLL_MS", "50"),
        ("PARALLAX_EVENTS_KEEPALIVE_MS", "200"),
        ("PARALLAX_EVENTS_ACCESS_CHECK_MS", "100"),
    ];
    all.extend_from_slice(env);
    let HttpServer { child, url, .. } = spawn_http_env(db_url, &all).await;
    Server {
        child,
        url: url.trim_end_matches("/mcp").to_owned(),
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

// ---- the control plane: a receiver that verifies signatures ----

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Ok,
    Fail,
    Hang,
    Gone,
    /// Answer 503 with `Retry-After: n` once, then behave as `Ok`.
    RetryAfter(u64),
}

#[derive(Default)]
struct Seen {
    mode: Option<Mode>,
    /// Every request that arrived: webhook-id and when.
    attempts: Vec<(String, Instant)>,
    /// Webhook-ids in the order they were first processed (the receiver dedupes).
    processed: Vec<String>,
    processed_set: HashSet<String>,
    /// Bodies by webhook-id, as processed.
    bodies: HashMap<String, serde_json::Value>,
    bad_signatures: usize,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    secret: WebhookSecret,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            url: format!("http://{}/hooks", listener.local_addr().unwrap()),
            secret: WebhookSecret::generate(),
            seen: Arc::default(),
        };
        r.set(Mode::Ok);
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    fn set(&self, mode: Mode) {
        self.seen.lock().unwrap().mode = Some(mode);
    }

    fn processed(&self) -> Vec<String> {
        self.seen.lock().unwrap().processed.clone()
    }

    fn attempts(&self) -> Vec<(String, Instant)> {
        self.seen.lock().unwrap().attempts.clone()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    let verified = verify_webhook(
        std::slice::from_ref(&r.secret),
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
        &body,
        now,
    );
    let id = h("webhook-id").unwrap_or_default().to_owned();
    let mode = {
        let mut s = r.seen.lock().unwrap();
        if verified.is_err() {
            s.bad_signatures += 1;
            return StatusCode::BAD_REQUEST.into_response();
        }
        s.attempts.push((id.clone(), Instant::now()));
        let mode = s.mode.unwrap();
        if let Mode::RetryAfter(_) = mode {
            s.mode = Some(Mode::Ok);
        }
        mode
    };
    match mode {
        Mode::Ok => {
            let mut s = r.seen.lock().unwrap();
            if s.processed_set.insert(id.clone()) {
                s.processed.push(id.clone());
                s.bodies
                    .insert(id, serde_json::from_slice(&body).unwrap_or_default());
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Mode::Fail => (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        }
        Mode::Gone => StatusCode::GONE.into_response(),
        Mode::RetryAfter(n) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", n.to_string())],
            "busy",
        )
            .into_response(),
    }
}

/// Points the workspace at the receiver and gives it the receiver's secret.
async fn connect(w: &World, r: &Receiver) {
    set(&w.svc, &w.admin, &[("control_plane_url", r.url.as_str())]).await;
    let tx = w.svc.store().write().await.unwrap();
    let now = parallax_mcp::service::now();
    tx.rotate_webhook_secret(&w.admin.workspace().id, &r.secret, now, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn deliveries(svc: &Service, w: &World) -> Vec<WebhookDelivery> {
    svc.list_deliveries(&w.admin, None).await.unwrap()
}

/// Waits until every delivery of the workspace is in `status`.
async fn until_every_delivery_is(w: &World, status: DeliveryStatus, what: &str, timeout: Duration) {
    eventually(what, timeout, || async {
        deliveries(&w.svc, w)
            .await
            .iter()
            .all(|d| d.status == status)
    })
    .await;
}

async fn request(svc: &Service, w: &World, id: &str) {
    svc.request_access(
        &w.admin,
        AccessRequest {
            agent_id: id.into(),
            name: format!("Agent {id}"),
            capabilities: vec!["docs".into()],
            permissions: vec!["read:tasks".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

/// Every delivery went through; the receiver processed each event exactly once, each agent's in
/// seq order, and every request it got carried a valid signature.
async fn assert_all_delivered_in_order(w: &World, r: &Receiver) {
    let all = deliveries(&w.svc, w).await;
    let events = crate::support::all_events(&w.svc, &w.admin.workspace().id).await;
    assert_eq!(all.len(), events.len(), "one delivery per event");
    assert!(
        all.iter().all(|d| d.status == DeliveryStatus::Delivered),
        "{all:#?}"
    );
    let processed = r.processed();
    let mut ids: Vec<String> = all.iter().map(|d| d.webhook_id.clone()).collect();
    ids.sort();
    let mut got = processed.clone();
    got.sort();
    assert_eq!(got, ids, "each webhook-id processed exactly once");
    let by_id: HashMap<&str, &WebhookDelivery> =
        all.iter().map(|d| (d.webhook_id.as_str(), d)).collect();
    let mut last_seq: HashMap<Option<String>, i64> = HashMap::new();
    for id in &processed {
        let d = by_id[id.as_str()];
        let prev = last_seq.insert(d.agent_id.clone(), d.seq).unwrap_or(0);
        assert!(
            prev < d.seq,
            "agent {:?}: {} after {prev}",
            d.agent_id,
            d.seq
        );
        assert_eq!(d.webhook_id, format!("msg_{}", d.event_id));
    }
    assert_eq!(r.seen.lock().unwrap().bad_signatures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_arrive_signed_in_order_through_failures_timeouts_and_a_kill() {
    let w = world().await;
    let r = Receiver::start().await;
    connect(&w, &r).await;
    let mut server = spawn(&w.db.url).await;

    // Approval → a signed agent.access_approved the receiver verifies.
    approved_agent(&w.svc, &w.admin, "bot-a", &[Permission::ReadTasks]).await;
    eventually("the approval webhook", Duration::from_secs(10), || async {
        r.processed().len() == 2
    })
    .await;
    let approved = {
        let s = r.seen.lock().unwrap();
        s.bodies[&s.processed[1]].clone()
    };
    assert_eq!(approved["type"], "agent.access_approved");
    assert_eq!(approved["data"]["agentId"], "bot-a");
    assert!(approved["timestamp"].is_string());

    // The control plane fails: 500s, then timeouts. Events keep coming for two agents.
    r.set(Mode::Fail);
    request(&w.svc, &w, "bot-b").await;
    w.assign_to_task("bot-a").await;
    w.svc
        .assign(
            &w.admin,
            "bot-a",
            AssignTarget::Project(w.project.id.clone()),
            AssignmentRole::Member,
        )
        .await
        .unwrap();
    eventually("retries after 500s", Duration::from_secs(10), || async {
        deliveries(&w.svc, &w)
            .await
            .iter()
            .any(|d| d.attempts >= 3 && d.last_status == Some(500))
    })
    .await;
    r.set(Mode::Hang);
    eventually("a timed-out attempt", Duration::from_secs(10), || async {
        deliveries(&w.svc, &w).await.iter().any(|d| {
            d.last_error
                .as_deref()
                .is_some_and(|e| e.contains("no answer within"))
        })
    })
    .await;
    // Later events for one agent wait for the earlier one: nothing after it was attempted.
    let pending = deliveries(&w.svc, &w).await;
    let a_pending: Vec<_> = pending
        .iter()
        .filter(|d| d.agent_id.as_deref() == Some("bot-a") && d.status != DeliveryStatus::Delivered)
        .collect();
    assert!(a_pending.len() >= 2, "{a_pending:#?}");
    assert!(
        a_pending[1..].iter().all(|d| d.attempts == 0),
        "{a_pending:#?}"
    );

    // SIGKILL mid-retry; events keep being written while the server is down.
    server.child.kill().await.unwrap();
    approved_agent(&w.svc, &w.admin, "bot-c", &[Permission::ReadTasks]).await;
    r.set(Mode::Ok);
    let _server = spawn(&w.db.url).await;
    until_every_delivery_is(
        &w,
        DeliveryStatus::Delivered,
        "every delivery after recovery",
        Duration::from_secs(20),
    )
    .await;
    assert_all_delivered_in_order(&w, &r).await;
    // Retries really happened, and each reused its webhook-id.
    let attempts = r.attempts();
    assert!(attempts.len() > r.processed().len(), "{}", attempts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_410_disables_and_redeliver_resends() {
    let w = world().await;
    let r = Receiver::start().await;
    connect(&w, &r).await;
    let _server = spawn(&w.db.url).await;

    // 503 with Retry-After: 1 → the next attempt waits about a second (backoff alone is ≤ 200 ms).
    r.set(Mode::RetryAfter(1));
    request(&w.svc, &w, "bot-r").await;
    eventually("the retried delivery", Duration::from_secs(10), || async {
        r.processed().len() == 1
    })
    .await;
    let attempts = r.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].0, attempts[1].0, "same webhook-id on retry");
    let gap = attempts[1].1 - attempts[0].1;
    assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");

    // 410 → the endpoint is disabled: this and later deliveries are parked, nothing is sent.
    r.set(Mode::Gone);
    approved_agent(&w.svc, &w.admin, "bot-g", &[Permission::ReadTasks]).await;
    eventually("the endpoint disabled", Duration::from_secs(10), || async {
        deliveries(&w.svc, &w)
            .await
            .iter()
            .any(|d| d.status == DeliveryStatus::Disabled && d.last_status == Some(410))
    })
    .await;
    let sent_before = r.attempts().len();
    w.assign_to_task("bot-g").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        r.attempts().len(),
        sent_before,
        "nothing sent while disabled"
    );
    let parked = w
        .svc
        .list_deliveries(&w.admin, Some(DeliveryStatus::Disabled))
        .await
        .unwrap();
    assert_eq!(parked.len(), 3, "{parked:#?}");
    // Redelivery is refused while the endpoint is disabled.
    let refused = w.svc.redeliver(&w.admin, &parked[0].id).await.unwrap_err();
    assert_eq!(refused.code(), "conflict");

    // Setting the URL again re-enables it; the parked deliveries go out, in order.
    r.set(Mode::Ok);
    set(&w.svc, &w.admin, &[("control_plane_url", r.url.as_str())]).await;
    // The receiver sees a delivery before the worker records its answer: wait for both.
    eventually(
        "parked deliveries sent",
        Duration::from_secs(10),
        || async {
            r.processed().len() == 4
                && deliveries(&w.svc, &w)
                    .await
                    .iter()
                    .all(|d| d.status == DeliveryStatus::Delivered)
        },
    )
    .await;
    assert_all_delivered_in_order(&w, &r).await;

    // Redeliver through the CLI: the same webhook-id arrives again.
    let first = deliveries(&w.svc, &w).await.remove(0);
    let before = r.attempts().len();
    let out = std::process::Command::new(BIN)
        .args([
            "--database-url",
            &w.db.url,
            "--workspace",
            "acme",
            "--as",
            "admin@acme.test",
            "delivery",
            "redeliver",
            &first.id,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&first.webhook_id));
    eventually("the redelivery", Duration::from_secs(10), || async {
        r.attempts().len() == before + 1
    })
    .await;
    assert_eq!(r.attempts().last().unwrap().0, first.webhook_id);
    let list = std::process::Command::new(BIN)
        .args([
            "--database-url",
            &w.db.url,
            "--workspace",
            "acme",
            "--as",
            "admin@acme.test",
            "--json",
            "delivery",
            "list",
            "--status",
            "delivered",
        ])
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|d| d["status"] == "delivered"));

    // The same through the API: admins list and redeliver, other roles are refused.
    w.svc
        .add_member(&w.admin, "writer@acme.test", "Writer", Role::Write)
        .await
        .unwrap();
    let admin = member_token(&w, "admin@acme.test").await;
    let writer = member_token(&w, "writer@acme.test").await;
    let http = reqwest::Client::new();
    let base = format!("{}/api/v1/workspaces/acme/deliveries", _server.url);
    let resp = http
        .get(format!("{base}?status=delivered"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["deliveries"].as_array().unwrap().len(), 4);
    assert_eq!(
        body["deliveries"][0]["webhookId"],
        first.webhook_id.as_str()
    );
    let resp = http.get(&base).bearer_auth(&writer).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    let resp = http
        .get(format!("{base}?status=lost"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http
        .post(format!("{base}/nope/redeliver"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let before = r.attempts().len();
    let resp = http
        .post(format!("{base}/{}/redeliver", first.id))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    eventually("the API redelivery", Duration::from_secs(10), || async {
        r.attempts().len() == before + 1
    })
    .await;
    assert_eq!(
        r.processed().len(),
        4,
        "a redelivery is not processed twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_failing_past_the_give_up_age_is_marked_failed() {
    let w = world().await;
    let r = Receiver::start().await;
    connect(&w, &r).await;
    r.set(Mode::Fail);
    let _server = spawn_with(&w.db.url, &[("PARALLAX_WEBHOOK_GIVE_UP_SECS", "1")]).await;
    request(&w.svc, &w, "bot-f").await;
    until_every_delivery_is(
        &w,
        DeliveryStatus::Failed,
        "the delivery given up",
        Duration::from_secs(10),
    )
    .await;
    let d = deliveries(&w.svc, &w).await.remove(0);
    assert!(d.attempts >= 2, "{d:?}");
    assert_eq!(d.last_status, Some(500));
    // Failed is final: nothing more is sent.
    let sent = r.attempts().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.attempts().len(), sent);
}

/// The worker loads the system's TLS roots at its first delivery, not at start. Without any,
/// each attempt records why and nothing is sent; a server that has them delivers what waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_roots_attempts_say_why_and_wait_for_a_server_that_has_them() {
    let w = world().await;
    let r = Receiver::start().await;
    connect(&w, &r).await;
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("none.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("no-certs");
    let mut server = spawn_with(
        &w.db.url,
        &[
            ("SSL_CERT_FILE", empty.to_str().unwrap()),
            ("SSL_CERT_DIR", missing.to_str().unwrap()),
        ],
    )
    .await;
    request(&w.svc, &w, "bot-t").await;
    eventually(
        "an attempt without TLS roots",
        Duration::from_secs(10),
        || async {
            deliveries(&w.svc, &w).await.iter().any(|d| {
                d.attempts >= 1
                    && d.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("no TLS roots"))
            })
        },
    )
    .await;
    let d = deliveries(&w.svc, &w).await.remove(0);
    assert_eq!(d.status, DeliveryStatus::Pending, "{d:?}");
    assert_eq!(d.last_status, None, "{d:?}");
    assert!(r.attempts().is_empty(), "nothing may be sent without roots");
    server.child.kill().await.unwrap();

    let _server = spawn(&w.db.url).await;
    until_every_delivery_is(
        &w,
        DeliveryStatus::Delivered,
        "the delivery sent",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(r.processed().len(), 1);
}

// ---- SSE ----

struct SseFrame {
    id: i64,
    event: String,
    data: serde_json::Value,
}

struct SseClient {
    resp: reqwest::Response,
    buf: String,
    keepalives: usize,
}

impl SseClient {
    async fn open(url: &str, token: &str, last: Option<i64>) -> reqwest::Response {
        let mut req = reqwest::Client::new().get(url).bearer_auth(token);
        if let Some(l) = last {
            req = req.header("last-event-id", l.to_string());
        }
        req.send().await.unwrap()
    }

    async fn connect(url: &str, token: &str, last: Option<i64>) -> SseClient {
        let resp = Self::open(url, token, last).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        SseClient {
            resp,
            buf: String::new(),
            keepalives: 0,
        }
    }

    /// The next event, or None when the stream ended.
    async fn next(&mut self) -> Option<SseFrame> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.keepalives += 1;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let (Some(id), Some(event)) = (id, event) {
                    return Some(SseFrame {
                        id,
                        event,
                        data: serde_json::from_str(&data).unwrap(),
                    });
                }
                continue;
            }
            match tokio::time::timeout(Duration::from_secs(10), self.resp.chunk()).await {
                Ok(Ok(Some(c))) => self.buf.push_str(&String::from_utf8_lossy(&c)),
                Ok(Ok(None)) | Ok(Err(_)) => return None,
                Err(_) => panic!("no SSE data within 10 s"),
            }
        }
    }

    async fn take(&mut self, n: usize) -> Vec<SseFrame> {
        let mut out = Vec::new();
        while out.len() < n {
            out.push(self.next().await.expect("stream ended early"));
        }
        out
    }
}

async fn member_token(w: &World, email: &str) -> String {
    let config = AuthConfig {
        signing_key: Some(SIGNING_KEY.into()),
        ..AuthConfig::default()
    };
    let tokens = Tokens::load(w.svc.store().clone(), &config).await.unwrap();
    let caller = parallax_mcp::auth::member(w.svc.store(), "acme", email)
        .await
        .unwrap();
    tokens
        .mint_member(&caller, Duration::from_secs(600))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_without_gaps_filters_and_ends_when_access_is_lost() {
    let w = world().await;
    w.svc
        .add_member(&w.admin, "reader@acme.test", "Reader", Role::Read)
        .await
        .unwrap();
    let server = spawn(&w.db.url).await;
    let url = format!("{}/api/v1/workspaces/acme/events", server.url);
    let token = member_token(&w, "reader@acme.test").await;

    // Refusals: no token, a bad Last-Event-ID, an unknown type, another workspace.
    let anon = reqwest::get(&url).await.unwrap();
    assert_eq!(anon.status(), 401);
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&token)
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = reqwest::Client::new()
        .get(format!("{url}?types=agent.nope"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid");
    let other = reqwest::Client::new()
        .get(format!("{}/api/v1/workspaces/rival/events", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);

    // Read the live stream, then disconnect.
    let mut s = SseClient::connect(&url, &token, None).await;
    approved_agent(&w.svc, &w.admin, "bot-1", &[Permission::ReadTasks]).await;
    let first = s.take(2).await;
    assert_eq!(first[0].event, "agent.access_requested");
    assert_eq!(first[1].event, "agent.access_approved");
    assert_eq!(first[1].id, first[0].id + 1);
    assert_eq!(first[1].data["type"], "agent.access_approved");
    assert_eq!(first[1].data["agentId"], "bot-1");
    assert_eq!(first[1].data["seq"], first[1].id);
    assert_eq!(first[1].data["data"]["agentId"], "bot-1");
    drop(s);

    // Events while disconnected; resuming gives exactly the ones after the last id.
    approved_agent(&w.svc, &w.admin, "bot-2", &[Permission::ReadTasks]).await;
    w.assign_to_task("bot-1").await;
    let mut s = SseClient::connect(&url, &token, Some(first[1].id)).await;
    let resumed = s.take(3).await;
    let ids: Vec<i64> = resumed.iter().map(|f| f.id).collect();
    let start = first[1].id;
    assert_eq!(ids, vec![start + 1, start + 2, start + 3]);
    assert_eq!(
        resumed.iter().map(|f| f.event.as_str()).collect::<Vec<_>>(),
        [
            "agent.access_requested",
            "agent.access_approved",
            "agent.task_assigned"
        ]
    );
    // Then live again, with keep-alives in between.
    approved_agent(&w.svc, &w.admin, "bot-3", &[Permission::ReadTasks]).await;
    let live = s.take(2).await;
    assert_eq!(live[0].id, start + 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    request(&w.svc, &w, "bot-4").await;
    assert_eq!(s.take(1).await[0].id, start + 6);
    assert!(s.keepalives >= 1, "keep-alive comments expected");

    // Filters: from the start, only bot-1's approvals.
    let mut f = SseClient::connect(
        &format!("{url}?types=agent.access_approved,agent.task_assigned&agent=bot-1"),
        &token,
        Some(0),
    )
    .await;
    let filtered = f.take(2).await;
    assert_eq!(filtered[0].event, "agent.access_approved");
    assert_eq!(filtered[1].event, "agent.task_assigned");
    assert!(filtered.iter().all(|e| e.data["agentId"] == "bot-1"));

    // An admin removes the member with the real CLI: the open stream ends.
    let out = tokio::process::Command::new(BIN)
        .args(["--database-url", &w.db.url, "--workspace", "acme"])
        .args(["--as", "admin@acme.test", "--json"])
        .args(["member", "remove", "reader@acme.test"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "member remove failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let removed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(removed["email"], "reader@acme.test");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while s.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream should end when access is lost");
    let again = SseClient::open(&url, &token, None).await;
    assert_eq!(again.status(), 401);
}

// ---- MCP resource subscriptions ----

mod mcp_notify {
    use super::*;
    use rmcp::model::{
        ClientConfig, ProtocolVersion, ReadResourceRequestParams, ResourceContents,
        ResourceUpdatedNotificationParam, ServerNotification, SubscribeRequestParams,
        SubscriptionFilter,
    };
    use rmcp::service::{ClientLifecycleMode, ClientServiceExt, NotificationContext};
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use rmcp::{ClientHandler, RoleClient, ServiceExt};
    use tokio::sync::mpsc;

    const URI: &str = "parallax://me/assignments";

    /// A client that records every `notifications/resources/updated` it gets.
    #[derive(Clone)]
    struct Recorder {
        version: ProtocolVersion,
        updates: mpsc::UnboundedSender<String>,
    }

    impl ClientHandler for Recorder {
        async fn on_resource_updated(
            &self,
            params: ResourceUpdatedNotificationParam,
            _ctx: NotificationContext<RoleClient>,
        ) {
            let _ = self.updates.send(params.uri);
        }

        fn get_info(&self) -> ClientConfig {
            ClientConfig::default().with_protocol_version(self.version.clone())
        }
    }

    async fn connect(
        url: &str,
        key: &str,
        version: ProtocolVersion,
    ) -> (
        rmcp::service::RunningService<RoleClient, Recorder>,
        mpsc::UnboundedReceiver<String>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("{url}/mcp"))
                .auth_header(key.to_owned()),
        );
        let recorder = Recorder {
            version: version.clone(),
            updates: tx,
        };
        let client = if version == ProtocolVersion::V_2026_07_28 {
            // The 2026-07-28 era starts with server/discover, not initialize.
            recorder
                .serve_with_lifecycle(
                    transport,
                    ClientLifecycleMode::Discover {
                        preferred_versions: vec![version],
                    },
                )
                .await
        } else {
            recorder.serve(transport).await
        }
        .expect("connect over HTTP");
        (client, rx)
    }

    async fn assign(w: &World, agent: &str) -> String {
        w.svc
            .assign(
                &w.admin,
                agent,
                AssignTarget::Task(w.task.id.clone()),
                AssignmentRole::Member,
            )
            .await
            .unwrap()
            .0
            .id
    }

    /// The feed's first poll only takes where each workspace stands, so `Feed::start` returns
    /// after it (and servers start the feed before they take a request): an event committed the
    /// moment a subscriber could exist is carried, never taken as already there. (Before, a
    /// listener that subscribed and was assigned before that first poll ran heard nothing.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_feed_carries_an_event_committed_as_soon_as_it_has_started() {
        let w = world().await;
        approved_agent(&w.svc, &w.admin, "bot-f", &[Permission::ReadTasks]).await;
        let stop = tokio_util::sync::CancellationToken::new();
        // Polls an hour apart: only the first poll and the commit's wake-up can carry it.
        let feed = parallax_mcp::events::Feed::start(
            w.svc.store().clone(),
            Duration::from_secs(3600),
            stop.clone(),
        )
        .await;
        let mut events = feed.subscribe();
        assign(&w, "bot-f").await;
        let carried = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let e = events.recv().await.expect("the feed goes on");
                if e.event_type == EventType::TaskAssigned {
                    return e;
                }
            }
        })
        .await
        .expect("the assignment is carried");
        assert_eq!(carried.agent_id.as_deref(), Some("bot-f"));
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(deprecated)] // resources/subscribe is the 2025-11-25 way
    async fn a_subscribed_agent_is_notified_of_assignments_2025_11_25() {
        let w = world().await;
        let key = approved_agent(&w.svc, &w.admin, "bot-s", &[Permission::ReadTasks]).await;
        let weak = approved_agent(&w.svc, &w.admin, "bot-w", &[Permission::ReadPages]).await;
        let server = spawn(&w.db.url).await;
        let (client, mut updates) = connect(&server.url, &key, ProtocolVersion::V_2025_11_25).await;

        let caps = client.peer_info().unwrap().capabilities.resources.clone();
        assert_eq!(caps.and_then(|r| r.subscribe), Some(true));
        let listed = client.list_all_resources().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].uri, URI);

        client
            .subscribe(SubscribeRequestParams::new(URI))
            .await
            .unwrap();
        // An unrelated event (another agent) is not announced; our assignment is.
        assign(&w, "bot-w").await;
        let assignment = assign(&w, "bot-s").await;
        let uri = tokio::time::timeout(Duration::from_secs(5), updates.recv())
            .await
            .expect("notified of the assignment")
            .unwrap();
        assert_eq!(uri, URI);
        let read = client
            .read_resource(ReadResourceRequestParams::new(URI))
            .await
            .unwrap();
        let ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else {
            panic!("text contents expected")
        };
        let mine: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(mine["tasks"][0]["assignmentId"], assignment);
        // Unassigned → notified again; nothing else was queued in between.
        w.svc.unassign(&w.admin, &assignment).await.unwrap();
        let again = tokio::time::timeout(Duration::from_secs(5), updates.recv())
            .await
            .expect("notified of the unassignment")
            .unwrap();
        assert_eq!(again, URI);
        assert!(updates.try_recv().is_err());

        // Reads and subscriptions are audited; an agent without read:tasks is refused.
        let audited = crate::support::server::audit(&w.svc, &w.admin, "bot-s").await;
        assert!(audited.iter().any(|e| e.activity_type == "resource.access"
            && e.description.starts_with("resources/subscribe")
            && e.outcome.as_deref() == Some("allowed")));
        let (weak_client, _) = connect(&server.url, &weak, ProtocolVersion::V_2025_11_25).await;
        assert!(weak_client.list_all_resources().await.unwrap().is_empty());
        let refused = weak_client
            .subscribe(SubscribeRequestParams::new(URI))
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("permission denied"),
            "{refused}"
        );
        let unknown = client
            .read_resource(ReadResourceRequestParams::new(
                "parallax://them/assignments",
            ))
            .await
            .unwrap_err();
        assert!(
            unknown.to_string().contains("unknown resource"),
            "{unknown}"
        );
        // -32002 with data.uri (2025-11-25 recommends it, 2026-07-28 requires data.uri).
        let rmcp::ServiceError::McpError(e) = &unknown else {
            panic!("a JSON-RPC error: {unknown}")
        };
        assert_eq!(e.code.0, -32002, "{unknown}");
        assert_eq!(
            e.data.as_ref().unwrap()["uri"],
            "parallax://them/assignments"
        );

        // Revocation closes the agent's session: the next request fails.
        w.svc.revoke_agent(&w.admin, "bot-s", "done").await.unwrap();
        eventually("the session closed", Duration::from_secs(5), || async {
            client.list_all_resources().await.is_err()
        })
        .await;
    }

    /// An idle session sleeps (its GET stream stays open, waiting); a subscription wakes it and
    /// the notification arrives on that same stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(deprecated)] // resources/subscribe is the 2025-11-25 way
    async fn a_session_woken_by_its_subscription_is_notified() {
        let w = world().await;
        let key = approved_agent(&w.svc, &w.admin, "bot-z", &[Permission::ReadTasks]).await;
        let server = spawn(&w.db.url).await;
        let (client, mut updates) = connect(&server.url, &key, ProtocolVersion::V_2025_11_25).await;
        // Idle past the one second after which a session with nothing under way sleeps.
        tokio::time::sleep(Duration::from_millis(3000)).await;
        client
            .subscribe(SubscribeRequestParams::new(URI))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assign(&w, "bot-z").await;
        let uri = tokio::time::timeout(Duration::from_secs(5), updates.recv())
            .await
            .expect("notified of the assignment")
            .unwrap();
        assert_eq!(uri, URI);
        assert!(client.list_all_resources().await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(deprecated)]
    async fn a_stdio_agent_can_subscribe_too() {
        let w = world().await;
        let key = approved_agent(&w.svc, &w.admin, "bot-io", &[Permission::ReadTasks]).await;
        let (tx, mut updates) = mpsc::unbounded_channel();
        let transport = rmcp::transport::TokioChildProcess::builder(
            crate::support::server::stdio_command(&w.db.url, Some(&key)),
        )
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
        .0;
        let client = Recorder {
            version: ProtocolVersion::V_2025_11_25,
            updates: tx,
        }
        .serve(transport)
        .await
        .unwrap();
        client
            .subscribe(SubscribeRequestParams::new(URI))
            .await
            .unwrap();
        assign(&w, "bot-io").await;
        let uri = tokio::time::timeout(Duration::from_secs(5), updates.recv())
            .await
            .expect("notified over stdio")
            .unwrap();
        assert_eq!(uri, URI);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listening_agent_is_notified_of_assignments_2026_07_28() {
        let w = world().await;
        let key = approved_agent(&w.svc, &w.admin, "bot-l", &[Permission::ReadTasks]).await;
        let server = spawn(&w.db.url).await;
        let (client, _updates) = connect(&server.url, &key, ProtocolVersion::V_2026_07_28).await;
        assert_eq!(
            client.peer_info().map(|i| i.protocol_version.clone()),
            Some(ProtocolVersion::V_2026_07_28)
        );
        let mut sub = client
            .peer()
            .listen(
                SubscriptionFilter::builder()
                    .resource_subscription(URI)
                    .build(),
            )
            .await
            .expect("listen acknowledged");
        assert_eq!(
            sub.acknowledged().resource_subscriptions.as_deref(),
            Some(&[URI.to_owned()][..])
        );
        assign(&w, "bot-l").await;
        let n = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("notified")
            .unwrap()
            .expect("a notification");
        let ServerNotification::ResourceUpdatedNotification(n) = n else {
            panic!("resource update expected, got {n:?}")
        };
        assert_eq!(n.params.uri, URI);
        // Revocation ends the stream.
        w.svc.revoke_agent(&w.admin, "bot-l", "done").await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = sub.next().await {}
        })
        .await;
        assert!(ended.is_ok(), "the listen stream should end on revocation");
    }
}

// ---- the outbox's order ----

/// Concurrent writers: every event gets a distinct seq, with no gap, and a reader that follows
/// "everything after my cursor" while they commit never skips one (seq order is commit order).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_get_gapless_seqs_that_readers_never_skip() {
    let w = world().await;
    let ws = w.admin.workspace().id.clone();
    let writers = 12;
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = {
        let (store, ws, stop) = (w.svc.store().clone(), ws.clone(), stop.clone());
        tokio::spawn(async move {
            let mut cursor = 0;
            let mut seen = Vec::new();
            loop {
                let done = stop.is_cancelled();
                let tx = store.read().await.unwrap();
                let batch = tx.events_after(&ws, cursor, 1000).await.unwrap();
                drop(tx);
                for e in batch {
                    assert_eq!(e.seq, cursor + 1, "a reader skipped a seq");
                    cursor = e.seq;
                    seen.push(e.id);
                }
                if done {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..writers {
        let (svc, admin) = (w.svc.clone(), w.admin.clone());
        tasks.spawn(async move {
            let id = format!("bot-{i}");
            approved_agent(&svc, &admin, &id, &[Permission::ReadTasks]).await;
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    stop.cancel();
    let seen = reader.await.unwrap();
    let events = crate::support::all_events(&w.svc, &ws).await;
    let mut seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=(2 * writers) as i64).collect::<Vec<_>>());
    assert_eq!(seen.len(), events.len(), "the reader saw every event once");
}

/// Two replicas on one database: leases keep them from sending any delivery twice, and each
/// agent's deliveries still arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_deliveries_without_sending_twice() {
    let w = world().await;
    let r = Receiver::start().await;
    connect(&w, &r).await;
    let _a = spawn(&w.db.url).await;
    let _b = spawn(&w.db.url).await;
    for i in 0..6 {
        approved_agent(
            &w.svc,
            &w.admin,
            &format!("bot-{i}"),
            &[Permission::ReadTasks],
        )
        .await;
    }
    until_every_delivery_is(
        &w,
        DeliveryStatus::Delivered,
        "every delivery",
        Duration::from_secs(15),
    )
    .await;
    assert_all_delivered_in_order(&w, &r).await;
    assert_eq!(r.attempts().len(), 12, "no delivery was sent twice");
}

/// Shutdown ends open event streams, and the server exits.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_event_streams() {
    let w = world().await;
    let mut server = spawn(&w.db.url).await;
    let token = member_token(&w, "admin@acme.test").await;
    let url = format!("{}/api/v1/workspaces/acme/events", server.url);
    let mut s = SseClient::connect(&url, &token, Some(0)).await;
    approved_agent(&w.svc, &w.admin, "bot-1", &[Permission::ReadTasks]).await;
    s.take(2).await;
    let pid = server.child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while s.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream should end at shutdown");
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("the server exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Upgrading a database that already has events numbers them per workspace in id order, and the
/// counters continue from there.
#[tokio::test]
async fn the_outbox_migration_numbers_existing_events() {
    let db = TestDb::new().await;
    let store = parallax_mcp::store::Store::connect(&db.url).await.unwrap();
    let pending = store.pending_migrations().await.unwrap();
    let outbox = pending
        .iter()
        .position(|m| m.ends_with("_outbox"))
        .expect("the outbox migration");
    store.migrate_steps(outbox as u32).await.unwrap();

    let conn = Database::connect(&db.url).await.unwrap();
    let backend = conn.get_database_backend();
    let run = |sql: String| {
        let conn = &conn;
        async move {
            conn.execute_raw(Statement::from_string(backend, sql))
                .await
                .unwrap();
        }
    };
    let now = "2026-11-23 10:00:00+00:00";
    for ws in ["w1", "w2"] {
        run(format!(
            "INSERT INTO workspaces (id, slug, name, settings, lock_version, created_at, updated_at) \
             VALUES ('{ws}', '{ws}', '{ws}', '{{}}', 0, '{now}', '{now}')"
        ))
        .await;
    }
    // Ids are time-ordered: numbering follows them, per workspace.
    for (id, ws) in [("e3", "w1"), ("e1", "w1"), ("e2", "w2"), ("e4", "w1")] {
        run(format!(
            "INSERT INTO events (id, workspace_id, event_type, agent_id, payload, created_at) \
             VALUES ('{id}', '{ws}', 'agent.error', NULL, '{{}}', '{now}')"
        ))
        .await;
    }
    store.migrate().await.unwrap();
    let tx = store.read().await.unwrap();
    let w1: Vec<(String, i64)> = tx
        .events_after("w1", 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e.seq))
        .collect();
    assert_eq!(w1, [("e1".into(), 1), ("e3".into(), 2), ("e4".into(), 3)]);
    assert_eq!(tx.events_after("w2", 0, 10).await.unwrap()[0].seq, 1);
    assert_eq!(tx.last_event_seq("w1").await.unwrap(), 3);
    assert_eq!(tx.last_event_seq("w2").await.unwrap(), 1);
    drop(tx);
    store.close().await;
}
