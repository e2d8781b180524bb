//! A real OTLP trace receiver on loopback, as an OpenTelemetry Collector receives spans: the
//! collector's gRPC `TraceService` (served by the service code generated from the OTLP
//! protos) and OTLP/HTTP with protobuf bodies (`POST /v1/traces`), on one h2c/HTTP/1.1 port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use parking_lot::Mutex;
use prost::Message;
use tonic::codegen::Service;

use crate::upstream::{Body, Upstream};

/// One span as the receiver got it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP `SpanKind`: 1 internal, 2 server, 3 client.
    pub kind: i32,
    /// Attributes, their values as text.
    pub attributes: Vec<(String, String)>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The `service.name` of the resource that sent it.
    pub service: String,
    /// `grpc` or `http`.
    pub via: &'static str,
}

impl ReceivedSpan {
    /// The value of attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

type Store = Arc<Mutex<Vec<ReceivedSpan>>>;

/// A running receiver.
pub struct OtlpReceiver {
    upstream: Upstream,
    spans: Store,
    /// `https` when started with TLS.
    scheme: &'static str,
}

#[derive(Clone)]
struct Grpc(Store);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        store(&self.0, request.into_inner(), "grpc");
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn store(spans: &Store, req: ExportTraceServiceRequest, via: &'static str) {
    let mut out = spans.lock();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name,
                    kind: s.kind,
                    attributes: s
                        .attributes
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                            )
                        })
                        .collect(),
                    status: s.status.map_or(0, |st| st.code),
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                    service: service.clone(),
                    via,
                });
            }
        }
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl OtlpReceiver {
    /// Starts a receiver on 127.0.0.1:0.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a receiver on 127.0.0.1:0 that speaks TLS with `config` (gRPC over HTTP/2 by
    /// ALPN, or OTLP/HTTP): its endpoints are then `https://`.
    pub fn start_tls(config: std::sync::Arc<rustls::ServerConfig>) -> Self {
        Self::start_with(Some(config))
    }

    fn start_with(tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> Self {
        let spans: Store = Arc::default();
        let grpc = TraceServiceServer::new(Grpc(spans.clone()));
        let http_store = spans.clone();
        let handler = move |req: http::Request<hyper::body::Incoming>| {
            let mut grpc = grpc.clone();
            let spans = http_store.clone();
            async move {
                if req.uri().path() == "/v1/traces" {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    return match ExportTraceServiceRequest::decode(body) {
                        Ok(decoded) => {
                            store(&spans, decoded, "http");
                            let mut r = Response::new(boxed(
                                ExportTraceServiceResponse {
                                    partial_success: None,
                                }
                                .encode_to_vec(),
                            ));
                            r.headers_mut().insert(
                                header::CONTENT_TYPE,
                                "application/x-protobuf".parse().unwrap(),
                            );
                            r
                        }
                        Err(e) => {
                            let mut r = Response::new(boxed(e.to_string().into_bytes()));
                            *r.status_mut() = StatusCode::BAD_REQUEST;
                            r
                        }
                    };
                }
                // Unary: the whole answer, then `grpc-status` in the trailers.
                let resp = grpc.call(req).await.unwrap();
                let (parts, body) = resp.into_parts();
                let collected = body.collect().await.unwrap();
                let mut frames = Vec::new();
                let trailers = collected.trailers().cloned();
                frames.push(Frame::data(collected.to_bytes()));
                frames.extend(trailers.map(Frame::trailers));
                let body = StreamBody::new(futures_util::stream::iter(
                    frames.into_iter().map(Ok::<_, std::io::Error>),
                ));
                Response::from_parts(parts, body.boxed())
            }
        };
        let (upstream, scheme) = match tls {
            None => (Upstream::start(handler), "http"),
            Some(config) => (Upstream::start_tls(config, handler), "https"),
        };
        OtlpReceiver {
            upstream,
            spans,
            scheme,
        }
    }

    /// The gRPC endpoint, as `tracing.endpoint` takes it.
    pub fn grpc_endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.upstream.addr)
    }

    /// The OTLP/HTTP traces endpoint.
    pub fn http_endpoint(&self) -> String {
        format!("{}://{}/v1/traces", self.scheme, self.upstream.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().clone()
    }

    /// Waits until `done` holds for the spans received, at most `timeout`; returns them.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn boxed(b: Vec<u8>) -> Body {
    http_body_util::Full::new(Bytes::from(b))
        .map_err(|never| match never {})
        .boxed()
}
