//! `CONNECT` through the gateway, as Envoy proxies it to an upstream that terminates it: a
//! real forward proxy upstream (hyper, which opens a TCP connection to the target and answers
//! 200), a TCP echo server as the tunnel's far end, and raw clients that see every byte.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustygate_tests::client::h2_connection;
use rustygate_tests::{ABI_PROBE_WASM, TestGateway, simple_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP server that answers every read with the same bytes, prefixed by `echo:` once per
/// connection, so a client can tell the far end's bytes from the proxies'.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                if s.write_all(b"echo:").await.is_err() {
                    return;
                }
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A forward proxy: a CONNECT to a target it can reach gets 200 and a tunnel to it; one to
/// `refused.invalid:443` gets 403 with a body. Records the heads it was sent.
struct ForwardProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<http::request::Parts>>>,
}

impl ForwardProxy {
    async fn start() -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let record = record.clone();
                        async move { Ok::<_, std::convert::Infallible>(Self::serve(req, &record)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        ForwardProxy { addr, seen }
    }

    fn serve(
        mut req: Request<Incoming>,
        record: &Mutex<Vec<http::request::Parts>>,
    ) -> Response<Full<bytes::Bytes>> {
        let target = req.uri().to_string();
        let upgrade = hyper::upgrade::on(&mut req);
        record.lock().push(req.into_parts().0);
        if target == "refused.invalid:443" {
            return Response::builder()
                .status(StatusCode::FORBIDDEN)
                .body(Full::from("not that one"))
                .unwrap();
        }
        tokio::spawn(async move {
            let (Ok(client), Ok(mut far)) = (upgrade.await, TcpStream::connect(&target).await)
            else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut far).await;
        });
        Response::new(Full::default())
    }

    fn seen(&self) -> Vec<http::request::Parts> {
        std::mem::take(&mut *self.seen.lock())
    }
}

/// A CONNECT route to the forward proxy (with `route`'s lines, indented four spaces) beside an
/// ordinary one, and the abi-probe filter for the routes that name it.
fn config(proxy: SocketAddr, route: &str) -> String {
    let tunnel =
        format!("  - name: tunnel\n    match: {{ methods: [CONNECT] }}\n    cluster: up\n{route}");
    let probe = format!(
        "filters:\n  - name: probe\n    module: {ABI_PROBE_WASM}\n    \
         configuration: {{ request_fields: [':method', ':path', ':authority'] }}\nroutes:\n"
    );
    simple_config(proxy, &tunnel).replace("routes:\n", &probe)
}

/// Sends `head` (and anything after it) on a new raw connection; returns the answer's head.
async fn send_raw(gw: &TestGateway, head: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let answer = read_head(&mut s).await;
    (s, answer)
}

/// Opens a tunnel to `far` on a raw connection; returns the answer's head.
async fn open_tunnel(gw: &TestGateway, far: SocketAddr) -> (TcpStream, String) {
    send_raw(
        gw,
        &format!("CONNECT {far} HTTP/1.1\r\nHost: {far}\r\n\r\n"),
    )
    .await
}

/// Reads a response head (through its blank line) byte by byte, leaving what follows unread.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("a response head within 5 s")
            .unwrap();
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

/// The JSON body that follows `head` (a response of the gateway's own, with a length).
async fn read_json_body(s: &mut TcpStream, head: &str) -> serde_json::Value {
    assert!(head.contains("content-type: application/json"), "{head}");
    let len: usize = head
        .split("content-length: ")
        .nth(1)
        .and_then(|r| r.split("\r\n").next())
        .unwrap()
        .parse()
        .unwrap();
    serde_json::from_str(&read_exactly(s, len).await).unwrap()
}

async fn read_exactly(s: &mut TcpStream, n: usize) -> String {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("the bytes within 5 s")
        .unwrap();
    String::from_utf8(buf).unwrap()
}

#[tokio::test]
async fn a_connect_the_route_allows_becomes_a_tunnel_to_the_far_end() {
    let far = echo_server().await;
    let proxy = ForwardProxy::start().await;
    let gw = TestGateway::start(&config(proxy.addr, "    upgrades: [CONNECT]\n")).await;
    let s = tunnel_with_hello(&gw, &far.to_string()).await;

    let seen = proxy.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::CONNECT);
    assert_eq!(seen[0].uri.to_string(), far.to_string());
    assert_eq!(seen[0].headers["host"], far.to_string().as_str());
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
    closes_after_client(s).await;
}

/// The client's close ends the tunnel: the gateway passes it on and closes its side.
async fn closes_after_client(mut s: TcpStream) {
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the tunnel closes")
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

/// A CONNECT to `target` whose first tunnelled bytes ride with the request, before the
/// answer (they are held until the tunnel is open, then go through it): the 200 and two
/// round trips through the echo server at the far end.
async fn tunnel_with_hello(gw: &TestGateway, target: &str) -> TcpStream {
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\nhello");
    let (mut s, head) = send_raw(gw, &request).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // A 2xx to CONNECT has no body and says no length (RFC 9110 §9.3.6).
    assert!(!head.contains("content-length"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(head.contains("x-request-id: "), "{head}");
    assert_eq!(read_exactly(&mut s, 10).await, "echo:hello");
    s.write_all(b" and more").await.unwrap();
    assert_eq!(read_exactly(&mut s, 9).await, " and more");
    s
}

/// An HTTP/2 CONNECT stream as a tunnel (hyper's client), over a connection that goes on
/// serving other streams.
async fn h2_tunnel(
    gw: &TestGateway,
    far: SocketAddr,
) -> (
    TokioIo<hyper::upgrade::Upgraded>,
    hyper::client::conn::http2::SendRequest<Empty<bytes::Bytes>>,
) {
    let mut send = h2_connection(gw.addr).await;
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(far.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let mut resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let tunnel = hyper::upgrade::on(&mut resp).await.unwrap();
    (TokioIo::new(tunnel), send)
}

async fn echoed<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    what: &str,
    expected: &str,
) {
    s.write_all(what.as_bytes()).await.unwrap();
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .expect("the echo within 5 s")
        .unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), expected);
}

#[tokio::test]
async fn an_http2_connect_tunnels_too() {
    let far = echo_server().await;
    let proxy = ForwardProxy::start().await;
    let gw = TestGateway::start(&config(proxy.addr, "    upgrades: [CONNECT]\n")).await;
    let (mut tunnel, mut send) = h2_tunnel(&gw, far).await;
    echoed(&mut tunnel, "over h2", "echo:over h2").await;
    assert_eq!(proxy.seen()[0].uri.to_string(), far.to_string());
    // The connection serves other streams beside the tunnel.
    let req = Request::get(gw.url("/beside")).body(Empty::new()).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    echoed(&mut tunnel, "still", "still").await;
    assert_eq!(proxy.seen()[0].uri.path(), "/beside");
}

/// A drain waits for an HTTP/2 tunnel as for an HTTP/1.1 one.
#[tokio::test]
async fn a_drain_lets_an_http2_tunnel_finish() {
    let far = echo_server().await;
    let proxy = ForwardProxy::start().await;
    let gw = TestGateway::start(&config(proxy.addr, "    upgrades: [CONNECT]\n")).await;
    let (mut tunnel, _send) = h2_tunnel(&gw, far).await;
    echoed(&mut tunnel, "a", "echo:a").await;
    let drain = tokio::spawn(gw.stop(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!drain.is_finished(), "the drain waits for the tunnel");
    echoed(&mut tunnel, "during the drain", "during the drain").await;
    tunnel.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut rest)).await;
    let report = tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("the drain ends with the tunnel")
        .unwrap();
    assert_eq!(report.abandoned, 0);
}

/// As in Envoy, CONNECT is off unless configured: 403, and nothing reaches the upstream.
#[tokio::test]
async fn connect_is_refused_where_the_route_does_not_allow_it() {
    let far = echo_server().await;
    let proxy = ForwardProxy::start().await;
    let gw = TestGateway::start(&config(proxy.addr, "")).await;
    let (mut s, head) = open_tunnel(&gw, far).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    let body = read_json_body(&mut s, &head).await;
    assert_eq!(body["error"], "upgrade_refused", "{body}");
    assert_eq!(
        body["message"], "protocol upgrade not allowed: route tunnel does not allow CONNECT",
        "{body}"
    );
    assert!(proxy.seen().is_empty());
}

/// CONNECT names `host:port` (RFC 9112 §3.2.3): a path is a bad request, on any route.
#[tokio::test]
async fn a_connect_to_a_path_is_a_bad_request() {
    let proxy = ForwardProxy::start().await;
    let gw = TestGateway::start(&config(proxy.addr, "    upgrades: [CONNECT]\n")).await;
    for target in ["/api/test", "http://a.example/x", "a.example"] {
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: a.example\r\n\r\n");
        let (_, head) = send_raw(&gw, &request).await;
        assert!(head.starts_with("http/1.1 400"), "{target}: {head}");
    }
    assert!(proxy.seen().is_empty());
}

/// The upstream's refusal reaches the client as any response does, and the connection goes
/// on: what the client sends next is its next request.
#[tokio::test]
async fn a_connect_the_upstream_refuses_leaves_an_ordinary_connection() {
    let proxy = ForwardProxy::start().await;
    let gw = TestGateway::start(&config(proxy.addr, "    upgrades: [CONNECT]\n")).await;
    let request = "CONNECT refused.invalid:443 HTTP/1.1\r\nHost: refused.invalid:443\r\n\r\n";
    let (mut s, head) = send_raw(&gw, request).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(head.contains("content-length: 12"), "{head}");
    assert_eq!(read_exactly(&mut s, 12).await, "not that one");
    s.write_all(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let seen = proxy.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri.path(), "/after");
}

/// The route's filters see the CONNECT as Envoy's do (`:authority`, no `:path`), and stay
/// with the tunnel; a route can match the target's host.
#[tokio::test]
async fn filters_see_a_connect_without_a_path() {
    let far = echo_server().await;
    let proxy = ForwardProxy::start().await;
    let route = "    upgrades: [CONNECT]\n    filters: [probe]\n";
    let yaml = config(proxy.addr, route).replace(
        "match: { methods: [CONNECT] }",
        "match: { methods: [CONNECT], host: 127.0.0.1 }",
    );
    let gw = TestGateway::start(&yaml).await;
    let (mut s, head) = open_tunnel(&gw, far).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-request-method: connect\r\n"), "{head}");
    assert!(head.contains("x-request-path: -\r\n"), "{head}");
    assert!(
        head.contains(&format!("x-request-authority: {far}\r\n")),
        "{head}"
    );
    s.write_all(b"through the filter").await.unwrap();
    assert_eq!(read_exactly(&mut s, 23).await, "echo:through the filter");
}

/// The hyper client, for completeness of what a library user sees: the same refusal.
#[tokio::test]
async fn connect_refused_by_default_through_a_client_library() {
    let proxy = ForwardProxy::start().await;
    let gw = TestGateway::start(&config(proxy.addr, "")).await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("a.example:443")
        .header("host", "a.example:443")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("upgrade_refused"),
        "{body:?}"
    );
}

/// `connect: terminate` (Envoy's `connect_config`): the gateway answers the CONNECT itself
/// and the tunnel goes to the cluster's endpoint, whatever the target; the endpoint gets the
/// client's bytes and nothing of the request.
#[tokio::test]
async fn a_terminated_connect_tunnels_to_the_cluster_itself() {
    let far = echo_server().await;
    let route = "    upgrades: [CONNECT]\n    connect: terminate\n";
    let gw = TestGateway::start(&config(far, route)).await;
    // The echo server's first bytes are the client's: it never saw the CONNECT's head.
    let s = tunnel_with_hello(&gw, "anywhere.example:443").await;
    closes_after_client(s).await;
}

#[tokio::test]
async fn a_terminated_http2_connect_tunnels_to_the_cluster() {
    let far = echo_server().await;
    let route = "    upgrades: [CONNECT]\n    connect: terminate\n";
    // The cluster's protocol is HTTP's, which a terminated CONNECT does not speak to it.
    let yaml =
        config(far, route).replace("    endpoints:\n", "    protocol: http2\n    endpoints:\n");
    let gw = TestGateway::start(&yaml).await;
    let target: SocketAddr = "192.0.2.1:443".parse().unwrap();
    let (mut tunnel, _send) = h2_tunnel(&gw, target).await;
    echoed(&mut tunnel, "over h2", "echo:over h2").await;
    echoed(&mut tunnel, " again", " again").await;
}

/// An endpoint that cannot be reached is the gateway's usual 502; the client's connection
/// stays an HTTP one.
#[tokio::test]
async fn a_terminated_connect_to_an_unreachable_endpoint_is_a_502() {
    let (_refusing, addr) = rustygate_tests::refusing_address();
    let route = "    upgrades: [CONNECT]\n    connect: terminate\n";
    let gw = TestGateway::start(&config(addr, route)).await;
    let (mut s, head) = open_tunnel(&gw, addr).await;
    assert!(head.starts_with("http/1.1 502"), "{head}");
    let body = read_json_body(&mut s, &head).await;
    assert_eq!(body["error"], "connect_failure", "{body}");
}

/// The filters see the CONNECT and the gateway's 200 (the probe copies request fields onto
/// the response), and the tunnel's bytes pass their body callbacks.
#[tokio::test]
async fn filters_see_a_terminated_connect_and_its_answer() {
    let far = echo_server().await;
    let route = "    upgrades: [CONNECT]\n    connect: terminate\n    filters: [probe]\n";
    let gw = TestGateway::start(&config(far, route)).await;
    let (mut s, head) = send_raw(
        &gw,
        "CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-request-method: connect\r\n"), "{head}");
    assert!(head.contains("x-request-path: -\r\n"), "{head}");
    assert!(
        head.contains("x-request-authority: db.internal:5432\r\n"),
        "{head}"
    );
    s.write_all(b"through the filter").await.unwrap();
    assert_eq!(read_exactly(&mut s, 23).await, "echo:through the filter");
}

/// A 101 is no answer to a CONNECT (RFC 9110 §15.2.2: it answers an `Upgrade`): the client
/// gets a 502 that says so, and no tunnel.
#[tokio::test]
async fn a_101_to_a_connect_is_a_bad_gateway() {
    let addr = rustygate_tests::upstream::canned(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    )
    .await;
    let gw = TestGateway::start(&config(addr, "    upgrades: [CONNECT]\n")).await;
    let (mut s, head) = send_raw(
        &gw,
        "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 502"), "{head}");
    let body = read_json_body(&mut s, &head).await;
    assert_eq!(body["error"], "protocol_error", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("101 Switching Protocols to a CONNECT"),
        "{body}"
    );
}

/// A copy could not carry a tunnel's bytes: a route's mirror gets its ordinary requests, not
/// its CONNECTs.
#[tokio::test]
async fn connects_are_not_mirrored() {
    let far = echo_server().await;
    let mirror = ForwardProxy::start().await;
    let route =
        "    upgrades: [CONNECT]\n    connect: terminate\n    mirror: [ { cluster: shadow } ]\n";
    let yaml = config(far, route)
        .replace(
            "clusters:\n",
            &format!(
                "clusters:\n  - name: shadow\n    endpoints:\n      - url: http://{}\n",
                mirror.addr
            ),
        )
        .replace(
            "  - name: all\n    cluster: up\n",
            "  - name: all\n    cluster: up\n    mirror: [ { cluster: shadow } ]\n",
        );
    let gw = TestGateway::start(&yaml).await;
    let s = tunnel_with_hello(&gw, "db.internal:5432").await;
    closes_after_client(s).await;
    // An ordinary request on the same gateway is copied (the echo server answers it with
    // its greeting; what matters here is the copy).
    let (_s, _) = send_raw(&gw, "GET /copied HTTP/1.1\r\nHost: a\r\n\r\n").await;
    for _ in 0..500 {
        if !mirror.seen.lock().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = mirror.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].uri.path(), "/copied");
}
