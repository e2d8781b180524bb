//! Shared by the filters in `filters/`. Everything here is plain logic over strings and bytes,
//! so it is unit-tested natively; the proxy-wasm glue lives in each filter's `plugin` module.

// An allocator cannot be written without `unsafe`; the rest of the kit has none.
#[cfg(any(test, all(target_arch = "wasm32", not(target_feature = "atomics"))))]
#[allow(unsafe_code)]
mod alloc;
pub mod config;
pub mod duration;
pub mod net;
#[cfg(not(target_arch = "wasm32"))]
pub mod schema;
pub mod template;

/// Every filter built with the kit allocates through it (see [`alloc`]).
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: alloc::FilterAlloc = alloc::FilterAlloc::new();
