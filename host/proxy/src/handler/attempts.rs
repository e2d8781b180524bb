//! Sending a request to its cluster: endpoint choice among healthy endpoints, circuit
//! breaking, per-try timeouts, retries with backoff on a different endpoint within the retry
//! budget, and passive health (outlier detection) fed by every attempt.
//!
//! A request is retried only when that cannot repeat work the upstream did behind the
//! client's back: its method is idempotent (unless the route says otherwise). A request that
//! was never sent (connect failure, refused before a byte was written) comes back from the
//! pool and is re-sent as is, body and all; other retries need a copy, taken only when the
//! route retries on such outcomes: of the head, and of the body when it was small enough
//! (`retry.max_body_bytes`) to be read in full before the first attempt. A body streamed as
//! it arrives cannot be sent twice.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Empty};
use rustygate_config::{RetryOn, RetryPolicy, UpstreamProtocol};
use rustygate_core::ErrorKind;
use rustygate_core::resilience::{self, Attempt};

use crate::body::{BoxError, Replay};
use crate::health::Slot;
use crate::pool::{ExchangeError, PooledBody, SendError, Shared, UpstreamBody};
use crate::snapshot::{ClusterEntry, RouteEntry};
use crate::strategy::PickInfo;
use crate::worker::{Active, Worker};
use rustygate_filter_api::PickOutcome;
use rustygate_telemetry::trace::RequestTrace;

/// Why no response came back.
pub(super) enum Failed {
    /// No response head within this time.
    Timeout(Duration),
    /// The pool or the exchange failed.
    Send(SendError),
    /// A circuit breaker refused the request.
    Overflow(String),
    /// No endpoint is in rotation.
    NoEndpoint,
}

/// The final attempt's outcome and the endpoint it went to.
pub(super) struct Outcome<'a> {
    pub result: Result<Response<PooledBody>, Failed>,
    pub endpoint: Option<Arc<str>>,
    /// The cluster's request slot, which the request's `Completion` takes over until the
    /// response ends.
    pub slot: Option<Slot<'a>>,
    /// Attempts made (0 when none could be).
    pub attempts: u32,
}

/// Where the request goes and on what terms: the cluster picked for it, the retry policy,
/// and the time allowed for response headers over all tries.
pub(super) struct Destination<'a> {
    pub cluster_idx: usize,
    pub retry: &'a RetryPolicy,
    pub timeout: Duration,
}

impl<'a> Destination<'a> {
    /// A request on `route` to cluster `cluster_idx`.
    pub fn of(route: &'a RouteEntry, cluster_idx: usize) -> Self {
        Self {
            cluster_idx,
            retry: &route.retry,
            timeout: route.timeout,
        }
    }
}

/// Who the request is for: its trace, the client (for balancers hashing on its address),
/// and the filters' view of the request when it holds most of the header fields (see
/// [`crate::pool::Pool::try_send`]).
pub(super) struct Caller<'a> {
    pub trace: Option<&'a RequestTrace>,
    pub client: std::net::IpAddr,
    pub shared: Option<Shared<'a>>,
}

/// The request's body, as far as retries are concerned.
pub(super) enum Payload {
    /// None.
    Empty,
    /// Read in full before the first attempt: a retry sends it again.
    Replayable(Replay),
    /// Streamed as it arrives: sent once, unless it comes back unsent.
    Streamed,
}

/// Whether `policy` retries outcomes after which the request was consumed (sent, at least in
/// part), so that a retry needs a copy of it.
fn retries_consumed(policy: &RetryPolicy, protocol: UpstreamProtocol) -> bool {
    policy.retry_on.iter().any(|on| match on {
        RetryOn::ConnectFailure => false,
        RetryOn::RefusedStream => protocol == UpstreamProtocol::Http2,
        _ => true,
    })
}

/// Whether a request with `method` and a body of at most `len` bytes (when known) to
/// `cluster` should be read in full first, so that `route` can retry it after it was sent.
pub(super) fn buffers_body(
    route: &RouteEntry,
    cluster: &ClusterEntry,
    method: &Method,
    len: Option<u64>,
) -> bool {
    let policy = &route.retry;
    policy.max_retries > 0
        && (policy.retry_non_idempotent || resilience::idempotent(method))
        && retries_consumed(policy, cluster.settings.protocol)
        && len.is_some_and(|n| n <= policy.max_body_bytes)
}

/// What a retry re-sends when the first request was consumed.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Option<Replay>,
}

impl Head {
    fn request(&self) -> Request<UpstreamBody> {
        let body = self.body.as_ref().map_or_else(empty, Replay::body);
        let mut r = Request::new(body);
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// A body with nothing in it.
pub(super) fn empty() -> UpstreamBody {
    Box::pin(Empty::new().map_err(|never| -> BoxError { match never {} }))
}

/// Sends `req` (whose body `payload` describes) to `active`'s cluster as `Destination` says.
/// `client_caused` tells whether a failed exchange was the client's doing (a body cut short
/// by a filter or a limit), which must not count against the endpoint.
pub(super) async fn send<'a>(
    worker: &Worker,
    active: &'a Active,
    Destination {
        cluster_idx,
        retry: policy,
        timeout: route_timeout,
    }: Destination<'_>,
    req: Request<UpstreamBody>,
    payload: Payload,
    caller: Caller<'_>,
    client_caused: impl Fn() -> bool,
) -> Outcome<'a> {
    let trace = caller.trace;
    let cluster = &active.snapshot.clusters[cluster_idx];
    let metrics = &worker.shared.metrics;
    let Some(slot) = Slot::take(&cluster.load.requests, cluster.breaker.max_requests) else {
        metrics.circuit_open(&cluster.name, "requests").increment(1);
        return Outcome {
            result: Err(Failed::Overflow(format!(
                "{} requests in flight to cluster {} (circuit_breaker.max_requests)",
                cluster.breaker.max_requests, cluster.name
            ))),
            endpoint: None,
            slot: None,
            attempts: 0,
        };
    };
    let may_retry = policy.max_retries > 0
        && (policy.retry_non_idempotent || resilience::idempotent(req.method()));
    let copy_body = match payload {
        Payload::Empty => Some(None),
        Payload::Replayable(replay) => Some(Some(replay)),
        Payload::Streamed => None,
    };
    let head = copy_body
        .filter(|_| may_retry && retries_consumed(policy, cluster.settings.protocol))
        .map(|body| Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            body,
        });
    let mut first_start = None;
    let per_try = policy
        .per_try_timeout
        .map_or(route_timeout, |t| t.get().min(route_timeout));
    let health = &worker.shared.health;
    let mut tried: Vec<usize> = Vec::new();
    // Only a balancer component needs a view of the request.
    let pick_info = active.has_strategy(cluster_idx).then(|| {
        PickInfo::new(
            cluster,
            req.method(),
            req.uri(),
            req.headers(),
            caller.client,
        )
    });
    let mut req = Some(req);
    let mut _retry_slot: Option<Slot<'_>> = None;
    loop {
        // One clock reading per attempt (or per poll) serves the deadline, the health clock,
        // the attempt's timeout and its duration.
        let now = worker.clock.now();
        let first = *first_start.get_or_insert(now);
        let deadline = first + route_timeout;
        let now_ms = health.ms_at(now);
        let Some(idx) = active.pick_endpoint(cluster_idx, now_ms, &tried, pick_info.as_ref())
        else {
            return Outcome {
                result: Err(Failed::NoEndpoint),
                endpoint: None,
                slot: Some(slot),
                attempts: tried.len() as u32,
            };
        };
        let endpoint = &cluster.endpoints[idx];
        let left = deadline.saturating_duration_since(now);
        let timeout = per_try.min(left);
        // The worker keeps deadlines in a list per length, so this one is named by the
        // configured length it comes from: the try's own, or the request's (what is left).
        let (from, length) = if left.is_zero() {
            (now, Duration::ZERO)
        } else if per_try <= left {
            (now, per_try)
        } else {
            (first, route_timeout)
        };
        let mut this = req.take().expect("a request for every attempt");
        // Each attempt is a child span, and the upstream sees that attempt as its parent.
        let span = trace
            .zip(worker.shared.tracer.as_deref())
            .map(|(t, tracer)| {
                t.upstream_attempt(
                    tracer,
                    &cluster.name,
                    &endpoint.authority,
                    tried.len() as u32 + 1,
                    this.headers_mut(),
                )
            });
        let started = now;
        // Pinned where it is made: the timeout then holds a pointer, not a copy of the
        // (large) send future.
        let send = std::pin::pin!(worker.pool.try_send(
            &endpoint.authority,
            &cluster.settings,
            this,
            caller.shared,
        ));
        let sent = worker.deadlines.timeout(from.into(), length, send).await;
        let (attempt, result) = match sent {
            Ok(Ok(resp)) => {
                active.upstream_timers[cluster_idx]
                    .record(worker.clock.now().saturating_duration_since(started));
                (Some(Attempt::Status(resp.status().as_u16())), Ok(resp))
            }
            Ok(Err(unsent)) => {
                req = unsent.request.map(|r| *r);
                let attempt = match &unsent.error {
                    SendError::Overflow(what) => {
                        metrics.circuit_open(&cluster.name, what).increment(1);
                        None
                    }
                    SendError::Connect(_) => Some(Attempt::Failed(ErrorKind::UpstreamConnect)),
                    SendError::Exchange(_) if client_caused() => None,
                    SendError::Exchange(e) => Some(classify(e)),
                };
                (attempt, Err(Failed::Send(unsent.error)))
            }
            Err(_) => (
                Some(Attempt::Failed(ErrorKind::UpstreamTimeout)),
                Err(Failed::Timeout(timeout)),
            ),
        };
        if pick_info.is_some() {
            let outcome = match &result {
                Ok(resp) => Some(PickOutcome::Response {
                    status: resp.status().as_u16(),
                    latency: worker.clock.now().saturating_duration_since(started),
                }),
                Err(Failed::Overflow(_) | Failed::NoEndpoint) => None,
                Err(Failed::Timeout(_)) => Some(PickOutcome::Timeout),
                Err(Failed::Send(SendError::Connect(_))) => Some(PickOutcome::ConnectFailure),
                Err(Failed::Send(SendError::Exchange(_))) => Some(PickOutcome::Reset),
                // Never left the pool: the endpoint did nothing wrong, but the balancer
                // counted the pick, so it hears that the attempt is over.
                Err(Failed::Send(SendError::Overflow(_))) => Some(PickOutcome::Reset),
            };
            if let Some(outcome) = outcome {
                active.report(cluster_idx, idx, outcome);
            }
        }
        if let Some(span) = span {
            match &result {
                Ok(resp) => span.status(resp.status().as_u16()),
                Err(Failed::Timeout(t)) => {
                    span.error(ErrorKind::UpstreamTimeout.code(), &format!("{t:?}"))
                }
                Err(Failed::Send(e)) => span.error(send_error_code(e), &e.to_string()),
                Err(Failed::Overflow(d)) => span.error(ErrorKind::UpstreamOverflow.code(), d),
                Err(Failed::NoEndpoint) => {}
            }
        }
        let Some(attempt) = attempt else {
            return Outcome {
                result,
                endpoint: Some(endpoint.authority.clone()),
                slot: Some(slot),
                attempts: tried.len() as u32 + 1,
            };
        };
        if let Some(od) = &cluster.outlier {
            let ejected = cluster
                .endpoints
                .iter()
                .filter(|e| e.state.is_ejected(now_ms))
                .count();
            let max = resilience::max_ejected(cluster.endpoints.len(), od.max_ejection_percent);
            if let Some(time) = endpoint.state.record(attempt, od, now_ms, ejected, max) {
                metrics.upstream_ejections(&cluster.name).increment(1);
                tracing::warn!(
                    cluster = &*cluster.name,
                    endpoint = &*endpoint.authority,
                    reason = endpoint.state.reason(health.now_ms()).as_str(),
                    ejection_ms = time.as_millis() as u64,
                    "endpoint unhealthy: ejected by outlier detection"
                );
            }
        }
        let retry = may_retry
            && tried.len() < policy.max_retries as usize
            && resilience::retriable(policy, attempt)
            && worker.clock.now() < deadline;
        if retry {
            let next = req.take().or_else(|| head.as_ref().map(Head::request));
            if let Some(next) = next {
                // This request's previous retry no longer counts against the budget.
                _retry_slot = None;
                match retry_slot(cluster) {
                    Some(s) => {
                        // A failed attempt counts even when a retry hides it from the client.
                        match attempt {
                            Attempt::Failed(kind) => {
                                worker.upstream_failure(&cluster.name, kind.code())
                            }
                            Attempt::Refused => {
                                worker.upstream_failure(&cluster.name, "refused_stream")
                            }
                            Attempt::Status(_) => {}
                        }
                        tracing::debug!(
                            cluster = &*cluster.name,
                            endpoint = &*endpoint.authority,
                            outcome = ?attempt,
                            "retrying"
                        );
                        // A response being retried is dropped unread (its connection closes).
                        drop(result);
                        _retry_slot = Some(s);
                        metrics.upstream_retries(&cluster.name).increment(1);
                        tried.push(idx);
                        let wait = resilience::backoff(
                            policy.backoff_base.get(),
                            policy.backoff_max.get(),
                            tried.len() as u32,
                            worker.rng.borrow_mut().f64(),
                        );
                        tokio::time::sleep(
                            wait.min(deadline.saturating_duration_since(worker.clock.now())),
                        )
                        .await;
                        req = Some(next);
                        continue;
                    }
                    None => {
                        metrics.circuit_open(&cluster.name, "retries").increment(1);
                    }
                }
            }
        }
        return Outcome {
            result,
            endpoint: Some(endpoint.authority.clone()),
            slot: Some(slot),
            attempts: tried.len() as u32 + 1,
        };
    }
}

/// The stable code of a send error, as spans and metrics name it.
fn send_error_code(e: &SendError) -> &'static str {
    match e {
        SendError::Overflow(_) => ErrorKind::UpstreamOverflow.code(),
        SendError::Connect(_) => ErrorKind::UpstreamConnect.code(),
        SendError::Exchange(e) => match classify(e) {
            Attempt::Refused => "refused_stream",
            Attempt::Failed(kind) => kind.code(),
            Attempt::Status(_) => ErrorKind::UpstreamReset.code(),
        },
    }
}

/// A slot among the cluster's retries in flight, within the retry budget.
fn retry_slot(cluster: &ClusterEntry) -> Option<Slot<'_>> {
    use std::sync::atomic::Ordering;
    let b = &cluster.breaker;
    let limit = resilience::retry_limit(
        cluster.load.requests.load(Ordering::Relaxed),
        b.retry_budget_percent,
        b.retry_budget_min_concurrency,
        b.max_retries,
    );
    Slot::take(&cluster.load.retries, limit)
}

/// What a failed exchange means for retries and outlier detection.
fn classify(e: &ExchangeError) -> Attempt {
    if refused_stream(e) {
        Attempt::Refused
    } else if e.is_protocol() {
        Attempt::Failed(ErrorKind::UpstreamProtocol)
    } else if e.is_timeout() {
        Attempt::Failed(ErrorKind::UpstreamTimeout)
    } else {
        Attempt::Failed(ErrorKind::UpstreamReset)
    }
}

/// An HTTP/2 `REFUSED_STREAM`: the upstream guarantees it did not process the request.
pub(super) fn refused_stream(e: &ExchangeError) -> bool {
    let ExchangeError::Hyper(e) = e else {
        return false;
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = s.source();
    }
    false
}
