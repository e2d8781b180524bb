//! A client connection that gives up on a client who stops reading. Once the socket takes no
//! byte for the listener's stream idle timeout (the client's receive window stays shut),
//! writes fail, hyper ends the connection, and what the response held (its upstream
//! connection first of all) is let go. Without this, such a client pins the upstream
//! connection for as long as it keeps its socket open: hyper stops polling a response body it
//! cannot write, so the body's own idle timer never runs.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `io` whose writes time out after `limit` without progress (zero: never).
pub(crate) struct WriteStall<S> {
    io: S,
    limit: Duration,
    /// Made the first time a write has to wait; most connections never need it.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// Set when the limit ran out, for the access log of the response it cut (`SI`).
    stalled: Arc<AtomicBool>,
}

impl<S> WriteStall<S> {
    pub(crate) fn new(io: S, limit: Duration, stalled: Arc<AtomicBool>) -> Self {
        Self {
            io,
            limit,
            timer: None,
            armed: false,
            stalled,
        }
    }

    /// After a write that had to wait: an error once the wait has lasted the limit.
    fn waited(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.limit.is_zero() {
            return Ok(());
        }
        if !self.armed {
            let deadline = tokio::time::Instant::now() + self.limit;
            match &mut self.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        match self.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => {
                self.stalled.store(true, Ordering::Relaxed);
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client read nothing for {:?} (stream idle timeout)",
                        self.limit
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Passes a write's outcome on, timing the waits.
    fn track<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => match self.waited(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStall<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.track(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.track(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.track(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.track(cx, polled)
    }
}
