//! Round-robin: each endpoint in turn, in configuration order, weights ignored.

use rustygate_sdk::balancer::{Balancer, Endpoint, Needs, RequestInfo};

/// The strategy's state on one worker.
#[derive(Debug, Default)]
pub struct RoundRobin {
    ids: Vec<u32>,
    next: usize,
}

impl Balancer for RoundRobin {
    fn configure(config: &str) -> Result<Self, String> {
        rustygate_sdk::config::none("round-robin", config)?;
        Ok(Self::default())
    }

    // Nothing: the gateway may ask for picks in batches.
    fn needs(&self) -> Needs {
        Needs::empty()
    }

    fn set_endpoints(&mut self, endpoints: Vec<Endpoint>) {
        // The turn carries over, so a health change does not restart the cycle at the start.
        self.ids = endpoints.iter().map(|e| e.id).collect();
    }

    fn pick(&mut self, _request: RequestInfo) -> Option<u32> {
        if self.ids.is_empty() {
            return None;
        }
        let id = self.ids[self.next % self.ids.len()];
        self.next = self.next.wrapping_add(1);
        Some(id)
    }
}

rustygate_sdk::export_balancer!(RoundRobin);
