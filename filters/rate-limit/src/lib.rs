//! `rate-limit`: limits like `100 per 60s` keyed by client IP, a request header (such as one
//! `jwt-auth` sets from a claim) or the route; several per route. Counting is shared by every
//! worker: through RustyGate's `rustygate_rate_limit` foreign function when the host has it
//! (exact, one lock), otherwise through proxy-wasm shared data with compare-and-swap (exact as
//! well, and portable to Envoy).

pub mod limits;

#[cfg(target_arch = "wasm32")]
mod plugin;
