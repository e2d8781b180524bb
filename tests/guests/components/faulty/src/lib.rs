//! Round-robin that misbehaves when the request's hash key says so: `trap` panics (a trap),
//! `spin` loops forever (the CPU deadline stops it), `stranger` picks an id that was never
//! offered, `grow` allocates until the memory cap refuses. Configuration `"refuse"` makes
//! `configure` fail.

use rustygate_sdk::balancer::{Balancer, Endpoint, Needs, RequestInfo};

#[derive(Default)]
pub struct Faulty {
    ids: Vec<u32>,
    next: usize,
    hoard: Vec<Vec<u8>>,
}

impl Balancer for Faulty {
    fn configure(config: &str) -> Result<Self, String> {
        if config.contains("refuse") {
            return Err("told to refuse".into());
        }
        Ok(Self::default())
    }

    // It misbehaves by hash key.
    fn needs(&self) -> Needs {
        Needs::HASH_KEY
    }

    fn set_endpoints(&mut self, endpoints: Vec<Endpoint>) {
        self.ids = endpoints.iter().map(|e| e.id).collect();
    }

    fn pick(&mut self, request: RequestInfo) -> Option<u32> {
        match request.hash_key.as_deref() {
            Some("trap") => panic!("told to trap"),
            Some("spin") => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(3));
                }
            }
            Some("stranger") => return Some(9_999),
            // 8 MiB at a time, reserved, not written: the 16 MiB cap refuses within three
            // grows, far inside the CPU budget even on a loaded machine (1 MiB steps once ran
            // into the deadline first under CI load).
            Some("grow") => loop {
                let mut chunk = Vec::with_capacity(8 << 20);
                chunk.push(1);
                self.hoard.push(chunk);
            },
            _ => {}
        }
        let id = *self.ids.get(self.next % self.ids.len().max(1))?;
        self.next += 1;
        Some(id)
    }
}

rustygate_sdk::export_balancer!(Faulty);
