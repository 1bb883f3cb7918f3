//! Domain services: every rule of docs/design.md §1–§3, each change in one transaction.
//!
//! Services take an authenticated caller ([`MemberCaller`] or [`AgentCaller`]) that only `auth`
//! can construct, check the caller's role or permission, and write the change, its activity entry
//! and its event (the outbox) in the same transaction. They know nothing of CLI, MCP or HTTP.

mod access;
mod activity;
mod agent_tools;
mod audit;
mod checkpoints;
pub mod console;
mod delegations;
mod error;
mod expiry;
mod inbound;
mod outbox;
mod trail;
mod work;
mod workspaces;

pub use access::{AccessOutcome, AccessRequest, AgentDetails};
pub use agent_tools::{AgentLogEntry, CheckedChange, LoggedActivity, MyAssignments};
pub use audit::AuditWriter;
pub use checkpoints::check_signature;
pub use delegations::DelegationResolution;
pub use error::{ServiceError, ServiceResult};
pub use inbound::{InboundAccessRequest, InboundReply, SignedMessage};
pub use work::{AssignTarget, TaskUpdate};
pub use workspaces::{DEFAULT_SECRET_GRACE_SECS, MAX_SECRET_GRACE_SECS};

use crate::auth::MemberCaller;
use crate::domain::*;
use crate::store::{Store, Tx};
use chrono::{DateTime, SubsecRound, Utc};
use expiry::{check_future, until_text};
use serde_json::{Value, json};
use std::sync::Arc;

/// The entry point for every domain operation; cheap to clone.
#[derive(Clone, Debug)]
pub struct Service {
    store: Store,
    /// The group committer, started on first use (on the runtime that first writes).
    writer: Arc<std::sync::OnceLock<AuditWriter>>,
}

/// The current time at the precision both backends store (microseconds).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl Service {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            writer: Arc::default(),
        }
    }

    /// The writer that group-commits audit entries and writing tools' changes (see `audit`).
    pub fn writer(&self) -> &AuditWriter {
        self.writer
            .get_or_init(|| AuditWriter::spawn(self.store.clone()))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checks the member's role. A refusal is itself audited, in its own transaction, because the
    /// refused change's transaction never commits.
    async fn require(
        &self,
        caller: &MemberCaller,
        needed: Role,
        action: &str,
    ) -> ServiceResult<()> {
        if caller.member().role.allows(needed) {
            return Ok(());
        }
        let reason = format!(
            "{} has role {} but {action} needs {needed}",
            caller.member().email,
            caller.member().role
        );
        let tx = self.store.write().await?;
        tx.insert_activity(
            &Activity::new(&caller.workspace().id, &caller.actor(), "member.denied")
                .outcome("denied")
                .description(&reason)
                .metadata(json!({ "action": action, "neededRole": needed }))
                .build(),
        )
        .await?;
        tx.commit().await?;
        Err(ServiceError::Forbidden(reason))
    }
}

impl Service {
    /// A member asked for another workspace's resources: audited in the member's own workspace,
    /// answered as not found (the other workspace does not exist from the caller's side).
    pub async fn refuse_other_workspace(
        &self,
        caller: &MemberCaller,
        requested: &str,
    ) -> ServiceError {
        let entry = Activity::new(&caller.workspace().id, &caller.actor(), "member.denied")
            .outcome("denied")
            .description(&format!(
                "{} asked for workspace {requested:?}, not their own",
                caller.member().email
            ))
            .metadata(json!({ "action": "cross-workspace request", "workspace": requested }))
            .build();
        let written = async {
            let tx = self.store.write().await?;
            tx.insert_activity(&entry).await?;
            tx.commit().await
        };
        if let Err(e) = written.await {
            return e.into();
        }
        ServiceError::not_found("workspace", requested)
    }
}

/// Builds an activity entry; `build` stamps its id and time.
pub struct Activity {
    entry: ActivityEntry,
}

impl Activity {
    pub(crate) fn new(workspace_id: &str, actor: &Actor, activity_type: &str) -> Self {
        let agent_id = match actor {
            Actor::Agent(id) => Some(id.clone()),
            _ => None,
        };
        Self {
            entry: ActivityEntry {
                id: String::new(),
                workspace_id: workspace_id.to_owned(),
                actor_kind: actor.kind(),
                actor_id: actor.id().to_owned(),
                agent_id,
                activity_type: activity_type.to_owned(),
                outcome: None,
                description: String::new(),
                metadata: json!({}),
                project_id: None,
                task_id: None,
                page_id: None,
                created_at: now(),
            },
        }
    }

    /// The agent the entry is about (when the actor is a member acting on an agent).
    pub(crate) fn agent(mut self, agent_id: &str) -> Self {
        self.entry.agent_id = Some(agent_id.to_owned());
        self
    }

    pub(crate) fn outcome(mut self, outcome: &str) -> Self {
        self.entry.outcome = Some(outcome.to_owned());
        self
    }

    pub(crate) fn description(mut self, text: &str) -> Self {
        self.entry.description = text.to_owned();
        self
    }

    pub(crate) fn metadata(mut self, metadata: Value) -> Self {
        self.entry.metadata = metadata;
        self
    }

    pub(crate) fn project(mut self, id: Option<&str>) -> Self {
        self.entry.project_id = id.map(str::to_owned);
        self
    }

    pub(crate) fn task(mut self, id: Option<&str>) -> Self {
        self.entry.task_id = id.map(str::to_owned);
        self
    }

    pub(crate) fn page(mut self, id: Option<&str>) -> Self {
        self.entry.page_id = id.map(str::to_owned);
        self
    }

    pub(crate) fn build(mut self) -> ActivityEntry {
        self.entry.id = new_id();
        self.entry
    }
}

/// Writes an event to the outbox inside the caller's transaction; it gets its seq, and its webhook
/// delivery when the workspace has a control plane, when that transaction commits.
pub(crate) async fn emit(
    tx: &Tx,
    workspace_id: &str,
    event_type: EventType,
    agent_id: Option<&str>,
    data: Value,
) -> ServiceResult<()> {
    tx.insert_event(&Event {
        id: new_id(),
        workspace_id: workspace_id.to_owned(),
        seq: 0,
        event_type,
        agent_id: agent_id.map(str::to_owned),
        data,
        created_at: now(),
    })
    .await?;
    Ok(())
}

/// Trims a required free-text field and refuses it empty or too long.
pub(crate) fn required_text(field: &str, value: &str, max: usize) -> ServiceResult<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ServiceError::Invalid(format!("{field} must not be empty")));
    }
    bounded_text(field, v, max)
}

pub(crate) fn bounded_text(field: &str, value: &str, max: usize) -> ServiceResult<String> {
    if value.chars().count() > max {
        return Err(ServiceError::Invalid(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(value.to_owned())
}

impl Service {
    /// Runs `job` every `every` until `stop`, on its own task; a failure is logged and the next
    /// tick tries again. Background duties (expiries, checkpoints) that every replica may run.
    pub(crate) fn every<F, Fut>(
        &self,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
        what: &'static str,
        job: F,
    ) where
        F: Fn(Service) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ServiceResult<()>> + Send,
    {
        let svc = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = job(svc.clone()).await {
                    tracing::warn!(error = %e, "{what} failed; retrying");
                }
            }
        });
    }
}
