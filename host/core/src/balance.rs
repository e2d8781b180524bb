//! Native endpoint selection: smooth weighted round-robin as nginx does it. For equal weights
//! this is plain round-robin; for weights {5,1,1} it yields a a b a c a a rather than
//! bursts of a. One instance lives on each worker, so it needs no atomics or locks.

/// Smooth weighted round-robin over a fixed endpoint list.
#[derive(Debug, Clone)]
pub struct SmoothWrr {
    weights: Vec<i64>,
    current: Vec<i64>,
    total: i64,
}

impl SmoothWrr {
    /// A selector for endpoints with these weights (each ≥ 1).
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Vec<i64> = weights.into_iter().map(|w| i64::from(w.max(1))).collect();
        let total = weights.iter().sum();
        Self {
            current: vec![0; weights.len()],
            weights,
            total,
        }
    }

    /// The next endpoint among those `eligible` says may be used, or `None` when none may.
    /// Ineligible endpoints neither receive traffic nor accumulate credit, so the eligible
    /// ones keep their relative weights, and an endpoint that comes back starts level.
    pub fn pick_among(&mut self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut total = 0;
        for i in 0..self.weights.len() {
            if !eligible(i) {
                continue;
            }
            total += self.weights[i];
            self.current[i] += self.weights[i];
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.current[best] -= total;
        Some(best)
    }

    /// The next endpoint index, or `None` for an empty list.
    pub fn pick(&mut self) -> Option<usize> {
        if self.weights.len() <= 1 {
            return if self.weights.is_empty() {
                None
            } else {
                Some(0)
            };
        }
        let mut best = 0;
        for i in 0..self.weights.len() {
            self.current[i] += self.weights[i];
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= self.total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_rotate() {
        let mut b = SmoothWrr::new([1, 1, 1]);
        let seq: Vec<_> = (0..6).map(|_| b.pick().unwrap()).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weights_are_smooth_and_exact() {
        let mut b = SmoothWrr::new([5, 1, 1]);
        let seq: Vec<_> = (0..7).map(|_| b.pick().unwrap()).collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
        let mut counts = [0; 3];
        for _ in 0..7000 {
            counts[b.pick().unwrap()] += 1;
        }
        assert_eq!(counts, [5000, 1000, 1000]);
    }

    #[test]
    fn ineligible_endpoints_are_skipped_and_the_rest_keep_their_weights() {
        let mut b = SmoothWrr::new([3, 1, 1]);
        let mut counts = [0; 3];
        for _ in 0..400 {
            counts[b.pick_among(|i| i != 0).unwrap()] += 1;
        }
        assert_eq!(counts, [0, 200, 200]);
        for _ in 0..500 {
            counts[b.pick_among(|_| true).unwrap()] += 1;
        }
        assert_eq!(counts, [300, 300, 300]);
        assert_eq!(b.pick_among(|_| false), None);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(SmoothWrr::new([]).pick(), None);
        assert_eq!(SmoothWrr::new([9]).pick(), Some(0));
    }
}

/// A route's traffic split: which of its clusters (by position) a request goes to, for `r`
/// drawn uniformly from `0..total` where `cumulative[i]` is the sum of the first `i + 1`
/// weights and `total` the last of them. A zero weight is never picked.
pub fn pick_weighted(cumulative: &[u32], r: u32) -> usize {
    cumulative.partition_point(|&c| c <= r)
}

#[cfg(test)]
mod split_tests {
    use super::pick_weighted;

    #[test]
    fn each_target_gets_its_share_and_zero_weights_none() {
        // Weights 0, 3, 1: cumulative 0, 3, 4.
        let cumulative = [0, 3, 4];
        let picks: Vec<usize> = (0..4).map(|r| pick_weighted(&cumulative, r)).collect();
        assert_eq!(picks, [1, 1, 1, 2]);
        assert_eq!(pick_weighted(&[5], 4), 0);
    }
}
