//! Request heads out, response heads in: the byte-level half of the direct HTTP/1.1 client.
//! No I/O here, so every rule (framing, keep-alive, informational responses) is tested on
//! bytes alone.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};

use super::Error;

/// Most header fields in a response head: hyper's limit, so that a response does not pass on
/// one client path and fail on the other.
pub(super) const MAX_HEADERS: usize = 100;

/// Most bytes in a response head, for the same reason (hyper's default read buffer limit).
pub(super) const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// Writes `req`'s head as HTTP/1.1 into `out` (cleared first): `host` first when `req`'s own
/// map names none, then its own fields, then those of `shared` whose names its own map does
/// not hold (its own fields override them). The body is known to be empty, so a
/// `Transfer-Encoding` the client sent is left out, as hyper does: it would announce a
/// chunked body that never comes.
pub(super) fn encode_request<B>(
    req: &Request<B>,
    shared: Option<&HeaderMap>,
    host: Option<&HeaderValue>,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let own = req.headers();
    if let Some(host) = host
        && !holds(own, &HOST)
    {
        field(out, &HOST, host);
    }
    for (name, value) in own {
        field(out, name, value);
    }
    // Usually the own map is empty (the filtered request's `Host` comes separately).
    let overridden = !own.is_empty();
    for (name, value) in shared.into_iter().flatten() {
        if !overridden || !holds(own, name) {
            field(out, name, value);
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[inline]
fn field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    if name == TRANSFER_ENCODING {
        return;
    }
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Whether `map` has a field `name`. The maps asked are the gateway's own few fields (`Host`,
/// a trace context), where comparing names beats hashing one.
fn holds(map: &HeaderMap, name: &HeaderName) -> bool {
    if map.keys_len() <= 4 {
        map.keys().any(|k| k == name)
    } else {
        map.contains_key(name)
    }
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body: a response to HEAD, a 1xx, 204 or 304.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding, possibly with trailers.
    Chunked,
    /// Everything until the upstream closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    /// A reason phrase other than the status code's usual one, passed on as hyper does.
    pub(super) reason: Option<Bytes>,
    pub(super) framing: Framing,
    /// Whether the connection may carry another request after this response.
    pub(super) keep_alive: bool,
}

/// Parses a final response head at the start of `buf`, consuming it (and any informational
/// responses before it). `Ok(None)`: more bytes are needed.
pub(super) fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, Error> {
    loop {
        let Some(head) = parse_one(buf, method)? else {
            return Ok(None);
        };
        // 100 Continue, 103 Early Hints and the like are skipped, as hyper's client does; a
        // 101 is final (the caller decides what to make of it).
        if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        return Ok(Some(head));
    }
}

/// Where a header's value sits in the head: offsets, because the head's bytes are frozen
/// (and shared by every value) only once parsing no longer borrows them.
struct Field {
    name: HeaderName,
    value: (usize, usize),
}

fn parse_one(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, Error> {
    let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(Error::HeadTooLarge(MAX_HEAD_BYTES));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyHeaders(MAX_HEADERS)),
        Err(e) => return Err(Error::Invalid(e.to_string())),
    };
    let status = StatusCode::from_u16(res.code.unwrap_or(0))
        .map_err(|_| Error::Invalid("status code out of range".into()))?;
    let version = match res.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let reason = res
        .reason
        .filter(|r| !r.is_empty() && Some(*r) != status.canonical_reason())
        .map(|r| (r.as_ptr() as usize - buf.as_ptr() as usize, r.len()));
    let base = buf.as_ptr() as usize;
    // Built in place and drained below: `with_capacity` and `into_iter` would each copy the
    // inline array (≈ 800 bytes, two `memcpy`s per response).
    let mut fields = smallvec::SmallVec::<[Field; 16]>::new();
    for h in res.headers.iter() {
        let name = field_name(h.name.as_bytes())
            .map_err(|_| Error::Invalid(format!("invalid header name {:?}", h.name)))?;
        fields.push(Field {
            name,
            value: (h.value.as_ptr() as usize - base, h.value.len()),
        });
    }
    let head = buf.split_to(len).freeze();
    // Room for what the gateway adds (X-Request-Id, say) without growing the map.
    let mut headers = HeaderMap::with_capacity(fields.len() + 4);
    let mut seen = Seen::default();
    for f in fields.drain(..) {
        let (at, n) = f.value;
        // httparse has checked the value's bytes (visible ASCII, obs-text, tabs and spaces).
        let value = HeaderValue::from_maybe_shared(head.slice(at..at + n))
            .map_err(|_| Error::Invalid(format!("invalid value in header {}", f.name)))?;
        // Hop-by-hop fields that name nothing else are left out here: the gateway strips them
        // from every response (RFC 9110 §7.6.1), and removing a field from the map costs more
        // than the rest of its parse (`Connection: keep-alive` is in nearly every response).
        if seen.note(&f.name, &value) == Hop::Plain {
            continue;
        }
        headers.append(f.name, value);
    }
    let (framing, keep_alive) = framing(status, version, method, &seen, &mut headers)?;
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        reason: reason.map(|(at, n)| head.slice(at..at + n)),
        framing,
        keep_alive,
    }))
}

/// A field name, the ones most responses carry found by comparing bytes in the two spellings
/// servers send (`HeaderName::from_bytes` lower-cases and matches every name, ≈ 120
/// instructions each); any other name or spelling goes the long way to the same result.
fn field_name(raw: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    use http::header::{CACHE_CONTROL, CONTENT_TYPE, DATE, ETAG, LAST_MODIFIED, SERVER, VARY};
    let known = match raw {
        b"Date" | b"date" => DATE,
        b"Server" | b"server" => SERVER,
        b"Content-Type" | b"content-type" => CONTENT_TYPE,
        b"Content-Length" | b"content-length" => CONTENT_LENGTH,
        b"Connection" | b"connection" => CONNECTION,
        b"Transfer-Encoding" | b"transfer-encoding" => TRANSFER_ENCODING,
        b"Cache-Control" | b"cache-control" => CACHE_CONTROL,
        b"Last-Modified" | b"last-modified" => LAST_MODIFIED,
        b"ETag" | b"etag" => ETAG,
        b"Vary" | b"vary" => VARY,
        _ => return HeaderName::from_bytes(raw),
    };
    Ok(known)
}

/// What the framing rules need to know of the header fields, noted as they are read: looking
/// them up in the map afterwards costs more than the rest of the parse.
#[derive(Default)]
struct Seen {
    close: bool,
    keep_alive: bool,
    transfer_encoding: bool,
    /// `Content-Length`: `Err` when a value is not a number or two disagree.
    length: Option<Result<u64, ()>>,
}

/// What a field is to the hop-by-hop rules: [`Hop::Plain`] is a `Connection` that only says
/// `keep-alive` or `close`, or a `Keep-Alive`: hop-by-hop and naming no other field, so
/// leaving it out of the map is all that stripping it would do.
#[derive(Debug, PartialEq, Eq)]
enum Hop {
    Plain,
    Other,
}

impl Seen {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> Hop {
        if name == CONNECTION {
            let mut names_fields = false;
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                let close = token.eq_ignore_ascii_case(b"close");
                let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                self.close |= close;
                self.keep_alive |= keep_alive;
                names_fields |= !(close || keep_alive || token.is_empty());
            }
            if !names_fields {
                return Hop::Plain;
            }
        } else if name.as_str() == "keep-alive" {
            return Hop::Plain;
        } else if name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if name == CONTENT_LENGTH {
            // It may be repeated (or listed) only with one value (RFC 9110 §8.6).
            for part in value.as_bytes().split(|b| *b == b',') {
                let n = decimal(part.trim_ascii());
                self.length = Some(match self.length {
                    Some(Ok(before)) if n != Some(before) => Err(()),
                    Some(Err(())) => Err(()),
                    _ => n.ok_or(()),
                });
            }
        }
        Hop::Other
    }
}

/// Digits only (no sign, no spaces), within u64.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

/// The body's framing and whether the connection stays open after it (RFC 9112 §6.3, §9.3).
fn framing(
    status: StatusCode,
    version: Version,
    method: &Method,
    seen: &Seen,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), Error> {
    let mut keep_alive = match version {
        Version::HTTP_10 => seen.keep_alive,
        _ => !seen.close,
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // The connection now speaks another protocol: it never goes back to the pool.
        return Ok((Framing::Empty, false));
    }
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, keep_alive));
    }
    if seen.transfer_encoding {
        // A length beside a transfer coding is a smuggling vector: the coding wins, and the
        // length must not travel on (RFC 9112 §6.3 item 3).
        headers.remove(CONTENT_LENGTH);
        return Ok(if version == Version::HTTP_11 && chunked_last(headers) {
            (Framing::Chunked, keep_alive)
        } else {
            // Any other coding (or one on HTTP/1.0) is delimited by the close.
            keep_alive = false;
            (Framing::Close, keep_alive)
        });
    }
    match seen.length {
        Some(Ok(n)) => Ok((Framing::Length(n), keep_alive)),
        Some(Err(())) => Err(Error::Invalid(
            "invalid or conflicting Content-Length".into(),
        )),
        None => Ok((Framing::Close, false)),
    }
}

/// Whether the last transfer coding is `chunked`.
fn chunked_last(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], method: Method) -> Result<Option<ResponseHead>, Error> {
        parse_response(&mut BytesMut::from(bytes), &method)
    }

    fn head(bytes: &[u8]) -> ResponseHead {
        parse(bytes, Method::GET).unwrap().unwrap()
    }

    #[test]
    fn a_request_head_is_written_in_origin_form_without_transfer_encoding() {
        let req = Request::get("/a/b?c=d")
            .header("host", "up")
            .header("transfer-encoding", "chunked")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(())
            .unwrap();
        let mut out = b"left over".to_vec();
        encode_request(&req, None, None, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a/b?c=d HTTP/1.1\r\nhost: up\r\nx-two: 1\r\nx-two: 2\r\n\r\n"
        );
    }

    #[test]
    fn shared_fields_follow_the_own_ones_which_override_them() {
        let req = Request::get("/")
            .header("host", "up")
            .header("traceparent", "00-ours")
            .body(())
            .unwrap();
        let mut shared = HeaderMap::new();
        shared.insert("x-a", HeaderValue::from_static("1"));
        shared.insert("traceparent", HeaderValue::from_static("00-clients"));
        shared.append("x-b", HeaderValue::from_static("2"));
        shared.append("x-b", HeaderValue::from_static("3"));
        shared.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let mut out = Vec::new();
        encode_request(&req, Some(&shared), None, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nhost: up\r\ntraceparent: 00-ours\r\n\
             x-a: 1\r\nx-b: 2\r\nx-b: 3\r\n\r\n"
        );
    }

    #[test]
    fn a_separate_host_goes_first_unless_the_own_fields_name_one() {
        let shared = HeaderMap::from_iter([(
            HeaderName::from_static("x-a"),
            HeaderValue::from_static("1"),
        )]);
        let host = HeaderValue::from_static("client.example");
        let mut out = Vec::new();
        let req = Request::get("/").body(()).unwrap();
        encode_request(&req, Some(&shared), Some(&host), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nhost: client.example\r\nx-a: 1\r\n\r\n"
        );
        // A route's host rewrite puts its own.
        let mut out = Vec::new();
        let req = Request::get("/").header("host", "up").body(()).unwrap();
        encode_request(&req, Some(&shared), Some(&host), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nhost: up\r\nx-a: 1\r\n\r\n"
        );
    }

    #[test]
    fn a_response_head_is_parsed_and_consumed_leaving_the_body() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"[..]);
        let h = parse_response(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert!(h.reason.is_none());
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn an_incomplete_head_asks_for_more_and_consumes_nothing() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(parse_response(&mut buf, &Method::GET).unwrap().is_none());
        assert_eq!(buf.len(), 27);
    }

    #[test]
    fn informational_responses_are_skipped_but_101_is_final() {
        let h = head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(h.status, StatusCode::NO_CONTENT);
        assert!(h.headers.is_empty());
        let h = head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n");
        assert_eq!(h.status, StatusCode::SWITCHING_PROTOCOLS);
        assert!(!h.keep_alive);
    }

    #[test]
    fn bodiless_responses_have_no_body_whatever_their_length_says() {
        let h = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        assert_eq!(h.headers["content-length"], "9");
        assert_eq!(
            head(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").framing,
            Framing::Empty
        );
    }

    #[test]
    fn a_transfer_coding_wins_over_a_length_and_the_length_is_dropped() {
        let h = head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.headers.contains_key("content-length"));
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.keep_alive);
    }

    #[test]
    fn a_body_without_framing_runs_to_the_close() {
        let h = head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.keep_alive);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(
            !head(b"HTTP/1.1 200 OK\r\nConnection: foo, Close\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
        assert!(!head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        let h = head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(h.keep_alive);
        assert_eq!(h.version, Version::HTTP_10);
    }

    #[test]
    fn hop_by_hop_fields_that_name_nothing_stay_out_of_the_map() {
        let h = head(
            b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\n\
              Content-Length: 0\r\n\r\n",
        );
        assert!(h.keep_alive);
        assert!(!h.headers.contains_key(CONNECTION));
        assert!(!h.headers.contains_key("keep-alive"));
        assert_eq!(h.headers.len(), 1);
        // A `Connection` that names a field stays for the stripping that removes both.
        let h = head(
            b"HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nx-hop: 1\r\n\
              Content-Length: 0\r\n\r\n",
        );
        assert!(!h.keep_alive);
        assert_eq!(h.headers[CONNECTION], "close, x-hop");
        assert_eq!(h.headers["x-hop"], "1");
        let h = head(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(h.headers[CONNECTION], "Upgrade");
    }

    #[test]
    fn repeated_lengths_must_agree() {
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\nContent-Length: 4\r\n\r\n").framing,
            Framing::Length(4)
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: +4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad, Method::GET), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_unusual_reason_phrase_is_kept() {
        assert_eq!(
            head(b"HTTP/1.1 200 Fine\r\nContent-Length: 0\r\n\r\n")
                .reason
                .unwrap(),
            "Fine"
        );
        assert!(
            head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .reason
                .is_none()
        );
    }

    #[test]
    fn common_names_in_either_spelling_are_the_standard_names() {
        for raw in [
            "Date",
            "server",
            "Content-Type",
            "content-length",
            "Connection",
            "Transfer-Encoding",
            "cache-control",
            "Last-Modified",
            "ETag",
            "vary",
            "CONTENT-TYPE",
            "X-Custom",
        ] {
            assert_eq!(
                field_name(raw.as_bytes()).unwrap(),
                HeaderName::from_bytes(raw.as_bytes()).unwrap(),
                "{raw}"
            );
        }
        assert!(field_name(b"bad name").is_err());
        assert!(field_name(b"").is_err());
    }

    #[test]
    fn garbage_and_oversized_heads_are_errors() {
        assert!(matches!(
            parse(b"SSH-2.0-OpenSSH\r\n\r\n", Method::GET),
            Err(Error::Invalid(_))
        ));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&many, Method::GET),
            Err(Error::TooManyHeaders(_))
        ));
        let mut big = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 1, b'a');
        assert!(matches!(
            parse(&big, Method::GET),
            Err(Error::HeadTooLarge(_))
        ));
    }
}
