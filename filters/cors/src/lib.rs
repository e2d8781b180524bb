//! `cors`: Cross-Origin Resource Sharing for browsers. Preflight requests (`OPTIONS` with
//! `Access-Control-Request-Method`) are answered by the filter itself: `204` with the allowed
//! methods and headers for an allowed origin, `403` without any CORS header otherwise. Other
//! requests from an allowed origin go upstream and get the CORS response headers on the way
//! back; requests from other origins get none, so the browser withholds the response.

pub mod policy;

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
