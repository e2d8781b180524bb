//! A redirect route's `Location`: the request's URL with the parts the route names replaced,
//! as Envoy's route `redirect` builds it.

use crate::rewrite::PathRewrite;

/// What a redirect replaces. Unset parts come from the request.
#[derive(Debug, Clone, Default)]
pub struct Redirect {
    /// `http` or `https`.
    pub scheme: Option<Box<str>>,
    /// Host name, without a port.
    pub host: Option<Box<str>>,
    pub port: Option<u16>,
    /// The whole path; with a `?`, its query replaces the request's.
    pub path: Option<Box<str>>,
    /// Replaces what the route's path match matched.
    pub prefix: Option<PathRewrite>,
    pub strip_query: bool,
}

fn default_port(scheme: &str) -> &'static str {
    if scheme.eq_ignore_ascii_case("https") {
        "443"
    } else {
        "80"
    }
}

/// `host[:port]` split at the port, brackets kept on an IPv6 host.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let (host, rest) = match authority.find(']') {
        Some(end) if authority.starts_with('[') => authority.split_at(end + 1),
        _ => match authority.rsplit_once(':') {
            Some((h, p)) => return (h, Some(p).filter(|p| !p.is_empty())),
            None => return (authority, None),
        },
    };
    (host, rest.strip_prefix(':').filter(|p| !p.is_empty()))
}

impl Redirect {
    /// The `Location` for a request to `scheme://authority` + `path_and_query`. A request
    /// without a host (HTTP/1.0 without `Host`) and a route without one gets a relative
    /// `Location` (RFC 9110 §10.2.2 allows it).
    pub fn location(&self, scheme: &str, authority: &str, path_and_query: &str) -> String {
        let (req_host, req_port) = split_port(authority);
        let new_scheme = self.scheme.as_deref().unwrap_or(scheme);
        let host = self.host.as_deref().unwrap_or(req_host);
        let port_text;
        let port = match self.port {
            Some(p) => {
                port_text = p.to_string();
                Some(port_text.as_str())
            }
            // A new scheme drops the old one's default port (http://h:80 → https://h).
            None if !new_scheme.eq_ignore_ascii_case(scheme) => {
                req_port.filter(|p| *p != default_port(scheme))
            }
            None => req_port,
        }
        .filter(|p| *p != default_port(new_scheme));

        let (req_path, req_query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let rewritten;
        let (path, query) = if let Some(p) = &self.path {
            match p.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (&**p, req_query),
            }
        } else if let Some(rewrite) = &self.prefix {
            rewritten = rewrite.apply(req_path);
            (rewritten.as_deref().unwrap_or(req_path), req_query)
        } else {
            (req_path, req_query)
        };
        let query = query.filter(|_| !self.strip_query || self.path_has_query());

        let mut out = String::with_capacity(path_and_query.len() + host.len() + 16);
        if !host.is_empty() {
            out.push_str(new_scheme);
            out.push_str("://");
            out.push_str(host);
            if let Some(p) = port {
                out.push(':');
                out.push_str(p);
            }
        }
        out.push_str(if path.is_empty() { "/" } else { path });
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }

    fn path_has_query(&self) -> bool {
        self.path.as_deref().is_some_and(|p| p.contains('?'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_https() -> Redirect {
        Redirect {
            scheme: Some("https".into()),
            ..Redirect::default()
        }
    }

    #[test]
    fn a_new_scheme_drops_the_old_default_port_and_keeps_others() {
        let r = to_https();
        assert_eq!(
            r.location("http", "example.com", "/a?b=1"),
            "https://example.com/a?b=1"
        );
        assert_eq!(
            r.location("http", "example.com:80", "/a"),
            "https://example.com/a"
        );
        assert_eq!(
            r.location("http", "example.com:8080", "/a"),
            "https://example.com:8080/a"
        );
        let with_port = Redirect {
            port: Some(8443),
            ..to_https()
        };
        assert_eq!(
            with_port.location("http", "example.com:8080", "/"),
            "https://example.com:8443/"
        );
        // The new scheme's default port is never written out.
        let to_443 = Redirect {
            port: Some(443),
            ..to_https()
        };
        assert_eq!(to_443.location("http", "h:8080", "/"), "https://h/");
    }

    #[test]
    fn host_replaces_the_name_and_keeps_the_port() {
        let r = Redirect {
            host: Some("new.example".into()),
            ..Redirect::default()
        };
        assert_eq!(
            r.location("http", "old.example:8080", "/x"),
            "http://new.example:8080/x"
        );
        assert_eq!(
            r.location("http", "[::1]:8080", "/x"),
            "http://new.example:8080/x"
        );
        let same = Redirect::default();
        assert_eq!(
            same.location("http", "[::1]:8080", "/x"),
            "http://[::1]:8080/x"
        );
        assert_eq!(same.location("http", "[::1]", "/x"), "http://[::1]/x");
    }

    #[test]
    fn path_replaces_the_path_and_its_own_query_the_request_query() {
        let r = Redirect {
            path: Some("/new".into()),
            ..Redirect::default()
        };
        assert_eq!(r.location("http", "h", "/old?q=1"), "http://h/new?q=1");
        let q = Redirect {
            path: Some("/new?from=old".into()),
            strip_query: true,
            ..Redirect::default()
        };
        assert_eq!(q.location("http", "h", "/old?q=1"), "http://h/new?from=old");
        let strip = Redirect {
            strip_query: true,
            ..Redirect::default()
        };
        assert_eq!(strip.location("http", "h", "/old?q=1"), "http://h/old");
    }

    #[test]
    fn prefix_replaces_the_matched_part() {
        let r = Redirect {
            prefix: Some(PathRewrite::Prefix {
                matched: "/v1/".into(),
                replacement: "/v2/".into(),
            }),
            ..Redirect::default()
        };
        assert_eq!(
            r.location("https", "api.example", "/v1/users?id=7"),
            "https://api.example/v2/users?id=7"
        );
    }

    #[test]
    fn no_host_anywhere_gives_a_relative_location() {
        assert_eq!(Redirect::default().location("http", "", "/a?b"), "/a?b");
    }
}
