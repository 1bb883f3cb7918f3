//! The console's sign-in: one-time login links and server-side sessions. Both keep only a
//! blake3 hash of their secret, so a copy of the database signs no one in. Sessions live in the
//! database so every replica honours (and ends) them.

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
                .table(ConsoleLoginLinks::Table)
                .col(string(ConsoleLoginLinks::TokenHash).primary_key())
                .col(string(ConsoleLoginLinks::WorkspaceId))
                .col(string(ConsoleLoginLinks::MemberId))
                .col(string(ConsoleLoginLinks::Email))
                .col(timestamp_with_time_zone(ConsoleLoginLinks::CreatedAt))
                .col(timestamp_with_time_zone(ConsoleLoginLinks::ExpiresAt))
                .col(timestamp_with_time_zone_null(ConsoleLoginLinks::UsedAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_console_login_links_workspace")
                        .from(ConsoleLoginLinks::Table, ConsoleLoginLinks::WorkspaceId)
                        .to(Workspaces::Table, Workspaces::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ConsoleSessions::Table)
                .col(string(ConsoleSessions::IdHash).primary_key())
                .col(string(ConsoleSessions::WorkspaceId))
                .col(string(ConsoleSessions::MemberId))
                .col(string(ConsoleSessions::Method))
                .col(timestamp_with_time_zone(ConsoleSessions::CreatedAt))
                .col(timestamp_with_time_zone(ConsoleSessions::LastSeenAt))
                .col(timestamp_with_time_zone(ConsoleSessions::ExpiresAt))
                .col(timestamp_with_time_zone_null(ConsoleSessions::EndedAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_console_sessions_workspace")
                        .from(ConsoleSessions::Table, ConsoleSessions::WorkspaceId)
                        .to(Workspaces::Table, Workspaces::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_console_sessions_expires_at")
                .table(ConsoleSessions::Table)
                .col(ConsoleSessions::ExpiresAt)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_console_login_links_expires_at")
                .table(ConsoleLoginLinks::Table)
                .col(ConsoleLoginLinks::ExpiresAt)
                .to_owned(),
        )
        .await?;
        // The activity page filters by actor, outcome and type, newest first.
        m.create_index(
            Index::create()
                .name("ix_activity_actor")
                .table(Activity::Table)
                .col(Activity::WorkspaceId)
                .col(Activity::ActorId)
                .col(Activity::Id)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_activity_outcome")
                .table(Activity::Table)
                .col(Activity::WorkspaceId)
                .col(Activity::Outcome)
                .col(Activity::Id)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_activity_type")
                .table(Activity::Table)
                .col(Activity::WorkspaceId)
                .col(Activity::ActivityType)
                .col(Activity::Id)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_activity_type")
                .table(Activity::Table)
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("ix_activity_actor")
                .table(Activity::Table)
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table(ConsoleSessions::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(ConsoleLoginLinks::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ConsoleLoginLinks {
    Table,
    TokenHash,
    WorkspaceId,
    MemberId,
    Email,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum ConsoleSessions {
    Table,
    IdHash,
    WorkspaceId,
    MemberId,
    Method,
    CreatedAt,
    LastSeenAt,
    ExpiresAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
}

// `ActivityType` is the column `activity_type`.
#[allow(clippy::enum_variant_names)]
#[derive(DeriveIden)]
enum Activity {
    Table,
    WorkspaceId,
    ActorId,
    ActivityType,
    Outcome,
    Id,
}
