//! Streamable HTTP at `/mcp` (MCP 2025-11-25 sessions and 2026-07-28 stateless, one endpoint),
//! behind bearer authentication.

use super::gate::Gate;
use super::server::{Credential, HttpAuth, ParallaxServer};
use super::sessions;
use crate::auth;
use crate::http::HttpContext;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use std::sync::Arc;

#[derive(Clone)]
struct McpState {
    gate: Gate,
    ctx: HttpContext,
}

/// `/mcp`: rmcp's streamable HTTP service behind bearer authentication.
pub fn router(ctx: &HttpContext) -> Router {
    let opts = &ctx.opts;
    let state = McpState {
        gate: Gate::new(ctx.service.clone()),
        ctx: ctx.clone(),
    };
    // The server-wide limits layer checks Host and Origin first; rmcp checks again. `*` (any
    // Host) is spelled as an empty list for rmcp.
    let hosts = if opts.allowed_hosts.iter().any(|h| h.trim() == "*") {
        Vec::new()
    } else {
        opts.allowed_hosts.clone()
    };
    let mut mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(opts.allowed_origins.clone())
        .with_max_request_body_bytes(opts.max_body_bytes)
        .with_cancellation_token(ctx.closing.clone());
    if opts.allowed_origins.is_empty() {
        // Agents are not browsers: with no origin configured, any request carrying one is refused.
        mcp_config = mcp_config.enforce_origin_validation();
    }
    let gate = state.gate.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(ParallaxServer::new(gate.clone(), Credential::PerRequest)),
        ctx.sessions.clone(),
        mcp_config,
    );
    let binder = sessions::Binder {
        sessions: ctx.sessions.clone(),
        gate: state.gate.clone(),
    };
    Router::new()
        .nest_service("/mcp", mcp)
        // Layers run bottom-up: authenticate first, then check the session belongs to the caller.
        .layer(middleware::from_fn_with_state(binder, sessions::bind))
        .layer(middleware::from_fn_with_state(state, authenticate))
}

/// Bearer authentication for `/mcp`. The outcome rides in the request's extensions to the gate;
/// a missing or refused credential is a 401 with the RFC 9728 metadata pointer.
async fn authenticate(State(state): State<McpState>, mut req: Request, next: Next) -> Response {
    let _guard = state.ctx.inflight.enter();
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .map(str::to_owned);
    let Some(token) = bearer else {
        return unauthorized(&state, "missing bearer credential", None);
    };
    match auth::agent(state.gate.service().store(), &token).await {
        Ok(Ok(caller)) => {
            req.extensions_mut().insert(HttpAuth(Arc::new(Ok(caller))));
            next.run(req).await
        }
        Ok(Err(refusal)) => {
            state.gate.audit_refusal(&refusal, "http request").await;
            unauthorized(&state, &refusal.error.to_string(), Some("invalid_token"))
        }
        Err(e) => {
            tracing::error!(error = %e, "authentication failed on the store");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "unavailable", "message": "the workspace store is unavailable" })))
                .into_response()
        }
    }
}

fn unauthorized(state: &McpState, message: &str, error: Option<&str>) -> Response {
    let mut challenge = format!(
        "Bearer resource_metadata=\"{}\"",
        state.ctx.urls.resource_metadata
    );
    if let Some(code) = error {
        challenge.push_str(&format!(
            ", error=\"{code}\", error_description=\"{}\"",
            message.replace('"', "'")
        ));
    }
    let mut res = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": "unauthorized", "message": message })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}
