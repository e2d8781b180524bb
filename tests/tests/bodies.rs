//! Bodies stream through in both directions, unchanged, with trailers; limits answer 413.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustygate_tests::client::{h2c, http1, raw_upload, send};
use rustygate_tests::upstream::{Upstream, full, pattern, sha256_hex};
use rustygate_tests::{TestGateway, simple_config, with_listener};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn large_upload_streams_through_with_identical_checksum() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let len = 64 * MIB;
    let chunks = (0..len / (256 * 1024)).map(|i| {
        Ok::<_, std::io::Error>(Frame::data(Bytes::from(pattern(
            i * 256 * 1024,
            256 * 1024,
        ))))
    });
    let expected = {
        let mut h = Sha256::new();
        for i in 0..len / (256 * 1024) {
            h.update(pattern(i * 256 * 1024, 256 * 1024));
        }
        rustygate_tests::upstream::hex(&h.finalize())
    };
    let client = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(gw.url("/upload"))
        .body(StreamBody::new(stream::iter(chunks)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echo["body_len"], len);
    assert_eq!(echo["body_sha256"], expected.as_str());
}

#[tokio::test]
async fn large_download_streams_through_with_identical_checksum() {
    let len = 64 * MIB;
    let up = Upstream::download(len);
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let resp = http1()
        .request(Request::get(gw.url("/big")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], len.to_string().as_str());
    let mut body = resp.into_body();
    let (mut got, mut hasher, mut expected) = (0u64, Sha256::new(), Sha256::new());
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            expected.update(pattern(got, d.len()));
            got += d.len() as u64;
            hasher.update(&d);
        }
    }
    assert_eq!(got, len);
    assert_eq!(hasher.finalize(), expected.finalize());
}

#[tokio::test]
async fn request_trailers_reach_the_upstream_and_keep_the_connection() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc123".parse().unwrap());
    let frames = vec![
        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers(trailers)),
    ];
    let client = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(gw.url("/t"))
        .header("trailer", "x-checksum")
        .header("te", "trailers")
        .body(StreamBody::new(stream::iter(frames)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    // The trailers end the request: its connection is kept.
    assert_eq!(resp.headers().get("connection"), None);
    let echo: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echo["body_sha256"], sha256_hex(b"hello").as_str());
    assert_eq!(echo["trailers"]["x-checksum"], "abc123");
}

#[tokio::test]
async fn response_trailers_reach_the_client() {
    let up = Upstream::start(|_| async {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        let frames = vec![
            Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"data"))),
            Ok(Frame::trailers(t)),
        ];
        Response::builder()
            .header("trailer", "grpc-status")
            .body(StreamBody::new(stream::iter(frames)).boxed())
            .unwrap()
    });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let resp = http1()
        .request(
            Request::get(gw.url("/"))
                .header("te", "trailers")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().expect("trailers")["grpc-status"], "0");
    assert_eq!(&collected.to_bytes()[..], b"data");
}

fn limited_config(up: std::net::SocketAddr) -> String {
    with_listener(
        &simple_config(up, ""),
        "    limits:\n      max_request_body_bytes: 1000\n",
    )
}

#[tokio::test]
async fn declared_body_over_the_limit_gets_413_without_forwarding() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&limited_config(up.addr)).await;
    let seen = send(
        &http1(),
        Request::post(gw.url("/"))
            .body(Full::new(Bytes::from(vec![b'x'; 1001])))
            .unwrap(),
    )
    .await;
    assert_eq!(seen.status, 413);
    assert_eq!(seen.json()["error"], "body_too_large");
    assert_eq!(up.requests(), 0);
    let ok = send(
        &http1(),
        Request::post(gw.url("/"))
            .body(Full::new(Bytes::from(vec![b'x'; 1000])))
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, 200);
    // Over HTTP/2 the length is declared in a `content-length` field beside the DATA frames.
    let seen = send(
        &h2c(),
        Request::post(gw.url("/"))
            .header("content-length", "1001")
            .body(Full::new(Bytes::from(vec![b'x'; 1001])))
            .unwrap(),
    )
    .await;
    assert_eq!(seen.status, 413);
    assert_eq!(seen.json()["error"], "body_too_large");
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn streamed_body_over_the_limit_gets_413() {
    // The upstream reads the whole body before answering, so the limit trips mid-stream.
    let up = Upstream::echo();
    let gw = TestGateway::start(&limited_config(up.addr)).await;
    let chunks =
        (0..10).map(|_| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b'y'; 500]))));
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(
            Request::post(gw.url("/"))
                .body(StreamBody::new(stream::iter(chunks)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("body_too_large"));
    let _ = full("unused");
}

#[tokio::test]
async fn an_answer_before_the_request_has_arrived_closes_the_connection_and_says_so() {
    // On /up, answers without reading the body, as an upstream that rejects an upload does;
    // elsewhere reads it all first.
    let up = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/up" {
            return Response::new(full("early"));
        }
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(full(body))
    });
    let gw = TestGateway::start(&limited_config(up.addr)).await;
    let head = "POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n";
    let (answer, _) = raw_upload(gw.addr, head, &[b"0123456789"], Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nearly"), "{answer}");

    // The gateway's own answer, before any of the body is read: the declared length is over
    // the limit.
    let head = "POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: 5000\r\n\r\n";
    let (answer, _) = raw_upload(gw.addr, head, &[b"0123456789"], Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");

    // A request whose body has all arrived keeps its connection.
    let seen = send(
        &http1(),
        Request::post(gw.url("/whole"))
            .body(Full::new(Bytes::from_static(b"whole")))
            .unwrap(),
    )
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(&seen.body[..], b"whole");
    assert_eq!(seen.header("connection"), None);
    let chunks = (0..3).map(|_| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"abc"))));
    let resp = Client::builder(TokioExecutor::new())
        .build_http()
        .request(
            Request::post(gw.url("/whole"))
                .body(StreamBody::new(stream::iter(chunks)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("connection"), None);
}
