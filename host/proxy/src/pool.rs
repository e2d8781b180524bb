//! Per-worker upstream connection pools. Each worker owns its pool outright (Envoy does the
//! same), so checkout and return are plain `RefCell` operations: no lock, no atomics, and a
//! pooled connection is only ever driven by the thread that made it.
//!
//! HTTP/1.1 connections are checked out exclusively and come back when the response body has
//! been read to the end; a response abandoned midway closes its connection, because the
//! stream position is then unknown. HTTP/2 connections are shared: one per endpoint per
//! worker, multiplexed.

use rustc_hash::FxHashMap as HashMap;
use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustygate_config::UpstreamProtocol;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::body::BoxError;
use crate::exec::LocalExec;
use crate::h1;
use crate::health::{ClusterLoad, OwnedSlot, Slot};
use crate::tls::ClientTls;

/// Body type of requests sent upstream. Not `Send`: bodies may hold worker-local state, and
/// they never leave the worker.
pub type UpstreamBody = Pin<Box<dyn Body<Data = Bytes, Error = BoxError>>>;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect did not finish within the cluster's connect timeout.
    #[error("connect to {authority} timed out after {timeout:?}")]
    Timeout {
        /// Endpoint.
        authority: Arc<str>,
        /// The timeout.
        timeout: Duration,
    },
    /// TCP connect failed (refused, unreachable, DNS).
    #[error("connect to {authority} failed: {source}")]
    Io {
        /// Endpoint.
        authority: Arc<str>,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (an untrusted or mismatched certificate, say).
    #[error("TLS handshake with {authority} failed: {source}")]
    Tls {
        /// Endpoint.
        authority: Arc<str>,
        /// rustls's account.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP handshake failed.
    #[error("handshake with {authority} failed: {source}")]
    Handshake {
        /// Endpoint.
        authority: Arc<str>,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
}

/// Why a request could not be completed upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The exchange failed after a connection was had.
    #[error("upstream exchange failed: {0}")]
    Exchange(#[source] ExchangeError),
    /// A circuit breaker refused a new connection (`connections` or `pending`).
    #[error("circuit breaker open: too many {0}")]
    Overflow(&'static str),
}

/// What went wrong within an exchange, by the client that ran it.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// hyper's client (request bodies, upgrades, TLS, HTTP/2).
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// The direct HTTP/1.1 client ([`h1`]).
    #[error(transparent)]
    Direct(#[from] h1::Error),
}

impl ExchangeError {
    /// The upstream's answer was not valid HTTP.
    pub fn is_protocol(&self) -> bool {
        match self {
            ExchangeError::Hyper(e) => e.is_parse() || e.is_parse_status(),
            ExchangeError::Direct(e) => e.is_protocol(),
        }
    }

    /// A timeout of the client's own.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ExchangeError::Hyper(e) if e.is_timeout())
    }
}

/// A failed send, with the request when none of it was sent.
pub struct Unsent {
    /// What went wrong.
    pub error: SendError,
    /// The request, if not a byte of it reached the upstream.
    pub request: Option<Request<UpstreamBody>>,
}

impl Unsent {
    fn with(error: SendError, request: Request<UpstreamBody>) -> Self {
        Self {
            error,
            request: Some(request),
        }
    }

    fn sent(error: impl Into<ExchangeError>) -> Self {
        Self {
            error: SendError::Exchange(error.into()),
            request: None,
        }
    }

    fn from_try(mut e: TrySendError<Request<UpstreamBody>>) -> Self {
        let request = e.take_message();
        Self {
            error: SendError::Exchange(e.into_error().into()),
            request,
        }
    }
}

struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    /// Whose TLS settings verified it ([`ClientTls::pool_id`]; 0 in the clear).
    tls: u64,
    /// When the cluster's idle timeout closes it.
    expires: Instant,
}

/// An idle connection of the direct HTTP/1.1 client ([`h1`]).
struct DirectIdle {
    conn: DirectConn,
    /// When the cluster's idle timeout closes it.
    expires: Instant,
}

type DirectConn = h1::Conn<Counted<TcpStream>>;

/// The shared HTTP/2 connection to one endpoint.
struct H2 {
    sender: http2::SendRequest<UpstreamBody>,
    /// As [`Idle::tls`].
    tls: u64,
    use_: Rc<H2Use>,
    idle_timeout: Duration,
}

/// What the pool knows of an HTTP/2 connection's streams. As in Envoy, the connection is
/// idle only while no stream is open on it: a long response does not age it.
struct H2Use {
    streams: Cell<usize>,
    /// When the last stream ended (or the connection was made).
    idle_since: Cell<Instant>,
}

/// One stream's hold on its connection, from the request until its response body ends or is
/// dropped.
struct StreamHold(Rc<H2Use>);

impl StreamHold {
    fn new(use_: &Rc<H2Use>) -> Self {
        use_.streams.set(use_.streams.get() + 1);
        Self(use_.clone())
    }
}

impl Drop for StreamHold {
    fn drop(&mut self) {
        let open = self.0.streams.get() - 1;
        self.0.streams.set(open);
        if open == 0 {
            self.0.idle_since.set(Instant::now());
        }
    }
}

impl H2 {
    /// When the idle timeout closes it, if no stream is open on it.
    fn expires(&self) -> Option<Instant> {
        (self.use_.streams.get() == 0).then(|| self.use_.idle_since.get() + self.idle_timeout)
    }
}

/// Settings for one endpoint's connections.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// Protocol to speak.
    pub protocol: UpstreamProtocol,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Connections idle this long are closed (see [`Pool::reap`]).
    pub idle_timeout: Duration,
    /// Most idle HTTP/1.1 connections kept.
    pub max_idle: usize,
    /// The cluster's load counters (circuit breaking).
    pub load: Arc<ClusterLoad>,
    /// Most open connections to the cluster, across workers.
    pub max_connections: usize,
    /// Most requests waiting for a new connection to the cluster, across workers.
    pub max_pending: usize,
    /// Set for `https://` endpoints.
    pub tls: Option<ClientTls>,
}

/// A worker's connection pool, keyed by endpoint authority.
#[derive(Default)]
pub struct Pool {
    h1: RefCell<HashMap<Arc<str>, Vec<Idle>>>,
    /// Cleartext HTTP/1.1 connections of the direct client. Apart from hyper's: a connection
    /// hyper drives cannot be taken back from its task.
    direct: RefCell<HashMap<Arc<str>, Vec<DirectIdle>>>,
    h2: RefCell<HashMap<Arc<str>, H2>>,
}

/// Longest the reaper sleeps: a connection pooled after it went to sleep closes at most this
/// late.
const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// Closes the pool's connections as their idle timeouts pass, for as long as the worker runs.
/// Without it an idle connection would stay open until the next checkout found it expired,
/// holding a socket on both ends for as long as traffic to that endpoint stays away.
pub(crate) async fn reap_idle(pool: Rc<Pool>) {
    loop {
        let now = Instant::now();
        let next = pool
            .reap(now)
            .map_or(now + REAP_INTERVAL, |t| t.min(now + REAP_INTERVAL));
        tokio::time::sleep_until(next.into()).await;
    }
}

impl Pool {
    /// Sends `req` to `authority`, reusing a pooled connection when one is live. A request
    /// that failed on a reused connection *before any of it was written* (the upstream had
    /// closed the idle connection) is sent again on a fresh one; anything else is returned.
    pub async fn send(
        self: &Rc<Self>,
        authority: &Arc<str>,
        settings: &EndpointSettings,
        req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        self.try_send(authority, settings, req)
            .await
            .map_err(|u| u.error)
    }

    /// Like [`Pool::send`], but a request that was not sent at all (no connection, breaker
    /// open, refused before a byte was written) comes back with the error, so it can be tried
    /// on another endpoint without having been copied.
    pub async fn try_send(
        self: &Rc<Self>,
        authority: &Arc<str>,
        settings: &EndpointSettings,
        req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, Unsent> {
        match settings.protocol {
            UpstreamProtocol::Http1 => self.send_h1(authority, settings, req).await,
            UpstreamProtocol::Http2 => self.send_h2(authority, settings, req).await,
        }
    }

    async fn send_h1(
        self: &Rc<Self>,
        authority: &Arc<str>,
        settings: &EndpointSettings,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, Unsent> {
        if settings.tls.is_none() && h1::fits(&req) {
            return self.send_direct(authority, settings, req).await;
        }
        let tls = tls_id(settings);
        while let Some(mut sender) = self.take_idle(authority, tls) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.wrap_h1(resp, authority, settings, sender)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(Unsent::sent(e.into_error())),
                },
            }
        }
        // Boxed: connecting is rare (once per pooled connection), and inline its state would
        // make every request's send future, which is moved into the try's timeout, larger.
        let mut sender = match Box::pin(self.connect_h1(authority, settings)).await {
            Ok(s) => s,
            Err(error) => return Err(Unsent::with(error, req)),
        };
        match sender.try_send_request(req).await {
            Ok(resp) => Ok(self.wrap_h1(resp, authority, settings, sender)),
            Err(e) => Err(Unsent::from_try(e)),
        }
    }

    /// Sends a bodiless cleartext request on the direct client. A reused connection the
    /// upstream had closed (the write fails, or nothing comes back to an idempotent request)
    /// is dropped and the next one tried, as on hyper's path.
    async fn send_direct(
        self: &Rc<Self>,
        authority: &Arc<str>,
        settings: &EndpointSettings,
        req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, Unsent> {
        let resend = idempotent(req.method());
        while let Some(mut conn) = self.take_direct(authority) {
            match conn.exchange(&req).await {
                Ok(head) => return Ok(self.wrap_direct(conn, head, authority, settings)),
                Err(f) if f.unsent || (f.nothing_back && resend) => continue,
                Err(f) => return Err(Unsent::sent(f.error)),
            }
        }
        let mut conn = match Box::pin(connect(authority, settings)).await {
            Ok(Io::Plain(io)) => h1::Conn::new(io.into_inner()),
            Ok(Io::Tls(_)) => unreachable!("the direct client is for cleartext clusters"),
            Err(error) => return Err(Unsent::with(error, req)),
        };
        match conn.exchange(&req).await {
            Ok(head) => Ok(self.wrap_direct(conn, head, authority, settings)),
            Err(f) if f.unsent => Err(Unsent::with(SendError::Exchange(f.error.into()), req)),
            Err(f) => Err(Unsent::sent(f.error)),
        }
    }

    fn wrap_direct(
        self: &Rc<Self>,
        conn: DirectConn,
        head: h1::ResponseHead,
        authority: &Arc<str>,
        settings: &EndpointSettings,
    ) -> Response<PooledBody> {
        let home = DirectHome {
            pool: self.clone(),
            authority: authority.clone(),
            max_idle: settings.max_idle,
            idle_timeout: settings.idle_timeout,
        };
        let body = h1::Body::new(conn, &head, home);
        h1::response(head).map(|()| PooledBody(Kind::Direct(body)))
    }

    fn take_direct(&self, authority: &Arc<str>) -> Option<DirectConn> {
        let mut map = self.direct.borrow_mut();
        let list = map.get_mut(authority)?;
        let now = Instant::now();
        // Most recently returned first, as in `take_idle`.
        while let Some(idle) = list.pop() {
            if now < idle.expires && idle.conn.is_reusable() {
                return Some(idle.conn);
            }
        }
        None
    }

    async fn send_h2(
        self: &Rc<Self>,
        authority: &Arc<str>,
        settings: &EndpointSettings,
        req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, Unsent> {
        let cached = self
            .h2
            .borrow()
            .get(authority)
            .filter(|c| c.tls == tls_id(settings) && !c.sender.is_closed())
            .map(|c| (c.sender.clone(), StreamHold::new(&c.use_)));
        let (mut sender, hold) = match cached {
            Some(s) => s,
            None => match Box::pin(self.connect_h2(authority, settings)).await {
                Ok(s) => {
                    let conn = H2 {
                        sender: s.clone(),
                        tls: tls_id(settings),
                        use_: Rc::new(H2Use {
                            streams: Cell::new(0),
                            idle_since: Cell::new(Instant::now()),
                        }),
                        idle_timeout: settings.idle_timeout,
                    };
                    let hold = StreamHold::new(&conn.use_);
                    self.h2.borrow_mut().insert(authority.clone(), conn);
                    (s, hold)
                }
                Err(error) => return Err(Unsent::with(error, req)),
            },
        };
        match sender.try_send_request(req).await {
            Ok(resp) => Ok(resp.map(|b| {
                PooledBody(Kind::Hyper {
                    inner: b,
                    home: None,
                    stream: Some(hold),
                })
            })),
            Err(e) => Err(Unsent::from_try(e)),
        }
    }

    /// An idle connection to `authority` made with the TLS settings `tls` (see [`tls_id`]).
    fn take_idle(
        &self,
        authority: &Arc<str>,
        tls: u64,
    ) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut map = self.h1.borrow_mut();
        let list = map.get_mut(authority)?;
        // Most recently returned first: it is the least likely to have been closed by the peer.
        let now = Instant::now();
        while let Some(at) = list.iter().rposition(|idle| idle.tls == tls) {
            // The last one (the usual case: one cluster per endpoint) is simply popped.
            let idle = list.swap_remove(at);
            if !idle.sender.is_closed() && now < idle.expires {
                return Some(idle.sender);
            }
        }
        None
    }

    fn put_idle(
        &self,
        authority: Arc<str>,
        tls: u64,
        sender: http1::SendRequest<UpstreamBody>,
        max_idle: usize,
        idle_timeout: Duration,
    ) {
        if sender.is_closed() {
            return;
        }
        let mut map = self.h1.borrow_mut();
        let list = map.entry(authority).or_default();
        if list.len() < max_idle {
            list.push(Idle {
                sender,
                tls,
                expires: Instant::now() + idle_timeout,
            });
        }
    }

    /// Drops every connection whose idle timeout has passed at `now`, and every one the peer
    /// closed: dropping the last handle of a connection closes it (an HTTP/2 connection once
    /// the streams still on it end). Returns when the next one expires, if any is left.
    pub fn reap(&self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut soonest = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        self.h1.borrow_mut().retain(|_, list| {
            list.retain(|idle| now < idle.expires && !idle.sender.is_closed());
            list.iter().for_each(|idle| soonest(idle.expires));
            !list.is_empty()
        });
        self.direct.borrow_mut().retain(|_, list| {
            list.retain(|idle| now < idle.expires && idle.conn.is_reusable());
            list.iter().for_each(|idle| soonest(idle.expires));
            !list.is_empty()
        });
        self.h2.borrow_mut().retain(|_, c| {
            let expires = c.expires();
            let keep = expires.is_none_or(|t| now < t) && !c.sender.is_closed();
            if let (true, Some(t)) = (keep, expires) {
                soonest(t);
            }
            keep
        });
        next
    }

    fn wrap_h1(
        self: &Rc<Self>,
        resp: Response<Incoming>,
        authority: &Arc<str>,
        settings: &EndpointSettings,
        sender: http1::SendRequest<UpstreamBody>,
    ) -> Response<PooledBody> {
        // A connection that switched protocols belongs to its tunnel, never to the pool.
        let switched = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        let home = (!switched).then(|| Home {
            pool: self.clone(),
            authority: authority.clone(),
            tls: tls_id(settings),
            sender,
            max_idle: settings.max_idle,
            idle_timeout: settings.idle_timeout,
        });
        resp.map(|inner| {
            PooledBody(Kind::Hyper {
                inner,
                home,
                stream: None,
            })
        })
    }

    async fn connect_h1(
        &self,
        authority: &Arc<str>,
        settings: &EndpointSettings,
    ) -> Result<http1::SendRequest<UpstreamBody>, SendError> {
        let handshaken = match connect(authority, settings).await? {
            Io::Plain(io) => handshake_h1(io).await,
            Io::Tls(io) => handshake_h1(io).await,
        };
        handshaken.map_err(|source| {
            ConnectError::Handshake {
                authority: authority.clone(),
                source,
            }
            .into()
        })
    }

    async fn connect_h2(
        &self,
        authority: &Arc<str>,
        settings: &EndpointSettings,
    ) -> Result<http2::SendRequest<UpstreamBody>, SendError> {
        let handshaken = match connect(authority, settings).await? {
            Io::Plain(io) => handshake_h2(io).await,
            Io::Tls(io) => handshake_h2(io).await,
        };
        handshaken.map_err(|source| {
            ConnectError::Handshake {
                authority: authority.clone(),
                source,
            }
            .into()
        })
    }
}

/// Which TLS settings a connection was verified with, so that a cluster never reuses a
/// connection another cluster (or an older generation of its own settings) verified: 0 in the
/// clear.
fn tls_id(settings: &EndpointSettings) -> u64 {
    settings.tls.as_ref().map_or(0, ClientTls::pool_id)
}

/// A new upstream connection, in the clear or TLS.
enum Io {
    Plain(TokioIo<Counted<TcpStream>>),
    /// Boxed: a TLS session's state is a kilobyte, and a connection is made rarely.
    Tls(TokioIo<Counted<Box<tokio_rustls::client::TlsStream<TcpStream>>>>),
}

/// A socket holding its place in the cluster's `max_connections` for as long as it exists:
/// whether hyper closes it, or a protocol switch hands it to a tunnel that outlives hyper's
/// connection task.
struct Counted<T> {
    io: T,
    _slot: OwnedSlot,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl h1::Socket for Counted<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.io
    }
}

/// Methods whose request may be sent again when a reused connection turns out closed
/// (RFC 9110 §9.2.2).
fn idempotent(method: &http::Method) -> bool {
    use http::Method as M;
    [M::GET, M::HEAD, M::OPTIONS, M::TRACE, M::PUT, M::DELETE].contains(method)
}

async fn handshake_h1<T>(io: T) -> hyper::Result<http1::SendRequest<UpstreamBody>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new().writev(false).handshake(io).await?;
    // A `101 Switching Protocols` hands the connection's socket to the response's
    // `OnUpgrade` (a WebSocket tunnel); without upgrades hyper would refuse such a response.
    drive(conn.with_upgrades());
    Ok(sender)
}

async fn handshake_h2<T>(io: T) -> hyper::Result<http2::SendRequest<UpstreamBody>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let (sender, conn) = http2::Builder::new(LocalExec)
        .timer(TokioTimer::new())
        .handshake(io)
        .await?;
    drive(conn);
    Ok(sender)
}

/// A new TCP connection within the cluster's circuit-breaker limits: the request waits as
/// "pending" while it connects, and the connection holds a slot for as long as it lives.
async fn connect(authority: &Arc<str>, settings: &EndpointSettings) -> Result<Io, SendError> {
    let _pending = Slot::take(&settings.load.pending, settings.max_pending)
        .ok_or(SendError::Overflow("pending requests"))?;
    let slot = OwnedSlot::connection(&settings.load, settings.max_connections)
        .ok_or(SendError::Overflow("connections"))?;
    let started = Instant::now();
    let tcp = tcp_connect(authority, settings.connect_timeout).await?;
    let Some(tls) = &settings.tls else {
        return Ok(Io::Plain(TokioIo::new(Counted {
            io: tcp,
            _slot: slot,
        })));
    };
    // The connect timeout covers the handshake too: both are "getting a connection".
    let left = settings.connect_timeout.saturating_sub(started.elapsed());
    let stream = tokio::time::timeout(left, tls.connect(authority, tcp))
        .await
        .map_err(|_| ConnectError::Timeout {
            authority: authority.clone(),
            timeout: settings.connect_timeout,
        })?
        .map_err(|source| ConnectError::Tls {
            authority: authority.clone(),
            source,
        })?;
    Ok(Io::Tls(TokioIo::new(Counted {
        io: Box::new(stream),
        _slot: slot,
    })))
}

/// Runs a client connection's I/O on this worker until it closes or switches protocols.
fn drive<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), hyper::Error>> + 'static,
{
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection closed with error");
        }
    });
}

async fn tcp_connect(authority: &Arc<str>, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(&**authority))
        .await
        .map_err(|_| ConnectError::Timeout {
            authority: authority.clone(),
            timeout,
        })?
        .map_err(|source| ConnectError::Io {
            authority: authority.clone(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

struct Home {
    pool: Rc<Pool>,
    authority: Arc<str>,
    tls: u64,
    sender: http1::SendRequest<UpstreamBody>,
    max_idle: usize,
    idle_timeout: Duration,
}

/// Where a direct connection goes when its response has ended.
pub struct DirectHome {
    pool: Rc<Pool>,
    authority: Arc<str>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl h1::GiveBack<Counted<TcpStream>> for DirectHome {
    fn give_back(self, conn: DirectConn) {
        let mut map = self.pool.direct.borrow_mut();
        let list = map.entry(self.authority).or_default();
        if list.len() < self.max_idle {
            list.push(DirectIdle {
                conn,
                expires: Instant::now() + self.idle_timeout,
            });
        }
    }
}

/// An upstream response body that gives its HTTP/1.1 connection back to the pool once it has
/// been read to the end.
pub struct PooledBody(Kind);

enum Kind {
    Hyper {
        inner: Incoming,
        home: Option<Home>,
        /// An HTTP/2 response's hold on its connection (see [`H2Use`]).
        stream: Option<StreamHold>,
    },
    Direct(h1::Body<Counted<TcpStream>, DirectHome>),
}

impl PooledBody {
    /// The response has ended: an HTTP/1.1 connection goes back to the pool, an HTTP/2
    /// stream no longer holds its connection. (A direct body sends its own home.)
    fn go_home(&mut self) {
        if let Kind::Hyper { home, stream, .. } = &mut self.0 {
            drop(stream.take());
            if let Some(h) = home.take() {
                h.pool
                    .put_idle(h.authority, h.tls, h.sender, h.max_idle, h.idle_timeout);
            }
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Bodies that were complete before anyone polled them (HEAD, 204, empty) still count.
        if self.is_end_stream() {
            self.go_home();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let inner = match &mut self.0 {
            Kind::Direct(body) => return Pin::new(body).poll_frame(cx),
            Kind::Hyper { inner, .. } => inner,
        };
        let frame = ready!(Pin::new(&mut *inner).poll_frame(cx));
        let ended = match &frame {
            None => true,
            Some(Ok(f)) if f.is_trailers() => true,
            Some(Ok(_)) => inner.is_end_stream(),
            _ => false,
        };
        if ended {
            self.go_home();
        }
        Poll::Ready(frame.map(|r| r.map_err(|e| Box::new(e) as BoxError)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Hyper { inner, .. } => inner.is_end_stream(),
            Kind::Direct(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Hyper { inner, .. } => inner.size_hint(),
            Kind::Direct(body) => body.size_hint(),
        }
    }
}
