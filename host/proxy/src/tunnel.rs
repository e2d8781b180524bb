//! Upgraded connections. Once the upstream answers an `Upgrade` request with `101 Switching
//! Protocols` (WebSocket, typically), HTTP is over on both hops: the gateway copies bytes
//! between the client and the upstream connection until either side closes, or until no
//! byte has moved either way for the listener's idle timeout. The bytes are not interpreted,
//! as in Envoy, nginx and HAProxy, so every WebSocket extension and subprotocol passes.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the connection task runs after hyper has handed its socket over.
pub(crate) type Tunnel = Pin<Box<dyn std::future::Future<Output = ()>>>;

/// The tunnel between `client` and `upstream`, each resolving once its side has switched.
/// The upstream socket keeps its cluster's connection slot until the tunnel drops it.
pub(crate) fn tunnel(client: OnUpgrade, upstream: OnUpgrade, idle_timeout: Duration) -> Tunnel {
    Box::pin(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let last = Rc::new(Cell::new(Instant::now()));
        let mut client = Watched::new(TokioIo::new(client), &last);
        let mut upstream = Watched::new(TokioIo::new(upstream), &last);
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        loop {
            let deadline = last.get() + idle_timeout;
            tokio::select! {
                ended = &mut copy => {
                    match ended {
                        Ok((up, down)) => tracing::debug!(bytes_up = up, bytes_down = down, "tunnel closed"),
                        Err(e) => tracing::debug!(error = %e, "tunnel ended with error"),
                    }
                    return;
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if last.get() + idle_timeout <= Instant::now() {
                        // Dropping both ends closes both connections.
                        tracing::debug!(?idle_timeout, "tunnel idle: closed");
                        return;
                    }
                }
            }
        }
    })
}

/// An end of the tunnel that notes when it last read a byte.
struct Watched<T> {
    io: T,
    last: Rc<Cell<Instant>>,
}

impl<T> Watched<T> {
    fn new(io: T, last: &Rc<Cell<Instant>>) -> Self {
        Self {
            io,
            last: last.clone(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.set(Instant::now());
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
