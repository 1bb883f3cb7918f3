//! The tamper-evident audit trail: each activity entry gets a per-workspace `seq` and a `hash`
//! chaining it to the one before (see [`crate::chain`]), and `activity_chains` holds each
//! workspace's head (taken last in a writing transaction, like the outbox counter) and the point
//! pruning removed entries up to. Existing entries are chained here in id order (ids are
//! time-ordered), so an upgraded database verifies from its first entry.

use crate::chain;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::prelude::ChronoDateTimeUtc;

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
                .table(ActivityChains::Table)
                .col(string(ActivityChains::WorkspaceId).primary_key())
                .col(big_integer(ActivityChains::LastSeq))
                .col(string(ActivityChains::LastHash))
                // Entries up to `pruned_seq` were pruned; `pruned_hash` is the hash of that entry,
                // which the first remaining entry chains from.
                .col(big_integer(ActivityChains::PrunedSeq).default(0))
                .col(string_null(ActivityChains::PrunedHash))
                .to_owned(),
        )
        .await?;
        // Nullable: a row written around the store (by hand) has none, and verify says so.
        m.alter_table(
            Table::alter()
                .table(Activity::Table)
                .add_column(big_integer_null(Activity::Seq))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Activity::Table)
                .add_column(string_null(Activity::Hash))
                .to_owned(),
        )
        .await?;
        backfill(m).await?;
        m.create_index(
            Index::create()
                .name("ux_activity_workspace_seq")
                .table(Activity::Table)
                .col(Activity::WorkspaceId)
                .col(Activity::Seq)
                .unique()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ux_activity_workspace_seq")
                .table(Activity::Table)
                .to_owned(),
        )
        .await?;
        for col in [Activity::Hash, Activity::Seq] {
            m.alter_table(
                Table::alter()
                    .table(Activity::Table)
                    .drop_column(col)
                    .to_owned(),
            )
            .await?;
        }
        m.drop_table(Table::drop().table(ActivityChains::Table).to_owned())
            .await
    }
}

/// Chains the existing entries of every workspace and records each head.
async fn backfill(m: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = m.get_connection();
    let select = Query::select()
        .columns([
            Activity::Id,
            Activity::WorkspaceId,
            Activity::ActorKind,
            Activity::ActorId,
            Activity::AgentId,
            Activity::ActivityType,
            Activity::Outcome,
            Activity::Description,
            Activity::Metadata,
            Activity::ProjectId,
            Activity::TaskId,
            Activity::PageId,
            Activity::CreatedAt,
        ])
        .from(Activity::Table)
        .order_by(Activity::WorkspaceId, Order::Asc)
        .order_by(Activity::Id, Order::Asc)
        .to_owned();
    let rows = db.query_all(&select).await?;
    // (workspace, last seq, last hash) per workspace, in order.
    let mut heads: Vec<(String, i64, String)> = Vec::new();
    for row in rows {
        let get = |c: &str| row.try_get::<String>("", c);
        let opt = |c: &str| row.try_get::<Option<String>>("", c);
        let id = get("id")?;
        let ws = get("workspace_id")?;
        if heads.last().is_none_or(|(w, _, _)| *w != ws) {
            let g = chain::genesis(&ws);
            heads.push((ws.clone(), 0, g));
        }
        let Some((_, seq, prev)) = heads.last_mut() else {
            unreachable!("pushed above")
        };
        *seq += 1;
        let created_at: ChronoDateTimeUtc = row.try_get("", "created_at")?;
        let (agent, outcome, project, task, page) = (
            opt("agent_id")?,
            opt("outcome")?,
            opt("project_id")?,
            opt("task_id")?,
            opt("page_id")?,
        );
        let (kind, actor, kind_of, description, metadata) = (
            get("actor_kind")?,
            get("actor_id")?,
            get("activity_type")?,
            get("description")?,
            get("metadata")?,
        );
        let hash = chain::hash(
            prev,
            &chain::Link {
                workspace_id: &ws,
                seq: *seq,
                id: &id,
                created_at_micros: created_at.timestamp_micros(),
                actor_kind: &kind,
                actor_id: &actor,
                agent_id: agent.as_deref(),
                activity_type: &kind_of,
                outcome: outcome.as_deref(),
                project_id: project.as_deref(),
                task_id: task.as_deref(),
                page_id: page.as_deref(),
                description: &description,
                metadata: &metadata,
            },
        );
        let update = Query::update()
            .table(Activity::Table)
            .value(Activity::Seq, *seq)
            .value(Activity::Hash, hash.clone())
            .and_where(Expr::col(Activity::Id).eq(id))
            .to_owned();
        db.execute(&update).await?;
        *prev = hash;
    }
    for (ws, seq, hash) in heads {
        let insert = Query::insert()
            .into_table(ActivityChains::Table)
            .columns([
                ActivityChains::WorkspaceId,
                ActivityChains::LastSeq,
                ActivityChains::LastHash,
            ])
            .values_panic([ws.into(), seq.into(), hash.into()])
            .to_owned();
        db.execute(&insert).await?;
    }
    Ok(())
}

#[derive(DeriveIden)]
enum ActivityChains {
    Table,
    WorkspaceId,
    LastSeq,
    LastHash,
    PrunedSeq,
    PrunedHash,
}

// The column is named after the table (`activity_type`), as in the initial migration.
#[allow(clippy::enum_variant_names)]
#[derive(DeriveIden)]
enum Activity {
    Table,
    Id,
    WorkspaceId,
    ActorKind,
    ActorId,
    AgentId,
    ActivityType,
    Outcome,
    Description,
    Metadata,
    ProjectId,
    TaskId,
    PageId,
    CreatedAt,
    Seq,
    Hash,
}
