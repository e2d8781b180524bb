//! Component filters: the `http-filter` world of `wit/gateway`, driven through the proxy's
//! engine-neutral filter contract, so a route's chain may mix them with proxy-wasm filters.
//!
//! Each (filter, configuration) is compiled and linked once and configured on a canary at
//! load; each worker then has one instance of it, and every request gets its own guest
//! `stream` resource in that instance. The request and response reach the guest as borrowed
//! host resources that resolve to the request's [`Exchange`] for the duration of one call:
//! nothing is copied unless the guest asks for it.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use rustygate_config::{Config, FailurePolicy as ConfigPolicy, RouteFilter};
use rustygate_filter_api::services::{KvStore, RateLimiter};
use rustygate_filter_api::{
    BodyVerdict, Direction, Exchange, FailurePolicy, FilterError, FilterFactory, HttpFilter,
    LocalFuture, LocalResponse, Upstreams, Verdict,
};
use rustygate_wasm_runtime::{CpuBudget, Runtime};
use wasmtime::component::{HasSelf, Linker, Resource, ResourceAny};
use wasmtime::{Store, Trap};

use crate::{ComponentError, INSTANTIATE_CPU, MemoryCap, REBUILD_EVERY};

mod bindings {
    wasmtime::component::bindgen!({
        world: "http-filter",
        path: "../../wit/gateway",
    });
}

use bindings::rustygate::gateway::{http as gw, kv, log, rate_limit};

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
}

/// Every component filter of a configuration, compiled, linked and configured.
pub struct ComponentFilters {
    defs: Vec<Arc<Def>>,
    /// Per route, per component filter in its chain (in chain order): the index into `defs`.
    routes: Vec<Vec<usize>>,
    engine: wasmtime::Engine,
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
    /// configures one canary instance per (filter, configuration) the routes use.
    pub fn load(
        config: &Config,
        base_dir: &Path,
        runtime: &Runtime,
        services: FilterServices,
        names: &[String],
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
        for f in config.filters.iter().filter(|f| names.contains(&f.name)) {
            if !f.root_id.is_empty() || !f.vm_id.is_empty() || f.vm_configuration.is_some() {
                return Err(fail(
                    &f.name,
                    "root_id, vm_id and vm_configuration are proxy-wasm settings; this module is a component filter".into(),
                ));
            }
            let path = base_dir.join(&f.module);
            let (component, sha256) = runtime
                .load_component(&path)
                .map_err(|e| fail(&f.name, e.to_string()))?;
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
            tracing::info!(filter = %f.name, sha256 = %sha256, "component filter loaded");
            linked.push((f.name.clone(), pre));
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
        })
    }

    /// The calling worker's factories: per route, its component filters in chain order.
    /// `upstreams` carries the filters' outbound calls on this worker's pools.
    pub fn build(&self, upstreams: Rc<dyn Upstreams>) -> Vec<Vec<Rc<dyn FilterFactory>>> {
        let factories: Vec<Rc<dyn FilterFactory>> = self
            .defs
            .iter()
            .map(|d| {
                Rc::new(Factory {
                    slot: Rc::new(Slot {
                        engine: self.engine.clone(),
                        def: d.clone(),
                        live: RefCell::new(None),
                        generation: std::cell::Cell::new(0),
                        retry_at: std::cell::Cell::new(None),
                    }),
                    upstreams: upstreams.clone(),
                }) as Rc<dyn FilterFactory>
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
    memory: MemoryCap,
    cpu: CpuBudget,
    name: Arc<str>,
    services: FilterServices,
    current: Option<Rc<Exchange>>,
    /// Whether the request head may still change (request phases only).
    request_writable: bool,
}

impl State {
    fn exchange(&self) -> &Exchange {
        // Handles exist only as borrows within a call, and every call sets `current`.
        self.current
            .as_deref()
            .expect("a handle used outside a call")
    }
}

/// Handle reps: one request and one response per call; bodies by direction.
const REQUEST_BODY: u32 = 0;
const RESPONSE_BODY: u32 = 1;

fn header_name(name: &str) -> Result<HeaderName, gw::EditError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| gw::EditError::InvalidName)
}

fn header_value(value: &str) -> Result<HeaderValue, gw::EditError> {
    HeaderValue::from_str(value).map_err(|_| gw::EditError::InvalidValue)
}

fn text(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

fn first(map: &HeaderMap, name: &str) -> Option<String> {
    map.get(HeaderName::from_bytes(name.as_bytes()).ok()?)
        .map(text)
}

fn all(map: &HeaderMap, name: &str) -> Vec<String> {
    HeaderName::from_bytes(name.as_bytes())
        .map(|n| map.get_all(n).iter().map(text).collect())
        .unwrap_or_default()
}

fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter().map(|(n, v)| (n.to_string(), text(v))).collect()
}

/// A header edit on `map`: set (replace all), add, or remove.
enum Edit {
    Set(String),
    Add(String),
    Remove,
}

fn edit(map: &mut HeaderMap, name: &str, how: Edit) -> Result<(), gw::EditError> {
    let name = header_name(name)?;
    match how {
        Edit::Set(v) => {
            map.insert(name, header_value(&v)?);
        }
        Edit::Add(v) => {
            map.append(name, header_value(&v)?);
        }
        Edit::Remove => {
            map.remove(name);
        }
    }
    Ok(())
}

impl State {
    fn edit_request(&mut self, name: &str, how: Edit) -> Result<(), gw::EditError> {
        if !self.request_writable {
            return Err(gw::EditError::ReadOnly);
        }
        let ex = self.exchange();
        // `Host` is the authority: the gateway keeps it apart from the other headers.
        if name.eq_ignore_ascii_case("host") {
            return match how {
                Edit::Set(v) | Edit::Add(v) => self.set_authority(v),
                Edit::Remove => Err(gw::EditError::InvalidName),
            };
        }
        edit(&mut ex.request.borrow_mut().headers, name, how)?;
        ex.request_changed.set(true);
        Ok(())
    }

    fn set_authority(&mut self, authority: String) -> Result<(), gw::EditError> {
        if !self.request_writable {
            return Err(gw::EditError::ReadOnly);
        }
        ::http::uri::Authority::from_str(&authority).map_err(|_| gw::EditError::InvalidValue)?;
        let ex = self.exchange();
        ex.request.borrow_mut().authority = authority;
        ex.request_changed.set(true);
        Ok(())
    }

    fn edit_response(&mut self, name: &str, how: Edit) -> Result<(), gw::EditError> {
        let ex = self.exchange();
        let mut response = ex.response.borrow_mut();
        let response = response.as_mut().ok_or(gw::EditError::ReadOnly)?;
        edit(&mut response.headers, name, how)
    }

    fn body(
        &self,
        handle: &Resource<gw::Body>,
    ) -> std::cell::RefMut<'_, rustygate_filter_api::BodyBuffer> {
        let direction = if handle.rep() == RESPONSE_BODY {
            Direction::Response
        } else {
            Direction::Request
        };
        self.exchange().body(direction).borrow_mut()
    }
}

impl gw::Host for State {}

impl gw::HostRequest for State {
    fn method(&mut self, _: Resource<gw::Request>) -> String {
        self.exchange().request.borrow().method.as_str().to_owned()
    }

    fn path(&mut self, _: Resource<gw::Request>) -> String {
        self.exchange().request.borrow().path.clone()
    }

    fn set_path(&mut self, _: Resource<gw::Request>, path: String) -> Result<(), gw::EditError> {
        if !self.request_writable {
            return Err(gw::EditError::ReadOnly);
        }
        if !path.starts_with('/') || ::http::uri::PathAndQuery::from_str(&path).is_err() {
            return Err(gw::EditError::InvalidValue);
        }
        let ex = self.exchange();
        ex.request.borrow_mut().path = path;
        ex.request_changed.set(true);
        Ok(())
    }

    fn authority(&mut self, _: Resource<gw::Request>) -> String {
        self.exchange().request.borrow().authority.clone()
    }

    fn set_authority(
        &mut self,
        _: Resource<gw::Request>,
        authority: String,
    ) -> Result<(), gw::EditError> {
        State::set_authority(self, authority)
    }

    fn scheme(&mut self, _: Resource<gw::Request>) -> String {
        self.exchange().request.borrow().scheme.to_owned()
    }

    fn header(&mut self, _: Resource<gw::Request>, name: String) -> Option<String> {
        let request = self.exchange().request.borrow();
        if name.eq_ignore_ascii_case("host") {
            return Some(request.authority.clone());
        }
        first(&request.headers, &name)
    }

    fn header_all(&mut self, _: Resource<gw::Request>, name: String) -> Vec<String> {
        let request = self.exchange().request.borrow();
        if name.eq_ignore_ascii_case("host") {
            return vec![request.authority.clone()];
        }
        all(&request.headers, &name)
    }

    fn headers(&mut self, _: Resource<gw::Request>) -> Vec<(String, String)> {
        let request = self.exchange().request.borrow();
        let mut out = Vec::with_capacity(request.headers.len() + 1);
        out.push(("host".to_owned(), request.authority.clone()));
        out.extend(pairs(&request.headers));
        out
    }

    fn set_header(
        &mut self,
        _: Resource<gw::Request>,
        name: String,
        value: String,
    ) -> Result<(), gw::EditError> {
        self.edit_request(&name, Edit::Set(value))
    }

    fn add_header(
        &mut self,
        _: Resource<gw::Request>,
        name: String,
        value: String,
    ) -> Result<(), gw::EditError> {
        self.edit_request(&name, Edit::Add(value))
    }

    fn remove_header(
        &mut self,
        _: Resource<gw::Request>,
        name: String,
    ) -> Result<(), gw::EditError> {
        self.edit_request(&name, Edit::Remove)
    }

    fn client_address(&mut self, _: Resource<gw::Request>) -> String {
        self.exchange().info.client.to_string()
    }

    fn id(&mut self, _: Resource<gw::Request>) -> String {
        text(&self.exchange().info.request_id)
    }

    fn route(&mut self, _: Resource<gw::Request>) -> String {
        self.exchange().info.route.to_string()
    }

    fn drop(&mut self, _: Resource<gw::Request>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl gw::HostResponse for State {
    fn status(&mut self, _: Resource<gw::Response>) -> u16 {
        self.exchange()
            .response
            .borrow()
            .as_ref()
            .map_or(0, |r| r.status.as_u16())
    }

    fn set_status(&mut self, _: Resource<gw::Response>, status: u16) -> Result<(), gw::EditError> {
        let status = StatusCode::from_u16(status).map_err(|_| gw::EditError::InvalidValue)?;
        let ex = self.exchange();
        let mut response = ex.response.borrow_mut();
        response.as_mut().ok_or(gw::EditError::ReadOnly)?.status = status;
        Ok(())
    }

    fn header(&mut self, _: Resource<gw::Response>, name: String) -> Option<String> {
        first(&self.exchange().response.borrow().as_ref()?.headers, &name)
    }

    fn header_all(&mut self, _: Resource<gw::Response>, name: String) -> Vec<String> {
        self.exchange()
            .response
            .borrow()
            .as_ref()
            .map(|r| all(&r.headers, &name))
            .unwrap_or_default()
    }

    fn headers(&mut self, _: Resource<gw::Response>) -> Vec<(String, String)> {
        self.exchange()
            .response
            .borrow()
            .as_ref()
            .map(|r| pairs(&r.headers))
            .unwrap_or_default()
    }

    fn set_header(
        &mut self,
        _: Resource<gw::Response>,
        name: String,
        value: String,
    ) -> Result<(), gw::EditError> {
        self.edit_response(&name, Edit::Set(value))
    }

    fn add_header(
        &mut self,
        _: Resource<gw::Response>,
        name: String,
        value: String,
    ) -> Result<(), gw::EditError> {
        self.edit_response(&name, Edit::Add(value))
    }

    fn remove_header(
        &mut self,
        _: Resource<gw::Response>,
        name: String,
    ) -> Result<(), gw::EditError> {
        self.edit_response(&name, Edit::Remove)
    }

    fn drop(&mut self, _: Resource<gw::Response>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl gw::HostBody for State {
    fn len(&mut self, body: Resource<gw::Body>) -> u64 {
        self.body(&body).len() as u64
    }

    fn read(&mut self, body: Resource<gw::Body>, offset: u64, len: u64) -> Vec<u8> {
        let held = self.body(&body);
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let max = usize::try_from(len).unwrap_or(usize::MAX);
        if start >= held.len() {
            return Vec::new();
        }
        held.range(start, max)
    }

    fn replace(&mut self, body: Resource<gw::Body>, data: Vec<u8>) {
        let mut held = self.body(&body);
        let len = held.len();
        let _ = held.splice(0, len, Bytes::from(data));
    }

    fn prepend(&mut self, body: Resource<gw::Body>, data: Vec<u8>) {
        let _ = self.body(&body).splice(0, 0, Bytes::from(data));
    }

    fn append(&mut self, body: Resource<gw::Body>, data: Vec<u8>) {
        let mut held = self.body(&body);
        let len = held.len();
        let _ = held.splice(len, 0, Bytes::from(data));
    }

    fn drop(&mut self, _: Resource<gw::Body>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl log::Host for State {
    fn write(&mut self, level: log::Level, message: String) {
        let filter = &*self.name;
        let request_id = self
            .current
            .as_ref()
            .map(|e| text(&e.info.request_id))
            .unwrap_or_default();
        match level {
            log::Level::Trace => tracing::trace!(target: "filter", filter, request_id, "{message}"),
            log::Level::Debug => tracing::debug!(target: "filter", filter, request_id, "{message}"),
            log::Level::Info => tracing::info!(target: "filter", filter, request_id, "{message}"),
            log::Level::Warn => tracing::warn!(target: "filter", filter, request_id, "{message}"),
            log::Level::Error => tracing::error!(target: "filter", filter, request_id, "{message}"),
        }
    }
}

impl kv::Host for State {
    fn get(&mut self, key: String) -> Option<(Vec<u8>, u64)> {
        self.services.kv.get(&self.name, &key)
    }

    fn set(&mut self, key: String, value: Vec<u8>, expected: Option<u64>) -> Result<u64, u64> {
        self.services.kv.set(&self.name, &key, value, expected)
    }

    fn increment(&mut self, key: String, delta: i64) -> i64 {
        self.services.kv.increment(&self.name, &key, delta)
    }

    fn delete(&mut self, key: String) {
        self.services.kv.delete(&self.name, &key)
    }
}

impl rate_limit::Host for State {
    fn check(&mut self, key: String, limit: u32, window_ms: u64) -> rate_limit::Decision {
        let a = self.services.rate_limiter.admit(
            key.as_bytes(),
            limit,
            Duration::from_millis(window_ms.max(1)),
            Instant::now(),
        );
        rate_limit::Decision {
            allowed: a.allowed,
            remaining: a.remaining,
            reset_ms: a.reset.as_millis().min(u64::MAX as u128) as u64,
        }
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
    if store.data().memory.denied {
        FilterError::Memory
    } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        FilterError::Deadline
    } else {
        FilterError::Trap(format!("{e:#}"))
    }
}

impl Instance {
    fn start(engine: &wasmtime::Engine, def: &Def) -> Result<Self, Started> {
        let mut store = Store::new(
            engine,
            State {
                memory: MemoryCap::new(def.max_memory),
                cpu: CpuBudget::new(def.cpu_limit),
                name: def.name.clone(),
                services: def.services.clone(),
                current: None,
                request_writable: false,
            },
        );
        store.limiter(|s| &mut s.memory);
        store.epoch_deadline_callback(|mut ctx| match ctx.data_mut().cpu.on_tick() {
            Some(ticks) => Ok(wasmtime::UpdateDeadline::Continue(ticks)),
            None => Err(Trap::Interrupt.into()),
        });
        store.data_mut().cpu.arm(INSTANTIATE_CPU);
        store.set_epoch_deadline(1);
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
        state.cpu.arm(cpu);
        self.store.set_epoch_deadline(1);
        let result = f(&self.exports, &mut self.store).map_err(|e| classify(&self.store, e));
        self.store.data_mut().current = None;
        result
    }
}

/// One worker's instance of one (filter, configuration): the filter factory of the chains.
struct Slot {
    engine: wasmtime::Engine,
    def: Arc<Def>,
    /// `None` after a failure, until rebuilt.
    live: RefCell<Option<Instance>>,
    /// Counts instances, so a request's stream is never used on a replacement.
    generation: std::cell::Cell<u64>,
    retry_at: std::cell::Cell<Option<Instant>>,
}

impl Slot {
    /// Makes sure an instance is live, rebuilding a failed one at most once a second.
    fn ensure(&self) -> Result<(), FilterError> {
        if self.live.borrow().is_some() {
            return Ok(());
        }
        if self.retry_at.get().is_some_and(|t| Instant::now() < t) {
            return Err(FilterError::Unavailable(
                "the filter's instance failed and is rebuilt at most once a second".into(),
            ));
        }
        self.retry_at.set(Some(Instant::now() + REBUILD_EVERY));
        let fresh = Instance::start(&self.engine, &self.def).map_err(|e| match e {
            Started::Refused(r) => FilterError::Unavailable(format!("configure failed: {r}")),
            Started::Failed(e) => e,
        })?;
        self.generation.set(self.generation.get() + 1);
        *self.live.borrow_mut() = Some(fresh);
        Ok(())
    }

    /// Runs `f` on the live instance of `generation`; a failure retires the instance (it
    /// cannot be entered again after a trap).
    fn run<R>(
        &self,
        generation: u64,
        exchange: Option<&Rc<Exchange>>,
        request_writable: bool,
        f: impl FnOnce(&bindings::HttpFilter, &mut Store<State>) -> wasmtime::Result<R>,
    ) -> Result<R, FilterError> {
        if generation != self.generation.get() {
            return Err(FilterError::Unavailable(
                "the filter's instance was replaced during this request".into(),
            ));
        }
        let mut live = self.live.borrow_mut();
        let instance = live.as_mut().ok_or_else(|| {
            FilterError::Unavailable("the filter's instance failed during this request".into())
        })?;
        let result = instance.call(self.def.cpu_limit, exchange, request_writable, f);
        if let Err(e) = &result {
            if let FilterError::Trap(detail) = e {
                tracing::error!(target: "filter", filter = %self.def.name, trap = %detail, "filter trapped");
            }
            *live = None;
            self.retry_at.set(None);
        }
        result
    }
}

/// The filter factory of the chains: a worker's [`Slot`], shared with its streams.
struct Factory {
    slot: Rc<Slot>,
    upstreams: Rc<dyn Upstreams>,
}

impl FilterFactory for Factory {
    fn name(&self) -> &str {
        &self.slot.def.name
    }

    fn failure_policy(&self) -> FailurePolicy {
        self.slot.def.policy
    }

    fn create(&self, _exchange: &Rc<Exchange>) -> Result<Box<dyn HttpFilter>, FilterError> {
        let slot = &self.slot;
        slot.ensure()?;
        let generation = slot.generation.get();
        let stream = slot.run(generation, None, false, |f, s| {
            f.rustygate_gateway_filter()
                .http_context()
                .call_constructor(s)
        })?;
        let phases = slot
            .live
            .borrow()
            .as_ref()
            .map_or(slot.def.phases, |i| i.phases);
        Ok(Box::new(Stream {
            slot: slot.clone(),
            generation,
            stream: Some(stream),
            phases,
            upstreams: self.upstreams.clone(),
            alive: Rc::new(std::cell::Cell::new(true)),
            waiting: None,
        }))
    }
}

/// One request's stream in the worker's instance.
struct Stream {
    slot: Rc<Slot>,
    generation: u64,
    /// The guest's `stream` resource; taken when it is dropped.
    stream: Option<ResourceAny>,
    phases: gw::Phases,
    upstreams: Rc<dyn Upstreams>,
    /// Cleared when the request is over, so a call answered later does not enter the guest
    /// for a context that no longer exists.
    alive: Rc<std::cell::Cell<bool>>,
    /// The outcome of the call the request is held for.
    waiting: Option<tokio::sync::oneshot::Receiver<Result<Verdict, FilterError>>>,
}

fn local_response(lr: gw::LocalResponse) -> Result<LocalResponse, FilterError> {
    let status = StatusCode::from_u16(lr.status).map_err(|_| {
        FilterError::Trap(format!(
            "the local response's status {} is invalid",
            lr.status
        ))
    })?;
    let mut headers = Vec::with_capacity(lr.headers.len());
    for (name, value) in lr.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => {
                return Err(FilterError::Trap(format!(
                    "the local response's header {name:?} is invalid"
                )));
            }
        }
    }
    Ok(LocalResponse {
        status,
        headers,
        body: Bytes::from(lr.body),
        details: "component_local_response".into(),
    })
}

/// A header phase's answer, for the phases where `call` is not allowed.
fn verdict(action: gw::Action) -> Result<Verdict, FilterError> {
    Ok(match action {
        gw::Action::Continue => Verdict::Continue,
        gw::Action::Respond(lr) => Verdict::Respond(local_response(lr)?),
        gw::Action::Call(_) => {
            return Err(FilterError::Trap(
                "`call` is only allowed in the request phases".into(),
            ));
        }
    })
}

/// The HTTP request an `outbound-request` describes.
fn outbound(call: &gw::OutboundRequest) -> Result<http::Request<Bytes>, String> {
    let method = http::Method::from_bytes(call.method.as_bytes())
        .map_err(|_| format!("invalid method {:?}", call.method))?;
    if !call.path.starts_with('/') {
        return Err(format!(
            "invalid path {:?}: it must start with /",
            call.path
        ));
    }
    let authority = if call.authority.is_empty() {
        &call.cluster
    } else {
        &call.authority
    };
    let mut builder = http::Request::builder()
        .method(method)
        .uri(call.path.as_str())
        .header(http::header::HOST, authority.as_str());
    for (name, value) in &call.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        builder = builder.header(name, value);
    }
    builder
        .body(Bytes::from(call.body.clone()))
        .map_err(|e| e.to_string())
}

fn outbound_response(
    result: Result<http::Response<Bytes>, String>,
) -> Result<gw::OutboundResponse, String> {
    let (parts, body) = result?.into_parts();
    Ok(gw::OutboundResponse {
        status: parts.status.as_u16(),
        headers: pairs(&parts.headers),
        body: body.to_vec(),
    })
}

impl Stream {
    fn stream(&self) -> Result<ResourceAny, FilterError> {
        self.stream
            .ok_or_else(|| FilterError::Unavailable("the stream is over".into()))
    }

    /// Sends `call` on the worker's pools; when it is answered, hands the answer to the
    /// guest's `on-call-response` (which may call again) and resolves [`HttpFilter::resumed`]
    /// with its verdict. The guest is entered only after the phase returned, never during it.
    fn call(
        &mut self,
        exchange: &Rc<Exchange>,
        first: gw::OutboundRequest,
    ) -> Result<(), FilterError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting = Some(rx);
        let (slot, generation, stream) = (self.slot.clone(), self.generation, self.stream()?);
        let (alive, exchange, upstreams) =
            (self.alive.clone(), exchange.clone(), self.upstreams.clone());
        let task = async move {
            let mut call = first;
            let verdict = loop {
                let result = match outbound(&call) {
                    Ok(request) => {
                        let timeout = (call.timeout_ms > 0)
                            .then(|| Duration::from_millis(u64::from(call.timeout_ms)));
                        upstreams.call(&call.cluster, request, timeout).await
                    }
                    Err(e) => Err(e),
                };
                if !alive.get() {
                    return;
                }
                let response = outbound_response(result);
                let action = slot.run(generation, Some(&exchange), true, |f, s| {
                    f.rustygate_gateway_filter()
                        .http_context()
                        .call_on_call_response(
                            s,
                            stream,
                            Resource::new_borrow(0),
                            response.as_ref().map_err(String::as_str),
                        )
                });
                match action {
                    Ok(gw::Action::Call(next)) => call = next,
                    Ok(other) => break verdict(other),
                    Err(e) => break Err(e),
                }
            };
            let _ = tx.send(verdict);
        };
        self.upstreams.spawn(Box::pin(task));
        Ok(())
    }
}

impl HttpFilter for Stream {
    fn on_request_headers(
        &mut self,
        exchange: &Rc<Exchange>,
        end_of_stream: bool,
    ) -> Result<Verdict, FilterError> {
        if !self.phases.contains(gw::Phases::REQUEST_HEADERS) {
            return Ok(Verdict::Continue);
        }
        let stream = self.stream()?;
        let action = self
            .slot
            .run(self.generation, Some(exchange), true, |f, s| {
                f.rustygate_gateway_filter()
                    .http_context()
                    .call_on_request_headers(s, stream, Resource::new_borrow(0), end_of_stream)
            })?;
        match action {
            gw::Action::Call(call) => {
                self.call(exchange, call)?;
                Ok(Verdict::Pause)
            }
            other => verdict(other),
        }
    }

    fn on_response_headers(
        &mut self,
        exchange: &Rc<Exchange>,
        end_of_stream: bool,
    ) -> Result<Verdict, FilterError> {
        if !self.phases.contains(gw::Phases::RESPONSE_HEADERS) {
            return Ok(Verdict::Continue);
        }
        let stream = self.stream()?;
        let action = self
            .slot
            .run(self.generation, Some(exchange), false, |f, s| {
                f.rustygate_gateway_filter()
                    .http_context()
                    .call_on_response_headers(
                        s,
                        stream,
                        Resource::new_borrow(0),
                        Resource::new_borrow(0),
                        end_of_stream,
                    )
            })?;
        verdict(action)
    }

    fn on_body(
        &mut self,
        exchange: &Rc<Exchange>,
        direction: Direction,
        end_of_stream: bool,
    ) -> Result<BodyVerdict, FilterError> {
        if !self.wants_body(direction) {
            return Ok(BodyVerdict::Continue);
        }
        let stream = self.stream()?;
        let action = match direction {
            Direction::Request => {
                self.slot
                    .run(self.generation, Some(exchange), true, |f, s| {
                        f.rustygate_gateway_filter()
                            .http_context()
                            .call_on_request_body(
                                s,
                                stream,
                                Resource::new_borrow(0),
                                Resource::new_borrow(REQUEST_BODY),
                                end_of_stream,
                            )
                    })?
            }
            Direction::Response => {
                self.slot
                    .run(self.generation, Some(exchange), false, |f, s| {
                        f.rustygate_gateway_filter()
                            .http_context()
                            .call_on_response_body(
                                s,
                                stream,
                                Resource::new_borrow(0),
                                Resource::new_borrow(0),
                                Resource::new_borrow(RESPONSE_BODY),
                                end_of_stream,
                            )
                    })?
            }
        };
        Ok(match action {
            gw::BodyAction::Continue => BodyVerdict::Continue,
            // Nothing follows the last chunk: holding it would hold the request forever.
            gw::BodyAction::Buffer if end_of_stream => BodyVerdict::Continue,
            gw::BodyAction::Buffer => BodyVerdict::Buffer,
            gw::BodyAction::Respond(lr) => BodyVerdict::Respond(local_response(lr)?),
        })
    }

    fn wants_body(&self, direction: Direction) -> bool {
        self.phases.contains(match direction {
            Direction::Request => gw::Phases::REQUEST_BODY,
            Direction::Response => gw::Phases::RESPONSE_BODY,
        })
    }

    /// A request held for a `call` goes on with the filter's answer to the response; nothing
    /// else pauses (a buffered body goes on with the next chunk's call).
    fn resumed(
        &mut self,
        direction: Direction,
    ) -> LocalFuture<'static, Result<Verdict, FilterError>> {
        match (direction, self.waiting.take()) {
            (Direction::Request, Some(answer)) => Box::pin(async move {
                answer.await.unwrap_or_else(|_| {
                    Err(FilterError::Unavailable(
                        "the filter's call was abandoned".into(),
                    ))
                })
            }),
            _ => Box::pin(std::future::pending()),
        }
    }

    fn complete(&mut self) {
        self.alive.set(false);
        let Some(stream) = self.stream.take() else {
            return;
        };
        // The guest's destructor runs now; an instance replaced since has no such stream.
        let _ = self
            .slot
            .run(self.generation, None, false, |_, s| stream.resource_drop(s));
    }
}
