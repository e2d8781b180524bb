//! Logs and metrics. The metric names and labels are defined here and nowhere else, so
//! `docs/observability.md` can be checked against one file. Label values always come from
//! configuration (route, cluster and listener names) or small fixed sets (status codes,
//! failure reasons), never from request data, which bounds cardinality.

mod histogram;
mod logging;
pub mod trace;

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use histogram::FixedHistograms;
pub use histogram::LocalDurations;

pub use logging::{LogGuard, LoggingError, check_level, init_logging};

/// `rustygate_requests_total{route,status}`: completed requests.
pub const REQUESTS_TOTAL: &str = "rustygate_requests_total";
/// `rustygate_request_duration_seconds{route}`: time from request head to end of response.
pub const REQUEST_DURATION: &str = "rustygate_request_duration_seconds";
/// `rustygate_upstream_failures_total{cluster,reason}`: failed upstream attempts.
pub const UPSTREAM_FAILURES: &str = "rustygate_upstream_failures_total";
/// `rustygate_connections_active{listener}`: open client connections.
pub const CONNECTIONS_ACTIVE: &str = "rustygate_connections_active";
/// `rustygate_connections_rejected_total{listener,reason}`: connections closed at accept.
pub const CONNECTIONS_REJECTED: &str = "rustygate_connections_rejected_total";

/// `rustygate_filter_failures_total{filter,reason}`: filter failures (trap, cpu_deadline,
/// memory, unavailable), counted whatever the failure policy.
pub const FILTER_FAILURES: &str = "rustygate_filter_failures_total";

/// `rustygate_reload_total{result}`: configuration reloads by result (success, failure).
pub const RELOAD_TOTAL: &str = "rustygate_reload_total";
/// `rustygate_config_generation`: the configuration generation serving new requests.
pub const CONFIG_GENERATION: &str = "rustygate_config_generation";
/// `rustygate_filter_module_info{filter,sha256}`: 1 for the module each filter runs now, 0 for
/// modules it ran before a reload.
pub const FILTER_MODULE_INFO: &str = "rustygate_filter_module_info";

/// `rustygate_endpoint_healthy{cluster,endpoint}`: 1 while an endpoint is in rotation.
pub const ENDPOINT_HEALTHY: &str = "rustygate_endpoint_healthy";
/// `rustygate_upstream_retries_total{cluster}`: retries sent.
pub const UPSTREAM_RETRIES: &str = "rustygate_upstream_retries_total";
/// `rustygate_upstream_ejections_total{cluster}`: endpoints ejected by outlier detection.
pub const UPSTREAM_EJECTIONS: &str = "rustygate_upstream_ejections_total";
/// `rustygate_circuit_open_total{cluster,limit}`: requests or retries refused by a circuit
/// breaker.
pub const CIRCUIT_OPEN: &str = "rustygate_circuit_open_total";
/// `rustygate_mirror_requests_total{cluster,result}`: request copies by what became of them
/// (answered, failed, skipped).
pub const MIRROR_REQUESTS: &str = "rustygate_mirror_requests_total";

/// `rustygate_filter_duration_seconds{filter,phase}`: time spent in one filter callback.
pub const FILTER_DURATION: &str = "rustygate_filter_duration_seconds";
/// `rustygate_upstream_duration_seconds{cluster}`: time from sending a request upstream to
/// its response head, per attempt.
pub const UPSTREAM_DURATION: &str = "rustygate_upstream_duration_seconds";
/// `rustygate_requests_active`: requests in flight (sampled every 200 ms).
pub const REQUESTS_ACTIVE: &str = "rustygate_requests_active";
/// `rustygate_wasm_vms`: live WebAssembly VMs (all filters, workers and generations).
pub const WASM_VMS: &str = "rustygate_wasm_vms";
/// `rustygate_wasm_memory_bytes`: linear memory of the live VMs.
pub const WASM_MEMORY: &str = "rustygate_wasm_memory_bytes";
/// `rustygate_balancer_failures_total{cluster,balancer,reason}`: picks a balancer component
/// could not answer, served by the native round-robin instead.
pub const BALANCER_FAILURES: &str = "rustygate_balancer_failures_total";

/// Route label used when no route matched.
pub const NO_ROUTE_LABEL: &str = "none";

const METADATA: Metadata<'static> = Metadata::new("rustygate", metrics::Level::INFO, None);

/// The gateway's metric registry. Cheap to clone; handles it returns are lock-free atomics, so
/// callers register once (per worker, per label set) and keep the handle.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// Every `_seconds` histogram (see [`histogram`]).
    durations: Arc<FixedHistograms>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `rustygate_wasm_vms` and `rustygate_wasm_memory_bytes`: what one WebAssembly instance adds
/// to them while it lives ([`WasmGauges::live`]) and as its linear memory grows.
#[derive(Clone)]
pub struct WasmGauges {
    vms: Gauge,
    memory: Gauge,
}

impl WasmGauges {
    /// Counts one instance until the returned guard is dropped, with the memory it reports.
    pub fn live(&self) -> LiveInstance {
        self.vms.increment(1.0);
        LiveInstance {
            gauges: self.clone(),
            memory: 0,
        }
    }
}

/// One instance counted in [`WasmGauges`]; dropping it takes the instance and its memory out.
pub struct LiveInstance {
    gauges: WasmGauges,
    memory: usize,
}

impl LiveInstance {
    /// One of the instance's linear memories grew (or was created) by `bytes`.
    pub fn grew(&mut self, bytes: usize) {
        self.memory += bytes;
        self.gauges.memory.increment(bytes as f64);
    }
}

impl Drop for LiveInstance {
    fn drop(&mut self) {
        self.gauges.vms.decrement(1.0);
        self.gauges.memory.decrement(self.memory as f64);
    }
}

impl Metrics {
    /// A fresh registry with the catalogue described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let durations = Arc::new(FixedHistograms::default());
        let handle = recorder.handle();
        let r = &recorder;
        r.describe_counter(
            REQUESTS_TOTAL.into(),
            None,
            "Completed requests by route and status.".into(),
        );
        durations.describe(
            REQUEST_DURATION,
            "Request duration from request head to end of response body.",
        );
        r.describe_counter(
            UPSTREAM_FAILURES.into(),
            None,
            "Failed upstream attempts by cluster and reason (connect_failure, reset, timeout, protocol_error).".into(),
        );
        r.describe_gauge(
            CONNECTIONS_ACTIVE.into(),
            None,
            "Open client connections by listener.".into(),
        );
        r.describe_counter(
            CONNECTIONS_REJECTED.into(),
            None,
            "Client connections closed at accept by listener and reason.".into(),
        );
        r.describe_counter(
            FILTER_FAILURES.into(),
            None,
            "Filter failures by filter and reason (trap, cpu_deadline, memory, unavailable)."
                .into(),
        );
        r.describe_counter(
            BALANCER_FAILURES.into(),
            None,
            "Picks a balancer component failed (trap, cpu_deadline, memory, bad_pick, unavailable), served by round-robin instead."
                .into(),
        );
        r.describe_counter(
            RELOAD_TOTAL.into(),
            None,
            "Configuration reloads by result (success, failure).".into(),
        );
        r.describe_gauge(
            CONFIG_GENERATION.into(),
            None,
            "Configuration generation serving new requests (1 at start, +1 per applied reload)."
                .into(),
        );
        r.describe_gauge(
            FILTER_MODULE_INFO.into(),
            None,
            "1 for the module (by SHA-256) each filter runs now; 0 for modules replaced by a reload."
                .into(),
        );
        r.describe_gauge(
            ENDPOINT_HEALTHY.into(),
            None,
            "1 while the endpoint is in rotation (passing active checks, not ejected), else 0."
                .into(),
        );
        r.describe_counter(
            UPSTREAM_RETRIES.into(),
            None,
            "Retries sent to a cluster.".into(),
        );
        r.describe_counter(
            UPSTREAM_EJECTIONS.into(),
            None,
            "Endpoints ejected by outlier detection.".into(),
        );
        r.describe_counter(
            CIRCUIT_OPEN.into(),
            None,
            "Requests (or retries) refused by a cluster's circuit breaker, by limit (requests, pending_requests, connections, retries).".into(),
        );
        r.describe_counter(
            MIRROR_REQUESTS.into(),
            None,
            "Copies of requests sent to mirror clusters, by result: answered (any status), failed (no answer: connect failure, reset, timeout, circuit open), skipped (body over the mirror's max_body_bytes).".into(),
        );
        durations.describe(
            FILTER_DURATION,
            "Time in one filter callback, by filter and phase (request_headers, request_body, response_headers, response_body, log); pauses not included.",
        );
        durations.describe(
            UPSTREAM_DURATION,
            "Time from sending a request to a cluster to its response head, per attempt.",
        );
        r.describe_gauge(
            REQUESTS_ACTIVE.into(),
            None,
            "Requests in flight, sampled every 200 ms.".into(),
        );
        r.describe_gauge(WASM_VMS.into(), None, "Live WebAssembly VMs.".into());
        r.describe_gauge(
            WASM_MEMORY.into(),
            Some(Unit::Bytes),
            "Linear memory of the live WebAssembly VMs.".into(),
        );
        Self {
            recorder: Arc::new(recorder),
            handle,
            durations,
        }
    }

    /// `rustygate_filter_duration_seconds{filter,phase}`, for one worker to record into.
    pub fn filter_duration(&self, filter: &str, phase: &str) -> LocalDurations {
        self.durations
            .local(FILTER_DURATION, &[("filter", filter), ("phase", phase)])
    }

    /// `rustygate_upstream_duration_seconds{cluster}`, for one worker to record into.
    pub fn upstream_duration(&self, cluster: &str) -> LocalDurations {
        self.durations
            .local(UPSTREAM_DURATION, &[("cluster", cluster)])
    }

    /// `rustygate_requests_active`.
    pub fn requests_active(&self) -> Gauge {
        self.gauge(REQUESTS_ACTIVE, &[])
    }

    /// `rustygate_wasm_vms`.
    pub fn wasm_vms(&self) -> Gauge {
        self.gauge(WASM_VMS, &[])
    }

    /// `rustygate_wasm_memory_bytes`.
    pub fn wasm_memory(&self) -> Gauge {
        self.gauge(WASM_MEMORY, &[])
    }

    /// Both WebAssembly gauges, for an instance to count itself in.
    pub fn wasm_gauges(&self) -> WasmGauges {
        WasmGauges {
            vms: self.wasm_vms(),
            memory: self.wasm_memory(),
        }
    }

    /// `rustygate_endpoint_healthy{cluster,endpoint}`.
    pub fn endpoint_healthy(&self, cluster: &str, endpoint: &str) -> Gauge {
        self.gauge(
            ENDPOINT_HEALTHY,
            &[("cluster", cluster), ("endpoint", endpoint)],
        )
    }

    /// `rustygate_upstream_retries_total{cluster}`.
    pub fn upstream_retries(&self, cluster: &str) -> Counter {
        self.counter(UPSTREAM_RETRIES, &[("cluster", cluster)])
    }

    /// `rustygate_upstream_ejections_total{cluster}`.
    pub fn upstream_ejections(&self, cluster: &str) -> Counter {
        self.counter(UPSTREAM_EJECTIONS, &[("cluster", cluster)])
    }

    /// `rustygate_circuit_open_total{cluster,limit}`.
    pub fn circuit_open(&self, cluster: &str, limit: &str) -> Counter {
        self.counter(CIRCUIT_OPEN, &[("cluster", cluster), ("limit", limit)])
    }

    /// `rustygate_mirror_requests_total{cluster,result}`.
    pub fn mirror_requests(&self, cluster: &str, result: &str) -> Counter {
        self.counter(MIRROR_REQUESTS, &[("cluster", cluster), ("result", result)])
    }

    /// `rustygate_reload_total{result}`.
    pub fn reloads(&self, result: &str) -> Counter {
        self.counter(RELOAD_TOTAL, &[("result", result)])
    }

    /// `rustygate_config_generation`.
    pub fn config_generation(&self) -> Gauge {
        self.gauge(CONFIG_GENERATION, &[])
    }

    /// `rustygate_filter_module_info{filter,sha256}`.
    pub fn filter_module_info(&self, filter: &str, sha256: &str) -> Gauge {
        self.gauge(
            FILTER_MODULE_INFO,
            &[("filter", filter), ("sha256", sha256)],
        )
    }

    /// Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        let mut text = self.handle.render();
        self.durations.render(&mut text);
        text
    }

    /// Periodic housekeeping (drains histogram samples); the admin server calls it.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    fn key(name: impl Into<metrics::KeyName>, labels: &[(&'static str, &str)]) -> Key {
        Key::from_parts(
            name,
            labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    /// Any counter by name and labels; for metrics defined outside this crate's catalogue.
    pub fn counter(
        &self,
        name: impl Into<metrics::KeyName>,
        labels: &[(&'static str, &str)],
    ) -> Counter {
        self.recorder
            .register_counter(&Self::key(name, labels), &METADATA)
    }

    /// Any gauge by name and labels.
    pub fn gauge(
        &self,
        name: impl Into<metrics::KeyName>,
        labels: &[(&'static str, &str)],
    ) -> Gauge {
        self.recorder
            .register_gauge(&Self::key(name, labels), &METADATA)
    }

    /// Any histogram by name and labels.
    pub fn histogram(
        &self,
        name: impl Into<metrics::KeyName>,
        labels: &[(&'static str, &str)],
    ) -> Histogram {
        let name = name.into();
        if name.as_str().ends_with("_seconds") {
            return Histogram::from_arc(self.durations.get(name.as_str(), labels));
        }
        self.recorder
            .register_histogram(&Self::key(name, labels), &METADATA)
    }

    /// `rustygate_requests_total{route,status}`.
    pub fn requests_total(&self, route: &str, status: u16) -> Counter {
        self.counter(
            REQUESTS_TOTAL,
            &[("route", route), ("status", &status.to_string())],
        )
    }

    /// `rustygate_request_duration_seconds{route}`, for one worker to record into.
    pub fn request_duration(&self, route: &str) -> LocalDurations {
        self.durations.local(REQUEST_DURATION, &[("route", route)])
    }

    /// `rustygate_upstream_failures_total{cluster,reason}`.
    pub fn upstream_failures(&self, cluster: &str, reason: &str) -> Counter {
        self.counter(
            UPSTREAM_FAILURES,
            &[("cluster", cluster), ("reason", reason)],
        )
    }

    /// `rustygate_connections_active{listener}`.
    pub fn connections_active(&self, listener: &str) -> Gauge {
        self.gauge(CONNECTIONS_ACTIVE, &[("listener", listener)])
    }

    /// `rustygate_filter_failures_total{filter,reason}`.
    pub fn filter_failures(&self, filter: &str, reason: &str) -> Counter {
        self.counter(FILTER_FAILURES, &[("filter", filter), ("reason", reason)])
    }

    /// `rustygate_balancer_failures_total{cluster,balancer,reason}`.
    pub fn balancer_failures(&self, cluster: &str, balancer: &str, reason: &str) -> Counter {
        self.counter(
            BALANCER_FAILURES,
            &[
                ("cluster", cluster),
                ("balancer", balancer),
                ("reason", reason),
            ],
        )
    }

    /// `rustygate_connections_rejected_total{listener,reason}`.
    pub fn connections_rejected(&self, listener: &str, reason: &str) -> Counter {
        self.counter(
            CONNECTIONS_REJECTED,
            &[("listener", listener), ("reason", reason)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_recorded_values_with_labels() {
        let m = Metrics::new();
        m.requests_total("api", 200).increment(3);
        m.request_duration("api")
            .record(std::time::Duration::from_millis(2));
        m.connections_active("main").set(2.0);
        let text = m.render();
        assert!(
            text.contains("rustygate_requests_total{route=\"api\",status=\"200\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "rustygate_request_duration_seconds_bucket{route=\"api\",le=\"0.0025\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("rustygate_connections_active{listener=\"main\"} 2"),
            "{text}"
        );
        assert!(text.contains("# HELP rustygate_requests_total"), "{text}");
    }

    #[test]
    fn registries_are_independent() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.requests_total("x", 200).increment(1);
        assert!(!b.render().contains("route=\"x\""));
    }
}
