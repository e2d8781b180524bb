//! `rustygate new-filter`: for each language, the generated project builds with its own one
//! command and its own test passes against the real gateway binary — what a new filter
//! author does first.

use std::path::{Path, PathBuf};
use std::process::Command;

use rustygate_tests::process::gateway_bin;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh directory under target/ for the project.
fn scratch(lang: &str) -> PathBuf {
    let dir = workspace().join(format!("target/scaffold/{lang}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    dir
}

/// `rustygate new-filter`, then `make test` in the project, as a user runs them.
fn new_filter_passes_its_own_test(lang: &str, abi: &str) {
    let dir = scratch(&format!("{lang}-{abi}"));
    let name = format!("hello-{lang}");
    let out = Command::new(gateway_bin())
        .args(["new-filter", &name, "--lang", lang, "--abi", abi, "--dir"])
        .arg(&dir)
        .output()
        .expect("rustygate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("make test"));

    let mut make = Command::new("make");
    make.arg("test")
        .current_dir(&dir)
        .env("RUSTYGATE", gateway_bin())
        // The outer cargo's settings are for this workspace, not the new project.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS");
    let go = workspace().join(".tools/go/bin/go");
    if go.exists() {
        make.env("GO", go);
    }
    let out = make.output().expect("make runs");
    assert!(
        out.status.success(),
        "make test failed for the {lang} project:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_new_rust_filter_builds_and_passes_its_test() {
    new_filter_passes_its_own_test("rust", "proxy-wasm");
}

#[test]
fn a_new_rust_component_filter_builds_and_passes_its_test() {
    new_filter_passes_its_own_test("rust", "component");
}

#[test]
fn a_new_go_filter_builds_and_passes_its_test() {
    new_filter_passes_its_own_test("go", "proxy-wasm");
}

#[test]
fn a_new_assemblyscript_filter_builds_and_passes_its_test() {
    new_filter_passes_its_own_test("assemblyscript", "proxy-wasm");
}

#[test]
fn a_bad_name_is_refused_and_nothing_is_written() {
    let dir = scratch("bad");
    let out = Command::new(gateway_bin())
        .args(["new-filter", "Bad_Name", "--lang", "go", "--dir"])
        .arg(&dir)
        .output()
        .expect("rustygate runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid filter name \"Bad_Name\""));
    assert!(!dir.exists());
}
