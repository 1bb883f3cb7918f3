//! Two fewer index writes for each of the gate's allowed decisions. Every tool call appends a
//! `tool.call` entry, nearly always `allowed`, and each commit rewrites the last leaf page of
//! every index an entry lands in (SQLite writes whole pages to the WAL).
//!
//! - `ix_activity_type` keeps entries of every type but `tool.call`: a filter on a rarer type
//!   finds them through it; a filter on `tool.call`, the commonest type, reads the workspace's
//!   entries newest first and soon has its page.
//! - `ix_activity_outcome` keeps entries whose outcome is not `allowed` (denied ones; entries
//!   with no outcome are in neither case): "denied only" uses it, "allowed" reads newest first.
//!
//! A query uses a partial index only when its own conditions name the index's condition, so the
//! store adds the same literal condition to such filters (`store::query_activity`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        drop(m, "ix_activity_type").await?;
        drop(m, "ix_activity_outcome").await?;
        let mut by_type = by(Activity::ActivityType, "ix_activity_type");
        by_type.and_where(Expr::col(Activity::ActivityType).ne("tool.call"));
        m.create_index(by_type).await?;
        let mut by_outcome = by(Activity::Outcome, "ix_activity_outcome");
        by_outcome.and_where(Expr::col(Activity::Outcome).ne("allowed"));
        m.create_index(by_outcome).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        drop(m, "ix_activity_type").await?;
        drop(m, "ix_activity_outcome").await?;
        m.create_index(by(Activity::ActivityType, "ix_activity_type"))
            .await?;
        m.create_index(by(Activity::Outcome, "ix_activity_outcome"))
            .await
    }
}

/// The (workspace, `col`, id) index named `name`.
fn by(col: Activity, name: &str) -> IndexCreateStatement {
    Index::create()
        .name(name)
        .table(Activity::Table)
        .col(Activity::WorkspaceId)
        .col(col)
        .col(Activity::Id)
        .to_owned()
}

async fn drop(m: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    m.drop_index(Index::drop().name(name).table(Activity::Table).to_owned())
        .await
}

// `ActivityType` is the column `activity_type`.
#[allow(clippy::enum_variant_names)]
#[derive(DeriveIden, Clone, Copy)]
enum Activity {
    Table,
    Id,
    WorkspaceId,
    ActivityType,
    Outcome,
}
