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
//!
//! An awake session is rmcp's machinery: a worker task, the running handler's task and seven
//! channels (tokio allocates 32 slots of a channel's message type whatever its capacity), some
//! 60 kB. So a session with nothing under way (no request, no response stream, no subscription)
//! for [`SessionLimits::sleep_after`] is put to sleep: its worker is closed and only its binding
//! and `initialize` parameters stay (about 4 kB measured). Its next request wakes it through
//! rmcp's own restore path (this registry is also the service's [`SessionStore`]): rmcp starts a
//! fresh worker and replays the handshake before the request (0.2–0.3 ms), so the client sees one
//! session throughout. A GET stream of a session that never subscribed has nothing to carry but
//! keep-alives: it waits without keeping the session awake and is handed the worker's stream when
//! the session subscribes. A sleeping session expires after the same five idle minutes as an
//! awake one.

use super::gate::Gate;
use super::server::{HttpAuth, PendingAuth};
use crate::auth::AgentCaller;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_core::Stream;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionHandle, LocalSessionManager, LocalSessionManagerError, SessionConfig,
};
use rmcp::transport::streamable_http_server::session::{
    RestoreOutcome, ServerSseMessage, SessionId, SessionManager, SessionState, SessionStore,
    SessionStoreError,
};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The header carrying the session id (2025-11-25 streamable HTTP).
pub const SESSION_HEADER: &str = "mcp-session-id";

/// How long a finished request's stream stays resumable (rmcp's cache of completed streams).
const COMPLETED_CACHE_TTL: Duration = Duration::from_secs(15);

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

    /// `Owner::of(caller) == *self`, without building one.
    fn is(&self, caller: &AgentCaller) -> bool {
        self.workspace_id == caller.workspace_id() && self.agent_id == caller.agent_id()
    }
}

/// rmcp's in-memory session manager plus the owner of each session, and the sleeping sessions.
/// Shared by the `/mcp` service (as its [`SessionManager`] and [`SessionStore`]) and the rest of
/// the server (through `HttpContext`).
#[derive(Debug)]
pub struct SessionRegistry {
    shared: Arc<Shared>,
    /// `initialize` requests under way, per owner: they count against the caps until bound.
    opening: Mutex<HashMap<Owner, usize>>,
    limits: SessionLimits,
    sweeper: std::sync::Once,
    /// Ends the sweeper with the registry.
    stop: CancellationToken,
}

/// What the registry, its response streams and its sweeper share.
#[derive(Debug)]
struct Shared {
    inner: LocalSessionManager,
    table: Mutex<Table>,
    /// Something may have gone quiet: the sweeper looks again.
    wake: Arc<Notify>,
    sleep_after: Duration,
}

#[derive(Debug, Default)]
struct Table {
    bound: HashMap<SessionId, Bound>,
    /// The `initialize` parameters of the sessions rmcp opened (it stores them after the
    /// handshake, before the binding exists), to wake a sleeping session with.
    states: HashMap<SessionId, SessionState>,
}

/// A session's owner, when it was last used, and whether it is awake.
#[derive(Debug)]
struct Bound {
    owner: Owner,
    last_used: Instant,
    /// Requests and response streams under way.
    busy: u32,
    /// Not put to sleep before this plus `sleep_after` (a response stream cut before its answer
    /// keeps the session awake while the answer can still be resumed).
    quiet_from: Instant,
    /// Subscribed: its watchers live in the running handler, so the session never sleeps.
    pinned: bool,
    asleep: bool,
    /// A DELETE is under way: the next close is the client's.
    deleting: bool,
    /// Closes rmcp still reports for workers that were put to sleep; not the session's end.
    stray_closes: u32,
    /// Open GET streams of a session that never subscribed (so nothing is sent on them but
    /// keep-alives): they wait here for the worker's stream, and end when the session does.
    standalone: Slots,
}

/// A standalone stream of the worker, handed to a waiting GET stream.
type Attached = Pin<Box<dyn Stream<Item = ServerSseMessage> + Send + Sync + 'static>>;

#[derive(Default)]
struct Slots(Vec<tokio::sync::oneshot::Sender<Attached>>);

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} waiting GET stream(s)", self.0.len())
    }
}

impl Bound {
    fn new(owner: Owner, now: Instant) -> Self {
        Self {
            owner,
            last_used: now,
            busy: 0,
            quiet_from: now,
            pinned: false,
            asleep: false,
            deleting: false,
            stray_closes: 0,
            standalone: Slots::default(),
        }
    }
}

/// Caps on open MCP sessions, and when an idle one is put to sleep.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub per_agent: usize,
    pub global: usize,
    /// How long a session with nothing under way stays awake.
    pub sleep_after: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            per_agent: 32,
            global: 4096,
            sleep_after: Duration::from_secs(1),
        }
    }
}

impl Default for SessionRegistry {
    fn default() -> Self {
        Self::new(SessionLimits::default())
    }
}

impl Drop for SessionRegistry {
    fn drop(&mut self) {
        self.stop.cancel();
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

/// A request or response stream under way on a session: it stays awake meanwhile.
struct Busy {
    shared: Arc<Shared>,
    id: SessionId,
    /// A request's response stream: dropped before its end, it may still be resumed.
    request: bool,
    ended: bool,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = Instant::now();
        if let Some(b) = self.shared.lock().bound.get_mut(&self.id) {
            b.busy = b.busy.saturating_sub(1);
            let from = if self.request && !self.ended {
                now + COMPLETED_CACHE_TTL
            } else {
                now
            };
            b.quiet_from = b.quiet_from.max(from);
        }
        self.shared.wake.notify_one();
    }
}

/// A response stream that keeps its session awake while it is open.
struct Tracked<S> {
    stream: S,
    busy: Option<Busy>,
}

impl<S: Stream<Item = ServerSseMessage> + Unpin> Stream for Tracked<S> {
    type Item = ServerSseMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.stream).poll_next(cx);
        if let Poll::Ready(None) = next
            && let Some(b) = self.busy.as_mut()
        {
            b.ended = true;
        }
        next
    }
}

/// A session's GET stream. Until the session subscribes it waits for the worker's stream without
/// keeping the session awake (an idle session with a GET stream open can sleep); it ends when the
/// session ends.
struct Standalone {
    attach: Option<tokio::sync::oneshot::Receiver<Attached>>,
    inner: Option<Attached>,
}

impl Stream for Standalone {
    type Item = ServerSseMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(rx) = this.attach.as_mut() {
            match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(stream)) => {
                    this.attach = None;
                    this.inner = Some(stream);
                }
                // The session ended.
                Poll::Ready(Err(_)) => {
                    this.attach = None;
                    return Poll::Ready(None);
                }
            }
        }
        match this.inner.as_mut() {
            Some(s) => s.as_mut().poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table stays consistent even if a holder panicked: every update is a few field writes.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a session busy until the returned guard drops; `None` if it is not bound.
    fn busy(self: &Arc<Self>, id: &SessionId, request: bool) -> Option<Busy> {
        let mut table = self.lock();
        let b = table.bound.get_mut(id)?;
        Some(self.busy_bound(b, id, request))
    }

    /// [`Shared::busy`] for a binding found under a lock already held.
    fn busy_bound(self: &Arc<Self>, b: &mut Bound, id: &SessionId, request: bool) -> Busy {
        b.busy += 1;
        Busy {
            shared: self.clone(),
            id: id.clone(),
            request,
            ended: false,
        }
    }

    /// Forgets a session: its binding and its `initialize` parameters.
    fn forget(table: &mut Table, id: &SessionId) {
        table.bound.remove(id);
        table.states.remove(id);
    }

    /// Puts to sleep the sessions quiet for `sleep_after` and forgets the sleeping ones idle past
    /// rmcp's keep-alive. Returns the workers to close and when to look again.
    fn sweep(&self, now: Instant) -> (Vec<LocalSessionHandle>, Option<Instant>) {
        let keep_alive = SessionConfig::DEFAULT_KEEP_ALIVE;
        let mut table = self.lock();
        // rmcp's map of workers is taken only if free: a session found asleep under our lock then
        // has no worker left, so whoever wakes it can start one.
        let mut workers = self.inner.sessions.try_write().ok();
        let mut closing = Vec::new();
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        let mut later = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for (id, b) in table.bound.iter_mut() {
            if b.asleep {
                let due = b.last_used + keep_alive;
                if now >= due {
                    expired.push(id.clone());
                } else {
                    later(due);
                }
                continue;
            }
            if b.busy > 0 || b.pinned {
                // Looked at again when it goes quiet.
                continue;
            }
            let due = b.quiet_from.max(b.last_used) + self.sleep_after;
            if now < due {
                later(due);
                continue;
            }
            let Some(workers) = workers.as_mut() else {
                later(now + Duration::from_millis(50));
                continue;
            };
            // No worker: it already ended, and rmcp's close will forget the session.
            if let Some(handle) = workers.remove(id) {
                b.asleep = true;
                b.stray_closes += 1;
                closing.push(handle);
            }
        }
        for id in &expired {
            Self::forget(&mut table, id);
        }
        (closing, next)
    }
}

/// Puts quiet sessions to sleep until the registry is dropped. At most one sweep per
/// `sleep_after` when woken, so a busy server does not scan the table on every request.
async fn sweeper(shared: Weak<Shared>, stop: CancellationToken) {
    let mut next: Option<Instant> = None;
    loop {
        let Some((wake, sleep_after)) = shared.upgrade().map(|s| (s.wake.clone(), s.sleep_after))
        else {
            return;
        };
        let timer = async {
            match next {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = timer => {}
            _ = wake.notified() => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(sleep_after) => {}
                }
            }
        }
        let Some(s) = shared.upgrade() else { return };
        let (closing, due) = s.sweep(Instant::now());
        drop(s);
        next = due;
        if !closing.is_empty() {
            tracing::debug!(sessions = closing.len(), "put idle MCP sessions to sleep");
        }
        if closing.is_empty() {
            continue;
        }
        for handle in closing {
            // The worker ends; rmcp's close for it is recognised as stray.
            let _ = handle.close().await;
        }
        // Once the workers have ended, hand their memory back to the system: otherwise the
        // allocator keeps it, and a burst of sessions costs its peak for as long as the process.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let _ = crate::memory::release_free_memory();
    }
}

impl SessionRegistry {
    pub fn new(limits: SessionLimits) -> Self {
        let mut inner = LocalSessionManager::default();
        // A smaller footprint per awake session: fewer buffered messages, finished request streams
        // kept for late resumption 15 s instead of 60, and 10 s (not 60) to send `initialize`.
        inner.session_config.channel_capacity = 8;
        inner.session_config.completed_cache_ttl = COMPLETED_CACHE_TTL;
        inner.session_config.init_timeout = Some(Duration::from_secs(10));
        Self {
            shared: Arc::new(Shared {
                inner,
                table: Mutex::default(),
                wake: Arc::default(),
                sleep_after: limits.sleep_after,
            }),
            opening: Mutex::default(),
            limits: SessionLimits {
                per_agent: limits.per_agent.max(1),
                global: limits.global.max(1),
                sleep_after: limits.sleep_after,
            },
            sweeper: std::sync::Once::new(),
            stop: CancellationToken::new(),
        }
    }

    fn opening_lock(&self) -> std::sync::MutexGuard<'_, HashMap<Owner, usize>> {
        self.opening.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count_of(bound: &HashMap<SessionId, Bound>, owner: &Owner) -> usize {
        bound.values().filter(|b| b.owner == *owner).count()
    }

    /// Starts the sweeper (once, on the first bound session: it needs the runtime).
    fn start_sweeper(&self) {
        self.sweeper.call_once(|| {
            tokio::spawn(sweeper(Arc::downgrade(&self.shared), self.stop.clone()));
        });
    }

    /// Counts a session `owner` is opening. At the agent's cap its least recently used session
    /// is closed first; at the replica's cap the new one is refused. Sleeping sessions idle past
    /// the keep-alive are forgotten first, so only live sessions count.
    async fn open(&self, owner: &Owner) -> Result<Opening<'_>, Full> {
        let at_cap = {
            let table = self.lock();
            Self::count_of(&table.bound, owner) + 1 > self.limits.per_agent
                || table.bound.len() + 1 > self.limits.global
        };
        if at_cap {
            let keep_alive = SessionConfig::DEFAULT_KEEP_ALIVE;
            let mut table = self.lock();
            let expired: Vec<SessionId> = table
                .bound
                .iter()
                .filter(|(_, b)| b.asleep && b.last_used.elapsed() >= keep_alive)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired {
                Shared::forget(&mut table, id);
            }
        }
        loop {
            let lru = {
                let table = self.lock();
                let pending = self.opening_lock().get(owner).copied().unwrap_or(0);
                if Self::count_of(&table.bound, owner) + pending < self.limits.per_agent {
                    break;
                }
                table
                    .bound
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
            if let Err(e) = self.close(&id).await {
                tracing::warn!(error = %e, "could not close an evicted session");
            }
        }
        let table = self.lock();
        let mut opening = self.opening_lock();
        if table.bound.len() + opening.values().sum::<usize>() >= self.limits.global {
            return Err(Full::Server(self.limits.global));
        }
        *opening.entry(owner.clone()).or_default() += 1;
        Ok(Opening {
            registry: self,
            owner: owner.clone(),
        })
    }

    /// Ends a session, awake or asleep.
    async fn close(&self, id: &SessionId) -> Result<(), LocalSessionManagerError> {
        Shared::forget(&mut self.lock(), id);
        self.shared.inner.close_session(id).await
    }

    /// Closes every open session of `agent_id` in `workspace_id`, ending its streams; returns how
    /// many were closed. A later request with one of their ids gets 404.
    pub async fn close_agent(&self, workspace_id: &str, agent_id: &str) -> usize {
        let ids: Vec<SessionId> = {
            let mut table = self.lock();
            let ids: Vec<SessionId> = table
                .bound
                .iter()
                .filter(|(_, b)| {
                    b.owner.workspace_id == workspace_id && b.owner.agent_id == agent_id
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                Shared::forget(&mut table, id);
            }
            ids
        };
        let mut closed = 0;
        for id in &ids {
            // A sleeping session has no worker: closing it is forgetting it.
            match self.shared.inner.close_session(id).await {
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
            .bound
            .values()
            .map(|b| (b.owner.workspace_id.clone(), b.owner.agent_id.clone()))
            .collect();
        agents.sort();
        agents.dedup();
        agents
    }

    /// How many sessions are open and bound to an agent, awake or asleep.
    pub fn len(&self) -> usize {
        self.lock().bound.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many open sessions are asleep (no worker; woken by their next request).
    pub fn asleep(&self) -> usize {
        self.lock().bound.values().filter(|b| b.asleep).count()
    }

    /// Whether [`bind`] would pass `req` on for `caller`: it names no session, or one of the
    /// caller's. A request on an unconfirmed key that it would not pass on is confirmed first, so
    /// that a refused key is refused before a session is looked up (`mcp::http::confirm`).
    pub fn would_pass(&self, req: &Request, caller: &AgentCaller) -> bool {
        match req.headers().get(SESSION_HEADER).map(HeaderValue::to_str) {
            None => true,
            Some(Ok(id)) => {
                let table = self.lock();
                table.bound.get(id).is_some_and(|b| b.owner.is(caller))
            }
            Some(Err(_)) => false,
        }
    }

    /// What a request naming session `id` finds, under one lock: the caller's own session (then
    /// used now and busy until the returned guard drops, with whether its client declared the
    /// tasks extension), another agent's, or none.
    fn claim(&self, id: &SessionId, caller: &AgentCaller) -> Claim {
        let mut table = self.lock();
        let Some(bound) = table.bound.get_mut(id) else {
            return Claim::Unknown;
        };
        if !bound.owner.is(caller) {
            return Claim::Other {
                same_workspace: bound.owner.workspace_id == caller.workspace_id(),
            };
        }
        bound.last_used = Instant::now();
        let busy = self.shared.busy_bound(bound, id, false);
        let tasks = table
            .states
            .get(id)
            .map(|state| state.initialize_params.capabilities.supports_tasks());
        Claim::Mine(busy, Owned { tasks })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.shared.lock()
    }

    /// A GET stream for a session that never subscribed: it waits for the worker's stream
    /// (handed over on `resources/subscribe`) without keeping the session awake. `None` for a
    /// subscribed or unbound session.
    fn wait_standalone(&self, id: &SessionId) -> Option<Standalone> {
        let mut table = self.lock();
        let b = table.bound.get_mut(id).filter(|b| !b.pinned)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        b.standalone.0.retain(|s| !s.is_closed());
        b.standalone.0.push(tx);
        Some(Standalone {
            attach: Some(rx),
            inner: None,
        })
    }

    /// Wraps a response stream so its session stays awake while it is open.
    fn track<S>(&self, id: &SessionId, stream: S, request: bool) -> Tracked<S> {
        Tracked {
            stream,
            busy: self.shared.busy(id, request),
        }
    }
}

/// The registry is the `/mcp` service's session manager: everything goes to rmcp's local manager;
/// closing a session also forgets its owner, and a sleeping session is woken by rmcp's restore.
impl SessionManager for SessionRegistry {
    type Error = LocalSessionManagerError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.shared.inner.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.shared.inner.initialize_session(id, message).await
    }

    /// Awake sessions only: for a sleeping one rmcp loads it from the store and restores it.
    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.shared.inner.has_session(id).await
    }

    /// The end of a session (DELETE, its worker ended) – except the end of a worker that was put
    /// to sleep.
    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        let ends = {
            let mut table = self.lock();
            match table.bound.get_mut(id) {
                Some(b) if !b.deleting && b.stray_closes > 0 => {
                    b.stray_closes -= 1;
                    false
                }
                _ => {
                    Shared::forget(&mut table, id);
                    true
                }
            }
        };
        if ends {
            self.shared.inner.close_session(id).await
        } else {
            Ok(())
        }
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        // Its watchers run in this session's handler: a subscribed session stays awake.
        #[allow(deprecated)]
        let subscribes = matches!(&message, ClientJsonRpcMessage::Request(r)
            if matches!(r.request, ClientRequest::SubscribeRequest(_)));
        if subscribes {
            let mut waiting = match self.lock().bound.get_mut(id) {
                Some(b) if !b.pinned => {
                    b.pinned = true;
                    std::mem::take(&mut b.standalone.0)
                }
                _ => Vec::new(),
            };
            // Notifications go to the worker's standalone stream: hand it to an open GET stream
            // before the subscription exists, so none is missed. Any other waiting GET stream is a
            // shadow that only carries keep-alives, as in rmcp.
            if let Some(slot) = waiting.iter().position(|s| !s.is_closed()) {
                let stream =
                    SessionManager::create_standalone_stream(&self.shared.inner, id).await?;
                let _ = waiting
                    .swap_remove(slot)
                    .send(Box::pin(self.track(id, stream, false)));
            }
            if let Some(b) = self.lock().bound.get_mut(id) {
                b.standalone
                    .0
                    .extend(waiting.into_iter().filter(|s| !s.is_closed()));
            }
        }
        let stream = SessionManager::create_stream(&self.shared.inner, id, message).await?;
        Ok(self.track(id, stream, true))
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.shared.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        if let Some(waiting) = self.wait_standalone(id) {
            return Ok(waiting);
        }
        let stream = SessionManager::create_standalone_stream(&self.shared.inner, id).await?;
        Ok(Standalone {
            attach: None,
            inner: Some(Box::pin(self.track(id, stream, false))),
        })
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        // `index/request` resumes a request's stream, `index` the standalone one.
        let request = last_event_id.contains('/');
        if !request && let Some(waiting) = self.wait_standalone(id) {
            return Ok(waiting);
        }
        let stream = SessionManager::resume(&self.shared.inner, id, last_event_id).await?;
        Ok(Standalone {
            attach: None,
            inner: Some(Box::pin(self.track(id, stream, request))),
        })
    }

    /// Wakes a sleeping session: a fresh worker with the same id, into which rmcp replays the
    /// handshake. Only sessions this registry put to sleep are restored (never one from an id
    /// alone, which would have no owner).
    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        {
            let mut table = self.lock();
            match table.bound.get_mut(&id) {
                Some(b) if b.asleep => {
                    b.asleep = false;
                    b.quiet_from = Instant::now();
                }
                _ => return Ok(RestoreOutcome::NotSupported),
            }
        }
        self.shared.inner.restore_session(id).await
    }
}

/// The sleeping sessions' store: rmcp saves every session's `initialize` parameters after the
/// handshake and loads them to restore a session it does not have awake.
#[async_trait::async_trait]
impl SessionStore for SessionRegistry {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let table = self.lock();
        Ok(match table.bound.get(session_id) {
            Some(b) if b.asleep => table.states.get(session_id).cloned(),
            _ => None,
        })
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        self.lock().states.insert(session_id.into(), state.clone());
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        Shared::forget(&mut self.lock(), &session_id.into());
        Ok(())
    }
}

/// Set by [`bind`] on a request whose session is the caller's.
#[derive(Debug, Clone, Copy)]
pub struct Owned {
    /// Whether the session's client declared the tasks extension at `initialize`; `None` when
    /// its `initialize` parameters are not kept.
    pub tasks: Option<bool>,
}

/// See [`SessionRegistry::claim`].
enum Claim {
    Mine(Busy, Owned),
    Other { same_workspace: bool },
    Unknown,
}

/// State for [`bind`].
#[derive(Clone)]
pub struct Binder {
    pub sessions: Arc<SessionRegistry>,
    pub gate: Gate,
}

/// Runs inside bearer authentication on `/mcp`: a request naming a session must come from the
/// agent that opened it; a response that opens a session binds it to the caller.
pub async fn bind(b: &Binder, mut req: Request, next: impl crate::http::Continue) -> Response {
    // An unconfirmed key's agent is its agent for good: a key never changes hands.
    let caller = match req.extensions().get::<PendingAuth>() {
        Some(p) => Some(p.0.unconfirmed.caller().clone()),
        None => req
            .extensions()
            .get::<HttpAuth>()
            .and_then(|a| a.0.as_ref().as_ref().ok().cloned()),
    };
    let Some(caller) = caller else {
        // No authenticated caller: the gate refuses whatever this is; it can open no session.
        return strip_session(next(req).await);
    };
    let session = match req.headers().get(SESSION_HEADER).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(id)) => Some(SessionId::from(id)),
        Some(Err(_)) => return session_not_found(),
    };
    if let Some(id) = session {
        match b.sessions.claim(&id, &caller) {
            // Awake (or woken) for the whole request, so it is not put to sleep midway.
            Claim::Mine(_busy, owned) => {
                req.extensions_mut().insert(owned);
                let deleting = req.method() == Method::DELETE;
                if deleting && let Some(bound) = b.sessions.lock().bound.get_mut(&id) {
                    bound.deleting = true;
                }
                let res = next(req).await;
                // A refused DELETE leaves the session open.
                if deleting && let Some(bound) = b.sessions.lock().bound.get_mut(&id) {
                    bound.deleting = false;
                }
                return res;
            }
            Claim::Other { same_workspace } => {
                tracing::warn!(
                    agent = %caller.agent_id(),
                    "refused a request on another agent's MCP session"
                );
                let reason = if same_workspace {
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
            Claim::Unknown => return session_not_found(),
        }
    }
    let owner = Owner::of(&caller);
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
    let res = next(req).await;
    if let Some(id) = res
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        let id: SessionId = id.into();
        b.sessions
            .lock()
            .bound
            .insert(id.clone(), Bound::new(owner, Instant::now()));
        // The session may already have ended (a failed handshake); don't keep a stale owner.
        if !b
            .sessions
            .shared
            .inner
            .has_session(&id)
            .await
            .unwrap_or(false)
        {
            Shared::forget(&mut b.sessions.lock(), &id);
        }
        b.sessions.start_sweeper();
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
