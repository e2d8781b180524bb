//! TLS on listeners: a real TLS client (rustls, trusting only a test authority) through the
//! gateway to a plain-HTTP upstream, over HTTP/1.1 and over HTTP/2 chosen by ALPN; what a
//! client that does not speak TLS gets; certificates that cannot be used are refused at load,
//! by `rustygate validate` as by a start, with the file named.

use std::time::{Duration, Instant};

use http::{StatusCode, Version};
use rustygate_tests::client::get;
use rustygate_tests::process::{GatewayProcess, free_port, validate};
use rustygate_tests::reload::replace;
use rustygate_tests::tls::{self, Pki};
use rustygate_tests::upstream::Upstream;
use rustygate_tests::{ABI_PROBE_WASM, HEADERS_WASM, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One TLS listener (`main`) in front of `upstream`, with `filters` on its route.
fn config(upstream: std::net::SocketAddr, tls: &str, filters: &str) -> String {
    format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    tls: {tls}
logging: {{ access_log: false }}
clusters:
  - name: up
    endpoints: [ {{ url: http://{upstream} }} ]
{filters}routes:
  - name: all
    cluster: up
"
    )
}

#[tokio::test]
async fn https_clients_reach_the_upstream_over_http1_and_http2() {
    let up = Upstream::echo();
    let pki = Pki::new("versions");
    let gw = TestGateway::start(&config(up.addr, &pki.listener_yaml(), "")).await;
    for (offer, alpn, version) in [
        (
            &[&b"http/1.1"[..]][..],
            Some(&b"http/1.1"[..]),
            Version::HTTP_11,
        ),
        (
            &[&b"h2"[..], &b"http/1.1"[..]][..],
            Some(&b"h2"[..]),
            Version::HTTP_2,
        ),
        // A client that offers nothing gets HTTP/1.1.
        (&[][..], None, Version::HTTP_11),
    ] {
        let seen = tls::get(gw.addr, pki.client_config(offer), "/hello?x=1")
            .await
            .unwrap();
        assert_eq!(seen.alpn.as_deref(), alpn);
        assert_eq!(seen.version, version);
        assert_eq!(seen.seen.status, StatusCode::OK);
        let echo = seen.seen.json();
        assert_eq!(echo["path"], "/hello?x=1");
        // The upstream learns the client came over TLS.
        assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https", "{echo}");
    }
}

/// A request head refused before it is parsed gets the same JSON answer over TLS, written
/// through the TLS session before it closes.
#[tokio::test]
async fn a_malformed_head_over_tls_gets_the_json_400() {
    let up = Upstream::echo();
    let pki = Pki::new("malformed");
    let gw = TestGateway::start(&config(up.addr, &pki.listener_yaml(), "")).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(pki.client_config(&[]))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /x HTTP/1.1\r\nhost: localhost\r\nX: a\x01b\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    // The gateway ends the session (close_notify) after the answer.
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out))
        .await
        .expect("the connection closes after the answer")
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    assert!(
        out.contains("\r\ncontent-type: application/json\r\n"),
        "{out}"
    );
    assert!(out.contains(r#""error":"bad_request""#), "{out}");
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn filters_see_the_https_scheme() {
    let up = Upstream::echo();
    let pki = Pki::new("scheme");
    // The shipped headers filter (proxy-wasm) reads `:scheme`, as an Envoy filter would.
    let filters = format!(
        "filters:\n  - name: headers\n    module: {HEADERS_WASM}\n    configuration: {{ response: {{ set: {{ x-scheme: \"${{request.scheme}}\" }} }} }}\n"
    );
    let yaml = config(up.addr, &pki.listener_yaml(), &filters).replace(
        "    cluster: up\n",
        "    cluster: up\n    filters: [headers]\n",
    );
    let gw = TestGateway::start(&yaml).await;
    let seen = tls::get(gw.addr, pki.client_config(&[b"h2"]), "/scheme")
        .await
        .unwrap();
    assert_eq!(seen.seen.status, StatusCode::OK);
    assert_eq!(seen.seen.header("x-scheme"), Some("https"));
}

#[tokio::test]
async fn a_client_that_does_not_speak_tls_gets_no_http_answer_and_is_counted() {
    let up = Upstream::echo();
    let pki = Pki::new("plain");
    let gw = TestGateway::start(&config(up.addr, &pki.listener_yaml(), "")).await;
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(up.requests(), 0);
    let counted =
        "rustygate_connections_rejected_total{listener=\"main\",reason=\"tls_handshake\"} 1";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text =
            String::from_utf8_lossy(&get(&format!("http://{}/metrics", gw.admin)).await.body)
                .into_owned();
        if text.contains(counted) {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The listener still serves TLS clients.
    let seen = tls::get(gw.addr, pki.client_config(&[]), "/after")
        .await
        .unwrap();
    assert_eq!(seen.seen.status, StatusCode::OK);
}

#[tokio::test]
async fn certificates_that_cannot_be_used_are_refused_at_load() {
    let up = Upstream::echo();
    let (a, b) = (Pki::new("refused-a"), Pki::new("refused-b"));
    let empty = a.dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = a.dir.join("missing.key");
    let cases = [
        (
            format!(
                "{{ certificate_chain: {}, private_key: {} }}",
                a.chain.display(),
                missing.display()
            ),
            format!("private key {}: No such file", missing.display()),
        ),
        (
            format!(
                "{{ certificate_chain: {}, private_key: {} }}",
                empty.display(),
                a.key.display()
            ),
            format!(
                "certificate chain {}: no PEM certificate chain in the file",
                empty.display()
            ),
        ),
        // Another certificate's key.
        (
            format!(
                "{{ certificate_chain: {}, private_key: {} }}",
                a.chain.display(),
                b.key.display()
            ),
            format!(
                "certificate {} with key {}:",
                a.chain.display(),
                b.key.display()
            ),
        ),
    ];
    for (tls, expected) in cases {
        let yaml = config(up.addr, &tls, "");
        let Err(e) = TestGateway::try_start(&yaml).await else {
            panic!("started with {tls}");
        };
        assert!(e.contains("listeners[0].tls (listener main)"), "{e}");
        assert!(e.contains(&expected), "{e}\nexpected: {expected}");
        // `rustygate validate` says the same.
        let file = a.dir.join("config.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let out = validate(&file);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&expected), "{stderr}");
    }
    // Relative paths are relative to the configuration file.
    let relative = config(
        up.addr,
        "{ certificate_chain: server.pem, private_key: server.key }",
        "",
    );
    let file = a.dir.join("relative.yaml");
    std::fs::write(&file, relative).unwrap();
    let out = validate(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A plain listener in front of `https://` clusters, one route (by path prefix) per cluster:
/// `(prefix, cluster YAML after its endpoints)`.
fn upstream_config(upstream: std::net::SocketAddr, clusters: &[(&str, &str)]) -> String {
    let mut yaml = "workers: 1
listeners: [ { name: main, address: 127.0.0.1:0 } ]
logging: { access_log: false }
clusters:
"
    .to_owned();
    for (name, extra) in clusters {
        yaml.push_str(&format!(
            "  - name: {name}\n    endpoints: [ {{ url: \"https://{upstream}\" }} ]\n{extra}"
        ));
    }
    yaml.push_str("routes:\n");
    for (name, _) in clusters {
        yaml.push_str(&format!(
            "  - {{ name: {name}, match: {{ path: {{ prefix: /{name}/ }} }}, cluster: {name} }}\n"
        ));
    }
    yaml
}

#[tokio::test]
async fn https_upstreams_are_verified_against_their_authority_and_name() {
    let pki = Pki::new("upstream");
    let up = Upstream::echo_tls(pki.server_config());
    let ca = pki.ca.display().to_string();
    let trusted = format!("    tls: {{ ca_certificates: {ca} }}\n");
    let by_name = format!("    tls: {{ ca_certificates: {ca}, server_name: localhost }}\n");
    let wrong_name = format!("    tls: {{ ca_certificates: {ca}, server_name: other.test }}\n");
    let h2 = format!("    protocol: http2\n    tls: {{ ca_certificates: {ca} }}\n");
    let yaml = upstream_config(
        up.addr,
        &[
            ("trusted", &trusted),
            ("byname", &by_name),
            ("h2", &h2),
            // Mozilla's roots do not include the test authority.
            ("default", ""),
            ("wrongname", &wrong_name),
        ],
    );
    let gw = TestGateway::start(&yaml).await;
    for (path, version) in [
        ("/trusted/a?x=1", "HTTP/1.1"),
        ("/byname/b", "HTTP/1.1"),
        ("/h2/c", "HTTP/2.0"),
    ] {
        let seen = get(&gw.url(path)).await;
        assert_eq!(seen.status, StatusCode::OK, "{path}: {:?}", seen.body);
        let echo = seen.json();
        assert_eq!(echo["path"], path);
        assert_eq!(echo["version"], version, "{path}");
    }
    for path in ["/default/d", "/wrongname/e"] {
        let seen = get(&gw.url(path)).await;
        assert_eq!(seen.status, StatusCode::BAD_GATEWAY, "{path}");
        let message = seen.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains("TLS handshake"), "{path}: {message}");
    }
    // Only the verified connections carried requests.
    assert_eq!(up.requests(), 3);

    // A CA file that cannot be read is refused at load, with the cluster and file named.
    let missing = pki.dir.join("missing-ca.pem");
    let yaml = upstream_config(
        up.addr,
        &[(
            "broken",
            &format!("    tls: {{ ca_certificates: {} }}\n", missing.display()),
        )],
    );
    let Err(e) = TestGateway::try_start(&yaml).await else {
        panic!("started with a missing CA file");
    };
    assert!(
        e.contains(&format!(
            "cluster broken: TLS: ca certificates {}: No such file",
            missing.display()
        )),
        "{e}"
    );
}

#[tokio::test]
async fn https_endpoints_are_health_checked_over_tls() {
    let pki = Pki::new("checked");
    let up = Upstream::echo_tls(pki.server_config());
    let ca = pki.ca.display().to_string();
    let checked = format!(
        "    tls: {{ ca_certificates: {ca} }}
    health_check: {{ path: /health, interval: 100ms, timeout: 1s, healthy_threshold: 1 }}
    panic_threshold: 0
"
    );
    let yaml = upstream_config(up.addr, &[("checked", &checked)]).replace(
        "endpoints: [ { url: \"https",
        "endpoints: [ { initial: unhealthy, url: \"https",
    );
    let gw = TestGateway::start(&yaml).await;
    // Unhealthy (503) until a check over TLS passes; then it serves.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = get(&gw.url("/checked/x")).await;
        if seen.status == StatusCode::OK {
            break;
        }
        assert_eq!(seen.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "never healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The checks reached the upstream: its request count includes them.
    assert!(up.requests() >= 2, "{}", up.requests());
}

/// The gateway binary on a TLS listener configured by `dir/config.yaml`, its file watcher up.
async fn start_process(
    dir: &std::path::Path,
    up: std::net::SocketAddr,
    tls: &str,
) -> (GatewayProcess, std::net::SocketAddr) {
    let (port, admin) = (free_port(), free_port());
    let file = dir.join("config.yaml");
    let yaml = config(up, tls, "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        .replace(
            "logging:",
            &format!("admin: {{ address: 127.0.0.1:{admin} }}\nlogging:"),
        );
    std::fs::write(&file, yaml).unwrap();
    let mut gw = GatewayProcess::start_file(&file, &[]).await;
    gw.wait_for_log("watching for changes", Duration::from_secs(30))
        .await;
    (gw, format!("127.0.0.1:{port}").parse().unwrap())
}

/// A reload renews the certificate (and the listener's other TLS settings) for new
/// connections.
#[tokio::test]
async fn a_reload_renews_the_certificate_for_new_connections() {
    let up = Upstream::echo();
    let (old, new) = (Pki::new("renew-old"), Pki::new("renew-new"));
    let dir = old.dir.join("gateway");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&old.chain, dir.join("server.pem")).unwrap();
    std::fs::copy(&old.key, dir.join("server.key")).unwrap();
    let (mut gw, addr) = start_process(
        &dir,
        up.addr,
        "{ certificate_chain: server.pem, private_key: server.key }",
    )
    .await;
    let before = tls::get(addr, old.client_config(&[]), "/before")
        .await
        .unwrap();
    assert_eq!(before.seen.status, StatusCode::OK);

    // Renewed files under the same paths, then a reload.
    replace(&dir.join("server.pem"), &std::fs::read(&new.chain).unwrap());
    replace(&dir.join("server.key"), &std::fs::read(&new.key).unwrap());
    let mark = gw.mark();
    gw.signal("HUP");
    gw.wait_for_log_since(mark, "configuration reloaded", Duration::from_secs(10))
        .await;

    let after = tls::get(addr, new.client_config(&[]), "/after")
        .await
        .unwrap();
    assert_eq!(after.seen.status, StatusCode::OK);
    // A client that only trusts the old authority no longer completes a handshake.
    let refused = tls::get(addr, old.client_config(&[]), "/old").await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("TLS handshake")),
        "{:?}",
        refused.map(|s| s.seen.status)
    );

    // The TLS settings reload too: from now on clients need a certificate.
    let file = dir.join("config.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap().replace(
        "private_key: server.key }",
        &format!(
            "private_key: server.key, client_ca_certificates: {} }}",
            new.ca.display()
        ),
    );
    let mark = gw.mark();
    replace(&file, yaml.as_bytes());
    gw.wait_for_log_since(mark, "configuration reloaded", Duration::from_secs(10))
        .await;
    assert!(
        tls::get(addr, new.client_config(&[]), "/anonymous")
            .await
            .is_err()
    );
    let mtls = tls::get(addr, new.client_config_with_cert(&new), "/mtls")
        .await
        .unwrap();
    assert_eq!(mtls.seen.status, StatusCode::OK);
}

/// The probe copies the TLS connection properties into response headers.
fn mtls_config(up: std::net::SocketAddr, tls: &str) -> String {
    let filters = format!(
        "filters:\n  - name: probe\n    module: {ABI_PROBE_WASM}\n    configuration: {{ properties: [connection.mtls, connection.tls_version, connection.requested_server_name, connection.sha256_peer_certificate_digest] }}\n"
    );
    config(up, tls, &filters).replace(
        "    cluster: up\n",
        "    cluster: up\n    filters: [probe]\n",
    )
}

async fn rejected_handshakes(gw: &TestGateway) -> String {
    let text = String::from_utf8_lossy(&get(&format!("http://{}/metrics", gw.admin)).await.body)
        .into_owned();
    text.lines()
        .find(|l| {
            l.starts_with(
                "rustygate_connections_rejected_total{listener=\"main\",reason=\"tls_handshake\"}",
            )
        })
        .unwrap_or_default()
        .to_owned()
}

/// A listener with `client_ca_certificates` lets in only clients whose certificate that
/// authority signed; filters see the verified certificate's digest and `connection.mtls`.
#[tokio::test]
async fn mutual_tls_listeners_admit_only_clients_the_authority_signed() {
    let up = Upstream::echo();
    let pki = Pki::new("mtls");
    let stranger = Pki::new("mtls-stranger");
    let tls = format!(
        "{{ certificate_chain: {}, private_key: {}, client_ca_certificates: {} }}",
        pki.chain.display(),
        pki.key.display(),
        pki.ca.display()
    );
    let gw = TestGateway::start(&mtls_config(up.addr, &tls)).await;
    let seen = tls::get(gw.addr, pki.client_config_with_cert(&pki), "/in")
        .await
        .unwrap()
        .seen;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.header("x-prop-connection-mtls"), Some("true"));
    assert_eq!(
        seen.header("x-prop-connection-tls_version"),
        Some("TLSv1.3")
    );
    assert_eq!(
        seen.header("x-prop-connection-requested_server_name"),
        Some("localhost")
    );
    assert_eq!(
        seen.header("x-prop-connection-sha256_peer_certificate_digest"),
        Some(pki.client_cert_sha256().as_str())
    );
    for (who, client) in [
        ("no certificate", pki.client_config(&[b"http/1.1"])),
        (
            "another authority's",
            pki.client_config_with_cert(&stranger),
        ),
    ] {
        let result = tls::get(gw.addr, client, "/out").await;
        assert!(result.is_err(), "{who}: let in");
    }
    assert_eq!(up.requests(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rejected_handshakes(&gw).await.ends_with(" 2") {
        assert!(
            Instant::now() < deadline,
            "{}",
            rejected_handshakes(&gw).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `require_client_certificate: false` lets clients without a certificate in (filters see
/// `connection.mtls` false), and still refuses one the authority did not sign.
#[tokio::test]
async fn optional_client_certificates_are_verified_when_presented() {
    let up = Upstream::echo();
    let pki = Pki::new("mtls-optional");
    let stranger = Pki::new("mtls-optional-stranger");
    let tls = format!(
        "{{ certificate_chain: {}, private_key: {}, client_ca_certificates: {}, require_client_certificate: false }}",
        pki.chain.display(),
        pki.key.display(),
        pki.ca.display()
    );
    let gw = TestGateway::start(&mtls_config(up.addr, &tls)).await;
    let seen = tls::get(gw.addr, pki.client_config(&[]), "/anonymous")
        .await
        .unwrap()
        .seen;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.header("x-prop-connection-mtls"), Some("false"));
    assert_eq!(
        seen.header("x-prop-connection-sha256_peer_certificate_digest"),
        Some("<none>")
    );
    let seen = tls::get(gw.addr, pki.client_config_with_cert(&pki), "/known")
        .await
        .unwrap()
        .seen;
    assert_eq!(seen.header("x-prop-connection-mtls"), Some("true"));
    assert!(
        tls::get(gw.addr, pki.client_config_with_cert(&stranger), "/x")
            .await
            .is_err()
    );
    assert_eq!(up.requests(), 2);
}

/// A cluster with a client certificate reaches an upstream that requires one; without it
/// the handshake fails (502). Half a client identity is a configuration error.
#[tokio::test]
async fn upstreams_that_require_client_certificates_get_the_clusters() {
    let pki = Pki::new("upstream-mtls");
    let up = Upstream::echo_tls(pki.server_config_requiring(&pki));
    let ca = pki.ca.display().to_string();
    let with_cert = format!(
        "    tls: {{ ca_certificates: {ca}, certificate_chain: {}, private_key: {} }}\n",
        pki.client_chain.display(),
        pki.client_key.display()
    );
    let without = format!("    tls: {{ ca_certificates: {ca} }}\n");
    let yaml = upstream_config(up.addr, &[("mtls", &with_cert), ("anonymous", &without)]);
    let gw = TestGateway::start(&yaml).await;
    let seen = get(&gw.url("/mtls/a")).await;
    assert_eq!(seen.status, StatusCode::OK, "{:?}", seen.body);
    assert_eq!(seen.json()["path"], "/mtls/a");
    let seen = get(&gw.url("/anonymous/b")).await;
    assert_eq!(seen.status, StatusCode::BAD_GATEWAY);
    assert_eq!(up.requests(), 1);

    let half = format!(
        "    tls: {{ ca_certificates: {ca}, certificate_chain: {} }}\n",
        pki.client_chain.display()
    );
    let Err(e) = TestGateway::try_start(&upstream_config(up.addr, &[("half", &half)])).await else {
        panic!("started with a certificate and no key");
    };
    assert!(
        e.contains(
            "clusters[0].tls.private_key: missing: a client certificate_chain needs its private_key"
        ),
        "{e}"
    );
}

/// A renewed certificate is picked up from its files alone, with no signal: written the way a
/// Kubernetes secret volume swaps its files (all at once, through the `..data` link the files
/// point through), and written over in place.
#[tokio::test]
async fn renewed_certificate_files_reload_without_a_signal() {
    use std::os::unix::fs::symlink;
    let up = Upstream::echo();
    let (first, second, third) = (
        Pki::new("watch-1"),
        Pki::new("watch-2"),
        Pki::new("watch-3"),
    );
    let dir = first.dir.join("gateway");
    let certs = dir.join("certs");
    let version = |n: &str, pki: &Pki| {
        let v = certs.join(n);
        std::fs::create_dir_all(&v).unwrap();
        std::fs::copy(&pki.chain, v.join("server.pem")).unwrap();
        std::fs::copy(&pki.key, v.join("server.key")).unwrap();
    };
    version("..v1", &first);
    symlink("..v1", certs.join("..data")).unwrap();
    for f in ["server.pem", "server.key"] {
        symlink(format!("..data/{f}"), certs.join(f)).unwrap();
    }
    let (mut gw, addr) = start_process(
        &dir,
        up.addr,
        "{ certificate_chain: certs/server.pem, private_key: certs/server.key }",
    )
    .await;
    let served_by = |pki: &Pki| {
        let config = pki.client_config(&[]);
        async move { tls::get(addr, config, "/").await.is_ok() }
    };
    assert!(served_by(&first).await);

    // The secret volume's swap: a new directory, then `..data` renamed onto it.
    version("..v2", &second);
    symlink("..v2", certs.join("..data_tmp")).unwrap();
    let mark = gw.mark();
    std::fs::rename(certs.join("..data_tmp"), certs.join("..data")).unwrap();
    gw.wait_for_log_since(mark, "configuration reloaded", Duration::from_secs(10))
        .await;
    assert!(served_by(&second).await);
    assert!(!served_by(&first).await);

    // Written over in place (key first, then the chain).
    let mark = gw.mark();
    replace(
        &certs.join("server.key"),
        &std::fs::read(&third.key).unwrap(),
    );
    replace(
        &certs.join("server.pem"),
        &std::fs::read(&third.chain).unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    gw.wait_for_log_since(mark, "configuration reloaded", Duration::from_secs(10))
        .await;
    while !served_by(&third).await {
        assert!(
            Instant::now() < deadline,
            "the third certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A listener with `sni` certificates serves each client the certificate for the name it
/// asked for: exact names, one-label wildcards, and the listener's own certificate for any
/// other name (or none).
#[tokio::test]
async fn sni_picks_the_certificate_for_the_name_the_client_asks_for() {
    let up = Upstream::echo();
    let default = Pki::new("sni-default");
    let api = Pki::for_names("sni-api", &["api.test"]);
    let wild = Pki::for_names("sni-wild", &["*.wild.test"]);
    let tls = format!(
        "{{ certificate_chain: {}, private_key: {}, sni: [ {{ server_names: [api.test], certificate_chain: {}, private_key: {} }}, {{ server_names: [\"*.wild.test\"], certificate_chain: {}, private_key: {} }} ] }}",
        default.chain.display(),
        default.key.display(),
        api.chain.display(),
        api.key.display(),
        wild.chain.display(),
        wild.key.display()
    );
    let gw = TestGateway::start(&mtls_config(up.addr, &tls)).await;
    let seen = tls::get_as(gw.addr, api.client_config(&[]), "api.test", "/a")
        .await
        .unwrap()
        .seen;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(
        seen.header("x-prop-connection-requested_server_name"),
        Some("api.test")
    );
    let seen = tls::get_as(gw.addr, wild.client_config(&[]), "x.wild.test", "/b")
        .await
        .unwrap()
        .seen;
    assert_eq!(seen.status, StatusCode::OK);
    // Two labels under the wildcard: the default certificate, which this client does not trust.
    assert!(
        tls::get_as(gw.addr, wild.client_config(&[]), "a.b.wild.test", "/c")
            .await
            .is_err()
    );
    let seen = tls::get(gw.addr, default.client_config(&[]), "/d")
        .await
        .unwrap()
        .seen;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(up.requests(), 3);
}
