//! One client connection's task: hyper serves it, and a watchdog beside it ends it when a
//! request head is too slow, when it has been idle too long, or when the gateway drains.
//!
//! The task is woken for every read and write of the connection, so what it polls besides
//! hyper is kept to a flag and an atomic load: the drain is a per-worker flag whose waiters are
//! woken once (a `watch` receiver per connection took ≈ 250 instructions per request), and the
//! watchdog's timer is polled once when set and afterwards only looked at (polling it on every
//! wakeup took ≈ 230).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use rustc_hash::FxHashMap;

use crate::handler::HeadAnswer;
use crate::head_clock::{self, Watch};
use crate::request_scan::RequestScan;
use crate::stream_watch::StreamExec;
use crate::worker::{ConnCtx, Worker};
use crate::write_stall::{WriteStall, closing_answer};

/// A worker's drain, as its connections see it.
#[derive(Default)]
pub(crate) struct Drain {
    started: Cell<bool>,
    /// The tasks of connections waiting, by connection id.
    waiting: RefCell<FxHashMap<u64, Waker>>,
}

impl Drain {
    /// Every connection finishes what it is doing and closes.
    pub fn start(&self) {
        self.started.set(true);
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for waker in waiting.into_values() {
            waker.wake();
        }
    }

    /// Whether the drain has started; until it does, connection `id`'s task (whose waker
    /// never changes) is woken when it starts.
    fn poll(&self, id: u64, registered: &mut bool, cx: &Context<'_>) -> bool {
        if self.started.get() {
            return true;
        }
        if !*registered {
            self.waiting.borrow_mut().insert(id, cx.waker().clone());
            *registered = true;
        }
        false
    }

    fn forget(&self, id: u64) {
        self.waiting.borrow_mut().remove(&id);
    }
}

/// Serves `stream` until it closes, is closed by the watchdog, or has drained.
pub(crate) async fn serve<S>(
    worker: Rc<Worker>,
    builder: &auto::Builder<StreamExec>,
    conn: Rc<ConnCtx>,
    stream: S,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = &conn.listener.limits;
    let (idle_timeout, head_limit) = (limits.idle_timeout.get(), limits.header_read_timeout.get());
    let svc_conn = conn.clone();
    let svc_worker = worker.clone();
    let svc =
        service_fn(move |req| crate::handler::handle(svc_worker.clone(), svc_conn.clone(), req));
    let stream = WriteStall::new(
        stream,
        limits.stream_idle_timeout.get(),
        conn.socket.clone(),
        RequestScan::new(limits.max_header_bytes, limits.max_headers),
        !conn.listener.allow_chunked_length,
    );
    let mut connection = pin!(builder.serve_connection_with_upgrades(TokioIo::new(stream), svc));
    // The watchdog: the pending head's timeout and the idle timeout, looked at when due and
    // at least once per header timeout (so a head that begins later is caught on time), never
    // reset per request.
    let mut timer = pin!(tokio::time::sleep_until(conn.last_active.get().into()));
    let mut timer_polled = false;
    let (mut closing, mut drain_registered) = (false, false);
    let ended = std::future::poll_fn(|cx| {
        'poll: loop {
            if let Poll::Ready(res) = connection.as_mut().poll(cx) {
                return Poll::Ready(res.err());
            }
            if closing {
                return Poll::Pending;
            }
            if worker.drain.poll(conn.id, &mut drain_registered, cx) {
                // HTTP/1: finish the request in flight, then close; HTTP/2: GOAWAY.
                connection.as_mut().graceful_shutdown();
                closing = true;
                continue 'poll;
            }
            loop {
                if timer_polled {
                    if !timer.is_elapsed() {
                        // The last look may have been while a head arrived or a request ran,
                        // when only the head limit applied: the request's end brings the idle
                        // deadline forward, and the watchdog must not sleep past it.
                        if idle_timeout.is_zero() || conn.socket.head.in_flight() != 0 {
                            return Poll::Pending;
                        }
                        let idle_at = conn.last_active.get() + idle_timeout;
                        if idle_at >= timer.deadline().into_std() {
                            return Poll::Pending;
                        }
                        timer.as_mut().reset(idle_at.into());
                        timer_polled = false;
                        continue;
                    }
                } else {
                    timer_polled = true;
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                let head = &conn.socket.head;
                match head_clock::watch(
                    Instant::now(),
                    head.pending_since(),
                    head.in_flight(),
                    conn.last_active.get(),
                    head_limit,
                    idle_timeout,
                ) {
                    Watch::Next(at) => {
                        timer.as_mut().reset(at.into());
                        timer_polled = false;
                    }
                    Watch::Idle => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                        continue 'poll;
                    }
                    Watch::HeadTimedOut => {
                        // As Envoy answers a request whose headers time out: 408, then close.
                        // A connection that sent nothing (or HTTP/2's preface) has no
                        // request to answer, and is just closed.
                        if head.is_http1() {
                            let (request_id, answer, body_len) = closing_answer(
                                &mut worker.rng.borrow_mut(),
                                rustygate_core::ErrorKind::RequestTimeout,
                                "the request head was not received in time",
                            );
                            let took = head.pending_since();
                            let _ = conn.socket.farewell.set(answer);
                            let answer = HeadAnswer {
                                status: 408,
                                flags: "-",
                                details: "request_header_timeout",
                                request_id: &request_id,
                                took: took.map_or(head_limit, |t| t.elapsed()),
                                body_len,
                            };
                            crate::handler::head_answered(&worker, &conn, answer);
                        }
                        tracing::debug!(peer = %conn.peer, timeout = ?head_limit, "request head not received in time; connection closed");
                        return Poll::Ready(None);
                    }
                }
            }
        }
    })
    .await;
    worker.drain.forget(conn.id);
    if let Some(refused) = conn.socket.refused.get() {
        // hyper never saw the head, so wrote nothing for it: the socket's wrapper answers it.
        let (kind, _, details) = refused.fault.answer();
        let head = &conn.socket.head;
        let answer = HeadAnswer {
            status: kind.status().as_u16(),
            flags: "DPE",
            details,
            request_id: &refused.request_id,
            took: head.pending_since().map_or(Duration::ZERO, |t| t.elapsed()),
            body_len: refused.body_len,
        };
        crate::handler::head_answered(&worker, &conn, answer);
        tracing::debug!(peer = %conn.peer, fault = ?refused.fault, "request head refused");
    } else if let Some(e) = ended {
        // hyper answers a head it cannot parse only when no response is being written (its
        // dispatcher, which still holds any such response, is dropped after this).
        let refused = e.downcast_ref::<hyper::Error>().and_then(codec_error);
        if let Some((status, details)) = refused.filter(|_| conn.socket.head.in_flight() == 0) {
            let id = rustygate_core::forwarding::new_uuid_v4(&mut worker.rng.borrow_mut());
            let head = &conn.socket.head;
            let answer = HeadAnswer {
                status,
                flags: "DPE",
                details,
                request_id: id.to_str().unwrap_or_default(),
                took: head.pending_since().map_or(Duration::ZERO, |t| t.elapsed()),
                body_len: 0,
            };
            crate::handler::head_answered(&worker, &conn, answer);
        }
        tracing::debug!(peer = %conn.peer, error = %e, "client connection ended with error");
    }
    // An upgraded connection lives on as a tunnel. A drain waits for it like for a request
    // in flight; the grace period ends it.
    let tunnel = conn.tunnel.borrow_mut().take();
    if let Some(tunnel) = tunnel {
        tunnel.await;
    }
}

/// The answer hyper wrote itself to a request head it could not parse, if it wrote one: its
/// status and Envoy's response code details for the same fault. hyper's error says which
/// fault only in its message.
fn codec_error(e: &hyper::Error) -> Option<(u16, &'static str)> {
    if !e.is_parse() || e.is_parse_version_h2() || e.is_parse_status() {
        return None;
    }
    let message = e.to_string();
    Some(match message.as_str() {
        "URI too long" => (414, "http1.headers_too_large"),
        _ if e.is_parse_too_large() => (431, "http1.headers_too_large"),
        "invalid HTTP header parsed" => (400, "http1.invalid_characters"),
        "invalid URI" => (400, "http1.invalid_url"),
        "invalid transfer-encoding parsed" | "unexpected transfer-encoding parsed" => {
            (400, "http1.invalid_transfer_encoding")
        }
        m if m.starts_with("internal error") => return None,
        _ => (400, "http1.codec_error"),
    })
}
