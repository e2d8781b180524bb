//! Configuration: keys, the JWKS source, claim rules, where tokens come from and which claims
//! go upstream.

use std::collections::BTreeMap;

use base64::Engine;
use rustygate_filter_kit::config::ConfigError;
use rustygate_filter_kit::duration::parse_ms;
use serde::Deserialize;

use crate::keys::{Alg, Jwk, Key, Material};
use crate::token::Rules;

/// The filter's configuration.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Keys given inline.
    pub keys: Vec<KeyConfig>,
    /// A JWKS document fetched from a cluster, kept fresh, and refetched for an unknown `kid`.
    pub jwks: Option<JwksConfig>,
    /// Accepted algorithms (default: all of HS256/384/512, RS256/384/512, PS256/384/512,
    /// ES256/384, EdDSA that a configured key can verify; `none` never).
    pub algorithms: Vec<String>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` / `nbf` (default `60s`).
    pub leeway: Option<String>,
    /// Claims a token must have.
    pub required_claims: Vec<String>,
    /// Claims copied into request headers: `{ sub: x-user-id }`. The headers are removed from
    /// the client's request first, so a client cannot supply them itself.
    pub forward_claims: BTreeMap<String, String>,
    /// Remove `Authorization` before the request goes upstream.
    pub strip_authorization: bool,
    /// Where else the token may come from (the `Authorization: Bearer` header always counts).
    pub from: Sources,
}

/// Token sources beyond `Authorization: Bearer`.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Sources {
    /// A cookie holding the token.
    pub cookie: Option<String>,
    /// A query parameter holding the token.
    pub query: Option<String>,
}

/// One inline key: exactly one of `pem`, `jwk`, `secret`, `secret_base64`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct KeyConfig {
    /// Matched against the token's `kid` (a token without `kid` tries every key).
    pub kid: Option<String>,
    /// Restrict the key to one algorithm.
    pub alg: Option<String>,
    /// A PEM public key (RSA, P-256, P-384, Ed25519).
    pub pem: Option<String>,
    /// A public JWK.
    pub jwk: Option<Jwk>,
    /// An HMAC secret, as text.
    pub secret: Option<String>,
    /// An HMAC secret, base64url.
    pub secret_base64: Option<String>,
}

/// Where the JWKS comes from.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// The gateway cluster that serves it.
    pub cluster: String,
    /// Its path, as `/.well-known/jwks.json`.
    pub path: String,
    /// `:authority` of the request (default: the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// How often it is fetched again (default `5m`).
    #[serde(default)]
    pub refresh: Option<String>,
    /// Least time between fetches triggered by unknown `kid`s (default `30s`).
    #[serde(default)]
    pub min_refetch: Option<String>,
    /// How long a fetch may take (default `5s`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The JWKS source, validated.
#[derive(Debug, Clone)]
pub struct Jwks {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub refresh_ms: u64,
    pub min_refetch_ms: u64,
    pub timeout_ms: u64,
}

/// Everything the filter needs, validated.
#[derive(Debug, Default)]
pub struct Auth {
    pub keys: Vec<Key>,
    pub jwks: Option<Jwks>,
    pub rules: Rules,
    pub forward: Vec<(String, String)>,
    pub strip_authorization: bool,
    pub from: Sources,
}

fn duration(field: &str, v: &Option<String>, default_ms: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default_ms),
        Some(t) => parse_ms(t).map_err(|e| ConfigError::new(field, e)),
    }
}

/// Parses and validates a configuration.
pub fn from_config(raw: &[u8]) -> Result<Auth, ConfigError> {
    let c: Config = rustygate_filter_kit::config::parse(raw)?;
    let mut keys = Vec::new();
    for (i, k) in c.keys.iter().enumerate() {
        let field = format!("keys[{i}]");
        let alg = match &k.alg {
            Some(a) => Some(Alg::parse(a).ok_or_else(|| {
                ConfigError::new(
                    format!("{field}.alg"),
                    format!("unsupported algorithm {a:?}"),
                )
            })?),
            None => None,
        };
        let given = [
            k.pem.is_some(),
            k.jwk.is_some(),
            k.secret.is_some(),
            k.secret_base64.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ConfigError::new(
                field,
                "give exactly one of pem, jwk, secret, secret_base64",
            ));
        }
        let mut key = if let Some(pem) = &k.pem {
            Key {
                kid: None,
                alg: None,
                material: Key::from_pem(pem)
                    .map_err(|e| ConfigError::new(format!("{field}.pem"), e))?,
            }
        } else if let Some(jwk) = &k.jwk {
            jwk.to_key()
                .map_err(|e| ConfigError::new(format!("{field}.jwk"), e))?
        } else if let Some(secret) = &k.secret {
            if secret.len() < 32 {
                return Err(ConfigError::new(
                    format!("{field}.secret"),
                    "an HMAC secret needs at least 32 bytes",
                ));
            }
            Key {
                kid: None,
                alg: None,
                material: Material::hmac(secret.as_bytes()),
            }
        } else {
            let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(
                    k.secret_base64
                        .as_deref()
                        .unwrap_or_default()
                        .trim_end_matches('='),
                )
                .map_err(|e| ConfigError::new(format!("{field}.secret_base64"), e.to_string()))?;
            Key {
                kid: None,
                alg: None,
                material: Material::hmac(&b),
            }
        };
        if k.kid.is_some() {
            key.kid = k.kid.clone();
        }
        if let Some(a) = alg {
            if !key.accepts(a) {
                return Err(ConfigError::new(
                    format!("{field}.alg"),
                    format!("{} does not fit this key", a.name()),
                ));
            }
            key.alg = Some(a);
        }
        keys.push(key);
    }
    let jwks = match &c.jwks {
        None => None,
        Some(j) => {
            if j.cluster.is_empty() {
                return Err(ConfigError::new("jwks.cluster", "empty cluster name"));
            }
            if !j.path.starts_with('/') {
                return Err(ConfigError::new("jwks.path", "a path starts with /"));
            }
            Some(Jwks {
                cluster: j.cluster.clone(),
                path: j.path.clone(),
                authority: j.authority.clone().unwrap_or_else(|| j.cluster.clone()),
                refresh_ms: duration("jwks.refresh", &j.refresh, 300_000)?,
                min_refetch_ms: duration("jwks.min_refetch", &j.min_refetch, 30_000)?,
                timeout_ms: duration("jwks.timeout", &j.timeout, 5_000)?,
            })
        }
    };
    if keys.is_empty() && jwks.is_none() {
        return Err(ConfigError::new(
            "keys",
            "give keys, a jwks source, or both",
        ));
    }
    let algorithms = if c.algorithms.is_empty() {
        Alg::ALL.to_vec()
    } else {
        let mut out = Vec::new();
        for (i, a) in c.algorithms.iter().enumerate() {
            out.push(Alg::parse(a).ok_or_else(|| {
                ConfigError::new(
                    format!("algorithms[{i}]"),
                    format!("unsupported algorithm {a:?} (none is never accepted)"),
                )
            })?);
        }
        out
    };
    let mut forward = Vec::new();
    for (claim, header) in &c.forward_claims {
        let valid = !header.is_empty()
            && header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ConfigError::new(
                format!("forward_claims.{claim}"),
                format!("{header:?} is not a header name"),
            ));
        }
        forward.push((claim.clone(), header.to_ascii_lowercase()));
    }
    Ok(Auth {
        keys,
        jwks,
        rules: Rules {
            algorithms,
            issuer: c.issuer.clone(),
            audiences: c.audiences.clone(),
            leeway: duration("leeway", &c.leeway, 60_000)? / 1000,
            required: c.required_claims.clone(),
        },
        forward,
        strip_authorization: c.strip_authorization,
        from: c.from.clone(),
    })
}

/// The token of a request: `Authorization: Bearer`, else the configured cookie, else the
/// configured query parameter.
pub fn extract_token(
    sources: &Sources,
    authorization: Option<&str>,
    cookie: Option<&str>,
    path: &str,
) -> Option<String> {
    if let Some(a) = authorization {
        let a = a.trim();
        if a.len() > 7 && a[..7].eq_ignore_ascii_case("bearer ") {
            return Some(a[7..].trim().to_owned());
        }
    }
    if let (Some(name), Some(cookies)) = (&sources.cookie, cookie) {
        for c in cookies.split(';') {
            if let Some((k, v)) = c.trim().split_once('=')
                && k == name
                && !v.is_empty()
            {
                return Some(v.to_owned());
            }
        }
    }
    if let (Some(name), Some((_, query))) = (&sources.query, path.split_once('?')) {
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=')
                && k == name
                && !v.is_empty()
            {
                return Some(v.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
#[test]
fn committed_schema_is_current() {
    rustygate_filter_kit::schema::check_committed::<Config>(
        env!("CARGO_MANIFEST_DIR"),
        "jwt-auth filter configuration",
    );
}
