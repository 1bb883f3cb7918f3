//! Conversions between rows and domain records. Stored strings are parsed with the domain's own
//! parsers, so a bad manual edit surfaces as `StoreError::Corrupt` instead of a wrong decision.

use super::entities::*;
use super::{StoreError, StoreResult};
use crate::domain::*;

fn parsed<T>(r: Result<T, ParseError>) -> StoreResult<T> {
    r.map_err(|e| StoreError::Corrupt(e.0))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub fn workspace(m: workspace::Model) -> StoreResult<Workspace> {
    Ok(Workspace {
        settings: from_json("workspace settings", &m.settings)?,
        id: m.id,
        slug: m.slug,
        name: m.name,
        created_at: m.created_at,
    })
}

pub fn workspace_model(w: &Workspace) -> StoreResult<workspace::Model> {
    Ok(workspace::Model {
        id: w.id.clone(),
        slug: w.slug.clone(),
        name: w.name.clone(),
        settings: to_json(&w.settings)?,
        lock_version: 0,
        created_at: w.created_at,
        updated_at: w.created_at,
    })
}

pub fn member(m: member::Model) -> StoreResult<Member> {
    Ok(Member {
        role: parsed(Role::parse(&m.role))?,
        id: m.id,
        workspace_id: m.workspace_id,
        email: m.email,
        name: m.name,
        created_at: m.created_at,
    })
}

pub fn member_model(m: &Member) -> member::Model {
    member::Model {
        id: m.id.clone(),
        workspace_id: m.workspace_id.clone(),
        email: m.email.clone(),
        name: m.name.clone(),
        role: m.role.as_str().to_owned(),
        created_at: m.created_at,
    }
}

pub fn project(m: project::Model) -> StoreResult<Project> {
    Ok(Project {
        status: parsed(ProjectStatus::parse(&m.status))?,
        id: m.id,
        workspace_id: m.workspace_id,
        name: m.name,
        description: m.description,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

pub fn project_model(p: &Project) -> project::Model {
    project::Model {
        id: p.id.clone(),
        workspace_id: p.workspace_id.clone(),
        name: p.name.clone(),
        description: p.description.clone(),
        status: p.status.as_str().to_owned(),
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

pub fn task(m: task::Model) -> StoreResult<Task> {
    Ok(Task {
        status: parsed(TaskStatus::parse(&m.status))?,
        id: m.id,
        workspace_id: m.workspace_id,
        project_id: m.project_id,
        title: m.title,
        description: m.description,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

pub fn task_model(t: &Task) -> task::Model {
    task::Model {
        id: t.id.clone(),
        workspace_id: t.workspace_id.clone(),
        project_id: t.project_id.clone(),
        title: t.title.clone(),
        description: t.description.clone(),
        status: t.status.as_str().to_owned(),
        created_at: t.created_at,
        updated_at: t.updated_at,
    }
}

pub fn page(m: page::Model) -> StoreResult<Page> {
    Ok(Page {
        id: m.id,
        workspace_id: m.workspace_id,
        project_id: m.project_id,
        title: m.title,
        content: m.content,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

pub fn page_model(p: &Page) -> page::Model {
    page::Model {
        id: p.id.clone(),
        workspace_id: p.workspace_id.clone(),
        project_id: p.project_id.clone(),
        title: p.title.clone(),
        content: p.content.clone(),
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

pub fn agent(m: agent::Model) -> StoreResult<Agent> {
    let requested: Vec<String> = from_json("requested permissions", &m.requested_permissions)?;
    let granted: Vec<String> = from_json("granted permissions", &m.granted_permissions)?;
    Ok(Agent {
        capabilities: from_json("capabilities", &m.capabilities)?,
        status: parsed(AgentStatus::parse(&m.status))?,
        requested_permissions: parsed(PermissionSet::parse_all(&requested))?,
        granted_permissions: parsed(PermissionSet::parse_all(&granted))?,
        metadata: from_json("metadata", &m.metadata)?,
        working_status: parsed(WorkingStatus::parse(&m.working_status))?,
        id: m.id,
        workspace_id: m.workspace_id,
        name: m.name,
        description: m.description,
        endpoint: m.endpoint,
        justification: m.justification,
        auto_approved: m.auto_approved,
        requested_at: m.requested_at,
        resolved_at: m.resolved_at,
        resolved_by: m.resolved_by,
        denial_reason: m.denial_reason,
        revocation_reason: m.revocation_reason,
        current_task_id: m.current_task_id,
        status_message: m.status_message,
        last_seen_at: m.last_seen_at,
        access_version: m.access_version,
        updated_at: m.updated_at,
        access_expires_at: m.access_expires_at,
        temporary_permissions: from_json("temporary permissions", &m.temporary_permissions)?,
        access_expiry_recorded_at: m.access_expiry_recorded_at,
    })
}

pub fn agent_model(a: &Agent) -> StoreResult<agent::Model> {
    Ok(agent::Model {
        workspace_id: a.workspace_id.clone(),
        id: a.id.clone(),
        name: a.name.clone(),
        description: a.description.clone(),
        capabilities: to_json(&a.capabilities)?,
        status: a.status.as_str().to_owned(),
        requested_permissions: to_json(&a.requested_permissions)?,
        granted_permissions: to_json(&a.granted_permissions)?,
        endpoint: a.endpoint.clone(),
        metadata: to_json(&a.metadata)?,
        justification: a.justification.clone(),
        auto_approved: a.auto_approved,
        requested_at: a.requested_at,
        resolved_at: a.resolved_at,
        resolved_by: a.resolved_by.clone(),
        denial_reason: a.denial_reason.clone(),
        revocation_reason: a.revocation_reason.clone(),
        working_status: a.working_status.as_str().to_owned(),
        current_task_id: a.current_task_id.clone(),
        status_message: a.status_message.clone(),
        last_seen_at: a.last_seen_at,
        access_version: a.access_version,
        created_at: a.requested_at,
        updated_at: a.updated_at,
        access_expires_at: a.access_expires_at,
        access_expiry_recorded_at: a.access_expiry_recorded_at,
        temporary_permissions: to_json(&a.temporary_permissions)?,
    })
}

pub fn credential(m: credential::Model) -> Credential {
    Credential {
        id: m.id,
        workspace_id: m.workspace_id,
        agent_id: m.agent_id,
        key_prefix: m.key_prefix,
        created_at: m.created_at,
        last_used_at: m.last_used_at,
        expires_at: m.expires_at,
        revoked_at: m.revoked_at,
    }
}

pub fn credential_model(c: &Credential, hash: &KeyHash) -> credential::Model {
    credential::Model {
        id: c.id.clone(),
        workspace_id: c.workspace_id.clone(),
        agent_id: c.agent_id.clone(),
        key_hash: hash.as_str().to_owned(),
        key_prefix: c.key_prefix.clone(),
        created_at: c.created_at,
        last_used_at: c.last_used_at,
        expires_at: c.expires_at,
        revoked_at: c.revoked_at,
    }
}

pub fn assignment(m: assignment::Model) -> StoreResult<Assignment> {
    Ok(Assignment {
        kind: parsed(AssignmentKind::parse(&m.kind))?,
        role: parsed(AssignmentRole::parse(&m.role))?,
        id: m.id,
        workspace_id: m.workspace_id,
        agent_id: m.agent_id,
        project_id: m.project_id,
        task_id: m.task_id,
        assigned_by: m.assigned_by,
        assigned_at: m.assigned_at,
        unassigned_by: m.unassigned_by,
        unassigned_at: m.unassigned_at,
    })
}

pub fn assignment_model(a: &Assignment) -> assignment::Model {
    assignment::Model {
        id: a.id.clone(),
        workspace_id: a.workspace_id.clone(),
        agent_id: a.agent_id.clone(),
        kind: a.kind.as_str().to_owned(),
        project_id: a.project_id.clone(),
        task_id: a.task_id.clone(),
        role: a.role.as_str().to_owned(),
        assigned_by: a.assigned_by.clone(),
        assigned_at: a.assigned_at,
        unassigned_by: a.unassigned_by.clone(),
        unassigned_at: a.unassigned_at,
    }
}

pub fn delegation(m: delegation::Model) -> StoreResult<Delegation> {
    Ok(Delegation {
        status: parsed(DelegationStatus::parse(&m.status))?,
        id: m.id,
        workspace_id: m.workspace_id,
        task_id: m.task_id,
        from_agent_id: m.from_agent_id,
        to_agent_id: m.to_agent_id,
        reason: m.reason,
        requested_at: m.requested_at,
        expires_at: m.expires_at,
        resolved_at: m.resolved_at,
        resolved_by: m.resolved_by,
        resolution_note: m.resolution_note,
    })
}

pub fn delegation_model(d: &Delegation) -> delegation::Model {
    delegation::Model {
        id: d.id.clone(),
        workspace_id: d.workspace_id.clone(),
        task_id: d.task_id.clone(),
        from_agent_id: d.from_agent_id.clone(),
        to_agent_id: d.to_agent_id.clone(),
        reason: d.reason.clone(),
        status: d.status.as_str().to_owned(),
        requested_at: d.requested_at,
        expires_at: d.expires_at,
        resolved_at: d.resolved_at,
        resolved_by: d.resolved_by.clone(),
        resolution_note: d.resolution_note.clone(),
    }
}

pub fn activity(m: activity::Model) -> StoreResult<ActivityEntry> {
    Ok(ActivityEntry {
        actor_kind: parsed(ActorKind::parse(&m.actor_kind))?,
        metadata: from_json("activity metadata", &m.metadata)?,
        id: m.id,
        workspace_id: m.workspace_id,
        actor_id: m.actor_id,
        agent_id: m.agent_id,
        activity_type: m.activity_type,
        outcome: m.outcome,
        description: m.description,
        project_id: m.project_id,
        task_id: m.task_id,
        page_id: m.page_id,
        created_at: m.created_at,
    })
}

pub fn activity_model(e: &ActivityEntry) -> StoreResult<activity::Model> {
    Ok(activity::Model {
        id: e.id.clone(),
        workspace_id: e.workspace_id.clone(),
        actor_kind: e.actor_kind.as_str().to_owned(),
        actor_id: e.actor_id.clone(),
        agent_id: e.agent_id.clone(),
        activity_type: e.activity_type.clone(),
        outcome: e.outcome.clone(),
        description: e.description.clone(),
        metadata: to_json(&e.metadata)?,
        project_id: e.project_id.clone(),
        task_id: e.task_id.clone(),
        page_id: e.page_id.clone(),
        created_at: e.created_at,
        seq: None,
        hash: None,
    })
}

pub fn event(m: event::Model) -> StoreResult<Event> {
    Ok(Event {
        event_type: parsed(EventType::parse(&m.event_type))?,
        data: from_json("event payload", &m.payload)?,
        id: m.id,
        workspace_id: m.workspace_id,
        seq: m.seq,
        agent_id: m.agent_id,
        created_at: m.created_at,
    })
}

pub fn event_model(e: &Event) -> StoreResult<event::Model> {
    Ok(event::Model {
        id: e.id.clone(),
        workspace_id: e.workspace_id.clone(),
        event_type: e.event_type.as_str().to_owned(),
        agent_id: e.agent_id.clone(),
        payload: to_json(&e.data)?,
        created_at: e.created_at,
        seq: e.seq,
    })
}
