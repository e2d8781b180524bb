//! The time as of the current poll of a client connection's task, for the readings that need
//! no finer grain than that: when a request or its head began, deadlines, the pool's idle
//! expiries, how long an upstream took to answer.
//!
//! A poll of a connection usually reads the clock several times (the head's arrival, the
//! request's start, the attempt's deadline, the pool's checkout; then the upstream's answer,
//! the connection's return to the pool), each a `clock_gettime` of ≈ 30 ns on the virtual
//! machines measured here, where the whole request costs ≈ 10 µs. As nginx does with its
//! cached time per turn of its event loop, the first reading of a poll is kept and the others
//! of that poll share it. A poll runs until the task waits: microseconds, longer only when
//! it runs filters (each callback within its CPU limit), while what is timed here is
//! deadlines and idle limits of milliseconds or more, and durations that start or end with
//! the arrival that began a poll. What needs the exact time (the request's duration, filter
//! callbacks) reads the clock itself.
//!
//! Readings outside a connection's poll (health checks, ticks, other tasks of the worker)
//! are not kept: each reads the clock.
//!
//! Atomics for `Send` (the connection's socket wrapper holds one), though only the worker's
//! thread touches them: relaxed loads and stores, plain moves on x86-64 and ARM.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// An optional instant in an atomic: nanoseconds after `base`, plus one; 0 is none.
pub(crate) struct AtomicInstant {
    base: Instant,
    nanos: AtomicU64,
}

impl AtomicInstant {
    /// Empty, measuring from `base`.
    pub fn new(base: Instant) -> Self {
        Self {
            base,
            nanos: AtomicU64::new(0),
        }
    }

    pub fn load(&self) -> Option<Instant> {
        match self.nanos.load(Relaxed) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }

    pub fn is_none(&self) -> bool {
        self.nanos.load(Relaxed) == 0
    }

    pub fn store(&self, at: Option<Instant>) {
        let n = at.map_or(0, |at| {
            let after = at.saturating_duration_since(self.base).as_nanos();
            u64::try_from(after).unwrap_or(u64::MAX - 1) + 1
        });
        self.nanos.store(n, Relaxed);
    }
}

pub(crate) struct LoopClock {
    /// The poll's reading; none yet.
    kept: AtomicInstant,
    /// Whether a connection's poll is running.
    polling: AtomicBool,
}

impl Default for LoopClock {
    fn default() -> Self {
        Self::new()
    }
}

impl LoopClock {
    pub fn new() -> Self {
        Self {
            kept: AtomicInstant::new(Instant::now()),
            polling: AtomicBool::new(false),
        }
    }

    /// The time: the poll's first reading, or a new one.
    pub fn now(&self) -> Instant {
        if let Some(kept) = self.kept.load() {
            return kept;
        }
        let now = Instant::now();
        if self.polling.load(Relaxed) {
            self.kept.store(Some(now));
        }
        now
    }

    /// `fut`, with one reading of the clock kept per poll.
    pub fn per_poll<F: Future>(self: &Arc<Self>, fut: F) -> PerPoll<F> {
        PerPoll {
            clock: self.clone(),
            fut,
        }
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct PerPoll<F> {
        clock: Arc<LoopClock>,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for PerPoll<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let clock = &**this.clock;
        clock.polling.store(true, Relaxed);
        let out = this.fut.poll(cx);
        clock.polling.store(false, Relaxed);
        clock.kept.store(None);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_keeps_its_first_reading_and_the_next_poll_reads_again() {
        let clock = Arc::new(LoopClock::new());
        let mut readings = Vec::new();
        let mut polls = 0;
        let fut = std::future::poll_fn(|cx| {
            readings.push((clock.now(), clock.now()));
            std::thread::sleep(Duration::from_millis(2));
            polls += 1;
            if polls == 2 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        {
            let mut fut = std::pin::pin!(clock.per_poll(fut));
            let mut cx = Context::from_waker(std::task::Waker::noop());
            while fut.as_mut().poll(&mut cx).is_pending() {}
        }
        let [(a, b), (c, d)] = readings[..] else {
            panic!("two polls")
        };
        assert_eq!(a, b, "one reading per poll");
        assert_eq!(c, d);
        assert!(
            c >= a + Duration::from_millis(2),
            "the second poll read anew"
        );
    }

    #[test]
    fn outside_a_poll_every_reading_is_new() {
        let clock = LoopClock::new();
        let a = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.now() >= a + Duration::from_millis(2));
    }
}
