//! Response bodies from the pool: each knows where its connection goes when it has been read
//! to the end.

use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::connect::Counted;
use super::{DirectConn, DirectList, Pool, RawIo, StreamHold, UpstreamBody};
use crate::body::BoxError;
use crate::h1;
use crate::tcp::Tcp;

pub(super) struct Home {
    pub(super) pool: Rc<Pool>,
    pub(super) authority: Arc<str>,
    pub(super) tls: u64,
    pub(super) sender: http1::SendRequest<UpstreamBody>,
    pub(super) max_idle: usize,
    pub(super) idle_timeout: Duration,
}

/// Where a direct connection goes when its response has ended: its endpoint's idle list, on
/// the cluster's terms as of the request.
pub(super) struct DirectHome {
    pub(super) list: Rc<DirectList>,
    pub(super) max_idle: usize,
    pub(super) idle_timeout: Duration,
}

impl h1::GiveBack<Counted<Tcp>> for DirectHome {
    fn give_back(self, conn: DirectConn) {
        self.list.put(conn, self.max_idle, self.idle_timeout);
    }
}

/// An upstream response body that gives its HTTP/1.1 connection back to the pool once it has
/// been read to the end.
pub struct PooledBody(pub(super) Kind);

pub(super) enum Kind {
    Hyper {
        inner: Incoming,
        /// Boxed: its sender alone is larger than the rest of the body, which every layer of
        /// the handler copies (this path already allocates per request, in hyper).
        home: Option<Box<Home>>,
        /// An HTTP/2 response's hold on its connection (see [`H2Use`](super::H2Use)).
        stream: Option<StreamHold>,
    },
    Direct(h1::Body<Counted<Tcp>, DirectHome>),
    /// No body: the connection a terminated `CONNECT` opened, until its switch takes it.
    Tunnel(Option<Box<dyn RawIo>>),
}

impl PooledBody {
    /// The whole body, when it came in the same read as the head (most small responses):
    /// taken, nothing is left to read.
    pub fn take_whole(&mut self) -> Option<Bytes> {
        match &mut self.0 {
            Kind::Direct(body) => body.take_whole(),
            Kind::Hyper { .. } | Kind::Tunnel(_) => None,
        }
    }

    /// The connection a terminated `CONNECT` opened (see [`super::TerminateConnect`]).
    pub fn take_tunnel(&mut self) -> Option<Box<dyn RawIo>> {
        match &mut self.0 {
            Kind::Tunnel(io) => io.take(),
            _ => None,
        }
    }

    /// The response has ended: an HTTP/1.1 connection goes back to the pool, an HTTP/2
    /// stream no longer holds its connection. (A direct body sends its own home.)
    fn go_home(&mut self) {
        if let Kind::Hyper { home, stream, .. } = &mut self.0 {
            drop(stream.take());
            if let Some(h) = home.take() {
                h.pool
                    .put_idle(h.authority, h.tls, h.sender, h.max_idle, h.idle_timeout);
            }
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Bodies that were complete before anyone polled them (HEAD, 204, empty) still count.
        if self.is_end_stream() {
            self.go_home();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let inner = match &mut self.0 {
            Kind::Direct(body) => return Pin::new(body).poll_frame(cx),
            Kind::Tunnel(_) => return Poll::Ready(None),
            Kind::Hyper { inner, .. } => inner,
        };
        let frame = ready!(Pin::new(&mut *inner).poll_frame(cx));
        let ended = match &frame {
            None => true,
            Some(Ok(f)) if f.is_trailers() => true,
            Some(Ok(_)) => inner.is_end_stream(),
            _ => false,
        };
        if ended {
            self.go_home();
        }
        Poll::Ready(frame.map(|r| r.map_err(|e| Box::new(e) as BoxError)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Hyper { inner, .. } => inner.is_end_stream(),
            Kind::Direct(body) => body.is_end_stream(),
            Kind::Tunnel(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Hyper { inner, .. } => inner.size_hint(),
            Kind::Direct(body) => body.size_hint(),
            Kind::Tunnel(_) => SizeHint::with_exact(0),
        }
    }
}
