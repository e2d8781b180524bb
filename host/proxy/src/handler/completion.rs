//! The end of one request: metrics, the access log, and the filters' last callbacks, run
//! when the response body is dropped.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::HeaderValue;
use http::{Method, StatusCode, Version, uri::PathAndQuery};
use rustygate_telemetry::NO_ROUTE_LABEL;
use rustygate_telemetry::trace::RequestTrace;

use crate::body::Transfer;
use crate::chain::ChainRun;
use crate::health::OwnedSlot;
use crate::worker::{Active, ConnCtx, Worker};

/// The end of one request: runs when the response body is dropped, whether it was sent in
/// full or the client went away.
pub(crate) struct Completion {
    pub(super) worker: Rc<Worker>,
    pub(super) conn: Rc<ConnCtx>,
    pub(super) start: Instant,
    pub(super) method: Method,
    pub(super) path: Option<PathAndQuery>,
    pub(super) version: Version,
    pub(super) request_id: HeaderValue,
    pub(super) route: Option<(u32, Arc<str>)>,
    pub(super) upstream: Option<Arc<str>>,
    /// The cluster (index) the request went to, once it was sent.
    pub(super) cluster: Option<usize>,
    pub(super) status: u16,
    pub(super) access_log: bool,
    /// The configuration generation the request runs on, kept until its last byte.
    pub(super) active: Rc<Active>,
    /// The request's place in its cluster's `max_requests`, kept until its last byte.
    pub(super) cluster_slot: Option<OwnedSlot>,
    pub(super) transfer: Rc<Transfer>,
    /// The request's filters, ended (`on_log`, `on_done`, `on_delete`) with the request.
    pub(super) chain: Option<Rc<ChainRun>>,
    /// The request's server span, when tracing is on.
    pub(super) trace: Option<Rc<RequestTrace>>,
}

impl Completion {
    pub(super) fn finish(mut self) {
        let end = Instant::now();
        let elapsed = end.saturating_duration_since(self.start);
        if let Some(run) = self.chain.take() {
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
        self.worker.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        let (route_idx, route_name) = match &self.route {
            Some((i, n)) => (*i, &**n),
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
            self.log(route_name, elapsed);
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
    fn log(&self, route_name: &str, elapsed: std::time::Duration) {
        let status = StatusCode::from_u16(self.status).map_or(0, |s| s.as_u16());
        macro_rules! access {
            ($($trace:tt)*) => {
            tracing::info!(
                target: "access",
                method = self.method.as_str(),
                path = self.path.as_ref().map_or("/", |p| p.as_str()),
                protocol = ?self.version,
                status,
                latency_ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
                route = route_name,
                upstream = self.upstream.as_deref().unwrap_or("-"),
                bytes_in = self.transfer.bytes_in.get(),
                bytes_out = self.transfer.bytes_out.get(),
                client = %self.conn.peer.ip(),
                listener = &*self.conn.listener.name,
                request_id = self.request_id.to_str().unwrap_or_default(),
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
