//! The end of one request: metrics, the access log, and the filters' last callbacks, run
//! when the response body is dropped.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, StatusCode, Version, uri::PathAndQuery};
use rustygate_core::ErrorKind;
use rustygate_filter_api::outcome::{self, Outcome, flags};
use rustygate_telemetry::NO_ROUTE_LABEL;
use rustygate_telemetry::trace::RequestTrace;

use crate::body::Transfer;
use crate::chain::ChainRun;
use crate::worker::{Active, ConnCtx, Worker};

/// A request's target as the access log prints it: its path and query, or a CONNECT's
/// `host:port` (it has no path), as nginx and HAProxy print the request line's target.
pub(super) enum LogPath {
    Path(PathAndQuery),
    Authority(http::uri::Authority),
}

impl LogPath {
    /// `uri`'s, for a request with `method`.
    pub(super) fn of(method: &Method, uri: &http::Uri) -> Option<LogPath> {
        if method == Method::CONNECT {
            uri.authority().cloned().map(LogPath::Authority)
        } else {
            uri.path_and_query().cloned().map(LogPath::Path)
        }
    }

    fn as_str(&self) -> &str {
        match self {
            LogPath::Path(p) => p.as_str(),
            LogPath::Authority(a) => a.as_str(),
        }
    }
}

/// The end of one request: runs when the response body is dropped, whether it was sent in
/// full or the client went away.
pub(crate) struct Completion {
    pub(super) worker: Rc<Worker>,
    pub(super) conn: Rc<ConnCtx>,
    pub(super) start: Instant,
    pub(super) method: Method,
    /// What the access log prints as `path`, kept only when it prints one.
    pub(super) path: Option<LogPath>,
    pub(super) version: Version,
    pub(super) request_id: HeaderValue,
    /// The route's index in `active`'s snapshot.
    pub(super) route: Option<u32>,
    pub(super) upstream: Option<Arc<str>>,
    /// The cluster (index) the request went to, once it was sent.
    pub(super) cluster: Option<usize>,
    pub(super) status: u16,
    pub(super) access_log: bool,
    /// The configuration generation the request runs on, kept until its last byte.
    pub(super) active: Rc<Active>,
    /// The cluster whose request slot (`circuit_breaker.max_requests`) the request holds
    /// until its response ends: an index into `active`'s snapshot rather than a slot that
    /// owns a reference to the cluster's counters (two atomic operations per request fewer).
    pub(super) cluster_slot: Option<usize>,
    pub(super) transfer: Rc<Transfer>,
    /// The request's filters, ended (`on_log`, `on_done`, `on_delete`) with the request.
    pub(super) chain: Option<Rc<ChainRun>>,
    /// The request's server span, when tracing is on.
    pub(super) trace: Option<Rc<RequestTrace>>,
    /// How the request ended, for a request without filters (see [`Completion::outcome`]).
    pub(super) outcome: Outcome,
    /// The response body's length when known up front: a body that delivered that much was
    /// complete, even if hyper stopped asking before the body said so (it writes no trailers
    /// after a length-delimited HTTP/1.1 body).
    pub(super) body_len: Option<u64>,
}

/// What Envoy reports for a failure of this kind: its response flag and response code
/// details. Kinds Envoy has no words for keep this gateway's error code as details.
pub(crate) fn record_failure(outcome: &Outcome, kind: ErrorKind) {
    let (bits, details) = match kind {
        ErrorKind::NoRoute => (flags::NO_ROUTE_FOUND, "route_not_found"),
        ErrorKind::BadRequest => (flags::DOWNSTREAM_PROTOCOL_ERROR, "bad_request"),
        ErrorKind::BodyTooLarge => (0, "request_payload_too_large"),
        ErrorKind::HeadersTooLarge => (flags::DOWNSTREAM_PROTOCOL_ERROR, "http1.headers_too_large"),
        ErrorKind::RequestTimeout => (flags::STREAM_IDLE_TIMEOUT, "stream_idle_timeout"),
        ErrorKind::NotImplemented => (
            flags::DOWNSTREAM_PROTOCOL_ERROR,
            "http1.invalid_transfer_encoding",
        ),
        ErrorKind::UpstreamConnect => (
            flags::UPSTREAM_CONNECTION_FAILURE,
            "upstream_reset_before_response_started{connection_failure}",
        ),
        ErrorKind::UpstreamReset => (
            flags::UPSTREAM_CONNECTION_TERMINATION,
            "upstream_reset_before_response_started{connection_termination}",
        ),
        ErrorKind::UpstreamTimeout => (flags::UPSTREAM_REQUEST_TIMEOUT, "response_timeout"),
        ErrorKind::UpstreamProtocol => (
            flags::UPSTREAM_PROTOCOL_ERROR,
            "upstream_reset_before_response_started{protocol_error}",
        ),
        ErrorKind::UpstreamOverflow => (
            flags::UPSTREAM_OVERFLOW,
            "upstream_reset_before_response_started{overflow}",
        ),
        ErrorKind::NoHealthyUpstream => (flags::NO_HEALTHY_UPSTREAM, "no_healthy_upstream"),
        ErrorKind::FilterFailed => (0, "wasm_fail_stream"),
        ErrorKind::Overloaded => (flags::OVERLOAD_MANAGER, "overload"),
        ErrorKind::UpgradeRefused => (0, "upgrade_failed"),
        ErrorKind::Internal => (0, "internal"),
    };
    outcome.flag(bits);
    outcome.set_details(details);
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(c) = self.cluster_slot {
            let load = &self.active.snapshot.clusters[c].load;
            load.requests.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Completion {
    /// Where the request's outcome is kept: with its filters when it has any (they read it
    /// in `on_log`), else here.
    pub(super) fn outcome(&self) -> &Outcome {
        match &self.chain {
            Some(run) => &run.exchange.progress.outcome,
            None => &self.outcome,
        }
    }

    /// Why a response that started ended before its last byte, if it did: Envoy's flag and
    /// details for it.
    fn cut_short(&self) {
        let t = &self.transfer;
        let (bits, details) = if t.stalled.get()
            || t.reader_stalled.get()
            || (!t.complete.get() && self.conn.socket.stalled.load(Ordering::Relaxed))
        {
            (flags::STREAM_IDLE_TIMEOUT, "stream_idle_timeout")
        } else if t.upstream_broke.get() {
            (
                flags::UPSTREAM_CONNECTION_TERMINATION,
                "upstream_reset_after_response_started{connection_termination}",
            )
        } else if !t.complete.get()
            && !t.failed.get()
            && self.body_len.is_none_or(|len| t.bytes_out.get() < len)
            && self.method != Method::HEAD
            && !matches!(self.status, 100..=199 | 204 | 304)
            && self.status != 0
        {
            // An HTTP/2 client can reset one stream and keep its connection: Envoy tells the
            // two apart.
            if self.version == Version::HTTP_2
                && !self.conn.socket.peer_closed.load(Ordering::Relaxed)
            {
                (flags::DOWNSTREAM_REMOTE_RESET, "http2.remote_reset")
            } else {
                (
                    flags::DOWNSTREAM_CONNECTION_TERMINATION,
                    "downstream_remote_disconnect",
                )
            }
        } else {
            return;
        };
        let outcome = self.outcome();
        outcome.flag(bits);
        outcome.set_details(details);
    }

    /// An HTTP/1 response that starts before its request has arrived whole ends the
    /// connection, as Envoy ends it: the rest of the request could not be told from the next
    /// one, and hyper stops reading it once nothing wants it. Saying so lets the client open
    /// a new connection for its next request instead of losing it on this one. A tunnel is
    /// the exception: its "body" is the tunnelled stream. What the client sends next is the
    /// rest of the request, so the connection's head scan stops.
    pub(super) fn close_early(&self, conn: &ConnCtx, parts: &mut http::response::Parts) {
        if matches!(
            self.version,
            Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11
        ) && parts.status != StatusCode::SWITCHING_PROTOCOLS
            && self.method != Method::CONNECT
        {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            conn.socket.heads_over.store(true, Ordering::Relaxed);
        }
    }

    pub(super) fn finish(mut self) {
        let end = Instant::now();
        let elapsed = end.saturating_duration_since(self.start);
        self.cut_short();
        let run = self.chain.take();
        if let Some(run) = &run {
            // What `on_log` may ask about the request, now that it is over.
            let progress = &run.exchange.progress;
            progress
                .request_body_bytes
                .set(self.transfer.bytes_in.get());
            progress
                .response_body_bytes
                .set(self.transfer.bytes_out.get());
            progress.duration.set(Some(elapsed));
            run.complete();
        }
        self.conn.request_finished(end);
        self.worker.shared.in_flight.decrement(self.worker.id);
        let (route_idx, route_name) = match self.route {
            Some(i) => (i, &*self.active.snapshot.routes[i as usize].name),
            None => (u32::MAX, NO_ROUTE_LABEL),
        };
        self.active.record_request(
            &self.worker.shared.metrics,
            route_idx,
            route_name,
            self.status,
            elapsed,
        );
        if let Some(t) = &self.trace {
            t.finish(self.status);
        }
        if self.access_log {
            let outcome = run
                .as_ref()
                .map_or(&self.outcome, |r| &r.exchange.progress.outcome);
            self.log(route_name, elapsed, outcome);
        }
        if self.transfer.reader_stalled.get() {
            tracing::info!(
                route = route_name,
                request_id = self.request_id.to_str().unwrap_or_default(),
                bytes_out = self.transfer.bytes_out.get(),
                "stream reset: the client read nothing for the stream idle timeout"
            );
        }
        if self.transfer.stalled.get() {
            if let Some(c) = self.cluster {
                let name = &self.active.snapshot.clusters[c].name;
                self.worker.upstream_failure(name, "idle_timeout");
            }
            tracing::warn!(
                route = route_name,
                upstream = self.upstream.as_deref().unwrap_or("-"),
                request_id = self.request_id.to_str().unwrap_or_default(),
                bytes_out = self.transfer.bytes_out.get(),
                "response cut off: no body byte from the upstream within the stream idle timeout"
            );
        }
    }

    /// The access log line; it names the trace when the request is traced, so a log line
    /// leads to its spans.
    fn log(&self, route_name: &str, elapsed: Duration, outcome: &Outcome) {
        let status = StatusCode::from_u16(self.status).map_or(0, |s| s.as_u16());
        let details = outcome.details();
        macro_rules! access {
            ($($trace:tt)*) => {
            tracing::info!(
                target: "access",
                method = self.method.as_str(),
                path = self.path.as_ref().map_or("/", LogPath::as_str),
                protocol = ?self.version,
                status,
                latency_ms = millis(elapsed),
                route = route_name,
                upstream = self.upstream.as_deref().unwrap_or("-"),
                bytes_in = self.transfer.bytes_in.get(),
                bytes_out = self.transfer.bytes_out.get(),
                client = %self.conn.peer.ip(),
                listener = &*self.conn.listener.name,
                request_id = self.request_id.to_str().unwrap_or_default(),
                response_flags = &*outcome::flag_names(outcome.flags()),
                code_details = if details.is_empty() { "-" } else { &*details },
                $($trace)*
                "request"
            )
            };
        }
        match &self.trace {
            None => access!(),
            Some(t) => access!(trace_id = %t.trace_id(), span_id = %t.span_id(),),
        }
    }
}

/// A duration as the access log gives it: milliseconds, to the microsecond.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// A request head its connection answered itself (with no request made of it), as the access
/// log and the request metrics see it.
pub(crate) struct HeadAnswer<'a> {
    pub status: u16,
    /// Envoy's response flag for it, `-` for none.
    pub flags: &'static str,
    /// Envoy's response code details for it.
    pub details: &'static str,
    pub request_id: &'a str,
    /// Since the head began.
    pub took: Duration,
    pub body_len: usize,
}

/// Counts and logs a request head answered by its connection: one that did not arrive
/// within the header timeout (408), was refused before it was parsed (400, 431), or that
/// hyper could not parse (400, 414, 431). There is no request to complete, but Envoy counts
/// and logs these as requests, with nothing of the head (which never arrived whole or
/// well-formed).
pub(crate) fn head_answered(worker: &Worker, conn: &ConnCtx, answer: HeadAnswer<'_>) {
    let active = worker.active();
    active.record_request(
        &worker.shared.metrics,
        u32::MAX,
        NO_ROUTE_LABEL,
        answer.status,
        answer.took,
    );
    if active.snapshot.access_log {
        tracing::info!(
            target: "access",
            method = "-",
            path = "-",
            protocol = "HTTP/1.1",
            status = answer.status,
            latency_ms = millis(answer.took),
            route = NO_ROUTE_LABEL,
            upstream = "-",
            bytes_in = 0u64,
            bytes_out = answer.body_len as u64,
            client = %conn.peer.ip(),
            listener = &*conn.listener.name,
            request_id = answer.request_id,
            response_flags = answer.flags,
            code_details = answer.details,
            "request"
        );
    }
}
