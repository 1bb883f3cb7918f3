//! The tool catalogue: each tool with the requirement it declares, its honest annotations and its
//! schemas. A tool that is not here cannot be listed or called; a tool cannot be here without a
//! requirement (it is a required field), so nothing is callable by default.

use super::tools::*;
use crate::auth::AgentCaller;
use crate::domain::Permission;
use rmcp::handler::server::common::{schema_for_output, schema_for_type};
use rmcp::model::JsonObject;
use std::sync::Arc;

/// What a caller must have to call a tool (docs/design.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// The agent must hold this permission.
    Permission(Permission),
    /// Any approved agent, acting only on itself (the scope rules live in the service).
    ApprovedAgent,
}

impl Requirement {
    /// Authentication already proved the agent is approved; this checks the rest.
    pub fn is_met_by(self, caller: &AgentCaller) -> bool {
        match self {
            Requirement::Permission(p) => caller.has(p),
            Requirement::ApprovedAgent => true,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Requirement::Permission(p) => format!("the {p} permission"),
            Requirement::ApprovedAgent => "an approved agent".to_owned(),
        }
    }
}

/// One tool's entry.
pub struct ToolSpec {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub requirement: Requirement,
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
    pub input_schema: fn() -> Arc<JsonObject>,
    pub output_schema: fn() -> Arc<JsonObject>,
}

pub const MY_ASSIGNMENTS: &str = "agent_my_assignments";
pub const UPDATE_STATUS: &str = "agent_update_status";
pub const LOG_ACTIVITY: &str = "agent_log_activity";
pub const LIST_WORKSPACE: &str = "agent_list_workspace";
pub const DELEGATE_TASK: &str = "agent_delegate_task";

pub static CATALOGUE: [ToolSpec; 5] = [
    ToolSpec {
        name: MY_ASSIGNMENTS,
        title: "My assignments",
        description: "List the projects and tasks you are assigned to, with each task's title, description and status. \
            Call this first to find your work. Optionally filter tasks by status (todo, in_progress, blocked, completed, cancelled).",
        requirement: Requirement::Permission(Permission::ReadTasks),
        read_only: true,
        destructive: false,
        idempotent: true,
        open_world: false,
        input_schema: schema_for_type::<MyAssignmentsInput>,
        output_schema: schema_for_output::<MyAssignmentsOutput>,
    },
    ToolSpec {
        name: UPDATE_STATUS,
        title: "Update my working status",
        description: "Tell your team what you are doing: set your status to idle, working, paused or error, \
            optionally name the assigned task you are on (currentTask) and add a short message. Humans see it in the agent list.",
        requirement: Requirement::ApprovedAgent,
        read_only: false,
        destructive: false,
        idempotent: true,
        open_world: false,
        input_schema: schema_for_type::<UpdateStatusInput>,
        output_schema: schema_for_output::<UpdateStatusOutput>,
    },
    ToolSpec {
        name: LOG_ACTIVITY,
        title: "Log activity",
        description: "Record progress in the workspace's activity log: type is task_started, task_completed, task_failed, \
            page_created, page_updated, error or note, with a description and optional projectId/taskId/pageId. \
            Logging task_started or task_completed on one of your tasks also moves its status if you hold write:tasks.",
        requirement: Requirement::ApprovedAgent,
        read_only: false,
        destructive: false,
        idempotent: false,
        open_world: false,
        input_schema: schema_for_type::<LogActivityInput>,
        output_schema: schema_for_output::<LogActivityOutput>,
    },
    ToolSpec {
        name: LIST_WORKSPACE,
        title: "List workspace agents",
        description: "List the agents of your workspace with their capabilities and what they are working on, \
            to find someone to collaborate with or delegate to. Filter by access status and by capabilities (all must match).",
        requirement: Requirement::Permission(Permission::ReadAgents),
        read_only: true,
        destructive: false,
        idempotent: true,
        open_world: false,
        input_schema: schema_for_type::<ListWorkspaceInput>,
        output_schema: schema_for_output::<ListWorkspaceOutput>,
    },
    ToolSpec {
        name: DELEGATE_TASK,
        title: "Delegate a task",
        description: "Ask to hand one of your assigned tasks to another approved agent of your workspace, with a reason. \
            The request usually waits for a human's approval (awaitingApproval is true); once approved the task is theirs, not yours. \
            Clients that declare the MCP tasks extension get a task to poll with tasks/get instead, completed when a human decides.",
        requirement: Requirement::Permission(Permission::DelegateAgents),
        read_only: false,
        destructive: true,
        idempotent: false,
        open_world: false,
        input_schema: schema_for_type::<DelegateTaskInput>,
        output_schema: schema_for_output::<DelegateTaskOutput>,
    },
];

/// The tools a call may be decided on for a credential the store's snapshot holds, before its
/// generations are read (`Gate::call_unconfirmed`): the read tool, and the note that is only
/// entries. Their decisions stand only if their audit commit finds the snapshot current.
pub fn decided_unconfirmed(name: &str) -> bool {
    name == MY_ASSIGNMENTS || name == LOG_ACTIVITY
}

pub fn find(name: &str) -> Option<&'static ToolSpec> {
    CATALOGUE.iter().find(|t| t.name == name)
}
