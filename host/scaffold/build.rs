//! Embeds the project templates (`templates/<language>/`) and the SDK sources a project needs
//! (`sdk/go`, `sdk/assemblyscript`, `sdk/rust` with `wit/gateway`) into the binary, so `rustygate new-filter` works anywhere
//! and writes projects that build without this repository.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let sdk = manifest.join("../../sdk");
    let trees = [
        ("TEMPLATE_RUST", manifest.join("templates/rust")),
        (
            "TEMPLATE_RUST_SHARED",
            manifest.join("templates/rust-shared"),
        ),
        (
            "TEMPLATE_RUST_COMPONENT",
            manifest.join("templates/rust-component"),
        ),
        ("SDK_RUST_SRC", sdk.join("rust/src")),
        ("WIT_GATEWAY", manifest.join("../../wit/gateway")),
        ("TEMPLATE_GO", manifest.join("templates/go")),
        (
            "TEMPLATE_ASSEMBLYSCRIPT",
            manifest.join("templates/assemblyscript"),
        ),
        ("SDK_GO", sdk.join("go")),
        ("SDK_ASSEMBLYSCRIPT", sdk.join("assemblyscript")),
    ];
    let mut out = String::new();
    for (name, root) in trees {
        println!("cargo:rerun-if-changed={}", root.display());
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        files.sort();
        writeln!(out, "pub(crate) const {name}: &[(&str, &str)] = &[").unwrap();
        for (rel, abs) in files {
            writeln!(
                out,
                "    ({rel:?}, include_str!({:?})),",
                abs.display().to_string()
            )
            .unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(dest, out).unwrap();
}

/// Every file under `dir`, as (path relative to `root` with `/`, absolute path), skipping what
/// a build leaves behind.
fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy();
        if matches!(name.as_ref(), "node_modules" | "build" | "target") {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, files);
        } else {
            let rel = path.strip_prefix(root).unwrap();
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            files.push((rel, path));
        }
    }
}
