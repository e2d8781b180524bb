//! `jwt-auth`: verifies `Authorization: Bearer` tokens (or a cookie / query parameter) signed
//! with HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA, against keys given
//! inline or a JWKS fetched from a cluster. A request without a valid token gets `401` with
//! `WWW-Authenticate`; a valid one goes on with chosen claims as request headers.

pub mod config;
pub mod keys;
pub mod token;

#[cfg(target_arch = "wasm32")]
mod plugin;

#[cfg(test)]
mod tests;

/// The configuration's JSON Schema, carried in the module so that RustyGate checks
/// configurations against it at load (`rustygate validate` names the field).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // a link section is how data reaches a custom section
#[unsafe(link_section = "rustygate:config-schema")]
#[used]
static CONFIG_SCHEMA: [u8; include_bytes!("../config.schema.json").len()] =
    *include_bytes!("../config.schema.json");
