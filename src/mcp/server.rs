//! The rmcp handler: `list_tools` and `call_tool` written by hand so that both go through the
//! [`Gate`]. Nothing else in the handler exposes workspace data.

use super::catalogue::ToolSpec;
use super::gate::{CallOutcome, Gate, GateError};
use super::resources::{self, ASSIGNMENTS_URI};
use crate::auth::{self, AgentAuthRefusal, AgentCaller};
use crate::events::Feed;
use crate::service::ServiceError;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, ResourceContents, ResourceUpdatedNotificationParam,
    ServerCapabilities, ServerConfig, SubscribeRequestParams, SubscriptionFilter, Tool,
    ToolAnnotations, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Where the caller's credential comes from.
#[derive(Clone)]
pub enum Credential {
    /// stdio: the key from `PARALLAX_API_KEY`, re-checked on every request so a revocation applies
    /// to the very next call.
    Key(Arc<str>),
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
        match self.gate.resource(auth, action, uri).await {
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
            Credential::Key(key) => {
                let outcome = auth::agent(self.gate.service().store(), key)
                    .await
                    .map_err(store_error)?;
                // Over HTTP the middleware counts requests; on stdio it is done here.
                if let Ok(caller) = &outcome
                    && let Err(wait) = self.gate.limiter().check(caller)
                {
                    let secs = crate::http::ratelimit::retry_after_secs(wait);
                    return Err(ErrorData::new(
                        RATE_LIMITED,
                        format!("rate limit exceeded: retry after {secs} s"),
                        Some(serde_json::json!({ "retry_after_secs": secs })),
                    ));
                }
                Ok(outcome)
            }
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

fn store_error(e: ServiceError) -> ErrorData {
    tracing::error!(error = %e, "authentication failed on the store");
    ErrorData::internal_error(
        "the workspace store is unavailable; try again shortly",
        None,
    )
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
        match self.authenticate(&ctx).await? {
            Ok(caller) => Ok(ListToolsResult::with_all_items(
                self.gate.visible_tools(&caller).map(to_tool).collect(),
            )),
            Err(refusal) => {
                self.gate.audit_refusal(&refusal, "tools/list").await;
                Err(ErrorData::invalid_request(
                    format!("unauthorized: {}", refusal.error),
                    None,
                ))
            }
        }
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
        let value = super::tools::my_assignments(self.gate.service(), &caller, Default::default())
            .await
            .map_err(|e| match e {
                ServiceError::Store(_) => store_error(e),
                other => ErrorData::invalid_request(other.to_string(), None),
            })?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(value.to_string(), request.uri)
                .with_mime_type("application/json"),
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
            resources::watch(&feed, ws, agent, &stop, || {
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
        let watching = resources::watch(
            &feed,
            caller.workspace_id(),
            caller.agent_id(),
            &stop,
            || {
                let uri = uri.clone();
                let sink = subscription.sink();
                async move { sink.notify_resource_updated(uri).await.is_ok() }
            },
        );
        tokio::select! {
            _ = watching => {}
            _ = subscription.cancelled() => {}
        }
        Ok(())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let _in_flight = self.drain.as_ref().map(|d| d.inflight.enter());
        let auth = self.authenticate(&ctx).await?;
        let call = self.gate.call(auth, &request.name, request.arguments);
        let outcome = match &self.drain {
            Some(d) => tokio::select! {
                outcome = call => outcome,
                () = d.cut.cancelled() => {
                    return Err(ErrorData::internal_error(SHUTTING_DOWN, None));
                }
            },
            None => call.await,
        };
        match outcome {
            Ok(CallOutcome::Ok(value)) => Ok(CallToolResult::structured(value).into()),
            Ok(CallOutcome::Refused(message)) => {
                Ok(CallToolResult::error(vec![ContentBlock::text(message)]).into())
            }
            Err(e) => Err(gate_error(e)),
        }
    }
}

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
