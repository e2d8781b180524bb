//! Plugin configuration: JSON (RustyGate passes YAML configuration as JSON; Envoy passes the
//! `configuration` string as is), parsed strictly, with errors that name the field.

use serde::de::DeserializeOwned;

/// A configuration the filter cannot run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field (`limits[0].per`), empty for the document itself.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses `raw` as `T`. Empty input parses as `{}`, so filters with all-default settings need
/// no configuration at all.
pub fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ConfigError> {
    let raw = if raw.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        raw
    };
    let de = &mut serde_json::Deserializer::from_slice(raw);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        ConfigError::new(field, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        limits: Vec<Limit>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limit {
        #[allow(dead_code)]
        requests: u32,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<Sample>(br#"{"limits":[{"requests":1},{"requests":"x"}]}"#).unwrap_err();
        assert_eq!(e.field, "limits[1].requests");
        assert!(e.message.contains("invalid type"), "{e}");
        let e = parse::<Sample>(br#"{"limit":[]}"#).unwrap_err();
        assert!(e.message.contains("unknown field `limit`"), "{e}");
    }

    #[test]
    fn empty_means_defaults() {
        assert!(parse::<Sample>(b"").unwrap().limits.is_empty());
        assert!(parse::<Sample>(b"  \n").unwrap().limits.is_empty());
    }
}
