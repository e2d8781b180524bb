//! Random: each pick an endpoint at random, in proportion to its weight.

use rustygate_sdk::balancer::{Balancer, Endpoint, Needs, RequestInfo};
use rustygate_sdk::rand::Rng;

#[derive(Debug)]
pub struct Random {
    /// `(id, cumulative weight)`.
    ids: Vec<(u32, u64)>,
    total: u64,
    rng: Rng,
}

impl Balancer for Random {
    fn configure(config: &str) -> Result<Self, String> {
        rustygate_sdk::config::none("random", config)?;
        Ok(Self {
            ids: Vec::new(),
            total: 0,
            rng: Rng::from_host(),
        })
    }

    // Nothing: the gateway may ask for picks in batches.
    fn needs(&self) -> Needs {
        Needs::empty()
    }

    fn set_endpoints(&mut self, endpoints: Vec<Endpoint>) {
        let mut acc = 0;
        self.ids = endpoints
            .iter()
            .map(|e| {
                acc += u64::from(e.weight.max(1));
                (e.id, acc)
            })
            .collect();
        self.total = acc;
    }

    fn pick(&mut self, _request: RequestInfo) -> Option<u32> {
        if self.total == 0 {
            return None;
        }
        let r = self.rng.below(self.total);
        let i = self.ids.partition_point(|&(_, cum)| cum <= r);
        self.ids.get(i).map(|&(id, _)| id)
    }
}

rustygate_sdk::export_balancer!(Random);
