//! WebSocket over HTTP/2 (RFC 8441's extended CONNECT), as browsers open it on a connection
//! they already have: a hyper HTTP/2 client speaking WebSocket frames (tokio-tungstenite) over
//! the CONNECT stream, and the same real HTTP/1.1 WebSocket server upstream as the upgrade
//! tests use, which insists on a complete HTTP/1.1 handshake.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustygate_tests::client::h2_connection;
use rustygate_tests::tls::Pki;
use rustygate_tests::websocket::WsUpstream;
use rustygate_tests::{TestGateway, simple_config, with_listener};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = Empty<bytes::Bytes>;

/// An HTTP/2 connection to the gateway, with the server's settings received (the client
/// may send an extended CONNECT only once they say it may).
async fn h2(gw: &TestGateway) -> SendRequest<Body> {
    let mut send = h2_connection(gw.addr).await;
    // One exchange makes sure the server's SETTINGS have arrived.
    let warm = Request::get(gw.url("/warm-up")).body(Body::new()).unwrap();
    let _ = send.send_request(warm).await.unwrap();
    send
}

fn extended_connect(gw: &TestGateway, path: &str) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(gw.url(path))
        .header("sec-websocket-version", "13")
        .header("x-client", "h2")
        .body(Body::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    req
}

fn listener_config(up: &WsUpstream, route: &str) -> String {
    with_listener(
        &simple_config(up.addr, route),
        "    http2_extended_connect: true\n",
    )
}

#[tokio::test]
async fn a_websocket_over_http2_reaches_an_http1_websocket_server() {
    let up = WsUpstream::start();
    let gw = TestGateway::start(&listener_config(&up, "")).await;
    let mut send = h2(&gw).await;
    let mut resp = send
        .send_request(extended_connect(&gw, "/chat?room=2"))
        .await
        .unwrap();
    // The upstream's 101 as RFC 8441 answers: 200, without the HTTP/1.1 handshake's fields.
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!resp.headers().contains_key("sec-websocket-accept"));
    assert!(!resp.headers().contains_key("upgrade"));
    assert!(resp.headers().contains_key("x-request-id"));
    let stream = hyper::upgrade::on(&mut resp).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(stream), Role::Client, None).await;
    ws.send(Message::text("over h2")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over h2"));
    let big: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));

    // The upstream got a whole HTTP/1.1 handshake: the upgrade fields and a key, made by the
    // gateway (tungstenite refuses a handshake without one).
    let seen = up.handshakes();
    assert_eq!(seen.len(), 1);
    let h = &seen[0];
    assert_eq!(h["upgrade"], "websocket");
    assert_eq!(h["sec-websocket-version"], "13");
    assert_eq!(h["sec-websocket-key"].len(), 24);
    assert_eq!(h["x-client"], "h2");

    // The same connection serves other streams beside the WebSocket.
    let beside = Request::get(gw.url("/beside")).body(Body::new()).unwrap();
    let _ = send.send_request(beside).await.unwrap();
    ws.send(Message::text("still open")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still open")
    );
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while up.open_connections() > 0 {
        assert!(
            std::time::Instant::now() < until,
            "the upstream connection closes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.metrics_with(r#"rustygate_requests_total{route="all",status="101"} 1"#)
        .await;
}

/// As a browser opens it: TLS, `h2` by ALPN, then the extended CONNECT on that connection.
#[tokio::test]
async fn over_tls_as_a_browser_opens_it() {
    let up = WsUpstream::start();
    let pki = Pki::new("websocket-h2");
    let settings = format!(
        "    tls: {}\n    http2_extended_connect: true\n",
        pki.listener_yaml()
    );
    let gw = TestGateway::start(&with_listener(&simple_config(up.addr, ""), &settings)).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(pki.client_config(&[b"h2", b"http/1.1"]))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let url = format!("https://localhost:{}", gw.addr.port());
    let warm = Request::get(format!("{url}/warm-up"))
        .body(Body::new())
        .unwrap();
    let _ = send.send_request(warm).await.unwrap();
    let mut req = extended_connect(&gw, "/chat");
    *req.uri_mut() = format!("{url}/chat").parse().unwrap();
    let mut resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let stream = hyper::upgrade::on(&mut resp).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(stream), Role::Client, None).await;
    ws.send(Message::text("secure")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("secure"));
    assert_eq!(up.handshakes()[0]["x-forwarded-proto"], "https");
}

/// The route decides, as for an HTTP/1.1 upgrade: one that allows no upgrade answers 403.
#[tokio::test]
async fn a_route_that_allows_no_upgrade_refuses_it_over_http2_too() {
    let up = WsUpstream::start();
    let route = "  - name: closed\n    match: { path: { prefix: /closed } }\n    cluster: up\n    upgrades: []\n";
    let gw = TestGateway::start(&listener_config(&up, route)).await;
    let mut send = h2(&gw).await;
    let resp = send
        .send_request(extended_connect(&gw, "/closed/chat"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "upgrade_refused");
    assert!(up.handshakes().is_empty());
}

/// Off by default, as in Envoy: the server does not offer it, and a client cannot send it.
#[tokio::test]
async fn without_the_listener_setting_http2_clients_are_not_offered_it() {
    let up = WsUpstream::start();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let mut send = h2(&gw).await;
    let refused = send.send_request(extended_connect(&gw, "/chat")).await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(up.handshakes().is_empty());
}
