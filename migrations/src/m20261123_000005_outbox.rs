//! The ordered outbox: a gapless per-workspace `seq` on events (from a counter row per workspace,
//! taken last in each writing transaction so seq order is commit order), and webhook deliveries
//! written in the event's own transaction so none is lost across restarts.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(EventStreams::Table)
                .col(string(EventStreams::WorkspaceId).primary_key())
                .col(big_integer(EventStreams::LastSeq))
                // Set when the control plane answered 410 Gone; cleared by setting the URL again.
                .col(timestamp_with_time_zone_null(
                    EventStreams::WebhooksDisabledAt,
                ))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_event_streams_workspace")
                        .from(EventStreams::Table, EventStreams::WorkspaceId)
                        .to(Workspaces::Table, Workspaces::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;

        m.alter_table(
            Table::alter()
                .table(Events::Table)
                .add_column(big_integer(Events::Seq).default(0))
                .to_owned(),
        )
        .await?;
        backfill_seq(m).await?;
        m.create_index(
            Index::create()
                .name("ux_events_workspace_seq")
                .table(Events::Table)
                .col(Events::WorkspaceId)
                .col(Events::Seq)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(WebhookDeliveries::Table)
                .col(string(WebhookDeliveries::Id).primary_key())
                .col(string(WebhookDeliveries::WorkspaceId))
                .col(string(WebhookDeliveries::EventId))
                .col(big_integer(WebhookDeliveries::Seq))
                .col(string(WebhookDeliveries::EventType))
                // The agent the event is about ("" for none): deliveries with the same key go in order.
                .col(string(WebhookDeliveries::AgentKey))
                .col(string(WebhookDeliveries::WebhookId))
                .col(string(WebhookDeliveries::Status))
                .col(integer(WebhookDeliveries::Attempts))
                .col(timestamp_with_time_zone(WebhookDeliveries::NextAttemptAt))
                .col(integer_null(WebhookDeliveries::LastStatus))
                .col(text_null(WebhookDeliveries::LastError))
                .col(timestamp_with_time_zone_null(
                    WebhookDeliveries::LockedUntil,
                ))
                .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                .col(timestamp_with_time_zone(WebhookDeliveries::UpdatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_webhook_deliveries_workspace")
                        .from(WebhookDeliveries::Table, WebhookDeliveries::WorkspaceId)
                        .to(Workspaces::Table, Workspaces::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_webhook_deliveries_status")
                .table(WebhookDeliveries::Table)
                .col(WebhookDeliveries::Status)
                .col(WebhookDeliveries::Seq)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_webhook_deliveries_event")
                .table(WebhookDeliveries::Table)
                .col(WebhookDeliveries::WorkspaceId)
                .col(WebhookDeliveries::Seq)
                .unique()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(WebhookDeliveries::Table).to_owned())
            .await?;
        m.drop_index(
            Index::drop()
                .name("ux_events_workspace_seq")
                .table(Events::Table)
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Events::Table)
                .drop_column(Events::Seq)
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table(EventStreams::Table).to_owned())
            .await
    }
}

/// Numbers existing events per workspace in id order (ids are time-ordered) and records each
/// workspace's last number, so the unique index holds and new events continue the sequence.
async fn backfill_seq(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = m.get_connection();
    let select = Query::select()
        .columns([Events::Id, Events::WorkspaceId])
        .from(Events::Table)
        .order_by(Events::WorkspaceId, Order::Asc)
        .order_by(Events::Id, Order::Asc)
        .to_owned();
    let rows = db.query_all(&select).await?;
    let mut last: Vec<(String, i64)> = Vec::new();
    for row in rows {
        let id: String = row.try_get("", "id")?;
        let ws: String = row.try_get("", "workspace_id")?;
        let seq = match last.last_mut() {
            Some((w, n)) if *w == ws => {
                *n += 1;
                *n
            }
            _ => {
                last.push((ws.clone(), 1));
                1
            }
        };
        let update = Query::update()
            .table(Events::Table)
            .value(Events::Seq, seq)
            .and_where(Expr::col(Events::Id).eq(id))
            .to_owned();
        db.execute(&update).await?;
    }
    for (ws, n) in last {
        let insert = Query::insert()
            .into_table(EventStreams::Table)
            .columns([EventStreams::WorkspaceId, EventStreams::LastSeq])
            .values_panic([ws.into(), n.into()])
            .to_owned();
        db.execute(&insert).await?;
    }
    Ok(())
}

#[derive(DeriveIden)]
enum EventStreams {
    Table,
    WorkspaceId,
    LastSeq,
    WebhooksDisabledAt,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    WorkspaceId,
    Seq,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    WorkspaceId,
    EventId,
    Seq,
    EventType,
    AgentKey,
    WebhookId,
    Status,
    Attempts,
    NextAttemptAt,
    LastStatus,
    LastError,
    LockedUntil,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
}
