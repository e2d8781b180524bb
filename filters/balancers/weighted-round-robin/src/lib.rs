//! Smooth weighted round-robin, as nginx does it: every pick adds each endpoint's weight to
//! its current score, takes the highest and subtracts the total from it. Weights 5, 1, 1 give
//! a, a, b, a, c, a, a rather than five a's in a row.

use rustygate_sdk::balancer::{Balancer, Endpoint, Needs, RequestInfo};

#[derive(Debug, Default)]
pub struct Smooth {
    /// `(id, weight, current)`.
    peers: Vec<(u32, i64, i64)>,
    total: i64,
}

impl Smooth {
    /// The next id, or `None` with no endpoints.
    pub fn next_id(&mut self) -> Option<u32> {
        let mut best: Option<usize> = None;
        for i in 0..self.peers.len() {
            self.peers[i].2 += self.peers[i].1;
            if best.is_none_or(|b| self.peers[i].2 > self.peers[b].2) {
                best = Some(i);
            }
        }
        let b = best?;
        self.peers[b].2 -= self.total;
        Some(self.peers[b].0)
    }

    /// Replaces the set, keeping the scores of endpoints that stay.
    pub fn set(&mut self, endpoints: &[(u32, u32)]) {
        let old = std::mem::take(&mut self.peers);
        self.peers = endpoints
            .iter()
            .map(|&(id, w)| {
                let current = old.iter().find(|p| p.0 == id).map_or(0, |p| p.2);
                (id, i64::from(w.max(1)), current)
            })
            .collect();
        self.total = self.peers.iter().map(|p| p.1).sum();
    }
}

impl Balancer for Smooth {
    fn configure(config: &str) -> Result<Self, String> {
        // Weights come from the endpoints.
        rustygate_sdk::config::none("weighted-round-robin", config)?;
        Ok(Self::default())
    }

    // Nothing: the gateway may ask for picks in batches.
    fn needs(&self) -> Needs {
        Needs::empty()
    }

    fn set_endpoints(&mut self, endpoints: Vec<Endpoint>) {
        let set: Vec<(u32, u32)> = endpoints.iter().map(|e| (e.id, e.weight)).collect();
        self.set(&set);
    }

    fn pick(&mut self, _request: RequestInfo) -> Option<u32> {
        self.next_id()
    }
}

rustygate_sdk::export_balancer!(Smooth);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_by_weight() {
        let mut s = Smooth::default();
        s.set(&[(0, 5), (1, 1), (2, 1)]);
        let seq: Vec<u32> = (0..7).map(|_| s.next_id().unwrap()).collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
    }
}
