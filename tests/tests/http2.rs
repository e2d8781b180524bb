//! HTTP/2: h2c clients (prior knowledge) on the same port as HTTP/1.1, and h2c upstreams.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustygate_tests::client::{h2c, http1, send};
use rustygate_tests::upstream::Upstream;
use rustygate_tests::{TestGateway, simple_config};

#[tokio::test]
async fn h2c_and_http1_clients_share_a_port() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let seen = send(
        &h2c(),
        Request::get(gw.url("/h2?q=1"))
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await;
    assert_eq!(seen.status, 200);
    let echo = seen.json();
    assert_eq!(echo["path"], "/h2?q=1");
    assert_eq!(
        echo["version"], "HTTP/1.1",
        "upstream is HTTP/1.1 by default"
    );
    assert_eq!(
        echo["headers"]["host"][0],
        gw.addr.to_string(),
        ":authority becomes Host upstream"
    );
    assert!(seen.header("x-request-id").is_some());

    let seen = send(
        &http1(),
        Request::get(gw.url("/h1")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(seen.json()["path"], "/h1");
}

/// An HTTP/2 client may split its cookies over several `cookie` fields (browsers do, for
/// header compression); an HTTP/1.1 upstream must get them joined into one (RFC 9113 §8.2.3),
/// as Envoy joins them.
#[tokio::test]
async fn cookies_split_over_http2_fields_reach_an_http1_upstream_as_one_field() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let seen = send(
        &h2c(),
        Request::get(gw.url("/c"))
            .header("cookie", "a=1")
            .header("cookie", "b=2; c=3")
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(
        seen.json()["headers"]["cookie"],
        serde_json::json!(["a=1; b=2; c=3"])
    );
}

#[tokio::test]
async fn h2c_client_posts_a_body() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let body = Bytes::from(vec![7u8; 300_000]);
    let seen = send(
        &h2c(),
        Request::post(gw.url("/up"))
            .body(Full::new(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(
        seen.json()["body_sha256"],
        rustygate_tests::upstream::sha256_hex(&body).as_str()
    );
}

#[tokio::test]
async fn http2_upstream_is_multiplexed() {
    let up = Upstream::echo();
    let yaml =
        simple_config(up.addr, "").replace("  - name: up\n", "  - name: up\n    protocol: http2\n");
    let gw = TestGateway::start(&yaml).await;
    let client = http1();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (client, url) = (client.clone(), gw.url(&format!("/m{i}")));
        tasks.push(tokio::spawn(async move {
            send(&client, Request::get(url).body(Full::default()).unwrap()).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let echo = t.await.unwrap().json();
        assert_eq!(echo["version"], format!("{:?}", Version::HTTP_2));
        assert_eq!(echo["path"], format!("/m{i}"));
    }
}

/// One stream whose client stops reading (its HTTP/2 window stays shut) while the same
/// connection goes on serving other streams: the stream idle timeout ends that stream alone
/// and frees the upstream connection its response held, as Envoy's does.
#[tokio::test]
async fn a_stalled_stream_is_ended_by_the_stream_idle_timeout_while_its_connection_lives() {
    let big = Upstream::download(64 * 1024 * 1024);
    let small = Upstream::echo();
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    limits: {{ stream_idle_timeout: 300ms }}
logging: {{ access_log: false }}
clusters:
  - name: big
    endpoints: [ {{ url: http://{} }} ]
  - name: small
    endpoints: [ {{ url: http://{} }} ]
routes:
  - name: big
    match: {{ path: {{ prefix: /big }} }}
    cluster: big
  - name: small
    cluster: small
",
        big.addr, small.addr
    ))
    .await;
    // A small stream window: the gateway can send only 64 KiB before the client reads.
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(65_535)
        .http2_initial_connection_window_size(64 * 1024 * 1024)
        .build_http::<Full<Bytes>>();
    let stalled = client
        .request(Request::get(gw.url("/big")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    assert_eq!(big.open_connections(), 1);
    // The connection keeps serving: a request now and one after the timeout.
    for _ in 0..2 {
        let seen = client
            .request(
                Request::get(gw.url("/other"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(seen.status(), 200);
        seen.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(
        big.open_connections(),
        0,
        "the stalled response still holds its upstream connection"
    );
    // What was sent before the stall can still be read; then the stream ends in a reset.
    let read = stalled.into_body().collect().await;
    assert!(read.is_err(), "the stalled response completed");
}
