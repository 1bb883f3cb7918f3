//! The activity hash chain (see `migrations::chain` for the hash, and the `activity_chain`
//! migration): entries are queued by [`Tx::insert_activity`] and chained at commit, after the
//! workspace's head row in `activity_chains` is locked. Like the outbox counter, that lock is taken
//! last (just before the outbox's), so two writers queue on it without a lock-order deadlock, and
//! two replicas appending to one workspace produce one unbroken chain in commit order.

use super::direct::IntactChain;
use super::entities::{activity, activity_chain};
use super::{Seen, StoreError, StoreResult, Tx, convert};
use crate::domain::*;
use chrono::{DateTime, SubsecRound, Utc};
use migrations::chain;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// A workspace's chain head, and how far pruning has removed it.
#[derive(Debug, Clone)]
pub struct ChainHead {
    pub last_seq: i64,
    pub last_hash: String,
    /// Entries up to this seq were pruned (0: none).
    pub pruned_seq: i64,
    /// The hash of entry `pruned_seq`, which the first remaining entry chains from.
    pub pruned_hash: Option<String>,
}

/// An activity entry with its place in the chain, as stored.
#[derive(Debug, Clone)]
pub struct ChainedEntry {
    pub entry: ActivityEntry,
    /// `None` for a row written around the store.
    pub seq: Option<i64>,
    pub hash: Option<String>,
    /// The metadata text exactly as stored: the hash covers these bytes.
    stored_metadata: String,
}

impl ChainedEntry {
    /// The hash this entry would have if it sat at `seq` after an entry hashed `prev`.
    pub fn hash_after(&self, prev: &str, seq: i64) -> String {
        link_hash(prev, seq, &self.entry, &self.stored_metadata)
    }
}

/// The hash of `e` stored with `metadata` at `seq` after an entry hashed `prev`.
fn link_hash(prev: &str, seq: i64, e: &ActivityEntry, metadata: &str) -> String {
    chain::hash(
        prev,
        &chain::Link {
            workspace_id: &e.workspace_id,
            seq,
            id: &e.id,
            created_at_micros: e.created_at.timestamp_micros(),
            actor_kind: e.actor_kind.as_str(),
            actor_id: &e.actor_id,
            agent_id: e.agent_id.as_deref(),
            activity_type: &e.activity_type,
            outcome: e.outcome.as_deref(),
            project_id: e.project_id.as_deref(),
            task_id: e.task_id.as_deref(),
            page_id: e.page_id.as_deref(),
            description: &e.description,
            metadata,
        },
    )
}

/// The hash a workspace's first entry chains from.
pub fn genesis_hash(workspace_id: &str) -> String {
    chain::genesis(workspace_id)
}

fn chained(m: activity::Model) -> StoreResult<ChainedEntry> {
    let (seq, hash, stored_metadata) = (m.seq, m.hash.clone(), m.metadata.clone());
    Ok(ChainedEntry {
        entry: convert::activity(m)?,
        seq,
        hash,
        stored_metadata,
    })
}

fn head(m: activity_chain::Model) -> ChainHead {
    ChainHead {
        last_seq: m.last_seq,
        last_hash: m.last_hash,
        pruned_seq: m.pruned_seq,
        pruned_hash: m.pruned_hash,
    }
}

/// Entries grouped by workspace, in a fixed order of workspaces, so a transaction touching two
/// cannot deadlock another.
pub(super) fn by_workspace(entries: Vec<ActivityEntry>) -> BTreeMap<String, Vec<ActivityEntry>> {
    let mut grouped: BTreeMap<String, Vec<ActivityEntry>> = BTreeMap::new();
    for e in entries {
        grouped.entry(e.workspace_id.clone()).or_default().push(e);
    }
    grouped
}

/// One workspace's `entries` as rows chained after its head, whose `last_seq` is already
/// advanced past them and whose hash is `prev`; and the hash of the last, the new head's.
pub(super) fn chain_rows(
    last_seq: i64,
    mut prev: String,
    entries: &[ActivityEntry],
) -> StoreResult<(Vec<activity::Model>, String)> {
    let n = entries.len() as i64;
    let mut models = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let seq = last_seq - n + 1 + i as i64;
        let mut m = convert::activity_model(e)?;
        // Both databases keep microseconds, which is what the hash covers.
        m.created_at = m.created_at.trunc_subsecs(6);
        let hash = link_hash(&prev, seq, e, &m.metadata);
        m.seq = Some(seq);
        m.hash = Some(hash.clone());
        prev = hash;
        models.push(m);
    }
    Ok((models, prev))
}

/// Chain heads as this process last committed them, by workspace. On PostgreSQL a batch of
/// entries for a workspace found here commits in one statement that moves the head only if it is
/// still this one ([`super::Store::append_after_known_head`]), instead of a transaction of five
/// round trips that reads it first; a transaction on either database, and a SQLite file's
/// direct writer (`direct::DirectWriter`), move a head found here with one `UPDATE` guarded by
/// it, instead of an upsert that reads the head and an update that writes its hash back. A head
/// another writer moved since is no harm: the statement then changes nothing and the head is
/// read as it is.
#[derive(Default)]
pub(super) struct KnownHeads(Mutex<HashMap<String, (i64, String)>>);

impl KnownHeads {
    pub(super) fn get(&self, ws: &str) -> Option<(i64, String)> {
        self.0.lock().ok()?.get(ws).cloned()
    }

    /// Keeps the later of what is known and `heads` (commits may report out of order).
    pub(super) fn learn(&self, heads: impl IntoIterator<Item = (String, i64, String)>) {
        let Ok(mut known) = self.0.lock() else { return };
        if known.len() > 10_000 {
            known.clear();
        }
        for (ws, seq, hash) in heads {
            match known.get_mut(&ws) {
                Some(k) if k.0 >= seq => {}
                Some(k) => *k = (seq, hash),
                None => {
                    known.insert(ws, (seq, hash));
                }
            }
        }
    }

    pub(super) fn forget(&self, ws: &str) {
        if let Ok(mut known) = self.0.lock() {
            known.remove(ws);
        }
    }
}

/// Moves a workspace's head from ($4, $5) to ($1, $2) and inserts the rows chained after it,
/// in one statement; if the head is elsewhere, or the generations are not ($20, $21) when they
/// are given, `head` is empty and so is the insert. Arrays, not
/// a `VALUES` list, so that one prepared statement serves every batch size.
const APPEND_AFTER_HEAD: &str = "WITH head AS (\
     UPDATE activity_chains SET last_seq = $1, last_hash = $2 \
     WHERE workspace_id = $3 AND last_seq = $4 AND last_hash = $5 \
     AND ($20::int8 IS NULL OR EXISTS (SELECT 1 FROM auth_generation g \
     WHERE g.id = 1 AND g.value = $20 AND g.work = $21)) RETURNING workspace_id) \
     INSERT INTO activity (id, workspace_id, actor_kind, actor_id, agent_id, activity_type, \
     outcome, description, metadata, project_id, task_id, page_id, created_at, seq, hash) \
     SELECT u.id, head.workspace_id, u.actor_kind, u.actor_id, u.agent_id, u.activity_type, \
     u.outcome, u.description, u.metadata, u.project_id, u.task_id, u.page_id, u.created_at, \
     u.seq, u.hash \
     FROM head, unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
     $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], \
     $17::timestamptz[], $18::int8[], $19::text[]) \
     AS u(id, actor_kind, actor_id, agent_id, activity_type, outcome, description, metadata, \
     project_id, task_id, page_id, created_at, seq, hash)";

impl super::Store {
    /// On PostgreSQL, commits one workspace's `entries` in one statement after the head this
    /// process last committed (see [`KnownHeads`]), and with `expect`, only if the generations
    /// are still those. Gives them back, untouched, when it cannot: another database, several
    /// workspaces, no known head, a head that moved, generations that did, or a connection that
    /// was gone.
    pub(super) async fn append_after_known_head(
        &self,
        entries: Vec<ActivityEntry>,
        expect: Option<Seen>,
    ) -> StoreResult<Option<Vec<ActivityEntry>>> {
        use sea_orm::sqlx;
        let Some(first) = entries.first() else {
            return Ok(None);
        };
        let ws = first.workspace_id.clone();
        if !self.is_postgres() || entries.iter().any(|e| e.workspace_id != ws) {
            return Ok(Some(entries));
        }
        let Some((seq, hash)) = self.known_heads.get(&ws) else {
            return Ok(Some(entries));
        };
        let n = entries.len() as i64;
        let (rows, head) = chain_rows(seq + n, hash.clone(), &entries)?;
        let column = |f: fn(&activity::Model) -> &String| -> Vec<&str> {
            rows.iter().map(|m| f(m).as_str()).collect()
        };
        let optional = |f: fn(&activity::Model) -> &Option<String>| -> Vec<Option<&str>> {
            rows.iter().map(|m| f(m).as_deref()).collect()
        };
        let mut lease = self
            .appender
            .lease(self.db.get_postgres_connection_pool())
            .await?;
        let inserted = sqlx::query(APPEND_AFTER_HEAD)
            .bind(seq + n)
            .bind(&head)
            .bind(&ws)
            .bind(seq)
            .bind(&hash)
            .bind(column(|m| &m.id))
            .bind(column(|m| &m.actor_kind))
            .bind(column(|m| &m.actor_id))
            .bind(optional(|m| &m.agent_id))
            .bind(column(|m| &m.activity_type))
            .bind(optional(|m| &m.outcome))
            .bind(column(|m| &m.description))
            .bind(column(|m| &m.metadata))
            .bind(optional(|m| &m.project_id))
            .bind(optional(|m| &m.task_id))
            .bind(optional(|m| &m.page_id))
            .bind(rows.iter().map(|m| m.created_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|m| m.seq).collect::<Vec<_>>())
            .bind(optional(|m| &m.hash))
            .bind(expect.map(|s| s.auth))
            .bind(expect.map(|s| s.work))
            .execute(lease.conn())
            .await;
        if let Err(e) = &inserted
            && super::connection_lost(e)
        {
            // The connection went (dropped with the unfinished lease). The transaction path sends
            // the batch again after the head it reads; had this statement committed after all,
            // the entries' ids would refuse them there, so nothing is written twice.
            tracing::debug!(error = %e, "the appending connection was gone; appending through the pool");
            drop(lease);
            self.known_heads.forget(&ws);
            return Ok(Some(entries));
        }
        let inserted = lease.done(inserted)?.rows_affected();
        if inserted == n as u64 {
            self.known_heads.learn([(ws, seq + n, head)]);
            return Ok(None);
        }
        // Another writer moved the head, or the generations moved: nothing was written (one
        // statement, all or nothing), and the transaction tells which.
        self.known_heads.forget(&ws);
        Ok(Some(entries))
    }

    /// Workspace `ws`'s chain from `from` (default: its start), if a walk through a direct
    /// connection to the SQLite file finds it intact (see `direct::DirectReader::intact_chain`).
    /// `None` means "walk it through the pool": on PostgreSQL, in memory, or when anything is
    /// off, so that the pool's walk names the problem.
    pub async fn intact_chain(&self, ws: &str, from: Option<i64>) -> Option<IntactChain> {
        let direct = self.direct.clone();
        direct.get()?;
        let ws = ws.to_owned();
        tokio::task::spawn_blocking(move || direct.get()?.intact_chain(&ws, from))
            .await
            .ok()
            .flatten()
    }
}

impl Tx {
    /// Queues an entry for this transaction; [`Tx::commit`] chains and inserts it.
    pub async fn insert_activity(&self, e: &ActivityEntry) -> StoreResult<()> {
        self.queue()?.push(e.clone());
        Ok(())
    }

    /// Queues many entries (the gate's batched audit writes); chained in this order at commit.
    pub async fn insert_activities(&self, entries: Vec<ActivityEntry>) -> StoreResult<()> {
        self.queue()?.extend(entries);
        Ok(())
    }

    fn queue(&self) -> StoreResult<std::sync::MutexGuard<'_, Vec<ActivityEntry>>> {
        self.pending_activity
            .lock()
            .map_err(|_| StoreError::Query("activity queue lock poisoned".into()))
    }

    /// Shows `look` the entries queued so far (not yet chained or inserted).
    pub fn queued_activity<R>(&self, look: impl FnOnce(&[ActivityEntry]) -> R) -> R {
        match self.pending_activity.lock() {
            Ok(queued) => look(&queued),
            Err(_) => look(&[]),
        }
    }

    /// Chains and inserts the queued entries: per workspace, the head moved (one guarded update
    /// when it is known, else an upsert that reads it and an update) and one insert.
    pub(super) async fn flush_activity(&self) -> StoreResult<()> {
        let pending = std::mem::take(&mut *self.queue()?);
        if pending.is_empty() {
            return Ok(());
        }
        for (ws, entries) in by_workspace(pending) {
            let (models, last_seq, prev) = match self.after_known_head(&ws, &entries).await? {
                Some(moved) => moved,
                None => self.after_head_read(&ws, &entries).await?,
            };
            let models = models.into_iter().map(IntoActiveModel::into_active_model);
            activity::Entity::insert_many(models)
                .exec_without_returning(&self.tx)
                .await?;
            // Made known at commit, for the next batch's one-statement append.
            if let Ok(mut chained) = self.chained.lock() {
                chained.push((ws, last_seq, prev));
            }
        }
        Ok(())
    }

    /// `entries` chained after the head this process last committed for `ws` (see
    /// [`KnownHeads`]), moved past them by one update that also locks it until commit, with the
    /// new head (seq, hash); `None`, having changed nothing, when no head is known or the head is
    /// no longer that one.
    async fn after_known_head(
        &self,
        ws: &str,
        entries: &[ActivityEntry],
    ) -> StoreResult<Option<(Vec<activity::Model>, i64, String)>> {
        let Some((seq, hash)) = self.known_heads.get(ws) else {
            return Ok(None);
        };
        let n = entries.len() as i64;
        let (models, head) = chain_rows(seq + n, hash.clone(), entries)?;
        let moved = activity_chain::Entity::update_many()
            .col_expr(activity_chain::Column::LastSeq, Expr::value(seq + n))
            .col_expr(activity_chain::Column::LastHash, Expr::value(head.clone()))
            .filter(activity_chain::Column::WorkspaceId.eq(ws))
            .filter(activity_chain::Column::LastSeq.eq(seq))
            .filter(activity_chain::Column::LastHash.eq(hash))
            .exec(&self.tx)
            .await?;
        if moved.rows_affected == 1 {
            return Ok(Some((models, seq + n, head)));
        }
        self.known_heads.forget(ws);
        Ok(None)
    }

    /// `entries` chained after `ws`'s head as this transaction reads it, with the new head.
    async fn after_head_read(
        &self,
        ws: &str,
        entries: &[ActivityEntry],
    ) -> StoreResult<(Vec<activity::Model>, i64, String)> {
        let n = entries.len() as i64;
        // Creating or advancing the head row locks it until commit (PostgreSQL; SQLite has
        // one writer), so the hash it returns is one no other writer can move meanwhile.
        let upsert = Query::insert()
            .into_table(activity_chain::Entity)
            .columns([
                activity_chain::Column::WorkspaceId,
                activity_chain::Column::LastSeq,
                activity_chain::Column::LastHash,
                activity_chain::Column::PrunedSeq,
            ])
            .values_panic([ws.into(), n.into(), chain::genesis(ws).into(), 0i64.into()])
            .on_conflict(
                OnConflict::column(activity_chain::Column::WorkspaceId)
                    .value(
                        activity_chain::Column::LastSeq,
                        Expr::col((activity_chain::Entity, activity_chain::Column::LastSeq)).add(n),
                    )
                    .to_owned(),
            )
            .returning(Query::returning().columns([
                activity_chain::Column::LastSeq,
                activity_chain::Column::LastHash,
            ]))
            .to_owned();
        let head = self
            .tx
            .query_one(&upsert)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no activity chain for {ws}")))?;
        let last_seq: i64 = head.try_get("", "last_seq")?;
        let last_hash: String = head.try_get("", "last_hash")?;
        let (models, prev) = chain_rows(last_seq, last_hash, entries)?;
        activity_chain::Entity::update_many()
            .col_expr(activity_chain::Column::LastHash, Expr::value(prev.clone()))
            .filter(activity_chain::Column::WorkspaceId.eq(ws))
            .exec(&self.tx)
            .await?;
        Ok((models, last_seq, prev))
    }

    /// The workspace's chain head, if it ever had an entry.
    pub async fn chain_head(&self, workspace_id: &str) -> StoreResult<Option<ChainHead>> {
        Ok(activity_chain::Entity::find_by_id(workspace_id.to_owned())
            .one(&self.tx)
            .await?
            .map(head))
    }

    /// Chained entries with `from <= seq <= to`, in seq order, at most `limit`.
    pub async fn chained_activity(
        &self,
        workspace_id: &str,
        from: i64,
        to: i64,
        limit: u64,
    ) -> StoreResult<Vec<ChainedEntry>> {
        activity::Entity::find()
            .filter(activity::Column::WorkspaceId.eq(workspace_id))
            .filter(activity::Column::Seq.gte(from))
            .filter(activity::Column::Seq.lte(to))
            .order_by_asc(activity::Column::Seq)
            .limit(limit)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(chained)
            .collect()
    }

    /// The chained entry at `seq`, if present.
    pub async fn chained_entry(
        &self,
        workspace_id: &str,
        seq: i64,
    ) -> StoreResult<Option<ChainedEntry>> {
        activity::Entity::find()
            .filter(activity::Column::WorkspaceId.eq(workspace_id))
            .filter(activity::Column::Seq.eq(seq))
            .one(&self.tx)
            .await?
            .map(chained)
            .transpose()
    }

    /// The oldest entry that is not in the chain (written around the store), if any.
    pub async fn first_unchained_activity(
        &self,
        workspace_id: &str,
    ) -> StoreResult<Option<ChainedEntry>> {
        activity::Entity::find()
            .filter(activity::Column::WorkspaceId.eq(workspace_id))
            .filter(
                activity::Column::Seq
                    .is_null()
                    .or(activity::Column::Hash.is_null()),
            )
            .order_by_asc(activity::Column::Id)
            .one(&self.tx)
            .await?
            .map(chained)
            .transpose()
    }

    /// Deletes the chain's prefix of entries older than `cutoff` and records the hash it pruned
    /// up to, so what remains still verifies; returns how many entries went. Stops at the first
    /// entry at or after the cutoff, so the chain is cut at one point only.
    pub async fn prune_activity(
        &self,
        workspace_id: &str,
        cutoff: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let Some(head) = self.chain_head(workspace_id).await? else {
            return Ok(0);
        };
        let first_kept = activity::Entity::find()
            .filter(activity::Column::WorkspaceId.eq(workspace_id))
            .filter(activity::Column::Seq.gt(head.pruned_seq))
            .filter(activity::Column::CreatedAt.gte(cutoff))
            .order_by_asc(activity::Column::Seq)
            .one(&self.tx)
            .await?
            .and_then(|m| m.seq);
        let upto = first_kept.map_or(head.last_seq, |s| s - 1);
        if upto <= head.pruned_seq {
            return Ok(0);
        }
        let anchor = self
            .chained_entry(workspace_id, upto)
            .await?
            .and_then(|e| e.hash)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "activity entry {upto} is missing: verify the trail before pruning"
                ))
            })?;
        let res = activity::Entity::delete_many()
            .filter(activity::Column::WorkspaceId.eq(workspace_id))
            .filter(activity::Column::Seq.lte(upto))
            .exec(&self.tx)
            .await?;
        activity_chain::Entity::update_many()
            .col_expr(activity_chain::Column::PrunedSeq, Expr::value(upto))
            .col_expr(activity_chain::Column::PrunedHash, Expr::value(anchor))
            .filter(activity_chain::Column::WorkspaceId.eq(workspace_id))
            .exec(&self.tx)
            .await?;
        Ok(res.rows_affected)
    }
}
