//! WebSocket (HTTP/1.1 `Upgrade`) through the gateway: a real WebSocket server upstream, a
//! real WebSocket client, and what the client sees on the switched connection.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use rustygate_tests::client::get;
use rustygate_tests::upstream::{Upstream, text};
use rustygate_tests::websocket::{WsUpstream, connect};
use rustygate_tests::{HEADERS_WASM, TestGateway, filters_config, simple_config, with_listener};
use tokio_tungstenite::tungstenite::{Error, Message};

/// Polls `f` until it holds, for up to two seconds.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(2);
    while !f() {
        assert!(Instant::now() < until, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn websocket_messages_cross_the_gateway_both_ways() {
    let up = WsUpstream::start();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let (mut ws, resp) = connect(
        &format!("ws://{}/chat?room=1", gw.addr),
        &[("x-client", "a")],
    )
    .await
    .expect("handshake through the gateway");
    // The client library has checked Sec-WebSocket-Accept against its key.
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(resp.headers().contains_key("x-request-id"));

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    // Larger than any one read or write buffer on the way.
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Pong(b"are you there".to_vec().into())
    );

    let seen = up.handshakes();
    assert_eq!(seen.len(), 1);
    let h = &seen[0];
    assert_eq!(h["upgrade"], "websocket");
    assert!(
        h["connection"]
            .to_str()
            .unwrap()
            .eq_ignore_ascii_case("upgrade"),
        "{h:?}"
    );
    assert_eq!(h["x-client"], "a");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-request-id"], resp.headers()["x-request-id"]);

    // A clean close from the client ends both connections.
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    eventually("the upstream connection is closed", || {
        up.open_connections() == 0
    })
    .await;

    let metrics = get(&format!("http://{}/metrics", gw.admin)).await;
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(
        metrics.contains(r#"rustygate_requests_total{route="all",status="101"} 1"#),
        "{metrics}"
    );
}

/// A client may send its first frame with the upgrade request, before the 101: the gateway
/// holds it back until the switch is made (until then it might be the next request), then
/// passes it through the tunnel.
#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_goes_through_the_tunnel() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = WsUpstream::start();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let handshake = "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    // A masked text frame, "hi", as a client sends it.
    let mask = [1u8, 2, 3, 4];
    let frame = [
        0x81,
        0x82,
        mask[0],
        mask[1],
        mask[2],
        mask[3],
        b'h' ^ mask[0],
        b'i' ^ mask[1],
    ];
    s.write_all(&[handshake.as_bytes(), &frame].concat())
        .await
        .unwrap();
    // The 101, then the echo of the frame, unmasked, as the server sends it.
    let mut got = Vec::new();
    let echo = [0x81, 0x02, b'h', b'i'];
    let read = tokio::time::timeout(Duration::from_secs(3), async {
        let mut chunk = [0u8; 1024];
        while !got.ends_with(&echo) {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
    });
    read.await.expect("the echo");
    assert!(
        got.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn upgrades_a_route_does_not_allow_are_refused_with_403() {
    let up = WsUpstream::start();
    let gw = TestGateway::start(&simple_config(
        up.addr,
        "  - name: closed
    match: { path: { prefix: /closed } }
    cluster: up
    upgrades: []
  - name: other
    match: { path: { prefix: /other } }
    cluster: up
    upgrades: [Other/2]
",
    ))
    .await;
    for (path, offered) in [
        ("/closed", "websocket"),
        ("/open", "x-custom"),
        ("/other", "other/1"),
        ("/other", "websocket"),
    ] {
        let refused = connect(&format!("ws://{}{path}", gw.addr), &[("upgrade", offered)])
            .await
            .expect_err("refused");
        let Error::Http(resp) = refused else {
            panic!("{path} {offered}: {refused:?}")
        };
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path} {offered}");
        let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
        assert!(body.contains(r#""error":"upgrade_refused""#), "{body}");
    }
    assert!(up.handshakes().is_empty());
    // The versioned protocol the route names is let through (and the echo server, which
    // speaks only websocket, then refuses it itself).
    let passed = connect(
        &format!("ws://{}/other", gw.addr),
        &[("upgrade", "OTHER/2")],
    )
    .await
    .expect_err("the upstream refuses");
    let Error::Http(resp) = passed else {
        panic!("{passed:?}")
    };
    assert_ne!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_upstream_that_declines_the_upgrade_is_answered_as_it_said() {
    let up = Upstream::start(|req| async move {
        assert_eq!(req.headers()["upgrade"], "websocket");
        text(StatusCode::UPGRADE_REQUIRED, "not here")
    });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let declined = connect(&format!("ws://{}/chat", gw.addr), &[])
        .await
        .expect_err("declined");
    let Error::Http(resp) = declined else {
        panic!("{declined:?}")
    };
    assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_the_listeners_idle_timeout() {
    let up = WsUpstream::start();
    let config = with_listener(
        &simple_config(up.addr, ""),
        "    limits: { idle_timeout: 300ms }\n",
    );
    let gw = TestGateway::start(&config).await;
    let (mut ws, _) = connect(&format!("ws://{}/chat", gw.addr), &[])
        .await
        .unwrap();
    // Traffic keeps it open past the timeout.
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        ws.send(Message::text(format!("{i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("{i}"))
        );
    }
    let quiet = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed by the gateway");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    let waited = quiet.elapsed();
    assert!(waited >= Duration::from_millis(290), "{waited:?}");
    eventually("the upstream connection is closed", || {
        up.open_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn a_drain_lets_an_open_tunnel_finish() {
    let up = WsUpstream::start();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let (mut ws, _) = connect(&format!("ws://{}/chat", gw.addr), &[])
        .await
        .unwrap();
    let drain = tokio::spawn(gw.stop(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!drain.is_finished(), "the drain waits for the tunnel");
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
    let closed = Instant::now();
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    // The upstream has closed its end; the tunnel ends once the client's end closes too.
    drop(ws);
    let report = drain.await.unwrap();
    assert!(closed.elapsed() < Duration::from_secs(5));
    assert_eq!(report.abandoned, 0);
}

#[tokio::test]
async fn filters_see_the_upgrade_request_and_the_101() {
    let up = WsUpstream::start();
    let filters = format!(
        "  - name: headers
    module: {HEADERS_WASM}
    configuration:
      request:
        add: {{ x-seen-by-filter: \"${{request.header.upgrade}}\" }}
      response:
        add: {{ x-switched: \"yes\" }}"
    );
    let gw = TestGateway::start(&filters_config(up.addr, &filters, "[headers]")).await;
    let (mut ws, resp) = connect(&format!("ws://{}/chat", gw.addr), &[])
        .await
        .expect("handshake through a filter");
    assert_eq!(resp.headers()["x-switched"], "yes");
    assert_eq!(up.handshakes()[0]["x-seen-by-filter"], "websocket");
    ws.send(Message::text("through")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("through"));
}

#[tokio::test]
async fn an_open_tunnel_holds_its_upstream_connection_slot() {
    let up = WsUpstream::start();
    let config = simple_config(up.addr, "").replace(
        "    endpoints:\n",
        "    circuit_breaker: { max_connections: 1 }\n    endpoints:\n",
    );
    let gw = TestGateway::start(&config).await;
    let url = format!("ws://{}/chat", gw.addr);
    let (mut first, _) = connect(&url, &[]).await.unwrap();
    // The only upstream connection the cluster may have is the first tunnel.
    let refused = connect(&url, &[]).await.expect_err("over max_connections");
    let Error::Http(resp) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    first.send(Message::text("still mine")).await.unwrap();
    assert_eq!(
        first.next().await.unwrap().unwrap(),
        Message::text("still mine")
    );
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = first.next().await {}
    drop(first);
    // Once it has closed, the slot is free again.
    let until = Instant::now() + Duration::from_secs(2);
    let (mut second, _) = loop {
        match connect(&url, &[]).await {
            Ok(ws) => break ws,
            Err(e) => {
                assert!(Instant::now() < until, "slot never freed: {e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    second.send(Message::text("mine now")).await.unwrap();
    assert_eq!(
        second.next().await.unwrap().unwrap(),
        Message::text("mine now")
    );
}

#[tokio::test]
async fn websockets_work_over_a_tls_listener() {
    use rustygate_tests::tls::Pki;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let up = WsUpstream::start();
    let pki = Pki::new("websocket");
    let config = with_listener(
        &simple_config(up.addr, ""),
        &format!("    tls: {}\n", pki.listener_yaml()),
    );
    let gw = TestGateway::start(&config).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(pki.client_config(&[b"http/1.1"]))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let req = "wss://localhost/secure-chat".into_client_request().unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls)
        .await
        .expect("handshake over TLS");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("encrypted")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("encrypted")
    );
    assert_eq!(up.handshakes()[0]["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn a_tunnel_is_logged_when_it_ends_with_its_bytes_and_duration() {
    use rustygate_tests::process::{GatewayProcess, free_port};
    let up = WsUpstream::start();
    let (port, admin) = (free_port(), free_port());
    let mut gw = GatewayProcess::start(&format!(
        "listeners:
  - name: main
    address: 127.0.0.1:{port}
admin:
  address: 127.0.0.1:{admin}
clusters:
  - name: up
    endpoints: [ {{ url: http://{} }} ]
routes:
  - name: live
    cluster: up
",
        up.addr
    ))
    .await;
    let url = format!("ws://127.0.0.1:{port}/live");
    let until = Instant::now() + Duration::from_secs(10);
    let (mut ws, resp) = loop {
        match connect(&url, &[]).await {
            Ok(ws) => break ws,
            Err(e) => {
                assert!(Instant::now() < until, "gateway not up: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    // The 101 is logged as a request...
    let switched = gw.wait_for_log(&id, Duration::from_secs(5)).await;
    assert!(switched.contains(r#""status":101"#), "{switched}");
    // ...and the tunnel when it ends: 10 bytes of payload each way (masked from the client:
    // 6 bytes of frame head; 2 from the server), plus the close frames.
    ws.send(Message::text("0123456789")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("0123456789")
    );
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    let line = gw
        .wait_for_log(r#""message":"tunnel""#, Duration::from_secs(5))
        .await;
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["request_id"], id.as_str());
    assert_eq!(entry["route"], "live");
    assert_eq!(entry["end"], "closed");
    let (up_bytes, down_bytes) = (
        entry["bytes_up"].as_u64().unwrap(),
        entry["bytes_down"].as_u64().unwrap(),
    );
    assert!(up_bytes >= 16 && down_bytes >= 12, "{line}");
    assert!(entry["duration_ms"].as_f64().unwrap() > 0.0, "{line}");
}

#[tokio::test]
async fn filters_get_the_tunnels_bytes_as_bodies_and_end_with_the_tunnel() {
    let ws_up = WsUpstream::start();
    let http_up = Upstream::echo();
    let yaml = format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
clusters:
  - name: ws
    endpoints: [ {{ url: http://{} }} ]
  - name: http
    endpoints: [ {{ url: http://{} }} ]
filters:
  - name: probe
    module: {}
    configuration:
      log_properties: [response.code, request.size, response.size, request.duration]
routes:
  - {{ name: chat, match: {{ path: {{ prefix: /chat }} }}, cluster: ws, filters: [probe] }}
  - {{ name: other, cluster: http, filters: [probe] }}
",
        ws_up.addr,
        http_up.addr,
        rustygate_tests::ABI_PROBE_WASM
    );
    let gw = TestGateway::start(&yaml).await;
    // What the last `on_log` saw, as the probe reports it on the next response.
    let logged = || async {
        get(&gw.url("/report"))
            .await
            .header("x-logged")
            .map(str::to_owned)
    };
    let (mut ws, _) = connect(&format!("ws://{}/chat", gw.addr), &[])
        .await
        .expect("handshake through the probe");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    // Many body chunks each way, through the filter's body callbacks.
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    // The stream is not over while the tunnel is open: no `on_log` yet.
    assert_eq!(logged().await, None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);

    let until = Instant::now() + Duration::from_secs(5);
    let report = loop {
        if let Some(r) = logged().await
            && r.contains("response.code=101")
        {
            break r;
        }
        assert!(Instant::now() < until, "the tunnel's on_log never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let value = |key: &str| -> u64 {
        report
            .split(';')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{key} missing from {report}"))
            .parse()
            .unwrap()
    };
    // The client's frames went through on_http_request_body, the server's through
    // on_http_response_body, and the sizes are the bytes each way.
    assert!(value("request_body_calls") >= 2, "{report}");
    assert!(value("response_body_calls") >= 2, "{report}");
    assert!(value("request.size") > 256 * 1024, "{report}");
    assert!(value("response.size") > 256 * 1024, "{report}");
    assert!(value("request.duration") >= 200_000_000, "{report}");
}
