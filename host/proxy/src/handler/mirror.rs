//! Request mirroring: copies of a route's requests sent to other clusters, their answers
//! thrown away (Envoy's `request_mirror_policies`). A copy leaves once the request's body is
//! complete: a request without a body at once, one with a body when the last of it has gone
//! to the real upstream (the body is kept meanwhile, up to each mirror's `max_body_bytes`;
//! a longer one is not copied). Copies are not retried and never delay the request.

use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::uri::PathAndQuery;
use http::{Request, request::Parts};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use rustygate_config::RetryPolicy;
use rustygate_core::forwarding::shadow_authority;

use super::attempts::{self, Caller, Destination, Payload};
use crate::body::{BoxError, Replay};
use crate::pool::UpstreamBody;
use crate::snapshot::RouteEntry;
use crate::worker::{Active, Worker};

/// The copies one request makes: one head per mirror that drew it.
pub(super) struct Copies {
    worker: Rc<Worker>,
    active: Rc<Active>,
    timeout: Duration,
    client: IpAddr,
    /// Mirror cluster, its body limit, and the head its copy is sent with.
    heads: Vec<(usize, u64, Parts)>,
}

impl Copies {
    /// The copies `route` (which has mirrors) makes of the request in `parts` (as it goes
    /// upstream, but still unaddressed), or `None`. A mirror whose body limit the declared
    /// length already exceeds is counted as skipped here.
    pub fn sample(
        worker: &Rc<Worker>,
        active: Rc<Active>,
        route: &RouteEntry,
        parts: &Parts,
        path_and_query: &PathAndQuery,
        authority: Option<&str>,
        client: IpAddr,
    ) -> Option<Copies> {
        let declared = super::form::content_length(&parts.headers);
        let shadow = authority.map(shadow_authority);
        let mut heads = Vec::new();
        for m in &route.mirrors {
            if worker.rng.borrow_mut().f64() >= m.fraction {
                continue;
            }
            let cluster = &active.snapshot.clusters[m.cluster];
            if declared.is_some_and(|len| len > m.max_body_bytes) {
                count(worker, &cluster.name, "skipped");
                continue;
            }
            let mut head = Request::new(()).into_parts().0;
            head.method = parts.method.clone();
            head.headers = parts.headers.clone();
            head.headers.remove(header::HOST);
            match super::form::address(
                &mut head,
                cluster,
                path_and_query.clone(),
                shadow.as_deref(),
                &mut None,
            ) {
                Ok(()) => heads.push((m.cluster, m.max_body_bytes, head)),
                Err(_) => count(worker, &cluster.name, "failed"),
            }
        }
        (!heads.is_empty()).then(|| Copies {
            worker: worker.clone(),
            active,
            timeout: route.timeout,
            client,
            heads,
        })
    }

    /// The largest body any copy carries.
    fn max_body(&self) -> u64 {
        self.heads.iter().map(|(_, max, _)| *max).max().unwrap_or(0)
    }

    /// Sends every copy with `body`, each in its own task on this worker.
    pub fn send(self, body: Option<Replay>) {
        let len = body.as_ref().map_or(0, Replay::len);
        for (cluster_idx, max_body, head) in self.heads {
            let name = self.active.snapshot.clusters[cluster_idx].name.clone();
            if len > max_body {
                count(&self.worker, &name, "skipped");
                continue;
            }
            let body = body.as_ref().map_or_else(attempts::empty, Replay::body);
            let req = Request::from_parts(head, body);
            let (worker, active) = (self.worker.clone(), self.active.clone());
            let (timeout, client) = (self.timeout, self.client);
            tokio::task::spawn_local(async move {
                let once = RetryPolicy {
                    max_retries: 0,
                    ..RetryPolicy::default()
                };
                let to = Destination {
                    cluster_idx,
                    retry: &once,
                    timeout,
                };
                let caller = Caller {
                    trace: None,
                    client,
                    shared: None,
                };
                let outcome =
                    attempts::send(&worker, &active, to, req, Payload::Streamed, caller, || {
                        false
                    })
                    .await;
                let result = match outcome.result {
                    Ok(resp) => {
                        // Read to the end, so the connection goes back to the pool.
                        let _ = tokio::time::timeout(timeout, resp.into_body().collect()).await;
                        "answered"
                    }
                    Err(_) => "failed",
                };
                count(&worker, &name, result);
            });
        }
    }
}

fn count(worker: &Worker, cluster: &str, result: &str) {
    worker
        .shared
        .metrics
        .mirror_requests(cluster, result)
        .increment(1);
}

/// A request body on its way upstream that keeps what passes, up to the copies' largest
/// limit, and sends the copies when it ends. Dropped before its end (the request failed or
/// was abandoned), it sends nothing.
pub(super) struct Tee {
    inner: UpstreamBody,
    kept: Vec<Bytes>,
    len: u64,
    limit: u64,
    trailers: Option<HeaderMap>,
    copies: Option<Copies>,
}

impl Tee {
    pub fn new(inner: UpstreamBody, copies: Copies) -> Self {
        Self {
            inner,
            kept: Vec::new(),
            len: 0,
            limit: copies.max_body(),
            trailers: None,
            copies: Some(copies),
        }
    }

    fn keep(&mut self, frame: &Frame<Bytes>) {
        let Some(copies) = &self.copies else { return };
        if let Some(data) = frame.data_ref() {
            self.len += data.len() as u64;
            if self.len > self.limit {
                // Longer than any copy carries: every one is skipped.
                for (cluster_idx, _, _) in &copies.heads {
                    let name = &copies.active.snapshot.clusters[*cluster_idx].name;
                    count(&copies.worker, name, "skipped");
                }
                self.copies = None;
                self.kept = Vec::new();
                return;
            }
            self.kept.push(data.clone());
        } else if let Some(t) = frame.trailers_ref() {
            self.trailers = Some(t.clone());
        }
    }

    fn finish(&mut self) {
        let Some(copies) = self.copies.take() else {
            return;
        };
        let mut data = BytesMut::with_capacity(self.len as usize);
        for chunk in self.kept.drain(..) {
            data.extend_from_slice(&chunk);
        }
        copies.send(Some(Replay::new(data.freeze(), self.trailers.take())));
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.keep(frame);
                // hyper stops polling a body that says it has ended.
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => self.copies = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
