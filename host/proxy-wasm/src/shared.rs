//! Process-wide state that proxy-wasm lets filters share across VMs and workers: shared data
//! (with CAS) and shared queues, both partitioned by `vm_id`, and filter-defined metrics.
//! These are the only places a filter's work crosses threads; each call takes one short lock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use rustygate_telemetry::Metrics;

/// The kinds `proxy_define_metric` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

enum Handle {
    Counter(metrics::Counter),
    Gauge(metrics::Gauge),
    Histogram(metrics::Histogram),
}

pub(crate) struct FilterMetric {
    pub kind: MetricKind,
    /// Current value for `proxy_get_metric` (counters and gauges).
    pub value: AtomicI64,
    handle: Handle,
}

impl FilterMetric {
    /// Adds `delta` (counters: > 0 only; gauges: either sign).
    pub fn add(&self, delta: i64) {
        let now = self.value.fetch_add(delta, Ordering::Relaxed) + delta;
        match &self.handle {
            Handle::Counter(c) => c.increment(delta as u64),
            Handle::Gauge(g) => g.set(now as f64),
            Handle::Histogram(_) => {}
        }
    }

    /// Counter: add; gauge: set; histogram: record a sample.
    pub fn record(&self, v: u64) {
        match &self.handle {
            Handle::Counter(_) => self.add(v as i64),
            Handle::Gauge(g) => {
                self.value.store(v as i64, Ordering::Relaxed);
                g.set(v as f64);
            }
            Handle::Histogram(h) => h.record(v as f64),
        }
    }
}

/// A VM's inbox for work posted from other threads: it is delivered on the VM's own worker.
pub(crate) type Mailbox = tokio::sync::mpsc::UnboundedSender<Mail>;

/// Work posted to a VM.
#[derive(Debug)]
pub(crate) enum Mail {
    /// `proxy_on_queue_ready(root, queue)`.
    QueueReady { root: u32, queue: u32 },
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Vec<u8>>,
    /// The root context told about new items, and its VM's mailbox. The last registration wins,
    /// as in Envoy (every worker's VM registers the queue; one of them consumes it).
    consumer: Option<(Mailbox, u32)>,
}

#[derive(Default)]
struct Inner {
    /// (vm_id, key) → (value, cas).
    data: HashMap<(String, Vec<u8>), (Vec<u8>, u32)>,
    next_cas: u32,
    /// (vm_id, name) → queue id; ids start at 1.
    queue_ids: HashMap<(String, Vec<u8>), u32>,
    queues: HashMap<u32, Queue>,
    /// Metric name → id (ids start at 1, shared by every VM so that all workers add to one series).
    metric_ids: HashMap<(MetricKind, String), u32>,
}

/// Live counts for one module (by SHA-256), across workers and configuration generations.
#[derive(Debug, Default)]
pub struct ModuleStats {
    /// VMs running the module now: a number that stays high after reloads means a leak.
    pub vms: AtomicUsize,
    /// VM failures (trap, CPU deadline, memory limit) since the process started.
    pub failures: AtomicU64,
}

/// Counts a VM as live until dropped in its module's counts (the process-wide gauges count
/// it through its memory limiter's [`rustygate_telemetry::LiveInstance`]).
pub(crate) struct LiveVm(Arc<ModuleStats>);

impl LiveVm {
    pub fn new(stats: Arc<ModuleStats>) -> Self {
        stats.vms.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }

    pub fn failed(&self) {
        self.0.failures.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for LiveVm {
    fn drop(&mut self) {
        self.0.vms.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Shared by every VM in the process, and kept across reloads: shared data, queues and rate
/// limit windows survive a filter being swapped, as they survive a VM restart in Envoy.
pub struct Shared {
    /// Origin of the monotonic clock filters see.
    pub(crate) started: std::time::Instant,
    inner: Mutex<Inner>,
    metrics_by_id: Mutex<Vec<Arc<FilterMetric>>>,
    registry: Metrics,
    /// `metrics.filter_tags`, applied when a metric is defined.
    metric_tags: Mutex<(
        Vec<crate::metric_names::Tag>,
        crate::metric_names::LabelNames,
    )>,
    /// The `rustygate_rate_limit` foreign function's counters.
    pub(crate) limiter: crate::foreign::Limiter,
    modules: Mutex<HashMap<String, Arc<ModuleStats>>>,
    /// `rustygate_wasm_vms` and `rustygate_wasm_memory_bytes`.
    pub(crate) wasm_gauges: rustygate_telemetry::WasmGauges,
}

impl Shared {
    /// Empty shared state recording filter metrics into `registry`.
    pub fn new(registry: Metrics) -> Arc<Self> {
        Arc::new(Shared {
            started: std::time::Instant::now(),
            inner: Mutex::new(Inner {
                next_cas: 1,
                ..Inner::default()
            }),
            metrics_by_id: Mutex::new(Vec::new()),
            metric_tags: Mutex::default(),
            limiter: crate::foreign::Limiter::default(),
            modules: Mutex::default(),
            wasm_gauges: registry.wasm_gauges(),
            registry,
        })
    }

    /// The host rate limiter (`rustygate_rate_limit`), for other engines to share.
    pub fn rate_limiter(&self) -> Arc<rustygate_filter_api::services::RateLimiter> {
        self.limiter.0.clone()
    }

    /// The live counts of the module with this SHA-256.
    pub fn module_stats(&self, sha256: &str) -> Arc<ModuleStats> {
        self.modules
            .lock()
            .entry(sha256.to_owned())
            .or_default()
            .clone()
    }

    /// `proxy_get_shared_data`: (value, cas).
    pub(crate) fn get(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.inner
            .lock()
            .data
            .get(&(vm_id.to_owned(), key.to_vec()))
            .cloned()
    }

    /// `proxy_set_shared_data`: false on CAS mismatch.
    pub(crate) fn set(&self, vm_id: &str, key: &[u8], value: Vec<u8>, cas: u32) -> bool {
        let mut g = self.inner.lock();
        let k = (vm_id.to_owned(), key.to_vec());
        if let Some((_, current)) = g.data.get(&k)
            && cas != 0
            && cas != *current
        {
            return false;
        }
        let next = g.next_cas;
        g.next_cas = next.checked_add(1).unwrap_or(1);
        g.data.insert(k, (value, next));
        true
    }

    /// Registers (or re-registers) a queue; `consumer` becomes the one told of new items.
    pub(crate) fn register_queue(&self, vm_id: &str, name: &[u8], consumer: (Mailbox, u32)) -> u32 {
        let mut g = self.inner.lock();
        let next = g.queue_ids.len() as u32 + 1;
        let id = *g
            .queue_ids
            .entry((vm_id.to_owned(), name.to_vec()))
            .or_insert(next);
        g.queues.entry(id).or_default().consumer = Some(consumer);
        id
    }

    pub(crate) fn resolve_queue(&self, vm_id: &str, name: &[u8]) -> Option<u32> {
        self.inner
            .lock()
            .queue_ids
            .get(&(vm_id.to_owned(), name.to_vec()))
            .copied()
    }

    /// Appends an item and posts `proxy_on_queue_ready` to the consumer (never run inline:
    /// the consumer may be the caller itself).
    pub(crate) fn enqueue(&self, id: u32, item: Vec<u8>) -> bool {
        match self.inner.lock().queues.get_mut(&id) {
            Some(q) => {
                q.items.push_back(item);
                if let Some((mailbox, root)) = &q.consumer {
                    // A closed mailbox is a VM that is gone; the items wait for the next consumer.
                    let _ = mailbox.send(Mail::QueueReady {
                        root: *root,
                        queue: id,
                    });
                }
                true
            }
            None => false,
        }
    }

    /// `None`: no such queue; `Some(None)`: empty.
    pub(crate) fn dequeue(&self, id: u32) -> Option<Option<Vec<u8>>> {
        self.inner
            .lock()
            .queues
            .get_mut(&id)
            .map(|q| q.items.pop_front())
    }

    /// The configuration's `metrics.filter_tags`, for metrics defined from now on.
    pub fn set_metric_tags(&self, tags: &[rustygate_config::MetricTag]) {
        let mut g = self.metric_tags.lock();
        let (compiled, names) = &mut *g;
        *compiled = crate::metric_names::compile(tags, names);
    }

    /// `proxy_define_metric`: the id for `name`, defining it on first use. Exported to
    /// Prometheus as `rustygate_filter_<name>` (non-alphanumerics become `_`) with a `filter`
    /// label, so filters cannot collide with the gateway's own metrics, and the labels
    /// `metrics.filter_tags` take out of the name.
    pub(crate) fn define_metric(&self, kind: MetricKind, name: &str, filter: &str) -> u32 {
        let mut g = self.inner.lock();
        if let Some(id) = g.metric_ids.get(&(kind, name.to_owned())) {
            return *id;
        }
        let (base, tags) = crate::metric_names::extract(name, &self.metric_tags.lock().0);
        let prom: String = format!("rustygate_filter_{base}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut labels = vec![("filter", filter)];
        labels.extend(tags.iter().map(|(k, v)| (*k, v.as_str())));
        let handle = match kind {
            MetricKind::Counter => Handle::Counter(self.registry.counter(prom, &labels)),
            MetricKind::Gauge => Handle::Gauge(self.registry.gauge(prom, &labels)),
            MetricKind::Histogram => Handle::Histogram(self.registry.histogram(prom, &labels)),
        };
        let metric = Arc::new(FilterMetric {
            kind,
            value: AtomicI64::new(0),
            handle,
        });
        let mut by_id = self.metrics_by_id.lock();
        by_id.push(metric);
        let id = by_id.len() as u32;
        g.metric_ids.insert((kind, name.to_owned()), id);
        id
    }

    pub(crate) fn metric(&self, id: u32) -> Option<Arc<FilterMetric>> {
        let i = (id as usize).checked_sub(1)?;
        self.metrics_by_id.lock().get(i).cloned()
    }
}
