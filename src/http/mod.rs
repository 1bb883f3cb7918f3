//! The HTTP server: one listener, one router composed from its parts — `/mcp` (the MCP layer),
//! health and readiness, RFC 9728 / RFC 8414 discovery and the OAuth token endpoint
//! ([`oauth`]), with rate limits in [`ratelimit`]. Transport concerns (limits, timeouts, graceful
//! shutdown) live here, once, for every route.

mod conn;
pub mod limits;
pub mod oauth;
pub mod ratelimit;

use crate::auth::Tokens;
use crate::config::{AuthConfig, Config, LimitsConfig, OidcConfig};
use crate::events::{self, EventOptions, Feed};
use crate::mcp::sessions::{SessionLimits, SessionRegistry};
use crate::mcp::{self, ServeError};
use crate::service::Service;
use crate::store::{Create, Store};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The rest of a request's handling, for middleware written as plain async functions and nested
/// by hand ([`edge`], `mcp::http`'s pipeline). axum's `from_fn` layers clone every layer beneath
/// them for each request, which on `/mcp` cost more than authentication itself.
pub trait Continue: FnOnce(axum::extract::Request) -> Self::Then {
    type Then: Future<Output = Response>;
}

impl<N, F> Continue for N
where
    N: FnOnce(axum::extract::Request) -> F,
    F: Future<Output = Response>,
{
    type Then = F;
}

/// Transport settings for `serve`.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `Host` values accepted (DNS-rebinding protection); loopback by default.
    pub allowed_hosts: Vec<String>,
    /// Browser `Origin`s accepted; none configured means a request carrying an Origin is refused.
    pub allowed_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (per-address limits).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub max_body_bytes: usize,
    /// The public URL of `/mcp`, for OAuth protected-resource metadata; derived from the bound
    /// address when unset.
    pub public_url: Option<String>,
    /// How long shutdown waits for in-flight calls before closing sessions.
    pub drain_timeout: Duration,
    /// Token issuer, key and lifetime.
    pub auth: AuthConfig,
    /// Failed-authentication limits per client address.
    pub limits: LimitsConfig,
    /// The event feed, webhook worker and event streams (`[webhooks]`, `[events]`).
    pub events: EventOptions,
    /// A client must send a whole request head within this time (from connecting, or from the
    /// first byte of a later request), or the connection is dropped.
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this long without a request.
    pub idle_timeout: Duration,
    /// The whole request body must arrive within this time.
    pub body_read_timeout: Duration,
    /// Open connections at most; at the cap the oldest connection that is not serving a request
    /// is closed to make room, and if none is idle the new one waits in the accept backlog.
    pub max_connections: usize,
    /// Open connections from one client address at most; more are closed at once.
    pub max_connections_per_address: usize,
    /// A new connection must send its first byte within this time, or it is closed.
    pub first_byte_timeout: Duration,
    /// Open MCP sessions on this replica at most.
    pub max_sessions: usize,
    /// Open MCP sessions per agent at most; past it the least recently used one is closed.
    pub max_sessions_per_agent: usize,
    /// Open event streams per member at most; past it a new stream is refused.
    pub max_event_streams_per_member: usize,
    /// Where the Prometheus endpoint listens (`[metrics] listen`); `None`: no metrics.
    pub metrics_listen: Option<String>,
    /// Console sign-in with OpenID Connect (`[oidc]`); off unless its issuer is set.
    pub oidc: OidcConfig,
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
            trusted_proxies: Vec::new(),
            max_body_bytes: 1024 * 1024,
            public_url: None,
            drain_timeout: Duration::from_secs(30),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            events: EventOptions::default(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_address: 128,
            first_byte_timeout: Duration::from_secs(3),
            max_sessions: 4096,
            max_sessions_per_agent: 32,
            max_event_streams_per_member: 8,
            metrics_listen: None,
            oidc: OidcConfig::default(),
        }
    }
}

/// What every part of the HTTP server shares.
#[derive(Clone, Debug)]
pub struct HttpContext {
    pub service: Service,
    pub urls: Urls,
    pub inflight: InFlight,
    /// Cancelled at shutdown, after in-flight calls finished: closes MCP sessions and streams.
    pub closing: CancellationToken,
    /// Cancelled as soon as shutdown begins: the listener closes, keep-alive ends and new MCP
    /// sessions are refused with 503 while in-flight calls finish.
    pub draining: CancellationToken,
    /// Cancelled when the drain limit passes with calls still running: each gets a JSON-RPC
    /// error instead of being cut off without an answer.
    pub cut: CancellationToken,
    /// Members' open event streams, for the per-member cap.
    pub event_streams: crate::events::sse::StreamSlots,
    /// The one gate (and so the one audit writer) every HTTP route shares.
    pub gate: crate::mcp::gate::Gate,
    pub opts: Arc<HttpOptions>,
    /// Open MCP sessions and the agent each belongs to; `close_agent` ends an agent's sessions.
    pub sessions: Arc<SessionRegistry>,
    /// Mints and verifies member and agent tokens.
    pub tokens: Tokens,
    /// Committed events as they land (this replica's at once, others' by polling).
    pub feed: Feed,
    /// Failed authentications per client address (`/mcp` and `/oauth/token`).
    pub failed_auth: ratelimit::FailedAuthLimiter,
    /// The OpenID Connect relying party for console sign-in, when `[oidc]` is configured.
    pub oidc: Option<Arc<crate::auth::oidc::Oidc>>,
}

/// The server's public addresses.
#[derive(Clone, Debug)]
pub struct Urls {
    /// The origin, e.g. `https://mcp.example.com` (no trailing slash).
    pub origin: Arc<str>,
    /// The protected resource: `{origin}/mcp`.
    pub resource: Arc<str>,
    /// RFC 9728 metadata for the resource.
    pub resource_metadata: Arc<str>,
}

impl Urls {
    fn new(public_url: Option<&str>, addr: std::net::SocketAddr) -> Self {
        let resource = public_url
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("http://{addr}/mcp"));
        let origin = resource.trim_end_matches("/mcp").to_owned();
        Self {
            resource_metadata: format!("{origin}/.well-known/oauth-protected-resource/mcp").into(),
            resource: resource.into(),
            origin: origin.into(),
        }
    }
}

/// Counts a request of the API or the console as in flight, so shutdown waits for it. Its state
/// is the counter alone: a middleware's state is cloned on every request, and the context holds
/// cancellation tokens, whose clones lock.
pub async fn count_in_flight(
    State(inflight): State<InFlight>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let _guard = inflight.enter();
    next.run(req).await
}

/// Counts requests being served, so shutdown can wait for them.
#[derive(Clone, Default, Debug)]
pub struct InFlight(Arc<(AtomicUsize, Notify)>);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard {
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

pub struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.0.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.0.1.notify_waiters();
        }
    }
}

/// Serves HTTP (MCP and the rest) on `config.listen` until ctrl-c or SIGTERM.
pub async fn serve(config: &Config) -> Result<(), ServeError> {
    let shutdown = mcp::shutdown_signal();
    config
        .prepare_default_location()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let key = config
        .master_key()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let encrypted = key.is_some();
    let (store, secrets) = Store::open_with(&config.database_url, Create::IfMissing)
        .await?
        .with_master_key(key)
        .await?;
    // Once, at start: the operator should know the secrets in the database are readable.
    if !encrypted {
        tracing::warn!(
            "secrets are stored unencrypted in the database: set PARALLAX_MASTER_KEY or [secrets] master_key_file (README: Running in production)"
        );
    } else if secrets.plain > 0 {
        tracing::warn!(
            plain = secrets.plain,
            "some secrets are still stored unencrypted: run `parallax-mcp secrets encrypt`"
        );
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| listen_error(&config.listen, &e))?;
    run(store, listener, http_options(config), shutdown).await
}

/// Why `listen` cannot be bound, in one line. A taken port or an address this machine does not
/// have is a configuration problem (exit 2), not an outage.
pub(crate) fn listen_error(listen: &str, e: &std::io::Error) -> ServeError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::AddrInUse => ServeError::Config(format!(
            "cannot listen on {listen}: address already in use (another server on that port? pick another with --listen or PARALLAX_LISTEN)"
        )),
        ErrorKind::AddrNotAvailable => ServeError::Config(format!(
            "cannot listen on {listen}: this machine has no such address"
        )),
        ErrorKind::PermissionDenied => ServeError::Config(format!(
            "cannot listen on {listen}: permission denied (ports below 1024 need privileges)"
        )),
        _ => ServeError::Config(format!("cannot listen on {listen}: {e}")),
    }
}

/// The transport settings from the `[http]` part of the configuration, over safe defaults.
fn http_options(config: &Config) -> HttpOptions {
    let mut opts = HttpOptions {
        auth: config.auth.clone(),
        limits: config.limits.clone(),
        events: EventOptions::from_config(config),
        ..HttpOptions::default()
    };
    opts.public_url = config.public_url.clone();
    opts.metrics_listen = config.metrics.listen.clone();
    opts.oidc = config.oidc.clone();
    if let Some(hosts) = &config.http.allowed_hosts {
        opts.allowed_hosts = hosts.clone();
    }
    if let Some(origins) = &config.http.allowed_origins {
        opts.allowed_origins = origins.clone();
    }
    // Checked by `Config::check`; anything unparsable was refused at load.
    opts.trusted_proxies = (config.http.trusted_proxies.iter().flatten())
        .filter_map(|p| p.parse().ok())
        .collect();
    if let Some(bytes) = config.http.max_body_bytes {
        opts.max_body_bytes = bytes;
    }
    let secs = Duration::from_secs;
    if let Some(s) = config.http.header_read_timeout_secs {
        opts.header_read_timeout = secs(s);
    }
    if let Some(s) = config.http.idle_timeout_secs {
        opts.idle_timeout = secs(s);
    }
    if let Some(s) = config.http.body_read_timeout_secs {
        opts.body_read_timeout = secs(s);
    }
    if let Some(n) = config.http.max_connections {
        opts.max_connections = n;
    }
    if let Some(n) = config.http.max_connections_per_address {
        opts.max_connections_per_address = n;
    }
    if let Some(s) = config.http.first_byte_timeout_secs {
        opts.first_byte_timeout = secs(s);
    }
    if let Some(s) = config.http.drain_timeout_secs {
        opts.drain_timeout = secs(s);
    }
    if let Some(n) = config.http.max_sessions {
        opts.max_sessions = n;
    }
    if let Some(n) = config.http.max_sessions_per_agent {
        opts.max_sessions_per_agent = n;
    }
    if let Some(n) = config.http.max_event_streams_per_member {
        opts.max_event_streams_per_member = n;
    }
    opts
}

/// Serves until `shutdown` resolves, then lets in-flight calls finish (up to the drain timeout)
/// before closing MCP sessions and returning.
pub async fn run(
    store: Store,
    listener: TcpListener,
    opts: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let tokens = Tokens::load(store.clone(), &opts.auth).await?;
    let mut ctx = HttpContext::new(Service::new(store), listener.local_addr()?, opts, tokens).await;
    let callback = format!("{}{}", ctx.urls.origin, crate::console::oidc::CALLBACK_PATH);
    ctx.oidc = crate::auth::oidc::Oidc::from_config(&ctx.opts.oidc, &callback)
        .map_err(|e| ServeError::Config(e.to_string()))?
        .map(Arc::new);
    run_with(ctx, listener, shutdown).await
}

impl HttpContext {
    /// The shared context for a server bound to `addr`, once its event feed has started (see
    /// [`Feed::start`]).
    pub async fn new(
        service: Service,
        addr: std::net::SocketAddr,
        opts: HttpOptions,
        tokens: Tokens,
    ) -> Self {
        let closing = CancellationToken::new();
        let feed = Feed::start(
            service.store().clone(),
            opts.events.poll_interval,
            closing.clone(),
        )
        .await;
        let sessions = Arc::new(SessionRegistry::new(SessionLimits {
            per_agent: opts.max_sessions_per_agent,
            global: opts.max_sessions,
            ..SessionLimits::default()
        }));
        Self {
            feed,
            tokens,
            gate: crate::mcp::gate::Gate::new(service.clone()),
            draining: CancellationToken::new(),
            event_streams: Default::default(),
            cut: CancellationToken::new(),
            failed_auth: ratelimit::FailedAuthLimiter::new(
                opts.limits.failed_auth_per_minute,
                opts.limits.failed_auth_burst,
            ),
            service,
            urls: Urls::new(opts.public_url.as_deref(), addr),
            inflight: InFlight::default(),
            closing,
            opts: Arc::new(opts),
            sessions,
            oidc: None,
        }
    }
}

/// [`run`] with a context the caller built (and keeps a handle on, e.g. to close sessions).
pub async fn run_with(
    ctx: HttpContext,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    if let Some(listen) = &ctx.opts.metrics_listen {
        serve_metrics(&ctx, listen).await?;
    }
    // The webhook worker stops with the server; an attempt cut short keeps its lease and is
    // retried when the lease ends (here or on another replica).
    tokio::spawn(events::webhooks::run(
        ctx.service.store().clone(),
        ctx.opts.events.webhooks.clone(),
        ctx.closing.clone(),
    ));
    // Ended grants are recorded once across replicas; the event closes sessions below.
    ctx.service
        .watch_expiries(std::time::Duration::from_secs(1), ctx.closing.clone());
    // Signed checkpoints of every workspace's chain, when due; replicas racing keep one per head.
    ctx.service
        .watch_checkpoints(std::time::Duration::from_secs(2), ctx.closing.clone());
    // A revocation (here or on another replica) closes the agent's MCP sessions at once; its
    // subscriptions end on the same event.
    let sessions = ctx.sessions.clone();
    let service = ctx.service.clone();
    events::on_revocation(&ctx.feed, ctx.closing.clone(), move |revocation| {
        let (sessions, service) = (sessions.clone(), service.clone());
        async move {
            let revoked = match revocation {
                events::Revocation::Agent {
                    workspace_id,
                    agent_id,
                } => vec![(workspace_id, agent_id)],
                events::Revocation::Resync => {
                    let mut gone = Vec::new();
                    for (ws, agent) in sessions.agents() {
                        // On a store error keep the session: its next request is re-checked.
                        if let Ok(false) = service.agent_still_approved(&ws, &agent).await {
                            gone.push((ws, agent));
                        }
                    }
                    gone
                }
            };
            for (ws, agent) in revoked {
                let n = sessions.close_agent(&ws, &agent).await;
                tracing::info!(agent = %agent, sessions = n, "agent revoked: sessions closed");
            }
        }
    });
    let app = Router::new()
        .merge(mcp::http::router(&ctx))
        .merge(discovery_router(&ctx))
        .merge(oauth::router(&ctx))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready).with_state(ctx.clone()))
        .fallback_service(OnFirstUse::new(ctx.clone(), humans_router));

    // Limits wrap everything, so no route can skip them; while draining, nothing new starts.
    let app = app.layer(axum::middleware::from_fn_with_state(
        Arc::new(ctx.clone()),
        edge,
    ));
    if ctx.opts.allowed_hosts.is_empty() {
        tracing::warn!("[http] allowed_hosts is empty: every request except /healthz is refused");
    }

    // What start-up allocated and dropped (migrations, snapshots, configuration) goes back to
    // the system now, not whenever the allocator gets round to it: most of it was on this thread.
    // So do the pages SQLite cached while starting.
    crate::store::release_cache_memory();
    crate::memory::release_free_memory();
    tracing::info!(%addr, "parallax-mcp listening on http://{addr}/mcp");
    let draining = ctx.draining.clone();
    tokio::spawn(async move {
        shutdown.await;
        draining.cancel();
    });
    let drain = drain_sequence(ctx.clone());
    let limits = conn::ConnLimits {
        header_read_timeout: ctx.opts.header_read_timeout,
        first_byte_timeout: ctx.opts.first_byte_timeout,
        idle_timeout: ctx.opts.idle_timeout,
        max_connections: ctx.opts.max_connections,
        max_connections_per_address: ctx.opts.max_connections_per_address,
        shutdown_grace: ctx.opts.drain_timeout + CUT_GRACE + CLOSE_GRACE,
    };
    conn::serve(listener, app, limits, ctx.draining.clone(), drain).await;
    // Every answered call's entry is committed already; what is left belongs to calls that were
    // cut or refused. A store that stays locked must not hold the exit past the drain limit.
    if tokio::time::timeout(ctx.opts.drain_timeout, ctx.gate.flush_audit())
        .await
        .is_err()
    {
        tracing::error!("the audit writer could not reach the store in time; stopping without it");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The admin API's and the console's routes: every path the routers above do not serve. Unknown
/// paths get a plain 404, outside the console's headers, as before these routes were deferred.
fn humans_router(ctx: &HttpContext) -> Router {
    Router::new()
        .merge(crate::api::router(ctx))
        .merge(crate::console::router(ctx))
        .fallback(|| async { StatusCode::NOT_FOUND })
}

/// A router built at its first request instead of at start. Each of the admin API's and the
/// console's seventy-odd handlers is code of its own, spread over the binary, and building a
/// route runs some of it: at start that mapped a 64 kB window of the binary per handler into
/// the memory of a server that may only ever serve agents (docs/performance.md).
struct OnFirstUse<C>(Arc<Deferred<C>>);

struct Deferred<C> {
    ctx: C,
    build: fn(&C) -> Router,
    router: std::sync::OnceLock<Router>,
}

impl<C> OnFirstUse<C> {
    fn new(ctx: C, build: fn(&C) -> Router) -> Self {
        Self(Arc::new(Deferred {
            ctx,
            build,
            router: std::sync::OnceLock::new(),
        }))
    }
}

// By hand: a derived Clone would ask for `C: Clone`, and axum clones a fallback per request.
impl<C> Clone for OnFirstUse<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<C> tower_service::Service<axum::extract::Request> for OnFirstUse<C> {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        let deferred = &*self.0;
        let mut router = (deferred.router)
            .get_or_init(|| (deferred.build)(&deferred.ctx))
            .clone();
        tower_service::Service::call(&mut router, req)
    }
}

/// Binds the Prometheus endpoint and serves it until the server closes. Gauges of this replica's
/// state (sessions, pool, outbox) are read at each scrape.
async fn serve_metrics(ctx: &HttpContext, listen: &str) -> Result<(), ServeError> {
    use crate::telemetry::metrics::{self, Sampler, Snapshot};
    let (store, sessions) = (ctx.service.store().clone(), ctx.sessions.clone());
    let sample: Sampler = Arc::new(move || {
        let (store, sessions) = (store.clone(), sessions.clone());
        Box::pin(async move {
            Snapshot {
                http_sessions: Some(sessions.len()),
                ..Snapshot::of_store(&store).await
            }
        })
    });
    metrics::listen(listen, sample, ctx.closing.clone()).await
}

/// How long calls cut by the drain limit have to send their JSON-RPC error.
const CUT_GRACE: Duration = Duration::from_secs(2);
/// How long connections have to close once sessions and streams ended.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// After the listener closed: lets in-flight calls finish up to the drain limit, then answers
/// those still running with a JSON-RPC error, then ends MCP sessions and event streams so their
/// connections can close.
async fn drain_sequence(ctx: HttpContext) {
    ctx.draining.cancelled().await;
    let drain = ctx.opts.drain_timeout;
    tracing::info!("shutting down: listener closed, finishing in-flight calls");
    if tokio::time::timeout(drain, ctx.inflight.idle())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight calls still running after {drain:?}; answering them with an error"
        );
        ctx.cut.cancel();
        let _ = tokio::time::timeout(CUT_GRACE, ctx.inflight.idle()).await;
    }
    // Ends MCP sessions and their streams, so their connections can close.
    ctx.closing.cancel();
}

/// Every route's edge, outermost first: stream counting, the transport limits, the drain check.
/// One middleware, not three layers (see [`Continue`]).
async fn edge(
    State(ctx): State<Arc<HttpContext>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let ctx = &*ctx;
    crate::telemetry::metrics::count_streams(req, |req| {
        limits::enforce(&ctx.opts, req, |req| {
            refuse_while_draining(ctx, req, |req| next.run(req))
        })
    })
    .await
}

/// Once shutdown began, a new request (a new MCP session, a call, an API request) gets 503 with
/// `Retry-After` and `Connection: close`, so the client goes to another replica; ending a session
/// (`DELETE`) and the health checks still work.
async fn refuse_while_draining(
    ctx: &HttpContext,
    req: axum::extract::Request,
    next: impl Continue,
) -> Response {
    let exempt = req.method() == axum::http::Method::DELETE
        || matches!(req.uri().path(), "/healthz" | "/readyz");
    if !ctx.draining.is_cancelled() || exempt {
        return next(req).await;
    }
    let mut res = limits::refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the server is shutting down; retry shortly",
    );
    let headers = res.headers_mut();
    headers.insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    headers.insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    res
}

/// Ready when the store answers and can commit a write; a store that can be read but not
/// written (disk full, read-only) is not ready, since every tool call writes its audit entry.
async fn ready(State(ctx): State<HttpContext>) -> Response {
    let store = ctx.service.store();
    if ctx.closing.is_cancelled() || ctx.draining.is_cancelled() {
        return limits::refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down",
        );
    }
    match tokio::time::timeout(READY_PROBE_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready");
            return limits::refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unreachable",
            );
        }
        Err(_) => {
            return limits::refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database did not answer in time",
            );
        }
    }
    match tokio::time::timeout(READY_PROBE_TIMEOUT, store.probe_write()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the store cannot commit");
            limits::refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database cannot commit a write",
            )
        }
        Err(_) => limits::refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database did not commit a write in time",
        ),
    }
}

/// How long each readiness step (the round trip, the write) may take: a probe must answer
/// promptly even while the database hangs.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

fn discovery_router(ctx: &HttpContext) -> Router {
    Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(resource_metadata),
        )
        .with_state(ctx.clone())
}

/// RFC 9728 protected resource metadata.
async fn resource_metadata(State(ctx): State<HttpContext>) -> Json<serde_json::Value> {
    Json(json!({
        "resource": &*ctx.urls.resource,
        "authorization_servers": [&*ctx.urls.origin],
        "scopes_supported": oauth::scopes_supported(),
        "bearer_methods_supported": ["header"],
        "resource_name": "parallax-mcp",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_service::Service as _;

    fn counted(builds: &Arc<AtomicUsize>) -> Router {
        builds.fetch_add(1, Ordering::SeqCst);
        Router::new().route("/here", get(|| async { "built" }))
    }

    async fn get_path(svc: &mut OnFirstUse<Arc<AtomicUsize>>, path: &str) -> (StatusCode, String) {
        let req = axum::extract::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let res = svc.call(req).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Nothing is built until a request comes, then once, whichever clone asks (each connection
    /// serves its own clone of the app).
    #[tokio::test]
    async fn a_deferred_router_is_built_at_its_first_request_and_only_once() {
        let builds = Arc::new(AtomicUsize::new(0));
        let mut svc = OnFirstUse::new(builds.clone(), counted);
        let mut other = svc.clone();
        assert_eq!(builds.load(Ordering::SeqCst), 0, "not built at start");
        assert_eq!(
            get_path(&mut svc, "/here").await,
            (StatusCode::OK, "built".into())
        );
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert_eq!(
            get_path(&mut other, "/nowhere").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(get_path(&mut svc, "/here").await.0, StatusCode::OK);
        assert_eq!(
            builds.load(Ordering::SeqCst),
            1,
            "built once, whichever clone asks"
        );
    }
}
