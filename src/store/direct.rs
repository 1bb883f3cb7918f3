//! Reads of the SQLite file on the calling thread, for the one statement every request runs.
//!
//! sqlx gives each SQLite connection a thread of its own, so a statement costs hand-offs between
//! threads (channels, futex wake-ups) that take far longer than reading the two generations.
//! These connections open the same file, so a commit by any connection, process or CLI is seen
//! by the next read; they only read (`query_only`), never wait for a lock (busy timeout zero),
//! and a connection that fails once is closed, never reused: the caller then reads through the
//! pool, which reports the fault the usual way.

use super::auth_cache::{READ_GENERATIONS, Seen};
use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::sync::Mutex;

/// Idle connections kept beyond this many are closed (one per core is plenty).
const MAX_IDLE: usize = 8;

pub(super) struct DirectReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl DirectReader {
    /// A reader for the database file at `path`, if it opens and can read the generations.
    pub(super) fn open(path: PathBuf) -> Option<DirectReader> {
        let reader = DirectReader {
            path,
            idle: Mutex::default(),
        };
        match reader.connect().and_then(|c| read(&c).map(|_| c)) {
            Ok(conn) => {
                reader.give_back(conn);
                Some(reader)
            }
            Err(e) => {
                tracing::debug!(error = %e, "direct SQLite reads unavailable; reading through the pool");
                None
            }
        }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::ZERO)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Both generations, or `None` when this path cannot read them now (the caller falls back).
    pub(super) fn generations(&self) -> Option<Seen> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => self.connect().ok()?,
        };
        match read(&conn) {
            Ok(seen) => {
                self.give_back(conn);
                Some(seen)
            }
            Err(e) => {
                tracing::debug!(error = %e, "direct SQLite read failed; reading through the pool");
                None
            }
        }
    }
}

fn read(conn: &Connection) -> rusqlite::Result<Seen> {
    conn.prepare_cached(READ_GENERATIONS)?.query_row([], |row| {
        Ok(Seen {
            auth: row.get(0)?,
            work: row.get(1)?,
        })
    })
}
