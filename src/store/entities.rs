//! SeaORM entities, one module per table. They mirror `migrations/` and never leave `store`.

macro_rules! no_relations {
    () => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod workspace {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "workspaces")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub slug: String,
        pub name: String,
        pub settings: String,
        pub lock_version: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod member {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub email: String,
        pub name: String,
        pub role: String,
        pub created_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod project {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "projects")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub name: String,
        pub description: String,
        pub status: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod task {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tasks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub project_id: String,
        pub title: String,
        pub description: String,
        pub status: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod page {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "pages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub project_id: Option<String>,
        pub title: String,
        pub content: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod agent {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "agents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub workspace_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub description: String,
        pub capabilities: String,
        pub status: String,
        pub requested_permissions: String,
        pub granted_permissions: String,
        pub endpoint: Option<String>,
        pub metadata: String,
        pub justification: Option<String>,
        pub auto_approved: bool,
        pub requested_at: DateTimeUtc,
        pub resolved_at: Option<DateTimeUtc>,
        pub resolved_by: Option<String>,
        pub denial_reason: Option<String>,
        pub revocation_reason: Option<String>,
        pub working_status: String,
        pub current_task_id: Option<String>,
        pub status_message: Option<String>,
        pub last_seen_at: Option<DateTimeUtc>,
        pub access_version: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub access_expires_at: Option<DateTimeUtc>,
        pub access_expiry_recorded_at: Option<DateTimeUtc>,
        pub temporary_permissions: String,
    }
    no_relations!();
}

pub mod credential {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "credentials")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub agent_id: String,
        pub key_hash: String,
        pub key_prefix: String,
        pub created_at: DateTimeUtc,
        pub last_used_at: Option<DateTimeUtc>,
        pub expires_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
    }
    no_relations!();
}

pub mod assignment {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "assignments")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub agent_id: String,
        pub kind: String,
        pub project_id: String,
        pub task_id: Option<String>,
        pub role: String,
        pub assigned_by: String,
        pub assigned_at: DateTimeUtc,
        pub unassigned_by: Option<String>,
        pub unassigned_at: Option<DateTimeUtc>,
    }
    no_relations!();
}

pub mod delegation {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "delegations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub task_id: String,
        pub from_agent_id: String,
        pub to_agent_id: String,
        pub reason: String,
        pub status: String,
        pub requested_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        pub resolved_at: Option<DateTimeUtc>,
        pub resolved_by: Option<String>,
        pub resolution_note: Option<String>,
    }
    no_relations!();
}

pub mod activity {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "activity")]
    pub struct Model {
        /// Keyed by (workspace, id): every read names its workspace.
        #[sea_orm(primary_key, auto_increment = false)]
        pub workspace_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub actor_kind: String,
        pub actor_id: String,
        pub agent_id: Option<String>,
        pub activity_type: String,
        pub outcome: Option<String>,
        pub description: String,
        pub metadata: String,
        pub project_id: Option<String>,
        pub task_id: Option<String>,
        pub page_id: Option<String>,
        pub created_at: DateTimeUtc,
        /// Position in the workspace's hash chain; set when the writing transaction commits.
        pub seq: Option<i64>,
        pub hash: Option<String>,
    }
    no_relations!();
}

pub mod activity_chain {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "activity_chains")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub workspace_id: String,
        pub last_seq: i64,
        pub last_hash: String,
        pub pruned_seq: i64,
        pub pruned_hash: Option<String>,
    }
    no_relations!();
}

pub mod event {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub event_type: String,
        pub agent_id: Option<String>,
        pub payload: String,
        pub created_at: DateTimeUtc,
        pub seq: i64,
    }
    no_relations!();
}

pub mod webhook_secret {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_secrets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub secret: String,
        pub created_at: DateTimeUtc,
        pub expires_at: Option<DateTimeUtc>,
    }
    no_relations!();
}

pub mod event_stream {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "event_streams")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub workspace_id: String,
        pub last_seq: i64,
        pub webhooks_disabled_at: Option<DateTimeUtc>,
    }
    no_relations!();
}

pub mod webhook_delivery {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub event_id: String,
        pub seq: i64,
        pub event_type: String,
        pub agent_key: String,
        pub webhook_id: String,
        pub status: String,
        pub attempts: i32,
        pub next_attempt_at: DateTimeUtc,
        pub last_status: Option<i32>,
        pub last_error: Option<String>,
        pub locked_until: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod signing_key {
    use sea_orm::entity::prelude::*;
    // Debug is derived for SeaORM; these models never leave the store, whose own type hides the
    // secret.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signing_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub kid: String,
        pub generation: i64,
        pub secret: String,
        pub created_at: DateTimeUtc,
        pub retired_at: Option<DateTimeUtc>,
    }
    no_relations!();
}

pub mod inbound_webhook {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "inbound_webhooks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub workspace_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub webhook_id: String,
        pub received_at: DateTimeUtc,
        pub status_code: i32,
        pub response_body: String,
    }
    no_relations!();
}

pub mod audit_key {
    use sea_orm::entity::prelude::*;
    // As for `signing_key`: the store's own row type hides the secret.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub kid: String,
        pub generation: i64,
        pub secret: String,
        pub public_key: String,
        pub created_at: DateTimeUtc,
        pub retired_at: Option<DateTimeUtc>,
    }
    no_relations!();
}

pub mod audit_checkpoint {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_checkpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workspace_id: String,
        pub seq: i64,
        pub hash: String,
        pub created_at: DateTimeUtc,
        pub kid: String,
        pub signature: String,
    }
    no_relations!();
}

pub mod oidc_login {
    use sea_orm::entity::prelude::*;
    // Holds a PKCE verifier and nonce: the store's own type hides them from `Debug`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oidc_logins")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub state_hash: String,
        pub workspace_id: String,
        pub browser_hash: String,
        pub nonce: String,
        pub pkce_verifier: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
    }
    no_relations!();
}
