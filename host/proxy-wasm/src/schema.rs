//! Configuration schemas published by filters. A filter may carry the JSON Schema of its
//! configuration in a `rustygate:config-schema` custom section (RustyGate's shipped filters
//! do); its configurations are then checked against it at load, so `rustygate validate` names
//! the offending field before anything runs. Modules without the section are checked only by
//! their own `proxy_on_configure`.

/// The custom section's name.
pub const SECTION: &str = "rustygate:config-schema";

fn leb_u32(bytes: &[u8], at: &mut usize) -> Option<u32> {
    let mut result = 0u32;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        result |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(result);
        }
    }
    None
}

/// The payload of the first custom section called `name` in a core module's bytes.
pub fn custom_section<'a>(wasm: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if wasm.get(..4)? != b"\0asm" {
        return None;
    }
    let mut at = 8;
    while at < wasm.len() {
        let id = wasm[at];
        at += 1;
        let size = leb_u32(wasm, &mut at)? as usize;
        let end = at.checked_add(size)?;
        let payload = wasm.get(at..end)?;
        if id == 0 {
            let mut p = 0;
            let len = leb_u32(payload, &mut p)? as usize;
            let section_name = payload.get(p..p.checked_add(len)?)?;
            if section_name == name.as_bytes() {
                return Some(&payload[p + len..]);
            }
        }
        at = end;
    }
    None
}

/// A compiled schema.
pub struct ConfigSchema(jsonschema::Validator);

impl ConfigSchema {
    /// From the section's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let schema: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("its configuration schema is not JSON: {e}"))?;
        jsonschema::validator_for(&schema)
            .map(ConfigSchema)
            .map_err(|e| format!("its configuration schema is invalid: {e}"))
    }

    /// Checks one configuration as the filter will receive it (JSON text). Configurations
    /// that are not JSON are left to the filter. Returns every violation, located.
    pub fn check(&self, config: &[u8]) -> Result<(), Vec<String>> {
        let text = if config.iter().all(u8::is_ascii_whitespace) {
            &b"{}"[..]
        } else {
            config
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(text) else {
            return Ok(());
        };
        let errors: Vec<String> = self
            .0
            .iter_errors(&value)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_owned() } else { at };
                format!("{at}: {e}")
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_custom_sections() {
        let wasm = wat::parse_str(
            r#"(module (@custom "rustygate:config-schema" "{\"type\":\"object\"}"))"#,
        )
        .unwrap();
        assert_eq!(
            custom_section(&wasm, SECTION),
            Some(&b"{\"type\":\"object\"}"[..])
        );
        assert_eq!(custom_section(&wasm, "other"), None);
        assert_eq!(custom_section(b"not wasm", SECTION), None);
    }

    #[test]
    fn checks_json_configurations_and_locates_errors() {
        let s = ConfigSchema::parse(br#"{"type":"object","properties":{"n":{"type":"integer"}},"additionalProperties":false}"#).unwrap();
        assert!(s.check(br#"{"n":1}"#).is_ok());
        assert!(s.check(b"").is_ok());
        assert!(s.check(b"not json at all").is_ok(), "left to the filter");
        let errors = s.check(br#"{"n":"x","m":1}"#).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("/n: ")), "{errors:?}");
    }
}
