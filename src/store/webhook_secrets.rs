//! Webhook signing secrets per workspace (see the `webhook_secrets` migration).

use super::entities::webhook_secret;
use super::{StoreError, StoreResult, Tx, sealed};
use crate::domain::{WebhookSecret, new_id};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

impl Tx {
    /// The secrets valid at `now`, newest first: sign with all of them, accept any of them.
    pub async fn active_webhook_secrets(
        &self,
        workspace_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<WebhookSecret>> {
        webhook_secret::Entity::find()
            .filter(webhook_secret::Column::WorkspaceId.eq(workspace_id))
            .filter(
                webhook_secret::Column::ExpiresAt
                    .is_null()
                    .or(webhook_secret::Column::ExpiresAt.gt(now)),
            )
            .order_by_desc(webhook_secret::Column::CreatedAt)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(|m| {
                let secret = self
                    .sealer
                    .open(&sealed::aad("webhook_secrets", &m.id), &m.secret)?;
                WebhookSecret::parse(&secret)
                    .map_err(|e| StoreError::Corrupt(format!("webhook secret {}: {e}", m.id)))
            })
            .collect()
    }

    /// Makes `secret` the workspace's current secret; the ones active now stay valid until
    /// `previous_valid_until` (pass `now` to end them at once).
    pub async fn rotate_webhook_secret(
        &self,
        workspace_id: &str,
        secret: &WebhookSecret,
        now: DateTime<Utc>,
        previous_valid_until: DateTime<Utc>,
    ) -> StoreResult<()> {
        webhook_secret::Entity::update_many()
            .col_expr(
                webhook_secret::Column::ExpiresAt,
                Expr::value(previous_valid_until),
            )
            .filter(webhook_secret::Column::WorkspaceId.eq(workspace_id))
            .filter(
                webhook_secret::Column::ExpiresAt
                    .is_null()
                    .or(webhook_secret::Column::ExpiresAt.gt(previous_valid_until)),
            )
            .exec(&self.tx)
            .await?;
        let id = new_id();
        let stored = self
            .sealer
            .seal(&sealed::aad("webhook_secrets", &id), &secret.expose());
        webhook_secret::Entity::insert(webhook_secret::ActiveModel {
            id: sea_orm::Set(id),
            workspace_id: sea_orm::Set(workspace_id.to_owned()),
            secret: sea_orm::Set(stored),
            created_at: sea_orm::Set(now),
            expires_at: sea_orm::Set(None),
        })
        .exec(&self.tx)
        .await?;
        Ok(())
    }
}
