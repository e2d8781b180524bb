//! RustyGate's core: the decisions a proxy makes about a request, with no I/O, no runtime and
//! no WebAssembly. Everything here is a pure function of its inputs (randomness is passed in),
//! so it is unit-tested and benchmarked in isolation.

pub mod balance;
pub mod error;
pub mod extended_connect;
pub mod forwarding;
pub mod path;
pub mod proxy_protocol;
pub mod redirect;
pub mod resilience;
pub mod rewrite;
pub mod router;

pub use error::{ErrorKind, Fault};
