//! Schema migrations for parallax-mcp.
//!
//! Written with SeaQuery builders, so one migration runs unchanged on SQLite and PostgreSQL; the
//! one exception (`m20261206_100000_activity_workspace_key`) changes a table's key, which each
//! database does its own way.
//! Migrations never import the application's entities: the schema here is the source of truth.

pub use sea_orm_migration::prelude::*;

pub mod chain;

mod m20261123_000001_initial;
mod m20261123_000002_webhook_secrets;
mod m20261123_000003_signing_keys;
mod m20261123_000004_inbound_webhooks;
mod m20261123_000005_outbox;
mod m20261202_000001_auth_generation;
mod m20261202_190000_activity_chain;
mod m20261202_190100_grant_expiry;
mod m20261202_200000_audit_checkpoints;
mod m20261203_100000_console_sessions;
mod m20261203_200000_oidc_logins;
mod m20261203_300000_work_generation;
mod m20261203_400000_activity_indexes;
mod m20261204_100000_activity_partial_indexes;
mod m20261204_200000_activity_unchained_index;
mod m20261205_100000_activity_actor_index;
mod m20261206_100000_activity_workspace_key;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261123_000002_webhook_secrets::Migration),
            Box::new(m20261123_000003_signing_keys::Migration),
            Box::new(m20261123_000004_inbound_webhooks::Migration),
            Box::new(m20261123_000005_outbox::Migration),
            Box::new(m20261202_000001_auth_generation::Migration),
            Box::new(m20261202_190000_activity_chain::Migration),
            Box::new(m20261202_190100_grant_expiry::Migration),
            Box::new(m20261202_200000_audit_checkpoints::Migration),
            Box::new(m20261203_100000_console_sessions::Migration),
            Box::new(m20261203_200000_oidc_logins::Migration),
            Box::new(m20261203_300000_work_generation::Migration),
            Box::new(m20261203_400000_activity_indexes::Migration),
            Box::new(m20261204_100000_activity_partial_indexes::Migration),
            Box::new(m20261204_200000_activity_unchained_index::Migration),
            Box::new(m20261205_100000_activity_actor_index::Migration),
            Box::new(m20261206_100000_activity_workspace_key::Migration),
        ]
    }
}
