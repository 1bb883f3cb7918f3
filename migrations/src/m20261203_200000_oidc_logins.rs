//! Console sign-ins with OpenID Connect that were started and not yet finished: what the
//! callback needs to finish one (nonce, PKCE verifier, workspace), keyed by the hash of the
//! `state` sent to the provider, with the hash of the browser's key (a cookie set when the
//! sign-in started, so a callback URL opened in another browser is refused). In the database, so any replica can finish what another began;
//! a row is deleted when used (single use) and ignored once expired, and expired rows are pruned.

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
                .table(OidcLogins::Table)
                .col(string(OidcLogins::StateHash).primary_key())
                .col(string(OidcLogins::WorkspaceId))
                .col(string(OidcLogins::BrowserHash))
                .col(text(OidcLogins::Nonce))
                .col(text(OidcLogins::PkceVerifier))
                .col(timestamp_with_time_zone(OidcLogins::CreatedAt))
                .col(timestamp_with_time_zone(OidcLogins::ExpiresAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_oidc_logins_workspace")
                        .from(OidcLogins::Table, OidcLogins::WorkspaceId)
                        .to(Workspaces::Table, Workspaces::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_oidc_logins_expires_at")
                .table(OidcLogins::Table)
                .col(OidcLogins::ExpiresAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(OidcLogins::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum OidcLogins {
    Table,
    StateHash,
    WorkspaceId,
    BrowserHash,
    Nonce,
    PkceVerifier,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
}
