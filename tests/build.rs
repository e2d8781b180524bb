//! Builds the guest filters in `guests/` from source for wasm32-wasip1, so the tests always run
//! the `.wasm` that the current source produces, and exports their paths as `env!` constants.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let guests = manifest_dir.join("guests/rust");
    println!(
        "cargo:rerun-if-changed={}",
        guests.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        guests.join("Cargo.lock").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        guests.join("abi-probe").display()
    );
    // A target dir of its own: the outer cargo holds the lock on the workspace's.
    let target_dir = manifest_dir.join("../target/guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
        ])
        .arg(guests.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // Settings meant for the host build must not leak into the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building the guest filters failed; is the target installed? `rustup target add wasm32-wasip1` (make deps does this)"
    );
    let out = target_dir.join("wasm32-wasip1/release");
    println!(
        "cargo:rustc-env=ABI_PROBE_WASM={}",
        out.join("abi_probe.wasm").display()
    );
}
