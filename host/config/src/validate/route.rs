//! Checks of one route: what it does (forward, split, answer, redirect, mirror), its
//! rewrites, upgrades, filters and match conditions.

use std::collections::HashSet;

use super::{Checker, http_token_invalid, regex_error, retry_checks};
use crate::model::{ConnectMode, PathMatch, Redirect, Rewrite, Route, ValueMatch};

/// Everything about `routes[i]` but the uniqueness of its name.
pub(super) fn route_checks(
    c: &mut Checker<'_>,
    i: usize,
    r: &Route,
    clusters: &HashSet<&str>,
    filters: &HashSet<&str>,
) {
    action_checks(c, i, r, clusters);
    retry_checks(c, i, &r.retry);
    for (j, protocol) in r.upgrades.iter().enumerate() {
        // RFC 9110 §7.8: a protocol name, optionally with "/version".
        let mut parts = protocol.splitn(2, '/');
        if parts.any(http_token_invalid) {
            c.error(
                format!("routes[{i}].upgrades[{j}]"),
                format!("invalid protocol {protocol:?}: use a token such as websocket"),
            );
        } else if protocol.eq_ignore_ascii_case("h2c") {
            // h2c names a change of this hop's protocol, not something to tunnel.
            c.error(
                format!("routes[{i}].upgrades[{j}]"),
                "h2c cannot be tunnelled; clients reach HTTP/2 with prior knowledge".into(),
            );
        }
    }
    if let Some(rw) = &r.rewrite {
        rewrite_checks(c, i, rw, r.matcher.path.as_ref());
    }
    for (j, f) in r.filters.iter().enumerate() {
        if !filters.contains(f.name()) {
            c.error(
                format!("routes[{i}].filters[{j}]"),
                format!("unknown filter {:?}", f.name()),
            );
        }
    }
    let m = &r.matcher;
    match &m.path {
        Some(PathMatch::Exact(p)) | Some(PathMatch::Prefix(p)) if !p.starts_with('/') => {
            c.error(
                format!("routes[{i}].match.path"),
                format!("path {p:?} must start with '/'"),
            );
        }
        Some(PathMatch::Regex(re)) => {
            if let Err(e) = regex::Regex::new(re) {
                c.error(format!("routes[{i}].match.path.regex"), regex_error(&e));
            }
        }
        _ => {}
    }
    if let Some(h) = &m.host
        && (h.is_empty() || h[1..].contains('*') && !h.ends_with(".*"))
    {
        c.error(
            format!("routes[{i}].match.host"),
            format!("invalid host pattern {h:?}: use a name, '*', '*.suffix' or 'prefix.*'"),
        );
    }
    for (j, method) in m.methods.iter().enumerate() {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            c.error(
                format!("routes[{i}].match.methods[{j}]"),
                format!("invalid method {method:?} (use upper case, e.g. GET)"),
            );
        }
    }
    for (kind, list) in [("headers", &m.headers), ("query", &m.query)] {
        for (j, vm) in list.iter().enumerate() {
            check_value_match(
                c,
                &format!("routes[{i}].match.{kind}[{j}]"),
                vm,
                kind == "headers",
            );
        }
    }
}

/// A route does exactly one thing: forward (to `cluster`, or split over `clusters`) or answer
/// (`direct_response`, `redirect`).
fn action_checks(c: &mut Checker<'_>, i: usize, r: &Route, clusters: &HashSet<&str>) {
    let given: Vec<&str> = [
        ("cluster", r.cluster.is_some()),
        ("clusters", !r.clusters.is_empty()),
        ("direct_response", r.direct_response.is_some()),
        ("redirect", r.redirect.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    match given.as_slice() {
        [] => c.error(
            format!("routes[{i}]"),
            "says nothing to do: give cluster, clusters, direct_response or redirect".into(),
        ),
        [_] => {}
        [first, second, ..] => c.error(
            format!("routes[{i}].{second}"),
            format!("give one of cluster, clusters, direct_response and redirect (this route also has {first})"),
        ),
    }
    if let Some(name) = &r.cluster
        && !clusters.contains(name.as_str())
    {
        c.error(
            format!("routes[{i}].cluster"),
            format!("unknown cluster {name:?}"),
        );
    }
    for (j, w) in r.clusters.iter().enumerate() {
        if !clusters.contains(w.name.as_str()) {
            c.error(
                format!("routes[{i}].clusters[{j}].name"),
                format!("unknown cluster {:?}", w.name),
            );
        }
    }
    let total: u64 = r.clusters.iter().map(|w| u64::from(w.weight)).sum();
    if !r.clusters.is_empty() && (total == 0 || total > u64::from(u32::MAX)) {
        c.error(
            format!("routes[{i}].clusters"),
            format!(
                "weights add up to {total}: they must add up to between 1 and {}",
                u32::MAX
            ),
        );
    }
    let forwards = r.cluster.is_some() || !r.clusters.is_empty();
    if !forwards && r.rewrite.is_some() {
        c.error(
            format!("routes[{i}].rewrite"),
            "rewrites change what is forwarded; this route answers by itself".into(),
        );
    }
    if r.connect == ConnectMode::Terminate {
        if !r.upgrades.iter().any(|u| u.eq_ignore_ascii_case("CONNECT")) {
            c.error(
                format!("routes[{i}].connect"),
                "terminate answers CONNECT requests, which this route refuses: add CONNECT to its upgrades".into(),
            );
        } else if !forwards {
            c.error(
                format!("routes[{i}].connect"),
                "terminate tunnels to the route's cluster; this route answers by itself".into(),
            );
        }
    }
    if !forwards && !r.mirror.is_empty() {
        c.error(
            format!("routes[{i}].mirror"),
            "only forwarded requests are copied; this route answers by itself".into(),
        );
    }
    for (j, m) in r.mirror.iter().enumerate() {
        if !clusters.contains(m.cluster.as_str()) {
            c.error(
                format!("routes[{i}].mirror[{j}].cluster"),
                format!("unknown cluster {:?}", m.cluster),
            );
        }
        if !(0.0..=100.0).contains(&m.percent) {
            c.error(
                format!("routes[{i}].mirror[{j}].percent"),
                format!("{} is not a percentage (0 to 100)", m.percent),
            );
        }
    }
    if let Some(d) = &r.direct_response {
        if !(200..=599).contains(&d.status) {
            c.error(
                format!("routes[{i}].direct_response.status"),
                format!("{} is not a status between 200 and 599", d.status),
            );
        }
        for (name, value) in &d.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                c.error(
                    format!("routes[{i}].direct_response.headers.{name}"),
                    format!("{name:?} is not a header name"),
                );
            } else if http::HeaderValue::from_str(value).is_err() {
                c.error(
                    format!("routes[{i}].direct_response.headers.{name}"),
                    format!("{value:?} is not a header value (no control characters)"),
                );
            }
        }
    }
    if let Some(rd) = &r.redirect {
        redirect_checks(c, i, rd, r.matcher.path.as_ref());
    }
}

fn redirect_checks(c: &mut Checker<'_>, i: usize, rd: &Redirect, path: Option<&PathMatch>) {
    let at = |f: &str| format!("routes[{i}].redirect.{f}");
    if ![301, 302, 303, 307, 308].contains(&rd.status) {
        c.error(
            at("status"),
            format!(
                "{} is not a redirect status (301, 302, 303, 307 or 308)",
                rd.status
            ),
        );
    }
    if let Some(s) = &rd.scheme
        && s != "http"
        && s != "https"
    {
        c.error(at("scheme"), format!("{s:?}: use http or https"));
    }
    if let Some(h) = &rd.host
        && (h.contains(':') && !h.starts_with('[') || !is_authority(h))
    {
        c.error(
            at("host"),
            format!("{h:?} is not a host name (give a port with `port`)"),
        );
    }
    if rd.port == Some(0) {
        c.error(at("port"), "0 is not a port".into());
    }
    let url_like = |p: &str| !p.contains('#') && !p.bytes().any(|b| b <= b' ' || b == 0x7f);
    if let Some(p) = &rd.path
        && (!p.starts_with('/') || !url_like(p))
    {
        c.error(
            at("path"),
            format!("{p:?} is not a path (it must start with '/', without spaces or '#')"),
        );
    }
    if let Some(prefix) = &rd.prefix {
        if rd.path.is_some() {
            c.error(at("prefix"), "give path or prefix, not both".into());
        }
        if !matches!(path, Some(PathMatch::Prefix(_) | PathMatch::Exact(_))) {
            c.error(
                at("prefix"),
                "replaces what match.path matched: needs match.path.prefix or match.path.exact"
                    .into(),
            );
        }
        if !(prefix.is_empty() || prefix.starts_with('/'))
            || !url_like(prefix)
            || prefix.contains('?')
        {
            c.error(
                at("prefix"),
                format!("{prefix:?} is not a path (it must start with '/', or be empty)"),
            );
        }
    }
}

fn rewrite_checks(c: &mut Checker<'_>, i: usize, rw: &Rewrite, path: Option<&PathMatch>) {
    let at = |f: &str| format!("routes[{i}].rewrite.{f}");
    // What a path may become: no query, fragment or spaces (the query is kept as sent).
    let path_like = |p: &str| !p.contains(['?', '#']) && !p.bytes().any(|b| b <= b' ' || b == 0x7f);
    if let Some(prefix) = &rw.prefix {
        if !matches!(path, Some(PathMatch::Prefix(_) | PathMatch::Exact(_))) {
            c.error(
                at("prefix"),
                "replaces what match.path matched: needs match.path.prefix or match.path.exact (use path_regex otherwise)".into(),
            );
        }
        if !(prefix.is_empty() || prefix.starts_with('/')) || !path_like(prefix) {
            c.error(
                at("prefix"),
                format!("{prefix:?} is not a path (it must start with '/', or be empty)"),
            );
        }
        if rw.path_regex.is_some() {
            c.error(
                at("path_regex"),
                "give prefix or path_regex, not both".into(),
            );
        }
    }
    if let Some(re) = &rw.path_regex {
        if let Err(e) = regex::Regex::new(&re.pattern) {
            c.error(at("path_regex.pattern"), regex_error(&e));
        }
        if !path_like(&re.substitution) {
            c.error(
                at("path_regex.substitution"),
                format!(
                    "{:?} would not leave a valid path (no '?', '#' or spaces)",
                    re.substitution
                ),
            );
        }
    }
    if let Some(host) = &rw.host
        && !is_authority(host)
    {
        c.error(
            at("host"),
            format!("{host:?} is not a host (name or name:port)"),
        );
    }
}

/// `name`, `name:port`, an IPv4 address or a bracketed IPv6 one, with an optional port.
fn is_authority(host: &str) -> bool {
    // A bare IPv6 address keeps a ':' in `name` and fails below, as it should (no brackets).
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let name_ok = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    name_ok && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

/// The pseudo-headers (without their `:`) a route's header conditions may name.
const PSEUDO_HEADERS: [&str; 4] = ["authority", "method", "path", "scheme"];

fn check_value_match(c: &mut Checker<'_>, field: &str, vm: &ValueMatch, is_header: bool) {
    if is_header && let Some(pseudo) = vm.name.strip_prefix(':') {
        // Envoy's route header matchers take the request's pseudo-headers too.
        if !PSEUDO_HEADERS.contains(&pseudo.to_ascii_lowercase().as_str()) {
            c.error(
                format!("{field}.name"),
                format!(
                    "{:?} is not a pseudo-header a route can match; use one of :authority, :method, :path, :scheme",
                    vm.name
                ),
            );
        }
    } else if is_header && http_token_invalid(&vm.name) {
        c.error(
            format!("{field}.name"),
            format!("invalid header name {:?}", vm.name),
        );
    }
    let given = [
        vm.exact.is_some(),
        vm.prefix.is_some(),
        vm.regex.is_some(),
        vm.present.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        c.error(
            field.to_owned(),
            "give exactly one of exact, prefix, regex, present".into(),
        );
    }
    if let Some(re) = &vm.regex
        && let Err(e) = regex::Regex::new(re)
    {
        c.error(format!("{field}.regex"), regex_error(&e));
    }
}
