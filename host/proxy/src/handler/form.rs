//! The request as the upstream's protocol takes it.

use http::header::{self, HeaderValue};
use http::{Uri, Version, uri::PathAndQuery};
use rustygate_config::UpstreamProtocol;
use rustygate_core::ErrorKind;

use super::Failure;
use crate::snapshot::ClusterEntry;

/// Puts the request in the form `cluster`'s protocol takes: an origin-form URI and `Host` for
/// HTTP/1.1; an absolute URI (`:scheme`, `:authority`) and no `Host` for HTTP/2.
#[inline]
pub(super) fn address(
    parts: &mut http::request::Parts,
    cluster: &ClusterEntry,
    path_and_query: PathAndQuery,
    authority: Option<&str>,
) -> Result<(), Failure> {
    match cluster.settings.protocol {
        UpstreamProtocol::Http1 => {
            parts.uri = Uri::from(path_and_query);
            parts.version = Version::HTTP_11;
            // The client's own `Host` is usually still there: the value is made only when not.
            if !parts.headers.contains_key(header::HOST)
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
        }
    }
    Ok(())
}
