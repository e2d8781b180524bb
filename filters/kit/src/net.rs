//! Client addresses as filters see them.

/// The client address to act on: with `trusted_hops == 0` the connection's peer; otherwise the
/// address that many hops from the right of `X-Forwarded-For` (the proxies in front of the
/// gateway each appended one), falling back to the peer when the header is shorter. A client
/// can prepend anything it likes, so only the rightmost, trusted entries are believed.
pub fn client_ip<'a>(
    peer: &'a str,
    forwarded_for: Option<&'a str>,
    trusted_hops: usize,
) -> &'a str {
    if trusted_hops == 0 {
        return peer;
    }
    let Some(xff) = forwarded_for else {
        return peer;
    };
    let hops: Vec<&str> = xff
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if hops.len() >= trusted_hops {
        hops[hops.len() - trusted_hops]
    } else {
        peer
    }
}

/// The IP part of an `ip:port` or `[ipv6]:port` address (Envoy's `source.address`).
pub fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_trusts_only_the_configured_hops() {
        let xff = Some("6.6.6.6, 203.0.113.7, 10.0.0.2");
        assert_eq!(client_ip("10.0.0.3", xff, 0), "10.0.0.3");
        // The gateway's own hop appended 10.0.0.2 as the peer of a trusted balancer.
        assert_eq!(client_ip("10.0.0.3", xff, 1), "10.0.0.2");
        assert_eq!(client_ip("10.0.0.3", xff, 2), "203.0.113.7");
        assert_eq!(client_ip("10.0.0.3", xff, 4), "10.0.0.3");
        assert_eq!(client_ip("10.0.0.3", None, 1), "10.0.0.3");
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(strip_port("[::1]:5000"), "::1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("10.0.0.1"), "10.0.0.1");
    }
}
