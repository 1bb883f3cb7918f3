//! Delegation: an agent asks to hand one of its tasks to another agent; a human decides, unless
//! the workspace turned approval off. On approval the assignment moves in one transaction.

use super::work::{AssignTarget, assign_in};
use super::*;
use crate::auth::AgentCaller;

/// How a human resolved a delegation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelegationResolution {
    Approve,
    Deny,
}

fn delegation_event_data(d: &Delegation) -> Value {
    json!({
        "delegationId": d.id,
        "taskId": d.task_id,
        "fromAgentId": d.from_agent_id,
        "toAgentId": d.to_agent_id,
        "reason": d.reason,
        "status": d.status,
        "resolvedBy": d.resolved_by,
        "note": d.resolution_note,
    })
}

impl Service {
    /// Files a delegation of `task_id` from the calling agent to `to_agent`. The caller must be
    /// assigned to the task; the target must be another approved agent of the same workspace.
    pub async fn request_delegation(
        &self,
        caller: &AgentCaller,
        task_id: &str,
        to_agent: &str,
        reason: &str,
    ) -> ServiceResult<Delegation> {
        self.request_delegation_audited(caller, None, task_id, to_agent, reason)
            .await
    }

    /// [`Service::request_delegation`], committing the gate's audit entry with the change.
    pub async fn request_delegation_audited(
        &self,
        caller: &AgentCaller,
        audit: Option<&ActivityEntry>,
        task_id: &str,
        to_agent: &str,
        reason: &str,
    ) -> ServiceResult<Delegation> {
        if !caller.has(Permission::DelegateAgents) {
            return Err(ServiceError::Forbidden(
                "delegating needs the delegate:agents permission".into(),
            ));
        }
        let ws_id = caller.workspace_id();
        let me = caller.agent_id();
        let task_id = RecordId::parse("task", task_id)?;
        let to = AgentId::parse(to_agent)?;
        let reason = required_text("reason", reason, 4000)?;
        if to.as_str() == me {
            return Err(ServiceError::Invalid(
                "cannot delegate a task to yourself".into(),
            ));
        }
        let tx = self.store.write().await?;
        tx.lock_workspace(ws_id).await?;
        let ws = tx
            .workspace_by_id(ws_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("workspace", ws_id))?;
        let task = tx
            .task(ws_id, task_id.as_str())
            .await?
            .ok_or_else(|| ServiceError::not_found("task", task_id.as_str()))?;
        let mine = tx.agent_assignments(ws_id, me, false).await?;
        if !mine
            .iter()
            .any(|a| a.task_id.as_deref() == Some(task.id.as_str()))
        {
            return Err(ServiceError::Forbidden(format!(
                "you are not assigned to task {}",
                task.id
            )));
        }
        let target = tx
            .agent(ws_id, to.as_str())
            .await?
            .ok_or_else(|| ServiceError::not_found("agent", to.as_str()))?;
        if target.status != AgentStatus::Approved {
            return Err(ServiceError::Conflict(format!(
                "agent {to} is {}; delegate only to approved agents",
                target.status
            )));
        }
        expire_due(&tx, ws_id).await?;
        let pending = tx
            .list_delegations(ws_id, Some(DelegationStatus::Pending))
            .await?;
        if let Some(d) = pending
            .iter()
            .find(|d| d.task_id == task.id && d.from_agent_id == me)
        {
            return Err(ServiceError::Conflict(format!(
                "delegation {} of this task is already pending",
                d.id
            )));
        }
        let at = now();
        let mut d = Delegation {
            id: new_id(),
            workspace_id: ws_id.to_owned(),
            task_id: task.id.clone(),
            from_agent_id: me.to_owned(),
            to_agent_id: to.into_string(),
            reason,
            status: DelegationStatus::Pending,
            requested_at: at,
            expires_at: at + chrono::Duration::hours(i64::from(ws.settings.delegation_ttl_hours)),
            resolved_at: None,
            resolved_by: None,
            resolution_note: None,
        };
        tx.insert_delegation(&d).await?;
        if let Some(audit) = audit {
            tx.insert_activity(audit).await?;
        }
        tx.insert_activity(
            &Activity::new(
                ws_id,
                &caller.actor(),
                EventType::DelegationRequested.as_str(),
            )
            .project(Some(&task.project_id))
            .task(Some(&task.id))
            .description(&format!("asked to delegate task to {}", d.to_agent_id))
            .metadata(json!({ "delegationId": d.id, "toAgentId": d.to_agent_id }))
            .build(),
        )
        .await?;
        emit(
            &tx,
            ws_id,
            EventType::DelegationRequested,
            Some(me),
            delegation_event_data(&d),
        )
        .await?;
        if !ws.settings.delegation_requires_approval {
            apply_resolution(
                &tx,
                &ws,
                &mut d,
                &Actor::System,
                DelegationResolution::Approve,
                None,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(d)
    }

    pub async fn list_delegations(
        &self,
        caller: &MemberCaller,
        status: Option<DelegationStatus>,
    ) -> ServiceResult<Vec<Delegation>> {
        self.require(caller, Role::Read, "listing delegations")
            .await?;
        let ws = &caller.workspace().id;
        // Expiring is a write; do it first so the listing never shows an overdue request as pending.
        let tx = self.store.write().await?;
        expire_due(&tx, ws).await?;
        tx.commit().await?;
        Ok(self
            .store
            .read()
            .await?
            .list_delegations(ws, status)
            .await?)
    }

    /// A human approves or denies a pending delegation. Approval moves the task assignment from the
    /// delegating agent to the target, atomically, and logs it for both agents.
    pub async fn resolve_delegation(
        &self,
        caller: &MemberCaller,
        delegation_id: &str,
        resolution: DelegationResolution,
        note: Option<&str>,
    ) -> ServiceResult<Delegation> {
        self.require(caller, Role::Write, "resolving delegations")
            .await?;
        let ws_id = &caller.workspace().id;
        let id = RecordId::parse("delegation", delegation_id)?;
        let note = note
            .map(|n| bounded_text("note", n.trim(), 2000))
            .transpose()?;
        if resolution == DelegationResolution::Deny && note.as_deref().is_none_or(str::is_empty) {
            return Err(ServiceError::Invalid("a denial needs a reason".into()));
        }
        let tx = self.store.write().await?;
        tx.lock_workspace(ws_id).await?;
        let ws = tx
            .workspace_by_id(ws_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("workspace", ws_id))?;
        let expired = expire_due(&tx, ws_id).await?;
        let mut d = tx
            .delegation(ws_id, id.as_str())
            .await?
            .ok_or_else(|| ServiceError::not_found("delegation", id.as_str()))?;
        if d.status != DelegationStatus::Pending {
            // Keep the expiry we just recorded, then refuse.
            if expired > 0 {
                tx.commit().await?;
            }
            return Err(ServiceError::Conflict(format!(
                "delegation {} is {}",
                d.id, d.status
            )));
        }
        apply_resolution(&tx, &ws, &mut d, &caller.actor(), resolution, note).await?;
        tx.commit().await?;
        Ok(d)
    }
}

impl Service {
    /// A delegation as the agent that asked for it sees it (the MCP task of that request), after
    /// recording any expiry due. Another agent's delegation is not found.
    pub async fn agent_delegation(
        &self,
        caller: &AgentCaller,
        delegation_id: &str,
    ) -> ServiceResult<Delegation> {
        let ws_id = caller.workspace_id();
        let id = RecordId::parse("delegation", delegation_id)?;
        let read = || async {
            self.store
                .read()
                .await?
                .delegation(ws_id, id.as_str())
                .await?
                .filter(|d| d.from_agent_id == caller.agent_id())
                .ok_or_else(|| ServiceError::not_found("task", id.as_str()))
        };
        let d = read().await?;
        // Polling is a read; only an overdue request costs a write, to record its expiry.
        if d.status != DelegationStatus::Pending || d.expires_at > now() {
            return Ok(d);
        }
        let tx = self.store.write().await?;
        expire_due(&tx, ws_id).await?;
        tx.commit().await?;
        read().await
    }

    /// The agent that asked for a delegation withdraws it while it is pending; `audit` (the
    /// gate's entry) commits with the change.
    pub async fn cancel_delegation(
        &self,
        caller: &AgentCaller,
        audit: Option<&ActivityEntry>,
        delegation_id: &str,
    ) -> ServiceResult<Delegation> {
        let ws_id = caller.workspace_id();
        let id = RecordId::parse("delegation", delegation_id)?;
        let tx = self.store.write().await?;
        tx.lock_workspace(ws_id).await?;
        let expired = expire_due(&tx, ws_id).await?;
        let mut d = tx
            .delegation(ws_id, id.as_str())
            .await?
            .filter(|d| d.from_agent_id == caller.agent_id())
            .ok_or_else(|| ServiceError::not_found("task", id.as_str()))?;
        if d.status != DelegationStatus::Pending {
            if expired > 0 {
                tx.commit().await?;
            }
            return Err(ServiceError::Conflict(format!(
                "delegation {} is already {}",
                d.id, d.status
            )));
        }
        d.status = DelegationStatus::Cancelled;
        d.resolved_at = Some(now());
        d.resolved_by = Some(caller.actor().label());
        tx.update_delegation(&d).await?;
        if let Some(audit) = audit {
            tx.insert_activity(audit).await?;
        }
        tx.insert_activity(
            &Activity::new(
                ws_id,
                &caller.actor(),
                EventType::DelegationCancelled.as_str(),
            )
            .outcome("allowed")
            .task(Some(&d.task_id))
            .description(&format!("withdrew the delegation to {}", d.to_agent_id))
            .metadata(json!({ "delegationId": d.id, "toAgentId": d.to_agent_id }))
            .build(),
        )
        .await?;
        emit(
            &tx,
            ws_id,
            EventType::DelegationCancelled,
            Some(caller.agent_id()),
            delegation_event_data(&d),
        )
        .await?;
        tx.commit().await?;
        Ok(d)
    }
}

async fn apply_resolution(
    tx: &Tx,
    ws: &Workspace,
    d: &mut Delegation,
    actor: &Actor,
    resolution: DelegationResolution,
    note: Option<String>,
) -> ServiceResult<()> {
    let at = now();
    d.resolved_at = Some(at);
    d.resolved_by = Some(actor.label());
    d.resolution_note = note;
    let task = tx
        .task(&ws.id, &d.task_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("task", &d.task_id))?;
    match resolution {
        DelegationResolution::Deny => {
            d.status = DelegationStatus::Denied;
            tx.update_delegation(d).await?;
            tx.insert_activity(
                &Activity::new(&ws.id, actor, EventType::DelegationDenied.as_str())
                    .agent(&d.from_agent_id)
                    .outcome("denied")
                    .project(Some(&task.project_id))
                    .task(Some(&task.id))
                    .description(d.resolution_note.as_deref().unwrap_or("denied"))
                    .metadata(json!({ "delegationId": d.id, "toAgentId": d.to_agent_id }))
                    .build(),
            )
            .await?;
            emit(
                tx,
                &ws.id,
                EventType::DelegationDenied,
                Some(&d.from_agent_id),
                delegation_event_data(d),
            )
            .await?;
        }
        DelegationResolution::Approve => {
            let from = tx
                .agent_assignments(&ws.id, &d.from_agent_id, false)
                .await?;
            let Some(old) = from
                .into_iter()
                .find(|a| a.task_id.as_deref() == Some(task.id.as_str()))
            else {
                return Err(ServiceError::Conflict(format!(
                    "agent {} is no longer assigned to task {}",
                    d.from_agent_id, task.id
                )));
            };
            tx.end_assignment(&ws.id, &old.id, &actor.label(), at)
                .await?;
            emit(tx, &ws.id, EventType::Unassigned, Some(&d.from_agent_id), json!({ "agentId": d.from_agent_id, "assignmentId": old.id, "projectId": old.project_id, "taskId": old.task_id, "reason": "delegated", "delegationId": d.id })).await?;
            let (new, _) = assign_in(
                tx,
                ws,
                actor,
                &d.to_agent_id,
                &AssignTarget::Task(task.id.clone()),
                old.role,
            )
            .await?;
            d.status = DelegationStatus::Approved;
            tx.update_delegation(d).await?;
            for (agent, text) in [
                (
                    &d.from_agent_id,
                    format!("task handed to {}", d.to_agent_id),
                ),
                (
                    &d.to_agent_id,
                    format!("task received from {}", d.from_agent_id),
                ),
            ] {
                tx.insert_activity(
                    &Activity::new(&ws.id, actor, EventType::DelegationApproved.as_str())
                        .agent(agent)
                        .outcome("allowed")
                        .project(Some(&task.project_id))
                        .task(Some(&task.id))
                        .description(&text)
                        .metadata(json!({ "delegationId": d.id, "assignmentId": new.id }))
                        .build(),
                )
                .await?;
            }
            emit(
                tx,
                &ws.id,
                EventType::DelegationApproved,
                Some(&d.from_agent_id),
                delegation_event_data(d),
            )
            .await?;
        }
    }
    Ok(())
}

/// Marks overdue pending delegations as expired; returns how many.
async fn expire_due(tx: &Tx, ws_id: &str) -> ServiceResult<usize> {
    let at = now();
    let mut n = 0;
    for mut d in tx
        .list_delegations(ws_id, Some(DelegationStatus::Pending))
        .await?
    {
        if d.expires_at <= at {
            d.status = DelegationStatus::Expired;
            d.resolved_at = Some(at);
            d.resolved_by = Some(Actor::System.label());
            tx.update_delegation(&d).await?;
            n += 1;
        }
    }
    Ok(n)
}
