//! A second counter beside the authorization generation, bumped in the same transaction as every
//! change to projects, tasks or assignments. A process keeps each agent's current work in memory
//! and serves it only while this counter is unchanged; the request reads both counters in the
//! statement that validates its credential, so the check costs no extra round trip.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(AuthGeneration::Table)
                .add_column(big_integer(AuthGeneration::Work).default(0))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(AuthGeneration::Table)
                .drop_column(AuthGeneration::Work)
                .to_owned(),
        )
        .await
    }
}

#[derive(DeriveIden)]
enum AuthGeneration {
    Table,
    Work,
}
