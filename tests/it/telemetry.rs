//! Metrics through the real binary: the Prometheus endpoint on its own listener, scraped before
//! and after calls over MCP, moves by exactly the calls made, and no label carries a key, an id
//! or a caller's string.

use crate::support::server::*;
use parallax_mcp::domain::Permission;
use rmcp::model::ProtocolVersion;
use serde_json::json;
use std::collections::BTreeMap;

/// One scrape: each sample `name{labels}` (labels sorted) to its value.
struct Scrape {
    text: String,
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Scrape {
    /// The value of `name` with exactly `labels`, 0 when absent (a counter not yet touched).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        self.samples
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    fn has(&self, name: &str) -> bool {
        self.samples.keys().any(|(n, _)| n == name)
    }
}

fn parse_labels(raw: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim_start_matches(',').trim().to_owned();
        let after = &rest[eq + 1..];
        assert!(after.starts_with('"'), "label value not quoted in {raw}");
        let end = after[1..].find('"').expect("closing quote") + 1;
        out.push((key, after[1..end].to_owned()));
        rest = &after[end + 1..];
    }
    out.sort();
    out
}

async fn scrape(url: &str) -> Scrape {
    let res = reqwest::get(url).await.expect("scrape");
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = res.text().await.unwrap();
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))),
            None => (series, Vec::new()),
        };
        samples.insert((name.to_owned(), labels), value);
    }
    Scrape { text, samples }
}

/// Every label value the server may use: a closed set, so nothing a caller chooses gets in.
fn allowed_label(key: &str, value: &str) -> bool {
    let tools = [
        "agent_my_assignments",
        "agent_update_status",
        "agent_log_activity",
        "agent_list_workspace",
        "agent_delegate_task",
        "unknown",
    ];
    match key {
        "tool" => tools.contains(&value),
        "outcome" => ["allowed", "denied", "error", "committed", "decided_again"].contains(&value),
        "transport" => ["http", "stdio"].contains(&value),
        "reason" => [
            "malformed",
            "unknown_key",
            "key_revoked",
            "key_expired",
            "not_approved",
            "workspace_disabled",
            "access_expired",
            "invalid_token",
            "missing_credential",
            "invalid_client",
        ]
        .contains(&value),
        "limit" => [
            "agent",
            "failed_auth",
            "sessions",
            "server_sessions",
            "event_streams",
        ]
        .contains(&value),
        "result" => ["delivered", "retry", "failed", "disabled"].contains(&value),
        "stream" => ["mcp", "events"].contains(&value),
        "state" => ["idle", "in_use"].contains(&value),
        "version" => value == env!("CARGO_PKG_VERSION"),
        "le" | "quantile" => value == "+Inf" || value.parse::<f64>().is_ok(),
        _ => false,
    }
}

/// POSTs an `initialize` to `/mcp` with `auth` as the Authorization header (none if `None`).
async fn raw_initialize(url: &str, auth: Option<&str>) -> reqwest::StatusCode {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                            "clientInfo": { "name": "probe", "version": "1" } }
            })
            .to_string(),
        );
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    req.send().await.unwrap().status()
}

#[tokio::test]
async fn metrics_count_exactly_the_calls_made_and_leak_no_ids() {
    let w = world().await;
    // `agent_my_assignments` runs, `agent_list_workspace` (read:agents) is refused.
    let key = approved_agent(&w.svc, &w.admin, "metered-agent", &[Permission::ReadTasks]).await;
    let server = spawn_http_env(
        &w.db.url,
        &[
            ("PARALLAX_METRICS_LISTEN", "127.0.0.1:0"),
            ("PARALLAX_FAILED_AUTH_PER_MINUTE", "1"),
            ("PARALLAX_FAILED_AUTH_BURST", "1"),
        ],
    )
    .await;
    let metrics_url = server
        .metrics_url
        .clone()
        .expect("the server logs its metrics address");
    assert_ne!(
        metrics_url.rsplit_once(':').unwrap().1,
        server
            .url
            .rsplit_once(':')
            .unwrap()
            .1
            .trim_end_matches("/mcp"),
        "metrics have a listener of their own"
    );
    // The agents' port does not serve metrics.
    let agents_port = server.url.trim_end_matches("/mcp").to_owned() + "/metrics";
    assert_ne!(reqwest::get(&agents_port).await.unwrap().status(), 200);

    let before = scrape(&metrics_url).await;
    assert_eq!(
        before.get(
            "parallax_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    for name in [
        "parallax_db_pool_connections",
        "parallax_db_pool_max_connections",
        "parallax_outbox_backlog_events",
        "parallax_outbox_oldest_undelivered_age_seconds",
        "parallax_mcp_sessions_open",
    ] {
        assert!(before.has(name), "{name} missing:\n{}", before.text);
    }

    let client = http_client(&server.url, &key, ProtocolVersion::V_2025_11_25).await;
    for _ in 0..3 {
        ok(&client, "agent_my_assignments", json!({})).await;
    }
    // Another agent approved: the authorization generation moves, so the next read,
    // decided on the snapshot, is decided again on the store, and still answered.
    approved_agent(&w.svc, &w.admin, "bystander", &[Permission::ReadTasks]).await;
    ok(&client, "agent_my_assignments", json!({})).await;
    // A note naming nothing is decided on the snapshot too: it commits on the current snapshot,
    // and after another approval it is decided again, still answered, and written once.
    let note = |what: &str| json!({ "type": "note", "description": what });
    ok(&client, "agent_log_activity", note("first")).await;
    approved_agent(&w.svc, &w.admin, "bystander-2", &[Permission::ReadTasks]).await;
    ok(&client, "agent_log_activity", note("second")).await;
    for _ in 0..2 {
        refused(&client, "agent_list_workspace", json!({})).await;
    }
    // A name the catalogue does not know: a protocol error, counted under `unknown`.
    call(&client, "exfiltrate_secret_tool", json!({}))
        .await
        .expect_err("unknown tool");
    let during = scrape(&metrics_url).await;
    assert_eq!(
        during.get("parallax_mcp_sessions_open", &[("transport", "http")]),
        1.0,
        "one open session"
    );

    // Refused credentials: none at all, then malformed keys (each a different one, so the
    // address, not a credential, reaches the failure quota: burst 1, then 429).
    assert_eq!(raw_initialize(&server.url, None).await, 401);
    let mut statuses = Vec::new();
    for i in 0..3 {
        let bogus = format!("Bearer mcp_agent_not-a-real-key-{i}");
        statuses.push(raw_initialize(&server.url, Some(&bogus)).await.as_u16());
    }
    assert_eq!(
        statuses,
        [401, 401, 429],
        "burst, the failure past it, then 429"
    );

    let after = scrape(&metrics_url).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let calls = "parallax_tool_calls_total";
    assert_eq!(
        delta(
            calls,
            &[("tool", "agent_my_assignments"), ("outcome", "allowed")]
        ),
        4.0
    );
    // Keys are taken unconfirmed: the three reads and the first note on a current snapshot
    // commit as decided, the fourth read and the second note are decided again.
    let unconfirmed = "parallax_unconfirmed_decisions_total";
    assert_eq!(delta(unconfirmed, &[("outcome", "committed")]), 4.0);
    assert_eq!(delta(unconfirmed, &[("outcome", "decided_again")]), 2.0);
    assert_eq!(
        delta(
            calls,
            &[("tool", "agent_log_activity"), ("outcome", "allowed")]
        ),
        2.0
    );
    let ws = w.admin.workspace().id.clone();
    let notes: Vec<String> = crate::support::activity_of(&w.svc, &ws, "agent.note")
        .await
        .into_iter()
        .map(|e| e.description)
        .collect();
    assert_eq!(notes, ["second", "first"], "each note written once");
    assert_eq!(
        delta(
            calls,
            &[("tool", "agent_list_workspace"), ("outcome", "denied")]
        ),
        2.0
    );
    assert_eq!(
        delta(calls, &[("tool", "unknown"), ("outcome", "denied")]),
        1.0
    );
    assert_eq!(
        delta(
            calls,
            &[("tool", "agent_list_workspace"), ("outcome", "allowed")]
        ),
        0.0
    );
    let total: f64 = after
        .samples
        .iter()
        .filter(|((n, _), _)| n == calls)
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, 9.0, "no other call was counted");
    let latency = "parallax_tool_call_duration_seconds_count";
    assert_eq!(
        delta(
            latency,
            &[("tool", "agent_my_assignments"), ("transport", "http")]
        ),
        4.0
    );
    assert_eq!(
        delta(
            latency,
            &[("tool", "agent_list_workspace"), ("transport", "http")]
        ),
        2.0
    );
    assert_eq!(
        after.get(
            "parallax_tool_call_duration_seconds_bucket",
            &[
                ("tool", "agent_my_assignments"),
                ("transport", "http"),
                ("le", "+Inf")
            ]
        ),
        4.0
    );
    let refusals = "parallax_auth_refusals_total";
    assert_eq!(delta(refusals, &[("reason", "missing_credential")]), 1.0);
    assert_eq!(delta(refusals, &[("reason", "malformed")]), 3.0);
    assert_eq!(
        delta("parallax_rate_limited_total", &[("limit", "failed_auth")]),
        1.0
    );
    // 9 decisions were audited (6 allowed, 3 denied), in one or more batches.
    assert!(delta("parallax_audit_batch_entries_sum", &[]) >= 9.0);
    assert!(delta("parallax_audit_batch_entries_count", &[]) >= 1.0);
    assert!(delta("parallax_audit_commit_duration_seconds_count", &[]) >= 1.0);
    assert!(after.get("parallax_db_pool_max_connections", &[]) >= 1.0);

    // Every label value is from the closed set; no key, id or caller's string anywhere.
    for (name, labels) in after.samples.keys() {
        for (k, v) in labels {
            assert!(allowed_label(k, v), "{name} has label {k}={v:?}");
        }
    }
    for leak in [
        key.as_str(),
        &key[..20],
        "metered-agent",
        w.admin.workspace().id.as_str(),
        w.task.id.as_str(),
        "exfiltrate_secret_tool",
        "not-a-real-key",
    ] {
        assert!(
            !after.text.contains(leak),
            "{leak:?} appears in the metrics"
        );
    }
    let _ = client.cancel().await;
}

// ---- traces ----

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::mpsc;

/// A real OTLP/HTTP receiver: `POST /v1/traces` with protobuf bodies, decoded and handed on.
async fn otlp_receiver() -> (String, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let _ = tx.send(request);
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), rx)
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Any::StringValue(s) => s.clone(),
            Any::IntValue(i) => i.to_string(),
            Any::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stateless (2026-07-28) `tools/call`, with `traceparent` in a header or in `_meta`.
async fn traced_call(url: &str, key: &str, tool: &str, header: Option<&str>, meta: Option<&str>) {
    let mut meta_obj = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "traced", "version": "0" }
    });
    if let Some(tp) = meta {
        meta_obj["traceparent"] = json!(tp);
    }
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": tool, "arguments": {}, "_meta": meta_obj } });
    let mut req = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {key}"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .json(&body);
    if let Some(tp) = header {
        req = req.header("traceparent", tp);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("\"result\""), "{text}");
}

#[tokio::test]
async fn traces_export_the_request_tree_under_the_callers_traceparent() {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "traced-agent", &[Permission::ReadTasks]).await;
    let (endpoint, mut spans_rx) = otlp_receiver().await;
    let server = spawn_http_env(
        &w.db.url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "parallax-it"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let (trace_a, parent_a) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let (trace_b, parent_b) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    traced_call(
        &server.url,
        &key,
        "agent_my_assignments",
        Some(&format!("00-{trace_a}-{parent_a}-01")),
        None,
    )
    .await;
    traced_call(
        &server.url,
        &key,
        "agent_list_workspace",
        None,
        Some(&format!("00-{trace_b}-{parent_b}-01")),
    )
    .await;

    // Collect until both calls' gate and store spans arrived.
    let mut spans: Vec<Span> = Vec::new();
    let mut service_names = Vec::new();
    let collected = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            let request = spans_rx.recv().await.expect("receiver open");
            for rs in request.resource_spans {
                if let Some(resource) = &rs.resource {
                    for kv in &resource.attributes {
                        if kv.key == "service.name"
                            && let Some(Any::StringValue(s)) =
                                kv.value.as_ref().and_then(|v| v.value.clone())
                        {
                            service_names.push(s);
                        }
                    }
                }
                for ss in rs.scope_spans {
                    spans.extend(ss.spans);
                }
            }
            // The refused call never reaches the service.
            let done = [
                (
                    trace_a,
                    &[
                        "mcp.request",
                        "authenticate",
                        "gate",
                        "service",
                        "store.commit",
                    ][..],
                ),
                (trace_b, &["mcp.request", "authenticate", "gate"][..]),
            ]
            .iter()
            .all(|(t, names)| {
                let of: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == *t).collect();
                names.iter().all(|n| of.iter().any(|s| s.name == *n))
            });
            if done {
                return;
            }
        }
    })
    .await;
    let seen: Vec<(&str, String)> = spans
        .iter()
        .map(|s| (s.name.as_str(), hex(&s.trace_id)))
        .collect();
    assert!(collected.is_ok(), "spans received: {seen:#?}");
    // Store work outside a request (workers polling) makes no spans of its own.
    let roots: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    assert!(roots.iter().all(|n| !n.starts_with("store.")), "{roots:?}");
    assert!(service_names.iter().all(|s| s == "parallax-it") && !service_names.is_empty());

    let by_id = |id: &[u8]| spans.iter().find(|s| s.span_id == id);
    for (trace, parent, tool, outcome) in [
        (trace_a, parent_a, "agent_my_assignments", "allowed"),
        (trace_b, parent_b, "agent_list_workspace", "denied"),
    ] {
        let of: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace).collect();
        let one = |name: &str| {
            let found: Vec<&&Span> = of.iter().filter(|s| s.name == name).collect();
            assert_eq!(found.len(), 1, "one {name} span in trace {trace}");
            *found[0]
        };
        // transport → authenticate, transport → gate → service → store.
        let request = one("mcp.request");
        assert_eq!(
            hex(&request.parent_span_id),
            parent,
            "the caller's span is the parent"
        );
        assert_eq!(attr(request, "mcp.method").as_deref(), Some("tools/call"));
        assert_eq!(request.kind, 2, "a server span");
        let authenticate = one("authenticate");
        assert_eq!(authenticate.parent_span_id, request.span_id);
        assert_eq!(attr(authenticate, "outcome").as_deref(), Some("allowed"));
        let gate = one("gate");
        assert_eq!(gate.parent_span_id, request.span_id);
        assert_eq!(attr(gate, "tool").as_deref(), Some(tool));
        assert_eq!(attr(gate, "outcome").as_deref(), Some(outcome));
        assert_eq!(attr(gate, "agent").as_deref(), Some("traced-agent"));
        assert_eq!(
            attr(gate, "workspace").as_deref(),
            Some(w.admin.workspace().id.as_str())
        );
        assert_eq!(attr(gate, "mcp.method").as_deref(), Some("tools/call"));
        if outcome == "allowed" {
            let service = one("service");
            assert_eq!(service.parent_span_id, gate.span_id);
            // The read tool's store work hangs under the service span.
            let under_service = of.iter().filter(|s| s.name.starts_with("store.")).any(|s| {
                let mut at = Some(*s);
                while let Some(span) = at {
                    if span.parent_span_id == service.span_id {
                        return true;
                    }
                    at = by_id(&span.parent_span_id);
                }
                false
            });
            assert!(under_service, "a store span under the service span");
        } else {
            assert!(
                of.iter().all(|s| s.name != "service"),
                "refused before the service"
            );
        }
        // No credential in any attribute.
        for span in &of {
            for kv in &span.attributes {
                let value = format!("{:?}", kv.value);
                assert!(!value.contains(&key[..20]), "{} carries the key", span.name);
            }
        }
    }
}

/// Spans from the receiver until `done` holds for them (or 20 s pass).
async fn spans_until(
    rx: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
    done: impl Fn(&[Span]) -> bool,
) -> Vec<Span> {
    let mut spans = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while !done(&spans) {
            let request = rx.recv().await.expect("receiver open");
            for rs in request.resource_spans {
                for ss in rs.scope_spans {
                    spans.extend(ss.spans);
                }
            }
        }
    })
    .await;
    spans
}

#[tokio::test]
async fn webhooks_carry_the_traceparent_of_their_delivery_span_and_are_counted() {
    let w = world().await;
    // A control plane that records the `traceparent` of each webhook.
    let (hooks_tx, mut hooks_rx) = mpsc::unbounded_channel::<Option<String>>();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let tx = hooks_tx.clone();
            async move {
                let tp = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let _ = tx.send(tp);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    crate::support::set(&w.svc, &w.admin, &[("control_plane_url", hooks.as_str())]).await;
    w.svc.rotate_webhook_secret(&w.admin, 0).await.unwrap();

    let (endpoint, mut spans_rx) = otlp_receiver().await;
    let server = spawn_http_env(
        &w.db.url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("PARALLAX_WEBHOOK_POLL_MS", "50"),
            ("PARALLAX_METRICS_LISTEN", "127.0.0.1:0"),
            ("PARALLAX_SIGNING_KEY", SIGNING_KEY),
        ],
    )
    .await;
    let metrics = server.metrics_url.clone().unwrap();
    // A member's event stream counts as open while it is.
    let config = parallax_mcp::config::AuthConfig {
        signing_key: Some(SIGNING_KEY.into()),
        ..Default::default()
    };
    let tokens = parallax_mcp::auth::Tokens::load(w.svc.store().clone(), &config)
        .await
        .unwrap();
    let member = tokens
        .mint_member(&w.admin, std::time::Duration::from_secs(600))
        .await
        .unwrap();
    let origin = server.url.trim_end_matches("/mcp");
    let stream = reqwest::Client::new()
        .get(format!("{origin}/api/v1/workspaces/acme/events"))
        .header("authorization", format!("Bearer {member}"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let open = scrape(&metrics).await;
    assert_eq!(
        open.get("parallax_sse_streams_open", &[("stream", "events")]),
        1.0
    );
    drop(stream);
    let mut closed = 1.0;
    for _ in 0..100 {
        closed = scrape(&metrics)
            .await
            .get("parallax_sse_streams_open", &[("stream", "events")]);
        if closed == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        closed, 0.0,
        "the stream no longer counts once the client left"
    );
    // An event to deliver.
    approved_agent(&w.svc, &w.admin, "hooked", &[Permission::ReadTasks]).await;
    let traceparent = tokio::time::timeout(std::time::Duration::from_secs(20), hooks_rx.recv())
        .await
        .expect("a webhook in time")
        .unwrap()
        .expect("the webhook carries a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    let (trace, span_id) = (parts[1].to_owned(), parts[2].to_owned());
    let spans = spans_until(&mut spans_rx, |spans| {
        spans.iter().any(|s| hex(&s.span_id) == span_id)
    })
    .await;
    let deliver = spans
        .iter()
        .find(|s| hex(&s.span_id) == span_id)
        .expect("the delivery span was exported");
    assert_eq!(deliver.name, "webhook.deliver");
    assert_eq!(hex(&deliver.trace_id), trace);
    assert_eq!(deliver.kind, 3, "a client span");
    assert_eq!(attr(deliver, "result").as_deref(), Some("delivered"));

    // Counted, and the backlog drains (the agent's approval made a few events).
    let mut after = scrape(&metrics).await;
    for _ in 0..100 {
        if after.get("parallax_outbox_backlog_events", &[]) == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        after = scrape(&metrics).await;
    }
    assert_eq!(after.get("parallax_outbox_backlog_events", &[]), 0.0);
    assert_eq!(
        after.get("parallax_outbox_oldest_undelivered_age_seconds", &[]),
        0.0
    );
    let delivered = after.get(
        "parallax_webhook_deliveries_total",
        &[("result", "delivered")],
    );
    assert!(delivered >= 1.0, "{delivered}");
}

const SIGNING_KEY: &str = "telemetry-test-signing-key-0123456789abcdef";

/// The next line containing `needle`, within 20 s.
async fn next_line(
    lines: &mut mpsc::UnboundedReceiver<String>,
    needle: &str,
) -> Result<String, tokio::time::error::Elapsed> {
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            let line = lines.recv().await.expect("server still logging");
            if line.contains(needle) {
                return line;
            }
        }
    })
    .await
}

#[tokio::test]
async fn json_logs_carry_the_trace_and_span_ids_of_the_request() {
    use tokio::io::AsyncBufReadExt;
    let w = world().await;
    let (endpoint, _spans_rx) = otlp_receiver().await;
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "--database-url",
            &w.db.url,
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("PARALLAX_LOG_FORMAT", "json")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<String>();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            let _ = lines_tx.send(line);
        }
    });
    let listening = next_line(&mut lines, "listening on")
        .await
        .expect("listening");
    let v: serde_json::Value = serde_json::from_str(&listening).unwrap();
    let message = v["fields"]["message"].as_str().unwrap();
    let url = message.rsplit(' ').next().unwrap().to_owned();
    // A refused credential is logged inside the request's span.
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let status = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", "Bearer mcp_agent_garbage")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    let line = next_line(&mut lines, "refused an unknown credential")
        .await
        .expect("the refusal is logged");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let request = v["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|s| s["name"] == "mcp.request"))
        .unwrap_or_else(|| panic!("no request span in {line}"));
    assert_eq!(request["trace_id"], trace, "{line}");
    let span_id = request["span_id"].as_str().unwrap_or_default();
    assert_eq!(span_id.len(), 16, "{line}");
    assert_ne!(
        span_id, "00f067aa0ba902b7",
        "our own span, not the caller's"
    );
    let _ = child.kill().await;
}

/// A free local address for the metrics listener.
fn free_metrics_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

#[tokio::test]
async fn stdio_serves_metrics_and_continues_the_trace_in_meta() {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "stdio-agent", &[Permission::ReadTasks]).await;
    let (endpoint, mut spans_rx) = otlp_receiver().await;
    let metrics = free_metrics_addr();
    let mut cmd = stdio_command(&w.db.url, Some(&key));
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("PARALLAX_METRICS_LISTEN", &metrics);
    let transport = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
        .0;
    let client = rmcp::ServiceExt::serve(rmcp::model::ClientConfig::default(), transport)
        .await
        .expect("stdio handshake");
    // A call of `tool` with no arguments, its `_meta` carrying the caller's trace context.
    let traced = |tool: &str, trace: &str, parent: &str| {
        let meta: rmcp::model::RequestMetaObject = serde_json::from_value(json!({
            "traceparent": format!("00-{trace}-{parent}-01")
        }))
        .unwrap();
        let mut params = rmcp::model::CallToolRequestParams::new(tool.to_owned())
            .with_arguments(serde_json::Map::new());
        params.meta = Some(meta);
        client.call_tool(params)
    };
    let (trace, parent) = ("6bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7");
    let result = traced("agent_my_assignments", trace, parent).await.unwrap();
    assert_ne!(result.is_error, Some(true));

    // Metrics: this process's session and call, as stdio.
    let scraped = scrape(&format!("http://{metrics}/metrics")).await;
    assert_eq!(
        scraped.get("parallax_mcp_sessions_open", &[("transport", "stdio")]),
        1.0
    );
    assert_eq!(
        scraped.get(
            "parallax_tool_calls_total",
            &[("tool", "agent_my_assignments"), ("outcome", "allowed")]
        ),
        1.0
    );
    assert_eq!(
        scraped.get(
            "parallax_tool_call_duration_seconds_count",
            &[("tool", "agent_my_assignments"), ("transport", "stdio")]
        ),
        1.0
    );
    // `stdio` checked the key as it started, so the read was decided on the snapshot's key and
    // stood when its audit commit found the snapshot current.
    assert_eq!(
        scraped.get(
            "parallax_unconfirmed_decisions_total",
            &[("outcome", "committed")]
        ),
        1.0
    );

    // A call of another tool checks the key as it goes (refused here: the agent may only read
    // tasks), under a trace of its own.
    let (trace_b, parent_b) = ("7bf92f3577b34da6a3ce929d0e0e4736", "20f067aa0ba902b7");
    let refused = traced("agent_list_workspace", trace_b, parent_b)
        .await
        .unwrap();
    assert_eq!(refused.is_error, Some(true));

    // Traces: the `_meta` parent, then the gate with the tool inside it; for the other tool,
    // the key check inside the gate.
    let spans = spans_until(&mut spans_rx, |spans| {
        let has = |name: &str, trace: &str| {
            spans
                .iter()
                .any(|s| s.name == name && hex(&s.trace_id) == trace)
        };
        ["mcp.request", "gate", "service"]
            .iter()
            .all(|n| has(n, trace))
            && ["mcp.request", "gate", "authenticate"]
                .iter()
                .all(|n| has(n, trace_b))
    })
    .await;
    let one = |name: &str, trace: &str| {
        spans
            .iter()
            .find(|s| s.name == name && hex(&s.trace_id) == trace)
            .unwrap_or_else(|| panic!("no {name} span"))
    };
    let request = one("mcp.request", trace);
    assert_eq!(hex(&request.parent_span_id), parent);
    assert_eq!(attr(request, "mcp.transport").as_deref(), Some("stdio"));
    let gate = one("gate", trace);
    assert_eq!(gate.parent_span_id, request.span_id);
    assert_eq!(attr(gate, "outcome").as_deref(), Some("allowed"));
    assert_eq!(attr(gate, "agent").as_deref(), Some("stdio-agent"));
    assert_eq!(one("service", trace).parent_span_id, gate.span_id);
    let request_b = one("mcp.request", trace_b);
    assert_eq!(hex(&request_b.parent_span_id), parent_b);
    let gate_b = one("gate", trace_b);
    assert_eq!(gate_b.parent_span_id, request_b.span_id);
    assert_eq!(attr(gate_b, "outcome").as_deref(), Some("denied"));
    assert_eq!(one("authenticate", trace_b).parent_span_id, gate_b.span_id);
    let _ = client.cancel().await;
}

/// On stdio the calls, the audit commit and the answers share one thread, and a batch's answers
/// leave only once it has committed: a burst of 32 calls is committed in batches of at most 16,
/// so the client has the first answers to work on while the rest commit (at W = 32, 0.44–0.53×
/// bare rmcp's calls/s in one batch, 0.62–0.69× in two). Every call is still answered, and its
/// audit entry is committed before its answer.
#[tokio::test]
async fn stdio_commits_a_burst_of_calls_in_batches_of_at_most_sixteen() {
    let w = world().await;
    let key = approved_agent(&w.svc, &w.admin, "burst", &[Permission::ReadTasks]).await;
    let metrics = free_metrics_addr();
    let mut cmd = stdio_command(&w.db.url, Some(&key));
    cmd.env("PARALLAX_METRICS_LISTEN", &metrics);
    let mut s = RawStdio::spawn(cmd);
    s.initialize().await;
    s.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
        .await;
    let burst: Vec<serde_json::Value> = (1..=32)
        .map(|id| {
            json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": { "name": "agent_my_assignments", "arguments": {} } })
        })
        .collect();
    // One write: the 32 calls reach the server together.
    let answers = s.ask_together(&burst).await;
    for a in &answers {
        assert_eq!(a["result"]["isError"], false, "{a}");
    }
    let answered: std::collections::BTreeSet<u64> =
        answers.iter().map(|a| a["id"].as_u64().unwrap()).collect();
    assert_eq!(answered, (1..=32).collect());

    let scraped = scrape(&format!("http://{metrics}/metrics")).await;
    let entries = scraped.get("parallax_audit_batch_entries_sum", &[]);
    let batches = scraped.get("parallax_audit_batch_entries_count", &[]);
    let at_most_16 = scraped.get("parallax_audit_batch_entries_bucket", &[("le", "16")]);
    assert_eq!(entries, 32.0, "one entry a call, each committed");
    assert!(batches >= 2.0, "{batches} batches for 32 calls");
    assert_eq!(at_most_16, batches, "every batch holds at most 16 entries");
    // The entries are in the store: every call's decision, allowed.
    let calls = crate::support::all_activity(&w.svc, &w.admin.workspace().id)
        .await
        .into_iter()
        .filter(|e| e.agent_id.as_deref() == Some("burst") && e.activity_type == "tool.call")
        .filter(|e| e.outcome.as_deref() == Some("allowed"))
        .count();
    assert_eq!(calls, 32);
}
