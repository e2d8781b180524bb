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
