//! The records services return. Plain data, serialisable for `--json` output and tool results.

use super::*;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub type Timestamp = DateTime<Utc>;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub settings: WorkspaceSettings,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub id: String,
    pub workspace_id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub description: String,
    pub status: ProjectStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub workspace_id: String,
    pub project_id: String,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub id: String,
    pub workspace_id: String,
    pub project_id: Option<String>,
    pub title: String,
    pub content: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub description: String,
    pub capabilities: Vec<String>,
    pub status: AgentStatus,
    pub requested_permissions: PermissionSet,
    pub granted_permissions: PermissionSet,
    pub endpoint: Option<String>,
    pub metadata: serde_json::Value,
    pub justification: Option<String>,
    pub auto_approved: bool,
    pub requested_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub resolved_by: Option<String>,
    pub denial_reason: Option<String>,
    pub revocation_reason: Option<String>,
    pub working_status: WorkingStatus,
    pub current_task_id: Option<String>,
    pub status_message: Option<String>,
    pub last_seen_at: Option<Timestamp>,
    /// Bumped by every change to what the agent may do; a cached decision older than this is stale.
    pub access_version: i64,
    pub updated_at: Timestamp,
    /// When the grant ends (`None`: until revoked). Checked against the clock at every
    /// authentication, so it holds on every replica without anyone acting.
    pub access_expires_at: Option<Timestamp>,
    /// Extra permissions that lapse by themselves, on top of `granted_permissions`.
    pub temporary_permissions: Vec<TemporaryPermission>,
    /// Set by the one transaction that recorded the expiry (event and audit entry).
    #[serde(skip)]
    #[schemars(skip)]
    pub access_expiry_recorded_at: Option<Timestamp>,
}

impl Agent {
    /// Whether the grant has run out at `at`.
    pub fn access_expired(&self, at: Timestamp) -> bool {
        self.access_expires_at.is_some_and(|end| end <= at)
    }

    /// What the agent may use at `at`, when it is more than the grant: the grant plus the
    /// temporary permissions still running. `None` when they add nothing, so the grant is used
    /// as it is (most agents have none running, and this runs on every request).
    pub fn permissions_at(&self, at: Timestamp) -> Option<PermissionSet> {
        let mut running = self
            .temporary_permissions
            .iter()
            .filter(|t| t.expires_at > at)
            .map(|t| t.permission)
            .peekable();
        running.peek()?;
        let set = PermissionSet::new(self.granted_permissions.iter().chain(running));
        (set != self.granted_permissions).then_some(set)
    }
}

/// A permission granted until a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemporaryPermission {
    pub permission: Permission,
    /// Rows stored before the API spoke camelCase say `expires_at`.
    #[serde(alias = "expires_at")]
    pub expires_at: Timestamp,
}

/// A stored API key, without the secret.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    pub id: String,
    pub workspace_id: String,
    pub agent_id: String,
    pub key_prefix: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub id: String,
    pub workspace_id: String,
    pub agent_id: String,
    pub kind: AssignmentKind,
    pub project_id: String,
    pub task_id: Option<String>,
    pub role: AssignmentRole,
    pub assigned_by: String,
    pub assigned_at: Timestamp,
    pub unassigned_by: Option<String>,
    pub unassigned_at: Option<Timestamp>,
}

impl Assignment {
    pub fn is_active(&self) -> bool {
        self.unassigned_at.is_none()
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delegation {
    pub id: String,
    pub workspace_id: String,
    pub task_id: String,
    pub from_agent_id: String,
    pub to_agent_id: String,
    pub reason: String,
    pub status: DelegationStatus,
    pub requested_at: Timestamp,
    pub expires_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub resolved_by: Option<String>,
    pub resolution_note: Option<String>,
}

/// One entry of the audit trail.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityEntry {
    pub id: String,
    pub workspace_id: String,
    pub actor_kind: ActorKind,
    pub actor_id: String,
    pub agent_id: Option<String>,
    pub activity_type: String,
    /// For access decisions: `allowed` or `denied`.
    pub outcome: Option<String>,
    pub description: String,
    pub metadata: serde_json::Value,
    pub project_id: Option<String>,
    pub task_id: Option<String>,
    pub page_id: Option<String>,
    pub created_at: Timestamp,
}

/// An event as written to the outbox (docs/design.md §4).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    pub workspace_id: String,
    /// Gapless per workspace, in commit order; 0 until the writing transaction commits.
    pub seq: i64,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub agent_id: Option<String>,
    pub data: serde_json::Value,
    pub created_at: Timestamp,
}

/// Who did something. Members are named by email, agents by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Member(String),
    Agent(String),
    System,
    /// The Parallax control plane, authenticated by a signed webhook.
    ControlPlane,
}

impl Actor {
    pub fn kind(&self) -> ActorKind {
        match self {
            Actor::Member(_) => ActorKind::Member,
            Actor::Agent(_) => ActorKind::Agent,
            Actor::System => ActorKind::System,
            Actor::ControlPlane => ActorKind::ControlPlane,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Actor::Member(id) | Actor::Agent(id) => id,
            Actor::System => "system",
            Actor::ControlPlane => "control-plane",
        }
    }

    /// A one-word label for `assigned_by`, `resolved_by` columns: `member:alice@x`, `agent:bot`.
    pub fn label(&self) -> String {
        match self {
            Actor::Member(id) => format!("member:{id}"),
            Actor::Agent(id) => format!("agent:{id}"),
            Actor::System => "system".to_owned(),
            Actor::ControlPlane => "control-plane".to_owned(),
        }
    }
}

/// One event's webhook to the workspace's control plane, and how its delivery is going.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    pub id: String,
    pub workspace_id: String,
    pub event_id: String,
    pub seq: i64,
    pub event_type: EventType,
    /// The agent the event is about; deliveries for one agent go out in order.
    pub agent_id: Option<String>,
    /// The Standard Webhooks `webhook-id`: the same on every attempt, so receivers dedupe.
    pub webhook_id: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: Timestamp,
    /// The HTTP status of the last attempt, when it got one.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}
