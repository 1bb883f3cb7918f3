//! `GET /api/v1/workspaces/{workspace}/events`: a member's server-sent event stream.
//!
//! `id:` is the event's seq, `event:` its type, `data:` the event as JSON (`type`, `seq`,
//! `eventId`, `agentId`, `timestamp`, `data`). The stream reads the
//! store by seq (the feed only wakes it), so a client that reconnects with `Last-Event-ID: N`
//! gets exactly the events after N: no gaps, no duplicates. It ends when the member loses access
//! (re-checked periodically) or the server shuts down.

use super::{EventOptions, Feed};
use crate::auth::MemberCaller;
use crate::domain::{Event, EventType};
use crate::service::Service;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Open streams per member, so one member (or a leaked token) cannot hold unbounded streams.
#[derive(Debug, Default, Clone)]
pub struct StreamSlots(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>);

/// One open stream's place; freed when the stream ends.
#[derive(Debug)]
pub struct StreamSlot {
    slots: StreamSlots,
    key: String,
}

impl StreamSlots {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more stream of `member`, unless it already holds `limit`.
    pub fn acquire(&self, member: &MemberCaller, limit: usize) -> Option<StreamSlot> {
        let key = format!("{}/{}", member.workspace().id, member.member().id);
        let mut map = self.lock();
        let n = map.entry(key.clone()).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            slots: self.clone(),
            key,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut map = self.slots.lock();
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// How many events one store read returns.
const BATCH: u64 = 200;

/// Which events a stream carries.
#[derive(Debug, Clone, Default)]
pub struct StreamFilter {
    /// Only these types; empty means all.
    pub types: Vec<EventType>,
    /// Only events about this agent.
    pub agent: Option<String>,
}

impl StreamFilter {
    /// Parses `?types=a,b&agent=x`; an unknown type is an error naming the known ones.
    pub fn parse(types: Option<&str>, agent: Option<&str>) -> Result<Self, String> {
        let types = types
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| EventType::parse(t).map_err(|e| e.0))
            .collect::<Result<Vec<_>, _>>()?;
        let agent = agent
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        Ok(Self { types, agent })
    }

    fn matches(&self, e: &Event) -> bool {
        (self.types.is_empty() || self.types.contains(&e.event_type))
            && self
                .agent
                .as_ref()
                .is_none_or(|a| e.agent_id.as_deref() == Some(a.as_str()))
    }
}

/// Parses `Last-Event-ID` (a seq); absent means "from now".
pub fn parse_last_event_id(raw: Option<&str>) -> Result<Option<i64>, String> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| format!("Last-Event-ID must be an event seq, got {s:?}")),
    }
}

/// Everything a stream needs from the server.
#[derive(Clone, Debug)]
pub struct StreamContext {
    pub service: Service,
    pub feed: Feed,
    pub opts: EventOptions,
    pub closing: CancellationToken,
}

/// Starts the stream for an authenticated member. Without `last_event_id` it starts after the
/// workspace's latest event.
pub async fn stream(
    ctx: StreamContext,
    caller: MemberCaller,
    filter: StreamFilter,
    last_event_id: Option<i64>,
    slot: StreamSlot,
) -> Response {
    // Subscribe before reading the starting point, so nothing committed in between is missed.
    let sub = ctx.feed.subscribe();
    let start = match last_event_id {
        Some(n) => n,
        None => match ctx.service.last_event_seq(&caller).await {
            Ok(n) => n,
            Err(e) => return internal(e),
        },
    };
    let (tx, mut rx) = mpsc::channel::<SseEvent>(64);
    let ctx2 = ctx.clone();
    tokio::spawn(async move {
        pump(ctx2, caller, filter, start, sub, tx).await;
        drop(slot);
    });
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>))
    });
    Sse::new(body)
        .keep_alive(KeepAlive::new().interval(ctx.opts.keepalive))
        .into_response()
}

fn internal(e: crate::service::ServiceError) -> Response {
    tracing::warn!(error = %e, "event stream could not start");
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "error": { "code": e.code(), "message": "event stream unavailable, try again" }
        })),
    )
        .into_response()
}

/// Reads the store after `cursor` whenever the feed says the workspace moved, and sends what
/// matches. Returns (ending the stream) on shutdown, lost access or a gone client.
async fn pump(
    ctx: StreamContext,
    caller: MemberCaller,
    filter: StreamFilter,
    mut cursor: i64,
    mut sub: broadcast::Receiver<std::sync::Arc<Event>>,
    tx: mpsc::Sender<SseEvent>,
) {
    let ws = caller.workspace().id.clone();
    let mut check = tokio::time::interval(ctx.opts.access_check);
    check.tick().await;
    loop {
        loop {
            let batch = match ctx.service.events_after(&caller, cursor, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "event stream read failed; ending it");
                    return;
                }
            };
            let full = batch.len() as u64 == BATCH;
            for e in batch {
                cursor = e.seq;
                if !filter.matches(&e) {
                    continue;
                }
                // The webhook body's shape, plus where the event sits in the stream.
                let data = serde_json::json!({
                    "type": e.event_type.as_str(),
                    "seq": e.seq,
                    "eventId": e.id,
                    "agentId": e.agent_id,
                    "timestamp": e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    "data": e.data,
                })
                .to_string();
                let msg = SseEvent::default()
                    .id(e.seq.to_string())
                    .event(e.event_type.as_str())
                    .data(data);
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            if !full {
                break;
            }
        }
        // Wait for something about this workspace (or a lag, after which we simply re-read).
        loop {
            tokio::select! {
                _ = ctx.closing.cancelled() => return,
                _ = tx.closed() => return,
                _ = check.tick() => {
                    if !ctx.service.still_member(&caller).await.unwrap_or(true) {
                        tracing::info!(member = %caller.member().email, "member lost access; ending event stream");
                        return;
                    }
                }
                r = sub.recv() => match r {
                    Ok(e) if e.workspace_id != ws || e.seq <= cursor => continue,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}
