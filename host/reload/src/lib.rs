//! RustyGate's control plane: hot reload and the admin API's view of the running gateway.
//!
//! A reload, whoever triggers it (a file watcher, `SIGHUP`, `POST /admin/reload`), runs the
//! same steps as start-up ([`load()`]): parse and validate the file, compile the routing
//! snapshot, compile new or changed modules (unchanged ones are reused by content hash),
//! start every plugin on a canary VM. Only then are the workers handed the new generation
//! ([`rustygate_proxy::Reconfigure::apply`]), which they all build before any of them switches.
//! Any failure leaves the old generation serving and is logged and counted. Reloads are
//! serialised: one runs at a time.

mod load;
mod redact;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use http::StatusCode;
use rustygate_admin::{Answer, BoxFuture, Operations};
use rustygate_config::{Config, Listener};
use rustygate_proxy::Reconfigure;
use rustygate_telemetry::Metrics;
use serde_json::json;

pub use load::{Extensions, Loaded, Wasm, load, load_parsed};

/// Why a configuration was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is unreadable or invalid; the message names file, line and field.
    #[error("{0}")]
    Config(String),
    /// The file changes something that only a restart can change.
    #[error("{file}: {fields} changed; these take effect only on restart")]
    Restart {
        /// The configuration file.
        file: String,
        /// The top-level fields that differ.
        fields: String,
    },
    /// A filter module failed to compile, instantiate or configure.
    #[error("{0}")]
    Filters(String),
    /// A listener's certificate or key cannot be used; the message names the listener and file.
    #[error("{0}")]
    Tls(String),
    /// The workers could not switch.
    #[error(transparent)]
    Apply(#[from] rustygate_proxy::ApplyError),
}

/// What a module is configured as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A filter: proxy-wasm or component.
    Filter,
    /// A load-balancer component.
    Balancer,
}

/// A module as the admin API reports it.
#[derive(Debug, Clone)]
struct Module {
    /// The filter's or balancer's name.
    name: String,
    /// The `.wasm` file it was read from.
    path: PathBuf,
    sha256: String,
    /// The proxy-wasm ABI version, or `component` for a WebAssembly component.
    abi: &'static str,
    kind: Kind,
    /// When this process first loaded these bytes.
    loaded_at: SystemTime,
}

/// Every module `loaded` runs (proxy-wasm filters, component filters, balancers), stamped
/// `now`.
fn modules_of(loaded: &Loaded, now: SystemTime) -> Vec<Module> {
    let wasm = loaded.modules.iter().map(|m| Module {
        name: m.filter.clone(),
        path: m.path.clone(),
        sha256: m.sha256.clone(),
        abi: m.abi.as_str(),
        kind: Kind::Filter,
        loaded_at: now,
    });
    let component = |kind: Kind| {
        move |c: &rustygate_components::ComponentInfo| Module {
            name: c.name.clone(),
            path: c.path.clone(),
            sha256: c.sha256.clone(),
            abi: "component",
            kind,
            loaded_at: now,
        }
    };
    let filters = loaded
        .component_filters
        .iter()
        .flat_map(|c| c.infos())
        .map(component(Kind::Filter));
    let balancers = loaded
        .components
        .iter()
        .flat_map(|c| c.infos())
        .map(component(Kind::Balancer));
    wasm.chain(filters).chain(balancers).collect()
}

impl Module {
    /// `rustygate_filter_module_info`, which names filters only.
    fn info_gauge(&self, metrics: &Metrics, value: f64) {
        if self.kind == Kind::Filter {
            metrics
                .filter_module_info(&self.name, &self.sha256)
                .set(value);
        }
    }
}

/// The configuration serving new requests.
struct Current {
    config: Config,
    generation: u64,
    modules: Vec<Module>,
    /// Modules replaced by a reload, while requests that started before it still run them.
    draining: Vec<Module>,
}

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The new generation.
    pub generation: u64,
    /// Filters whose module bytes changed (or that are new).
    pub changed_filters: Vec<String>,
}

/// The control plane of one running gateway.
pub struct ControlPlane {
    path: PathBuf,
    metrics: Metrics,
    reconfigure: Reconfigure,
    /// Held for the whole of a reload, which serialises them.
    wasm: tokio::sync::Mutex<Wasm>,
    shared: Arc<rustygate_proxy_wasm::Shared>,
    current: parking_lot::Mutex<Current>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("path", &self.path)
            .field("generation", &self.generation())
            .finish()
    }
}

impl ControlPlane {
    /// The control plane of a gateway started from `loaded` (generation 1) read from `path`.
    pub fn new(
        path: &Path,
        loaded: &Loaded,
        wasm: Wasm,
        reconfigure: Reconfigure,
        metrics: Metrics,
    ) -> Arc<Self> {
        let modules = modules_of(loaded, SystemTime::now());
        metrics.config_generation().set(1.0);
        for m in &modules {
            m.info_gauge(&metrics, 1.0);
        }
        Arc::new(Self {
            path: path.to_path_buf(),
            metrics,
            reconfigure,
            shared: wasm.shared().clone(),
            wasm: tokio::sync::Mutex::new(wasm),
            current: parking_lot::Mutex::new(Current {
                config: loaded.config.clone(),
                generation: 1,
                modules,
                draining: Vec::new(),
            }),
        })
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The generation serving new requests.
    pub fn generation(&self) -> u64 {
        self.current.lock().generation
    }

    /// The configuration serving new requests.
    pub fn config(&self) -> Config {
        self.current.lock().config.clone()
    }

    /// Reloads the configuration file and its filters; `trigger` names the cause in logs.
    /// On failure the running configuration is untouched.
    pub async fn reload(&self, trigger: &str) -> Result<Applied, ReloadError> {
        let started = Instant::now();
        let result = self.try_reload().await;
        let ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(applied) => {
                self.metrics.reloads("success").increment(1);
                tracing::info!(
                    trigger,
                    file = %self.path.display(),
                    generation = applied.generation,
                    changed_filters = ?applied.changed_filters,
                    duration_ms = ms,
                    "configuration reloaded"
                );
            }
            Err(e) => {
                self.metrics.reloads("failure").increment(1);
                tracing::error!(
                    trigger,
                    file = %self.path.display(),
                    error = %e,
                    duration_ms = ms,
                    "reload refused; the previous configuration keeps serving"
                );
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<Applied, ReloadError> {
        let mut wasm = self.wasm.lock().await;
        // Compiling is CPU work: off the runtime that serves the admin API and signals.
        let path = self.path.clone();
        let mut w = wasm.clone();
        let (back, loaded) = tokio::task::spawn_blocking(move || {
            let loaded = load(&path, &mut w);
            (w, loaded)
        })
        .await
        .map_err(|e| ReloadError::Filters(format!("the loader panicked: {e}")))?;
        *wasm = back;
        let loaded = loaded?;

        let generation = {
            let current = self.current.lock();
            let fields = restart_only_changes(&current.config, &loaded.config);
            if !fields.is_empty() {
                return Err(ReloadError::Restart {
                    file: self.path.display().to_string(),
                    fields: fields.join(", "),
                });
            }
            current.generation + 1
        };
        self.reconfigure
            .apply(&loaded.config, generation, loaded.chains())
            .await?;

        let mut current = self.current.lock();
        let first_loads: HashMap<&str, SystemTime> = current
            .modules
            .iter()
            .map(|m| (m.sha256.as_str(), m.loaded_at))
            .collect();
        let mut modules = modules_of(&loaded, SystemTime::now());
        for m in &mut modules {
            if let Some(t) = first_loads.get(m.sha256.as_str()) {
                m.loaded_at = *t;
            }
        }
        let same =
            |a: &Module, b: &Module| a.kind == b.kind && a.name == b.name && a.sha256 == b.sha256;
        let changed_filters = modules
            .iter()
            .filter(|m| m.kind == Kind::Filter && !current.modules.iter().any(|b| same(m, b)))
            .map(|m| m.name.clone())
            .collect();
        for m in &current.modules {
            if !modules.iter().any(|n| same(n, m)) {
                m.info_gauge(&self.metrics, 0.0);
            }
        }
        for m in &modules {
            m.info_gauge(&self.metrics, 1.0);
        }
        self.metrics.config_generation().set(generation as f64);
        // Running VMs keep their code alive; the runtime only forgets reusable copies of
        // modules no longer configured, beyond the few most recent (a rollback is instant).
        if let Some(runtime) = wasm.runtime() {
            runtime.retain(modules.iter().map(|m| m.sha256.as_str()));
        }
        let mut draining = std::mem::take(&mut current.draining);
        draining.append(&mut current.modules);
        draining.retain(|d| {
            !modules.iter().any(|m| m.sha256 == d.sha256)
                && self
                    .shared
                    .module_stats(&d.sha256)
                    .vms
                    .load(Ordering::Relaxed)
                    > 0
        });
        *current = Current {
            config: loaded.config,
            generation,
            modules,
            draining,
        };
        Ok(Applied {
            generation,
            changed_filters,
        })
    }

    /// The `/admin/*` operations on this control plane.
    pub fn admin_api(self: &Arc<Self>) -> Arc<dyn Operations> {
        Arc::new(AdminApi(self.clone()))
    }

    /// Watches the configuration file and every module it references, and reloads (debounced)
    /// when one changes, is replaced (editors that save by rename) or is created. Runs until
    /// the task is dropped.
    pub async fn watch(self: Arc<Self>) {
        watch::run(self).await;
    }

    fn filters_view(&self) -> serde_json::Value {
        let current = self.current.lock();
        let names = |indexed: Vec<(usize, &Option<String>)>, kind: &str| -> Vec<String> {
            indexed
                .into_iter()
                .map(|(i, n)| n.clone().unwrap_or_else(|| format!("{kind}-{i}")))
                .collect()
        };
        let filters: Vec<serde_json::Value> = current
            .modules
            .iter()
            .filter(|m| m.kind == Kind::Filter)
            .map(|m| {
                let routes = current
                    .config
                    .routes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.filters.iter().any(|f| f.name() == m.name))
                    .map(|(i, r)| (i, &r.name))
                    .collect();
                let mut view = json!({
                    "name": m.name,
                    "module": m.path.display().to_string(),
                    "sha256": m.sha256,
                    "abi": m.abi,
                    "loaded_at": humantime::format_rfc3339_seconds(m.loaded_at).to_string(),
                    "routes": names(routes, "route"),
                });
                // VMs are counted for proxy-wasm modules; a component filter's instances
                // live per worker and request, and are not.
                if m.abi != "component" {
                    let stats = self.shared.module_stats(&m.sha256);
                    view["module_vms"] = stats.vms.load(Ordering::Relaxed).into();
                    view["module_failures"] = stats.failures.load(Ordering::Relaxed).into();
                }
                view
            })
            .collect();
        let balancers: Vec<serde_json::Value> = current
            .modules
            .iter()
            .filter(|m| m.kind == Kind::Balancer)
            .map(|m| {
                let clusters: Vec<&str> = current
                    .config
                    .clusters
                    .iter()
                    .filter(|c| c.balancer.as_deref() == Some(m.name.as_str()))
                    .map(|c| c.name.as_str())
                    .collect();
                json!({
                    "name": m.name,
                    "module": m.path.display().to_string(),
                    "sha256": m.sha256,
                    "loaded_at": humantime::format_rfc3339_seconds(m.loaded_at).to_string(),
                    "clusters": clusters,
                })
            })
            .collect();
        let draining: Vec<serde_json::Value> = current
            .draining
            .iter()
            .filter_map(|m| {
                let vms = self
                    .shared
                    .module_stats(&m.sha256)
                    .vms
                    .load(Ordering::Relaxed);
                (vms > 0).then(|| {
                    json!({
                        "name": m.name,
                        "sha256": m.sha256,
                        "module_vms": vms,
                    })
                })
            })
            .collect();
        json!({
            "generation": current.generation,
            "filters": filters,
            "balancers": balancers,
            "draining": draining,
        })
    }
}

/// Top-level settings a running gateway cannot change: sockets, threads and the log
/// subscriber are set up once. Everything else (routes, clusters, filters, access log,
/// shutdown grace) reloads.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut fields = Vec::new();
    // A listener's TLS settings reload (new handshakes use them: certificates, SNI, client
    // verification); turning TLS on or off changes the listener itself.
    let sockets = |c: &Config| {
        c.listeners
            .iter()
            .map(|l| {
                (
                    l.tls.is_some(),
                    Listener {
                        tls: None,
                        ..l.clone()
                    },
                )
            })
            .collect::<Vec<_>>()
    };
    if sockets(old) != sockets(new) {
        fields.push("listeners");
    }
    if old.workers != new.workers {
        fields.push("workers");
    }
    if old.admin != new.admin {
        fields.push("admin");
    }
    if old.logging.level != new.logging.level || old.logging.format != new.logging.format {
        fields.push("logging.level/format");
    }
    if old.tracing != new.tracing {
        fields.push("tracing");
    }
    fields
}

/// The `/admin/*` operations of a control plane.
struct AdminApi(Arc<ControlPlane>);

impl Operations for AdminApi {
    fn reload(&self) -> BoxFuture<Answer> {
        let plane = self.0.clone();
        Box::pin(async move {
            match plane.reload("admin API").await {
                Ok(applied) => (
                    StatusCode::OK,
                    json!({
                        "result": "success",
                        "generation": applied.generation,
                        "changed_filters": applied.changed_filters,
                    }),
                ),
                Err(e) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({
                        "result": "failure",
                        "generation": plane.generation(),
                        "error": e.to_string(),
                    }),
                ),
            }
        })
    }

    fn config(&self) -> serde_json::Value {
        let plane = &self.0;
        let current = plane.current.lock();
        json!({
            "generation": current.generation,
            "file": plane.path.display().to_string(),
            "config": redact::config(&current.config),
        })
    }

    fn filters(&self) -> serde_json::Value {
        self.0.filters_view()
    }

    fn clusters(&self) -> serde_json::Value {
        let plane = &self.0;
        let current = plane.current.lock();
        let health = plane.reconfigure.health();
        let clusters: Vec<serde_json::Value> = current
            .config
            .clusters
            .iter()
            .map(|c| {
                let states = health.iter().find(|(n, _)| *n == c.name).map(|(_, e)| e);
                json!({
                    "name": c.name,
                    "protocol": c.protocol,
                    "health_checked": c.health_check.is_some(),
                    "outlier_detection": c.outlier_detection.is_some(),
                    "endpoints": c.endpoints.iter().enumerate().map(|(i, e)| {
                        let state = states.and_then(|s| s.get(i));
                        json!({
                            "url": e.url,
                            "weight": e.weight,
                            "health": match state {
                                Some(s) if s.healthy => "healthy",
                                Some(_) => "unhealthy",
                                None => "unknown",
                            },
                            "reason": state.and_then(|s| s.reason),
                        })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "generation": current.generation, "clusters": clusters })
    }
}
