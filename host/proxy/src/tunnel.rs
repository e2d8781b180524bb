//! Upgraded connections. Once the upstream answers an `Upgrade` request with `101 Switching
//! Protocols` (WebSocket, typically), HTTP is over on both hops: the gateway copies bytes
//! between the client and the upstream connection until either side closes, or until no
//! byte has moved either way for the listener's idle timeout. The bytes are not interpreted,
//! as in Envoy, nginx and HAProxy, so every WebSocket extension and subprotocol passes.
//!
//! The route's filters stay with the stream until the tunnel ends, as in Envoy: filters with
//! body callbacks get the client's bytes as request body and the upstream's as response body
//! (through the same pipeline as any body, so a filter may hold or rewrite them), and every
//! filter's `on_log` runs when the tunnel has closed.

use std::cell::Cell;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use rustygate_filter_api::Direction;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::body::BoxError;
use crate::chain::ChainRun;
use crate::chain::pipeline::FilteredBody;
use crate::pool::RawIo;

/// What the connection task runs after hyper has handed its socket over.
pub(crate) type Tunnel = Pin<Box<dyn std::future::Future<Output = ()>>>;

/// The tunnel's upstream end.
pub(crate) enum Upstream {
    /// A connection hyper hands over once it has read the upstream's agreement (a 101, a
    /// forwarded `CONNECT`'s 2xx).
    Switched(OnUpgrade),
    /// A connection the gateway opened for a `CONNECT` it answered itself.
    Raw(Box<dyn RawIo>),
}

impl Upstream {
    async fn ready(self) -> hyper::Result<Box<dyn RawIo>> {
        match self {
            Upstream::Switched(on) => Ok(Box::new(TokioIo::new(on.await?))),
            Upstream::Raw(io) => Ok(io),
        }
    }
}

/// Who the tunnel belongs to, for the access-log line written when it ends.
pub(crate) struct TunnelLog {
    pub request_id: http::HeaderValue,
    pub route: Arc<str>,
    pub listener: Arc<str>,
    pub client: IpAddr,
}

/// The request's filters, kept by the tunnel until it ends.
pub(crate) struct TunnelChain {
    pub run: Rc<ChainRun>,
    /// How long a filter may hold the bytes of one direction (the route timeout).
    pub pause_limit: Duration,
    /// Most bytes one filter may hold.
    pub max_held: usize,
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
    upstream: Upstream,
    idle_timeout: Duration,
    log: Option<TunnelLog>,
    chain: Option<TunnelChain>,
) -> Tunnel {
    Box::pin(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream.ready()) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let opened = Instant::now();
        let last = Rc::new(Cell::new(opened));
        let (up, down) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let mut client = Watched::new(TokioIo::new(client), &last, &up);
        let mut upstream = Watched::new(upstream, &last, &down);
        let end = {
            let copy: Pin<Box<dyn std::future::Future<Output = std::io::Result<()>>>> = match &chain
            {
                Some(c) if filters_body(&c.run) => Box::pin(through_filters(client, upstream, c)),
                _ => Box::pin(async move {
                    tokio::io::copy_bidirectional(&mut client, &mut upstream)
                        .await
                        .map(|_| ())
                }),
            };
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
                    _ = tokio::time::sleep_until(deadline.into()), if !idle_timeout.is_zero() => {
                        if last.get() + idle_timeout <= Instant::now() {
                            break End::IdleTimeout;
                        }
                    }
                }
            }
        };
        let (up, down) = (up.get(), down.get());
        if let Some(c) = chain {
            // What `on_log` reads of the stream, which ends with the tunnel (as in Envoy).
            let progress = &c.run.exchange.progress;
            progress.request_body_bytes.set(up);
            progress.response_body_bytes.set(down);
            progress
                .duration
                .set(Some(c.run.exchange.info.start.elapsed()));
            c.run.complete();
        }
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

/// Whether any of the chain's filters has body callbacks (else bytes are copied as they are).
fn filters_body(run: &ChainRun) -> bool {
    run.wants_body(Direction::Request, run.len()) || run.wants_body(Direction::Response, run.len())
}

/// Each direction through the filters' body phases: the client's bytes as the request body,
/// the upstream's as the response body. A side's close ends its body (`end_of_stream`) and,
/// once the filters have let the rest go, closes the other side's writing half.
async fn through_filters<C, U>(client: C, upstream: U, chain: &TunnelChain) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + 'static,
    U: AsyncRead + AsyncWrite + 'static,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let body = |source: crate::pool::UpstreamBody, direction| {
        FilteredBody::new(
            source,
            chain.run.clone(),
            direction,
            chain.run.len(),
            chain.pause_limit,
            chain.max_held,
        )
    };
    let up = pump(
        body(Box::pin(ReadBody::new(client_read)), Direction::Request),
        upstream_write,
    );
    let down = pump(
        body(Box::pin(ReadBody::new(upstream_read)), Direction::Response),
        client_write,
    );
    tokio::try_join!(up, down).map(|_| ())
}

/// Writes what comes out of the filters to `out`, then closes its writing half.
async fn pump(mut body: FilteredBody, mut out: impl AsyncWrite + Unpin) -> std::io::Result<()> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(std::io::Error::other)?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data).await?;
        }
    }
    out.shutdown().await
}

/// A byte stream as a body: each read is a data frame; end of file ends the body.
struct ReadBody<R> {
    io: R,
    buf: Box<[u8]>,
    done: bool,
}

impl<R> ReadBody<R> {
    fn new(io: R) -> Self {
        Self {
            io,
            buf: vec![0; 16 * 1024].into_boxed_slice(),
            done: false,
        }
    }
}

impl<R: AsyncRead + Unpin> Body for ReadBody<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let mut buf = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Ok(())) => {
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(buf.filled())))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// An end of the tunnel that notes when it last read a byte, and how many it read.
struct Watched<T> {
    io: T,
    last: Rc<Cell<Instant>>,
    read: Rc<Cell<u64>>,
}

impl<T> Watched<T> {
    fn new(io: T, last: &Rc<Cell<Instant>>, read: &Rc<Cell<u64>>) -> Self {
        Self {
            io,
            last: last.clone(),
            read: read.clone(),
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
            self.read.set(self.read.get() + n as u64);
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
