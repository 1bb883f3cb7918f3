//! An index of the activity entries that are not in the hash chain, and only of those.
//!
//! Every entry the store writes is chained at commit (it has a `seq` and a `hash`), so an entry
//! without one was written around the store. The chain's verification looks for the oldest such
//! entry of a workspace, and the server verifies before every audit checkpoint (every two
//! seconds under load): without this index that lookup read every entry of the workspace, half
//! a million rows in 0.14 s, more as the trail grew. The index holds only the entries it is for,
//! normally none, so it costs appending nothing. A query uses it when its own conditions name
//! the index's condition (`Tx::first_unchained_activity` does).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let mut unchained = Index::create()
            .name(NAME)
            .table(Activity::Table)
            .col(Activity::WorkspaceId)
            .col(Activity::Id)
            .to_owned();
        unchained.and_where(
            Expr::col(Activity::Seq)
                .is_null()
                .or(Expr::col(Activity::Hash).is_null()),
        );
        m.create_index(unchained).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name(NAME).table(Activity::Table).to_owned())
            .await
    }
}

const NAME: &str = "ix_activity_unchained";

#[derive(DeriveIden, Clone, Copy)]
enum Activity {
    Table,
    Id,
    WorkspaceId,
    Seq,
    Hash,
}
