//! One proxy-wasm VM: a wasmtime store and instance on one worker, with its context table.
//! Callbacks are called one at a time, each under a CPU deadline; a trap, a deadline or a
//! denied memory grow marks the VM failed, and no callback runs on it again.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use rustygate_filter_api::grpc::{GrpcEvent, code};
use rustygate_filter_api::{Exchange, FilterError};
use rustygate_wasm_runtime::CpuBudget;
use rustygate_wasm_runtime::wasmtime::{
    Instance, InstancePre, Store, Trap, TypedFunc, UpdateDeadline, WasmParams, WasmResults,
};

use crate::abi::{AbiVersion, map};

/// CPU budget for module initialisation and plugin start-up.
const INIT_CPU: std::time::Duration = std::time::Duration::from_secs(2);
use crate::shared::Shared;
use crate::state::{
    CallResponse, Deferred, GrpcReceived, HostState, MemoryLimiter, PendingCall, PendingGrpc,
    Phase, RootCtx, StreamCtx,
};

/// What a module's callbacks look like; each is optional, as in the ABI.
struct Callbacks {
    context_create: Option<TypedFunc<(i32, i32), ()>>,
    vm_start: Option<TypedFunc<(i32, i32), i32>>,
    configure: Option<TypedFunc<(i32, i32), i32>>,
    /// 0.2: (ctx, headers, eos); 0.1 modules are adapted at lookup.
    request_headers: Option<HeadersFn>,
    response_headers: Option<HeadersFn>,
    /// (ctx, body_size, eos) -> action.
    request_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    response_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    /// (ctx, trailers) -> action.
    request_trailers: Option<TypedFunc<(i32, i32), i32>>,
    response_trailers: Option<TypedFunc<(i32, i32), i32>>,
    on_log: Option<TypedFunc<i32, ()>>,
    on_done: Option<TypedFunc<i32, i32>>,
    on_delete: Option<TypedFunc<i32, ()>>,
    http_call_response: Option<CallResponseFn>,
    on_tick: Option<TypedFunc<i32, ()>>,
    queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    /// (root, token, count or size); close: (root, token, status).
    grpc_initial_metadata: Option<GrpcFn>,
    grpc_receive: Option<GrpcFn>,
    grpc_trailing_metadata: Option<GrpcFn>,
    grpc_close: Option<GrpcFn>,
}

type GrpcFn = TypedFunc<(i32, i32, i32), ()>;

/// `proxy_on_http_call_response(root, token, headers, body_size, trailers)`.
type CallResponseFn = TypedFunc<(i32, i32, i32, i32, i32), ()>;

enum HeadersFn {
    V1(TypedFunc<(i32, i32), i32>),
    V2(TypedFunc<(i32, i32, i32), i32>),
}

fn phase_of(response: bool) -> Phase {
    if response {
        Phase::Response
    } else {
        Phase::Request
    }
}

/// How a VM is configured.
pub(crate) struct VmSpec {
    pub pre: InstancePre<HostState>,
    pub abi: AbiVersion,
    pub vm_id: Rc<str>,
    pub vm_config: Bytes,
    pub max_memory: usize,
    pub cpu_limit: std::time::Duration,
    pub shared: Arc<Shared>,
    pub upstreams: Rc<dyn rustygate_filter_api::Upstreams>,
    /// Where work for this VM's slot is posted from other threads.
    pub mailbox: crate::shared::Mailbox,
    /// The module's live VM and failure counts.
    pub stats: Arc<crate::shared::ModuleStats>,
}

/// A live VM.
pub(crate) struct Vm {
    store: Store<HostState>,
    /// Shared so a call can hold a callback while borrowing the VM mutably (a `TypedFunc`
    /// clone costs a type-registry reference count per call).
    cb: Rc<Callbacks>,
    /// [`Callbacks::late`], fixed with the module's exports: asked on every request.
    late_callbacks: bool,
    next_id: u32,
    cpu_limit: std::time::Duration,
    /// Plugin start-up (`context_create`, `vm_start`, `configure` of roots) runs with the
    /// initialisation budget: SDKs do their set-up there.
    starting: bool,
    /// Set once the VM trapped; it is then never called again.
    pub failed: Option<FilterError>,
    live: crate::shared::LiveVm,
}

fn typed<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>, String> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(f) => f
            .typed::<P, R>(&*store)
            .map(Some)
            .map_err(|e| format!("export {name} has the wrong signature: {e:#}")),
    }
}

impl Callbacks {
    /// Whether the module has a callback that can run after a stream's response head has been
    /// handed on: a response body or trailers callback, the end-of-stream ones, or any callback
    /// of its root contexts (which may set a stream's context as the effective one and read its
    /// maps).
    fn late(&self) -> bool {
        self.response_body.is_some()
            || self.response_trailers.is_some()
            || self.on_log.is_some()
            || self.on_done.is_some()
            || self.on_delete.is_some()
            || self.http_call_response.is_some()
            || self.on_tick.is_some()
            || self.queue_ready.is_some()
            || self.grpc_initial_metadata.is_some()
            || self.grpc_receive.is_some()
            || self.grpc_trailing_metadata.is_some()
            || self.grpc_close.is_some()
    }
}

impl Vm {
    /// Instantiates and initialises a module (`_initialize` then `main(0, 0)`, or `_start`).
    pub fn new(spec: &VmSpec) -> Result<Vm, String> {
        let state = HostState {
            memory: None,
            alloc: None,
            abi_v01: spec.abi == AbiVersion::V0_1_0,
            initializing: true,
            cpu: CpuBudget::new(INIT_CPU),
            limiter: MemoryLimiter {
                max: spec.max_memory,
                denied: false,
                live: spec.shared.wasm_gauges.live(),
            },
            effective: 0,
            roots: FxHashMap::default(),
            streams: FxHashMap::default(),
            plugin_config: None,
            vm_config: spec.vm_config.clone(),
            deferred: FxHashMap::default(),
            done: Vec::new(),
            shared: spec.shared.clone(),
            vm_id: spec.vm_id.clone(),
            rng: fastrand::Rng::new(),
            output: [Vec::new(), Vec::new()],
            calls: Vec::new(),
            // Tokens start at 1 and are unique per VM for its whole life (0 is never a token).
            next_token: 1,
            call_response: None,
            grpc_calls: Vec::new(),
            grpc: FxHashMap::default(),
            grpc_received: None,
            grpc_status: None,
            upstreams: spec.upstreams.clone(),
            mailbox: spec.mailbox.clone(),
            tick_changes: Vec::new(),
            last_error: None,
        };
        let mut store = Store::new(spec.pre.module().engine(), state);
        store.limiter(|s| &mut s.limiter);
        // Ticks are wall-clock; the budget checks the thread's CPU clock before stopping a guest.
        store.epoch_deadline_callback(|mut ctx| {
            Ok(match ctx.data_mut().cpu.on_tick() {
                Some(ticks) => UpdateDeadline::Continue(ticks),
                None => UpdateDeadline::Interrupt,
            })
        });
        // Initialisation gets a generous budget (INIT_CPU): Go's runtime start-up alone takes
        // milliseconds.
        store.set_epoch_deadline(1);
        let instance = spec
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("instantiation failed: {e:#}"))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or("the module exports no memory")?;
        // The spec's order: proxy_on_memory_allocate first, malloc only when it is absent.
        let alloc = match typed::<i32, i32>(&instance, &mut store, "proxy_on_memory_allocate")? {
            Some(f) => f,
            None => typed::<i32, i32>(&instance, &mut store, "malloc")?
                .ok_or("the module exports neither proxy_on_memory_allocate nor malloc")?,
        };
        store.data_mut().memory = Some(memory);
        store.data_mut().alloc = Some(alloc);
        let init = typed::<(), ()>(&instance, &mut store, "_initialize")?;
        let start = typed::<(), ()>(&instance, &mut store, "_start")?;
        match (init, start) {
            (Some(init), _) => {
                init.call(&mut store, ())
                    .map_err(|e| format!("_initialize trapped: {e:#}"))?;
                if let Some(main) = typed::<(i32, i32), i32>(&instance, &mut store, "main")? {
                    main.call(&mut store, (0, 0))
                        .map_err(|e| format!("main trapped: {e:#}"))?;
                }
            }
            (None, Some(start)) => start
                .call(&mut store, ())
                .map_err(|e| format!("_start trapped: {e:#}"))?,
            (None, None) => {}
        }
        store.data_mut().initializing = false;
        let headers =
            |name: &str, store: &mut Store<HostState>| -> Result<Option<HeadersFn>, String> {
                if spec.abi == AbiVersion::V0_1_0 {
                    Ok(typed(&instance, store, name)?.map(HeadersFn::V1))
                } else {
                    Ok(typed(&instance, store, name)?.map(HeadersFn::V2))
                }
            };
        let cb = Callbacks {
            context_create: typed(&instance, &mut store, "proxy_on_context_create")?,
            vm_start: typed(&instance, &mut store, "proxy_on_vm_start")?,
            configure: typed(&instance, &mut store, "proxy_on_configure")?,
            request_headers: headers("proxy_on_request_headers", &mut store)?,
            response_headers: headers("proxy_on_response_headers", &mut store)?,
            request_body: typed(&instance, &mut store, "proxy_on_request_body")?,
            response_body: typed(&instance, &mut store, "proxy_on_response_body")?,
            request_trailers: typed(&instance, &mut store, "proxy_on_request_trailers")?,
            response_trailers: typed(&instance, &mut store, "proxy_on_response_trailers")?,
            on_log: typed(&instance, &mut store, "proxy_on_log")?,
            on_done: typed(&instance, &mut store, "proxy_on_done")?,
            on_delete: typed(&instance, &mut store, "proxy_on_delete")?,
            http_call_response: typed(&instance, &mut store, "proxy_on_http_call_response")?,
            on_tick: typed(&instance, &mut store, "proxy_on_tick")?,
            queue_ready: typed(&instance, &mut store, "proxy_on_queue_ready")?,
            grpc_initial_metadata: typed(
                &instance,
                &mut store,
                "proxy_on_grpc_receive_initial_metadata",
            )?,
            grpc_receive: typed(&instance, &mut store, "proxy_on_grpc_receive")?,
            grpc_trailing_metadata: typed(
                &instance,
                &mut store,
                "proxy_on_grpc_receive_trailing_metadata",
            )?,
            grpc_close: typed(&instance, &mut store, "proxy_on_grpc_close")?,
        };
        Ok(Vm {
            store,
            late_callbacks: cb.late(),
            cb: Rc::new(cb),
            next_id: 1,
            cpu_limit: spec.cpu_limit,
            starting: false,
            failed: None,
            live: crate::shared::LiveVm::new(spec.stats.clone()),
        })
    }

    /// Runs one callback for context `ctx` under the CPU deadline, classifying failures.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        f: &TypedFunc<P, R>,
        ctx: u32,
        args: P,
    ) -> Result<R, FilterError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.store.data_mut().effective = ctx;
        let limit = if self.starting {
            INIT_CPU
        } else {
            self.cpu_limit
        };
        self.store.data_mut().cpu.arm(limit);
        self.store.set_epoch_deadline(1);
        match f.call(&mut self.store, args) {
            Ok(r) => {
                self.store.data_mut().flush_output();
                Ok(r)
            }
            Err(e) => {
                let err = if self.store.data().limiter.denied {
                    FilterError::Memory
                } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    FilterError::Deadline
                } else {
                    // The guest's frames (function names from the name section) go to the
                    // log; clients only ever see the failure's kind.
                    FilterError::Trap(format!("{e:#}"))
                };
                if let FilterError::Trap(detail) = &err {
                    let plugin = self
                        .store
                        .data()
                        .root_of(ctx)
                        .map_or("", |r| &r.plugin)
                        .to_owned();
                    tracing::error!(target: "filter", filter = %plugin, context = ctx, trap = %detail, "filter trapped");
                }
                self.store.data_mut().flush_output();
                self.failed = Some(err.clone());
                self.live.failed();
                Err(err)
            }
        }
    }

    fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Creates a root context for a plugin and runs `vm_start` and `configure` on it.
    pub fn start_plugin(
        &mut self,
        plugin: Rc<str>,
        root_id: Rc<str>,
        config: Bytes,
    ) -> Result<u32, String> {
        let id = self.next_id();
        self.store.data_mut().roots.insert(
            id,
            RootCtx {
                plugin: plugin.clone(),
                root_id,
                tick_ms: 0,
            },
        );
        let fail = |stage: &str, e: FilterError| format!("filter {plugin}: {stage} failed: {e}");
        if let Some(f) = &self.cb.clone().context_create {
            self.call(f, id, (id as i32, 0))
                .map_err(|e| fail("proxy_on_context_create", e))?;
        }
        let vm_config_len = self.store.data().vm_config.len() as i32;
        if let Some(f) = &self.cb.clone().vm_start {
            let ok = self
                .call(f, id, (id as i32, vm_config_len))
                .map_err(|e| fail("proxy_on_vm_start", e))?;
            if ok == 0 {
                return Err(format!("filter {plugin}: proxy_on_vm_start returned false"));
            }
        }
        let len = config.len() as i32;
        self.store.data_mut().plugin_config = Some(config);
        self.store.data_mut().last_error = None;
        let cb = self.cb.clone();
        let configured = cb
            .configure
            .as_ref()
            .map(|f| self.call(f, id, (id as i32, len)));
        self.store.data_mut().plugin_config = None;
        if let Some(r) = configured
            && r.map_err(|e| fail("proxy_on_configure", e))? == 0
        {
            return Err(match self.store.data_mut().last_error.take() {
                Some(said) => {
                    format!("filter {plugin}: the filter rejected its configuration: {said}")
                }
                None => format!(
                    "filter {plugin}: the filter rejected its configuration (proxy_on_configure returned false; see its log lines)"
                ),
            });
        }
        Ok(id)
    }

    /// Creates a stream context under `root` for one request.
    pub fn create_stream(&mut self, root: u32, exchange: Rc<Exchange>) -> Result<u32, FilterError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let id = self.next_id();
        self.store.data_mut().streams.insert(
            id,
            StreamCtx {
                root,
                phase: Phase::Request,
                exchange,
                properties: FxHashMap::default(),
            },
        );
        if let Some(f) = &self.cb.clone().context_create {
            self.call(f, id, (id as i32, root as i32))?;
        }
        Ok(id)
    }

    fn set_phase(&mut self, ctx: u32, phase: Phase) {
        if let Some(s) = self.store.data_mut().streams.get_mut(&ctx) {
            s.phase = phase;
        }
    }

    /// Runs a headers callback; returns the raw action and whatever it deferred.
    pub fn on_headers(
        &mut self,
        ctx: u32,
        response: bool,
        headers: usize,
        eos: bool,
    ) -> Result<(i32, Option<Deferred>), FilterError> {
        self.set_phase(ctx, phase_of(response));
        let cb = self.cb.clone();
        let f = if response {
            &cb.response_headers
        } else {
            &cb.request_headers
        };
        let action = match f {
            None => 0,
            Some(HeadersFn::V1(f)) => self.call(f, ctx, (ctx as i32, headers as i32))?,
            Some(HeadersFn::V2(f)) => {
                self.call(f, ctx, (ctx as i32, headers as i32, i32::from(eos)))?
            }
        };
        Ok((action, self.take_deferred_of(ctx)))
    }

    /// Whether the module has body or trailer callbacks for one direction.
    pub fn has_body_callbacks(&self, response: bool) -> bool {
        if response {
            self.cb.response_body.is_some() || self.cb.response_trailers.is_some()
        } else {
            self.cb.request_body.is_some() || self.cb.request_trailers.is_some()
        }
    }

    /// Whether the module can run after a stream's response head has been handed on
    /// ([`Callbacks::late`]).
    pub fn has_late_callbacks(&self) -> bool {
        self.late_callbacks
    }

    /// Runs a body callback; returns the raw action and whatever it deferred.
    pub fn on_body(
        &mut self,
        ctx: u32,
        response: bool,
        size: usize,
        eos: bool,
    ) -> Result<(i32, Option<Deferred>), FilterError> {
        self.set_phase(ctx, phase_of(response));
        let cb = self.cb.clone();
        let f = if response {
            &cb.response_body
        } else {
            &cb.request_body
        };
        let action = match f {
            None => 0,
            Some(f) => self.call(f, ctx, (ctx as i32, size as u32 as i32, i32::from(eos)))?,
        };
        Ok((action, self.take_deferred_of(ctx)))
    }

    /// Runs a trailers callback; returns the raw action and whatever it deferred.
    pub fn on_trailers(
        &mut self,
        ctx: u32,
        response: bool,
        trailers: usize,
    ) -> Result<(i32, Option<Deferred>), FilterError> {
        self.set_phase(ctx, phase_of(response));
        let cb = self.cb.clone();
        let f = if response {
            &cb.response_trailers
        } else {
            &cb.request_trailers
        };
        let action = match f {
            None => 0,
            Some(f) => self.call(f, ctx, (ctx as i32, trailers as i32))?,
        };
        Ok((action, self.take_deferred_of(ctx)))
    }

    /// Ends a stream: `on_log`, `on_done`, `on_delete` (Envoy's order for HTTP). Skipped on a
    /// failed VM, whose contexts can no longer be trusted.
    pub fn finish_stream(&mut self, ctx: u32) {
        self.set_phase(ctx, Phase::Done);
        if self.failed.is_none() {
            if let Some(f) = &self.cb.clone().on_log {
                let _ = self.call(f, ctx, ctx as i32);
            }
            if let Some(f) = &self.cb.clone().on_done {
                let _ = self.call(f, ctx, ctx as i32);
            }
            if let Some(f) = &self.cb.clone().on_delete {
                let _ = self.call(f, ctx, ctx as i32);
            }
        }
        self.store.data_mut().streams.remove(&ctx);
        self.take_deferred_of(ctx);
    }

    /// What the last callback deferred for stream `ctx` (usually nothing: no lookup then).
    #[inline]
    fn take_deferred_of(&mut self, ctx: u32) -> Option<Deferred> {
        let deferred = &mut self.store.data_mut().deferred;
        if deferred.is_empty() {
            return None;
        }
        deferred.remove(&ctx)
    }

    /// `proxy_on_tick(root)`.
    pub fn on_tick(&mut self, root: u32) -> Result<(), FilterError> {
        match &self.cb.clone().on_tick {
            Some(f) if self.store.data().roots.contains_key(&root) => {
                self.call(f, root, root as i32)
            }
            _ => Ok(()),
        }
    }

    /// `proxy_on_queue_ready(root, queue)`.
    pub fn on_queue_ready(&mut self, root: u32, queue: u32) -> Result<(), FilterError> {
        match &self.cb.clone().queue_ready {
            Some(f) if self.store.data().roots.contains_key(&root) => {
                self.call(f, root, (root as i32, queue as i32))
            }
            _ => Ok(()),
        }
    }

    /// Tick periods changed by the last callback.
    pub fn take_tick_changes(&mut self) -> Vec<(u32, u32)> {
        std::mem::take(&mut self.store.data_mut().tick_changes)
    }

    /// Calls made by the last callback, to be started now that it has returned.
    pub fn take_calls(&mut self) -> Vec<PendingCall> {
        std::mem::take(&mut self.store.data_mut().calls)
    }

    /// gRPC calls opened by the last callback, to be started now that it has returned.
    pub fn take_grpc_calls(&mut self) -> Vec<PendingGrpc> {
        std::mem::take(&mut self.store.data_mut().grpc_calls)
    }

    /// Delivers one event of the gRPC call `token` to the root context that opened it, as
    /// Envoy does: a unary call gets `proxy_on_grpc_receive` with its one message when it
    /// succeeds and `proxy_on_grpc_close` otherwise; a stream gets every event as it comes.
    /// Events for a call the filter cancelled are dropped.
    pub fn deliver_grpc(
        &mut self,
        root: u32,
        token: u32,
        event: GrpcEvent,
    ) -> Result<(), FilterError> {
        let Some(handle) = self.store.data().grpc.get(&token).cloned() else {
            return Ok(());
        };
        let cb = self.cb.clone();
        let (f, arg, received, status) = match event {
            GrpcEvent::Close { status, message } => {
                self.store.data_mut().grpc.remove(&token);
                let reply = handle.reply.borrow_mut().take();
                match reply {
                    Some(msg) if !handle.stream && status == code::OK => {
                        let n = msg.len();
                        (&cb.grpc_receive, n, Some(GrpcReceived::Message(msg)), None)
                    }
                    None if !handle.stream && status == code::OK => (
                        &cb.grpc_close,
                        code::INTERNAL as usize,
                        None,
                        Some((code::INTERNAL, "no response message".to_owned())),
                    ),
                    _ => (
                        &cb.grpc_close,
                        status as usize,
                        None,
                        Some((status, message)),
                    ),
                }
            }
            _ if !handle.stream => {
                if let GrpcEvent::Message(m) = event {
                    // A unary call answers with one message; a second is ignored.
                    handle.reply.borrow_mut().get_or_insert(m);
                }
                return Ok(());
            }
            GrpcEvent::InitialMetadata(pairs) => (
                &cb.grpc_initial_metadata,
                pairs.len(),
                Some(GrpcReceived::Metadata(map::GRPC_INITIAL_METADATA, pairs)),
                None,
            ),
            GrpcEvent::Message(m) => (
                &cb.grpc_receive,
                m.len(),
                Some(GrpcReceived::Message(m)),
                None,
            ),
            GrpcEvent::TrailingMetadata(pairs) => (
                &cb.grpc_trailing_metadata,
                pairs.len(),
                Some(GrpcReceived::Metadata(map::GRPC_TRAILING_METADATA, pairs)),
                None,
            ),
        };
        let Some(f) = f else {
            return Ok(());
        };
        let st = self.store.data_mut();
        st.grpc_received = received;
        st.grpc_status = status;
        let result = self.call(f, root, (root as i32, token as i32, arg as i32));
        let st = self.store.data_mut();
        st.grpc_received = None;
        st.grpc_status = None;
        result
    }

    /// Continue / local-response / close requests recorded for streams by the last callback.
    pub fn take_deferred(&mut self) -> Vec<(u32, Deferred)> {
        let deferred = &mut self.store.data_mut().deferred;
        // Draining walks every bucket the map ever grew to; most callbacks defer nothing.
        if deferred.is_empty() {
            return Vec::new();
        }
        deferred.drain().collect()
    }

    /// Whether the last callback left anything for [`crate::filter::VmSlot`] to act on:
    /// calls, deferred stream actions, tick changes or a failure.
    #[inline]
    pub fn has_aftermath(&self) -> bool {
        let st = self.store.data();
        self.failed.is_some()
            || !st.calls.is_empty()
            || !st.grpc_calls.is_empty()
            || !st.deferred.is_empty()
            || !st.tick_changes.is_empty()
    }

    /// Delivers a call's outcome to the root context that made it, as Envoy does:
    /// `proxy_on_http_call_response(root, token, headers, body_size, trailers)`, with no
    /// headers at all when the call failed outright.
    pub fn deliver_call(
        &mut self,
        root: u32,
        token: u32,
        response: Option<CallResponse>,
    ) -> Result<(), FilterError> {
        let cb = self.cb.clone();
        let Some(f) = &cb.http_call_response else {
            return Ok(());
        };
        let (headers, body) = response
            .as_ref()
            .map_or((0, 0), |r| (r.headers.len(), r.body.len()));
        self.store.data_mut().call_response = response;
        let result = self.call(
            f,
            root,
            (root as i32, token as i32, headers as i32, body as i32, 0),
        );
        self.store.data_mut().call_response = None;
        result
    }
}
