//! Reads of the SQLite file on the calling thread, for the one statement every request runs,
//! the audit writer's appends in one go ([`DirectWriter`]), and the walk that verifies the audit
//! chain ([`DirectReader::intact_chain`], on a blocking thread).
//!
//! sqlx gives each SQLite connection a thread of its own, so a statement costs hand-offs between
//! threads (channels, futex wake-ups) that take far longer than reading the two generations.
//! The readers open the same file, so a commit by any connection, process or CLI is seen by the
//! next read; they only read (`query_only`), never wait for a lock (busy timeout zero), and a
//! connection that fails once is closed, never reused: the caller then reads through the pool,
//! which reports the fault the usual way.

use super::auth_cache::{READ_GENERATIONS, Seen};
use super::entities::activity;
use super::{StoreError, StoreResult, Touches, chain};
use crate::domain::ActivityEntry;
use chain::KnownHeads;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

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

/// A workspace's chain found intact by [`DirectReader::intact_chain`].
#[derive(Debug)]
pub struct IntactChain {
    /// `None` when the workspace has no entries yet.
    pub head: Option<chain::ChainHead>,
    /// The first seq walked (after any pruned prefix).
    pub from_seq: i64,
    /// Entries whose hash was recomputed and matched.
    pub verified: u64,
}

impl DirectReader {
    /// Walks workspace `ws`'s chain from `from` (default: its start) in one read transaction
    /// on a connection of its own, with every hash recomputed: `Some` only when it is intact
    /// (every entry from the start to the head in place and chained, none outside the chain).
    /// `None` when anything is off or this path cannot read; the caller then walks through the
    /// pool, which names the problem. Through the pool each row crosses from sqlx's connection
    /// thread and is mapped through SeaORM: 7 µs an entry, against about 2 µs here (`activity
    /// verify` of 505,954 entries). The server verifies before every audit checkpoint.
    pub(super) fn intact_chain(&self, ws: &str, from: Option<i64>) -> Option<IntactChain> {
        let conn = self.connect().ok()?;
        conn.execute_batch("BEGIN").ok()?;
        let walked = walk_chain(&conn, ws, from);
        if let Err(e) = &walked {
            tracing::debug!(error = %e, "direct chain walk failed; walking through the pool");
        }
        // The walk filled this connection's cache with the chain's pages (up to SQLite's 2 MB):
        // closed, they are the C heap's free memory, which would stay with the process.
        drop(conn);
        release_cache_memory();
        walked.ok().flatten()
    }
}

/// [`DirectReader::intact_chain`] in the transaction `conn` has begun.
fn walk_chain(
    conn: &Connection,
    ws: &str,
    from: Option<i64>,
) -> rusqlite::Result<Option<IntactChain>> {
    let head = conn
        .query_row(
            "SELECT last_seq, last_hash, pruned_seq, pruned_hash FROM activity_chains \
             WHERE workspace_id = ?1",
            [ws],
            |r| {
                Ok(chain::ChainHead {
                    last_seq: r.get(0)?,
                    last_hash: r.get(1)?,
                    pruned_seq: r.get(2)?,
                    pruned_hash: r.get(3)?,
                })
            },
        )
        .optional()?;
    // Entries written around the store, which the chain does not cover: the partial index
    // `ix_activity_unchained` holds exactly these.
    let unchained = conn
        .query_row(
            "SELECT 1 FROM activity WHERE workspace_id = ?1 AND (seq IS NULL OR hash IS NULL) \
             LIMIT 1",
            [ws],
            |_| Ok(()),
        )
        .optional()?;
    if unchained.is_some() {
        return Ok(None);
    }
    let Some(head) = head else {
        return Ok(Some(IntactChain {
            head: None,
            from_seq: 1,
            verified: 0,
        }));
    };
    let start = from.unwrap_or(1).max(head.pruned_seq + 1);
    if start > head.last_seq + 1 {
        return Ok(None);
    }
    if head.pruned_seq > 0 {
        let in_pruned_part = conn
            .query_row(
                "SELECT 1 FROM activity WHERE workspace_id = ?1 AND seq <= ?2 LIMIT 1",
                params![ws, head.pruned_seq],
                |_| Ok(()),
            )
            .optional()?;
        if in_pruned_part.is_some() {
            return Ok(None);
        }
    }
    let mut prev = if start - 1 == head.pruned_seq {
        head.pruned_hash
            .clone()
            .unwrap_or_else(|| chain::genesis_hash(ws))
    } else {
        let before = conn
            .query_row(
                "SELECT hash FROM activity WHERE workspace_id = ?1 AND seq = ?2",
                params![ws, start - 1],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten();
        match before {
            Some(h) => h,
            None => return Ok(None),
        }
    };
    let mut rows = conn.prepare(
        "SELECT id, actor_kind, actor_id, agent_id, activity_type, outcome, description, \
         metadata, project_id, task_id, page_id, created_at, seq, hash FROM activity \
         WHERE workspace_id = ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq",
    )?;
    let mut rows = rows.query(params![ws, start, head.last_seq])?;
    let mut expected = start;
    while let Some(r) = rows.next()? {
        let (seq, hash) = (r.get::<_, i64>(12)?, r.get::<_, Option<String>>(13)?);
        let created_at: String = r.get(11)?;
        let Ok(created_at) = DateTime::parse_from_rfc3339(&created_at) else {
            return Ok(None);
        };
        let link = migrations::chain::Link {
            workspace_id: ws,
            seq,
            id: r.get_ref(0)?.as_str()?,
            created_at_micros: created_at.timestamp_micros(),
            actor_kind: r.get_ref(1)?.as_str()?,
            actor_id: r.get_ref(2)?.as_str()?,
            agent_id: r.get_ref(3)?.as_str_or_null()?,
            activity_type: r.get_ref(4)?.as_str()?,
            outcome: r.get_ref(5)?.as_str_or_null()?,
            description: r.get_ref(6)?.as_str()?,
            metadata: r.get_ref(7)?.as_str()?,
            project_id: r.get_ref(8)?.as_str_or_null()?,
            task_id: r.get_ref(9)?.as_str_or_null()?,
            page_id: r.get_ref(10)?.as_str_or_null()?,
        };
        match hash {
            Some(h) if seq == expected && migrations::chain::hash(&prev, &link) == h => prev = h,
            _ => return Ok(None),
        }
        expected += 1;
    }
    let intact = expected == head.last_seq + 1 && prev == head.last_hash;
    Ok(intact.then(|| IntactChain {
        from_seq: start,
        verified: (expected - start) as u64,
        head: Some(head),
    }))
}

fn read(conn: &Connection) -> rusqlite::Result<Seen> {
    conn.prepare_cached(READ_GENERATIONS)?.query_row([], |row| {
        Ok(Seen {
            auth: row.get(0)?,
            work: row.get(1)?,
        })
    })
}

/// The audit writer's commits of decision entries alone: on the writer's own thread when the
/// file's write lock is free ([`DirectWriter::try_append`]), else in one hand-off to a blocking
/// thread that waits for it ([`DirectWriter::append`]).
///
/// Through the pool, such a commit is five statements, each a round trip to the writer
/// connection's thread (BEGIN, the chain head's upsert, the insert, the head's new hash,
/// COMMIT), and on a busy machine each round trip waits to be scheduled while every call in the
/// batch waits for the commit (measured at c = 16: 1.5 ms for about four entries that way,
/// 0.95 ms this way). This connection runs the
/// whole transaction on the thread that holds it, with statements prepared once. It writes the
/// same rows the pool would (the chain's rows from `chain::chain_rows`, timestamps as sqlx
/// encodes them), takes its turn in the store's writer queue like any writer, and waits for
/// other processes as long as the pool's busy timeout. A connection that fails is closed; the
/// next batch opens another. A workspace's head that this process committed last (the store's
/// `chain::KnownHeads`) is moved by one `UPDATE` that changes it only if it is still that head,
/// instead of an upsert that reads it and an update that writes its hash back: 9-10k of a lone
/// read's 172-174k instructions. If another process moved it, the update changes nothing and
/// the head is read as before.
///
/// Its commits do not checkpoint the WAL themselves: SQLite's automatic checkpoint runs inside
/// the commit that crosses 1,000 pages and syncs the database file there, while every call in
/// the batch (and the next batch) waits. Every [`CHECKPOINT_EVERY`] commits, a thread of its own
/// runs a passive checkpoint instead, which never blocks a writer or a reader; once the WAL is
/// long, it also sees that the next commit starts the WAL over ([`RESTART_AFTER`]).
pub(super) struct DirectWriter {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
    /// The store's chain heads, which every commit of this process makes known.
    heads: Arc<KnownHeads>,
    commits: AtomicU32,
    /// Asks the checkpoint thread for a checkpoint; `None` if it could not start.
    checkpoints: Option<SyncSender<()>>,
}

/// Commits between two checkpoints (a batch of decision entries writes about ten pages or more,
/// so roughly SQLite's own default of 1,000 pages).
const CHECKPOINT_EVERY: u32 = 64;

/// WAL frames (pages) past which the checkpoint thread copies the last few with the writers
/// held back, so that the next commit starts the WAL over from its beginning (about 8 MB).
///
/// SQLite starts the WAL over only at a write that begins with every frame already copied to
/// the database file. A checkpoint beside the commits never leaves it so under load: the next
/// commit lands while it copies. Measured before this: the WAL grew by 40 MB a second under
/// the benchmark's reads, past 1.3 GB in half a minute, every commit appending to a longer
/// file.
const RESTART_AFTER: i64 = 2048;

/// The WAL file is cut back to this length when it starts over (`journal_size_limit`): a burst
/// (another process's long write, a reader that held the WAL) leaves no lasting file behind.
pub(super) const WAL_SIZE_LIMIT: i64 = 4 * RESTART_AFTER * (4096 + 24);

impl DirectWriter {
    /// A writer for the file at `path`; `writers` is the store's writer queue, which the
    /// checkpoint thread joins to hold commits back while it copies the WAL's last frames.
    pub(super) fn new(
        path: PathBuf,
        writers: Arc<tokio::sync::Mutex<()>>,
        heads: Arc<KnownHeads>,
    ) -> DirectWriter {
        // One pending request at most: a checkpoint asked for while one runs covers both.
        let (checkpoints, due) = sync_channel(1);
        let at = path.clone();
        let spawned = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpointer(&at, &due, &writers));
        if let Err(e) = &spawned {
            tracing::warn!(error = %e, "no checkpoint thread; SQLite checkpoints as it commits");
        }
        DirectWriter {
            path,
            conn: Mutex::default(),
            heads,
            commits: AtomicU32::new(0),
            checkpoints: spawned.ok().map(|_| checkpoints),
        }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // As the pool's connections are set up (`store::connect_options`): its commits write
        // their WAL frames at once (`wal_vfs`).
        let conn = match super::wal_vfs::name() {
            Some(vfs) => Connection::open_with_flags_and_vfs(&self.path, flags, vfs)?,
            None => Connection::open_with_flags(&self.path, flags)?,
        };
        conn.busy_timeout(super::WRITER_WAIT)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        // Checkpoints run on their own thread (see above) while it runs; asking is how a dead
        // thread shows, and a passive checkpoint as a connection opens costs next to nothing.
        if self.ask_for_checkpoint() {
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        Ok(conn)
    }

    /// Asks the checkpoint thread for a checkpoint; `false` if there is no such thread.
    fn ask_for_checkpoint(&self) -> bool {
        // Full: one is already asked for, which covers this one.
        self.checkpoints
            .as_ref()
            .is_some_and(|c| !matches!(c.try_send(()), Err(TrySendError::Disconnected(()))))
    }

    /// Chains and inserts `entries` and marks `touches` in one transaction, on this thread,
    /// waiting for another process's write as long as the pool would. With `expect`, only if
    /// the generations are still those when the transaction reads them; if not, nothing is
    /// written and `entries` come back (see `Store::append_activity`).
    pub(super) fn append(
        &self,
        entries: Vec<ActivityEntry>,
        touches: Touches<'_>,
        expect: Option<Seen>,
    ) -> StoreResult<Option<Vec<ActivityEntry>>> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let conn = match slot.take() {
            Some(conn) => conn,
            None => self.connect().map_err(store_error)?,
        };
        let written = begin(&conn)
            .map_err(store_error)
            .and_then(|()| append(&conn, &self.heads, entries, touches, expect));
        self.keep(&mut slot, conn, written)
    }

    /// As [`DirectWriter::append`], but only if that cannot wait: with a connection already
    /// open and the file's write lock free at once (no other process writing). Otherwise gives
    /// `entries` back untouched, for [`DirectWriter::append`] on a blocking thread.
    ///
    /// A commit of a batch takes tens of microseconds (its pages go to the WAL in the page
    /// cache; syncs happen at checkpoints, on their own thread), less than handing it to a
    /// blocking thread and waking the writer back costs, which is most of a lone call's commit.
    pub(super) fn try_append(
        &self,
        entries: Vec<ActivityEntry>,
        touches: Touches<'_>,
        expect: Option<Seen>,
    ) -> Result<StoreResult<Option<Vec<ActivityEntry>>>, Vec<ActivityEntry>> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let Some(conn) = slot.take() else {
            return Err(entries);
        };
        let begun = conn
            .busy_timeout(std::time::Duration::ZERO)
            .and_then(|()| begin(&conn))
            .and_then(|()| conn.busy_timeout(super::WRITER_WAIT));
        match begun {
            Ok(()) => {
                let written = append(&conn, &self.heads, entries, touches, expect);
                Ok(self.keep(&mut slot, conn, written))
            }
            // Another process holds the write lock: wait for it off the runtime's threads.
            Err(e) if is_busy(&e) && conn.busy_timeout(super::WRITER_WAIT).is_ok() => {
                *slot = Some(conn);
                Err(entries)
            }
            Err(e) => Ok(Err(store_error(e))),
        }
    }

    /// Puts `conn` back for the next batch after a clean commit or rollback (after a failure
    /// its state is unknown, so it is closed), and counts a commit.
    fn keep(
        &self,
        slot: &mut Option<Connection>,
        conn: Connection,
        written: StoreResult<Option<Vec<ActivityEntry>>>,
    ) -> StoreResult<Option<Vec<ActivityEntry>>> {
        if let Ok(back) = &written {
            if back.is_none() && !self.committed() {
                // No checkpoint thread: SQLite checkpoints as it commits.
                let _ = conn.pragma_update(None, "wal_autocheckpoint", 1000);
            }
            *slot = Some(conn);
        }
        written
    }

    /// Counts a commit to the file, by this writer or the pool's writer connection (which the
    /// store sets up without automatic checkpoints too), and asks for a checkpoint every
    /// [`CHECKPOINT_EVERY`]. `false` when it asked and found no checkpoint thread.
    pub(super) fn committed(&self) -> bool {
        let n = self.commits.fetch_add(1, Ordering::Relaxed);
        n % CHECKPOINT_EVERY != CHECKPOINT_EVERY - 1 || self.ask_for_checkpoint()
    }

    /// Rows changed through this writer's connection since it opened (its inserts and updates).
    #[cfg(test)]
    pub(super) fn total_changes(&self) -> u64 {
        let slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map_or(0, Connection::total_changes)
    }

    /// Whether a checkpoint thread runs, so a connection may leave checkpoints to it.
    pub(super) fn checkpoints_apart(&self) -> bool {
        self.checkpoints.is_some()
    }
}

/// Runs a passive checkpoint of the file at `path` each time one is asked for, until the writer
/// is dropped. Passive: it copies what no reader still needs and never waits for a lock, so it
/// cannot hold up a request; what it leaves, the next one takes. Once the WAL holds
/// [`RESTART_AFTER`] frames, it syncs both files ([`sync_ahead`]), then takes this process's
/// turn to write (`writers`) and copies what was committed meanwhile, so the next commit begins
/// with the whole WAL in the database file and starts it over (unless a reader still reads an
/// older snapshot: then a later round does).
fn checkpointer(path: &Path, due: &Receiver<()>, writers: &tokio::sync::Mutex<()>) {
    let mut conn: Option<Connection> = None;
    while due.recv().is_ok() {
        let c = match conn.take() {
            Some(c) => c,
            None => match Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ) {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "checkpoint connection failed");
                    continue;
                }
            },
        };
        let checkpointed = passive(&c).and_then(|frames| {
            if frames < RESTART_AFTER {
                return Ok(());
            }
            // The held checkpoint syncs the WAL and then the database file, and that second sync
            // flushed every page copied since the WAL last started over: 2 of its 3 ms, with
            // every call in flight waiting. Flushed here first, they leave the held syncs only
            // what is committed or copied in between.
            sync_ahead(&c);
            // Held only for the frames committed since the checkpoint above.
            let _turn = writers.blocking_lock();
            passive(&c).map(drop)
        });
        match checkpointed {
            Ok(()) => conn = Some(c),
            Err(e) => tracing::debug!(error = %e, "WAL checkpoint failed; trying again later"),
        }
    }
}

/// Syncs the WAL and the database file through `conn`'s own handles on them, not through a
/// descriptor of this function's: closing one would drop every lock this process holds on the
/// file (POSIX record locks belong to the process and the file). Returns how many it synced;
/// a failure only leaves the work to SQLite's own syncs, so it is not an error.
fn sync_ahead(conn: &Connection) -> usize {
    use rusqlite::ffi;
    let mut synced = 0;
    for op in [
        ffi::SQLITE_FCNTL_JOURNAL_POINTER,
        ffi::SQLITE_FCNTL_FILE_POINTER,
    ] {
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        // SAFETY: the handle is the open connection's, used on this thread only; the file
        // control writes one pointer to `file`, which SQLite keeps valid while the connection
        // is open (the WAL's once a read opened it, as the checkpoint before this did), and
        // `xSync` is the method SQLite itself calls on it.
        unsafe {
            let found = ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                op,
                (&raw mut file).cast(),
            );
            if found != ffi::SQLITE_OK || file.is_null() || (*file).pMethods.is_null() {
                continue;
            }
            if let Some(sync) = (*(*file).pMethods).xSync
                && sync(file, ffi::SQLITE_SYNC_NORMAL) == ffi::SQLITE_OK
            {
                synced += 1;
            }
        }
    }
    synced
}

/// A passive checkpoint; returns how many frames the WAL holds.
fn passive(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
}

/// Begins the write transaction. BEGIN and COMMIT are cached statements:
/// `transaction_with_behavior` parses both anew on every batch.
fn begin(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut s| s.execute([]))
        .map(drop)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(e.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked))
}

/// The rest of a batch's transaction, after [`begin`]: `entries` back, with nothing written,
/// if the generations are not `expect`. A failure leaves the transaction open; the caller then
/// closes the connection, which rolls it back. The heads it moves are made known once it
/// commits.
fn append(
    conn: &Connection,
    heads: &KnownHeads,
    entries: Vec<ActivityEntry>,
    (agents, keys): Touches<'_>,
    expect: Option<Seen>,
) -> StoreResult<Option<Vec<ActivityEntry>>> {
    let tx = conn;
    // Read under the write lock, after every request whose decision the entries record arrived:
    // any change committed before this commit, by any process, shows.
    if let Some(expect) = expect
        && read(tx).map_err(store_error)? != expect
    {
        tx.prepare_cached("ROLLBACK")
            .and_then(|mut s| s.execute([]))
            .map_err(store_error)?;
        return Ok(Some(entries));
    }
    let mut moved = Vec::new();
    for (ws, entries) in chain::by_workspace(entries) {
        let n = entries.len() as i64;
        if let Some((rows, last_seq, head)) = after_known_head(tx, heads, &ws, &entries)? {
            insert_rows(tx, &rows)?;
            moved.push((ws, last_seq, head));
            continue;
        }
        let (last_seq, last_hash) = tx
            .prepare_cached(
                "INSERT INTO activity_chains (workspace_id, last_seq, last_hash, pruned_seq) \
                 VALUES (?1, ?2, ?3, 0) ON CONFLICT (workspace_id) \
                 DO UPDATE SET last_seq = activity_chains.last_seq + ?2 \
                 RETURNING last_seq, last_hash",
            )
            .and_then(|mut s| {
                s.query_row(params![ws, n, chain::genesis_hash(&ws)], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })
            })
            .map_err(store_error)?;
        let (rows, head) = chain::chain_rows(last_seq, last_hash, &entries)?;
        insert_rows(tx, &rows)?;
        tx.prepare_cached("UPDATE activity_chains SET last_hash = ?1 WHERE workspace_id = ?2")
            .and_then(|mut s| s.execute(params![head, ws]))
            .map_err(store_error)?;
        moved.push((ws, last_seq, head));
    }
    for (ws, agent, at) in agents {
        tx.prepare_cached(
            "UPDATE agents SET last_seen_at = ?1 WHERE workspace_id = ?2 AND id = ?3",
        )
        .and_then(|mut s| s.execute(params![timestamp(at), ws, agent]))
        .map_err(store_error)?;
    }
    for (key, at) in keys {
        tx.prepare_cached("UPDATE credentials SET last_used_at = ?1 WHERE id = ?2")
            .and_then(|mut s| s.execute(params![timestamp(at), key]))
            .map_err(store_error)?;
    }
    tx.prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
        .map_err(store_error)?;
    heads.learn(moved);
    Ok(None)
}

/// `entries` chained after workspace `ws`'s head as this process last committed it, with the
/// head already moved past them in this transaction, and the new head (seq, hash); `None` when
/// no head is known or the head is no longer that one (another process wrote since), having
/// changed nothing. One statement where reading the head and writing it back takes two.
fn after_known_head(
    tx: &Connection,
    heads: &KnownHeads,
    ws: &str,
    entries: &[ActivityEntry],
) -> StoreResult<Option<(Vec<activity::Model>, i64, String)>> {
    let Some((seq, hash)) = heads.get(ws) else {
        return Ok(None);
    };
    let n = entries.len() as i64;
    let (rows, head) = chain::chain_rows(seq + n, hash.clone(), entries)?;
    let moved = tx
        .prepare_cached(
            "UPDATE activity_chains SET last_seq = ?1, last_hash = ?2 \
             WHERE workspace_id = ?3 AND last_seq = ?4 AND last_hash = ?5",
        )
        .and_then(|mut s| s.execute(params![seq + n, head, ws, seq, hash]))
        .map_err(store_error)?;
    if moved == 1 {
        return Ok(Some((rows, seq + n, head)));
    }
    heads.forget(ws);
    Ok(None)
}

/// How many rows one `INSERT` of [`insert_rows`] carries: a batch goes out in as few statements
/// as these sizes allow, so that at most three statements are cached for it. One statement opens
/// its cursors on the table and its indexes once for all its rows, and a cursor left on the last
/// leaf it wrote takes the next row there without descending from the root again.
const ROWS_PER_INSERT: [usize; 3] = [32, 8, 1];

/// Values each row binds.
const INSERT_COLUMNS: usize = 15;

/// The `INSERT` of `ROWS_PER_INSERT[size]` rows of the activity table.
fn insert_sql(size: usize) -> &'static str {
    static SQL: std::sync::OnceLock<[String; ROWS_PER_INSERT.len()]> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        ROWS_PER_INSERT.map(|n| {
            let rows: Vec<String> = (0..n)
                .map(|r| {
                    let at = r * INSERT_COLUMNS;
                    let values: Vec<String> = (1..=INSERT_COLUMNS)
                        .map(|c| format!("?{}", at + c))
                        .collect();
                    format!("({})", values.join(", "))
                })
                .collect();
            format!(
                "INSERT INTO activity (id, workspace_id, actor_kind, actor_id, agent_id, \
                 activity_type, outcome, description, metadata, project_id, task_id, page_id, \
                 created_at, seq, hash) VALUES {}",
                rows.join(", ")
            )
        })
    });
    &sql[size]
}

/// Inserts chained `rows` (from `chain::chain_rows`), in order.
fn insert_rows(tx: &Connection, rows: &[activity::Model]) -> StoreResult<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        let (size, n) = ROWS_PER_INSERT
            .into_iter()
            .enumerate()
            .find(|&(_, n)| n <= rest.len())
            .expect("the last size is one row");
        let (now, later) = rest.split_at(n);
        let mut insert = tx.prepare_cached(insert_sql(size)).map_err(store_error)?;
        for (r, m) in now.iter().enumerate() {
            let at = r * INSERT_COLUMNS;
            let created_at = timestamp(&m.created_at);
            let values: [&dyn rusqlite::ToSql; INSERT_COLUMNS] = [
                &m.id,
                &m.workspace_id,
                &m.actor_kind,
                &m.actor_id,
                &m.agent_id,
                &m.activity_type,
                &m.outcome,
                &m.description,
                &m.metadata,
                &m.project_id,
                &m.task_id,
                &m.page_id,
                &created_at,
                &m.seq,
                &m.hash,
            ];
            for (c, value) in values.into_iter().enumerate() {
                insert
                    .raw_bind_parameter(at + c + 1, value)
                    .map_err(store_error)?;
            }
        }
        insert.raw_execute().map_err(store_error)?;
        rest = later;
    }
    Ok(())
}

/// Frees SQLite's page caches, of every connection in the process (the pool's, the direct
/// readers', the writer's), and hands the C heap's free pages back to the system: after
/// start-up and after a walk of the audit chain, whose pages would otherwise stay with the
/// process at rest. A reader's cache is dropped anyway at the next commit it sees. Pages in use
/// are left alone.
pub fn release_cache_memory() {
    // SAFETY: sqlite3_release_memory takes SQLite's own mutexes and frees only unpinned cache
    // pages (the bundled library is built with SQLITE_ENABLE_MEMORY_MANAGEMENT, so every
    // connection's cache is in the one group it walks); any thread may call it.
    let freed = unsafe { rusqlite::ffi::sqlite3_release_memory(i32::MAX) };
    // SQLite allocates with the C library's malloc, whose per-thread arenas keep freed memory;
    // malloc_trim hands back every whole free page of every arena.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the C allocator's own arenas, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
    tracing::debug!(freed, "released SQLite's page caches");
}

/// A timestamp as sqlx stores a `DateTime<Utc>` in SQLite, so both writers' rows read and
/// compare alike.
fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// Classified as the pool's errors are (`StoreError: From<DbErr>`): a busy or locked database
/// is unavailable, a duplicate is a conflict, anything else (a full disk too) a failed query.
fn store_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    let text = e.to_string();
    match e.sqlite_error_code() {
        _ if is_busy(&e) => StoreError::Unavailable(text),
        Some(ConstraintViolation) if text.contains("UNIQUE") => StoreError::Conflict(text),
        _ => StoreError::Query(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache bytes a connection holds (SQLITE_DBSTATUS_CACHE_USED).
    fn cache_used(conn: &Connection) -> i32 {
        let (mut now, mut peak) = (0, 0);
        // SAFETY: the handle is the open connection's; both out-pointers are valid.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_db_status(
                conn.handle(),
                rusqlite::ffi::SQLITE_DBSTATUS_CACHE_USED,
                &mut now,
                &mut peak,
                0,
            )
        };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
        now
    }

    /// The checkpoint thread's early sync reaches the WAL and the database file through the
    /// connection's own handles on them.
    #[test]
    fn sync_ahead_syncs_the_wal_and_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("sync.db")).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        assert!(passive(&conn).unwrap() > 0, "the WAL holds the commits");
        assert_eq!(sync_ahead(&conn), 2);
    }

    /// A connection that read a file's pages holds them in its cache until the release, which
    /// frees them (so start-up's reads do not stay in memory at rest); the data reads as before.
    #[test]
    fn release_cache_memory_frees_the_pages_connections_cached() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("cache.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO t SELECT i, hex(randomblob(200)) FROM n;",
        )
        .unwrap();
        let total = || -> i64 {
            conn.query_row("SELECT sum(length(body)) FROM t", [], |r| r.get(0))
                .unwrap()
        };
        let sum = total();
        let cached = cache_used(&conn);
        assert!(
            cached > 500_000,
            "the table's pages are cached: {cached} bytes"
        );
        release_cache_memory();
        let left = cache_used(&conn);
        assert!(
            left < cached / 10,
            "{cached} bytes cached before, {left} after"
        );
        assert_eq!(total(), sum);
    }
}
