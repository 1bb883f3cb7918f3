//! Pending OpenID Connect sign-ins (see the `oidc_logins` migration): written when a sign-in
//! starts, taken once when the provider sends the browser back. Keyed by the hash of `state`,
//! so the table alone cannot be used to finish a sign-in.

use super::entities::oidc_login;
use super::{StoreResult, Tx};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

/// A sign-in waiting for the provider's answer.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingOidcLogin {
    /// blake3 of the `state` sent to the provider, hex.
    pub state_hash: String,
    pub workspace_id: String,
    /// blake3 of the key in the browser's cookie, hex: the callback must come from that browser.
    pub browser_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for PendingOidcLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingOidcLogin")
            .field("workspace_id", &self.workspace_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Tx {
    pub async fn insert_oidc_login(&self, p: &PendingOidcLogin) -> StoreResult<()> {
        oidc_login::Entity::insert(oidc_login::ActiveModel {
            state_hash: sea_orm::Set(p.state_hash.clone()),
            workspace_id: sea_orm::Set(p.workspace_id.clone()),
            browser_hash: sea_orm::Set(p.browser_hash.clone()),
            nonce: sea_orm::Set(p.nonce.clone()),
            pkce_verifier: sea_orm::Set(p.pkce_verifier.clone()),
            created_at: sea_orm::Set(p.created_at),
            expires_at: sea_orm::Set(p.expires_at),
        })
        .exec(&self.tx)
        .await?;
        Ok(())
    }

    /// Takes the pending sign-in with this state hash: deletes it and returns it, or `None` when
    /// there is none (never started, already used, or pruned). The delete decides, so of two
    /// callbacks racing with one state only one gets the row, on any replica. The caller checks
    /// `expires_at`.
    pub async fn take_oidc_login(&self, state_hash: &str) -> StoreResult<Option<PendingOidcLogin>> {
        let Some(m) = oidc_login::Entity::find_by_id(state_hash.to_owned())
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let gone = oidc_login::Entity::delete_many()
            .filter(oidc_login::Column::StateHash.eq(state_hash))
            .exec(&self.tx)
            .await?
            .rows_affected;
        if gone == 0 {
            return Ok(None);
        }
        Ok(Some(PendingOidcLogin {
            state_hash: m.state_hash,
            workspace_id: m.workspace_id,
            browser_hash: m.browser_hash,
            nonce: m.nonce,
            pkce_verifier: m.pkce_verifier,
            created_at: m.created_at,
            expires_at: m.expires_at,
        }))
    }

    /// Forgets sign-ins that expired before `now` (every workspace: housekeeping).
    pub async fn prune_oidc_logins(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        Ok(oidc_login::Entity::delete_many()
            .filter(oidc_login::Column::ExpiresAt.lt(now))
            .exec(&self.tx)
            .await?
            .rows_affected)
    }
}
