//! Streamable HTTP at `/mcp` (MCP 2025-11-25 sessions and 2026-07-28 stateless, one endpoint),
//! behind bearer authentication, plus `/healthz` and `/readyz`.

use super::ServeError;
use super::gate::Gate;
use super::server::{Credential, HttpAuth, ParallaxServer};
use crate::auth;
use crate::store::Store;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Transport settings for `serve`.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `Host` values accepted (DNS-rebinding protection); loopback by default.
    pub allowed_hosts: Vec<String>,
    /// Browser `Origin`s accepted; none configured means a request carrying an Origin is refused.
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    /// The public URL of `/mcp`, for OAuth protected-resource metadata; derived from the bound
    /// address when unset.
    pub public_url: Option<String>,
    /// How long shutdown waits for in-flight calls before closing sessions.
    pub drain_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            allowed_hosts: vec![
                "localhost".into(),
                "127.0.0.1".into(),
                "::1".into(),
                "[::1]".into(),
            ],
            allowed_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            public_url: None,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
struct AppState {
    gate: Gate,
    resource_metadata_url: Arc<str>,
    resource_url: Arc<str>,
    inflight: InFlight,
}

/// Counts requests being served on `/mcp`, so shutdown can wait for them.
#[derive(Clone, Default)]
struct InFlight(Arc<(AtomicUsize, Notify)>);

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.0.0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    async fn idle(&self) {
        loop {
            let notified = self.0.1.notified();
            if self.0.0.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.0.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.0.1.notify_waiters();
        }
    }
}

/// Serves until `shutdown` resolves, then lets in-flight calls finish (up to the drain timeout)
/// before closing MCP sessions and returning.
pub async fn run(
    store: Store,
    listener: TcpListener,
    opts: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    let base = opts
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}/mcp"));
    let origin = base.trim_end_matches("/mcp").to_owned();
    let state = AppState {
        gate: Gate::new(crate::service::Service::new(store)),
        resource_metadata_url: format!("{origin}/.well-known/oauth-protected-resource/mcp").into(),
        resource_url: base.into(),
        inflight: InFlight::default(),
    };
    let sessions_closed = CancellationToken::new();
    let mut mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(opts.allowed_hosts.clone())
        .with_allowed_origins(opts.allowed_origins.clone())
        .with_max_request_body_bytes(opts.max_body_bytes)
        .with_cancellation_token(sessions_closed.clone());
    if opts.allowed_origins.is_empty() {
        // Agents are not browsers: with no origin configured, any request carrying one is refused.
        mcp_config = mcp_config.enforce_origin_validation();
    }
    let gate = state.gate.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(ParallaxServer::new(gate.clone(), Credential::PerRequest)),
        Arc::new(LocalSessionManager::default()),
        mcp_config,
    );
    let app = Router::new()
        .nest_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(resource_metadata),
        )
        .with_state(state.clone());

    tracing::info!(%addr, "parallax-mcp listening on http://{addr}/mcp");
    let inflight = state.inflight.clone();
    let drain = opts.drain_timeout;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        // Without TCP_NODELAY, small responses wait on Nagle + delayed ACK (~40 ms per call).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight calls");
            if tokio::time::timeout(drain, inflight.idle()).await.is_err() {
                tracing::warn!("in-flight calls still running after {drain:?}; closing anyway");
            }
            sessions_closed.cancel();
        })
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Bearer authentication for `/mcp`. The outcome rides in the request's extensions to the gate;
/// a missing or refused credential is a 401 with the RFC 9728 metadata pointer.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/mcp") {
        return next.run(req).await;
    }
    let _guard = state.inflight.enter();
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

fn unauthorized(state: &AppState, message: &str, error: Option<&str>) -> Response {
    let mut challenge = format!(
        "Bearer resource_metadata=\"{}\"",
        state.resource_metadata_url
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

async fn ready(State(state): State<AppState>) -> Response {
    match state.gate.service().store().ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

/// RFC 9728 protected resource metadata.
async fn resource_metadata(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "resource": &*state.resource_url,
        "bearer_methods_supported": ["header"],
        "resource_name": "parallax-mcp",
    }))
}
