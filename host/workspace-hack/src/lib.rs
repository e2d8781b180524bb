//! Nothing to call: this crate exists for its `Cargo.toml`. The gateway binary depends on it
//! so that building the binary alone turns on the same dependency features as building the
//! whole workspace with its tests, and the two builds share their compiled dependencies
//! (the same trick as cargo-hakari's workspace-hack crates).
