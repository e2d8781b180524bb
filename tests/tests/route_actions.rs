//! What a route does besides forwarding to one cluster, as a client sees it: fixed answers
//! (`direct_response`), redirects, and traffic split over weighted clusters.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use rustygate_tests::client::{get, http1, send};
use rustygate_tests::upstream::{Upstream, text};
use rustygate_tests::{ABI_PROBE_WASM, HEADERS_WASM, TestGateway};

/// An upstream that answers with its own name, so the body says which cluster served.
fn named(name: &'static str) -> Upstream {
    Upstream::start(move |_| async move { text(StatusCode::OK, name) })
}

/// A gateway configuration: one listener, no access log, a cluster per `(name, address)`,
/// then `rest` (filters and routes).
fn gateway_yaml(workers: u32, clusters: &[(&str, String)], rest: &str) -> String {
    let mut yaml = format!(
        "workers: {workers}
listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
clusters:
"
    );
    for (name, addr) in clusters {
        yaml += &format!("  - name: {name}\n    endpoints: [ {{ url: http://{addr} }} ]\n");
    }
    yaml + rest
}

fn with_host(url: String, host: &str) -> Request<Full<Bytes>> {
    Request::get(url)
        .header("host", host)
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn a_direct_response_answers_without_asking_the_upstream() {
    let up = Upstream::echo();
    let yaml = rustygate_tests::simple_config(
        up.addr,
        r#"  - name: maintenance
    match: { path: { exact: /status } }
    direct_response:
      status: 503
      body: '{"status":"maintenance"}'
      headers: { content-type: application/json, retry-after: "120" }
  - name: teapot
    match: { path: { prefix: /tea } }
    direct_response: { status: 418, body: "short and stout" }
  - name: empty
    match: { path: { prefix: /empty } }
    direct_response: { status: 204 }
  - name: gone
    match: { path: { prefix: /gone } }
    direct_response: { status: 410, headers: { content-type: application/json, x-why: moved-out } }
"#,
    );
    let gw = TestGateway::start(&yaml).await;

    let seen = get(&gw.url("/status?verbose=1")).await;
    assert_eq!(seen.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.json()["status"], "maintenance");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("retry-after"), Some("120"));
    assert_eq!(seen.header("content-length"), Some("24"));
    assert!(seen.header("x-request-id").is_some());

    // A body without a content type goes out as text/plain, as Envoy sends it.
    let tea = get(&gw.url("/teapot")).await;
    assert_eq!(tea.status, 418);
    assert_eq!(&tea.body[..], b"short and stout");
    assert_eq!(tea.header("content-type"), Some("text/plain"));

    let empty = get(&gw.url("/empty")).await;
    assert_eq!(empty.status, StatusCode::NO_CONTENT);
    assert!(empty.body.is_empty());
    assert_eq!(empty.header("content-type"), None);

    // A gRPC request gets the answer in gRPC's form, as from Envoy: trailers-only, 503 as
    // UNAVAILABLE, the body as the message.
    let grpc = send(
        &rustygate_tests::client::h2c(),
        Request::post(gw.url("/status"))
            .version(http::Version::HTTP_2)
            .header("content-type", "application/grpc+proto")
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await;
    assert_eq!(grpc.status, 200);
    assert!(grpc.body.is_empty());
    assert_eq!(grpc.header("grpc-status"), Some("14"));
    assert_eq!(
        grpc.header("grpc-message"),
        Some(r#"{"status":"maintenance"}"#)
    );
    assert_eq!(grpc.header("content-type"), Some("application/grpc"));
    assert_eq!(grpc.header("retry-after"), Some("120"));

    // Without a body, a configured content type is dropped, as Envoy drops it.
    let gone = get(&gw.url("/gone")).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert!(gone.body.is_empty());
    assert_eq!(gone.header("content-type"), None);
    assert_eq!(gone.header("x-why"), Some("moved-out"));

    assert_eq!(up.requests(), 0, "no answered request reached the upstream");
    // Every other path still forwards.
    assert_eq!(get(&gw.url("/other")).await.status, 200);
    assert_eq!(up.requests(), 1);
}

#[tokio::test]
async fn a_redirect_answers_with_the_location_built_from_the_request() {
    let up = Upstream::echo();
    let yaml = rustygate_tests::simple_config(
        up.addr,
        r#"  - name: to-https
    match: { host: "shop.example", path: { prefix: / } }
    redirect: { scheme: https }
  - name: v1-to-v2
    match: { path: { prefix: /v1/ } }
    redirect: { prefix: /v2/, status: 308 }
  - name: moved
    match: { path: { exact: /old } }
    redirect: { host: new.example, port: 8443, path: /new, status: 302 }
  - name: clean
    match: { path: { prefix: /clean } }
    redirect: { path: "/landing?from=clean", strip_query: true, status: 307 }
"#,
    );
    let gw = TestGateway::start(&yaml).await;
    let client = http1();
    let location = |seen: &rustygate_tests::client::Seen| {
        seen.header("location")
            .map(str::to_owned)
            .unwrap_or_default()
    };

    let seen = send(&client, with_host(gw.url("/cart?item=7"), "shop.example")).await;
    assert_eq!(seen.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(location(&seen), "https://shop.example/cart?item=7");
    assert!(seen.body.is_empty());
    // The client's port was http's default: https drops it. Another port stays.
    let seen = send(&client, with_host(gw.url("/"), "shop.example:80")).await;
    assert_eq!(location(&seen), "https://shop.example/");
    let seen = send(&client, with_host(gw.url("/a"), "shop.example:8080")).await;
    assert_eq!(location(&seen), "https://shop.example:8080/a");

    let seen = send(&client, with_host(gw.url("/v1/users?id=3"), "api.example")).await;
    assert_eq!(seen.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(location(&seen), "http://api.example/v2/users?id=3");

    let seen = send(
        &client,
        with_host(gw.url("/old?keep=1"), "old.example:9000"),
    )
    .await;
    assert_eq!(seen.status, StatusCode::FOUND);
    assert_eq!(location(&seen), "http://new.example:8443/new?keep=1");

    let seen = send(&client, with_host(gw.url("/clean?utm=x"), "h.example")).await;
    assert_eq!(seen.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(location(&seen), "http://h.example/landing?from=clean");

    assert_eq!(up.requests(), 0);
}

/// Routes match the request as the gateway forwards it, as Envoy's do: the X-Forwarded-Proto,
/// X-Forwarded-For and X-Request-Id it sets are there to match (the common "plain HTTP goes
/// to https" rule needs the first).
#[tokio::test]
async fn routes_match_the_forwarding_headers_the_gateway_sets() {
    let up = Upstream::echo();
    let yaml = rustygate_tests::simple_config(
        up.addr,
        r#"  - name: to-https
    match: { path: { prefix: /shop/ }, headers: [ { name: x-forwarded-proto, exact: http } ] }
    redirect: { scheme: https }
  - name: proxied
    match: { headers: [ { name: x-forwarded-for, regex: '10\.1\.2\.3, 127\.0\.0\.1' } ] }
    direct_response: { status: 200, body: "via a proxy" }
  - name: traced
    match: { path: { prefix: /id }, headers: [ { name: x-request-id, present: true } ] }
    direct_response: { status: 200, body: "has an id" }
"#,
    );
    let gw = TestGateway::start(&yaml).await;
    let client = http1();

    let seen = send(&client, with_host(gw.url("/shop/cart"), "shop.example")).await;
    assert_eq!(seen.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        seen.header("location"),
        Some("https://shop.example/shop/cart")
    );

    let req = Request::get(gw.url("/anything"))
        .header("x-forwarded-for", "10.1.2.3")
        .body(Full::<Bytes>::default())
        .unwrap();
    let seen = send(&client, req).await;
    assert_eq!(&seen.body[..], b"via a proxy");

    assert_eq!(&get(&gw.url("/id")).await.body[..], b"has an id");
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn filters_run_on_answered_routes_and_may_answer_first() {
    let up = Upstream::echo();
    let yaml = format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
clusters:
  - name: up
    endpoints:
      - url: http://{}
filters:
  - name: headers
    module: {HEADERS_WASM}
    configuration:
      response:
        add: {{ x-answered-by: \"${{route.name}}\" }}
  - name: probe
    module: {ABI_PROBE_WASM}
    configuration: {{ name: gate, deny_path: /fixed/denied }}
routes:
  - name: fixed
    match: {{ path: {{ prefix: /fixed }} }}
    filters: [headers, probe]
    direct_response: {{ status: 200, body: fixed }}
  - name: moved
    match: {{ path: {{ prefix: /moved }} }}
    filters: [headers]
    redirect: {{ path: /elsewhere }}
",
        up.addr
    );
    let gw = TestGateway::start(&yaml).await;

    // The answer passes back through the filters' response phases.
    let fixed = get(&gw.url("/fixed")).await;
    assert_eq!(fixed.status, 200);
    assert_eq!(&fixed.body[..], b"fixed");
    assert_eq!(fixed.header("x-answered-by"), Some("fixed"));
    assert_eq!(fixed.header("x-probe"), Some("gate"));

    let moved = get(&gw.url("/moved")).await;
    assert_eq!(moved.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        moved.header("location"),
        Some(format!("http://{}/elsewhere", gw.addr).as_str())
    );
    assert_eq!(moved.header("x-answered-by"), Some("moved"));

    // A filter that answers in its request phase answers instead of the route.
    let denied = get(&gw.url("/fixed/denied")).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.header("x-answered-by"), Some("fixed"));
    assert_ne!(&denied.body[..], b"fixed");
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn a_split_route_spreads_requests_by_weight_and_filters_see_the_pick() {
    let (blue, green, grey) = (named("blue"), named("green"), named("grey"));
    let yaml = gateway_yaml(
        2,
        &[
            ("blue", blue.addr.to_string()),
            ("green", green.addr.to_string()),
            ("grey", grey.addr.to_string()),
        ],
        &format!(
            "filters:
  - name: probe
    module: {ABI_PROBE_WASM}
    configuration: {{ properties: [cluster_name] }}
routes:
  - name: canary
    filters: [probe]
    clusters:
      - {{ name: blue, weight: 3 }}
      - {{ name: green, weight: 1 }}
      - {{ name: grey, weight: 0 }}
"
        ),
    );
    let gw = TestGateway::start(&yaml).await;
    let client = http1();
    let n = 800;
    let mut green_count = 0;
    for i in 0..n {
        let seen = send(&client, with_host(gw.url(&format!("/buy/{i}")), "shop")).await;
        assert_eq!(seen.status, 200);
        let served_by = std::str::from_utf8(&seen.body).unwrap();
        // The filter saw, in its own phases, the cluster the request then went to.
        assert_eq!(seen.header("x-prop-cluster_name"), Some(served_by));
        if served_by == "green" {
            green_count += 1;
        }
    }
    assert_eq!(grey.requests(), 0, "a zero weight gets nothing");
    assert_eq!(blue.requests() + green.requests(), n);
    // One in four expected (200); binomial sd ≈ 12, so this is over 5 sd either way.
    assert!(
        (130..=270).contains(&green_count),
        "green served {green_count} of {n}"
    );
}

/// What a mirror received: method, path, `Host`, body, `x-request-id`.
type Seen = (String, String, String, Vec<u8>, String);

/// An upstream that records each request and answers 500, which no client may ever see.
fn recording() -> (Upstream, std::sync::Arc<parking_lot::Mutex<Vec<Seen>>>) {
    let log = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let kept = log.clone();
    let up = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let log = kept.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = http_body_util::BodyExt::collect(body)
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            let header = |n: &str| {
                parts
                    .headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            log.lock().push((
                parts.method.to_string(),
                parts.uri.to_string(),
                header("host"),
                body,
                header("x-request-id"),
            ));
            text(StatusCode::INTERNAL_SERVER_ERROR, "the mirror's answer")
        }
    });
    (up, log)
}

/// Waits (at most 5 s) until `log` holds `n` entries.
async fn copies(log: &parking_lot::Mutex<Vec<Seen>>, n: usize) -> Vec<Seen> {
    for _ in 0..500 {
        if log.lock().len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    log.lock().clone()
}

#[tokio::test]
async fn mirrored_copies_carry_the_request_and_a_shadow_host_and_their_answers_are_dropped() {
    let up = Upstream::echo();
    let (shadow, log) = recording();
    let (off, never) = recording();
    let yaml = gateway_yaml(
        1,
        &[
            ("live", up.addr.to_string()),
            ("shadow", shadow.addr.to_string()),
            ("off", off.addr.to_string()),
            ("down", "127.0.0.1:9".to_owned()),
        ],
        "routes:
  - name: orders
    cluster: live
    rewrite: { prefix: /v2/ }
    match: { path: { prefix: /v1/ } }
    mirror:
      - { cluster: shadow, max_body_bytes: 16 }
      - { cluster: off, percent: 0 }
      - { cluster: down }
  - name: retried
    match: { path: { prefix: /retried } }
    cluster: live
    retry: { retry_on: [5xx] }
    mirror: [ { cluster: shadow } ]
",
    );
    let gw = TestGateway::start(&yaml).await;
    let client = http1();

    let get = send(&client, with_host(gw.url("/v1/orders?page=2"), "shop:8080")).await;
    assert_eq!(get.status, 200, "the client gets the live answer");
    let post = Request::post(gw.url("/v1/orders"))
        .header("host", "shop")
        .body(Full::new(Bytes::from_static(b"{\"qty\":3}")))
        .unwrap();
    let posted = send(&client, post).await;
    assert_eq!(posted.status, 200);
    assert_eq!(posted.json()["body_len"], 9);
    // Longer than the shadow's 16 bytes: forwarded, not copied.
    let big = Request::post(gw.url("/v1/orders"))
        .header("host", "shop")
        .body(Full::new(Bytes::from(vec![b'x'; 100])))
        .unwrap();
    assert_eq!(send(&client, big).await.status, 200);

    // A body read in full first (the route may retry a PUT after sending it) is copied too.
    let retried = Request::put(gw.url("/retried"))
        .header("host", "shop")
        .body(Full::new(Bytes::from_static(b"again")))
        .unwrap();
    assert_eq!(send(&client, retried).await.status, 200);

    let seen = copies(&log, 3).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    let (method, path, host, body, id) = &seen[0];
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("GET", "/v2/orders?page=2")
    );
    assert_eq!(host, "shop-shadow:8080");
    assert!(body.is_empty());
    assert_eq!(Some(id.as_str()), get.header("x-request-id"));
    let (method, _, host, body, _) = &seen[1];
    assert_eq!((method.as_str(), host.as_str()), ("POST", "shop-shadow"));
    assert_eq!(&body[..], b"{\"qty\":3}");
    assert_eq!(&seen[2].3[..], b"again");
    assert!(never.lock().is_empty(), "percent 0 copies nothing");
    assert_eq!(up.requests(), 4);

    // What became of the copies, by cluster (each is counted when its answer has been read).
    let expected = [
        r#"rustygate_mirror_requests_total{cluster="shadow",result="answered"} 3"#,
        r#"rustygate_mirror_requests_total{cluster="shadow",result="skipped"} 1"#,
        r#"rustygate_mirror_requests_total{cluster="down",result="failed"} 3"#,
    ];
    let mut text = String::new();
    for _ in 0..500 {
        let metrics = rustygate_tests::client::get(&format!("http://{}/metrics", gw.admin)).await;
        text = String::from_utf8_lossy(&metrics.body).into_owned();
        if expected.iter().all(|line| text.contains(line)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for line in expected {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

#[tokio::test]
async fn a_request_a_filter_sends_to_another_route_reports_that_route_and_its_cluster() {
    let (old, new) = (named("old"), named("new"));
    let yaml = gateway_yaml(
        1,
        &[
            ("legacy", old.addr.to_string()),
            ("current", new.addr.to_string()),
        ],
        &format!(
            "filters:
  - name: probe
    module: {ABI_PROBE_WASM}
    configuration: {{ rewrite_prefix: [/v1/, /v2/], properties: [cluster_name, route_name] }}
routes:
  - {{ name: v1, match: {{ path: {{ prefix: /v1/ }} }}, cluster: legacy, filters: [probe] }}
  - {{ name: v2, match: {{ path: {{ prefix: /v2/ }} }}, cluster: current }}
"
        ),
    );
    let gw = TestGateway::start(&yaml).await;
    let seen = get(&gw.url("/v1/items")).await;
    assert_eq!(&seen.body[..], b"new");
    // As in Envoy, whose route and cluster follow the route cache a filter cleared.
    assert_eq!(seen.header("x-prop-cluster_name"), Some("current"));
    assert_eq!(seen.header("x-prop-route_name"), Some("v2"));
    assert_eq!(old.requests(), 0);
}
