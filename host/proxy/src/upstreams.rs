//! Outbound calls for filters (`proxy_http_call`), made with the worker's own pools to the
//! configured clusters. As in Envoy, a call that cannot connect, is reset before its response
//! or times out still answers, with the 503 or 504 Envoy's router would generate (same status,
//! headers and body text); only a response that breaks off or is too large is a failed call.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Limited};
use rustygate_config::UpstreamProtocol;
use rustygate_filter_api::grpc::{GrpcEvent, GrpcOutbound, GrpcRequest};
use rustygate_filter_api::{LocalFuture, Upstreams};

use crate::health::Health;
use crate::pool::{Pool, SendError};
use crate::snapshot::{ClusterEntry, EndpointEntry, Snapshot};
use crate::trace_scope::TraceScope;

/// Largest call response body a filter may receive (Envoy's default buffer limit).
const MAX_CALL_RESPONSE: usize = 1 << 20;

/// A worker's clusters, as filters reach them.
///
/// Each configuration generation has its own: its filters reach the clusters of the
/// configuration they were configured with, even while a newer one is being prepared.
pub(crate) struct WorkerUpstreams {
    snapshot: Arc<Snapshot>,
    pool: Rc<Pool>,
    health: Arc<Health>,
    next: Cell<usize>,
    trace: Rc<TraceScope>,
}

impl WorkerUpstreams {
    pub fn new(
        snapshot: Arc<Snapshot>,
        pool: Rc<Pool>,
        health: Arc<Health>,
        trace: Rc<TraceScope>,
    ) -> Self {
        Self {
            snapshot,
            pool,
            health,
            next: Cell::new(0),
            trace,
        }
    }
}

/// The words Envoy's router begins a 503 with when there was no response head.
const NO_HEAD: &str = "upstream connect error or disconnect/reset before headers. reset reason: ";

/// Envoy's local reply when the call got no response head: why, in its words.
fn no_head(e: &SendError) -> Response<Bytes> {
    use crate::pool::ConnectError;
    let why = match e {
        SendError::Connect(ConnectError::Timeout { .. }) => "connection timeout".to_owned(),
        SendError::Connect(ConnectError::Io { source, .. }) => format!(
            "remote connection failure, transport failure reason: delayed connect error: {}",
            os_reason(source)
        ),
        SendError::Connect(ConnectError::Tls { source, .. }) => format!(
            "remote connection failure, transport failure reason: TLS error: {}",
            os_reason(source)
        ),
        SendError::Connect(ConnectError::Handshake { .. }) | SendError::Exchange(_) => {
            "connection termination".to_owned()
        }
        SendError::Overflow(_) => "overflow".to_owned(),
    };
    generated(StatusCode::SERVICE_UNAVAILABLE, format!("{NO_HEAD}{why}"))
}

/// A socket error as the C library words it ("Connection refused"), without Rust's
/// "(os error N)".
fn os_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

fn generated(status: StatusCode, body: impl Into<Bytes>) -> Response<Bytes> {
    let body: Bytes = body.into();
    let mut r = Response::new(body.clone());
    *r.status_mut() = status;
    // The head of Envoy's own local reply, in its order.
    r.headers_mut().insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from(body.len()),
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Round-robin over the cluster's endpoints in rotation (all of them if none is).
fn pick<'a>(c: &'a ClusterEntry, health: &Health, turn: usize) -> &'a EndpointEntry {
    let now = health.now_ms();
    let n = c.endpoints.len();
    (0..n)
        .map(|k| &c.endpoints[(turn + k) % n])
        .find(|e| e.state.available(now))
        .unwrap_or(&c.endpoints[turn % n])
}

impl Upstreams for WorkerUpstreams {
    fn has_cluster(&self, cluster: &str) -> bool {
        self.snapshot.clusters.iter().any(|c| &*c.name == cluster)
    }

    fn call(
        &self,
        cluster: &str,
        mut request: Request<Bytes>,
        timeout: Option<Duration>,
    ) -> LocalFuture<'static, Result<Response<Bytes>, String>> {
        // A call made from a request's callback is part of that request's trace.
        let span = self
            .trace
            .current()
            .map(|(tracer, rt)| rt.filter_call(tracer, cluster, request.headers_mut()));
        let snapshot = self.snapshot.clone();
        let pool = self.pool.clone();
        let health = self.health.clone();
        let turn = self.next.get();
        self.next.set(turn.wrapping_add(1));
        let cluster = cluster.to_owned();
        Box::pin(async move {
            let Some(c) = snapshot.clusters.iter().find(|c| *c.name == cluster) else {
                return Err(format!("unknown cluster {cluster:?}"));
            };
            let endpoint = pick(c, &health, turn);
            let (mut parts, body) = request.into_parts();
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            match c.settings.protocol {
                UpstreamProtocol::Http1 => {
                    parts.uri = path.parse::<Uri>().map_err(|e| e.to_string())?;
                    parts.version = Version::HTTP_11;
                }
                UpstreamProtocol::Http2 => {
                    let authority = parts
                        .headers
                        .remove(header::HOST)
                        .and_then(|h| h.to_str().ok().map(str::to_owned))
                        .unwrap_or_else(|| endpoint.authority.to_string());
                    parts.uri = format!("http://{authority}{path}")
                        .parse::<Uri>()
                        .map_err(|e| e.to_string())?;
                    parts.version = Version::HTTP_2;
                }
            }
            let body = crate::body::in_memory(body);
            let exchange = async {
                let resp = pool
                    .send(
                        &endpoint.authority,
                        &c.settings,
                        Request::from_parts(parts, body),
                    )
                    .await;
                match resp {
                    Ok(resp) => {
                        let (parts, body) = resp.into_parts();
                        let bytes = Limited::new(body, MAX_CALL_RESPONSE)
                            .collect()
                            .await
                            .map_err(|e| format!("reading the response: {e}"))?
                            .to_bytes();
                        Ok(Response::from_parts(parts, bytes))
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, cluster = %c.name, "http_call got no response");
                        Ok::<_, String>(no_head(&e))
                    }
                }
            };
            let result = match timeout {
                None => exchange.await,
                Some(t) => match tokio::time::timeout(t, exchange).await {
                    Ok(r) => r,
                    Err(_) => Ok(generated(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream request timeout",
                    )),
                },
            };
            if let Some(span) = span {
                match &result {
                    Ok(resp) => span.status(resp.status().as_u16()),
                    Err(e) => span.error("upstream_reset", e),
                }
            }
            result
        })
    }

    fn grpc(
        &self,
        cluster: &str,
        mut request: GrpcRequest,
        events: Box<dyn FnMut(GrpcEvent)>,
    ) -> Result<Box<dyn GrpcOutbound>, String> {
        // A call made from a request's callback is part of that request's trace; its span
        // ends with the call's status (a cancelled call's when its span is dropped).
        let events = match self.trace.current() {
            None => events,
            Some((tracer, rt)) => {
                let mut headers = http::HeaderMap::new();
                let span = rt.filter_grpc_call(
                    tracer,
                    cluster,
                    &request.service,
                    &request.method,
                    &mut headers,
                );
                request.metadata.extend(
                    headers
                        .iter()
                        .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())),
                );
                let mut span = Some(span);
                let mut inner = events;
                Box::new(move |event: GrpcEvent| {
                    if let GrpcEvent::Close { status, message } = &event
                        && let Some(span) = span.take()
                    {
                        span.grpc_status(*status, message);
                    }
                    inner(event);
                })
            }
        };
        let Some(c) = self.snapshot.clusters.iter().find(|c| &*c.name == cluster) else {
            return Err(format!("unknown cluster {cluster:?}"));
        };
        let turn = self.next.get();
        self.next.set(turn.wrapping_add(1));
        let endpoint = pick(c, &self.health, turn);
        let target = crate::grpc::Target {
            authority: endpoint.authority.clone(),
            settings: c.settings.clone(),
            scheme: if c.settings.tls.is_some() {
                "https"
            } else {
                "http"
            },
        };
        let (outbound, task) =
            crate::grpc::open(self.pool.clone(), cluster, target, request, events)?;
        tokio::task::spawn_local(task);
        Ok(Box::new(outbound))
    }

    fn spawn(&self, task: LocalFuture<'static, ()>) {
        tokio::task::spawn_local(task);
    }
}
