//! OpenTelemetry tracing, exported over OTLP (gRPC or HTTP/protobuf).
//!
//! Spans are made with the OpenTelemetry API directly, not through `tracing` spans: a request's
//! spans live in the request's own state on its worker, so when tracing is off nothing is
//! created at all (the proxy holds no [`Tracer`] and skips every call here), and when it is on
//! no subscriber machinery runs per span. W3C `traceparent`/`tracestate` and `baggage` are
//! read from incoming requests and written into upstream requests and filter calls.
//! Sampling is parent-based with a configurable ratio for new traces.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use rustygate_config::{OtlpProtocol, Tracing as TracingConfig, UpstreamTls};

/// Tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    /// The exporter's runtime could not start.
    #[error("tracing: cannot start the exporter runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The OTLP exporter could not be built.
    #[error("tracing: cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter {
        /// Configured endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

/// The process's tracer: exporter, sampler, propagators.
pub struct Tracer {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TextMapCompositePropagator,
    // Dropped last: ends the thread that drives the gRPC exporter's connection.
    _exporter_thread: ExporterThread,
}

/// The thread whose runtime drives the gRPC channel. It has its own thread (not the caller's
/// runtime) so that a tracer can be made and dropped anywhere, inside a runtime or not.
struct ExporterThread {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Checks what tracing's TLS needs from files (the collector's CA file), as a start would
/// read it, so that `rustygate validate` and a reload refuse a file that cannot be used.
pub fn check_tls(cfg: &TracingConfig) -> Result<(), String> {
    if !cfg.enabled || !cfg.endpoint.starts_with("https://") {
        return Ok(());
    }
    CollectorTls::new(cfg.tls.as_ref())?.roots().map(drop)
}

/// TLS to an `https://` collector: the trusted authorities (Mozilla's roots unless a CA file
/// is configured) and the server name to verify.
struct CollectorTls {
    /// PEM of the configured authorities; `None`: Mozilla's roots.
    ca_pem: Option<Vec<u8>>,
    server_name: Option<String>,
}

impl CollectorTls {
    fn new(tls: Option<&UpstreamTls>) -> Result<Self, String> {
        let ca_pem = tls
            .and_then(|t| t.ca_certificates.as_deref())
            .map(|path| std::fs::read(path).map_err(|e| format!("ca certificates {path}: {e}")))
            .transpose()?;
        Ok(Self {
            ca_pem,
            server_name: tls.and_then(|t| t.server_name.clone()),
        })
    }

    /// For the gRPC exporter (tonic, on ring).
    fn tonic(&self) -> ClientTlsConfig {
        let mut config = match &self.ca_pem {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        config
    }

    /// The trusted authorities, as rustls holds them.
    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_pem {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(pem) => {
                use rustls::pki_types::{CertificateDer, pem::PemObject};
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| format!("ca certificates: {e:?}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("ca certificates: {e}"))?;
                }
                if roots.is_empty() {
                    return Err("ca certificates: no PEM certificate in the file".to_owned());
                }
            }
        }
        Ok(roots)
    }

    /// For the HTTP exporter (`http://` or `https://`): a blocking client on a rustls
    /// configuration made with ring.
    fn reqwest(&self) -> Result<reqwest::blocking::Client, String> {
        let roots = self.roots()?;
        if self.server_name.is_some() {
            return Err("tracing.tls.server_name is supported with protocol: grpc only".to_owned());
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(config)
            .build()
            .map_err(|e| e.to_string())
    }
}

fn start_exporter(
    cfg: &TracingConfig,
) -> Result<(opentelemetry_otlp::SpanExporter, ExporterThread), TracingError> {
    let failed = |e: &dyn std::fmt::Display| TracingError::Exporter {
        endpoint: cfg.endpoint.clone(),
        reason: e.to_string(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = std::sync::mpsc::channel();
    let endpoint = cfg.endpoint.clone();
    let protocol = cfg.protocol;
    // Read here, so that a CA file that cannot be used stops the start with its name.
    let https = endpoint.starts_with("https://");
    let tls = CollectorTls::new(cfg.tls.as_ref()).map_err(|e| failed(&e))?;
    std::thread::Builder::new()
        .name("rustygate-otlp".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(TracingError::Runtime(e)));
                    return;
                }
            };
            let exporter = match protocol {
                // The channel's background task binds to the runtime it is built in.
                OtlpProtocol::Grpc => {
                    let _in_runtime = rt.enter();
                    let builder = opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(endpoint)
                        .with_timeout(Duration::from_secs(5));
                    if https {
                        builder.with_tls_config(tls.tonic()).build()
                    } else {
                        builder.build()
                    }
                }
                // The blocking HTTP client makes its own runtime, so never inside one.
                OtlpProtocol::Http => {
                    let builder = opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                        .with_endpoint(endpoint)
                        .with_timeout(Duration::from_secs(5))
                        .with_headers(Default::default());
                    // Always our client: reqwest's own default would look for a process-wide
                    // rustls provider, and this build installs none.
                    match tls.reqwest() {
                        Ok(client) => builder.with_http_client(client).build(),
                        Err(e) => Err(opentelemetry_otlp::ExporterBuildError::InternalFailure(e)),
                    }
                }
            };
            let _ = tx.send(Ok(exporter));
            rt.block_on(async {
                let _ = stopped.await;
            });
        })
        .map_err(TracingError::Runtime)?;
    let exporter = rx
        .recv()
        .map_err(|e| failed(&e))??
        .map_err(|e| failed(&e))?;
    Ok((exporter, ExporterThread { _stop: stop }))
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracer")
    }
}

impl Tracer {
    /// A tracer exporting to `cfg.endpoint` in batches from a background thread.
    pub fn new(cfg: &TracingConfig) -> Result<Self, TracingError> {
        let (exporter, exporter_thread) = start_exporter(cfg)?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sampling_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("rustygate");
        Ok(Self {
            provider,
            tracer,
            propagator: TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ]),
            _exporter_thread: exporter_thread,
        })
    }

    /// Exports what is buffered now. Blocks until the exporter has answered.
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }

    /// Exports what is buffered and stops. Spans ended after this are dropped.
    pub fn shutdown(&self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
    }

    /// Starts the server span of a request, continuing the trace its headers carry.
    pub fn request(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        client: IpAddr,
    ) -> RequestTrace {
        let parent = self.propagator.extract(&Headers(headers));
        let span = self
            .tracer
            .span_builder(format!("{method} {path}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("url.path", path.to_owned()),
                KeyValue::new("client.address", client.to_string()),
            ])
            .start_with_context(&self.tracer, &parent);
        RequestTrace {
            cx: parent.with_span(span),
            tracer: self.tracer.clone(),
        }
    }

    /// Writes `cx`'s trace context (and baggage) into `headers`.
    fn inject(&self, cx: &Context, headers: &mut HeaderMap) {
        self.propagator.inject_context(cx, &mut HeadersMut(headers));
    }
}

/// The spans of one request.
pub struct RequestTrace {
    cx: Context,
    tracer: SdkTracer,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace")
            .field("trace_id", &self.trace_id())
            .finish()
    }
}

impl RequestTrace {
    /// The trace id, as 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// The server span's id, as 16 hex digits.
    pub fn span_id(&self) -> String {
        self.cx.span().span_context().span_id().to_string()
    }

    /// Names the route that matched.
    pub fn set_route(&self, route: &str) {
        self.cx
            .span()
            .set_attribute(KeyValue::new("http.route", route.to_owned()));
    }

    /// Ends the server span with the status sent to the client.
    pub fn finish(&self, status: u16) {
        end_with_status(&self.cx, status);
    }

    /// Starts a client span for one upstream attempt and writes its context into `headers`.
    pub fn upstream_attempt(
        &self,
        tracer: &Tracer,
        cluster: &str,
        endpoint: &str,
        attempt: u32,
        headers: &mut HeaderMap,
    ) -> ChildSpan {
        let attributes = vec![
            KeyValue::new("rustygate.cluster", cluster.to_owned()),
            KeyValue::new("server.address", endpoint.to_owned()),
            KeyValue::new("rustygate.try", i64::from(attempt)),
        ];
        self.client_span(tracer, format!("upstream {cluster}"), attributes, headers)
    }

    /// Starts a client span for an outbound call a filter makes (`proxy_http_call`) while
    /// handling this request, and writes its context into the call's `headers`.
    pub fn filter_call(
        &self,
        tracer: &Tracer,
        cluster: &str,
        headers: &mut HeaderMap,
    ) -> ChildSpan {
        let attributes = vec![KeyValue::new("rustygate.cluster", cluster.to_owned())];
        self.client_span(tracer, format!("http_call {cluster}"), attributes, headers)
    }

    /// Starts a client span for a gRPC call a filter makes (`proxy_grpc_call` or
    /// `proxy_grpc_stream`), named `service/method` as OpenTelemetry's RPC conventions name
    /// them, and writes its context into the call's `headers`.
    pub fn filter_grpc_call(
        &self,
        tracer: &Tracer,
        cluster: &str,
        service: &str,
        method: &str,
        headers: &mut HeaderMap,
    ) -> ChildSpan {
        let attributes = vec![
            KeyValue::new("rustygate.cluster", cluster.to_owned()),
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service.to_owned()),
            KeyValue::new("rpc.method", method.to_owned()),
        ];
        self.client_span(tracer, format!("{service}/{method}"), attributes, headers)
    }

    /// A child client span whose context goes out in `headers`, so the callee's spans hang
    /// under it.
    fn client_span(
        &self,
        tracer: &Tracer,
        name: String,
        attributes: Vec<KeyValue>,
        headers: &mut HeaderMap,
    ) -> ChildSpan {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.cx);
        let cx = self.cx.with_span(span);
        tracer.inject(&cx, headers);
        ChildSpan { cx }
    }

    /// Records one filter callback that ran from `start` to `end`.
    pub fn filter_callback(
        &self,
        filter: &str,
        phase: &'static str,
        action: &'static str,
        start: SystemTime,
        end: SystemTime,
    ) {
        let mut span = self
            .tracer
            .span_builder(format!("filter {filter} {phase}"))
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("rustygate.filter", filter.to_owned()),
                KeyValue::new("rustygate.phase", phase),
                KeyValue::new("rustygate.action", action),
            ])
            .start_with_context(&self.tracer, &self.cx);
        if action == "fail" {
            span.set_status(Status::error("filter failed"));
        }
        span.end_with_timestamp(end);
    }
}

/// A child span (an upstream attempt).
pub struct ChildSpan {
    cx: Context,
}

impl std::fmt::Debug for ChildSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildSpan")
    }
}

impl ChildSpan {
    /// Ends the attempt with the response status.
    pub fn status(self, status: u16) {
        end_with_status(&self.cx, status);
    }

    /// Ends a gRPC call with its status: any but 0 (OK) marks the span as an error.
    pub fn grpc_status(self, code: u32, message: &str) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
        if code != 0 {
            span.set_status(Status::error(message.to_owned()));
        }
        span.end();
    }

    /// Ends the attempt with an error (`error.type` is a stable code such as `timeout`).
    pub fn error(self, code: &'static str, detail: &str) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("error.type", code));
        span.set_status(Status::error(detail.to_owned()));
        span.end();
    }
}

/// Ends `cx`'s span with an HTTP status; a 5xx marks it as an error (as the OpenTelemetry
/// HTTP conventions say for both server and client spans of a gateway).
fn end_with_status(cx: &Context, status: u16) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        span.set_status(Status::error(format!("{status}")));
    }
    span.end();
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
