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
use crate::memory::{give, read, write, write_u32};
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
    register_core(linker)?;
    register_maps(linker)?;
    register_shared(linker)?;
    Ok(())
}

fn register_core(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_log",
        |mut c: C<'_>, level: i32, ptr: i32, len: i32| -> Result<i32> {
            if !(0..=5).contains(&level) {
                return Ok(status::BAD_ARGUMENT);
            }
            let msg = tri!(read(&c, ptr, len));
            let msg = String::from_utf8_lossy(&msg);
            log_line(&c, level, &msg);
            if level >= 4 {
                // Kept so a plugin that refuses its configuration can be told about with the
                // filter's own words.
                c.data_mut().last_error = Some(msg.into_owned());
            }
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: C<'_>, ret: i32| -> Result<i32> {
            let level = if tracing::enabled!(target: "filter", tracing::Level::TRACE) {
                0
            } else if tracing::enabled!(target: "filter", tracing::Level::DEBUG) {
                1
            } else {
                2
            };
            Ok(write_u32(&mut c, ret, level).err().unwrap_or(status::OK))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| -> Result<i32> {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            Ok(write(&mut c, ret, &now.to_le_bytes())
                .err()
                .unwrap_or(status::OK))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, period: i32| -> Result<i32> {
            not_in_init!(c);
            let ctx = c.data().effective;
            let st = c.data_mut();
            let root = st.streams.get(&ctx).map_or(ctx, |s| s.root);
            match st.roots.get_mut(&root) {
                Some(r) => {
                    r.tick_ms = period as u32;
                    st.tick_changes.push((root, period as u32));
                    Ok(status::OK)
                }
                None => Ok(status::BAD_ARGUMENT),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, ctx: i32| -> Result<i32> {
            let id = ctx as u32;
            let st = c.data_mut();
            if st.roots.contains_key(&id) || st.streams.contains_key(&id) {
                st.effective = id;
                Ok(status::OK)
            } else {
                Ok(status::BAD_ARGUMENT)
            }
        },
    )?;
    l.func_wrap("env", "proxy_done", |mut c: C<'_>| -> Result<i32> {
        not_in_init!(c);
        let ctx = c.data().effective;
        let st = c.data_mut();
        if st.roots.contains_key(&ctx) {
            st.done.push(ctx);
            Ok(status::OK)
        } else {
            Ok(status::NOT_FOUND)
        }
    })?;
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: C<'_>, code: i32, ptr: i32, len: i32| -> Result<i32> {
            tri!(write_u32(&mut c, code, 0));
            give_status(&mut c, b"", ptr, len)
        },
    )?;
    // ABI 0.1.0: the plugin configuration while configuring, the VM configuration otherwise.
    l.func_wrap(
        "env",
        "proxy_get_configuration",
        |mut c: C<'_>, ptr: i32, len: i32| -> Result<i32> {
            let st = c.data();
            let bytes = st
                .plugin_config
                .clone()
                .unwrap_or_else(|| st.vm_config.clone());
            give_status(&mut c, &bytes, ptr, len)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, kind: i32, start: i32, max: i32, ptr: i32, len: i32| -> Result<i32> {
            not_in_init!(c);
            if !(0..=buffer::LAST).contains(&kind) {
                return Ok(status::BAD_ARGUMENT);
            }
            let st = c.data();
            let data: Bytes = match kind {
                buffer::PLUGIN_CONFIGURATION => match &st.plugin_config {
                    Some(b) => b.clone(),
                    None => return Ok(status::NOT_FOUND),
                },
                buffer::VM_CONFIGURATION => st.vm_config.clone(),
                buffer::HTTP_CALL_RESPONSE_BODY => match &st.call_response {
                    Some(r) => r.body.clone(),
                    None => return Ok(status::NOT_FOUND),
                },
                buffer::HTTP_REQUEST_BODY | buffer::HTTP_RESPONSE_BODY => {
                    let Some(s) = stream(&c) else {
                        return Ok(status::NOT_FOUND);
                    };
                    let (start, max) = (start as u32 as usize, max as u32 as usize);
                    let bytes = s
                        .exchange
                        .body(body_direction(kind))
                        .borrow()
                        .range(start, max);
                    return give_buffer(&mut c, &bytes, ptr, len);
                }
                _ => return Ok(status::NOT_FOUND),
            };
            // Sizes are unsigned and may be u32::MAX ("everything"): 64-bit math, clamp.
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            let slice = if start >= data.len() {
                &[][..]
            } else {
                &data[start..data.len().min(start.saturating_add(max))]
            };
            give_buffer(&mut c, slice, ptr, len)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: C<'_>, kind: i32, len_ptr: i32, flags_ptr: i32| -> Result<i32> {
            let st = c.data();
            let n = match kind {
                buffer::PLUGIN_CONFIGURATION => match &st.plugin_config {
                    Some(b) => b.len(),
                    None => return Ok(status::NOT_FOUND),
                },
                buffer::VM_CONFIGURATION => st.vm_config.len(),
                buffer::HTTP_CALL_RESPONSE_BODY => match &st.call_response {
                    Some(r) => r.body.len(),
                    None => return Ok(status::NOT_FOUND),
                },
                buffer::HTTP_REQUEST_BODY | buffer::HTTP_RESPONSE_BODY => match stream(&c) {
                    Some(s) => s.exchange.body(body_direction(kind)).borrow().len(),
                    None => return Ok(status::NOT_FOUND),
                },
                k if (0..=buffer::LAST).contains(&k) => return Ok(status::NOT_FOUND),
                _ => return Ok(status::BAD_ARGUMENT),
            };
            tri!(write_u32(&mut c, len_ptr, n as u32));
            Ok(write_u32(&mut c, flags_ptr, 0).err().unwrap_or(status::OK))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |c: C<'_>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| -> Result<i32> {
            not_in_init!(c);
            match kind {
                buffer::HTTP_REQUEST_BODY | buffer::HTTP_RESPONSE_BODY => {}
                // Configurations and call responses are read-only.
                _ => return Ok(status::BAD_ARGUMENT),
            }
            let data = tri!(read(&c, ptr, len));
            let Some(s) = stream(&c) else {
                return Ok(status::NOT_FOUND);
            };
            let edited = s.exchange.body(body_direction(kind)).borrow_mut().splice(
                start as u32 as usize,
                size as u32 as usize,
                Bytes::from(data),
            );
            Ok(match edited {
                Ok(()) => status::OK,
                Err(_) => status::BAD_ARGUMENT,
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, p: i32, plen: i32, ptr: i32, len: i32| -> Result<i32> {
            not_in_init!(c);
            let raw = tri!(read(&c, p, plen));
            let path = properties::split(&raw);
            match properties::get(c.data(), c.data().effective, &path) {
                Some(v) => give_status(&mut c, &v, ptr, len),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C<'_>, p: i32, plen: i32, v: i32, vlen: i32| -> Result<i32> {
            not_in_init!(c);
            let path = tri!(read(&c, p, plen));
            let value = tri!(read(&c, v, vlen));
            let ctx = c.data().effective;
            let key = properties::split(&path).join(&0u8);
            match c.data_mut().streams.get_mut(&ctx) {
                Some(s) => {
                    s.properties.insert(key, value);
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C<'_>,
         code: i32,
         dp: i32,
         dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         _grpc: i32|
         -> Result<i32> {
            not_in_init!(c);
            let details = tri!(read(&c, dp, dl));
            let body = tri!(read(&c, bp, bl));
            let headers_raw = tri!(read(&c, hp, hl));
            let Some(status_code) = u16::try_from(code)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
            else {
                return Ok(status::BAD_ARGUMENT);
            };
            let headers = pairs::decode(&headers_raw)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::from_bytes(&k.to_ascii_lowercase()).ok()?,
                        HeaderValue::from_bytes(v).ok()?,
                    ))
                })
                .collect();
            let ctx = c.data().effective;
            if !c.data().streams.contains_key(&ctx) {
                return Ok(status::BAD_ARGUMENT);
            }
            // Envoy writes spaces in details as underscores.
            let details = String::from_utf8_lossy(&details).replace(' ', "_");
            c.data_mut().deferred.insert(
                ctx,
                Deferred::LocalResponse(LocalResponse {
                    status: status_code,
                    headers,
                    body: Bytes::from(body),
                    details,
                }),
            );
            Ok(status::OK)
        },
    )?;
    // Resuming is recorded and applied after the callback returns (no re-entry). A local
    // response recorded in the same callback wins, as in Envoy.
    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: C<'_>, kind: i32| -> Result<i32> {
            not_in_init!(c);
            Ok(match kind {
                0 | 1 => record_continue(&mut c, kind == 1),
                2 | 3 => status::UNIMPLEMENTED,
                _ => status::BAD_ARGUMENT,
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_continue_request",
        |mut c: C<'_>| -> Result<i32> { Ok(record_continue(&mut c, false)) },
    )?;
    l.func_wrap(
        "env",
        "proxy_continue_response",
        |mut c: C<'_>| -> Result<i32> { Ok(record_continue(&mut c, true)) },
    )?;
    l.func_wrap(
        "env",
        "proxy_clear_route_cache",
        |_c: C<'_>| -> Result<i32> { Ok(status::OK) },
    )?;
    l.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: C<'_>, kind: i32| -> Result<i32> {
            not_in_init!(c);
            if !(0..=3).contains(&kind) {
                return Ok(status::BAD_ARGUMENT);
            }
            let ctx = c.data().effective;
            c.data_mut().deferred.insert(ctx, Deferred::CloseStream);
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "emscripten_notify_memory_growth",
        |_c: C<'_>, _i: i32| {},
    )?;
    l.func_wrap("env", "pthread_equal", |_c: C<'_>, a: i32, b: i32| -> i32 {
        i32::from(a == b)
    })?;
    Ok(())
}

/// The request of a `proxy_http_call`: `:method`, `:path` and `:authority` are required (as
/// in Envoy); other pairs become headers.
fn call_request(raw_headers: &[u8], body: Vec<u8>) -> Option<http::Request<Bytes>> {
    let pairs = pairs::decode(raw_headers)?;
    let (mut method, mut path, mut authority) = (None, None, None);
    let mut builder = http::Request::builder();
    for (k, v) in pairs {
        match k {
            b":method" => method = Some(v),
            b":path" => path = Some(v),
            b":authority" => authority = Some(v),
            k if k.first() == Some(&b':') => {}
            k => builder = builder.header(k.to_ascii_lowercase().as_slice(), v),
        }
    }
    builder
        .method(method?)
        .uri(std::str::from_utf8(path?).ok()?)
        .header(http::header::HOST, authority?)
        .body(Bytes::from(body))
        .ok()
}

/// A header map of a `proxy_http_call` response (map 6; map 7, trailers, is empty).
fn call_pairs(c: &C<'_>, kind: i32) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let r = c.data().call_response.as_ref()?;
    match kind {
        map::HTTP_CALL_RESPONSE_HEADERS => Some(r.headers.clone()),
        map::HTTP_CALL_RESPONSE_TRAILERS => Some(Vec::new()),
        _ => None,
    }
}

fn register_maps(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, kind: i32, ptr: i32, len: i32| -> Result<i32> {
            not_in_init!(c);
            if !(0..=map::LAST).contains(&kind) {
                return Ok(status::BAD_ARGUMENT);
            }
            let list = call_pairs(&c, kind)
                .or_else(|| stream(&c).and_then(|s| maps::pairs(s, kind)))
                .unwrap_or_default();
            let encoded = pairs::encode(list.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
            give_status(&mut c, &encoded, ptr, len)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |c: C<'_>, kind: i32, ptr: i32, len: i32| -> Result<i32> {
            not_in_init!(c);
            let raw = tri!(read(&c, ptr, len));
            let decoded = pairs::decode(&raw).unwrap_or_default();
            Ok(match stream(&c) {
                Some(s) => maps::replace_all(s, kind, &decoded),
                None => status::BAD_ARGUMENT,
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>, kind: i32, kp: i32, kl: i32, ptr: i32, len: i32| -> Result<i32> {
            not_in_init!(c);
            if !(0..=map::LAST).contains(&kind) {
                return Ok(status::BAD_ARGUMENT);
            }
            let key = tri!(read(&c, kp, kl));
            let v1 = c.data().abi_v01;
            let key_lower = key.to_ascii_lowercase();
            let from_call = call_pairs(&c, kind)
                .and_then(|p| p.into_iter().find(|(k, _)| *k == key_lower).map(|(_, v)| v));
            match from_call.or_else(|| stream(&c).and_then(|s| maps::value(s, kind, &key))) {
                Some(v) => give_status(&mut c, &v, ptr, len),
                // ABI 0.1.0 answered a missing key with OK and an empty value.
                None if v1 => give_status(&mut c, b"", ptr, len),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    for (name, replace) in [
        ("proxy_add_header_map_value", false),
        ("proxy_replace_header_map_value", true),
    ] {
        l.func_wrap(
            "env",
            name,
            move |c: C<'_>, kind: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> Result<i32> {
                not_in_init!(c);
                let key = tri!(read(&c, kp, kl));
                let value = tri!(read(&c, vp, vl));
                let op = if replace {
                    Edit::Replace(&value)
                } else {
                    Edit::Add(&value)
                };
                Ok(match stream(&c) {
                    Some(s) => maps::edit(s, kind, &key, op),
                    None => status::BAD_ARGUMENT,
                })
            },
        )?;
    }
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |c: C<'_>, kind: i32, kp: i32, kl: i32| -> Result<i32> {
            not_in_init!(c);
            let key = tri!(read(&c, kp, kl));
            Ok(match stream(&c) {
                Some(s) => maps::edit(s, kind, &key, Edit::Remove),
                None => status::BAD_ARGUMENT,
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: C<'_>, kind: i32, ret: i32| -> Result<i32> {
            not_in_init!(c);
            if !(0..=map::LAST).contains(&kind) {
                return Ok(status::BAD_ARGUMENT);
            }
            let n = stream(&c).map_or(0, |s| maps::byte_size(s, kind));
            Ok(write_u32(&mut c, ret, n).err().unwrap_or(status::OK))
        },
    )?;
    Ok(())
}

fn register_shared(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>, kp: i32, kl: i32, ptr: i32, len: i32, cas_ptr: i32| -> Result<i32> {
            not_in_init!(c);
            let key = tri!(read(&c, kp, kl));
            let st = c.data();
            let Some((value, cas)) = st.shared.get(&st.vm_id, &key) else {
                return Ok(status::NOT_FOUND);
            };
            tri!(crate::memory::check(&c, cas_ptr, 4));
            let s = give_status(&mut c, &value, ptr, len)?;
            if s == status::OK {
                tri!(write_u32(&mut c, cas_ptr, cas));
            }
            Ok(s)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |c: C<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> Result<i32> {
            not_in_init!(c);
            let key = tri!(read(&c, kp, kl));
            let value = tri!(read(&c, vp, vl));
            let st = c.data();
            Ok(if st.shared.set(&st.vm_id, &key, value, cas as u32) {
                status::OK
            } else {
                status::CAS_MISMATCH
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: C<'_>, np: i32, nl: i32, ret: i32| -> Result<i32> {
            not_in_init!(c);
            let name = tri!(read(&c, np, nl));
            let st = c.data();
            let root = st
                .streams
                .get(&st.effective)
                .map_or(st.effective, |s| s.root);
            let id = st
                .shared
                .register_queue(&st.vm_id, &name, (st.mailbox.clone(), root));
            Ok(write_u32(&mut c, ret, id).err().unwrap_or(status::OK))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, vp: i32, vl: i32, np: i32, nl: i32, ret: i32| -> Result<i32> {
            not_in_init!(c);
            let vm = tri!(read(&c, vp, vl));
            let name = tri!(read(&c, np, nl));
            let st = c.data();
            let vm_id = if vm.is_empty() {
                st.vm_id.to_string()
            } else {
                String::from_utf8_lossy(&vm).into_owned()
            };
            match st.shared.resolve_queue(&vm_id, &name) {
                Some(id) => Ok(write_u32(&mut c, ret, id).err().unwrap_or(status::OK)),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |c: C<'_>, id: i32, vp: i32, vl: i32| -> Result<i32> {
            not_in_init!(c);
            let value = tri!(read(&c, vp, vl));
            Ok(if c.data().shared.enqueue(id as u32, value) {
                status::OK
            } else {
                status::NOT_FOUND
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, id: i32, ptr: i32, len: i32| -> Result<i32> {
            not_in_init!(c);
            match c.data().shared.dequeue(id as u32) {
                None => Ok(status::NOT_FOUND),
                Some(None) => Ok(status::EMPTY),
                Some(Some(item)) => give_status(&mut c, &item, ptr, len),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, np: i32, nl: i32, ret: i32| -> Result<i32> {
            not_in_init!(c);
            let kind = match kind {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return Ok(status::BAD_ARGUMENT),
            };
            let name = tri!(read(&c, np, nl));
            let st = c.data();
            let plugin = st
                .root_of(st.effective)
                .map_or("", |r| &r.plugin)
                .to_owned();
            let id = st
                .shared
                .define_metric(kind, &String::from_utf8_lossy(&name), &plugin);
            Ok(write_u32(&mut c, ret, id).err().unwrap_or(status::OK))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: C<'_>, id: i32, delta: i64| -> Result<i32> {
            let Some(m) = c.data().shared.metric(id as u32) else {
                return Ok(status::NOT_FOUND);
            };
            Ok(match m.kind {
                MetricKind::Counter if delta <= 0 => status::BAD_ARGUMENT,
                MetricKind::Histogram => status::BAD_ARGUMENT,
                _ => {
                    m.add(delta);
                    status::OK
                }
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |c: C<'_>, id: i32, value: i64| -> Result<i32> {
            let Some(m) = c.data().shared.metric(id as u32) else {
                return Ok(status::NOT_FOUND);
            };
            m.record(value as u64);
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, ret: i32| -> Result<i32> {
            let Some(m) = c.data().shared.metric(id as u32) else {
                return Ok(status::NOT_FOUND);
            };
            if m.kind == MetricKind::Histogram {
                return Ok(status::BAD_ARGUMENT);
            }
            let v = m.value.load(std::sync::atomic::Ordering::Relaxed) as u64;
            Ok(write(&mut c, ret, &v.to_le_bytes())
                .err()
                .unwrap_or(status::OK))
        },
    )?;
    // Outbound calls are the next step of the host (docs/filters/proxy-wasm.md). Until then
    // they fail in the ways the SDKs handle without trapping: INTERNAL_FAILURE for starting a
    // call, NOT_FOUND for tokens that cannot exist, NOT_FOUND for unknown foreign functions.
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C<'_>,
         up: i32,
         up_len: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         _tp: i32,
         _tl: i32,
         timeout: i32,
         ret: i32|
         -> Result<i32> {
            not_in_init!(c);
            let cluster = tri!(read(&c, up, up_len));
            let headers = tri!(read(&c, hp, hl));
            let body = tri!(read(&c, bp, bl));
            tri!(crate::memory::check(&c, ret, 4));
            let cluster = String::from_utf8_lossy(&cluster).into_owned();
            if !c.data().upstreams.has_cluster(&cluster) || timeout < 0 {
                return Ok(status::BAD_ARGUMENT);
            }
            let Some(request) = call_request(&headers, body) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let st = c.data_mut();
            let ctx = st.effective;
            let root = match st.streams.get(&ctx) {
                Some(s) => s.root,
                None if st.roots.contains_key(&ctx) => ctx,
                None => return Ok(status::BAD_ARGUMENT),
            };
            let token = st.next_token;
            st.next_token += 1;
            st.calls.push(crate::state::PendingCall {
                token,
                root,
                cluster,
                request,
                timeout: (timeout > 0).then(|| std::time::Duration::from_millis(timeout as u64)),
            });
            Ok(write_u32(&mut c, ret, token).err().unwrap_or(status::OK))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |c: C<'_>,
         _a: i32,
         _b: i32,
         _c3: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _t: i32,
         _r: i32|
         -> Result<i32> {
            not_in_init!(c);
            Ok(status::INTERNAL_FAILURE)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |c: C<'_>,
         _a: i32,
         _b: i32,
         _c3: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _r: i32|
         -> Result<i32> {
            not_in_init!(c);
            Ok(status::INTERNAL_FAILURE)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |_c: C<'_>, _t: i32, _p: i32, _l: i32, _e: i32| -> Result<i32> { Ok(status::NOT_FOUND) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |_c: C<'_>, _t: i32| -> Result<i32> { Ok(status::NOT_FOUND) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_close",
        |_c: C<'_>, _t: i32| -> Result<i32> { Ok(status::NOT_FOUND) },
    )?;
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: C<'_>, np: i32, nl: i32, ap: i32, al: i32, rp: i32, rl: i32| -> Result<i32> {
            not_in_init!(c);
            let name = tri!(read(&c, np, nl));
            let args = tri!(read(&c, ap, al));
            let result = match name.as_slice() {
                b"rustygate_rate_limit" => c.data().shared.limiter.call(&args),
                _ => return Ok(status::NOT_FOUND),
            };
            match result {
                Some(bytes) => give_status(&mut c, &bytes, rp, rl),
                None => Ok(status::BAD_ARGUMENT),
            }
        },
    )?;
    Ok(())
}
