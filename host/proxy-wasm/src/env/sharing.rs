//! Shared data, shared queues, metrics, outbound calls, foreign functions.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn register(l: &mut Linker<HostState>) -> Result<()> {
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
