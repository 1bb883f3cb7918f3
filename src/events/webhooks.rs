//! The webhook worker: carries outbox deliveries to the workspace's `control_plane_url`, signed
//! per Standard Webhooks, at least once and in order per agent.
//!
//! Each round leases the due deliveries (a conditional update, so several replicas can run the
//! worker), sends them concurrently (one per agent lane), and records each outcome. A lease
//! outlives the attempt (twice its timeout, plus a second), so a replica that dies mid-attempt
//! only delays the delivery.

use super::WebhookOptions;
use crate::domain::*;
use crate::service::now;
use crate::store::{DeliveryAttempt, DeliveryClaim, Store, StoreResult};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How much of a response we read (only for the error message); the rest is dropped.
const MAX_RESPONSE_BYTES: usize = 4096;
/// How many pending deliveries one round looks at.
const SCAN: u64 = 500;
/// How many deliveries one round sends at once (one per agent lane).
const MAX_CONCURRENT: usize = 32;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Runs the worker until `stop` is cancelled.
pub async fn run(store: Store, opts: WebhookOptions, stop: CancellationToken) {
    // Built at the first delivery, not at start: loading the system's TLS roots opens and
    // parses every certificate file (147 files on Debian), which a server that never sends a
    // webhook has no use for.
    let mut client = LazyClient::default();
    let wake = store.events_committed();
    loop {
        let notified = wake.notified();
        let busy = match round(&store, &mut client, &opts).await {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!(error = %e, "webhook round failed");
                false
            }
        };
        if busy {
            // A settled delivery may have unblocked the next one in its lane.
            if stop.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = notified => {}
            _ = tokio::time::sleep(opts.poll_interval) => {}
        }
    }
}

/// The worker's HTTP client, once a delivery needs it.
#[derive(Default)]
struct LazyClient(Option<HttpClient>);

impl LazyClient {
    /// The client, built now if this is the first delivery; without TLS roots, why not (each
    /// attempt records it, and the next round tries again).
    fn get(&mut self) -> Result<HttpClient, String> {
        if let Some(c) = &self.0 {
            return Ok(c.clone());
        }
        match client() {
            Ok(c) => Ok(self.0.insert(c).clone()),
            Err(e) => {
                tracing::error!(error = %e, "webhooks not sent: no TLS roots");
                Err(format!(
                    "no TLS roots to verify the control plane with: {e}"
                ))
            }
        }
    }
}

fn client() -> std::io::Result<HttpClient> {
    let mut http = HttpConnector::new();
    // The scheme decides TLS; without this the connector refuses https URLs.
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    // The legacy client never follows redirects, which is what we want: a 3xx is a failure.
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// One round: lease, send, record. Returns how many deliveries it settled or rescheduled.
async fn round(
    store: &Store,
    client: &mut LazyClient,
    opts: &WebhookOptions,
) -> StoreResult<usize> {
    let t = now();
    // Long enough for the attempt and recording it; short enough that a crashed replica's
    // deliveries are soon picked up again.
    let lease = t + chrono::Duration::from_std(opts.attempt_timeout * 2 + Duration::from_secs(1))
        .unwrap_or(chrono::Duration::minutes(5));
    let tx = store.write().await?;
    let claims = tx.claim_deliveries(t, lease, SCAN, MAX_CONCURRENT).await?;
    tx.commit().await?;
    let n = claims.len();
    if n == 0 {
        return Ok(0);
    }
    let client = client.get();
    let mut tasks = tokio::task::JoinSet::new();
    for claim in claims {
        let (store, client, opts) = (store.clone(), client.clone(), opts.clone());
        tasks.spawn(async move {
            if let Err(e) = deliver(&store, &client, &opts, claim).await {
                tracing::warn!(error = %e, "could not record a webhook attempt");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(n)
}

/// What one HTTP attempt came to.
enum Outcome {
    Delivered(u16),
    Gone,
    Retry {
        status: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
}

async fn deliver(
    store: &Store,
    client: &Result<HttpClient, String>,
    opts: &WebhookOptions,
    claim: DeliveryClaim,
) -> StoreResult<()> {
    let DeliveryClaim { delivery: d, event } = claim;
    // One span per attempt; its `traceparent` goes to the control plane with the webhook.
    let span = crate::telemetry::traces::span(|| {
        tracing::info_span!(
            "webhook.deliver",
            otel.kind = "client",
            workspace = %d.workspace_id,
            event.type = event.event_type.as_str(),
            attempt = d.attempts + 1,
            result = tracing::field::Empty,
        )
    });
    let result = deliver_in(store, client, opts, d, event, &span)
        .instrument(span.clone())
        .await;
    if let Ok(result) = &result {
        span.record("result", *result);
    }
    result.map(|_| ())
}

async fn deliver_in(
    store: &Store,
    client: &Result<HttpClient, String>,
    opts: &WebhookOptions,
    d: WebhookDelivery,
    event: Event,
    span: &tracing::Span,
) -> StoreResult<&'static str> {
    let tx = store.read().await?;
    let url = tx
        .workspace_by_id(&d.workspace_id)
        .await?
        .and_then(|w| w.settings.control_plane_url);
    let secrets = tx.active_webhook_secrets(&d.workspace_id, now()).await?;
    drop(tx);

    let outcome = match url {
        None => Outcome::Retry {
            status: None,
            error: "the workspace has no control_plane_url".into(),
            after: None,
        },
        Some(_) if secrets.is_empty() => Outcome::Retry {
            status: None,
            error: "the workspace has no webhook secret to sign with".into(),
            after: None,
        },
        Some(url) => match client {
            Ok(client) => {
                let traceparent = crate::telemetry::traces::traceparent(span);
                attempt(client, opts, &url, &secrets, &d, &event, traceparent).await
            }
            Err(e) => Outcome::Retry {
                status: None,
                error: e.clone(),
                after: None,
            },
        },
    };

    let t = now();
    let tx = store.write().await?;
    let attempt = match outcome {
        Outcome::Delivered(code) => DeliveryAttempt {
            status: DeliveryStatus::Delivered,
            http_status: Some(code.into()),
            error: None,
            next_attempt_at: t,
        },
        Outcome::Gone => {
            tracing::warn!(workspace = %d.workspace_id, "control plane answered 410: webhooks disabled");
            tx.disable_webhooks(&d.workspace_id, t).await?;
            DeliveryAttempt {
                status: DeliveryStatus::Disabled,
                http_status: Some(410),
                error: Some(
                    "endpoint answered 410 Gone; set control_plane_url again to resume".into(),
                ),
                next_attempt_at: t,
            }
        }
        Outcome::Retry {
            status,
            error,
            after,
        } => {
            let delay = after.unwrap_or_else(|| backoff(opts, d.attempts));
            let give_up = t - d.created_at
                >= chrono::Duration::from_std(opts.give_up_after).unwrap_or(chrono::Duration::MAX);
            DeliveryAttempt {
                status: if give_up {
                    DeliveryStatus::Failed
                } else {
                    DeliveryStatus::Pending
                },
                http_status: status.map(Into::into),
                error: Some(error),
                next_attempt_at: t + chrono::Duration::from_std(delay)
                    .unwrap_or(chrono::Duration::hours(1)),
            }
        }
    };
    // Another attempt of this workspace may have met a 410 while this one was in flight: it
    // stays parked with the rest instead of going back to the queue.
    let mut attempt = attempt;
    if attempt.status == DeliveryStatus::Pending
        && tx.webhooks_disabled_at(&d.workspace_id).await?.is_some()
    {
        attempt.status = DeliveryStatus::Disabled;
    }
    tx.record_delivery_attempt(&d.id, &attempt, t).await?;
    tx.commit().await?;
    let result = match attempt.status {
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Pending => "retry",
        DeliveryStatus::Failed => "failed",
        DeliveryStatus::Disabled => "disabled",
    };
    crate::telemetry::metrics::webhook_delivery(result);
    Ok(result)
}

/// Exponential backoff with full jitter: uniform in [0, min(max, base × 2^attempts)].
fn backoff(opts: &WebhookOptions, attempts: i32) -> Duration {
    let exp = opts
        .base_delay
        .saturating_mul(1u32 << attempts.clamp(0, 20) as u32);
    let cap = exp.min(opts.max_delay);
    let ms = cap.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// The Standard Webhooks body: `{"type", "timestamp", "data"}`.
pub fn body(event: &Event) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": event.event_type.as_str(),
        "timestamp": event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": event.data,
    }))
    .unwrap_or_default()
}

async fn attempt(
    client: &HttpClient,
    opts: &WebhookOptions,
    url: &str,
    secrets: &[WebhookSecret],
    d: &WebhookDelivery,
    event: &Event,
    traceparent: Option<String>,
) -> Outcome {
    let payload = body(event);
    // A fresh timestamp (and so signature) per attempt; the webhook-id stays the same.
    let ts = Utc::now().timestamp();
    let signature = signature_header(secrets, &d.webhook_id, ts, &payload);
    let mut req = Request::post(url);
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let req = match req
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "parallax-mcp-webhooks")
        .header("webhook-id", &d.webhook_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(Full::new(Bytes::from(payload)))
    {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry {
                status: None,
                error: format!("invalid control_plane_url: {e}"),
                after: None,
            };
        }
    };
    let sent = tokio::time::timeout(opts.attempt_timeout, async {
        let resp = client.request(req).await?;
        let (parts, body) = resp.into_parts();
        // Bounded read: a huge or endless answer cannot hold the worker.
        let text = match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => String::new(),
        };
        Ok::<_, hyper_util::client::legacy::Error>((parts.status, parts.headers, text))
    })
    .await;
    match sent {
        Err(_) => Outcome::Retry {
            status: None,
            error: format!("no answer within {:?}", opts.attempt_timeout),
            after: None,
        },
        Ok(Err(e)) => Outcome::Retry {
            status: None,
            error: format!("request failed: {e}"),
            after: None,
        },
        Ok(Ok((status, headers, text))) => classify(status, &headers, &text, Utc::now()),
    }
}

fn classify(status: StatusCode, headers: &HeaderMap, text: &str, at: DateTime<Utc>) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered(status.as_u16());
    }
    if status == StatusCode::GONE {
        return Outcome::Gone;
    }
    let after = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| retry_after(v, at)),
        _ => None,
    };
    let snippet: String = text.chars().take(200).collect();
    Outcome::Retry {
        status: Some(status.as_u16()),
        error: if status.is_redirection() {
            format!("HTTP {status} (redirects are not followed)")
        } else {
            format!("HTTP {status}: {snippet}")
        },
        after,
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date; a date in the past means "now".
fn retry_after(v: &HeaderValue, at: DateTime<Utc>) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(s).ok()?.with_timezone(&Utc);
    Some((when - at).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(retry_after(&v("7"), at), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&v("Mon, 23 Nov 2026 10:00:30 GMT"), at),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&v("Mon, 23 Nov 2026 09:00:00 GMT"), at),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&v("soon"), at), None);
    }

    #[test]
    fn backoff_stays_under_the_cap() {
        let opts = WebhookOptions {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(250),
            ..WebhookOptions::default()
        };
        for attempts in [0, 1, 5, 40, -3] {
            assert!(backoff(&opts, attempts) <= Duration::from_millis(250));
        }
    }
}
