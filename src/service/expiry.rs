//! Grants that expire (DESIGN §3): access until a time, extended by a human; extra permissions
//! that lapse by themselves. The clock is checked at every authentication (see `auth`), so an
//! expired grant is refused on every replica at once; recording the expiry (the
//! `agent.access_expired` event that closes sessions, and its audit entry) happens once, by
//! whichever replica's conditional update wins.

use super::*;

/// The longest grant or extension: ten years, so a typo cannot mean forever without saying so.
const MAX_GRANT_DAYS: i64 = 3650;

/// Refuses an end that has already passed or is absurdly far away; returns it at the precision
/// the store keeps.
pub(crate) fn check_future(until: Option<Timestamp>) -> ServiceResult<Option<Timestamp>> {
    let until = until.map(|t| t.trunc_subsecs(6));
    if let Some(t) = until {
        let at = now();
        if t <= at {
            return Err(ServiceError::Invalid(format!(
                "the end of access ({}) must be in the future",
                t.to_rfc3339()
            )));
        }
        if t - at > chrono::Duration::days(MAX_GRANT_DAYS) {
            return Err(ServiceError::Invalid(format!(
                "access can be granted for at most {MAX_GRANT_DAYS} days"
            )));
        }
    }
    Ok(until)
}

/// " until <time>" for descriptions, or nothing.
pub(crate) fn until_text(until: Option<Timestamp>) -> String {
    until
        .map(|t| {
            format!(
                " until {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
        .unwrap_or_default()
}

impl Service {
    /// Moves the end of an approved agent's access to `until` (`None`: until revoked), whether or
    /// not it has already passed. The next call with its key works again.
    pub async fn extend_access(
        &self,
        caller: &MemberCaller,
        agent_id: &str,
        until: Option<Timestamp>,
    ) -> ServiceResult<Agent> {
        self.require(caller, Role::Admin, "extending agent access")
            .await?;
        let until = check_future(until)?;
        let ws_id = &caller.workspace().id;
        let tx = self.store.write().await?;
        tx.lock_workspace(ws_id).await?;
        let mut agent = tx
            .agent(ws_id, agent_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("agent", agent_id))?;
        if agent.status != AgentStatus::Approved {
            return Err(ServiceError::Conflict(format!(
                "agent {agent_id} is {}; only an approved agent's access can be extended",
                agent.status
            )));
        }
        let old = agent.access_expires_at;
        agent.access_expires_at = until;
        agent.access_expiry_recorded_at = None;
        agent.access_version += 1;
        agent.updated_at = now();
        tx.update_agent(&agent).await?;
        tx.insert_activity(
            &Activity::new(ws_id, &caller.actor(), "agent.access_extended")
                .agent(agent_id)
                .outcome("allowed")
                .description(&match until {
                    Some(_) => format!("access extended{}", until_text(until)),
                    None => "access no longer expires".to_owned(),
                })
                .metadata(json!({ "oldExpiresAt": old, "expiresAt": until }))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(agent)
    }

    /// Grants `perms` (which the agent requested) on top of its grant until `until`; they lapse by
    /// themselves. A permission already temporary gets the new end.
    pub async fn grant_temporary(
        &self,
        caller: &MemberCaller,
        agent_id: &str,
        perms: PermissionSet,
        until: Timestamp,
    ) -> ServiceResult<Agent> {
        self.require(caller, Role::Admin, "changing agent permissions")
            .await?;
        let until = check_future(Some(until))?.unwrap_or(until);
        if perms.is_empty() {
            return Err(ServiceError::Invalid("name at least one permission".into()));
        }
        let ws_id = &caller.workspace().id;
        let tx = self.store.write().await?;
        tx.lock_workspace(ws_id).await?;
        let mut agent = super::access::grantable_agent(&tx, ws_id, agent_id, &perms).await?;
        let at = now();
        // Lapsed entries are dropped here rather than kept forever.
        agent
            .temporary_permissions
            .retain(|t| t.expires_at > at && !perms.contains(t.permission));
        for p in perms.iter() {
            agent.temporary_permissions.push(TemporaryPermission {
                permission: p,
                expires_at: until,
            });
        }
        agent.access_version += 1;
        agent.updated_at = at;
        tx.update_agent(&agent).await?;
        tx.insert_activity(
            &Activity::new(ws_id, &caller.actor(), "agent.permissions_changed")
                .agent(agent_id)
                .outcome("allowed")
                .description(&format!(
                    "temporarily granted {perms}{}",
                    until_text(Some(until))
                ))
                .metadata(json!({ "temporary": perms, "expiresAt": until }))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Ok(agent)
    }

    /// Records every grant that has run out and is not yet recorded: one `agent.access_expired`
    /// event and audit entry each, however many replicas run this at once. Returns the
    /// (workspace, agent) pairs this call recorded. The server runs it every second.
    pub async fn record_expired_access(&self) -> ServiceResult<Vec<(String, String)>> {
        let at = now();
        let due = self.store.read().await?.unrecorded_expiries(at).await?;
        let mut recorded = Vec::new();
        for (ws, agent_id) in due {
            let tx = self.store.write().await?;
            // The conditional claim: true for exactly one transaction per expiry.
            if !tx.claim_expiry(&ws, &agent_id, at).await? {
                continue;
            }
            let Some(agent) = tx.agent(&ws, &agent_id).await? else {
                continue;
            };
            let ends = agent.access_expires_at;
            tx.insert_activity(
                &Activity::new(&ws, &Actor::System, EventType::AccessExpired.as_str())
                    .agent(&agent_id)
                    .outcome("denied")
                    .description(&format!(
                        "access expired{}",
                        ends.map(|t| format!(" at {}", t.to_rfc3339()))
                            .unwrap_or_default()
                    ))
                    .metadata(json!({ "expiresAt": ends }))
                    .build(),
            )
            .await?;
            emit(
                &tx,
                &ws,
                EventType::AccessExpired,
                Some(&agent_id),
                json!({ "agentId": agent_id, "name": agent.name, "expiresAt": ends }),
            )
            .await?;
            tx.commit().await?;
            recorded.push((ws, agent_id));
        }
        Ok(recorded)
    }
}

impl Service {
    /// Records ended grants every `every` until `stop`: the event that closes the agent's sessions
    /// on every replica. Refusal does not wait for this; it is checked at authentication.
    pub fn watch_expiries(
        &self,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        self.every(every, stop, "recording expired grants", |svc| async move {
            svc.record_expired_access().await.map(drop)
        });
    }
}
