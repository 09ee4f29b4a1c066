//! A server connection that shakes hands when first used.
//!
//! A listener hands out connections one at a time; doing the TLS handshake
//! there would let one slow (or silent) client hold up every other. So the
//! accepted connection is returned at once, and the handshake runs when the
//! HTTP server first reads or writes it — on that connection's own task.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{Accept, TlsAcceptor};

pub enum LazyTls<IO> {
    Handshaking(Box<Accept<IO>>),
    Ready(Box<TlsStream<IO>>),
    Failed,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> LazyTls<IO> {
    pub fn new(acceptor: &TlsAcceptor, io: IO) -> LazyTls<IO> {
        LazyTls::Handshaking(Box::new(acceptor.accept(io)))
    }

    /// Drives the handshake; `Ready(Ok)` once the stream is usable.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self {
                LazyTls::Ready(_) => return Poll::Ready(Ok(())),
                LazyTls::Failed => return Poll::Ready(Err(io::Error::other("the TLS handshake failed"))),
                LazyTls::Handshaking(accept) => match Pin::new(accept.as_mut()).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(stream)) => *self = LazyTls::Ready(Box::new(stream)),
                    Poll::Ready(Err(e)) => {
                        *self = LazyTls::Failed;
                        return Poll::Ready(Err(e));
                    }
                },
            }
        }
    }

    fn stream(&mut self) -> &mut TlsStream<IO> {
        match self {
            LazyTls::Ready(s) => s,
            _ => unreachable!("poll_ready returned Ready(Ok)"),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for LazyTls<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.poll_ready(cx) {
            Poll::Ready(Ok(())) => Pin::new(self.stream()).poll_read(cx, buf),
            other => other,
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for LazyTls<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.poll_ready(cx) {
            Poll::Ready(Ok(())) => Pin::new(self.stream()).poll_write(cx, data),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_ready(cx) {
            Poll::Ready(Ok(())) => Pin::new(self.stream()).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.as_mut().get_mut() {
            LazyTls::Ready(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// An accepted connection, plain or TLS, as the server was configured.
pub enum Served<IO> {
    Plain(IO),
    Tls(LazyTls<IO>),
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Served<IO> {
    pub fn new(acceptor: Option<&TlsAcceptor>, io: IO) -> Served<IO> {
        match acceptor {
            Some(a) => Served::Tls(LazyTls::new(a, io)),
            None => Served::Plain(io),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Served<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Served::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Served::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Served<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Served::Plain(io) => Pin::new(io).poll_write(cx, data),
            Served::Tls(io) => Pin::new(io).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Served::Plain(io) => Pin::new(io).poll_flush(cx),
            Served::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Served::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Served::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// A TCP listener for `axum::serve` that hands out [`Served`] connections.
pub struct Listener {
    pub inner: tokio::net::TcpListener,
    pub tls: Option<TlsAcceptor>,
}

impl axum::serve::Listener for Listener {
    type Io = Served<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    return (Served::new(self.tls.as_ref(), tcp), addr);
                }
                // Out of descriptors, or a connection that died queued.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_client_trusting_the_ca_talks_and_one_trusting_another_is_refused() {
        let dir = std::env::temp_dir().join(format!("drover-tls-lazy-{}", std::process::id()));
        let other = dir.join("other");
        let _ = std::fs::remove_dir_all(&dir);
        crate::make_ca(&dir).unwrap();
        crate::make_ca(&other).unwrap();
        let (cert, key) = crate::make_host(&dir, "node1", &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let acceptor = TlsAcceptor::from(crate::server_config(&cert, &key).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = LazyTls::new(&acceptor, tcp);
                let mut buf = [0u8; 5];
                if tls.read_exact(&mut buf).await.is_ok() {
                    tls.write_all(&buf).await.unwrap();
                    tls.flush().await.unwrap();
                }
            }
        });
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let good = tokio_rustls::TlsConnector::from(Arc::new(crate::client_config(&dir.join("ca.pem")).unwrap()));
        let mut s = good.connect(name.clone(), tokio::net::TcpStream::connect(addr).await.unwrap()).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        let bad = tokio_rustls::TlsConnector::from(Arc::new(crate::client_config(&other.join("ca.pem")).unwrap()));
        let refused = bad.connect(name, tokio::net::TcpStream::connect(addr).await.unwrap()).await;
        assert!(refused.is_err(), "a certificate from another CA is refused");
        server.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
