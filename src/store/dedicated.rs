//! A PostgreSQL connection of its own, for a task that runs one statement after another on the
//! hot path (the audit writer's one-statement appends, the shared reads of the generations).
//! A pooled connection costs two round trips more per use: sqlx pings it when it is released,
//! whatever the pool's options say, and the pool's own check pings it when it is acquired.
//! Here a connection is pinged only after it sat idle, and one that failed is dropped, so the
//! next use opens another.

use super::{StoreError, StoreResult, sqlx_error};
use sea_orm::sqlx::{self, Connection, PgConnection, PgPool};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, MutexGuard};

/// A connection unused this long is pinged before its next use (the pool's own threshold).
pub(super) const IDLE_PING: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Dedicated(Mutex<Option<Held>>);

struct Held {
    conn: PgConnection,
    used: Instant,
}

/// The connection, while its holder runs its statement. Dropped before [`Lease::done`] (its
/// future cancelled mid-statement), the connection is dropped too: its state is unknown.
pub(super) struct Lease<'a> {
    held: MutexGuard<'a, Option<Held>>,
    finished: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.finished {
            *self.held = None;
        }
    }
}

impl Dedicated {
    /// The connection, taken out of `pool` (and kept out of it) when there is none alive.
    pub(super) async fn lease(&self, pool: &PgPool) -> StoreResult<Lease<'_>> {
        let mut held = self.0.lock().await;
        if let Some(h) = held.as_mut()
            && h.used.elapsed() >= IDLE_PING
            && h.conn.ping().await.is_err()
        {
            *held = None;
        }
        if held.is_none() {
            // Opened with the pool's options rather than taken from it: a connection's socket
            // answers to the runtime that opened it, and the audit writer runs on a runtime of
            // its own (`service::audit`), which must not wait on the workers' to hear back.
            let options = pool.connect_options();
            let conn = tokio::time::timeout(
                pool.options().get_acquire_timeout(),
                PgConnection::connect_with(&options),
            )
            .await
            .map_err(|_| StoreError::Unavailable("connecting to PostgreSQL timed out".into()))?
            .map_err(sqlx_error)?;
            *held = Some(Held {
                conn,
                used: Instant::now(),
            });
        }
        Ok(Lease {
            held,
            finished: false,
        })
    }
}

impl Lease<'_> {
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        // `lease` returns only with a connection in place.
        &mut self.held.as_mut().expect("a leased connection").conn
    }

    /// Passes on what the statement gave; a connection that failed is not used again (it may be
    /// broken, or inside a statement whose outcome it never read).
    pub(super) fn done<T>(mut self, result: Result<T, sqlx::Error>) -> StoreResult<T> {
        match result {
            Ok(v) => {
                if let Some(h) = self.held.as_mut() {
                    h.used = Instant::now();
                }
                self.finished = true;
                Ok(v)
            }
            // Not finished: dropping the lease drops the connection.
            Err(e) => Err(sqlx_error(e)),
        }
    }
}
