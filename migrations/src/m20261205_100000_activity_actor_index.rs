//! One fewer index write for every entry an agent's call appends. An agent acting writes its own
//! id as both `actor_id` and `agent_id`, so `ix_activity_agent` already orders those entries by
//! actor; `ix_activity_actor` now keeps only the entries where the two differ (a member, the
//! system or the control plane acting, or a row that breaks the rule), and a filter on an actor
//! reads the agent index for the first kind and this one for the second, then merges the two
//! (`store::query_activity`).
//!
//! A query uses a partial index only when its own conditions name the index's condition, so the
//! store adds the same literal condition to the second read.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        drop(m).await?;
        let mut by_actor = by_actor();
        by_actor.and_where(
            Expr::col(Activity::ActorKind)
                .ne("agent")
                .or(Expr::col(Activity::AgentId).is_null())
                .or(Expr::col(Activity::AgentId).ne(Expr::col(Activity::ActorId))),
        );
        m.create_index(by_actor).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        drop(m).await?;
        m.create_index(by_actor()).await
    }
}

const NAME: &str = "ix_activity_actor";

/// The (workspace, actor, id) index.
fn by_actor() -> IndexCreateStatement {
    Index::create()
        .name(NAME)
        .table(Activity::Table)
        .col(Activity::WorkspaceId)
        .col(Activity::ActorId)
        .col(Activity::Id)
        .to_owned()
}

async fn drop(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    m.drop_index(Index::drop().name(NAME).table(Activity::Table).to_owned())
        .await
}

#[derive(DeriveIden, Clone, Copy)]
enum Activity {
    Table,
    Id,
    WorkspaceId,
    ActorKind,
    ActorId,
    AgentId,
}
