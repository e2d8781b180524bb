//! Connection limits: idle keep-alive connections are closed, slow request heads are cut off,
//! and connections beyond the cap are refused at accept.

use std::time::{Duration, Instant};

use http::StatusCode;
use rustygate_tests::client::{get, raw, raw_upload};
use rustygate_tests::upstream::{Upstream, text};
use rustygate_tests::{TestGateway, simple_config, with_listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn with_limits(up: std::net::SocketAddr, limits: &str) -> String {
    with_listener(&simple_config(up, ""), &format!("    limits:\n{limits}"))
}

/// The idle timeout counts from the end of the last request, even when the connection's
/// watchdog last looked while the request's head was still awaited (it then slept for the
/// header timeout, 10 s by default).
#[tokio::test]
async fn idle_timeout_runs_from_the_last_request_however_slow_its_head() {
    let up = Upstream::start(|_| async { text(StatusCode::OK, "ok") });
    let gw = TestGateway::start(&with_limits(up.addr, "      idle_timeout: 300ms\n")).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Long enough for the watchdog to look once at a connection with no head yet.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = answered_then_idle_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(
        idle >= Duration::from_millis(250) && idle < Duration::from_secs(2),
        "closed after {idle:?}"
    );
}

/// Sends a request on `s`, checks it is answered 200, and waits (at most `wait`) for the
/// gateway to close the idle connection; how long after the answer it did.
async fn answered_then_idle_until_closed(
    s: &mut tokio::net::TcpStream,
    wait: Duration,
) -> Duration {
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    // The server closes: read returns 0 (EOF).
    let n = tokio::time::timeout(wait, s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap();
    assert_eq!(n, 0);
    idle_from.elapsed()
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let up = Upstream::start(|_| async { text(StatusCode::OK, "ok") });
    let gw = TestGateway::start(&with_limits(up.addr, "      idle_timeout: 300ms\n")).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let idle = answered_then_idle_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(
        idle >= Duration::from_millis(250) && idle < Duration::from_secs(2),
        "closed after {idle:?}"
    );

    // `0s` keeps an idle connection open, as in Envoy.
    let gw = TestGateway::start(&with_limits(
        up.addr,
        "      idle_timeout: 0s
",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let quiet = tokio::time::timeout(Duration::from_millis(600), s.read(&mut buf)).await;
        assert!(quiet.is_err(), "the connection was not kept: {quiet:?}");
    }
}

#[tokio::test]
async fn slow_request_head_is_cut_off() {
    let up = Upstream::start(|_| async { text(StatusCode::OK, "ok") });
    let gw = TestGateway::start(&with_limits(up.addr, "      header_read_timeout: 300ms\n")).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the head: the gateway must give up on us, and says so as Envoy does.
    let (answer, took) = answered_then_closed(&mut s).await;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "closed after {took:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["error"], "request_timeout");
    assert_eq!(json["status"], 408);
    let id = json["request_id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "a request id: {id}");
    assert!(
        answer.contains(&format!("x-request-id: {id}\r\n")),
        "{answer}"
    );
    assert_eq!(up.requests(), 0);
    // Counted as a request that matched no route, as Envoy counts it.
    gw.metrics_with(r#"rustygate_requests_total{route="none",status="408"} 1"#)
        .await;
}

/// What the gateway sends before it closes the connection, and when it closed.
async fn answered_then_closed(s: &mut tokio::net::TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
        .await
        .expect("closed in time")
        .unwrap();
    (
        String::from_utf8_lossy(&buf).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_keep_alive_connection_waiting_for_its_next_request_is_idle_not_slow() {
    let up = Upstream::start(|_| async { text(StatusCode::OK, "ok") });
    // The wait between two requests is the idle timeout's to end, not the header timeout's
    // (hyper's header timer counted it, and closed such connections after 300 ms here).
    for idle in ["2s", "0s"] {
        let gw = TestGateway::start(&with_limits(
            up.addr,
            &format!("      header_read_timeout: 300ms\n      idle_timeout: {idle}\n"),
        ))
        .await;
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let mut buf = vec![0u8; 4096];
        for _ in 0..2 {
            s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
                "idle_timeout {idle}: {:?}",
                String::from_utf8_lossy(&buf[..n])
            );
            let quiet = tokio::time::timeout(Duration::from_millis(900), s.read(&mut buf)).await;
            assert!(
                quiet.is_err(),
                "idle_timeout {idle}: closed while waiting: {quiet:?}"
            );
        }
        // A head that starts and stalls is still cut off after the header timeout.
        s.write_all(b"GET /a HTTP/1.1\r\n").await.unwrap();
        let (answer, took) = answered_then_closed(&mut s).await;
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "idle_timeout {idle}: closed after {took:?}"
        );
        assert!(
            answer.starts_with("HTTP/1.1 408 "),
            "idle_timeout {idle}: {answer}"
        );
    }
}

/// How long until the gateway closes `s`, which must get no byte before that.
async fn closed_without_answer(s: &mut tokio::net::TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer: {:?}", String::from_utf8_lossy(&buf[..n]));
    started.elapsed()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let up = Upstream::start(|_| async { text(StatusCode::OK, "ok") });
    let gw = TestGateway::start(&with_limits(
        up.addr,
        "      header_read_timeout: 300ms\n      idle_timeout: 0s\n",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let took = closed_without_answer(&mut s).await;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn an_http2_connection_may_wait_for_its_first_request_longer_than_a_head_may_take() {
    // A gRPC channel connects, sends its preface and settings, and may then wait: its
    // requests are frames, not heads, and the idle timeout is what ends such a wait.
    let up = Upstream::start(|_| async { text(StatusCode::OK, "ok") });
    let gw = TestGateway::start(&with_limits(up.addr, "      header_read_timeout: 300ms\n")).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(!conn.is_finished(), "the gateway closed the connection");
    let uri = format!("http://{}/a", gw.addr);
    let req = http::Request::get(uri)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender
        .send_request(req)
        .await
        .expect("the connection still serves");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused() {
    let up = Upstream::start(|_| async { text(StatusCode::OK, "ok") });
    let gw = TestGateway::start(&with_limits(up.addr, "      max_connections: 2\n")).await;
    let _a = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(out, "", "third connection is closed without a response");
    drop((_a, _b));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(&gw.url("/")).await.status, 200);
    let metrics = String::from_utf8_lossy(&get(&format!("http://{}/metrics", gw.admin)).await.body)
        .into_owned();
    assert!(
        metrics.contains(
            r#"rustygate_connections_rejected_total{listener="main",reason="max_connections"} 1"#
        ),
        "{metrics}"
    );
}

/// An upstream that sends `first`, then each later chunk after `gap`; `stall` after the first
/// chunk means it never sends another (nor ends the body).
fn trickle(first: &'static [u8], rest: usize, gap: Duration, stall: bool) -> Upstream {
    use futures_util::{StreamExt as _, stream};
    Upstream::start(move |_| async move {
        let chunks = std::iter::once(first.to_vec()).chain((0..rest).map(|_| b"more".to_vec()));
        let frames = stream::iter(chunks.enumerate()).then(move |(i, chunk)| async move {
            if i > 0 {
                if stall {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(gap).await;
            }
            Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(chunk)))
        });
        http::Response::new(http_body_util::BodyExt::boxed(
            http_body_util::StreamBody::new(frames),
        ))
    })
}

/// A gateway with a 400 ms stream idle timeout, two clusters (name, endpoint) and `routes`.
fn idle_400ms(clusters: [(&str, std::net::SocketAddr); 2], routes: &str) -> String {
    let [(a, a_addr), (b, b_addr)] = clusters;
    format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    limits: {{ stream_idle_timeout: 400ms }}
clusters:
  - {{ name: {a}, endpoints: [ {{ url: http://{a_addr} }} ] }}
  - {{ name: {b}, endpoints: [ {{ url: http://{b_addr} }} ] }}
routes:
{routes}"
    )
}

#[tokio::test]
async fn a_response_body_that_stops_moving_is_cut_off_after_the_stream_idle_timeout() {
    use futures_util::StreamExt as _;
    use http_body_util::BodyExt;
    let stalled = trickle(b"first part;", 1, Duration::ZERO, true);
    let steady = trickle(b"start;", 4, Duration::from_millis(150), false);
    let yaml = idle_400ms(
        [("stalled", stalled.addr), ("steady", steady.addr)],
        "  - { name: stalled, match: { path: { prefix: /stalled } }, cluster: stalled }
  - { name: patient, match: { path: { prefix: /patient } }, cluster: stalled, idle_timeout: 0s }
  - { name: steady, match: { path: { prefix: /steady } }, cluster: steady }
",
    );
    let gw = TestGateway::start(&yaml).await;
    let client = rustygate_tests::client::http1();
    let open = |path: &str| {
        let req = http::Request::get(gw.url(path))
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap();
        client.request(req)
    };

    // The head and the first part arrive; then nothing, and the stream is cut off.
    let resp = open("/stalled").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let started = Instant::now();
    let mut body = resp.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(&first[..], b"first part;");
    let end = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("cut off in time");
    assert!(
        matches!(end, Some(Err(_))),
        "the body ends in an error: {end:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "cut off after {waited:?}"
    );

    // A route with `idle_timeout: 0s` waits as long as the client does.
    let resp = open("/patient").await.unwrap();
    let mut body = resp.into_body().into_data_stream();
    assert_eq!(&body.next().await.unwrap().unwrap()[..], b"first part;");
    assert!(
        tokio::time::timeout(Duration::from_millis(900), body.next())
            .await
            .is_err(),
        "still open after more than twice the listener's idle timeout"
    );

    // Quiet spells shorter than the timeout, however many, are fine.
    let resp = open("/steady").await.unwrap();
    let whole = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&whole[..], b"start;moremoremoremore");

    let metrics = get(&format!("http://{}/metrics", gw.admin)).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(
            r#"rustygate_upstream_failures_total{cluster="stalled",reason="idle_timeout"} 1"#
        ),
        "{text}"
    );
}

/// An upstream that answers at once with a head and streams the request body back only
/// when it has all of it: its response is quiet for as long as the upload lasts.
fn echo_at_end() -> Upstream {
    use http_body_util::BodyExt;
    Upstream::start(|req| async move {
        let whole = futures_util::stream::once(async move {
            let all = req
                .into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(hyper::body::Frame::data(all.to_bytes()))
        });
        http::Response::new(http_body_util::BodyExt::boxed(
            http_body_util::StreamBody::new(whole),
        ))
    })
}

#[tokio::test]
async fn a_request_body_that_stops_coming_gets_408_after_the_stream_idle_timeout() {
    let echo = Upstream::echo();
    let early = echo_at_end();
    let yaml = idle_400ms(
        [("echo", echo.addr), ("early", early.addr)],
        "  - { name: upload, match: { path: { prefix: /upload } }, cluster: echo, timeout: 10s }
  - { name: early, match: { path: { prefix: /early } }, cluster: early, timeout: 10s }
",
    );
    let gw = TestGateway::start(&yaml).await;

    // Ten of the hundred bytes promised, then nothing: 408 once the stream has been idle
    // for the timeout (the route's 10 s timeout is far off), and the connection is closed,
    // since the rest of the body would otherwise be read as the next request.
    let head = "POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n";
    let (answer, after) = raw_upload(gw.addr, head, &[b"0123456789"], Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    assert!(
        after >= Duration::from_millis(350) && after < Duration::from_secs(3),
        "answered {after:?} after the client stopped"
    );

    // A slow upload whose pauses are each shorter than the timeout goes through whole, though
    // it takes more than twice the timeout.
    let head = "POST /upload HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let chunks: [&[u8]; 7] = [b"4\r\nslow\r\n"; 7];
    let mut all: Vec<&[u8]> = chunks.to_vec();
    all.push(b"0\r\n\r\n");
    let (answer, _) = raw_upload(gw.addr, head, &all, Duration::from_millis(150)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""body_len":28"#), "{answer}");

    // An upstream that answers first and streams back the body at its end: its response is
    // quiet for longer than the timeout, but the upload moves, so nothing is cut off.
    let head = "POST /early HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let (answer, _) = raw_upload(gw.addr, head, &all, Duration::from_millis(150)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("slowslowslowslowslowslowslow"), "{answer}");

    let metrics = get(&format!("http://{}/metrics", gw.admin)).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"rustygate_requests_total{route="upload",status="408"} 1"#),
        "{text}"
    );
    assert!(!text.contains(r#"reason="idle_timeout""#), "{text}");
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection_and_frees_the_upstreams() {
    // Far more than the socket buffers on both sides of the gateway hold.
    const LEN: u64 = 256 * 1024 * 1024;
    let big = Upstream::download(LEN);
    let yaml = with_limits(big.addr, "      stream_idle_timeout: 400ms\n");
    let gw = TestGateway::start(&yaml).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 1024];
    let n = s.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    assert_eq!(big.open_connections(), 1);

    // The client keeps its socket open and reads nothing: once the gateway's writes have
    // waited for the timeout it closes the connection, and the upstream's with it.
    let stopped = Instant::now();
    while big.open_connections() > 0 {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "the upstream connection is still held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stopped.elapsed() >= Duration::from_millis(350),
        "let go after {:?}",
        stopped.elapsed()
    );
    // What was already on its way arrives; then the connection ends, short of the whole.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(((n + rest.len()) as u64) < LEN, "{} bytes", rest.len());
}
