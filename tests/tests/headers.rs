//! What the upstream receives and what the client gets back, header by header.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use rustygate_tests::client::{http1, send};
use rustygate_tests::upstream::{Upstream, full};
use rustygate_tests::{TestGateway, simple_config};

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let req = Request::get(gw.url("/a?b=c"))
        .header("connection", "keep-alive, x-hop-secret")
        .header("x-hop-secret", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("upgrade", "websocket")
        .header("te", "gzip")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-end-to-end", "kept")
        .header("host", "shop.example.com")
        .body(Full::<Bytes>::default())
        .unwrap();
    let seen = send(&http1(), req).await;
    assert_eq!(seen.status, 200);
    let echo = seen.json();
    let h = &echo["headers"];
    for gone in [
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
    ] {
        assert!(h.get(gone).is_none(), "{gone} was forwarded: {h}");
    }
    assert_eq!(h["x-end-to-end"][0], "kept");
    assert_eq!(h["x-forwarded-for"][0], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-forwarded-host"][0], "shop.example.com");
    assert_eq!(
        h["host"][0], "shop.example.com",
        "Host is preserved, as in Envoy"
    );
    assert_eq!(echo["path"], "/a?b=c");
    assert_eq!(echo["method"], "GET");
}

#[tokio::test]
async fn request_id_is_generated_and_returned_or_propagated() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let seen = send(
        &http1(),
        Request::get(gw.url("/")).body(Full::default()).unwrap(),
    )
    .await;
    let generated = seen
        .header("x-request-id")
        .expect("response carries x-request-id")
        .to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    assert_eq!(
        seen.json()["headers"]["x-request-id"][0],
        generated.as_str()
    );

    let seen = send(
        &http1(),
        Request::get(gw.url("/"))
            .header("x-request-id", "client-chosen-1")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(seen.header("x-request-id"), Some("client-chosen-1"));
    assert_eq!(seen.json()["headers"]["x-request-id"][0], "client-chosen-1");
}

#[tokio::test]
async fn te_trailers_is_the_one_te_value_forwarded() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let seen = send(
        &http1(),
        Request::get(gw.url("/"))
            .header("te", "gzip, trailers")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(seen.json()["headers"]["te"][0], "trailers");
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed() {
    let up = Upstream::start(|_| async {
        Response::builder()
            .status(StatusCode::OK)
            .header("connection", "x-internal")
            .header("x-internal", "secret")
            .header("keep-alive", "timeout=99")
            .header("x-app", "visible")
            .body(full("ok"))
            .unwrap()
    });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let seen = send(
        &http1(),
        Request::get(gw.url("/")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-app"), Some("visible"));
    assert_eq!(seen.header("x-internal"), None);
    assert_eq!(seen.header("keep-alive"), None);
    assert_eq!(&seen.body[..], b"ok");
}
