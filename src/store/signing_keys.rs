//! Token signing keys (see the `signing_keys` migration). The current key is the one with the
//! highest generation; older ones carry the time they were retired.

use super::entities::signing_key;
use super::{StoreError, StoreResult, Tx, sealed};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

/// A stored signing key. The secret is never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub kid: String,
    pub generation: i64,
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("generation", &self.generation)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl Tx {
    /// Every key still useful at `now`: the current one and those retired after `retired_since`,
    /// newest first.
    pub async fn signing_keys(
        &self,
        retired_since: DateTime<Utc>,
    ) -> StoreResult<Vec<SigningKeyRow>> {
        signing_key::Entity::find()
            .filter(
                signing_key::Column::RetiredAt
                    .is_null()
                    .or(signing_key::Column::RetiredAt.gt(retired_since)),
            )
            .order_by_desc(signing_key::Column::Generation)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(|m| row(self, m))
            .collect()
    }

    /// The key with the highest generation (the current one unless all are retired).
    pub async fn latest_signing_key(&self) -> StoreResult<Option<SigningKeyRow>> {
        signing_key::Entity::find()
            .order_by_desc(signing_key::Column::Generation)
            .one(&self.tx)
            .await?
            .map(|m| row(self, m))
            .transpose()
    }

    /// Adds `key` as the current key if its generation is still free, retiring the keys before
    /// it. A concurrent writer that took the generation first makes this a `Conflict`.
    pub async fn insert_signing_key(&self, key: &SigningKeyRow) -> StoreResult<()> {
        signing_key::Entity::insert(signing_key::ActiveModel {
            kid: sea_orm::Set(key.kid.clone()),
            generation: sea_orm::Set(key.generation),
            secret: sea_orm::Set(
                self.sealer
                    .seal(&sealed::aad("signing_keys", &key.kid), &key.secret),
            ),
            created_at: sea_orm::Set(key.created_at),
            retired_at: sea_orm::Set(None),
        })
        .exec(&self.tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Query(text) if text.contains("unique") || text.contains("UNIQUE") => {
                StoreError::Conflict(text)
            }
            other => other,
        })?;
        signing_key::Entity::update_many()
            .col_expr(signing_key::Column::RetiredAt, Expr::value(key.created_at))
            .filter(signing_key::Column::RetiredAt.is_null())
            .filter(signing_key::Column::Generation.lt(key.generation))
            .exec(&self.tx)
            .await?;
        Ok(())
    }
}

/// The row with its secret opened (see `sealed`).
fn row(tx: &Tx, m: signing_key::Model) -> StoreResult<SigningKeyRow> {
    Ok(SigningKeyRow {
        secret: tx
            .sealer
            .open(&sealed::aad("signing_keys", &m.kid), &m.secret)?,
        kid: m.kid,
        generation: m.generation,
        created_at: m.created_at,
        retired_at: m.retired_at,
    })
}
