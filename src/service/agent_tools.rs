//! What approved agents may do (docs/design.md §2), always as themselves: every method takes the
//! [`AgentCaller`] built from the agent's credential and never an agent or workspace id for it.
//!
//! Writing methods take the gate's audit entry and commit it in the same transaction as the change,
//! so a change is never recorded without its decision, nor the decision without the change.

use super::*;
use crate::auth::{AgentCaller, Unconfirmed};
use crate::store::AgentWork;

/// An agent's current work: projects and tasks it is assigned to, borrowed from the store's work
/// snapshot (no row is copied to answer a read).
#[derive(Debug, Clone)]
pub struct MyAssignments {
    work: Arc<AgentWork>,
    /// The filter these were chosen by.
    status: Option<TaskStatus>,
    /// Indexes into the snapshot: (assignment, project).
    projects: Vec<(usize, usize)>,
    /// Indexes into the snapshot: (assignment, task).
    tasks: Vec<(usize, usize)>,
}

impl MyAssignments {
    /// Project assignments with their projects.
    pub fn projects(&self) -> impl ExactSizeIterator<Item = (&Assignment, &Project)> {
        let w = &*self.work;
        self.projects
            .iter()
            .map(|&(a, p)| (&w.assignments[a], &w.projects[p]))
    }

    /// Task assignments with their tasks.
    pub fn tasks(&self) -> impl ExactSizeIterator<Item = (&Assignment, &Task)> {
        let w = &*self.work;
        self.tasks
            .iter()
            .map(|&(a, t)| (&w.assignments[a], &w.tasks[t]))
    }

    /// What `render` makes of these assignments, made once per work snapshot and filter and
    /// shared by every read of the same snapshot after it (a change to the agent's work makes a
    /// new snapshot, so nothing here outlives what it was made from). `render` must depend on
    /// the assignments alone.
    pub fn rendered<T: std::any::Any + Send + Sync>(
        &self,
        render: impl FnOnce(&Self) -> T,
    ) -> Arc<T> {
        let key = self.status.map_or(0, |s| s as u64 + 1);
        self.work.derived.get_or_make(key, || render(self))
    }
}

/// An entry the agent logs (`agent_log_activity`).
#[derive(Debug, Clone)]
pub struct AgentLogEntry {
    pub kind: AgentActivityKind,
    pub description: String,
    pub project_id: Option<String>,
    pub task_id: Option<String>,
    pub page_id: Option<String>,
    pub metadata: Option<Value>,
}

/// An [`AgentLogEntry`] whose fields were checked, ready to write.
#[derive(Debug)]
struct CheckedLogEntry {
    kind: AgentActivityKind,
    description: String,
    metadata: Value,
    project_id: Option<RecordId>,
    task_id: Option<RecordId>,
    page_id: Option<RecordId>,
}

/// What an [`AgentLogEntry`] comes to once checked.
enum Note {
    /// Its entry is the whole change.
    Alone(ActivityEntry),
    /// It changes more than the trail (or names what may not be there), in a transaction.
    Change(CheckedLogEntry),
}

/// What a change decided on an unconfirmed caller came to (see
/// [`Service::log_agent_note_checked`]).
#[derive(Debug)]
pub enum CheckedChange<T> {
    /// Committed: the generations were still those it was decided on.
    Committed(T),
    /// Nothing written: the generations had moved.
    Stale,
    /// Nothing written: it needs a confirmed caller (a transaction, or a refusal to make).
    NeedsCaller,
}

impl<T> CheckedChange<T> {
    /// What was committed, made into something else.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> CheckedChange<U> {
        match self {
            CheckedChange::Committed(t) => CheckedChange::Committed(f(t)),
            CheckedChange::Stale => CheckedChange::Stale,
            CheckedChange::NeedsCaller => CheckedChange::NeedsCaller,
        }
    }
}

/// The outcome of logging: the entry, and the task's new status if logging moved it.
#[derive(Debug, Clone)]
pub struct LoggedActivity {
    pub entry: ActivityEntry,
    pub task_status: Option<TaskStatus>,
}

fn need(caller: &AgentCaller, p: Permission) -> ServiceResult<()> {
    if caller.has(p) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(format!(
            "this needs the {p} permission"
        )))
    }
}

impl Service {
    /// The caller's active assignments; tasks optionally filtered by status.
    pub async fn my_assignments(
        &self,
        caller: &AgentCaller,
        status: Option<TaskStatus>,
    ) -> ServiceResult<MyAssignments> {
        need(caller, Permission::ReadTasks)?;
        // Served from the store's work snapshot as of the request's own authentication, so a
        // repeated read costs no query (see `store::work_cache`).
        let work = self
            .store
            .agent_work(caller.seen(), caller.workspace_id(), caller.agent_id())
            .await?;
        let (mut projects, mut tasks) = (Vec::new(), Vec::new());
        for (ai, a) in work.assignments.iter().enumerate() {
            match &a.task_id {
                Some(tid) => {
                    if let Some(ti) = work.tasks.iter().position(|t| &t.id == tid)
                        && status.is_none_or(|s| s == work.tasks[ti].status)
                    {
                        tasks.push((ai, ti));
                    }
                }
                None => {
                    if let Some(pi) = work.projects.iter().position(|p| p.id == a.project_id) {
                        projects.push((ai, pi));
                    }
                }
            }
        }
        Ok(MyAssignments {
            work,
            status,
            projects,
            tasks,
        })
    }

    /// Sets the caller's working status. `current_task` must be one of its assigned tasks.
    pub async fn update_working_status(
        &self,
        caller: &AgentCaller,
        audit: &ActivityEntry,
        status: WorkingStatus,
        current_task: Option<&str>,
        message: Option<&str>,
    ) -> ServiceResult<Agent> {
        let message = message
            .map(|m| bounded_text("message", m.trim(), 2000))
            .transpose()?;
        let current_task = current_task
            .map(|t| RecordId::parse("task", t))
            .transpose()?;
        // Group-committed with other calls' changes and audit entries (see `audit`).
        let (svc, caller, audit) = (self.clone(), caller.clone(), audit.clone());
        self.writer()
            .run(move |tx| {
                Box::pin(async move {
                    svc.set_working_status(tx, &caller, &audit, status, current_task, message)
                        .await
                })
            })
            .await
    }

    /// [`Service::update_working_status`]'s change, in the batch's transaction `tx`.
    async fn set_working_status(
        &self,
        tx: &Tx,
        caller: &AgentCaller,
        audit: &ActivityEntry,
        status: WorkingStatus,
        current_task: Option<RecordId>,
        message: Option<String>,
    ) -> ServiceResult<Agent> {
        let ws = caller.workspace_id();
        // Only the working columns are written (`update_agent_work`), so a concurrent revocation
        // or permission change cannot be overwritten with the state read here.
        let mut agent = tx
            .agent(ws, caller.agent_id())
            .await?
            .ok_or_else(|| ServiceError::not_found("agent", caller.agent_id()))?;
        if let Some(t) = &current_task {
            assigned_task(tx, caller, t.as_str()).await?;
        }
        let old = agent.working_status;
        let at = now();
        agent.working_status = status;
        agent.current_task_id = current_task.map(RecordId::into_string);
        agent.status_message = message;
        agent.last_seen_at = Some(at);
        agent.updated_at = at;
        tx.update_agent_work(&agent).await?;
        tx.insert_activity(audit).await?;
        tx.insert_activity(
            &Activity::new(ws, &caller.actor(), EventType::StatusChanged.as_str())
                .task(agent.current_task_id.as_deref())
                .description(&format!(
                    "{old} -> {status}{}",
                    agent
                        .status_message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ))
                .build(),
        )
        .await?;
        emit(
            tx,
            ws,
            EventType::StatusChanged,
            Some(&agent.id),
            json!({ "agentId": agent.id, "previous": old, "status": status, "currentTask": agent.current_task_id, "message": agent.status_message }),
        )
        .await?;
        Ok(agent)
    }

    /// Records a typed entry. References must be in the caller's workspace (else not found) and a
    /// task must be one of its assignments. Starting or completing a task moves its status when
    /// the caller holds `write:tasks`.
    pub async fn log_agent_activity(
        &self,
        caller: &AgentCaller,
        audit: &ActivityEntry,
        entry: AgentLogEntry,
    ) -> ServiceResult<LoggedActivity> {
        let checked = match self.agent_note(caller, entry).await? {
            Note::Alone(logged) => {
                self.writer()
                    .append(vec![audit.clone(), logged.clone()])
                    .await?;
                return Ok(LoggedActivity {
                    entry: logged,
                    task_status: None,
                });
            }
            Note::Change(checked) => checked,
        };
        // Group-committed with other calls' changes and audit entries (see `audit`).
        let (svc, caller, audit) = (self.clone(), caller.clone(), audit.clone());
        self.writer()
            .run(move |tx| Box::pin(async move { svc.log_in(tx, &caller, &audit, checked).await }))
            .await
    }

    /// [`Service::log_agent_activity`] for an agent authenticated from the store's snapshot
    /// alone: a note that is its entry alone is appended with the call's decision only if the
    /// generations are still those the snapshot was read at when they commit
    /// (`AuditWriter::append_checked`). Anything else writes nothing and says why, and the call
    /// is decided again on a confirmed caller; so is an entry this refuses, so that its
    /// refusal is made and audited on current data.
    pub async fn log_agent_note_checked(
        &self,
        unconfirmed: &Unconfirmed,
        audit: &ActivityEntry,
        entry: AgentLogEntry,
    ) -> ServiceResult<CheckedChange<LoggedActivity>> {
        let logged = match self.agent_note(unconfirmed.caller(), entry).await {
            Ok(Note::Alone(logged)) => logged,
            Err(e @ ServiceError::Store(_)) => return Err(e),
            Ok(Note::Change(_)) | Err(_) => return Ok(CheckedChange::NeedsCaller),
        };
        let committed = self
            .writer()
            .append_checked(vec![audit.clone(), logged.clone()], unconfirmed.seen())
            .await?;
        Ok(if committed {
            CheckedChange::Committed(LoggedActivity {
                entry: logged,
                task_status: None,
            })
        } else {
            CheckedChange::Stale
        })
    }

    /// Checks `entry`'s fields and tells a note that is its entry alone from a change.
    async fn agent_note(&self, caller: &AgentCaller, entry: AgentLogEntry) -> ServiceResult<Note> {
        let description = required_text("description", &entry.description, 4000)?;
        let metadata = entry.metadata.unwrap_or_else(|| json!({}));
        if !metadata.is_object() {
            return Err(ServiceError::Invalid(
                "metadata must be a JSON object".into(),
            ));
        }
        if serde_json::to_string(&metadata).map_or(0, |s| s.len()) > 16 * 1024 {
            return Err(ServiceError::Invalid(
                "metadata is larger than 16 KiB".into(),
            ));
        }
        let project_id = entry
            .project_id
            .as_deref()
            .map(|p| RecordId::parse("project", p))
            .transpose()?;
        let task_id = entry
            .task_id
            .as_deref()
            .map(|t| RecordId::parse("task", t))
            .transpose()?;
        let page_id = entry
            .page_id
            .as_deref()
            .map(|p| RecordId::parse("page", p))
            .transpose()?;
        // A note (no event) that names nothing, or names one of the caller's tasks and no page,
        // is its entry alone: appended with the call's decision like any decision entry (on a
        // SQLite file, without a transaction through the pool). The task is looked up in the
        // work snapshot as of the request's own authentication, which every change to
        // assignments and tasks invalidates from any process or replica, as a read sees it.
        // Anything else (a task not there, a project that is not the task's, a page) is checked
        // in a transaction, which also names what is wrong.
        if entry.kind.event().is_none() && page_id.is_none() {
            let on = match (&project_id, &task_id) {
                (None, None) => Some(None),
                (_, Some(t)) => {
                    let work = self
                        .store
                        .agent_work(caller.seen(), caller.workspace_id(), caller.agent_id())
                        .await?;
                    work.tasks
                        .iter()
                        .find(|x| x.id == t.as_str())
                        .filter(|x| {
                            project_id
                                .as_ref()
                                .is_none_or(|p| p.as_str() == x.project_id)
                        })
                        .map(|x| Some((x.project_id.clone(), x.id.clone())))
                }
                (Some(_), None) => None,
            };
            if let Some(on) = on {
                return Ok(Note::Alone(
                    Activity::new(
                        caller.workspace_id(),
                        &caller.actor(),
                        &format!("agent.{}", entry.kind),
                    )
                    .project(on.as_ref().map(|(p, _)| p.as_str()))
                    .task(on.as_ref().map(|(_, t)| t.as_str()))
                    .description(&description)
                    .metadata(metadata)
                    .build(),
                ));
            }
        }
        Ok(Note::Change(CheckedLogEntry {
            kind: entry.kind,
            description,
            metadata,
            project_id,
            task_id,
            page_id,
        }))
    }

    /// [`Service::log_agent_activity`]'s change, in the batch's transaction `tx`.
    async fn log_in(
        &self,
        tx: &Tx,
        caller: &AgentCaller,
        audit: &ActivityEntry,
        entry: CheckedLogEntry,
    ) -> ServiceResult<LoggedActivity> {
        let ws = caller.workspace_id();
        let CheckedLogEntry {
            description,
            metadata,
            project_id,
            task_id,
            page_id,
            ..
        } = entry;
        let mut project = match &project_id {
            Some(p) => Some(
                tx.project(ws, p.as_str())
                    .await?
                    .ok_or_else(|| ServiceError::not_found("project", p.as_str()))?
                    .id,
            ),
            None => None,
        };
        let mut task = match &task_id {
            Some(t) => Some(assigned_task(tx, caller, t.as_str()).await?),
            None => None,
        };
        if let Some(p) = &page_id {
            tx.page(ws, p.as_str())
                .await?
                .ok_or_else(|| ServiceError::not_found("page", p.as_str()))?;
        }
        if let Some(t) = &task {
            match &project {
                Some(p) if p != &t.project_id => {
                    return Err(ServiceError::Invalid(format!(
                        "task {} is not in project {p}",
                        t.id
                    )));
                }
                _ => project = Some(t.project_id.clone()),
            }
        }
        let mut task_status = None;
        if let Some(t) = task.as_mut() {
            let target = match entry.kind {
                AgentActivityKind::TaskStarted => Some(TaskStatus::InProgress),
                AgentActivityKind::TaskCompleted => Some(TaskStatus::Completed),
                _ => None,
            };
            if let Some(s) = target
                && caller.has(Permission::WriteTasks)
                && t.status != s
            {
                t.status = s;
                t.updated_at = now();
                tx.update_task(t).await?;
                task_status = Some(s);
            }
        }
        tx.insert_activity(audit).await?;
        let logged = Activity::new(ws, &caller.actor(), &format!("agent.{}", entry.kind))
            .project(project.as_deref())
            .task(task.as_ref().map(|t| t.id.as_str()))
            .page(page_id.as_ref().map(|p| p.as_str()))
            .description(&description)
            .metadata(metadata)
            .build();
        tx.insert_activity(&logged).await?;
        if let Some(event) = entry.kind.event() {
            emit(
                tx,
                ws,
                event,
                Some(caller.agent_id()),
                json!({
                    "agentId": caller.agent_id(),
                    "activityId": logged.id,
                    "description": logged.description,
                    "projectId": logged.project_id,
                    "taskId": logged.task_id,
                    "pageId": logged.page_id,
                    "taskStatus": task_status,
                    "metadata": logged.metadata,
                }),
            )
            .await?;
        }
        Ok(LoggedActivity {
            entry: logged,
            task_status,
        })
    }

    /// Agents of the caller's workspace (never another's), by status and required capabilities.
    pub async fn list_workspace_agents(
        &self,
        caller: &AgentCaller,
        status: Option<AgentStatus>,
        capabilities: &[String],
    ) -> ServiceResult<Vec<Agent>> {
        need(caller, Permission::ReadAgents)?;
        let mut agents = self
            .store
            .read()
            .await?
            .list_agents(caller.workspace_id(), status)
            .await?;
        agents.retain(|a| {
            capabilities
                .iter()
                .all(|c| a.capabilities.iter().any(|x| x == c))
        });
        Ok(agents)
    }
}

/// The task, if it is in the caller's workspace (else not found) and assigned to the caller.
async fn assigned_task(tx: &Tx, caller: &AgentCaller, task_id: &str) -> ServiceResult<Task> {
    let ws = caller.workspace_id();
    let task = tx
        .task(ws, task_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("task", task_id))?;
    let mine = tx.agent_assignments(ws, caller.agent_id(), false).await?;
    if mine
        .iter()
        .any(|a| a.task_id.as_deref() == Some(task.id.as_str()))
    {
        Ok(task)
    } else {
        Err(ServiceError::Forbidden(format!(
            "task {task_id} is not assigned to you"
        )))
    }
}
