//! Route matching: first match in file order wins. Routes are indexed by their path condition
//! so a request only fully checks the routes whose path can apply: exact paths by hash lookup,
//! prefixes by one lookup per distinct prefix length, and all path regexes at once with a
//! `RegexSet` (one pass over the path however many regex routes there are). Routes without a
//! path condition are always candidates. The lowest index among the candidates that passes
//! every other condition is the answer, which keeps file-order semantics exact.

use std::borrow::Cow;

use http::{HeaderMap, Method};
use regex::{Regex, RegexSet};
use rustc_hash::FxHashMap;
use rustygate_config::{PathMatch, RouteMatch, ValueMatch};
use smallvec::SmallVec;

/// What the router looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Path without the query string.
    pub path: &'a str,
    /// Raw query string (after `?`), if any.
    pub query: Option<&'a str>,
    /// Host from `Host` / `:authority`, possibly with a port.
    pub host: Option<&'a str>,
    /// `http` or `https`: what the client spoke to the listener.
    pub scheme: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// An invalid pattern; config validation reports these first, so this is a defence in depth.
#[derive(Debug, thiserror::Error)]
#[error("route {index}: invalid regex {pattern:?}: {source}")]
pub struct RouterError {
    index: usize,
    pattern: String,
    #[source]
    source: regex::Error,
}

enum HostCond {
    Exact(String),
    Suffix(String),
    Prefix(String),
}

enum ValueCond {
    Exact(String),
    Prefix(String),
    Regex(Regex),
    Present(bool),
}

struct ValueRule {
    name: String,
    cond: ValueCond,
    invert: bool,
}

/// What a header condition reads. Envoy's route header matchers also take the request's
/// pseudo-headers; `host` is `:authority` here as there, so that a condition on either holds
/// for HTTP/2 clients (which send no `Host`) as for HTTP/1.1 ones.
enum HeaderField {
    Named,
    Authority,
    Method,
    /// Path with the query string, as `:path` carries it.
    Path,
    Scheme,
}

impl HeaderField {
    /// The field a (lower-cased) header condition name refers to.
    fn of(name: &str) -> Self {
        match name {
            "host" | ":authority" => HeaderField::Authority,
            ":method" => HeaderField::Method,
            ":path" => HeaderField::Path,
            ":scheme" => HeaderField::Scheme,
            _ => HeaderField::Named,
        }
    }
}

/// The conditions besides the path, which [`Router::find`]'s index lookup has already decided.
struct Matcher {
    host: Option<HostCond>,
    methods: Vec<Method>,
    headers: Vec<(HeaderField, ValueRule)>,
    query: Vec<ValueRule>,
}

/// A compiled, immutable route table.
pub struct Router {
    matchers: Vec<Matcher>,
    // Keys come only from the configuration, so a fast non-keyed hash is safe: request paths
    // are looked up, never inserted.
    exact: FxHashMap<Box<str>, Vec<u32>>,
    prefixes: FxHashMap<Box<str>, Vec<u32>>,
    /// Distinct prefix lengths, ascending.
    prefix_lens: Vec<usize>,
    /// All path regexes, anchored, in route order; `regex_routes[i]` is the route of pattern `i`.
    regex_set: RegexSet,
    regex_routes: Vec<u32>,
    /// Routes with no path condition; always candidates.
    unindexed: Vec<u32>,
    /// Whether any route has a host condition (else the host is never normalised).
    any_host: bool,
    /// Whether any route has a header condition.
    any_headers: bool,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.matchers.len())
            .finish()
    }
}

fn anchored(re: &str, index: usize) -> Result<Regex, RouterError> {
    Regex::new(&format!("^(?:{re})$")).map_err(|source| RouterError {
        index,
        pattern: re.to_owned(),
        source,
    })
}

impl Router {
    /// Compiles the match conditions of `routes`, in order.
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a RouteMatch>) -> Result<Self, RouterError> {
        let mut r = Router {
            matchers: Vec::new(),
            exact: FxHashMap::default(),
            prefixes: FxHashMap::default(),
            prefix_lens: Vec::new(),
            regex_set: RegexSet::empty(),
            regex_routes: Vec::new(),
            unindexed: Vec::new(),
            any_host: false,
            any_headers: false,
        };
        let mut regexes = Vec::new();
        for (i, m) in routes.into_iter().enumerate() {
            let idx = i as u32;
            match &m.path {
                None => r.unindexed.push(idx),
                Some(PathMatch::Exact(p)) => {
                    r.exact.entry(p.as_str().into()).or_default().push(idx)
                }
                Some(PathMatch::Prefix(p)) => {
                    r.prefixes.entry(p.as_str().into()).or_default().push(idx);
                    if !r.prefix_lens.contains(&p.len()) {
                        r.prefix_lens.push(p.len());
                    }
                }
                Some(PathMatch::Regex(re)) => {
                    // Compiled alone first so that a bad pattern is reported with its route.
                    anchored(re, i)?;
                    regexes.push(format!("^(?:{re})$"));
                    r.regex_routes.push(idx);
                }
            }
            let host = m.host.as_deref().and_then(|h| {
                let h = h.to_ascii_lowercase();
                if h == "*" {
                    None
                } else if let Some(s) = h.strip_prefix('*') {
                    Some(HostCond::Suffix(s.to_owned()))
                } else if let Some(p) = h.strip_suffix('*') {
                    Some(HostCond::Prefix(p.to_owned()))
                } else {
                    Some(HostCond::Exact(h))
                }
            });
            let rules = |list: &[ValueMatch], lower: bool| -> Result<Vec<ValueRule>, RouterError> {
                list.iter()
                    .map(|v| {
                        let cond = if let Some(e) = &v.exact {
                            ValueCond::Exact(e.clone())
                        } else if let Some(p) = &v.prefix {
                            ValueCond::Prefix(p.clone())
                        } else if let Some(re) = &v.regex {
                            ValueCond::Regex(anchored(re, i)?)
                        } else {
                            ValueCond::Present(v.present.unwrap_or(true))
                        };
                        let name = if lower {
                            v.name.to_ascii_lowercase()
                        } else {
                            v.name.clone()
                        };
                        Ok(ValueRule {
                            name,
                            cond,
                            invert: v.invert,
                        })
                    })
                    .collect()
            };
            let headers: Vec<(HeaderField, ValueRule)> = rules(&m.headers, true)?
                .into_iter()
                .map(|rule| (HeaderField::of(&rule.name), rule))
                .collect();
            r.any_host |= host.is_some();
            // Pseudo-header conditions read the method, path and host, which a caller
            // compares anyway before it routes a request again.
            r.any_headers |= headers.iter().any(|(f, _)| matches!(f, HeaderField::Named));
            r.matchers.push(Matcher {
                host,
                methods: m
                    .methods
                    .iter()
                    .filter_map(|s| Method::from_bytes(s.as_bytes()).ok())
                    .collect(),
                headers,
                query: rules(&m.query, false)?,
            });
        }
        r.prefix_lens.sort_unstable();
        r.regex_set = RegexSet::new(&regexes).map_err(|source| RouterError {
            index: 0,
            pattern: "(all path regexes together)".into(),
            source,
        })?;
        Ok(r)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.matchers.len()
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    /// Whether any route matches on request headers: if none does, a request whose method,
    /// path and host stayed the same goes to the same route whatever its headers became.
    pub fn reads_headers(&self) -> bool {
        self.any_headers
    }

    /// Index of the first route (in file order) that matches `req`.
    pub fn find(&self, req: &RequestView<'_>) -> Option<usize> {
        // On the stack for all but pathological tables.
        let mut candidates: SmallVec<[u32; 16]> = SmallVec::new();
        if let Some(list) = self.exact.get(req.path) {
            candidates.extend_from_slice(list);
        }
        for &len in &self.prefix_lens {
            if len > req.path.len() {
                break;
            }
            if let Some(p) = req.path.get(..len)
                && let Some(list) = self.prefixes.get(p)
            {
                candidates.extend_from_slice(list);
            }
        }
        if !self.regex_routes.is_empty() {
            candidates.extend(
                self.regex_set
                    .matches(req.path)
                    .iter()
                    .map(|i| self.regex_routes[i]),
            );
        }
        candidates.extend_from_slice(&self.unindexed);
        candidates.sort_unstable();
        // Lowercasing the host once per request, not once per route.
        let host = if self.any_host {
            req.host.map(normalize_host)
        } else {
            None
        };
        candidates
            .into_iter()
            .map(|i| i as usize)
            .find(|&i| self.matchers[i].matches(req, host.as_deref()))
    }
}

/// Host without port, lower-cased (copied only when it had upper-case letters).
fn normalize_host(h: &str) -> Cow<'_, str> {
    let without_port = if h.starts_with('[') {
        h.find(']').map_or(h, |i| &h[..=i])
    } else {
        h.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(h, |(host, _)| host)
    };
    if without_port.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(without_port.to_ascii_lowercase())
    } else {
        Cow::Borrowed(without_port)
    }
}

impl Matcher {
    fn matches(&self, req: &RequestView<'_>, host: Option<&str>) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return false;
        }
        if let Some(cond) = &self.host {
            let Some(h) = host else { return false };
            let ok = match cond {
                HostCond::Exact(e) => h == e,
                HostCond::Suffix(s) => h.len() > s.len() && h.ends_with(s.as_str()),
                HostCond::Prefix(p) => h.len() > p.len() && h.starts_with(p.as_str()),
            };
            if !ok {
                return false;
            }
        }
        self.headers.iter().all(|(field, rule)| match field {
            HeaderField::Named => {
                let mut values = req
                    .headers
                    .get_all(rule.name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok());
                rule.check(values.next())
            }
            HeaderField::Authority => rule.check(req.host),
            HeaderField::Method => rule.check(Some(req.method.as_str())),
            HeaderField::Path => match req.query {
                None => rule.check(Some(req.path)),
                Some(q) => rule.check(Some(&format!("{}?{q}", req.path))),
            },
            HeaderField::Scheme => rule.check(Some(req.scheme)),
        }) && self
            .query
            .iter()
            .all(|rule| rule.check(query_param(req.query, &rule.name).as_deref()))
    }
}

impl ValueRule {
    fn check(&self, value: Option<&str>) -> bool {
        let ok = match (&self.cond, value) {
            (ValueCond::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (ValueCond::Exact(e), Some(v)) => v == e,
            (ValueCond::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
            (ValueCond::Regex(re), Some(v)) => re.is_match(v),
        };
        ok != self.invert
    }
}

/// First value of query parameter `name`, percent-decoded (`+` is left as is, per RFC 3986).
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
