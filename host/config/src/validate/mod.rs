//! Semantic checks that types alone cannot express: references between sections, address and
//! regex syntax, and exclusive options. Every problem is collected, not just the first.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::error::Diagnostic;
use crate::model::{Config, FilterLimits, ForwardClientCert};
use crate::positions::Positions;

mod route;

struct Checker<'a> {
    file: &'a str,
    pos: &'a Positions,
    out: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, field: String, message: String) {
        let (line, column) = self.pos.lookup(&field);
        self.out.push(Diagnostic {
            file: self.file.into(),
            line,
            column,
            field: Some(field),
            message,
        });
    }

    fn unique<'n>(
        &mut self,
        seen: &mut HashSet<&'n str>,
        name: &'n str,
        field: String,
        what: &str,
    ) {
        if !seen.insert(name) {
            self.error(field, format!("duplicate {what} name {name:?}"));
        }
    }
}

/// Checks `config`; `Ok` or every problem, sorted by position.
pub fn validate(file: &str, pos: &Positions, config: &Config) -> Result<(), Vec<Diagnostic>> {
    let mut c = Checker {
        file,
        pos,
        out: Vec::new(),
    };

    if config.workers == Some(0) {
        c.error("workers".into(), "must be at least 1".into());
    }
    if config.listeners.is_empty() {
        c.error(
            "listeners".into(),
            "at least one listener is required".into(),
        );
    }
    let mut names = HashSet::new();
    for (i, l) in config.listeners.iter().enumerate() {
        c.unique(
            &mut names,
            &l.name,
            format!("listeners[{i}].name"),
            "listener",
        );
        if let Err(e) = l.address.parse::<SocketAddr>() {
            c.error(
                format!("listeners[{i}].address"),
                format!("invalid address {:?}: {e} (expected ip:port)", l.address),
            );
        }
        positive(
            &mut c,
            format!("listeners[{i}].limits.header_read_timeout"),
            l.limits.header_read_timeout,
        );
        if l.limits.max_header_bytes < 1024 {
            c.error(
                format!("listeners[{i}].limits.max_header_bytes"),
                "must be at least 1024".into(),
            );
        }
        if let Some(tls) = &l.tls {
            for (field, path) in [
                ("certificate_chain", &tls.certificate_chain),
                ("private_key", &tls.private_key),
            ] {
                if path.is_empty() {
                    c.error(
                        format!("listeners[{i}].tls.{field}"),
                        "must name a PEM file".into(),
                    );
                }
            }
            for (k, sni) in tls.sni.iter().enumerate() {
                let at = format!("listeners[{i}].tls.sni[{k}]");
                if sni.server_names.is_empty() {
                    c.error(
                        format!("{at}.server_names"),
                        "must name at least one server".into(),
                    );
                }
                for (n, name) in sni.server_names.iter().enumerate() {
                    let bare = name.strip_prefix("*.").unwrap_or(name);
                    let valid = !bare.is_empty()
                        && bare.split('.').all(|label| {
                            !label.is_empty()
                                && label
                                    .bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        });
                    if !valid {
                        c.error(
                            format!("{at}.server_names[{n}]"),
                            format!(
                                "{name:?} is not a DNS name (a leading \"*.\" label is allowed)"
                            ),
                        );
                    }
                }
                for (field, path) in [
                    ("certificate_chain", &sni.certificate_chain),
                    ("private_key", &sni.private_key),
                ] {
                    if path.is_empty() {
                        c.error(format!("{at}.{field}"), "must name a PEM file".into());
                    }
                }
            }
            match (&tls.client_ca_certificates, tls.require_client_certificate) {
                (Some(ca), _) if ca.is_empty() => c.error(
                    format!("listeners[{i}].tls.client_ca_certificates"),
                    "must name a PEM file".into(),
                ),
                (None, Some(_)) => c.error(
                    format!("listeners[{i}].tls.require_client_certificate"),
                    "needs client_ca_certificates, the authorities client certificates are verified against".into(),
                ),
                _ => {}
            }
        }
        let verifies_clients = l
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_certificates.is_some());
        let describes = matches!(
            l.forward_client_cert,
            ForwardClientCert::AppendForward | ForwardClientCert::SanitizeSet
        );
        if !verifies_clients
            && matches!(
                l.forward_client_cert,
                ForwardClientCert::ForwardOnly
                    | ForwardClientCert::AppendForward
                    | ForwardClientCert::SanitizeSet
            )
        {
            c.error(
                format!("listeners[{i}].forward_client_cert"),
                "acts only on clients with a verified certificate: set tls.client_ca_certificates (or use always_forward_only behind a proxy that sets the header)".into(),
            );
        }
        if l.allow_requests_without_proxy_protocol && !l.proxy_protocol {
            c.error(
                format!("listeners[{i}].allow_requests_without_proxy_protocol"),
                "applies to a listener that reads the PROXY protocol: set proxy_protocol: true"
                    .into(),
            );
        }
        if !describes && !l.client_cert_details.is_empty() {
            c.error(
                format!("listeners[{i}].client_cert_details"),
                "only sanitize_set and append_forward write an element to describe".into(),
            );
        }
    }

    if config.admin.enabled {
        match config.admin.address.parse::<SocketAddr>() {
            Err(e) => c.error("admin.address".into(), format!("invalid address {:?}: {e} (expected ip:port)", config.admin.address)),
            Ok(addr) if !addr.ip().is_loopback() && config.admin.token.as_deref().is_none_or(str::is_empty) => c.error(
                "admin.address".into(),
                format!("the admin listener binds to non-loopback {addr}; set admin.token to protect it"),
            ),
            Ok(_) => {}
        }
    }

    let t = &config.tracing;
    if !(0.0..=1.0).contains(&t.sampling_ratio) {
        c.error(
            "tracing.sampling_ratio".into(),
            format!("{} is not between 0.0 and 1.0", t.sampling_ratio),
        );
    }
    let https = t.endpoint.starts_with("https://");
    if t.enabled && !https && !t.endpoint.starts_with("http://") {
        c.error(
            "tracing.endpoint".into(),
            format!("{:?} is not an http:// or https:// URL", t.endpoint),
        );
    }
    if let Some(tls) = &t.tls {
        if !https {
            c.error(
                "tracing.tls".into(),
                "applies to an https:// endpoint only".into(),
            );
        }
        if tls.ca_certificates.as_deref() == Some("") {
            c.error(
                "tracing.tls.ca_certificates".into(),
                "must name a PEM file".into(),
            );
        }
    }

    let mut tags = HashSet::new();
    for (i, t) in config.metrics.filter_tags.iter().enumerate() {
        let at = |f: &str| format!("metrics.filter_tags[{i}].{f}");
        let label = |n: &str| {
            n.chars().enumerate().all(|(j, ch)| {
                ch == '_' || ch.is_ascii_alphabetic() || (j > 0 && ch.is_ascii_digit())
            })
        };
        if t.name.is_empty() || !label(&t.name) || t.name.starts_with("__") {
            c.error(
                at("name"),
                format!("{:?} is not a Prometheus label name", t.name),
            );
        } else if t.name == "filter" {
            c.error(
                at("name"),
                "every filter metric has a `filter` label already".into(),
            );
        }
        c.unique(&mut tags, &t.name, at("name"), "metric tag");
        match (&t.regex, &t.fixed_value) {
            (Some(re), None) => match regex::Regex::new(re) {
                Err(e) => c.error(at("regex"), regex_error(&e)),
                Ok(re) if re.captures_len() < 2 => c.error(
                    at("regex"),
                    "needs a capture group: the part of the name to cut out".into(),
                ),
                Ok(_) => {}
            },
            (None, Some(_)) => {}
            _ => c.error(
                format!("metrics.filter_tags[{i}]"),
                "needs exactly one of `regex` and `fixed_value`".into(),
            ),
        }
    }

    let mut clusters = HashSet::new();
    for (i, cl) in config.clusters.iter().enumerate() {
        c.unique(
            &mut clusters,
            &cl.name,
            format!("clusters[{i}].name"),
            "cluster",
        );
        if cl.endpoints.is_empty() {
            c.error(
                format!("clusters[{i}].endpoints"),
                "at least one endpoint is required".into(),
            );
        }
        let mut schemes = HashSet::new();
        for (j, ep) in cl.endpoints.iter().enumerate() {
            match parse_endpoint_url(&ep.url) {
                Err(msg) => c.error(format!("clusters[{i}].endpoints[{j}].url"), msg),
                Ok(addr) => {
                    schemes.insert(addr.tls);
                    if schemes.len() > 1 {
                        c.error(
                            format!("clusters[{i}].endpoints[{j}].url"),
                            "a cluster's endpoints are all http:// or all https://; put the others in a cluster of their own".into(),
                        );
                    }
                }
            }
            if ep.weight == 0 {
                c.error(
                    format!("clusters[{i}].endpoints[{j}].weight"),
                    "must be at least 1".into(),
                );
            }
        }
        if let Some(tls) = &cl.tls {
            if schemes.contains(&false) {
                c.error(
                    format!("clusters[{i}].tls"),
                    "set for a cluster of http:// endpoints; TLS is for https:// endpoints".into(),
                );
            }
            if tls.ca_certificates.as_deref() == Some("") {
                c.error(
                    format!("clusters[{i}].tls.ca_certificates"),
                    "must name a PEM file".into(),
                );
            }
            if tls.server_name.as_deref() == Some("") {
                c.error(
                    format!("clusters[{i}].tls.server_name"),
                    "must not be empty".into(),
                );
            }
            match (&tls.certificate_chain, &tls.private_key) {
                (Some(_), None) => c.error(
                    format!("clusters[{i}].tls.private_key"),
                    "missing: a client certificate_chain needs its private_key".into(),
                ),
                (None, Some(_)) => c.error(
                    format!("clusters[{i}].tls.certificate_chain"),
                    "missing: a client private_key needs its certificate_chain".into(),
                ),
                _ => {}
            }
            for (field, path) in [
                ("certificate_chain", &tls.certificate_chain),
                ("private_key", &tls.private_key),
            ] {
                if path.as_deref() == Some("") {
                    c.error(
                        format!("clusters[{i}].tls.{field}"),
                        "must name a PEM file".into(),
                    );
                }
            }
        }
        resilience_checks(&mut c, i, cl);
    }

    let mut filters = HashSet::new();
    for (i, f) in config.filters.iter().enumerate() {
        let at = format!("filters[{i}]");
        c.unique(&mut filters, &f.name, format!("{at}.name"), "filter");
        module_checks(&mut c, &at, &f.module, &f.limits);
    }
    let mut balancers = HashSet::new();
    for (i, b) in config.balancers.iter().enumerate() {
        let at = format!("balancers[{i}]");
        c.unique(&mut balancers, &b.name, format!("{at}.name"), "balancer");
        module_checks(&mut c, &at, &b.module, &b.limits);
    }
    for (i, cl) in config.clusters.iter().enumerate() {
        if let Some(b) = &cl.balancer
            && !balancers.contains(b.as_str())
        {
            c.error(
                format!("clusters[{i}].balancer"),
                format!("unknown balancer {b:?}"),
            );
        }
        if cl.hash_key.is_some() && cl.balancer.is_none() {
            c.error(
                format!("clusters[{i}].hash_key"),
                "only balancer components read a hash key; set `balancer` too".into(),
            );
        }
    }

    let mut routes = HashSet::new();
    for (i, r) in config.routes.iter().enumerate() {
        if let Some(name) = &r.name {
            c.unique(&mut routes, name, format!("routes[{i}].name"), "route");
        }
        route::route_checks(&mut c, i, r, &clusters, &filters);
    }

    let mut out = c.out;
    out.sort_by_key(|d| (d.line, d.column));
    if out.is_empty() { Ok(()) } else { Err(out) }
}

/// regex's errors span several lines with a caret diagram; keep the one-line reason.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let reason = text.lines().last().unwrap_or_default();
    format!("invalid regex: {}", reason.trim_start_matches("error: "))
}

fn http_token_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn percent(c: &mut Checker<'_>, field: String, v: u8) {
    if v > 100 {
        c.error(field, format!("{v} is not a percentage (0 to 100)"));
    }
}

fn positive(c: &mut Checker<'_>, field: String, d: crate::Duration) {
    if d.get().is_zero() {
        c.error(field, "must be more than 0".into());
    }
}

/// A `.wasm` path and the limits of its instances.
fn module_checks(c: &mut Checker<'_>, at: &str, module: &str, limits: &FilterLimits) {
    if module.is_empty() {
        c.error(
            format!("{at}.module"),
            "a path to a .wasm file is required".into(),
        );
    }
    if limits.max_memory_bytes < 1 << 20 {
        c.error(
            format!("{at}.limits.max_memory_bytes"),
            "must be at least 1048576 (1 MiB)".into(),
        );
    }
    if limits.cpu_per_callback.get().is_zero() {
        c.error(
            format!("{at}.limits.cpu_per_callback"),
            "must be more than 0".into(),
        );
    }
}

fn resilience_checks(c: &mut Checker<'_>, i: usize, cl: &crate::Cluster) {
    positive(
        c,
        format!("clusters[{i}].connect_timeout"),
        cl.connect_timeout,
    );
    positive(
        c,
        format!("clusters[{i}].pool_idle_timeout"),
        cl.pool_idle_timeout,
    );
    percent(
        c,
        format!("clusters[{i}].panic_threshold"),
        cl.panic_threshold,
    );
    percent(
        c,
        format!("clusters[{i}].circuit_breaker.retry_budget_percent"),
        cl.circuit_breaker.retry_budget_percent,
    );
    if let Some(hc) = &cl.health_check {
        let at = |f: &str| format!("clusters[{i}].health_check.{f}");
        if let Err(e) = parse_status_ranges(&hc.expected_statuses) {
            c.error(at("expected_statuses"), e);
        }
        if !hc.path.starts_with('/') {
            c.error(at("path"), format!("{:?} must start with /", hc.path));
        }
        positive(c, at("interval"), hc.interval);
        positive(c, at("timeout"), hc.timeout);
        for (f, v) in [
            ("healthy_threshold", hc.healthy_threshold),
            ("unhealthy_threshold", hc.unhealthy_threshold),
        ] {
            if v == 0 {
                c.error(at(f), "must be at least 1".into());
            }
        }
    }
    if let Some(od) = &cl.outlier_detection {
        let at = |f: &str| format!("clusters[{i}].outlier_detection.{f}");
        percent(c, at("max_ejection_percent"), od.max_ejection_percent);
        positive(c, at("base_ejection_time"), od.base_ejection_time);
        if od.max_ejection_time.get() < od.base_ejection_time.get() {
            c.error(
                at("max_ejection_time"),
                "must not be less than base_ejection_time".into(),
            );
        }
    }
}

fn retry_checks(c: &mut Checker<'_>, i: usize, r: &crate::RetryPolicy) {
    let at = |f: &str| format!("routes[{i}].retry.{f}");
    if r.retry_on.contains(&crate::RetryOn::RetriableStatusCodes)
        && r.retriable_status_codes.is_empty()
    {
        c.error(
            at("retriable_status_codes"),
            "retry_on has retriable-status-codes but no codes are listed".into(),
        );
    }
    for (j, code) in r.retriable_status_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            c.error(
                format!("routes[{i}].retry.retriable_status_codes[{j}]"),
                format!("{code} is not an HTTP status"),
            );
        }
    }
    if let Some(t) = r.per_try_timeout {
        positive(c, at("per_try_timeout"), t);
    }
    positive(c, at("backoff_base"), r.backoff_base);
    if r.backoff_max.get() < r.backoff_base.get() {
        c.error(
            at("backoff_max"),
            "must not be less than backoff_base".into(),
        );
    }
}

/// Status ranges from `200-399,404`: inclusive `(low, high)` pairs, or why the text is not one.
pub fn parse_status_ranges(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let code = |t: &str| -> Result<u16, String> {
        match t.trim().parse::<u16>() {
            Ok(v) if (100..=599).contains(&v) => Ok(v),
            _ => Err(format!("{:?} is not an HTTP status", t.trim())),
        }
    };
    let ranges = s
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (code(lo)?, code(hi)?);
                if lo > hi {
                    return Err(format!("range {lo}-{hi} is empty"));
                }
                Ok((lo, hi))
            }
            None => code(part).map(|c| (c, c)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ranges.is_empty() {
        return Err("no statuses given".into());
    }
    Ok(ranges)
}

/// An endpoint's `host:port` from its `http://host:port` URL, or why the URL is not accepted.
pub fn parse_endpoint_url(url: &str) -> Result<EndpointAddress, String> {
    let (tls, rest, default_port) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest, 443)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest, 80)
    } else {
        return Err(format!(
            "{url:?}: expected http://host:port or https://host:port"
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!("{url:?}: expected http://host:port with no path"));
    }
    let has_port = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') && host.contains(':') => {
            return Err(format!(
                "{url:?}: write IPv6 addresses in brackets, e.g. http://[::1]:{port}"
            ));
        }
        Some((_, port)) => {
            port.parse::<u16>()
                .map_err(|_| format!("{url:?}: invalid port {port:?}"))?;
            true
        }
        None => false,
    };
    Ok(EndpointAddress {
        authority: if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:{default_port}")
        },
        tls,
    })
}

/// Where an endpoint is, from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAddress {
    /// `host:port`, the port filled in from the scheme when the URL has none.
    pub authority: String,
    /// `https://`: the connection is TLS.
    pub tls: bool,
}

impl EndpointAddress {
    /// The host part of the authority (brackets of an IPv6 address removed): the server name
    /// a TLS connection asks for and verifies.
    pub fn host(&self) -> &str {
        authority_host(&self.authority)
    }
}

/// The host part of a `host:port` authority, brackets of an IPv6 address removed.
pub fn authority_host(authority: &str) -> &str {
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::parse_endpoint_url;

    #[test]
    fn endpoint_urls() {
        let ok = |url: &str| parse_endpoint_url(url).unwrap();
        assert_eq!(ok("http://127.0.0.1:9000").authority, "127.0.0.1:9000");
        assert_eq!(ok("http://localhost/").authority, "localhost:80");
        assert_eq!(ok("http://[::1]:81").authority, "[::1]:81");
        assert_eq!(ok("http://[::1]:81").host(), "::1");
        let tls = ok("https://api.example.com");
        assert_eq!(
            (tls.authority.as_str(), tls.tls),
            ("api.example.com:443", true)
        );
        assert_eq!(tls.host(), "api.example.com");
        assert!(!ok("http://x:1").tls);
        assert!(
            parse_endpoint_url("http://x:1/path")
                .unwrap_err()
                .contains("no path")
        );
        assert!(
            parse_endpoint_url("http://x:99999")
                .unwrap_err()
                .contains("invalid port")
        );
        assert!(
            parse_endpoint_url("x:1")
                .unwrap_err()
                .contains("expected http://")
        );
    }
}
