//! Streamable HTTP at `/mcp` (MCP 2025-11-25 sessions and 2026-07-28 stateless, one endpoint),
//! behind bearer authentication.

use super::catalogue::{self, Requirement};
use super::server::{Credential, HttpAuth, ParallaxServer, Pending, PendingAuth};
use super::sessions;
use crate::auth;
use crate::http::limits::refuse;
use crate::http::{Continue, HttpContext, oauth};
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::sync::Arc;
use tracing::Instrument;

/// API keys are recognised by their prefix; anything else is taken for an access token.
const API_KEY_PREFIX: &str = "mcp_agent_";

/// `/mcp`: rmcp's streamable HTTP service behind bearer authentication.
pub fn router(ctx: &HttpContext) -> Router {
    let opts = &ctx.opts;
    // Shared, not cloned per request: the context holds cancellation tokens, whose clones lock.
    let state = Arc::new(ctx.clone());
    // The server-wide limits layer checks Host and Origin first; rmcp checks again. `*` (any
    // Host) is spelled as an empty list for rmcp.
    let hosts = if opts.allowed_hosts.iter().any(|h| h.trim() == "*") {
        Vec::new()
    } else {
        opts.allowed_hosts.clone()
    };
    // A stateless (2026-07-28) request whose first message is its answer gets it as one JSON
    // body: one write, no SSE framing or priming event. A call that notifies before answering
    // still gets a stream. On sessions (2025-11-25) rmcp streams; a plain tool call there is
    // answered with one JSON body by `mcp::direct`.
    let mut mcp_config = StreamableHttpServerConfig::default()
        .with_json_response(true)
        .with_allowed_hosts(hosts)
        .with_allowed_origins(opts.allowed_origins.clone())
        .with_max_request_body_bytes(opts.max_body_bytes)
        .with_cancellation_token(ctx.closing.clone());
    // The registry keeps sleeping sessions; rmcp wakes one through its restore path.
    mcp_config.session_store = Some(ctx.sessions.clone());
    if opts.allowed_origins.is_empty() {
        // Agents are not browsers: with no origin configured, any request carrying one is refused.
        mcp_config = mcp_config.enforce_origin_validation();
    }
    let gate = state.gate.clone();
    let feed = ctx.feed.clone();
    let drain = super::server::Drain {
        inflight: ctx.inflight.clone(),
        cut: ctx.cut.clone(),
    };
    let handler = move || {
        ParallaxServer::new(gate.clone(), Credential::PerRequest)
            .with_feed(feed.clone())
            .with_drain(drain.clone())
    };
    let direct = super::direct::Direct {
        server: handler(),
        listings: Default::default(),
    };
    let mcp = Arc::new(StreamableHttpService::new(
        move || Ok(handler()),
        ctx.sessions.clone(),
        mcp_config,
    ));
    let pipeline = Pipeline {
        envelope: super::envelope::Envelope {
            max_body_bytes: opts.max_body_bytes,
            inflight: ctx.inflight.clone(),
        },
        binder: sessions::Binder {
            sessions: ctx.sessions.clone(),
            gate: state.gate.clone(),
        },
        ctx: state,
        direct,
        mcp,
    };
    Router::new().nest_service("/mcp", Endpoint(Arc::new(pipeline)))
}

type McpService = StreamableHttpService<ParallaxServer, sessions::SessionRegistry>;

/// What every `/mcp` request passes, in this order: its span (so authentication is inside it),
/// bearer authentication, the JSON-RPC envelope (a malformed message is refused before rmcp reads
/// it), the session's owner, and rmcp's service (or, for a plain tool call on a session, the
/// gate directly: `mcp::direct`). Nested as plain async functions in one service
/// (see `http::Continue`), and shared behind one `Arc`: rmcp's configuration holds the allowed
/// hosts and origins and a cancellation token, so a clone per request allocated and locked.
struct Pipeline {
    ctx: Arc<HttpContext>,
    envelope: super::envelope::Envelope,
    binder: sessions::Binder,
    direct: super::direct::Direct,
    mcp: Arc<McpService>,
}

impl Pipeline {
    async fn run(&self, req: Request) -> Response {
        trace_request(self.envelope.max_body_bytes, req, |req| {
            authenticate(&self.ctx, req, |req| self.enveloped(req))
        })
        .await
    }

    /// The envelope check, then [`Self::past_envelope`]. If the envelope refuses the message
    /// before an unconfirmed key was confirmed, the key is checked then: a refused key is
    /// answered (and audited) as such, as it is when the key is checked before the envelope.
    async fn enveloped(&self, req: Request) -> Response {
        let pending = req.extensions().get::<PendingAuth>().cloned();
        let passed = std::sync::atomic::AtomicBool::new(false);
        let res = super::envelope::check(&self.envelope, req, |req| {
            passed.store(true, std::sync::atomic::Ordering::Relaxed);
            self.past_envelope(req)
        })
        .await;
        if let Some(pending) = pending
            && !passed.load(std::sync::atomic::Ordering::Relaxed)
            && let Err(refused) = confirmed(&self.ctx, &pending.0).await
        {
            return refused;
        }
        res
    }

    /// An unconfirmed key confirmed unless the request is a plain call of a tool decided
    /// unconfirmed (the read tool, a note) on a session of the caller's (or none); then the
    /// session's owner, and `mcp::direct` or rmcp (which is never given an unconfirmed key).
    async fn past_envelope(&self, req: Request) -> Response {
        let unconfirmed_call = |req: &Request, pending: &Pending| {
            super::direct::may_decide_unconfirmed(req, pending.unconfirmed.caller())
                && self
                    .binder
                    .sessions
                    .would_pass(req, pending.unconfirmed.caller())
        };
        confirm(&self.ctx, req, unconfirmed_call, |req| {
            sessions::bind(&self.binder, req, |req| async move {
                let confirm_now =
                    |pending: Arc<Pending>| async move { confirmed(&self.ctx, &pending).await };
                match super::direct::call(&self.direct, req, confirm_now).await {
                    Ok(res) => res,
                    Err(req) => {
                        // Boxed: rmcp's future is large, and every request's future (boxed by
                        // the router) would be as large, and copied whole.
                        let rmcp = |req| async move {
                            Box::pin(self.mcp.handle(req))
                                .await
                                .map(axum::body::Body::new)
                        };
                        confirm(&self.ctx, req, |_, _| false, rmcp).await
                    }
                }
            })
        })
        .await
    }
}

#[derive(Clone)]
struct Endpoint(Arc<Pipeline>);

impl tower_service::Service<Request> for Endpoint {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let pipeline = self.0.clone();
        Box::pin(async move { Ok(pipeline.run(req).await) })
    }
}

/// The transport span of one `/mcp` request (only while traces are exported). Its parent is the
/// caller's trace: the MCP request's `_meta.traceparent`, else the `traceparent` header.
async fn trace_request(max_body: usize, req: Request, next: impl Continue) -> Response {
    use crate::telemetry::traces;
    use tracing::Instrument;
    if !traces::enabled() {
        return next(req).await;
    }
    // Owned copies: a borrow of the request (its body is not `Sync`) cannot cross an await.
    let header = |headers: &axum::http::HeaderMap, name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let traceparent = header(req.headers(), "traceparent");
    let tracestate = header(req.headers(), "tracestate");
    let span = tracing::info_span!(
        "mcp.request",
        otel.kind = "server",
        http.request.method = %req.method(),
        mcp.transport = "http",
        mcp.method = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    // The JSON-RPC body, read once more only while tracing, for its method and `_meta`; not for
    // a request without a credential, which is refused before anything reads its body.
    let has_credential = req.headers().contains_key(header::AUTHORIZATION);
    let (req, message) = if req.method() == axum::http::Method::POST && has_credential {
        let (parts, body) = req.into_parts();
        match axum::body::to_bytes(body, max_body).await {
            Ok(bytes) => {
                let message = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
                (
                    Request::from_parts(parts, axum::body::Body::from(bytes)),
                    message,
                )
            }
            Err(_) => {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    &format!("the request body is larger than {max_body} bytes"),
                );
            }
        }
    } else {
        (req, None)
    };
    let field = |path: &str| {
        message
            .as_ref()
            .and_then(|m| m.pointer(path))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    if let Some(method) = field("/method") {
        span.record("mcp.method", method.as_str());
    }
    let parent = match field("/params/_meta/traceparent") {
        Some(tp) => traces::remote_parent(Some(&tp), field("/params/_meta/tracestate").as_deref()),
        None => traces::remote_parent(traceparent.as_deref(), tracestate.as_deref()),
    };
    traces::adopt(&span, parent);
    let mut req = req;
    req.extensions_mut()
        .insert(traces::RequestSpan(span.clone()));
    next(req).instrument(span).await
}

/// Bearer authentication for `/mcp`: an API key (`mcp_agent_…`) or an access token from
/// `/oauth/token`. The outcome rides in the request's extensions to the gate; a missing or refused
/// credential is a 401 with the RFC 9728 metadata pointer. Addresses that fail too often and
/// agents over their rate get 429 with `Retry-After`.
async fn authenticate(state: &HttpContext, req: Request, next: impl Continue) -> Response {
    let _guard = state.inflight.enter();
    let peer = oauth::peer(req.extensions());
    // RFC 6750 §2.3 is not supported: a token in a URL ends up in logs.
    let in_query = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.split('=').next() == Some("access_token"))
    });
    if in_query {
        return challenge(
            state,
            StatusCode::BAD_REQUEST,
            "tokens are accepted only in the Authorization header",
            Some("invalid_request"),
        );
    }
    let bearer = oauth::bearer(req.headers()).map(str::to_owned);
    let Some(token) = bearer else {
        crate::telemetry::metrics::auth_refused("missing_credential");
        return unauthorized(state, "missing bearer credential", None);
    };
    if let Some(wait) = state.failed_auth.credential_blocked(&token) {
        crate::telemetry::metrics::rate_limited("failed_auth");
        return oauth::too_many_requests(
            wait,
            "too many failed authentications with this credential",
        );
    }
    let is_key = token.starts_with(API_KEY_PREFIX);
    // A key the snapshot holds, or a token verified before whose credential it holds, is taken
    // unconfirmed, to be confirmed further on (`confirm`) or by the commit of its call's
    // decision (`mcp::direct`).
    let mut req = req;
    let unconfirmed = if is_key {
        auth::agent_unconfirmed(state.gate.service().store(), &token)
    } else {
        state.tokens.agent_unconfirmed(&token, &state.urls.resource)
    };
    if let Some(unconfirmed) = unconfirmed {
        if let Some(res) = over_rate(state, unconfirmed.caller()) {
            // Confirmed first, so that a credential refused since is answered (and audited) as
            // refused, as it is when it is checked before its rate.
            return match verify(state, &token, peer, Some(&unconfirmed)).await {
                Ok(_) => res,
                Err(refused) => refused,
            };
        }
        let pending = Pending {
            unconfirmed,
            key: token,
            peer,
        };
        req.extensions_mut().insert(PendingAuth(Arc::new(pending)));
        return next(req).await;
    }
    let caller = match verify(state, &token, peer, None).await {
        Ok(caller) => caller,
        Err(res) => return res,
    };
    if let Some(res) = over_rate(state, &caller) {
        return res;
    }
    let mut req = if caller.is_narrowed() {
        match scope_check(state, &caller, req).await {
            Ok(req) => req,
            Err(res) => return res,
        }
    } else {
        req
    };
    req.extensions_mut().insert(HttpAuth(Arc::new(Ok(caller))));
    next(req).await
}

/// The agent's request rate, counted once per request: the 429 (with `Retry-After`) when this
/// request is over it.
fn over_rate(state: &HttpContext, caller: &auth::AgentCaller) -> Option<Response> {
    let wait = state.gate.limiter().check(caller).err()?;
    crate::telemetry::metrics::rate_limited("agent");
    Some(oauth::too_many_requests(
        wait,
        "rate limit exceeded for this agent",
    ))
}

/// The bearer credential checked against the store (generations read): the caller, or the
/// answer to a refused credential (audited, counted against the address and the credential) or
/// to a store that failed. `taken` is the caller the credential was taken unconfirmed as: the
/// read of the generations confirms it unless they moved (`Unconfirmed::confirm`).
async fn verify(
    state: &HttpContext,
    token: &str,
    peer: Option<std::net::IpAddr>,
    taken: Option<&auth::Unconfirmed>,
) -> Result<auth::AgentCaller, Response> {
    let is_key = token.starts_with(API_KEY_PREFIX);
    let span = crate::telemetry::traces::span(|| {
        tracing::info_span!(
            "authenticate",
            credential = if is_key { "api_key" } else { "access_token" },
            outcome = tracing::field::Empty,
        )
    });
    let outcome = async {
        if let Some(taken) = taken
            && let Some(caller) = taken.confirm(state.gate.service().store()).await?
        {
            return Ok(Ok(caller));
        }
        if is_key {
            auth::agent(state.gate.service().store(), token).await
        } else {
            state.tokens.agent(token, &state.urls.resource).await
        }
    }
    .instrument(span.clone())
    .await;
    span.record(
        "outcome",
        match &outcome {
            Ok(Ok(_)) => "allowed",
            Ok(Err(_)) => "denied",
            Err(_) => "error",
        },
    );
    match outcome {
        Ok(Ok(caller)) => Ok(caller),
        Ok(Err(refusal)) => {
            let blocked = state.failed_auth.failed(peer, Some(token));
            state.gate.audit_refusal(&refusal, "http request").await;
            if let Some(wait) = blocked {
                crate::telemetry::metrics::rate_limited("failed_auth");
                return Err(oauth::too_many_requests(
                    wait,
                    "too many failed authentications",
                ));
            }
            Err(unauthorized(
                state,
                &refusal.error.to_string(),
                Some("invalid_token"),
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "authentication failed on the store");
            Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the workspace store is unavailable",
            ))
        }
    }
}

/// An unconfirmed key (`PendingAuth`) confirmed by a read of the generations, else
/// authenticated again as [`authenticate`] would have: the caller, or the answer to a refusal.
async fn confirmed(state: &HttpContext, pending: &Pending) -> Result<auth::AgentCaller, Response> {
    verify(
        state,
        &pending.key,
        pending.peer,
        Some(&pending.unconfirmed),
    )
    .await
}

/// Confirms a request's unconfirmed key (see `PendingAuth`) before it goes further, unless
/// `keep` says the request may be left to `mcp::direct`, which decides a plain call of the read
/// tool on the unconfirmed caller. The rate limit was counted when the key was first checked.
/// A caller taken unconfirmed was not narrower than its agent's grant (an API key never is; a
/// narrower token is not taken so); if the confirmed one is (the grant grew meanwhile), its
/// scope is checked as [`authenticate`] would.
async fn confirm(
    state: &HttpContext,
    mut req: Request,
    keep: impl FnOnce(&Request, &Pending) -> bool,
    next: impl Continue,
) -> Response {
    let Some(pending) = req.extensions().get::<PendingAuth>().cloned() else {
        return next(req).await;
    };
    if keep(&req, &pending.0) {
        return next(req).await;
    }
    req.extensions_mut().remove::<PendingAuth>();
    let caller = match confirmed(state, &pending.0).await {
        Ok(caller) => caller,
        Err(res) => return res,
    };
    if caller.is_narrowed() {
        req = match scope_check(state, &caller, req).await {
            Ok(req) => req,
            Err(res) => return res,
        };
    }
    req.extensions_mut().insert(HttpAuth(Arc::new(Ok(caller))));
    next(req).await
}

/// For a token narrower than the agent's grant: a `tools/call` of a tool the agent is granted
/// but the token does not cover is a 403 `insufficient_scope` challenge (MCP authorization), so
/// the client can fetch a token with the scope it needs. The tool name comes from `Mcp-Name`, else
/// from the body, which is then handed on unchanged.
async fn scope_check(
    state: &HttpContext,
    caller: &auth::AgentCaller,
    req: Request,
) -> Result<Request, Response> {
    let from_header = req
        .headers()
        .get("mcp-name")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (tool, req) = match from_header {
        Some(name) => (Some(name), req),
        None if req.method() == axum::http::Method::POST => {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, state.opts.max_body_bytes)
                .await
                .map_err(|_| {
                    refuse(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        &format!(
                            "the request body is larger than {} bytes",
                            state.opts.max_body_bytes
                        ),
                    )
                })?;
            let tool = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .filter(|v| v.get("method").and_then(|m| m.as_str()) == Some("tools/call"))
                .and_then(|v| {
                    v.pointer("/params/name")
                        .and_then(|n| n.as_str())
                        .map(str::to_owned)
                });
            (
                tool,
                Request::from_parts(parts, axum::body::Body::from(bytes)),
            )
        }
        None => (None, req),
    };
    let needed =
        tool.as_deref()
            .and_then(catalogue::find)
            .and_then(|spec| match spec.requirement {
                Requirement::Permission(p) if caller.is_granted(p) && !caller.has(p) => Some(p),
                _ => None,
            });
    let (Some(tool), Some(needed)) = (tool, needed) else {
        return Ok(req);
    };
    state
        .gate
        .audit_insufficient_scope(caller, &tool, needed.as_str())
        .await;
    let mut res = refuse(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        &format!("{tool} needs the {needed} scope; request a token with it"),
    );
    let value = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{needed}\", resource_metadata=\"{}\", error_description=\"the token's scope lacks {needed}\"",
        state.urls.resource_metadata
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    Err(res)
}

fn unauthorized(state: &HttpContext, message: &str, error: Option<&str>) -> Response {
    challenge(state, StatusCode::UNAUTHORIZED, message, error)
}

/// A refusal carrying `WWW-Authenticate: Bearer resource_metadata=…` (and `error=` if given).
fn challenge(
    state: &HttpContext,
    status: StatusCode,
    message: &str,
    error: Option<&str>,
) -> Response {
    let mut challenge = format!(
        "Bearer resource_metadata=\"{}\"",
        state.urls.resource_metadata
    );
    if let Some(code) = error {
        challenge.push_str(&format!(
            ", error=\"{code}\", error_description=\"{}\"",
            message.replace('"', "'")
        ));
    }
    let body = if status == StatusCode::UNAUTHORIZED {
        "unauthorized"
    } else {
        error.unwrap_or("invalid_request")
    };
    let mut res = refuse(status, body, message);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}
