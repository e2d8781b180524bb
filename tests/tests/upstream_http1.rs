//! What an HTTP/1.1 upstream may send, byte for byte, and what the client then sees. The
//! upstreams here are raw sockets, so that each test controls framing, informational
//! responses, connection reuse and misbehaviour exactly (a server library would not send
//! most of these).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use rustygate_tests::client::{get, h2c, http1, raw, send};
use rustygate_tests::{TestGateway, simple_config};

/// What the scripted upstream does after reading a request head.
enum Answer {
    /// Writes these bytes and waits for the next request on the connection.
    Keep(Vec<u8>),
    /// Writes these bytes and closes the connection.
    Close(Vec<u8>),
    /// Writes these bytes, then closes the connection after this long.
    CloseAfter(Vec<u8>, Duration),
}

/// A raw HTTP/1.1 upstream: `script` answers each request head it reads (the heads are kept
/// in `heads`, in order).
struct Raw {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Raw {
    fn start(script: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let (a, h) = (accepted.clone(), heads.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                a.fetch_add(1, Ordering::SeqCst);
                let (script, heads) = (script.clone(), h.clone());
                std::thread::spawn(move || serve(stream, &*script, &heads));
            }
        });
        Raw {
            addr,
            accepted,
            heads,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().clone()
    }
}

fn serve(mut s: TcpStream, script: &dyn Fn(&str) -> Answer, heads: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        heads.lock().push(head.clone());
        match script(&head) {
            Answer::Keep(bytes) => {
                if s.write_all(&bytes).is_err() {
                    return;
                }
            }
            Answer::Close(bytes) => {
                let _ = s.write_all(&bytes);
                return;
            }
            Answer::CloseAfter(bytes, wait) => {
                let _ = s.write_all(&bytes);
                std::thread::sleep(wait);
                return;
            }
        }
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn metrics_text(gw: &TestGateway) -> String {
    String::from_utf8_lossy(&get(&format!("http://{}/metrics", gw.admin)).await.body).into_owned()
}

#[tokio::test]
async fn requests_share_one_keep_alive_connection_and_arrive_in_origin_form() {
    let up = Raw::start(|_| Answer::Keep(ok("hi")));
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let client = http1();
    for i in 0..5 {
        let seen = send(
            &client,
            Request::get(gw.url(&format!("/a/{i}?q=1")))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(seen.status, 200);
        assert_eq!(seen.body, "hi");
        assert_eq!(seen.header("content-length"), Some("2"));
    }
    assert_eq!(
        up.accepted(),
        1,
        "one upstream connection serves every request"
    );
    let heads = up.heads();
    assert!(
        heads[4].starts_with("GET /a/4?q=1 HTTP/1.1\r\n"),
        "{}",
        heads[4]
    );
    assert!(
        heads[4].to_ascii_lowercase().contains("\r\nhost: "),
        "{}",
        heads[4]
    );
}

#[tokio::test]
async fn a_chunked_response_keeps_its_trailers_and_its_connection() {
    let up = Raw::start(|_| {
        Answer::Keep(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n\
              5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Sum: 42\r\n\r\n"
                .to_vec(),
        )
    });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let client = h2c();
    for _ in 0..2 {
        let resp = client
            .request(
                Request::get(gw.url("/c"))
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let collected = resp.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "42");
        assert_eq!(collected.to_bytes(), "hello, world");
    }
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_body_delimited_by_the_close_arrives_whole_on_a_fresh_connection_each_time() {
    let up =
        Raw::start(|_| Answer::Close(b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nuntil the end".to_vec()));
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    for _ in 0..3 {
        let seen = get(&gw.url("/x")).await;
        assert_eq!(seen.status, 200);
        assert_eq!(seen.body, "until the end");
        assert_eq!(seen.header("x-a"), Some("b"));
    }
    assert_eq!(
        up.accepted(),
        3,
        "a close-delimited body cannot leave its connection reusable"
    );
}

#[tokio::test]
async fn an_http_1_0_upstream_does_not_turn_the_client_connection_into_http_1_0() {
    // An HTTP/1.0 server: its body runs to the close, and so does its connection.
    let up = Raw::start(|_| Answer::Close(b"HTTP/1.0 200 OK\r\nX-Old: yes\r\n\r\nold".to_vec()));
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    // Two requests on one connection: both answered in HTTP/1.1, the first without closing.
    let text = raw(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
    assert!(!text.contains("HTTP/1.0"), "{text}");
    assert_eq!(text.matches("x-old: yes\r\n").count(), 2, "{text}");
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn informational_responses_are_not_passed_on_but_a_reason_phrase_is() {
    let up = Raw::start(|_| {
        Answer::Keep(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\
              HTTP/1.1 200 Fine\r\nContent-Length: 4\r\n\r\ndone"
                .to_vec(),
        )
    });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let text = raw(
        gw.addr,
        b"GET /i HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200 Fine\r\n"), "{text}");
    assert!(
        !text.contains("100 Continue") && !text.contains("Early Hints"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\ndone"), "{text}");
}

#[tokio::test]
async fn head_responses_carry_the_length_without_a_body_and_keep_the_connection() {
    let up = Raw::start(|head| {
        if head.starts_with("HEAD") {
            Answer::Keep(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec())
        } else {
            Answer::Keep(ok("after"))
        }
    });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let client = http1();
    let seen = send(
        &client,
        Request::head(gw.url("/h")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("content-length"), Some("1000"));
    assert!(seen.body.is_empty());
    let seen = send(
        &client,
        Request::get(gw.url("/h")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(seen.body, "after");
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn an_answer_that_is_not_http_is_502_protocol_error() {
    let up = Raw::start(|_| Answer::Close(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()));
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let seen = get(&gw.url("/p")).await;
    assert_eq!(seen.status, 502);
    assert_eq!(seen.json()["error"], "protocol_error");
    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains(
            r#"rustygate_upstream_failures_total{cluster="up",reason="protocol_error"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_body_cut_short_by_the_upstream_is_cut_short_for_the_client() {
    let up = Raw::start(|head| {
        if head.starts_with("GET /cut") {
            Answer::Close(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..".to_vec())
        } else {
            Answer::Keep(ok("whole"))
        }
    });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    // The head and the part that came may or may not be flushed before the gateway sees the
    // close (hyper's server writes them with the next chunk); either way the client must
    // not take the response for complete.
    let sent = http1()
        .request(
            Request::get(gw.url("/cut"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await;
    if let Ok(resp) = sent {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-length"], "100");
        assert!(
            resp.into_body().collect().await.is_err(),
            "the client sees the body end early"
        );
    }
    // The broken connection is gone; the next request gets a good one.
    assert_eq!(get(&gw.url("/next")).await.body, "whole");
}

/// Chunks are framed as hyper's client frames them: an empty line where a chunk size belongs
/// is not a last chunk, and a bare LF does not end a line. Either breaks the response, which
/// the client must not take for complete, and learns of at once (the head has gone out, so
/// the client's connection is closed mid-body).
#[tokio::test]
async fn a_malformed_chunked_body_is_not_taken_for_complete() {
    let up = Raw::start(|head| {
        if head.starts_with("GET /no-size") {
            Answer::Keep(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n\r\n".to_vec(),
            )
        } else if head.starts_with("GET /bare-lf") {
            Answer::Keep(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Answer::Keep(ok("whole"))
        }
    });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    for path in ["/no-size", "/bare-lf"] {
        let req = Request::get(gw.url(path)).body(Full::<Bytes>::default());
        // At once: the upstream keeps the connection open, as if more were coming.
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            match http1().request(req.unwrap()).await {
                Ok(resp) => resp.into_body().collect().await.is_err(),
                Err(_) => true,
            }
        });
        assert!(read.await.expect(path), "{path}: taken for complete");
    }
    assert_eq!(get(&gw.url("/next")).await.body, "whole");
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    // Every connection serves one request, then the upstream closes it a moment later (an
    // idle timeout far shorter than the gateway's).
    let up = Raw::start(|_| Answer::CloseAfter(ok("fresh"), Duration::from_millis(50)));
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    for _ in 0..4 {
        let seen = get(&gw.url("/idle")).await;
        assert_eq!(seen.status, 200, "{:?}", seen.body);
        assert_eq!(seen.body, "fresh");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(up.accepted(), 4);
}

#[tokio::test]
async fn a_reused_connection_that_dies_unanswered_is_retried_for_idempotent_requests_only() {
    // The first request on each connection is answered; the second is read and then the
    // connection is closed without an answer: the race with an upstream's idle close.
    let served = Arc::new(AtomicUsize::new(0));
    let s = served.clone();
    let up = Raw::start(move |_| {
        if s.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            Answer::Keep(ok("first"))
        } else {
            Answer::Close(Vec::new())
        }
    });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let client = http1();
    let req = |m: Method| {
        Request::builder()
            .method(m)
            .uri(gw.url("/r"))
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(send(&client, req(Method::GET)).await.body, "first");
    // Idempotent: sent again on a new connection, where it is the first and answered.
    let seen = send(&client, req(Method::GET)).await;
    assert_eq!((seen.status.as_u16(), &seen.body[..]), (200, &b"first"[..]));
    assert_eq!(up.accepted(), 2);
    // Not idempotent: the upstream may have acted on it, so the client hears of the failure.
    let seen = send(&client, req(Method::POST)).await;
    assert_eq!(seen.status, 502);
    assert_eq!(seen.json()["error"], "reset");
    assert_eq!(up.accepted(), 2, "a POST is never sent twice");
}

#[tokio::test]
async fn a_connection_that_closes_after_an_interim_response_is_a_failure_not_a_stale_connection() {
    // The upstream had the request (it said 100 Continue), so even a GET is not sent again.
    let up = Raw::start(|head| {
        if head.starts_with("GET /first") {
            Answer::Keep(ok("first"))
        } else {
            Answer::Close(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
        }
    });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let client = http1();
    let get = |path: &str| Request::get(gw.url(path)).body(Full::default()).unwrap();
    assert_eq!(send(&client, get("/first")).await.body, "first");
    let seen = send(&client, get("/then")).await;
    assert_eq!(seen.status, 502);
    assert_eq!(seen.json()["error"], "reset");
    assert_eq!(up.accepted(), 1);
    assert_eq!(up.heads().len(), 2);
}
