//! How long a client connection has been sending a request head: the listener's
//! `header_read_timeout`, timed from the head's first byte.
//!
//! hyper's own header timer is not used. It starts whenever hyper waits for a head, the wait
//! between two requests on a keep-alive connection included, so it closed idle connections
//! after the header timeout instead of the idle timeout (and even with `idle_timeout: 0s`);
//! it also costs a timer reset per request. Here the socket wrapper notes when bytes arrive
//! while no request is in flight, the request's start clears that, and the connection's
//! watchdog (which also keeps the idle timeout) acts on it. As in nginx, a new connection's
//! first head is timed from the accept: a client that connects and sends nothing is not idle
//! but slow.
//!
//! The state is shared with the socket wrapper, which hyper requires to be `Send`: atomics,
//! though only the connection's worker thread ever touches them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::loop_clock::{AtomicInstant, LoopClock};

/// What an HTTP/2 connection starts with (RFC 9113 §3.4); its request heads are frames that
/// hyper's HTTP/2 server times itself.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// `proto` once the connection is known to speak HTTP/1.x; below it, the preface bytes matched.
const HTTP1: u8 = 100;
const HTTP2: u8 = 101;

pub(crate) struct HeadClock {
    /// The worker's clock: a head's start needs the time only to the poll.
    clock: Arc<LoopClock>,
    /// When the pending request head began, if one is.
    since: AtomicInstant,
    in_flight: AtomicUsize,
    /// Requests started on the connection so far.
    started: AtomicU64,
    /// Preface bytes matched so far (0..24), or [`HTTP1`] / [`HTTP2`].
    proto: AtomicU8,
}

impl HeadClock {
    /// For a connection accepted at `accepted`: its first head is pending from then.
    pub fn new(accepted: Instant, clock: Arc<LoopClock>) -> Self {
        let since = AtomicInstant::new(accepted);
        since.store(Some(accepted));
        Self {
            clock,
            since,
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            proto: AtomicU8::new(0),
        }
    }

    /// The first head is pending from `at` instead (after a TLS handshake, which has a
    /// timeout of its own).
    pub fn restart(&self, at: Instant) {
        self.since.store(Some(at));
    }

    /// Bytes just read from the client.
    pub fn read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let matched = self.proto.load(Relaxed);
        if matched < PREFACE.len() as u8 {
            let at = usize::from(matched);
            let n = bytes.len().min(PREFACE.len() - at);
            if bytes[..n] != PREFACE[at..at + n] {
                self.proto.store(HTTP1, Relaxed);
            } else if at + n == PREFACE.len() {
                self.proto.store(HTTP2, Relaxed);
                self.since.store(None);
                return;
            } else {
                self.proto.store((at + n) as u8, Relaxed);
                return;
            }
        } else if matched == HTTP2 {
            return;
        }
        // Bytes while a request is in flight are its body (or, pipelined, the next head, which
        // the idle timeout then covers).
        if self.in_flight.load(Relaxed) == 0 && self.since.is_none() {
            self.since.store(Some(self.clock.now()));
        }
    }

    /// A request head has been received: the request runs.
    pub fn request_started(&self) {
        self.in_flight
            .store(self.in_flight.load(Relaxed) + 1, Relaxed);
        self.started.store(self.started.load(Relaxed) + 1, Relaxed);
        self.since.store(None);
    }

    pub fn request_finished(&self) {
        self.in_flight
            .store(self.in_flight.load(Relaxed).saturating_sub(1), Relaxed);
    }

    /// Whether the connection is known to speak HTTP/1.x (its first bytes were not HTTP/2's
    /// preface): a head that times out then had bytes of its own, and can be answered.
    pub fn is_http1(&self) -> bool {
        self.proto.load(Relaxed) == HTTP1
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// Requests started on the connection so far.
    pub fn started(&self) -> u64 {
        self.started.load(Relaxed)
    }

    /// When the request head still being received began, if one is.
    pub fn pending_since(&self) -> Option<Instant> {
        self.since.load()
    }
}

/// What a connection's watchdog does when it wakes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Watch {
    /// A request head took longer than the header timeout: the connection is closed.
    HeadTimedOut,
    /// No request for the idle timeout: the connection is closed gracefully.
    Idle,
    /// Nothing yet; wake again then.
    Next(Instant),
}

/// The watchdog's decision at `now`. It may wake early (never late): waking at most
/// `head_limit` after its last look means a head that begins later is still caught on time.
pub(crate) fn watch(
    now: Instant,
    head_since: Option<Instant>,
    in_flight: usize,
    last_active: Instant,
    head_limit: Duration,
    idle_timeout: Duration,
) -> Watch {
    if let Some(since) = head_since {
        let due = since + head_limit;
        return if now >= due {
            Watch::HeadTimedOut
        } else {
            Watch::Next(due)
        };
    }
    let mut next = now + head_limit;
    // `0s` keeps idle connections open (Envoy's meaning of a zero idle timeout).
    if in_flight == 0 && !idle_timeout.is_zero() {
        let idle_at = last_active + idle_timeout;
        if now >= idle_at {
            return Watch::Idle;
        }
        next = next.min(idle_at);
    }
    Watch::Next(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn the_first_head_is_timed_from_the_accept() {
        let t0 = Instant::now();
        let clock = HeadClock::new(t0, Arc::default());
        assert_eq!(clock.pending_since(), Some(t0));
        assert_eq!(
            watch(t0 + HEAD, clock.pending_since(), 0, t0, HEAD, IDLE),
            Watch::HeadTimedOut
        );
        assert_eq!(
            watch(t0 + HEAD / 2, clock.pending_since(), 0, t0, HEAD, IDLE),
            Watch::Next(t0 + HEAD)
        );
    }

    /// A clock whose connection has a request in flight.
    fn running(t0: Instant) -> HeadClock {
        let clock = HeadClock::new(t0, Arc::default());
        clock.read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        clock.request_started();
        assert_eq!(clock.pending_since(), None);
        clock
    }

    #[test]
    fn a_keep_alive_connection_between_requests_is_idle_not_slow() {
        let t0 = Instant::now();
        let clock = running(t0);
        clock.request_finished();
        let done = t0 + Duration::from_millis(5);
        // Twice the header timeout later, still open; closed at the idle timeout.
        assert_eq!(
            watch(done + 2 * HEAD, clock.pending_since(), 0, done, HEAD, IDLE),
            Watch::Next(done + 3 * HEAD)
        );
        assert_eq!(watch(done + IDLE, None, 0, done, HEAD, IDLE), Watch::Idle);
        // With the idle timeout off, for ever.
        assert_eq!(
            watch(done + 10 * IDLE, None, 0, done, HEAD, Duration::ZERO),
            Watch::Next(done + 10 * IDLE + HEAD)
        );
    }

    #[test]
    fn the_next_head_is_timed_from_its_first_byte() {
        let t0 = Instant::now();
        let clock = running(t0);
        clock.read(b"body bytes while the request runs");
        assert_eq!(clock.pending_since(), None, "a body is not a head");
        clock.request_finished();
        clock.read(b"GET /next HT");
        let since = clock.pending_since().expect("a head is pending");
        assert!(since > t0);
        clock.read(b"TP/1.1\r\n");
        assert_eq!(
            clock.pending_since(),
            Some(since),
            "timed from its first byte"
        );
        assert_eq!(
            watch(since + HEAD, Some(since), 0, t0, HEAD, IDLE),
            Watch::HeadTimedOut
        );
    }

    #[test]
    fn http2_connections_are_not_timed_as_heads() {
        let t0 = Instant::now();
        let clock = HeadClock::new(t0, Arc::default());
        // The preface may come in pieces.
        clock.read(&PREFACE[..10]);
        assert_eq!(clock.pending_since(), Some(t0));
        clock.read(&PREFACE[10..]);
        assert_eq!(clock.pending_since(), None);
        clock.read(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        assert_eq!(clock.pending_since(), None);
    }

    #[test]
    fn a_request_line_is_not_mistaken_for_the_preface() {
        let clock = HeadClock::new(Instant::now(), Arc::default());
        clock.read(b"PRI");
        clock.read(b"NT / HTTP/1.1\r\n");
        clock.request_started();
        clock.request_finished();
        clock.read(PREFACE);
        assert!(
            clock.pending_since().is_some(),
            "HTTP/1.1 from the first bytes on"
        );
    }
}
