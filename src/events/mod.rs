//! The outbox delivered: everything that reads committed events and carries them out.
//!
//! - [`Feed`]: one poller per process that watches every workspace's seq and broadcasts new
//!   events (woken at once by local commits and, on PostgreSQL, by other replicas' commits via
//!   LISTEN/NOTIFY; polling covers the rest).
//! - [`webhooks`]: the worker sending signed deliveries to control planes.
//! - [`sse`]: the members' `text/event-stream` of a workspace's events.
//!
//! Readers never trust a broadcast for completeness: the seq in the store is the truth (gapless
//! and in commit order), a broadcast only says "look again".

pub mod sse;
pub mod webhooks;

use crate::config::Config;
use crate::domain::Event;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Settings of the webhook worker (`[webhooks]`).
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub attempt_timeout: Duration,
    pub give_up_after: Duration,
    pub poll_interval: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3600),
            attempt_timeout: Duration::from_secs(10),
            give_up_after: Duration::from_secs(3 * 24 * 3600),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Settings of the feed and the event streams (`[events]`).
#[derive(Debug, Clone)]
pub struct EventOptions {
    pub webhooks: WebhookOptions,
    pub poll_interval: Duration,
    pub keepalive: Duration,
    pub access_check: Duration,
}

impl Default for EventOptions {
    fn default() -> Self {
        Self {
            webhooks: WebhookOptions::default(),
            poll_interval: Duration::from_secs(1),
            keepalive: Duration::from_secs(15),
            access_check: Duration::from_secs(30),
        }
    }
}

impl EventOptions {
    pub fn from_config(config: &Config) -> Self {
        let mut o = Self::default();
        let ms = Duration::from_millis;
        let w = &config.webhooks;
        if let Some(v) = w.base_delay_ms {
            o.webhooks.base_delay = ms(v);
        }
        if let Some(v) = w.max_delay_ms {
            o.webhooks.max_delay = ms(v);
        }
        if let Some(v) = w.attempt_timeout_ms {
            o.webhooks.attempt_timeout = ms(v);
        }
        if let Some(v) = w.give_up_after_secs {
            o.webhooks.give_up_after = Duration::from_secs(v);
        }
        if let Some(v) = w.poll_interval_ms {
            o.webhooks.poll_interval = ms(v.max(10));
        }
        let e = &config.events;
        if let Some(v) = e.poll_interval_ms {
            o.poll_interval = ms(v.max(10));
        }
        if let Some(v) = e.keepalive_ms {
            o.keepalive = ms(v.max(10));
        }
        if let Some(v) = e.access_check_ms {
            o.access_check = ms(v.max(10));
        }
        o
    }
}

/// Committed events of every workspace, in seq order per workspace, to whoever listens.
#[derive(Clone, Debug)]
pub struct Feed {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Feed {
    /// Starts the poller, once its first poll has taken where each workspace stands: an event
    /// committed before that poll is taken as already there and never broadcast, so servers make
    /// the feed before they take a request, and a feed carries every event committed after it
    /// exists. The poller stops when `stop` is cancelled.
    pub async fn start(store: Store, poll: Duration, stop: CancellationToken) -> Feed {
        let (tx, _) = broadcast::channel(1024);
        // On PostgreSQL other replicas' commits wake the feed too (LISTEN/NOTIFY).
        store.listen_for_replicas(stop.clone());
        let mut seen: Option<HashMap<String, i64>> = None;
        // A first poll that fails does not hold the server back: the next one that succeeds
        // takes the starting point instead.
        if let Err(e) = poll_once(&store, &tx, &mut seen).await {
            tracing::warn!(error = %e, "event feed poll failed");
        }
        let feed = Feed { tx: tx.clone() };
        tokio::spawn(async move {
            let wake = store.events_committed();
            loop {
                // Before the poll, so that a commit during it wakes the next one.
                let notified = wake.notified();
                if let Err(e) = poll_once(&store, &tx, &mut seen).await {
                    tracing::warn!(error = %e, "event feed poll failed");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = notified => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        });
        feed
    }

    /// New events from now on. A lagging receiver gets `Lagged` and must re-read the store.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

async fn poll_once(
    store: &Store,
    tx: &broadcast::Sender<Arc<Event>>,
    seen: &mut Option<HashMap<String, i64>>,
) -> crate::store::StoreResult<()> {
    let read = store.read().await?;
    let streams = read.all_event_streams().await?;
    let Some(seen) = seen else {
        // The first poll only learns where each workspace stands: the feed carries what is new.
        *seen = Some(streams.into_iter().collect());
        return Ok(());
    };
    for (ws, last) in streams {
        let mut from = seen.get(&ws).copied().unwrap_or(0);
        while from < last {
            let batch = read.events_after(&ws, from, 500).await?;
            let Some(end) = batch.last().map(|e| e.seq) else {
                break;
            };
            for e in batch {
                let _ = tx.send(Arc::new(e));
            }
            from = end;
        }
        seen.insert(ws, from);
    }
    Ok(())
}

/// Calls `revoked(workspace_id, agent_id)` for every `agent.access_revoked` or
/// `agent.access_expired` the feed carries (this replica's and others'), until `stop` is cancelled.
pub fn on_revocation<F, Fut>(feed: &Feed, stop: CancellationToken, mut revoked: F)
where
    F: FnMut(Revocation) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut events = feed.subscribe();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                n = events.recv() => n,
            };
            match next {
                // An expired grant ends sessions like a revocation does.
                Ok(e)
                    if matches!(
                        e.event_type,
                        crate::domain::EventType::AccessRevoked
                            | crate::domain::EventType::AccessExpired
                    ) =>
                {
                    if let Some(agent) = e.agent_id.clone() {
                        revoked(Revocation::Agent {
                            workspace_id: e.workspace_id.clone(),
                            agent_id: agent,
                        })
                        .await;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // Some events were missed, maybe a revocation: re-check every open session.
                    tracing::warn!(
                        missed = n,
                        "revocation watcher lagged behind the feed; resyncing"
                    );
                    revoked(Revocation::Resync).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// What the revocation watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// This agent's access was revoked.
    Agent {
        workspace_id: String,
        agent_id: String,
    },
    /// Events were missed: every holder of a session must be checked again.
    Resync,
}
