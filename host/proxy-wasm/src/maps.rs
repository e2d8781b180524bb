//! Header maps as proxy-wasm sees them: the request map leads with `:method`, `:path`,
//! `:authority`, `:scheme`; the response map with `:status`. Names are lower case. Writes to
//! pseudo-headers change the method, path, authority or status themselves.
//!
//! Outside its phase a map reads as empty (Envoy returns OK with an empty map, and the Rust SDK
//! panics on anything else) and refuses writes with `BAD_ARGUMENT`.

use http::{HeaderName, HeaderValue, Method, StatusCode};
use rustygate_filter_api::Exchange;

use crate::abi::{map, status};
use crate::state::{Phase, StreamCtx};

/// A map's current pairs; `None` when the map does not exist now (reads as empty).
pub(crate) fn pairs(stream: &StreamCtx, map_type: i32) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let ex: &Exchange = &stream.exchange;
    match map_type {
        map::REQUEST_HEADERS => {
            let r = ex.request.borrow();
            let mut out = Vec::with_capacity(r.headers.len() + 4);
            out.push((b":method".to_vec(), r.method.as_str().as_bytes().to_vec()));
            // A CONNECT has no `:path` (its target is the `:authority`).
            if !r.path.is_empty() {
                out.push((b":path".to_vec(), r.path.as_bytes().to_vec()));
            }
            out.push((b":authority".to_vec(), r.authority.as_bytes().to_vec()));
            out.push((b":scheme".to_vec(), r.scheme.as_bytes().to_vec()));
            out.extend(
                r.headers
                    .iter()
                    .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())),
            );
            Some(out)
        }
        map::RESPONSE_HEADERS => {
            let r = ex.response.borrow();
            let r = r.as_ref()?;
            let mut out = Vec::with_capacity(r.headers.len() + 1);
            out.push((b":status".to_vec(), r.status.as_str().as_bytes().to_vec()));
            out.extend(
                r.headers
                    .iter()
                    .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())),
            );
            Some(out)
        }
        map::REQUEST_TRAILERS | map::RESPONSE_TRAILERS => {
            let t = trailers(ex, map_type).borrow();
            Some(
                t.as_ref()?
                    .iter()
                    .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
            )
        }
        _ => None,
    }
}

fn trailers(ex: &Exchange, map_type: i32) -> &std::cell::RefCell<Option<http::HeaderMap>> {
    if map_type == map::REQUEST_TRAILERS {
        &ex.request_trailers
    } else {
        &ex.response_trailers
    }
}

/// A value read out of a map for the guest: a header's own value, shared with the map rather
/// than copied, or a pseudo-header's text.
pub(crate) enum Value {
    Header(HeaderValue),
    Text(Vec<u8>),
}

impl Value {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Header(v) => v.as_bytes(),
            Value::Text(t) => t,
        }
    }

    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Value::Header(v) => v.as_bytes().to_vec(),
            Value::Text(t) => t,
        }
    }
}

/// The first value of `key` (case-insensitive), looked up directly (no list is built). The
/// key is compared in place: `HeaderMap::get` with a `&str` folds case on the stack.
pub(crate) fn value(stream: &StreamCtx, map_type: i32, key: &[u8]) -> Option<Value> {
    let key = std::str::from_utf8(key).ok()?;
    let ex: &Exchange = &stream.exchange;
    let pseudo = |name: &str| key.eq_ignore_ascii_case(name);
    let text = |t: &str| Value::Text(t.as_bytes().to_vec());
    match map_type {
        map::REQUEST_HEADERS => {
            let r = ex.request.borrow();
            Some(if pseudo(":method") {
                text(r.method.as_str())
            } else if pseudo(":path") {
                if r.path.is_empty() {
                    return None;
                }
                text(&r.path)
            } else if pseudo(":authority") {
                text(&r.authority)
            } else if pseudo(":scheme") {
                text(r.scheme)
            } else {
                Value::Header(r.headers.get(key)?.clone())
            })
        }
        map::RESPONSE_HEADERS => {
            let r = ex.response.borrow();
            let r = r.as_ref()?;
            Some(if pseudo(":status") {
                text(r.status.as_str())
            } else {
                Value::Header(r.headers.get(key)?.clone())
            })
        }
        map::REQUEST_TRAILERS | map::RESPONSE_TRAILERS => {
            let t = trailers(ex, map_type).borrow();
            Some(Value::Header(t.as_ref()?.get(key)?.clone()))
        }
        _ => None,
    }
}

/// The map's size in bytes (sum of name and value lengths), which is what Envoy returns for
/// `proxy_get_header_map_size`.
pub(crate) fn byte_size(stream: &StreamCtx, map_type: i32) -> u32 {
    pairs(stream, map_type).map_or(0, |p| {
        p.iter().map(|(k, v)| (k.len() + v.len()) as u32).sum()
    })
}

/// How a write changes a map.
pub(crate) enum Edit<'a> {
    Add(&'a [u8]),
    Replace(&'a [u8]),
    Remove,
}

fn writable(stream: &StreamCtx, map_type: i32) -> bool {
    match map_type {
        map::REQUEST_HEADERS => stream.phase == Phase::Request,
        map::RESPONSE_HEADERS => {
            stream.phase == Phase::Response && stream.exchange.response.borrow().is_some()
        }
        // Trailers may be added (created) from the body phase of their direction.
        map::REQUEST_TRAILERS => stream.phase == Phase::Request,
        map::RESPONSE_TRAILERS => stream.phase == Phase::Response,
        _ => false,
    }
}

/// Applies one edit; returns a proxy-wasm status.
pub(crate) fn edit(stream: &StreamCtx, map_type: i32, key: &[u8], edit: Edit<'_>) -> i32 {
    if !(0..=map::LAST).contains(&map_type) || !writable(stream, map_type) {
        return status::BAD_ARGUMENT;
    }
    if map_type == map::REQUEST_HEADERS {
        stream.exchange.request_changed.set(true);
    }
    let is_headers = map_type == map::REQUEST_HEADERS || map_type == map::RESPONSE_HEADERS;
    if is_headers
        && (key.first() == Some(&b':')
            || (map_type == map::REQUEST_HEADERS && key.eq_ignore_ascii_case(b"host")))
    {
        return edit_pseudo(stream, map_type, &key.to_ascii_lowercase(), edit);
    }
    // Lower-cases as it parses: mixed-case names from the guest need no copy first.
    let Ok(name) = HeaderName::from_bytes(key) else {
        return status::BAD_ARGUMENT;
    };
    let value = match &edit {
        Edit::Add(v) | Edit::Replace(v) => match HeaderValue::from_bytes(v) {
            Ok(v) => Some(v),
            Err(_) => return status::BAD_ARGUMENT,
        },
        Edit::Remove => None,
    };
    let apply = |headers: &mut http::HeaderMap| match (edit, value) {
        (Edit::Add(_), Some(v)) => {
            headers.append(name, v);
        }
        (Edit::Replace(_), Some(v)) => {
            headers.insert(name, v);
        }
        _ => {
            headers.remove(name);
        }
    };
    match map_type {
        map::REQUEST_HEADERS => apply(&mut stream.exchange.request.borrow_mut().headers),
        map::RESPONSE_HEADERS => {
            if let Some(r) = stream.exchange.response.borrow_mut().as_mut() {
                apply(&mut r.headers);
            }
        }
        _ => apply(
            trailers(&stream.exchange, map_type)
                .borrow_mut()
                .get_or_insert_with(http::HeaderMap::new),
        ),
    }
    status::OK
}

fn edit_pseudo(stream: &StreamCtx, map_type: i32, key: &[u8], edit: Edit<'_>) -> i32 {
    let (Edit::Add(v) | Edit::Replace(v)) = edit else {
        // Pseudo-headers cannot be removed; Envoy ignores such removals.
        return status::OK;
    };
    let Ok(text) = std::str::from_utf8(v) else {
        return status::BAD_ARGUMENT;
    };
    if map_type == map::RESPONSE_HEADERS {
        return match (
            key,
            text.parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok()),
        ) {
            (b":status", Some(code)) => {
                if let Some(r) = stream.exchange.response.borrow_mut().as_mut() {
                    r.status = code;
                }
                status::OK
            }
            _ => status::BAD_ARGUMENT,
        };
    }
    let mut r = stream.exchange.request.borrow_mut();
    match key {
        b":method" => match Method::from_bytes(v) {
            Ok(m) => r.method = m,
            Err(_) => return status::BAD_ARGUMENT,
        },
        b":path" if text.starts_with('/') => r.path = text.to_owned(),
        b":authority" | b"host" => r.authority = text.to_owned(),
        b":scheme" => {}
        _ => return status::BAD_ARGUMENT,
    }
    status::OK
}

/// Replaces a whole map from decoded pairs.
pub(crate) fn replace_all(stream: &StreamCtx, map_type: i32, new: &[(&[u8], &[u8])]) -> i32 {
    if !writable(stream, map_type) {
        return status::BAD_ARGUMENT;
    }
    match map_type {
        map::REQUEST_HEADERS => stream.exchange.request.borrow_mut().headers.clear(),
        map::RESPONSE_HEADERS => {
            if let Some(r) = stream.exchange.response.borrow_mut().as_mut() {
                r.headers.clear();
            }
        }
        _ => *trailers(&stream.exchange, map_type).borrow_mut() = Some(http::HeaderMap::new()),
    }
    for (k, v) in new {
        let s = edit(stream, map_type, k, Edit::Add(v));
        if s != status::OK {
            return s;
        }
    }
    status::OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustygate_filter_api::{RequestHead, ResponseHead, StreamInfo};
    use std::rc::Rc;

    fn stream() -> StreamCtx {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-tenant", HeaderValue::from_static("blue"));
        headers.insert("origin", HeaderValue::from_static("http://a.test"));
        let head = RequestHead {
            method: Method::POST,
            path: "/p?q=1".into(),
            authority: "a.test".into(),
            scheme: "http",
            headers,
        };
        let info = StreamInfo {
            client: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
            request_id: HeaderValue::from_static("id"),
            protocol: "HTTP/1.1",
            tls: None,
            connection_id: 1,
            start: std::time::Instant::now(),
        };
        let exchange = Exchange::new(head, info);
        *exchange.response.borrow_mut() = Some(ResponseHead {
            status: StatusCode::CREATED,
            headers: http::HeaderMap::new(),
        });
        StreamCtx {
            root: 1,
            phase: Phase::Request,
            exchange: Rc::new(exchange),
            properties: Default::default(),
        }
    }

    #[test]
    fn values_are_found_whatever_the_case_of_the_key() {
        let s = stream();
        let get = |map, key: &str| {
            value(&s, map, key.as_bytes()).map(|v| String::from_utf8(v.into_vec()).unwrap())
        };
        assert_eq!(
            get(map::REQUEST_HEADERS, ":method").as_deref(),
            Some("POST")
        );
        assert_eq!(
            get(map::REQUEST_HEADERS, ":PATH").as_deref(),
            Some("/p?q=1")
        );
        assert_eq!(
            get(map::REQUEST_HEADERS, ":Authority").as_deref(),
            Some("a.test")
        );
        assert_eq!(
            get(map::REQUEST_HEADERS, "X-Tenant").as_deref(),
            Some("blue")
        );
        assert_eq!(
            get(map::REQUEST_HEADERS, "ORIGIN").as_deref(),
            Some("http://a.test")
        );
        assert_eq!(
            get(map::RESPONSE_HEADERS, ":status").as_deref(),
            Some("201")
        );
        assert_eq!(get(map::REQUEST_HEADERS, "x-missing"), None);
        assert_eq!(get(map::REQUEST_HEADERS, "bad key"), None);
        assert!(value(&s, map::REQUEST_HEADERS, b"\xff").is_none());
        assert_eq!(get(map::REQUEST_TRAILERS, "x-tenant"), None);
    }

    #[test]
    fn edits_take_keys_in_any_case() {
        let s = stream();
        let h = map::REQUEST_HEADERS;
        assert_eq!(edit(&s, h, b"X-Tenant", Edit::Replace(b"red")), status::OK);
        assert_eq!(edit(&s, h, b"X-Added", Edit::Add(b"1")), status::OK);
        assert_eq!(edit(&s, h, b"ORIGIN", Edit::Remove), status::OK);
        assert_eq!(edit(&s, h, b"Host", Edit::Replace(b"b.test")), status::OK);
        assert_eq!(edit(&s, h, b":Path", Edit::Replace(b"/new")), status::OK);
        assert_eq!(
            edit(&s, h, b"bad key", Edit::Add(b"1")),
            status::BAD_ARGUMENT
        );
        let r = s.exchange.request.borrow();
        assert_eq!(r.headers["x-tenant"], "red");
        assert_eq!(r.headers["x-added"], "1");
        assert!(!r.headers.contains_key("origin"));
        assert!(!r.headers.contains_key("host"), "Host is the authority");
        assert_eq!((r.authority.as_str(), r.path.as_str()), ("b.test", "/new"));
        assert!(s.exchange.request_changed.get());
    }
}
