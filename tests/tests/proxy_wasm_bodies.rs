//! Body and trailer phases of proxy-wasm filters, through the real gateway: buffering with
//! cumulative sizes, rewrites in both directions, local responses and outbound calls from a
//! body phase, the buffer limit, and trailers. Assertions are what a client sees.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustygate_tests::client::{http1, raw_upload, send};
use rustygate_tests::upstream::{Upstream, full, pattern, sha256_hex, text};
use rustygate_tests::{
    ABI_PROBE_WASM, TestGateway, filters_config, probe_config, start_probe, with_listener,
};

/// A request body sent in separate chunks, so the filter sees several body calls.
fn chunked(
    parts: &[&'static str],
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + use<>> {
    let frames: Vec<_> = parts
        .iter()
        .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
        .collect();
    StreamBody::new(stream::iter(frames))
}

async fn probe(app: &Upstream, configuration: &str) -> TestGateway {
    start_probe(app.addr, configuration).await
}

/// POSTs `parts` as separate chunks; returns the response head and its whole body.
async fn upload(gw: &TestGateway, parts: &[&'static str]) -> (http::response::Parts, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(gw.url("/")).body(chunked(parts)).unwrap();
    let (head, body) = client.request(req).await.unwrap().into_parts();
    (head, body.collect().await.unwrap().to_bytes())
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn a_buffering_filter_sees_the_whole_request_body_and_rewrites_it() {
    let app = Upstream::echo();
    let gw = probe(
        &app,
        "{ request_body_replace: [world, there], report_request_body: true }",
    )
    .await;
    let (parts, body) = upload(&gw, &["hello ", "wor", "ld, world!"]).await;
    assert_eq!(parts.status, 200);
    let echo = json(&body);
    // What the upstream received is the rewritten body, whole.
    assert_eq!(
        echo["body_sha256"],
        sha256_hex(b"hello there, there!").as_str()
    );
    assert_eq!(echo["body_len"], 19);
    // The last call was given the running total (cumulative buffering), not the last chunk.
    assert_eq!(parts.headers["x-request-body-size"], "19");
    let calls: u32 = parts.headers["x-request-body-calls"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(calls >= 2, "one call per chunk as it arrived, got {calls}");
}

#[tokio::test]
async fn a_rewritten_request_body_with_a_stale_content_length_is_forwarded_consistently() {
    let app = Upstream::echo();
    let gw = probe(&app, "{ request_body_replace: [a, aaa] }").await;
    // Full body with content-length: 4; the filter makes it 8 and leaves the header alone.
    let seen = post(&gw, b"a-ba".to_vec()).await;
    assert_eq!(seen.status, 200);
    let echo = seen.json();
    assert_eq!(echo["body_len"], 8);
    assert_eq!(echo["headers"]["content-length"][0], "8");
    assert_eq!(echo["body_sha256"], sha256_hex(b"aaa-baaa").as_str());
}

#[tokio::test]
async fn a_local_response_from_the_request_body_phase_never_reaches_the_upstream() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&probe_config(
        app.addr,
        "    configuration: { name: dlp, request_body_deny: secret }",
        "[probe]",
    ))
    .await;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(gw.url("/"))
        .body(chunked(&["this is ", "top sec", "ret stuff"]))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["x-denied-by"], "dlp");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"body denied by abi-probe\n");
    assert_eq!(app.requests(), 0);

    let req = Request::post(gw.url("/"))
        .body(chunked(&["harmless"]))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.requests(), 1);
}

/// An approval service that reads the body of the call: 200 when it contains "approve".
fn body_checker() -> Upstream {
    Upstream::start(|req| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        if String::from_utf8_lossy(&body).contains("approve") {
            text(StatusCode::OK, "checked")
        } else {
            text(StatusCode::UNAUTHORIZED, "no")
        }
    })
}

#[tokio::test]
async fn a_filter_paused_in_the_body_phase_resumes_after_its_call() {
    let app = Upstream::echo();
    let checker = body_checker();
    let yaml = probe_config(
        app.addr,
        "    configuration: { auth_cluster: checker, auth_on_body: true }",
        "[probe]",
    )
    .replace(
        "filters:\n  - name: probe",
        &format!(
            "  - name: checker\n    endpoints:\n      - url: http://{}\nfilters:\n  - name: probe",
            checker.addr
        ),
    );
    let gw = TestGateway::start(&yaml).await;
    let client = Client::builder(TokioExecutor::new()).build_http();

    let req = Request::post(gw.url("/"))
        .body(chunked(&["please ", "approve me"]))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        echo["body_sha256"],
        sha256_hex(b"please approve me").as_str()
    );

    let req = Request::post(gw.url("/"))
        .body(chunked(&["reject ", "me"]))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["x-auth-status"], "401");
    assert_eq!(app.requests(), 1, "the rejected body never went upstream");
    assert_eq!(checker.requests(), 2);
}

/// An upstream whose answer is the request's path: whole with its head, or (under
/// `/streamed/`) in two frames with a pause between, so that it streams.
fn path_teller() -> Upstream {
    Upstream::start(|req| async move {
        let path = req.uri().path().to_owned();
        if !path.starts_with("/streamed/") {
            return Response::new(full(path));
        }
        let frames = stream::unfold(0, move |n| {
            let path = path.clone();
            async move {
                let frame = match n {
                    0 => "[",
                    1 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return Some((Ok(Frame::data(Bytes::from(path + "]"))), 2));
                    }
                    _ => return None,
                };
                Some((
                    Ok::<_, std::io::Error>(Frame::data(Bytes::from(frame))),
                    n + 1,
                ))
            }
        });
        Response::new(BodyExt::boxed(StreamBody::new(frames)))
    })
}

#[tokio::test]
async fn a_filter_paused_on_the_end_of_the_response_body_resumes_after_its_call() {
    let app = path_teller();
    let checker = body_checker();
    // `tail` comes first in the chain, so the response meets `call` first: what `call`
    // lets go after its call still goes through `tail`.
    let yaml = filters_config(
        app.addr,
        &format!(
            "  - name: call
    module: {ABI_PROBE_WASM}
    configuration: {{ auth_cluster: checker, auth_on_response_body: true }}
  - name: tail
    module: {ABI_PROBE_WASM}
    configuration: {{ response_body_suffix: \"[tail]\" }}"
        ),
        "[tail, call]",
    )
    .replace(
        "filters:\n  - name: call",
        &format!(
            "  - name: checker\n    endpoints:\n      - url: http://{}\nfilters:\n  - name: call",
            checker.addr
        ),
    );
    let gw = TestGateway::start(&yaml).await;
    let client = http1();
    for (path, body) in [
        // The upstream's body came whole with its head.
        ("/approve", "/approvechecked[tail]"),
        // It came in frames: `call` buffered them until the last.
        ("/streamed/approve", "[/streamed/approve]checked[tail]"),
    ] {
        let seen = send(
            &client,
            Request::get(gw.url(path)).body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(seen.status, 200, "{path}");
        assert_eq!(&seen.body[..], body.as_bytes(), "{path}");
    }
    for path in ["/reject", "/streamed/reject"] {
        let seen = send(
            &client,
            Request::get(gw.url(path)).body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(seen.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(seen.header("x-auth-status"), Some("401"), "{path}");
        assert!(seen.body.starts_with(b"forbidden\n"), "{path}");
    }
    assert_eq!(checker.requests(), 4);
}

#[tokio::test]
async fn a_response_body_rewrite_sets_a_correct_length() {
    let app = Upstream::echo();
    for keep in [false, true] {
        let gw = TestGateway::start(&probe_config(
            app.addr,
            &format!(
                "    configuration: {{ response_body_replace: [\"\\\"POST\\\"\", \"\\\"POSTED\\\"\"], keep_content_length: {keep} }}"
            ),
            "[probe]",
        ))
        .await;
        let seen = post(&gw, b"b".to_vec()).await;
        assert_eq!(seen.status, 200);
        assert_eq!(
            seen.json()["method"],
            "POSTED",
            "keep_content_length: {keep}"
        );
        if keep {
            // The upstream's length, left by the filter, is made the new body's: the head
            // waited for the buffering filter.
            assert_eq!(
                seen.header("content-length"),
                Some(seen.body.len().to_string().as_str())
            );
        } else {
            // The filter removed it: as in Envoy, the body goes without one (chunked), even
            // though the whole body was at hand before the head went.
            assert_eq!(seen.header("content-length"), None);
            assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
        }
    }
}

#[tokio::test]
async fn a_streaming_filter_lets_chunks_through_and_appends_at_the_end() {
    let len = 8 * 1024 * 1024;
    let app = Upstream::download(len);
    let gw = probe(&app, "{ response_body_suffix: \"--end\" }").await;
    let resp = http1()
        .request(Request::get(gw.url("/big")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len() as u64, len + 5);
    assert_eq!(&body[..len as usize], &pattern(0, len as usize)[..]);
    assert_eq!(&body[len as usize..], b"--end");
}

#[tokio::test]
async fn a_local_response_body_passes_through_the_response_body_phase() {
    let app = Upstream::echo();
    let gw = probe(&app, "{ deny_path: /no, response_body_suffix: \"[seen]\" }").await;
    let seen = send(
        &http1(),
        Request::get(gw.url("/no")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(seen.status, StatusCode::FORBIDDEN);
    assert_eq!(&seen.body[..], b"denied by abi-probe\n[seen]");
}

/// Like [`probe`], with a 16 KiB buffer limit.
async fn limited_probe(app: &Upstream, configuration: &str) -> TestGateway {
    let yaml = with_listener(
        &probe_config(
            app.addr,
            &format!("    configuration: {configuration}"),
            "[probe]",
        ),
        "    limits: { max_buffered_body_bytes: 16384 }\n",
    );
    TestGateway::start(&yaml).await
}

async fn post(gw: &TestGateway, body: Vec<u8>) -> rustygate_tests::client::Seen {
    let req = Request::post(gw.url("/")).body(Full::new(Bytes::from(body)));
    send(&http1(), req.unwrap()).await
}

#[tokio::test]
async fn buffering_past_the_limit_answers_413_for_requests_and_500_for_responses() {
    let app = Upstream::download(64 * 1024);
    let gw = limited_probe(
        &app,
        "{ request_body_replace: [a, b], response_body_replace: [a, b] }",
    )
    .await;
    let seen = post(&gw, vec![b'a'; 20 * 1024]).await;
    assert_eq!(seen.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(seen.json()["error"], "body_too_large");

    // Small request, but the 64 KiB response cannot be buffered.
    let seen = post(&gw, Vec::new()).await;
    assert_eq!(seen.status, StatusCode::INTERNAL_SERVER_ERROR);

    // Under the limit, both directions pass.
    let small = Upstream::echo();
    let gw = limited_probe(&small, "{ request_body_replace: [a, b] }").await;
    let seen = post(&gw, vec![b'a'; 8 * 1024]).await;
    assert_eq!(seen.status, 200);
    let expected = sha256_hex(&[b'b'; 8 * 1024]);
    assert_eq!(seen.json()["body_sha256"], expected.as_str());
}

#[tokio::test]
async fn filters_see_and_add_trailers_in_both_directions() {
    let app = Upstream::echo();
    let gw = probe(
        &app,
        "{ request_trailers_add: { x-filter-trailer: req }, response_trailers_add: { x-done: \"yes\" } }",
    )
    .await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc123".parse().unwrap());
    let frames = vec![
        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers(trailers)),
    ];
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    // The upstream speaks HTTP/1.1, where trailers must be announced.
    let req = Request::post(gw.url("/t"))
        .header("trailer", "x-checksum, x-filter-trailer")
        .body(StreamBody::new(stream::iter(frames)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let got_trailers = collected.trailers().cloned().expect("response trailers");
    let echo: serde_json::Value = serde_json::from_slice(&collected.to_bytes()).unwrap();
    assert_eq!(echo["trailers"]["x-checksum"], "abc123");
    assert_eq!(echo["trailers"]["x-filter-trailer"], "req");
    assert_eq!(echo["body_sha256"], sha256_hex(b"hello").as_str());
    // Added at the end of a response that had no trailers.
    assert_eq!(got_trailers["x-done"], "yes");
}

#[tokio::test]
async fn a_request_body_that_stops_while_a_filter_buffers_it_gets_408() {
    let app = Upstream::echo();
    let yaml = with_listener(
        &probe_config(
            app.addr,
            "    configuration: { request_body_replace: [a, b] }",
            "[probe]",
        ),
        "    limits: { stream_idle_timeout: 400ms }\n",
    );
    let gw = TestGateway::start(&yaml).await;
    // The first bytes of the body come with the head, so that the filter holds data when the
    // head would go: a body that has not started yet lets the head go on (as in Envoy), and
    // whether it had would be up to the scheduler.
    let head = "POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\naaaa";
    let (answer, after) = raw_upload(gw.addr, head, &[], Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    assert!(
        after >= Duration::from_millis(350),
        "answered after {after:?}"
    );
    // The filter held the body; the upstream never saw the request.
    assert_eq!(app.requests(), 0);
}
