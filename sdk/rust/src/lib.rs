//! Write RustyGate components in Rust.
//!
//! A typed HTTP filter implements [`filter::HttpFilter`] and is exported with
//! [`export_http_filter!`]; a load-balancing strategy implements [`balancer::Balancer`] and is
//! exported with [`export_balancer!`]. Build the crate as a `cdylib` for `wasm32-wasip2` and
//! name the `.wasm` in a configuration's `filters:` or `balancers:`. See
//! docs/filters/components.md.
//!
//! ```ignore
//! use rustygate_sdk::balancer::{Balancer, Endpoint, RequestInfo};
//!
//! struct First(Vec<Endpoint>);
//!
//! impl Balancer for First {
//!     fn configure(_config: &str) -> Result<Self, String> {
//!         Ok(First(Vec::new()))
//!     }
//!     fn set_endpoints(&mut self, endpoints: Vec<Endpoint>) {
//!         self.0 = endpoints;
//!     }
//!     fn pick(&mut self, _request: RequestInfo) -> Option<u32> {
//!         self.0.first().map(|e| e.id)
//!     }
//! }
//!
//! rustygate_sdk::export_balancer!(First);
//! ```

pub mod balancer;
pub mod config;
pub mod filter;
pub mod hash;
pub mod rand;

/// Log lines, written by the gateway's log with the component's name.
pub mod log {
    pub use crate::balancer::bindings::rustygate::gateway::log::Level;

    /// Writes one line at `level`.
    pub fn write(level: Level, message: &str) {
        crate::balancer::bindings::rustygate::gateway::log::write(level, message);
    }
}
