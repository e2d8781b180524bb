//! The CORS decision, from configuration to headers.

use rustygate_filter_kit::config::ConfigError;
use serde::Deserialize;

/// The filter's configuration.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Allowed origins: exact (`https://app.example.com`), a wildcard subdomain
    /// (`https://*.example.com`, which does not match the bare domain), or `*` for any.
    pub allow_origins: Vec<String>,
    /// Allowed origins as regular expressions, matched against the whole origin.
    pub allow_origin_regex: Vec<String>,
    /// Methods allowed in preflights.
    pub allow_methods: Vec<String>,
    /// Request headers allowed in preflights (case-insensitive); `*` allows any.
    pub allow_headers: Vec<String>,
    /// Response headers the browser may show to scripts.
    pub expose_headers: Vec<String>,
    /// Allow cookies and credentials (`Access-Control-Allow-Credentials: true`). With it, `*`
    /// origins are answered with the request's own origin, as browsers require.
    pub allow_credentials: bool,
    /// How long (seconds) browsers may cache a preflight answer.
    pub max_age: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            allow_origin_regex: Vec::new(),
            allow_methods: vec!["GET".into(), "HEAD".into(), "POST".into()],
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age: None,
        }
    }
}

#[derive(Debug)]
enum OriginRule {
    Any,
    Exact(String),
    /// `scheme://` + `.suffix`: any subdomain of suffix.
    Subdomain {
        scheme: String,
        suffix: String,
    },
    Regex(regex_lite::Regex),
}

/// A validated policy.
#[derive(Debug)]
pub struct Policy {
    origins: Vec<OriginRule>,
    methods: Vec<String>,
    any_header: bool,
    headers: Vec<String>,
    allow_methods_value: String,
    allow_headers_value: String,
    expose_value: String,
    credentials: bool,
    max_age: Option<u32>,
}

/// Headers for a response.
pub type Headers = Vec<(&'static str, String)>;

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not a CORS request (no `Origin`): leave it alone.
    NotCors,
    /// A preflight from an allowed origin: answer `204` with these headers.
    PreflightAllowed(Headers),
    /// A preflight that is not allowed: answer `403`, without CORS headers.
    PreflightDenied(String),
    /// An actual request: send it on, and add these headers to its response (none for an
    /// origin that is not allowed).
    Actual(Headers),
}

impl Policy {
    /// Validates `raw` configuration.
    pub fn from_config(raw: &[u8]) -> Result<Policy, ConfigError> {
        let c: Config = rustygate_filter_kit::config::parse(raw)?;
        let mut origins = Vec::new();
        for (i, o) in c.allow_origins.iter().enumerate() {
            let field = format!("allow_origins[{i}]");
            origins.push(if o == "*" {
                OriginRule::Any
            } else if let Some((scheme, host)) = o.split_once("://") {
                if let Some(suffix) = host.strip_prefix("*.") {
                    if suffix.is_empty() || suffix.contains('*') {
                        return Err(ConfigError::new(field, "a wildcard needs a domain after `*.`"));
                    }
                    OriginRule::Subdomain {
                        scheme: format!("{}://", scheme.to_ascii_lowercase()),
                        suffix: format!(".{}", suffix.to_ascii_lowercase()),
                    }
                } else if host.contains('*') || host.is_empty() || host.contains('/') {
                    return Err(ConfigError::new(
                        field,
                        format!("{o:?} is not an origin (scheme://host[:port], optionally `*.` before the domain)"),
                    ));
                } else {
                    OriginRule::Exact(o.to_ascii_lowercase())
                }
            } else {
                return Err(ConfigError::new(field, format!("{o:?} is not an origin: it needs a scheme, as in https://{o}")));
            });
        }
        for (i, r) in c.allow_origin_regex.iter().enumerate() {
            let re = regex_lite::Regex::new(&format!("^(?:{r})$"))
                .map_err(|e| ConfigError::new(format!("allow_origin_regex[{i}]"), e.to_string()))?;
            origins.push(OriginRule::Regex(re));
        }
        for (i, m) in c.allow_methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(ConfigError::new(
                    format!("allow_methods[{i}]"),
                    format!("{m:?} is not a method"),
                ));
            }
        }
        let methods: Vec<String> = c
            .allow_methods
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        let headers: Vec<String> = c
            .allow_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let any_header = headers.iter().any(|h| h == "*");
        Ok(Policy {
            origins,
            allow_methods_value: methods.join(", "),
            allow_headers_value: headers.join(", "),
            methods,
            any_header,
            headers,
            expose_value: c.expose_headers.join(", "),
            credentials: c.allow_credentials,
            max_age: c.max_age,
        })
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let lower = origin.to_ascii_lowercase();
        self.origins.iter().any(|rule| match rule {
            OriginRule::Any => true,
            OriginRule::Exact(o) => *o == lower,
            OriginRule::Subdomain { scheme, suffix } => {
                lower.strip_prefix(scheme.as_str()).is_some_and(|host| {
                    // Ports are part of the origin: compare the host alone.
                    let host = host.split(':').next().unwrap_or(host);
                    host.len() > suffix.len() && host.ends_with(suffix.as_str())
                })
            }
            OriginRule::Regex(re) => re.is_match(origin),
        })
    }

    /// Whether responses differ by origin (then caches must key on it: `Vary: Origin`).
    fn varies(&self) -> bool {
        self.credentials || !self.origins.iter().all(|r| matches!(r, OriginRule::Any))
    }

    fn allow_origin(&self, origin: &str, out: &mut Headers) {
        let any = self.origins.iter().any(|r| matches!(r, OriginRule::Any));
        let value = if any && !self.credentials {
            "*".to_owned()
        } else {
            origin.to_owned()
        };
        out.push(("access-control-allow-origin", value));
        if self.credentials {
            out.push(("access-control-allow-credentials", "true".into()));
        }
    }

    /// Decides for a request with `method`, `origin` (the `Origin` header) and the preflight
    /// headers `request_method` / `request_headers` (`Access-Control-Request-*`).
    pub fn decide(
        &self,
        method: &str,
        origin: Option<&str>,
        request_method: Option<&str>,
        request_headers: Option<&str>,
    ) -> Decision {
        let Some(origin) = origin else {
            return Decision::NotCors;
        };
        let preflight = method.eq_ignore_ascii_case("OPTIONS") && request_method.is_some();
        let allowed = self.origin_allowed(origin);
        if !preflight {
            let mut out = Vec::new();
            if allowed {
                self.allow_origin(origin, &mut out);
                if !self.expose_value.is_empty() {
                    out.push(("access-control-expose-headers", self.expose_value.clone()));
                }
            }
            if self.varies() {
                out.push(("vary", "Origin".into()));
            }
            return Decision::Actual(out);
        }
        if !allowed {
            return Decision::PreflightDenied(format!("origin {origin} is not allowed"));
        }
        let wanted = request_method.unwrap_or_default();
        if !self.methods.iter().any(|m| m == wanted) {
            return Decision::PreflightDenied(format!("method {wanted} is not allowed"));
        }
        let wanted_headers: Vec<String> = request_headers
            .unwrap_or_default()
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if !self.any_header
            && let Some(h) = wanted_headers.iter().find(|h| !self.headers.contains(h))
        {
            return Decision::PreflightDenied(format!("header {h} is not allowed"));
        }
        let mut out = Vec::new();
        self.allow_origin(origin, &mut out);
        out.push((
            "access-control-allow-methods",
            self.allow_methods_value.clone(),
        ));
        let allow_headers = if self.any_header {
            wanted_headers.join(", ")
        } else {
            self.allow_headers_value.clone()
        };
        if !allow_headers.is_empty() {
            out.push(("access-control-allow-headers", allow_headers));
        }
        if let Some(age) = self.max_age {
            out.push(("access-control-max-age", age.to_string()));
        }
        out.push((
            "vary",
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers".into(),
        ));
        Decision::PreflightAllowed(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Policy {
        Policy::from_config(json.as_bytes()).unwrap()
    }

    fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    const SITE: &str = r#"{"allow_origins":["https://app.example.com","https://*.example.org"],
        "allow_origin_regex":["https://pr-[0-9]+\\.preview\\.dev"],
        "allow_methods":["GET","PUT"],"allow_headers":["Content-Type","X-Token"],
        "expose_headers":["X-Request-Id"],"max_age":600}"#;

    #[test]
    fn origin_matching_matrix() {
        let p = policy(SITE);
        for (origin, allowed) in [
            ("https://app.example.com", true),
            ("https://APP.example.com", true),
            ("http://app.example.com", false),
            ("https://evil.com", false),
            ("https://a.example.org", true),
            ("https://a.b.example.org", true),
            ("https://a.example.org:8443", true),
            ("https://example.org", false),
            ("https://evilexample.org", false),
            ("https://pr-42.preview.dev", true),
            ("https://pr-x.preview.dev", false),
            ("https://pr-42.preview.dev.evil.com", false),
        ] {
            assert_eq!(p.origin_allowed(origin), allowed, "{origin}");
        }
    }

    #[test]
    fn preflight_allowed_lists_methods_headers_and_age() {
        let p = policy(SITE);
        let Decision::PreflightAllowed(h) = p.decide(
            "OPTIONS",
            Some("https://app.example.com"),
            Some("PUT"),
            Some("content-type, x-token"),
        ) else {
            panic!("denied")
        };
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(header(&h, "access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(
            header(&h, "access-control-allow-headers"),
            Some("content-type, x-token")
        );
        assert_eq!(header(&h, "access-control-max-age"), Some("600"));
        assert!(header(&h, "vary").unwrap().starts_with("Origin"));
        assert_eq!(header(&h, "access-control-allow-credentials"), None);
    }

    #[test]
    fn preflights_outside_the_policy_are_denied() {
        let p = policy(SITE);
        for (origin, method, headers) in [
            ("https://evil.com", "GET", ""),
            ("https://app.example.com", "DELETE", ""),
            ("https://app.example.com", "GET", "x-other"),
        ] {
            assert!(
                matches!(
                    p.decide("OPTIONS", Some(origin), Some(method), Some(headers)),
                    Decision::PreflightDenied(_)
                ),
                "{origin} {method} {headers}"
            );
        }
    }

    #[test]
    fn actual_requests_get_headers_only_for_allowed_origins() {
        let p = policy(SITE);
        let Decision::Actual(h) = p.decide("GET", Some("https://app.example.com"), None, None)
        else {
            panic!()
        };
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(
            header(&h, "access-control-expose-headers"),
            Some("X-Request-Id")
        );
        assert_eq!(header(&h, "vary"), Some("Origin"));
        let Decision::Actual(h) = p.decide("GET", Some("https://evil.com"), None, None) else {
            panic!()
        };
        assert_eq!(header(&h, "access-control-allow-origin"), None);
        assert_eq!(p.decide("GET", None, None, None), Decision::NotCors);
        // OPTIONS without Access-Control-Request-Method is an ordinary request.
        assert!(matches!(
            p.decide("OPTIONS", Some("https://app.example.com"), None, None),
            Decision::Actual(_)
        ));
    }

    #[test]
    fn any_origin_and_credentials() {
        let p = policy(r#"{"allow_origins":["*"]}"#);
        let Decision::Actual(h) = p.decide("GET", Some("https://x.test"), None, None) else {
            panic!()
        };
        assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&h, "vary"), None);
        let p = policy(r#"{"allow_origins":["*"],"allow_credentials":true,"allow_headers":["*"]}"#);
        let Decision::PreflightAllowed(h) = p.decide(
            "OPTIONS",
            Some("https://x.test"),
            Some("POST"),
            Some("X-A, X-B"),
        ) else {
            panic!()
        };
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("https://x.test")
        );
        assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));
        assert_eq!(header(&h, "access-control-allow-headers"), Some("x-a, x-b"));
    }

    #[test]
    fn bad_configurations_name_the_field() {
        for (json, field) in [
            (r#"{"allow_origins":["example.com"]}"#, "allow_origins[0]"),
            (r#"{"allow_origins":["https://*."]}"#, "allow_origins[0]"),
            (r#"{"allow_origin_regex":["("]}"#, "allow_origin_regex[0]"),
            (r#"{"allow_methods":["GE T"]}"#, "allow_methods[0]"),
        ] {
            assert_eq!(
                Policy::from_config(json.as_bytes()).unwrap_err().field,
                field,
                "{json}"
            );
        }
    }
}

#[cfg(test)]
#[test]
fn committed_schema_is_current() {
    rustygate_filter_kit::schema::check_committed::<Config>(
        env!("CARGO_MANIFEST_DIR"),
        "cors filter configuration",
    );
}
