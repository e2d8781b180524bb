//! WebAssembly components on RustyGate's WIT interfaces (`wit/gateway`): load-balancing
//! strategies (the `load-balancer` world, here) and HTTP filters (the `http-filter` world,
//! `filter`).
//!
//! Each balancer is compiled and linked once ([`Components::load`], which also configures a
//! canary instance so a bad configuration is refused before it serves); each worker then
//! instantiates its own copy per cluster from the pre-linked component, so calls never cross
//! threads and need no lock, as with the proxy-wasm VMs. Every call runs under the balancer's
//! CPU budget and memory cap. A failed instance is replaced on a later pick (at most once a
//! second); until then the proxy serves the cluster with its native round-robin.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use guard::{Failure, Guard, Guarded};
use rustygate_config::Config;
use rustygate_filter_api::{Balancer, BalancerEndpoint, BalancerError, PickOutcome, PickRequest};
use rustygate_telemetry::WasmGauges;
use rustygate_wasm_runtime::Runtime;
use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker};

mod filter;
mod guard;
mod wasi;

pub use filter::{ComponentFilters, FilterServices, is_component_filter};

mod bindings {
    wasmtime::component::bindgen!({
        world: "load-balancer",
        path: "../../wit/gateway",
    });
}

use bindings::exports::rustygate::gateway::balancer as wit;
use bindings::rustygate::gateway::log;

/// A balancer component could not be loaded or configured.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("balancer {name}: {source}")]
    Load {
        name: String,
        #[source]
        source: rustygate_wasm_runtime::RuntimeError,
    },
    #[error("balancer {name} ({module}): {reason}")]
    Link {
        name: String,
        module: String,
        reason: String,
    },
    #[error("balancer {name}: configure refused the configuration: {reason}")]
    Configure { name: String, reason: String },
    #[error("filter {name}: {reason}")]
    Filter { name: String, reason: String },
}

/// What a loaded component (a balancer or a component filter) runs, for logs and the admin
/// API.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    /// Its name in the configuration.
    pub name: String,
    /// The `.wasm` file it was read from.
    pub path: std::path::PathBuf,
    /// SHA-256 of the `.wasm`.
    pub sha256: String,
}

struct Def {
    name: Arc<str>,
    pre: bindings::LoadBalancerPre<State>,
    config: String,
    max_memory: usize,
    cpu_limit: Duration,
    gauges: WasmGauges,
}

/// Every balancer of a configuration, compiled and linked, and which cluster uses which.
pub struct Components {
    defs: Vec<Arc<Def>>,
    /// By cluster index: the index into `defs` of its balancer.
    clusters: Vec<Option<usize>>,
    engine: wasmtime::Engine,
    infos: Vec<ComponentInfo>,
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Components")
            .field("balancers", &self.infos)
            .finish()
    }
}

/// A balancer store's state: its limits and name.
struct State {
    guard: Guard,
    name: Arc<str>,
}

impl Guarded for State {
    fn guard(&self) -> &Guard {
        &self.guard
    }
    fn guard_mut(&mut self) -> &mut Guard {
        &mut self.guard
    }
}

impl log::Host for State {
    fn write(&mut self, level: log::Level, message: String) {
        let name = &*self.name;
        match level {
            log::Level::Trace => tracing::trace!(target: "balancer", balancer = name, "{message}"),
            log::Level::Debug => tracing::debug!(target: "balancer", balancer = name, "{message}"),
            log::Level::Info => tracing::info!(target: "balancer", balancer = name, "{message}"),
            log::Level::Warn => tracing::warn!(target: "balancer", balancer = name, "{message}"),
            log::Level::Error => tracing::error!(target: "balancer", balancer = name, "{message}"),
        }
    }
}

impl Components {
    /// Compiles and links every balancer of `config` (paths relative to `base_dir`) and
    /// configures one canary instance of each. Instances count themselves in `gauges`.
    pub fn load(
        config: &Config,
        base_dir: &Path,
        runtime: &Runtime,
        gauges: &WasmGauges,
    ) -> Result<Self, ComponentError> {
        let engine = runtime.engine().clone();
        let mut linker: Linker<State> = Linker::new(&engine);
        let link_error = |name: &str, module: &str, e: wasmtime::Error| ComponentError::Link {
            name: name.to_owned(),
            module: module.to_owned(),
            reason: format!("{e:#}"),
        };
        log::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| link_error("", "", e))?;
        let mut defs = Vec::with_capacity(config.balancers.len());
        let mut infos = Vec::with_capacity(config.balancers.len());
        for b in &config.balancers {
            let path = base_dir.join(&b.module);
            let loaded = runtime
                .load_component(&path)
                .map_err(|source| ComponentError::Load {
                    name: b.name.clone(),
                    source,
                })?;
            let (component, sha256) = (loaded.component, loaded.sha256);
            // The rest of WASI (stdio, files, environment) traps if called; any other missing
            // import is named here rather than at a pick.
            let imports: Vec<String> = component
                .component_type()
                .imports(&engine)
                .map(|(name, _)| name.to_owned())
                .collect();
            let foreign: Vec<&String> = imports
                .iter()
                .filter(|n| !n.starts_with("wasi:") && !n.starts_with("rustygate:gateway/log@"))
                .collect();
            if !foreign.is_empty() {
                return Err(ComponentError::Link {
                    name: b.name.clone(),
                    module: b.module.clone(),
                    reason: format!(
                        "imports what the host does not provide: {}",
                        foreign
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            let mut linker = linker.clone();
            wasi::add(&mut linker, &imports).map_err(|e| link_error(&b.name, &b.module, e))?;
            linker
                .define_unknown_imports_as_traps(&component)
                .map_err(|e| link_error(&b.name, &b.module, e))?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(|e| link_error(&b.name, &b.module, e))?;
            let pre = bindings::LoadBalancerPre::new(pre)
                .map_err(|e| link_error(&b.name, &b.module, e))?;
            let def = Arc::new(Def {
                name: b.name.as_str().into(),
                pre,
                config: b
                    .configuration
                    .as_ref()
                    .map_or_else(|| "null".to_owned(), |v| v.to_string()),
                max_memory: b.limits.max_memory_bytes,
                cpu_limit: b.limits.cpu_per_callback.get(),
                gauges: gauges.clone(),
            });
            Instance::start(&engine, &def).map_err(|e| match e {
                Started::Refused(reason) => ComponentError::Configure {
                    name: b.name.clone(),
                    reason,
                },
                Started::Failed(e) => link_error(&b.name, &b.module, e.into()),
            })?;
            infos.push(ComponentInfo {
                name: b.name.clone(),
                path,
                sha256,
            });
            defs.push(def);
        }
        let clusters = config
            .clusters
            .iter()
            .map(|c| {
                c.balancer
                    .as_ref()
                    .and_then(|n| config.balancers.iter().position(|b| &b.name == n))
            })
            .collect();
        Ok(Self {
            defs,
            clusters,
            engine,
            infos,
        })
    }

    /// The balancers loaded.
    pub fn infos(&self) -> &[ComponentInfo] {
        &self.infos
    }

    /// A new instance of cluster `cluster`'s balancer, for the calling worker.
    pub fn balancer(&self, cluster: usize) -> Result<Option<Box<dyn Balancer>>, String> {
        let Some(idx) = self.clusters.get(cluster).copied().flatten() else {
            return Ok(None);
        };
        let def = self.defs[idx].clone();
        let instance = Instance::start(&self.engine, &def).map_err(|e| match e {
            Started::Refused(r) => format!("balancer {}: configure failed: {r}", def.name),
            Started::Failed(e) => format!("balancer {}: {e}", def.name),
        })?;
        Ok(Some(Box::new(WasmBalancer {
            engine: self.engine.clone(),
            def,
            instance: Some(instance),
            endpoints: Vec::new(),
            retry_at: None,
            ahead: std::collections::VecDeque::new(),
        })))
    }
}

/// One instance of a balancer component.
struct Instance {
    store: Store<State>,
    exports: bindings::LoadBalancer,
    /// What the strategy reads, as `configure` answered.
    needs: wit::Needs,
}

enum Started {
    /// `configure` answered with an error.
    Refused(String),
    Failed(BalancerError),
}

impl Instance {
    /// Instantiates `def` and runs `configure`.
    fn start(engine: &wasmtime::Engine, def: &Def) -> Result<Self, Started> {
        let mut store = guard::store(
            engine,
            State {
                guard: Guard::new(def.max_memory, def.cpu_limit, &def.gauges),
                name: def.name.clone(),
            },
            def.cpu_limit.max(INSTANTIATE_CPU),
        );
        let exports = def
            .pre
            .instantiate(&mut store)
            .map_err(|e| Started::Failed(classify(&store, e)))?;
        let mut instance = Instance {
            store,
            exports,
            needs: wit::Needs::all(),
        };
        let config = def.config.clone();
        match instance.call(INSTANTIATE_CPU, |b, s| {
            b.rustygate_gateway_balancer().call_configure(s, &config)
        }) {
            Ok(Ok(needs)) => {
                instance.needs = needs;
                Ok(instance)
            }
            Ok(Err(reason)) => Err(Started::Refused(reason)),
            Err(e) => Err(Started::Failed(e)),
        }
    }

    /// Runs one export under `cpu` of CPU, classifying failures.
    fn call<R>(
        &mut self,
        cpu: Duration,
        f: impl FnOnce(&bindings::LoadBalancer, &mut Store<State>) -> wasmtime::Result<R>,
    ) -> Result<R, BalancerError> {
        guard::arm(&mut self.store, cpu);
        f(&self.exports, &mut self.store).map_err(|e| classify(&self.store, e))
    }
}

/// Instantiation and `configure` may build tables (a Maglev table, a hash ring), so they get
/// more CPU than a pick.
pub(crate) const INSTANTIATE_CPU: Duration = Duration::from_millis(200);

/// How many picks a strategy that needs nothing is asked for at once: one call then serves
/// this many requests.
const PICK_AHEAD: u32 = 32;

/// After a failure, the instance is rebuilt at most this often.
pub(crate) const REBUILD_EVERY: Duration = Duration::from_secs(1);

fn classify(store: &Store<State>, e: wasmtime::Error) -> BalancerError {
    let (reason, detail) = match guard::failure(store, e) {
        Failure::Memory => (
            "memory",
            "the balancer exceeded its memory limit".to_owned(),
        ),
        Failure::Deadline => (
            "cpu_deadline",
            "the balancer exceeded its CPU budget".to_owned(),
        ),
        Failure::Trap(detail) => ("trap", detail),
    };
    BalancerError { reason, detail }
}

/// A worker's balancer for one cluster.
struct WasmBalancer {
    engine: wasmtime::Engine,
    def: Arc<Def>,
    /// `None` after a failure, until rebuilt.
    instance: Option<Instance>,
    /// The set last offered, to offer it again to a rebuilt instance.
    endpoints: Vec<wit::Endpoint>,
    retry_at: Option<Instant>,
    /// Picks asked for in advance (strategies that need nothing), handed out in order.
    ahead: std::collections::VecDeque<u32>,
}

impl WasmBalancer {
    /// The live instance, rebuilding a failed one when it is time.
    fn instance(&mut self) -> Result<&mut Instance, BalancerError> {
        if self.instance.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return Err(BalancerError {
                    reason: "unavailable",
                    detail: "the instance failed and is rebuilt at most once a second".into(),
                });
            }
            self.retry_at = Some(Instant::now() + REBUILD_EVERY);
            let mut fresh = Instance::start(&self.engine, &self.def).map_err(|e| match e {
                Started::Refused(r) => BalancerError {
                    reason: "unavailable",
                    detail: format!("configure failed: {r}"),
                },
                Started::Failed(e) => e,
            })?;
            let endpoints = &self.endpoints;
            fresh.call(self.def.cpu_limit.max(INSTANTIATE_CPU), |b, s| {
                b.rustygate_gateway_balancer()
                    .call_set_endpoints(s, endpoints)
            })?;
            tracing::info!(target: "balancer", balancer = %self.def.name, "replaced a failed balancer instance");
            self.instance = Some(fresh);
        }
        Ok(self.instance.as_mut().expect("set above"))
    }

    /// Runs `f` on the instance; a failure drops the instance (it cannot be re-entered
    /// after a trap) and is logged.
    fn run<R>(
        &mut self,
        f: impl FnOnce(&bindings::LoadBalancer, &mut Store<State>) -> wasmtime::Result<R>,
    ) -> Result<R, BalancerError> {
        self.run_within(self.def.cpu_limit, f)
    }

    /// [`WasmBalancer::run`] with `cpu` of CPU for the call.
    fn run_within<R>(
        &mut self,
        cpu: Duration,
        f: impl FnOnce(&bindings::LoadBalancer, &mut Store<State>) -> wasmtime::Result<R>,
    ) -> Result<R, BalancerError> {
        let result = self.instance()?.call(cpu, f);
        if let Err(e) = &result {
            tracing::error!(target: "balancer", balancer = %self.def.name, reason = e.reason, error = %e.detail, "balancer failed; the cluster uses round-robin until it is replaced");
            self.instance = None;
            self.ahead.clear();
            self.retry_at = Some(Instant::now() + REBUILD_EVERY);
        }
        result
    }

    /// What the live instance reads (everything while there is none).
    fn needs(&self) -> wit::Needs {
        self.instance
            .as_ref()
            .map_or(wit::Needs::all(), |i| i.needs)
    }
}

/// Only what the strategy reads: the rest stays empty, unallocated.
fn request_info(request: &PickRequest<'_>, needs: wit::Needs) -> wit::RequestInfo {
    let take = |flag, value: &str| {
        if needs.contains(flag) {
            value.to_owned()
        } else {
            String::new()
        }
    };
    wit::RequestInfo {
        method: take(wit::Needs::METHOD, request.method),
        path: take(wit::Needs::PATH, request.path),
        host: request
            .host
            .filter(|_| needs.contains(wit::Needs::HOST))
            .map(str::to_owned),
        hash_key: request
            .hash_key
            .filter(|_| needs.contains(wit::Needs::HASH_KEY))
            .map(str::to_owned),
    }
}

impl Balancer for WasmBalancer {
    fn set_endpoints(&mut self, endpoints: &[BalancerEndpoint]) -> Result<(), BalancerError> {
        self.endpoints = endpoints
            .iter()
            .map(|e| wit::Endpoint {
                id: e.id,
                address: e.address.to_string(),
                weight: e.weight,
                healthy: e.healthy,
                zone: e.zone.clone(),
                metadata: e.metadata.clone(),
            })
            .collect();
        let endpoints = std::mem::take(&mut self.endpoints);
        // Picks made for the old set must not be handed out for the new one.
        self.ahead.clear();
        // Rebuilding a table or a ring happens only when the set changes, off the per-request
        // budget: it gets what `configure` gets.
        let cpu = self.def.cpu_limit.max(INSTANTIATE_CPU);
        let result = self.run_within(cpu, |b, s| {
            b.rustygate_gateway_balancer()
                .call_set_endpoints(s, &endpoints)
        });
        self.endpoints = endpoints;
        result
    }

    fn pick(&mut self, request: &PickRequest<'_>) -> Result<Option<u32>, BalancerError> {
        if let Some(id) = self.ahead.pop_front() {
            return Ok(Some(id));
        }
        // A failed instance is rebuilt (or reported unavailable) before its needs are read.
        self.instance()?;
        let needs = self.needs();
        if needs == wit::Needs::empty() {
            let batch = self.run(|b, s| {
                b.rustygate_gateway_balancer()
                    .call_pick_ahead(s, PICK_AHEAD)
            })?;
            self.ahead.extend(batch);
            return Ok(self.ahead.pop_front());
        }
        let info = request_info(request, needs);
        self.run(|b, s| b.rustygate_gateway_balancer().call_pick(s, &info))
    }

    fn report(&mut self, id: u32, outcome: PickOutcome) {
        if !self.needs().contains(wit::Needs::OUTCOMES) {
            return;
        }
        let outcome = match outcome {
            PickOutcome::Response { status, latency } => {
                wit::Outcome::Response(wit::ResponseInfo {
                    status,
                    latency_us: latency.as_micros().min(u64::MAX as u128) as u64,
                })
            }
            PickOutcome::ConnectFailure => wit::Outcome::ConnectFailure,
            PickOutcome::Timeout => wit::Outcome::Timeout,
            PickOutcome::Reset => wit::Outcome::Reset,
        };
        // A failed report is logged by `run`; the next pick falls back on its own.
        let _ = self.run(|b, s| b.rustygate_gateway_balancer().call_report(s, id, outcome));
    }
}
