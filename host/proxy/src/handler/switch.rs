//! A protocol switch the upstream agreed to (a 101 to an `Upgrade`, WebSocket; a 2xx to a
//! `CONNECT`): once that answer is written, the connection becomes a tunnel.

use http::header::{self, HeaderValue};
use http::{Method, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use rustygate_core::{ErrorKind, extended_connect};

use super::{Completion, Failure};
use crate::pool::PooledBody;
use crate::tunnel::{TunnelChain, TunnelLog, Upstream};
use crate::worker::ConnCtx;

/// Checks a `CONNECT`'s target: only the authority form (`host:port`) names a tunnel's far
/// end (RFC 9112 §3.2.3; HTTP/2's CONNECT carries `:authority` alone, RFC 9113 §8.5).
/// Returns what the request asks for, as a route's `upgrades` names it.
pub(super) fn connect_target(uri: &Uri) -> Result<HeaderValue, Failure> {
    match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, Some(a), None) if a.port().is_some() => Ok(HeaderValue::from_static("CONNECT")),
        _ => Err((
            ErrorKind::BadRequest,
            format!("CONNECT needs a host:port target, not {uri:?}"),
        )),
    }
}

/// Makes an extended CONNECT (RFC 8441, on a listener with `http2_extended_connect`) the
/// HTTP/1.1 upgrade it stands for, before anything reads the request: routes, filters, logs
/// and the upstream see a `GET` asking to upgrade, as behind Envoy's HTTP/2 codec. Returns
/// whether it was one, so that the answer is made the HTTP/2 kind again.
pub(super) fn extended_connect(
    req: &mut http::Request<Incoming>,
    rng: &std::cell::RefCell<fastrand::Rng>,
) -> bool {
    if req.method() != Method::CONNECT {
        return false;
    }
    // A protocol that is not a header value stays a CONNECT, which its path makes a 400.
    let Some(protocol) = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .and_then(|p| HeaderValue::from_str(p.as_str()).ok())
    else {
        return false;
    };
    *req.method_mut() = Method::GET;
    extended_connect::as_upgrade(req.headers_mut(), protocol, &mut rng.borrow_mut());
    true
}

/// Both sides of a protocol switch the upstream agreed to.
pub(super) struct Switch {
    pub client: OnUpgrade,
    pub upstream: Option<Upstream>,
    /// The upstream's `Upgrade`, passed on to the client (none for a `CONNECT`).
    pub protocol: Option<HeaderValue>,
    /// A `CONNECT`'s tunnel, which any 2xx opens.
    pub connect: bool,
}

impl Switch {
    /// The switch an upstream response agrees to, if any: a 101 to an `Upgrade`, a 2xx to a
    /// `CONNECT`. `client` is the client's side, taken when the request asked for one;
    /// `body` holds the upstream's side when the gateway answered a `CONNECT` itself.
    pub(super) fn agreed(
        parts: &mut http::response::Parts,
        body: &mut PooledBody,
        client: Option<OnUpgrade>,
        connect: bool,
        endpoint: &str,
    ) -> Result<Option<Switch>, Failure> {
        let status = parts.status;
        match client {
            Some(client) if Self::agrees(connect, status) => Ok(Some(Switch {
                client,
                upstream: match body.take_tunnel() {
                    Some(io) => Some(Upstream::Raw(io)),
                    None => parts
                        .extensions
                        .remove::<OnUpgrade>()
                        .map(Upstream::Switched),
                },
                protocol: (!connect)
                    .then(|| parts.headers.get(header::UPGRADE).cloned())
                    .flatten(),
                connect,
            })),
            _ if status == StatusCode::SWITCHING_PROTOCOLS => Err((
                ErrorKind::UpstreamProtocol,
                format!(
                    "{endpoint}: 101 Switching Protocols to a {}",
                    if connect {
                        "CONNECT (a 2xx opens its tunnel)"
                    } else {
                        "request without Upgrade"
                    }
                ),
            )),
            _ => Ok(None),
        }
    }

    fn agrees(connect: bool, status: StatusCode) -> bool {
        if connect {
            status.is_success()
        } else {
            status == StatusCode::SWITCHING_PROTOCOLS
        }
    }

    /// Turns the connection into a tunnel once the response (with `status`, as the filters
    /// left it) has been written; a filter that answered otherwise cancels the switch. `log`
    /// names the tunnel in the access log when it ends. The request's filters, if any, go
    /// with the tunnel: they end with it, not with the 101.
    pub(super) fn open(
        self,
        conn: &ConnCtx,
        status: StatusCode,
        log: Option<TunnelLog>,
        done: &mut Completion,
        chain: Option<TunnelChain>,
    ) {
        if let (true, Some(upstream)) = (Self::agrees(self.connect, status), self.upstream) {
            if chain.is_some() {
                done.chain = None;
            }
            let tunnel = crate::tunnel::tunnel(
                self.client,
                upstream,
                conn.listener.limits.idle_timeout.get(),
                log,
                chain,
            );
            if done.version == http::Version::HTTP_2 {
                // One stream of many: the connection goes on serving the others, and stays
                // open (so a drain waits for it) while this stream is.
                tokio::task::spawn_local(tunnel);
            } else {
                conn.set_tunnel(tunnel);
            }
        }
    }
}

/// The tunnel's access-log identity, when the access log is on.
pub(super) fn tunnel_log(
    done: &Completion,
    conn: &ConnCtx,
    request_id: &HeaderValue,
) -> Option<TunnelLog> {
    done.access_log.then(|| TunnelLog {
        request_id: request_id.clone(),
        route: done.route.map_or_else(
            || "-".into(),
            |i| done.active.snapshot.routes[i as usize].name.clone(),
        ),
        listener: conn.listener.name.clone(),
        client: conn.peer.ip(),
    })
}
