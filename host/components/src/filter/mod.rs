//! Component filters: the `http-filter` world of `wit/gateway`, driven through the proxy's
//! engine-neutral filter contract, so a route's chain may mix them with proxy-wasm filters.
//!
//! Each (filter, configuration) is compiled and linked once and configured on a canary at
//! load; each worker then has one instance of it, and every request gets its own guest
//! `http-context` resource in that instance. The request and response reach the guest as borrowed
//! host resources that resolve to the request's [`Exchange`] for the duration of one call:
//! nothing is copied unless the guest asks for it.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustygate_config::{Config, FailurePolicy as ConfigPolicy, RouteFilter};
use rustygate_filter_api::services::{KvStore, RateLimiter};
use rustygate_filter_api::{Exchange, FailurePolicy, FilterError, FilterFactory, Upstreams};
use rustygate_telemetry::WasmGauges;
use rustygate_wasm_runtime::Runtime;
use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker};

use crate::guard::{self, Failure, Guard, Guarded};
use crate::{ComponentError, INSTANTIATE_CPU};

mod bindings {
    wasmtime::component::bindgen!({
        world: "http-filter",
        path: "../../wit/gateway",
    });
}

use bindings::rustygate::gateway::http as gw;

mod host;
mod stream;

use stream::Factory;

/// The services every component filter reaches, shared across workers and reloads.
#[derive(Debug, Clone, Default)]
pub struct FilterServices {
    pub kv: Arc<KvStore>,
    pub rate_limiter: Arc<RateLimiter>,
}

/// One filter with one configuration (a route's override makes another).
struct Def {
    name: Arc<str>,
    pre: bindings::HttpFilterPre<State>,
    config: String,
    phases: gw::Phases,
    policy: FailurePolicy,
    max_memory: usize,
    cpu_limit: Duration,
    services: FilterServices,
    gauges: WasmGauges,
}

/// Every component filter of a configuration, compiled, linked and configured.
pub struct ComponentFilters {
    defs: Vec<Arc<Def>>,
    /// Per route, per component filter in its chain (in chain order): the index into `defs`.
    routes: Vec<Vec<usize>>,
    engine: wasmtime::Engine,
    infos: Vec<crate::ComponentInfo>,
}

impl std::fmt::Debug for ComponentFilters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentFilters")
            .field("plugins", &self.defs.len())
            .finish()
    }
}

/// Whether the filter declared as `filter` in `config` is a component (its `.wasm` is a
/// component binary) rather than a proxy-wasm module.
pub fn is_component_filter(filter: &rustygate_config::Filter, base_dir: &Path) -> bool {
    rustygate_wasm_runtime::is_component(&base_dir.join(&filter.module)).unwrap_or(false)
}

impl ComponentFilters {
    /// Compiles and links the filters of `config` named in `names` (the component ones), and
    /// configures one canary instance per (filter, configuration) the routes use. Instances
    /// count themselves in `gauges`.
    pub fn load(
        config: &Config,
        base_dir: &Path,
        runtime: &Runtime,
        services: FilterServices,
        names: &[String],
        gauges: &WasmGauges,
    ) -> Result<Self, ComponentError> {
        let engine = runtime.engine().clone();
        let mut linker: Linker<State> = Linker::new(&engine);
        let fail = |name: &str, reason: String| ComponentError::Filter {
            name: name.to_owned(),
            reason,
        };
        bindings::HttpFilter::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| fail("", format!("{e:#}")))?;
        // Compiled and linked once per filter; configured once per configuration.
        let mut linked: Vec<(String, bindings::HttpFilterPre<State>)> = Vec::new();
        let mut infos = Vec::new();
        for f in config.filters.iter().filter(|f| names.contains(&f.name)) {
            if !f.root_id.is_empty() || !f.vm_id.is_empty() || f.vm_configuration.is_some() {
                return Err(fail(
                    &f.name,
                    "root_id, vm_id and vm_configuration are proxy-wasm settings; this module is a component filter".into(),
                ));
            }
            let path = base_dir.join(&f.module);
            let loaded = runtime
                .load_component(&path)
                .map_err(|e| fail(&f.name, e.to_string()))?;
            let (component, sha256, from_cache) =
                (loaded.component, loaded.sha256, loaded.from_cache);
            let imports: Vec<String> = component
                .component_type()
                .imports(&engine)
                .map(|(name, _)| name.to_owned())
                .collect();
            let foreign: Vec<&str> = imports
                .iter()
                .map(String::as_str)
                .filter(|n| {
                    !n.starts_with("wasi:")
                        && !["http", "log", "kv", "rate-limit"]
                            .iter()
                            .any(|i| n.starts_with(&format!("rustygate:gateway/{i}@")))
                })
                .collect();
            if !foreign.is_empty() {
                return Err(fail(
                    &f.name,
                    format!(
                        "{}: imports what the host does not provide: {}",
                        path.display(),
                        foreign.join(", ")
                    ),
                ));
            }
            let mut linker = linker.clone();
            crate::wasi::add(&mut linker, &imports).map_err(|e| fail(&f.name, format!("{e:#}")))?;
            linker
                .define_unknown_imports_as_traps(&component)
                .map_err(|e| fail(&f.name, format!("{e:#}")))?;
            let pre = linker
                .instantiate_pre(&component)
                .and_then(bindings::HttpFilterPre::new)
                .map_err(|e| {
                    fail(
                        &f.name,
                        format!("{}: not an http-filter component: {e:#}", path.display()),
                    )
                })?;
            tracing::info!(filter = %f.name, sha256 = %sha256, from_cache, "component filter loaded");
            linked.push((f.name.clone(), pre));
            infos.push(crate::ComponentInfo {
                name: f.name.clone(),
                path,
                sha256,
            });
        }
        let mut defs: Vec<Arc<Def>> = Vec::new();
        let mut routes = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let mut chain = Vec::new();
            for rf in &route.filters {
                let Some((_, pre)) = linked.iter().find(|(n, _)| n == rf.name()) else {
                    continue;
                };
                let f = config
                    .filters
                    .iter()
                    .find(|f| f.name == rf.name())
                    .expect("validated");
                let value = match rf {
                    RouteFilter::WithConfig { configuration, .. } => Some(configuration),
                    RouteFilter::Name(_) => f.configuration.as_ref(),
                };
                let text = value.map_or_else(|| "null".to_owned(), |v| v.to_string());
                if let Some(i) = defs
                    .iter()
                    .position(|d| *d.name == *f.name && d.config == text)
                {
                    chain.push(i);
                    continue;
                }
                let mut def = Def {
                    name: f.name.as_str().into(),
                    pre: pre.clone(),
                    config: text,
                    phases: gw::Phases::empty(),
                    policy: match f.failure_policy {
                        ConfigPolicy::FailClosed => FailurePolicy::FailClosed,
                        ConfigPolicy::FailOpen => FailurePolicy::FailOpen,
                    },
                    max_memory: f.limits.max_memory_bytes,
                    cpu_limit: f.limits.cpu_per_callback.get(),
                    services: services.clone(),
                    gauges: gauges.clone(),
                };
                // The canary: a configuration the filter refuses stops the load, by name.
                let canary = Instance::start(&engine, &def).map_err(|e| {
                    fail(
                        &f.name,
                        match e {
                            Started::Refused(r) => {
                                format!("the filter rejected its configuration: {r}")
                            }
                            Started::Failed(e) => format!("configure failed: {e}"),
                        },
                    )
                })?;
                def.phases = canary.phases;
                chain.push(defs.len());
                defs.push(Arc::new(def));
            }
            routes.push(chain);
        }
        Ok(Self {
            defs,
            routes,
            engine,
            infos,
        })
    }

    /// The component filters loaded.
    pub fn infos(&self) -> &[crate::ComponentInfo] {
        &self.infos
    }

    /// The calling worker's factories: per route, its component filters in chain order.
    /// `upstreams` carries the filters' outbound calls on this worker's pools.
    pub fn build(&self, upstreams: Rc<dyn Upstreams>) -> Vec<Vec<Rc<dyn FilterFactory>>> {
        let factories: Vec<Rc<dyn FilterFactory>> = self
            .defs
            .iter()
            .map(|d| {
                Rc::new(Factory::new(
                    self.engine.clone(),
                    d.clone(),
                    upstreams.clone(),
                )) as Rc<dyn FilterFactory>
            })
            .collect();
        self.routes
            .iter()
            .map(|chain| chain.iter().map(|&i| factories[i].clone()).collect())
            .collect()
    }
}

/// A store's state. `current` is the request of the call in progress: the borrowed handles a
/// call passes resolve to it, and it is cleared when the call returns.
struct State {
    guard: Guard,
    name: Arc<str>,
    services: FilterServices,
    current: Option<Rc<Exchange>>,
    /// Whether the request head may still change (request phases only).
    request_writable: bool,
}

impl Guarded for State {
    fn guard(&self) -> &Guard {
        &self.guard
    }
    fn guard_mut(&mut self) -> &mut Guard {
        &mut self.guard
    }
}

impl State {
    fn exchange(&self) -> &Exchange {
        // Handles exist only as borrows within a call, and every call sets `current`.
        self.current
            .as_deref()
            .expect("a handle used outside a call")
    }
}

/// One instance of a filter on one worker.
struct Instance {
    store: Store<State>,
    exports: bindings::HttpFilter,
    phases: gw::Phases,
}

enum Started {
    /// `configure` answered with an error.
    Refused(String),
    Failed(FilterError),
}

fn classify(store: &Store<State>, e: wasmtime::Error) -> FilterError {
    match guard::failure(store, e) {
        Failure::Memory => FilterError::Memory,
        Failure::Deadline => FilterError::Deadline,
        Failure::Trap(detail) => FilterError::Trap(detail),
    }
}

impl Instance {
    fn start(engine: &wasmtime::Engine, def: &Def) -> Result<Self, Started> {
        let mut store = guard::store(
            engine,
            State {
                guard: Guard::new(def.max_memory, def.cpu_limit, &def.gauges),
                name: def.name.clone(),
                services: def.services.clone(),
                current: None,
                request_writable: false,
            },
            INSTANTIATE_CPU,
        );
        let exports = def
            .pre
            .instantiate(&mut store)
            .map_err(|e| Started::Failed(classify(&store, e)))?;
        let mut instance = Instance {
            store,
            exports,
            phases: gw::Phases::empty(),
        };
        let config = def.config.clone();
        match instance.call(INSTANTIATE_CPU, None, false, |f, s| {
            f.rustygate_gateway_filter().call_configure(s, &config)
        }) {
            Ok(Ok(phases)) => {
                instance.phases = phases;
                Ok(instance)
            }
            Ok(Err(reason)) => Err(Started::Refused(reason)),
            Err(e) => Err(Started::Failed(e)),
        }
    }

    /// Runs one export under `cpu` of CPU with `exchange` as the current request.
    fn call<R>(
        &mut self,
        cpu: Duration,
        exchange: Option<&Rc<Exchange>>,
        request_writable: bool,
        f: impl FnOnce(&bindings::HttpFilter, &mut Store<State>) -> wasmtime::Result<R>,
    ) -> Result<R, FilterError> {
        let state = self.store.data_mut();
        state.current = exchange.cloned();
        state.request_writable = request_writable;
        guard::arm(&mut self.store, cpu);
        let result = f(&self.exports, &mut self.store).map_err(|e| classify(&self.store, e));
        self.store.data_mut().current = None;
        result
    }
}
