//! MCP HTTP sessions (2025-11-25 `Mcp-Session-Id`) bound to the agent that opened them.
//!
//! rmcp's [`LocalSessionManager`] knows sessions but not who owns them. [`SessionRegistry`] wraps
//! it: the [`bind`] middleware records the owner (workspace, agent) of every session an
//! `initialize` creates, and refuses a request that carries a session id bound to anyone else
//! with the same 404 as an unknown session (so session ids cannot be probed), audited as denied.
//! Bindings are forgotten when rmcp closes a session (DELETE, keep-alive expiry, worker exit), and
//! [`SessionRegistry::close_agent`] ends all of one agent's sessions, e.g. when it is revoked.
//!
//! Sessions cost memory for as long as they live (rmcp keeps an idle one five minutes), so they
//! are capped. An `initialize` past the agent's cap ([`SessionLimits::per_agent`]) closes the
//! agent's least recently used session (clients that never `DELETE` keep working; the evicted
//! session's next request gets 404 and re-initializes). One past the replica's cap
//! ([`SessionLimits::global`]) is refused with HTTP 503 and a JSON-RPC error naming the limit.

use super::gate::Gate;
use super::server::HttpAuth;
use crate::auth::AgentCaller;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_core::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    ServerSseMessage, SessionId, SessionManager,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The header carrying the session id (2025-11-25 streamable HTTP).
pub const SESSION_HEADER: &str = "mcp-session-id";

/// Who opened a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Owner {
    workspace_id: String,
    agent_id: String,
}

impl Owner {
    fn of(caller: &AgentCaller) -> Self {
        Self {
            workspace_id: caller.workspace_id().to_owned(),
            agent_id: caller.agent_id().to_owned(),
        }
    }
}

/// rmcp's in-memory session manager plus the owner of each session. Shared by the `/mcp`
/// service (as its [`SessionManager`]) and the rest of the server (through `HttpContext`).
#[derive(Debug)]
pub struct SessionRegistry {
    inner: LocalSessionManager,
    owners: Mutex<HashMap<SessionId, Bound>>,
    /// `initialize` requests under way, per owner: they count against the caps until bound.
    opening: Mutex<HashMap<Owner, usize>>,
    limits: SessionLimits,
}

/// A session's owner and when it was last used.
#[derive(Debug, Clone)]
struct Bound {
    owner: Owner,
    last_used: std::time::Instant,
}

/// Caps on open MCP sessions.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub per_agent: usize,
    pub global: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            per_agent: 32,
            global: 4096,
        }
    }
}

impl Default for SessionRegistry {
    fn default() -> Self {
        Self::new(SessionLimits::default())
    }
}

/// JSON-RPC error code for a refused session (over a cap).
pub const SESSION_LIMIT: i64 = -32031;

/// Which cap a new session hit.
enum Full {
    Agent(usize),
    Server(usize),
}

/// A session being opened, counted against the caps until it is bound (or fails).
struct Opening<'a> {
    registry: &'a SessionRegistry,
    owner: Owner,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut opening = self.registry.opening_lock();
        if let Some(n) = opening.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                opening.remove(&self.owner);
            }
        }
    }
}

impl SessionRegistry {
    pub fn new(limits: SessionLimits) -> Self {
        let mut inner = LocalSessionManager::default();
        // A smaller footprint per session: fewer buffered messages, finished request streams kept
        // for late resumption 15 s instead of 60, and 10 s (not 60) to send `initialize`.
        inner.session_config.channel_capacity = 8;
        inner.session_config.completed_cache_ttl = std::time::Duration::from_secs(15);
        inner.session_config.init_timeout = Some(std::time::Duration::from_secs(10));
        Self {
            inner,
            owners: Mutex::default(),
            opening: Mutex::default(),
            limits: SessionLimits {
                per_agent: limits.per_agent.max(1),
                global: limits.global.max(1),
            },
        }
    }

    fn opening_lock(&self) -> std::sync::MutexGuard<'_, HashMap<Owner, usize>> {
        self.opening.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count_of(owners: &HashMap<SessionId, Bound>, owner: &Owner) -> usize {
        owners.values().filter(|b| b.owner == *owner).count()
    }

    /// Counts a session `owner` is opening. At the agent's cap its least recently used session
    /// is closed first; at the replica's cap the new one is refused. Bindings whose session rmcp
    /// already ended are dropped first, so only live sessions count.
    async fn open(&self, owner: &Owner) -> Result<Opening<'_>, Full> {
        let at_cap = {
            let owners = self.lock();
            Self::count_of(&owners, owner) + 1 > self.limits.per_agent
                || owners.len() + 1 > self.limits.global
        };
        if at_cap {
            let ids: Vec<SessionId> = self.lock().keys().cloned().collect();
            for id in ids {
                if !self.inner.has_session(&id).await.unwrap_or(true) {
                    self.lock().remove(&id);
                }
            }
        }
        loop {
            let lru = {
                let owners = self.lock();
                let pending = self.opening_lock().get(owner).copied().unwrap_or(0);
                if Self::count_of(&owners, owner) + pending < self.limits.per_agent {
                    break;
                }
                owners
                    .iter()
                    .filter(|(_, b)| b.owner == *owner)
                    .min_by_key(|(_, b)| b.last_used)
                    .map(|(id, _)| id.clone())
            };
            let Some(id) = lru else {
                // Only sessions still opening: nothing to evict yet.
                return Err(Full::Agent(self.limits.per_agent));
            };
            tracing::info!(
                agent = %owner.agent_id,
                limit = self.limits.per_agent,
                "agent at its session cap: closing its least recently used session"
            );
            self.lock().remove(&id);
            if let Err(e) = self.inner.close_session(&id).await {
                tracing::warn!(error = %e, "could not close an evicted session");
            }
        }
        let owners = self.lock();
        let mut opening = self.opening_lock();
        if owners.len() + opening.values().sum::<usize>() >= self.limits.global {
            return Err(Full::Server(self.limits.global));
        }
        *opening.entry(owner.clone()).or_default() += 1;
        Ok(Opening {
            registry: self,
            owner: owner.clone(),
        })
    }

    /// Closes every open session of `agent_id` in `workspace_id`, ending its streams; returns how
    /// many were closed. A later request with one of their ids gets 404.
    pub async fn close_agent(&self, workspace_id: &str, agent_id: &str) -> usize {
        let ids: Vec<SessionId> = {
            let mut owners = self.lock();
            let ids: Vec<SessionId> = owners
                .iter()
                .filter(|(_, b)| {
                    b.owner.workspace_id == workspace_id && b.owner.agent_id == agent_id
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                owners.remove(id);
            }
            ids
        };
        let mut closed = 0;
        for id in &ids {
            match self.inner.close_session(id).await {
                Ok(()) => closed += 1,
                Err(e) => tracing::warn!(error = %e, "could not close a session"),
            }
        }
        if closed > 0 {
            tracing::info!(
                workspace_id,
                agent_id,
                closed,
                "closed the agent's MCP sessions"
            );
        }
        closed
    }

    /// The (workspace id, agent id) of every agent with an open session, each once.
    pub fn agents(&self) -> Vec<(String, String)> {
        let mut agents: Vec<(String, String)> = self
            .lock()
            .values()
            .map(|b| (b.owner.workspace_id.clone(), b.owner.agent_id.clone()))
            .collect();
        agents.sort();
        agents.dedup();
        agents
    }

    /// How many sessions are open and bound to an agent.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session's owner; marks the session used now.
    fn owner(&self, id: &str) -> Option<Owner> {
        let mut owners = self.lock();
        let bound = owners.get_mut(id)?;
        bound.last_used = std::time::Instant::now();
        Some(bound.owner.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Bound>> {
        // The map stays consistent even if a holder panicked: every update is one insert/remove.
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The registry is the `/mcp` service's session manager: everything goes to rmcp's local manager,
/// and closing a session also forgets its owner.
impl SessionManager for SessionRegistry {
    type Error = LocalSessionManagerError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.inner.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.lock().remove(id);
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        SessionManager::create_stream(&self.inner, id, message).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        SessionManager::create_standalone_stream(&self.inner, id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        SessionManager::resume(&self.inner, id, last_event_id).await
    }
    // `restore_session` keeps the default (not supported): a session is never re-created from an
    // id alone, since it would have no owner.
}

/// State for [`bind`].
#[derive(Clone)]
pub struct Binder {
    pub sessions: Arc<SessionRegistry>,
    pub gate: Gate,
}

/// Runs inside bearer authentication on `/mcp`: a request naming a session must come from the
/// agent that opened it; a response that opens a session binds it to the caller.
pub async fn bind(State(b): State<Binder>, req: Request, next: Next) -> Response {
    let caller = req
        .extensions()
        .get::<HttpAuth>()
        .and_then(|a| a.0.as_ref().as_ref().ok().cloned());
    let Some(caller) = caller else {
        // No authenticated caller: the gate refuses whatever this is; it can open no session.
        return strip_session(next.run(req).await);
    };
    let owner = Owner::of(&caller);
    let session = match req.headers().get(SESSION_HEADER).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(id)) => Some(id.to_owned()),
        Some(Err(_)) => return session_not_found(),
    };
    if let Some(id) = session {
        match b.sessions.owner(&id) {
            Some(o) if o == owner => return next.run(req).await,
            Some(other) => {
                tracing::warn!(
                    agent = %owner.agent_id,
                    "refused a request on another agent's MCP session"
                );
                let reason = if other.workspace_id == owner.workspace_id {
                    "session belongs to another agent"
                } else {
                    "session belongs to another workspace"
                };
                b.gate
                    .audit_denied(&caller, "session.refused", reason)
                    .await;
                return session_not_found();
            }
            // Unknown (or already closed): nothing to bind to.
            None => return session_not_found(),
        }
    }
    let opens = req
        .extensions()
        .get::<super::envelope::RpcMessage>()
        .is_some_and(|m| m.method.as_deref() == Some("initialize"));
    let opening = if opens {
        match b.sessions.open(&owner).await {
            Ok(o) => Some(o),
            Err(full) => {
                let id = req
                    .extensions()
                    .get::<super::envelope::RpcMessage>()
                    .map(|m| m.id.clone())
                    .unwrap_or_default();
                return session_limit(full, id);
            }
        }
    } else {
        None
    };
    let res = next.run(req).await;
    if let Some(id) = res
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        let id: SessionId = id.into();
        b.sessions.lock().insert(
            id.clone(),
            Bound {
                owner,
                last_used: std::time::Instant::now(),
            },
        );
        // The session may already have ended (a failed handshake); don't keep a stale owner.
        if !b.sessions.inner.has_session(&id).await.unwrap_or(false) {
            b.sessions.lock().remove(&id);
        }
    }
    drop(opening);
    res
}

/// A refused `initialize`: 429 when the agent's cap is taken by sessions still opening, 503 at
/// the replica's cap (another replica may have room); a JSON-RPC error either way.
fn session_limit(full: Full, id: serde_json::Value) -> Response {
    crate::telemetry::metrics::rate_limited(match &full {
        Full::Agent(_) => "sessions",
        Full::Server(_) => "server_sessions",
    });
    let (status, retry, message, limit) = match full {
        Full::Agent(n) => (
            StatusCode::TOO_MANY_REQUESTS,
            "30",
            format!(
                "too many open MCP sessions for this agent (limit {n}); end one with DELETE or reuse it"
            ),
            n,
        ),
        Full::Server(n) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "5",
            format!("this server holds its maximum of {n} MCP sessions; retry shortly"),
            n,
        ),
    };
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": SESSION_LIMIT, "message": message, "data": { "limit": limit } },
    });
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from_static(retry),
    );
    res
}

/// A session is never handed to an unauthenticated request.
fn strip_session(mut res: Response) -> Response {
    res.headers_mut().remove(SESSION_HEADER);
    res
}

/// The MCP spec's answer for an unknown or terminated session, also used for someone else's.
fn session_not_found() -> Response {
    crate::http::limits::refuse(
        StatusCode::NOT_FOUND,
        "session_not_found",
        "no such MCP session; start a new one with initialize",
    )
}
