//! The `env.proxy_*` host functions. Every one follows the same order: refuse during module
//! initialisation (only logging is allowed there, as in Envoy), decode ids, read and check
//! guest memory, act on host state, write results to guest memory last, return a status.
//! Nothing here calls back into the module except its allocator, and nothing panics on guest
//! input.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use rustygate_filter_api::LocalResponse;
use rustygate_wasm_runtime::wasmtime::{Caller, Linker, Result};

use crate::abi::{buffer, map, status};
use crate::maps::{self, Edit};
use crate::memory::{give, read, slice, write, write_u32};
use crate::pairs;
use crate::properties;
use crate::shared::MetricKind;
use crate::state::{Deferred, HostState};

type C<'a> = Caller<'a, HostState>;

/// Evaluates to the status when a guest-memory step fails.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(status) => return Ok(status),
        }
    };
}

/// Refuses a host call made while the module is still initialising.
macro_rules! not_in_init {
    ($caller:expr) => {
        if $caller.data().initializing {
            tracing::error!(target: "filter", "proxy-wasm host call during module initialisation refused");
            return Ok(status::INTERNAL_FAILURE);
        }
    };
}

mod general;
mod header_maps;
mod sharing;

/// Returns `bytes` through the two return pointers and yields the status.
fn give_status(caller: &mut C<'_>, bytes: &[u8], ret_ptr: i32, ret_len: i32) -> Result<i32> {
    Ok(match give(caller, bytes, ret_ptr, ret_len)? {
        Ok(()) => status::OK,
        Err(s) => s,
    })
}

/// Buffer reads as Envoy answers them: nothing to copy is OK with the return slots left
/// untouched (the AssemblyScript runtime relies on that for an empty plugin configuration).
fn give_buffer(caller: &mut C<'_>, bytes: &[u8], ret_ptr: i32, ret_len: i32) -> Result<i32> {
    if bytes.is_empty() {
        return Ok(status::OK);
    }
    give_status(caller, bytes, ret_ptr, ret_len)
}

fn record_continue(c: &mut C<'_>, response: bool) -> i32 {
    let st = c.data_mut();
    let ctx = st.effective;
    if !st.streams.contains_key(&ctx) {
        return status::BAD_ARGUMENT;
    }
    st.deferred
        .entry(ctx)
        .or_insert(Deferred::Continue { response });
    status::OK
}

fn body_direction(kind: i32) -> rustygate_filter_api::Direction {
    if kind == buffer::HTTP_RESPONSE_BODY {
        rustygate_filter_api::Direction::Response
    } else {
        rustygate_filter_api::Direction::Request
    }
}

/// The stream the current (effective) context refers to; `None` for root contexts.
fn stream<'a>(c: &'a C<'_>) -> Option<&'a crate::state::StreamCtx> {
    c.data().streams.get(&c.data().effective)
}

fn log_line(caller: &C<'_>, level: i32, msg: &str) {
    let st = caller.data();
    let ctx = st.effective;
    let plugin = st.root_of(ctx).map_or("", |r| &r.plugin).to_owned();
    let request_id = st
        .streams
        .get(&ctx)
        .map(|s| String::from_utf8_lossy(s.exchange.info.request_id.as_bytes()).into_owned())
        .unwrap_or_default();
    macro_rules! emit {
        ($lvl:ident) => {
            tracing::$lvl!(target: "filter", filter = %plugin, request_id = %request_id, context = ctx, "{msg}")
        };
    }
    match level {
        0 => emit!(trace),
        1 => emit!(debug),
        2 => emit!(info),
        3 => emit!(warn),
        _ => emit!(error),
    }
}

/// Registers every `env.proxy_*` function (and Emscripten's two leftovers) in `linker`.
pub(crate) fn register(linker: &mut Linker<HostState>) -> Result<()> {
    general::register(linker)?;
    header_maps::register(linker)?;
    sharing::register(linker)?;
    Ok(())
}
