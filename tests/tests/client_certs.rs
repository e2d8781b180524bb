//! A mutual-TLS client's identity beyond the handshake: what filters read of the verified
//! certificate (Envoy's `connection.*_peer_certificate` properties), and what the upstream
//! gets in `x-forwarded-client-cert` under each `forward_client_cert` mode.

use http::StatusCode;
use rustygate_tests::client::{Seen, get_with_headers};
use rustygate_tests::tls::{self, CLIENT_DNS_SANS, CLIENT_SUBJECT, CLIENT_URI_SAN, Pki};
use rustygate_tests::upstream::Upstream;
use rustygate_tests::{ABI_PROBE_WASM, TestGateway};

const SPOOFED: &str = "Hash=0000;Subject=\"CN=admin\"";

/// A gateway with one listener (`listener_extra` added to it) in front of an echo upstream.
fn config(up: &Upstream, listener_extra: &str, filters: &str) -> String {
    format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
{listener_extra}logging: {{ access_log: false }}
clusters:
  - name: up
    endpoints: [ {{ url: http://{} }} ]
{filters}routes:
  - name: all
    cluster: up
",
        up.addr
    )
}

/// The `tls:` block of a listener that verifies clients against `pki`'s authority
/// (`require`: whether a certificate is required).
fn mtls(pki: &Pki, require: bool) -> String {
    format!(
        "    tls: {{ certificate_chain: {}, private_key: {}, client_ca_certificates: {}, require_client_certificate: {require} }}\n",
        pki.chain.display(),
        pki.key.display(),
        pki.ca.display()
    )
}

/// The `x-forwarded-client-cert` values the echo upstream received.
fn xfcc(seen: &Seen) -> Vec<String> {
    let echo = seen.json();
    echo["headers"]["x-forwarded-client-cert"]
        .as_array()
        .map(|v| v.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

async fn with_cert(gw: &TestGateway, pki: &Pki, headers: &[(&str, &str)]) -> Seen {
    let seen = tls::get_with(
        gw.addr,
        pki.client_config_with_cert(pki),
        "localhost",
        "/",
        headers,
    )
    .await
    .unwrap()
    .seen;
    assert_eq!(seen.status, StatusCode::OK);
    seen
}

/// A request carrying a made-up XFCC from a client that presents no certificate.
async fn without_cert(gw: &TestGateway, pki: &Pki) -> Seen {
    tls::get_with(
        gw.addr,
        pki.client_config(&[]),
        "localhost",
        "/",
        &[("x-forwarded-client-cert", SPOOFED)],
    )
    .await
    .unwrap()
    .seen
}

#[tokio::test]
async fn filters_read_the_verified_certificates_subject_and_names() {
    let up = Upstream::echo();
    let pki = Pki::new("identity");
    let filters = format!(
        "filters:\n  - name: probe\n    module: {ABI_PROBE_WASM}\n    configuration: {{ properties: [connection.subject_peer_certificate, connection.uri_san_peer_certificate, connection.dns_san_peer_certificate] }}\n"
    );
    let yaml = config(&up, &mtls(&pki, false), &filters).replace(
        "    cluster: up\n",
        "    cluster: up\n    filters: [probe]\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let seen = with_cert(&gw, &pki, &[]).await;
    assert_eq!(
        seen.header("x-prop-connection-subject_peer_certificate"),
        Some(CLIENT_SUBJECT)
    );
    // Envoy gives the first name of each kind.
    assert_eq!(
        seen.header("x-prop-connection-uri_san_peer_certificate"),
        Some(CLIENT_URI_SAN)
    );
    assert_eq!(
        seen.header("x-prop-connection-dns_san_peer_certificate"),
        Some(CLIENT_DNS_SANS[0])
    );
    // Without a certificate there is nothing to read.
    let anonymous = tls::get(gw.addr, pki.client_config(&[]), "/")
        .await
        .unwrap()
        .seen;
    assert_eq!(
        anonymous.header("x-prop-connection-subject_peer_certificate"),
        Some("<none>")
    );
}

#[tokio::test]
async fn by_default_a_client_cannot_pass_off_an_x_forwarded_client_cert() {
    let up = Upstream::echo();
    // In the clear...
    let gw = TestGateway::start(&config(&up, "", "")).await;
    let seen = get_with_headers(&gw.url("/"), &[("x-forwarded-client-cert", SPOOFED)]).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(xfcc(&seen).is_empty(), "{:?}", xfcc(&seen));
    // ...and from a client with a verified certificate.
    let pki = Pki::new("sanitize");
    let gw = TestGateway::start(&config(&up, &mtls(&pki, true), "")).await;
    let seen = with_cert(&gw, &pki, &[("x-forwarded-client-cert", SPOOFED)]).await;
    assert!(xfcc(&seen).is_empty(), "{:?}", xfcc(&seen));
}

#[tokio::test]
async fn sanitize_set_and_append_forward_describe_the_verified_certificate() {
    let up = Upstream::echo();
    let pki = Pki::new("xfcc-set");
    let element = format!(
        "Hash={};Subject=\"{CLIENT_SUBJECT}\";URI={CLIENT_URI_SAN};DNS={};DNS={}",
        pki.client_cert_sha256(),
        CLIENT_DNS_SANS[0],
        CLIENT_DNS_SANS[1]
    );
    let details = "    client_cert_details: [subject, uri, dns]\n";
    let set = format!(
        "{}    forward_client_cert: sanitize_set\n{details}",
        mtls(&pki, false)
    );
    let gw = TestGateway::start(&config(&up, &set, "")).await;
    let seen = with_cert(&gw, &pki, &[("x-forwarded-client-cert", SPOOFED)]).await;
    assert_eq!(xfcc(&seen), std::slice::from_ref(&element));
    // A client without a certificate gets nothing set, and what it sent removed.
    let anonymous = without_cert(&gw, &pki).await;
    assert!(xfcc(&anonymous).is_empty());
    // Only the hash unless details are asked for.
    let bare = format!(
        "{}    forward_client_cert: sanitize_set\n",
        mtls(&pki, false)
    );
    let gw = TestGateway::start(&config(&up, &bare, "")).await;
    let seen = with_cert(&gw, &pki, &[]).await;
    assert_eq!(xfcc(&seen), [format!("Hash={}", pki.client_cert_sha256())]);

    let append = format!(
        "{}    forward_client_cert: append_forward\n{details}",
        mtls(&pki, false)
    );
    let gw = TestGateway::start(&config(&up, &append, "")).await;
    let seen = with_cert(&gw, &pki, &[("x-forwarded-client-cert", SPOOFED)]).await;
    assert_eq!(xfcc(&seen), [format!("{SPOOFED},{element}")]);
}

#[tokio::test]
async fn forward_only_modes_pass_the_header_on_as_sent() {
    let up = Upstream::echo();
    let pki = Pki::new("xfcc-forward");
    let forward = format!(
        "{}    forward_client_cert: forward_only\n",
        mtls(&pki, false)
    );
    let gw = TestGateway::start(&config(&up, &forward, "")).await;
    let seen = with_cert(&gw, &pki, &[("x-forwarded-client-cert", SPOOFED)]).await;
    assert_eq!(xfcc(&seen), [SPOOFED]);
    // forward_only trusts only clients with a verified certificate.
    let anonymous = without_cert(&gw, &pki).await;
    assert!(xfcc(&anonymous).is_empty());
    // always_forward_only: a listener behind a proxy that sets the header itself.
    let gw = TestGateway::start(&config(
        &up,
        "    forward_client_cert: always_forward_only\n",
        "",
    ))
    .await;
    let seen = get_with_headers(&gw.url("/"), &[("x-forwarded-client-cert", SPOOFED)]).await;
    assert_eq!(xfcc(&seen), [SPOOFED]);
}
