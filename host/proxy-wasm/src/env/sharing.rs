//! Shared data, shared queues, metrics, outbound calls, foreign functions.

use std::rc::Rc;

use rustygate_filter_api::grpc::GrpcRequest;

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
            let Some((root, token)) = st.new_callout() else {
                return Ok(status::BAD_ARGUMENT);
            };
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
         up: i32,
         up_len: i32,
         sp: i32,
         sl: i32,
         mp: i32,
         ml: i32,
         md: i32,
         md_len: i32,
         msg: i32,
         msg_len: i32,
         timeout: i32,
         ret: i32|
         -> Result<i32> {
            not_in_init!(c);
            let message = tri!(read(&c, msg, msg_len));
            let timeout = (timeout as u32 > 0)
                .then(|| std::time::Duration::from_millis(timeout as u32 as u64));
            let args = GrpcArgs::read(&c, (up, up_len), (sp, sl), (mp, ml), (md, md_len));
            open_grpc(c, args, timeout, Some(Bytes::from(message)), ret)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |c: C<'_>,
         up: i32,
         up_len: i32,
         sp: i32,
         sl: i32,
         mp: i32,
         ml: i32,
         md: i32,
         md_len: i32,
         ret: i32|
         -> Result<i32> {
            not_in_init!(c);
            let args = GrpcArgs::read(&c, (up, up_len), (sp, sl), (mp, ml), (md, md_len));
            open_grpc(c, args, None, None, ret)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |c: C<'_>, token: i32, ptr: i32, len: i32, end: i32| -> Result<i32> {
            let Some(handle) = c.data().grpc.get(&(token as u32)).cloned() else {
                return Ok(status::NOT_FOUND);
            };
            if !handle.stream {
                return Ok(status::BAD_ARGUMENT);
            }
            let message = tri!(read(&c, ptr, len));
            // An empty message is still a message (Envoy frames it too); only
            // `proxy_grpc_close` half-closes without one.
            handle.send(Some(Bytes::from(message)), end != 0);
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |mut c: C<'_>, token: i32| -> Result<i32> {
            match c.data_mut().grpc.remove(&(token as u32)) {
                Some(handle) => {
                    handle.cancel();
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_close",
        |mut c: C<'_>, token: i32| -> Result<i32> {
            let st = c.data_mut();
            let Some(handle) = st.grpc.get(&(token as u32)).cloned() else {
                return Ok(status::NOT_FOUND);
            };
            if handle.stream {
                // Half-close: the peer's messages and status still arrive.
                handle.send(None, true);
            } else {
                // A unary call has nothing left to half-close: closing it ends it, as in Envoy.
                st.grpc.remove(&(token as u32));
                handle.cancel();
            }
            Ok(status::OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: C<'_>, np: i32, nl: i32, ap: i32, al: i32, rp: i32, rl: i32| -> Result<i32> {
            not_in_init!(c);
            let result = {
                let args = tri!(slice(&c, ap, al));
                match tri!(slice(&c, np, nl)) {
                    b"rustygate_rate_limit" => c.data().shared.limiter.call(args),
                    b"compress" => Some(crate::foreign::compress(args)),
                    b"uncompress" => match crate::foreign::uncompress(args, c.data().limiter.max) {
                        Some(bytes) => Some(bytes),
                        None => return Ok(status::SERIALIZATION_FAILURE),
                    },
                    _ => return Ok(status::NOT_FOUND),
                }
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

/// The arguments `proxy_grpc_call` and `proxy_grpc_stream` share, read from guest memory.
struct GrpcArgs {
    upstream: Vec<u8>,
    service: Vec<u8>,
    method: Vec<u8>,
    metadata: Vec<u8>,
}

impl GrpcArgs {
    fn read(
        c: &C<'_>,
        up: (i32, i32),
        service: (i32, i32),
        method: (i32, i32),
        metadata: (i32, i32),
    ) -> Result<Self, i32> {
        Ok(Self {
            upstream: read(c, up.0, up.1)?,
            service: read(c, service.0, service.1)?,
            method: read(c, method.0, method.1)?,
            metadata: read(c, metadata.0, metadata.1)?,
        })
    }
}

/// Records a gRPC call or stream, started when the callback returns (as HTTP calls are).
fn open_grpc(
    mut c: C<'_>,
    args: Result<GrpcArgs, i32>,
    timeout: Option<std::time::Duration>,
    message: Option<Bytes>,
    ret: i32,
) -> Result<i32> {
    let args = tri!(args);
    tri!(crate::memory::check(&c, ret, 4));
    let Some((cluster, authority)) = grpc_upstream(&args.upstream)
        .filter(|(cluster, _)| c.data().upstreams.has_cluster(cluster))
    else {
        return Ok(status::PARSE_FAILURE);
    };
    let (Ok(service), Ok(method)) = (
        String::from_utf8(args.service),
        String::from_utf8(args.method),
    ) else {
        return Ok(status::BAD_ARGUMENT);
    };
    let Some(metadata) = pairs::decode(&args.metadata) else {
        return Ok(status::BAD_ARGUMENT);
    };
    let metadata = metadata
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_vec()))
        .collect();
    let st = c.data_mut();
    let Some((root, token)) = st.new_callout() else {
        return Ok(status::BAD_ARGUMENT);
    };
    let handle = Rc::new(crate::state::GrpcHandle::new(message.is_none()));
    if let Some(m) = message {
        handle.send(Some(m), true);
    }
    st.grpc.insert(token, handle.clone());
    st.grpc_calls.push(crate::state::PendingGrpc {
        token,
        root,
        cluster,
        request: GrpcRequest {
            service,
            method,
            authority,
            metadata,
            timeout,
        },
        handle,
    });
    Ok(write_u32(&mut c, ret, token).err().unwrap_or(status::OK))
}

/// The cluster (and `:authority`, if given) a gRPC call names: a cluster's name, or, as the
/// C++ SDK sends, a serialized `envoy.config.core.v3.GrpcService` whose `envoy_grpc` names
/// it.
fn grpc_upstream(raw: &[u8]) -> Option<(String, Option<String>)> {
    if let Some(name) = std::str::from_utf8(raw)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Some((name.to_owned(), None));
    }
    let envoy_grpc = proto_fields(raw)?.into_iter().find(|(n, _)| *n == 1)?.1;
    let (mut cluster, mut authority) = (None, None);
    for (n, v) in proto_fields(envoy_grpc)? {
        let s = String::from_utf8(v.to_vec()).ok()?;
        match n {
            1 => cluster = Some(s),
            2 if !s.is_empty() => authority = Some(s),
            _ => {}
        }
    }
    Some((cluster?, authority))
}

/// The length-delimited fields of a protobuf message, by field number; other wire types are
/// skipped. `None` if the bytes are not a well-formed message.
fn proto_fields(mut b: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            1 => b = b.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                let (v, rest) = (b.get(..len)?, &b[len..]);
                out.push((key >> 3, v));
                b = rest;
            }
            5 => b = b.get(4..)?,
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_upstream_is_a_cluster_name_or_a_grpc_service() {
        assert_eq!(grpc_upstream(b"auth"), Some(("auth".to_owned(), None)));
        // GrpcService { envoy_grpc: { cluster_name: "auth", authority: "a.example" } }
        let mut inner = vec![0x0a, 4];
        inner.extend_from_slice(b"auth");
        inner.extend_from_slice(&[0x12, 9]);
        inner.extend_from_slice(b"a.example");
        let mut service = vec![0x0a, inner.len() as u8];
        service.extend_from_slice(&inner);
        // A timeout (field 3) after it is skipped.
        service.extend_from_slice(&[0x1a, 2, 0x08, 5]);
        assert_eq!(
            grpc_upstream(&service),
            Some(("auth".to_owned(), Some("a.example".to_owned())))
        );
        assert_eq!(grpc_upstream(&[0x0a, 9, 1]), None);
        assert_eq!(grpc_upstream(b""), None);
    }
}
