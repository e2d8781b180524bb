//! Configuration and its validation.

use std::collections::BTreeMap;

use rustygate_filter_kit::config::ConfigError;
use rustygate_filter_kit::template::Template;
use serde::Deserialize;

/// The filter's configuration.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Changes to the request, before it goes upstream.
    pub request: Changes,
    /// Changes to the response, before it goes to the client (local responses included).
    pub response: Changes,
}

/// Header changes for one direction, applied in this order: remove, set, add.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Changes {
    /// Headers to remove.
    pub remove: Vec<String>,
    /// Headers to set, replacing any values they had. Values are templates.
    pub set: BTreeMap<String, String>,
    /// Headers to add, keeping values they had. Values are templates.
    pub add: BTreeMap<String, String>,
}

/// One header change, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Remove(String),
    Set(String, Template),
    Add(String, Template),
}

/// The validated rules.
#[derive(Debug, Default)]
pub struct Rules {
    pub request: Vec<Op>,
    pub response: Vec<Op>,
    /// Whether a response value reads the request (else nothing is kept between the phases).
    pub response_reads_request: bool,
}

/// Parses and validates a configuration.
pub fn rules(raw: &[u8]) -> Result<Rules, ConfigError> {
    let config: Config = rustygate_filter_kit::config::parse(raw)?;
    let response = ops(&config.response, "response")?;
    let response_reads_request = response.iter().any(|op| match op {
        Op::Set(_, t) | Op::Add(_, t) => t.constant().is_none(),
        Op::Remove(_) => false,
    });
    Ok(Rules {
        request: ops(&config.request, "request")?,
        response,
        response_reads_request,
    })
}

fn header_name(name: &str, field: &str) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return Err(ConfigError::new(
            field,
            format!("{name:?} is not a header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

fn ops(c: &Changes, side: &str) -> Result<Vec<Op>, ConfigError> {
    let mut out = Vec::new();
    for (i, name) in c.remove.iter().enumerate() {
        out.push(Op::Remove(header_name(
            name,
            &format!("{side}.remove[{i}]"),
        )?));
    }
    for (kind, map) in [("set", &c.set), ("add", &c.add)] {
        for (name, value) in map {
            let field = format!("{side}.{kind}.{name}");
            let name = header_name(name, &field)?;
            let template = Template::parse(value).map_err(|e| ConfigError::new(&field, e))?;
            out.push(if kind == "set" {
                Op::Set(name, template)
            } else {
                Op::Add(name, template)
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_come_in_remove_set_add_order() {
        let r = rules(
            br#"{"response":{"add":{"X-RustyGate-Plugin":"executed"},"set":{"server":"rg"},"remove":["X-Powered-By"]}}"#,
        )
        .unwrap();
        assert!(r.request.is_empty());
        assert_eq!(r.response.len(), 3);
        assert_eq!(r.response[0], Op::Remove("x-powered-by".into()));
        assert!(matches!(&r.response[1], Op::Set(n, _) if n == "server"));
        assert!(
            matches!(&r.response[2], Op::Add(n, t) if n == "x-rustygate-plugin" && t.is_constant())
        );
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let e = rules(br#"{"request":{"add":{"x-a":"${nope}"}}}"#).unwrap_err();
        assert_eq!(e.field, "request.add.x-a");
        let e = rules(br#"{"response":{"remove":["bad name"]}}"#).unwrap_err();
        assert_eq!(e.field, "response.remove[0]");
        let e = rules(br#"{"requests":{}}"#).unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }
}

#[cfg(test)]
#[test]
fn committed_schema_is_current() {
    rustygate_filter_kit::schema::check_committed::<Config>(
        env!("CARGO_MANIFEST_DIR"),
        "headers filter configuration",
    );
}
