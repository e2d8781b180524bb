//! Turning a configuration file into something the gateway can run: parse and validate the
//! YAML, compile the routing snapshot, compile and check every filter module and start each
//! plugin on a canary VM. The same steps run at start-up, for `rustygate validate`, and for
//! every reload, so a file that `validate` accepts is one a reload accepts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustygate_components::{ComponentFilters, Components, FilterServices};
use rustygate_config::Config;
use rustygate_filter_api::ChainBuilder;
use rustygate_proxy::Snapshot;
use rustygate_proxy_wasm::{ModuleInfo, ProxyWasm, Shared};
use rustygate_telemetry::{Metrics, WasmGauges};
use rustygate_wasm_runtime::{Runtime, RuntimeConfig};

use crate::ReloadError;

/// The WebAssembly side of the process: one engine (created when the first filter appears)
/// and the shared data every VM of every generation sees.
#[derive(Clone)]
pub struct Wasm {
    runtime: Option<Arc<Runtime>>,
    shared: Arc<Shared>,
    /// What component filters share: their key-value store, and the rate limiter (the same
    /// one proxy-wasm filters reach).
    services: FilterServices,
    /// Where component instances count themselves (proxy-wasm VMs do through `shared`).
    gauges: WasmGauges,
}

impl std::fmt::Debug for Wasm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wasm")
            .field("engine", &self.runtime.is_some())
            .finish()
    }
}

impl Wasm {
    /// No engine yet; filter metrics are recorded into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        let gauges = metrics.wasm_gauges();
        let shared = Shared::new(metrics);
        Self {
            runtime: None,
            gauges,
            services: FilterServices {
                kv: Arc::default(),
                rate_limiter: shared.rate_limiter(),
            },
            shared,
        }
    }

    /// Like [`Wasm::new`], with the engine given rather than made on first use (tests pass
    /// one with their own module cache and pool size).
    pub fn with_runtime(metrics: Metrics, runtime: Arc<Runtime>) -> Self {
        Self {
            runtime: Some(runtime),
            ..Self::new(metrics)
        }
    }

    /// Shared data, queues and per-module counts.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn runtime(&self) -> Option<&Arc<Runtime>> {
        self.runtime.as_ref()
    }

    /// The engine, created for `config` on first use. Its instance pool and memory ceiling
    /// are fixed then (`vm_slots` leaves room for reloads); a later configuration that needs
    /// more is refused with wasmtime's reason and takes a restart.
    fn runtime_for(&mut self, config: &Config) -> Result<Arc<Runtime>, ReloadError> {
        if let Some(r) = &self.runtime {
            return Ok(r.clone());
        }
        let workers = config
            .workers
            .unwrap_or_else(rustygate_proxy::default_workers);
        let runtime = Runtime::new(&RuntimeConfig {
            pool_slots: rustygate_proxy_wasm::vm_slots(config, workers),
            max_memory_bytes: config
                .filters
                .iter()
                .map(|f| f.limits.max_memory_bytes)
                .max()
                .unwrap_or(0)
                .max(MIN_POOL_MEMORY),
            ..RuntimeConfig::default()
        })
        .map_err(|e| ReloadError::Filters(e.to_string()))?;
        let runtime = Arc::new(runtime);
        self.runtime = Some(runtime.clone());
        Ok(runtime)
    }
}

/// Every pool slot may grow to this much linear memory (per-filter limits are lower), so a
/// reload may raise a filter's `max_memory_bytes` up to it without a restart.
const MIN_POOL_MEMORY: usize = 256 << 20;

/// A configuration ready to apply.
pub struct Loaded {
    /// The parsed, validated configuration.
    pub config: Config,
    /// Its filters, compiled and checked; `None` when it has none.
    pub filters: Option<Arc<ProxyWasm>>,
    /// Its balancer components, compiled, linked and configured once; `None` when it has none.
    pub components: Option<Arc<Components>>,
    /// Its component filters; `None` when it has none.
    pub component_filters: Option<Arc<ComponentFilters>>,
    /// Per route, per filter in its chain: whether it is a component filter.
    pub route_kinds: Arc<Vec<Vec<bool>>>,
    /// What each proxy-wasm filter runs.
    pub modules: Vec<ModuleInfo>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("modules", &self.modules)
            .finish_non_exhaustive()
    }
}

impl Loaded {
    /// What each worker builds its filter chains and balancer instances from.
    pub fn chains(&self) -> Option<Arc<dyn ChainBuilder>> {
        if self.filters.is_none() && self.components.is_none() && self.component_filters.is_none() {
            return None;
        }
        Some(Arc::new(Extensions {
            filters: self.filters.clone(),
            components: self.components.clone(),
            component_filters: self.component_filters.clone(),
            route_kinds: self.route_kinds.clone(),
        }))
    }
}

/// Proxy-wasm filters and components together, as the proxy's one [`ChainBuilder`].
#[derive(Debug)]
pub struct Extensions {
    pub filters: Option<Arc<ProxyWasm>>,
    pub components: Option<Arc<Components>>,
    pub component_filters: Option<Arc<ComponentFilters>>,
    /// Per route, per filter in its chain: whether it is a component filter.
    pub route_kinds: Arc<Vec<Vec<bool>>>,
}

impl ChainBuilder for Extensions {
    /// Each engine builds its own filters' factories in chain order; the chains interleave
    /// them as the route lists them, so proxy-wasm and component filters mix freely.
    fn build(
        &self,
        upstreams: std::rc::Rc<dyn rustygate_filter_api::Upstreams>,
    ) -> Result<Vec<Vec<std::rc::Rc<dyn rustygate_filter_api::FilterFactory>>>, String> {
        let components = match &self.component_filters {
            Some(c) => c.build(upstreams.clone()),
            None => Vec::new(),
        };
        let wasm = match &self.filters {
            Some(f) => f.build(upstreams)?,
            None => Vec::new(),
        };
        let mut wasm = wasm.into_iter();
        let mut components = components.into_iter();
        let mut chains = Vec::with_capacity(self.route_kinds.len());
        for kinds in self.route_kinds.iter() {
            let mut from_wasm = wasm.next().unwrap_or_default().into_iter();
            let mut from_components = components.next().unwrap_or_default().into_iter();
            let chain = kinds
                .iter()
                .map(|&component| {
                    if component {
                        from_components.next()
                    } else {
                        from_wasm.next()
                    }
                    .ok_or_else(|| "a filter chain lost a filter while being built".to_owned())
                })
                .collect::<Result<Vec<_>, _>>()?;
            chains.push(chain);
        }
        Ok(chains)
    }

    fn balancer(
        &self,
        cluster: usize,
    ) -> Result<Option<Box<dyn rustygate_filter_api::Balancer>>, String> {
        match &self.components {
            Some(c) => c.balancer(cluster),
            None => Ok(None),
        }
    }
}

/// Reads and checks `path` and its filters. Blocking: it compiles modules.
pub fn load(path: &Path, wasm: &mut Wasm) -> Result<Loaded, ReloadError> {
    let mut config =
        rustygate_config::load_file(path).map_err(|e| ReloadError::Config(e.to_string()))?;
    // Before the snapshot check, which reads the clusters' CA files.
    resolve_paths(&mut config, &base_dir(path));
    rustygate_telemetry::check_level(&config.logging)
        .map_err(|e| ReloadError::Config(format!("{}: {e}", path.display())))?;
    Snapshot::check(&config)
        .map_err(|e| ReloadError::Config(format!("{}: {e}", path.display())))?;
    load_parsed(config, &base_dir(path), wasm).map_err(|e| match e {
        ReloadError::Tls(m) => ReloadError::Tls(format!("{}: {m}", path.display())),
        e => e,
    })
}

/// [`load`] for a configuration already parsed; module paths are relative to `base`.
pub fn load_parsed(
    mut config: Config,
    base: &Path,
    wasm: &mut Wasm,
) -> Result<Loaded, ReloadError> {
    let base = base.to_path_buf();
    resolve_paths(&mut config, &base);
    listener_certificates(&config)?;
    rustygate_telemetry::trace::check_tls(&config.tracing)
        .map_err(|e| ReloadError::Tls(format!("tracing.tls: {e}")))?;
    // A filter whose `.wasm` is a component runs on the component host; the rest are
    // proxy-wasm modules.
    let component_names: Vec<String> = config
        .filters
        .iter()
        .filter(|f| rustygate_components::is_component_filter(f, &base))
        .map(|f| f.name.clone())
        .collect();
    let route_kinds = Arc::new(
        config
            .routes
            .iter()
            .map(|r| {
                r.filters
                    .iter()
                    .map(|rf| component_names.iter().any(|n| n == rf.name()))
                    .collect()
            })
            .collect(),
    );
    if config.filters.is_empty() && config.balancers.is_empty() {
        return Ok(Loaded {
            config,
            filters: None,
            components: None,
            component_filters: None,
            route_kinds,
            modules: Vec::new(),
        });
    }
    let runtime = wasm.runtime_for(&config)?;
    // Before the VMs start: filters define most metrics in their start-up callbacks.
    wasm.shared.set_metric_tags(&config.metrics.filter_tags);
    let (filters, modules) = if config.filters.len() == component_names.len() {
        (None, Vec::new())
    } else {
        let host = ProxyWasm::load_except(
            &config,
            &base,
            &runtime,
            wasm.shared.clone(),
            &component_names,
        )
        .map_err(|e| ReloadError::Filters(e.to_string()))?;
        let modules = host.modules();
        (Some(Arc::new(host)), modules)
    };
    let component_filters = if component_names.is_empty() {
        None
    } else {
        let c = ComponentFilters::load(
            &config,
            &base,
            &runtime,
            wasm.services.clone(),
            &component_names,
            &wasm.gauges,
        )
        .map_err(|e| ReloadError::Filters(e.to_string()))?;
        Some(Arc::new(c))
    };
    let components = if config.balancers.is_empty() {
        None
    } else {
        let c = Components::load(&config, &base, &runtime, &wasm.gauges)
            .map_err(|e| ReloadError::Filters(e.to_string()))?;
        for b in c.infos() {
            tracing::info!(balancer = %b.name, sha256 = %b.sha256, "balancer loaded");
        }
        Some(Arc::new(c))
    };
    Ok(Loaded {
        config,
        filters,
        components,
        component_filters,
        route_kinds,
        modules,
    })
}

/// Makes the certificate paths of listeners, clusters and the trace collector absolute: relative ones are relative
/// to `base`, the configuration file's directory. Absolute ones stay as they are, so this can
/// run more than once.
fn resolve_paths(config: &mut Config, base: &Path) {
    let absolute = |path: &mut String| *path = base.join(&*path).to_string_lossy().into_owned();
    for l in &mut config.listeners {
        if let Some(tls) = &mut l.tls {
            absolute(&mut tls.certificate_chain);
            absolute(&mut tls.private_key);
            if let Some(ca) = &mut tls.client_ca_certificates {
                absolute(ca);
            }
            for sni in &mut tls.sni {
                absolute(&mut sni.certificate_chain);
                absolute(&mut sni.private_key);
            }
        }
    }
    for c in &mut config.clusters {
        if let Some(tls) = &mut c.tls {
            for path in [
                &mut tls.ca_certificates,
                &mut tls.certificate_chain,
                &mut tls.private_key,
            ]
            .into_iter()
            .flatten()
            {
                absolute(path);
            }
        }
    }
    if let Some(ca) = config
        .tracing
        .tls
        .as_mut()
        .and_then(|t| t.ca_certificates.as_mut())
    {
        absolute(ca);
    }
}

/// Loads each listener's certificate and key once, so that `validate` and a reload catch a bad
/// file before a start or a restart would.
fn listener_certificates(config: &Config) -> Result<(), ReloadError> {
    for (i, l) in config.listeners.iter().enumerate() {
        let Some(tls) = &l.tls else { continue };
        rustygate_proxy::tls::server_config(tls).map_err(|e| {
            ReloadError::Tls(format!("listeners[{i}].tls (listener {}): {e}", l.name))
        })?;
    }
    Ok(())
}

/// Module paths in the configuration are relative to its directory.
pub(crate) fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}
