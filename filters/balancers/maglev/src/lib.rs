//! Maglev consistent hashing (Google's Maglev paper, as Envoy implements it): a lookup table
//! of `table_size` entries (a prime) is filled by letting each endpoint claim slots along its
//! own permutation, in turns proportional to its weight. A request goes to
//! `table[hash(key) % table_size]`. Lookups are O(1); removing one of N endpoints moves
//! little more than 1/N of the keys. Requests without a key are left to the gateway.

use rustygate_sdk::balancer::{Balancer, Endpoint, Needs, RequestInfo};
use rustygate_sdk::hash::hash64;
use serde::Deserialize;

/// The balancer's `configuration`; every field has a default.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Lookup table size; must be a prime well above the number of endpoints (×100).
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 2, max = 5_000_011)))]
    table_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self { table_size: 65_537 }
    }
}

#[derive(Debug, Default)]
pub struct Maglev {
    size: u64,
    table: Vec<u32>,
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

impl Maglev {
    pub fn new(size: u64) -> Self {
        Self {
            size,
            table: Vec::new(),
        }
    }

    /// Fills the table for `(id, address, weight)`.
    pub fn build(&mut self, endpoints: &[(u32, &str, u32)]) {
        let m = self.size;
        self.table.clear();
        if endpoints.is_empty() {
            return;
        }
        let perms: Vec<(u64, u64)> = endpoints
            .iter()
            .map(|&(_, address, _)| {
                let offset = hash64(0x6d61_676c, address.as_bytes()) % m;
                let skip = hash64(0x736b_6970, address.as_bytes()) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let max_weight = endpoints.iter().map(|e| e.2.max(1)).max().unwrap_or(1) as f64;
        let mut next = vec![0u64; endpoints.len()];
        let mut credit = vec![0f64; endpoints.len()];
        let mut table = vec![u32::MAX; m as usize];
        let mut filled = 0u64;
        'fill: loop {
            for (i, &(id, _, weight)) in endpoints.iter().enumerate() {
                // Heavier endpoints claim a slot every turn, lighter ones in proportion.
                credit[i] += f64::from(weight.max(1)) / max_weight;
                if credit[i] < 1.0 {
                    continue;
                }
                credit[i] -= 1.0;
                let (offset, skip) = perms[i];
                loop {
                    let slot = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[slot] == u32::MAX {
                        table[slot] = id;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break 'fill;
                }
            }
        }
        self.table = table;
    }

    /// The owner of `key`.
    pub fn lookup(&self, key: &str) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(hash64(0, key.as_bytes()) % self.size) as usize])
    }
}

impl Balancer for Maglev {
    fn configure(config: &str) -> Result<Self, String> {
        let c: Config = rustygate_sdk::config::parse(config)?;
        if !is_prime(c.table_size) || c.table_size > 5_000_011 {
            return Err(format!(
                "configuration: table_size {} must be a prime no larger than 5000011 (65537 is a good default)",
                c.table_size
            ));
        }
        Ok(Self::new(c.table_size))
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

rustygate_sdk::export_balancer!(Maglev);

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u32) -> Vec<(u32, String, u32)> {
        (0..n).map(|i| (i, format!("10.0.0.{i}:80"), 1)).collect()
    }

    #[test]
    fn even_spread_and_small_disruption() {
        let all = set(5);
        let refs: Vec<(u32, &str, u32)> =
            all.iter().map(|(i, a, w)| (*i, a.as_str(), *w)).collect();
        let mut m = Maglev::new(65_537);
        m.build(&refs);
        let mut counts = [0u32; 5];
        for id in &m.table {
            counts[*id as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (13_000..13_300).contains(&c)),
            "{counts:?}"
        );
        let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let before: Vec<u32> = keys.iter().map(|k| m.lookup(k).unwrap()).collect();
        m.build(&refs[1..]);
        let moved = keys
            .iter()
            .zip(&before)
            .filter(|(k, b)| m.lookup(k) != Some(**b))
            .count();
        assert!(moved < 2_600, "{moved} of 10000 moved (1/5 is 2000)");
    }

    #[test]
    fn weights_shape_the_table() {
        let mut m = Maglev::new(65_537);
        m.build(&[(0, "a:1", 3), (1, "b:1", 1)]);
        let zero = m.table.iter().filter(|&&id| id == 0).count() as f64;
        assert!((zero / 65_537.0 - 0.75).abs() < 0.01, "{zero}");
    }

    #[test]
    fn only_primes() {
        assert!(Maglev::configure(r#"{"table_size": 65536}"#).is_err());
        assert!(Maglev::configure(r#"{"table_size": 251}"#).is_ok());
    }
}

#[cfg(test)]
#[test]
fn committed_schema_is_current() {
    rustygate_filter_kit::schema::check_committed::<Config>(
        env!("CARGO_MANIFEST_DIR"),
        "Maglev balancer configuration",
    );
}
