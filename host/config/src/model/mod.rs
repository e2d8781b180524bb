//! The configuration file's types. Field docs here become the descriptions in the generated
//! JSON Schema (`config/rustygate.schema.json`), so they are written for users.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;

mod paths;
mod route;
pub use paths::*;
pub use route::*;

/// A RustyGate configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Worker threads. Each worker accepts its own connections and serves them start to end
    /// (and will own its own WASM VMs). Default: the number of CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Where traffic is accepted. At least one.
    pub listeners: Vec<Listener>,
    /// The admin listener (metrics, health, admin API).
    #[serde(default)]
    pub admin: Admin,
    /// Log format and level.
    #[serde(default)]
    pub logging: Logging,
    /// OpenTelemetry tracing, exported over OTLP. Off by default.
    #[serde(default)]
    pub tracing: Tracing,
    /// How metrics are named on `/metrics`.
    #[serde(default, skip_serializing_if = "MetricsConfig::is_default")]
    pub metrics: MetricsConfig,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: Shutdown,
    /// Upstream clusters that routes forward to.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// WebAssembly filters, declared once and chained per route by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// Load-balancing strategies as WebAssembly components (the `load-balancer` world of
    /// `wit/gateway`), declared once and named by clusters' `balancer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub balancers: Vec<Balancer>,
    /// Routes, tried in file order; the first that matches wins.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// A balancer component: one `.wasm` component with its settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Balancer {
    /// Name that clusters' `balancer` refers to; labels its log lines and metrics.
    pub name: String,
    /// Path to the component `.wasm` (relative paths are relative to the config file).
    pub module: String,
    /// Given to the component's `configure` as JSON (`null` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<serde_json::Value>,
    /// Memory and CPU limits of each instance (one per worker and cluster).
    #[serde(default = "balancer_limits")]
    pub limits: FilterLimits,
}

fn balancer_limits() -> FilterLimits {
    // A pick is a few hundred instructions, so this only stops runaways. CPU deadlines are
    // checked on 1 ms ticks, and a call that spans a tick is charged a whole tick: a budget of
    // a tick or two would stop healthy calls.
    FilterLimits {
        max_memory_bytes: 16 << 20,
        cpu_per_callback: Duration::millis(5),
    }
}

/// Where a cluster's balancer finds the key that hashing strategies use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HashKey {
    /// The value of this request header.
    Header(String),
    /// The value of this cookie.
    Cookie(String),
    /// The client's IP address.
    ClientIp,
}

/// A proxy-wasm filter: one `.wasm` module with its settings. Routes chain it by `name`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Name that routes refer to; also prefixes the filter's log lines and labels its metrics.
    pub name: String,
    /// Path to the `.wasm` file (relative paths are relative to the config file).
    pub module: String,
    /// Root context id the SDK selects its root factory by (proxy-wasm `root_id`).
    #[serde(default)]
    pub root_id: String,
    /// Filters with the same module, `vm_id` and `vm_configuration` share a VM per worker;
    /// shared data and queues are scoped by `vm_id`.
    #[serde(default)]
    pub vm_id: String,
    /// VM configuration (buffer 6), given to `proxy_on_vm_start`. A string is passed as is;
    /// any other YAML value is passed as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_configuration: Option<serde_json::Value>,
    /// Plugin configuration (buffer 7), given to `proxy_on_configure`. A string is passed as
    /// is; any other YAML value is passed as JSON. Routes may override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<serde_json::Value>,
    /// What a request sees when this filter fails (trap, CPU deadline, memory limit).
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Resource limits for each VM of this filter.
    #[serde(default)]
    pub limits: FilterLimits,
}

/// What happens to a request whose filter fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// 503 with a JSON body.
    #[default]
    FailClosed,
    /// Skip the filter; the request carries on.
    FailOpen,
}

/// Limits that bound a filter. On by default.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FilterLimits {
    /// Largest linear memory of one VM, in bytes.
    pub max_memory_bytes: usize,
    /// CPU time one callback may take before it is stopped and the request fails.
    pub cpu_per_callback: Duration,
}

impl Default for FilterLimits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 16 << 20,
            cpu_per_callback: Duration::millis(10),
        }
    }
}

/// A filter in a route's chain: its name, or its name with a per-route configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RouteFilter {
    /// Just the filter's name: its own configuration applies.
    Name(String),
    /// The filter with a configuration that replaces its own on this route.
    WithConfig {
        /// Filter name.
        name: String,
        /// Plugin configuration for this route (string as is, other values as JSON).
        configuration: serde_json::Value,
    },
}

impl RouteFilter {
    /// The filter's name.
    pub fn name(&self) -> &str {
        match self {
            RouteFilter::Name(n) | RouteFilter::WithConfig { name: n, .. } => n,
        }
    }
}

/// A traffic listener: HTTP/1.1 and HTTP/2 on one port; over TLS when `tls` is set (HTTP/2
/// then by ALPN), else in the clear (HTTP/2 by prior knowledge, h2c).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Name used in logs and metrics.
    pub name: String,
    /// `ip:port` to bind, e.g. `0.0.0.0:8080`. Port 0 picks a free port.
    pub address: String,
    /// Connection and request limits.
    #[serde(default)]
    pub limits: ListenerLimits,
    /// How request paths are made canonical before routing.
    #[serde(default)]
    pub path_normalization: PathNormalization,
    /// Let an HTTP/1 request that has both `Content-Length` and `Transfer-Encoding` through,
    /// framed by the coding with the length removed (RFC 9112 §6.3), and close its connection
    /// after it: Envoy's `allow_chunked_length`. Off by default: such a request, the classic
    /// smuggling attempt, is answered 400.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_chunked_length: bool,
    /// Offer HTTP/2 clients the extended CONNECT of RFC 8441, with which browsers open
    /// WebSockets over an HTTP/2 connection they already have: Envoy's
    /// `http2_protocol_options.allow_connect`. Such a request goes on as an HTTP/1.1 upgrade
    /// (the route's `upgrades` decide), and the upstream's 101 reaches the client as 200.
    /// Off by default, as in Envoy: clients then open an HTTP/1.1 connection for a WebSocket.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http2_extended_connect: bool,
    /// Every connection starts with a PROXY protocol header (version 1 or 2, as HAProxy, AWS
    /// NLB and most load balancers send it), whose source address is the client's: for
    /// `X-Forwarded-For`, the access log, filters (`source.address`) and rate limits. A
    /// connection without a valid header is closed: Envoy's `proxy_protocol` listener filter.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
    /// With `proxy_protocol`, also serve connections that start without a header (with their
    /// own addresses): Envoy's `allow_requests_without_proxy_protocol`, for turning the
    /// protocol on at the balancer and the gateway one after the other.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_requests_without_proxy_protocol: bool,
    /// Terminate TLS on this listener with this certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// What happens to a request's `x-forwarded-client-cert` (XFCC) header, as Envoy's
    /// `forward_client_cert_details`. Default `sanitize`: a client cannot pass one off.
    #[serde(default)]
    pub forward_client_cert: ForwardClientCert,
    /// What the element `sanitize_set` and `append_forward` write says of the client's
    /// certificate besides its `Hash` (Envoy's `set_current_client_cert_details`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_cert_details: Vec<ClientCertDetail>,
}

/// Envoy's `forward_client_cert_details`: what a request's `x-forwarded-client-cert` becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ForwardClientCert {
    /// Never forwarded.
    #[default]
    Sanitize,
    /// Forwarded as the client sent it when the client presented a verified certificate
    /// (mutual TLS); else removed.
    ForwardOnly,
    /// With a verified client certificate, an element describing it is appended; else
    /// removed.
    AppendForward,
    /// With a verified client certificate, replaced by an element describing it; else
    /// removed.
    SanitizeSet,
    /// Always forwarded as the client sent it: for a listener behind a proxy that sets it.
    AlwaysForwardOnly,
}

/// A field of the `x-forwarded-client-cert` element (`Hash` is always there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertDetail {
    /// `Subject="CN=…,O=…"` (RFC 2253).
    Subject,
    /// `URI=…`: the first URI subject alternative name (a SPIFFE ID, say).
    Uri,
    /// `DNS=…`: every DNS subject alternative name.
    Dns,
}

/// A listener's certificate. Paths are relative to the configuration file's directory. TLS 1.2
/// and 1.3; ALPN offers `h2` and `http/1.1`. The files are read at start, checked by
/// `rustygate validate`, and read again by every reload (renewed certificates need no restart).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM file with the server certificate first, then any intermediates.
    pub certificate_chain: String,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: String,
    /// PEM file of the certificate authorities that sign client certificates (mutual TLS).
    /// Set, every client is asked for a certificate, and one it presents must verify against
    /// these authorities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_certificates: Option<String>,
    /// More certificates, chosen by the server name the client asks for (SNI); a client that
    /// asks for none of their names, or for no name, gets `certificate_chain`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<SniCertificate>,
    /// With `client_ca_certificates`: refuse a client that presents no certificate. Defaults
    /// to `true` (Envoy defaults to `false`); `false` lets such clients in, and filters can
    /// tell them apart by the `connection.mtls` property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_client_certificate: Option<bool>,
}

/// A certificate served to clients that ask for one of `server_names`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    /// DNS names, exact (`api.example.com`) or with a leading wildcard label
    /// (`*.example.com`, which matches one label: `a.example.com`, not `a.b.example.com`). An
    /// exact name wins over a wildcard; the first entry wins among equals.
    pub server_names: Vec<String>,
    /// PEM file with the certificate first, then any intermediates.
    pub certificate_chain: String,
    /// PEM file with the certificate's private key.
    pub private_key: String,
}

/// Limits that protect the gateway from slow or abusive clients. All are on by default.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerLimits {
    /// Largest request head (request line + headers) accepted, in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Most request headers accepted; more gets 431.
    pub max_headers: usize,
    /// Time allowed to receive a complete request head (against slowloris); more than 0.
    pub header_read_timeout: Duration,
    /// Most open client connections across all workers; further connections are closed at accept.
    pub max_connections: usize,
    /// A keep-alive connection with no request in flight for this long is closed; `0s` keeps
    /// it open, as in Envoy.
    pub idle_timeout: Duration,
    /// A stream whose bodies move no byte either way for this long is ended: a request body
    /// the client stopped sending gets 408; a response body the upstream stopped sending is
    /// cut off (the client's stream reset, the upstream connection closed); a client whose
    /// socket takes no byte for this long loses its connection. Envoy's
    /// `stream_idle_timeout`, 5 minutes by default. A route's `idle_timeout` overrides it for
    /// bodies; `0s` never cuts off.
    pub stream_idle_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Largest request body forwarded, in bytes; larger gets 413. Unset: unlimited (bodies are
    /// streamed, never buffered, so this is a policy limit, not a memory one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
    /// Most body bytes one filter may hold while it buffers (Envoy's per-connection buffer
    /// limit, 1 MiB by default). Over it, a request gets 413 and a response 500.
    pub max_buffered_body_bytes: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::secs(10),
            max_connections: 10_000,
            idle_timeout: Duration::secs(60),
            stream_idle_timeout: Duration::secs(300),
            max_concurrent_streams: 100,
            max_request_body_bytes: None,
            max_buffered_body_bytes: 1024 * 1024,
        }
    }
}

/// The admin listener. It binds to loopback by default; binding it elsewhere requires a token.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Serve the admin listener at all.
    pub enabled: bool,
    /// `ip:port` to bind.
    pub address: String,
    /// Bearer token for `/admin/*` endpoints. `/metrics`, `/healthz` and `/readyz` stay open so
    /// that probes and scrapers work without secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            enabled: true,
            address: "127.0.0.1:8081".into(),
            token: None,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// `json` (one object per line) or `human`.
    pub format: LogFormat,
    /// Level filter in `tracing` syntax: `info`, `debug`, `rustygate=debug,info`, ...
    pub level: String,
    /// Emit one access-log line per request.
    pub access_log: bool,
}

impl Default for Logging {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
            access_log: true,
        }
    }
}

/// How spans are exported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP over gRPC (port 4317 by convention).
    #[default]
    Grpc,
    /// OTLP over HTTP with binary protobuf bodies (port 4318, path `/v1/traces`).
    Http,
}

/// How metrics are named on `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Labels taken out of the names filters give their metrics (`proxy_define_metric`), as
    /// Envoy's `stats_config.stats_tags` does: a filter that defines
    /// `requests_method=GET_code=200` can appear as `rustygate_filter_requests{method="GET",
    /// code="200"}`. Applied in order, each to the name as the filter defined it. A reload
    /// applies new tags to metrics defined after it; existing ones keep their names until a
    /// restart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filter_tags: Vec<MetricTag>,
}

impl MetricsConfig {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// One label of filter metrics: either taken from the name by `regex` or the same
/// `fixed_value` on every filter metric.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricTag {
    /// The label's name (Prometheus syntax; not `filter`, which every filter metric has).
    pub name: String,
    /// Searched for in the metric's name. Its first capture group is cut out of the name;
    /// its second (or the first, when it has only one) is the label's value. A name it does
    /// not match gets no such label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The label's value on every filter metric, instead of `regex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_value: Option<String>,
}

/// OpenTelemetry tracing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Tracing {
    /// Export spans. When off, requests create no spans at all.
    pub enabled: bool,
    /// OTLP endpoint: `http://host:4317` for gRPC, `http://host:4318/v1/traces` for HTTP;
    /// `https://` for TLS (verified as `tls` says).
    pub endpoint: String,
    /// `grpc` or `http` (protobuf).
    pub protocol: OtlpProtocol,
    /// Share of new traces sampled (0.0 to 1.0). A request that carries a `traceparent`
    /// follows its caller's decision (parent-based sampling).
    pub sampling_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// How an `https://` endpoint is verified: Mozilla's roots and the endpoint's host unless
    /// set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

impl Default for Tracing {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: OtlpProtocol::Grpc,
            sampling_ratio: 1.0,
            service_name: "rustygate".into(),
            tls: None,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Human,
}

/// Graceful shutdown on SIGINT/SIGTERM.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// How long in-flight requests may take to finish after a stop signal.
    pub grace_period: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            grace_period: Duration::secs(30),
        }
    }
}

/// A group of upstream endpoints serving the same thing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Name that routes refer to.
    pub name: String,
    /// One or more endpoints; requests are spread by smooth weighted round-robin.
    pub endpoints: Vec<Endpoint>,
    /// Protocol spoken to the endpoints.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Time allowed to establish a TCP connection to an endpoint; more than 0.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this long; more than 0.
    #[serde(default = "default_pool_idle_timeout")]
    pub pool_idle_timeout: Duration,
    /// Most idle connections kept per endpoint per worker.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_endpoint: usize,
    /// Active health checks: probe every endpoint on a timer. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Passive health checks: eject endpoints that keep failing real requests. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Limits that shed load with a 503 instead of piling it onto a struggling cluster.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    /// When fewer than this percentage of endpoints are healthy, traffic goes to all of them
    /// (healthy or not): health information is then more likely wrong than the endpoints.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold: u8,
    /// A balancer component (by its name in `balancers`) that picks endpoints instead of the
    /// built-in smooth weighted round-robin, which remains the fallback if it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<String>,
    /// The key hashing balancers see: `{ header: name }`, `{ cookie: name }` or `client_ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<HashKey>,
    /// How `https://` endpoints are verified. Optional: without it their certificates are
    /// verified against the Mozilla root store, with the endpoint's host as server name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// Static data filters read through the `cluster_metadata` property once the request's
    /// cluster is known, as Envoy's cluster `metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// TLS to a cluster whose endpoints are `https://`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTls {
    /// PEM file of the certificate authorities to trust instead of the Mozilla root store
    /// (relative to the configuration file's directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Server name sent (SNI) and verified, instead of each endpoint's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM file of the client certificate chain the gateway presents to upstreams that ask
    /// for one (mutual TLS); set with `private_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_chain: Option<String>,
    /// PEM file of the client certificate's private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

fn default_panic_threshold() -> u8 {
    50
}

/// How an endpoint is probed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    /// `GET path`; healthy when the status is in `expected_statuses`.
    #[default]
    Http,
    /// Healthy when a TCP connection can be opened.
    Tcp,
}

/// Active health checking of a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `http` (default) or `tcp`.
    #[serde(default, rename = "type")]
    pub kind: HealthCheckKind,
    /// Path requested by HTTP checks.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// `Host` header of HTTP checks. Default: the endpoint's `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Statuses that count as healthy: ranges and codes, comma separated (`200-399`, `200,204`).
    #[serde(default = "default_expected_statuses")]
    pub expected_statuses: String,
    /// Time between checks of one endpoint.
    #[serde(default = "default_health_interval")]
    pub interval: Duration,
    /// A check that takes longer fails.
    #[serde(default = "default_health_timeout")]
    pub timeout: Duration,
    /// Random extra delay, up to this, added to each interval so that checks of many
    /// endpoints (and gateways) do not fire in step. Default: a tenth of `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Duration>,
    /// Consecutive passing checks that make an unhealthy endpoint healthy.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failing checks that make a healthy endpoint unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_health_path() -> String {
    "/".into()
}
fn default_expected_statuses() -> String {
    "200-399".into()
}
fn default_health_interval() -> Duration {
    Duration::secs(5)
}
fn default_health_timeout() -> Duration {
    Duration::secs(1)
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// Passive health checking: endpoints that fail real requests are ejected for a while.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// Consecutive 5xx responses (or failures to answer) that eject an endpoint. 0 disables.
    pub consecutive_5xx: u32,
    /// Consecutive connect failures, resets and timeouts that eject an endpoint. 0 disables.
    pub consecutive_gateway_failures: u32,
    /// Ejection time for a first ejection; the n-th ejection lasts n times as long.
    pub base_ejection_time: Duration,
    /// Longest ejection.
    pub max_ejection_time: Duration,
    /// Most endpoints (as a percentage, at least one) ejected at once.
    pub max_ejection_percent: u8,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway_failures: 5,
            base_ejection_time: Duration::secs(30),
            max_ejection_time: Duration::secs(300),
            max_ejection_percent: 10,
        }
    }
}

/// Per-cluster limits, counted across all workers. A request over a limit gets 503
/// (`upstream_overflow`) at once and is counted in `rustygate_circuit_open_total`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreaker {
    /// Open connections to the cluster's endpoints.
    pub max_connections: usize,
    /// Requests waiting for a new connection to be established.
    pub max_pending_requests: usize,
    /// Requests in flight to the cluster.
    pub max_requests: usize,
    /// Retries in flight to the cluster.
    pub max_retries: usize,
    /// Retries in flight may be at most this percentage of the requests in flight ...
    pub retry_budget_percent: u8,
    /// ... but this many are always allowed (up to `max_retries`).
    pub retry_budget_min_concurrency: usize,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget_percent: 20,
            retry_budget_min_concurrency: 3,
        }
    }
}

fn default_connect_timeout() -> Duration {
    Duration::secs(5)
}
fn default_pool_idle_timeout() -> Duration {
    Duration::secs(60)
}
fn default_pool_max_idle() -> usize {
    256
}

/// One upstream endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `http://host:port`, or `https://host:port` for TLS (the cluster's `tls` says how the
    /// certificate is verified). A cluster's endpoints are all one or all the other.
    pub url: String,
    /// Relative share of requests.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Health before the first check: `healthy` (default) or `unhealthy` (no traffic until
    /// active health checks pass).
    #[serde(default)]
    pub initial: InitialHealth,
    /// Locality, for balancer components that prefer nearby endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Free-form labels passed to balancer components.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// An endpoint's health before it is first checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InitialHealth {
    /// Receives traffic from the start.
    #[default]
    Healthy,
    /// Receives traffic once active health checks pass `healthy_threshold` times.
    Unhealthy,
}

fn default_weight() -> u32 {
    1
}

/// Upstream protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 over cleartext (prior knowledge), multiplexed.
    Http2,
}
