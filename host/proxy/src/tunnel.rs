//! Upgraded connections. Once the upstream answers an `Upgrade` request with `101 Switching
//! Protocols` (WebSocket, typically), HTTP is over on both hops: the gateway copies bytes
//! between the client and the upstream connection until either side closes, or until no
//! byte has moved either way for the listener's idle timeout. The bytes are not interpreted,
//! as in Envoy, nginx and HAProxy, so every WebSocket extension and subprotocol passes.

use std::cell::Cell;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the connection task runs after hyper has handed its socket over.
pub(crate) type Tunnel = Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Who the tunnel belongs to, for the access-log line written when it ends.
pub(crate) struct TunnelLog {
    pub request_id: http::HeaderValue,
    pub route: Arc<str>,
    pub listener: Arc<str>,
    pub client: IpAddr,
}

/// How a tunnel ended.
#[derive(Debug, Clone, Copy)]
enum End {
    /// Both sides closed.
    Closed,
    /// No byte moved for the idle timeout.
    IdleTimeout,
    /// A read or write failed (a reset, say).
    Error,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::IdleTimeout => "idle_timeout",
            End::Error => "error",
        }
    }
}

/// The tunnel between `client` and `upstream`, each resolving once its side has switched.
/// The upstream socket keeps its cluster's connection slot until the tunnel drops it. With
/// `log`, the end is logged like a request (target `access`), with the bytes each way.
pub(crate) fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle_timeout: Duration,
    log: Option<TunnelLog>,
) -> Tunnel {
    Box::pin(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let opened = Instant::now();
        let last = Rc::new(Cell::new(opened));
        let mut client = Watched::new(TokioIo::new(client), &last);
        let mut upstream = Watched::new(TokioIo::new(upstream), &last);
        let end = {
            let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
            tokio::pin!(copy);
            loop {
                let deadline = last.get() + idle_timeout;
                tokio::select! {
                    ended = &mut copy => break match ended {
                        Ok(_) => End::Closed,
                        Err(e) => {
                            tracing::debug!(error = %e, "tunnel ended with error");
                            End::Error
                        }
                    },
                    _ = tokio::time::sleep_until(deadline.into()) => {
                        if last.get() + idle_timeout <= Instant::now() {
                            break End::IdleTimeout;
                        }
                    }
                }
            }
        };
        let (up, down) = (client.read, upstream.read);
        // Dropping both ends (on return) closes both connections.
        if let Some(log) = log {
            let duration = opened.elapsed().as_secs_f64() * 1000.0;
            tracing::info!(
                target: "access",
                request_id = log.request_id.to_str().unwrap_or_default(),
                route = &*log.route,
                listener = &*log.listener,
                client = %log.client,
                bytes_up = up,
                bytes_down = down,
                duration_ms = (duration * 1000.0).round() / 1000.0,
                end = end.as_str(),
                "tunnel"
            );
        }
    })
}

/// An end of the tunnel that notes when it last read a byte, and how many it read.
struct Watched<T> {
    io: T,
    last: Rc<Cell<Instant>>,
    read: u64,
}

impl<T> Watched<T> {
    fn new(io: T, last: &Rc<Cell<Instant>>) -> Self {
        Self {
            io,
            last: last.clone(),
            read: 0,
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
        let n = buf.filled().len() - before;
        if n > 0 {
            self.last.set(Instant::now());
            self.read += n as u64;
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
