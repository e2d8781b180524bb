//! `cors`: Cross-Origin Resource Sharing for browsers. Preflight requests (`OPTIONS` with
//! `Access-Control-Request-Method`) are answered by the filter itself: `204` with the allowed
//! methods and headers for an allowed origin, `403` without any CORS header otherwise. Other
//! requests from an allowed origin go upstream and get the CORS response headers on the way
//! back; requests from other origins get none, so the browser withholds the response.

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod plugin;
