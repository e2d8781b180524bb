//! Ring hash (Ketama-style consistent hashing): every endpoint owns `points_per_weight ×
//! weight` points on a 64-bit ring, placed by hashing its address; a request goes to the
//! owner of the first point at or after the hash of its key. Removing one of N endpoints
//! moves only the keys it owned, about 1/N of them. Requests without a key are left to the
//! gateway's round-robin.

use rustygate_sdk::balancer::{Balancer, Endpoint, Needs, RequestInfo};
use rustygate_sdk::hash::hash64;
use serde::Deserialize;

/// The balancer's `configuration`; every field has a default.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Ring points per unit of weight; more points spread keys more evenly.
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1, max = 10_000)))]
    points_per_weight: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            points_per_weight: 160,
        }
    }
}

#[derive(Debug, Default)]
pub struct RingHash {
    points_per_weight: u32,
    /// `(point, id)`, sorted by point.
    ring: Vec<(u64, u32)>,
}

impl RingHash {
    /// Builds the ring for `(id, address, weight)`.
    pub fn build(&mut self, endpoints: &[(u32, &str, u32)]) {
        self.ring.clear();
        for &(id, address, weight) in endpoints {
            for i in 0..self.points_per_weight * weight.max(1) {
                let point = hash64(u64::from(i), address.as_bytes());
                self.ring.push((point, id));
            }
        }
        self.ring.sort_unstable();
    }

    /// The owner of `key`.
    pub fn lookup(&self, key: &str) -> Option<u32> {
        if self.ring.is_empty() {
            return None;
        }
        let h = hash64(0, key.as_bytes());
        let i = self.ring.partition_point(|&(p, _)| p < h);
        Some(self.ring[i % self.ring.len()].1)
    }

    pub fn new(points_per_weight: u32) -> Self {
        Self {
            points_per_weight,
            ring: Vec::new(),
        }
    }
}

impl Balancer for RingHash {
    fn configure(config: &str) -> Result<Self, String> {
        let c: Config = rustygate_sdk::config::parse(config)?;
        if !(1..=10_000).contains(&c.points_per_weight) {
            return Err("configuration: points_per_weight must be between 1 and 10000".into());
        }
        Ok(Self::new(c.points_per_weight))
    }

    // Only the key decides.
    fn needs(&self) -> Needs {
        Needs::HASH_KEY
    }

    fn set_endpoints(&mut self, endpoints: Vec<Endpoint>) {
        let set: Vec<(u32, &str, u32)> = endpoints
            .iter()
            .map(|e| (e.id, e.address.as_str(), e.weight))
            .collect();
        self.build(&set);
    }

    fn pick(&mut self, request: RequestInfo) -> Option<u32> {
        self.lookup(request.hash_key.as_deref()?)
    }
}

rustygate_sdk::export_balancer!(RingHash);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_one_of_five_moves_about_a_fifth() {
        let addrs = [
            "10.0.0.1:80",
            "10.0.0.2:80",
            "10.0.0.3:80",
            "10.0.0.4:80",
            "10.0.0.5:80",
        ];
        let all: Vec<(u32, &str, u32)> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u32, *a, 1))
            .collect();
        let mut r = RingHash::new(160);
        r.build(&all);
        let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let before: Vec<u32> = keys.iter().map(|k| r.lookup(k).unwrap()).collect();
        r.build(&all[1..]);
        let moved = keys
            .iter()
            .zip(&before)
            .filter(|(k, b)| r.lookup(k) != Some(**b))
            .count();
        let owned_by_removed = before.iter().filter(|&&b| b == 0).count();
        assert_eq!(
            moved, owned_by_removed,
            "only the removed endpoint's keys move"
        );
        assert!(moved < 2_400, "{moved} of 10000 moved");
    }
}

#[cfg(test)]
#[test]
fn committed_schema_is_current() {
    rustygate_filter_kit::schema::check_committed::<Config>(
        env!("CARGO_MANIFEST_DIR"),
        "ring-hash balancer configuration",
    );
}
