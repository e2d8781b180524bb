//! RustyGate's proxy-wasm host: runs filters built for Envoy with any proxy-wasm SDK.
//!
//! [`ProxyWasm::load`] compiles every configured module once (cached on disk by content hash),
//! checks that it speaks a known ABI and imports nothing the host lacks, and validates every
//! plugin configuration on a throw-away canary VM, so a bad filter stops start-up with a clear
//! error instead of failing requests later. [`ProxyWasm`] is then a
//! [`ChainBuilder`]: each worker builds its own VMs from it
//! (see docs/architecture.md, "one VM per (module, vm_id, vm_configuration) per worker").

mod abi;
mod env;
mod filter;
mod foreign;
mod maps;
mod memory;
mod metric_names;
mod pairs;
mod properties;
mod proto;
mod schema;
mod shared;
mod state;
mod vm;
mod wasi;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use rustygate_config::{Config, FailurePolicy as ConfigPolicy};
use rustygate_filter_api::{ChainBuilder, FailurePolicy, FilterFactory, Upstreams};
use rustygate_wasm_runtime::wasmtime::{InstancePre, Linker};
use rustygate_wasm_runtime::{LoadedModule, Runtime, RuntimeError};

pub use abi::AbiVersion;
pub use shared::{ModuleStats, Shared};

use filter::{Factory, VmSlot};
use state::HostState;
use vm::{Vm, VmSpec};

/// Why the configured filters cannot run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The `.wasm` could not be read or compiled.
    #[error("filter {filter}: {source}")]
    Module {
        /// Filter name.
        filter: String,
        /// Cause.
        #[source]
        source: RuntimeError,
    },
    /// The module is not a usable proxy-wasm filter.
    #[error("filter {filter}: {path}: {reason}")]
    Invalid {
        /// Filter name.
        filter: String,
        /// Module path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The filter refused its configuration or failed to start.
    #[error("{0}")]
    Start(String),
}

struct FilterDef {
    name: Rc<str>,
    pre: InstancePre<HostState>,
    module: LoadedModule,
    abi: AbiVersion,
    root_id: Rc<str>,
    vm_id: Rc<str>,
    vm_config: Bytes,
    config: Bytes,
    policy: FailurePolicy,
    max_memory: usize,
    cpu_limit: std::time::Duration,
}

/// Plain data that can cross to worker threads; `Rc`s are made per worker.
struct FilterTemplate {
    name: String,
    path: PathBuf,
    pre: InstancePre<HostState>,
    module: LoadedModule,
    abi: AbiVersion,
    root_id: String,
    vm_id: String,
    vm_config: Bytes,
    config: Bytes,
    policy: FailurePolicy,
    max_memory: usize,
    cpu_limit: std::time::Duration,
}

/// A loaded module, for the admin API and logs.
#[derive(Debug, Clone)]
pub struct ModuleInfo {
    /// Filter name.
    pub filter: String,
    /// The `.wasm` file it was read from.
    pub path: PathBuf,
    /// SHA-256 of the `.wasm`.
    pub sha256: String,
    /// ABI version.
    pub abi: AbiVersion,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
}

/// The configured proxy-wasm filters, ready to be instantiated on workers.
pub struct ProxyWasm {
    templates: Vec<FilterTemplate>,
    /// Per route: (filter index, configuration override).
    routes: Vec<Vec<(usize, Option<Bytes>)>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ProxyWasm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyWasm")
            .field("filters", &self.templates.len())
            .finish()
    }
}

/// Plugin and VM configuration bytes: a YAML string is passed as is, anything else as JSON.
pub fn config_bytes(v: Option<&serde_json::Value>) -> Bytes {
    match v {
        None | Some(serde_json::Value::Null) => Bytes::new(),
        Some(serde_json::Value::String(s)) => Bytes::from(s.clone()),
        Some(other) => Bytes::from(other.to_string()),
    }
}

/// How many instance slots the pooling allocator gets for `config` with `workers` workers.
/// One load needs at most one VM per filter per worker, twice over (a failed VM's replacement
/// is built before the old one is dropped), plus the canary VMs. Reloads need room for two
/// generations at once and for old ones that long requests keep alive, and may add filters,
/// so the pool is four times that and never under [`MIN_VM_SLOTS`]. A slot costs address
/// space, not memory, until a VM uses it.
pub fn vm_slots(config: &Config, workers: usize) -> u32 {
    // Balancer components take a few core instances each (their shims), like a filter VM.
    let filters = config.filters.len() + config.balancers.len() * 4;
    u32::try_from((workers * 2 + 1) * filters * 4)
        .unwrap_or(u32::MAX)
        .max(MIN_VM_SLOTS)
}

/// The smallest instance pool, so that reloads can add filters to a small configuration.
pub const MIN_VM_SLOTS: u32 = 256;

fn linker(runtime: &Runtime) -> Result<Linker<HostState>, String> {
    let mut l = Linker::new(runtime.engine());
    env::register(&mut l).map_err(|e| format!("{e:#}"))?;
    wasi::register(&mut l).map_err(|e| format!("{e:#}"))?;
    Ok(l)
}

impl ProxyWasm {
    /// Loads every filter in `config`. Module paths are relative to `base_dir` (the config
    /// file's directory). Each filter is started once on a canary VM to validate it. `shared`
    /// is the process's shared data, queues and filter metrics: a reload passes the same one.
    pub fn load(
        config: &Config,
        base_dir: &Path,
        runtime: &Runtime,
        shared: Arc<Shared>,
    ) -> Result<Self, LoadError> {
        Self::load_except(config, base_dir, runtime, shared, &[])
    }

    /// [`ProxyWasm::load`] for every filter but those named in `others` (filters another
    /// engine runs). The chains [`ChainBuilder::build`] returns then hold only this engine's
    /// filters, in their chain order.
    pub fn load_except(
        config: &Config,
        base_dir: &Path,
        runtime: &Runtime,
        shared: Arc<Shared>,
        others: &[String],
    ) -> Result<Self, LoadError> {
        let linker = linker(runtime).map_err(LoadError::Start)?;
        let mut templates = Vec::new();
        for f in config.filters.iter().filter(|f| !others.contains(&f.name)) {
            let path: PathBuf = base_dir.join(&f.module);
            let module = runtime
                .load_file(&path)
                .map_err(|source| LoadError::Module {
                    filter: f.name.clone(),
                    source,
                })?;
            let invalid = |reason: String| LoadError::Invalid {
                filter: f.name.clone(),
                path: path.display().to_string(),
                reason,
            };
            let abi = AbiVersion::detect(module.module.exports().map(|e| e.name())).ok_or_else(|| {
                invalid("not a proxy-wasm module: it exports no proxy_abi_version_* marker (0.1.0, 0.2.0 or 0.2.1)".into())
            })?;
            // A published configuration schema is checked against every configuration of the
            // filter (its own and the routes' overrides), so the field is named at load.
            let bytes = std::fs::read(&path).map_err(|e| invalid(e.to_string()))?;
            if let Some(section) = schema::custom_section(&bytes, schema::SECTION) {
                let checker = schema::ConfigSchema::parse(section).map_err(&invalid)?;
                let own = std::iter::once((None, f.configuration.as_ref()));
                let overrides = config.routes.iter().enumerate().flat_map(|(i, r)| {
                    r.filters.iter().filter_map(move |rf| match rf {
                        rustygate_config::RouteFilter::WithConfig {
                            name,
                            configuration,
                        } if *name == f.name => Some((
                            Some(r.name.clone().unwrap_or_else(|| format!("routes[{i}]"))),
                            Some(configuration),
                        )),
                        _ => None,
                    })
                });
                for (route, value) in own.chain(overrides) {
                    if let Err(errors) = checker.check(&config_bytes(value)) {
                        let place = route.map_or(String::from("configuration"), |r| {
                            format!("configuration on route {r}")
                        });
                        return Err(invalid(format!(
                            "{place} does not match the filter's schema: {}",
                            errors.join("; ")
                        )));
                    }
                }
            }
            // Imports the host does not provide are refused here, by name ("unknown import:
            // `env::x` has not been defined"), never at the first request.
            let pre = linker
                .instantiate_pre(&module.module)
                .map_err(|e| invalid(format!("{e:#}")))?;
            templates.push(FilterTemplate {
                name: f.name.clone(),
                path: path.clone(),
                pre,
                module,
                abi,
                root_id: f.root_id.clone(),
                vm_id: f.vm_id.clone(),
                vm_config: config_bytes(f.vm_configuration.as_ref()),
                config: config_bytes(f.configuration.as_ref()),
                policy: match f.failure_policy {
                    ConfigPolicy::FailClosed => FailurePolicy::FailClosed,
                    ConfigPolicy::FailOpen => FailurePolicy::FailOpen,
                },
                max_memory: f.limits.max_memory_bytes,
                cpu_limit: f.limits.cpu_per_callback.get(),
            });
        }
        let routes = config
            .routes
            .iter()
            .map(|r| {
                r.filters
                    .iter()
                    .filter(|rf| !others.iter().any(|o| o == rf.name()))
                    .map(|rf| {
                        let idx = templates
                            .iter()
                            .position(|t: &FilterTemplate| t.name == rf.name())
                            .expect("validated");
                        let over = match rf {
                            rustygate_config::RouteFilter::WithConfig { configuration, .. } => {
                                Some(config_bytes(Some(configuration)))
                            }
                            rustygate_config::RouteFilter::Name(_) => None,
                        };
                        (idx, over)
                    })
                    .collect()
            })
            .collect();
        let me = ProxyWasm {
            templates,
            routes,
            shared,
        };
        // The canary: every plugin (including per-route overrides) starts on a throw-away VM.
        // Calls it makes while configuring are accepted (the cluster must exist) but not sent.
        let canary = Rc::new(Canary(
            config.clusters.iter().map(|c| c.name.clone()).collect(),
        ));
        me.build_chains(canary).map_err(LoadError::Start)?;
        Ok(me)
    }

    /// What was loaded.
    pub fn modules(&self) -> Vec<ModuleInfo> {
        self.templates
            .iter()
            .map(|t| ModuleInfo {
                filter: t.name.clone(),
                path: t.path.clone(),
                sha256: t.module.sha256.clone(),
                abi: t.abi,
                from_cache: t.module.from_cache,
            })
            .collect()
    }

    fn build_chains(
        &self,
        upstreams: Rc<dyn Upstreams>,
    ) -> Result<Vec<Vec<Rc<dyn FilterFactory>>>, String> {
        let defs: Vec<Rc<FilterDef>> = self
            .templates
            .iter()
            .map(|t| {
                Rc::new(FilterDef {
                    name: t.name.as_str().into(),
                    pre: t.pre.clone(),
                    module: t.module.clone(),
                    abi: t.abi,
                    root_id: t.root_id.as_str().into(),
                    vm_id: t.vm_id.as_str().into(),
                    vm_config: t.vm_config.clone(),
                    config: t.config.clone(),
                    policy: t.policy,
                    max_memory: t.max_memory,
                    cpu_limit: t.cpu_limit,
                })
            })
            .collect();
        // One VM per (module, vm_id, vm_configuration); plugins deduplicated by
        // (filter, configuration) so a route override is one more root context, not a VM.
        let mut slots: Vec<(String, Rc<str>, Bytes, Rc<VmSlot>)> = Vec::new();
        let mut factories: Vec<((usize, Bytes), Rc<Factory>)> = Vec::new();
        let mut chains = Vec::with_capacity(self.routes.len());
        for route in &self.routes {
            let mut chain: Vec<Rc<dyn FilterFactory>> = Vec::with_capacity(route.len());
            for (idx, over) in route {
                let def = &defs[*idx];
                let cfg = over.clone().unwrap_or_else(|| def.config.clone());
                if let Some((_, f)) = factories.iter().find(|((i, c), _)| i == idx && *c == cfg) {
                    chain.push(f.clone());
                    continue;
                }
                let key = (
                    def.module.sha256.clone(),
                    def.vm_id.clone(),
                    def.vm_config.clone(),
                );
                let slot = match slots
                    .iter()
                    .find(|(s, v, c, _)| (s, v, c) == (&key.0, &key.1, &key.2))
                {
                    Some((.., slot)) => slot.clone(),
                    None => {
                        let (mailbox, inbox) = tokio::sync::mpsc::unbounded_channel();
                        let spec = VmSpec {
                            pre: def.pre.clone(),
                            abi: def.abi,
                            vm_id: def.vm_id.clone(),
                            vm_config: def.vm_config.clone(),
                            max_memory: def.max_memory,
                            cpu_limit: def.cpu_limit,
                            shared: self.shared.clone(),
                            upstreams: upstreams.clone(),
                            mailbox,
                            stats: self.shared.module_stats(&def.module.sha256),
                        };
                        let vm = Vm::new(&spec).map_err(|e| format!("filter {}: {e}", def.name))?;
                        let slot = Rc::new(VmSlot::new(spec, vm));
                        slot.receive(inbox);
                        slots.push((key.0, key.1, key.2, slot.clone()));
                        slot
                    }
                };
                let plugin = slot.add_plugin(def.name.clone(), def.root_id.clone(), cfg.clone())?;
                let factory = Rc::new(Factory::new(slot, plugin, def.name.clone(), def.policy));
                factories.push(((*idx, cfg), factory.clone()));
                chain.push(factory);
            }
            chains.push(chain);
        }
        Ok(chains)
    }
}

impl ChainBuilder for ProxyWasm {
    fn build(
        &self,
        upstreams: Rc<dyn Upstreams>,
    ) -> Result<Vec<Vec<Rc<dyn FilterFactory>>>, String> {
        self.build_chains(upstreams)
    }
}

/// The canary VM's view of the clusters: names only; nothing is sent.
struct Canary(Vec<String>);

impl Upstreams for Canary {
    fn has_cluster(&self, cluster: &str) -> bool {
        self.0.iter().any(|c| c == cluster)
    }

    fn call(
        &self,
        _cluster: &str,
        _request: http::Request<Bytes>,
        _timeout: Option<std::time::Duration>,
    ) -> rustygate_filter_api::LocalFuture<'static, Result<http::Response<Bytes>, String>> {
        Box::pin(async { Err("not sent while validating the configuration".to_owned()) })
    }

    fn spawn(&self, _task: rustygate_filter_api::LocalFuture<'static, ()>) {}
}
