//! Least request with the power of two choices: draw `choices` endpoints at random and send
//! to the one with the fewest requests awaiting a response, relative to its weight (as
//! Envoy's LEAST_REQUEST). A slow endpoint accumulates outstanding requests and so gets fewer
//! new ones.

use rustygate_sdk::balancer::{Balancer, Endpoint, Needs, Outcome, RequestInfo};
use rustygate_sdk::rand::Rng;
use serde::Deserialize;

/// The balancer's `configuration`; every field has a default.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Endpoints drawn per pick.
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1)))]
    choices: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self { choices: 2 }
    }
}

#[derive(Debug)]
pub struct LeastRequest {
    choices: u32,
    /// `(id, weight, outstanding)`.
    peers: Vec<(u32, u32, u32)>,
    rng: Rng,
}

impl LeastRequest {
    /// Index of the best of `choices` random draws.
    pub fn choose(&mut self) -> Option<usize> {
        let n = self.peers.len() as u64;
        if n == 0 {
            return None;
        }
        let mut best: Option<usize> = None;
        let mut drawn: Vec<usize> = Vec::with_capacity(self.choices as usize);
        for _ in 0..u64::from(self.choices.max(1)).min(n) {
            // Distinct draws: with two endpoints, both are always compared.
            let mut i = self.rng.below(n) as usize;
            while drawn.contains(&i) {
                i = (i + 1) % n as usize;
            }
            drawn.push(i);
            // outstanding / weight, compared without division.
            let load = |j: usize| u64::from(self.peers[j].2) * 1000 / u64::from(self.peers[j].1);
            if best.is_none_or(|b| load(i) < load(b)) {
                best = Some(i);
            }
        }
        best
    }

    fn started(&mut self, i: usize) -> u32 {
        self.peers[i].2 += 1;
        self.peers[i].0
    }

    fn finished(&mut self, id: u32) {
        if let Some(p) = self.peers.iter_mut().find(|p| p.0 == id) {
            p.2 = p.2.saturating_sub(1);
        }
    }

    /// A strategy with the given endpoints `(id, weight)`, for tests.
    pub fn with(choices: u32, endpoints: &[(u32, u32)], seed: u64) -> Self {
        Self {
            choices,
            peers: endpoints.iter().map(|&(id, w)| (id, w.max(1), 0)).collect(),
            rng: Rng::seeded(seed),
        }
    }
}

impl Balancer for LeastRequest {
    fn configure(config: &str) -> Result<Self, String> {
        let c: Config = rustygate_sdk::config::parse(config)?;
        if c.choices == 0 {
            return Err("configuration: choices must be at least 1".into());
        }
        Ok(Self {
            choices: c.choices,
            peers: Vec::new(),
            rng: Rng::from_host(),
        })
    }

    // Outstanding requests are counted from picks and outcomes.
    fn needs(&self) -> Needs {
        Needs::OUTCOMES
    }

    fn set_endpoints(&mut self, endpoints: Vec<Endpoint>) {
        let old = std::mem::take(&mut self.peers);
        self.peers = endpoints
            .iter()
            .map(|e| {
                let outstanding = old.iter().find(|p| p.0 == e.id).map_or(0, |p| p.2);
                (e.id, e.weight.max(1), outstanding)
            })
            .collect();
    }

    fn pick(&mut self, _request: RequestInfo) -> Option<u32> {
        let i = self.choose()?;
        Some(self.started(i))
    }

    fn report(&mut self, id: u32, _outcome: Outcome) {
        self.finished(id);
    }
}

rustygate_sdk::export_balancer!(LeastRequest);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avoids_the_endpoint_with_outstanding_requests() {
        let mut lr = LeastRequest::with(2, &[(0, 1), (1, 1)], 42);
        // Endpoint 0 never answers: after its first pick, every pair that includes it prefers 1.
        let mut to_zero = 0;
        for _ in 0..1000 {
            let i = lr.choose().unwrap();
            let id = lr.started(i);
            if id == 0 {
                to_zero += 1;
            } else {
                lr.finished(id);
            }
        }
        assert!(to_zero < 20, "{to_zero} picks of the stuck endpoint");
    }
}

#[cfg(test)]
#[test]
fn committed_schema_is_current() {
    rustygate_filter_kit::schema::check_committed::<Config>(
        env!("CARGO_MANIFEST_DIR"),
        "least-request balancer configuration",
    );
}
