//! Golden tests: each `golden/*.yaml` is parsed; a valid file's normalized config (defaults
//! filled in, as JSON) or an invalid file's error text must equal the `.out` file beside it.
//! `UPDATE_GOLDEN=1 cargo test -p rustygate-config` rewrites the `.out` files after a reviewed change.

use std::path::Path;

fn env(name: &str) -> Option<String> {
    match name {
        "UPSTREAM_PORT" => Some("9000".into()),
        "ADMIN_TOKEN" => Some("s3cret".into()),
        _ => None,
    }
}

#[test]
fn golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let mut count = 0;
    for path in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        count += 1;
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let actual = match rustygate_config::parse(&name, &text, &env) {
            Ok(cfg) => serde_json::to_string_pretty(&cfg).unwrap() + "\n",
            Err(e) => format!("{e}\n"),
        };
        assert_eq!(
            name.starts_with("ok-"),
            !actual.contains(".yaml:"),
            "{name}: ok-/bad- prefix disagrees with result:\n{actual}"
        );
        let out = path.with_extension("out");
        if update {
            std::fs::write(&out, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&out).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{name}:\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
    }
    assert!(count >= 10, "golden files missing");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn committed_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/rustygate.schema.json");
    let generated = rustygate_config::json_schema();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "config/rustygate.schema.json is stale: run `make schema` and commit the result"
    );
}
