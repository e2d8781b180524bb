//! The filter-api implementation: a worker's VM slot, the per-plugin factory, and the
//! per-request filter that drives callbacks.
//!
//! Everything a callback asks for beyond its own return value (outbound calls, resuming or
//! answering another stream) is collected while it runs and acted on here, after it returned:
//! the module is never re-entered.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use rustygate_filter_api::grpc::{GrpcEvent, code};
use rustygate_filter_api::{
    BodyVerdict, Direction, Exchange, FailurePolicy, FilterError, FilterFactory, HttpFilter,
    LocalFuture, Verdict,
};
use tokio::sync::Notify;

use crate::shared::Mail;
use crate::state::{CallResponse, Deferred, PendingGrpc};
use crate::vm::{Vm, VmSpec};

struct Plugin {
    name: Rc<str>,
    root_id: Rc<str>,
    config: Bytes,
}

/// How a paused stream is woken.
#[derive(Default)]
struct Waiter {
    outcome: RefCell<Option<Result<Verdict, FilterError>>>,
    notify: Notify,
}

/// One VM on one worker, and the plugins (root contexts) it hosts. When the VM fails it is
/// rebuilt, with the same plugins, after the request that saw the failure has ended.
pub(crate) struct VmSlot {
    spec: VmSpec,
    plugins: RefCell<Vec<Plugin>>,
    vm: RefCell<Vm>,
    /// Root context id of each plugin in the current VM.
    roots: RefCell<Vec<u32>>,
    /// Bumped on every rebuild; a request or a call only talks to the VM it started on.
    generation: Cell<u64>,
    /// Paused streams by context id and direction (`true`: response).
    waiters: RefCell<FxHashMap<(u32, bool), Rc<Waiter>>>,
    /// The current ticker of each root context; a ticker whose number is no longer here stops.
    tickers: RefCell<FxHashMap<u32, u64>>,
    next_ticker: Cell<u64>,
}

impl VmSlot {
    pub fn new(spec: VmSpec, vm: Vm) -> Self {
        Self {
            spec,
            plugins: RefCell::new(Vec::new()),
            vm: RefCell::new(vm),
            roots: RefCell::new(Vec::new()),
            generation: Cell::new(0),
            waiters: RefCell::default(),
            tickers: RefCell::default(),
            next_ticker: Cell::new(0),
        }
    }

    /// Delivers work posted to this VM from other threads (shared-queue notifications), on
    /// this worker, one callback at a time like everything else.
    pub fn receive(self: &Rc<Self>, mut inbox: tokio::sync::mpsc::UnboundedReceiver<Mail>) {
        let slot = Rc::downgrade(self);
        self.spec.upstreams.spawn(Box::pin(async move {
            while let Some(mail) = inbox.recv().await {
                let Some(slot) = slot.upgrade() else { return };
                match mail {
                    Mail::QueueReady { root, queue } => {
                        let _ = slot.vm.borrow_mut().on_queue_ready(root, queue);
                    }
                }
                slot.after_callback();
                slot.rebuild_if_failed();
            }
        }));
    }

    /// Starts (or, with period 0, stops) `proxy_on_tick` for a root context. Ticks are per
    /// worker, as in Envoy: each worker's VM has its own timer.
    fn tick(self: &Rc<Self>, root: u32, period_ms: u32) {
        let id = self.next_ticker.get() + 1;
        self.next_ticker.set(id);
        self.tickers.borrow_mut().insert(root, id);
        if period_ms == 0 {
            return;
        }
        let slot = Rc::downgrade(self);
        let generation = self.generation.get();
        let period = std::time::Duration::from_millis(u64::from(period_ms));
        self.spec.upstreams.spawn(Box::pin(async move {
            let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                timer.tick().await;
                let Some(slot) = slot.upgrade() else { return };
                let current = slot.tickers.borrow().get(&root) == Some(&id);
                if !current || slot.generation.get() != generation {
                    return;
                }
                let _ = slot.vm.borrow_mut().on_tick(root);
                slot.after_callback();
                slot.rebuild_if_failed();
            }
        }));
    }

    /// Starts a plugin in this VM; returns its index.
    pub fn add_plugin(
        self: &Rc<Self>,
        name: Rc<str>,
        root_id: Rc<str>,
        config: Bytes,
    ) -> Result<usize, String> {
        let root =
            self.vm
                .borrow_mut()
                .start_plugin(name.clone(), root_id.clone(), config.clone())?;
        self.roots.borrow_mut().push(root);
        self.plugins.borrow_mut().push(Plugin {
            name,
            root_id,
            config,
        });
        // A plugin may call out from its configure callback (a JWKS fetch, say).
        self.after_callback();
        Ok(self.plugins.borrow().len() - 1)
    }

    /// Acts on what the last callback asked for: wakes streams it resumed or answered, and
    /// starts the calls it made. On a failed VM, every paused stream is woken with the failure.
    /// Most callbacks ask for nothing: that check is inlined at every call site.
    #[inline]
    fn after_callback(self: &Rc<Self>) {
        if self.vm.borrow().has_aftermath() {
            self.act_on_aftermath();
        }
    }

    #[inline(never)]
    fn act_on_aftermath(self: &Rc<Self>) {
        let (calls, grpc_calls, deferred, ticks, failed) = {
            let mut vm = self.vm.borrow_mut();
            (
                vm.take_calls(),
                vm.take_grpc_calls(),
                vm.take_deferred(),
                vm.take_tick_changes(),
                vm.failed.clone(),
            )
        };
        for (root, period) in ticks {
            self.tick(root, period);
        }
        for (ctx, action) in deferred {
            match action {
                Deferred::Continue { response } => self.wake((ctx, response), Ok(action)),
                // An answer ends both directions.
                _ => {
                    let answer = verdict_of(action);
                    for key in [(ctx, false), (ctx, true)] {
                        let again = match &answer {
                            Verdict::Respond(r) => Verdict::Respond(r.clone()),
                            Verdict::Reset => Verdict::Reset,
                            _ => Verdict::Continue,
                        };
                        self.wake_with(key, Ok(again));
                    }
                }
            }
        }
        if let Some(e) = failed {
            let all: Vec<(u32, bool)> = self.waiters.borrow().keys().copied().collect();
            for key in all {
                self.wake_with(key, Err(e.clone()));
            }
            return;
        }
        for call in calls {
            let slot = self.clone();
            let generation = self.generation.get();
            let upstreams = self.spec.upstreams.clone();
            let fut = upstreams.call(&call.cluster, call.request, call.timeout);
            self.spec.upstreams.spawn(Box::pin(async move {
                let result = fut.await;
                slot.deliver(generation, call.root, call.token, result);
            }));
        }
        for call in grpc_calls {
            self.start_grpc(call);
        }
    }

    /// Starts a gRPC call the last callback opened. Its events reach the VM only while this
    /// slot lives: a replaced VM drops its calls' handles, which cancels them.
    fn start_grpc(self: &Rc<Self>, call: PendingGrpc) {
        if call.handle.cancelled.get() {
            return; // cancelled in the callback that opened it: never sent
        }
        let weak = Rc::downgrade(self);
        let generation = self.generation.get();
        let (root, token) = (call.root, call.token);
        let events = Box::new(move |event: GrpcEvent| {
            if let Some(slot) = weak.upgrade() {
                slot.deliver_grpc(generation, root, token, event);
            }
        });
        match self
            .spec
            .upstreams
            .grpc(&call.cluster, call.request, events)
        {
            Ok(outbound) => {
                for (message, end) in call.handle.queued.take() {
                    outbound.send(message, end);
                }
                *call.handle.outbound.borrow_mut() = Some(outbound);
            }
            Err(e) => {
                // Delivered from a task of its own, as every call outcome is.
                let slot = self.clone();
                self.spec.upstreams.spawn(Box::pin(async move {
                    let event = GrpcEvent::Close {
                        status: code::UNAVAILABLE,
                        message: e,
                    };
                    slot.deliver_grpc(generation, root, token, event);
                }));
            }
        }
    }

    fn deliver_grpc(self: &Rc<Self>, generation: u64, root: u32, token: u32, event: GrpcEvent) {
        if generation != self.generation.get() {
            return;
        }
        let _ = self.vm.borrow_mut().deliver_grpc(root, token, event);
        self.after_callback();
        self.rebuild_if_failed();
    }

    fn wake(&self, key: (u32, bool), outcome: Result<Deferred, FilterError>) {
        self.wake_with(key, outcome.map(verdict_of));
    }

    fn wake_with(&self, key: (u32, bool), outcome: Result<Verdict, FilterError>) {
        let waiter = self.waiters.borrow_mut().remove(&key);
        if let Some(w) = waiter {
            *w.outcome.borrow_mut() = Some(outcome);
            w.notify.notify_one();
        }
    }

    fn deliver(
        self: &Rc<Self>,
        generation: u64,
        root: u32,
        token: u32,
        result: Result<http::Response<Bytes>, String>,
    ) {
        if generation != self.generation.get() {
            return; // the VM that made the call is gone
        }
        let response = match result {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let mut headers = vec![(
                    b":status".to_vec(),
                    parts.status.as_str().as_bytes().to_vec(),
                )];
                headers.extend(
                    parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())),
                );
                Some(CallResponse { headers, body })
            }
            Err(e) => {
                tracing::warn!(target: "filter", error = %e, "http_call failed");
                None
            }
        };
        let _ = self.vm.borrow_mut().deliver_call(root, token, response);
        self.after_callback();
    }

    /// Replaces a failed VM with a fresh instance and restarts its plugins.
    #[inline]
    fn rebuild_if_failed(self: &Rc<Self>) {
        if self.vm.borrow().failed.is_some() {
            self.rebuild();
        }
    }

    #[inline(never)]
    fn rebuild(self: &Rc<Self>) {
        self.after_callback();
        let result = Vm::new(&self.spec).and_then(|mut vm| {
            let roots = self
                .plugins
                .borrow()
                .iter()
                .map(|p| vm.start_plugin(p.name.clone(), p.root_id.clone(), p.config.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((vm, roots))
        });
        match result {
            Ok((vm, roots)) => {
                *self.vm.borrow_mut() = vm;
                *self.roots.borrow_mut() = roots;
                self.generation.set(self.generation.get() + 1);
                tracing::info!(target: "filter", vm_id = %self.spec.vm_id, "replaced a failed filter VM");
                self.after_callback();
            }
            Err(e) => {
                tracing::error!(target: "filter", error = %e, "cannot replace a failed filter VM; will retry")
            }
        }
    }
}

/// Creates per-request filters for one plugin on one worker.
pub(crate) struct Factory {
    slot: Rc<VmSlot>,
    plugin: usize,
    name: Rc<str>,
    policy: FailurePolicy,
}

impl Factory {
    pub fn new(slot: Rc<VmSlot>, plugin: usize, name: Rc<str>, policy: FailurePolicy) -> Self {
        Self {
            slot,
            plugin,
            name,
            policy,
        }
    }
}

impl FilterFactory for Factory {
    fn name(&self) -> &str {
        &self.name
    }

    fn failure_policy(&self) -> FailurePolicy {
        self.policy
    }

    fn create(&self, exchange: &Rc<Exchange>) -> Result<Box<dyn HttpFilter>, FilterError> {
        let root = self.slot.roots.borrow()[self.plugin];
        let generation = self.slot.generation.get();
        let created = self
            .slot
            .vm
            .borrow_mut()
            .create_stream(root, exchange.clone());
        self.slot.after_callback();
        match created {
            Ok(ctx) => Ok(Box::new(Stream {
                slot: self.slot.clone(),
                ctx,
                generation,
                holding: [false; 2],
            })),
            Err(e) => {
                // Nothing else will end this request's use of the VM: rebuild now, after the
                // failure, so the next request finds a working VM.
                self.slot.rebuild_if_failed();
                Err(e)
            }
        }
    }
}

struct Stream {
    slot: Rc<VmSlot>,
    ctx: u32,
    generation: u64,
    /// Whether this stream may have a waiter in `slot.waiters`, per direction (request,
    /// response): only `hold` adds one, so without it there is nothing to remove, and the
    /// common case (every callback continues) touches no map.
    holding: [bool; 2],
}

fn verdict_of(action: Deferred) -> Verdict {
    match action {
        Deferred::LocalResponse(r) => Verdict::Respond(r),
        // Envoy resets the stream (HTTP request or response) or closes the connection
        // (downstream, upstream); either way the client gets no answer.
        Deferred::CloseStream => Verdict::Reset,
        Deferred::Continue { .. } => Verdict::Continue,
    }
}

impl Stream {
    fn check(&self) -> Result<(), FilterError> {
        if self.slot.generation.get() != self.generation {
            return Err(FilterError::Unavailable(
                "the filter's VM was replaced".into(),
            ));
        }
        Ok(())
    }

    /// Holds `direction` of this stream until the filter continues it or answers.
    fn hold(&mut self, response: bool) {
        self.holding[usize::from(response)] = true;
        self.slot
            .waiters
            .borrow_mut()
            .entry((self.ctx, response))
            .or_default();
    }

    fn release(&mut self, response: bool) {
        if std::mem::take(&mut self.holding[usize::from(response)]) {
            self.slot.waiters.borrow_mut().remove(&(self.ctx, response));
        }
    }

    /// The verdict of a headers or trailers callback.
    fn stop_or_go(&mut self, response: bool, action: i32, deferred: Option<Deferred>) -> Verdict {
        match deferred {
            Some(d) => verdict_of(d),
            // 0 Continue; 2 ContinueAndEndStream, which Envoy treats as Continue.
            None if action == 0 || action == 2 => Verdict::Continue,
            // Any stop value: hold the stream until the filter continues or answers it.
            None => {
                self.hold(response);
                Verdict::Pause
            }
        }
    }

    fn headers(
        &mut self,
        exchange: &Exchange,
        response: bool,
        eos: bool,
    ) -> Result<Verdict, FilterError> {
        self.check()?;
        let n = if response {
            exchange
                .response
                .borrow()
                .as_ref()
                .map_or(0, |r| r.headers.len() + 1)
        } else {
            exchange.request.borrow().headers.len() + 4
        };
        let result = self
            .slot
            .vm
            .borrow_mut()
            .on_headers(self.ctx, response, n, eos);
        self.slot.after_callback();
        let (action, deferred) = result?;
        Ok(self.stop_or_go(response, action, deferred))
    }
}

impl HttpFilter for Stream {
    fn on_request_headers(
        &mut self,
        exchange: &Rc<Exchange>,
        end_of_stream: bool,
    ) -> Result<Verdict, FilterError> {
        self.headers(exchange, false, end_of_stream)
    }

    fn on_response_headers(
        &mut self,
        exchange: &Rc<Exchange>,
        end_of_stream: bool,
    ) -> Result<Verdict, FilterError> {
        self.headers(exchange, true, end_of_stream)
    }

    fn on_body(
        &mut self,
        exchange: &Rc<Exchange>,
        direction: Direction,
        end_of_stream: bool,
    ) -> Result<BodyVerdict, FilterError> {
        self.check()?;
        let response = direction == Direction::Response;
        let size = exchange.body(direction).borrow().len();
        let result = self
            .slot
            .vm
            .borrow_mut()
            .on_body(self.ctx, response, size, end_of_stream);
        self.slot.after_callback();
        let (action, deferred) = result?;
        Ok(match deferred.map(verdict_of) {
            Some(Verdict::Respond(r)) => BodyVerdict::Respond(r),
            Some(Verdict::Reset) => BodyVerdict::Reset,
            // Continued from within its own callback.
            Some(_) => {
                self.release(response);
                BodyVerdict::Continue
            }
            None => match action {
                0 => {
                    self.release(response);
                    BodyVerdict::Continue
                }
                // StopIterationAndBuffer; StopIterationAndWatermark, which Envoy also keeps
                // (with flow control, here the buffer limit).
                1 | 2 => {
                    self.hold(response);
                    BodyVerdict::Buffer
                }
                _ => {
                    self.hold(response);
                    BodyVerdict::StopNoBuffer
                }
            },
        })
    }

    fn on_trailers(
        &mut self,
        exchange: &Rc<Exchange>,
        direction: Direction,
    ) -> Result<Verdict, FilterError> {
        self.check()?;
        let response = direction == Direction::Response;
        let n = exchange
            .trailers(direction)
            .borrow()
            .as_ref()
            .map_or(0, |t| t.len());
        let result = self.slot.vm.borrow_mut().on_trailers(self.ctx, response, n);
        self.slot.after_callback();
        let (action, deferred) = result?;
        Ok(self.stop_or_go(response, action, deferred))
    }

    fn wants_body(&self, direction: Direction) -> bool {
        self.slot.generation.get() == self.generation
            && self
                .slot
                .vm
                .borrow()
                .has_body_callbacks(direction == Direction::Response)
    }

    fn reads_response_late(&self) -> bool {
        self.slot.vm.borrow().has_late_callbacks()
    }

    fn resumed(
        &mut self,
        direction: Direction,
    ) -> LocalFuture<'static, Result<Verdict, FilterError>> {
        let key = (self.ctx, direction == Direction::Response);
        let waiter = self.slot.waiters.borrow().get(&key).cloned();
        Box::pin(async move {
            let Some(w) = waiter else {
                return Ok(Verdict::Continue);
            };
            loop {
                if let Some(outcome) = w.outcome.borrow_mut().take() {
                    return outcome;
                }
                w.notify.notified().await;
            }
        })
    }

    fn complete(&mut self) {
        self.release(false);
        self.release(true);
        if self.slot.generation.get() == self.generation {
            self.slot.vm.borrow_mut().finish_stream(self.ctx);
            self.slot.after_callback();
        }
        self.slot.rebuild_if_failed();
    }
}
