//! The PROXY protocol header (versions 1 and 2, as HAProxy specifies them): what a load
//! balancer in front of the gateway sends first on each connection to say whose connection it
//! is. Parsing only; the listener reads the bytes (`host/proxy`).
//!
//! The reader never takes a byte past the header, since what follows is the client's (an HTTP
//! request, a TLS handshake): [`parse`] says, of the bytes seen so far, either where the
//! header ends or how many of them surely belong to it, so they can be consumed and more
//! awaited.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 2's first twelve bytes.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's first six bytes.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Version 1's longest header, line end included (the specification's 107 bytes).
pub const V1_MAX: usize = 107;
/// Version 2's fixed part: signature, version and command, family, length.
const V2_FIXED: usize = 16;

/// The connection's real ends, as the header gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client.
    pub source: SocketAddr,
    /// The address the client connected to (the load balancer's, typically).
    pub destination: SocketAddr,
}

/// What the bytes seen so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `len` bytes. `addresses` is `None` where the header names none that
    /// apply (version 1's `UNKNOWN`, version 2's `LOCAL` command, an unspecified or Unix
    /// family): the connection's own addresses stand.
    Header {
        len: usize,
        addresses: Option<Addresses>,
    },
    /// Not yet whole; the first `at_least` bytes surely belong to the header.
    Incomplete { at_least: usize },
}

/// Why the bytes are not a PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Neither version's signature: the sender does not speak the protocol.
    #[error("no PROXY protocol header")]
    Missing,
    /// A version 1 header that breaks its grammar.
    #[error("invalid PROXY protocol v1 header: {0}")]
    V1(&'static str),
    /// A version 2 header that breaks its layout.
    #[error("invalid PROXY protocol v2 header: {0}")]
    V2(&'static str),
}

/// Whether a connection's first bytes begin a header, as far as they tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// They hold a whole signature.
    Header,
    /// They are not a header's.
    NotHeader,
    /// Too few to tell: a signature's first bytes, or none.
    Undecided,
}

/// Tells a header from anything else by its signature, before a byte is consumed (a client
/// that may send no header: `PROPFIND` begins as `PROXY ` does).
pub fn start(bytes: &[u8]) -> Start {
    for signature in [V1_PREFIX.as_slice(), V2_SIGNATURE] {
        let n = bytes.len().min(signature.len());
        if bytes[..n] == signature[..n] {
            return if n == signature.len() {
                Start::Header
            } else {
                Start::Undecided
            };
        }
    }
    Start::NotHeader
}

/// Reads a header from the start of `bytes`, the first bytes of a connection.
pub fn parse(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    match bytes.first() {
        None => Ok(Parsed::Incomplete { at_least: 0 }),
        Some(b'P') => v1(bytes),
        Some(b'\r') => v2(bytes),
        Some(_) => Err(HeaderError::Missing),
    }
}

fn v1(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    let seen = bytes.len().min(V1_PREFIX.len());
    if bytes[..seen] != V1_PREFIX[..seen] {
        return Err(HeaderError::Missing);
    }
    let Some(lf) = bytes.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if bytes.len() >= V1_MAX {
            Err(HeaderError::V1("no line end within 107 bytes"))
        } else {
            // Everything seen belongs to the header line, which has not ended.
            Ok(Parsed::Incomplete {
                at_least: bytes.len(),
            })
        };
    };
    let line = bytes[..lf]
        .strip_suffix(b"\r")
        .ok_or(HeaderError::V1("the line must end with CRLF"))?;
    let line =
        std::str::from_utf8(&line[V1_PREFIX.len()..]).map_err(|_| HeaderError::V1("not text"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    let addresses = match family {
        // The rest of an UNKNOWN line is to be ignored (the specification's words).
        "UNKNOWN" => None,
        "TCP4" | "TCP6" => {
            let mut next = || fields.next().ok_or(HeaderError::V1("too few fields"));
            let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
            if fields.next().is_some() {
                return Err(HeaderError::V1("too many fields"));
            }
            let v6 = family == "TCP6";
            Some(Addresses {
                source: SocketAddr::new(v1_ip(src, v6)?, v1_port(sport)?),
                destination: SocketAddr::new(v1_ip(dst, v6)?, v1_port(dport)?),
            })
        }
        _ => {
            return Err(HeaderError::V1(
                "the protocol must be TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    Ok(Parsed::Header {
        len: lf + 1,
        addresses,
    })
}

fn v1_ip(text: &str, v6: bool) -> Result<IpAddr, HeaderError> {
    let ip = if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    ip.map_err(|_| HeaderError::V1("an address does not match its protocol"))
}

fn v1_port(text: &str) -> Result<u16, HeaderError> {
    // Decimal digits only, without a sign or leading zeros (but "0" itself).
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical
        .then(|| text.parse().ok())
        .flatten()
        .ok_or(HeaderError::V1("a port is not a number from 0 to 65535"))
}

fn v2(bytes: &[u8]) -> Result<Parsed, HeaderError> {
    let seen = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..seen] != V2_SIGNATURE[..seen] {
        return Err(HeaderError::Missing);
    }
    if bytes.len() < V2_FIXED {
        return Ok(Parsed::Incomplete { at_least: V2_FIXED });
    }
    let (version, command) = (bytes[12] >> 4, bytes[12] & 0x0f);
    if version != 2 {
        return Err(HeaderError::V2("the version must be 2"));
    }
    let len = V2_FIXED + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if bytes.len() < len {
        return Ok(Parsed::Incomplete { at_least: len });
    }
    let body = &bytes[V2_FIXED..len];
    let addresses = match command {
        // A connection the proxy made itself (a health check): its own addresses stand.
        0 => None,
        1 => v2_addresses(bytes[13], body)?,
        _ => return Err(HeaderError::V2("the command must be LOCAL or PROXY")),
    };
    Ok(Parsed::Header { len, addresses })
}

/// The addresses of a PROXY command's family (the high nibble of `family`; the low one, TCP or
/// UDP, does not change the layout). TLVs after them are skipped.
fn v2_addresses(family: u8, body: &[u8]) -> Result<Option<Addresses>, HeaderError> {
    let short = HeaderError::V2("shorter than its addresses");
    match family >> 4 {
        1 => {
            let a = body.get(..12).ok_or(short)?;
            let ip = |at: usize| IpAddr::from([a[at], a[at + 1], a[at + 2], a[at + 3]]);
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            Ok(Some(Addresses {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }))
        }
        2 => {
            let a = body.get(..36).ok_or(short)?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[at..at + 16]);
                IpAddr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            Ok(Some(Addresses {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }))
        }
        // Unspecified, or Unix sockets: no address a client could be told by.
        0 | 3 => Ok(None),
        _ => Err(HeaderError::V2("unknown address family")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn whole(bytes: &[u8]) -> (usize, Option<Addresses>) {
        match parse(bytes) {
            Ok(Parsed::Header { len, addresses }) => (len, addresses),
            other => panic!("{other:?} for {bytes:?}"),
        }
    }

    #[test]
    fn version_1_gives_both_ends_and_stops_at_the_line_end() {
        let line = b"PROXY TCP4 203.0.113.7 192.0.2.10 56324 443\r\n";
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (len, addresses) = whole(&bytes);
        assert_eq!(len, line.len());
        assert_eq!(
            addresses,
            Some(Addresses {
                source: addr("203.0.113.7:56324"),
                destination: addr("192.0.2.10:443"),
            })
        );
        let (_, six) = whole(b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n");
        assert_eq!(six.unwrap().source, addr("[2001:db8::7]:1"));
        assert_eq!(whole(b"PROXY UNKNOWN whatever\r\nGET"), (24, None));
        assert_eq!(whole(b"PROXY UNKNOWN\r\n"), (15, None));
    }

    #[test]
    fn version_1_refuses_what_breaks_its_grammar() {
        for bad in [
            &b"PROXY TCP4 203.0.113.7 192.0.2.10 56324\r\n"[..],
            b"PROXY TCP4 203.0.113.7 192.0.2.10 56324 443 9\r\n",
            b"PROXY TCP4 2001:db8::7 192.0.2.10 1 2\r\n",
            b"PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.10 65536 443\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.10 0443 443\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.10 +1 443\r\n",
            b"PROXY UDP4 203.0.113.7 192.0.2.10 1 2\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.10 1 2\n",
            b"PROXY  TCP4 203.0.113.7 192.0.2.10 1 2\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HeaderError::V1(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert_eq!(
            parse(&long),
            Err(HeaderError::V1("no line end within 107 bytes"))
        );
    }

    #[test]
    fn anything_else_is_missing_a_header() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HeaderError::Missing));
        assert_eq!(parse(b"PRI * HTTP/2.0"), Err(HeaderError::Missing));
        assert_eq!(parse(b"\x16\x03\x01"), Err(HeaderError::Missing));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX"), Err(HeaderError::Missing));
    }

    #[test]
    fn a_signature_is_told_before_anything_is_consumed() {
        assert_eq!(start(b""), Start::Undecided);
        assert_eq!(start(b"PROX"), Start::Undecided);
        assert_eq!(start(b"PROXY "), Start::Header);
        assert_eq!(start(b"PROPFIND / HTTP/1.1"), Start::NotHeader);
        assert_eq!(start(b"\r\n\r\n\0"), Start::Undecided);
        assert_eq!(start(V2_SIGNATURE), Start::Header);
        assert_eq!(start(b"\r\n\r\nGET"), Start::NotHeader);
        assert_eq!(start(b"GET / HTTP/1.1"), Start::NotHeader);
        assert_eq!(start(b"\x16\x03\x01"), Start::NotHeader);
    }

    #[test]
    fn a_partial_header_says_how_much_of_it_is_there() {
        assert_eq!(parse(b""), Ok(Parsed::Incomplete { at_least: 0 }));
        assert_eq!(parse(b"PRO"), Ok(Parsed::Incomplete { at_least: 3 }));
        assert_eq!(
            parse(b"PROXY TCP4 203.0"),
            Ok(Parsed::Incomplete { at_least: 16 })
        );
        assert_eq!(parse(b"\r\n\r\n"), Ok(Parsed::Incomplete { at_least: 16 }));
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0, 12, 1, 2]);
        assert_eq!(parse(&v2), Ok(Parsed::Incomplete { at_least: 28 }));
    }

    /// A version 2 header for `family` with `body` after the fixed part.
    fn v2_header(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn version_2_gives_both_ends_and_skips_its_tlvs() {
        let mut body = vec![203, 0, 113, 7, 192, 0, 2, 10];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        // A TLV (PP2_TYPE_AUTHORITY), which is skipped.
        body.extend_from_slice(&[0x02, 0, 3, b'a', b'.', b'b']);
        let mut bytes = v2_header(1, 0x11, &body);
        let len = bytes.len();
        bytes.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            whole(&bytes),
            (
                len,
                Some(Addresses {
                    source: addr("203.0.113.7:56324"),
                    destination: addr("192.0.2.10:443"),
                })
            )
        );

        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut body = [src.octets(), dst.octets()].concat();
        body.extend_from_slice(&[0, 80, 1, 187]);
        let (_, addresses) = whole(&v2_header(1, 0x21, &body));
        assert_eq!(addresses.unwrap().source, addr("[2001:db8::7]:80"));
        assert_eq!(addresses.unwrap().destination, addr("[2001:db8::1]:443"));
        // UDP has the same layout.
        assert!(whole(&v2_header(1, 0x22, &body)).1.is_some());
    }

    #[test]
    fn version_2_local_and_unspecified_keep_the_connections_own_ends() {
        assert_eq!(whole(&v2_header(0, 0x00, &[])), (16, None));
        // LOCAL ignores whatever addresses follow.
        assert_eq!(whole(&v2_header(0, 0x11, &[0; 12])), (28, None));
        assert_eq!(whole(&v2_header(1, 0x00, &[])), (16, None));
        assert_eq!(whole(&v2_header(1, 0x31, &[0; 216])), (232, None));
    }

    #[test]
    fn version_2_refuses_what_breaks_its_layout() {
        assert_eq!(
            parse(&v2_header(1, 0x11, &[0; 8])),
            Err(HeaderError::V2("shorter than its addresses"))
        );
        assert_eq!(
            parse(&v2_header(2, 0x11, &[0; 12])),
            Err(HeaderError::V2("the command must be LOCAL or PROXY"))
        );
        assert_eq!(
            parse(&v2_header(1, 0x41, &[0; 12])),
            Err(HeaderError::V2("unknown address family"))
        );
        let mut v1_version = v2_header(1, 0x11, &[0; 12]);
        v1_version[12] = 0x11;
        assert_eq!(
            parse(&v1_version),
            Err(HeaderError::V2("the version must be 2"))
        );
    }

    /// Whatever arrives, the parser does not panic and a whole header is within the bytes
    /// given; every prefix of a valid header waits for more without claiming a byte past the
    /// header, since the listener consumes what it is told belongs to it.
    #[test]
    fn prefixes_and_mutations_of_headers_are_taken_safely() {
        let mut v2 = vec![203, 0, 113, 7, 192, 0, 2, 10, 0xdc, 0x04, 0x01, 0xbb];
        v2.extend_from_slice(&[0x02, 0, 3, b'a', b'.', b'b']);
        let valid: [Vec<u8>; 3] = [
            b"PROXY TCP4 203.0.113.7 192.0.2.10 56324 443\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n".to_vec(),
            v2_header(1, 0x11, &v2),
        ];
        let check = |bytes: &[u8]| {
            if let Ok(Parsed::Header { len, .. }) = parse(bytes) {
                assert!(len <= bytes.len(), "{bytes:?}");
            }
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for header in &valid {
            for end in 0..header.len() {
                let waits = match parse(&header[..end]) {
                    Ok(Parsed::Incomplete { at_least }) => {
                        at_least <= header.len() && (end == 0 || at_least > 0)
                    }
                    _ => false,
                };
                assert!(waits, "the first {end} bytes of {header:?}");
            }
            for _ in 0..20_000 {
                let mut bytes = header.clone();
                for _ in 0..rng.usize(1..4) {
                    match rng.u8(0..3) {
                        0 => {
                            let i = rng.usize(..bytes.len());
                            bytes[i] = rng.u8(..);
                        }
                        1 => {
                            let i = rng.usize(..=bytes.len());
                            bytes.insert(i, rng.u8(..));
                        }
                        _ if bytes.len() > 1 => {
                            bytes.remove(rng.usize(..bytes.len()));
                        }
                        _ => {}
                    }
                }
                check(&bytes);
                let cut = rng.usize(..=bytes.len());
                check(&bytes[..cut]);
            }
        }
    }
}
