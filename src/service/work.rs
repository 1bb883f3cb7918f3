//! Projects, tasks, pages, and agents' assignments to them.

use super::*;

/// What an assignment points at.
#[derive(Debug, Clone)]
pub enum AssignTarget {
    Project(String),
    Task(String),
}

/// Changes to a task; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TaskUpdate {
    pub title: Option<String>,
    pub description: Option<String>,
    pub status: Option<TaskStatus>,
}

impl Service {
    pub async fn create_project(
        &self,
        caller: &MemberCaller,
        name: &str,
        description: &str,
    ) -> ServiceResult<Project> {
        self.require(caller, Role::Write, "creating projects")
            .await?;
        let at = now();
        let p = Project {
            id: new_id(),
            workspace_id: caller.workspace().id.clone(),
            name: required_text("project name", name, 200)?,
            description: bounded_text("description", description.trim(), 10_000)?,
            status: ProjectStatus::Active,
            created_at: at,
            updated_at: at,
        };
        let tx = self.store.write().await?;
        tx.insert_project(&p).await?;
        tx.insert_activity(
            &Activity::new(&p.workspace_id, &caller.actor(), "project.created")
                .project(Some(&p.id))
                .description(&format!("project {:?} created", p.name))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(p)
    }

    pub async fn list_projects(&self, caller: &MemberCaller) -> ServiceResult<Vec<Project>> {
        self.require(caller, Role::Read, "listing projects").await?;
        Ok(self
            .store
            .read()
            .await?
            .list_projects(&caller.workspace().id)
            .await?)
    }

    pub async fn create_task(
        &self,
        caller: &MemberCaller,
        project_id: &str,
        title: &str,
        description: &str,
    ) -> ServiceResult<Task> {
        self.require(caller, Role::Write, "creating tasks").await?;
        let ws = &caller.workspace().id;
        let project_id = RecordId::parse("project", project_id)?;
        let at = now();
        let t = Task {
            id: new_id(),
            workspace_id: ws.clone(),
            project_id: project_id.as_str().to_owned(),
            title: required_text("task title", title, 500)?,
            description: bounded_text("description", description.trim(), 20_000)?,
            status: TaskStatus::Todo,
            created_at: at,
            updated_at: at,
        };
        let tx = self.store.write().await?;
        let project = tx
            .project(ws, project_id.as_str())
            .await?
            .ok_or_else(|| ServiceError::not_found("project", project_id.as_str()))?;
        if project.status == ProjectStatus::Archived {
            return Err(ServiceError::Conflict(format!(
                "project {} is archived",
                project.id
            )));
        }
        tx.insert_task(&t).await?;
        tx.insert_activity(
            &Activity::new(ws, &caller.actor(), "task.created")
                .project(Some(&t.project_id))
                .task(Some(&t.id))
                .description(&format!("task {:?} created", t.title))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(t)
    }

    pub async fn list_tasks(
        &self,
        caller: &MemberCaller,
        project_id: Option<&str>,
        status: Option<TaskStatus>,
    ) -> ServiceResult<Vec<Task>> {
        self.require(caller, Role::Read, "listing tasks").await?;
        let project_id = project_id
            .map(|p| RecordId::parse("project", p))
            .transpose()?;
        Ok(self
            .store
            .read()
            .await?
            .list_tasks(
                &caller.workspace().id,
                project_id.as_ref().map(|p| p.as_str()),
                status,
            )
            .await?)
    }

    pub async fn update_task(
        &self,
        caller: &MemberCaller,
        task_id: &str,
        update: TaskUpdate,
    ) -> ServiceResult<Task> {
        self.require(caller, Role::Write, "updating tasks").await?;
        let ws = &caller.workspace().id;
        let task_id = RecordId::parse("task", task_id)?;
        if update.title.is_none() && update.description.is_none() && update.status.is_none() {
            return Err(ServiceError::Invalid(
                "nothing to update: give a title, description or status".into(),
            ));
        }
        let tx = self.store.write().await?;
        let mut t = tx
            .task(ws, task_id.as_str())
            .await?
            .ok_or_else(|| ServiceError::not_found("task", task_id.as_str()))?;
        let mut changes = Vec::new();
        if let Some(title) = &update.title {
            t.title = required_text("task title", title, 500)?;
            changes.push("title".to_owned());
        }
        if let Some(d) = &update.description {
            t.description = bounded_text("description", d.trim(), 20_000)?;
            changes.push("description".to_owned());
        }
        if let Some(s) = update.status {
            changes.push(format!("status {} -> {s}", t.status));
            t.status = s;
        }
        t.updated_at = now();
        tx.update_task(&t).await?;
        tx.insert_activity(
            &Activity::new(ws, &caller.actor(), "task.updated")
                .project(Some(&t.project_id))
                .task(Some(&t.id))
                .description(&changes.join(", "))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(t)
    }

    pub async fn create_page(
        &self,
        caller: &MemberCaller,
        project_id: Option<&str>,
        title: &str,
        content: &str,
    ) -> ServiceResult<Page> {
        self.require(caller, Role::Write, "creating pages").await?;
        let ws = &caller.workspace().id;
        let project_id = project_id
            .map(|p| RecordId::parse("project", p))
            .transpose()?;
        let at = now();
        let p = Page {
            id: new_id(),
            workspace_id: ws.clone(),
            project_id: project_id.as_ref().map(|p| p.as_str().to_owned()),
            title: required_text("page title", title, 500)?,
            content: bounded_text("content", content, 1_000_000)?,
            created_at: at,
            updated_at: at,
        };
        let tx = self.store.write().await?;
        if let Some(pid) = &p.project_id {
            tx.project(ws, pid)
                .await?
                .ok_or_else(|| ServiceError::not_found("project", pid))?;
        }
        tx.insert_page(&p).await?;
        tx.insert_activity(
            &Activity::new(ws, &caller.actor(), "page.created")
                .project(p.project_id.as_deref())
                .page(Some(&p.id))
                .description(&format!("page {:?} created", p.title))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(p)
    }

    pub async fn list_pages(
        &self,
        caller: &MemberCaller,
        project_id: Option<&str>,
    ) -> ServiceResult<Vec<Page>> {
        self.require(caller, Role::Read, "listing pages").await?;
        let project_id = project_id
            .map(|p| RecordId::parse("project", p))
            .transpose()?;
        Ok(self
            .store
            .read()
            .await?
            .list_pages(
                &caller.workspace().id,
                project_id.as_ref().map(|p| p.as_str()),
            )
            .await?)
    }

    /// Assigns an approved agent to a project or task. Assigning twice returns the existing
    /// assignment (`false`). Quotas `max_active_assignments_per_agent` and `max_agents_per_project`
    /// (agents on the project or any of its tasks) refuse with the limit's name.
    pub async fn assign(
        &self,
        caller: &MemberCaller,
        agent_id: &str,
        target: AssignTarget,
        role: AssignmentRole,
    ) -> ServiceResult<(Assignment, bool)> {
        self.require(caller, Role::Write, "assigning agents")
            .await?;
        let ws_id = &caller.workspace().id;
        let tx = self.store.write().await?;
        tx.lock_workspace(ws_id).await?;
        let ws = tx
            .workspace_by_id(ws_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("workspace", ws_id))?;
        let outcome = assign_in(&tx, &ws, &caller.actor(), agent_id, &target, role).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Ends an assignment; the row stays, with who ended it and when.
    pub async fn unassign(
        &self,
        caller: &MemberCaller,
        assignment_id: &str,
    ) -> ServiceResult<Assignment> {
        self.require(caller, Role::Write, "unassigning agents")
            .await?;
        let ws = &caller.workspace().id;
        let assignment_id = RecordId::parse("assignment", assignment_id)?;
        let tx = self.store.write().await?;
        let mut a = tx
            .assignment(ws, assignment_id.as_str())
            .await?
            .ok_or_else(|| ServiceError::not_found("assignment", assignment_id.as_str()))?;
        if !a.is_active() {
            return Err(ServiceError::Conflict(format!(
                "assignment {} already ended",
                a.id
            )));
        }
        let at = now();
        let actor = caller.actor();
        tx.end_assignment(ws, &a.id, &actor.label(), at).await?;
        a.unassigned_at = Some(at);
        a.unassigned_by = Some(actor.label());
        tx.insert_activity(
            &Activity::new(ws, &actor, EventType::Unassigned.as_str())
                .agent(&a.agent_id)
                .project(Some(&a.project_id))
                .task(a.task_id.as_deref())
                .description(&format!(
                    "{} unassigned from {} {}",
                    a.agent_id,
                    a.kind,
                    a.task_id.as_deref().unwrap_or(&a.project_id)
                ))
                .build(),
        )
        .await?;
        emit(
            &tx,
            ws,
            EventType::Unassigned,
            Some(&a.agent_id),
            assignment_event_data(&a),
        )
        .await?;
        tx.commit().await?;
        Ok(a)
    }

    pub async fn list_assignments(
        &self,
        caller: &MemberCaller,
        agent_id: Option<&str>,
        project_id: Option<&str>,
        include_ended: bool,
    ) -> ServiceResult<Vec<Assignment>> {
        self.require(caller, Role::Read, "listing assignments")
            .await?;
        let ws = &caller.workspace().id;
        let tx = self.store.read().await?;
        let project_id = project_id
            .map(|p| RecordId::parse("project", p))
            .transpose()?;
        let mut list = match agent_id {
            Some(a) => tx.agent_assignments(ws, a, include_ended).await?,
            None => tx.list_assignments(ws, None, None, include_ended).await?,
        };
        if let Some(p) = &project_id {
            list.retain(|a| a.project_id == p.as_str());
        }
        Ok(list)
    }
}

pub(crate) fn assignment_event_data(a: &Assignment) -> Value {
    json!({
        "agentId": a.agent_id,
        "assignmentId": a.id,
        "kind": a.kind,
        "projectId": a.project_id,
        "taskId": a.task_id,
        "role": a.role,
        "assignedBy": a.assigned_by,
    })
}

/// The assignment rules, inside a write transaction that already holds the workspace lock; shared
/// by direct assignment and approved delegations.
pub(crate) async fn assign_in(
    tx: &Tx,
    ws: &Workspace,
    actor: &Actor,
    agent_id: &str,
    target: &AssignTarget,
    role: AssignmentRole,
) -> ServiceResult<(Assignment, bool)> {
    let agent = tx
        .agent(&ws.id, agent_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("agent", agent_id))?;
    if agent.status != AgentStatus::Approved {
        return Err(ServiceError::Conflict(format!(
            "agent {agent_id} is {}; only approved agents can be assigned",
            agent.status
        )));
    }
    let (kind, project_id, task_id) = match target {
        AssignTarget::Project(p) => {
            let p = RecordId::parse("project", p)?;
            let project = tx
                .project(&ws.id, p.as_str())
                .await?
                .ok_or_else(|| ServiceError::not_found("project", p.as_str()))?;
            if project.status == ProjectStatus::Archived {
                return Err(ServiceError::Conflict(format!(
                    "project {} is archived",
                    project.id
                )));
            }
            (AssignmentKind::Project, project.id, None)
        }
        AssignTarget::Task(t) => {
            let t = RecordId::parse("task", t)?;
            let task = tx
                .task(&ws.id, t.as_str())
                .await?
                .ok_or_else(|| ServiceError::not_found("task", t.as_str()))?;
            (AssignmentKind::Task, task.project_id, Some(task.id))
        }
    };
    let mine = tx.agent_assignments(&ws.id, agent_id, false).await?;
    if let Some(existing) = mine
        .iter()
        .find(|a| a.kind == kind && a.project_id == project_id && a.task_id == task_id)
    {
        return Ok((existing.clone(), false));
    }
    let limit = ws.settings.max_active_assignments_per_agent;
    if mine.len() as u64 >= u64::from(limit) {
        return Err(ServiceError::QuotaExceeded {
            limit: "max_active_assignments_per_agent",
            max: limit,
            detail: format!(
                " and agent {agent_id} has {} active assignments",
                mine.len()
            ),
        });
    }
    let on_project = tx
        .list_assignments(&ws.id, Some(&project_id), None, false)
        .await?;
    let mut agents: Vec<&str> = on_project.iter().map(|a| a.agent_id.as_str()).collect();
    agents.sort_unstable();
    agents.dedup();
    let limit = ws.settings.max_agents_per_project;
    if !agents.contains(&agent_id) && agents.len() as u64 >= u64::from(limit) {
        return Err(ServiceError::QuotaExceeded {
            limit: "max_agents_per_project",
            max: limit,
            detail: format!(" and project {project_id} has {} agents", agents.len()),
        });
    }
    let a = Assignment {
        id: new_id(),
        workspace_id: ws.id.clone(),
        agent_id: agent_id.to_owned(),
        kind,
        project_id,
        task_id,
        role,
        assigned_by: actor.label(),
        assigned_at: now(),
        unassigned_by: None,
        unassigned_at: None,
    };
    tx.insert_assignment(&a).await?;
    let (activity_type, event) = match kind {
        AssignmentKind::Project => (EventType::ProjectAssigned, EventType::ProjectAssigned),
        AssignmentKind::Task => (EventType::TaskAssigned, EventType::TaskAssigned),
    };
    tx.insert_activity(
        &Activity::new(&ws.id, actor, activity_type.as_str())
            .agent(agent_id)
            .project(Some(&a.project_id))
            .task(a.task_id.as_deref())
            .description(&format!(
                "{agent_id} assigned to {kind} {} as {role}",
                a.task_id.as_deref().unwrap_or(&a.project_id)
            ))
            .build(),
    )
    .await?;
    emit(tx, &ws.id, event, Some(agent_id), assignment_event_data(&a)).await?;
    Ok((a, true))
}
