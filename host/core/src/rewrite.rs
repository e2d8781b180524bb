//! A route's path rewrite: what the upstream is asked for instead of the client's path, as
//! Envoy's `prefix_rewrite` and `regex_rewrite` do it. The query string always passes as sent.

use regex::Regex;

/// How a route rewrites the path.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// The path starts with (or equals) `matched`, which becomes `replacement`.
    Prefix {
        /// The route's `match.path` prefix or exact path.
        matched: Box<str>,
        /// What takes its place.
        replacement: Box<str>,
    },
    /// Every match of `pattern` becomes `substitution` (`$1`, `${name}`).
    Regex {
        /// The compiled pattern.
        pattern: Regex,
        /// The replacement text.
        substitution: Box<str>,
    },
}

impl PathRewrite {
    /// The path and query to send for `path_and_query`, or `None` when it is unchanged. A
    /// result that does not start with `/` gets one (`/api` rewritten to `` on `/api` is `/`),
    /// and a prefix rewrite never doubles the slash where replacement and rest meet (Envoy's
    /// `prefix_rewrite: /` on a `/api` prefix sends `//users`; this sends `/users`).
    pub fn apply(&self, path_and_query: &str) -> Option<String> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut out = String::with_capacity(path_and_query.len() + 16);
        match self {
            PathRewrite::Prefix {
                matched,
                replacement,
            } => {
                let rest = path.strip_prefix(&**matched)?;
                if !replacement.starts_with('/') {
                    out.push('/');
                }
                out.push_str(replacement);
                // `/` replacing `/api/` leaves `users`: no doubled or missing slash either way.
                if out.ends_with('/') && rest.starts_with('/') {
                    out.pop();
                }
                out.push_str(rest);
            }
            PathRewrite::Regex {
                pattern,
                substitution,
            } => {
                let replaced = pattern.replace_all(path, &**substitution);
                if let std::borrow::Cow::Borrowed(_) = replaced {
                    return None;
                }
                if !replaced.starts_with('/') {
                    out.push('/');
                }
                out.push_str(&replaced);
            }
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(matched: &str, replacement: &str) -> PathRewrite {
        PathRewrite::Prefix {
            matched: matched.into(),
            replacement: replacement.into(),
        }
    }

    #[test]
    fn a_prefix_is_replaced_and_the_rest_kept() {
        let rw = prefix("/api/", "/");
        assert_eq!(rw.apply("/api/users?id=1").unwrap(), "/users?id=1");
        assert_eq!(rw.apply("/api/").unwrap(), "/");
        assert_eq!(rw.apply("/other"), None);
        let rw = prefix("/api", "/v2");
        assert_eq!(rw.apply("/api/users").unwrap(), "/v2/users");
        assert_eq!(rw.apply("/api").unwrap(), "/v2");
        // Emptied paths still start with a slash.
        assert_eq!(prefix("/api", "").apply("/api?x=1").unwrap(), "/?x=1");
        // Unlike Envoy, the junction never doubles a slash: `/api` to `/` on `/api/users`.
        assert_eq!(prefix("/api", "/").apply("/api/users").unwrap(), "/users");
        assert_eq!(prefix("/api", "/").apply("/apiary").unwrap(), "/ary");
    }

    #[test]
    fn a_regex_replaces_every_match_in_the_path_only() {
        let rw = PathRewrite::Regex {
            pattern: Regex::new("^/v1/([^/]+)/items/(\\d+)$").unwrap(),
            substitution: "/items/$2?owner=$1".replace("?owner=", "/owner/").into(),
        };
        assert_eq!(
            rw.apply("/v1/ann/items/42?full=1").unwrap(),
            "/items/42/owner/ann?full=1"
        );
        assert_eq!(rw.apply("/v2/ann/items/42"), None);
        let rw = PathRewrite::Regex {
            pattern: Regex::new("-").unwrap(),
            substitution: "_".into(),
        };
        assert_eq!(rw.apply("/a-b/c-d?x=y-z").unwrap(), "/a_b/c_d?x=y-z");
    }
}
