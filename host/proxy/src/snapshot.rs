//! The immutable routing snapshot: everything a request needs from configuration, compiled
//! once. Each worker holds the current one with its filter chains; a reload hands workers a
//! new one, and in-flight requests keep the snapshot they started with.

use std::sync::Arc;
use std::time::Duration;

use rustygate_config::{
    CircuitBreaker, Config, HashKey, HealthCheck, InitialHealth, OutlierDetection, RetryPolicy,
    parse_endpoint_url, parse_status_ranges,
};
use rustygate_core::balance::pick_weighted;
use rustygate_core::redirect::Redirect;
use rustygate_core::rewrite::PathRewrite;
use rustygate_core::router::{Router, RouterError};

use crate::health::{ClusterLoad, EndpointState, Health};
use crate::pool::EndpointSettings;
use crate::tls::ClientTls;

/// A route timeout that never runs out: what `timeout: 0s` means, as in Envoy. Far enough
/// to outlast any request, near enough that adding it to a clock reading cannot overflow.
pub const NO_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn route_timeout(configured: Duration) -> Duration {
    if configured.is_zero() {
        NO_TIMEOUT
    } else {
        configured
    }
}

/// One route, resolved.
#[derive(Debug)]
pub struct RouteEntry {
    /// Name used in logs and metrics.
    pub name: Arc<str>,
    /// Where a forwarded request goes; empty for a route that answers by itself.
    pub targets: Targets,
    /// The route's own answer, for a route that does not forward.
    pub answer: Option<Answer>,
    /// Clusters that get copies of the route's requests.
    pub mirrors: Box<[MirrorEntry]>,
    /// Time allowed for response headers ([`NO_TIMEOUT`] when the route turned it off).
    pub timeout: Duration,
    /// Overrides the listener's stream idle timeout; zero never cuts off.
    pub idle_timeout: Option<Duration>,
    /// Request body limit override; `None` falls back to the listener's.
    pub max_request_body_bytes: Option<u64>,
    /// When to try again.
    pub retry: RetryPolicy,
    /// Protocols clients may switch to (`Upgrade`), lower-cased.
    pub upgrades: Box<[Box<str>]>,
    /// A `CONNECT` is answered by the gateway and tunnelled to the cluster's endpoint as raw
    /// bytes, instead of being forwarded.
    pub terminate_connect: bool,
    /// The path the upstream is asked for instead of the client's, if the route rewrites it.
    pub rewrite_path: Option<PathRewrite>,
    /// The `Host` the upstream sees instead of the client's, if the route sets one.
    pub rewrite_host: Option<http::HeaderValue>,
    /// What filters read as `route_metadata`, if the route has `metadata`.
    pub metadata: Option<Arc<rustygate_filter_api::MetaValue>>,
}

/// A route's clusters (indexes into [`Snapshot::clusters`]) with their cumulative weights.
#[derive(Debug, Default)]
pub struct Targets {
    clusters: Box<[usize]>,
    cumulative: Box<[u32]>,
}

impl Targets {
    /// The cluster for one request: the only one, or one drawn by weight.
    pub fn pick(&self, rng: &std::cell::RefCell<fastrand::Rng>) -> Option<usize> {
        match (&*self.clusters, self.cumulative.last()) {
            ([], _) => None,
            ([only], _) => Some(*only),
            (_, Some(&total)) => {
                let r = rng.borrow_mut().u32(0..total);
                Some(self.clusters[pick_weighted(&self.cumulative, r)])
            }
            (_, None) => None,
        }
    }
}

/// Where a route's requests are copied to.
#[derive(Debug)]
pub struct MirrorEntry {
    /// Index into [`Snapshot::clusters`].
    pub cluster: usize,
    /// Share of requests copied, from 0 to 1.
    pub fraction: f64,
    /// Largest body a copy carries.
    pub max_body_bytes: u64,
}

/// What a route that does not forward answers with.
#[derive(Debug)]
pub enum Answer {
    /// A fixed response.
    Direct {
        status: http::StatusCode,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: bytes::Bytes,
    },
    /// A redirect to a `Location` made from the request's URL.
    Redirect {
        status: http::StatusCode,
        rule: Redirect,
    },
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
    /// What filters read as `cluster_metadata`, if the cluster has `metadata`.
    pub metadata: Option<Arc<rustygate_filter_api::MetaValue>>,
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
                    metadata: c.metadata.as_ref().map(metadata_tree),
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
                let cluster = |name: &str| {
                    config
                        .clusters
                        .iter()
                        .position(|c| c.name == name)
                        .ok_or_else(|| {
                            SnapshotError::Invalid(format!("routes[{i}]: unknown cluster {name:?}"))
                        })
                };
                let split: Vec<(&str, u32)> = match &r.cluster {
                    Some(name) => vec![(name, 1)],
                    None => r
                        .clusters
                        .iter()
                        .map(|w| (w.name.as_str(), w.weight))
                        .collect(),
                };
                let mut total = 0u32;
                let mut targets = (Vec::new(), Vec::new());
                for (name, weight) in split {
                    total = total.checked_add(weight).ok_or_else(|| {
                        SnapshotError::Invalid(format!("routes[{i}]: weights add up past 2^32"))
                    })?;
                    targets.0.push(cluster(name)?);
                    targets.1.push(total);
                }
                let answer =
                    answer(r).map_err(|e| SnapshotError::Invalid(format!("routes[{i}]: {e}")))?;
                Ok(RouteEntry {
                    metadata: r.metadata.as_ref().map(metadata_tree),
                    name: r
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("route-{i}"))
                        .into(),
                    targets: Targets {
                        clusters: targets.0.into(),
                        cumulative: targets.1.into(),
                    },
                    answer,
                    mirrors: r
                        .mirror
                        .iter()
                        .map(|m| {
                            Ok(MirrorEntry {
                                cluster: cluster(&m.cluster)?,
                                fraction: m.percent / 100.0,
                                max_body_bytes: m.max_body_bytes,
                            })
                        })
                        .collect::<Result<_, SnapshotError>>()?,
                    timeout: route_timeout(r.timeout.get()),
                    idle_timeout: r.idle_timeout.map(|d| d.get()),
                    max_request_body_bytes: r.max_request_body_bytes,
                    retry: r.retry.clone(),
                    upgrades: r
                        .upgrades
                        .iter()
                        .map(|p| p.to_ascii_lowercase().into())
                        .collect(),
                    terminate_connect: r.connect == rustygate_config::ConnectMode::Terminate,
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

/// A route's direct response or redirect, compiled (validation has checked it).
fn answer(r: &rustygate_config::Route) -> Result<Option<Answer>, String> {
    let status =
        |code: u16| http::StatusCode::from_u16(code).map_err(|e| format!("status {code}: {e}"));
    if let Some(d) = &r.direct_response {
        let headers = d
            .headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| format!("header {k:?}: {e}"))?,
                    http::HeaderValue::from_str(v).map_err(|e| format!("header {k:?}: {e}"))?,
                ))
            })
            .collect::<Result<_, String>>()?;
        return Ok(Some(Answer::Direct {
            status: status(d.status)?,
            headers,
            body: d.body.clone().map(bytes::Bytes::from).unwrap_or_default(),
        }));
    }
    let Some(rd) = &r.redirect else {
        return Ok(None);
    };
    let prefix = rd.prefix.as_ref().and_then(|p| {
        path_rewrite(
            &rustygate_config::Rewrite {
                prefix: Some(p.clone()),
                ..Default::default()
            },
            &r.matcher,
        )
    });
    Ok(Some(Answer::Redirect {
        status: status(rd.status)?,
        rule: Redirect {
            scheme: rd.scheme.as_deref().map(Into::into),
            host: rd.host.as_deref().map(Into::into),
            port: rd.port,
            path: rd.path.as_deref().map(Into::into),
            prefix,
            strip_query: rd.strip_query,
        },
    }))
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

/// A route's or cluster's `metadata` as filters read it:
/// `{ filter_metadata: { <namespace>: ... } }`.
fn metadata_tree(m: &rustygate_config::Metadata) -> Arc<rustygate_filter_api::MetaValue> {
    use rustygate_filter_api::MetaValue;
    fn value(v: &serde_json::Value) -> MetaValue {
        match v {
            serde_json::Value::Null => MetaValue::Null,
            serde_json::Value::Bool(b) => MetaValue::Bool(*b),
            // A protobuf `Struct` holds every number as a double.
            serde_json::Value::Number(n) => MetaValue::Number(n.as_f64().unwrap_or_default()),
            serde_json::Value::String(s) => MetaValue::String(s.as_str().into()),
            serde_json::Value::Array(a) => MetaValue::List(a.iter().map(value).collect()),
            serde_json::Value::Object(o) => MetaValue::Map(
                o.iter()
                    .map(|(k, v)| (k.as_str().into(), value(v)))
                    .collect(),
            ),
        }
    }
    let namespaces = m
        .filter_metadata
        .iter()
        .map(|(k, fields)| {
            let fields = fields
                .iter()
                .map(|(k, v)| (k.as_str().into(), value(v)))
                .collect();
            (k.as_str().into(), MetaValue::Map(fields))
        })
        .collect();
    Arc::new(MetaValue::Map(Box::new([(
        "filter_metadata".into(),
        MetaValue::Map(namespaces),
    )])))
}
