//! Failures as the client sees them: the right status and a JSON body, and malformed
//! requests never reach the upstream.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use rustygate_tests::client::{self, Seen, get, h2c, raw, raw_upload, send};
use rustygate_tests::upstream::{Upstream, text};
use rustygate_tests::{TestGateway, simple_config, with_listener};

fn assert_json_error(seen: &rustygate_tests::client::Seen, status: u16, code: &str) {
    assert_eq!(seen.status.as_u16(), status, "{:?}", seen.body);
    assert_eq!(seen.header("content-type"), Some("application/json"));
    let body = seen.json();
    assert_eq!(body["status"], status);
    assert_eq!(body["error"], code);
    assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn refused_upstream_is_502() {
    let (_port, addr) = rustygate_tests::refusing_address();
    let gw = TestGateway::start(&simple_config(addr, "")).await;
    let seen = get(&gw.url("/x")).await;
    assert_json_error(&seen, 502, "connect_failure");
}

/// A gRPC call whose content type has a `+proto` suffix, which still makes it gRPC.
fn grpc_call(gw: &TestGateway, path: &str) -> Request<Full<Bytes>> {
    let mut req = client::grpc_call(&gw.url(path));
    req.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc+proto"),
    );
    req
}

fn assert_trailers_only(seen: &Seen, grpc_status: &str, message_starts: &str) {
    assert_eq!(seen.status, StatusCode::OK, "{:?}", seen.body);
    assert_eq!(seen.header("content-type"), Some("application/grpc"));
    assert_eq!(seen.header("grpc-status"), Some(grpc_status));
    let message = seen.header("grpc-message").unwrap_or_default();
    assert!(message.starts_with(message_starts), "{message}");
    assert!(seen.body.is_empty());
    assert!(seen.header("x-request-id").is_some());
}

/// A gRPC client reads failures from `grpc-status`, not from a JSON body: the gateway's own
/// errors reach it in gRPC's trailers-only form, as Envoy sends its local replies.
#[tokio::test]
async fn a_grpc_client_gets_gateway_errors_as_grpc_statuses() {
    let (_port, addr) = rustygate_tests::refusing_address();
    let yaml = simple_config(
        addr,
        "  - name: svc\n    match: { path: { prefix: /pkg.Svc/ } }\n    cluster: up\n",
    )
    .replace("  - name: all\n    cluster: up\n", "");
    let gw = TestGateway::start(&yaml).await;
    let client = h2c();
    let refused = send(&client, grpc_call(&gw, "/pkg.Svc/Call")).await;
    // 502 maps to UNAVAILABLE (14).
    assert_trailers_only(&refused, "14", "could not connect to upstream: ");
    let unrouted = send(&client, grpc_call(&gw, "/other.Svc/Call")).await;
    // 404 maps to UNIMPLEMENTED (12).
    assert_trailers_only(&unrouted, "12", "no route matched the request: ");
    // Anything else still gets the JSON error.
    let plain = send(
        &client,
        Request::post(gw.url("/pkg.Svc/Call"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await;
    assert_json_error(&plain, 502, "connect_failure");
}

#[tokio::test]
async fn upstream_that_resets_is_502() {
    // Accepts, reads the request, and closes without answering.
    let addr = rustygate_tests::upstream::canned(b"").await;
    let gw = TestGateway::start(&simple_config(addr, "")).await;
    let seen = get(&gw.url("/x")).await;
    assert_json_error(&seen, 502, "reset");
}

#[tokio::test]
async fn slow_upstream_is_504_at_the_route_timeout() {
    let up = Upstream::slow(Duration::from_secs(5));
    let yaml = simple_config(
        up.addr,
        "  - name: quick\n    match: { path: { prefix: /quick } }\n    cluster: up\n    timeout: 300ms\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let started = std::time::Instant::now();
    let seen = get(&gw.url("/quick")).await;
    let took = started.elapsed();
    assert_json_error(&seen, 504, "timeout");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "took {took:?}"
    );
}

#[tokio::test]
async fn a_route_timeout_of_zero_waits_as_long_as_the_upstream_takes() {
    // As in Envoy, `timeout: 0s` turns the route's timeout off (long polls, slow reports).
    let up = Upstream::slow(Duration::from_millis(600));
    let yaml = simple_config(
        up.addr,
        "  - name: patient\n    match: { path: { prefix: /patient } }\n    cluster: up\n    timeout: 0s\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let started = std::time::Instant::now();
    let seen = get(&gw.url("/patient")).await;
    assert_eq!(seen.status, 200, "{:?}", seen.body);
    assert_eq!(&seen.body[..], b"slow");
    assert!(started.elapsed() >= Duration::from_millis(600));

    // The head is still awaited no longer than the stream idle timeout: nothing moves then.
    let yaml = with_listener(&yaml, "    limits: { stream_idle_timeout: 300ms }\n");
    let gw = TestGateway::start(&yaml).await;
    let seen = get(&gw.url("/patient")).await;
    assert_json_error(&seen, 504, "timeout");
}

/// A request with both Content-Length and Transfer-Encoding is the classic smuggling vector.
/// hyper would frame it by the coding alone and drop the length (RFC 9112 §6.3 allows that);
/// Envoy refuses it, and so does the gateway: 400, nothing forwarded, and the connection
/// closed, so the bytes after it are never read as a request. The head may come in pieces.
#[tokio::test]
async fn conflicting_content_length_and_transfer_encoding_are_400_and_not_forwarded() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let smuggle = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    let started = std::time::Instant::now();
    let out = raw(gw.addr, smuggle, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the gateway must close the connection"
    );
    assert_eq!(
        out.matches("HTTP/1.1 ").count(),
        1,
        "exactly one response: {out}"
    );
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert!(out.contains("\r\nconnection: close\r\n"), "{out}");
    let body: serde_json::Value =
        serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).expect("a JSON error body");
    assert_eq!(body["error"], "bad_request");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("both Content-Length and Transfer-Encoding")),
        "{body}"
    );

    // In the other order, in other letter cases, and cut within both names across reads.
    let head = "POST /x HTTP/1.1\r\nhost: a\r\ntransfer-enc";
    let rest: [&[u8]; 3] = [
        b"oding: chunked\r\nCONTENT-",
        b"LENGTH: 4\r",
        b"\n\r\n0\r\n\r\n",
    ];
    let (out, _) = raw_upload(gw.addr, head, &rest, Duration::from_millis(30)).await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert_eq!(up.requests(), 0);

    // Either alone is forwarded, on connections that stay open.
    let chunked = Request::post(gw.url("/x"))
        .header("transfer-encoding", "chunked")
        .body(Full::new(Bytes::from_static(b"body")))
        .unwrap();
    let seen = send(&client::http1(), chunked).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("connection"), None);
    let sized = Request::post(gw.url("/x"))
        .body(Full::new(Bytes::from_static(b"body")))
        .unwrap();
    assert_eq!(send(&client::http1(), sized).await.status, 200);
    assert_eq!(up.requests(), 2);
}

/// Envoy's `allow_chunked_length`: such a request is framed by the coding, its length dropped,
/// and its connection closed after it, so the bytes after it are still never a request.
#[tokio::test]
async fn a_listener_may_let_both_framings_through_by_the_coding() {
    let up = Upstream::echo();
    let yaml = with_listener(
        &simple_config(up.addr, ""),
        "    allow_chunked_length: true\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let smuggle = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    let out = raw(gw.addr, smuggle, Duration::from_secs(5)).await;
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert!(out.contains("\r\nconnection: close\r\n"), "{out}");
    assert!(
        out.contains(r#""path":"/x""#) && out.contains(r#""body_len":0"#),
        "{out}"
    );
    assert!(!out.contains("/admin"), "{out}");
    assert!(!out.contains("content-length\":"), "{out}");
    assert_eq!(up.requests(), 1);
}

/// An answer read off the socket, as `raw` returns it, is the JSON error `code` with `status`,
/// naming its request id in the body and the header, and the connection closed after it.
fn assert_raw_json_error(out: &str, status: u16, code: &str) {
    let (head, body) = out
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("a whole answer: {out:?}"));
    assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{out}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\ncontent-type: application/json"), "{out}");
    assert!(head.contains("\r\nconnection: close"), "{out}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {}", body.len())),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(json["status"], status);
    assert_eq!(json["error"], code);
    let id = json["request_id"].as_str().unwrap();
    assert!(head.contains(&format!("\r\nx-request-id: {id}")), "{out}");
}

#[tokio::test]
async fn disagreeing_content_lengths_are_400_and_not_forwarded() {
    let up = Upstream::start(|_| async { text(StatusCode::OK, "forwarded") });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    for req in [
        &b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"[..],
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcde",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\nabcde",
        // A list in one field, even of one length, as hyper's parser refuses it.
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\nabcd",
    ] {
        let out = raw(gw.addr, req, Duration::from_secs(2)).await;
        assert_raw_json_error(&out, 400, "bad_request");
    }
    // The same length in two fields is one length (RFC 9110 §8.6).
    let req = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\nconnection: close\r\n\r\nabcd";
    let out = raw(gw.addr, req, Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(up.requests(), 1);
}

/// Sends each of `heads` on its own connection to a new gateway: each gets a JSON 400, none
/// is forwarded, and each is counted as a request that matched no route, as Envoy counts them.
async fn each_refused_with_400(heads: &[&[u8]]) -> (Upstream, TestGateway) {
    let up = Upstream::start(|_| async { text(StatusCode::OK, "forwarded") });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    for req in heads {
        let out = raw(gw.addr, req, Duration::from_secs(2)).await;
        assert_raw_json_error(&out, 400, "bad_request");
    }
    assert_eq!(up.requests(), 0);
    assert_counted(&gw, "400", heads.len() as u32).await;
    (up, gw)
}

#[tokio::test]
async fn invalid_header_bytes_are_400_and_not_forwarded() {
    each_refused_with_400(&[
        b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Ctl: a\x01b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Del: a\x7fb\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Cr: a\rb\r\n\r\n",
        // A folded line (obs-fold), which RFC 9112 §5.2 lets a server refuse.
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n",
        // A CR on its own before the request line, where empty lines may come.
        b"\rGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    ])
    .await;
}

#[tokio::test]
async fn malformed_request_lines_are_400_and_not_forwarded() {
    let (up, gw) = each_refused_with_400(&[
        b"GET /x HTTP/1.2\r\nHost: a\r\n\r\n",
        b"GET /x http/1.1\r\nHost: a\r\n\r\n",
        b"GET  /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"G@T /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x<y> HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET x/y HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x\xff HTTP/1.1\r\nHost: a\r\n\r\n",
        // Longer than hyper's first read, and refused by its parser within it.
        b"GET /search?q=hello world&page=2 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HEAD /x HTTP/1.1\xffHost: a\r\n\r\n",
    ])
    .await;
    // What http::Uri takes although it should be escaped, and an absolute target, go through.
    each_answered_200(
        &gw,
        &[
            b"GET /x/{\"a\"}?q={b} HTTP/1.1\r\nHost: a\r\nconnection: close\r\n\r\n",
            b"GET http://a/x HTTP/1.1\r\nHost: a\r\nconnection: close\r\n\r\n",
        ],
    )
    .await;
    assert_eq!(up.requests(), 2);
}

/// Sends each of `requests` on its own connection: each is answered 200.
async fn each_answered_200(gw: &TestGateway, requests: &[&[u8]]) {
    for req in requests {
        let out = raw(gw.addr, req, Duration::from_secs(2)).await;
        let status = out.split(' ').nth(1);
        assert_eq!(status, Some("200"), "{out}");
    }
}

/// RFC 9112 §3.2: a request with two `Host` fields (the gateway would route by one, the
/// upstream might read the other) and an HTTP/1.1 request that names no host are refused.
#[tokio::test]
async fn a_request_with_two_hosts_or_none_is_400() {
    // Well framed, they leave the connection open: these ask for it to close.
    let (up, gw) = each_refused_with_400(&[
        b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a.example\r\nhost: a.example\r\nConnection: close\r\n\r\n",
        b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
    ])
    .await;
    // HTTP/1.0 needs no host; an absolute target names it.
    each_answered_200(
        &gw,
        &[
            b"GET /x HTTP/1.0\r\n\r\n",
            b"GET http://a.example/x HTTP/1.1\r\nconnection: close\r\n\r\n",
        ],
    )
    .await;
    assert_eq!(up.requests(), 2);
}

/// A gateway whose listener has `limits` (a YAML flow mapping's entries), in front of an
/// upstream that answers 200.
async fn with_limits(limits: &str) -> (Upstream, TestGateway) {
    let up = Upstream::start(|_| async { text(StatusCode::OK, "forwarded") });
    let yaml = with_listener(
        &simple_config(up.addr, ""),
        &format!("    limits: {{ {limits} }}\n"),
    );
    let gw = TestGateway::start(&yaml).await;
    (up, gw)
}

/// A target longer than the HTTP stack takes, under a listener whose head limit allows it.
#[tokio::test]
async fn a_target_over_64_kib_is_431() {
    let (up, gw) = with_limits("max_header_bytes: 131072").await;
    let long = format!("GET /x{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70_000));
    let out = raw(gw.addr, long.as_bytes(), Duration::from_secs(2)).await;
    assert_raw_json_error(&out, 431, "headers_too_large");
    assert_eq!(up.requests(), 0);
}

/// As Envoy: a transfer coding other than `chunked` alone is 501, and HTTP/1.0 has none.
#[tokio::test]
async fn transfer_codings_other_than_chunked_are_refused() {
    let up = Upstream::start(|_| async { text(StatusCode::OK, "forwarded") });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    for coding in ["gzip", "gzip, chunked", "chunked, chunked", "identity"] {
        let req =
            format!("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {coding}\r\n\r\n0\r\n\r\n");
        let out = raw(gw.addr, req.as_bytes(), Duration::from_secs(2)).await;
        assert_raw_json_error(&out, 501, "not_implemented");
    }
    let req = b"POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let out = raw(gw.addr, req, Duration::from_secs(2)).await;
    assert_raw_json_error(&out, 400, "bad_request");
    assert_eq!(up.requests(), 0);
    assert_counted(&gw, "501", 4).await;
    // `chunked` in any case goes through.
    let req = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let out = raw(gw.addr, req, Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(up.requests(), 1);
}

/// A connection to `gw` on which `request` has been sent and answered 200, kept open.
async fn answered_once(gw: &TestGateway, request: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let first = read_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200 "), "{first}");
    s
}

/// A bad head that follows a good request on a kept-alive connection is answered after that
/// request's response, which arrives whole.
#[tokio::test]
async fn a_bad_head_after_a_good_request_is_answered_on_the_same_connection() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start(|_| async { text(StatusCode::OK, "forwarded") });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let mut s = answered_once(&gw, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    // Its head arrives in two reads, the bad byte in the second.
    s.write_all(b"GET /y HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"X: \x00\r\n\r\n").await.unwrap();
    assert_raw_json_error(&read_to_close(&mut s).await, 400, "bad_request");
    assert_eq!(up.requests(), 1);
}

/// Reads what the gateway sends on `s` until it closes the connection, which it must within 5 s.
async fn read_to_close(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("the connection closes after the answer")
        .unwrap();
    out
}

/// Reads one response with a `content-length` from `s`, whole, and not a byte more: a
/// pipelined response behind it may already be in the socket (on a busy machine both often
/// are before the client reads), and is the next call's.
async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let within = Duration::from_secs(5);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(within, s.read(&mut byte))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let len: usize = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .expect("a content-length")
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    tokio::time::timeout(within, s.read_exact(&mut body))
        .await
        .expect("the body in time")
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    text + &String::from_utf8_lossy(&body)
}

/// An upstream that echoes requests (as JSON), answering `/slow` after `delay`.
fn echo_with_slow_path(delay: Duration) -> Upstream {
    Upstream::start(move |req| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(delay).await;
        }
        rustygate_tests::upstream::echo_response(req).await
    })
}

/// A pipelined request whose body arrives before the request before it is answered, but is
/// read only after: its bytes, which would be a bad head, are its body, and it is forwarded
/// whole.
#[tokio::test]
async fn a_pipelined_body_arriving_late_is_a_body() {
    use tokio::io::AsyncWriteExt;
    // The first answer waits, so the second request's last bytes are in the socket, unread,
    // when it comes.
    let up = echo_with_slow_path(Duration::from_millis(300));
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 21\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // hyper reads these for the second request before its handler first runs.
    s.write_all(b"GET / HTTP/1.1\r\nX:\x01\n\n").await.unwrap();
    let first = read_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200 "), "{first}");
    let second = read_response(&mut s).await;
    assert!(second.starts_with("HTTP/1.1 200 "), "{second}");
    assert!(second.contains(r#""body_len":21"#), "{second}");
    assert_eq!(up.requests(), 2);
}

/// A request that asks to switch protocols and is answered without a switch (`h2c`, which the
/// gateway ignores, as `curl --http2` sends it over cleartext) leaves the connection's later
/// heads checked as before.
#[tokio::test]
async fn a_bad_head_after_an_upgrade_not_taken_is_still_answered_in_json() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::echo();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let mut s = answered_once(&gw, b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n").await;
    s.write_all(b"GET /b HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n")
        .await
        .unwrap();
    assert_raw_json_error(&read_to_close(&mut s).await, 400, "bad_request");
    assert_eq!(up.requests(), 1);
}

/// A bad head pipelined behind requests still in flight is answered in JSON once they have
/// been, and their responses arrive whole and in order before it.
#[tokio::test]
async fn a_bad_head_pipelined_behind_requests_in_flight_is_answered_after_them() {
    let up = Upstream::start(|req| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(300)).await;
            text(StatusCode::OK, "slow one")
        } else {
            text(StatusCode::OK, "quick one")
        }
    });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    for pipelined in [
        &b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\nX: \x01\r\n\r\n"[..],
        // Behind a request with a body, and with a bad request line.
        b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.2\r\n\r\n",
        // Behind a chunked body with trailers.
        b"POST /slow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: v\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.2\r\n\r\n",
        // Behind one whose trailer line begins with a bare LF, which the HTTP parser reads as
        // part of that line: the body ends at the empty line after it.
        b"POST /slow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\nX-T: v\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.2\r\n\r\n",
    ] {
        let out = raw(gw.addr, pipelined, Duration::from_secs(3)).await;
        let refusal = out.find("HTTP/1.1 400 ").unwrap_or_else(|| panic!("no answer to the bad head: {out}"));
        let (answers, refused) = out.split_at(refusal);
        let first = answers.find("slow one").expect("the first response");
        let second = answers.find("quick one").expect("the second response");
        assert!(answers.starts_with("HTTP/1.1 200 ") && first < second, "{out}");
        assert!(answers.ends_with("quick one"), "{out}");
        assert_raw_json_error(refused, 400, "bad_request");
    }
    assert_eq!(up.requests(), 8);
}

/// What follows a request that may switch protocols waits for its answer (it would be
/// tunnelled after a switch): answered without one, a bad head after it gets JSON too.
#[tokio::test]
async fn a_bad_head_behind_an_upgrade_answered_without_a_switch_is_answered_in_json() {
    let up = Upstream::start(|_| async { text(StatusCode::OK, "no switch") });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let out = raw(
        gw.addr,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /c HTTP/1.2\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    let refusal = out
        .find("HTTP/1.1 400 ")
        .unwrap_or_else(|| panic!("no answer to the bad head: {out}"));
    let (answer, refused) = out.split_at(refusal);
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("no switch"),
        "{out}"
    );
    assert_raw_json_error(refused, 400, "bad_request");
    assert_eq!(up.requests(), 1);
}

/// A request head over `max_header_bytes` is refused whatever the limit, below hyper's own
/// smallest read buffer (8 KiB) too, and so is one with more fields than `max_headers`.
#[tokio::test]
async fn heads_over_the_listeners_limits_are_431() {
    let (up, gw) = with_limits("max_header_bytes: 2048, max_headers: 5").await;
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(3000)
    );
    let out = raw(gw.addr, big.as_bytes(), Duration::from_secs(2)).await;
    assert_raw_json_error(&out, 431, "headers_too_large");
    let many = "GET /x HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
    let out = raw(gw.addr, many.as_bytes(), Duration::from_secs(2)).await;
    assert_raw_json_error(&out, 431, "headers_too_large");
    // Within the limits (five fields, under 2 KiB), a request goes through.
    let fits = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nX-Big: {}\r\nconnection: close\r\n\r\n",
        "a".repeat(1800)
    );
    let out = raw(gw.addr, fits.as_bytes(), Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(up.requests(), 1);
    assert_counted(&gw, "431", 2).await;
}

/// Whether /metrics counts `n` requests answered `status` that matched no route.
async fn assert_counted(gw: &TestGateway, status: &str, n: u32) {
    let line = format!(r#"rustygate_requests_total{{route="none",status="{status}"}} {n}"#);
    gw.metrics_with(&line).await;
}

#[tokio::test]
async fn oversized_request_head_is_431() {
    let (up, gw) = with_limits("max_header_bytes: 8192").await;
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let out = raw(gw.addr, big.as_bytes(), Duration::from_secs(2)).await;
    assert_raw_json_error(&out, 431, "headers_too_large");
    assert_eq!(up.requests(), 0);
    assert_counted(&gw, "431", 1).await;
}

/// The same pipelined requests, their bytes split in two at every point and the second part
/// sent at once or a little later: however the reads fall (within a request line, a head, the
/// body that looks like a bad head), both requests are answered, the body forwarded whole.
#[tokio::test]
async fn pipelined_requests_split_anywhere_are_both_answered() {
    use tokio::io::AsyncWriteExt;
    let up = echo_with_slow_path(Duration::from_millis(20));
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let stream: &[u8] = b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 21\r\n\r\nGET / HTTP/1.1\r\nX:\x01\n\n";
    for split in 1..stream.len() {
        for gap in [0, 3] {
            let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(&stream[..split]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(gap)).await;
            s.write_all(&stream[split..]).await.unwrap();
            let first = read_response(&mut s).await;
            assert!(first.starts_with("HTTP/1.1 200 "), "split {split}: {first}");
            let second = read_response(&mut s).await;
            assert!(
                second.starts_with("HTTP/1.1 200 "),
                "split {split}: {second}"
            );
            assert!(
                second.contains(r#""body_len":21"#),
                "split {split}: {second}"
            );
        }
    }
    assert_eq!(up.requests(), 2 * 2 * (stream.len() - 1));
}
