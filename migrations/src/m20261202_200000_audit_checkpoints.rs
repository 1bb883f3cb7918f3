//! Signed checkpoints of the activity chain. `audit_keys` holds the server's Ed25519 keys, stored
//! like the token signing keys (`signing_keys`): one row per generation, the private key as text in
//! `secret`, so the change that encrypts secrets at rest covers both. `audit_checkpoints` holds
//! each signed `(workspace, seq, hash, time)`; `(workspace_id, seq)` is unique, so replicas that
//! checkpoint one head at once keep one row.

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
                .table(AuditKeys::Table)
                .col(string(AuditKeys::Kid).primary_key())
                .col(big_integer(AuditKeys::Generation).unique_key())
                // PKCS#8 document, base64.
                .col(string(AuditKeys::Secret))
                // The raw 32-byte public key, base64.
                .col(string(AuditKeys::PublicKey))
                .col(timestamp_with_time_zone(AuditKeys::CreatedAt))
                .col(timestamp_with_time_zone_null(AuditKeys::RetiredAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AuditCheckpoints::Table)
                .col(string(AuditCheckpoints::Id).primary_key())
                .col(string(AuditCheckpoints::WorkspaceId))
                .col(big_integer(AuditCheckpoints::Seq))
                .col(string(AuditCheckpoints::Hash))
                .col(timestamp_with_time_zone(AuditCheckpoints::CreatedAt))
                .col(string(AuditCheckpoints::Kid))
                .col(string(AuditCheckpoints::Signature))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_audit_checkpoints_workspace_seq")
                .table(AuditCheckpoints::Table)
                .col(AuditCheckpoints::WorkspaceId)
                .col(AuditCheckpoints::Seq)
                .unique()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(AuditCheckpoints::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(AuditKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AuditKeys {
    Table,
    Kid,
    Generation,
    Secret,
    PublicKey,
    CreatedAt,
    RetiredAt,
}

#[derive(DeriveIden)]
enum AuditCheckpoints {
    Table,
    Id,
    WorkspaceId,
    Seq,
    Hash,
    CreatedAt,
    Kid,
    Signature,
}
