//! Fewer index writes per audit entry. Every tool call appends an entry, and each index on
//! `activity` is one more b-tree insert in the audit batch's commit (ten per entry before this).
//!
//! - `ix_activity_created` goes: time ranges are served by the (workspace, id) index, ids being
//!   UUIDv7 in time order, and pruning walks the chain by seq.
//! - The project and task indexes keep only the entries that name one: most entries are the
//!   gate's decisions, which name neither. A query by `project_id = ?` or `task_id = ?` implies
//!   the column is not null, so both SQLite and PostgreSQL still use them.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for name in [
            "ix_activity_created",
            "ix_activity_project",
            "ix_activity_task",
        ] {
            drop(m, name).await?;
        }
        let mut project = by(Activity::ProjectId, "ix_activity_project");
        project.and_where(Expr::col(Activity::ProjectId).is_not_null());
        m.create_index(project).await?;
        let mut task = by(Activity::TaskId, "ix_activity_task");
        task.and_where(Expr::col(Activity::TaskId).is_not_null());
        m.create_index(task).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for name in ["ix_activity_project", "ix_activity_task"] {
            drop(m, name).await?;
        }
        m.create_index(by(Activity::ProjectId, "ix_activity_project"))
            .await?;
        m.create_index(by(Activity::TaskId, "ix_activity_task"))
            .await?;
        m.create_index(
            Index::create()
                .name("ix_activity_created")
                .table(Activity::Table)
                .col(Activity::WorkspaceId)
                .col(Activity::CreatedAt)
                .to_owned(),
        )
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

#[derive(DeriveIden, Clone, Copy)]
enum Activity {
    Table,
    Id,
    WorkspaceId,
    ProjectId,
    TaskId,
    CreatedAt,
}
