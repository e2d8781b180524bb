//! Endpoint health and cluster load, shared by every worker as atomics: read on the hot path
//! with relaxed loads, written by active health checks (`checker.rs`), by outlier detection
//! after real requests, and by the circuit-breaker guards. The state is kept by cluster name
//! and endpoint address across reloads, so a reload does not forget that an endpoint is down.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustygate_config::OutlierDetection;
use rustygate_core::resilience::{self, Attempt};

/// Why an endpoint is out of rotation (for logs and the admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// In rotation.
    None = 0,
    /// Configured `initial: unhealthy` and not yet passed its checks.
    Initial = 1,
    /// Failed `unhealthy_threshold` active checks in a row.
    ActiveCheck = 2,
    /// Ejected after consecutive 5xx responses.
    Consecutive5xx = 3,
    /// Ejected after consecutive connect failures, resets or timeouts.
    ConsecutiveGatewayFailure = 4,
}

impl Reason {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Reason::Initial,
            2 => Reason::ActiveCheck,
            3 => Reason::Consecutive5xx,
            4 => Reason::ConsecutiveGatewayFailure,
            _ => Reason::None,
        }
    }

    /// The label used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::None => "none",
            Reason::Initial => "initial: unhealthy",
            Reason::ActiveCheck => "failed active health checks",
            Reason::Consecutive5xx => "consecutive 5xx responses",
            Reason::ConsecutiveGatewayFailure => "consecutive connect failures, resets or timeouts",
        }
    }
}

/// One endpoint's health.
#[derive(Debug)]
pub struct EndpointState {
    /// Result of active checks (or the configured initial health before the first).
    pub checked_healthy: AtomicBool,
    active_reason: AtomicU8,
    /// Ejected by outlier detection until this time (ms on the registry clock); 0: not ejected.
    ejected_until: AtomicU64,
    eject_reason: AtomicU8,
    /// Ejections so far (the next lasts longer); reset after a long healthy spell.
    ejections: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
}

impl EndpointState {
    fn new(healthy: bool) -> Self {
        Self {
            checked_healthy: AtomicBool::new(healthy),
            active_reason: AtomicU8::new(if healthy {
                Reason::None
            } else {
                Reason::Initial
            } as u8),
            ejected_until: AtomicU64::new(0),
            eject_reason: AtomicU8::new(0),
            ejections: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
        }
    }

    /// Whether the endpoint is in rotation at `now_ms`.
    pub fn available(&self, now_ms: u64) -> bool {
        self.checked_healthy.load(Ordering::Relaxed) && !self.ejected(now_ms)
    }

    fn ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    /// Why the endpoint is out of rotation at `now_ms`.
    pub fn reason(&self, now_ms: u64) -> Reason {
        if !self.checked_healthy.load(Ordering::Relaxed) {
            Reason::from_u8(self.active_reason.load(Ordering::Relaxed))
        } else if self.ejected(now_ms) {
            Reason::from_u8(self.eject_reason.load(Ordering::Relaxed))
        } else {
            Reason::None
        }
    }

    /// Sets the active-check result.
    pub fn set_checked(&self, healthy: bool) {
        self.active_reason.store(
            if healthy {
                Reason::None
            } else {
                Reason::ActiveCheck
            } as u8,
            Ordering::Relaxed,
        );
        self.checked_healthy.store(healthy, Ordering::Relaxed);
    }

    /// Counts an attempt's outcome for outlier detection. Returns the ejection time when this
    /// outcome ejects the endpoint; `ejected_now` is how many of the cluster's endpoints are
    /// ejected already, `max_ejected` how many may be.
    pub fn record(
        &self,
        attempt: Attempt,
        od: &OutlierDetection,
        now_ms: u64,
        ejected_now: usize,
        max_ejected: usize,
    ) -> Option<Duration> {
        if !attempt.is_5xx() {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            return None;
        }
        let c5 = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let cg = if attempt.is_gateway_failure() {
            self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        let reason = if od.consecutive_gateway_failures > 0 && cg >= od.consecutive_gateway_failures
        {
            Reason::ConsecutiveGatewayFailure
        } else if od.consecutive_5xx > 0 && c5 >= od.consecutive_5xx {
            Reason::Consecutive5xx
        } else {
            return None;
        };
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until > now_ms || ejected_now >= max_ejected {
            return None;
        }
        // After a long healthy spell an endpoint's ejections start again from the base time.
        let max_ms = od.max_ejection_time.get().as_millis() as u64;
        if until > 0 && now_ms.saturating_sub(until) > max_ms {
            self.ejections.store(0, Ordering::Relaxed);
        }
        let times = self.ejections.load(Ordering::Relaxed) + 1;
        let time = resilience::ejection_time(
            od.base_ejection_time.get(),
            od.max_ejection_time.get(),
            times,
        );
        // One worker wins an ejection that several observe at once.
        let new_until = now_ms + time.as_millis() as u64;
        self.ejected_until
            .compare_exchange(until, new_until, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        self.ejections.store(times, Ordering::Relaxed);
        self.eject_reason.store(reason as u8, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        Some(time)
    }

    /// Whether the endpoint is ejected at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected(now_ms)
    }
}

/// Load on one cluster across workers, for circuit breaking.
#[derive(Debug, Default)]
pub struct ClusterLoad {
    /// Requests in flight.
    pub requests: AtomicUsize,
    /// Retries in flight.
    pub retries: AtomicUsize,
    /// Requests waiting for a new connection.
    pub pending: AtomicUsize,
    /// Open connections.
    pub connections: AtomicUsize,
}

/// A slot in one of a cluster's counters, released on drop.
#[derive(Debug)]
pub struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    /// Takes a slot of `counter` if it is under `max`.
    pub fn take(counter: &'a AtomicUsize, max: usize) -> Option<Self> {
        counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(counter))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection slot held beyond one stack frame, until the connection closes.
#[derive(Debug)]
pub struct OwnedSlot(Arc<ClusterLoad>);

impl OwnedSlot {
    /// Takes a connection slot of `load` if it is under `max`.
    pub fn connection(load: &Arc<ClusterLoad>, max: usize) -> Option<Self> {
        std::mem::forget(Slot::take(&load.connections, max)?);
        Some(OwnedSlot(load.clone()))
    }
}

impl Drop for OwnedSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Health and load state by cluster and endpoint, for the whole process.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    endpoints: Mutex<HashMap<(String, String), Arc<EndpointState>>>,
    clusters: Mutex<HashMap<String, Arc<ClusterLoad>>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            endpoints: Mutex::default(),
            clusters: Mutex::default(),
        }
    }
}

impl Health {
    /// Milliseconds on the registry's clock (monotonic, from process start).
    pub fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// [`Health::now_ms`] at `at`, for a caller that already read the clock.
    pub fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }

    /// The state of `endpoint` in `cluster`, created with `initial_healthy` if new.
    pub fn endpoint(
        &self,
        cluster: &str,
        endpoint: &str,
        initial_healthy: bool,
    ) -> Arc<EndpointState> {
        self.endpoints
            .lock()
            .entry((cluster.to_owned(), endpoint.to_owned()))
            .or_insert_with(|| Arc::new(EndpointState::new(initial_healthy)))
            .clone()
    }

    /// The load counters of `cluster`.
    pub fn cluster(&self, cluster: &str) -> Arc<ClusterLoad> {
        self.clusters
            .lock()
            .entry(cluster.to_owned())
            .or_default()
            .clone()
    }

    /// Forgets clusters and endpoints that `keep` no longer has (generations still running
    /// keep their own references).
    pub fn retain(&self, keep: &crate::Snapshot) {
        self.endpoints.lock().retain(|(c, e), _| {
            keep.clusters
                .iter()
                .any(|cl| *cl.name == *c && cl.endpoints.iter().any(|ep| *ep.authority == *e))
        });
        self.clusters
            .lock()
            .retain(|c, _| keep.clusters.iter().any(|cl| *cl.name == *c));
    }
}
