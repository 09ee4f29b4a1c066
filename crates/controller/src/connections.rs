//! The controller's TCP connections: bounded in number, closed when idle.
//!
//! Anyone who can reach the port can open connections before proving who
//! they are. Left alone, 20 000 idle ones exhausted the controller's file
//! descriptors and took it offline for 85 s (issue #19). So:
//!
//! - a connection that has sent nothing is closed after [`Limits::first_byte`],
//!   and one with no traffic either way after [`Limits::idle`] (longer than
//!   the longest long poll; order streams ping every 5 s);
//! - at most [`Limits::max`] are open. A new one past that evicts the
//!   connection idle the longest instead of being refused: agents' order
//!   streams and health checks are busy, an attacker's sockets are not, so
//!   room is always made for the ones doing work.
//!
//! [`raise_fd_limit`] lifts the soft descriptor limit to the hard one at
//! start, and the default maximum keeps a reserve below it for files, the
//! log and outgoing connections.

use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// Descriptors kept free below the limit for everything that is not an
/// incoming connection.
const RESERVE: u64 = 512;
/// Connections closed at once when the process is out of descriptors (the
/// limit was lowered under it, or something else holds them): a flood
/// outpaces closing them one by one.
const EVICT_WHEN_OUT_OF_FDS: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max: usize,
    pub first_byte: Duration,
    pub idle: Duration,
}

impl Limits {
    /// From the process's descriptor limit (after [`raise_fd_limit`]).
    pub fn for_fd_limit(fds: u64, max: Option<usize>) -> Limits {
        let room = fds.saturating_sub(RESERVE).clamp(64, 65_536) as usize;
        Limits {
            max: max.unwrap_or(room).min(room),
            first_byte: Duration::from_secs(10),
            idle: Duration::from_secs(75),
        }
    }
}

/// Raises the soft limit on open files to the hard one; returns the limit
/// now in force.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: rlimit is plain data; getrlimit/setrlimit only read and write it.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 1024;
        }
        if l.rlim_cur < l.rlim_max {
            let raised = libc::rlimit { rlim_cur: l.rlim_max, rlim_max: l.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        l.rlim_cur
    }
}

/// What the listener knows of one open connection.
struct Tracked {
    /// Milliseconds since `Registry::epoch` of its last byte either way.
    last: AtomicU64,
    evicted: AtomicBool,
    waker: AtomicWaker,
}

struct Registry {
    epoch: Instant,
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
    next_id: AtomicU64,
}

impl Registry {
    fn elapsed_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Closes the `n` connections idle the longest, to make room; returns
    /// whether there was any to close.
    fn evict_idlest(&self, n: usize) -> bool {
        let open = self.open.lock().expect("connection registry lock");
        let mut candidates: Vec<&Arc<Tracked>> = open.values().filter(|t| !t.evicted.load(Ordering::Relaxed)).collect();
        if candidates.is_empty() {
            return false;
        }
        let n = n.min(candidates.len());
        candidates.select_nth_unstable_by_key(n - 1, |t| t.last.load(Ordering::Relaxed));
        for t in &candidates[..n] {
            t.evicted.store(true, Ordering::Relaxed);
            t.waker.wake();
        }
        true
    }
}

/// A TCP listener that keeps to [`Limits`]; serve it with `axum::serve`.
pub struct GuardedListener {
    inner: TcpListener,
    limits: Limits,
    registry: Arc<Registry>,
    /// TLS, when the controller serves it (the handshake runs on the
    /// connection's own task, not here).
    tls: Option<drover_tls::TlsAcceptor>,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, limits: Limits, tls: Option<drover_tls::TlsAcceptor>) -> GuardedListener {
        let registry = Arc::new(Registry { epoch: Instant::now(), open: Mutex::default(), next_id: AtomicU64::new(0) });
        GuardedListener { inner, limits, registry, tls }
    }

    /// How many connections are open now.
    pub fn open(&self) -> usize {
        self.registry.open.lock().expect("connection registry lock").len()
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = drover_tls::Served<GuardedStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (drover_tls::Served<GuardedStream>, SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (or a connection that died in the
                    // queue): make room, then try again.
                    tracing::warn!(error = %e, open = self.open(), "cannot accept a connection");
                    self.registry.evict_idlest(EVICT_WHEN_OUT_OF_FDS);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            };
            if self.open() >= self.limits.max && !self.registry.evict_idlest(1) {
                continue; // nothing to evict: this one is dropped, closed
            }
            // Raft's appends and their answers are small writes on
            // kept-alive connections: Nagle's algorithm would hold each for
            // a delayed ACK.
            let _ = stream.set_nodelay(true);
            let id = self.registry.next_id.fetch_add(1, Ordering::Relaxed);
            let tracked = Arc::new(Tracked {
                last: AtomicU64::new(self.registry.elapsed_ms()),
                evicted: AtomicBool::new(false),
                waker: AtomicWaker::new(),
            });
            self.registry.open.lock().expect("connection registry lock").insert(id, tracked.clone());
            let deadline = Instant::now() + self.limits.first_byte;
            let io = GuardedStream {
                inner: stream,
                id,
                tracked,
                registry: self.registry.clone(),
                limits: self.limits,
                spoke: false,
                timer: Box::pin(tokio::time::sleep_until(deadline)),
            };
            return (drover_tls::Served::new(self.tls.as_ref(), io), addr);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One accepted connection: fails its reads once it has been idle too long
/// or was evicted, which makes the HTTP server close it.
pub struct GuardedStream {
    inner: TcpStream,
    id: u64,
    tracked: Arc<Tracked>,
    registry: Arc<Registry>,
    limits: Limits,
    /// Whether the client has sent anything yet.
    spoke: bool,
    timer: Pin<Box<Sleep>>,
}

impl GuardedStream {
    fn touch(&mut self) {
        self.tracked.last.store(self.registry.elapsed_ms(), Ordering::Relaxed);
        let wait = if self.spoke { self.limits.idle } else { self.limits.first_byte };
        self.timer.as_mut().reset(Instant::now() + wait);
    }

    /// Whether the connection must close now (and, if not, a wake-up is set
    /// for when it might).
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.tracked.waker.register(cx.waker());
        if self.tracked.evicted.load(Ordering::Relaxed) {
            return Some(io::Error::new(io::ErrorKind::ConnectionAborted, "closed to make room for others"));
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Some(io::Error::new(io::ErrorKind::TimedOut, "idle connection closed"));
        }
        None
    }
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        self.registry.open.lock().expect("connection registry lock").remove(&self.id);
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.spoke = true;
                    self.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.tracked.evicted.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "closed to make room")));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.tracked.evicted.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "closed to make room")));
        }
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listener(max: usize, first_byte_ms: u64) -> (GuardedListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let limits = Limits {
            max,
            first_byte: Duration::from_millis(first_byte_ms),
            idle: Duration::from_millis(first_byte_ms),
        };
        (GuardedListener::new(l, limits, None), addr)
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed() {
        let (mut l, addr) = listener(10, 200).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut io, _) = l.accept().await;
        let mut buf = [0u8; 4];
        let begun = std::time::Instant::now();
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(begun.elapsed() < Duration::from_secs(2));
        drop(io);
        assert_eq!(client.read(&mut buf).await.unwrap_or(0), 0, "the client sees the close");
        assert_eq!(l.open(), 0);
    }

    #[tokio::test]
    async fn past_the_maximum_the_idlest_connection_makes_room() {
        let (mut l, addr) = listener(2, 60_000).await;
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let (mut idle, _) = l.accept().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let (mut busy, _) = l.accept().await;
        c2.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        busy.read_exact(&mut buf).await.unwrap();
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let (_third, _) = l.accept().await;
        let e = idle.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "the idle one went");
        c2.write_all(b"y").await.unwrap();
        busy.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"y", "the busy one stays");
    }
}
