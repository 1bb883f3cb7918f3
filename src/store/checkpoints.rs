//! Signed checkpoints of the activity chain and the Ed25519 keys that sign them (see the
//! `audit_checkpoints` migration). Keys are kept like the token signing keys: the current one is
//! the highest generation, and the private key is text in `secret`.

use super::entities::{audit_checkpoint, audit_key};
use super::{StoreError, StoreResult, Tx, sealed};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

/// A stored audit signing key. The private key is never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditKeyRow {
    pub kid: String,
    pub generation: i64,
    /// PKCS#8, base64.
    pub secret: String,
    /// The raw public key, base64.
    pub public_key: String,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for AuditKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKeyRow")
            .field("kid", &self.kid)
            .field("generation", &self.generation)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub id: String,
    pub workspace_id: String,
    pub seq: i64,
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub kid: String,
    /// Ed25519 signature, base64.
    pub signature: String,
}

/// The row with its private key opened (see `sealed`).
fn key_row(tx: &Tx, m: audit_key::Model) -> StoreResult<AuditKeyRow> {
    Ok(AuditKeyRow {
        secret: tx
            .sealer
            .open(&sealed::aad("audit_keys", &m.kid), &m.secret)?,
        kid: m.kid,
        generation: m.generation,
        public_key: m.public_key,
        created_at: m.created_at,
    })
}

fn checkpoint_row(m: audit_checkpoint::Model) -> CheckpointRow {
    CheckpointRow {
        id: m.id,
        workspace_id: m.workspace_id,
        seq: m.seq,
        hash: m.hash,
        created_at: m.created_at,
        kid: m.kid,
        signature: m.signature,
    }
}

/// Where a workspace's chain stands against its latest checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointCandidate {
    pub workspace_id: String,
    pub head_seq: i64,
    /// The latest checkpoint's seq and time, if any.
    pub last: Option<(i64, DateTime<Utc>)>,
}

impl Tx {
    /// Every workspace with a chain whose head moved past its latest checkpoint, in one statement,
    /// so the timer that signs checkpoints costs little when nothing is due.
    pub async fn checkpoint_candidates(&self) -> StoreResult<Vec<CheckpointCandidate>> {
        let sql = "SELECT c.workspace_id, c.last_seq, cp.seq AS cp_seq, cp.created_at AS cp_at \
            FROM activity_chains c LEFT JOIN audit_checkpoints cp \
            ON cp.workspace_id = c.workspace_id \
            AND cp.seq = (SELECT MAX(x.seq) FROM audit_checkpoints x WHERE x.workspace_id = c.workspace_id) \
            WHERE cp.seq IS NULL OR c.last_seq > cp.seq";
        let rows = self
            .tx
            .query_all_raw(Statement::from_string(self.tx.get_database_backend(), sql))
            .await?;
        rows.into_iter()
            .map(|r| {
                let cp_seq: Option<i64> = r.try_get("", "cp_seq")?;
                let cp_at: Option<DateTime<Utc>> = r.try_get("", "cp_at")?;
                Ok(CheckpointCandidate {
                    workspace_id: r.try_get("", "workspace_id")?,
                    head_seq: r.try_get("", "last_seq")?,
                    last: cp_seq.zip(cp_at),
                })
            })
            .collect::<Result<_, sea_orm::DbErr>>()
            .map_err(StoreError::from)
    }

    /// The current audit key (the highest generation), if one was ever made.
    pub async fn latest_audit_key(&self) -> StoreResult<Option<AuditKeyRow>> {
        audit_key::Entity::find()
            .order_by_desc(audit_key::Column::Generation)
            .one(&self.tx)
            .await?
            .map(|m| key_row(self, m))
            .transpose()
    }

    /// Every audit key, current or not (checkpoints name the one that signed them).
    pub async fn audit_keys(&self) -> StoreResult<Vec<AuditKeyRow>> {
        audit_key::Entity::find()
            .order_by_desc(audit_key::Column::Generation)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(|m| key_row(self, m))
            .collect()
    }

    /// Adds `key` if its generation is still free; a concurrent writer that took it first makes
    /// this a `Conflict` (the caller re-reads the winner's key in a new transaction).
    pub async fn insert_audit_key(&self, key: &AuditKeyRow) -> StoreResult<()> {
        audit_key::Entity::insert(audit_key::ActiveModel {
            kid: Set(key.kid.clone()),
            generation: Set(key.generation),
            secret: Set(self
                .sealer
                .seal(&sealed::aad("audit_keys", &key.kid), &key.secret)),
            public_key: Set(key.public_key.clone()),
            created_at: Set(key.created_at),
            retired_at: Set(None),
        })
        .exec(&self.tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Query(text) if text.contains("unique") || text.contains("UNIQUE") => {
                StoreError::Conflict(text)
            }
            other => other,
        })?;
        Ok(())
    }

    /// The workspace's latest checkpoint.
    pub async fn last_checkpoint(&self, workspace_id: &str) -> StoreResult<Option<CheckpointRow>> {
        Ok(audit_checkpoint::Entity::find()
            .filter(audit_checkpoint::Column::WorkspaceId.eq(workspace_id))
            .order_by_desc(audit_checkpoint::Column::Seq)
            .one(&self.tx)
            .await?
            .map(checkpoint_row))
    }

    /// The workspace's checkpoints, newest first, at most `limit`.
    pub async fn checkpoints(
        &self,
        workspace_id: &str,
        limit: u64,
    ) -> StoreResult<Vec<CheckpointRow>> {
        Ok(audit_checkpoint::Entity::find()
            .filter(audit_checkpoint::Column::WorkspaceId.eq(workspace_id))
            .order_by_desc(audit_checkpoint::Column::Seq)
            .limit(limit)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(checkpoint_row)
            .collect())
    }

    /// Stores a checkpoint unless the workspace already has one at that seq (another replica
    /// signed the same head); returns whether this one was stored. `ON CONFLICT DO NOTHING` keeps
    /// the transaction usable on PostgreSQL either way.
    pub async fn insert_checkpoint(&self, c: &CheckpointRow) -> StoreResult<bool> {
        let n = audit_checkpoint::Entity::insert(audit_checkpoint::ActiveModel {
            id: Set(c.id.clone()),
            workspace_id: Set(c.workspace_id.clone()),
            seq: Set(c.seq),
            hash: Set(c.hash.clone()),
            created_at: Set(c.created_at),
            kid: Set(c.kid.clone()),
            signature: Set(c.signature.clone()),
        })
        .on_conflict(
            OnConflict::columns([
                audit_checkpoint::Column::WorkspaceId,
                audit_checkpoint::Column::Seq,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&self.tx)
        .await?;
        Ok(n > 0)
    }
}
