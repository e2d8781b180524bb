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
    fn empty_and_single() {
        assert_eq!(SmoothWrr::new([]).pick(), None);
        assert_eq!(SmoothWrr::new([9]).pick(), Some(0));
    }
}
