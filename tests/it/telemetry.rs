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
        "outcome" => ["allowed", "denied", "error"].contains(&value),
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
        3.0
    );
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
    assert_eq!(total, 6.0, "no other call was counted");
    let latency = "parallax_tool_call_duration_seconds_count";
    assert_eq!(
        delta(
            latency,
            &[("tool", "agent_my_assignments"), ("transport", "http")]
        ),
        3.0
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
        3.0
    );
    let refusals = "parallax_auth_refusals_total";
    assert_eq!(delta(refusals, &[("reason", "missing_credential")]), 1.0);
    assert_eq!(delta(refusals, &[("reason", "malformed")]), 3.0);
    assert_eq!(
        delta("parallax_rate_limited_total", &[("limit", "failed_auth")]),
        1.0
    );
    // 6 decisions were audited (3 allowed, 3 denied), in one or more batches.
    assert!(delta("parallax_audit_batch_entries_sum", &[]) >= 6.0);
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
