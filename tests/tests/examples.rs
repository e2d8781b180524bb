//! `examples/api-key`, written three times — Rust (`proxy-wasm` crate), Go (`sdk/go`) and
//! AssemblyScript (`sdk/assemblyscript`) — and built from source by the test build. Each runs
//! on its own route with the same configuration; a client must not be able to tell them apart.

use http::{Request, StatusCode};
use http_body_util::Full;
use rustygate_tests::client::{Seen, http1, send};
use rustygate_tests::examples::{API_KEY_ASSEMBLYSCRIPT, API_KEY_GO, API_KEY_RUST};
use rustygate_tests::upstream::Upstream;
use rustygate_tests::{TestGateway, filters_config};

const LANGUAGES: [(&str, &str); 3] = [
    ("rust", API_KEY_RUST),
    ("go", API_KEY_GO),
    ("assemblyscript", API_KEY_ASSEMBLYSCRIPT),
];

const CONFIGURATION: &str =
    "{ header_name: x-greeting, header_value: hello, api_keys: [key-1, key-2] }";

/// One route per language, `/<language>/...`, each through its build of the filter.
fn config(upstream: std::net::SocketAddr) -> String {
    let mut yaml = format!(
        "workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
clusters:
  - name: up
    endpoints:
      - url: http://{upstream}
filters:
"
    );
    for (lang, wasm) in LANGUAGES {
        yaml += &format!(
            "  - name: api-key-{lang}\n    module: {wasm}\n    configuration: {CONFIGURATION}\n"
        );
    }
    yaml += "routes:\n";
    for (lang, _) in LANGUAGES {
        yaml += &format!(
            "  - name: {lang}\n    match: {{ path: {{ prefix: /{lang}/ }} }}\n    cluster: up\n    filters: [api-key-{lang}]\n"
        );
    }
    yaml
}

async fn call(gw: &TestGateway, path: &str, key: Option<&str>) -> Seen {
    let mut req = Request::get(gw.url(path));
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    send(&http1(), req.body(Full::default()).unwrap()).await
}

/// What a client can observe, minus what differs per request anyway.
fn observed(seen: &Seen) -> (StatusCode, Vec<(String, String)>, serde_json::Value) {
    let mut headers: Vec<(String, String)> = seen
        .headers
        .iter()
        // The echoed path and request id differ in length per route and request.
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "content-length" | "x-request-id"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    headers.sort();
    let mut body = seen.json();
    if let Some(echo) = body.as_object_mut() {
        echo.remove("path");
        if let Some(headers) = echo.get_mut("headers").and_then(|h| h.as_object_mut()) {
            headers.remove("x-request-id");
        }
    }
    (seen.status, headers, body)
}

#[tokio::test]
async fn the_example_filter_behaves_the_same_in_rust_go_and_assemblyscript() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&config(app.addr)).await;

    let mut per_language = Vec::new();
    for (lang, _) in LANGUAGES {
        let path = format!("/{lang}/orders");
        let missing = call(&gw, &path, None).await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{lang}");
        assert_eq!(missing.json()["error"], "missing API key", "{lang}");
        assert_eq!(missing.header("content-type"), Some("application/json"));
        assert_eq!(missing.header("www-authenticate"), Some("ApiKey"));
        // A local response passes the filter's own response phase, as in Envoy.
        assert_eq!(missing.header("x-greeting"), Some("hello"), "{lang}");

        let wrong = call(&gw, &path, Some("key-3")).await;
        assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{lang}");
        assert_eq!(wrong.json()["error"], "invalid API key", "{lang}");

        let ok = call(&gw, &path, Some("key-2")).await;
        assert_eq!(ok.status, StatusCode::OK, "{lang}");
        assert_eq!(ok.header("x-greeting"), Some("hello"), "{lang}");
        let echo = ok.json();
        assert_eq!(echo["path"], path.as_str(), "{lang}");
        assert!(
            echo["headers"].get("x-api-key").is_none(),
            "{lang}: the key reached the upstream: {echo}"
        );
        per_language.push((lang, [observed(&missing), observed(&wrong), observed(&ok)]));
    }
    // Only the allowed requests reached the upstream.
    assert_eq!(app.requests(), 3);

    let (first, reference) = &per_language[0];
    for (lang, seen) in &per_language[1..] {
        assert_eq!(seen, reference, "{lang} differs from {first}");
    }
}

#[tokio::test]
async fn every_language_refuses_a_configuration_without_keys() {
    let app = Upstream::echo();
    for (lang, wasm) in LANGUAGES {
        let filters = format!(
            "  - name: api-key\n    module: {wasm}\n    configuration: {{ header_name: x-greeting, api_keys: [] }}"
        );
        let yaml = filters_config(app.addr, &filters, "[api-key]");
        let err = TestGateway::try_start(&yaml).await.err();
        let err = err.unwrap_or_else(|| panic!("{lang}: started with no keys"));
        assert!(err.contains("rejected its configuration"), "{lang}: {err}");
    }
}

#[test]
fn the_examples_gateway_yaml_loads_all_three_builds() {
    // `make run CONFIG=examples/api-key/gateway.yaml` serves this file; the modules it names
    // are the ones the test build just made.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = rustygate_tests::process::validate(root.join("examples/api-key/gateway.yaml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 routes, 3 filters"));
}
