//! The request as the upstream's protocol takes it.

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Uri, Version, uri::PathAndQuery};
use rustygate_config::UpstreamProtocol;
use rustygate_core::ErrorKind;
use rustygate_filter_api::{Exchange, RequestHead};

use super::Failure;
use crate::snapshot::ClusterEntry;
use crate::worker::ConnCtx;

/// Puts the request in the form `cluster`'s protocol takes: an origin-form URI (a CONNECT's
/// authority form) and `Host` for HTTP/1.1; an absolute URI (`:scheme`, `:authority`) and no
/// `Host` for HTTP/2. `elsewhere` is a `Host` kept beside the request's own map (see
/// [`crate::pool::Shared`]).
#[inline]
pub(super) fn address(
    parts: &mut http::request::Parts,
    cluster: &ClusterEntry,
    path_and_query: PathAndQuery,
    authority: Option<&str>,
    elsewhere: &mut Option<HeaderValue>,
) -> Result<(), Failure> {
    match cluster.settings.protocol {
        UpstreamProtocol::Http1 => {
            parts.uri = if parts.method == Method::CONNECT {
                // The tunnel's far end, as the filters and the route's rewrites left it.
                authority
                    .and_then(|a| Uri::try_from(a).ok())
                    .filter(|u| u.authority().is_some_and(|a| a.port().is_some()))
                    .ok_or_else(|| {
                        let a = authority.unwrap_or_default();
                        (
                            ErrorKind::BadRequest,
                            format!("invalid CONNECT target {a:?}"),
                        )
                    })?
            } else {
                Uri::from(path_and_query)
            };
            parts.version = Version::HTTP_11;
            // The client's own `Host` is usually still there: the value is made only when not.
            if elsewhere.is_none()
                && !parts.headers.contains_key(header::HOST)
                && let Some(a) = authority.and_then(|a| HeaderValue::from_str(a).ok())
            {
                parts.headers.insert(header::HOST, a);
            }
        }
        UpstreamProtocol::Http2 => {
            parts.uri = Uri::builder()
                .scheme(if cluster.settings.tls.is_some() {
                    "https"
                } else {
                    "http"
                })
                // Without a Host, the first endpoint's address names the virtual host.
                .authority(authority.unwrap_or(&cluster.endpoints[0].authority))
                .path_and_query(path_and_query)
                .build()
                .map_err(|e| (ErrorKind::BadRequest, format!("invalid authority: {e}")))?;
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
            *elsewhere = None;
        }
    }
    Ok(())
}

/// Where a filtered request's header fields go upstream from. Filters may read the request
/// until the stream ends, so the upstream cannot have their map: the direct client writes
/// from it as it stands (with what is set from here on in `own` on top), other clients get a
/// merged copy (`Pool::try_send`). Where the whole map is read on the way (`whole_read`: body
/// filters, mirrors, a balancer) or names an `Upgrade`, `own` gets the map itself and the
/// filters a copy, and there is nothing to share.
pub(super) fn hand_over<'a>(
    exchange: &'a Exchange,
    own: &mut HeaderMap,
    whole_read: bool,
) -> Option<&'a RefCell<RequestHead>> {
    let mut head = exchange.request.borrow_mut();
    if !whole_read && !head.headers.contains_key(header::UPGRADE) {
        return Some(&exchange.request);
    }
    // A copy has no spare room, and the `Host` put in next would make it grow.
    let headers = std::mem::take(&mut head.headers);
    head.headers = headers.clone();
    *own = headers;
    None
}

/// The `Host` a filtered request goes upstream with (filters see it as `:authority` only):
/// the client's, or the `:authority` a filter changed.
pub(super) fn upstream_host(
    client: &Option<HeaderValue>,
    changed: bool,
    authority: Option<&str>,
) -> Option<HeaderValue> {
    if changed {
        authority.and_then(|a| HeaderValue::from_str(a).ok())
    } else {
        client.clone()
    }
}

/// The request's host. The request target's authority is the host when there is one (an
/// HTTP/1.1 absolute-form target, HTTP/2's `:authority`), whatever a `Host` header says
/// (RFC 9112 §3.2.2, RFC 9113 §8.3.1, as Envoy reads it); such a header is made to agree, so
/// that routes, filters and the upstream all see the host the request was routed by.
///
/// Refused, as RFC 9112 §3.2 requires: a request with two `Host` fields (routed by one, it
/// would reach an upstream that may read the other), and an HTTP/1.1 request with no host at
/// all (Envoy's `missing_host_header`).
pub(super) fn request_host(
    parts: &mut http::request::Parts,
) -> Result<Option<HeaderValue>, Failure> {
    let mut fields = parts.headers.get_all(header::HOST).iter();
    let first = fields.next();
    if fields.next().is_some() {
        return Err((
            ErrorKind::BadRequest,
            "the request has more than one Host field".into(),
        ));
    }
    let Some(authority) = parts.uri.authority() else {
        return match first {
            Some(host) => Ok(Some(host.clone())),
            None if parts.version == Version::HTTP_11 => Err((
                ErrorKind::BadRequest,
                "an HTTP/1.1 request must name its host".into(),
            )),
            None => Ok(None),
        };
    };
    // A `Host` never carries the target's user information.
    let a = authority.as_str();
    let host = a.rsplit_once('@').map_or(a, |(_, host)| host);
    let Ok(value) = HeaderValue::from_str(host) else {
        return Ok(parts.headers.get(header::HOST).cloned());
    };
    if let Some(h) = parts.headers.get_mut(header::HOST)
        && *h != value
    {
        *h = value.clone();
    }
    Ok(Some(value))
}

/// Why a request is refused before anything but the log reads it, if it is, with Envoy's
/// response code details for the same refusal: its head named both `Content-Length` and
/// `Transfer-Encoding` (as Envoy refuses it, unless the listener sets
/// `allow_chunked_length`), or its path cannot be made canonical. The path is made canonical
/// either way, for the log.
pub(super) fn refused(conn: &ConnCtx, uri: &mut Uri) -> Option<(Failure, &'static str)> {
    let path = canonical_path(&conn.listener.paths, uri).err();
    // Requests on an HTTP/1 connection are started in order, so its count names this one.
    let framing = conn.socket.framing_conflict.load(Ordering::Relaxed);
    if framing != 0 && framing == conn.socket.head.started() {
        let failure = (
            ErrorKind::BadRequest,
            "the request has both Content-Length and Transfer-Encoding, as request smuggling does"
                .into(),
        );
        return Some((failure, "http1.content_length_and_chunked_not_allowed"));
    }
    path.map(|failure| (failure, "path_normalization_failed"))
}

pub(super) fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Makes the path of `uri` canonical under the listener's `rules` (its query untouched); a
/// path the rules refuse is a bad request.
fn canonical_path(
    rules: &rustygate_config::PathNormalization,
    uri: &mut Uri,
) -> Result<(), Failure> {
    let canonical = rustygate_core::path::normalize(uri.path(), rules)
        .map_err(|e| (ErrorKind::BadRequest, e.to_string()))?;
    let Some(mut path) = canonical else {
        return Ok(());
    };
    if let Some(query) = uri.query() {
        path.push('?');
        path.push_str(query);
    }
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(path)
            .map_err(|e| (ErrorKind::BadRequest, format!("the canonical path: {e}")))?,
    );
    *uri = Uri::from_parts(parts)
        .map_err(|e| (ErrorKind::BadRequest, format!("the canonical path: {e}")))?;
    Ok(())
}
