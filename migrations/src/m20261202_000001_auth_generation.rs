//! One counter bumped in the same transaction as every change that can affect authorization
//! (agent status or grant, keys, workspace settings, members). A process caches credentials and
//! members in memory and serves them only while the counter it reads on each request is unchanged,
//! so a change made by any process or replica applies to the very next request everywhere.

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
                .table(AuthGeneration::Table)
                .col(integer(AuthGeneration::Id).primary_key())
                .col(big_integer(AuthGeneration::Value))
                .to_owned(),
        )
        .await?;
        let insert = Query::insert()
            .into_table(AuthGeneration::Table)
            .columns([AuthGeneration::Id, AuthGeneration::Value])
            .values_panic([1.into(), 0i64.into()])
            .to_owned();
        m.get_connection().execute(&insert).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(AuthGeneration::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AuthGeneration {
    Table,
    Id,
    Value,
}
