//! Pool hygiene: no connection goes back to the pool, or out of it, in an unknown state.
//!
//! sqlx counts a connection's transaction depth itself. When a `COMMIT` fails (disk full, I/O
//! error, lock timeout, read-only file) the depth stays up; the rollback queued on drop may fail
//! too (SQLite has already rolled back on its own), so the count never comes down. Back in the
//! pool, such a connection turns the next `BEGIN` into a `SAVEPOINT` inside a transaction that is
//! never committed: later calls "succeed" without storing anything, and the write lock they hold
//! keeps every other connection at `database is locked`. So a connection whose depth is not zero
//! when it is released (after the queued rollback ran) or acquired is closed, never reused; the
//! pool opens a fresh one. A connection that sat idle is pinged before it is handed out (not one
//! in use a moment ago: a round trip each time); one that cannot answer is closed by sqlx itself.

use sea_orm::sqlx;
use sqlx::pool::{PoolConnectionMetadata, PoolOptions};
use sqlx::{Connection, Database};

/// The release and acquire checks for SQLite, whose rollback on drop is queued to the
/// connection's worker thread: when the depth is not zero at release, a ping (a round trip to that
/// thread, no SQL) lets a queued rollback run first, so the depth read next is the one the
/// rollback left. A depth of zero needs no ping: a rollback is only queued by a transaction that
/// was open, and the worker runs a still-queued `BEGIN`'s own cleanup before the next user's
/// commands, so the common release (after a commit, or no transaction) costs no round trip.
pub fn guard_sqlite(opts: PoolOptions<sqlx::Sqlite>) -> PoolOptions<sqlx::Sqlite> {
    guard(opts, true)
}

/// The release and acquire checks for PostgreSQL, whose rollback on drop lowers the depth at once
/// (the `ROLLBACK` itself is sent with the next use), so no extra round trip is needed.
pub fn guard_postgres(opts: PoolOptions<sqlx::Postgres>) -> PoolOptions<sqlx::Postgres> {
    guard(opts, false)
}

fn guard<DB: Database>(opts: PoolOptions<DB>, settle: bool) -> PoolOptions<DB> {
    opts.after_release(
        move |conn: &mut DB::Connection, _meta: PoolConnectionMetadata| {
            Box::pin(async move {
                if settle && conn.is_in_transaction() {
                    conn.ping().await?;
                }
                Ok(clean(&*conn, "released"))
            })
        },
    )
    .before_acquire(|conn: &mut DB::Connection, meta: PoolConnectionMetadata| {
        Box::pin(async move {
            if meta.idle_for >= super::dedicated::IDLE_PING {
                conn.ping().await?;
            }
            Ok(clean(&*conn, "acquired"))
        })
    })
}

/// Whether the connection is outside any transaction; logs it when not.
fn clean<C: Connection>(conn: &C, when: &str) -> bool {
    if conn.is_in_transaction() {
        tracing::warn!("a database connection {when} inside a failed transaction was closed");
        false
    } else {
        true
    }
}
