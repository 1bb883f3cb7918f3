//! The store: the only module that knows about SeaORM and SQL.
//!
//! Services open a [`Tx`] (a read or write transaction), call its methods, and commit. Dropping a
//! `Tx` without committing rolls it back, so an error anywhere in a service leaves nothing behind.
//! Every method takes the workspace id: no query here ever crosses workspaces.
//!
//! Lookups by a unique key use `.all()`, not `.one()`: `.one()` binds `LIMIT ?`, and SQLite
//! re-prepares a statement whose LIMIT is bound on every execution, so it could never be reused.

mod auth_cache;
mod chain;
mod checkpoints;
mod console;
mod convert;
mod dedicated;
mod direct;
mod entities;
mod hygiene;
mod inbound;
mod members;
mod notify;
mod oidc_logins;
mod outbox;
pub mod preflight;
mod sealed;
mod signing_keys;
mod wal_vfs;
mod webhook_secrets;
mod work_cache;

pub use auth_cache::{CredentialView, MemberView, Seen};
pub use chain::{ChainHead, ChainedEntry, genesis_hash};
pub use checkpoints::{AuditKeyRow, CheckpointCandidate, CheckpointRow};
pub use console::{AgentOrder, ConsoleSessionRow, LoginLinkRow};
pub use direct::{IntactChain, release_cache_memory};
pub use inbound::InboundReceipt;
pub use oidc_logins::PendingOidcLogin;
pub use outbox::{DeliveryAttempt, DeliveryClaim};
pub use preflight::Create;
pub use sealed::{MasterKey, SecretsStatus};
pub use signing_keys::SigningKeyRow;
pub use work_cache::AgentWork;

use crate::domain::*;
use chrono::{DateTime, Utc};
use entities::*;
use migrations::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, RuntimeErr, Select, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

/// Failures of the store. Callers see "unavailable" (try again later) or "corrupt" (a bug or a bad
/// manual edit); the database's own message goes to the log, not to agents.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The configured database cannot be used as configured (missing, read-only, wrong
    /// credentials, no such database): fixing it takes a person, not a retry.
    #[error("{0}")]
    Misconfigured(String),
    #[error("database error: {0}")]
    Query(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("conflicting write: {0}")]
    Conflict(String),
}

/// Errors of the statements the store runs through sqlx itself, around SeaORM.
fn sqlx_error(e: sea_orm::sqlx::Error) -> StoreError {
    use sea_orm::sqlx::Error as E;
    match e {
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::WorkerCrashed => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Query(other.to_string()),
    }
}

/// Whether `e` says the connection is gone: a socket error, or PostgreSQL ending the session
/// (class 57P: an administrator, a crash or a shutdown; class 08: a connection exception). A
/// statement that failed so may have run or not; a `BEGIN` that failed so left nothing behind.
fn connection_lost(e: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error as E;
    match e {
        E::Io(_) => true,
        E::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

/// [`connection_lost`] for an error SeaORM passed on.
fn db_connection_lost(e: &DbErr) -> bool {
    use sea_orm::RuntimeErr::SqlxError;
    match e {
        DbErr::Conn(SqlxError(e)) | DbErr::Exec(SqlxError(e)) | DbErr::Query(SqlxError(e)) => {
            connection_lost(e)
        }
        _ => false,
    }
}

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> Self {
        let text = preflight::strip_source_line(&e.to_string());
        match e {
            DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => StoreError::Unavailable(text),
            _ if text.contains("UNIQUE constraint") || text.contains("duplicate key") => {
                StoreError::Conflict(text)
            }
            _ if text.contains("database is locked") || text.contains("PoolTimedOut") => {
                StoreError::Unavailable(text)
            }
            _ => StoreError::Query(text),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A pooled connection to SQLite or PostgreSQL. Cheap to clone: every request clones it (in
/// its router's state), so it is one shared allocation.
#[derive(Clone)]
pub struct Store(Arc<Shared>);

impl std::ops::Deref for Store {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Agents (workspace, agent, when) and keys (id, when) to mark as seen ([`Tx::mark_seen`]).
pub type Touches<'a> = (
    &'a [(String, String, DateTime<Utc>)],
    &'a [(String, DateTime<Utc>)],
);

/// What a [`Store`] shares between its clones.
#[derive(Clone)]
pub struct Shared {
    db: DatabaseConnection,
    /// Woken after every local commit that wrote events, so feeds need not wait for their poll.
    events_committed: Arc<Notify>,
    /// Credentials and members as last read, valid while the authorization generation holds.
    auth: Arc<auth_cache::AuthCache>,
    /// Agents' current work as last read, valid while the work generation holds.
    work: Arc<work_cache::WorkCache>,
    /// The database for messages: an absolute SQLite path or `postgres://host:port/db`.
    location: Arc<str>,
    /// Seals secrets on write and opens them on read (see `sealed`).
    sealer: Arc<sealed::Sealer>,
    /// SQLite only: reads of the generations on the calling thread, once the file has them.
    direct: Arc<std::sync::OnceLock<direct::DirectReader>>,
    /// SQLite file only: the audit writer's appends in one go (see `direct`).
    direct_writer: Arc<std::sync::OnceLock<Arc<direct::DirectWriter>>>,
    /// Set once the direct writer's checkpoint thread runs: the writer connection then leaves
    /// checkpoints to it.
    checkpoints_apart: Arc<AtomicBool>,
    /// Reads of the generations shared by concurrent requests (where `direct` cannot serve).
    shared_reads: Arc<auth_cache::SharedReads>,
    /// Chain heads as this process last committed them (see `chain::KnownHeads`).
    known_heads: Arc<chain::KnownHeads>,
    /// PostgreSQL: the audit writer's connection for its one-statement appends (`dedicated`).
    appender: Arc<dedicated::Dedicated>,
    /// SQLite only: this process's writers queue here, first come first served. SQLite has one
    /// writer; left to its busy handler, waiting writers poll with sleeps of up to 100 ms.
    writers: Arc<tokio::sync::Mutex<()>>,
    /// A SQLite file's one connection for writes. With writes spread over the pool, each began on
    /// a connection whose page cache another connection's commit had invalidated, and read back
    /// the pages it was about to change (a tenth of the audit writer's time). `None`: `db`.
    writer: Option<DatabaseConnection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish()
    }
}

/// How long a SQLite writer waits for its turn, in this process (`Store::writers`) and for
/// other processes (the busy timeout).
const WRITER_WAIT: Duration = Duration::from_secs(10);

/// `Database::connect`, tried again while a SQLite file answers "database is locked" (up to
/// [`WRITER_WAIT`]): replicas starting together on a brand-new file race to switch it to WAL,
/// and SQLite refuses a loser at once rather than through the busy timeout (it holds a read
/// lock while asking for the write lock, and waiting could deadlock).
async fn connect(
    url: &str,
    options: impl Fn() -> ConnectOptions,
) -> StoreResult<DatabaseConnection> {
    let deadline = std::time::Instant::now() + WRITER_WAIT;
    loop {
        // Boxed: the connector's future is tens of kB, moved on the stack as it is built.
        match Box::pin(Database::connect(options())).await {
            Err(e) if url.starts_with("sqlite:") && sqlite_busy(&e) => {
                if std::time::Instant::now() >= deadline {
                    return Err(preflight::diagnose_connect(url, &e));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            connected => return connected.map_err(|e| preflight::diagnose_connect(url, &e)),
        }
    }
}

/// SQLite's `SQLITE_BUSY` or `SQLITE_LOCKED`, with any extended code.
fn sqlite_busy(e: &DbErr) -> bool {
    let (DbErr::Conn(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e))) = e else {
        return false;
    };
    let code = e.as_database_error().and_then(|d| d.code());
    code.and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

/// Turns a plain path into a SQLite URL that creates the file on first use.
pub fn database_url_for_path(path: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Key of the PostgreSQL advisory lock held while migrating (an arbitrary constant, "parallax"
/// in ASCII, so it cannot collide with another application's key by accident).
const MIGRATION_LOCK_KEY: i64 = 0x7061_7261_6c6c_6178;

/// A session-level advisory lock on one connection taken out of the pool. Session locks belong
/// to a connection, so lock and unlock must run on the same one; the connection is detached so
/// it never goes back to the pool still holding the lock. If the holder is dropped without
/// `release` (cancelled, panicked), the connection closes and the server frees the lock.
struct MigrationLock {
    conn: sea_orm::sqlx::PgConnection,
}

impl MigrationLock {
    async fn acquire(pool: &sea_orm::sqlx::PgPool) -> StoreResult<MigrationLock> {
        let unavailable = |e: sea_orm::sqlx::Error| {
            StoreError::Unavailable(preflight::strip_source_line(&e.to_string()))
        };
        let mut conn = pool.acquire().await.map_err(unavailable)?.detach();
        sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(MigrationLock { conn })
    }

    /// Unlocks and closes the connection. Never fails: if the unlock does not go through, closing
    /// the session releases the lock anyway.
    async fn release(mut self) {
        use sea_orm::sqlx::Connection;
        if let Err(e) = sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut self.conn)
            .await
        {
            tracing::warn!(error = %e, "releasing the migration lock; closing its connection");
        }
        let _ = self.conn.close().await;
    }
}

/// Applies up to `steps` pending migrations (all when `None`) on `db`; returns their names.
async fn apply_migrations<'c, C>(db: &'c C, steps: Option<u32>) -> StoreResult<Vec<String>>
where
    C: ConnectionTrait,
    &'c C: sea_orm::IntoDatabaseExecutor<'c>,
{
    let pending = Migrator::get_pending_migrations(db).await?;
    let take = steps.map_or(pending.len(), |n| n as usize);
    let applying: Vec<String> = pending
        .iter()
        .take(take)
        .map(|m| m.name().to_owned())
        .collect();
    if !applying.is_empty() {
        Migrator::up(db, steps).await?;
    }
    Ok(applying)
}

/// How the store connects to `url`: SQLite's pragmas and pool sizes, PostgreSQL's pool.
/// `connections` overrides the pool's size (SQLite's writer connection is a pool of one).
/// `checkpoints_apart`, for SQLite's writer connection: once set, each connection it opens leaves
/// WAL checkpoints to the direct writer's thread (see `direct`).
fn connect_options(
    url: &str,
    create: Create,
    connections: Option<u32>,
    checkpoints_apart: Option<Arc<AtomicBool>>,
) -> ConnectOptions {
    let mut opts = ConnectOptions::new(url.to_owned());
    // The pool pings a connection before handing it out only when it sat idle (`hygiene`): one
    // in use a moment ago is alive or fails its statement, and the round trip is not free.
    opts.sqlx_logging(false)
        .test_before_acquire(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        // No reaper: sqlx 0.9's idle-connection sweep can read a wrapped idle count and spin
        // without yielding (transact-rs/sqlx#3645), which hung a CLI command at exit at 100% CPU
        // here and can stall a server's worker thread. Idle connections are pinged before use
        // instead (`hygiene`), and the pool never holds more than its maximum.
        .idle_timeout(None::<Duration>)
        .max_lifetime(None::<Duration>);
    if url.starts_with("sqlite:") {
        // WAL lets readers run beside the single writer; the busy timeout makes writers queue
        // instead of failing; foreign keys are off by default in SQLite.
        let in_memory = url.contains(":memory:");
        let size = if in_memory { 1 } else { 8 };
        // A commit's WAL frames go to the file in one write (`wal_vfs`).
        let vfs = (!in_memory).then(wal_vfs::name).flatten();
        opts.max_connections(connections.unwrap_or(size))
            .min_connections(1)
            .map_sqlx_sqlite_opts(move |o| {
                let o = match vfs {
                    Some(vfs) => o.vfs(vfs),
                    None => o,
                };
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(WRITER_WAIT)
                    .foreign_keys(true)
                    // A batch's multi-row insert keeps a statement journal; in memory it is
                    // not a temporary file created and closed at every commit.
                    .pragma("temp_store", "memory")
                    .pragma("journal_size_limit", direct::WAL_SIZE_LIMIT.to_string())
                    // No mmap: a connection that begins a read after another's commit unmaps
                    // the whole file (SQLite's pagerBeginReadTransaction), and with an audit
                    // commit every few milliseconds that munmap and its page faults cost more
                    // than the preads they save (measured: 9% of the server's CPU).
                    .create_if_missing(create == Create::IfMissing)
            })
            .map_sqlx_sqlite_pool_opts(move |o| {
                let o = hygiene::guard_sqlite(o);
                let Some(apart) = checkpoints_apart.clone() else {
                    return o;
                };
                o.after_connect(move |conn, _meta| {
                    let apart = apart.load(Ordering::Relaxed);
                    Box::pin(async move {
                        if apart {
                            sea_orm::sqlx::query("PRAGMA wal_autocheckpoint = 0")
                                .execute(conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
            });
    } else {
        opts.max_connections(connections.unwrap_or(16))
            .min_connections(1)
            .map_sqlx_postgres_pool_opts(hygiene::guard_postgres);
    }
    opts
}

impl Store {
    /// Connects without touching the schema, creating a missing SQLite file. `url` is
    /// `sqlite://path?mode=rwc`, `sqlite::memory:` or `postgres://…`.
    pub async fn connect(url: &str) -> StoreResult<Store> {
        Store::connect_with(url, Create::IfMissing).await
    }

    /// Connects without touching the schema; with [`Create::Never`] a missing SQLite file is an
    /// error naming its absolute path. Common mistakes (no such directory, read-only file,
    /// refused PostgreSQL port) are diagnosed first, in one line (see [`preflight`]).
    pub async fn connect_with(url: &str, create: Create) -> StoreResult<Store> {
        preflight::check(url, create).await?;
        let db = connect(url, || connect_options(url, create, None, None)).await?;
        let checkpoints_apart = Arc::new(AtomicBool::new(false));
        // An in-memory database is one connection already; PostgreSQL has no single writer.
        let writer = if url.starts_with("sqlite:") && !url.contains(":memory:") {
            Some(
                connect(url, || {
                    connect_options(url, create, Some(1), Some(checkpoints_apart.clone()))
                })
                .await?,
            )
        } else {
            None
        };
        let store = Store(Arc::new(Shared {
            db,
            events_committed: Arc::default(),
            auth: Arc::default(),
            work: Arc::default(),
            location: preflight::location(url).into(),
            sealer: Arc::default(),
            direct: Arc::default(),
            direct_writer: Arc::default(),
            checkpoints_apart,
            writers: Arc::default(),
            shared_reads: Arc::default(),
            known_heads: Arc::default(),
            appender: Arc::default(),
            writer,
        }));
        store.set_up_direct().await;
        Ok(store)
    }

    /// Sets up direct reads and appends of a SQLite file (see `direct`) if it has the
    /// generations yet.
    async fn set_up_direct(&self) {
        if self.direct.get().is_some() || self.db.get_database_backend() != DbBackend::Sqlite {
            return;
        }
        // The file the pool really opened (empty for an in-memory database).
        let file = sea_orm::sqlx::query_scalar::<_, String>(
            "SELECT file FROM pragma_database_list WHERE name = 'main'",
        )
        .fetch_one(self.db.get_sqlite_connection_pool())
        .await;
        if let Ok(file) = file
            && !file.is_empty()
            && let Some(reader) = direct::DirectReader::open(file.clone().into())
        {
            let _ = self.direct.set(reader);
            let writer = Arc::new(direct::DirectWriter::new(
                file.into(),
                self.writers.clone(),
                self.known_heads.clone(),
            ));
            // The pool's writer connection leaves checkpoints to the direct writer's thread as
            // well: the one open now, and any it opens later (`connect_options`).
            if writer.checkpoints_apart() {
                self.checkpoints_apart.store(true, Ordering::Relaxed);
                if let Some(pool) = &self.writer {
                    let _ = pool
                        .execute_unprepared("PRAGMA wal_autocheckpoint = 0")
                        .await;
                }
            }
            let _ = self.direct_writer.set(writer);
        }
    }

    /// Connects (creating a missing SQLite file) and applies pending migrations.
    pub async fn open(url: &str) -> StoreResult<Store> {
        Store::open_with(url, Create::IfMissing).await
    }

    /// Connects as [`Store::connect_with`] does and applies pending migrations: what every
    /// command does on start.
    pub async fn open_with(url: &str, create: Create) -> StoreResult<Store> {
        let store = Store::connect_with(url, create).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Seals secrets under `key` from now on (none: stored as they are), after checking that
    /// every stored secret opens with it: a sealed secret under another key, or under a key
    /// while none is given, is `Misconfigured` (a wrong master key stops the start, not a later
    /// token check). Says how many secrets are sealed and how many plain.
    pub async fn with_master_key(
        mut self,
        key: Option<MasterKey>,
    ) -> StoreResult<(Store, SecretsStatus)> {
        let sealer = sealed::Sealer::new(key);
        let status = sealed::check(&self.db, &sealer).await?;
        let mut shared = Shared::clone(&self.0);
        shared.sealer = Arc::new(sealer);
        self = Store(Arc::new(shared));
        Ok((self, status))
    }

    /// Seals every plain secret under this store's master key (`secrets encrypt`); returns how
    /// many. Without a master key it is `Misconfigured`.
    pub async fn encrypt_secrets(&self) -> StoreResult<usize> {
        let key = self.sealer.key().ok_or_else(|| {
            StoreError::Misconfigured(
                "no master key: set PARALLAX_MASTER_KEY or [secrets] master_key_file first".into(),
            )
        })?;
        sealed::reseal(&self.db, &self.sealer, key).await
    }

    /// Re-seals every secret under `new` (`secrets rotate-master`), opening them with this
    /// store's key; returns how many values were rewritten.
    pub async fn rotate_master_key(&self, new: &MasterKey) -> StoreResult<usize> {
        sealed::reseal(&self.db, &self.sealer, new).await
    }

    /// The database in use, for messages: an absolute SQLite path or `postgres://host:port/db`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Applies pending migrations; returns the names of those applied (empty when up to date).
    pub async fn migrate(&self) -> StoreResult<Vec<String>> {
        let applied = self.migrate_exclusively(None).await?;
        if !applied.is_empty() {
            // The generations table may be new.
            self.set_up_direct().await;
        }
        Ok(applied)
    }

    /// Applies at most `steps` pending migrations, oldest first; returns the names applied. Lets
    /// the upgrade test build a database one migration at a time, as successive releases would.
    pub async fn migrate_steps(&self, steps: u32) -> StoreResult<Vec<String>> {
        self.migrate_exclusively(Some(steps)).await
    }

    /// Migrates while holding a database-wide lock, so replicas starting together on one
    /// database queue up: the first applies the migrations, the others then find none pending.
    /// Without it they would all create the same tables and all but one would fail to start.
    async fn migrate_exclusively(&self, steps: Option<u32>) -> StoreResult<Vec<String>> {
        match self.db.get_database_backend() {
            DbBackend::Postgres => {
                let lock = MigrationLock::acquire(self.db.get_postgres_connection_pool()).await?;
                let result = apply_migrations(&self.db, steps).await;
                lock.release().await;
                result
            }
            _ => {
                // SQLite has no advisory locks, but its DDL is transactional: one `BEGIN
                // IMMEDIATE` transaction holds the write lock for the whole run (other starters
                // wait on the busy timeout) and leaves nothing half-applied on failure.
                let tx = self
                    .db
                    .begin_with_options(TransactionOptions {
                        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                        ..Default::default()
                    })
                    .await?;
                let applied = apply_migrations(&tx, steps).await?;
                tx.commit().await?;
                Ok(applied)
            }
        }
    }

    /// Names of migrations not yet applied.
    pub async fn pending_migrations(&self) -> StoreResult<Vec<String>> {
        Ok(Migrator::get_pending_migrations(&self.db)
            .await?
            .iter()
            .map(|m| m.name().to_owned())
            .collect())
    }

    /// Whether the database is a PostgreSQL server, whose commits are round trips.
    pub fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Postgres
    }

    pub fn backend_name(&self) -> &'static str {
        match self.db.get_database_backend() {
            DbBackend::Sqlite => "sqlite",
            DbBackend::Postgres => "postgres",
            _ => "other",
        }
    }

    /// The connection pool's size, idle connections and cap, for metrics.
    pub fn pool_stats(&self) -> Option<(u32, u32, u32)> {
        let stats = |size: u32, idle: usize, max: u32| (size, idle as u32, max);
        match self.db.get_database_backend() {
            DbBackend::Sqlite => {
                let p = self.db.get_sqlite_connection_pool();
                Some(stats(
                    p.size(),
                    p.num_idle(),
                    p.options().get_max_connections(),
                ))
            }
            DbBackend::Postgres => {
                let p = self.db.get_postgres_connection_pool();
                Some(stats(
                    p.size(),
                    p.num_idle(),
                    p.options().get_max_connections(),
                ))
            }
            _ => None,
        }
    }

    /// Webhook deliveries still pending (all workspaces) and when the oldest was created, for
    /// metrics: two indexed reads outside any transaction.
    pub async fn outbox_backlog(&self) -> StoreResult<(u64, Option<DateTime<Utc>>)> {
        let pending = || {
            webhook_delivery::Entity::find()
                .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        };
        let count = pending().count(&self.db).await?;
        let oldest = pending()
            .select_only()
            .column_as(webhook_delivery::Column::CreatedAt.min(), "oldest")
            .into_tuple::<Option<DateTime<Utc>>>()
            .one(&self.db)
            .await?
            .flatten();
        Ok((count, oldest))
    }

    /// Round-trips to the database, for readiness checks.
    pub async fn ping(&self) -> StoreResult<()> {
        self.probe(|| self.db.ping())
            .await
            .map_err(|e| StoreError::Unavailable(preflight::strip_source_line(&e.to_string())))
    }

    /// Runs a readiness probe's `once` until it succeeds or has failed as often as a dead
    /// connection can explain. On PostgreSQL, a pooled connection whose backend is gone (a
    /// restart, a killed backend) fails its first use and is closed as it is released; it says
    /// nothing of the database, so a probe asks again, once for each connection the pool may hold
    /// and once more, and reports a failure only when a fresh connection fails too.
    async fn probe<E, F: Future<Output = Result<(), E>>>(
        &self,
        mut once: impl FnMut() -> F,
    ) -> Result<(), E> {
        let tries = self.dead_connections_possible() + 1;
        let mut result = once().await;
        for _ in 1..tries {
            if result.is_ok() {
                break;
            }
            result = once().await;
        }
        result
    }

    /// Commits a write that touches the database file, for readiness: on SQLite it rewrites the
    /// header's `user_version` with its own value, on PostgreSQL it assigns a transaction id. Fails
    /// while the store cannot commit (disk full, read-only file, I/O error, lock timeout); on
    /// PostgreSQL it asks again as [`Store::ping`] does.
    pub async fn probe_write(&self) -> StoreResult<()> {
        self.probe(|| self.probe_write_once()).await
    }

    async fn probe_write_once(&self) -> StoreResult<()> {
        let tx = self.write().await?;
        let backend = tx.tx.get_database_backend();
        match backend {
            DbBackend::Sqlite => {
                let row = tx
                    .tx
                    .query_one_raw(sea_orm::Statement::from_string(
                        backend,
                        "PRAGMA user_version",
                    ))
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("no user_version".into()))?;
                let version: i64 = row.try_get_by_index(0)?;
                tx.tx
                    .execute_unprepared(&format!("PRAGMA user_version = {version}"))
                    .await?;
            }
            _ => {
                tx.tx
                    .execute_unprepared("SELECT pg_current_xact_id()")
                    .await?;
            }
        }
        tx.commit().await
    }

    /// Notified after each local commit that wrote events (other replicas' commits are seen by
    /// polling).
    pub fn events_committed(&self) -> Arc<Notify> {
        self.events_committed.clone()
    }

    fn tx(&self, tx: DatabaseTransaction) -> Tx {
        Tx {
            tx,
            _writing: None,
            checkpoints: None,
            pending_activity: Mutex::default(),
            pending_events: Mutex::default(),
            chained: Mutex::default(),
            known_heads: self.known_heads.clone(),
            events_committed: self.events_committed.clone(),
            sealer: self.sealer.clone(),
        }
    }

    /// A transaction for reads.
    pub async fn read(&self) -> StoreResult<Tx> {
        let span = crate::telemetry::traces::child_span(|| {
            tracing::info_span!("store.begin", mode = "read")
        });
        Ok(self.tx(self.begin_live().instrument(span).await?))
    }

    /// How many pooled connections may have lost their backend unseen: on PostgreSQL, as many
    /// as the pool may hold (a restart or a killed backend ends them all); none on SQLite, whose
    /// connections are files.
    fn dead_connections_possible(&self) -> u32 {
        match self.db.get_database_backend() {
            DbBackend::Postgres => self
                .db
                .get_postgres_connection_pool()
                .options()
                .get_max_connections(),
            _ => 0,
        }
    }

    /// A transaction begun on the pool. On PostgreSQL a pooled connection whose backend is gone
    /// (a restart, a killed backend, a proxy that dropped it) fails its first use and is closed
    /// as it is released; that says nothing of the database and must not fail a call. A `BEGIN`
    /// that failed so left nothing behind, so it is sent again on another connection, once for
    /// each connection the pool may hold: the last try gets a new one.
    async fn begin_live(&self) -> Result<DatabaseTransaction, DbErr> {
        let may_be_dead = self.dead_connections_possible();
        let mut dead = 0;
        loop {
            match self.db.begin().await {
                Err(e) if dead < may_be_dead && db_connection_lost(&e) => {
                    dead += 1;
                    tracing::debug!(error = %e, "a pooled connection was gone; beginning on another");
                }
                begun => return begun,
            }
        }
    }

    /// A transaction that will write. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`), so two writers queue instead of deadlocking on upgrade: in this process on
    /// `writers`, in order, and behind other processes on the busy timeout.
    pub async fn write(&self) -> StoreResult<Tx> {
        let span = crate::telemetry::traces::child_span(|| {
            tracing::info_span!("store.begin", mode = "write")
        });
        let begin = async {
            Ok::<_, StoreError>(match self.db.get_database_backend() {
                DbBackend::Sqlite => {
                    let turn = self.writer_turn().await?;
                    let tx = self
                        .writer
                        .as_ref()
                        .unwrap_or(&self.db)
                        .begin_with_options(TransactionOptions {
                            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                            ..Default::default()
                        })
                        .await?;
                    (tx, Some(turn))
                }
                _ => (self.begin_live().await?, None),
            })
        };
        let (tx, turn) = begin.instrument(span).await?;
        let mut tx = self.tx(tx);
        if turn.is_some() {
            tx.checkpoints = self.direct_writer.get().cloned();
        }
        tx._writing = turn;
        Ok(tx)
    }

    /// This process's turn to write to SQLite (see `writers`). Waits as long as SQLite's own busy
    /// timeout: a writer that never lets go fails the others as "database is locked" would,
    /// instead of hanging them.
    async fn writer_turn(&self) -> StoreResult<tokio::sync::OwnedMutexGuard<()>> {
        tokio::time::timeout(WRITER_WAIT, self.writers.clone().lock_owned())
            .await
            .map_err(|_| {
                StoreError::Unavailable("database is locked: waited too long to write".into())
            })
    }

    /// Commits audit entries alone (the audit writer's batches without a writing tool's
    /// change), chained as [`Tx::commit`] chains them, marking the agents and keys in `touches`
    /// as seen. On a SQLite file the whole transaction runs on this thread when it cannot wait
    /// (the file's write lock is free), else in one hand-off to a blocking thread
    /// (`direct::DirectWriter`); elsewhere it is a transaction like any other.
    ///
    /// With `expect`, the entries commit only if the generations are still those when the commit
    /// reads them (decisions made on an unconfirmed caller, see
    /// [`Store::unconfirmed_credential_view`]); if not, nothing is written and the entries come
    /// back.
    pub async fn append_activity(
        &self,
        entries: Vec<ActivityEntry>,
        touches: Touches<'_>,
        expect: Option<Seen>,
    ) -> StoreResult<Option<Vec<ActivityEntry>>> {
        let Some(writer) = self.direct_writer.get().cloned() else {
            let entries = match touches {
                ([], []) => match self.append_after_known_head(entries, expect).await? {
                    Some(entries) => entries,
                    None => return Ok(None),
                },
                _ => entries,
            };
            let tx = self.write().await?;
            // Read inside the transaction that commits the entries: after every request whose
            // decision they record arrived.
            if let Some(expect) = expect
                && tx.read_generations().await? != expect
            {
                return Ok(Some(entries));
            }
            tx.insert_activities(entries).await?;
            tx.mark_seen(touches).await?;
            return tx.commit().await.map(|()| None);
        };
        let span = crate::telemetry::traces::child_span(|| tracing::info_span!("store.commit"));
        let turn = self.writer_turn().await?;
        let entries = match span.in_scope(|| writer.try_append(entries, touches, expect)) {
            Ok(written) => return written,
            Err(entries) => entries,
        };
        let (agents, keys) = (touches.0.to_vec(), touches.1.to_vec());
        let written = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            writer.append(entries, (&agents, &keys), expect)
        })
        .instrument(span)
        .await;
        written.map_err(|e| StoreError::Unavailable(format!("audit append stopped: {e}")))?
    }

    pub async fn close(self) {
        if let Some(writer) = self.writer.clone() {
            let _ = writer.close().await;
        }
        let _ = self.db.clone().close().await;
    }
}

/// An open transaction. Commit to keep its writes; drop to roll back.
pub struct Tx {
    tx: DatabaseTransaction,
    /// A SQLite writer's turn (see `Store::writers`); declared after `tx`, so it is released
    /// only once the transaction has committed or been dropped.
    _writing: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// A SQLite file's checkpoints, which this writer's commit counts toward (`direct`).
    checkpoints: Option<Arc<direct::DirectWriter>>,
    /// Activity written by this transaction, chained and inserted at commit (see `chain`).
    pending_activity: Mutex<Vec<ActivityEntry>>,
    /// Events written by this transaction, inserted at commit (see `outbox`).
    pending_events: Mutex<Vec<Event>>,
    /// The chain heads this transaction's activity moved to (workspace, seq, hash), made known
    /// once it commits (see `chain::KnownHeads`).
    chained: Mutex<Vec<(String, i64, String)>>,
    known_heads: Arc<chain::KnownHeads>,
    events_committed: Arc<Notify>,
    sealer: Arc<sealed::Sealer>,
}

/// A point in a transaction to roll back to: how much activity and how many events were queued.
#[derive(Debug)]
pub struct Savepoint {
    activity: usize,
    events: usize,
}

/// The condition of the partial actor index (migration m20261205_100000), spelled as the
/// migration writes it: a query must name it to use the index.
const ACTOR_INDEX_CONDITION: &str =
    "(\"actor_kind\" <> 'agent' OR \"agent_id\" IS NULL OR \"agent_id\" <> \"actor_id\")";

/// Filters for the activity log.
#[derive(Debug, Clone, Default)]
pub struct ActivityQuery {
    pub agent_id: Option<String>,
    pub project_id: Option<String>,
    pub task_id: Option<String>,
    pub activity_type: Option<String>,
    /// Only entries by this actor (a member's email, an agent's id, `system`, `control-plane`).
    pub actor_id: Option<String>,
    /// Only entries with this outcome (`allowed`, `denied`).
    pub outcome: Option<String>,
    /// Only entries written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries written before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only entries older than this id (the previous page's last id).
    pub before: Option<String>,
    pub limit: u64,
}

impl Tx {
    /// Commits, first chaining the activity and numbering the events this transaction wrote (the
    /// chain head's and then the outbox counter's locks are taken here, last and always in that
    /// order, so seq order is commit order without lock-order deadlocks).
    pub async fn commit(self) -> StoreResult<()> {
        let span = crate::telemetry::traces::child_span(|| tracing::info_span!("store.commit"));
        async {
            self.flush_activity().await?;
            let wrote_events = self.flush_events().await?;
            self.tx.commit().await?;
            if let Ok(mut chained) = self.chained.lock() {
                self.known_heads.learn(std::mem::take(&mut *chained));
            }
            if let Some(checkpoints) = &self.checkpoints {
                checkpoints.committed();
            }
            if wrote_events {
                self.events_committed.notify_waiters();
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Marks where a piece of a shared transaction starts (group commit runs each job under
    /// one), so [`Tx::rollback_to`] can undo that piece alone: its statements, and the activity
    /// and events it queued.
    pub async fn savepoint(&self) -> StoreResult<Savepoint> {
        self.execute_sql("SAVEPOINT job").await?;
        Ok(Savepoint {
            activity: self.pending_activity.lock().map_or(0, |p| p.len()),
            events: self.pending_events.lock().map_or(0, |p| p.len()),
        })
    }

    /// Keeps what was done since `_mark`.
    pub async fn release(&self, _mark: Savepoint) -> StoreResult<()> {
        self.execute_sql("RELEASE SAVEPOINT job").await
    }

    /// Undoes what was done since `mark`; the rest of the transaction stands. Fails (and the
    /// whole transaction must go) when the database already rolled everything back, as SQLite
    /// does on a full disk or an I/O error.
    pub async fn rollback_to(&self, mark: Savepoint) -> StoreResult<()> {
        self.execute_sql("ROLLBACK TO SAVEPOINT job").await?;
        self.execute_sql("RELEASE SAVEPOINT job").await?;
        if let Ok(mut p) = self.pending_activity.lock() {
            p.truncate(mark.activity);
        }
        if let Ok(mut p) = self.pending_events.lock() {
            p.truncate(mark.events);
        }
        Ok(())
    }

    /// Runs one fixed statement (no parameters, no rows) in this transaction.
    async fn execute_sql(&self, sql: &str) -> StoreResult<()> {
        let backend = self.tx.get_database_backend();
        self.tx
            .execute_raw(Statement::from_string(backend, sql))
            .await?;
        Ok(())
    }

    // ---- workspaces ----

    pub async fn insert_workspace(&self, w: &Workspace) -> StoreResult<()> {
        self.bump_auth_generation().await?;
        workspace::Entity::insert(convert::workspace_model(w)?.into_active_model())
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    pub async fn workspace_by_slug(&self, slug: &str) -> StoreResult<Option<Workspace>> {
        workspace::Entity::find()
            .filter(workspace::Column::Slug.eq(slug))
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(convert::workspace)
            .transpose()
    }

    pub async fn workspace_by_id(&self, id: &str) -> StoreResult<Option<Workspace>> {
        workspace::Entity::find_by_id(id.to_owned())
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(convert::workspace)
            .transpose()
    }

    pub async fn list_workspaces(&self) -> StoreResult<Vec<Workspace>> {
        workspace::Entity::find()
            .order_by_asc(workspace::Column::Slug)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::workspace)
            .collect()
    }

    pub async fn update_workspace_settings(
        &self,
        id: &str,
        settings: &WorkspaceSettings,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let json =
            serde_json::to_string(settings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.bump_auth_generation().await?;
        workspace::Entity::update_many()
            .col_expr(workspace::Column::Settings, Expr::value(json))
            .col_expr(workspace::Column::UpdatedAt, Expr::value(at))
            .filter(workspace::Column::Id.eq(id))
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    /// Takes the workspace's row lock for the rest of the transaction. Quota checks run after this,
    /// so two concurrent approvals cannot both see room for one more agent (on PostgreSQL the row
    /// lock serialises them; on SQLite the write transaction already does).
    pub async fn lock_workspace(&self, id: &str) -> StoreResult<()> {
        workspace::Entity::update_many()
            .col_expr(
                workspace::Column::LockVersion,
                Expr::col(workspace::Column::LockVersion).add(1),
            )
            .filter(workspace::Column::Id.eq(id))
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    // ---- members ----

    pub async fn insert_member(&self, m: &Member) -> StoreResult<()> {
        self.bump_auth_generation().await?;
        member::Entity::insert(convert::member_model(m).into_active_model())
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    pub async fn member_by_email(
        &self,
        workspace_id: &str,
        email: &str,
    ) -> StoreResult<Option<Member>> {
        member::Entity::find()
            .filter(member::Column::WorkspaceId.eq(workspace_id))
            .filter(member::Column::Email.eq(email))
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(convert::member)
            .transpose()
    }

    pub async fn list_members(&self, workspace_id: &str) -> StoreResult<Vec<Member>> {
        member::Entity::find()
            .filter(member::Column::WorkspaceId.eq(workspace_id))
            .order_by_asc(member::Column::Email)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::member)
            .collect()
    }

    pub async fn update_member_role(
        &self,
        workspace_id: &str,
        member_id: &str,
        role: Role,
    ) -> StoreResult<()> {
        self.bump_auth_generation().await?;
        member::Entity::update_many()
            .col_expr(member::Column::Role, Expr::value(role.as_str()))
            .filter(member::Column::WorkspaceId.eq(workspace_id))
            .filter(member::Column::Id.eq(member_id))
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    // ---- projects, tasks, pages ----

    pub async fn insert_project(&self, p: &Project) -> StoreResult<()> {
        self.bump_work_generation().await?;
        project::Entity::insert(convert::project_model(p).into_active_model())
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    pub async fn project(&self, workspace_id: &str, id: &str) -> StoreResult<Option<Project>> {
        project::Entity::find()
            .filter(project::Column::WorkspaceId.eq(workspace_id))
            .filter(project::Column::Id.eq(id))
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(convert::project)
            .transpose()
    }

    pub async fn projects_by_ids(
        &self,
        workspace_id: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Project>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        project::Entity::find()
            .filter(project::Column::WorkspaceId.eq(workspace_id))
            .filter(project::Column::Id.is_in(ids.iter().cloned()))
            .order_by_asc(project::Column::Id)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::project)
            .collect()
    }

    pub async fn list_projects(&self, workspace_id: &str) -> StoreResult<Vec<Project>> {
        project::Entity::find()
            .filter(project::Column::WorkspaceId.eq(workspace_id))
            .order_by_asc(project::Column::Id)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::project)
            .collect()
    }

    pub async fn insert_task(&self, t: &Task) -> StoreResult<()> {
        self.bump_work_generation().await?;
        task::Entity::insert(convert::task_model(t).into_active_model())
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    pub async fn update_task(&self, t: &Task) -> StoreResult<()> {
        self.bump_work_generation().await?;
        convert::task_model(t)
            .into_active_model()
            .reset_all()
            .update(&self.tx)
            .await?;
        Ok(())
    }

    pub async fn task(&self, workspace_id: &str, id: &str) -> StoreResult<Option<Task>> {
        task::Entity::find()
            .filter(task::Column::WorkspaceId.eq(workspace_id))
            .filter(task::Column::Id.eq(id))
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(convert::task)
            .transpose()
    }

    pub async fn tasks_by_ids(&self, workspace_id: &str, ids: &[String]) -> StoreResult<Vec<Task>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        task::Entity::find()
            .filter(task::Column::WorkspaceId.eq(workspace_id))
            .filter(task::Column::Id.is_in(ids.iter().cloned()))
            .order_by_asc(task::Column::Id)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::task)
            .collect()
    }

    pub async fn list_tasks(
        &self,
        workspace_id: &str,
        project_id: Option<&str>,
        status: Option<TaskStatus>,
    ) -> StoreResult<Vec<Task>> {
        let mut q = task::Entity::find().filter(task::Column::WorkspaceId.eq(workspace_id));
        if let Some(p) = project_id {
            q = q.filter(task::Column::ProjectId.eq(p));
        }
        if let Some(s) = status {
            q = q.filter(task::Column::Status.eq(s.as_str()));
        }
        q.order_by_asc(task::Column::Id)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::task)
            .collect()
    }

    pub async fn insert_page(&self, p: &Page) -> StoreResult<()> {
        page::Entity::insert(convert::page_model(p).into_active_model())
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    pub async fn page(&self, workspace_id: &str, id: &str) -> StoreResult<Option<Page>> {
        page::Entity::find()
            .filter(page::Column::WorkspaceId.eq(workspace_id))
            .filter(page::Column::Id.eq(id))
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(convert::page)
            .transpose()
    }

    pub async fn list_pages(
        &self,
        workspace_id: &str,
        project_id: Option<&str>,
    ) -> StoreResult<Vec<Page>> {
        let mut q = page::Entity::find().filter(page::Column::WorkspaceId.eq(workspace_id));
        if let Some(p) = project_id {
            q = q.filter(page::Column::ProjectId.eq(p));
        }
        q.order_by_asc(page::Column::Id)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::page)
            .collect()
    }

    // ---- agents ----

    pub async fn insert_agent(&self, a: &Agent) -> StoreResult<()> {
        self.bump_auth_generation().await?;
        agent::Entity::insert(convert::agent_model(a)?.into_active_model())
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    pub async fn update_agent(&self, a: &Agent) -> StoreResult<()> {
        self.bump_auth_generation().await?;
        convert::agent_model(a)?
            .into_active_model()
            .reset_all()
            .update(&self.tx)
            .await?;
        Ok(())
    }

    pub async fn agent(&self, workspace_id: &str, id: &str) -> StoreResult<Option<Agent>> {
        agent::Entity::find_by_id((workspace_id.to_owned(), id.to_owned()))
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(convert::agent)
            .transpose()
    }

    pub async fn list_agents(
        &self,
        workspace_id: &str,
        status: Option<AgentStatus>,
    ) -> StoreResult<Vec<Agent>> {
        let mut q = agent::Entity::find().filter(agent::Column::WorkspaceId.eq(workspace_id));
        if let Some(s) = status {
            q = q.filter(agent::Column::Status.eq(s.as_str()));
        }
        q.order_by_asc(agent::Column::Id)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::agent)
            .collect()
    }

    pub async fn count_agents(
        &self,
        workspace_id: &str,
        statuses: &[AgentStatus],
    ) -> StoreResult<u64> {
        Ok(agent::Entity::find()
            .filter(agent::Column::WorkspaceId.eq(workspace_id))
            .filter(agent::Column::Status.is_in(statuses.iter().map(|s| s.as_str())))
            .count(&self.tx)
            .await?)
    }

    /// Writes the agent's own working state (status, current task, message, seen), nothing that
    /// decides what it may do: no authorization change, so cached credentials stay valid.
    pub async fn update_agent_work(&self, a: &Agent) -> StoreResult<()> {
        agent::Entity::update_many()
            .col_expr(
                agent::Column::WorkingStatus,
                Expr::value(a.working_status.as_str()),
            )
            .col_expr(
                agent::Column::CurrentTaskId,
                Expr::value(a.current_task_id.clone()),
            )
            .col_expr(
                agent::Column::StatusMessage,
                Expr::value(a.status_message.clone()),
            )
            .col_expr(agent::Column::LastSeenAt, Expr::value(a.last_seen_at))
            .col_expr(agent::Column::UpdatedAt, Expr::value(a.updated_at))
            .filter(agent::Column::WorkspaceId.eq(a.workspace_id.as_str()))
            .filter(agent::Column::Id.eq(a.id.as_str()))
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    /// Marks agents as last seen and keys as last used (the audit writer's bookkeeping), without
    /// touching anything else about them.
    pub async fn mark_seen(&self, (agents, keys): Touches<'_>) -> StoreResult<()> {
        for (ws, agent, at) in agents {
            agent::Entity::update_many()
                .col_expr(agent::Column::LastSeenAt, Expr::value(*at))
                .filter(agent::Column::WorkspaceId.eq(ws.as_str()))
                .filter(agent::Column::Id.eq(agent.as_str()))
                .exec(&self.tx)
                .await?;
        }
        for (key, at) in keys {
            credential::Entity::update_many()
                .col_expr(credential::Column::LastUsedAt, Expr::value(*at))
                .filter(credential::Column::Id.eq(key.as_str()))
                .exec(&self.tx)
                .await?;
        }
        Ok(())
    }

    /// Approved agents whose access ended by `at` and whose expiry is not yet recorded.
    pub async fn unrecorded_expiries(
        &self,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<(String, String)>> {
        Ok(agent::Entity::find()
            .filter(agent::Column::Status.eq(AgentStatus::Approved.as_str()))
            .filter(agent::Column::AccessExpiresAt.lte(at))
            .filter(agent::Column::AccessExpiryRecordedAt.is_null())
            .order_by_asc(agent::Column::WorkspaceId)
            .order_by_asc(agent::Column::Id)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(|m| (m.workspace_id, m.id))
            .collect())
    }

    /// Marks an ended grant as recorded; true only for the one transaction that did it (the
    /// update's row lock makes a concurrent claimer re-check and find it taken).
    pub async fn claim_expiry(
        &self,
        workspace_id: &str,
        agent_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let res = agent::Entity::update_many()
            .col_expr(agent::Column::AccessExpiryRecordedAt, Expr::value(at))
            .filter(agent::Column::WorkspaceId.eq(workspace_id))
            .filter(agent::Column::Id.eq(agent_id))
            .filter(agent::Column::Status.eq(AgentStatus::Approved.as_str()))
            .filter(agent::Column::AccessExpiresAt.lte(at))
            .filter(agent::Column::AccessExpiryRecordedAt.is_null())
            .exec(&self.tx)
            .await?;
        Ok(res.rows_affected == 1)
    }

    // ---- credentials ----

    pub async fn insert_credential(&self, c: &Credential, hash: &KeyHash) -> StoreResult<()> {
        self.bump_auth_generation().await?;
        credential::Entity::insert(convert::credential_model(c, hash).into_active_model())
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    /// The credential whose stored hash equals `hash`, with that hash for a constant-time recheck.
    pub async fn credential_by_hash(
        &self,
        hash: &KeyHash,
    ) -> StoreResult<Option<(Credential, KeyHash)>> {
        Ok(credential::Entity::find()
            .filter(credential::Column::KeyHash.eq(hash.as_str()))
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(|m| {
                let stored = KeyHash::from_stored(m.key_hash.clone());
                (convert::credential(m), stored)
            }))
    }

    /// The credential with id `id`, with its stored hash.
    pub async fn credential_by_id(&self, id: &str) -> StoreResult<Option<(Credential, KeyHash)>> {
        Ok(credential::Entity::find_by_id(id.to_owned())
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(|m| {
                let stored = KeyHash::from_stored(m.key_hash.clone());
                (convert::credential(m), stored)
            }))
    }

    pub async fn list_credentials(
        &self,
        workspace_id: &str,
        agent_id: &str,
    ) -> StoreResult<Vec<Credential>> {
        Ok(credential::Entity::find()
            .filter(credential::Column::WorkspaceId.eq(workspace_id))
            .filter(credential::Column::AgentId.eq(agent_id))
            .order_by_asc(credential::Column::Id)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::credential)
            .collect())
    }

    /// Revokes every live key of an agent; returns how many were live.
    pub async fn revoke_credentials(
        &self,
        workspace_id: &str,
        agent_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        self.bump_auth_generation().await?;
        let res = credential::Entity::update_many()
            .col_expr(credential::Column::RevokedAt, Expr::value(at))
            .filter(credential::Column::WorkspaceId.eq(workspace_id))
            .filter(credential::Column::AgentId.eq(agent_id))
            .filter(credential::Column::RevokedAt.is_null())
            .exec(&self.tx)
            .await?;
        Ok(res.rows_affected)
    }

    // ---- assignments ----

    pub async fn insert_assignment(&self, a: &Assignment) -> StoreResult<()> {
        self.bump_work_generation().await?;
        assignment::Entity::insert(convert::assignment_model(a).into_active_model())
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    pub async fn end_assignment(
        &self,
        workspace_id: &str,
        id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.bump_work_generation().await?;
        assignment::Entity::update_many()
            .col_expr(assignment::Column::UnassignedAt, Expr::value(at))
            .col_expr(assignment::Column::UnassignedBy, Expr::value(by))
            .filter(assignment::Column::WorkspaceId.eq(workspace_id))
            .filter(assignment::Column::Id.eq(id))
            .filter(assignment::Column::UnassignedAt.is_null())
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    pub async fn assignment(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> StoreResult<Option<Assignment>> {
        assignment::Entity::find()
            .filter(assignment::Column::WorkspaceId.eq(workspace_id))
            .filter(assignment::Column::Id.eq(id))
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(convert::assignment)
            .transpose()
    }

    /// An agent's assignments, newest first; ended ones only when asked.
    pub async fn agent_assignments(
        &self,
        workspace_id: &str,
        agent_id: &str,
        include_ended: bool,
    ) -> StoreResult<Vec<Assignment>> {
        let mut q = assignment::Entity::find()
            .filter(assignment::Column::WorkspaceId.eq(workspace_id))
            .filter(assignment::Column::AgentId.eq(agent_id));
        if !include_ended {
            q = q.filter(assignment::Column::UnassignedAt.is_null());
        }
        q.order_by_desc(assignment::Column::Id)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::assignment)
            .collect()
    }

    /// Assignments in a workspace, optionally narrowed to a project or task; newest first.
    pub async fn list_assignments(
        &self,
        workspace_id: &str,
        project_id: Option<&str>,
        task_id: Option<&str>,
        include_ended: bool,
    ) -> StoreResult<Vec<Assignment>> {
        let mut q =
            assignment::Entity::find().filter(assignment::Column::WorkspaceId.eq(workspace_id));
        if let Some(p) = project_id {
            q = q.filter(assignment::Column::ProjectId.eq(p));
        }
        if let Some(t) = task_id {
            q = q.filter(assignment::Column::TaskId.eq(t));
        }
        if !include_ended {
            q = q.filter(assignment::Column::UnassignedAt.is_null());
        }
        q.order_by_desc(assignment::Column::Id)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::assignment)
            .collect()
    }

    // ---- delegations ----

    pub async fn insert_delegation(&self, d: &Delegation) -> StoreResult<()> {
        delegation::Entity::insert(convert::delegation_model(d).into_active_model())
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    pub async fn update_delegation(&self, d: &Delegation) -> StoreResult<()> {
        convert::delegation_model(d)
            .into_active_model()
            .reset_all()
            .update(&self.tx)
            .await?;
        Ok(())
    }

    pub async fn delegation(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> StoreResult<Option<Delegation>> {
        delegation::Entity::find()
            .filter(delegation::Column::WorkspaceId.eq(workspace_id))
            .filter(delegation::Column::Id.eq(id))
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(convert::delegation)
            .transpose()
    }

    pub async fn list_delegations(
        &self,
        workspace_id: &str,
        status: Option<DelegationStatus>,
    ) -> StoreResult<Vec<Delegation>> {
        let mut q =
            delegation::Entity::find().filter(delegation::Column::WorkspaceId.eq(workspace_id));
        if let Some(s) = status {
            q = q.filter(delegation::Column::Status.eq(s.as_str()));
        }
        q.order_by_desc(delegation::Column::Id)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::delegation)
            .collect()
    }

    // ---- activity and events ----

    /// Activity of one workspace, newest first, paged by id.
    pub async fn query_activity(
        &self,
        workspace_id: &str,
        q: &ActivityQuery,
    ) -> StoreResult<Vec<ActivityEntry>> {
        let mut s = activity::Entity::find().filter(activity::Column::WorkspaceId.eq(workspace_id));
        if let Some(a) = &q.agent_id {
            s = s.filter(activity::Column::AgentId.eq(a.as_str()));
        }
        if let Some(p) = &q.project_id {
            s = s.filter(activity::Column::ProjectId.eq(p.as_str()));
        }
        if let Some(t) = &q.task_id {
            s = s.filter(activity::Column::TaskId.eq(t.as_str()));
        }
        // A partial index serves a filter only when the query names its condition, literally
        // (migration m20261204_100000): the type index leaves out `tool.call`, the outcome
        // index `allowed`, the entries every allowed tool call appends.
        if let Some(t) = &q.activity_type {
            s = s.filter(activity::Column::ActivityType.eq(t.as_str()));
            if t != "tool.call" {
                s = s.filter(Expr::cust("\"activity_type\" <> 'tool.call'"));
            }
        }
        if let Some(o) = &q.outcome {
            s = s.filter(activity::Column::Outcome.eq(o.as_str()));
            if o != "allowed" {
                s = s.filter(Expr::cust("\"outcome\" <> 'allowed'"));
            }
        }
        // Ids are UUIDv7, in time order: bounds on the id (a minute wider than asked) let the
        // (workspace, id) index serve a time range in id order; `created_at` decides exactly.
        if let Some(t) = q.since {
            s = s
                .filter(
                    activity::Column::Id.gte(console::time_id(t - chrono::Duration::minutes(1))),
                )
                .filter(activity::Column::CreatedAt.gte(t));
        }
        if let Some(t) = q.until {
            s = s
                .filter(activity::Column::Id.lt(console::time_id(t + chrono::Duration::minutes(1))))
                .filter(activity::Column::CreatedAt.lt(t));
        }
        if let Some(b) = &q.before {
            s = s.filter(activity::Column::Id.lt(b.as_str()));
        }
        let newest = |s: Select<activity::Entity>| {
            s.order_by_desc(activity::Column::Id)
                .limit(q.limit)
                .all(&self.tx)
        };
        let rows = match &q.actor_id {
            None => newest(s).await?,
            // An agent acting is its own `agent_id`: those entries are read through the agent
            // index, the rest through the actor index, which holds only them (migration
            // m20261205_100000); each read is in id order, so the pages merge.
            Some(a) => {
                let by_agent = s
                    .clone()
                    .filter(activity::Column::ActorKind.eq(ActorKind::Agent.as_str()))
                    .filter(activity::Column::AgentId.eq(a.as_str()))
                    .filter(activity::Column::ActorId.eq(a.as_str()));
                let by_others = s
                    .filter(activity::Column::ActorId.eq(a.as_str()))
                    .filter(Expr::cust(ACTOR_INDEX_CONDITION));
                let mut rows = newest(by_agent).await?;
                rows.extend(newest(by_others).await?);
                rows.sort_unstable_by(|x, y| y.id.cmp(&x.id));
                rows.truncate(q.limit as usize);
                rows
            }
        };
        rows.into_iter().map(convert::activity).collect()
    }

    /// Queues an event for this transaction; [`Tx::commit`] numbers and inserts it.
    pub async fn insert_event(&self, e: &Event) -> StoreResult<()> {
        self.pending_events
            .lock()
            .map_err(|_| StoreError::Query("outbox lock poisoned".into()))?
            .push(e.clone());
        Ok(())
    }

    /// Events of a workspace after `after` (an event id), oldest first.
    pub async fn list_events(
        &self,
        workspace_id: &str,
        after: Option<&str>,
        limit: u64,
    ) -> StoreResult<Vec<Event>> {
        let mut q = event::Entity::find().filter(event::Column::WorkspaceId.eq(workspace_id));
        if let Some(a) = after {
            q = q.filter(event::Column::Id.gt(a));
        }
        q.order_by_asc(event::Column::Seq)
            .limit(limit)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::event)
            .collect()
    }

    /// Lists every table and column, then every index with its definition, for the
    /// schema-equivalence test of fresh vs upgraded databases.
    pub async fn describe_schema(&self) -> StoreResult<Vec<String>> {
        let backend = self.tx.get_database_backend();
        let sql = match backend {
            DbBackend::Sqlite => {
                "SELECT d FROM (\
                 SELECT 0 AS k, m.name || '.' || p.name || ':' || p.type || ':' || p.\"notnull\" AS d \
                 FROM sqlite_master m JOIN pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
                 UNION ALL SELECT 1, 'index ' || name || ': ' || sql FROM sqlite_master \
                 WHERE type = 'index' AND sql IS NOT NULL) ORDER BY k, d"
            }
            _ => {
                "SELECT d FROM (\
                 SELECT 0 AS k, table_name || '.' || column_name || ':' || data_type || ':' || is_nullable AS d \
                 FROM information_schema.columns WHERE table_schema = current_schema() \
                 UNION ALL SELECT 1, 'index ' || indexname || ': ' || indexdef FROM pg_indexes \
                 WHERE schemaname = current_schema()) x ORDER BY k, d"
            }
        };
        let rows = self
            .tx
            .query_all_raw(sea_orm::Statement::from_string(backend, sql))
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String>("", "d").map_err(Into::into))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pool is built without sqlx's idle reaper, on either database (`connect_options`).
    #[test]
    fn pools_have_no_idle_reaper() {
        for url in [
            "sqlite:///tmp/parallax.db?mode=rwc",
            "postgres://db.test/parallax",
        ] {
            for writer in [None, Some(Arc::new(AtomicBool::new(false)))] {
                let o = connect_options(url, Create::IfMissing, Some(1), writer);
                assert_eq!(o.get_idle_timeout(), Some(None), "{url}");
                assert_eq!(o.get_max_lifetime(), Some(None), "{url}");
            }
        }
    }

    /// The direct writer and the pool's transactions move a head this store knows with one
    /// guarded statement; a head another process moved (here a second store on the file) is
    /// read instead; each makes the head it leaves known to the other; the chain stays whole.
    #[tokio::test]
    async fn the_direct_writer_appends_after_known_heads_and_reads_moved_ones() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("heads.db").display()
        );
        let (a, b) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        assert!(a.direct_writer.get().is_some() && b.direct_writer.get().is_some());
        let entries = |n: usize| -> Vec<ActivityEntry> {
            (0..n)
                .map(|i| {
                    crate::service::Activity::new("ws_heads", &Actor::System, "test.entry")
                        .description(&format!("entry {i}"))
                        .build()
                })
                .collect()
        };
        let head_in_file = |store: &Store| {
            let store = store.clone();
            async move {
                let tx = store.read().await.unwrap();
                let h = tx.chain_head("ws_heads").await.unwrap().unwrap();
                (h.last_seq, h.last_hash)
            }
        };
        let append = |store: &Store, n| {
            let store = store.clone();
            async move {
                let back = store.append_activity(entries(n), (&[], &[]), None).await;
                assert!(back.unwrap().is_none());
            }
        };
        // Rows an append of `n` entries changed through `a`'s direct writer: `n` inserts and
        // one update of the head when it was known, an upsert and an update more when it was
        // read.
        let changed_by = |n: usize| {
            let a = a.clone();
            async move {
                let writer = a.direct_writer.get().unwrap();
                let before = writer.total_changes();
                append(&a, n).await;
                writer.total_changes() - before
            }
        };
        // The first append reads the head (there is none yet); the next ones know it.
        append(&a, 2).await;
        assert_eq!(a.known_heads.get("ws_heads"), Some(head_in_file(&a).await));
        assert_eq!(changed_by(3).await, 3 + 1);
        assert_eq!(head_in_file(&a).await.0, 5);
        assert_eq!(a.known_heads.get("ws_heads"), Some(head_in_file(&a).await));
        // Another process moves the head: `a`'s guard finds it moved, reads it, and learns.
        append(&b, 1).await;
        assert_ne!(a.known_heads.get("ws_heads"), Some(head_in_file(&a).await));
        assert_eq!(changed_by(2).await, 2 + 2);
        assert_eq!(head_in_file(&a).await.0, 8);
        assert_eq!(a.known_heads.get("ws_heads"), Some(head_in_file(&a).await));
        // The same through `a`'s pool, whose writer is one connection: a commit there moves a
        // known head with one update too, and makes the head it leaves known.
        let pool_changes = || {
            let a = a.clone();
            async move {
                let tx = a.write().await.unwrap();
                let total = sea_orm::Statement::from_string(
                    DbBackend::Sqlite,
                    "SELECT total_changes() AS n",
                );
                let row = tx.tx.query_one_raw(total).await.unwrap().unwrap();
                row.try_get::<i64>("", "n").unwrap()
            }
        };
        let pool_append = |n: usize| {
            let a = a.clone();
            async move {
                let tx = a.write().await.unwrap();
                tx.insert_activities(entries(n)).await.unwrap();
                tx.commit().await.unwrap();
            }
        };
        let before = pool_changes().await;
        pool_append(1).await;
        assert_eq!(pool_changes().await - before, 1 + 1);
        assert_eq!(a.known_heads.get("ws_heads"), Some(head_in_file(&a).await));
        append(&b, 1).await;
        let before = pool_changes().await;
        pool_append(2).await;
        assert_eq!(pool_changes().await - before, 2 + 2);
        assert_eq!(a.known_heads.get("ws_heads"), Some(head_in_file(&a).await));
        assert_eq!(changed_by(1).await, 1 + 1);
        let chain = a
            .intact_chain("ws_heads", None)
            .await
            .expect("an intact chain");
        assert_eq!(chain.verified, 13);
        assert_eq!(chain.head.map(|h| h.last_seq), Some(13));
    }

    /// The direct writer inserts a batch in statements of several rows (32, 8, then one at a
    /// time): batches of every split land whole, in the order given, each row with its own
    /// values, and the chain over them verifies.
    #[tokio::test]
    async fn the_direct_writer_inserts_batches_of_any_size_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rows.db");
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let store = Store::open(&url).await.unwrap();
        assert!(store.direct_writer.get().is_some());
        let mut written = Vec::new();
        for n in [1, 7, 8, 9, 32, 33, 41, 77] {
            let entries: Vec<ActivityEntry> = (0..n)
                .map(|i| {
                    let at = written.len() + i;
                    crate::service::Activity::new("ws_rows", &Actor::System, "test.entry")
                        .description(&format!("entry {at}"))
                        .metadata(serde_json::json!({ "at": at }))
                        .build()
                })
                .collect();
            written.extend(
                entries
                    .iter()
                    .map(|e| (e.id.clone(), e.description.clone())),
            );
            let back = store.append_activity(entries, (&[], &[]), None).await;
            assert!(back.unwrap().is_none(), "a batch of {n} committed");
        }
        let conn = rusqlite::Connection::open(&file).unwrap();
        let rows: Vec<(String, String, String, i64)> = conn
            .prepare(
                "SELECT id, description, metadata, seq FROM activity \
                 WHERE workspace_id = 'ws_rows' ORDER BY seq",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), written.len());
        for (at, ((id, description, metadata, seq), (want_id, want))) in
            rows.iter().zip(&written).enumerate()
        {
            assert_eq!((id, description), (want_id, want), "row {at}");
            assert_eq!(*seq, at as i64 + 1);
            let metadata: serde_json::Value = serde_json::from_str(metadata).unwrap();
            assert_eq!(metadata["at"], at);
        }
        let chain = store
            .intact_chain("ws_rows", None)
            .await
            .expect("an intact chain");
        assert_eq!(chain.verified, written.len() as u64);
    }
}
