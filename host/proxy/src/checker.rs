//! Active health checks, on a thread of their own so that probes never compete with traffic
//! on a worker, and once per process rather than once per worker (an endpoint is probed at
//! the configured interval, not N times as often).
//!
//! Each configured endpoint gets a task that probes it (TCP connect, or `GET path` on a fresh
//! connection in the cluster's protocol) every `interval` plus a random jitter, and turns
//! consecutive results into health with the thresholds. A sweeper keeps
//! `rustygate_endpoint_healthy` current and logs endpoints that return from an ejection.
//! When a reload commits a new snapshot, every task is restarted on it; health itself lives
//! in the shared [`Health`] registry and carries over.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Uri, header};
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustygate_config::{HealthCheck, HealthCheckKind, UpstreamProtocol};
use rustygate_core::resilience::CheckRun;
use rustygate_telemetry::Metrics;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::Phase;
use crate::exec::LocalExec;
use crate::health::{Health, Reason};
use crate::pool::EndpointSettings;
use crate::snapshot::{ClusterEntry, EndpointEntry, Snapshot};

/// How often the sweeper refreshes the health gauges.
const SWEEP: Duration = Duration::from_millis(200);

/// Starts the checker thread; it follows `snapshots` until the gateway stops.
pub(crate) fn start(
    shared: Arc<crate::Shared>,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    mut phase: watch::Receiver<Phase>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("rustygate-health".into())
        .spawn(move || {
            let (health, metrics) = (shared.health.clone(), shared.metrics.clone());
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the health checker");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                // Requests in flight, sampled rather than counted per request in a gauge that
                // every worker would write.
                let active = metrics.requests_active();
                tokio::task::spawn_local(async move {
                    let mut tick = tokio::time::interval(SWEEP);
                    loop {
                        tick.tick().await;
                        active.set(shared.in_flight.total() as f64);
                    }
                });
                loop {
                    let snapshot = snapshots.borrow_and_update().clone();
                    let tasks = spawn_all(&health, &metrics, &snapshot);
                    tokio::select! {
                        changed = snapshots.changed() => if changed.is_err() { break },
                        _ = phase.wait_for(|p| *p == Phase::Stopped) => break,
                    }
                    for t in tasks {
                        t.abort();
                    }
                }
            });
        })
}

fn spawn_all(
    health: &Arc<Health>,
    metrics: &Metrics,
    snapshot: &Arc<Snapshot>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (ci, cluster) in snapshot.clusters.iter().enumerate() {
        if cluster.health_check.is_none() {
            continue;
        }
        for ei in 0..cluster.endpoints.len() {
            let (snapshot, health) = (snapshot.clone(), health.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let cluster = &snapshot.clusters[ci];
                check_loop(&health, cluster, &cluster.endpoints[ei]).await;
            }));
        }
    }
    let (snapshot, health, metrics) = (snapshot.clone(), health.clone(), metrics.clone());
    tasks.push(tokio::task::spawn_local(sweep(health, metrics, snapshot)));
    tasks
}

async fn check_loop(health: &Health, cluster: &ClusterEntry, endpoint: &EndpointEntry) {
    let Some((hc, statuses)) = &cluster.health_check else {
        return;
    };
    let state = &endpoint.state;
    let mut run = CheckRun::new(
        state
            .checked_healthy
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    let jitter = hc.jitter.map_or(hc.interval.get() / 10, |j| j.get());
    let mut rng = fastrand::Rng::new();
    // The first probe goes out within one jitter of start-up (or of a reload).
    let mut wait = jitter.mul_f64(rng.f64());
    loop {
        tokio::time::sleep(wait).await;
        let result = probe(hc, statuses, &endpoint.authority, &cluster.settings).await;
        let change = run.record(result.is_ok(), hc.healthy_threshold, hc.unhealthy_threshold);
        if let Some(healthy) = change {
            state.set_checked(healthy);
            let available = state.available(health.now_ms());
            if healthy {
                tracing::info!(
                    cluster = &*cluster.name,
                    endpoint = &*endpoint.authority,
                    in_rotation = available,
                    "endpoint healthy: passed {} active health checks",
                    hc.healthy_threshold
                );
            } else {
                tracing::warn!(
                    cluster = &*cluster.name,
                    endpoint = &*endpoint.authority,
                    reason = Reason::ActiveCheck.as_str(),
                    error = result
                        .as_ref()
                        .err()
                        .map(String::as_str)
                        .unwrap_or_default(),
                    "endpoint unhealthy: failed {} active health checks",
                    hc.unhealthy_threshold
                );
            }
        }
        wait = hc.interval.get() + jitter.mul_f64(rng.f64());
    }
}

/// One probe: `Ok` when the endpoint passes.
async fn probe(
    hc: &HealthCheck,
    statuses: &[(u16, u16)],
    authority: &str,
    settings: &EndpointSettings,
) -> Result<(), String> {
    let attempt = async {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if hc.kind == HealthCheckKind::Tcp {
            return Ok(());
        }
        let _ = stream.set_nodelay(true);
        let stream = crate::tcp::Tcp::new(stream);
        let host = hc.host.as_deref().unwrap_or(authority);
        // An https:// endpoint is checked over TLS, as requests reach it: a certificate that
        // fails verification fails the check.
        let code = match &settings.tls {
            None => request(hc, host, settings.protocol, "http", TokioIo::new(stream)).await?,
            Some(tls) => {
                let stream = tls
                    .connect(authority, stream)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                request(hc, host, settings.protocol, "https", TokioIo::new(stream)).await?
            }
        };
        if statuses.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code)) {
            Ok(())
        } else {
            Err(format!("status {code} not in {}", hc.expected_statuses))
        }
    };
    match tokio::time::timeout(hc.timeout.get(), attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}", hc.timeout)),
    }
}

/// The check's request on a fresh connection; its status.
async fn request<T>(
    hc: &HealthCheck,
    host: &str,
    protocol: UpstreamProtocol,
    scheme: &str,
    io: T,
) -> Result<u16, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let status = match protocol {
        UpstreamProtocol::Http1 => {
            let (mut sender, conn) = http1::handshake::<_, Empty<bytes::Bytes>>(io)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::task::spawn_local(conn);
            let req = Request::get(hc.path.as_str())
                .header(header::HOST, host)
                .header(header::USER_AGENT, "rustygate-health-check")
                .header(header::CONNECTION, "close")
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            sender
                .send_request(req)
                .await
                .map_err(|e| e.to_string())?
                .status()
        }
        UpstreamProtocol::Http2 => {
            let (mut sender, conn) = http2::Builder::new(LocalExec)
                .timer(TokioTimer::new())
                .handshake::<_, Empty<bytes::Bytes>>(io)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::task::spawn_local(conn);
            let uri: Uri = format!("{scheme}://{host}{}", hc.path)
                .parse()
                .map_err(|e| format!("{e}"))?;
            let req = Request::get(uri)
                .header(header::USER_AGENT, "rustygate-health-check")
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            sender
                .send_request(req)
                .await
                .map_err(|e| e.to_string())?
                .status()
        }
    };
    Ok(status.as_u16())
}

/// Keeps the health gauges current and logs the end of ejections (which no event marks: an
/// ejection simply runs out).
async fn sweep(health: Arc<Health>, metrics: Metrics, snapshot: Arc<Snapshot>) {
    // Per endpoint: its gauge and, once seen, whether it was in rotation and if not why.
    type Seen = std::cell::Cell<Option<(bool, Reason)>>;
    let gauges: Vec<Vec<(metrics::Gauge, Seen)>> = snapshot
        .clusters
        .iter()
        .map(|c| {
            c.endpoints
                .iter()
                .map(|e| {
                    (
                        metrics.endpoint_healthy(&c.name, &e.authority),
                        std::cell::Cell::new(None),
                    )
                })
                .collect()
        })
        .collect();
    let gauges = Rc::new(gauges);
    let mut tick = tokio::time::interval(SWEEP);
    loop {
        tick.tick().await;
        let now = health.now_ms();
        for (c, cluster) in snapshot.clusters.iter().enumerate() {
            for (e, endpoint) in cluster.endpoints.iter().enumerate() {
                let (gauge, last) = &gauges[c][e];
                let available = endpoint.state.available(now);
                if last.get().map(|(a, _)| a) == Some(available) {
                    continue;
                }
                gauge.set(if available { 1.0 } else { 0.0 });
                // Active-check changes are logged by the checker, ejections by the worker that
                // ejected; only the end of an ejection has no event of its own.
                if available
                    && let Some((_, Reason::Consecutive5xx | Reason::ConsecutiveGatewayFailure)) =
                        last.get()
                {
                    tracing::info!(
                        cluster = &*cluster.name,
                        endpoint = &*endpoint.authority,
                        "endpoint healthy: ejection ended"
                    );
                }
                last.set(Some((available, endpoint.state.reason(now))));
            }
        }
    }
}
