//! Peak EWMA (as Finagle and Linkerd do it): each endpoint's cost is its moving average of
//! response latency times its outstanding requests plus one; two endpoints are drawn at random
//! and the cheaper one is taken. The average jumps up at once to a slower observation (the
//! "peak") and decays back towards faster ones, so a degraded endpoint is avoided quickly and
//! won back gradually. Failures count as `penalty_ms`.

use std::time::Instant;

use rustygate_sdk::balancer::{Balancer, Endpoint, Needs, Outcome, RequestInfo};
use rustygate_sdk::rand::Rng;
use serde::Deserialize;

/// The balancer's `configuration`; every field has a default.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Time constant of the moving average, in milliseconds.
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1)))]
    decay_ms: u64,
    /// Latency a connect failure, timeout or reset counts as, in milliseconds.
    penalty_ms: u64,
    /// Latency assumed for an endpoint with no observations yet, in milliseconds.
    default_rtt_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            decay_ms: 10_000,
            penalty_ms: 1_000,
            default_rtt_ms: 1,
        }
    }
}

#[derive(Debug, Clone)]
struct Peer {
    id: u32,
    /// Moving average of latency, in microseconds.
    ewma_us: f64,
    stamp: Instant,
    outstanding: u32,
}

#[derive(Debug)]
pub struct PeakEwma {
    decay_us: f64,
    penalty_us: f64,
    default_us: f64,
    peers: Vec<Peer>,
    rng: Rng,
}

impl PeakEwma {
    fn cost(&self, i: usize, now: Instant) -> f64 {
        let p = &self.peers[i];
        // Without fresh observations the average decays towards zero, so an idle endpoint is
        // tried again.
        let idle = now.saturating_duration_since(p.stamp).as_micros() as f64;
        let ewma = p.ewma_us * (-idle / self.decay_us).exp();
        ewma * f64::from(p.outstanding + 1)
    }

    fn observe(&mut self, id: u32, rtt_us: f64, now: Instant) {
        let decay = self.decay_us;
        let Some(p) = self.peers.iter_mut().find(|p| p.id == id) else {
            return;
        };
        p.outstanding = p.outstanding.saturating_sub(1);
        if rtt_us > p.ewma_us {
            p.ewma_us = rtt_us;
        } else {
            let elapsed = now.saturating_duration_since(p.stamp).as_micros() as f64;
            let w = (-elapsed / decay).exp();
            p.ewma_us = p.ewma_us * w + rtt_us * (1.0 - w);
        }
        p.stamp = now;
    }
}

impl Balancer for PeakEwma {
    fn configure(config: &str) -> Result<Self, String> {
        let c: Config = rustygate_sdk::config::parse(config)?;
        if c.decay_ms == 0 {
            return Err("configuration: decay_ms must be more than 0".into());
        }
        Ok(Self {
            decay_us: c.decay_ms as f64 * 1000.0,
            penalty_us: c.penalty_ms as f64 * 1000.0,
            default_us: c.default_rtt_ms as f64 * 1000.0,
            peers: Vec::new(),
            rng: Rng::from_host(),
        })
    }

    // Latencies come from outcomes.
    fn needs(&self) -> Needs {
        Needs::OUTCOMES
    }

    fn set_endpoints(&mut self, endpoints: Vec<Endpoint>) {
        let now = Instant::now();
        let old = std::mem::take(&mut self.peers);
        self.peers = endpoints
            .iter()
            .map(|e| {
                old.iter().find(|p| p.id == e.id).cloned().unwrap_or(Peer {
                    id: e.id,
                    ewma_us: self.default_us,
                    stamp: now,
                    outstanding: 0,
                })
            })
            .collect();
    }

    fn pick(&mut self, _request: RequestInfo) -> Option<u32> {
        let n = self.peers.len() as u64;
        if n == 0 {
            return None;
        }
        let now = Instant::now();
        // Two distinct draws (the same one twice when there is only one endpoint).
        let a = self.rng.below(n) as usize;
        let b = if n > 1 {
            (a + 1 + self.rng.below(n - 1) as usize) % n as usize
        } else {
            a
        };
        let i = if self.cost(b, now) < self.cost(a, now) {
            b
        } else {
            a
        };
        self.peers[i].outstanding += 1;
        Some(self.peers[i].id)
    }

    fn report(&mut self, id: u32, outcome: Outcome) {
        let rtt = match outcome {
            Outcome::Response(r) => r.latency_us as f64,
            Outcome::ConnectFailure | Outcome::Timeout | Outcome::Reset => self.penalty_us,
        };
        self.observe(id, rtt, Instant::now());
    }
}

rustygate_sdk::export_balancer!(PeakEwma);

#[cfg(test)]
#[test]
fn committed_schema_is_current() {
    rustygate_filter_kit::schema::check_committed::<Config>(
        env!("CARGO_MANIFEST_DIR"),
        "peak-EWMA balancer configuration",
    );
}
