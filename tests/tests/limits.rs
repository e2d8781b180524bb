//! Connection limits: idle keep-alive connections are closed, slow request heads are cut off,
//! and connections beyond the cap are refused at accept.

use std::time::{Duration, Instant};

use http::StatusCode;
use rustygate_tests::client::{get, raw};
use rustygate_tests::upstream::{Upstream, text};
use rustygate_tests::{TestGateway, simple_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn with_limits(up: std::net::SocketAddr, limits: &str) -> String {
    simple_config(up, "").replace(
        "    address: 127.0.0.1:0\n",
        &format!("    address: 127.0.0.1:0\n    limits:\n{limits}"),
    )
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let up = Upstream::start(|_| async { text(StatusCode::OK, "ok") });
    let gw = TestGateway::start(&with_limits(up.addr, "      idle_timeout: 300ms\n")).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    // The server closes: read returns 0 (EOF).
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap();
    assert_eq!(n, 0);
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(250) && idle < Duration::from_secs(2),
        "closed after {idle:?}"
    );
}

#[tokio::test]
async fn slow_request_head_is_cut_off() {
    let up = Upstream::start(|_| async { text(StatusCode::OK, "ok") });
    let gw = TestGateway::start(&with_limits(up.addr, "      header_read_timeout: 300ms\n")).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // Never finish the head: the gateway must give up on us.
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
        .await
        .expect("closed in time")
        .ok();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(up.requests(), 0);
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
