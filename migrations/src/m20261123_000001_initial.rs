//! The first schema: workspaces and everything that belongs to one.
//!
//! Ids are strings (UUID v7 for rows we create, the requester's id for agents) so that they read the
//! same in SQL, logs and the CLI on both backends. Structured fields (permission lists, metadata,
//! settings) are JSON text: portable, and the server never needs to query inside them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    // One transaction on every backend, so a failed first start leaves no half-made schema.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Workspaces::Table)
                .col(string(Workspaces::Id).primary_key())
                .col(string_uniq(Workspaces::Slug))
                .col(string(Workspaces::Name))
                .col(text(Workspaces::Settings))
                // Bumped by every quota-checked write: a portable row lock that serialises them.
                .col(big_integer(Workspaces::LockVersion).default(0))
                .col(timestamp_with_time_zone(Workspaces::CreatedAt))
                .col(timestamp_with_time_zone(Workspaces::UpdatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Members::Table)
                .col(string(Members::Id).primary_key())
                .col(string(Members::WorkspaceId))
                .col(string(Members::Email))
                .col(string(Members::Name))
                .col(string(Members::Role))
                .col(timestamp_with_time_zone(Members::CreatedAt))
                .foreign_key(&mut fk_workspace(Members::Table, Members::WorkspaceId))
                .to_owned(),
        )
        .await?;
        unique_index(
            m,
            Members::Table,
            "ux_members_workspace_email",
            [Members::WorkspaceId, Members::Email],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Projects::Table)
                .col(string(Projects::Id).primary_key())
                .col(string(Projects::WorkspaceId))
                .col(string(Projects::Name))
                .col(text(Projects::Description))
                .col(string(Projects::Status))
                .col(timestamp_with_time_zone(Projects::CreatedAt))
                .col(timestamp_with_time_zone(Projects::UpdatedAt))
                .foreign_key(&mut fk_workspace(Projects::Table, Projects::WorkspaceId))
                .to_owned(),
        )
        .await?;
        index(
            m,
            Projects::Table,
            "ix_projects_workspace",
            [Projects::WorkspaceId],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Tasks::Table)
                .col(string(Tasks::Id).primary_key())
                .col(string(Tasks::WorkspaceId))
                .col(string(Tasks::ProjectId))
                .col(string(Tasks::Title))
                .col(text(Tasks::Description))
                .col(string(Tasks::Status))
                .col(timestamp_with_time_zone(Tasks::CreatedAt))
                .col(timestamp_with_time_zone(Tasks::UpdatedAt))
                .foreign_key(&mut fk_workspace(Tasks::Table, Tasks::WorkspaceId))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_tasks_project")
                        .from(Tasks::Table, Tasks::ProjectId)
                        .to(Projects::Table, Projects::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            Tasks::Table,
            "ix_tasks_workspace_project",
            [Tasks::WorkspaceId, Tasks::ProjectId],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Pages::Table)
                .col(string(Pages::Id).primary_key())
                .col(string(Pages::WorkspaceId))
                .col(string_null(Pages::ProjectId))
                .col(string(Pages::Title))
                .col(text(Pages::Content))
                .col(timestamp_with_time_zone(Pages::CreatedAt))
                .col(timestamp_with_time_zone(Pages::UpdatedAt))
                .foreign_key(&mut fk_workspace(Pages::Table, Pages::WorkspaceId))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_pages_project")
                        .from(Pages::Table, Pages::ProjectId)
                        .to(Projects::Table, Projects::Id)
                        .on_delete(ForeignKeyAction::SetNull),
                )
                .to_owned(),
        )
        .await?;
        index(m, Pages::Table, "ix_pages_workspace", [Pages::WorkspaceId]).await?;

        // An agent's id is the requester's (the Parallax agent id), unique within its workspace.
        m.create_table(
            Table::create()
                .table(Agents::Table)
                .col(string(Agents::WorkspaceId))
                .col(string(Agents::Id))
                .col(string(Agents::Name))
                .col(text(Agents::Description))
                .col(text(Agents::Capabilities))
                .col(string(Agents::Status))
                .col(text(Agents::RequestedPermissions))
                .col(text(Agents::GrantedPermissions))
                .col(string_null(Agents::Endpoint))
                .col(text(Agents::Metadata))
                .col(text_null(Agents::Justification))
                .col(boolean(Agents::AutoApproved).default(false))
                .col(timestamp_with_time_zone(Agents::RequestedAt))
                .col(timestamp_with_time_zone_null(Agents::ResolvedAt))
                .col(string_null(Agents::ResolvedBy))
                .col(text_null(Agents::DenialReason))
                .col(text_null(Agents::RevocationReason))
                .col(string(Agents::WorkingStatus))
                .col(string_null(Agents::CurrentTaskId))
                .col(text_null(Agents::StatusMessage))
                .col(timestamp_with_time_zone_null(Agents::LastSeenAt))
                // Bumped by anything that changes what the agent may do, so cached decisions can tell.
                .col(big_integer(Agents::AccessVersion).default(0))
                .col(timestamp_with_time_zone(Agents::CreatedAt))
                .col(timestamp_with_time_zone(Agents::UpdatedAt))
                .primary_key(Index::create().col(Agents::WorkspaceId).col(Agents::Id))
                .foreign_key(&mut fk_workspace(Agents::Table, Agents::WorkspaceId))
                .to_owned(),
        )
        .await?;
        index(
            m,
            Agents::Table,
            "ix_agents_workspace_status",
            [Agents::WorkspaceId, Agents::Status],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Credentials::Table)
                .col(string(Credentials::Id).primary_key())
                .col(string(Credentials::WorkspaceId))
                .col(string(Credentials::AgentId))
                .col(string_uniq(Credentials::KeyHash))
                .col(string(Credentials::KeyPrefix))
                .col(timestamp_with_time_zone(Credentials::CreatedAt))
                .col(timestamp_with_time_zone_null(Credentials::LastUsedAt))
                .col(timestamp_with_time_zone_null(Credentials::ExpiresAt))
                .col(timestamp_with_time_zone_null(Credentials::RevokedAt))
                .foreign_key(&mut fk_agent(
                    Credentials::Table,
                    Credentials::WorkspaceId,
                    Credentials::AgentId,
                ))
                .to_owned(),
        )
        .await?;
        index(
            m,
            Credentials::Table,
            "ix_credentials_agent",
            [Credentials::WorkspaceId, Credentials::AgentId],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Assignments::Table)
                .col(string(Assignments::Id).primary_key())
                .col(string(Assignments::WorkspaceId))
                .col(string(Assignments::AgentId))
                .col(string(Assignments::Kind))
                .col(string(Assignments::ProjectId))
                .col(string_null(Assignments::TaskId))
                .col(string(Assignments::Role))
                .col(string(Assignments::AssignedBy))
                .col(timestamp_with_time_zone(Assignments::AssignedAt))
                .col(string_null(Assignments::UnassignedBy))
                .col(timestamp_with_time_zone_null(Assignments::UnassignedAt))
                .foreign_key(&mut fk_agent(
                    Assignments::Table,
                    Assignments::WorkspaceId,
                    Assignments::AgentId,
                ))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_assignments_project")
                        .from(Assignments::Table, Assignments::ProjectId)
                        .to(Projects::Table, Projects::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_assignments_task")
                        .from(Assignments::Table, Assignments::TaskId)
                        .to(Tasks::Table, Tasks::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            Assignments::Table,
            "ix_assignments_agent",
            [Assignments::WorkspaceId, Assignments::AgentId],
        )
        .await?;
        index(
            m,
            Assignments::Table,
            "ix_assignments_project",
            [Assignments::WorkspaceId, Assignments::ProjectId],
        )
        .await?;
        index(
            m,
            Assignments::Table,
            "ix_assignments_task",
            [Assignments::WorkspaceId, Assignments::TaskId],
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Delegations::Table)
                .col(string(Delegations::Id).primary_key())
                .col(string(Delegations::WorkspaceId))
                .col(string(Delegations::TaskId))
                .col(string(Delegations::FromAgentId))
                .col(string(Delegations::ToAgentId))
                .col(text(Delegations::Reason))
                .col(string(Delegations::Status))
                .col(timestamp_with_time_zone(Delegations::RequestedAt))
                .col(timestamp_with_time_zone(Delegations::ExpiresAt))
                .col(timestamp_with_time_zone_null(Delegations::ResolvedAt))
                .col(string_null(Delegations::ResolvedBy))
                .col(text_null(Delegations::ResolutionNote))
                .foreign_key(&mut fk_workspace(
                    Delegations::Table,
                    Delegations::WorkspaceId,
                ))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_delegations_task")
                        .from(Delegations::Table, Delegations::TaskId)
                        .to(Tasks::Table, Tasks::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        index(
            m,
            Delegations::Table,
            "ix_delegations_workspace_status",
            [Delegations::WorkspaceId, Delegations::Status],
        )
        .await?;

        // The audit trail. No foreign keys: an entry must outlive what it refers to.
        m.create_table(
            Table::create()
                .table(Activity::Table)
                .col(string(Activity::Id).primary_key())
                .col(string(Activity::WorkspaceId))
                .col(string(Activity::ActorKind))
                .col(string(Activity::ActorId))
                .col(string_null(Activity::AgentId))
                .col(string(Activity::ActivityType))
                .col(string_null(Activity::Outcome))
                .col(text(Activity::Description))
                .col(text(Activity::Metadata))
                .col(string_null(Activity::ProjectId))
                .col(string_null(Activity::TaskId))
                .col(string_null(Activity::PageId))
                .col(timestamp_with_time_zone(Activity::CreatedAt))
                .to_owned(),
        )
        .await?;
        index(
            m,
            Activity::Table,
            "ix_activity_workspace",
            [Activity::WorkspaceId, Activity::Id],
        )
        .await?;
        index(
            m,
            Activity::Table,
            "ix_activity_agent",
            [Activity::WorkspaceId, Activity::AgentId, Activity::Id],
        )
        .await?;
        index(
            m,
            Activity::Table,
            "ix_activity_project",
            [Activity::WorkspaceId, Activity::ProjectId, Activity::Id],
        )
        .await?;
        index(
            m,
            Activity::Table,
            "ix_activity_task",
            [Activity::WorkspaceId, Activity::TaskId, Activity::Id],
        )
        .await?;
        index(
            m,
            Activity::Table,
            "ix_activity_created",
            [Activity::WorkspaceId, Activity::CreatedAt],
        )
        .await?;

        // The outbox: each event is written in the transaction of the change it reports.
        m.create_table(
            Table::create()
                .table(Events::Table)
                .col(string(Events::Id).primary_key())
                .col(string(Events::WorkspaceId))
                .col(string(Events::EventType))
                .col(string_null(Events::AgentId))
                .col(text(Events::Payload))
                .col(timestamp_with_time_zone(Events::CreatedAt))
                .to_owned(),
        )
        .await?;
        index(
            m,
            Events::Table,
            "ix_events_workspace",
            [Events::WorkspaceId, Events::Id],
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Events::Table.into_iden(),
            Activity::Table.into_iden(),
            Delegations::Table.into_iden(),
            Assignments::Table.into_iden(),
            Credentials::Table.into_iden(),
            Agents::Table.into_iden(),
            Pages::Table.into_iden(),
            Tasks::Table.into_iden(),
            Projects::Table.into_iden(),
            Members::Table.into_iden(),
            Workspaces::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

fn fk_workspace<T: IntoIden + 'static, C: IntoIden + 'static>(
    table: T,
    col: C,
) -> ForeignKeyCreateStatement {
    let table = table.into_iden();
    ForeignKey::create()
        .name(format!("fk_{}_workspace", table))
        .from(table, col)
        .to(Workspaces::Table, Workspaces::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

fn fk_agent<T, W, A>(table: T, workspace: W, agent: A) -> ForeignKeyCreateStatement
where
    T: IntoIden + 'static,
    W: IntoIden + 'static,
    A: IntoIden + 'static,
{
    let table = table.into_iden();
    ForeignKey::create()
        .name(format!("fk_{}_agent", table))
        .from_tbl(table)
        .from_col(workspace)
        .from_col(agent)
        .to_tbl(Agents::Table)
        .to_col(Agents::WorkspaceId)
        .to_col(Agents::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

async fn index<T, C, const N: usize>(
    m: &SchemaManager<'_>,
    table: T,
    name: &str,
    cols: [C; N],
) -> Result<(), DbErr>
where
    T: IntoIden + 'static,
    C: IntoIden + 'static,
{
    let mut idx = Index::create();
    idx.name(name).table(table);
    for col in cols {
        idx.col(col);
    }
    m.create_index(idx.to_owned()).await
}

async fn unique_index<T, C, const N: usize>(
    m: &SchemaManager<'_>,
    table: T,
    name: &str,
    cols: [C; N],
) -> Result<(), DbErr>
where
    T: IntoIden + 'static,
    C: IntoIden + 'static,
{
    let mut idx = Index::create();
    idx.name(name).table(table).unique();
    for col in cols {
        idx.col(col);
    }
    m.create_index(idx.to_owned()).await
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
    Slug,
    Name,
    Settings,
    LockVersion,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Members {
    Table,
    Id,
    WorkspaceId,
    Email,
    Name,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Projects {
    Table,
    Id,
    WorkspaceId,
    Name,
    Description,
    Status,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Id,
    WorkspaceId,
    ProjectId,
    Title,
    Description,
    Status,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Pages {
    Table,
    Id,
    WorkspaceId,
    ProjectId,
    Title,
    Content,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    WorkspaceId,
    Id,
    Name,
    Description,
    Capabilities,
    Status,
    RequestedPermissions,
    GrantedPermissions,
    Endpoint,
    Metadata,
    Justification,
    AutoApproved,
    RequestedAt,
    ResolvedAt,
    ResolvedBy,
    DenialReason,
    RevocationReason,
    WorkingStatus,
    CurrentTaskId,
    StatusMessage,
    LastSeenAt,
    AccessVersion,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Credentials {
    Table,
    Id,
    WorkspaceId,
    AgentId,
    KeyHash,
    KeyPrefix,
    CreatedAt,
    LastUsedAt,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Assignments {
    Table,
    Id,
    WorkspaceId,
    AgentId,
    Kind,
    ProjectId,
    TaskId,
    Role,
    AssignedBy,
    AssignedAt,
    UnassignedBy,
    UnassignedAt,
}

#[derive(DeriveIden)]
enum Delegations {
    Table,
    Id,
    WorkspaceId,
    TaskId,
    FromAgentId,
    ToAgentId,
    Reason,
    Status,
    RequestedAt,
    ExpiresAt,
    ResolvedAt,
    ResolvedBy,
    ResolutionNote,
}

// Column names mirror the table; `ActivityType` is the column `activity_type`.
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
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    WorkspaceId,
    EventType,
    AgentId,
    Payload,
    CreatedAt,
}
