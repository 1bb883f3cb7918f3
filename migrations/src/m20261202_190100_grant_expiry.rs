//! Grants that expire: an approved agent's access may end at `access_expires_at`, and
//! `access_expiry_recorded_at` is set by the one transaction that records the expiry (event and
//! audit entry), so replicas racing on it record it once. `temporary_permissions` holds extra
//! permissions with their own end, as JSON `[{"permission": …, "expires_at": …}]`.

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
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for col in [
            timestamp_with_time_zone_null(Agents::AccessExpiresAt),
            timestamp_with_time_zone_null(Agents::AccessExpiryRecordedAt),
            text(Agents::TemporaryPermissions).default("[]").to_owned(),
        ] {
            m.alter_table(
                Table::alter()
                    .table(Agents::Table)
                    .add_column(col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in [
            Agents::TemporaryPermissions,
            Agents::AccessExpiryRecordedAt,
            Agents::AccessExpiresAt,
        ] {
            m.alter_table(
                Table::alter()
                    .table(Agents::Table)
                    .drop_column(col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    AccessExpiresAt,
    AccessExpiryRecordedAt,
    TemporaryPermissions,
}
