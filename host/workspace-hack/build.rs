//! Empty: it gives `[build-dependencies]` in Cargo.toml a build to belong to (see src/lib.rs).
fn main() {}
