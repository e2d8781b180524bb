//! The filter-api implementation: a worker's VM slot, the per-plugin factory, and the
//! per-request filter that drives callbacks.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;
use http::StatusCode;
use rustygate_filter_api::{
    Exchange, FailurePolicy, FilterError, FilterFactory, HttpFilter, LocalResponse, Verdict,
};

use crate::state::Deferred;
use crate::vm::{Vm, VmSpec};

struct Plugin {
    name: Rc<str>,
    root_id: Rc<str>,
    config: Bytes,
}

/// One VM on one worker, and the plugins (root contexts) it hosts. When the VM fails it is
/// rebuilt, with the same plugins, after the request that saw the failure has ended.
pub(crate) struct VmSlot {
    spec: VmSpec,
    plugins: RefCell<Vec<Plugin>>,
    vm: RefCell<Vm>,
    /// Root context id of each plugin in the current VM.
    roots: RefCell<Vec<u32>>,
    /// Bumped on every rebuild; a request only talks to the VM it started on.
    generation: Cell<u64>,
}

impl VmSlot {
    pub fn new(spec: VmSpec, vm: Vm) -> Self {
        Self {
            spec,
            plugins: RefCell::new(Vec::new()),
            vm: RefCell::new(vm),
            roots: RefCell::new(Vec::new()),
            generation: Cell::new(0),
        }
    }

    /// Starts a plugin in this VM; returns its index.
    pub fn add_plugin(
        &self,
        name: Rc<str>,
        root_id: Rc<str>,
        config: Bytes,
    ) -> Result<usize, String> {
        let root =
            self.vm
                .borrow_mut()
                .start_plugin(name.clone(), root_id.clone(), config.clone())?;
        self.roots.borrow_mut().push(root);
        let mut plugins = self.plugins.borrow_mut();
        plugins.push(Plugin {
            name,
            root_id,
            config,
        });
        Ok(plugins.len() - 1)
    }

    /// Replaces a failed VM with a fresh instance and restarts its plugins.
    fn rebuild_if_failed(&self) {
        if self.vm.borrow().failed.is_none() {
            return;
        }
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
        match created {
            Ok(ctx) => Ok(Box::new(Stream {
                slot: self.slot.clone(),
                ctx,
                generation,
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
}

impl Stream {
    fn headers(
        &mut self,
        exchange: &Exchange,
        response: bool,
        eos: bool,
    ) -> Result<Verdict, FilterError> {
        if self.slot.generation.get() != self.generation {
            return Err(FilterError::Unavailable(
                "the filter's VM was replaced".into(),
            ));
        }
        let n = if response {
            exchange
                .response
                .borrow()
                .as_ref()
                .map_or(0, |r| r.headers.len() + 1)
        } else {
            exchange.request.borrow().headers.len() + 4
        };
        let (action, deferred) = self
            .slot
            .vm
            .borrow_mut()
            .on_headers(self.ctx, response, n, eos)?;
        match deferred {
            Some(Deferred::LocalResponse(r)) => Ok(Verdict::Respond(r)),
            Some(Deferred::CloseStream) => Ok(Verdict::Respond(LocalResponse {
                status: StatusCode::SERVICE_UNAVAILABLE,
                headers: Vec::new(),
                body: Bytes::new(),
                details: "wasm_close_stream".into(),
            })),
            // 0 Continue; 2 ContinueAndEndStream, which Envoy treats as Continue.
            None if action == 0 || action == 2 => Ok(Verdict::Continue),
            None => Err(FilterError::Unavailable(
                "the filter paused the request, and resuming paused requests is not supported yet"
                    .into(),
            )),
        }
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

    fn complete(&mut self) {
        if self.slot.generation.get() == self.generation {
            self.slot.vm.borrow_mut().finish_stream(self.ctx);
        }
        self.slot.rebuild_if_failed();
    }
}
