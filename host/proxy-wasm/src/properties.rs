//! `proxy_get_property` values, named and encoded as Envoy does: strings raw, integers as
//! 8-byte little endian, `source.address` with its port.

use crate::abi::map;
use crate::maps;
use crate::state::{HostState, StreamCtx};

fn u64le(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// Timestamps and durations: nanoseconds as an 8-byte little-endian integer.
fn nanos(d: std::time::Duration) -> Vec<u8> {
    u64le(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A head's size as Envoy counts it (`*.headers_bytes`): names and values, the
/// pseudo-headers (`:path`, `:status`, ...) included, since Envoy's maps hold them.
fn headers_bytes(stream: &StreamCtx, map_type: i32) -> u64 {
    u64::from(maps::byte_size(stream, map_type))
}

/// A head as Envoy serializes its `request.headers` / `response.headers` map: its
/// pseudo-headers first, then each name once, repeated values joined with `,`.
fn head_map(stream: &StreamCtx, map_type: i32) -> Option<Vec<u8>> {
    let mut joined: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (k, v) in maps::pairs(stream, map_type)? {
        match joined.iter_mut().find(|(seen, _)| *seen == k) {
            Some((_, values)) => {
                values.push(b',');
                values.extend_from_slice(&v);
            }
            None => joined.push((k, v)),
        }
    }
    Some(crate::pairs::encode(
        joined.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    ))
}

/// A trailer map as proxy-wasm pairs, repeated names joined with `,`.
fn headers_map(h: &http::HeaderMap) -> Vec<u8> {
    let joined: Vec<(&[u8], Vec<u8>)> = h
        .keys()
        .map(|k| {
            let values: Vec<&[u8]> = h.get_all(k).iter().map(|v| v.as_bytes()).collect();
            (k.as_str().as_bytes(), values.join(&b","[..]))
        })
        .collect();
    crate::pairs::encode(joined.iter().map(|(k, v)| (*k, v.as_slice())))
}

/// The value at `path` for context `ctx`; `None` is `NOT_FOUND`.
pub(crate) fn get(state: &HostState, ctx: u32, path: &[&[u8]]) -> Option<Vec<u8>> {
    let seg = |i: usize| path.get(i).copied();
    let root = state.root_of(ctx)?;
    match (seg(0)?, seg(1)) {
        (b"plugin_root_id", None) => return Some(root.root_id.as_bytes().to_vec()),
        (b"plugin_name", None) => return Some(root.plugin.as_bytes().to_vec()),
        (b"plugin_vm_id", None) => return Some(state.vm_id.as_bytes().to_vec()),
        _ => {}
    }
    let stream = state.streams.get(&ctx)?;
    // Values a filter set come first; most streams have none, and need no key built.
    if !stream.properties.is_empty()
        && let Some(v) = stream.properties.get(&path.join(&0u8))
    {
        return Some(v.clone());
    }
    let ex = &stream.exchange;
    let metadata = match seg(0)? {
        b"route_metadata" => Some((&ex.progress.route_metadata, &ex.progress.route)),
        b"cluster_metadata" => Some((&ex.progress.cluster_metadata, &ex.progress.cluster)),
        _ => None,
    };
    if let Some((md, owner)) = metadata {
        let md = md.borrow();
        // The whole property is Envoy's `Metadata` message, serialized. A route or cluster
        // without metadata has an empty one (found, no bytes, which Go and C++ filters tell
        // from NOT_FOUND); only a request without a cluster (a route that answers itself)
        // finds none.
        if path.len() == 1 {
            return match md.as_deref() {
                Some(md) => Some(crate::proto::metadata(md)),
                None => owner.borrow().is_some().then(Vec::new),
            };
        }
        return Some(metadata_bytes(
            md.as_deref()?.get(path[1..].iter().copied())?,
        ));
    }
    let info = &ex.info;
    let req = ex.request.borrow();
    let (path_only, query) = req
        .path
        .split_once('?')
        .map_or((req.path.as_str(), ""), |(p, q)| (p, q));
    Some(match (seg(0)?, seg(1), seg(2)) {
        (b"request", Some(b"path"), None) => req.path.as_bytes().to_vec(),
        (b"request", Some(b"url_path"), None) => path_only.as_bytes().to_vec(),
        (b"request", Some(b"query"), None) => query.as_bytes().to_vec(),
        (b"request", Some(b"host"), None) => req.authority.as_bytes().to_vec(),
        (b"request", Some(b"method"), None) => req.method.as_str().as_bytes().to_vec(),
        (b"request", Some(b"scheme"), None) => req.scheme.as_bytes().to_vec(),
        (b"request", Some(b"protocol"), None) => info.protocol.as_bytes().to_vec(),
        (b"request", Some(b"id"), None) => info.request_id.as_bytes().to_vec(),
        (b"request", Some(b"headers"), Some(name)) if name.starts_with(b":") => {
            maps::value(stream, map::REQUEST_HEADERS, name)?.into_vec()
        }
        (b"request", Some(b"headers"), Some(name)) => {
            let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
            let values: Vec<&[u8]> = req
                .headers
                .get_all(name.as_str())
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            if values.is_empty() {
                return None;
            }
            values.join(&b","[..])
        }
        (b"request", Some(b"headers"), None) => head_map(stream, map::REQUEST_HEADERS)?,
        (b"request", Some(b"headers_bytes"), None) => {
            u64le(headers_bytes(stream, map::REQUEST_HEADERS))
        }
        (b"request", Some(b"referer"), None) => {
            req.headers.get(http::header::REFERER)?.as_bytes().to_vec()
        }
        (b"request", Some(b"useragent"), None) => req
            .headers
            .get(http::header::USER_AGENT)?
            .as_bytes()
            .to_vec(),
        (b"request", Some(b"time"), None) => nanos(
            (std::time::SystemTime::now() - info.start.elapsed())
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?,
        ),
        // As in Envoy, known once the request is complete (for `on_log`).
        (b"request", Some(b"duration"), None) => nanos(ex.progress.duration.get()?),
        // The declared length if there is one, else the bytes received so far.
        (b"request", Some(b"size"), None) => u64le(request_size(&req.headers, ex)),
        (b"request", Some(b"total_size"), None) => {
            u64le(request_size(&req.headers, ex) + headers_bytes(stream, map::REQUEST_HEADERS))
        }
        (b"response", Some(b"size"), None) => u64le(ex.progress.response_body_bytes.get()),
        (b"response", Some(b"total_size"), None) => {
            ex.response.borrow().as_ref()?;
            let head = headers_bytes(stream, map::RESPONSE_HEADERS);
            u64le(ex.progress.response_body_bytes.get() + head)
        }
        (b"response", Some(b"headers"), None) => head_map(stream, map::RESPONSE_HEADERS)?,
        (b"response", Some(b"headers_bytes"), None) => {
            ex.response.borrow().as_ref()?;
            u64le(headers_bytes(stream, map::RESPONSE_HEADERS))
        }
        // From the trailers (a gRPC answer's usual place), else the head (a trailers-only one).
        (b"response", Some(b"grpc_status"), None) => {
            let trailers = ex.response_trailers.borrow();
            let resp = ex.response.borrow();
            let status = trailers
                .as_ref()
                .and_then(|t| t.get("grpc-status"))
                .or_else(|| resp.as_ref()?.headers.get("grpc-status"))?;
            u64le(status.to_str().ok()?.parse().ok()?)
        }
        (b"upstream", Some(b"address"), None) => ex
            .progress
            .upstream
            .borrow()
            .as_deref()?
            .as_bytes()
            .to_vec(),
        (b"upstream", Some(b"port"), None) => {
            let upstream = ex.progress.upstream.borrow();
            let (_, port) = upstream.as_deref()?.rsplit_once(':')?;
            u64le(port.parse().ok()?)
        }
        (b"upstream", Some(b"request_attempt_count"), None) => {
            u64le(u64::from(ex.progress.attempts.get()))
        }
        (b"connection", Some(b"id"), None) | (b"connection_id", None, None) => {
            u64le(info.connection_id)
        }
        (b"source", Some(b"address"), None) => info.client.to_string().into_bytes(),
        (b"source", Some(b"port"), None) => u64le(u64::from(info.client.port())),
        (b"destination", Some(b"address"), None) => info.local.to_string().into_bytes(),
        (b"destination", Some(b"port"), None) => u64le(u64::from(info.local.port())),
        // Envoy's encodings: a bool is one byte; the TLS facts are strings, absent in the clear.
        (b"connection", Some(b"mtls"), None) => {
            let mtls = info
                .tls
                .as_ref()
                .is_some_and(|t| t.peer_certificate_sha256.is_some());
            vec![u8::from(mtls)]
        }
        (b"connection", Some(b"tls_version"), None) => info.tls.as_ref()?.version.into(),
        (b"connection", Some(b"requested_server_name"), None) => info
            .tls
            .as_ref()
            .and_then(|t| t.server_name.clone())
            .unwrap_or_default()
            .into_bytes(),
        (b"connection", Some(b"sha256_peer_certificate_digest"), None) => info
            .tls
            .as_ref()?
            .peer_certificate_sha256
            .clone()?
            .into_bytes(),
        (b"connection", Some(b"subject_peer_certificate"), None) => {
            info.tls.as_ref()?.peer_subject.clone()?.into_bytes()
        }
        // Envoy gives the first of each kind.
        (b"connection", Some(b"uri_san_peer_certificate"), None) => info
            .tls
            .as_ref()?
            .peer_uri_sans
            .first()?
            .clone()
            .into_bytes(),
        (b"connection", Some(b"dns_san_peer_certificate"), None) => info
            .tls
            .as_ref()?
            .peer_dns_sans
            .first()?
            .clone()
            .into_bytes(),
        (b"route_name", None, None) | (b"xds", Some(b"route_name"), None) => {
            ex.progress.route.borrow().as_deref()?.as_bytes().to_vec()
        }
        (b"cluster_name", None, None) | (b"xds", Some(b"cluster_name"), None) => {
            // Empty, but found, on a route that answers by itself.
            ex.progress
                .cluster
                .borrow()
                .as_deref()
                .unwrap_or_default()
                .as_bytes()
                .to_vec()
        }
        (b"response", Some(b"code"), None) => {
            u64le(u64::from(ex.response.borrow().as_ref()?.status.as_u16()))
        }
        (b"response", Some(b"flags"), None) => u64le(ex.progress.outcome.flags()),
        (b"response", Some(b"code_details"), None) => {
            ex.progress.outcome.details().as_bytes().to_vec()
        }
        (b"response", Some(b"trailers"), None) => {
            headers_map(ex.response_trailers.borrow().as_ref()?)
        }
        (b"response", Some(b"trailers"), Some(name)) => {
            let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
            let trailers = ex.response_trailers.borrow();
            trailers.as_ref()?.get(name.as_str())?.as_bytes().to_vec()
        }
        (b"response", Some(b"headers"), Some(name)) if name.starts_with(b":") => {
            maps::value(stream, map::RESPONSE_HEADERS, name)?.into_vec()
        }
        (b"response", Some(b"headers"), Some(name)) => {
            let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
            let resp = ex.response.borrow();
            resp.as_ref()?
                .headers
                .get(name.as_str())?
                .as_bytes()
                .to_vec()
        }
        _ => return None,
    })
}

/// A metadata value as Envoy serializes the value a path reaches: strings raw, numbers as
/// 8-byte little-endian doubles, booleans as one byte, null as nothing, a map as proxy-wasm
/// pairs of its keys and (so serialized) values, a list as pairs of its (so serialized)
/// elements with empty values.
fn metadata_bytes(v: &rustygate_filter_api::MetaValue) -> Vec<u8> {
    use rustygate_filter_api::MetaValue;
    match v {
        MetaValue::Null => Vec::new(),
        MetaValue::Bool(b) => vec![u8::from(*b)],
        MetaValue::Number(n) => n.to_le_bytes().to_vec(),
        MetaValue::String(s) => s.as_bytes().to_vec(),
        MetaValue::List(items) => {
            let items: Vec<Vec<u8>> = items.iter().map(metadata_bytes).collect();
            crate::pairs::encode(items.iter().map(|k| (k.as_slice(), &b""[..])))
        }
        MetaValue::Map(entries) => {
            let values: Vec<Vec<u8>> = entries.iter().map(|(_, v)| metadata_bytes(v)).collect();
            crate::pairs::encode(
                entries
                    .iter()
                    .zip(&values)
                    .map(|((k, _), v)| (k.as_bytes(), v.as_slice())),
            )
        }
    }
}

/// Splits a NUL-separated path; a trailing NUL (C++ SDK) is ignored, and a single dotted
/// segment (`request.path`) is accepted too, as Kong does. The segments are `raw`'s own.
pub(crate) fn split(raw: &[u8]) -> Vec<&[u8]> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if !raw.contains(&0) && raw.contains(&b'.') && !raw.starts_with(b"request.headers.") {
        return raw.split(|b| *b == b'.').collect();
    }
    raw.split(|b| *b == 0).collect()
}

fn request_size(headers: &http::HeaderMap, ex: &rustygate_filter_api::Exchange) -> u64 {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or_else(|| ex.progress.request_body_bytes.get())
}

#[cfg(test)]
mod tests {
    use rustygate_filter_api::MetaValue;

    use super::metadata_bytes;

    #[test]
    fn metadata_values_are_encoded_as_envoy_encodes_them() {
        assert_eq!(
            metadata_bytes(&MetaValue::String("x-auth".into())),
            b"x-auth"
        );
        assert_eq!(
            metadata_bytes(&MetaValue::Number(2.5)),
            2.5f64.to_le_bytes()
        );
        assert_eq!(metadata_bytes(&MetaValue::Bool(true)), [1]);
        assert_eq!(metadata_bytes(&MetaValue::Null), b"");
        assert_eq!(metadata_bytes(&MetaValue::List(Box::new([]))), b"");
        let map = MetaValue::Map(Box::new([
            ("a".into(), MetaValue::String("1".into())),
            ("b".into(), MetaValue::Bool(false)),
        ]));
        let bytes = metadata_bytes(&map);
        let pairs = crate::pairs::decode(&bytes).unwrap();
        assert_eq!(pairs, vec![(&b"a"[..], &b"1"[..]), (&b"b"[..], &[0u8][..])]);
        let list = MetaValue::List(Box::new([
            MetaValue::String("eu".into()),
            MetaValue::Bool(true),
        ]));
        let bytes = metadata_bytes(&list);
        let pairs = crate::pairs::decode(&bytes).unwrap();
        assert_eq!(pairs, vec![(&b"eu"[..], &b""[..]), (&[1u8][..], &b""[..])]);
    }
}
