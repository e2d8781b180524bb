//! HTTP/2: h2c clients (prior knowledge) on the same port as HTTP/1.1, and h2c upstreams.

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
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
