//! The five agent tools: wire types (with schemars schemas) and the bodies that convert them to
//! domain calls. One function per tool; each parses its input, calls one service, shapes output.

use crate::auth::{AgentCaller, Unconfirmed};
use crate::domain::*;
use crate::service::{AgentLogEntry, CheckedChange, LoggedActivity, Service, ServiceResult};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---- inputs ----

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MyAssignmentsInput {
    /// Only tasks with this status. Omit to see every assigned task.
    pub status: Option<TaskStatus>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateStatusInput {
    /// Your working status.
    pub status: WorkingStatus,
    /// Id of the assigned task you are working on; omit or null when none.
    pub current_task: Option<String>,
    /// A short human-readable note about what you are doing (at most 2000 characters).
    pub message: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogActivityInput {
    /// What happened. `task_started` / `task_completed` move an assigned task's status when you
    /// hold write:tasks.
    #[serde(rename = "type")]
    pub kind: AgentActivityKind,
    /// What you did, in a sentence or two (at most 4000 characters).
    pub description: String,
    /// A project of your workspace this entry is about.
    pub project_id: Option<String>,
    /// One of your assigned tasks this entry is about.
    pub task_id: Option<String>,
    /// A page of your workspace this entry is about.
    pub page_id: Option<String>,
    /// Extra structured details (a JSON object, at most 16 KiB).
    pub metadata: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListWorkspaceInput {
    /// Only agents with this access status.
    pub status: Option<AgentStatus>,
    /// Only agents that have every one of these capabilities.
    pub capabilities: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DelegateTaskInput {
    /// Id of a task you are assigned to.
    pub task_id: String,
    /// Id of the approved agent of your workspace who should take the task over.
    pub to_agent_id: String,
    /// Why the other agent should take it (shown to the human who approves).
    pub reason: String,
}

// ---- outputs ----

// The read tool's output borrows from the work snapshot: it is serialised, never kept.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MyAssignmentsOutput<'a> {
    pub projects: Vec<ProjectAssignmentOut<'a>>,
    pub tasks: Vec<TaskAssignmentOut<'a>>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectAssignmentOut<'a> {
    pub assignment_id: &'a str,
    pub role: AssignmentRole,
    pub assigned_at: String,
    pub project: ProjectOut<'a>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectOut<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub status: ProjectStatus,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskAssignmentOut<'a> {
    pub assignment_id: &'a str,
    pub role: AssignmentRole,
    pub assigned_at: String,
    pub task: TaskOut<'a>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskOut<'a> {
    pub id: &'a str,
    pub project_id: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub status: TaskStatus,
    pub updated_at: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStatusOutput {
    pub agent_id: String,
    pub status: WorkingStatus,
    pub current_task: Option<String>,
    pub message: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogActivityOutput {
    pub activity_id: String,
    #[serde(rename = "type")]
    pub kind: AgentActivityKind,
    pub created_at: String,
    /// The task's new status, when logging moved it.
    pub task_status: Option<TaskStatus>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListWorkspaceOutput {
    pub agents: Vec<AgentOut>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentOut {
    pub id: String,
    pub name: String,
    pub description: String,
    pub capabilities: Vec<String>,
    pub status: AgentStatus,
    pub working_status: WorkingStatus,
    pub current_task: Option<String>,
    pub last_seen_at: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelegateTaskOutput {
    pub delegation_id: String,
    pub status: DelegationStatus,
    pub task_id: String,
    pub to_agent_id: String,
    pub expires_at: String,
    /// True while a human still has to approve the hand-over.
    pub awaiting_approval: bool,
}

fn ts(t: &Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A tool's answer: its structured content and the text copy MCP asks for beside it. Cloned by
/// reference: the read tool's answer is kept per work snapshot and shared by every read of it.
#[derive(Debug, Clone)]
pub struct ToolOutput(std::sync::Arc<Rendered>);

#[derive(Debug)]
struct Rendered {
    structured: Value,
    text: String,
    /// The answer as the wire carries it, in each [`Shape`], made once by whoever sends it
    /// first (`mcp::direct`).
    wire: [std::sync::OnceLock<bytes::Bytes>; 2],
}

/// The two shapes of a tool's result on the wire: for a 2025-11-25 session (no `resultType`)
/// and for 2026-07-28.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Legacy = 0,
    Current = 1,
}

impl ToolOutput {
    pub fn structured(&self) -> &Value {
        &self.0.structured
    }

    pub fn text(&self) -> &str {
        &self.0.text
    }

    /// The structured content and the text, copied only if the answer is shared.
    pub fn into_parts(self) -> (Value, String) {
        match std::sync::Arc::try_unwrap(self.0) {
            Ok(r) => (r.structured, r.text),
            Err(shared) => (shared.structured.clone(), shared.text.clone()),
        }
    }

    /// The answer in `shape`, encoded by `encode` the first time it is asked for, then kept
    /// with it.
    pub fn wire(&self, shape: Shape, encode: impl FnOnce(&Self) -> bytes::Bytes) -> bytes::Bytes {
        self.0.wire[shape as usize]
            .get_or_init(|| encode(self))
            .clone()
    }
}

/// Renders both from the output itself: writing the text from a `Value` instead walks its maps
/// again through `fmt::Write`, which cost more than building the value.
fn render<T: Serialize>(v: &T) -> ToolOutput {
    ToolOutput(std::sync::Arc::new(Rendered {
        structured: serde_json::to_value(v).expect("tool outputs serialise"),
        text: serde_json::to_string(v).expect("tool outputs serialise"),
        wire: Default::default(),
    }))
}

// ---- bodies ----

pub async fn my_assignments(
    svc: &Service,
    caller: &AgentCaller,
    input: MyAssignmentsInput,
) -> ServiceResult<ToolOutput> {
    let mine = svc.my_assignments(caller, input.status).await?;
    // Rendered once per work snapshot: repeated reads of unchanged work share the answer.
    let answer = mine.rendered(|mine| {
        render(&MyAssignmentsOutput {
            projects: mine
                .projects()
                .map(|(a, p)| ProjectAssignmentOut {
                    assignment_id: &a.id,
                    role: a.role,
                    assigned_at: ts(&a.assigned_at),
                    project: ProjectOut {
                        id: &p.id,
                        name: &p.name,
                        description: &p.description,
                        status: p.status,
                    },
                })
                .collect(),
            tasks: mine
                .tasks()
                .map(|(a, t)| TaskAssignmentOut {
                    assignment_id: &a.id,
                    role: a.role,
                    assigned_at: ts(&a.assigned_at),
                    task: TaskOut {
                        id: &t.id,
                        project_id: &t.project_id,
                        title: &t.title,
                        description: &t.description,
                        status: t.status,
                        updated_at: ts(&t.updated_at),
                    },
                })
                .collect(),
        })
    });
    Ok(ToolOutput::clone(&answer))
}

pub async fn update_status(
    svc: &Service,
    caller: &AgentCaller,
    audit: &ActivityEntry,
    input: UpdateStatusInput,
) -> ServiceResult<ToolOutput> {
    let agent = svc
        .update_working_status(
            caller,
            audit,
            input.status,
            input.current_task.as_deref(),
            input.message.as_deref(),
        )
        .await?;
    Ok(render(&UpdateStatusOutput {
        agent_id: agent.id,
        status: agent.working_status,
        current_task: agent.current_task_id,
        message: agent.status_message,
        updated_at: ts(&agent.updated_at),
    }))
}

pub async fn log_activity(
    svc: &Service,
    caller: &AgentCaller,
    audit: &ActivityEntry,
    input: LogActivityInput,
) -> ServiceResult<ToolOutput> {
    let kind = input.kind;
    let logged = svc
        .log_agent_activity(caller, audit, log_entry(input))
        .await?;
    Ok(logged_output(kind, logged))
}

/// [`log_activity`] for an agent taken unconfirmed (see `Service::log_agent_note_checked`):
/// nothing is written unless it says `Committed`.
pub async fn log_activity_checked(
    svc: &Service,
    unconfirmed: &Unconfirmed,
    audit: &ActivityEntry,
    input: LogActivityInput,
) -> ServiceResult<CheckedChange<ToolOutput>> {
    let kind = input.kind;
    let checked = svc
        .log_agent_note_checked(unconfirmed, audit, log_entry(input))
        .await?;
    Ok(checked.map(|logged| logged_output(kind, logged)))
}

fn log_entry(input: LogActivityInput) -> AgentLogEntry {
    AgentLogEntry {
        kind: input.kind,
        description: input.description,
        project_id: input.project_id,
        task_id: input.task_id,
        page_id: input.page_id,
        metadata: input.metadata.map(Value::Object),
    }
}

fn logged_output(kind: AgentActivityKind, logged: LoggedActivity) -> ToolOutput {
    render(&LogActivityOutput {
        activity_id: logged.entry.id,
        kind,
        created_at: ts(&logged.entry.created_at),
        task_status: logged.task_status,
    })
}

pub async fn list_workspace(
    svc: &Service,
    caller: &AgentCaller,
    input: ListWorkspaceInput,
) -> ServiceResult<ToolOutput> {
    let agents = svc
        .list_workspace_agents(
            caller,
            input.status,
            input.capabilities.as_deref().unwrap_or(&[]),
        )
        .await?;
    Ok(render(&ListWorkspaceOutput {
        agents: agents
            .into_iter()
            .map(|a| AgentOut {
                last_seen_at: a.last_seen_at.as_ref().map(ts),
                id: a.id,
                name: a.name,
                description: a.description,
                capabilities: a.capabilities,
                status: a.status,
                working_status: a.working_status,
                current_task: a.current_task_id,
            })
            .collect(),
    }))
}

pub async fn delegate_task(
    svc: &Service,
    caller: &AgentCaller,
    audit: &ActivityEntry,
    input: DelegateTaskInput,
) -> ServiceResult<ToolOutput> {
    let d = svc
        .request_delegation_audited(
            caller,
            Some(audit),
            &input.task_id,
            &input.to_agent_id,
            &input.reason,
        )
        .await?;
    Ok(delegation_output(&d))
}

/// `agent_delegate_task`'s answer for a delegation: now, or as a task's final result.
pub fn delegation_output(d: &Delegation) -> ToolOutput {
    render(&DelegateTaskOutput {
        awaiting_approval: d.status == DelegationStatus::Pending,
        delegation_id: d.id.clone(),
        status: d.status,
        task_id: d.task_id.clone(),
        to_agent_id: d.to_agent_id.clone(),
        expires_at: ts(&d.expires_at),
    })
}
