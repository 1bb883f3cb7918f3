//! The authentication snapshot: credentials, their agents and workspaces, and members, kept in
//! memory and served only while the store's authorization generation is unchanged.
//!
//! Every store method that writes something authorization depends on (agents, keys, workspace
//! settings, members) bumps the generation in its own transaction, so the bump commits with the
//! change and cannot be forgotten by a service. Each request reads the generation with one
//! prepared statement; if any process or replica committed such a change since the snapshot was
//! taken, the snapshot is dropped and the rows are read again. A generation is read *before* the
//! rows it tags, so a tagged row is never older than its tag.

use super::{Store, StoreError, StoreResult, Tx};
use crate::domain::{Agent, Credential, KeyHash, Member, Workspace};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot};

/// More entries than this in one map and it is emptied rather than grown.
const MAX_ENTRIES: usize = 10_000;

pub(super) const READ_GENERATIONS: &str = "SELECT value, work FROM auth_generation WHERE id = 1";
const BUMP_GENERATION: &str = "UPDATE auth_generation SET value = value + 1 WHERE id = 1";
const BUMP_WORK_GENERATION: &str = "UPDATE auth_generation SET work = work + 1 WHERE id = 1";

/// Both generations as one statement read them at the start of a request: `auth` tags the
/// credential snapshot, `work` the agents' work snapshot (`store::work_cache`). Everything a
/// request serves from memory is as current as a read transaction begun at that instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub auth: i64,
    pub work: i64,
}

/// A stored API key with everything a request needs to decide on it.
#[derive(Debug, Clone)]
pub struct CredentialView {
    pub credential: Credential,
    /// The stored hash, for a constant-time recheck against the presented key.
    pub key_hash: KeyHash,
    /// `None` when the agent row is gone.
    pub agent: Option<Arc<Agent>>,
    /// The agent's workspace (`None` when gone).
    pub workspace: Option<Workspace>,
}

/// A member token's workspace and member, as stored now.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub workspace: Option<Workspace>,
    pub member: Option<Member>,
}

#[derive(Default)]
pub(super) struct AuthCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The generation every entry below was read at or after; `None` before the first read.
    generation: Option<i64>,
    /// Both generations as a request last read them (see [`Store::unconfirmed_credential_view`]).
    last_read: Option<Seen>,
    by_hash: HashMap<String, Arc<CredentialView>>,
    by_id: HashMap<String, Arc<CredentialView>>,
    members: HashMap<(String, String), Arc<MemberView>>,
}

impl State {
    /// Drops every entry unless they were read at `generation`.
    fn sync(&mut self, generation: i64) {
        if self.generation != Some(generation) {
            self.generation = Some(generation);
            self.by_hash.clear();
            self.by_id.clear();
            self.members.clear();
        }
    }

    /// Remembers `view`, read in a transaction that saw `generation` first, unless a newer
    /// generation is already known (then the view may be outdated for later requests).
    fn remember<K: Eq + Hash, V>(
        &mut self,
        generation: i64,
        pick: impl FnOnce(&mut State) -> &mut HashMap<K, Arc<V>>,
        key: K,
        view: Arc<V>,
    ) {
        if self.generation.is_some_and(|g| g > generation) {
            return;
        }
        self.sync(generation);
        let map = pick(self);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, view);
    }
}

impl AuthCache {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves maps that are merely incomplete: still correct.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Both generations, read by one prepared statement outside any transaction.
async fn read_generations(db: &DatabaseConnection) -> StoreResult<Seen> {
    use sea_orm::sqlx::query_as;
    let (auth, work) = match db.get_database_backend() {
        DbBackend::Sqlite => {
            query_as::<_, (i64, i64)>(READ_GENERATIONS)
                .fetch_one(db.get_sqlite_connection_pool())
                .await
        }
        _ => {
            query_as::<_, (i64, i64)>(READ_GENERATIONS)
                .fetch_one(db.get_postgres_connection_pool())
                .await
        }
    }
    .map_err(super::sqlx_error)?;
    Ok(Seen { auth, work })
}

type Waiter = oneshot::Sender<StoreResult<Seen>>;

/// Reads of the generations shared by the requests waiting for one (PostgreSQL, where each is a
/// round trip): a task reads them for every request that arrived before its read began, so each
/// answer is as fresh as a read of the request's own, and a burst of requests costs one read.
#[derive(Default)]
pub(super) struct SharedReads {
    waiting: Mutex<Option<mpsc::UnboundedSender<Waiter>>>,
}

impl SharedReads {
    async fn read(&self, db: &DatabaseConnection) -> StoreResult<Seen> {
        let (waiter, answer) = oneshot::channel();
        let sent = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let queue = waiting.get_or_insert_with(|| spawn_reader(db.clone()));
            queue.send(waiter).is_ok()
        };
        if sent && let Ok(seen) = answer.await {
            return seen;
        }
        // The reader task is gone (its runtime stopped): start another next time, read here now.
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = None;
        read_generations(db).await
    }
}

/// The task behind [`SharedReads`]; it ends when the store drops its queue. On PostgreSQL it
/// reads on a connection of its own (`dedicated`).
fn spawn_reader(db: DatabaseConnection) -> mpsc::UnboundedSender<Waiter> {
    let (queue, mut waiters) = mpsc::unbounded_channel::<Waiter>();
    tokio::spawn(async move {
        let conn = super::dedicated::Dedicated::default();
        let mut batch = Vec::new();
        while waiters.recv_many(&mut batch, 4096).await > 0 {
            // Everyone in `batch` arrived before this read begins.
            let seen = match db.get_database_backend() {
                DbBackend::Postgres => read_generations_on(&conn, &db).await,
                _ => read_generations(&db).await,
            };
            for waiter in batch.drain(..) {
                let _ = waiter.send(seen.clone());
            }
        }
    });
    queue
}

/// [`read_generations`] on `conn`; once more on a fresh connection when it fails, since a
/// connection can die between two reads (a backend restarted or terminated).
async fn read_generations_on(
    conn: &super::dedicated::Dedicated,
    db: &DatabaseConnection,
) -> StoreResult<Seen> {
    use sea_orm::sqlx::query_as;
    let mut retried = false;
    loop {
        let mut lease = conn.lease(db.get_postgres_connection_pool()).await?;
        let read = query_as::<_, (i64, i64)>(READ_GENERATIONS)
            .fetch_one(lease.conn())
            .await;
        match lease.done(read) {
            Ok((auth, work)) => return Ok(Seen { auth, work }),
            Err(_) if !retried => retried = true,
            Err(e) => return Err(e),
        }
    }
}

/// How a credential is looked up when the snapshot misses.
#[derive(Clone, Copy)]
enum ViewKey<'a> {
    Hash(&'a KeyHash),
    Id(&'a str),
}

impl Store {
    /// Both generations as of a read begun after this call: on SQLite straight from the file on
    /// this thread when it can (`direct`), else one read shared with concurrent requests.
    pub async fn generations(&self) -> StoreResult<Seen> {
        if let Some(seen) = self.direct.get().and_then(|d| d.generations()) {
            return Ok(seen);
        }
        // Boxed: a SeaORM query's future is large, and every request's future would carry it.
        Box::pin(self.shared_reads.read(&self.db)).await
    }

    /// Both generations read now, and noted as the last read (see
    /// [`Store::unconfirmed_credential_view`]): what confirming an unconfirmed caller reads.
    pub async fn read_and_note_generations(&self) -> StoreResult<Seen> {
        let (_, seen) = self.cached(|_| None::<Arc<CredentialView>>).await?;
        Ok(seen)
    }

    /// Reads the generations and returns the cached entry `pick` finds, if still valid.
    async fn cached<V>(
        &self,
        pick: impl FnOnce(&mut State) -> Option<Arc<V>>,
    ) -> StoreResult<(Option<Arc<V>>, Seen)> {
        let seen = self.generations().await?;
        let mut state = self.auth.lock();
        state.sync(seen.auth);
        // Both only grow: a read that finished late must not take the pair back.
        if state
            .last_read
            .is_none_or(|l| (l.auth, l.work) <= (seen.auth, seen.work))
        {
            state.last_read = Some(seen);
        }
        Ok((pick(&mut state), seen))
    }

    /// The API key whose hash is `hash` as the snapshot holds it, with the generations a
    /// request last read, and without reading them now: **unconfirmed**. A decision made on it
    /// stands only if its audit entry commits with a check that the generations are still these
    /// (`AuditWriter::record_checked`), a check made inside the commit's own transaction (on
    /// PostgreSQL its one statement, on a SQLite file under its write lock), after the request
    /// arrived; so it is as current as a read of its own, for no read of its own (a round trip
    /// on PostgreSQL; on SQLite a read transaction and its two locks of the shared-memory
    /// index). `None` when the snapshot cannot say: a key not in the snapshot, or a snapshot
    /// behind the generations last read.
    pub fn unconfirmed_credential_view(
        &self,
        hash: &KeyHash,
    ) -> Option<(Arc<CredentialView>, Seen)> {
        self.unconfirmed(|s| s.by_hash.get(hash.as_str()).cloned())
    }

    /// [`Store::unconfirmed_credential_view`] for the API key with id `id` (an access token's
    /// credential).
    pub fn unconfirmed_credential_view_by_id(
        &self,
        id: &str,
    ) -> Option<(Arc<CredentialView>, Seen)> {
        self.unconfirmed(|s| s.by_id.get(id).cloned())
    }

    /// The entry `pick` finds in a snapshot that is as of the generations last read, with them.
    fn unconfirmed(
        &self,
        pick: impl FnOnce(&State) -> Option<Arc<CredentialView>>,
    ) -> Option<(Arc<CredentialView>, Seen)> {
        let state = self.auth.lock();
        let seen = state.last_read?;
        if state.generation != Some(seen.auth) {
            return None;
        }
        Some((pick(&state)?, seen))
    }

    /// The API key whose hash is `hash`, with its agent and workspace, current as of this call;
    /// and the generations that call saw (for the work snapshot).
    pub async fn credential_view(
        &self,
        hash: &KeyHash,
    ) -> StoreResult<(Option<Arc<CredentialView>>, Seen)> {
        if let (Some(v), seen) = self
            .cached(|s| s.by_hash.get(hash.as_str()).cloned())
            .await?
        {
            return Ok((Some(v), seen));
        }
        self.load_view(ViewKey::Hash(hash)).await
    }

    /// The API key with id `id` (an access token's credential), current as of this call; and
    /// the generations that call saw.
    pub async fn credential_view_by_id(
        &self,
        id: &str,
    ) -> StoreResult<(Option<Arc<CredentialView>>, Seen)> {
        if let (Some(v), seen) = self.cached(|s| s.by_id.get(id).cloned()).await? {
            return Ok((Some(v), seen));
        }
        self.load_view(ViewKey::Id(id)).await
    }

    /// A credential's view read from the store (the snapshot missed), remembered under both its
    /// hash and its id. Boxed: the transaction is most of the lookup's future, and every
    /// request's future carries that future (see `Gate::dispatch`).
    async fn load_view(
        &self,
        key: ViewKey<'_>,
    ) -> StoreResult<(Option<Arc<CredentialView>>, Seen)> {
        let (found, seen) = Box::pin(async {
            let tx = self.read().await?;
            let seen = tx.read_generations().await?;
            let found = match key {
                ViewKey::Hash(hash) => tx.credential_by_hash(hash).await?,
                ViewKey::Id(id) => tx.credential_by_id(id).await?,
            };
            let Some((credential, key_hash)) = found else {
                tx.commit().await?;
                return Ok::<_, StoreError>((None, seen));
            };
            let view = tx.credential_view_of(credential, key_hash).await?;
            tx.commit().await?;
            Ok((Some(view), seen))
        })
        .await?;
        let Some(view) = found.map(Arc::new) else {
            return Ok((None, seen));
        };
        // Found by exact match, so the view's own hash and id are the keys of either lookup.
        let mut state = self.auth.lock();
        state.remember(
            seen.auth,
            |s| &mut s.by_hash,
            view.key_hash.as_str().to_owned(),
            view.clone(),
        );
        state.remember(
            seen.auth,
            |s| &mut s.by_id,
            view.credential.id.clone(),
            view.clone(),
        );
        Ok((Some(view), seen))
    }

    /// Workspace `workspace_id` and its member `email`; current as of this call.
    pub async fn member_view(
        &self,
        workspace_id: &str,
        email: &str,
    ) -> StoreResult<Arc<MemberView>> {
        let key = (workspace_id.to_owned(), email.to_owned());
        if let (Some(v), _) = self.cached(|s| s.members.get(&key).cloned()).await? {
            return Ok(v);
        }
        let tx = self.read().await?;
        let generation = tx.read_generations().await?.auth;
        let workspace = tx.workspace_by_id(workspace_id).await?;
        let member = match &workspace {
            Some(ws) => tx.member_by_email(&ws.id, email).await?,
            None => None,
        };
        tx.commit().await?;
        let view = Arc::new(MemberView { workspace, member });
        self.auth
            .lock()
            .remember(generation, |s| &mut s.members, key, view.clone());
        Ok(view)
    }
}

impl Tx {
    /// The generations as this transaction sees them.
    pub(super) async fn read_generations(&self) -> StoreResult<Seen> {
        let backend = self.tx.get_database_backend();
        let row = self
            .tx
            .query_one_raw(Statement::from_string(backend, READ_GENERATIONS))
            .await?
            .ok_or_else(|| StoreError::Corrupt("auth_generation has no row".into()))?;
        Ok(Seen {
            auth: row.try_get::<i64>("", "value")?,
            work: row.try_get::<i64>("", "work")?,
        })
    }

    /// Marks a change to projects, tasks or assignments; commits (or rolls back) with it. Every
    /// store method that writes those calls this.
    pub(super) async fn bump_work_generation(&self) -> StoreResult<()> {
        self.execute_sql(BUMP_WORK_GENERATION).await
    }

    /// Marks a change that can affect authorization; commits (or rolls back) with it. Every
    /// store method that writes agents, keys, workspace settings or members calls this.
    pub(super) async fn bump_auth_generation(&self) -> StoreResult<()> {
        self.execute_sql(BUMP_GENERATION).await
    }

    async fn credential_view_of(
        &self,
        credential: Credential,
        key_hash: KeyHash,
    ) -> StoreResult<CredentialView> {
        let agent = self
            .agent(&credential.workspace_id, &credential.agent_id)
            .await?
            .map(Arc::new);
        let workspace = self.workspace_by_id(&credential.workspace_id).await?;
        Ok(CredentialView {
            credential,
            key_hash,
            agent,
            workspace,
        })
    }
}
