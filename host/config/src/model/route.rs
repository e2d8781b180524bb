//! Routes: what a request must look like, where it goes, and what happens on the way.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::RouteFilter;
use crate::Duration;

/// A route: what to match, and where to send it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Name used in logs and the `route` metric label. Default: `route-<index>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions; all must hold. An empty match matches every request.
    #[serde(default, rename = "match")]
    pub matcher: RouteMatch,
    /// Cluster to forward to. A route does one of four things: forward to `cluster`, split
    /// traffic over `clusters`, answer with `direct_response`, or answer with `redirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Clusters to split traffic over by weight (Envoy's `weighted_clusters`): each request
    /// goes to one of them, picked at random in proportion to its weight, before the route's
    /// filters run; its retries stay with that cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<WeightedCluster>,
    /// Answer every request with this response instead of forwarding it. The route's filters
    /// run as for a forwarded request: request phases first (they may answer themselves),
    /// then the answer passes back through their response phases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    /// Answer every request with a redirect to a URL made from the request's, with the parts
    /// given here replaced. Filters run as for `direct_response`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Time allowed for the upstream to answer with response headers, over all tries. `0s`
    /// turns it off, as in Envoy.
    #[serde(default = "default_route_timeout")]
    pub timeout: Duration,
    /// Overrides the listener's `limits.stream_idle_timeout` for this route: how long the
    /// request and response bodies may both move no byte before the stream is ended. `0s`
    /// never cuts off (long-lived streams with quiet spells: server-sent events, gRPC
    /// streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// When and how a failed upstream attempt is tried again.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Overrides the listener's `max_request_body_bytes` for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
    /// Filters run on this route, in order (responses pass through them in reverse).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RouteFilter>,
    /// Protocols a client may switch to on this route (compared case-insensitively): with
    /// `Connection: upgrade` and `Upgrade: <protocol>` over HTTP/1.1, with an extended
    /// CONNECT over HTTP/2 (on a listener with `http2_extended_connect`). When the upstream
    /// answers `101 Switching Protocols`, the connection (an HTTP/2 stream) becomes a byte
    /// tunnel between client and upstream. Any other `Upgrade` is refused with 403; `[]` refuses them all. `CONNECT`
    /// allows CONNECT requests (HTTP/1.1 and HTTP/2), which are refused with 403 otherwise:
    /// they go to the upstream as CONNECT, and its 2xx opens the tunnel.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<String>,
    /// Where a `CONNECT` this route allows goes: `forward` (the default) sends the CONNECT to
    /// the cluster, a forward proxy that answers it; `terminate` has the gateway open a TCP
    /// connection to one of the cluster's endpoints, answer 200 itself, and tunnel the
    /// client's bytes to that endpoint (Envoy's route `connect_config`).
    #[serde(default, skip_serializing_if = "ConnectMode::is_forward")]
    pub connect: ConnectMode,
    /// Copies of the route's requests, sent to other clusters as they go upstream, whose
    /// answers are thrown away (Envoy's `request_mirror_policies`, Istio's `mirror`): to try
    /// a new version on real traffic without its answers reaching clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirror: Vec<Mirror>,
    /// Changes to the path and host the upstream sees, made after the route's filters ran
    /// (as Envoy's route rewrites are): filters see the request as the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Static data filters read through the `route_metadata` property, as Envoy's route
    /// `metadata`: `{ filter_metadata: { <namespace>: { key: value, ... } } }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// Who answers a `CONNECT` a route allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectMode {
    /// The cluster: the CONNECT goes to it, and its 2xx opens the tunnel.
    #[default]
    Forward,
    /// The gateway: once it has a TCP connection to one of the cluster's endpoints it answers
    /// 200, and the tunnel carries the client's bytes to that endpoint.
    Terminate,
}

impl ConnectMode {
    fn is_forward(&self) -> bool {
        *self == ConnectMode::Forward
    }
}

/// A route's or cluster's `metadata`, laid out as Envoy's (`envoy.config.core.v3.Metadata`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Per namespace (by convention the filter's name, `envoy.filters.http.wasm` for
    /// proxy-wasm filters in Envoy), a map of any YAML values: a `google.protobuf.Struct` in
    /// Envoy.
    #[serde(default)]
    pub filter_metadata:
        std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
}

/// One cluster of a traffic split.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    /// A cluster's name.
    pub name: String,
    /// Its share of the route's requests, relative to the other clusters' weights. 0 sends
    /// it nothing (kept in the file while a rollout is paused, say).
    pub weight: u32,
}

/// Where a route's requests are copied to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The cluster that gets the copies.
    pub cluster: String,
    /// Share of requests copied, from 0 to 100.
    #[serde(default = "default_mirror_percent")]
    pub percent: f64,
    /// Largest request body a copy carries: the body is kept, as it streams upstream, until
    /// it is complete, and the copy goes then. A request with a larger body is not copied.
    #[serde(default = "default_mirror_body")]
    pub max_body_bytes: u64,
}

fn default_mirror_percent() -> f64 {
    100.0
}

fn default_mirror_body() -> u64 {
    64 * 1024
}

/// A fixed answer (Envoy's `direct_response`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    /// Status, 200 to 599.
    pub status: u16,
    /// Body. A body without a `content-type` header is sent as `text/plain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Response headers, by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// A redirect (Envoy's route `redirect`). The `Location` is the request's URL (the
/// listener's scheme, the `Host`, the path and query) with the parts set here replaced.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// `http` or `https`. Changing the scheme drops the request's port when it is the old
    /// scheme's default (80, 443) or absent; set `port` to name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Host name, instead of the request's (its port is kept unless `port` or `scheme` say
    /// otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port, instead of the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The whole path, instead of the request's. The request's query is kept unless this
    /// has one of its own or `strip_query` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Replaces the part of the path that the route's `match.path` (`prefix` or `exact`)
    /// matched, as `rewrite.prefix` does for forwarded requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Leave the request's query string out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_query: bool,
    /// 301 (the default), 302, 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub status: u16,
}

fn default_redirect_status() -> u16 {
    301
}

/// A route's rewrites (Envoy's `prefix_rewrite`, `regex_rewrite`, `host_rewrite_literal`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Replaces the part of the path that the route's `match.path` (`prefix` or `exact`)
    /// matched; the rest of the path and the query string are kept. `/` for a route matching
    /// the prefix `/api/` turns `/api/users?id=1` into `/users?id=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Replaces every match of `pattern` in the path (not the query) with `substitution`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<RegexRewrite>,
    /// The `Host` (HTTP/2: `:authority`) the upstream sees, instead of the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A path rewrite by regular expression.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    /// A regular expression (Rust `regex` syntax), searched for in the path.
    pub pattern: String,
    /// What each match becomes: `$1` or `${name}` insert capture groups.
    pub substitution: String,
}

fn default_route_timeout() -> Duration {
    Duration::secs(15)
}

fn default_upgrades() -> Vec<String> {
    vec!["websocket".to_owned()]
}

/// What a failed attempt is retried on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// The connection could not be established (nothing was sent).
    ConnectFailure,
    /// An HTTP/2 upstream refused the stream (nothing was processed).
    RefusedStream,
    /// The connection was reset, or the try timed out, before a response head.
    Reset,
    /// A 5xx response, or no response at all (connect failure, reset, timeout).
    #[serde(rename = "5xx")]
    FiveXx,
    /// A 502, 503 or 504 response, or no response at all.
    GatewayError,
    /// A response whose status is in `retriable_status_codes`.
    RetriableStatusCodes,
}

/// Retries of one route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Conditions that make an attempt retriable.
    pub retry_on: Vec<RetryOn>,
    /// Statuses retried with `retriable-status-codes`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u16>,
    /// Retries after the first attempt. 0 disables retries.
    pub max_retries: u32,
    /// Time allowed for one attempt's response headers. Default: the route's `timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// First backoff; each retry waits a random time up to base × 2^(retry-1).
    pub backoff_base: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Also retry methods that are not idempotent (POST, PATCH). Off by default: the upstream
    /// may have acted on the first attempt.
    pub retry_non_idempotent: bool,
    /// Largest request body (by its declared length) that is read in full before the first
    /// attempt, so that a retry after the upstream saw it can send it again. Larger bodies,
    /// and bodies of unknown length, stream and are retried only when nothing was sent.
    /// 0: never.
    pub max_body_bytes: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retry_on: vec![RetryOn::ConnectFailure, RetryOn::RefusedStream],
            retriable_status_codes: Vec::new(),
            max_retries: 1,
            per_try_timeout: None,
            backoff_base: Duration::millis(25),
            backoff_max: Duration::millis(250),
            retry_non_idempotent: false,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Request conditions.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Path condition (the path without the query string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Host (from `Host` or `:authority`, port ignored, case-insensitive). `*` matches any host;
    /// `*.example.com` any subdomain; `api.*` any suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Allowed methods; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Header conditions; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    /// Query parameter conditions; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<ValueMatch>,
}

/// How the path is matched. Exactly one key.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum PathMatch {
    /// The whole path equals this.
    Exact(String),
    /// The path starts with this (plain string prefix, as in Envoy).
    Prefix(String),
    /// The whole path matches this regular expression (RE2-like syntax, anchored).
    Regex(String),
}

/// A condition on a named header or query parameter. Give exactly one of `exact`, `prefix`,
/// `regex` or `present`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueMatch {
    /// Header or parameter name (headers: case-insensitive; `:authority`, `:method`, `:path`
    /// and `:scheme` name the request's pseudo-headers, as in Envoy, and `host` is `:authority`).
    pub name: String,
    /// Value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Whole value matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: must be present (any value); `false`: must be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// Negate the result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}
