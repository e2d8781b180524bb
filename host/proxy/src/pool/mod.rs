//! Per-worker upstream connection pools. Each worker owns its pool outright (Envoy does the
//! same), so checkout and return are plain `RefCell` operations: no lock, no atomics, and a
//! pooled connection is only ever driven by the thread that made it.
//!
//! HTTP/1.1 connections are checked out exclusively and come back when the response body has
//! been read to the end; a response abandoned midway closes its connection, because the
//! stream position is then unknown. Cleartext HTTP/1.1 connections for requests without a
//! body are the direct client's ([`h1`]), kept apart from those hyper drives. HTTP/2
//! connections are shared: one per endpoint per worker, multiplexed.

use rustc_hash::FxHashMap as HashMap;
use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use rustygate_config::UpstreamProtocol;
use rustygate_filter_api::RequestHead;

use crate::body::BoxError;
use crate::h1;
use crate::health::ClusterLoad;
use crate::tcp::Tcp;
use crate::tls::ClientTls;

mod body;
mod connect;

pub use body::PooledBody;
use body::{DirectHome, Home, Kind};
pub use connect::ConnectError;
use connect::{Counted, Io, connect, handshake_h1, handshake_h2};

/// Body type of requests sent upstream. Not `Send`: bodies may hold worker-local state, and
/// they never leave the worker.
pub type UpstreamBody = Pin<Box<dyn Body<Data = Bytes, Error = BoxError>>>;

/// Marks a `CONNECT` the gateway answers itself (a route's `connect: terminate`): the pool
/// opens a connection to the endpoint instead of sending the request.
#[derive(Debug, Clone, Copy)]
pub struct TerminateConnect;

/// A byte stream to an upstream: the far end of a terminated `CONNECT`'s tunnel.
pub trait RawIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> RawIo for T {}

/// A filtered request's header fields that its own map does not hold (see
/// [`Pool::try_send`]).
#[derive(Clone, Copy)]
pub struct Shared<'a> {
    /// The filters' view of the request, which holds most of them.
    pub head: &'a RefCell<RequestHead>,
    /// The `Host` it goes with (filters see it as `:authority` only), unless its own map
    /// names one.
    pub host: Option<&'a HeaderValue>,
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
    /// The request, if not a byte of it reached the upstream. Boxed: a failure is rare, and
    /// the result that may hold it is copied at each layer of a send that succeeds as well.
    pub request: Option<Box<Request<UpstreamBody>>>,
}

impl Unsent {
    fn with(error: SendError, request: Request<UpstreamBody>) -> Self {
        Self {
            error,
            request: Some(Box::new(request)),
        }
    }

    fn sent(error: impl Into<ExchangeError>) -> Self {
        Self {
            error: SendError::Exchange(error.into()),
            request: None,
        }
    }

    fn from_try(mut e: TrySendError<Request<UpstreamBody>>) -> Self {
        let request = e.take_message().map(Box::new);
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

/// The idle connections of the direct HTTP/1.1 client ([`h1`]) to one endpoint, shared by
/// the pool's map and the bodies of the responses in flight from that endpoint: a body puts
/// its connection back here without a lookup by name (and without holding the name, whose
/// reference count is atomic).
struct DirectList {
    idle: RefCell<Vec<DirectIdle>>,
    clock: Arc<crate::loop_clock::LoopClock>,
}

impl DirectList {
    /// The most recently returned connection that is still live, if any (as in
    /// [`Pool::take_idle`]); expired or closed ones met on the way are dropped.
    fn take(&self) -> Option<DirectConn> {
        let mut idle = self.idle.borrow_mut();
        let now = self.clock.now();
        while let Some(i) = idle.pop() {
            if now < i.expires && i.conn.is_reusable() {
                return Some(i.conn);
            }
        }
        None
    }

    /// Keeps `conn` for reuse for `idle_timeout`, unless `max_idle` are kept already.
    fn put(&self, conn: DirectConn, max_idle: usize, idle_timeout: Duration) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < max_idle {
            idle.push(DirectIdle {
                conn,
                expires: self.clock.now() + idle_timeout,
            });
        }
    }
}

/// An idle connection of the direct HTTP/1.1 client ([`h1`]).
struct DirectIdle {
    conn: DirectConn,
    /// When the cluster's idle timeout closes it.
    expires: Instant,
}

/// Boxed when made, so that moving it (into a response's body and back) moves a pointer.
type DirectConn = Box<h1::Conn<Counted<Tcp>>>;

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
    direct: RefCell<HashMap<Arc<str>, Rc<DirectList>>>,
    h2: RefCell<HashMap<Arc<str>, H2>>,
    /// The worker's clock: checkouts and returns need the time only to the poll.
    pub(crate) clock: Arc<crate::loop_clock::LoopClock>,
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

/// The response whose head `conn` has just read, with a body that puts `conn` back in `list`
/// once read to its end.
fn wrap_direct(
    conn: DirectConn,
    head: h1::ResponseHead,
    list: Rc<DirectList>,
    settings: &EndpointSettings,
) -> Response<PooledBody> {
    let home = DirectHome {
        list,
        max_idle: settings.max_idle,
        idle_timeout: settings.idle_timeout,
    };
    let body = h1::Body::new(conn, &head, home);
    h1::response(head).map(|()| PooledBody(Kind::Direct(body)))
}

impl Pool {
    pub fn new(clock: Arc<crate::loop_clock::LoopClock>) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }

    /// Sends `req` to `authority`, reusing a pooled connection when one is live. A request
    /// that failed on a reused connection *before any of it was written* (the upstream had
    /// closed the idle connection) is sent again on a fresh one; anything else is returned.
    pub async fn send(
        self: &Rc<Self>,
        authority: &Arc<str>,
        settings: &EndpointSettings,
        req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        self.try_send(authority, settings, req, None)
            .await
            .map_err(|u| u.error)
    }

    /// Like [`Pool::send`], but a request that was not sent at all (no connection, breaker
    /// open, refused before a byte was written) comes back with the error, so it can be tried
    /// on another endpoint without having been copied.
    ///
    /// `shared` holds the rest of the request's header fields when `req`'s own map has only
    /// those set after the filters ran (a trace context, a rewritten `Host`), which override
    /// the same names there: the filters' view of the request, which they may read until the
    /// stream ends, and its `Host`. The direct client writes them as they stand; other paths
    /// send a merged copy.
    pub async fn try_send(
        self: &Rc<Self>,
        authority: &Arc<str>,
        settings: &EndpointSettings,
        mut req: Request<UpstreamBody>,
        shared: Option<Shared<'_>>,
    ) -> Result<Response<PooledBody>, Unsent> {
        if req.method() == http::Method::CONNECT
            && req.extensions().get::<TerminateConnect>().is_some()
        {
            return self.open_raw(authority, settings, req).await;
        }
        if settings.protocol == UpstreamProtocol::Http1 && settings.tls.is_none() && h1::fits(&req)
        {
            return self.send_direct(authority, settings, req, shared).await;
        }
        if let Some(shared) = shared {
            let own = std::mem::take(req.headers_mut());
            let mut all = shared.head.borrow().headers.clone();
            if let Some(host) = shared.host {
                all.insert(header::HOST, host.clone());
            }
            // Replaces the fields of the names `own` has.
            all.extend(own);
            *req.headers_mut() = all;
        }
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

    /// Answers a `CONNECT` the gateway terminates: a new connection to `authority` (never a
    /// pooled one: it becomes the tunnel's), and a 200 whose body holds it for the switch to
    /// take ([`PooledBody::take_tunnel`]). The request itself goes nowhere.
    async fn open_raw(
        &self,
        authority: &Arc<str>,
        settings: &EndpointSettings,
        req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, Unsent> {
        let io: Box<dyn RawIo> = match Box::pin(connect(authority, settings)).await {
            Ok(Io::Plain(io)) => Box::new(io.into_inner()),
            Ok(Io::Tls(io)) => Box::new(io.into_inner()),
            Err(error) => return Err(Unsent::with(error, req)),
        };
        Ok(Response::new(PooledBody(Kind::Tunnel(Some(io)))))
    }

    /// Sends a bodiless cleartext request on the direct client. A reused connection the
    /// upstream had closed (the write fails, or nothing comes back to an idempotent request)
    /// is dropped and the next one tried, as on hyper's path.
    async fn send_direct(
        self: &Rc<Self>,
        authority: &Arc<str>,
        settings: &EndpointSettings,
        req: Request<UpstreamBody>,
        shared: Option<Shared<'_>>,
    ) -> Result<Response<PooledBody>, Unsent> {
        let resend = idempotent(req.method());
        // Borrowed only while the head is written into the connection's buffer: a filter
        // callback may run while the request is out.
        let prepare = |conn: &mut DirectConn, req: &Request<UpstreamBody>| {
            let head = shared.map(|s| s.head.borrow());
            let host = shared.and_then(|s| s.host);
            conn.prepare(req, head.as_ref().map(|h| &h.headers), host);
        };
        let list = self.direct_list(authority);
        while let Some(mut conn) = list.take() {
            prepare(&mut conn, &req);
            match conn.exchange(req.method()).await {
                Ok(head) => return Ok(wrap_direct(conn, head, list, settings)),
                Err(f) if f.unsent || (f.nothing_back && resend) => continue,
                Err(f) => return Err(Unsent::sent(f.error)),
            }
        }
        let mut conn = match Box::pin(connect(authority, settings)).await {
            Ok(Io::Plain(io)) => Box::new(h1::Conn::new(io.into_inner())),
            Ok(Io::Tls(_)) => unreachable!("the direct client is for cleartext clusters"),
            Err(error) => return Err(Unsent::with(error, req)),
        };
        prepare(&mut conn, &req);
        match conn.exchange(req.method()).await {
            Ok(head) => Ok(wrap_direct(conn, head, list, settings)),
            Err(f) if f.unsent => Err(Unsent::with(SendError::Exchange(f.error.into()), req)),
            Err(f) => Err(Unsent::sent(f.error)),
        }
    }

    /// The direct client's idle list for `authority`, made on first use.
    fn direct_list(&self, authority: &Arc<str>) -> Rc<DirectList> {
        let mut map = self.direct.borrow_mut();
        if let Some(list) = map.get(authority) {
            return list.clone();
        }
        let list = Rc::new(DirectList {
            idle: RefCell::new(Vec::new()),
            clock: self.clock.clone(),
        });
        map.insert(authority.clone(), list.clone());
        list
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
        let now = self.clock.now();
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
                expires: self.clock.now() + idle_timeout,
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
            let mut idle = list.idle.borrow_mut();
            idle.retain(|i| now < i.expires && i.conn.is_reusable());
            idle.iter().for_each(|i| soonest(i.expires));
            // A list that a response in flight will put its connection back in stays.
            !idle.is_empty() || Rc::strong_count(list) > 1
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
        // A connection that switched protocols (a 101, a CONNECT's 2xx: hyper hands over
        // such a connection) belongs to its tunnel, never to the pool.
        let switched = resp
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some();
        let home = (!switched).then(|| {
            Box::new(Home {
                pool: self.clone(),
                authority: authority.clone(),
                tls: tls_id(settings),
                sender,
                max_idle: settings.max_idle,
                idle_timeout: settings.idle_timeout,
            })
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

/// Methods whose request may be sent again when a reused connection turns out closed
/// (RFC 9110 §9.2.2).
fn idempotent(method: &http::Method) -> bool {
    use http::Method as M;
    [M::GET, M::HEAD, M::OPTIONS, M::TRACE, M::PUT, M::DELETE].contains(method)
}
