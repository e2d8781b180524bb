//! RFC 8441's extended CONNECT (a WebSocket over an HTTP/2 stream) as the HTTP/1.1 upgrade it
//! stands for, and the upgrade's answer as the HTTP/2 client takes it. Envoy's HTTP/2 codec
//! makes the same two changes, so that routes, filters and an HTTP/1.1 upstream see an
//! ordinary upgrade.

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

/// The extended CONNECT's fields made those of an HTTP/1.1 upgrade to `protocol` (the caller
/// makes the method `GET`): `Connection: upgrade` and `Upgrade`, and for a WebSocket a
/// `Sec-WebSocket-Key`, which an HTTP/2 client does not send (RFC 8441 §5) and an HTTP/1.1
/// server requires (RFC 6455 §4.2.1).
pub fn as_upgrade(headers: &mut HeaderMap, protocol: HeaderValue, rng: &mut fastrand::Rng) {
    let websocket = protocol.as_bytes().eq_ignore_ascii_case(b"websocket");
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
    if websocket && !headers.contains_key(header::SEC_WEBSOCKET_KEY) {
        headers.insert(header::SEC_WEBSOCKET_KEY, websocket_key(rng));
    }
}

/// The upstream's `101 Switching Protocols` as the answer to an extended CONNECT: `200`,
/// without the HTTP/1.1 handshake's `Upgrade` and `Sec-WebSocket-Accept` (the key it
/// answers was the gateway's). Any other status stays as it is.
pub fn answer(status: &mut StatusCode, headers: &mut HeaderMap) {
    if *status == StatusCode::SWITCHING_PROTOCOLS {
        *status = StatusCode::OK;
        headers.remove(header::UPGRADE);
        headers.remove(header::CONNECTION);
        headers.remove(header::SEC_WEBSOCKET_ACCEPT);
    }
}

/// A WebSocket handshake key: 16 random bytes in base64 (RFC 6455 §4.1).
fn websocket_key(rng: &mut fastrand::Rng) -> HeaderValue {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = rng.u128(..).to_be_bytes();
    let mut out = [b'='; 24];
    // Five whole groups of three bytes, then the last byte alone (two digits and "==").
    for (i, group) in bytes.chunks(3).enumerate() {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (k, b)| n | u32::from(*b) << (16 - 8 * k));
        let digits = if group.len() == 3 { 4 } else { 2 };
        for d in 0..digits {
            out[4 * i + d] = ALPHABET[(n >> (18 - 6 * d) & 63) as usize];
        }
    }
    HeaderValue::from_bytes(&out).expect("base64 digits are valid header bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_websocket_gets_the_handshake_an_http1_server_requires() {
        let mut h = HeaderMap::new();
        h.insert("sec-websocket-version", HeaderValue::from_static("13"));
        let mut rng = fastrand::Rng::with_seed(3);
        as_upgrade(&mut h, HeaderValue::from_static("websocket"), &mut rng);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        let key = h["sec-websocket-key"].to_str().unwrap();
        assert_eq!(key.len(), 24);
        assert!(key.ends_with("=="), "{key}");
        // Base64 of 16 bytes: every digit but the padding from the alphabet.
        assert!(
            key[..22]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        );
        let other = {
            let mut h = HeaderMap::new();
            as_upgrade(&mut h, HeaderValue::from_static("websocket"), &mut rng);
            h["sec-websocket-key"].clone()
        };
        assert_ne!(h["sec-websocket-key"], other);
    }

    #[test]
    fn the_key_is_the_base64_of_the_random_bytes() {
        let mut a = fastrand::Rng::with_seed(9);
        let mut b = a.clone();
        let bytes = b.u128(..).to_be_bytes();
        // The reference: the plain bit-by-bit reading of RFC 4648.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bits: String = bytes.iter().map(|b| format!("{b:08b}")).collect();
        let mut expected: String = bits
            .as_bytes()
            .chunks(6)
            .map(|c| {
                let mut s = String::from_utf8(c.to_vec()).unwrap();
                while s.len() < 6 {
                    s.push('0');
                }
                alphabet.as_bytes()[usize::from_str_radix(&s, 2).unwrap()] as char
            })
            .collect();
        expected.push_str("==");
        assert_eq!(websocket_key(&mut a), expected.as_str());
    }

    #[test]
    fn other_protocols_and_a_client_key_are_left_alone() {
        let mut h = HeaderMap::new();
        let mut rng = fastrand::Rng::with_seed(1);
        as_upgrade(&mut h, HeaderValue::from_static("connect-udp"), &mut rng);
        assert_eq!(h["upgrade"], "connect-udp");
        assert!(!h.contains_key("sec-websocket-key"));
        let mut h = HeaderMap::new();
        h.insert("sec-websocket-key", HeaderValue::from_static("given"));
        as_upgrade(&mut h, HeaderValue::from_static("WebSocket"), &mut rng);
        assert_eq!(h["sec-websocket-key"], "given");
    }

    #[test]
    fn a_101_becomes_200_and_anything_else_stays() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("sec-websocket-accept", HeaderValue::from_static("x"));
        h.insert("sec-websocket-protocol", HeaderValue::from_static("chat"));
        let mut status = StatusCode::SWITCHING_PROTOCOLS;
        answer(&mut status, &mut h);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h.len(), 1);
        assert_eq!(h["sec-websocket-protocol"], "chat");
        let mut status = StatusCode::FORBIDDEN;
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        answer(&mut status, &mut h);
        assert_eq!((status, h.len()), (StatusCode::FORBIDDEN, 1));
    }
}
