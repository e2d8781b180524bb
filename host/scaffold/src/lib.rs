//! `rustygate new-filter`: writes a filter project that builds with one command (`make`) and
//! whose test (`make test`) runs the filter through a real gateway. Projects are
//! self-contained: Go and AssemblyScript ones carry a copy of RustyGate's SDK in
//! `third_party/`, Rust ones use the `proxy-wasm` crate from crates.io.

use std::fmt;
use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// The language of a new filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Rust,
    Go,
    AssemblyScript,
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Language::Rust => "rust",
            Language::Go => "go",
            Language::AssemblyScript => "assemblyscript",
        })
    }
}

/// The interface the filter is written against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    /// The proxy-wasm ABI: runs in RustyGate and in Envoy.
    ProxyWasm,
    /// RustyGate's WIT component interfaces.
    Component,
}

impl fmt::Display for Abi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Abi::ProxyWasm => "proxy-wasm",
            Abi::Component => "component",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "invalid filter name {0:?}: use lower-case letters, digits and '-', starting with a letter (at most 64)"
    )]
    InvalidName(String),
    #[error("{0} already exists; choose another name or --dir")]
    Exists(PathBuf),
    #[error("{abi} filters cannot be written in {language} yet: {why}")]
    Unsupported {
        language: Language,
        abi: Abi,
        why: &'static str,
    },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`create`] wrote.
#[derive(Debug)]
pub struct Project {
    /// The project directory.
    pub dir: PathBuf,
    /// Every file written, relative to `dir`.
    pub files: Vec<String>,
    /// The command that builds the project, and the one that tests it.
    pub build: &'static str,
    pub test: &'static str,
}

/// Writes the project for filter `name` into `dir`, which must not exist yet.
pub fn create(
    name: &str,
    language: Language,
    abi: Abi,
    dir: &Path,
) -> Result<Project, ScaffoldError> {
    validate_name(name)?;
    type Tree = &'static [(&'static str, &'static str)];
    // Rust projects share their build, test and gateway files; only the target differs.
    let target = match abi {
        Abi::ProxyWasm => "wasm32-wasip1",
        Abi::Component => "wasm32-wasip2",
    };
    let (template, sdk): (Tree, &[(&str, Tree)]) = match (language, abi) {
        (Language::Rust, Abi::ProxyWasm) => (
            embedded::TEMPLATE_RUST,
            &[("", embedded::TEMPLATE_RUST_SHARED)],
        ),
        (Language::Rust, Abi::Component) => (
            embedded::TEMPLATE_RUST_COMPONENT,
            // The SDK's bindings read the WIT files at `../../wit/gateway` from its crate.
            &[
                ("", embedded::TEMPLATE_RUST_SHARED),
                ("third_party/sdk/rust/src", embedded::SDK_RUST_SRC),
                ("third_party/wit/gateway", embedded::WIT_GATEWAY),
            ],
        ),
        (Language::Go, Abi::ProxyWasm) => (
            embedded::TEMPLATE_GO,
            &[("third_party/rustygate-sdk-go", embedded::SDK_GO)],
        ),
        (Language::AssemblyScript, Abi::ProxyWasm) => (
            embedded::TEMPLATE_ASSEMBLYSCRIPT,
            &[(
                "third_party/rustygate-sdk-assemblyscript",
                embedded::SDK_ASSEMBLYSCRIPT,
            )],
        ),
        (Language::Go | Language::AssemblyScript, Abi::Component) => {
            return Err(ScaffoldError::Unsupported {
                language,
                abi,
                why: "component filters are written in Rust with sdk/rust; use --lang rust, or --abi proxy-wasm",
            });
        }
    };
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    let crate_name = name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("__NAME__", name)
            .replace("__CRATE__", &crate_name)
            .replace("__TARGET__", target)
    };
    let mut files = Vec::new();
    for (rel, text) in template {
        write(dir, rel, &fill(text))?;
        files.push(rel.to_string());
    }
    // Shared template files (prefix "") are filled in too; SDK copies are written as they are.
    for (prefix, tree) in sdk {
        for (rel, text) in *tree {
            let (rel, text) = if prefix.is_empty() {
                (rel.to_string(), fill(text))
            } else {
                (format!("{prefix}/{rel}"), text.to_string())
            };
            write(dir, &rel, &text)?;
            files.push(rel);
        }
    }
    Ok(Project {
        dir: dir.to_path_buf(),
        files,
        build: "make",
        test: "make test",
    })
}

/// Filter names become file, crate, module and YAML names: keep them plain.
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ScaffoldError::InvalidName(name.to_string()))
    }
}

fn write(dir: &Path, rel: &str, text: &str) -> Result<(), ScaffoldError> {
    // Every file lands inside the project: a relative path without `..`.
    let inside = Path::new(rel)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    assert!(inside, "template path {rel:?} leaves the project");
    let path = dir.join(rel);
    let io = |source| ScaffoldError::Io {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(&path, text).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rustygate-scaffold-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn names_must_be_plain() {
        for good in ["a", "add-header", "v2-auth"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Add",
            "1st",
            "a_b",
            "a-",
            "a b",
            "../x",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_template_names_the_filter_and_leaves_no_placeholder() {
        for language in [Language::Rust, Language::Go, Language::AssemblyScript] {
            let dir = scratch(&language.to_string());
            let project = create("my-filter", language, Abi::ProxyWasm, &dir).unwrap();
            for rel in &project.files {
                let text = std::fs::read_to_string(dir.join(rel)).unwrap();
                assert!(
                    !text.contains("__NAME__") && !text.contains("__CRATE__"),
                    "{rel}"
                );
            }
            for needed in ["Makefile", "README.md", "gateway.yaml"] {
                assert!(
                    project.files.iter().any(|f| f == needed),
                    "{language}: {needed}"
                );
            }
            let yaml = std::fs::read_to_string(dir.join("gateway.yaml")).unwrap();
            assert!(yaml.contains("- name: my-filter"), "{yaml}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn go_and_assemblyscript_projects_carry_their_sdk() {
        let dir = scratch("sdk");
        let go = create("x", Language::Go, Abi::ProxyWasm, &dir.join("go")).unwrap();
        assert!(
            go.files
                .iter()
                .any(|f| f == "third_party/rustygate-sdk-go/proxywasm/exports.go")
        );
        let as_ = create(
            "x",
            Language::AssemblyScript,
            Abi::ProxyWasm,
            &dir.join("as"),
        )
        .unwrap();
        assert!(
            as_.files
                .iter()
                .any(|f| f == "third_party/rustygate-sdk-assemblyscript/assembly/runtime.ts")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_rust_component_project_carries_the_sdk_and_the_wit_it_reads() {
        let dir = scratch("component");
        let p = create("x", Language::Rust, Abi::Component, &dir).unwrap();
        for needed in [
            "third_party/sdk/rust/Cargo.toml",
            "third_party/sdk/rust/src/filter.rs",
            "third_party/wit/gateway/filter.wit",
        ] {
            assert!(p.files.iter().any(|f| f == needed), "{needed}");
        }
        // The copy's manifest is written by hand: it must ask for the same bindings generator.
        let ours = include_str!("../../../sdk/rust/Cargo.toml");
        let copy = std::fs::read_to_string(dir.join("third_party/sdk/rust/Cargo.toml")).unwrap();
        let bindgen = |text: &str| {
            text.lines()
                .find(|l| l.starts_with("wit-bindgen"))
                .map(str::to_owned)
        };
        assert_eq!(bindgen(ours), bindgen(&copy));
        std::fs::remove_dir_all(&dir).unwrap();
        let err = create("x", Language::Go, Abi::Component, &scratch("go-component")).unwrap_err();
        assert!(matches!(err, ScaffoldError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn an_existing_directory_is_never_overwritten() {
        let dir = scratch("exists");
        std::fs::create_dir_all(&dir).unwrap();
        let err = create("x", Language::Rust, Abi::ProxyWasm, &dir).unwrap_err();
        assert!(matches!(err, ScaffoldError::Exists(_)), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
