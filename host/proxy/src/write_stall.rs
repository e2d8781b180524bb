//! A client connection that gives up on a client who stops reading. Once the socket takes no
//! byte for the listener's stream idle timeout (the client's receive window stays shut),
//! writes fail, hyper ends the connection, and what the response held (its upstream
//! connection first of all) is let go. Without this, such a client pins the upstream
//! connection for as long as it keeps its socket open: hyper stops polling a response body it
//! cannot write, so the body's own idle timer never runs.
//!
//! The wrapper also notes how the socket ended ([`SocketState`]), for the access log of a
//! response it cut short: given up here (`SI`), or closed by the client (`DC`, where an HTTP/2
//! stream reset alone is `DR`); it shows the bytes it reads to the connection's
//! [`HeadClock`]; and it withholds from hyper an HTTP/1 request head that [`RequestScan`]
//! refuses: once the requests pipelined ahead of it have been answered, hyper reads the end of
//! the connection instead, and the head's answer goes out as the wrapper is dropped. Bytes
//! that follow a request that may switch protocols are held back until it is answered
//! (tunnelled if it switched, read as the next head if not).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::head_clock::HeadClock;
use crate::head_scan::HeadFault;
use crate::request_scan::RequestScan;

/// `io` whose writes time out after `limit` without progress (zero: never).
pub(crate) struct WriteStall<S: AsyncWrite + Unpin> {
    io: S,
    limit: Duration,
    /// Made the first time a write has to wait; most connections never need it.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// What the access log of a response cut short needs to know of the connection.
    state: Arc<SocketState>,
    /// Follows the HTTP/1 requests.
    scan: RequestScan,
    /// Whether a head that names both `Content-Length` and `Transfer-Encoding` is refused
    /// (unless the listener sets `allow_chunked_length`).
    refuse_both_framings: bool,
    /// A refused head waiting for the requests ahead of it to be answered: its fault and its
    /// request's index.
    refusal: Option<(HeadFault, u64)>,
    /// Bytes read after a request that may switch protocols, before its answer
    /// ([`crate::request_scan::Told::hold`]): hyper gets them once the request is answered.
    held: Vec<u8>,
    /// That request, counted from 1.
    held_for: u64,
    /// The bytes of a request line that has not ended yet, held back from hyper.
    line: Vec<u8>,
    /// Bytes scanned and due that did not fit in hyper's last read: its next read gets them.
    ready: Vec<u8>,
}

/// How a client connection's socket ended, if it did, and how long its pending request head
/// has been arriving: shared between its wrapper (which must be `Send`, as hyper's connection
/// I/O is) and the requests on it.
pub(crate) struct SocketState {
    /// The client read nothing for the stream idle timeout and was given up (`SI`).
    pub stalled: AtomicBool,
    /// The client closed (or broke) its end (`DC`).
    pub peer_closed: AtomicBool,
    pub head: HeadClock,
    /// The first request on the connection (counted from 1) whose head named both
    /// `Content-Length` and `Transfer-Encoding` ([`RequestScan`]), or 0.
    pub framing_conflict: AtomicU64,
    /// The request head read last was refused, and withheld from hyper; its answer is the
    /// `farewell`.
    pub refused: std::sync::OnceLock<Refused>,
    /// No further request head will be read here: the connection became a tunnel, or a
    /// response ended it before its request had arrived whole (what follows is the rest of
    /// that request, or tunnelled bytes).
    pub heads_over: AtomicBool,
    /// What to send the client as the connection is dropped, if anything: the answer to a
    /// request head that took too long or was refused. Written without waiting, and only if
    /// no write of the connection's own is still waiting.
    pub farewell: std::sync::OnceLock<Vec<u8>>,
    /// The wrapper's reads wait for the requests ahead of a refused head to be answered; each
    /// answer wakes them ([`SocketState::request_answered`]).
    reader_waits: AtomicBool,
    reader: Mutex<Option<Waker>>,
}

/// A request head refused before hyper read it, as the access log tells it.
pub(crate) struct Refused {
    pub fault: HeadFault,
    pub request_id: String,
    pub body_len: usize,
}

impl SocketState {
    pub(crate) fn new(
        accepted: std::time::Instant,
        clock: Arc<crate::loop_clock::LoopClock>,
    ) -> Self {
        Self {
            stalled: AtomicBool::new(false),
            peer_closed: AtomicBool::new(false),
            head: HeadClock::new(accepted, clock),
            framing_conflict: AtomicU64::new(0),
            refused: std::sync::OnceLock::new(),
            heads_over: AtomicBool::new(false),
            farewell: std::sync::OnceLock::new(),
            reader_waits: AtomicBool::new(false),
            reader: Mutex::new(None),
        }
    }

    /// A request on the connection has been answered in full, or a protocol switch made: a
    /// read that waits for either goes on.
    pub(crate) fn request_answered(&self) {
        if self.reader_waits.load(Ordering::Relaxed) {
            let waker = self.reader.lock().take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    fn park_reader(&self, waker: &Waker) {
        *self.reader.lock() = Some(waker.clone());
        self.reader_waits.store(true, Ordering::Relaxed);
    }
}

impl<S: AsyncWrite + Unpin> WriteStall<S> {
    /// `scan` follows the HTTP/1 requests; `refuse_both_framings` as for the field.
    pub(crate) fn new(
        io: S,
        limit: Duration,
        state: Arc<SocketState>,
        scan: RequestScan,
        refuse_both_framings: bool,
    ) -> Self {
        Self {
            io,
            limit,
            timer: None,
            armed: false,
            state,
            scan,
            refuse_both_framings,
            refusal: None,
            held: Vec::new(),
            held_for: 0,
            line: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// A refused head's answer, once every request ahead of it has been answered: the end of
    /// the connection, as hyper reads it, whose dropping sends the answer. Until then the read
    /// waits (hyper is still writing those answers, and would take an end for the client
    /// leaving).
    fn answer_when_due(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((fault, index)) = self.refusal else {
            return Poll::Ready(Ok(()));
        };
        let head = &self.state.head;
        if head.in_flight() != 0 || head.started() + 1 != index {
            self.state.park_reader(cx.waker());
            return Poll::Pending;
        }
        // Made here, not by the connection's task: hyper may drop the socket itself (handing
        // it to a protocol switch nobody takes), and the answer goes out when it is dropped.
        let (kind, message, _) = fault.answer();
        let (request_id, answer, body_len) =
            closing_answer(&mut fastrand::Rng::new(), kind, message);
        let _ = self.state.farewell.set(answer);
        let refused = Refused {
            fault,
            request_id,
            body_len,
        };
        let _ = self.state.refused.set(refused);
        Poll::Ready(Ok(()))
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
                self.state.stalled.store(true, Ordering::Relaxed);
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
                if let Poll::Ready(Err(_)) = &ready {
                    // A write to a connection the client has closed (EPIPE, ECONNRESET).
                    self.state.peer_closed.store(true, Ordering::Relaxed);
                }
                ready
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // A refused head is the end of the connection as hyper reads it.
        if self.state.refused.get().is_some() {
            return Poll::Ready(Ok(()));
        }
        let this = &mut *self;
        loop {
            if this.refusal.is_some() {
                return this.answer_when_due(cx);
            }
            // Scanned already, and due: they go first.
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            if !this.held.is_empty() {
                ready!(this.release_held(cx, buf));
            } else if !this.line.is_empty() {
                // On within a request line held back: into a buffer of its own, as hyper's
                // may take as little as 24 bytes (its first read of a connection).
                let mut chunk = [0u8; 4096];
                let mut own = ReadBuf::new(&mut chunk);
                match ready!(Pin::new(&mut this.io).poll_read(cx, &mut own)) {
                    Ok(()) if !own.filled().is_empty() => {}
                    // The end (or a break): hyper gets the line, then reads the end itself.
                    _ => {
                        this.state.peer_closed.store(true, Ordering::Relaxed);
                        this.ready = std::mem::take(&mut this.line);
                        continue;
                    }
                }
                this.state.head.read(own.filled());
                if this.scanned(&mut own, 0) {
                    let mut out = own.filled().to_vec();
                    out.append(&mut this.ready);
                    this.ready = out;
                }
                continue;
            } else {
                let polled = Pin::new(&mut this.io).poll_read(cx, buf);
                match polled {
                    Poll::Ready(Ok(())) if buf.filled().len() > before => {}
                    Poll::Ready(Ok(())) if buf.remaining() == 0 => return polled,
                    // The end of the client's byte stream (or a broken one): a response cut
                    // short after it was cut by the client's connection going, not by a reset
                    // of its stream alone.
                    Poll::Ready(_) => {
                        this.state.peer_closed.store(true, Ordering::Relaxed);
                        return polled;
                    }
                    Poll::Pending => return polled,
                }
            }
            this.state.head.read(&buf.filled()[before..]);
            if this.scanned(buf, before) {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> WriteStall<S> {
    /// Shows the bytes put into `buf` after `before` to the request scan and leaves in `buf`
    /// what hyper may read now: not a refused head, nor bytes that wait for a request's
    /// answer, nor an unfinished request line (hyper refuses some lines from their first
    /// bytes, with a 400 of its own, where the scan checks a line at its end). Whether hyper
    /// got any byte; if not, the caller reads on.
    fn scanned(&mut self, buf: &mut ReadBuf<'_>, before: usize) -> bool {
        let head = &self.state.head;
        if !head.is_http1() || self.state.heads_over.load(Ordering::Relaxed) {
            let line = std::mem::take(&mut self.line);
            let n = buf.filled().len() - before;
            return self.give(buf, before, line, n);
        }
        let answered = (head.in_flight() == 0).then(|| head.started());
        let new = &buf.filled()[before..];
        let n = new.len();
        let told = self.scan.feed(new, answered);
        if let Some(index) = told.both_framings
            && self.refuse_both_framings
        {
            let _ = self.state.framing_conflict.compare_exchange(
                0,
                index,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        // A request line held back from an earlier read comes before these bytes.
        let mut line = std::mem::take(&mut self.line);
        let mut give = n;
        if let Some(from) = told.hold {
            // Before any bytes still held from an earlier read (when these were held too,
            // behind an earlier request): all of them now wait for this one.
            self.held.splice(0..0, new[from..].iter().copied());
            self.held_for = self.scan.holding_for();
            give = from;
        }
        if let Some(refusal) = told.refuse {
            self.refusal = Some((refusal.fault, refusal.index));
            if refusal.keep == 0 {
                // The refused head began in an earlier read: so did a line held back.
                line.clear();
            }
            give = give.min(refusal.keep);
        } else {
            let unfinished = self.scan.unfinished_line();
            if unfinished > 0 {
                if unfinished == line.len() + n {
                    // Still the same line.
                    line.extend_from_slice(new);
                    self.line = line;
                    buf.set_filled(before);
                    return false;
                }
                // A line begun at the end of these bytes.
                self.line = new[n - unfinished..].to_vec();
                give = give.min(n - unfinished);
            }
        }
        self.give(buf, before, line, give)
    }

    /// Leaves in `buf` a request line held back (`line`, maybe empty) followed by the first
    /// `give` bytes put there after `before`; what does not fit is hyper's next read. Whether
    /// hyper got any byte.
    fn give(
        &mut self,
        buf: &mut ReadBuf<'_>,
        before: usize,
        mut line: Vec<u8>,
        give: usize,
    ) -> bool {
        if line.is_empty() {
            buf.set_filled(before + give);
        } else {
            line.extend_from_slice(&buf.filled()[before..before + give]);
            buf.set_filled(before);
            let fits = line.len().min(buf.remaining());
            buf.put_slice(&line[..fits]);
            line.drain(..fits);
            self.ready = line;
        }
        buf.filled().len() > before
    }

    /// Puts bytes held after a request that may switch protocols into `buf`, once it has
    /// switched (they go on as they are) or been answered (they are read as the next head);
    /// until then the read waits.
    fn release_held(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<()> {
        let switched = self.state.heads_over.load(Ordering::Relaxed);
        let head = &self.state.head;
        let answered = head.in_flight() == 0 && head.started() >= self.held_for;
        if !switched && !answered {
            self.state.park_reader(cx.waker());
            return Poll::Pending;
        }
        let n = self.held.len().min(buf.remaining());
        buf.put_slice(&self.held[..n]);
        self.held.drain(..n);
        if self.held.is_empty() {
            self.held = Vec::new();
        }
        Poll::Ready(())
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
        // hyper ends a connection whose head was refused as one the client closed; the answer
        // goes out first, when the connection is dropped.
        if self.state.refused.get().is_some() {
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.track(cx, polled)
    }
}

impl<S: AsyncWrite + Unpin> Drop for WriteStall<S> {
    fn drop(&mut self) {
        let Some(bytes) = self.state.farewell.get() else {
            return;
        };
        // A write still waiting may have sent part of a response: nothing may follow it.
        if self.armed {
            return;
        }
        // Best effort and without waiting: the socket has room for a short answer unless the
        // client stopped reading, and then it gets none.
        let mut cx = Context::from_waker(Waker::noop());
        let mut io = Pin::new(&mut self.io);
        let mut sent = 0;
        while sent < bytes.len() {
            match io.as_mut().poll_write(&mut cx, &bytes[sent..]) {
                Poll::Ready(Ok(n)) if n > 0 => sent += n,
                _ => return,
            }
        }
        let _ = io.as_mut().poll_flush(&mut cx);
        let _ = io.as_mut().poll_shutdown(&mut cx);
    }
}

/// An answer the connection closes after (to a request head that did not arrive in time or
/// was refused), as the client reads it, the request id it names and the length of its body.
pub(crate) fn closing_answer(
    rng: &mut fastrand::Rng,
    kind: rustygate_core::ErrorKind,
    detail: &str,
) -> (String, Vec<u8>, usize) {
    let request_id = rustygate_core::forwarding::new_uuid_v4(rng);
    let id = request_id.to_str().unwrap_or_default().to_owned();
    let body = kind.json_body(Some(detail), &id);
    let status = kind.status();
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {id}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    );
    (id, answer.into_bytes(), body.len())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
    const NEXT: &[u8] = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";

    /// Two requests that may switch protocols and one after them, read all at once and then
    /// a few bytes at a time (so that what is held comes out over several reads, and is held
    /// again behind the second request), as hyper would read them: each head read starts a
    /// request, and a read that waits is let go by answering the request in flight. What
    /// comes out is what went in, in order, and reads wait once per request that may switch.
    #[tokio::test]
    async fn held_bytes_come_out_in_order_as_each_request_is_answered() {
        let (mut client, server) = tokio::io::duplex(4096);
        let state = Arc::new(SocketState::new(Instant::now(), Arc::default()));
        let scan = RequestScan::new(65536, 100);
        let mut io = WriteStall::new(server, Duration::ZERO, state.clone(), scan, true);
        let sent = [UPGRADE, UPGRADE, NEXT].concat();
        client.write_all(&sent).await.unwrap();
        let (mut got, mut chunk, mut waits) = (Vec::new(), vec![0u8; 1024], 0);
        while got.len() < sent.len() {
            let heads = got.windows(4).filter(|w| w == b"\r\n\r\n").count() as u64;
            while state.head.started() < heads {
                state.head.request_started();
            }
            let wait = Duration::from_millis(50);
            match tokio::time::timeout(wait, io.read(&mut chunk)).await {
                Ok(n) => {
                    got.extend_from_slice(&chunk[..n.unwrap()]);
                    chunk.truncate(7);
                }
                Err(_) => {
                    assert_eq!(state.head.in_flight(), 1, "waits with nothing in flight");
                    waits += 1;
                    state.head.request_finished();
                    state.request_answered();
                }
            }
        }
        assert_eq!(got, sent);
        assert_eq!(waits, 2);
    }

    /// hyper's first read of a connection takes 24 bytes (to tell HTTP/2's preface); a request
    /// line longer than that is held back until it ends, so that hyper, which refuses some
    /// lines from their first bytes, never sees the start of one the scan refuses.
    #[tokio::test]
    async fn a_request_line_reaches_hyper_only_whole_and_checked() {
        let read = |sent: &'static [u8]| async move {
            let (mut client, server) = tokio::io::duplex(4096);
            let state = Arc::new(SocketState::new(Instant::now(), Arc::default()));
            let scan = RequestScan::new(65536, 100);
            let mut io = WriteStall::new(server, Duration::ZERO, state.clone(), scan, true);
            client.write_all(sent).await.unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 24];
            while got.len() < sent.len() {
                let n = io.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
            }
            (got, state.refused.get().map(|r| r.fault))
        };
        let good = b"GET /a/long/path/to/read?with=query HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(read(good).await, (good.to_vec(), None));
        // A space in the target: hyper would refuse it at `world`, within its first read.
        let bad = b"GET /search?q=hello world&page=2 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            read(bad).await,
            (Vec::new(), Some(HeadFault::InvalidTarget))
        );
    }
}
