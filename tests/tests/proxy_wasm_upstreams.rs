//! What filters made of a request reaches the upstream whole on every way out of the gateway
//! (the direct HTTP/1.1 client, hyper's HTTP/1.1 client with a body, HTTP/2, TLS, retries),
//! while the filters can still read the request until its stream ends, as in Envoy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use rustygate_tests::client::{Seen, http1, send};
use rustygate_tests::tls::Pki;
use rustygate_tests::upstream::{Upstream, echo_response, text};
use rustygate_tests::{ABI_PROBE_WASM, TestGateway, refusing_address};

/// abi-probe adds `x-added`, removes `x-secret`, reads two request headers back in its
/// response phase (`x-prop-…`) and one in `on_log` (`x-logged` on the next response).
const PROBE: &str = "{ name: p, request_add: { x-added: by-filter }, request_remove: [x-secret],
      properties: [request.headers.x-added, request.headers.x-client],
      log_properties: [request.headers.x-added] }";

fn gateway_yaml(clusters: &str, routes: &str) -> String {
    format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
clusters:
{clusters}filters:
  - name: probe
    module: {ABI_PROBE_WASM}
    configuration: {PROBE}
routes:
{routes}"
    )
}

fn route(name: &str, extra: &str) -> String {
    format!(
        "  - name: {name}
    match: {{ path: {{ prefix: /{name}/ }} }}
    cluster: {name}
    filters: [probe]
{extra}"
    )
}

async fn call(gw: &TestGateway, path: &str, body: &'static [u8]) -> Seen {
    let method = if body.is_empty() { "GET" } else { "POST" };
    let req = Request::builder()
        .method(method)
        .uri(gw.url(path))
        .header("x-client", "c1")
        .header("x-secret", "s")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    send(&http1(), req).await
}

/// What the upstream saw and the filter read back, for one request through `path`.
fn assert_whole(seen: &Seen, path: &str) {
    assert_eq!(seen.status, StatusCode::OK, "{path}: {:?}", seen.body);
    let echo = seen.json();
    let headers = &echo["headers"];
    assert_eq!(
        headers["x-added"],
        serde_json::json!(["by-filter"]),
        "{path}"
    );
    assert_eq!(headers["x-client"], serde_json::json!(["c1"]), "{path}");
    assert!(headers.get("x-secret").is_none(), "{path}: {headers}");
    assert!(headers["x-request-id"][0].is_string(), "{path}");
    assert_eq!(
        headers["x-forwarded-proto"],
        serde_json::json!(["http"]),
        "{path}"
    );
    // HTTP/1.1 upstreams get one Host; HTTP/2 ones `:authority` instead.
    if echo["version"] == "HTTP/1.1" {
        assert_eq!(headers["host"].as_array().map(Vec::len), Some(1), "{path}");
    }
    // Read by the filter in its response phase, after the request went out.
    assert_eq!(
        seen.header("x-prop-request-headers-x-added"),
        Some("by-filter"),
        "{path}"
    );
    assert_eq!(
        seen.header("x-prop-request-headers-x-client"),
        Some("c1"),
        "{path}"
    );
}

#[tokio::test]
async fn the_filtered_request_reaches_every_kind_of_upstream_whole() {
    let pki = Pki::new("filtered-upstreams");
    let (plain, h2, tls) = (
        Upstream::echo(),
        Upstream::echo(),
        Upstream::echo_tls(pki.server_config()),
    );
    let ca = pki.ca.display().to_string();
    let clusters = format!(
        "  - name: plain
    endpoints: [ {{ url: \"http://{}\" }} ]
  - name: h2
    protocol: http2
    endpoints: [ {{ url: \"http://{}\" }} ]
  - name: tls
    tls: {{ ca_certificates: {ca} }}
    endpoints: [ {{ url: \"https://{}\" }} ]
",
        plain.addr, h2.addr, tls.addr
    );
    let routes = ["plain", "h2", "tls"].map(|r| route(r, "")).concat();
    let gw = TestGateway::start(&gateway_yaml(&clusters, &routes)).await;
    for (path, body, version) in [
        // Without a body: the direct client.
        ("/plain/a", &b""[..], "HTTP/1.1"),
        // With one: hyper's client, the body streamed alongside.
        ("/plain/b", &b"payload"[..], "HTTP/1.1"),
        ("/h2/c", &b""[..], "HTTP/2.0"),
        ("/tls/d", &b""[..], "HTTP/1.1"),
    ] {
        let seen = call(&gw, path, body).await;
        assert_whole(&seen, path);
        assert_eq!(seen.json()["version"], version, "{path}");
        assert_eq!(seen.json()["body_len"], body.len(), "{path}");
    }
    // What the filter read in `on_log` of the previous request.
    let seen = call(&gw, "/plain/e", b"").await;
    assert_whole(&seen, "/plain/e");
    let logged = seen.header("x-logged").unwrap_or_default();
    assert!(
        logged.starts_with("request.headers.x-added=by-filter;"),
        "{logged:?}"
    );
}

#[tokio::test]
async fn a_retried_filtered_request_is_sent_whole_again() {
    // The first request to `flaky` gets a 503 (after the upstream read all of it), then
    // every one an echo; `gone` refuses connections, so its requests are retried unsent.
    let calls = Arc::new(AtomicUsize::new(0));
    let flaky = {
        let calls = calls.clone();
        Upstream::start(move |req| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not yet")
                } else {
                    echo_response(req).await
                }
            }
        })
    };
    let (_held, refusing) = refusing_address();
    let live = Upstream::echo();
    let clusters = format!(
        "  - name: flaky
    endpoints: [ {{ url: \"http://{}\" }} ]
  - name: gone
    endpoints: [ {{ url: \"http://{refusing}\" }}, {{ url: \"http://{}\" }} ]
",
        flaky.addr, live.addr
    );
    let retry = "    retry: { retry_on: [5xx, connect-failure], max_retries: 1, backoff_base: 1ms, backoff_max: 1ms }\n";
    let routes = route("flaky", retry) + &route("gone", retry);
    let gw = TestGateway::start(&gateway_yaml(&clusters, &routes)).await;

    let seen = call(&gw, "/flaky/a", b"").await;
    assert_whole(&seen, "/flaky/a");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the 503 was retried");
    // Round robin over the two endpoints: half of these go to the refusing one first.
    for i in 0..4 {
        let path = format!("/gone/{i}");
        assert_whole(&call(&gw, &path, b"").await, &path);
    }
    assert_eq!(live.requests(), 4);
}
