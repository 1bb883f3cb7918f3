//! Prometheus metrics through the `metrics` facade. Each layer records through the functions
//! below, which fix every metric's name and labels in one place; `serve` installs the Prometheus
//! recorder and serves `GET /metrics` on its own listener (`[metrics] listen`), never on the
//! agents' port. Without it no recorder is installed and recording is a no-op.
//!
//! Labels only ever take values from a closed set (tool names from the catalogue, outcomes,
//! reasons, transports): never an id, a key, a URL or anything else a caller chooses.

use crate::mcp::ServeError;
use crate::store::Store;
use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOOL_CALLS: &str = "parallax_tool_calls_total";
const TOOL_CALL_DURATION: &str = "parallax_tool_call_duration_seconds";
const AUTH_REFUSALS: &str = "parallax_auth_refusals_total";
const RATE_LIMITED: &str = "parallax_rate_limited_total";
const AUDIT_BATCH_SIZE: &str = "parallax_audit_batch_entries";
const AUDIT_COMMIT_DURATION: &str = "parallax_audit_commit_duration_seconds";
const AUDIT_BATCH_FAILURES: &str = "parallax_audit_batch_failures_total";
const UNCONFIRMED_DECISIONS: &str = "parallax_unconfirmed_decisions_total";
const OUTBOX_BACKLOG: &str = "parallax_outbox_backlog_events";
const OUTBOX_OLDEST_AGE: &str = "parallax_outbox_oldest_undelivered_age_seconds";
const WEBHOOK_DELIVERIES: &str = "parallax_webhook_deliveries_total";
const MCP_SESSIONS: &str = "parallax_mcp_sessions_open";
const SSE_STREAMS: &str = "parallax_sse_streams_open";
const DB_POOL_CONNECTIONS: &str = "parallax_db_pool_connections";
const DB_POOL_MAX: &str = "parallax_db_pool_max_connections";
const BUILD_INFO: &str = "parallax_build_info";

/// Upper bounds of the latency buckets, in seconds: a read tool is a few milliseconds, a slow
/// database several seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the audit batch sizes (the writer commits at most 512 entries at once, 16 under
/// `stdio`).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The MCP transport a call came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Stdio,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Stdio => "stdio",
        }
    }
}

/// What became of a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The gate let it through and the tool answered (a task waiting for a human included).
    Allowed,
    /// Refused: authentication, permission, arguments or a domain rule.
    Denied,
    /// The server failed (store unavailable, shutdown cut it short).
    Error,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Allowed => "allowed",
            CallOutcome::Denied => "denied",
            CallOutcome::Error => "error",
        }
    }
}

/// One tool call: `tool` is a catalogue name, or `"unknown"` for a name not in it.
pub fn tool_call(tool: &'static str, transport: Transport, outcome: CallOutcome, took: Duration) {
    counter!(TOOL_CALLS, "tool" => tool, "outcome" => outcome.as_str()).increment(1);
    histogram!(TOOL_CALL_DURATION, "tool" => tool, "transport" => transport.as_str())
        .record(took.as_secs_f64());
}

/// One refused authentication; `reason` is a fixed word such as `unknown_key`.
pub fn auth_refused(reason: &'static str) {
    counter!(AUTH_REFUSALS, "reason" => reason).increment(1);
}

/// One request refused by a limit: `agent` (an agent's request rate), `failed_auth` (too many
/// failed authentications), `sessions` (an agent's session cap), `server_sessions` (this
/// replica's session cap), `event_streams` (a member's stream cap).
pub fn rate_limited(limit: &'static str) {
    counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

/// One audit batch: how many entries it held and how long its transaction took.
pub fn audit_batch(entries: usize, took: Duration, ok: bool) {
    histogram!(AUDIT_BATCH_SIZE).record(entries as f64);
    histogram!(AUDIT_COMMIT_DURATION).record(took.as_secs_f64());
    if !ok {
        counter!(AUDIT_BATCH_FAILURES).increment(1);
    }
}

/// One decision made on an unconfirmed key (`auth::Unconfirmed`): `committed` when
/// its audit commit found the generations unchanged, `decided_again` when they had moved and the
/// call went on to be decided on a confirmed caller.
pub fn unconfirmed_decision(committed: bool) {
    let outcome = if committed {
        "committed"
    } else {
        "decided_again"
    };
    counter!(UNCONFIRMED_DECISIONS, "outcome" => outcome).increment(1);
}

/// One webhook attempt settled as `result`: `delivered`, `retry`, `failed` (given up) or
/// `disabled` (the endpoint answered 410).
pub fn webhook_delivery(result: &'static str) {
    counter!(WEBHOOK_DELIVERIES, "result" => result).increment(1);
}

/// Counts an open server-sent event stream (`mcp` or `events`) until dropped.
#[must_use = "the stream counts as open while the guard lives"]
pub struct StreamGuard(&'static str);

pub fn sse_stream_opened(stream: &'static str) -> StreamGuard {
    gauge!(SSE_STREAMS, "stream" => stream).increment(1.0);
    StreamGuard(stream)
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        gauge!(SSE_STREAMS, "stream" => self.0).decrement(1.0);
    }
}

/// Middleware: a response that is a server-sent event stream counts as open until its body is
/// dropped (the client went away or the server ended it); `/mcp` streams as `mcp`, the rest as
/// `events`.
pub async fn count_streams(
    req: axum::extract::Request,
    next: impl crate::http::Continue,
) -> Response {
    let stream = if req.uri().path().starts_with("/mcp") {
        "mcp"
    } else {
        "events"
    };
    let res = next(req).await;
    let is_sse = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        return res;
    }
    let guard = sse_stream_opened(stream);
    res.map(|body| {
        use http_body_util::BodyExt;
        axum::body::Body::new(body.map_frame(move |frame| {
            // The closure owns the guard, so the stream counts until the body is dropped.
            let _ = &guard;
            frame
        }))
    })
}

/// Counts an open stdio MCP session (this process) until dropped.
#[must_use = "the session counts as open while the guard lives"]
pub struct SessionGuard;

pub fn stdio_session_opened() -> SessionGuard {
    gauge!(MCP_SESSIONS, "transport" => Transport::Stdio.as_str()).increment(1.0);
    SessionGuard
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        gauge!(MCP_SESSIONS, "transport" => Transport::Stdio.as_str()).decrement(1.0);
    }
}

/// Values read when scraped rather than counted as they happen.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    /// Open MCP sessions over HTTP (2025-11-25 sessions); `None` on stdio.
    pub http_sessions: Option<usize>,
    /// Database pool: open connections, idle ones, and the pool's cap.
    pub pool: Option<PoolStats>,
    /// Webhook deliveries not yet settled, and the age of the oldest, when the store answered.
    pub outbox: Option<(u64, Option<Duration>)>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

impl Snapshot {
    /// The store's part: its pool and the outbox backlog.
    pub async fn of_store(store: &Store) -> Snapshot {
        let outbox = match store.outbox_backlog().await {
            Ok((n, oldest)) => Some((
                n,
                oldest.map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default()),
            )),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the outbox backlog");
                None
            }
        };
        Snapshot {
            http_sessions: None,
            pool: store
                .pool_stats()
                .map(|(open, idle, max)| PoolStats { open, idle, max }),
            outbox,
        }
    }
}

fn set_snapshot(s: &Snapshot) {
    if let Some(n) = s.http_sessions {
        gauge!(MCP_SESSIONS, "transport" => Transport::Http.as_str()).set(n as f64);
    }
    if let Some(p) = s.pool {
        let in_use = p.open.saturating_sub(p.idle);
        gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(f64::from(p.idle));
        gauge!(DB_POOL_CONNECTIONS, "state" => "in_use").set(f64::from(in_use));
        gauge!(DB_POOL_MAX).set(f64::from(p.max));
    }
    if let Some((backlog, oldest)) = s.outbox {
        gauge!(OUTBOX_BACKLOG).set(backlog as f64);
        gauge!(OUTBOX_OLDEST_AGE).set(oldest.map_or(0.0, |d| d.as_secs_f64()));
    }
}

/// Installs the Prometheus recorder for this process, describes every metric and sets the build
/// info. A second call returns the same handle.
pub fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(AUDIT_BATCH_SIZE.into()), BATCH_BUCKETS)
        })
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(HANDLE.get_or_init(|| handle).clone())
}

fn describe() {
    use ::metrics::Unit;
    describe_counter!(
        TOOL_CALLS,
        "Tool calls, by tool and outcome (allowed, denied, error)."
    );
    describe_histogram!(
        TOOL_CALL_DURATION,
        Unit::Seconds,
        "Tool call latency through the gate, by tool and transport."
    );
    describe_counter!(AUTH_REFUSALS, "Refused agent authentications, by reason.");
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by a rate limit or cap, by limit."
    );
    describe_histogram!(AUDIT_BATCH_SIZE, "Audit entries committed per batch.");
    describe_histogram!(
        AUDIT_COMMIT_DURATION,
        Unit::Seconds,
        "Time to commit one audit batch."
    );
    describe_counter!(AUDIT_BATCH_FAILURES, "Audit batches that failed to commit.");
    describe_gauge!(
        OUTBOX_BACKLOG,
        "Webhook deliveries not yet delivered or given up (all workspaces)."
    );
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest webhook delivery not yet settled (0 when none)."
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook attempts, by result (delivered, retry, failed, disabled)."
    );
    describe_gauge!(MCP_SESSIONS, "Open MCP sessions, by transport.");
    describe_gauge!(
        SSE_STREAMS,
        "Open server-sent event streams, by stream (mcp, events)."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database pool connections, by state (idle, in_use)."
    );
    describe_gauge!(DB_POOL_MAX, "The database pool's connection cap.");
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label.");
}

/// Reads the values that are sampled at scrape time.
pub type Sampler =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Snapshot> + Send>> + Send + Sync + 'static>;

/// How long a scrape waits for the sampled values; a slow database must not hang the scraper.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Installs the recorder, binds `addr` and serves `GET /metrics` there until `stop`; logs the
/// address it serves on.
pub async fn listen(
    addr: &str,
    sample: Sampler,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| crate::http::listen_error(addr, &e))?;
    let handle = install().map_err(ServeError::Startup)?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "metrics on http://{bound}/metrics");
    tokio::spawn(serve(listener, handle, sample, stop));
    Ok(())
}

/// Serves `GET /metrics` (text exposition format) on `listener` until `stop`.
async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    sample: Sampler,
    stop: CancellationToken,
) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (handle, sample) = (handle.clone(), sample.clone());
            async move { scrape(&handle, &sample).await }
        }),
    );
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "metrics listener failed");
    }
}

async fn scrape(handle: &PrometheusHandle, sample: &Sampler) -> Response {
    match tokio::time::timeout(SAMPLE_TIMEOUT, sample()).await {
        Ok(snapshot) => set_snapshot(&snapshot),
        Err(_) => tracing::warn!("metrics: sampling timed out; serving the last values"),
    }
    // Histograms and summaries are drained into their buckets here.
    handle.run_upkeep();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
