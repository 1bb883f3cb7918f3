//! Reading the outbox: members' event streams and the control plane's webhook deliveries.

use super::{Activity, Service, ServiceError, ServiceResult, now};
use crate::auth::MemberCaller;
use crate::domain::*;
use serde_json::json;

/// The most deliveries one listing returns.
const MAX_DELIVERIES: u64 = 1000;

impl Service {
    /// Events of the caller's workspace after `after` (a seq), oldest first. Any member may read.
    pub async fn events_after(
        &self,
        caller: &MemberCaller,
        after: i64,
        limit: u64,
    ) -> ServiceResult<Vec<Event>> {
        let tx = self.store.read().await?;
        Ok(tx
            .events_after(&caller.workspace().id, after, limit.min(1000))
            .await?)
    }

    /// The seq of the workspace's latest event (0 when none).
    pub async fn last_event_seq(&self, caller: &MemberCaller) -> ServiceResult<i64> {
        let tx = self.store.read().await?;
        Ok(tx.last_event_seq(&caller.workspace().id).await?)
    }

    /// Whether the caller is still a member of its workspace (streams re-check this).
    pub async fn still_member(&self, caller: &MemberCaller) -> ServiceResult<bool> {
        let tx = self.store.read().await?;
        Ok(tx
            .member_by_email(&caller.workspace().id, &caller.member().email)
            .await?
            .is_some())
    }

    /// Whether an agent still has access (approved, in an enabled workspace). Used to resync open
    /// sessions when the revocation watcher missed events; requests re-check on their own.
    pub async fn agent_still_approved(
        &self,
        workspace_id: &str,
        agent_id: &str,
    ) -> ServiceResult<bool> {
        let tx = self.store.read().await?;
        let approved = tx
            .agent(workspace_id, agent_id)
            .await?
            .is_some_and(|a| a.status == AgentStatus::Approved);
        let enabled = tx
            .workspace_by_id(workspace_id)
            .await?
            .is_some_and(|w| w.settings.enabled);
        Ok(approved && enabled)
    }

    /// The workspace's webhook deliveries, oldest first (admins).
    pub async fn list_deliveries(
        &self,
        caller: &MemberCaller,
        status: Option<DeliveryStatus>,
    ) -> ServiceResult<Vec<WebhookDelivery>> {
        self.require(caller, Role::Admin, "listing webhook deliveries")
            .await?;
        let tx = self.store.read().await?;
        Ok(tx
            .list_deliveries(&caller.workspace().id, status, MAX_DELIVERIES)
            .await?)
    }

    /// Queues a delivery again, due now, whatever its state (admins). It keeps its `webhook-id`,
    /// so a receiver that already processed it can tell.
    pub async fn redeliver(
        &self,
        caller: &MemberCaller,
        id: &str,
    ) -> ServiceResult<WebhookDelivery> {
        self.require(caller, Role::Admin, "redelivering a webhook")
            .await?;
        let ws = &caller.workspace().id;
        let tx = self.store.write().await?;
        let d = tx
            .delivery(ws, id)
            .await?
            .ok_or_else(|| ServiceError::not_found("delivery", id))?;
        if tx.webhooks_disabled_at(ws).await?.is_some() {
            return Err(ServiceError::Conflict(
                "the control plane disabled webhooks (410 Gone); set control_plane_url again first"
                    .into(),
            ));
        }
        tx.requeue_delivery(ws, id, now()).await?;
        tx.insert_activity(
            &Activity::new(ws, &caller.actor(), "webhook.redelivered")
                .description(&format!("webhook {} queued again", d.webhook_id))
                .metadata(json!({ "deliveryId": d.id, "webhookId": d.webhook_id, "seq": d.seq }))
                .build(),
        )
        .await?;
        let d = tx
            .delivery(ws, id)
            .await?
            .ok_or_else(|| ServiceError::not_found("delivery", id))?;
        tx.commit().await?;
        Ok(d)
    }
}
