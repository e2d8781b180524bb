//! A protocol switch (`Upgrade`, WebSocket) the upstream agreed to: once the 101 is written,
//! the connection becomes a tunnel.

use http::StatusCode;
use http::header::HeaderValue;
use hyper::upgrade::OnUpgrade;

use super::Completion;
use crate::tunnel::{TunnelChain, TunnelLog};
use crate::worker::ConnCtx;

/// Both sides of a protocol switch the upstream agreed to.
pub(super) struct Switch {
    pub client: OnUpgrade,
    pub upstream: Option<OnUpgrade>,
    /// The upstream's `Upgrade`, passed on to the client.
    pub protocol: Option<HeaderValue>,
}

impl Switch {
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
        if let (StatusCode::SWITCHING_PROTOCOLS, Some(upstream)) = (status, self.upstream) {
            if chain.is_some() {
                done.chain = None;
            }
            conn.set_tunnel(crate::tunnel::tunnel(
                self.client,
                upstream,
                conn.listener.limits.idle_timeout.get(),
                log,
                chain,
            ));
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
