//! Webhook signing secrets, one table so a rotation can keep the previous secret valid for a
//! while: the control plane signs with either, and we sign outgoing events with every active one.
//! The secret is symmetric (HMAC), so it is stored as the `whsec_…` value itself.

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
                .table(WebhookSecrets::Table)
                .col(string(WebhookSecrets::Id).primary_key())
                .col(string(WebhookSecrets::WorkspaceId))
                .col(string(WebhookSecrets::Secret))
                .col(timestamp_with_time_zone(WebhookSecrets::CreatedAt))
                .col(timestamp_with_time_zone_null(WebhookSecrets::ExpiresAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_webhook_secrets_workspace")
                        .from(WebhookSecrets::Table, WebhookSecrets::WorkspaceId)
                        .to(Workspaces::Table, Workspaces::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_webhook_secrets_workspace")
                .table(WebhookSecrets::Table)
                .col(WebhookSecrets::WorkspaceId)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(WebhookSecrets::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WebhookSecrets {
    Table,
    Id,
    WorkspaceId,
    Secret,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
}
