//! Pool hygiene: no connection goes back to the pool, or out of it, in an unknown state.
//!
//! sqlx counts a connection's transaction depth itself. When a `COMMIT` fails (disk full, I/O
//! error, lock timeout, read-only file) the depth stays up; the rollback queued on drop may fail
//! too (SQLite has already rolled back on its own), so the count never comes down. Back in the
//! pool, such a connection turns the next `BEGIN` into a `SAVEPOINT` inside a transaction that is
//! never committed: later calls "succeed" without storing anything, and the write lock they hold
//! keeps every other connection at `database is locked`. So a connection whose depth is not zero
//! when it is released (after the queued rollback ran) or acquired is closed, never reused; the
//! pool opens a fresh one. A connection that cannot answer a ping is closed by sqlx itself.

use sea_orm::sqlx;
use sqlx::pool::{PoolConnectionMetadata, PoolOptions};
use sqlx::{Connection, Database};
use std::sync::atomic::{AtomicU64, Ordering};

/// Connections closed because they were left inside a transaction (for logs and tests).
static DISCARDED: AtomicU64 = AtomicU64::new(0);

/// How many pooled connections were discarded for being left inside a transaction.
pub fn discarded() -> u64 {
    DISCARDED.load(Ordering::Relaxed)
}

/// Adds the release and acquire checks to a pool's options.
pub fn guard<DB: Database>(opts: PoolOptions<DB>) -> PoolOptions<DB> {
    opts.after_release(|conn: &mut DB::Connection, _meta: PoolConnectionMetadata| {
        Box::pin(async move {
            // The ping runs after any rollback queued when the transaction was dropped, so the
            // depth read next is the one that rollback left.
            conn.ping().await?;
            Ok(clean(&*conn, "released"))
        })
    })
    .before_acquire(|conn: &mut DB::Connection, _meta: PoolConnectionMetadata| {
        Box::pin(async move { Ok(clean(&*conn, "acquired")) })
    })
}

/// Whether the connection is outside any transaction; logs and counts it when not.
fn clean<C: Connection>(conn: &C, when: &str) -> bool {
    if conn.is_in_transaction() {
        DISCARDED.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("a database connection {when} inside a failed transaction was closed");
        false
    } else {
        true
    }
}
