//! Body types that cross the gateway. Bodies are streamed frame by frame in both directions;
//! nothing here buffers more than the frame in hand, which is what keeps memory flat for
//! GiB-sized transfers.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::pool::{PooledBody, UpstreamBody};

/// A body that is already all in memory, as a stream for an upstream or a filter pipeline.
pub(crate) fn in_memory(data: Bytes) -> UpstreamBody {
    Box::pin(http_body_util::Full::new(data).map_err(|never| -> BoxError { match never {} }))
}

/// Boxed error for body streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body exceeded its limit while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit that was exceeded.
    pub limit: u64,
}

/// Per-request counters shared between the request body, the response body and the
/// completion record; all on one worker thread, so plain cells.
#[derive(Debug, Default)]
pub struct Transfer {
    /// Request body bytes read from the client.
    pub bytes_in: Cell<u64>,
    /// Set once the client's request has arrived whole (at once, for a request without a
    /// body).
    pub request_ended: Cell<bool>,
    /// Response body bytes written to the client.
    pub bytes_out: Cell<u64>,
    /// Set when the request body hit its limit, so the handler answers 413, not 502.
    pub too_large: Cell<bool>,
    /// Set when the response was cut off by the stream idle timeout.
    pub stalled: Cell<bool>,
    /// Set when the client's request body stopped for the stream idle timeout, so the handler
    /// answers 408, not 502.
    pub client_stalled: Cell<bool>,
    /// Body frames moved so far, both ways: a stream is idle only when neither direction
    /// moves, as Envoy's stream idle timeout counts activity on either side.
    pub frames: Cell<u64>,
    /// Whether the response body's last poll found nothing ready: it waits on the upstream
    /// (and its own idle timer), not on the client.
    pub awaiting: Cell<bool>,
    /// Set when an HTTP/2 stream was ended because its client read nothing for the stream
    /// idle timeout ([`crate::stream_watch`]).
    pub reader_stalled: Cell<bool>,
    /// Set once the response body has given its last frame: dropped before that, it was cut
    /// short (by the client going away, unless something below says otherwise).
    pub complete: Cell<bool>,
    /// Set when the response body failed after its head was sent on.
    pub failed: Cell<bool>,
    /// ... and the failure was the upstream's own body (not a filter's doing).
    pub upstream_broke: Cell<bool>,
}

impl Transfer {
    /// The transfer of a request whose body has (`request_ended`) or has not yet arrived.
    pub fn new(request_ended: bool) -> Self {
        Self {
            request_ended: Cell::new(request_ended),
            ..Self::default()
        }
    }

    fn moved(&self) {
        self.frames.set(self.frames.get().wrapping_add(1));
    }
}

/// The response body moved no byte for the stream idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no response body byte for {0:?} (stream idle timeout)")]
pub struct StreamIdle(pub Duration);

/// The client's request body moved no byte, and neither did the response, for the stream
/// idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no request body byte for {0:?} (stream idle timeout)")]
pub struct UploadIdle(pub Duration);

/// A stream idle limit in milliseconds (0: off). Zero is never; so is more than about 49
/// days.
fn idle_ms(limit: Duration) -> u32 {
    match limit.as_millis() {
        0 if limit.is_zero() => 0,
        ms => u32::try_from(ms.max(1)).unwrap_or(0),
    }
}

/// The stream idle timeout of a streamed body: armed when the body has nothing to give,
/// re-armed after each frame. A body that is always ready never makes the timer (most small
/// bodies), so the body carries only the limit until then. When the timer fires but the
/// other direction moved meanwhile ([`Transfer::frames`]), it starts over.
#[derive(Default)]
struct Idle {
    /// In milliseconds; 0 is off.
    limit_ms: u32,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
    /// [`Transfer::frames`] when the timer was last armed.
    frames: u64,
}

impl Idle {
    fn limit(&self) -> Duration {
        Duration::from_millis(u64::from(self.limit_ms))
    }

    fn arm(&mut self, frames: u64) {
        let deadline = tokio::time::Instant::now() + self.limit();
        match &mut self.timer {
            Some(t) => t.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.armed = true;
        self.frames = frames;
    }

    /// Whether nothing moved for the limit (the caller saw its body pending). `stream` is
    /// the body's stream, whose other direction may have moved (none for a body not tied to
    /// a stream).
    fn expired(&mut self, cx: &mut Context<'_>, stream: Option<&Transfer>) -> bool {
        if self.limit_ms == 0 {
            return false;
        }
        let now = stream.map_or(0, |t| t.frames.get());
        if !self.armed {
            self.arm(now);
        }
        loop {
            let Some(timer) = self.timer.as_mut() else {
                return false;
            };
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.frames == now {
                return true;
            }
            self.arm(now);
        }
    }
}

/// The client's request body on its way upstream: counted, cut off at the limit, and cut
/// off when the client stops sending (and nothing comes back) for the stream idle timeout.
pub struct RequestBody {
    inner: Incoming,
    limit: Option<u64>,
    transfer: Rc<Transfer>,
    idle: Idle,
}

impl RequestBody {
    /// Wraps `inner`; `limit` is the most bytes allowed through; `idle_timeout` (zero:
    /// never) is how long it may wait for the client while the response is quiet too.
    pub fn new(
        inner: Incoming,
        limit: Option<u64>,
        transfer: Rc<Transfer>,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            limit,
            transfer,
            idle: Idle {
                limit_ms: idle_ms(idle_timeout),
                ..Idle::default()
            },
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.idle.armed = false;
                frame
            }
            Poll::Pending => {
                if !this.idle.expired(cx, Some(&this.transfer)) {
                    return Poll::Pending;
                }
                let limit = this.idle.limit();
                this.idle = Idle::default();
                this.transfer.client_stalled.set(true);
                return Poll::Ready(Some(Err(Box::new(UploadIdle(limit)))));
            }
        };
        Poll::Ready(match frame {
            Some(Ok(frame)) => {
                self.transfer.moved();
                if let Some(data) = frame.data_ref() {
                    let total = self.transfer.bytes_in.get() + data.len() as u64;
                    self.transfer.bytes_in.set(total);
                    if let Some(limit) = self.limit
                        && total > limit
                    {
                        self.transfer.too_large.set(true);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
                    }
                }
                // A body of known length ends with its last byte, and any body with its
                // trailers: whoever reads it need not poll again.
                if frame.is_trailers() || self.inner.is_end_stream() {
                    self.transfer.request_ended.set(true);
                }
                Some(Ok(frame))
            }
            Some(Err(e)) => Some(Err(Box::new(e))),
            None => {
                self.transfer.request_ended.set(true);
                None
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body read in full before it was sent, so that a retry can send it again: its
/// data, then its trailers if it had any. Cheap to clone (shared bytes).
#[derive(Clone)]
pub struct Replay {
    data: Bytes,
    trailers: Option<http::HeaderMap>,
}

impl Replay {
    pub fn new(data: Bytes, trailers: Option<http::HeaderMap>) -> Self {
        Self { data, trailers }
    }

    /// Bytes of data.
    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// The body, to be sent (once more).
    pub fn body(&self) -> UpstreamBody {
        Box::pin(ReplayBody {
            data: (!self.data.is_empty()).then(|| self.data.clone()),
            trailers: self.trailers.clone(),
        })
    }
}

struct ReplayBody {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// What the client receives: either a body generated by the gateway or the upstream's,
/// streamed. Dropping it (after the last frame was written, or when the client went away)
/// ends the request's lifecycle: see [`crate::handler::Completion`].
pub struct ResponseBody {
    kind: Kind,
    transfer: Option<Rc<Transfer>>,
    on_done: Option<Box<dyn FnOnce()>>,
    idle: Idle,
}

enum Kind {
    /// In memory; `sized` when its length is declared (hyper then sends `content-length`).
    Full {
        data: Option<Bytes>,
        sized: bool,
    },
    Upstream(PooledBody),
    Filtered(UpstreamBody),
}

impl ResponseBody {
    /// A complete in-memory body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b = bytes.into();
        Self {
            kind: Kind::Full {
                data: (!b.is_empty()).then_some(b),
                sized: true,
            },
            transfer: None,
            on_done: None,
            idle: Idle::default(),
        }
    }

    /// A complete in-memory body whose head declares no length: it goes out as a stream
    /// does (chunked on HTTP/1.1), as Envoy sends a body whose `content-length` a filter
    /// removed.
    pub fn full_unsized(bytes: Bytes) -> Self {
        let mut body = Self::full(bytes);
        if let Kind::Full { sized, .. } = &mut body.kind {
            *sized = false;
        }
        body
    }

    /// The upstream's body, streamed.
    pub fn upstream(body: PooledBody) -> Self {
        Self {
            kind: Kind::Upstream(body),
            transfer: None,
            on_done: None,
            idle: Idle::default(),
        }
    }

    /// A body coming out of the filters' response body phases.
    pub(crate) fn filtered(body: UpstreamBody) -> Self {
        Self {
            kind: Kind::Filtered(body),
            transfer: None,
            on_done: None,
            idle: Idle::default(),
        }
    }

    /// Counts bytes into `transfer` and runs `on_done` when the body is dropped.
    pub fn with_completion(mut self, transfer: Rc<Transfer>, on_done: Box<dyn FnOnce()>) -> Self {
        self.transfer = Some(transfer);
        self.on_done = Some(on_done);
        self
    }

    /// Whether the body streams from the upstream or the filters (not generated whole).
    pub(crate) fn streams(&self) -> bool {
        !matches!(self.kind, Kind::Full { .. })
    }

    /// Cuts a streamed body off when it gives no frame for `limit` (zero: never; at most
    /// about 49 days, which is taken as never too).
    pub fn with_idle_timeout(mut self, limit: Duration) -> Self {
        if !matches!(self.kind, Kind::Full { .. }) {
            self.idle.limit_ms = idle_ms(limit);
        }
        self
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper drops a body without asking again once it says it has ended.
        if let Some(t) = &self.transfer
            && self.is_end_stream()
        {
            t.complete.set(true);
        }
        if let Some(f) = self.on_done.take() {
            f();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Full { data, .. } => Poll::Ready(data.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
            Kind::Filtered(body) => body.as_mut().poll_frame(cx),
        };
        let frame = match polled {
            Poll::Ready(frame) => {
                this.idle.armed = false;
                if let Some(t) = &this.transfer {
                    t.awaiting.set(false);
                }
                frame
            }
            Poll::Pending => {
                if !this.idle.expired(cx, this.transfer.as_deref()) {
                    if let Some(t) = &this.transfer {
                        t.awaiting.set(true);
                    }
                    return Poll::Pending;
                }
                let limit = this.idle.limit();
                // Dropping the upstream's body closes its connection now.
                this.kind = Kind::Full {
                    data: None,
                    sized: true,
                };
                this.idle = Idle::default();
                if let Some(t) = &this.transfer {
                    t.stalled.set(true);
                }
                return Poll::Ready(Some(Err(Box::new(StreamIdle(limit)))));
            }
        };
        if let Some(t) = &this.transfer {
            match &frame {
                Some(Ok(f)) => {
                    t.moved();
                    match f.data_ref() {
                        Some(d) => t.bytes_out.set(t.bytes_out.get() + d.len() as u64),
                        // Trailers end a body: hyper asks for nothing after them.
                        None => t.complete.set(true),
                    }
                }
                None => t.complete.set(true),
                Some(Err(_)) => {
                    t.failed.set(true);
                    t.upstream_broke.set(matches!(this.kind, Kind::Upstream(_)));
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data, .. } => data.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Filtered(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data, sized } => {
                let len = data.as_ref().map_or(0, |b| b.len() as u64);
                if *sized {
                    SizeHint::with_exact(len)
                } else {
                    // Not exact, so hyper declares no length.
                    let mut hint = SizeHint::new();
                    hint.set_upper(len);
                    hint
                }
            }
            Kind::Upstream(body) => body.size_hint(),
            Kind::Filtered(body) => body.size_hint(),
        }
    }
}
