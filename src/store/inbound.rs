//! Inbound webhooks already answered (see the `inbound_webhooks` migration): the replay guard.

use super::entities::inbound_webhook;
use super::{StoreResult, Tx};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

/// The answer given to a processed webhook, returned as is when the same id comes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundReceipt {
    pub status_code: u16,
    pub response_body: String,
    pub received_at: DateTime<Utc>,
}

impl Tx {
    pub async fn inbound_receipt(
        &self,
        workspace_id: &str,
        webhook_id: &str,
    ) -> StoreResult<Option<InboundReceipt>> {
        Ok(
            inbound_webhook::Entity::find_by_id((workspace_id.to_owned(), webhook_id.to_owned()))
                .one(&self.tx)
                .await?
                .map(|m| InboundReceipt {
                    status_code: u16::try_from(m.status_code).unwrap_or(500),
                    response_body: m.response_body,
                    received_at: m.received_at,
                }),
        )
    }

    /// Records the answer to a webhook; a second insert of the same id is a `Conflict`.
    pub async fn insert_inbound_receipt(
        &self,
        workspace_id: &str,
        webhook_id: &str,
        receipt: &InboundReceipt,
    ) -> StoreResult<()> {
        inbound_webhook::Entity::insert(inbound_webhook::ActiveModel {
            workspace_id: sea_orm::Set(workspace_id.to_owned()),
            webhook_id: sea_orm::Set(webhook_id.to_owned()),
            received_at: sea_orm::Set(receipt.received_at),
            status_code: sea_orm::Set(i32::from(receipt.status_code)),
            response_body: sea_orm::Set(receipt.response_body.clone()),
        })
        .exec(&self.tx)
        .await?;
        Ok(())
    }

    /// Forgets receipts received before `cutoff` (every workspace: this is housekeeping, and a
    /// replay that old fails the timestamp check before reaching the guard).
    pub async fn prune_inbound_receipts(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        Ok(inbound_webhook::Entity::delete_many()
            .filter(inbound_webhook::Column::ReceivedAt.lt(cutoff))
            .exec(&self.tx)
            .await?
            .rows_affected)
    }
}
