//! The agent access lifecycle (docs/design.md §3): request → pending → approved | denied; approved →
//! revoked; permission changes and key rotation. Quotas and auto-approval are enforced here.

use super::*;
use crate::store::Tx;

/// What a requester sends (the control plane's access request fields).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequest {
    pub agent_id: String,
    pub name: String,
    pub description: String,
    pub capabilities: Vec<String>,
    /// Permission names; empty asks for the workspace's default permissions.
    pub permissions: Vec<String>,
    pub endpoint: Option<String>,
    pub metadata: Option<Value>,
    pub justification: Option<String>,
}

/// The result of a request: the agent as it now stands, and a key when it was auto-approved.
#[derive(Debug)]
pub struct AccessOutcome {
    pub agent: Agent,
    /// Present only when the request was approved on the spot; shown once, never stored.
    pub api_key: Option<ApiKey>,
    /// False when an identical pending or approved request already existed (requests are idempotent).
    pub created: bool,
}

/// An agent with its keys (without secrets) and assignment history.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentDetails {
    pub agent: Agent,
    pub credentials: Vec<Credential>,
    pub assignments: Vec<Assignment>,
}

const MAX_CAPABILITIES: usize = 64;

fn parse_capabilities(raw: &[String]) -> ServiceResult<Vec<String>> {
    let mut caps: Vec<String> = Vec::new();
    for c in raw {
        let c = c.trim();
        if c.is_empty() || c.len() > 64 || c.chars().any(|ch| ch.is_whitespace() || ch.is_control())
        {
            return Err(ServiceError::Invalid(format!(
                "invalid capability {c:?}: 1-64 characters, no spaces"
            )));
        }
        if !caps.iter().any(|x| x == c) {
            caps.push(c.to_owned());
        }
    }
    if caps.len() > MAX_CAPABILITIES {
        return Err(ServiceError::Invalid(format!(
            "at most {MAX_CAPABILITIES} capabilities"
        )));
    }
    Ok(caps)
}

fn access_event_data(agent: &Agent) -> Value {
    json!({
        "agentId": agent.id,
        "name": agent.name,
        "status": agent.status,
        "capabilities": agent.capabilities,
        "requestedPermissions": agent.requested_permissions,
        "grantedPermissions": agent.granted_permissions,
        "resolvedBy": agent.resolved_by,
    })
}

impl Service {
    /// A member files an access request on an agent's behalf (any role may: it grants nothing).
    pub async fn request_access(
        &self,
        caller: &MemberCaller,
        req: AccessRequest,
    ) -> ServiceResult<AccessOutcome> {
        self.require(caller, Role::Read, "requesting agent access")
            .await?;
        self.request_access_as(&caller.workspace().id, &caller.actor(), req)
            .await
    }

    /// Records an access request from any source (a member, the control plane, the system).
    /// Idempotent per (workspace, agent id): a pending or approved agent is returned unchanged; a
    /// denied or revoked one is reopened as a new pending request.
    pub async fn request_access_as(
        &self,
        workspace_id: &str,
        actor: &Actor,
        req: AccessRequest,
    ) -> ServiceResult<AccessOutcome> {
        let tx = self.store.write().await?;
        let outcome = request_access_in(&tx, workspace_id, actor, req).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    pub async fn list_agents(
        &self,
        caller: &MemberCaller,
        status: Option<AgentStatus>,
    ) -> ServiceResult<Vec<Agent>> {
        self.require(caller, Role::Read, "listing agents").await?;
        Ok(self
            .store
            .read()
            .await?
            .list_agents(&caller.workspace().id, status)
            .await?)
    }

    pub async fn agent_details(
        &self,
        caller: &MemberCaller,
        agent_id: &str,
    ) -> ServiceResult<AgentDetails> {
        self.require(caller, Role::Read, "viewing agents").await?;
        let ws = &caller.workspace().id;
        let tx = self.store.read().await?;
        let agent = tx
            .agent(ws, agent_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("agent", agent_id))?;
        Ok(AgentDetails {
            credentials: tx.list_credentials(ws, agent_id).await?,
            assignments: tx.agent_assignments(ws, agent_id, true).await?,
            agent,
        })
    }

    /// Approves a pending agent with `grant` (a subset of what it requested) or, when `grant` is
    /// none, the workspace's default permissions that it requested. Returns the new key, once.
    pub async fn approve_agent(
        &self,
        caller: &MemberCaller,
        agent_id: &str,
        grant: Option<PermissionSet>,
    ) -> ServiceResult<(Agent, ApiKey)> {
        self.approve_agent_until(caller, agent_id, grant, None)
            .await
    }

    /// [`Service::approve_agent`] with an end: access stops at `until` (on every replica, checked
    /// at authentication) unless a human extends it.
    pub async fn approve_agent_until(
        &self,
        caller: &MemberCaller,
        agent_id: &str,
        grant: Option<PermissionSet>,
        until: Option<Timestamp>,
    ) -> ServiceResult<(Agent, ApiKey)> {
        self.require(caller, Role::Admin, "approving agents")
            .await?;
        let until = check_future(until)?;
        let ws_id = &caller.workspace().id;
        let tx = self.store.write().await?;
        tx.lock_workspace(ws_id).await?;
        let ws = tx
            .workspace_by_id(ws_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("workspace", ws_id))?;
        let mut agent = tx
            .agent(ws_id, agent_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("agent", agent_id))?;
        match agent.status {
            AgentStatus::Pending => {}
            AgentStatus::Approved => {
                return Err(ServiceError::Conflict(format!(
                    "agent {agent_id} is already approved"
                )));
            }
            other => {
                return Err(ServiceError::Conflict(format!(
                    "agent {agent_id} is {other}; it must request access again"
                )));
            }
        }
        let granted = match grant {
            Some(g) => {
                let extra = g.difference(&agent.requested_permissions);
                if !extra.is_empty() {
                    return Err(ServiceError::Invalid(format!(
                        "cannot grant {extra}: agent {agent_id} requested only {}",
                        agent.requested_permissions
                    )));
                }
                g
            }
            None => ws
                .settings
                .default_permissions
                .intersection(&agent.requested_permissions),
        };
        let approved = tx.count_agents(ws_id, &[AgentStatus::Approved]).await?;
        if approved >= u64::from(ws.settings.max_agents) {
            return Err(ServiceError::QuotaExceeded {
                limit: "max_agents",
                max: ws.settings.max_agents,
                detail: format!(" and {approved} agents are approved"),
            });
        }
        let at = now();
        agent.status = AgentStatus::Approved;
        agent.granted_permissions = granted;
        agent.resolved_at = Some(at);
        agent.resolved_by = Some(caller.actor().label());
        agent.denial_reason = None;
        agent.access_expires_at = until;
        agent.access_expiry_recorded_at = None;
        agent.access_version += 1;
        agent.updated_at = at;
        tx.update_agent(&agent).await?;
        let key = issue_key(&tx, &agent, ws.settings.key_ttl_days).await?;
        tx.insert_activity(
            &Activity::new(ws_id, &caller.actor(), EventType::AccessApproved.as_str())
                .agent(agent_id)
                .outcome("allowed")
                .description(&format!(
                    "approved with {}{}",
                    agent.granted_permissions,
                    until_text(until)
                ))
                .metadata(json!({ "expiresAt": until }))
                .build(),
        )
        .await?;
        emit(
            &tx,
            ws_id,
            EventType::AccessApproved,
            Some(agent_id),
            access_event_data(&agent),
        )
        .await?;
        tx.commit().await?;
        Ok((agent, key))
    }

    pub async fn deny_agent(
        &self,
        caller: &MemberCaller,
        agent_id: &str,
        reason: &str,
    ) -> ServiceResult<Agent> {
        self.require(caller, Role::Admin, "denying agents").await?;
        let reason = required_text("reason", reason, 2000)?;
        let ws_id = &caller.workspace().id;
        let tx = self.store.write().await?;
        // Every change to an agent's access takes the workspace lock first, like approval: two
        // decisions on one agent then run one after the other instead of overwriting each other.
        tx.lock_workspace(ws_id).await?;
        let mut agent = tx
            .agent(ws_id, agent_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("agent", agent_id))?;
        if agent.status != AgentStatus::Pending {
            return Err(ServiceError::Conflict(format!(
                "agent {agent_id} is {}; only a pending request can be denied",
                agent.status
            )));
        }
        let at = now();
        agent.status = AgentStatus::Denied;
        agent.denial_reason = Some(reason.clone());
        agent.resolved_at = Some(at);
        agent.resolved_by = Some(caller.actor().label());
        agent.access_version += 1;
        agent.updated_at = at;
        tx.update_agent(&agent).await?;
        tx.insert_activity(
            &Activity::new(ws_id, &caller.actor(), EventType::AccessDenied.as_str())
                .agent(agent_id)
                .outcome("denied")
                .description(&reason)
                .build(),
        )
        .await?;
        let mut data = access_event_data(&agent);
        data["reason"] = json!(reason);
        emit(&tx, ws_id, EventType::AccessDenied, Some(agent_id), data).await?;
        tx.commit().await?;
        Ok(agent)
    }

    /// Revokes an approved agent: its keys die, its assignments end and its pending delegations are
    /// cancelled, all in one transaction. The next call with its key is refused.
    pub async fn revoke_agent(
        &self,
        caller: &MemberCaller,
        agent_id: &str,
        reason: &str,
    ) -> ServiceResult<Agent> {
        self.require(caller, Role::Admin, "revoking agents").await?;
        let reason = required_text("reason", reason, 2000)?;
        let ws_id = &caller.workspace().id;
        let tx = self.store.write().await?;
        tx.lock_workspace(ws_id).await?;
        let mut agent = tx
            .agent(ws_id, agent_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("agent", agent_id))?;
        if agent.status != AgentStatus::Approved {
            return Err(ServiceError::Conflict(format!(
                "agent {agent_id} is {}; only an approved agent can be revoked",
                agent.status
            )));
        }
        let at = now();
        let actor = caller.actor();
        agent.status = AgentStatus::Revoked;
        agent.revocation_reason = Some(reason.clone());
        agent.granted_permissions = PermissionSet::default();
        agent.resolved_at = Some(at);
        agent.resolved_by = Some(actor.label());
        agent.working_status = WorkingStatus::Idle;
        agent.current_task_id = None;
        agent.access_version += 1;
        agent.updated_at = at;
        tx.update_agent(&agent).await?;
        let keys = tx.revoke_credentials(ws_id, agent_id, at).await?;
        for a in tx.agent_assignments(ws_id, agent_id, false).await? {
            tx.end_assignment(ws_id, &a.id, &actor.label(), at).await?;
            emit(&tx, ws_id, EventType::Unassigned, Some(agent_id), json!({ "agentId": agent_id, "assignmentId": a.id, "projectId": a.project_id, "taskId": a.task_id, "reason": "revoked" })).await?;
        }
        for mut d in tx
            .list_delegations(ws_id, Some(DelegationStatus::Pending))
            .await?
        {
            if d.from_agent_id == agent_id || d.to_agent_id == agent_id {
                d.status = DelegationStatus::Cancelled;
                d.resolved_at = Some(at);
                d.resolved_by = Some(actor.label());
                d.resolution_note = Some(format!("agent {agent_id} was revoked"));
                tx.update_delegation(&d).await?;
            }
        }
        tx.insert_activity(
            &Activity::new(ws_id, &actor, EventType::AccessRevoked.as_str())
                .agent(agent_id)
                .outcome("denied")
                .description(&reason)
                .metadata(json!({ "keysRevoked": keys }))
                .build(),
        )
        .await?;
        let mut data = access_event_data(&agent);
        data["reason"] = json!(reason);
        emit(&tx, ws_id, EventType::AccessRevoked, Some(agent_id), data).await?;
        tx.commit().await?;
        Ok(agent)
    }

    /// Replaces an approved agent's permissions with a subset of what it requested.
    pub async fn set_agent_permissions(
        &self,
        caller: &MemberCaller,
        agent_id: &str,
        perms: PermissionSet,
    ) -> ServiceResult<Agent> {
        self.require(caller, Role::Admin, "changing agent permissions")
            .await?;
        let ws_id = &caller.workspace().id;
        let tx = self.store.write().await?;
        tx.lock_workspace(ws_id).await?;
        let mut agent = grantable_agent(&tx, ws_id, agent_id, &perms).await?;
        let old = std::mem::replace(&mut agent.granted_permissions, perms);
        agent.access_version += 1;
        agent.updated_at = now();
        tx.update_agent(&agent).await?;
        tx.insert_activity(
            &Activity::new(ws_id, &caller.actor(), "agent.permissions_changed")
                .agent(agent_id)
                .description(&format!(
                    "permissions {old} -> {}",
                    agent.granted_permissions
                ))
                .metadata(json!({ "old": old, "new": agent.granted_permissions }))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(agent)
    }

    /// Revokes the agent's keys and issues a new one (shown once). `ttl_days` overrides the
    /// workspace's key lifetime for this key.
    pub async fn rotate_agent_key(
        &self,
        caller: &MemberCaller,
        agent_id: &str,
        ttl_days: Option<u32>,
    ) -> ServiceResult<(Credential, ApiKey)> {
        self.require(caller, Role::Admin, "rotating agent keys")
            .await?;
        let ws_id = &caller.workspace().id;
        let tx = self.store.write().await?;
        tx.lock_workspace(ws_id).await?;
        let ws = tx
            .workspace_by_id(ws_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("workspace", ws_id))?;
        let mut agent = tx
            .agent(ws_id, agent_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("agent", agent_id))?;
        if agent.status != AgentStatus::Approved {
            return Err(ServiceError::Conflict(format!(
                "agent {agent_id} is {}; only an approved agent has keys",
                agent.status
            )));
        }
        if ttl_days == Some(0) {
            return Err(ServiceError::Invalid(
                "key lifetime must be at least 1 day".into(),
            ));
        }
        let at = now();
        // Agent row before credentials: the same order as the audit writer's touches, so the two
        // cannot deadlock on PostgreSQL.
        agent.access_version += 1;
        agent.updated_at = at;
        tx.update_agent(&agent).await?;
        let revoked = tx.revoke_credentials(ws_id, agent_id, at).await?;
        let key = issue_key(&tx, &agent, ttl_days.or(ws.settings.key_ttl_days)).await?;
        tx.insert_activity(
            &Activity::new(ws_id, &caller.actor(), "agent.key_rotated")
                .agent(agent_id)
                .description(&format!(
                    "new key {}; {revoked} old key(s) revoked",
                    key.display_prefix()
                ))
                .build(),
        )
        .await?;
        let cred = tx
            .list_credentials(ws_id, agent_id)
            .await?
            .into_iter()
            .find(|c| c.revoked_at.is_none())
            .expect("key just issued");
        tx.commit().await?;
        Ok((cred, key))
    }
}

/// Issues a new key for an agent inside the caller's transaction; only its hash is stored.
/// The approved agent whose grant is about to change to include `perms`: an agent is never granted
/// more than it requested.
pub(super) async fn grantable_agent(
    tx: &Tx,
    ws_id: &str,
    agent_id: &str,
    perms: &PermissionSet,
) -> ServiceResult<Agent> {
    let agent = tx
        .agent(ws_id, agent_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("agent", agent_id))?;
    if agent.status != AgentStatus::Approved {
        return Err(ServiceError::Conflict(format!(
            "agent {agent_id} is {}; permissions apply to approved agents",
            agent.status
        )));
    }
    let extra = perms.difference(&agent.requested_permissions);
    if !extra.is_empty() {
        return Err(ServiceError::Invalid(format!(
            "cannot grant {extra}: agent {agent_id} requested only {}",
            agent.requested_permissions
        )));
    }
    Ok(agent)
}

async fn issue_key(tx: &Tx, agent: &Agent, ttl_days: Option<u32>) -> ServiceResult<ApiKey> {
    let key = ApiKey::generate();
    let at = now();
    let cred = Credential {
        id: new_id(),
        workspace_id: agent.workspace_id.clone(),
        agent_id: agent.id.clone(),
        key_prefix: key.display_prefix(),
        created_at: at,
        last_used_at: None,
        expires_at: ttl_days.map(|d| at + chrono::Duration::days(i64::from(d))),
        revoked_at: None,
    };
    tx.insert_credential(&cred, &key.hash()).await?;
    Ok(key)
}

/// The body of an access request inside the caller's transaction (not committed here), so the
/// inbound webhook can record its replay receipt in the same transaction.
pub(crate) async fn request_access_in(
    tx: &Tx,
    workspace_id: &str,
    actor: &Actor,
    req: AccessRequest,
) -> ServiceResult<AccessOutcome> {
    let agent_id = AgentId::parse(&req.agent_id)?;
    let name = required_text("agent name", &req.name, 200)?;
    let description = bounded_text("description", req.description.trim(), 4000)?;
    let capabilities = parse_capabilities(&req.capabilities)?;
    let justification = req
        .justification
        .as_deref()
        .map(|j| bounded_text("justification", j.trim(), 4000))
        .transpose()?;
    let endpoint = req
        .endpoint
        .as_deref()
        .map(|e| bounded_text("endpoint", e.trim(), 2000))
        .transpose()?;
    let metadata = req.metadata.clone().unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        return Err(ServiceError::Invalid(
            "metadata must be a JSON object".into(),
        ));
    }
    let requested_raw = PermissionSet::parse_all(&req.permissions)?;

    let ws = tx
        .workspace_by_id(workspace_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("workspace", workspace_id))?;
    if !ws.settings.enabled {
        return Err(ServiceError::Forbidden(format!(
            "agents are disabled in workspace {}",
            ws.slug
        )));
    }
    tx.lock_workspace(&ws.id).await?;
    let requested = if requested_raw.is_empty() {
        ws.settings.default_permissions.clone()
    } else {
        requested_raw
    };

    let existing = tx.agent(&ws.id, agent_id.as_str()).await?;
    if let Some(agent) = &existing
        && matches!(agent.status, AgentStatus::Pending | AgentStatus::Approved)
    {
        return Ok(AccessOutcome {
            agent: agent.clone(),
            api_key: None,
            created: false,
        });
    }
    let active = tx
        .count_agents(&ws.id, &[AgentStatus::Pending, AgentStatus::Approved])
        .await?;
    if active >= u64::from(ws.settings.max_agents) {
        return Err(ServiceError::QuotaExceeded {
            limit: "max_agents",
            max: ws.settings.max_agents,
            detail: format!(" and the workspace has {active} pending or approved agents"),
        });
    }
    let at = now();
    let mut agent = Agent {
        id: agent_id.into_string(),
        workspace_id: ws.id.clone(),
        name,
        description,
        capabilities,
        status: AgentStatus::Pending,
        requested_permissions: requested,
        granted_permissions: PermissionSet::default(),
        endpoint,
        metadata,
        justification,
        auto_approved: false,
        requested_at: at,
        resolved_at: None,
        resolved_by: None,
        denial_reason: None,
        revocation_reason: None,
        working_status: WorkingStatus::Idle,
        current_task_id: None,
        status_message: None,
        last_seen_at: None,
        access_version: existing.as_ref().map_or(0, |a| a.access_version + 1),
        updated_at: at,
        access_expires_at: None,
        temporary_permissions: Vec::new(),
        access_expiry_recorded_at: None,
    };
    match existing {
        Some(_) => tx.update_agent(&agent).await?,
        None => tx.insert_agent(&agent).await?,
    }
    tx.insert_activity(
        &Activity::new(&ws.id, actor, EventType::AccessRequested.as_str())
            .agent(&agent.id)
            .description(&format!("{} requested {}", agent.id, agent.requested_permissions))
            .metadata(json!({ "capabilities": agent.capabilities, "permissions": agent.requested_permissions }))
            .build(),
    )
    .await?;
    emit(
        tx,
        &ws.id,
        EventType::AccessRequested,
        Some(&agent.id),
        access_event_data(&agent),
    )
    .await?;

    let mut api_key = None;
    if ws
        .settings
        .auto_approves(&agent.capabilities, &agent.requested_permissions)
    {
        // Auto-approval still respects the approved-agent quota, checked above as active count.
        agent.status = AgentStatus::Approved;
        agent.granted_permissions = agent.requested_permissions.clone();
        agent.auto_approved = true;
        agent.resolved_at = Some(at);
        agent.resolved_by = Some(Actor::System.label());
        agent.access_expires_at = ws
            .settings
            .auto_approve_max_hours
            .map(|h| at + chrono::Duration::hours(i64::from(h)));
        agent.access_version += 1;
        tx.update_agent(&agent).await?;
        api_key = Some(issue_key(tx, &agent, ws.settings.key_ttl_days).await?);
        tx.insert_activity(
            &Activity::new(&ws.id, &Actor::System, EventType::AccessApproved.as_str())
                .agent(&agent.id)
                .outcome("allowed")
                .description(&format!(
                    "auto-approved with {}{}",
                    agent.granted_permissions,
                    until_text(agent.access_expires_at)
                ))
                .build(),
        )
        .await?;
        emit(
            tx,
            &ws.id,
            EventType::AccessApproved,
            Some(&agent.id),
            access_event_data(&agent),
        )
        .await?;
    }
    Ok(AccessOutcome {
        agent,
        api_key,
        created: true,
    })
}
