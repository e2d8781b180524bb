//! `headers`: adds, sets and removes request and response headers. Values are templates that
//! may reference request data (`${request.id}`, `${source.address}`, `${request.path}`,
//! `${request.header.<name>}`, …), see `rustygate_filter_kit::template`.

pub mod config;

#[cfg(all(target_arch = "wasm32", feature = "proxy-wasm"))]
mod plugin;

/// The configuration's JSON Schema, carried in the module so that RustyGate checks
/// configurations against it at load (`rustygate validate` names the field).
#[cfg(all(target_arch = "wasm32", feature = "proxy-wasm"))]
#[allow(unsafe_code)] // a link section is how data reaches a custom section
#[unsafe(link_section = "rustygate:config-schema")]
#[used]
static CONFIG_SCHEMA: [u8; include_bytes!("../config.schema.json").len()] =
    *include_bytes!("../config.schema.json");
