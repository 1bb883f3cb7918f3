//! The accept loop: one hyper HTTP/1 connection per TCP stream, with caps on open connections
//! (in all and per client address), a first-byte deadline, a header-read timeout for slow
//! clients, a longer idle timeout between keep-alive requests, TCP_NODELAY, the peer address as
//! `ConnectInfo`, and graceful shutdown.
//!
//! Timeouts: hyper's header-read timer starts as soon as a connection waits for a request head,
//! which would also cut idle keep-alive connections at the (short) header timeout. A per-connection
//! clock fixes that: a new connection must send its first byte within the first-byte timeout;
//! while no byte of the next request has arrived, the deadline is the idle timeout from the last
//! activity; from the first byte on, it is the header timeout. Nothing times out while a response
//! is being produced or streamed (hyper reads no head then), so SSE streams are unaffected.
//!
//! Caps: idle connections must not starve active ones. A connection is idle while hyper waits for
//! a request head of which no byte has arrived. At the global cap the oldest idle connection is
//! closed to make room (one that never sent a byte first); only when every connection is serving
//! a request does a new one wait in the kernel's accept backlog. Past the per-address cap the
//! address's own oldest idle connection is closed, or, if it has none, the new connection.
//! On shutdown the listener closes at once.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tower_http::add_extension::AddExtension;

use super::ratelimit::client_key;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    /// A new connection's first byte must arrive within this time.
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// How long shutdown waits for open connections after the server stopped accepting.
    pub shutdown_grace: Duration,
}

/// Accepts connections until `stop` is cancelled; then closes the listener at once, asks every
/// connection to finish (idle ones close, busy ones answer with `Connection: close`), runs
/// `drain` alongside, and returns when both are done or the grace period passed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    stop: CancellationToken,
    drain: impl Future<Output = ()> + Send,
) {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Registry::default());
    let per_address = limits.max_connections_per_address.max(1);
    'accept: loop {
        // Room for one more: at the cap, shed the oldest idle connection, else wait for one to
        // end or go idle.
        while open.len() >= limits.max_connections.max(1) {
            if open.shed_idle(None) {
                break;
            }
            tokio::select! {
                () = open.freed.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = stop.cancelled() => break 'accept,
            }
        }
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let address = client_key(peer.ip());
        if open.count_from(address) >= per_address && !open.shed_idle(Some(address)) {
            tracing::debug!(%peer, "connection refused: too many open from this address");
            drop(tcp);
            continue;
        }
        // Without TCP_NODELAY, small responses wait on Nagle + delayed ACK (~40 ms per call).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        let clock = Arc::new(ConnClock::new(limits));
        let (id, shed) = open.add(address, clock.clone());
        let io = TokioIo::new(TimedIo {
            inner: tcp,
            clock: clock.clone(),
        });
        // The rate limiter and logs read the peer address from the request's extensions.
        let svc = TowerToHyperService::new(AddExtension::new(app.clone(), ConnectInfo(peer)));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(ConnTimer(clock))
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        let conn = graceful.watch(builder.serve_connection(io, svc));
        let open = open.clone();
        tokio::spawn(async move {
            tokio::select! {
                res = conn => if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                // Only idle connections are shed: no request is lost. The sender goes only with
                // the connection's entry, after this select has ended, or with the signal.
                Ok(()) = shed => tracing::debug!(%peer, "idle connection closed to make room"),
            }
            open.remove(id);
        });
    }
    drop(listener);
    let connections = async {
        if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "connections still open after {:?}; closing",
                limits.shutdown_grace
            );
        }
    };
    tokio::join!(connections, drain);
}

/// The open connections, for the caps.
#[derive(Default)]
struct Registry {
    state: Mutex<RegistryState>,
    /// Notified when a connection ends.
    freed: tokio::sync::Notify,
}

#[derive(Default)]
struct RegistryState {
    next_id: u64,
    conns: HashMap<u64, OpenConn>,
    per_address: HashMap<IpAddr, usize>,
}

struct OpenConn {
    address: IpAddr,
    clock: Arc<ConnClock>,
    /// Closes the connection. A oneshot rather than a cancellation token: the connection's task
    /// polls it at every wake-up, and a token's poll takes a mutex.
    shed: oneshot::Sender<()>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().conns.len()
    }

    fn count_from(&self, address: IpAddr) -> usize {
        self.lock().per_address.get(&address).copied().unwrap_or(0)
    }

    fn add(&self, address: IpAddr, clock: Arc<ConnClock>) -> (u64, oneshot::Receiver<()>) {
        let mut s = self.lock();
        s.next_id += 1;
        let id = s.next_id;
        let (shed, closed) = oneshot::channel();
        s.conns.insert(
            id,
            OpenConn {
                address,
                clock,
                shed,
            },
        );
        *s.per_address.entry(address).or_default() += 1;
        (id, closed)
    }

    fn remove(&self, id: u64) {
        let mut s = self.lock();
        if let Some(c) = s.conns.remove(&id) {
            forget_one(&mut s.per_address, c.address);
        }
        drop(s);
        self.freed.notify_waiters();
    }

    /// Closes the oldest idle connection (of `address`, if given): one that never sent a byte
    /// first, else the one idle longest. False when none is idle.
    fn shed_idle(&self, address: Option<IpAddr>) -> bool {
        let mut s = self.lock();
        let victim = s
            .conns
            .iter()
            .filter(|(_, c)| address.is_none_or(|a| a == c.address))
            .filter_map(|(id, c)| c.clock.idle_since().map(|since| (*id, since)))
            .min_by_key(|(_, (spoke, since))| (*spoke, *since))
            .map(|(id, _)| id);
        let Some(id) = victim else {
            return false;
        };
        if let Some(c) = s.conns.remove(&id) {
            forget_one(&mut s.per_address, c.address);
            let _ = c.shed.send(());
        }
        true
    }
}

fn forget_one(per_address: &mut HashMap<IpAddr, usize>, address: IpAddr) {
    if let Some(n) = per_address.get_mut(&address) {
        *n -= 1;
        if *n == 0 {
            per_address.remove(&address);
        }
    }
}

/// What the timer needs to know about one connection.
#[derive(Debug)]
struct ConnClock {
    limits: ConnLimits,
    state: Mutex<ClockState>,
}

#[derive(Debug)]
struct ClockState {
    /// When the connection was accepted.
    opened: Instant,
    /// Whether any byte was ever read.
    spoke: bool,
    /// The last byte read or written.
    last_activity: Instant,
    /// When the first byte arrived since the last write: the start of the next request.
    request_started: Option<Instant>,
    /// hyper is waiting for a request head (its header timer is armed).
    awaiting_head: usize,
}

impl ConnClock {
    fn new(limits: ConnLimits) -> Self {
        let now = Instant::now();
        Self {
            limits,
            state: Mutex::new(ClockState {
                opened: now,
                spoke: false,
                last_activity: now,
                request_started: None,
                awaiting_head: 0,
            }),
        }
    }

    /// When idle (waiting for a request of which no byte arrived): whether the connection ever
    /// spoke, and since when it is idle.
    fn idle_since(&self) -> Option<(bool, Instant)> {
        let s = self.lock();
        (s.awaiting_head > 0 && s.request_started.is_none()).then_some((s.spoke, s.last_activity))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) {
        let mut s = self.lock();
        let now = Instant::now();
        s.spoke = true;
        s.last_activity = now;
        s.request_started.get_or_insert(now);
    }

    fn wrote(&self) {
        let mut s = self.lock();
        s.last_activity = Instant::now();
        s.request_started = None;
    }

    /// When a connection waiting for a request head gives up.
    fn deadline(&self) -> Instant {
        let s = self.lock();
        match s.request_started {
            Some(t) => t + self.limits.header_read_timeout,
            // A new connection owes its first byte soon: holding a socket open costs nothing to
            // the client and a slot to everyone else.
            None if !s.spoke => {
                s.opened
                    + self
                        .limits
                        .first_byte_timeout
                        .min(self.limits.header_read_timeout)
            }
            None => s.last_activity + self.limits.idle_timeout,
        }
    }
}

/// The TCP stream, reporting reads and writes to the connection's clock.
struct TimedIo {
    inner: TcpStream,
    clock: Arc<ConnClock>,
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.read();
        }
        res
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.wrote();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.wrote();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper's timer for one connection. hyper uses it only for the header-read timeout; the deadline
/// it asks for is replaced by the clock's (see the module docs).
#[derive(Clone)]
struct ConnTimer(Arc<ConnClock>);

impl Timer for ConnTimer {
    fn sleep(&self, _duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadSleep::new(self.0.clone()))
    }

    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadSleep::new(self.0.clone()))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, _new_deadline: Instant) {
        *sleep = Box::pin(HeadSleep::new(self.0.clone()));
    }
}

/// Fires at the clock's deadline, re-read on every poll (hyper polls it whenever the connection
/// makes progress, so a first byte arriving moves the deadline at once).
struct HeadSleep {
    clock: Arc<ConnClock>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    at: Instant,
}

impl HeadSleep {
    fn new(clock: Arc<ConnClock>) -> Self {
        clock.lock().awaiting_head += 1;
        let at = clock.deadline();
        Self {
            clock,
            sleep: Box::pin(tokio::time::sleep_until(at.into())),
            at,
        }
    }
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let at = self.clock.deadline();
        if at != self.at {
            self.at = at;
            self.sleep.as_mut().reset(at.into());
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        let mut s = self.clock.lock();
        s.awaiting_head = s.awaiting_head.saturating_sub(1);
    }
}

impl Sleep for HeadSleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The rate limiter relies on this: every request carries the peer's address.
    #[tokio::test]
    async fn requests_carry_the_peer_address() {
        let app =
            Router::new().route(
                "/peer",
                get(
                    |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move {
                        peer.to_string()
                    },
                ),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ConnLimits {
            header_read_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_connections: 4,
            max_connections_per_address: 4,
            shutdown_grace: Duration::from_secs(1),
        };
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, limits, stop.clone(), async {}));
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        tcp.write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with(&local.to_string()), "{out}");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stops")
            .unwrap();
    }
}
