//! Secrets removed from the configuration that `GET /admin/config` shows.
//!
//! The admin token is always hidden. Filter configurations are opaque to the host, so inside
//! them any field whose name says it holds a secret (`secret`, `password`, `token`, `private`,
//! `credential`, `api_key`, and the private JWK members `k`, `d`, `p`, `q`, `dp`, `dq`, `qi`)
//! is replaced, at any depth, including in configurations written as JSON strings.

use serde_json::Value;

const REDACTED: &str = "<redacted>";

/// The configuration as JSON with secrets replaced.
pub fn config(config: &rustygate_config::Config) -> Value {
    let mut v = serde_json::to_value(config).unwrap_or(Value::Null);
    if let Some(token) = v.pointer_mut("/admin/token")
        && !token.is_null()
    {
        *token = REDACTED.into();
    }
    if let Some(Value::Array(filters)) = v.get_mut("filters") {
        for f in filters {
            for field in ["configuration", "vm_configuration"] {
                if let Some(c) = f.get_mut(field) {
                    plugin_config(c);
                }
            }
        }
    }
    if let Some(Value::Array(routes)) = v.get_mut("routes") {
        for r in routes {
            if let Some(Value::Array(chain)) = r.get_mut("filters") {
                for entry in chain {
                    if let Some(c) = entry.get_mut("configuration") {
                        plugin_config(c);
                    }
                }
            }
        }
    }
    v
}

fn plugin_config(v: &mut Value) {
    // A configuration given as a string reaches the filter as is; when it is JSON, its
    // secrets are hidden like those of a structured one.
    if let Value::String(s) = v
        && let Ok(mut parsed @ (Value::Object(_) | Value::Array(_))) =
            serde_json::from_str::<Value>(s)
    {
        walk(&mut parsed);
        *s = parsed.to_string();
        return;
    }
    walk(v);
}

fn walk(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if is_secret(key) && !value.is_null() {
                    *value = REDACTED.into();
                } else {
                    walk(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(walk),
        _ => {}
    }
}

fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    const WORDS: [&str; 6] = [
        "secret",
        "password",
        "token",
        "private",
        "credential",
        "api_key",
    ];
    const JWK_PRIVATE: [&str; 7] = ["k", "d", "p", "q", "dp", "dq", "qi"];
    WORDS.iter().any(|w| k.contains(w)) || JWK_PRIVATE.contains(&k.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_the_admin_token_and_filter_secrets() {
        let yaml = r#"
listeners: [{ name: main, address: "127.0.0.1:0" }]
admin: { token: hunter2 }
clusters: [{ name: c, endpoints: [{ url: "http://127.0.0.1:9" }] }]
filters:
  - name: jwt
    module: jwt.wasm
    configuration:
      issuer: https://issuer
      keys: [{ kty: oct, k: c2VjcmV0, kid: a }]
      hmac_secret: s3cret
  - name: raw
    module: raw.wasm
    configuration: '{"api_key":"abc","header":"x-a"}'
routes:
  - cluster: c
    filters: [{ name: jwt, configuration: { client_secret: zzz, audience: api } }]
"#;
        let config = rustygate_config::parse("t.yaml", yaml, &|_| None).unwrap();
        let v = super::config(&config);
        let text = v.to_string();
        for secret in ["hunter2", "c2VjcmV0", "s3cret", "zzz", "abc"] {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
        // What is not secret stays readable.
        assert_eq!(v["filters"][0]["configuration"]["issuer"], "https://issuer");
        assert_eq!(v["filters"][0]["configuration"]["keys"][0]["kid"], "a");
        assert_eq!(
            v["routes"][0]["filters"][0]["configuration"]["audience"],
            "api"
        );
        assert!(text.contains("x-a"), "{text}");
        assert_eq!(v["admin"]["token"], REDACTED);
    }
}
