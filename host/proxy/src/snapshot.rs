//! The immutable routing snapshot: everything a request needs from configuration, compiled
//! once. Each worker holds the current one with its filter chains; a reload hands workers a
//! new one, and in-flight requests keep the snapshot they started with.

use std::sync::Arc;
use std::time::Duration;

use rustygate_config::{
    CircuitBreaker, Config, HashKey, HealthCheck, InitialHealth, OutlierDetection, RetryPolicy,
    parse_endpoint_url, parse_status_ranges,
};
use rustygate_core::rewrite::PathRewrite;
use rustygate_core::router::{Router, RouterError};

use crate::health::{ClusterLoad, EndpointState, Health};
use crate::pool::EndpointSettings;
use crate::tls::ClientTls;

/// One route, resolved.
#[derive(Debug)]
pub struct RouteEntry {
    /// Name used in logs and metrics.
    pub name: Arc<str>,
    /// Index into [`Snapshot::clusters`].
    pub cluster: usize,
    /// Time allowed for response headers.
    pub timeout: Duration,
    /// Request body limit override; `None` falls back to the listener's.
    pub max_request_body_bytes: Option<u64>,
    /// When to try again.
    pub retry: RetryPolicy,
    /// Protocols clients may switch to (`Upgrade`), lower-cased.
    pub upgrades: Box<[Box<str>]>,
    /// The path the upstream is asked for instead of the client's, if the route rewrites it.
    pub rewrite_path: Option<PathRewrite>,
    /// The `Host` the upstream sees instead of the client's, if the route sets one.
    pub rewrite_host: Option<http::HeaderValue>,
}

impl RouteEntry {
    /// Whether every protocol in a request's `Upgrade` value is one this route allows: a name
    /// allowed without a version allows every version of it.
    pub fn allows_upgrade(&self, upgrade: &str) -> bool {
        upgrade.split(',').map(str::trim).all(|offered| {
            let name = offered.split('/').next().unwrap_or_default();
            self.upgrades.iter().any(|allowed| {
                allowed.eq_ignore_ascii_case(offered)
                    || (!allowed.contains('/') && allowed.eq_ignore_ascii_case(name))
            })
        })
    }
}

/// One upstream endpoint.
#[derive(Debug)]
pub struct EndpointEntry {
    /// `host:port` to connect to; also the connection-pool key.
    pub authority: Arc<str>,
    /// Relative weight.
    pub weight: u32,
    /// Health, shared by workers and kept across reloads.
    pub state: Arc<EndpointState>,
    /// Locality and labels, for balancer components.
    pub zone: Option<String>,
    pub metadata: Vec<(String, String)>,
}

/// One cluster, resolved.
#[derive(Debug)]
pub struct ClusterEntry {
    /// Name used in logs and metrics.
    pub name: Arc<str>,
    /// Endpoints in config order.
    pub endpoints: Vec<EndpointEntry>,
    /// How connections to the endpoints are made and pooled.
    pub settings: EndpointSettings,
    /// Load counters for circuit breaking, shared by workers and kept across reloads.
    pub load: Arc<ClusterLoad>,
    /// Circuit-breaker limits.
    pub breaker: CircuitBreaker,
    /// Active health checks and the statuses that pass them.
    pub health_check: Option<(HealthCheck, Vec<(u16, u16)>)>,
    /// Passive health checks.
    pub outlier: Option<OutlierDetection>,
    /// Percentage of healthy endpoints under which all endpoints get traffic.
    pub panic_threshold: u8,
    /// The balancer component's name, when one picks endpoints.
    pub balancer: Option<Arc<str>>,
    /// Where the balancer's hash key comes from.
    pub hash_key: Option<HashKey>,
}

/// Everything request handling reads from configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one for every configuration applied.
    pub generation: u64,
    /// Route matcher; indices refer to [`Snapshot::routes`].
    pub router: Router,
    /// Routes in file order.
    pub routes: Vec<RouteEntry>,
    /// Clusters in file order.
    pub clusters: Vec<ClusterEntry>,
    /// Emit access-log lines.
    pub access_log: bool,
}

/// A configuration that passed validation still could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A route pattern did not compile.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// A reference or URL that validation should have caught.
    #[error("{0}")]
    Invalid(String),
}

impl Snapshot {
    /// Checks that `config` compiles, without touching any running state.
    pub fn check(config: &Config) -> Result<(), SnapshotError> {
        Self::build(config, 0, &Health::default()).map(drop)
    }

    /// Compiles `config`; endpoint health and cluster load come from `health`, so that they
    /// survive reloads.
    pub fn build(config: &Config, generation: u64, health: &Health) -> Result<Self, SnapshotError> {
        let clusters = config
            .clusters
            .iter()
            .enumerate()
            .map(|(ci, c)| {
                let mut tls = false;
                let endpoints = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        let address = parse_endpoint_url(&e.url).map_err(SnapshotError::Invalid)?;
                        tls |= address.tls;
                        let authority = address.authority;
                        let state = health.endpoint(
                            &c.name,
                            &authority,
                            e.initial == InitialHealth::Healthy || c.health_check.is_none(),
                        );
                        Ok(EndpointEntry {
                            authority: authority.into(),
                            weight: e.weight,
                            state,
                            zone: e.zone.clone(),
                            metadata: e
                                .metadata
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                        })
                    })
                    .collect::<Result<Vec<_>, SnapshotError>>()?;
                // A new generation re-reads the CA file: its connections are pooled apart from
                // the last one's.
                let pool_id = (generation << 24) | (ci as u64 + 1);
                let tls = tls
                    .then(|| ClientTls::new(c.tls.as_ref(), c.protocol, pool_id))
                    .transpose()
                    .map_err(|e| SnapshotError::Invalid(format!("cluster {}: TLS: {e}", c.name)))?;
                let load = health.cluster(&c.name);
                let health_check = c
                    .health_check
                    .as_ref()
                    .map(|hc| {
                        parse_status_ranges(&hc.expected_statuses)
                            .map(|ranges| (hc.clone(), ranges))
                            .map_err(SnapshotError::Invalid)
                    })
                    .transpose()?;
                Ok(ClusterEntry {
                    name: c.name.as_str().into(),
                    endpoints,
                    settings: EndpointSettings {
                        protocol: c.protocol,
                        connect_timeout: c.connect_timeout.get(),
                        idle_timeout: c.pool_idle_timeout.get(),
                        max_idle: c.pool_max_idle_per_endpoint,
                        load: load.clone(),
                        max_connections: c.circuit_breaker.max_connections,
                        max_pending: c.circuit_breaker.max_pending_requests,
                        tls,
                    },
                    load,
                    breaker: c.circuit_breaker.clone(),
                    health_check,
                    outlier: c.outlier_detection.clone(),
                    panic_threshold: c.panic_threshold,
                    balancer: c.balancer.as_deref().map(Arc::from),
                    hash_key: c.hash_key.clone(),
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let cluster = config
                    .clusters
                    .iter()
                    .position(|c| c.name == r.cluster)
                    .ok_or_else(|| {
                        SnapshotError::Invalid(format!(
                            "routes[{i}]: unknown cluster {:?}",
                            r.cluster
                        ))
                    })?;
                Ok(RouteEntry {
                    name: r
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("route-{i}"))
                        .into(),
                    cluster,
                    timeout: r.timeout.get(),
                    max_request_body_bytes: r.max_request_body_bytes,
                    retry: r.retry.clone(),
                    upgrades: r
                        .upgrades
                        .iter()
                        .map(|p| p.to_ascii_lowercase().into())
                        .collect(),
                    rewrite_path: r
                        .rewrite
                        .as_ref()
                        .and_then(|rw| path_rewrite(rw, &r.matcher)),
                    rewrite_host: r
                        .rewrite
                        .as_ref()
                        .and_then(|rw| rw.host.as_deref())
                        .and_then(|h| http::HeaderValue::from_str(h).ok()),
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        Ok(Snapshot {
            generation,
            router: Router::new(config.routes.iter().map(|r| &r.matcher))?,
            routes,
            clusters,
            access_log: config.logging.access_log,
        })
    }
}

/// A route's path rewrite, compiled (validation has checked it).
fn path_rewrite(
    rw: &rustygate_config::Rewrite,
    m: &rustygate_config::RouteMatch,
) -> Option<PathRewrite> {
    use rustygate_config::PathMatch;
    if let Some(replacement) = &rw.prefix {
        let matched = match m.path.as_ref()? {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => p,
            PathMatch::Regex(_) => return None,
        };
        return Some(PathRewrite::Prefix {
            matched: matched.as_str().into(),
            replacement: replacement.as_str().into(),
        });
    }
    let re = rw.path_regex.as_ref()?;
    Some(PathRewrite::Regex {
        pattern: regex::Regex::new(&re.pattern).ok()?,
        substitution: re.substitution.as_str().into(),
    })
}
