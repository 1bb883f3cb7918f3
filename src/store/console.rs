//! The console's login links and sessions (see the `console_sessions` migration). Only blake3
//! hashes of their secrets are stored. A link is spent by one conditional update, so two
//! replicas redeeming it at once cannot both succeed.

use super::entities::{agent, member};
use super::{StoreResult, Tx, convert};
use crate::domain::{Agent, AgentStatus, Member};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

/// The order of a page of agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentOrder {
    /// By id (the agents list).
    Id,
    /// Oldest request first (the inbox).
    Requested,
}

pub(super) mod login_link {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "console_login_links")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        pub workspace_id: String,
        pub member_id: String,
        pub email: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        pub used_at: Option<DateTimeUtc>,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub(super) mod session {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "console_sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id_hash: String,
        pub workspace_id: String,
        pub member_id: String,
        pub method: String,
        pub created_at: DateTimeUtc,
        pub last_seen_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        pub ended_at: Option<DateTimeUtc>,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

/// The smallest UUIDv7 string of the millisecond `t` (ids sort as text in time order).
pub(super) fn time_id(t: DateTime<Utc>) -> String {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0) & 0xFFFF_FFFF_FFFF;
    format!(
        "{:08x}-{:04x}-0000-0000-000000000000",
        ms >> 16,
        ms & 0xFFFF
    )
}

/// A one-time console sign-in link (its hash and whom it signs in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginLinkRow {
    pub token_hash: String,
    pub workspace_id: String,
    pub member_id: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// A console session. `expires_at` is the absolute end; idleness is judged from `last_seen_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSessionRow {
    pub id_hash: String,
    pub workspace_id: String,
    pub member_id: String,
    pub method: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

fn link_row(m: login_link::Model) -> LoginLinkRow {
    LoginLinkRow {
        token_hash: m.token_hash,
        workspace_id: m.workspace_id,
        member_id: m.member_id,
        email: m.email,
        created_at: m.created_at,
        expires_at: m.expires_at,
        used_at: m.used_at,
    }
}

fn session_row(m: session::Model) -> ConsoleSessionRow {
    ConsoleSessionRow {
        id_hash: m.id_hash,
        workspace_id: m.workspace_id,
        member_id: m.member_id,
        method: m.method,
        created_at: m.created_at,
        last_seen_at: m.last_seen_at,
        expires_at: m.expires_at,
        ended_at: m.ended_at,
    }
}

impl Tx {
    pub async fn insert_login_link(&self, l: &LoginLinkRow) -> StoreResult<()> {
        use sea_orm::Set;
        login_link::Entity::insert(login_link::ActiveModel {
            token_hash: Set(l.token_hash.clone()),
            workspace_id: Set(l.workspace_id.clone()),
            member_id: Set(l.member_id.clone()),
            email: Set(l.email.clone()),
            created_at: Set(l.created_at),
            expires_at: Set(l.expires_at),
            used_at: Set(l.used_at),
        })
        .exec(&self.tx)
        .await?;
        Ok(())
    }

    pub async fn login_link(&self, token_hash: &str) -> StoreResult<Option<LoginLinkRow>> {
        Ok(login_link::Entity::find_by_id(token_hash.to_owned())
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(link_row))
    }

    /// Marks the link used at `at` unless it already was; returns whether this call spent it.
    pub async fn spend_login_link(&self, token_hash: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let res = login_link::Entity::update_many()
            .col_expr(login_link::Column::UsedAt, Expr::value(at))
            .filter(login_link::Column::TokenHash.eq(token_hash))
            .filter(login_link::Column::UsedAt.is_null())
            .exec(&self.tx)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Forgets links that expired before `cutoff` (used or not).
    pub async fn prune_login_links(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        Ok(login_link::Entity::delete_many()
            .filter(login_link::Column::ExpiresAt.lt(cutoff))
            .exec(&self.tx)
            .await?
            .rows_affected)
    }

    pub async fn insert_console_session(&self, s: &ConsoleSessionRow) -> StoreResult<()> {
        use sea_orm::Set;
        session::Entity::insert(session::ActiveModel {
            id_hash: Set(s.id_hash.clone()),
            workspace_id: Set(s.workspace_id.clone()),
            member_id: Set(s.member_id.clone()),
            method: Set(s.method.clone()),
            created_at: Set(s.created_at),
            last_seen_at: Set(s.last_seen_at),
            expires_at: Set(s.expires_at),
            ended_at: Set(s.ended_at),
        })
        .exec(&self.tx)
        .await?;
        Ok(())
    }

    pub async fn console_session(&self, id_hash: &str) -> StoreResult<Option<ConsoleSessionRow>> {
        Ok(session::Entity::find_by_id(id_hash.to_owned())
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(session_row))
    }

    pub async fn touch_console_session(&self, id_hash: &str, at: DateTime<Utc>) -> StoreResult<()> {
        session::Entity::update_many()
            .col_expr(session::Column::LastSeenAt, Expr::value(at))
            .filter(session::Column::IdHash.eq(id_hash))
            .exec(&self.tx)
            .await?;
        Ok(())
    }

    /// Ends a session; returns whether it was open.
    pub async fn end_console_session(&self, id_hash: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let res = session::Entity::update_many()
            .col_expr(session::Column::EndedAt, Expr::value(at))
            .filter(session::Column::IdHash.eq(id_hash))
            .filter(session::Column::EndedAt.is_null())
            .exec(&self.tx)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Forgets sessions whose absolute end passed before `cutoff`.
    pub async fn prune_console_sessions(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        Ok(session::Entity::delete_many()
            .filter(session::Column::ExpiresAt.lt(cutoff))
            .exec(&self.tx)
            .await?
            .rows_affected)
    }

    /// One page of a workspace's agents, read with its limit (the console's lists, which must
    /// stay fast with thousands of agents).
    pub async fn agents_page(
        &self,
        workspace_id: &str,
        status: Option<AgentStatus>,
        order: AgentOrder,
        offset: u64,
        limit: u64,
    ) -> StoreResult<Vec<Agent>> {
        let mut q = agent::Entity::find().filter(agent::Column::WorkspaceId.eq(workspace_id));
        if let Some(s) = status {
            q = q.filter(agent::Column::Status.eq(s.as_str()));
        }
        q = match order {
            AgentOrder::Id => q.order_by_asc(agent::Column::Id),
            AgentOrder::Requested => q
                .order_by_asc(agent::Column::RequestedAt)
                .order_by_asc(agent::Column::Id),
        };
        q.offset(offset)
            .limit(limit)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::agent)
            .collect()
    }

    /// The approved agents that were auto-approved, most recent first.
    pub async fn recent_auto_approved(
        &self,
        workspace_id: &str,
        limit: u64,
    ) -> StoreResult<Vec<Agent>> {
        agent::Entity::find()
            .filter(agent::Column::WorkspaceId.eq(workspace_id))
            .filter(agent::Column::Status.eq(AgentStatus::Approved.as_str()))
            .filter(agent::Column::AutoApproved.eq(true))
            .order_by_desc(agent::Column::ResolvedAt)
            .limit(limit)
            .all(&self.tx)
            .await?
            .into_iter()
            .map(convert::agent)
            .collect()
    }

    /// A member by id, as it is now (a session names its member by id).
    pub async fn member_by_id(&self, workspace_id: &str, id: &str) -> StoreResult<Option<Member>> {
        member::Entity::find()
            .filter(member::Column::WorkspaceId.eq(workspace_id))
            .filter(member::Column::Id.eq(id))
            .all(&self.tx)
            .await?
            .into_iter()
            .next()
            .map(convert::member)
            .transpose()
    }
}
