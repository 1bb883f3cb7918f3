//! The audit writer: group commit for the gate's decision entries.
//!
//! Each call's entry must be durable before its response is sent. Writing one transaction per
//! call would serialise every call on SQLite's single writer, so entries submitted while a write
//! is in flight are collected and committed together in the next transaction, and each submitter
//! is released when its own batch has committed.
//!
//! The batch also records when agents were last seen and keys last used, but at most once per
//! [`TOUCH_EVERY`] for each: those timestamps are bookkeeping, not audit, and rewriting the rows on
//! every batch would cost two more statements per commit.

use super::{ServiceError, ServiceResult};
use crate::domain::ActivityEntry;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

type Ack = oneshot::Sender<Result<(), String>>;

/// An entry to commit, or (`None`) a flush marker acknowledged once every entry before it is.
type Submission = (Option<ActivityEntry>, Ack);

/// The most entries one batch commits.
const MAX_BATCH: usize = 512;

/// An agent's `last_seen_at` and a key's `last_used_at` are rewritten at most this often.
pub const TOUCH_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// What this writer last stored for each agent (`workspace/agent`) and key: the timestamps.
type Touched = HashMap<String, DateTime<Utc>>;

/// A handle to the background writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    tx: mpsc::Sender<Submission>,
}

impl AuditWriter {
    /// Starts the writer on the current Tokio runtime. It stops when every handle is dropped.
    pub fn spawn(store: Store) -> Self {
        let (tx, mut rx) = mpsc::channel::<Submission>(4096);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            let mut touched = Touched::new();
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let entries: Vec<ActivityEntry> =
                    batch.iter().filter_map(|(e, _)| e.clone()).collect();
                let result = if entries.is_empty() {
                    Ok(())
                } else {
                    let started = std::time::Instant::now();
                    let written = write(&store, &entries, &mut touched)
                        .await
                        .map_err(|e| e.to_string());
                    crate::telemetry::metrics::audit_batch(
                        entries.len(),
                        started.elapsed(),
                        written.is_ok(),
                    );
                    written
                };
                if let Err(e) = &result {
                    tracing::error!(error = %e, entries = entries.len(), "audit batch failed");
                }
                for (_, ack) in batch.drain(..) {
                    let _ = ack.send(result.clone());
                }
            }
        });
        Self { tx }
    }

    /// Waits until every entry submitted before it was committed (or failed): at shutdown, so no
    /// entry still queued is lost with the process.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send((None, ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Submits an entry and waits until it is committed.
    pub async fn record(&self, entry: ActivityEntry) -> ServiceResult<()> {
        let (ack, done) = oneshot::channel();
        let closed = || ServiceError::Store(StoreError::Unavailable("audit writer stopped".into()));
        self.tx
            .send((Some(entry), ack))
            .await
            .map_err(|_| closed())?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServiceError::Store(StoreError::Unavailable(format!(
                "audit log not written: {e}"
            )))),
            Err(_) => Err(closed()),
        }
    }
}

/// Commits a batch, and marks the agents and keys it shows in use as seen, unless this writer
/// did so less than [`TOUCH_EVERY`] ago.
async fn write(
    store: &Store,
    entries: &[ActivityEntry],
    touched: &mut Touched,
) -> Result<(), StoreError> {
    let mut agents: Vec<(&str, &str, DateTime<Utc>)> = Vec::new();
    let mut keys: Vec<(&str, DateTime<Utc>)> = Vec::new();
    let due = |touched: &Touched, k: &str, at: DateTime<Utc>| {
        touched.get(k).is_none_or(|last| at - *last >= TOUCH_EVERY)
    };
    for e in entries.iter().filter(|e| e.activity_type == "tool.call") {
        if let Some(agent) = e.agent_id.as_deref()
            && !agents
                .iter()
                .any(|(w, a, _)| *w == e.workspace_id && *a == agent)
            && due(
                touched,
                &format!("{}/{agent}", e.workspace_id),
                e.created_at,
            )
        {
            agents.push((&e.workspace_id, agent, e.created_at));
        }
        if let Some(key) = e.metadata.get("credential").and_then(|v| v.as_str())
            && !keys.iter().any(|(k, _)| *k == key)
            && due(touched, key, e.created_at)
        {
            keys.push((key, e.created_at));
        }
    }
    let tx = store.write().await?;
    tx.insert_activities(entries).await?;
    for (ws, agent, at) in &agents {
        tx.touch_agent(ws, agent, *at).await?;
    }
    for (key, at) in &keys {
        tx.touch_credential(key, *at).await?;
    }
    tx.commit().await?;
    if touched.len() > 100_000 {
        touched.clear();
    }
    for (ws, agent, at) in agents {
        touched.insert(format!("{ws}/{agent}"), at);
    }
    for (key, at) in keys {
        touched.insert(key.to_owned(), at);
    }
    Ok(())
}
