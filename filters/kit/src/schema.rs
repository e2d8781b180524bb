//! Each filter publishes the JSON Schema of its configuration as `config.schema.json` beside
//! its README, generated from the same types `on_configure` parses. A test in each filter keeps
//! the committed file current (`UPDATE_SCHEMA=1` rewrites it).

use std::path::Path;

/// Compares the schema of `T` with `<crate_dir>/config.schema.json`; rewrites the file instead
/// when `UPDATE_SCHEMA` is set.
pub fn check_committed<T: schemars::JsonSchema>(crate_dir: &str, title: &str) {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).expect("schema serialises");
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), title.into());
    }
    let text = serde_json::to_string_pretty(&schema).expect("schema serialises") + "\n";
    let path = Path::new(crate_dir).join("config.schema.json");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &text).expect("schema written");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} is stale: run `make schema` (UPDATE_SCHEMA=1 cargo test) and commit it",
        path.display()
    );
}
