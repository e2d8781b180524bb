//! `headers`: adds, sets and removes request and response headers. Values are templates that
//! may reference request data (`${request.id}`, `${source.address}`, `${request.path}`,
//! `${request.header.<name>}`, …), see `rustygate_filter_kit::template`.

pub mod config;

#[cfg(target_arch = "wasm32")]
mod plugin;
