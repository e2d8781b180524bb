//! Shared by the filters in `filters/`. Everything here is plain logic over strings and bytes,
//! so it is unit-tested natively; the proxy-wasm glue lives in each filter's `plugin` module.

pub mod config;
pub mod duration;
pub mod net;
#[cfg(not(target_arch = "wasm32"))]
pub mod schema;
pub mod template;
