//! The activity table keyed by (workspace, id): one fewer b-tree written per audit entry.
//!
//! Every query of the trail names its workspace, and the trail is read in id order (ids are
//! UUIDv7, in time order) or by seq. The table was keyed by `id` alone, with
//! `ix_activity_workspace` (workspace, id) beside it, so each entry went into two indexes for one
//! key: on SQLite a lone call's audit commit wrote six pages to the WAL, two of them these. The
//! key is now (workspace, id) and the index goes: on SQLite five pages, and on PostgreSQL one
//! index fewer to update. An id is still unique within its workspace, which is what keeps a batch
//! from being written twice (`store::chain`).
//!
//! SQLite keeps its rowid table, the key being an index like the others: a table without rowid,
//! keyed by (workspace, id), would save one page more, but without statistics its planner then
//! reads every filter of the trail (agent, project, outcome, the entries outside the chain)
//! along the key rather than through the filter's own index, and the last of those runs before
//! every audit checkpoint.
//!
//! SQLite cannot change a table's key in place: the table is copied into a new one, the old
//! dropped and the new renamed, and the old table's other indexes are made again from their own
//! definitions, in one transaction.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        set_key(m, true).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        set_key(m, false).await
    }
}

/// Keys `activity` by (workspace, id) and drops the index that makes redundant
/// (`by_workspace`), or keys it by `id` again beside that index.
async fn set_key(m: &SchemaManager<'_>, by_workspace: bool) -> Result<(), DbErr> {
    if m.get_database_backend() == DbBackend::Sqlite {
        return rebuild(m, by_workspace).await;
    }
    let db = m.get_connection();
    let key = if by_workspace {
        r#""workspace_id", "id""#
    } else {
        r#""id""#
    };
    db.execute_unprepared(r#"ALTER TABLE "activity" DROP CONSTRAINT "activity_pkey""#)
        .await?;
    db.execute_unprepared(&format!(
        r#"ALTER TABLE "activity" ADD CONSTRAINT "activity_pkey" PRIMARY KEY ({key})"#
    ))
    .await?;
    let index = if by_workspace {
        r#"DROP INDEX "ix_activity_workspace""#
    } else {
        WORKSPACE_INDEX
    };
    db.execute_unprepared(index).await.map(drop)
}

/// The (workspace, id) index the new key makes redundant.
const WORKSPACE_INDEX: &str =
    r#"CREATE INDEX "ix_activity_workspace" ON "activity" ("workspace_id", "id")"#;

const COLUMNS: &str = r#""id", "workspace_id", "actor_kind", "actor_id", "agent_id", "activity_type", "outcome", "description", "metadata", "project_id", "task_id", "page_id", "created_at", "seq", "hash""#;

/// Copies SQLite's `activity` into a table keyed by (workspace, id) (`by_workspace`), or back
/// into one keyed by `id`, and makes its other indexes again.
async fn rebuild(m: &SchemaManager<'_>, by_workspace: bool) -> Result<(), DbErr> {
    let db = m.get_connection();
    let indexes: Vec<String> = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'activity' \
             AND sql IS NOT NULL AND name <> 'ix_activity_workspace' ORDER BY name",
        ))
        .await?
        .iter()
        .map(|row| row.try_get::<String>("", "sql"))
        .collect::<Result<_, _>>()?;
    let (id, key) = if by_workspace {
        (
            r#""id" varchar NOT NULL"#,
            r#", PRIMARY KEY ("workspace_id", "id"))"#,
        )
    } else {
        (r#""id" varchar NOT NULL PRIMARY KEY"#, ")")
    };
    db.execute_unprepared(&format!(
        r#"CREATE TABLE "activity_rebuilt" ( {id}, "workspace_id" varchar NOT NULL, "actor_kind" varchar NOT NULL, "actor_id" varchar NOT NULL, "agent_id" varchar NULL, "activity_type" varchar NOT NULL, "outcome" varchar NULL, "description" text NOT NULL, "metadata" text NOT NULL, "project_id" varchar NULL, "task_id" varchar NULL, "page_id" varchar NULL, "created_at" timestamp_with_timezone_text NOT NULL, "seq" integer NULL, "hash" varchar NULL{key}"#
    ))
    .await?;
    db.execute_unprepared(&format!(
        r#"INSERT INTO "activity_rebuilt" ({COLUMNS}) SELECT {COLUMNS} FROM "activity""#
    ))
    .await?;
    db.execute_unprepared(r#"DROP TABLE "activity""#).await?;
    db.execute_unprepared(r#"ALTER TABLE "activity_rebuilt" RENAME TO "activity""#)
        .await?;
    for sql in indexes {
        db.execute_unprepared(&sql).await?;
    }
    if !by_workspace {
        db.execute_unprepared(WORKSPACE_INDEX).await?;
    }
    Ok(())
}
