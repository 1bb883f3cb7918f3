//! Signed inbound webhooks already processed, so a replayed `webhook-id` is answered from here
//! instead of being processed twice. Rows older than twice the signature tolerance are pruned:
//! past that, a replay fails the timestamp check anyway.

use sea_orm_migration::{prelude::*, schema::*};

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
                .table(InboundWebhooks::Table)
                .col(string(InboundWebhooks::WorkspaceId))
                .col(string(InboundWebhooks::WebhookId))
                .col(timestamp_with_time_zone(InboundWebhooks::ReceivedAt))
                .col(integer(InboundWebhooks::StatusCode))
                .col(text(InboundWebhooks::ResponseBody))
                .primary_key(
                    Index::create()
                        .col(InboundWebhooks::WorkspaceId)
                        .col(InboundWebhooks::WebhookId),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_inbound_webhooks_workspace")
                        .from(InboundWebhooks::Table, InboundWebhooks::WorkspaceId)
                        .to(Workspaces::Table, Workspaces::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_inbound_webhooks_received_at")
                .table(InboundWebhooks::Table)
                .col(InboundWebhooks::ReceivedAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(InboundWebhooks::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum InboundWebhooks {
    Table,
    WorkspaceId,
    WebhookId,
    ReceivedAt,
    StatusCode,
    ResponseBody,
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
}
