//! A listener behind a load balancer that speaks the PROXY protocol (`proxy_protocol: true`):
//! the client's address comes from each connection's header, for `X-Forwarded-For` and for the
//! filters; a connection without a valid header is closed unanswered.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use rustygate_tests::upstream::Upstream;
use rustygate_tests::{ABI_PROBE_WASM, TestGateway, simple_config, with_listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A PROXY protocol listener (with `settings`, lines indented as the listener's fields) to
/// `up`, with the abi-probe filter on every route copying the connection's addresses, as
/// filters read them, into response headers.
fn config(up: SocketAddr, settings: &str) -> String {
    let probe = format!(
        "filters:\n  - name: probe\n    module: {ABI_PROBE_WASM}\n    \
         configuration: {{ properties: [source.address, destination.address] }}\nroutes:\n"
    );
    let yaml = simple_config(up, "").replace("routes:\n", &probe).replace(
        "    cluster: up\n",
        "    cluster: up\n    filters: [probe]\n",
    );
    with_listener(&yaml, &format!("    proxy_protocol: true\n{settings}"))
}

const REQUEST: &[u8] = b"GET /who HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";

/// Writes `pieces` on a new connection, 50 ms apart, and reads until the gateway closes it
/// (a close that leaves the client's bytes unread arrives as a reset).
async fn exchange(gw: &TestGateway, pieces: &[&[u8]]) -> String {
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.write_all(piece).await.unwrap();
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the gateway closes the connection");
        match read {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{e}"),
        }
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

/// The echo's JSON body: the request as the upstream saw it.
fn echoed(answer: &str) -> serde_json::Value {
    let body = answer.split_once("\r\n\r\n").expect("a response").1;
    serde_json::from_str(body).expect("the echo's JSON")
}

/// The upstream's view of `X-Forwarded-For`.
fn forwarded_for(answer: &str) -> String {
    echoed(answer)["headers"]["x-forwarded-for"][0]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_version_1_header_names_the_client() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&config(up.addr, "")).await;
    let header = b"PROXY TCP4 203.0.113.7 192.0.2.10 56324 443\r\n";
    // In the same write as the request, as load balancers often send it.
    let answer = exchange(&gw, &[&[header.as_slice(), REQUEST].concat()]).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert_eq!(forwarded_for(&answer), "203.0.113.7");
    assert!(
        answer.contains("x-prop-source-address: 203.0.113.7:56324\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("x-prop-destination-address: 192.0.2.10:443\r\n"),
        "{answer}"
    );
    // In pieces, the request after it: the header is read to its end and no further.
    let answer = exchange(
        &gw,
        &[
            b"PROXY TCP4 198.51",
            b".100.9 192.0.2.10 1 443\r",
            b"\n",
            REQUEST,
        ],
    )
    .await;
    assert_eq!(forwarded_for(&answer), "198.51.100.9");
}

/// A version 2 header for the PROXY command (`command` 1) or LOCAL (0), over TCP/IPv6.
fn v2(command: u8, source: Ipv6Addr, port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x20 | command, 0x21, 0, 36 + 5]);
    h.extend_from_slice(&source.octets());
    h.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&8080u16.to_be_bytes());
    // A TLV (PP2_TYPE_NOOP) the gateway skips.
    h.extend_from_slice(&[0x04, 0, 2, 0, 0]);
    h
}

#[tokio::test]
async fn a_version_2_header_names_the_client_and_local_keeps_the_connection_own() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&config(up.addr, "")).await;
    let client: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let answer = exchange(&gw, &[&v2(1, client, 40000), REQUEST]).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert_eq!(forwarded_for(&answer), "2001:db8::7");
    assert!(
        answer.contains("x-prop-source-address: [2001:db8::7]:40000\r\n"),
        "{answer}"
    );
    // LOCAL: the balancer's own connection (its health check), whose addresses stand.
    let answer = exchange(&gw, &[&[v2(0, client, 40000), REQUEST.to_vec()].concat()]).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert_eq!(forwarded_for(&answer), "127.0.0.1");
}

/// Without a header, with a broken one or with one that does not end in time, nothing is
/// answered and nothing forwarded: the connection is closed, and counted.
#[tokio::test]
async fn a_connection_without_a_valid_header_is_closed_unanswered() {
    let up = Upstream::echo();
    let yaml = config(up.addr, "    limits: { header_read_timeout: 300ms }\n");
    let gw = TestGateway::start(&yaml).await;
    for bad in [
        REQUEST.to_vec(),
        b"PROXY TCP4 203.0.113.7 ".to_vec(),
        [
            b"PROXY TCP4 203.0.113.7 192.0.2.10 56324\r\n".as_slice(),
            REQUEST,
        ]
        .concat(),
        [
            b"PROXY TCP4 2001:db8::7 192.0.2.10 1 2\r\n".as_slice(),
            REQUEST,
        ]
        .concat(),
    ] {
        assert_eq!(
            exchange(&gw, &[&bad]).await,
            "",
            "{:?}",
            String::from_utf8_lossy(&bad)
        );
    }
    assert_eq!(up.requests(), 0);
    gw.metrics_with(
        "rustygate_connections_rejected_total{listener=\"main\",reason=\"proxy_protocol\"} 4",
    )
    .await;
}

/// On a TLS listener the header comes first, before the client's handshake, as load balancers
/// that pass TLS through send it.
#[tokio::test]
async fn the_header_comes_before_the_tls_handshake() {
    let up = Upstream::echo();
    let pki = rustygate_tests::tls::Pki::new("proxy-protocol");
    let yaml = config(up.addr, &format!("    tls: {}\n", pki.listener_yaml()));
    let gw = TestGateway::start(&yaml).await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.10 56324 443\r\n")
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(pki.client_config(&[]))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(REQUEST).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out))
        .await
        .expect("the answer and the close")
        .unwrap();
    let answer = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert_eq!(forwarded_for(&answer), "203.0.113.7");
}

/// `allow_requests_without_proxy_protocol`: connections with a header and without one are both
/// served, and a request that merely begins like a header (`PROPFIND` as `PROXY `) loses no
/// byte to the check, even when its first bytes arrive alone.
#[tokio::test]
async fn an_optional_header_serves_connections_without_one() {
    let up = Upstream::echo();
    let yaml = config(up.addr, "    allow_requests_without_proxy_protocol: true\n");
    let gw = TestGateway::start(&yaml).await;
    let answer = exchange(&gw, &[REQUEST]).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert_eq!(forwarded_for(&answer), "127.0.0.1");
    let header = b"PROXY TCP4 203.0.113.7 192.0.2.10 56324 443\r\n";
    let answer = exchange(&gw, &[b"PROX", &[&header[4..], REQUEST].concat()]).await;
    assert_eq!(forwarded_for(&answer), "203.0.113.7");
    let propfind = b"PROPFIND /who HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";
    let answer = exchange(&gw, &[&propfind[..3], &propfind[3..]]).await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert_eq!(echoed(&answer)["method"], "propfind", "{answer}");
    // A header that begins but breaks is still refused.
    let broken = [b"PROXY TCP9 x\r\n".as_slice(), REQUEST].concat();
    assert_eq!(exchange(&gw, &[&broken]).await, "");
}
