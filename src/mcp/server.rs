//! The rmcp handler: `list_tools` and `call_tool` written by hand so that both go through the
//! [`Gate`]. Nothing else in the handler exposes workspace data.

use super::catalogue::ToolSpec;
use super::gate::{CallOutcome, Gate, GateError, TaskAction};
use super::resources::{self, ASSIGNMENTS_URI};
use crate::auth::{self, AgentAuthRefusal, AgentCaller, Unconfirmed};
use crate::domain::{Delegation, DelegationStatus, Timestamp};
use crate::events::Feed;
use crate::service::ServiceError;
use crate::telemetry::metrics;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    CreateTaskResult, DetailedTask, GetTaskParams, GetTaskResult, Implementation, JsonObject,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, ResourceContents, ResourceUpdatedNotificationParam,
    ServerCapabilities, ServerConfig, SubscribeRequestParams, SubscriptionFilter,
    TASKS_EXTENSION_ID, Task, TaskPayload, TaskStatus, Tool, ToolAnnotations,
    UnsubscribeRequestParams, UpdateTaskParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Where the caller's credential comes from.
#[derive(Clone)]
pub enum Credential {
    /// stdio: the key from `PARALLAX_API_KEY`, parsed and hashed once, and looked up again on
    /// every request so a revocation applies to the very next call.
    Key(Arc<auth::PresentedKey>),
    /// HTTP: the transport's middleware authenticated the bearer on this very request and put
    /// the outcome in the request's extensions.
    PerRequest,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str(match self {
            Credential::Key(_) => "Credential::Key(..)",
            Credential::PerRequest => "Credential::PerRequest",
        })
    }
}

/// JSON-RPC error code for a request over the agent's rate limit (stdio); `data.retry_after_secs`
/// says when to retry.
pub const RATE_LIMITED: rmcp::model::ErrorCode = rmcp::model::ErrorCode(-32029);

/// The outcome of authenticating one HTTP request, carried in its extensions.
#[derive(Clone)]
pub struct HttpAuth(pub Arc<Result<AgentCaller, AgentAuthRefusal>>);

/// In place of [`HttpAuth`], an API key or access token the transport authenticated unconfirmed
/// (`auth::Unconfirmed`) and the credential itself: a plain call of the read tool or a note is
/// decided on it if it can be (`mcp::direct`), and any other request is confirmed before it
/// goes further (`mcp::http::confirm`). Never `Debug`: it holds the credential.
#[derive(Clone)]
pub struct PendingAuth(pub Arc<Pending>);

/// What [`PendingAuth`] carries: the unconfirmed caller, and what authenticating it again
/// takes.
pub struct Pending {
    pub unconfirmed: Unconfirmed,
    pub key: String,
    /// The client's address, which a refusal counts against.
    pub peer: Option<std::net::IpAddr>,
}

/// How an HTTP server's shutdown reaches tool calls: each counts as in flight while it runs,
/// and one still running when the drain limit passes is answered with an error.
#[derive(Clone, Debug)]
pub struct Drain {
    pub inflight: crate::http::InFlight,
    pub cut: CancellationToken,
}

/// JSON-RPC error for a call cut short by shutdown's drain limit.
pub const SHUTTING_DOWN: &str =
    "the server is shutting down and the call did not finish in time; retry it on another replica";

#[derive(Clone, Debug)]
pub struct ParallaxServer {
    gate: Gate,
    /// Shutdown's view of calls (HTTP only).
    drain: Option<Drain>,
    credential: Credential,
    /// Committed events, for resource subscriptions; without it subscribing is refused.
    feed: Option<Feed>,
    /// This session's `resources/subscribe` watchers, by URI.
    subscriptions: Arc<Mutex<HashMap<String, CancellationToken>>>,
}

impl Drop for ParallaxServer {
    fn drop(&mut self) {
        // The last handle of a session ends its watchers.
        if Arc::strong_count(&self.subscriptions) == 1
            && let Ok(subs) = self.subscriptions.lock()
        {
            subs.values().for_each(CancellationToken::cancel);
        }
    }
}

impl ParallaxServer {
    pub fn new(gate: Gate, credential: Credential) -> Self {
        Self {
            gate,
            credential,
            drain: None,
            feed: None,
            subscriptions: Arc::default(),
        }
    }

    /// Counts calls as in flight for shutdown, which may cut them with an error.
    pub fn with_drain(mut self, drain: Drain) -> Self {
        self.drain = Some(drain);
        self
    }

    /// Enables resource subscriptions, fed by `feed`.
    pub fn with_feed(mut self, feed: Feed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Authenticates and authorizes a resource request through the gate.
    async fn resource_caller(
        &self,
        ctx: &RequestContext<RoleServer>,
        action: &str,
        uri: &str,
    ) -> Result<AgentCaller, ErrorData> {
        let auth = self.authenticate(ctx).await?;
        let data = Some(serde_json::json!({ "uri": uri }));
        // Boxed, as in `task_request`.
        match Box::pin(self.gate.resource(auth, action, uri)).await {
            Ok(Ok(caller)) => Ok(caller),
            // -32002 with `data.uri`, as 2025-11-25 recommends and 2026-07-28 requires.
            Ok(Err(refusal)) if resources::tool_for(uri).is_none() => {
                Err(ErrorData::resource_not_found(refusal, data))
            }
            Ok(Err(refusal)) => Err(ErrorData::invalid_params(refusal, data)),
            Err(e) => Err(gate_error(e)),
        }
    }

    async fn authenticate(
        &self,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Result<AgentCaller, AgentAuthRefusal>, ErrorData> {
        match &self.credential {
            Credential::Key(key) => self.authenticate_key(key).await,
            Credential::PerRequest => {
                let found = ctx
                    .extensions
                    .get::<http::request::Parts>()
                    .and_then(|parts| parts.extensions.get::<HttpAuth>())
                    .map(|a| (*a.0).clone());
                found.ok_or_else(|| {
                    ErrorData::invalid_request("unauthorized: no credential on this request", None)
                })
            }
        }
    }
}

impl ParallaxServer {
    /// The caller a `tools/list` lists for; a refused credential is audited and answered with
    /// an error.
    pub(super) async fn lister(
        &self,
        auth: Result<AgentCaller, AgentAuthRefusal>,
    ) -> Result<AgentCaller, ErrorData> {
        match auth {
            Ok(caller) => Ok(caller),
            Err(refusal) => {
                self.gate.audit_refusal(&refusal, "tools/list").await;
                Err(ErrorData::invalid_request(
                    format!("unauthorized: {}", refusal.error),
                    None,
                ))
            }
        }
    }

    /// The gate, for `mcp::direct`'s listing.
    pub(super) fn gate(&self) -> &Gate {
        &self.gate
    }

    /// stdio: checks `key` on this request, inside the call's span, and counts the request
    /// against the agent's rate (over HTTP the middleware does both).
    pub(super) async fn authenticate_key(
        &self,
        key: &auth::PresentedKey,
    ) -> Result<Result<AgentCaller, AgentAuthRefusal>, ErrorData> {
        self.check_key(key, true).await
    }

    /// [`Self::authenticate_key`]; `count` is false for a request already counted against the
    /// agent's rate on its unconfirmed caller ([`Self::key_unconfirmed`]).
    pub(super) async fn check_key(
        &self,
        key: &auth::PresentedKey,
        count: bool,
    ) -> Result<Result<AgentCaller, AgentAuthRefusal>, ErrorData> {
        let span = crate::telemetry::traces::child_span(|| {
            tracing::info_span!(
                "authenticate",
                credential = "api_key",
                outcome = tracing::field::Empty
            )
        });
        let outcome = auth::agent_presented(self.gate.service().store(), key)
            .instrument(span.clone())
            .await
            .map_err(store_error)?;
        span.record(
            "outcome",
            if outcome.is_ok() { "allowed" } else { "denied" },
        );
        if count && let Ok(caller) = &outcome {
            self.count_rate(caller)?;
        }
        Ok(outcome)
    }

    /// stdio: `key` as the store's snapshot holds it, unconfirmed (`auth::agent_unconfirmed`),
    /// with the request counted against the agent's rate: `None` when the snapshot cannot say.
    pub(super) fn key_unconfirmed(
        &self,
        key: &auth::PresentedKey,
    ) -> Option<Result<Unconfirmed, ErrorData>> {
        let unconfirmed = auth::agent_unconfirmed_presented(self.gate.service().store(), key)?;
        Some(self.count_rate(unconfirmed.caller()).map(|()| unconfirmed))
    }

    /// Counts a request against `caller`'s rate: the error that refuses it when over.
    fn count_rate(&self, caller: &AgentCaller) -> Result<(), ErrorData> {
        let Err(wait) = self.gate.limiter().check(caller) else {
            return Ok(());
        };
        metrics::rate_limited("agent");
        let secs = crate::http::ratelimit::retry_after_secs(wait);
        Err(ErrorData::new(
            RATE_LIMITED,
            format!("rate limit exceeded: retry after {secs} s"),
            Some(serde_json::json!({ "retryAfterSecs": secs })),
        ))
    }
}

fn store_error(e: ServiceError) -> ErrorData {
    tracing::error!(error = %e, "authentication failed on the store");
    ErrorData::internal_error(
        "the workspace store is unavailable; try again shortly",
        None,
    )
}

/// `tools/list`'s answer: these tools' definitions.
pub(super) fn tool_listing<'a>(tools: impl Iterator<Item = &'a ToolSpec>) -> ListToolsResult {
    ListToolsResult::with_all_items(tools.map(to_tool).collect())
}

fn to_tool(spec: &ToolSpec) -> Tool {
    Tool::new(spec.name, spec.description, (spec.input_schema)())
        .with_title(spec.title)
        .with_raw_output_schema((spec.output_schema)())
        .with_annotations(
            ToolAnnotations::with_title(spec.title)
                .read_only(spec.read_only)
                .destructive(spec.destructive)
                .idempotent(spec.idempotent)
                .open_world(spec.open_world),
        )
}

impl ServerHandler for ParallaxServer {
    fn get_info(&self) -> ServerConfig {
        let mut caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .build();
        // SEP-2663 tasks: a delegation waiting for a human is a task the agent polls.
        caps.extensions
            .get_or_insert_with(Default::default)
            .insert(TASKS_EXTENSION_ID.to_owned(), JsonObject::new());
        if self.feed.is_none() {
            // No feed (nothing to notify from): do not promise subscriptions.
            if let Some(r) = caps.resources.as_mut() {
                r.subscribe = None;
            }
        }
        ServerConfig::new(caps)
            .with_server_info(Implementation::new("parallax-mcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Parallax workspace tools. Start with agent_my_assignments to find your work, report progress with \
                 agent_update_status and agent_log_activity. You act only as yourself, with the permissions a human granted you.",
            )
    }

    /// Lets rmcp check 2026-07-28 `Mcp-Param-*` headers against the tool's input schema. Any
    /// catalogue tool is described; whether the caller may call it is still the gate's question.
    fn get_tool(&self, name: &str) -> Option<Tool> {
        super::catalogue::find(name).map(to_tool)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = self.lister(self.authenticate(&ctx).await?).await?;
        Ok(tool_listing(self.gate.visible_tools(&caller)))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        match self.authenticate(&ctx).await? {
            Ok(caller) => {
                let visible = self
                    .gate
                    .visible_tools(&caller)
                    .any(|t| Some(t.name) == resources::tool_for(ASSIGNMENTS_URI));
                let items = if visible {
                    vec![resources::assignments_resource()]
                } else {
                    Vec::new()
                };
                Ok(ListResourcesResult::with_all_items(items))
            }
            Err(refusal) => {
                self.gate.audit_refusal(&refusal, "resources/list").await;
                Err(ErrorData::invalid_request(
                    format!("unauthorized: {}", refusal.error),
                    None,
                ))
            }
        }
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let caller = self
            .resource_caller(&ctx, "resources/read", &request.uri)
            .await?;
        let output = super::tools::my_assignments(self.gate.service(), &caller, Default::default())
            .await
            .map_err(|e| match e {
                ServiceError::Store(_) => store_error(e),
                other => ErrorData::invalid_request(other.to_string(), None),
            })?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(output.text(), request.uri).with_mime_type("application/json"),
        ])
        .into())
    }

    #[allow(deprecated)] // resources/subscribe is how 2025-11-25 clients subscribe
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let Some(feed) = self.feed.clone() else {
            return Err(ErrorData::invalid_request(
                "subscriptions are not available on this transport",
                None,
            ));
        };
        // Subscribed before anything else, so an event committed once the client has its answer
        // is never missed.
        let events = feed.subscribe();
        let caller = self
            .resource_caller(&ctx, "resources/subscribe", &request.uri)
            .await?;
        let stop = CancellationToken::new();
        if let Ok(mut subs) = self.subscriptions.lock()
            && let Some(old) = subs.insert(request.uri.clone(), stop.clone())
        {
            old.cancel();
        }
        let peer = ctx.peer.clone();
        let uri = request.uri;
        tokio::spawn(async move {
            let (ws, agent) = (caller.workspace_id(), caller.agent_id());
            resources::watch(events, ws, agent, &stop, || {
                let (peer, uri) = (peer.clone(), uri.clone());
                async move {
                    peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                        .await
                        .is_ok()
                }
            })
            .await;
        });
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if let Ok(mut subs) = self.subscriptions.lock()
            && let Some(stop) = subs.remove(&request.uri)
        {
            stop.cancel();
        }
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        self.feed.as_ref()?;
        let mut accepted = SubscriptionFilter::new();
        accepted.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
            uris.iter()
                .filter(|u| resources::tool_for(u).is_some())
                .cloned()
                .collect()
        });
        Some(accepted)
    }

    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), ErrorData> {
        let Some(feed) = self.feed.clone() else {
            return Ok(());
        };
        // rmcp has already acknowledged the subscription: take the feed's receiver before the
        // caller is authenticated (a store round trip), so an event committed meanwhile is kept.
        let events = feed.subscribe();
        let uris = subscription
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let Some(uri) = uris.into_iter().next() else {
            // Nothing we can notify about: end the stream at once.
            return Ok(());
        };
        let caller = self
            .resource_caller(subscription.request_context(), "subscriptions/listen", &uri)
            .await?;
        let stop = CancellationToken::new();
        // Boxed, like every handler's large state (see `task_request`).
        let watching = Box::pin(resources::watch(
            events,
            caller.workspace_id(),
            caller.agent_id(),
            &stop,
            || {
                let uri = uri.clone();
                let sink = subscription.sink();
                async move { sink.notify_resource_updated(uri).await.is_ok() }
            },
        ));
        tokio::select! {
            _ = watching => {}
            _ = subscription.cancelled() => {}
        }
        Ok(())
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let d = self
            .task_request(&ctx, TaskAction::Get, &request.task_id)
            .await?;
        Ok(GetTaskResult::new(task_of(&d)))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.task_request(&ctx, TaskAction::Update, &request.task_id)
            .await?;
        Ok(())
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.task_request(&ctx, TaskAction::Cancel, &request.task_id)
            .await?;
        Ok(())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // Per request (2026-07-28) or from `initialize` (sessions); rmcp reads both.
        let tasks = ctx
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
        let span = self.call_span(&ctx, tool_label(&request.name));
        let outcome = self
            .call_gate(
                span,
                &request.name,
                request.arguments,
                tasks,
                self.authenticate(&ctx),
            )
            .await;
        outcome.map(call_response)
    }
}

/// A tool's name as metrics and spans label it: the catalogue's, never the caller's string.
pub(super) fn tool_label(name: &str) -> &'static str {
    super::catalogue::find(name).map_or("unknown", |spec| spec.name)
}

impl ParallaxServer {
    /// The gate's span for a tool call (only while traces are exported): a child of the HTTP
    /// request's span, or on stdio of a request span whose parent is `_meta.traceparent`.
    fn call_span(&self, ctx: &RequestContext<RoleServer>, tool: &'static str) -> tracing::Span {
        use crate::telemetry::traces;
        traces::span(|| {
            let http = ctx
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<traces::RequestSpan>())
                .map(|s| s.0.clone());
            let parent = http.unwrap_or_else(|| {
                let meta = |key: &str| ctx.meta.get(key).and_then(|v| v.as_str());
                stdio_request_span(meta("traceparent"), meta("tracestate"))
            });
            gate_span(&parent, tool)
        })
    }

    /// The transport this handler serves, as metrics name it.
    fn transport(&self) -> metrics::Transport {
        match self.credential {
            Credential::Key(_) => metrics::Transport::Stdio,
            Credential::PerRequest => metrics::Transport::Http,
        }
    }

    /// `tools/call` through the gate, in `span`, counted in metrics, and cut short with an error
    /// by shutdown's drain limit. rmcp's `call_tool` and `mcp::direct` both call the gate here.
    /// `auth` is awaited inside the span (on stdio it checks the key).
    pub(super) async fn call_gate(
        &self,
        span: tracing::Span,
        name: &str,
        arguments: Option<JsonObject>,
        tasks: bool,
        auth: impl Future<Output = Result<Result<AgentCaller, AgentAuthRefusal>, ErrorData>>,
    ) -> Result<CallOutcome, ErrorData> {
        let _in_flight = self.drain.as_ref().map(|d| d.inflight.enter());
        let started = std::time::Instant::now();
        // Boxed: rmcp spawns a task per request around this future, and the gate's future is
        // large; spawning it inline copied it (twice) into an over-aligned allocation.
        let outcome = Box::pin(
            async {
                // The store failed, or a rate limit refused the call.
                let auth = auth.await?;
                let call = self.gate.call(auth, name, arguments, tasks);
                let outcome = match &self.drain {
                    Some(d) => tokio::select! {
                        outcome = call => outcome,
                        () = d.cut.cancelled() => {
                            return Err(ErrorData::internal_error(SHUTTING_DOWN, None));
                        }
                    },
                    None => call.await,
                };
                outcome.map_err(gate_error)
            }
            .instrument(span.clone()),
        )
        .await;
        self.counted(&span, name, started, &outcome);
        outcome
    }

    /// [`Self::call_gate`] for a plain call on an unconfirmed caller (`Gate::call_unconfirmed`):
    /// `None`, with nothing written or counted, when that path does not decide it.
    pub(super) async fn call_gate_unconfirmed(
        &self,
        span: tracing::Span,
        name: &str,
        arguments: Option<&JsonObject>,
        unconfirmed: &Unconfirmed,
    ) -> Option<Result<CallOutcome, ErrorData>> {
        let _in_flight = self.drain.as_ref().map(|d| d.inflight.enter());
        let started = std::time::Instant::now();
        let outcome = Box::pin(
            async {
                let call = self.gate.call_unconfirmed(unconfirmed, name, arguments);
                let outcome = match &self.drain {
                    Some(d) => tokio::select! {
                        outcome = call => outcome,
                        () = d.cut.cancelled() => {
                            return Some(Err(ErrorData::internal_error(SHUTTING_DOWN, None)));
                        }
                    },
                    None => call.await,
                };
                Some(outcome?.map_err(gate_error))
            }
            .instrument(span.clone()),
        )
        .await?;
        self.counted(&span, name, started, &outcome);
        Some(outcome)
    }

    /// A call's outcome on its span and in the metrics.
    fn counted(
        &self,
        span: &tracing::Span,
        name: &str,
        started: std::time::Instant,
        outcome: &Result<CallOutcome, ErrorData>,
    ) {
        let counted = match outcome {
            Ok(CallOutcome::Ok(_) | CallOutcome::Task(_)) => metrics::CallOutcome::Allowed,
            Ok(CallOutcome::Refused(_)) => metrics::CallOutcome::Denied,
            Err(e) if e.code == rmcp::model::ErrorCode::INTERNAL_ERROR => {
                metrics::CallOutcome::Error
            }
            Err(_) => metrics::CallOutcome::Denied,
        };
        span.record("outcome", counted.as_str());
        metrics::tool_call(
            tool_label(name),
            self.transport(),
            counted,
            started.elapsed(),
        );
    }
}

/// A stdio tool call's request span, whose parent is the caller's `_meta.traceparent` (only
/// while traces are exported: call it inside `traces::span`).
pub(super) fn stdio_request_span(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> tracing::Span {
    use crate::telemetry::traces;
    let span = tracing::info_span!(
        "mcp.request",
        otel.kind = "server",
        mcp.transport = "stdio",
        mcp.method = "tools/call",
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    traces::adopt(&span, traces::remote_parent(traceparent, tracestate));
    span
}

/// The span of the gate under `parent`.
pub(super) fn gate_span(parent: &tracing::Span, tool: &'static str) -> tracing::Span {
    tracing::info_span!(
        parent: parent,
        "gate",
        mcp.method = "tools/call",
        tool,
        workspace = tracing::field::Empty,
        agent = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

/// What the gate let through, as `tools/call` answers it.
pub(super) fn call_response(outcome: CallOutcome) -> CallToolResponse {
    match outcome {
        CallOutcome::Ok(output) => tool_result(output).into(),
        CallOutcome::Task(d) => CallToolResponse::Task(CreateTaskResult::new(task_of(&d).task)),
        CallOutcome::Refused(message) => {
            CallToolResult::error(vec![ContentBlock::text(message)]).into()
        }
    }
}

impl ParallaxServer {
    /// Runs a `tasks/*` request through the gate.
    async fn task_request(
        &self,
        ctx: &RequestContext<RoleServer>,
        action: TaskAction,
        task_id: &str,
    ) -> Result<Delegation, ErrorData> {
        let auth = self.authenticate(ctx).await?;
        // Boxed: a delegation's transaction makes this future several kB, and rmcp's future for
        // every request is as large as its largest handler's (see `call_tool`).
        match Box::pin(self.gate.task(auth, action, task_id)).await {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(refusal)) => Err(ErrorData::invalid_params(refusal, None)),
            Err(e) => Err(gate_error(e)),
        }
    }
}

fn rfc3339(t: &Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How often a client should poll a delegation task.
const POLL_INTERVAL_MS: u64 = 2000;

/// A delegation as an MCP task: `working` while a human has to decide, `completed` with the
/// tool's answer once approved or denied, `cancelled` when the agent withdrew it, `failed` when it
/// expired undecided. It lives as long as the delegation may wait.
fn task_of(d: &Delegation) -> DetailedTask {
    let updated = d.resolved_at.as_ref().unwrap_or(&d.requested_at);
    let ttl = (d.expires_at - d.requested_at).num_milliseconds().max(0) as u64;
    let by = d.resolved_by.as_deref().unwrap_or("system");
    let (payload, message) = match d.status {
        DelegationStatus::Pending => (
            TaskPayload::Working,
            format!(
                "waiting for a human to approve handing task {} to agent {} (until {})",
                d.task_id,
                d.to_agent_id,
                rfc3339(&d.expires_at)
            ),
        ),
        DelegationStatus::Approved | DelegationStatus::Denied => {
            let result = serde_json::to_value(tool_result(super::tools::delegation_output(d)))
                .map(object)
                .unwrap_or_default();
            let note = d
                .resolution_note
                .as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default();
            (
                TaskPayload::Completed { result },
                format!("{} by {by}{note}", d.status),
            )
        }
        DelegationStatus::Cancelled => (TaskPayload::Cancelled, format!("cancelled by {by}")),
        DelegationStatus::Expired => {
            let message = format!(
                "delegation {} expired at {} before a human decided",
                d.id,
                rfc3339(&d.expires_at)
            );
            let error =
                object(serde_json::json!({ "code": DELEGATION_EXPIRED.0, "message": message }));
            (TaskPayload::Failed { error }, message)
        }
    };
    let mut task = Task::new(
        d.id.clone(),
        TaskStatus::Working,
        rfc3339(&d.requested_at),
        rfc3339(updated),
    )
    .with_ttl_ms(ttl)
    .with_status_message(message);
    if d.status == DelegationStatus::Pending {
        task = task.with_poll_interval_ms(POLL_INTERVAL_MS);
    }
    DetailedTask::new(task, payload)
}

/// A tool's answer as MCP sends it: the structured content with its text copy.
pub(super) fn tool_result(output: super::tools::ToolOutput) -> CallToolResult {
    let (structured, text) = output.into_parts();
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    result
}

fn object(v: serde_json::Value) -> JsonObject {
    match v {
        serde_json::Value::Object(m) => m,
        _ => JsonObject::new(),
    }
}

/// JSON-RPC error code in a failed task: the delegation expired before a human decided.
pub const DELEGATION_EXPIRED: rmcp::model::ErrorCode = rmcp::model::ErrorCode(-32030);

/// The one place gate errors become JSON-RPC errors.
fn gate_error(e: GateError) -> ErrorData {
    match e {
        GateError::Unauthenticated(_) => ErrorData::invalid_request(e.to_string(), None),
        GateError::UnknownTool(_) | GateError::InvalidParams { .. } => {
            ErrorData::invalid_params(e.to_string(), None)
        }
        GateError::Internal(_) => ErrorData::internal_error(e.to_string(), None),
    }
}

/// Every tool's definition as `tools/list` sends it (for the committed `schemas/`).
pub fn tool_definitions() -> Vec<(&'static str, serde_json::Value)> {
    super::catalogue::CATALOGUE
        .iter()
        .map(|spec| {
            (
                spec.name,
                serde_json::to_value(to_tool(spec)).expect("tool definitions serialise"),
            )
        })
        .collect()
}
