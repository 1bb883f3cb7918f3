//! The route table: every API route once, with what the OpenAPI document says about it. The
//! router is built from this table, so the document cannot list a route that is not served.

use super::*;
use crate::domain::{self, Role};
use crate::http::HttpContext;
use crate::service::{AgentDetails, InboundAccessRequest};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// Builds a schema (or a reference to a component) for one type.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn s<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A member token for the workspace in the path, with at least this role (the service checks
    /// it; the table documents it).
    Member(Role),
    /// A Standard Webhooks signature with the workspace's secret; no bearer token.
    Signed,
}

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Query parameters, as one struct's properties.
    pub query: Option<SchemaFn>,
    pub request: Option<SchemaFn>,
    pub response: SchemaFn,
    /// The success status (`201` where something new is created).
    pub status: u16,
    /// The success answer is a `text/event-stream` of `response` frames, not one JSON document.
    pub stream: bool,
    pub handler: fn() -> MethodRouter<HttpContext>,
}

macro_rules! route {
    ($method:literal $path:literal, $id:literal, $summary:literal, $access:expr,
     query: $q:expr, body: $b:expr, $status:literal => $resp:ty, $handler:expr) => {
        Route {
            method: $method,
            path: $path,
            operation_id: $id,
            summary: $summary,
            access: $access,
            query: $q,
            request: $b,
            response: s::<$resp>,
            status: $status,
            stream: false,
            handler: || $handler,
        }
    };
}

use Access::{Member as M, Signed};
use Role::{Admin, Read, Write};

/// Every route of the API, in the order the document lists them.
pub fn table() -> Vec<Route> {
    let mut table = vec![
        route!("GET" "/api/v1/workspaces/{workspace}", "getWorkspace", "The workspace and its settings", M(Read),
            query: None, body: None, 200 => domain::Workspace, get(workspaces::show)),
        route!("GET" "/api/v1/workspaces/{workspace}/settings", "getSettings", "The workspace's agent settings", M(Read),
            query: None, body: None, 200 => domain::WorkspaceSettings, get(workspaces::settings)),
        route!("PATCH" "/api/v1/workspaces/{workspace}/settings", "updateSettings", "Change settings, all or none", M(Admin),
            query: None, body: Some(s::<workspaces::SettingsChange>), 200 => domain::WorkspaceSettings, patch(workspaces::update_settings)),
        route!("POST" "/api/v1/workspaces/{workspace}/webhook-secret/rotate", "rotateWebhookSecret", "Make a new webhook secret current; shown once", M(Admin),
            query: None, body: Some(s::<workspaces::RotateSecret>), 201 => workspaces::NewSecret, post(workspaces::rotate_webhook_secret)),
        route!("GET" "/api/v1/workspaces/{workspace}/members", "listMembers", "Members and their roles", M(Read),
            query: None, body: None, 200 => Vec<domain::Member>, get(workspaces::members)),
        route!("POST" "/api/v1/workspaces/{workspace}/members", "addMember", "Add a member with a role", M(Admin),
            query: None, body: Some(s::<workspaces::NewMember>), 201 => domain::Member, post(workspaces::add_member)),
        route!("PATCH" "/api/v1/workspaces/{workspace}/members/{email}", "setMemberRole", "Change a member's role", M(Admin),
            query: None, body: Some(s::<workspaces::RoleChange>), 200 => domain::Member, patch(workspaces::set_role)),
        route!("DELETE" "/api/v1/workspaces/{workspace}/members/{email}", "removeMember", "Remove a member; their tokens stop working (the last admin cannot be removed)", M(Admin),
            query: None, body: None, 200 => domain::Member, delete(workspaces::remove_member)),
        route!("GET" "/api/v1/workspaces/{workspace}/projects", "listProjects", "Projects", M(Read),
            query: None, body: None, 200 => Vec<domain::Project>, get(work::projects)),
        route!("POST" "/api/v1/workspaces/{workspace}/projects", "createProject", "Create a project", M(Write),
            query: None, body: Some(s::<work::NewProject>), 201 => domain::Project, post(work::create_project)),
        route!("GET" "/api/v1/workspaces/{workspace}/tasks", "listTasks", "Tasks, optionally by project and status", M(Read),
            query: Some(s::<work::TaskFilter>), body: None, 200 => Vec<domain::Task>, get(work::tasks)),
        route!("POST" "/api/v1/workspaces/{workspace}/tasks", "createTask", "Create a task in a project", M(Write),
            query: None, body: Some(s::<work::NewTask>), 201 => domain::Task, post(work::create_task)),
        route!("PATCH" "/api/v1/workspaces/{workspace}/tasks/{task_id}", "updateTask", "Change a task's title, description or status", M(Write),
            query: None, body: Some(s::<work::TaskChange>), 200 => domain::Task, patch(work::update_task)),
        route!("GET" "/api/v1/workspaces/{workspace}/pages", "listPages", "Pages, optionally by project", M(Read),
            query: Some(s::<work::PageFilter>), body: None, 200 => Vec<domain::Page>, get(work::pages)),
        route!("POST" "/api/v1/workspaces/{workspace}/pages", "createPage", "Create a page", M(Write),
            query: None, body: Some(s::<work::NewPage>), 201 => domain::Page, post(work::create_page)),
        route!("GET" "/api/v1/workspaces/{workspace}/agents", "listAgents", "Agents, optionally by status", M(Read),
            query: Some(s::<agents::AgentFilter>), body: None, 200 => Vec<domain::Agent>, get(agents::list)),
        route!("POST" "/api/v1/workspaces/{workspace}/agents", "requestAccess", "File an access request on an agent's behalf (auto-approval rules apply)", M(Read),
            query: None, body: Some(s::<agents::NewRequest>), 201 => agents::RequestOutcome, post(agents::request)),
        route!("GET" "/api/v1/workspaces/{workspace}/agents/{agent_id}", "getAgent", "An agent, its keys (no secrets) and assignment history", M(Read),
            query: None, body: None, 200 => AgentDetails, get(agents::show)),
        route!("POST" "/api/v1/workspaces/{workspace}/agents/{agent_id}/approve", "approveAgent", "Approve a pending agent with a subset of what it requested; the key is shown once", M(Admin),
            query: None, body: Some(s::<agents::Approval>), 200 => agents::Approved, post(agents::approve)),
        route!("POST" "/api/v1/workspaces/{workspace}/agents/{agent_id}/deny", "denyAgent", "Deny a pending request", M(Admin),
            query: None, body: Some(s::<agents::Reason>), 200 => domain::Agent, post(agents::deny)),
        route!("POST" "/api/v1/workspaces/{workspace}/agents/{agent_id}/revoke", "revokeAgent", "Revoke an approved agent: keys stop working, assignments end", M(Admin),
            query: None, body: Some(s::<agents::Reason>), 200 => domain::Agent, post(agents::revoke)),
        route!("PUT" "/api/v1/workspaces/{workspace}/agents/{agent_id}/permissions", "setAgentPermissions", "Replace an approved agent's permissions", M(Admin),
            query: None, body: Some(s::<agents::Grant>), 200 => domain::Agent, put(agents::set_permissions)),
        route!("POST" "/api/v1/workspaces/{workspace}/agents/{agent_id}/extend", "extendAgentAccess", "Move the end of an approved agent's access (also after it expired), or remove it", M(Admin),
            query: None, body: Some(s::<agents::Extension>), 200 => domain::Agent, post(agents::extend)),
        route!("POST" "/api/v1/workspaces/{workspace}/agents/{agent_id}/rotate-key", "rotateAgentKey", "Revoke the agent's keys and issue a new one, shown once", M(Admin),
            query: None, body: Some(s::<agents::Rotation>), 200 => agents::RotatedKey, post(agents::rotate_key)),
        route!("GET" "/api/v1/workspaces/{workspace}/assignments", "listAssignments", "Assignments, active ones unless all=true", M(Read),
            query: Some(s::<assignments::AssignmentFilter>), body: None, 200 => Vec<domain::Assignment>, get(assignments::list)),
        route!("POST" "/api/v1/workspaces/{workspace}/assignments", "assignAgent", "Assign an approved agent to a project or a task", M(Write),
            query: None, body: Some(s::<assignments::NewAssignment>), 201 => assignments::AssignOutcome, post(assignments::assign)),
        route!("DELETE" "/api/v1/workspaces/{workspace}/assignments/{assignment_id}", "unassignAgent", "End an assignment; its history is kept", M(Write),
            query: None, body: None, 200 => domain::Assignment, delete(assignments::unassign)),
        route!("GET" "/api/v1/workspaces/{workspace}/delegations", "listDelegations", "Delegations, newest first", M(Read),
            query: Some(s::<assignments::DelegationFilter>), body: None, 200 => Vec<domain::Delegation>, get(assignments::delegations)),
        route!("POST" "/api/v1/workspaces/{workspace}/delegations/{delegation_id}/approve", "approveDelegation", "Approve a pending delegation: the task moves to the target agent", M(Write),
            query: None, body: Some(s::<assignments::Note>), 200 => domain::Delegation, post(assignments::approve_delegation)),
        route!("POST" "/api/v1/workspaces/{workspace}/delegations/{delegation_id}/deny", "denyDelegation", "Deny a pending delegation", M(Write),
            query: None, body: Some(s::<agents::Reason>), 200 => domain::Delegation, post(assignments::deny_delegation)),
        route!("GET" "/api/v1/workspaces/{workspace}/activity", "listActivity", "The audit trail, newest first, filtered and paged", M(Read),
            query: Some(s::<assignments::ActivityFilter>), body: None, 200 => assignments::ActivityPage, get(assignments::activity)),
        route!("GET" "/api/v1/workspaces/{workspace}/activity/verify", "verifyActivity", "Walk the audit trail's hash chain and name the first altered, deleted, inserted or reordered entry", M(Read),
            query: Some(s::<assignments::VerifyQuery>), body: None, 200 => domain::ChainVerification, get(assignments::verify)),
        route!("GET" "/api/v1/workspaces/{workspace}/activity/export", "exportActivity", "Entries oldest first with their chain position and hash", M(Read),
            query: Some(s::<assignments::ExportQuery>), body: None, 200 => Vec<domain::ChainedActivity>, get(assignments::export)),
        route!("GET" "/api/v1/workspaces/{workspace}/activity/checkpoints", "listCheckpoints", "Signed checkpoints of the hash chain, newest first, each with the public key that checks it", M(Read),
            query: None, body: None, 200 => Vec<domain::SignedCheckpoint>, get(assignments::checkpoints)),
        route!("POST" "/api/v1/workspaces/{workspace}/activity/checkpoints", "createCheckpoint", "Sign a checkpoint of the chain's head now (the latest one when nothing was added since)", M(Admin),
            query: None, body: None, 201 => domain::SignedCheckpoint, post(assignments::create_checkpoint)),
        route!("POST" "/api/v1/workspaces/{workspace}/activity/checkpoints/verify", "verifyCheckpoint", "Prove the chain still extends a checkpoint exported earlier", M(Read),
            query: None, body: Some(s::<domain::SignedCheckpoint>), 200 => domain::CheckpointVerification, post(assignments::verify_checkpoint)),
        route!("POST" "/api/v1/workspaces/{workspace}/activity/prune", "pruneActivity", "Delete entries older than the retention setting", M(Admin),
            query: None, body: None, 200 => assignments::Pruned, post(assignments::prune)),
        route!("POST" "/api/v1/workspaces/{workspace}/access-requests", "receiveAccessRequest", "A signed access request from the control plane (Standard Webhooks)", Signed,
            query: None, body: Some(s::<InboundAccessRequest>), 201 => agents::RequestOutcome, post(inbound::access_request)),
        route!("GET" "/api/v1/workspaces/{workspace}/deliveries", "listDeliveries", "Webhook deliveries to the control plane and their state", M(Admin),
            query: Some(s::<events::DeliveriesQuery>), body: None, 200 => events::DeliveryList, get(events::deliveries)),
        route!("POST" "/api/v1/workspaces/{workspace}/deliveries/{delivery_id}/redeliver", "redeliver", "Send a delivery again (same webhook-id), now", M(Admin),
            query: None, body: None, 202 => events::Redelivery, post(events::redeliver)),
    ];
    table.push(Route {
        stream: true,
        ..route!("GET" "/api/v1/workspaces/{workspace}/events", "streamEvents", "Live events as server-sent events; resume with Last-Event-ID", M(Read),
            query: Some(s::<events::EventsQuery>), body: None, 200 => events::EventFrame, get(events::stream))
    });
    table
}
