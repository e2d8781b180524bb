//! The direct HTTP/1.1 client: the request's own task writes the request head to the upstream
//! socket, reads the response head off it and hands back a body that reads the rest.
//!
//! Why not hyper's client for everything: hyper drives each client connection in a task of
//! its own and passes the request, the response and every body chunk between that task and
//! the request over channels, waking one task from the other at each step. For the common
//! exchange (a request without a body, on a cleartext connection) that hand-off costs more
//! than the exchange itself; here there is no second task, no channel and no wake-up beyond
//! the socket's own. Everything else (request bodies, which must be written while the
//! response is read; upgrades; TLS; HTTP/2) stays on hyper, which the pool chooses per
//! request ([`fits`]).
//!
//! A connection belongs to one exchange at a time: the response body owns it and gives it
//! back ([`GiveBack`]) when the body has been read to its end with the connection still
//! reusable; a body dropped midway closes it, as the stream position is then unknown.

#[cfg(test)]
mod against_hyper;
mod decode;
mod head;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::header::UPGRADE;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::BoxError;
use decode::{State, Step};
pub(crate) use head::ResponseHead;

/// Why an exchange on a direct connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request head could not be written.
    #[error("writing the request failed: {0}")]
    Write(#[source] io::Error),
    /// Reading the response failed.
    #[error("reading the response failed: {0}")]
    Read(#[source] io::Error),
    /// The upstream closed the connection before a byte of a response.
    #[error("connection closed before a response")]
    Closed,
    /// The upstream closed the connection within the response head.
    #[error("connection closed within the response head")]
    IncompleteHead,
    /// The upstream closed the connection before the body's announced end.
    #[error("connection closed before the response body ended")]
    IncompleteBody,
    /// The response is not HTTP/1.x as RFC 9112 has it.
    #[error("invalid response: {0}")]
    Invalid(String),
    /// More header fields than the limit.
    #[error("response has more than {0} header fields")]
    TooManyHeaders(usize),
    /// A head (or trailer section) longer than the limit.
    #[error("response head over {0} bytes")]
    HeadTooLarge(usize),
}

impl Error {
    /// A response that is not HTTP (as opposed to one cut short).
    pub fn is_protocol(&self) -> bool {
        matches!(
            self,
            Error::Invalid(_) | Error::TooManyHeaders(_) | Error::HeadTooLarge(_)
        )
    }
}

/// An exchange that failed, with how far the request got.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: Error,
    /// Not a whole request reached the upstream: it cannot have acted on it.
    pub unsent: bool,
    /// Not a byte came back: on a reused connection this is the race with the upstream
    /// closing it as idle, and an idempotent request may be sent again (RFC 9110 §9.2.2).
    pub nothing_back: bool,
}

/// Whether `req` can take the direct path: no body to stream alongside the response, and no
/// protocol switch (those need hyper's upgrade hand-off).
pub(crate) fn fits<B: HttpBody>(req: &Request<B>) -> bool {
    req.body().is_end_stream()
        && req.method() != Method::CONNECT
        && !req.headers().contains_key(UPGRADE)
}

/// The socket under a direct connection: a TCP stream, possibly wrapped (to hold a
/// circuit-breaker slot, say).
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin {
    /// The TCP stream itself, to ask the reactor about it without a system call.
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// Most bytes asked of the socket by one read of a body; also the most one data frame holds.
const BODY_READ: usize = 64 * 1024;
/// Room made for one read of a response head.
const HEAD_READ: usize = 8 * 1024;

/// An HTTP/1.1 connection to an upstream, between exchanges or within one.
pub(crate) struct Conn<S> {
    io: S,
    /// Bytes read and not yet consumed. Empty between exchanges: anything there would be
    /// bytes the upstream sent unasked.
    buf: BytesMut,
    /// The request head being written; kept to reuse its allocation.
    out: Vec<u8>,
}

impl<S: Socket> Conn<S> {
    pub(crate) fn new(io: S) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
        }
    }

    /// Whether an idle connection can take another request: the upstream has neither closed
    /// it nor sent anything. Asks the reactor first, so the usual answer costs no system call.
    pub(crate) fn is_reusable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.tcp().poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness can be left over from the last read; only a read can tell.
            Poll::Ready(Ok(())) => matches!(
                self.io.tcp().try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            ),
        }
    }

    /// Makes `req`'s head (its body is empty: see [`fits`]) the next to be sent, with the
    /// fields of `shared` and the `host` its own map does not name (see
    /// [`head::encode_request`]).
    pub(crate) fn prepare<B>(
        &mut self,
        req: &Request<B>,
        shared: Option<&HeaderMap>,
        host: Option<&HeaderValue>,
    ) {
        head::encode_request(req, shared, host, &mut self.out);
    }

    /// Sends the head [`Conn::prepare`] made, of a request with `method`, and reads the
    /// response head.
    pub(crate) async fn exchange(&mut self, method: &Method) -> Result<ResponseHead, Failure> {
        if let Err(e) = self.io.write_all(&self.out).await {
            return Err(Failure {
                error: Error::Write(e),
                unsent: true,
                nothing_back: true,
            });
        }
        let fail = |error, nothing_back| Failure {
            error,
            unsent: false,
            nothing_back,
        };
        // Any byte at all, an informational response already consumed included.
        let mut received = false;
        loop {
            if received {
                match head::parse_response(&mut self.buf, method) {
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) => {}
                    Err(e) => return Err(fail(e, false)),
                }
            }
            match poll_fn(|cx| self.poll_fill(cx, HEAD_READ)).await {
                Ok(0) if received => return Err(fail(Error::IncompleteHead, false)),
                Ok(0) => return Err(fail(Error::Closed, true)),
                Ok(_) => received = true,
                Err(e) => return Err(fail(Error::Read(e), !received)),
            }
        }
    }

    /// Reads what the socket has into the buffer, after making room for at least `room`
    /// bytes. `Ok(0)`: the upstream closed its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<io::Result<usize>> {
        self.buf.reserve(room);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// Where a connection goes when its response has ended and it can serve another.
pub(crate) trait GiveBack<S> {
    fn give_back(self, conn: Box<Conn<S>>);
}

/// A response body read straight off its connection.
pub(crate) struct Body<S, H> {
    /// Boxed (once, when the connection is made): the body travels inside the response
    /// through every layer of the handler, and is copied at each.
    conn: Option<Box<Conn<S>>>,
    state: State,
    keep_alive: bool,
    home: Option<H>,
    /// The whole body, when it arrived with the head: the connection has gone home already.
    whole: Option<Bytes>,
}

impl<S: Socket, H: GiveBack<S>> Body<S, H> {
    /// The body that follows `head` on `conn`.
    pub(crate) fn new(conn: Box<Conn<S>>, head: &ResponseHead, home: H) -> Self {
        let mut body = Self {
            conn: Some(conn),
            state: State::new(head.framing),
            keep_alive: head.keep_alive,
            home: Some(home),
            whole: None,
        };
        // The usual small response came in the head's read: the connection can serve the
        // next request before this body is even forwarded.
        if let (State::Length(n), Some(conn)) = (body.state, &mut body.conn)
            && conn.buf.len() as u64 >= n
        {
            body.whole = Some(conn.buf.split_to(n as usize).freeze());
            body.state = State::Done;
        }
        if body.state == State::Done {
            body.finish();
        }
        body
    }

    /// The whole body, when it arrived with the head.
    pub(crate) fn take_whole(&mut self) -> Option<Bytes> {
        self.whole.take()
    }

    /// The body has ended: the connection goes home if it can carry another exchange.
    fn finish(&mut self) {
        self.state = State::Done;
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take())
            && self.keep_alive
            && conn.buf.is_empty()
        {
            home.give_back(conn);
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.state = State::Done;
        Poll::Ready(Some(Err(Box::new(e))))
    }
}

impl<S: Socket, H: GiveBack<S> + Unpin> HttpBody for Body<S, H> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(whole) = this.whole.take() {
            return Poll::Ready(Some(Ok(Frame::data(whole))));
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.state.step(&mut conn.buf) {
                Err(e) => return this.fail(e),
                Ok(Step::Data(data)) => {
                    if this.state == State::Done {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Trailers(trailers)) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {
                    let room = match this.state {
                        State::Length(n) => {
                            usize::try_from(n).map_or(BODY_READ, |n| n.min(BODY_READ))
                        }
                        _ => BODY_READ,
                    };
                    match ready!(conn.poll_fill(cx, room)) {
                        Ok(0) if this.state == State::Close => {
                            this.keep_alive = false;
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(0) => return this.fail(Error::IncompleteBody),
                        Ok(_) => {}
                        Err(e) => return this.fail(Error::Read(e)),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.whole.is_none() && self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.whole, self.state) {
            (Some(w), _) => SizeHint::with_exact(w.len() as u64),
            (None, State::Length(n)) => SizeHint::with_exact(n),
            (None, State::Done) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// The response head as an `http` response, for the body to be attached.
pub(crate) fn response(head: ResponseHead) -> Response<()> {
    let mut resp = Response::new(());
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    if let Some(reason) = head
        .reason
        .and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok())
    {
        resp.extensions_mut().insert(reason);
    }
    resp
}
