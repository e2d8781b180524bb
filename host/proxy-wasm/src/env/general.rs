//! Logging, time, configuration and body buffers, properties, effective context, stream
//! control and local responses.

use crate::state::GrpcReceived;

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn register(l: &mut Linker<HostState>) -> Result<()> {
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
            // The status of the gRPC call whose close is being delivered; OK otherwise.
            let (status, message) = c.data().grpc_status.clone().unwrap_or_default();
            tri!(write_u32(&mut c, code, status));
            give_status(&mut c, message.as_bytes(), ptr, len)
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
                buffer::GRPC_RECEIVE_BUFFER => match &st.grpc_received {
                    Some(GrpcReceived::Message(m)) => m.clone(),
                    _ => return Ok(status::NOT_FOUND),
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
                buffer::GRPC_RECEIVE_BUFFER => match &st.grpc_received {
                    Some(GrpcReceived::Message(m)) => m.len(),
                    _ => return Ok(status::NOT_FOUND),
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
            let found = {
                let path = properties::split(tri!(slice(&c, p, plen)));
                properties::get(c.data(), c.data().effective, &path)
            };
            match found {
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
         grpc: i32|
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
                    // The SDKs pass -1 for "none"; Envoy takes only a known code.
                    grpc_status: u32::try_from(grpc).ok().filter(|c| *c <= 16),
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
            // As in Envoy's HTTP filters: the downstream connection is not the filter's to
            // resume (OK, nothing happens), the upstream cannot be resumed at all.
            Ok(match kind {
                0 | 1 => record_continue(&mut c, kind == 1),
                2 => status::OK,
                3 => status::UNIMPLEMENTED,
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
            match kind {
                0 | 1 => {
                    let ctx = c.data().effective;
                    c.data_mut().deferred.insert(ctx, Deferred::CloseStream);
                    Ok(status::OK)
                }
                // The connections are not an HTTP filter's to close: Envoy answers OK and
                // does nothing (only its network filters act on these), and a filter built
                // for it behaves the same here.
                2 | 3 => Ok(status::OK),
                _ => Ok(status::BAD_ARGUMENT),
            }
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
