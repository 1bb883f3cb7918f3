//! The rmcp handler: `list_tools` and `call_tool` written by hand so that both go through the
//! [`Gate`]. Nothing else in the handler exposes workspace data.

use super::catalogue::ToolSpec;
use super::gate::{CallOutcome, Gate, GateError};
use crate::auth::{self, AgentAuthRefusal, AgentCaller};
use crate::service::ServiceError;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use std::sync::Arc;

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

/// The outcome of authenticating one HTTP request, carried in its extensions.
#[derive(Clone)]
pub struct HttpAuth(pub Arc<Result<AgentCaller, AgentAuthRefusal>>);

#[derive(Clone, Debug)]
pub struct ParallaxServer {
    gate: Gate,
    credential: Credential,
}

impl ParallaxServer {
    pub fn new(gate: Gate, credential: Credential) -> Self {
        Self { gate, credential }
    }

    async fn authenticate(
        &self,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Result<AgentCaller, AgentAuthRefusal>, ErrorData> {
        match &self.credential {
            Credential::Key(key) => auth::agent(self.gate.service().store(), key)
                .await
                .map_err(store_error),
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
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
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

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let auth = self.authenticate(&ctx).await?;
        match self.gate.call(auth, &request.name, request.arguments).await {
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
