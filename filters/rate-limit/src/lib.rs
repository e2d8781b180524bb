//! `rate-limit`: limits like `100 per 60s` keyed by client IP, a request header (such as one
//! `jwt-auth` sets from a claim) or the route; several per route. Counting is shared by every
//! worker: through RustyGate's `rustygate_rate_limit` foreign function when the host has it
//! (exact, one lock), otherwise through proxy-wasm shared data with compare-and-swap (exact as
//! well, and portable to Envoy).

pub mod limits;

#[cfg(target_arch = "wasm32")]
mod plugin;

/// The configuration's JSON Schema, carried in the module so that RustyGate checks
/// configurations against it at load (`rustygate validate` names the field).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // a link section is how data reaches a custom section
#[unsafe(link_section = "rustygate:config-schema")]
#[used]
static CONFIG_SCHEMA: [u8; include_bytes!("../config.schema.json").len()] =
    *include_bytes!("../config.schema.json");
