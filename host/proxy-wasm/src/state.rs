//! What a VM's host functions can see: the store data. One per VM, on one worker.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use rustygate_filter_api::grpc::{GrpcOutbound, GrpcRequest};
use rustygate_filter_api::{Exchange, LocalResponse};
use rustygate_wasm_runtime::wasmtime::{Memory, ResourceLimiter, TypedFunc};

use crate::shared::Shared;

/// A root context: one configured plugin inside this VM.
pub(crate) struct RootCtx {
    /// Filter name (logs, metric labels, `plugin_name`).
    pub plugin: Rc<str>,
    /// `plugin_root_id`.
    pub root_id: Rc<str>,
    /// Tick period requested with `proxy_set_tick_period_milliseconds`.
    pub tick_ms: u32,
}

/// Which maps a stream's callbacks may change right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Request,
    Response,
    /// `proxy_on_log` and later: everything read-only.
    Done,
}

/// A stream context: one request through one plugin.
pub(crate) struct StreamCtx {
    pub root: u32,
    pub phase: Phase,
    pub exchange: Rc<Exchange>,
    /// Values stored with `proxy_set_property`, readable back in the same stream.
    pub properties: FxHashMap<Vec<u8>, Vec<u8>>,
}

/// Something a callback asked for that takes effect after it returns (no re-entry).
pub(crate) enum Deferred {
    LocalResponse(LocalResponse),
    CloseStream,
    /// `proxy_continue_stream` / `proxy_continue_request|response`: resume one direction of a
    /// paused stream.
    Continue {
        response: bool,
    },
}

/// An outbound call made with `proxy_http_call`, started after the callback returns.
pub(crate) struct PendingCall {
    pub token: u32,
    /// The root context that owns the call and receives its response.
    pub root: u32,
    pub cluster: String,
    pub request: http::Request<Bytes>,
    pub timeout: Option<std::time::Duration>,
}

/// A gRPC call or stream a filter opened (`proxy_grpc_call` / `proxy_grpc_stream`).
pub(crate) struct GrpcHandle {
    /// A stream (events delivered one by one) rather than a unary call (one answer).
    pub stream: bool,
    /// The transport's end, once the call has been started after the callback returned.
    pub outbound: RefCell<Option<Box<dyn GrpcOutbound>>>,
    /// Sends made before the call was started: (message, end_stream).
    pub queued: RefCell<Vec<(Option<Bytes>, bool)>>,
    /// A unary call's response message, held until its status arrives.
    pub reply: RefCell<Option<Bytes>>,
    /// The filter cancelled it.
    pub cancelled: std::cell::Cell<bool>,
}

impl GrpcHandle {
    pub fn new(stream: bool) -> Self {
        Self {
            stream,
            outbound: RefCell::new(None),
            queued: RefCell::new(Vec::new()),
            reply: RefCell::new(None),
            cancelled: std::cell::Cell::new(false),
        }
    }

    pub fn send(&self, message: Option<Bytes>, end_stream: bool) {
        match &*self.outbound.borrow() {
            Some(o) => o.send(message, end_stream),
            None => self.queued.borrow_mut().push((message, end_stream)),
        }
    }

    /// Ends the call; a call not started yet never will be (its handle is gone from
    /// [`HostState::grpc`]).
    pub fn cancel(&self) {
        self.cancelled.set(true);
        if let Some(o) = self.outbound.borrow_mut().take() {
            o.cancel();
        }
    }
}

/// A gRPC call opened during the current callback, started after it returns.
pub(crate) struct PendingGrpc {
    pub token: u32,
    pub root: u32,
    pub cluster: String,
    pub request: GrpcRequest,
    pub handle: Rc<GrpcHandle>,
}

/// What a gRPC callback may read while it runs.
pub(crate) enum GrpcReceived {
    /// Map 4 (`proxy_on_grpc_receive_initial_metadata`) or 5 (trailing).
    Metadata(i32, Vec<(Vec<u8>, Vec<u8>)>),
    /// Buffer 5 (`proxy_on_grpc_receive`).
    Message(Bytes),
}

/// The response readable (map 6, buffer 4) during `proxy_on_http_call_response`.
pub(crate) struct CallResponse {
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Bytes,
}

pub(crate) struct HostState {
    pub memory: Option<Memory>,
    pub alloc: Option<TypedFunc<i32, i32>>,
    /// The module speaks ABI 0.1.0 (missing header values read as empty, not NOT_FOUND).
    pub abi_v01: bool,
    /// During `_initialize` / `_start` only logging and WASI are allowed.
    pub initializing: bool,
    pub limiter: MemoryLimiter,
    /// The running callback's CPU budget.
    pub cpu: rustygate_wasm_runtime::CpuBudget,
    /// The context later host calls act on (`proxy_set_effective_context`).
    pub effective: u32,
    pub roots: FxHashMap<u32, RootCtx>,
    pub streams: FxHashMap<u32, StreamCtx>,
    /// Plugin configuration, readable only during `proxy_on_configure`.
    pub plugin_config: Option<Bytes>,
    pub vm_config: Bytes,
    /// Per context: what the current callback asked for.
    pub deferred: FxHashMap<u32, Deferred>,
    /// Roots that called `proxy_done`.
    pub done: Vec<u32>,
    pub shared: Arc<Shared>,
    pub vm_id: Rc<str>,
    pub rng: fastrand::Rng,
    /// Calls made during the current callback.
    pub calls: Vec<PendingCall>,
    pub next_token: u32,
    /// gRPC calls opened during the current callback.
    pub grpc_calls: Vec<PendingGrpc>,
    /// Open gRPC calls and streams by token (tokens are shared with HTTP calls).
    pub grpc: FxHashMap<u32, Rc<GrpcHandle>>,
    /// Set only while a gRPC callback runs.
    pub grpc_received: Option<GrpcReceived>,
    /// `proxy_get_status` while `proxy_on_grpc_close` runs: (gRPC status, message).
    pub grpc_status: Option<(u32, String)>,
    /// Set only while `proxy_on_http_call_response` runs.
    pub call_response: Option<CallResponse>,
    /// Where `proxy_http_call` goes.
    pub upstreams: Rc<dyn rustygate_filter_api::Upstreams>,
    /// This VM's inbox (shared-queue consumers hand it out).
    pub mailbox: crate::shared::Mailbox,
    /// The last error the module logged (`proxy_log` at error or critical).
    pub last_error: Option<String>,
    /// Tick periods set during the current callback: (root, milliseconds; 0 stops).
    pub tick_changes: Vec<(u32, u32)>,
    /// Unfinished stdout / stderr lines: guests write a line in several pieces.
    pub output: [Vec<u8>; 2],
}

impl HostState {
    /// For an outbound call the current context makes: the root context that owns it (and
    /// receives its response) and a new token. `None` outside any context.
    pub fn new_callout(&mut self) -> Option<(u32, u32)> {
        let ctx = self.effective;
        let root = match self.streams.get(&ctx) {
            Some(s) => s.root,
            None if self.roots.contains_key(&ctx) => ctx,
            None => return None,
        };
        let token = self.next_token;
        self.next_token += 1;
        Some((root, token))
    }

    /// Appends guest output for fd 1 or 2 and logs every complete line.
    pub fn write_output(&mut self, fd: usize, bytes: &[u8]) {
        self.output[fd - 1].extend_from_slice(bytes);
        while let Some(nl) = self.output[fd - 1].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.output[fd - 1].drain(..=nl).collect();
            self.log_output(fd, &line[..line.len() - 1]);
        }
        if self.output[fd - 1].len() > 16 * 1024 {
            let line = std::mem::take(&mut self.output[fd - 1]);
            self.log_output(fd, &line);
        }
    }

    /// Logs whatever partial lines remain (at the end of every callback).
    pub fn flush_output(&mut self) {
        for fd in 1..=2 {
            if !self.output[fd - 1].is_empty() {
                let line = std::mem::take(&mut self.output[fd - 1]);
                self.log_output(fd, &line);
            }
        }
    }

    fn log_output(&self, fd: usize, line: &[u8]) {
        let plugin = self.root_of(self.effective).map_or("", |r| &r.plugin);
        let text = String::from_utf8_lossy(line);
        if fd == 1 {
            tracing::info!(target: "filter", filter = %plugin, stream = "stdout", "{text}");
        } else {
            tracing::error!(target: "filter", filter = %plugin, stream = "stderr", "{text}");
        }
    }

    /// The root context that owns `ctx` (itself, for a root).
    pub fn root_of(&self, ctx: u32) -> Option<&RootCtx> {
        match self.streams.get(&ctx) {
            Some(s) => self.roots.get(&s.root),
            None => self.roots.get(&ctx),
        }
    }
}

/// Caps linear memory, and remembers a refusal so that the trap that usually follows (the
/// guest's allocator aborting) is reported as "memory limit" rather than a generic trap.
pub(crate) struct MemoryLimiter {
    pub max: usize,
    pub denied: bool,
    /// Counts the VM and its linear memory in `rustygate_wasm_vms` and
    /// `rustygate_wasm_memory_bytes` while it lives.
    pub live: rustygate_telemetry::LiveInstance,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime_result::Result<bool> {
        if desired > self.max {
            self.denied = true;
            return Ok(false);
        }
        self.live.grew(desired.saturating_sub(current));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime_result::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

mod wasmtime_result {
    pub use rustygate_wasm_runtime::wasmtime::Result;
}
