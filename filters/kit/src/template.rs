//! Header value templates: literal text with `${variable}` references to request data, `$$`
//! for a literal `$`. Parsed once at configuration time (unknown variables are configuration
//! errors), expanded per request.

/// A value that comes from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `${request.id}`: `x-request-id`.
    RequestId,
    /// `${request.path}`: path with query.
    RequestPath,
    /// `${request.method}`.
    RequestMethod,
    /// `${request.host}`.
    RequestHost,
    /// `${request.scheme}`.
    RequestScheme,
    /// `${source.address}`: the client's `ip:port`.
    SourceAddress,
    /// `${source.ip}`: the client's IP.
    SourceIp,
    /// `${route.name}`.
    RouteName,
    /// `${request.header.<name>}`: a request header (empty when absent).
    RequestHeader(String),
}

impl Var {
    fn parse(name: &str) -> Option<Var> {
        Some(match name {
            "request.id" => Var::RequestId,
            "request.path" => Var::RequestPath,
            "request.method" => Var::RequestMethod,
            "request.host" => Var::RequestHost,
            "request.scheme" => Var::RequestScheme,
            "source.address" => Var::SourceAddress,
            "source.ip" => Var::SourceIp,
            "route.name" => Var::RouteName,
            _ => {
                let header = name.strip_prefix("request.header.")?;
                if header.is_empty() || !header.bytes().all(is_token_byte) {
                    return None;
                }
                Var::RequestHeader(header.to_ascii_lowercase())
            }
        })
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `src`; the error says what is wrong.
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = src;
        while let Some(at) = rest.find('$') {
            text.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(r) = after.strip_prefix('$') {
                text.push('$');
                rest = r;
            } else if let Some(r) = after.strip_prefix('{') {
                let end = r
                    .find('}')
                    .ok_or_else(|| format!("unclosed `${{` in {src:?}"))?;
                let name = &r[..end];
                let var = Var::parse(name).ok_or_else(|| {
                    format!(
                        "unknown variable `${{{name}}}` (known: request.id, request.path, request.method, request.host, request.scheme, source.address, source.ip, route.name, request.header.<name>)"
                    )
                })?;
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Var(var));
                rest = &r[end + 1..];
            } else {
                text.push('$');
                rest = after;
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    /// Whether the value is the same for every request.
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The value, when it is the same for every request (no variables).
    pub fn constant(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// The value for one request; `lookup` answers each variable (empty when unknown).
    pub fn expand(&self, mut lookup: impl FnMut(&Var) -> Option<String>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => out.push_str(&lookup(v).unwrap_or_default()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(src: &str) -> String {
        Template::parse(src).unwrap().expand(|v| {
            Some(match v {
                Var::RequestId => "abc".into(),
                Var::RequestPath => "/a?b=1".into(),
                Var::RequestHeader(h) if h == "x-tenant" => "acme".into(),
                _ => return None,
            })
        })
    }

    #[test]
    fn expands_variables_and_escapes() {
        assert_eq!(expand("executed"), "executed");
        assert_eq!(
            expand("id=${request.id} path=${request.path}"),
            "id=abc path=/a?b=1"
        );
        assert_eq!(expand("${request.header.X-Tenant}!"), "acme!");
        assert_eq!(expand("${request.header.x-missing}"), "");
        assert_eq!(expand("cost: $$5, $x"), "cost: $5, $x");
        assert!(Template::parse("plain").unwrap().is_constant());
        assert!(!Template::parse("${request.id}").unwrap().is_constant());
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        assert!(
            Template::parse("${request.nope}")
                .unwrap_err()
                .contains("unknown variable")
        );
        assert!(
            Template::parse("${request.id")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(Template::parse("${request.header.}").is_err());
    }
}
