//! The one gate every tool call passes, on every transport: authenticate, authorize against the
//! catalogue, audit the decision, and only then run the tool body.

use super::catalogue::{self, ToolSpec};
use super::tools::{self, ToolOutput};
use crate::auth::{AgentAuthRefusal, AgentCaller, Unconfirmed};
use crate::domain::{ActivityEntry, Actor, Delegation, DelegationStatus};
use crate::http::ratelimit::AgentLimiter;
use crate::service::{Activity, AuditWriter, CheckedChange, Service, ServiceError};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tracing::Instrument;

/// A call the gate let through: the tool's structured result, or a refusal the model can act on
/// (returned as a tool result with `isError`).
#[derive(Debug)]
pub enum CallOutcome {
    Ok(ToolOutput),
    Refused(String),
    /// The call waits for a human: answered as an MCP task (only for a client that declared the
    /// tasks extension). The delegation row is the task.
    Task(Box<Delegation>),
}

/// The `tasks/*` requests; each passes [`Gate::task`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAction {
    Get,
    Update,
    Cancel,
}

impl TaskAction {
    pub fn method(self) -> &'static str {
        match self {
            TaskAction::Get => "tasks/get",
            TaskAction::Update => "tasks/update",
            TaskAction::Cancel => "tasks/cancel",
        }
    }
}

/// A call the gate rejects at the protocol level (JSON-RPC errors).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("unauthorized: {0}")]
    Unauthenticated(String),
    #[error("unknown tool: {0}")]
    UnknownTool(String),
    #[error("invalid arguments for {tool}: {message}")]
    InvalidParams { tool: String, message: String },
    #[error("{0}")]
    Internal(String),
}

/// Arguments are stored in the audit trail up to this size, so one call cannot bloat it.
const MAX_AUDITED_ARGS: usize = 4096;

#[derive(Clone, Debug)]
pub struct Gate {
    service: Service,
    limiter: AgentLimiter,
}

impl Gate {
    pub fn new(service: Service) -> Self {
        Self {
            service,
            limiter: AgentLimiter::new(),
        }
    }

    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The service's group committer, which every decision entry goes through.
    fn audit(&self) -> &AuditWriter {
        self.service.writer()
    }

    /// Waits until every audit entry submitted so far is committed (at shutdown).
    pub async fn flush_audit(&self) {
        self.audit().flush().await;
    }

    /// Per-agent request limits, shared by every session this gate serves.
    pub fn limiter(&self) -> &AgentLimiter {
        &self.limiter
    }

    /// Records a call refused because the access token's scope lacks a permission the agent is
    /// granted (the transport answers 403 `insufficient_scope`).
    pub async fn audit_insufficient_scope(&self, caller: &AgentCaller, tool: &str, needed: &str) {
        let entry = self.entry(
            caller,
            tool,
            &Value::Null,
            "denied",
            &format!("token scope lacks {needed}"),
        );
        if let Err(e) = self.audit().record(entry).await {
            tracing::error!(error = %e, "could not audit an insufficient-scope refusal");
        }
    }

    /// The tools this caller may call; `tools/list` shows no others.
    pub fn visible_tools<'a>(
        &self,
        caller: &'a AgentCaller,
    ) -> impl Iterator<Item = &'static ToolSpec> + 'a {
        catalogue::CATALOGUE
            .iter()
            .filter(move |t| t.requirement.is_met_by(caller))
    }

    /// Records a refused authentication where the key identified its owner (a revoked or expired
    /// key, a pending agent); a key that matches nothing has no workspace to record it in. Every
    /// refused agent credential passes here, so it is also where refusals are counted.
    pub async fn audit_refusal(&self, refusal: &AgentAuthRefusal, what: &str) {
        crate::telemetry::metrics::auth_refused(refusal.error.reason());
        match &refusal.owner {
            Some((ws, agent)) => {
                let entry = Activity::new(ws, &Actor::Agent(agent.clone()), "auth.refused")
                    .outcome("denied")
                    .description(&format!("{what}: {}", refusal.error))
                    .build();
                if let Err(e) = self.audit().record(entry).await {
                    tracing::error!(error = %e, "could not audit a refused authentication");
                }
            }
            None => tracing::warn!(reason = %refusal.error, "refused an unknown credential"),
        }
    }

    /// Records a request refused at the transport for an authenticated agent (e.g. another
    /// agent's session id).
    pub async fn audit_denied(&self, caller: &AgentCaller, activity_type: &str, reason: &str) {
        let entry = Activity::new(caller.workspace_id(), &caller.actor(), activity_type)
            .outcome("denied")
            .description(reason)
            .metadata(json!({ "credential": caller.credential_id() }))
            .build();
        if let Err(e) = self.audit().record(entry).await {
            tracing::error!(error = %e, "could not audit a refused request");
        }
    }

    /// Runs one tool call through the gate. With `tasks` (the client declared the MCP tasks
    /// extension), a delegation that waits for a human is answered as a task.
    pub async fn call(
        &self,
        auth: Result<AgentCaller, AgentAuthRefusal>,
        name: &str,
        args: Option<Map<String, Value>>,
        tasks: bool,
    ) -> Result<CallOutcome, GateError> {
        let caller = self
            .authenticated(auth, || format!("call to {name}"))
            .await?;
        // The caller's workspace and agent on the call's span (ids, never credentials).
        let span = tracing::Span::current();
        span.record("workspace", caller.workspace_id());
        span.record("agent", caller.agent_id());
        let args = Value::Object(args.unwrap_or_default());
        let entry = |outcome: &str, reason: &str| self.entry(&caller, name, &args, outcome, reason);

        let Some(spec) = catalogue::find(name) else {
            self.record(entry("denied", "unknown tool")).await?;
            return Err(GateError::UnknownTool(name.to_owned()));
        };
        if !spec.requirement.is_met_by(&caller) {
            let reason = format!("{name} needs {}", spec.requirement.describe());
            self.record(entry("denied", &reason)).await?;
            return Ok(CallOutcome::Refused(format!("permission denied: {reason}")));
        }

        let allowed = entry("allowed", "");
        let service =
            crate::telemetry::traces::span(|| tracing::info_span!("service", tool = spec.name));
        let dispatched = self
            .dispatch(spec, &caller, &args, &allowed)
            .instrument(service)
            .await;
        let result = match dispatched {
            Ok(result) => result,
            Err(GateError::InvalidParams { tool, message }) => {
                self.record(entry("denied", &format!("invalid arguments: {message}")))
                    .await?;
                return Err(GateError::InvalidParams { tool, message });
            }
            Err(other) => return Err(other),
        };
        match result {
            Ok(value) if tasks && spec.name == catalogue::DELEGATE_TASK => {
                Box::pin(self.as_task(&caller, value)).await
            }
            result => self.finish(&caller, name, &args, result).await,
        }
    }

    /// A call decided on an unconfirmed caller (see [`Unconfirmed`]): the read tool, or a note
    /// that is only entries (`catalogue::decided_unconfirmed`), allowed when the catalogue
    /// allows it on the snapshot, and answered only once its entries have committed with the
    /// check that the generations it was decided on are still current. `None` when this path
    /// does not decide it (another tool, arguments the tool refuses, a requirement not met, a
    /// note that changes more than the trail, or generations that moved before the commit):
    /// nothing was written, and the call goes to [`Gate::call`] with a confirmed caller.
    pub async fn call_unconfirmed(
        &self,
        unconfirmed: &Unconfirmed,
        name: &str,
        args: Option<&Map<String, Value>>,
    ) -> Option<Result<CallOutcome, GateError>> {
        if !catalogue::decided_unconfirmed(name) {
            return None;
        }
        let spec = catalogue::find(name)?;
        let caller = unconfirmed.caller();
        if !spec.requirement.is_met_by(caller) {
            return None;
        }
        let span = tracing::Span::current();
        span.record("workspace", caller.workspace_id());
        span.record("agent", caller.agent_id());
        let args = Value::Object(args.cloned().unwrap_or_default());
        let allowed = self.entry(caller, name, &args, "allowed", "");
        let service =
            crate::telemetry::traces::span(|| tracing::info_span!("service", tool = spec.name));
        let checked = if name == catalogue::MY_ASSIGNMENTS {
            let input = parse(name, &args).ok()?;
            let (audited, result) = tokio::join!(
                self.audit().record_checked(allowed, unconfirmed.seen()),
                tools::my_assignments(&self.service, caller, input).instrument(service)
            );
            match audited {
                Ok(true) => CheckedChange::Committed(result),
                Ok(false) => CheckedChange::Stale,
                Err(e) => {
                    return Some(Err(GateError::Internal(format!(
                        "audit log unavailable: {e}"
                    ))));
                }
            }
        } else {
            let input = parse(name, &args).ok()?;
            let checked = Box::pin(tools::log_activity_checked(
                &self.service,
                unconfirmed,
                &allowed,
                input,
            ))
            .instrument(service)
            .await;
            match checked {
                Ok(checked) => checked.map(Ok),
                // Nothing committed (the batch failed, or the store could not be read): audited
                // and answered as the confirmed path answers a store that failed.
                Err(e) => return Some(self.finish(caller, name, &args, Err(e)).await),
            }
        };
        match checked {
            CheckedChange::Committed(result) => {
                crate::telemetry::metrics::unconfirmed_decision(true);
                Some(self.finish(caller, name, &args, result).await)
            }
            CheckedChange::Stale => {
                crate::telemetry::metrics::unconfirmed_decision(false);
                None
            }
            CheckedChange::NeedsCaller => None,
        }
    }

    /// A tool body's result as the call's outcome; a failure is audited here, since the
    /// tool's own transaction rolled back.
    async fn finish(
        &self,
        caller: &AgentCaller,
        name: &str,
        args: &Value,
        result: Result<ToolOutput, ServiceError>,
    ) -> Result<CallOutcome, GateError> {
        let entry = |outcome: &str, reason: &str| self.entry(caller, name, args, outcome, reason);
        match result {
            Ok(value) => Ok(CallOutcome::Ok(value)),
            Err(ServiceError::Store(e)) => {
                tracing::error!(tool = name, error = %e, "tool failed on the store");
                let _ = self
                    .audit()
                    .record(entry("error", "store unavailable"))
                    .await;
                Err(GateError::Internal(
                    "the workspace store is unavailable; try again shortly".into(),
                ))
            }
            Err(refusal) => {
                let message = refusal.to_string();
                self.record(entry("denied", &message)).await?;
                Ok(CallOutcome::Refused(message))
            }
        }
    }

    /// Authorizes a resource request (`resources/read`, `resources/subscribe`,
    /// `subscriptions/listen`) with a tool call's discipline: authenticated, the catalogue
    /// requirement of the tool that shows the same data, and audited either way. `Ok(Err(_))` is a
    /// refusal the caller may see.
    pub async fn resource(
        &self,
        auth: Result<AgentCaller, AgentAuthRefusal>,
        action: &str,
        uri: &str,
    ) -> Result<Result<AgentCaller, String>, GateError> {
        let caller = self
            .authenticated(auth, || format!("{action} {uri}"))
            .await?;
        let subject = format!("{action} {uri}");
        let entry = |outcome: &str, reason: &str| {
            decision(&caller, "resource.access", &subject, outcome, reason)
                .metadata(
                    json!({ "action": action, "uri": uri, "credential": caller.credential_id() }),
                )
                .build()
        };
        let Some(tool) = super::resources::tool_for(uri) else {
            self.record(entry("denied", "unknown resource")).await?;
            return Ok(Err(format!("unknown resource {uri}")));
        };
        let spec = catalogue::find(tool)
            .ok_or_else(|| GateError::Internal(format!("{tool} missing from the catalogue")))?;
        if !spec.requirement.is_met_by(&caller) {
            let reason = format!("{uri} needs {}", spec.requirement.describe());
            self.record(entry("denied", &reason)).await?;
            return Ok(Err(format!("permission denied: {reason}")));
        }
        self.record(entry("allowed", "")).await?;
        Ok(Ok(caller))
    }

    /// A delegation that waits for a human becomes a task; one already decided (approval not
    /// required) is answered as today.
    async fn as_task(
        &self,
        caller: &AgentCaller,
        value: ToolOutput,
    ) -> Result<CallOutcome, GateError> {
        let structured = value.structured();
        let Some(id) = structured
            .get("delegationId")
            .and_then(Value::as_str)
            .filter(|_| structured.get("awaitingApproval") == Some(&Value::Bool(true)))
        else {
            return Ok(CallOutcome::Ok(value));
        };
        match self.service.agent_delegation(caller, id).await {
            Ok(d) if d.status == DelegationStatus::Pending => Ok(CallOutcome::Task(Box::new(d))),
            Ok(_) => Ok(CallOutcome::Ok(value)),
            Err(e) => Err(GateError::Internal(format!(
                "reading the delegation back: {e}"
            ))),
        }
    }

    /// Authorizes a `tasks/*` request with a tool call's discipline: authenticated, the
    /// requirement of the tool that creates tasks, the task the caller's own (another agent's is
    /// not found), and audited either way. `Ok(Err(_))` is a refusal the caller may see.
    pub async fn task(
        &self,
        auth: Result<AgentCaller, AgentAuthRefusal>,
        action: TaskAction,
        task_id: &str,
    ) -> Result<Result<Delegation, String>, GateError> {
        let method = action.method();
        let caller = self
            .authenticated(auth, || format!("{method} {task_id}"))
            .await?;
        let subject = format!("{method} {task_id}");
        let entry = |outcome: &str, reason: &str| {
            decision(&caller, "mcp.task", &subject, outcome, reason)
                .metadata(json!({ "method": method, "taskId": task_id, "credential": caller.credential_id() }))
                .build()
        };
        let spec = catalogue::find(catalogue::DELEGATE_TASK).ok_or_else(|| {
            GateError::Internal("the delegation tool is missing from the catalogue".into())
        })?;
        if !spec.requirement.is_met_by(&caller) {
            let reason = format!("{method} needs {}", spec.requirement.describe());
            self.record(entry("denied", &reason)).await?;
            return Ok(Err(format!("permission denied: {reason}")));
        }
        let result = match action {
            TaskAction::Get => {
                let found = self.service.agent_delegation(&caller, task_id).await;
                if found.is_ok() {
                    self.record(entry("allowed", "")).await?;
                }
                found
            }
            TaskAction::Update => Err(ServiceError::Invalid(
                "delegation tasks take no input".into(),
            )),
            TaskAction::Cancel => {
                self.service
                    .cancel_delegation(&caller, Some(&entry("allowed", "")), task_id)
                    .await
            }
        };
        match result {
            Ok(d) => Ok(Ok(d)),
            Err(ServiceError::Store(e)) => {
                tracing::error!(method, error = %e, "task request failed on the store");
                let _ = self
                    .audit()
                    .record(entry("error", "store unavailable"))
                    .await;
                Err(GateError::Internal(
                    "the workspace store is unavailable; try again shortly".into(),
                ))
            }
            Err(refusal) => {
                let message = refusal.to_string();
                self.record(entry("denied", &message)).await?;
                Ok(Err(message))
            }
        }
    }

    /// Parses the arguments into the tool's input type and runs its body.
    async fn dispatch(
        &self,
        spec: &ToolSpec,
        caller: &AgentCaller,
        args: &Value,
        allowed: &ActivityEntry,
    ) -> Result<Result<ToolOutput, ServiceError>, GateError> {
        let svc = &self.service;
        let name = spec.name;
        Ok(match name {
            catalogue::MY_ASSIGNMENTS => {
                self.read(
                    allowed.clone(),
                    tools::my_assignments(svc, caller, parse(name, args)?),
                )
                .await
            }
            // The other bodies are boxed: this future is the size of its largest branch, and
            // every call's future carries it (moved several times by rmcp and Tokio). Their
            // transactions' futures are several kB; `agent_my_assignments` is served from memory.
            catalogue::LIST_WORKSPACE => {
                self.read(
                    allowed.clone(),
                    Box::pin(tools::list_workspace(svc, caller, parse(name, args)?)),
                )
                .await
            }
            catalogue::UPDATE_STATUS => {
                Box::pin(tools::update_status(
                    svc,
                    caller,
                    allowed,
                    parse(name, args)?,
                ))
                .await
            }
            catalogue::LOG_ACTIVITY => {
                Box::pin(tools::log_activity(
                    svc,
                    caller,
                    allowed,
                    parse(name, args)?,
                ))
                .await
            }
            catalogue::DELEGATE_TASK => {
                Box::pin(tools::delegate_task(
                    svc,
                    caller,
                    allowed,
                    parse(name, args)?,
                ))
                .await
            }
            // A catalogue entry without a body is a bug; refuse rather than guess.
            other => Err(ServiceError::Forbidden(format!(
                "{other} has no implementation"
            ))),
        })
    }

    /// A read tool: its audit entry is committed (batched) while the read runs, and both must
    /// succeed before the response goes out.
    async fn read(
        &self,
        allowed: ActivityEntry,
        body: impl Future<Output = Result<ToolOutput, ServiceError>>,
    ) -> Result<ToolOutput, ServiceError> {
        let (audited, result) = tokio::join!(self.audit().record(allowed), body);
        audited?;
        result
    }

    /// The caller, or the refusal audited (`what` names the request) and answered as
    /// unauthenticated: the first step of every request through the gate.
    async fn authenticated(
        &self,
        auth: Result<AgentCaller, AgentAuthRefusal>,
        what: impl FnOnce() -> String,
    ) -> Result<AgentCaller, GateError> {
        match auth {
            Ok(caller) => Ok(caller),
            Err(refusal) => {
                self.audit_refusal(&refusal, &what()).await;
                Err(GateError::Unauthenticated(refusal.error.to_string()))
            }
        }
    }

    async fn record(&self, entry: ActivityEntry) -> Result<(), GateError> {
        self.audit()
            .record(entry)
            .await
            .map_err(|e| GateError::Internal(format!("audit log unavailable: {e}")))
    }

    fn entry(
        &self,
        caller: &AgentCaller,
        tool: &str,
        args: &Value,
        outcome: &str,
        reason: &str,
    ) -> ActivityEntry {
        let mut text = args.to_string();
        if text.len() > MAX_AUDITED_ARGS {
            let mut cut = MAX_AUDITED_ARGS;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        decision(caller, "tool.call", tool, outcome, reason)
            .metadata(
                json!({ "tool": tool, "arguments": text, "credential": caller.credential_id() }),
            )
            .build()
    }
}

/// A gate decision about `subject` ("resources/read parallax://…", "tasks/get ID"): its
/// outcome, and the reason in the description when there is one.
fn decision(
    caller: &AgentCaller,
    activity_type: &str,
    subject: &str,
    outcome: &str,
    reason: &str,
) -> Activity {
    let description = if reason.is_empty() {
        subject.to_owned()
    } else {
        format!("{subject}: {reason}")
    };
    Activity::new(caller.workspace_id(), &caller.actor(), activity_type)
        .outcome(outcome)
        .description(&description)
}

fn parse<T: DeserializeOwned>(tool: &str, args: &Value) -> Result<T, GateError> {
    serde_json::from_value(args.clone()).map_err(|e| GateError::InvalidParams {
        tool: tool.to_owned(),
        message: e.to_string(),
    })
}
