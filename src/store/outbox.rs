//! The ordered outbox (see the `outbox` migration): events numbered per workspace in commit
//! order, and the webhook deliveries that carry them to the control plane.
//!
//! Numbering happens in [`Tx::commit`]: the transaction's queued events take the next numbers from
//! the workspace's `event_streams` row, whose row lock (PostgreSQL; SQLite has one writer) is held
//! until commit. It is the last lock each transaction takes, so two writers can wait on it but
//! never hold it while waiting on anything else: no lock-order deadlock, and seq order is commit
//! order, which lets feeds read "everything after seq N" without gaps.

use super::entities::{event, event_stream, webhook_delivery, workspace};
use super::{StoreError, StoreResult, Tx, convert};
use crate::domain::*;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};
use std::collections::BTreeMap;

/// A delivery the worker holds a lease on, with what it needs to send it.
#[derive(Debug, Clone)]
pub struct DeliveryClaim {
    pub delivery: WebhookDelivery,
    pub event: Event,
}

/// The outcome of one attempt, as the worker decided it.
#[derive(Debug, Clone)]
pub struct DeliveryAttempt {
    pub status: DeliveryStatus,
    pub http_status: Option<i32>,
    pub error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
}

impl Tx {
    /// Numbers and inserts the queued events (and their deliveries); true when there were any.
    pub(super) async fn flush_events(&self) -> StoreResult<bool> {
        let pending = std::mem::take(
            &mut *self
                .pending_events
                .lock()
                .map_err(|_| StoreError::Query("outbox lock poisoned".into()))?,
        );
        if pending.is_empty() {
            return Ok(false);
        }
        // Workspaces in a fixed order, so a transaction touching two cannot deadlock another.
        let mut by_workspace: BTreeMap<String, Vec<Event>> = BTreeMap::new();
        for e in pending {
            by_workspace
                .entry(e.workspace_id.clone())
                .or_default()
                .push(e);
        }
        for (ws, events) in by_workspace {
            let n = events.len() as i64;
            event_stream::Entity::insert(event_stream::ActiveModel {
                workspace_id: Set(ws.clone()),
                last_seq: Set(n),
                webhooks_disabled_at: Set(None),
            })
            .on_conflict(
                OnConflict::column(event_stream::Column::WorkspaceId)
                    .value(
                        event_stream::Column::LastSeq,
                        Expr::col((event_stream::Entity, event_stream::Column::LastSeq)).add(n),
                    )
                    .to_owned(),
            )
            .exec_without_returning(&self.tx)
            .await?;
            let stream = event_stream::Entity::find_by_id(ws.clone())
                .one(&self.tx)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("no event stream for {ws}")))?;
            let first = stream.last_seq - n + 1;
            let target = self.webhook_target(&ws, &stream).await?;
            let mut models = Vec::with_capacity(events.len());
            let mut deliveries = Vec::new();
            for (i, mut e) in events.into_iter().enumerate() {
                e.seq = first + i as i64;
                if let Some(status) = target {
                    deliveries.push(webhook_delivery::ActiveModel {
                        id: Set(new_id()),
                        workspace_id: Set(ws.clone()),
                        event_id: Set(e.id.clone()),
                        seq: Set(e.seq),
                        event_type: Set(e.event_type.as_str().to_owned()),
                        agent_key: Set(e.agent_id.clone().unwrap_or_default()),
                        webhook_id: Set(format!("msg_{}", e.id)),
                        status: Set(status.as_str().to_owned()),
                        attempts: Set(0),
                        next_attempt_at: Set(e.created_at),
                        last_status: Set(None),
                        last_error: Set(None),
                        locked_until: Set(None),
                        created_at: Set(e.created_at),
                        updated_at: Set(e.created_at),
                    });
                }
                models.push(convert::event_model(&e)?.into_active_model());
            }
            event::Entity::insert_many(models)
                .exec_without_returning(&self.tx)
                .await?;
            if !deliveries.is_empty() {
                webhook_delivery::Entity::insert_many(deliveries)
                    .exec_without_returning(&self.tx)
                    .await?;
            }
        }
        self.notify_events().await?;
        Ok(true)
    }

    /// Whether the workspace's events go to a control plane, and in which state they start.
    async fn webhook_target(
        &self,
        ws: &str,
        stream: &event_stream::Model,
    ) -> StoreResult<Option<DeliveryStatus>> {
        let Some(w) = workspace::Entity::find_by_id(ws.to_owned())
            .one(&self.tx)
            .await?
        else {
            return Ok(None);
        };
        let w = convert::workspace(w)?;
        Ok(w.settings.control_plane_url.as_ref().map(|_| {
            if stream.webhooks_disabled_at.is_some() {
                DeliveryStatus::Disabled
            } else {
                DeliveryStatus::Pending
            }
        }))
    }

    /// Events of a workspace with seq greater than `after`, in seq order.
    pub async fn events_after(
        &self,
        workspace_id: &str,
        after: i64,
        limit: u64,
    ) -> StoreResult<Vec<Event>> {
        event::Entity::find()
            .filter(event::Column::WorkspaceId.eq(workspace_id))
            .filter(event::Column::Seq.gt(after))
            .order_by_asc(event::Column::Seq)
            .limit(limit)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::event)
            .collect()
    }

    /// The last seq committed in a workspace (0 when it has no events).
    pub async fn last_event_seq(&self, workspace_id: &str) -> StoreResult<i64> {
        Ok(event_stream::Entity::find_by_id(workspace_id.to_owned())
            .one(&self.tx)
            .await?
            .map(|s| s.last_seq)
            .unwrap_or(0))
    }

    /// Every workspace's last seq, for feeds that watch all of them.
    pub async fn all_event_streams(&self) -> StoreResult<Vec<(String, i64)>> {
        Ok(event_stream::Entity::find()
            .all(&self.tx)
            .await?
            .into_iter()
            .map(|s| (s.workspace_id, s.last_seq))
            .collect())
    }

    // ---- webhook deliveries ----

    pub async fn list_deliveries(
        &self,
        workspace_id: &str,
        status: Option<DeliveryStatus>,
        limit: u64,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        let mut q = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::WorkspaceId.eq(workspace_id));
        if let Some(s) = status {
            q = q.filter(webhook_delivery::Column::Status.eq(s.as_str()));
        }
        q.order_by_asc(webhook_delivery::Column::Seq)
            .limit(limit)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(delivery)
            .collect()
    }

    pub async fn delivery(
        &self,
        workspace_id: &str,
        id: &str,
    ) -> StoreResult<Option<WebhookDelivery>> {
        webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::WorkspaceId.eq(workspace_id))
            .filter(webhook_delivery::Column::Id.eq(id))
            .one(&self.tx)
            .await?
            .map(delivery)
            .transpose()
    }

    /// Puts a delivery back in the queue, due now, with a fresh give-up clock (its attempts count
    /// on; `created_at` is left alone, the clock is `updated_at`).
    pub async fn requeue_delivery(
        &self,
        workspace_id: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let res = webhook_delivery::Entity::update_many()
            .col_expr(
                webhook_delivery::Column::Status,
                Expr::value(DeliveryStatus::Pending.as_str()),
            )
            .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(now))
            .col_expr(
                webhook_delivery::Column::LockedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(webhook_delivery::Column::UpdatedAt, Expr::value(now))
            .filter(webhook_delivery::Column::WorkspaceId.eq(workspace_id))
            .filter(webhook_delivery::Column::Id.eq(id))
            .exec(&self.tx)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Leases the deliveries that may go now: per (workspace, agent), only the earliest one not
    /// yet settled, and only when it is due and nobody else holds its lease. A lease is taken with
    /// a conditional update, so two replicas never both win the same delivery.
    pub async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        scan: u64,
        max_claims: usize,
    ) -> StoreResult<Vec<DeliveryClaim>> {
        let pending = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .order_by_asc(webhook_delivery::Column::WorkspaceId)
            .order_by_asc(webhook_delivery::Column::Seq)
            .limit(scan)
            .all(&self.tx)
            .await?;
        let mut seen = std::collections::HashSet::new();
        let mut claims = Vec::new();
        for d in pending {
            if claims.len() >= max_claims {
                break;
            }
            if !seen.insert((d.workspace_id.clone(), d.agent_key.clone())) {
                continue; // an earlier delivery for this agent is still unsettled
            }
            let leased = d.locked_until.is_some_and(|l| l > now);
            if d.next_attempt_at > now || leased {
                continue;
            }
            let won = webhook_delivery::Entity::update_many()
                .col_expr(
                    webhook_delivery::Column::LockedUntil,
                    Expr::value(lease_until),
                )
                .filter(webhook_delivery::Column::Id.eq(d.id.as_str()))
                .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
                .filter(
                    webhook_delivery::Column::LockedUntil
                        .is_null()
                        .or(webhook_delivery::Column::LockedUntil.lte(now)),
                )
                .exec(&self.tx)
                .await?
                .rows_affected
                == 1;
            if !won {
                continue;
            }
            let Some(e) = event::Entity::find_by_id(d.event_id.clone())
                .one(&self.tx)
                .await?
            else {
                return Err(StoreError::Corrupt(format!(
                    "delivery {} has no event {}",
                    d.id, d.event_id
                )));
            };
            claims.push(DeliveryClaim {
                delivery: delivery(d)?,
                event: convert::event(e)?,
            });
        }
        Ok(claims)
    }

    /// Records an attempt and releases the lease.
    pub async fn record_delivery_attempt(
        &self,
        id: &str,
        attempt: &DeliveryAttempt,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        webhook_delivery::Entity::update_many()
            .col_expr(
                webhook_delivery::Column::Status,
                Expr::value(attempt.status.as_str()),
            )
            .col_expr(
                webhook_delivery::Column::Attempts,
                Expr::col(webhook_delivery::Column::Attempts).add(1),
            )
            .col_expr(
                webhook_delivery::Column::NextAttemptAt,
                Expr::value(attempt.next_attempt_at),
            )
            .col_expr(
                webhook_delivery::Column::LastStatus,
                Expr::value(attempt.http_status),
            )
            .col_expr(
                webhook_delivery::Column::LastError,
                Expr::value(attempt.error.clone()),
            )
            .col_expr(
                webhook_delivery::Column::LockedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(webhook_delivery::Column::UpdatedAt, Expr::value(now))
            .filter(webhook_delivery::Column::Id.eq(id))
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    /// The control plane answered 410: stop sending to it. Every unsettled delivery of the
    /// workspace is parked as `disabled` (kept, not lost) until the URL is set again.
    pub async fn disable_webhooks(
        &self,
        workspace_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        event_stream::Entity::update_many()
            .col_expr(
                event_stream::Column::WebhooksDisabledAt,
                Expr::value(Some(now)),
            )
            .filter(event_stream::Column::WorkspaceId.eq(workspace_id))
            .exec(&self.tx)
            .await?;
        webhook_delivery::Entity::update_many()
            .col_expr(
                webhook_delivery::Column::Status,
                Expr::value(DeliveryStatus::Disabled.as_str()),
            )
            .col_expr(
                webhook_delivery::Column::LockedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(webhook_delivery::Column::UpdatedAt, Expr::value(now))
            .filter(webhook_delivery::Column::WorkspaceId.eq(workspace_id))
            .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    /// The URL was set again: sending resumes, parked deliveries first (they keep their order).
    pub async fn enable_webhooks(&self, workspace_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        event_stream::Entity::update_many()
            .col_expr(
                event_stream::Column::WebhooksDisabledAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(event_stream::Column::WorkspaceId.eq(workspace_id))
            .exec(&self.tx)
            .await?;
        webhook_delivery::Entity::update_many()
            .col_expr(
                webhook_delivery::Column::Status,
                Expr::value(DeliveryStatus::Pending.as_str()),
            )
            .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(now))
            .col_expr(webhook_delivery::Column::UpdatedAt, Expr::value(now))
            .filter(webhook_delivery::Column::WorkspaceId.eq(workspace_id))
            .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Disabled.as_str()))
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    /// When the control plane disabled the workspace's webhooks (410), if it did.
    pub async fn webhooks_disabled_at(
        &self,
        workspace_id: &str,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(event_stream::Entity::find_by_id(workspace_id.to_owned())
            .one(&self.tx)
            .await?
            .and_then(|s| s.webhooks_disabled_at))
    }
}

fn delivery(m: webhook_delivery::Model) -> StoreResult<WebhookDelivery> {
    let parse_err = |e: ParseError| StoreError::Corrupt(e.0);
    Ok(WebhookDelivery {
        status: DeliveryStatus::parse(&m.status).map_err(parse_err)?,
        event_type: EventType::parse(&m.event_type).map_err(parse_err)?,
        agent_id: (!m.agent_key.is_empty()).then_some(m.agent_key),
        id: m.id,
        workspace_id: m.workspace_id,
        event_id: m.event_id,
        seq: m.seq,
        webhook_id: m.webhook_id,
        attempts: m.attempts,
        next_attempt_at: m.next_attempt_at,
        last_status: m.last_status,
        last_error: m.last_error,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}
