//! Cross-replica wake-ups on PostgreSQL: a transaction that wrote events also sends
//! `NOTIFY parallax_events` (delivered only if it commits), and each server listens, so another
//! replica's feed reads new events — and closes a revoked agent's sessions — within milliseconds
//! instead of at its next poll. A lost connection loses nothing: the feed's poll still runs, and
//! the listener reconnects.

use super::{Store, StoreResult, Tx};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CHANNEL: &str = "parallax_events";

impl Tx {
    /// Tells the other replicas' feeds to read, once this transaction commits.
    pub(super) async fn notify_events(&self) -> StoreResult<()> {
        let backend = self.tx.get_database_backend();
        if backend == DbBackend::Postgres {
            self.tx
                .execute_raw(Statement::from_string(
                    backend,
                    format!("SELECT pg_notify('{CHANNEL}', '')"),
                ))
                .await?;
        }
        Ok(())
    }
}

impl Store {
    /// On PostgreSQL, wakes [`Store::events_committed`] whenever any replica commits events,
    /// until `stop`. Does nothing on SQLite (one process's commits wake it directly; other
    /// processes are seen by polling).
    pub fn listen_for_replicas(&self, stop: CancellationToken) {
        if !self.is_postgres() {
            return;
        }
        let pool = self.db.get_postgres_connection_pool().clone();
        let wake = self.events_committed.clone();
        tokio::spawn(async move {
            loop {
                let listened = async {
                    let mut listener =
                        sea_orm::sqlx::postgres::PgListener::connect_with(&pool).await?;
                    listener.listen(CHANNEL).await?;
                    loop {
                        listener.recv().await?;
                        wake.notify_waiters();
                    }
                };
                let result: Result<(), sea_orm::sqlx::Error> = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listened => r,
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "event notifications lost; polling until reconnected");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }
}
