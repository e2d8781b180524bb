//! A count that every worker changes on its hot path and other threads only read.

use std::sync::atomic::{AtomicUsize, Ordering};

/// One slot per worker, each changed only by its own worker with a plain load and store: an
/// atomic add is a locked instruction, which waits for the worker's pending stores to drain
/// first, and a count shared by all workers also bounces its cache line between their
/// cores. Readers add the slots up; each moves by whole steps, so the sum is exact whenever
/// the workers are still, and otherwise off by the changes in flight.
pub(crate) struct PerWorker(Box<[Slot]>);

/// A slot on a cache line of its own (two, for the adjacent-line prefetcher).
#[repr(align(128))]
struct Slot(AtomicUsize);

impl PerWorker {
    pub(crate) fn new(workers: usize) -> Self {
        Self((0..workers).map(|_| Slot(AtomicUsize::new(0))).collect())
    }

    /// Adds one to `worker`'s slot. Only worker `worker` may call this (or
    /// [`PerWorker::decrement`]), from its own thread.
    #[inline]
    pub(crate) fn increment(&self, worker: usize) {
        let slot = &self.0[worker].0;
        slot.store(slot.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Takes one from `worker`'s slot; as [`PerWorker::increment`].
    #[inline]
    pub(crate) fn decrement(&self, worker: usize) {
        let slot = &self.0[worker].0;
        slot.store(slot.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    }

    /// The count over all workers.
    pub(crate) fn total(&self) -> usize {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Workers changing their own slots on their own threads lose nothing.
    #[test]
    fn sums_what_each_worker_counted() {
        let counts = Arc::new(PerWorker::new(3));
        let threads: Vec<_> = (0..3)
            .map(|w| {
                let counts = counts.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        counts.increment(w);
                    }
                    for _ in 0..(w * 1000) {
                        counts.decrement(w);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counts.total(), 30_000 - 3000);
    }
}
