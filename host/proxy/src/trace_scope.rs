//! Which request's filter callback is running on this worker, so that an outbound call a
//! filter makes (`proxy_http_call`) continues that request's trace. Filter callbacks are
//! synchronous and a worker runs one at a time, so a cell set around each callback is exact;
//! when tracing is off the cell is never touched.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use rustygate_telemetry::trace::{RequestTrace, Tracer};

/// The worker's tracer and the request whose filter callback is running.
#[derive(Default)]
pub(crate) struct TraceScope {
    pub tracer: Option<Arc<Tracer>>,
    current: RefCell<Option<Rc<RequestTrace>>>,
}

impl TraceScope {
    pub fn new(tracer: Option<Arc<Tracer>>) -> Self {
        Self {
            tracer,
            current: RefCell::new(None),
        }
    }

    /// Runs `f` as part of `trace`'s request.
    pub fn within<T>(&self, trace: &Rc<RequestTrace>, f: impl FnOnce() -> T) -> T {
        let previous = self.current.replace(Some(trace.clone()));
        let out = f();
        *self.current.borrow_mut() = previous;
        out
    }

    /// The tracer and the request being served, if a traced filter callback is running.
    pub fn current(&self) -> Option<(&Tracer, Rc<RequestTrace>)> {
        let tracer = self.tracer.as_deref()?;
        let current = self.current.borrow().clone()?;
        Some((tracer, current))
    }
}
