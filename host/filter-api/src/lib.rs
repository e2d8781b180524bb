//! The filter contract. The proxy knows filters only through these types: it never sees
//! wasmtime, proxy-wasm or WIT. A filter engine (the proxy-wasm host, the component host)
//! supplies a [`FilterFactory`] per configured filter and per worker; the proxy asks it for one
//! [`HttpFilter`] per request and drives the phases in order.
//!
//! Everything here lives on one worker thread: factories and filters are not `Send`.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

mod body;
pub mod grpc;
mod inline;
mod metadata;
pub mod outcome;
pub mod services;
pub use body::{BodyBuffer, UnsupportedEdit};
pub use inline::InlineDeque;
pub use metadata::MetaValue;

/// The request as filters see and change it.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Method (`:method`).
    pub method: Method,
    /// Path with query (`:path`).
    pub path: String,
    /// Authority (`:authority`, from `Host` for HTTP/1.1).
    pub authority: String,
    /// `http` or `https` (`:scheme`).
    pub scheme: &'static str,
    /// Regular headers (no `Host`: it is `authority`).
    pub headers: HeaderMap,
}

/// The response as filters see and change it.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Status (`:status`).
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
}

/// A response a filter sends instead of (or in place of) the upstream's.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers to send (beyond `content-length`, which the proxy sets).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body.
    pub body: Bytes,
    /// Why, for logs (`details` in proxy-wasm).
    pub details: String,
    /// The gRPC status to answer a gRPC request with (proxy-wasm's `grpc_status`, when it is
    /// a valid code); `None`: the one the HTTP status maps to.
    pub grpc_status: Option<u32>,
}

impl LocalResponse {
    /// This response as Envoy answers a gRPC request locally: "trailers-only" (status 200,
    /// `content-type: application/grpc`, a `grpc-status` unless the headers hold one, the
    /// body as a percent-encoded `grpc-message`) and no body. Envoy does this before the
    /// response phases, so filters see the gRPC form.
    pub fn into_grpc(&mut self) {
        use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
        let http_status = self.status.as_u16();
        self.status = StatusCode::OK;
        self.headers
            .retain(|(k, _)| k != CONTENT_TYPE && k != CONTENT_LENGTH);
        self.headers
            .push((CONTENT_TYPE, HeaderValue::from_static("application/grpc")));
        if !self.headers.iter().any(|(k, _)| k == "grpc-status") {
            let code = self
                .grpc_status
                .unwrap_or_else(|| grpc::status_from_http(http_status));
            self.headers.push((
                HeaderName::from_static("grpc-status"),
                HeaderValue::from(code),
            ));
        }
        let body = std::mem::take(&mut self.body);
        let message = body.strip_suffix(b"\n").unwrap_or(&body);
        if !message.is_empty() {
            self.headers.retain(|(k, _)| k != "grpc-message");
            let encoded = grpc_message(message);
            if let Ok(v) = HeaderValue::from_str(&encoded) {
                self.headers
                    .push((HeaderName::from_static("grpc-message"), v));
            }
        }
    }
}

/// `text` percent-encoded as gRPC's `grpc-message` is, with Envoy's choice of what to
/// encode: control bytes, `~`, bytes above it, and `%`.
fn grpc_message(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text {
        if !(b' '..b'~').contains(&b) || b == b'%' {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Whether a request with these headers is a gRPC request, as Envoy tells: its content type
/// is `application/grpc`, possibly with a `+suffix` or parameters (gRPC-Web is not).
pub fn is_grpc_request(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().strip_prefix(b"application/grpc"))
        .is_some_and(|rest| matches!(rest.first(), None | Some(b'+' | b';')))
}

/// What a phase decided.
#[derive(Debug)]
pub enum Verdict {
    /// Go on to the next filter (or the upstream / the client).
    Continue,
    /// Hold the request here until [`HttpFilter::resumed`] completes (for example, until an
    /// outbound call the filter made has answered).
    Pause,
    /// Stop here and send this response instead. When given during request phases, the
    /// response still passes through the response phases of this filter and those before it.
    Respond(LocalResponse),
    /// End the client's stream without an answer, as Envoy's `resetStream`: an HTTP/1.1
    /// connection closes, an HTTP/2 stream gets `RST_STREAM`. No further phase of any filter
    /// runs; every filter still gets its end-of-request callbacks.
    Reset,
}

/// Facts about the request that filters may read (proxy-wasm properties, WIT request info).
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The client's address.
    pub client: SocketAddr,
    /// The gateway's local address for this connection.
    pub local: SocketAddr,
    /// `X-Request-Id`.
    pub request_id: HeaderValue,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: &'static str,
    /// What the client connection's TLS handshake settled; `None` in the clear.
    pub tls: Option<Arc<ConnectionTls>>,
    /// The client connection's id, unique in the process (`connection.id`).
    pub connection_id: u64,
    /// When the request's head arrived (`request.time`, `request.duration`).
    pub start: std::time::Instant,
}

/// What the proxy learns about the request as it goes: where it is routed (which a filter's
/// change can alter), and the facts Envoy's stream info holds after the fact (`upstream.*`,
/// `request.size`, `response.size`, `request.duration`).
#[derive(Debug, Default)]
pub struct Progress {
    /// The route's name (the worker's copy: neither a copy nor an atomic reference count per
    /// request); the new route's when a filter's change sends the request to another one.
    pub route: RefCell<Option<Rc<str>>>,
    /// The cluster the request goes to: its route's, drawn again when a filter's change sends
    /// the request to another route; `None` on a route that answers by itself.
    pub cluster: RefCell<Option<Rc<str>>>,
    /// The route's `metadata` (`route_metadata`), shared with the routing snapshot; the new
    /// route's after a filter's change sends the request to another one.
    pub route_metadata: RefCell<Option<Arc<MetaValue>>>,
    /// The cluster's `metadata` (`cluster_metadata`), likewise.
    pub cluster_metadata: RefCell<Option<Arc<MetaValue>>>,
    /// The endpoint (`host:port`) the request was sent to, once it was.
    pub upstream: RefCell<Option<Arc<str>>>,
    /// Upstream attempts made (1 without retries).
    pub attempts: std::cell::Cell<u32>,
    /// Request body bytes received from the client.
    pub request_body_bytes: std::cell::Cell<u64>,
    /// Response body bytes sent to the client.
    pub response_body_bytes: std::cell::Cell<u64>,
    /// The request's whole duration, once it is complete (before `on_log`).
    pub duration: std::cell::Cell<Option<std::time::Duration>>,
    /// How the request ended, in Envoy's terms (`response.flags`, `response.code_details`).
    pub outcome: outcome::Outcome,
}

/// A TLS client connection, as filters see it (Envoy's `connection.*` properties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionTls {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The server name the client asked for (SNI), if it sent one.
    pub server_name: Option<String>,
    /// Lower-case hex SHA-256 of the client's certificate, when it presented one (mutual TLS;
    /// the listener verified it).
    pub peer_certificate_sha256: Option<String>,
    /// That certificate's subject, RFC 2253 (`CN=client,O=Example`), as Envoy prints it.
    pub peer_subject: Option<String>,
    /// Its URI subject alternative names (a SPIFFE ID, say), in certificate order.
    pub peer_uri_sans: Vec<String>,
    /// Its DNS subject alternative names, in certificate order.
    pub peer_dns_sans: Vec<String>,
}

/// One request as the proxy and its filters share it for the request's whole life. Filters may
/// read and change the heads only while one of their phases runs (or, for an engine with
/// deferred work, from a callback the engine runs on the same worker); the proxy never holds a
/// borrow across a phase.
#[derive(Debug)]
pub struct Exchange {
    /// The request head; what is here after the request phases is what goes upstream.
    pub request: RefCell<RequestHead>,
    /// The response head, once there is one.
    pub response: RefCell<Option<ResponseHead>>,
    /// Read-only facts about the request.
    pub info: StreamInfo,
    /// During a request body phase (and while a filter is paused in one): the body data the
    /// filter holds. Empty otherwise.
    pub request_body: RefCell<BodyBuffer>,
    /// The same for the response body.
    pub response_body: RefCell<BodyBuffer>,
    /// Request trailers, once they arrived (or a filter added some at the end of the body).
    pub request_trailers: RefCell<Option<HeaderMap>>,
    /// Response trailers, likewise.
    pub response_trailers: RefCell<Option<HeaderMap>>,
    /// Set by engines when a filter changed the request head. The proxy then routes the
    /// request again (Envoy clears its route cache on such writes), so a rewritten path or host
    /// can reach another route's cluster.
    pub request_changed: std::cell::Cell<bool>,
    /// What became of the request so far.
    pub progress: Progress,
}

impl Exchange {
    /// A new exchange for a request whose head is `request`.
    pub fn new(request: RequestHead, info: StreamInfo) -> Self {
        Self {
            request: RefCell::new(request),
            response: RefCell::new(None),
            info,
            request_body: RefCell::default(),
            response_body: RefCell::default(),
            request_trailers: RefCell::default(),
            response_trailers: RefCell::default(),
            request_changed: std::cell::Cell::new(false),
            progress: Progress::default(),
        }
    }

    /// [`Exchange::new`], made in its shared allocation: built on the stack and moved into
    /// an `Rc`, the kilobyte-sized exchange is copied once more on every filtered request.
    #[allow(unsafe_code)]
    pub fn shared(request: RequestHead, info: StreamInfo) -> Rc<Self> {
        let mut slot = Rc::<Self>::new_uninit();
        Rc::get_mut(&mut slot)
            .expect("a new Rc has no other owner")
            .write(Self::new(request, info));
        // SAFETY: written just above.
        unsafe { slot.assume_init() }
    }

    /// The body slot of one direction.
    pub fn body(&self, direction: Direction) -> &RefCell<BodyBuffer> {
        match direction {
            Direction::Request => &self.request_body,
            Direction::Response => &self.response_body,
        }
    }

    /// The trailers slot of one direction.
    pub fn trailers(&self, direction: Direction) -> &RefCell<Option<HeaderMap>> {
        match direction {
            Direction::Request => &self.request_trailers,
            Direction::Response => &self.response_trailers,
        }
    }
}

/// Which way data is flowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream.
    Request,
    /// Upstream (or a local response) to client.
    Response,
}

/// What a body phase decided about the data the filter holds
/// (`exchange.request_body` / `response_body`).
#[derive(Debug)]
pub enum BodyVerdict {
    /// Pass on everything held (what earlier calls kept, and this chunk, as edited).
    Continue,
    /// Keep it: the next call sees it followed by the next chunk. After the last chunk the data
    /// stays held until [`HttpFilter::resumed`] completes.
    Buffer,
    /// Hold iteration but keep nothing: the data is dropped (Envoy's `StopIterationNoBuffer`).
    StopNoBuffer,
    /// Stop here and send this response instead.
    Respond(LocalResponse),
    /// End the client's stream ([`Verdict::Reset`]); mid-body, what was sent stays sent and
    /// the rest never comes.
    Reset,
}

/// Why a filter failed a request. The proxy applies the filter's [`FailurePolicy`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum FilterError {
    /// The filter trapped (panic, abort, bad memory access).
    #[error("filter trapped: {0}")]
    Trap(String),
    /// The filter exceeded its CPU deadline.
    #[error("filter exceeded its CPU deadline")]
    Deadline,
    /// The filter exceeded its memory limit.
    #[error("filter exceeded its memory limit")]
    Memory,
    /// The filter cannot serve (its VM failed earlier and is being replaced, or it refused its
    /// configuration).
    #[error("filter unavailable: {0}")]
    Unavailable(String),
}

impl FilterError {
    /// Short reason, used as the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            FilterError::Trap(_) => "trap",
            FilterError::Deadline => "cpu_deadline",
            FilterError::Memory => "memory",
            FilterError::Unavailable(_) => "unavailable",
        }
    }
}

/// What happens to a request when its filter fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Answer 503 with a JSON body (Envoy's default).
    #[default]
    FailClosed,
    /// Skip the filter and carry on.
    FailOpen,
}

/// One filter's work on one request. Phases are called in order, at most once each:
/// request headers, then (after the upstream answered, or after a local response)
/// response headers, then `complete` exactly once at the end, whatever happened.
pub trait HttpFilter {
    /// Request headers arrived (`exchange.request`). `end_of_stream` is true when there is no
    /// body.
    fn on_request_headers(
        &mut self,
        exchange: &Rc<Exchange>,
        end_of_stream: bool,
    ) -> Result<Verdict, FilterError>;

    /// Response headers arrived (`exchange.response`, from the upstream or a local response).
    fn on_response_headers(
        &mut self,
        exchange: &Rc<Exchange>,
        end_of_stream: bool,
    ) -> Result<Verdict, FilterError>;

    /// Body data arrived in `direction`; the data the filter holds is in
    /// [`Exchange::body`]. `end_of_stream` is true for the last data (with no trailers after
    /// it). Called only after that direction's headers phase continued.
    fn on_body(
        &mut self,
        exchange: &Rc<Exchange>,
        direction: Direction,
        end_of_stream: bool,
    ) -> Result<BodyVerdict, FilterError> {
        let _ = (exchange, direction, end_of_stream);
        Ok(BodyVerdict::Continue)
    }

    /// Trailers arrived in `direction` ([`Exchange::trailers`]).
    fn on_trailers(
        &mut self,
        exchange: &Rc<Exchange>,
        direction: Direction,
    ) -> Result<Verdict, FilterError> {
        let _ = (exchange, direction);
        Ok(Verdict::Continue)
    }

    /// Whether the filter has body or trailer phases in `direction` at all. The proxy skips
    /// buffering decisions and per-chunk calls for chains where no filter does.
    fn wants_body(&self, direction: Direction) -> bool {
        let _ = direction;
        false
    }

    /// Whether the filter may read the response head ([`Exchange::response`]) after its
    /// response-header phase, once the proxy has handed the head on towards the client: in a
    /// response body or trailer phase, at the end of the stream, or from a callback of its own.
    /// The proxy keeps a copy of the head only when some filter of the chain may.
    fn reads_response_late(&self) -> bool {
        true
    }

    /// After a phase of `direction` returned [`Verdict::Pause`], [`BodyVerdict::Buffer`] or
    /// [`BodyVerdict::StopNoBuffer`]: completes when the filter lets that direction go on
    /// (`Continue`) or answers the request (`Respond`). After a body stop, it completes only
    /// when the filter resumes explicitly (a later body call returning `Continue` also lets the
    /// data go). The proxy
    /// bounds the wait with the route timeout. The future does not borrow the filter, so other
    /// phases of the same request may run while it is pending.
    fn resumed(
        &mut self,
        direction: Direction,
    ) -> LocalFuture<'static, Result<Verdict, FilterError>>;

    /// The request is over (sent, failed or abandoned): final logging and clean-up.
    fn complete(&mut self);
}

/// A boxed future that stays on the worker thread.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Outbound HTTP for filters (proxy-wasm `proxy_http_call`), to the gateway's configured
/// clusters, using the worker's own connection pools.
pub trait Upstreams {
    /// Whether `cluster` is configured.
    fn has_cluster(&self, cluster: &str) -> bool;

    /// Sends `request` to an endpoint of `cluster` and reads the whole response (bounded in
    /// size). `timeout` of `None` waits as long as the upstream takes.
    fn call(
        &self,
        cluster: &str,
        request: http::Request<Bytes>,
        timeout: Option<std::time::Duration>,
    ) -> LocalFuture<'static, Result<http::Response<Bytes>, String>>;

    /// Opens a gRPC call to `cluster` over HTTP/2. Nothing is sent before this returns;
    /// `events` is called on this worker, from a task of its own (never from inside this
    /// call or the outbound's methods), until it has been given [`grpc::GrpcEvent::Close`]
    /// or the call is cancelled.
    fn grpc(
        &self,
        cluster: &str,
        request: grpc::GrpcRequest,
        events: Box<dyn FnMut(grpc::GrpcEvent)>,
    ) -> Result<Box<dyn grpc::GrpcOutbound>, String> {
        let _ = (request, events);
        Err(format!("no gRPC transport to cluster {cluster:?}"))
    }

    /// Runs `task` on this worker. Filter engines deliver outbound-call results through it;
    /// an implementation used before traffic starts (validation) may drop tasks.
    fn spawn(&self, task: LocalFuture<'static, ()>);
}

/// Creates a filter's per-request instances on one worker.
pub trait FilterFactory {
    /// Name from the configuration, for logs and metrics.
    fn name(&self) -> &str;

    /// The configured failure policy.
    fn failure_policy(&self) -> FailurePolicy;

    /// A filter instance for a new request.
    fn create(&self, exchange: &Rc<Exchange>) -> Result<Box<dyn HttpFilter>, FilterError>;
}

/// Builds one worker's filter chains. The proxy calls [`ChainBuilder::build`] once on each
/// worker thread at start-up, so instantiation never happens on the request path.
pub trait ChainBuilder: Send + Sync {
    /// The worker's chains, one per route in route order (empty for routes without filters).
    /// `upstreams` is how this worker's filters reach clusters.
    fn build(
        &self,
        upstreams: Rc<dyn Upstreams>,
    ) -> Result<Vec<Vec<Rc<dyn FilterFactory>>>, String>;

    /// This worker's balancer for cluster `cluster` (by index in the configuration), when
    /// the cluster names a balancer component. Called on the worker thread at start-up and
    /// for each new configuration, like [`ChainBuilder::build`].
    fn balancer(&self, _cluster: usize) -> Result<Option<Box<dyn Balancer>>, String> {
        Ok(None)
    }
}

/// One endpoint offered to a [`Balancer`].
#[derive(Debug, Clone)]
pub struct BalancerEndpoint {
    /// Index of the endpoint in its cluster; what [`Balancer::pick`] returns.
    pub id: u32,
    /// `host:port`.
    pub address: std::sync::Arc<str>,
    pub weight: u32,
    /// False only in panic mode (every endpoint offered, healthy or not).
    pub healthy: bool,
    pub zone: Option<String>,
    pub metadata: Vec<(String, String)>,
}

/// What a [`Balancer`] sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct PickRequest<'a> {
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    pub host: Option<&'a str>,
    /// The cluster's configured hash key, if the request has one.
    pub hash_key: Option<&'a str>,
}

/// How one attempt to an endpoint ended, reported to its [`Balancer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickOutcome {
    Response {
        status: u16,
        latency: std::time::Duration,
    },
    ConnectFailure,
    Timeout,
    Reset,
}

/// Why a balancer could not answer; the proxy falls back to its own round-robin.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct BalancerError {
    /// Stable code for metrics: `trap`, `cpu_deadline`, `memory`, `bad_pick`, `unavailable`.
    pub reason: &'static str,
    pub detail: String,
}

/// A load-balancing strategy for one cluster on one worker (never shared across threads).
pub trait Balancer {
    /// The endpoints to choose among from now on (those in rotation).
    fn set_endpoints(&mut self, endpoints: &[BalancerEndpoint]) -> Result<(), BalancerError>;

    /// The id of the endpoint for this request, or `None` to let the proxy choose.
    fn pick(&mut self, request: &PickRequest<'_>) -> Result<Option<u32>, BalancerError>;

    /// The outcome of an attempt sent to endpoint `id`.
    fn report(&mut self, id: u32, outcome: PickOutcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_exchange_holds_what_it_was_made_with() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        let head = RequestHead {
            method: http::Method::PUT,
            path: "/p?q".into(),
            authority: "a.test".into(),
            scheme: "https",
            headers,
        };
        let start = std::time::Instant::now();
        let info = StreamInfo {
            client: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
            request_id: HeaderValue::from_static("id-1"),
            protocol: "HTTP/2",
            tls: None,
            connection_id: 7,
            start,
        };
        let x = Exchange::shared(head, info);
        assert_eq!(Rc::strong_count(&x), 1);
        let req = x.request.borrow();
        assert_eq!(
            (
                req.method.as_str(),
                req.path.as_str(),
                req.authority.as_str()
            ),
            ("PUT", "/p?q", "a.test")
        );
        assert_eq!(req.headers["x-a"], "1");
        assert_eq!(
            (x.info.request_id.to_str().unwrap(), x.info.connection_id),
            ("id-1", 7)
        );
        assert_eq!(x.info.start, start);
        assert!(x.response.borrow().is_none() && !x.request_changed.get());
        assert!(x.request_body.borrow().is_empty() && x.request_trailers.borrow().is_none());
    }

    fn local(status: u16, headers: &[(&'static str, &'static str)], body: &str) -> LocalResponse {
        LocalResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: headers
                .iter()
                .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
                .collect(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            details: String::new(),
            grpc_status: None,
        }
    }

    fn header<'a>(l: &'a LocalResponse, name: &str) -> Option<&'a str> {
        l.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn a_local_reply_to_a_grpc_request_is_trailers_only() {
        let mut l = local(
            403,
            &[("content-type", "text/plain"), ("x-why", "policy")],
            "no 100%\n",
        );
        l.into_grpc();
        assert_eq!(l.status, StatusCode::OK);
        assert!(l.body.is_empty());
        assert_eq!(header(&l, "content-type"), Some("application/grpc"));
        assert_eq!(
            header(&l, "grpc-status"),
            Some("7"),
            "403 is PERMISSION_DENIED"
        );
        assert_eq!(header(&l, "grpc-message"), Some("no 100%25"));
        assert_eq!(header(&l, "x-why"), Some("policy"));

        // The filter's own code wins over the mapping, and a grpc-status it set wins over both.
        let mut given = local(403, &[], "");
        given.grpc_status = Some(16);
        given.into_grpc();
        assert_eq!(header(&given, "grpc-status"), Some("16"));
        assert_eq!(header(&given, "grpc-message"), None);
        let mut set = local(503, &[("grpc-status", "8")], "busy");
        set.into_grpc();
        assert_eq!(header(&set, "grpc-status"), Some("8"));
        assert_eq!(
            set.headers
                .iter()
                .filter(|(k, _)| k == "grpc-status")
                .count(),
            1
        );
    }

    #[test]
    fn grpc_requests_are_told_by_their_content_type() {
        let with = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
            is_grpc_request(&h)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(with("application/grpc;charset=utf-8"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/json"));
        assert!(!is_grpc_request(&HeaderMap::new()));
    }
}
