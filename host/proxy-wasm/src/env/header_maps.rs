//! Header and trailer maps, and the maps of an outbound call's response.

use crate::state::GrpcReceived;

#[allow(clippy::wildcard_imports)]
use super::*;

/// A header map of a `proxy_http_call` response (map 6; map 7, trailers, is empty), or the
/// metadata a gRPC callback was given (map 4 or 5).
fn call_pairs(c: &C<'_>, kind: i32) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if let Some(GrpcReceived::Metadata(map, pairs)) = &c.data().grpc_received {
        return (*map == kind).then(|| pairs.clone());
    }
    let r = c.data().call_response.as_ref()?;
    match kind {
        map::HTTP_CALL_RESPONSE_HEADERS => Some(r.headers.clone()),
        map::HTTP_CALL_RESPONSE_TRAILERS => Some(Vec::new()),
        _ => None,
    }
}

pub(super) fn register(l: &mut Linker<HostState>) -> Result<()> {
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
            let v1 = c.data().abi_v01;
            let found = {
                let key = tri!(slice(&c, kp, kl));
                let from_call = call_pairs(&c, kind).and_then(|p| {
                    p.into_iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(key))
                        .map(|(_, v)| maps::Value::Text(v))
                });
                from_call.or_else(|| stream(&c).and_then(|s| maps::value(s, kind, key)))
            };
            match found {
                Some(v) => give_status(&mut c, v.as_bytes(), ptr, len),
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
                let key = tri!(slice(&c, kp, kl));
                let value = tri!(slice(&c, vp, vl));
                let op = if replace {
                    Edit::Replace(value)
                } else {
                    Edit::Add(value)
                };
                Ok(match stream(&c) {
                    Some(s) => maps::edit(s, kind, key, op),
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
            let key = tri!(slice(&c, kp, kl));
            Ok(match stream(&c) {
                Some(s) => maps::edit(s, kind, key, Edit::Remove),
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
