//! Header rules applied when a message crosses the gateway: hop-by-hop headers are dropped
//! (RFC 9110 §7.6.1, including every header the `Connection` header names), `X-Forwarded-*`
//! are set, and every request carries an `X-Request-Id`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use rustygate_config::{ClientCertDetail, ForwardClientCert};

/// The `x-request-id` header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The `x-forwarded-for` header.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The `x-forwarded-proto` header.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The `x-forwarded-host` header.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The `x-forwarded-client-cert` header (XFCC), as Envoy writes it.
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What [`Present::scan`] looks for, in [`hop_slot`]'s order: the hop-by-hop names first,
/// `Connection` first among them (it is read and removed apart from the rest) and `TE` fourth;
/// after them the names only noted, because the request path reads or replaces them.
static HOP_NAMES: [HeaderName; 10] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("x-forwarded-client-cert"),
    header::EXPECT,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-request-id"),
];
const CONNECTION_AT: usize = 0;
const TE_AT: usize = 3;
const XFCC_AT: usize = 6;
const EXPECT_AT: usize = 7;
const XFF_AT: usize = 8;
const REQUEST_ID_AT: usize = 9;

/// Which of the fields the forwarding rules remove or read a message carries (the hop-by-hop
/// ones, `x-forwarded-client-cert`, `Expect`, `X-Forwarded-For`, `X-Request-Id`), from one
/// pass over its names. Most messages carry none of them, and a lookup that misses costs as
/// much as one that hits (a name outside the standard set is hashed byte by byte), so the
/// rules below look up only what is there. A name seen here may since have been removed (a
/// `Connection` can name any field); one not seen was not there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present(u16);

impl Present {
    /// Notes which of the names `headers` holds.
    pub fn scan(headers: &HeaderMap) -> Self {
        let mut bits = 0u16;
        for name in headers.keys() {
            if let Some(i) = hop_slot(name) {
                bits |= 1 << i;
            }
        }
        Self(bits)
    }

    fn has(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }

    /// The message carries `x-forwarded-client-cert`.
    pub fn client_cert(self) -> bool {
        self.has(XFCC_AT)
    }

    /// The message carries `Expect`.
    pub fn expect(self) -> bool {
        self.has(EXPECT_AT)
    }
}

/// Joins the `cookie` fields of a request into one, with `; ` between them, as RFC 9113
/// §8.2.3 requires before an HTTP/2 request goes on as HTTP/1.1: HTTP/2 clients split their
/// cookies over several fields (browsers do, for header compression), while an HTTP/1.1 server
/// may read only the first `Cookie` line (RFC 6265 §5.4 allows one). Envoy joins them as it
/// decodes the request, so routes and filters see one field there too.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    // Valid values with `; ` between them make a valid value.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Removes hop-by-hop headers in place. `TE: trailers` is kept on requests, because it is the
/// one TE value that is end-to-end meaningful (it tells the upstream that the client accepts
/// trailers; hyper only sends HTTP/1.1 response trailers to clients that said so). `Trailer`
/// is end-to-end and kept: it declares which trailer fields follow a chunked body.
///
/// `present` is what [`Present::scan`] found in `headers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, present: Present, keep_te_trailers: bool) {
    // Nearly every request, and every response the direct client parsed, has none of the
    // hop-by-hop names (those before XFCC_AT).
    if present.0 & ((1 << XFCC_AT) - 1) == 0 {
        return;
    }
    // Read before `Connection` is applied: a client that sends TE also names it there.
    let te_trailers = keep_te_trailers
        && present.has(TE_AT)
        && headers.get_all(header::TE).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        });
    if present.has(CONNECTION_AT) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            // The usual values name no header: nothing to take apart.
            .filter(|v| {
                let v = v.as_bytes();
                !v.eq_ignore_ascii_case(b"keep-alive") && !v.eq_ignore_ascii_case(b"close")
            })
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // Connection options, not header names (a `Keep-Alive` header goes below anyway).
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            // Never let a client use Connection to strip end-to-end framing we rely on.
            if name != header::CONTENT_LENGTH {
                headers.remove(&name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    for (i, name) in HOP_NAMES[..XFCC_AT]
        .iter()
        .enumerate()
        .skip(CONNECTION_AT + 1)
    {
        if present.has(i) {
            headers.remove(name);
        }
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Where `name` sits in [`HOP_NAMES`], if it is there. The length is checked first: nearly
/// every name of a message misses on it, where comparing each against all of them cost about
/// 50 instructions a header (names are always lower case).
fn hop_slot(name: &HeaderName) -> Option<usize> {
    let s = name.as_str();
    Some(match s.len() {
        10 if s == "connection" => 0,
        10 if s == "keep-alive" => 1,
        16 if s == "proxy-connection" => 2,
        2 if s == "te" => 3,
        17 if s == "transfer-encoding" => 4,
        7 if s == "upgrade" => 5,
        23 if s == "x-forwarded-client-cert" => 6,
        6 if s == "expect" => 7,
        15 if s == "x-forwarded-for" => 8,
        12 if s == "x-request-id" => 9,
        _ => return None,
    })
}

/// A verified client certificate (mutual TLS), as an `x-forwarded-client-cert` element
/// describes it.
#[derive(Debug, Clone, Copy)]
pub struct ClientCert<'a> {
    /// Lower-case hex SHA-256 of the certificate (DER).
    pub sha256: &'a str,
    /// Subject, RFC 2253.
    pub subject: Option<&'a str>,
    /// URI subject alternative names.
    pub uris: &'a [String],
    /// DNS subject alternative names.
    pub dns: &'a [String],
}

/// Applies a listener's `forward_client_cert` to a request's `x-forwarded-client-cert`, as
/// Envoy does: `cert` is the client's verified certificate, `None` on a connection without
/// one. The element written is `Hash=…` followed by the `details` asked for.
pub fn forward_client_cert(
    headers: &mut HeaderMap,
    mode: ForwardClientCert,
    details: &[ClientCertDetail],
    cert: Option<&ClientCert<'_>>,
) {
    use ForwardClientCert as M;
    match (mode, cert) {
        (M::AlwaysForwardOnly, _) | (M::ForwardOnly, Some(_)) => {}
        (M::Sanitize, _) | (_, None) => {
            headers.remove(&X_FORWARDED_CLIENT_CERT);
        }
        (M::SanitizeSet | M::AppendForward, Some(cert)) => {
            let mut value = String::new();
            // Several headers are one list (RFC 9110 §5.3): appended to as a whole.
            if mode == M::AppendForward {
                for v in headers.get_all(&X_FORWARDED_CLIENT_CERT) {
                    if let Ok(v) = v.to_str()
                        && !v.trim().is_empty()
                    {
                        value.push_str(v.trim());
                        value.push(',');
                    }
                }
            }
            client_cert_element(&mut value, cert, details);
            match HeaderValue::from_str(&value) {
                Ok(v) => {
                    headers.insert(X_FORWARDED_CLIENT_CERT.clone(), v);
                }
                // A name with bytes a header cannot carry: better no header than a wrong one.
                Err(_) => {
                    headers.remove(&X_FORWARDED_CLIENT_CERT);
                }
            }
        }
    }
}

/// `Hash=…;Subject="…";URI=…;DNS=…`, in Envoy's order; a value with `,`, `;`, `=` or `"` is
/// quoted (and `Subject` always is, as Envoy writes it).
fn client_cert_element(out: &mut String, cert: &ClientCert<'_>, details: &[ClientCertDetail]) {
    fn pair(out: &mut String, key: &str, value: &str, always_quote: bool) {
        out.push_str(key);
        out.push('=');
        if always_quote || value.contains([',', ';', '=', '"']) {
            out.push('"');
            for c in value.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        } else {
            out.push_str(value);
        }
    }
    pair(out, "Hash", cert.sha256, false);
    let wants = |d| details.contains(&d);
    if let (true, Some(subject)) = (wants(ClientCertDetail::Subject), cert.subject) {
        out.push(';');
        pair(out, "Subject", subject, true);
    }
    if let (true, Some(uri)) = (wants(ClientCertDetail::Uri), cert.uris.first()) {
        out.push(';');
        pair(out, "URI", uri, false);
    }
    if wants(ClientCertDetail::Dns) {
        for dns in cert.dns {
            out.push(';');
            pair(out, "DNS", dns, false);
        }
    }
}

/// The protocol a request asks to switch to: its `Upgrade` value when `Connection` names
/// `upgrade` (RFC 9110 §7.8). `h2c` is not one: it changes only the client's hop, and is
/// dropped with the other hop-by-hop headers as before.
pub fn upgrade_requested(headers: &HeaderMap) -> Option<&HeaderValue> {
    let upgrade = headers.get(header::UPGRADE)?;
    let named = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    let h2c = upgrade
        .to_str()
        .is_ok_and(|s| s.trim().eq_ignore_ascii_case("h2c"));
    (named && !h2c).then_some(upgrade)
}

/// Puts an upgrade's own hop-by-hop headers back after [`strip_hop_by_hop`]: the next hop
/// must see `Connection: upgrade` and the protocol to switch to it as well.
pub fn keep_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// The client address as an `X-Forwarded-For` element. Computed once per connection.
pub fn client_address_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).expect("an IP address is a valid header value")
}

/// Appends `client` (from [`client_address_value`]) to `X-Forwarded-For` and sets
/// `X-Forwarded-Proto` and `X-Forwarded-Host` (from the original host, when there is one).
/// `present` is what [`Present::scan`] found in `headers`.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    present: Present,
    client: &HeaderValue,
    scheme: &'static str,
    host: Option<&HeaderValue>,
) {
    let prev = if present.has(XFF_AT) {
        headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes)
    } else {
        None
    };
    let appended = match prev {
        Some(prev) if !prev.trim_ascii().is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 2 + client.len());
            v.extend_from_slice(prev);
            v.extend_from_slice(b", ");
            v.extend_from_slice(client.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        _ => Some(client.clone()),
    };
    if let Some(v) = appended {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST.clone(), h.clone());
    }
}

/// The request id to use: the client's `X-Request-Id` when it is sane (1–128 visible ASCII
/// characters), else a fresh UUIDv4 from `rng`. `present` is what [`Present::scan`] found in
/// `headers`.
pub fn request_id(headers: &HeaderMap, present: Present, rng: &mut fastrand::Rng) -> HeaderValue {
    if present.has(REQUEST_ID_AT)
        && let Some(v) = headers.get(&X_REQUEST_ID)
    {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    new_uuid_v4(rng)
}

/// A random UUIDv4 as a header value.
pub fn new_uuid_v4(rng: &mut fastrand::Rng) -> HeaderValue {
    let mut bytes = rng.u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    // Two hex digits a byte from a table, the groups at fixed places: a nibble at a time
    // with a dash test per byte cost half of the request id's ≈ 500 instructions.
    for (group, at) in [(0..4, 0), (4..6, 9), (6..8, 14), (8..10, 19), (10..16, 24)] {
        for (k, b) in bytes[group].iter().enumerate() {
            out[at + 2 * k..at + 2 * k + 2].copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
        }
    }
    HeaderValue::from_bytes(&out).expect("hex and dashes are valid header bytes")
}

/// Each byte's two lower-case hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_slots_follow_the_list_and_miss_everything_else() {
        for (i, name) in HOP_NAMES.iter().enumerate() {
            assert_eq!(hop_slot(name), Some(i), "{name}");
        }
        for other in [
            "user-agent",
            "x-forwarded-host",
            "x-forwarded-proto",
            "trailer",
            "host",
            "tf",
            "upgrades",
        ] {
            assert_eq!(hop_slot(&HeaderName::from_static(other)), None, "{other}");
        }
    }

    fn strip(headers: &mut HeaderMap, keep_te_trailers: bool) {
        strip_hop_by_hop(headers, Present::scan(headers), keep_te_trailers);
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret, Content-Length"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("upgrade", "h2c"),
            ("te", "gzip, trailers"),
            ("content-length", "3"),
            ("x-kept", "yes"),
        ]);
        strip(&mut h, true);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(names, ["content-length", "te", "x-kept"]);
        assert_eq!(h["te"], "trailers");
        // The plain values, in any case, go with the header and take nothing else along; a
        // second `Connection` line still names what it names.
        let mut h = map(&[
            ("connection", "Keep-Alive"),
            ("connection", "x-other"),
            ("x-other", "1"),
            ("x-kept", "yes"),
        ]);
        strip(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names, ["x-kept"]);
        let mut h = map(&[("connection", "close"), ("x-kept", "yes")]);
        strip(&mut h, false);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn te_trailers_survives_being_named_in_connection() {
        // RFC 9110 §10.1.4: a sender of TE also lists it in Connection.
        let mut h = map(&[("connection", "TE"), ("te", "trailers"), ("x-kept", "yes")]);
        strip(&mut h, true);
        assert_eq!(h.len(), 2);
        assert_eq!(h["te"], "trailers");
        // Responses keep no TE at all; the common `Connection: keep-alive` goes too.
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("te", "trailers"),
            ("server", "x"),
        ]);
        strip(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["server"]);
    }

    #[test]
    fn client_cert_headers_follow_the_listeners_mode() {
        let uris = vec!["spiffe://example.org/ns/shop/sa/web".to_owned()];
        let dns = vec!["web.shop".to_owned(), "web".to_owned()];
        let cert = ClientCert {
            sha256: "ab12",
            subject: Some("CN=web,O=Shop, Inc."),
            uris: &uris,
            dns: &dns,
        };
        let sent = || map(&[("x-forwarded-client-cert", "Hash=ff")]);
        let xfcc = |h: &HeaderMap| h.get("x-forwarded-client-cert").cloned();
        let all = [
            ClientCertDetail::Subject,
            ClientCertDetail::Uri,
            ClientCertDetail::Dns,
        ];
        use ForwardClientCert as M;
        // Without a verified certificate, only always_forward_only keeps the client's header.
        for mode in [
            M::Sanitize,
            M::ForwardOnly,
            M::AppendForward,
            M::SanitizeSet,
        ] {
            let mut h = sent();
            forward_client_cert(&mut h, mode, &all, None);
            assert_eq!(xfcc(&h), None, "{mode:?}");
        }
        let mut h = sent();
        forward_client_cert(&mut h, M::AlwaysForwardOnly, &all, None);
        assert_eq!(xfcc(&h).unwrap(), "Hash=ff");
        // With one:
        let mut h = sent();
        forward_client_cert(&mut h, M::Sanitize, &all, Some(&cert));
        assert_eq!(xfcc(&h), None);
        let mut h = sent();
        forward_client_cert(&mut h, M::ForwardOnly, &all, Some(&cert));
        assert_eq!(xfcc(&h).unwrap(), "Hash=ff");
        let mut h = sent();
        forward_client_cert(&mut h, M::SanitizeSet, &[], Some(&cert));
        assert_eq!(xfcc(&h).unwrap(), "Hash=ab12");
        let mut h = sent();
        forward_client_cert(&mut h, M::AppendForward, &all, Some(&cert));
        assert_eq!(
            xfcc(&h).unwrap(),
            "Hash=ff,Hash=ab12;Subject=\"CN=web,O=Shop, Inc.\";\
             URI=spiffe://example.org/ns/shop/sa/web;DNS=web.shop;DNS=web"
        );
        // Noticed by the pass over the names.
        assert!(Present::scan(&sent()).client_cert());
        assert!(!Present::scan(&map(&[("x-other", "1")])).client_cert());
    }

    #[test]
    fn an_upgrade_needs_connection_upgrade_and_is_never_h2c() {
        let ws = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(upgrade_requested(&ws).unwrap(), "websocket");
        assert!(upgrade_requested(&map(&[("upgrade", "websocket")])).is_none());
        assert!(upgrade_requested(&map(&[("connection", "upgrade")])).is_none());
        let h2c = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert!(upgrade_requested(&h2c).is_none());
        let mut stripped = ws.clone();
        strip(&mut stripped, true);
        assert!(stripped.is_empty());
        keep_upgrade(&mut stripped, ws["upgrade"].clone());
        assert_eq!(stripped["connection"], "upgrade");
        assert_eq!(stripped["upgrade"], "websocket");
    }

    #[test]
    fn appends_to_x_forwarded_for() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
        let host = HeaderValue::from_static("example.com");
        let present = Present::scan(&h);
        set_forwarded(
            &mut h,
            present,
            &client_address_value("127.0.0.1".parse().unwrap()),
            "http",
            Some(&host),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
    }

    #[test]
    fn a_forwarded_for_named_in_connection_is_replaced_not_appended_to() {
        let mut h = map(&[
            ("connection", "x-forwarded-for"),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        // Scanned before the stripping, as the request path does.
        let present = Present::scan(&h);
        strip_hop_by_hop(&mut h, present, true);
        let client = client_address_value("127.0.0.1".parse().unwrap());
        set_forwarded(&mut h, present, &client, "http", None);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert!(!Present::scan(&h).expect());
        assert!(Present::scan(&map(&[("expect", "100-continue")])).expect());
    }

    #[test]
    fn request_id_is_propagated_or_generated() {
        let mut rng = fastrand::Rng::with_seed(7);
        let h = map(&[("x-request-id", "abc-123")]);
        assert_eq!(request_id(&h, Present::scan(&h), &mut rng), "abc-123");
        let spaced = map(&[("x-request-id", "has space")]);
        let id = request_id(&spaced, Present::scan(&spaced), &mut rng);
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        // The same bits as the plain formatting of the same 128 random bits.
        let mut a = fastrand::Rng::with_seed(11);
        let mut b = a.clone();
        let id = new_uuid_v4(&mut a);
        let mut bits = b.u128(..).to_be_bytes();
        bits[6] = (bits[6] & 0x0f) | 0x40;
        bits[8] = (bits[8] & 0x3f) | 0x80;
        let hex: String = bits.iter().map(|b| format!("{b:02x}")).collect();
        let want = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        assert_eq!(id, want.as_str());
    }

    #[test]
    fn cookie_fields_are_joined_into_one() {
        let mut h = map(&[("cookie", "a=1"), ("x", "y"), ("cookie", "b=2; c=3")]);
        join_cookies(&mut h);
        let cookies: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2; c=3"]);
        let mut one = map(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1");
    }
}

/// The `Host` a mirrored copy of a request carries: Envoy's (and Istio's) `-shadow` suffix on
/// the host name, before any port, so the receiver can tell copies from real traffic. An
/// IPv6 literal cannot take a suffix and is left as it is.
pub fn shadow_authority(authority: &str) -> String {
    if authority.starts_with('[') {
        return authority.to_owned();
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) => authority.split_at(i),
        None => (authority, ""),
    };
    format!("{host}-shadow{port}")
}

#[cfg(test)]
mod shadow_tests {
    use super::shadow_authority;

    #[test]
    fn the_suffix_goes_before_the_port() {
        assert_eq!(shadow_authority("api.example"), "api.example-shadow");
        assert_eq!(
            shadow_authority("api.example:8080"),
            "api.example-shadow:8080"
        );
        assert_eq!(shadow_authority("10.0.0.1:80"), "10.0.0.1-shadow:80");
        assert_eq!(shadow_authority("[::1]:8080"), "[::1]:8080");
    }
}
