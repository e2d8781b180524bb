//! What a logging filter learns about how a request ended: Envoy's `response.flags` and
//! `response.code_details`, and the response trailers, read from `on_log` by abi-probe (built
//! from source with the upstream Rust SDK) and reported on the next request.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rustygate_tests::client::{get, h2c, http1, send};
use rustygate_tests::upstream::Upstream;
use rustygate_tests::{ABI_PROBE_WASM, BARE_NOOP_WASM, TestGateway};

/// One good cluster (`/ok`, `/denied`), one nobody listens on (`/dead`), one that answers
/// too late for its route (`/slow`); abi-probe on every route, logging what `on_log` saw,
/// except `/early`, whose one filter cannot run once the response head is passed on (on
/// `/mixed` abi-probe follows it).
async fn gateway(good: &Upstream, slow: &Upstream) -> TestGateway {
    let (_port, dead) = rustygate_tests::refusing_address();
    let yaml = format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
clusters:
  - name: good
    endpoints: [{{ url: http://{} }}]
  - name: dead
    endpoints: [{{ url: http://{dead} }}]
  - name: slow
    endpoints: [{{ url: http://{} }}]
filters:
  - name: early
    module: {BARE_NOOP_WASM}
  - name: probe
    module: {ABI_PROBE_WASM}
    configuration:
      deny_path: /denied
      deny_details: blocked by policy
      reset_request_path: /closed
      reset_response_path: /closed-late
      response_trailers_add: {{ x-checksum: abc }}
      log_properties: [response.code, response.flags, response.code_details, response.trailers, request.headers, request.headers.:path, request.headers_bytes, response.headers.:status, response.headers]
routes:
  - name: dead
    match: {{ path: {{ prefix: /dead }} }}
    cluster: dead
    filters: [probe]
  - name: slow
    match: {{ path: {{ prefix: /slow }} }}
    cluster: slow
    timeout: 200ms
    filters: [probe]
  - name: mixed
    match: {{ path: {{ prefix: /mixed }} }}
    cluster: good
    filters: [early, probe]
  - name: early
    match: {{ path: {{ prefix: /early }} }}
    cluster: good
    filters: [early]
  - name: moved
    match: {{ path: {{ exact: /old }} }}
    redirect: {{ path: /new }}
    filters: [probe]
  - name: good
    match: {{ path: {{ prefix: / }} }}
    cluster: good
    filters: [probe]
",
        good.addr, slow.addr
    );
    TestGateway::start(&yaml).await
}

/// What `on_log` saw of the request to `path`, as the next request's `x-logged` reports it.
async fn logged(gw: &TestGateway, path: &str, status: u16) -> HashMap<String, String> {
    let req = Request::get(gw.url(path)).body(Full::default()).unwrap();
    logged_after(gw, req, status).await
}

async fn logged_after(
    gw: &TestGateway,
    req: Request<Full<Bytes>>,
    status: u16,
) -> HashMap<String, String> {
    let path = req.uri().to_string();
    let client = if req.version() == http::Version::HTTP_2 {
        h2c()
    } else {
        http1()
    };
    let seen = send(&client, req).await;
    assert_eq!(seen.status, status, "{path}");
    last_logged(gw).await
}

/// What `on_log` saw of the last request, as the next request's `x-logged` reports it.
async fn last_logged(gw: &TestGateway) -> HashMap<String, String> {
    // `on_log` runs once the response body is dropped, just after the client has it all.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let next = get(&gw.url("/next")).await;
    // `response.headers` comes last: the response may carry an `x-logged` of its own, whose
    // pairs must not shadow the ones before it.
    let mut seen = HashMap::new();
    for (k, v) in next
        .header("x-logged")
        .expect("on_log ran")
        .split(';')
        .filter_map(|kv| kv.split_once('='))
    {
        seen.entry(k.to_owned()).or_insert_with(|| v.to_owned());
    }
    seen
}

#[tokio::test]
async fn a_logging_filter_reads_envoys_response_flags_and_details() {
    let good = Upstream::echo();
    let slow = Upstream::slow(Duration::from_secs(3));
    let gw = gateway(&good, &slow).await;

    let ok = logged(&gw, "/ok", 200).await;
    assert_eq!(ok["response.flags"], "0");
    assert_eq!(ok["response.code_details"], "via_upstream");
    // The trailers the filter added at the end of the body are the response's trailers.
    assert_eq!(ok["response.trailers"], "x-checksum: abc");
    // A whole response is not one the client cut short (DC), over HTTP/2 (where the trailers
    // reach the client) or for a HEAD (no body at all) either.
    for (method, version) in [
        (http::Method::GET, http::Version::HTTP_2),
        (http::Method::HEAD, http::Version::HTTP_11),
    ] {
        let req = Request::builder()
            .method(method.clone())
            .version(version)
            .uri(gw.url("/ok"))
            .body(Full::default())
            .unwrap();
        let seen = logged_after(&gw, req, 200).await;
        assert_eq!(seen["response.flags"], "0", "{method} {version:?}");
        assert_eq!(seen["response.code_details"], "via_upstream");
    }

    // Nothing listens: refused, retried once (the default policy), refused again. Envoy's
    // flags: UF (0x20) and URX (0x8000).
    let dead = logged(&gw, "/dead/x", 502).await;
    assert_eq!(dead["response.code"], "502");
    assert_eq!(dead["response.flags"], (0x20 | 0x8000).to_string());
    assert_eq!(
        dead["response.code_details"],
        "upstream_reset_before_response_started{connection_failure}"
    );

    // The route timeout: UT (0x4).
    let slow_seen = logged(&gw, "/slow", 504).await;
    assert_eq!(slow_seen["response.flags"], "4");
    assert_eq!(slow_seen["response.code_details"], "response_timeout");

    // A filter's local reply: its own details, whitespace made `_` as in Envoy; no flag.
    let denied = logged(&gw, "/denied", 403).await;
    assert_eq!(denied["response.code"], "403");
    assert_eq!(denied["response.flags"], "0");
    assert_eq!(denied["response.code_details"], "blocked_by_policy");

    // A route's own answer, a redirect here: Envoy's `direct_response` for both kinds.
    let moved = logged(&gw, "/old", 301).await;
    assert_eq!(moved["response.flags"], "0");
    assert_eq!(moved["response.code_details"], "direct_response");
    assert_eq!(
        good.requests(),
        10,
        "/ok twice, a HEAD and the seven /next requests"
    );
}

#[tokio::test]
async fn a_filter_that_closes_the_stream_is_logged_with_envoys_details() {
    let good = Upstream::echo();
    let slow = Upstream::slow(Duration::from_secs(3));
    let gw = gateway(&good, &slow).await;
    let close = |path: &str| {
        let req = Request::get(gw.url(path)).body(Full::default()).unwrap();
        http1().request(req)
    };

    // Closed in its request phase: no response; Envoy's `wasm_close_stream`, no flag.
    close("/closed").await.expect_err("the stream was reset");
    let closed = last_logged(&gw).await;
    assert_eq!(closed["response.code_details"], "wasm_close_stream");
    assert_eq!(closed["response.flags"], "0");

    // Closed in its response phase: the upstream's answer had already decided the details,
    // which Envoy then keeps.
    close("/closed-late")
        .await
        .expect_err("the stream was reset");
    let late = last_logged(&gw).await;
    assert_eq!(late["response.code_details"], "via_upstream");
    assert_eq!(late["response.flags"], "0");
}

#[tokio::test]
async fn the_head_maps_hold_the_pseudo_headers_as_envoys_do() {
    let good = Upstream::echo();
    let slow = Upstream::slow(Duration::from_secs(3));
    let gw = gateway(&good, &slow).await;
    let req = Request::get(gw.url("/ok?x=1"))
        .header("x-multi", "a")
        .header("x-multi", "b")
        .body(Full::default())
        .unwrap();
    let seen = logged_after(&gw, req, 200).await;
    // Envoy's request and response header maps carry the pseudo-headers, and its map
    // properties list each name once with repeated values joined by `,`.
    let request: Vec<&str> = seen["request.headers"].split(", ").collect();
    for pair in [
        ":method: GET",
        ":path: /ok?x=1",
        ":scheme: http",
        "x-multi: a,b",
    ] {
        assert!(request.contains(&pair), "{pair} in {request:?}");
    }
    let authority = format!(":authority: {}", gw.addr);
    assert!(request.contains(&authority.as_str()), "{request:?}");
    assert_eq!(seen["request.headers.:path"], "/ok?x=1");
    assert!(seen["response.headers"].starts_with(":status: 200, "));
    assert_eq!(seen["response.headers.:status"], "200");
    // Its size counts each field's name and value, the pseudo-headers' too (a joined name
    // counts once per value).
    let bytes: usize = request
        .iter()
        .map(|pair| {
            let (name, value) = pair.split_once(": ").unwrap();
            let extra = value.matches(',').count();
            (extra + 1) * name.len() + value.len() - extra
        })
        .sum();
    assert_eq!(seen["request.headers_bytes"], bytes.to_string());
}

/// The response head is handed on without a copy when no filter of the chain can run after
/// it; one that can (here abi-probe's `on_log`, behind a filter that cannot) still reads it.
#[tokio::test]
async fn the_response_head_stays_readable_where_a_filter_can_read_it_late() {
    let good = Upstream::echo();
    let slow = Upstream::slow(Duration::from_secs(3));
    let gw = gateway(&good, &slow).await;
    let early = get(&gw.url("/early/x")).await;
    assert_eq!(early.status, 200);
    assert_eq!(early.header("content-type"), Some("application/json"));
    assert_eq!(early.json()["path"], "/early/x");
    for path in ["/mixed", "/ok"] {
        let seen = logged(&gw, path, 200).await;
        let response: Vec<&str> = seen["response.headers"].split(", ").collect();
        assert_eq!(response[0], ":status: 200", "{path}: {response:?}");
        assert!(
            response.contains(&"content-type: application/json"),
            "{path}: {response:?}"
        );
    }
}
