//! The accept loop: one hyper HTTP/1 connection per TCP stream, with a cap on open connections,
//! a header-read timeout for slow clients, a longer idle timeout between keep-alive requests,
//! TCP_NODELAY, the peer address as `ConnectInfo`, and graceful shutdown.
//!
//! Timeouts: hyper's header-read timer starts as soon as a connection waits for a request head,
//! which would also cut idle keep-alive connections at the (short) header timeout. A per-connection
//! clock fixes that: while no byte of the next request has arrived, the timer's deadline is the
//! idle timeout from the last activity; from the first byte on, it is the header timeout. Nothing
//! times out while a response is being produced or streamed (hyper reads no head then), so SSE
//! streams are unaffected.
//!
//! Over the cap, a new connection waits in the kernel's accept backlog until a slot frees: the
//! header and idle timeouts bound how long any slot can be held by a client that sends nothing.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower_http::add_extension::AddExtension;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// How long shutdown waits for open connections after the server stopped accepting.
    pub shutdown_grace: Duration,
}

/// Accepts connections until `stop` resolves, then closes idle connections, lets the others finish
/// (up to the grace period) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    stop: impl Future<Output = ()> + Send,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
            () = &mut stop => break,
        };
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
            () = &mut stop => break,
        };
        // Without TCP_NODELAY, small responses wait on Nagle + delayed ACK (~40 ms per call).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        let clock = Arc::new(ConnClock::new(limits));
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
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {:?}; closing",
            limits.shutdown_grace
        );
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
    /// The last byte read or written.
    last_activity: Instant,
    /// When the first byte arrived since the last write: the start of the next request.
    request_started: Option<Instant>,
}

impl ConnClock {
    fn new(limits: ConnLimits) -> Self {
        Self {
            limits,
            // A new connection owes its first request head within the header timeout.
            state: Mutex::new(ClockState {
                last_activity: Instant::now(),
                request_started: Some(Instant::now()),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) {
        let mut s = self.lock();
        let now = Instant::now();
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
            idle_timeout: Duration::from_secs(5),
            max_connections: 4,
            shutdown_grace: Duration::from_secs(1),
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let server = tokio::spawn(serve(listener, app, limits, async move {
            stopped.cancelled().await
        }));
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
