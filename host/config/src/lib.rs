//! RustyGate's configuration file: serde types with unknown fields denied, `${VAR}`
//! substitution, semantic validation, and errors that name file, line, column and field.
//!
//! YAML is read with `serde-saphyr`: `serde_yaml` is archived upstream and its forks are
//! thinly maintained, while serde-saphyr is actively developed, pure Rust, panic-free on
//! hostile input, and built on a parser whose events carry positions, which
//! [`positions`] uses to locate fields after typed validation.
//!
//! This crate performs no I/O beyond [`load_file`] reading the file it is given.

mod duration;
mod env;
mod error;
mod model;
pub mod positions;
mod validate;

use std::cell::RefCell;
use std::path::Path;

pub use duration::{Duration, parse_duration};
pub use error::{ConfigError, Diagnostic};
pub use model::*;
pub use validate::{EndpointAddress, authority_host, parse_endpoint_url, parse_status_ranges};

use positions::Positions;

/// Reads, substitutes, parses and validates the file at `path`, with `${VAR}` looked up in the
/// process environment.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&file, &text, &|name| std::env::var(name).ok())
}

/// Parses and validates `text`; `file` is only used in messages.
pub fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let text = env::substitute(file, text, env).map_err(ConfigError::Invalid)?;
    let positions = Positions::index(&text);
    let config = deserialize(file, &text, &positions).map_err(|d| ConfigError::Invalid(vec![d]))?;
    validate::validate(file, &positions, &config).map_err(ConfigError::Invalid)?;
    Ok(config)
}

fn deserialize(file: &str, text: &str, positions: &Positions) -> Result<Config, Diagnostic> {
    let field = RefCell::new(None::<String>);
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            *field.borrow_mut() = (path != ".").then_some(path);
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let field = field.into_inner();
        // The parser's own location is exact for syntax and unknown-field errors; the
        // path index covers errors raised after a value was read (e.g. a bad duration).
        let (line, column) = match (e.location(), &field) {
            (Some(loc), _) if loc.line() > 0 => (loc.line() as usize, loc.column() as usize),
            (_, Some(f)) => positions.lookup(f),
            _ => (1, 1),
        };
        Diagnostic {
            file: file.into(),
            line,
            column,
            field,
            message: first_line(&e.without_snippet().to_string()),
        }
    })
}

/// The parser's message without its snippet and its trailing "at line L, column C", which the
/// diagnostic already states in the editor-friendly prefix.
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default().trim();
    match line.rfind(" at line ") {
        Some(i) if line[i..].contains(", column ") => line[..i].to_owned(),
        _ => line.to_owned(),
    }
}

/// The JSON Schema of the configuration file, generated from the types.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Config);
    let mut s = serde_json::to_string_pretty(&schema).expect("schema serializes");
    s.push('\n');
    s
}
