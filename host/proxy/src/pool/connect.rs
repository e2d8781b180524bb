//! Getting a connection: TCP (and TLS) within the cluster's circuit-breaker limits, and the
//! hyper handshakes for the connections hyper drives.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{EndpointSettings, SendError, UpstreamBody};
use crate::exec::LocalExec;
use crate::h1;
use crate::health::{OwnedSlot, Slot};
use crate::tcp::Tcp;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect did not finish within the cluster's connect timeout.
    #[error("connect to {authority} timed out after {timeout:?}")]
    Timeout {
        /// Endpoint.
        authority: Arc<str>,
        /// The timeout.
        timeout: Duration,
    },
    /// TCP connect failed (refused, unreachable, DNS).
    #[error("connect to {authority} failed: {source}")]
    Io {
        /// Endpoint.
        authority: Arc<str>,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (an untrusted or mismatched certificate, say).
    #[error("TLS handshake with {authority} failed: {source}")]
    Tls {
        /// Endpoint.
        authority: Arc<str>,
        /// rustls's account.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP handshake failed.
    #[error("handshake with {authority} failed: {source}")]
    Handshake {
        /// Endpoint.
        authority: Arc<str>,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
}

/// A new upstream connection, in the clear or TLS.
pub(super) enum Io {
    Plain(TokioIo<Counted<Tcp>>),
    /// Boxed: a TLS session's state is a kilobyte, and a connection is made rarely.
    Tls(TokioIo<Counted<Box<tokio_rustls::client::TlsStream<Tcp>>>>),
}

/// A socket holding its place in the cluster's `max_connections` for as long as it exists:
/// whether hyper closes it, or a protocol switch hands it to a tunnel that outlives hyper's
/// connection task.
pub(super) struct Counted<T> {
    io: T,
    _slot: OwnedSlot,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl h1::Socket for Counted<Tcp> {
    fn tcp(&self) -> &TcpStream {
        self.io.get_ref()
    }
}

pub(super) async fn handshake_h1<T>(io: T) -> hyper::Result<http1::SendRequest<UpstreamBody>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new().writev(false).handshake(io).await?;
    // A `101 Switching Protocols` hands the connection's socket to the response's
    // `OnUpgrade` (a WebSocket tunnel); without upgrades hyper would refuse such a response.
    drive(conn.with_upgrades());
    Ok(sender)
}

pub(super) async fn handshake_h2<T>(io: T) -> hyper::Result<http2::SendRequest<UpstreamBody>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let (sender, conn) = http2::Builder::new(LocalExec)
        .timer(TokioTimer::new())
        .handshake(io)
        .await?;
    drive(conn);
    Ok(sender)
}

/// A new TCP connection within the cluster's circuit-breaker limits: the request waits as
/// "pending" while it connects, and the connection holds a slot for as long as it lives.
pub(super) async fn connect(
    authority: &Arc<str>,
    settings: &EndpointSettings,
) -> Result<Io, SendError> {
    let _pending = Slot::take(&settings.load.pending, settings.max_pending)
        .ok_or(SendError::Overflow("pending requests"))?;
    let slot = OwnedSlot::connection(&settings.load, settings.max_connections)
        .ok_or(SendError::Overflow("connections"))?;
    let started = Instant::now();
    let tcp = tcp_connect(authority, settings.connect_timeout).await?;
    let Some(tls) = &settings.tls else {
        return Ok(Io::Plain(TokioIo::new(Counted {
            io: tcp,
            _slot: slot,
        })));
    };
    // The connect timeout covers the handshake too: both are "getting a connection".
    let left = settings.connect_timeout.saturating_sub(started.elapsed());
    let stream = tokio::time::timeout(left, tls.connect(authority, tcp))
        .await
        .map_err(|_| ConnectError::Timeout {
            authority: authority.clone(),
            timeout: settings.connect_timeout,
        })?
        .map_err(|source| ConnectError::Tls {
            authority: authority.clone(),
            source,
        })?;
    Ok(Io::Tls(TokioIo::new(Counted {
        io: Box::new(stream),
        _slot: slot,
    })))
}

/// Runs a client connection's I/O on this worker until it closes or switches protocols.
fn drive<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), hyper::Error>> + 'static,
{
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection closed with error");
        }
    });
}

async fn tcp_connect(authority: &Arc<str>, timeout: Duration) -> Result<Tcp, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(&**authority))
        .await
        .map_err(|_| ConnectError::Timeout {
            authority: authority.clone(),
            timeout,
        })?
        .map_err(|source| ConnectError::Io {
            authority: authority.clone(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    Ok(Tcp::new(stream))
}
