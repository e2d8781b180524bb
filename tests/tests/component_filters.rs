//! Component filters: the typed `http-filter` world (wit/gateway/filter.wit), through the
//! gateway, against real upstreams. The probe (tests/guests/components/probe-filter) uses each
//! part of the world; `filters/headers-component` is the shipped headers filter ported to it
//! and runs in chains mixed with proxy-wasm filters.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustygate_tests::client::{Seen, get, http1, send};
use rustygate_tests::component_filters::{HEADERS, PROBE};
use rustygate_tests::examples::API_KEY_RUST;
use rustygate_tests::upstream::{Upstream, sha256_hex};
use rustygate_tests::{HEADERS_WASM, TestGateway, balancers, filters_config};

fn probe(upstream: std::net::SocketAddr, extra: &str) -> String {
    let filters =
        format!("  - name: probe\n    module: {PROBE}\n    configuration: {{ tag: t1 }}\n{extra}");
    filters_config(upstream, &filters, "[probe]")
}

async fn metrics_text(gw: &TestGateway) -> String {
    String::from_utf8_lossy(&get(&format!("http://{}/metrics", gw.admin)).await.body).into_owned()
}

#[tokio::test]
async fn the_typed_api_reads_and_edits_the_request_and_response() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&probe(app.addr, "")).await;
    let seen = send(
        &http1(),
        Request::get(gw.url("/hello?x=1"))
            .header("x-request-id", "req-42")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(seen.status, 200);
    let echo = seen.json();
    assert_eq!(echo["headers"]["x-probe-route"][0], "api");
    assert_eq!(echo["headers"]["x-probe-id"][0], "req-42");
    assert!(
        echo["headers"]["x-probe-client"][0]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(seen.header("x-probe-tag"), Some("t1"));
    assert_eq!(seen.header("x-probe-status"), Some("200"));
    // The request stays readable in the response phase, but no longer writable.
    assert_eq!(seen.header("x-probe-path"), Some("/hello?x=1"));
    assert_eq!(seen.header("x-probe-read-only"), Some("yes"));

    let invalid = get(&gw.url("/invalid")).await;
    assert_eq!(invalid.json()["headers"]["x-probe-invalid"][0], "refused");
}

#[tokio::test]
async fn a_path_rewrite_reaches_the_upstream() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&probe(app.addr, "")).await;
    let seen = get(&gw.url("/rewrite")).await;
    assert_eq!(seen.json()["path"], "/rewritten");
    assert_eq!(seen.header("x-probe-path"), Some("/rewritten"));
}

#[tokio::test]
async fn a_local_response_skips_the_upstream_and_passes_the_response_phase() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&probe(app.addr, "")).await;
    let seen = get(&gw.url("/respond")).await;
    assert_eq!(seen.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(seen.json()["error"], "teapot");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("x-probe-local"), Some("yes"));
    assert_eq!(seen.header("x-probe-status"), Some("418"));
    assert_eq!(app.requests(), 0);
}

#[tokio::test]
async fn bodies_are_buffered_rewritten_and_appended_to() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&probe(app.addr, "")).await;
    let frames = ["one ", "two ", "three"]
        .map(|p| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(p.as_bytes()))));
    let req = Request::post(gw.url("/upper"))
        .body(StreamBody::new(stream::iter(frames)))
        .unwrap();
    let resp = Client::builder(TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body_sha256"], sha256_hex(b"ONE TWO THREE").as_str());

    let seen = get(&gw.url("/bang")).await;
    assert_eq!(seen.status, 200);
    // The body phase read the response head after it was passed on towards the client.
    assert!(
        seen.body.ends_with(b"}!application/json"),
        "{:?}",
        seen.body
    );
}

#[tokio::test]
async fn the_key_value_store_counts_across_workers() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&probe(app.addr, "")).await;
    let client = http1();
    let mut hits = Vec::new();
    for _ in 0..6 {
        // A new connection each time, so both workers' instances take part.
        let seen = send(
            &client,
            Request::get(gw.url("/kv"))
                .header("connection", "close")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        hits.push(
            seen.json()["headers"]["x-kv-hits"][0]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(hits, ["1", "2", "3", "4", "5", "6"]);
}

#[tokio::test]
async fn the_host_rate_limiter_is_exact_under_concurrency() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&probe(app.addr, "")).await;
    let client = http1();
    let requests = (0..20).map(|_| {
        let client = client.clone();
        let url = gw.url("/limited");
        async move { send(&client, Request::get(url).body(Full::default()).unwrap()).await }
    });
    let seen: Vec<Seen> = futures_util::future::join_all(requests).await;
    let passed = seen.iter().filter(|s| s.status == 200).count();
    let limited: Vec<&Seen> = seen.iter().filter(|s| s.status == 429).collect();
    assert_eq!((passed, limited.len()), (3, 17));
    assert!(limited.iter().all(|s| s.header("retry-after").is_some()));
    assert_eq!(app.requests(), 3);
}

#[tokio::test]
async fn a_failing_filter_fails_its_request_and_the_gateway_keeps_serving() {
    let app = Upstream::echo();
    let limits = "    limits: { max_memory_bytes: 8388608, cpu_per_callback: 20ms }\n";
    let gw = TestGateway::start(&probe(app.addr, limits)).await;
    for (path, reason) in [
        ("/trap", "trap"),
        ("/spin", "cpu_deadline"),
        ("/grow", "memory"),
    ] {
        let started = Instant::now();
        let seen = get(&gw.url(path)).await;
        assert_eq!(seen.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let body = seen.json();
        assert_eq!(body["error"], "filter_failed");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.ends_with(&format!("filter probe failed: {reason}")),
            "{message}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{path}");
        // A fresh instance serves the next requests.
        for _ in 0..3 {
            let ok = get(&gw.url("/fine")).await;
            assert_eq!(ok.status, 200, "after {path}");
            assert_eq!(ok.header("x-probe-tag"), Some("t1"));
        }
    }
    assert_eq!(app.requests(), 9);
    let text = metrics_text(&gw).await;
    for reason in ["trap", "cpu_deadline", "memory"] {
        assert!(
            text.contains(&format!(
                "rustygate_filter_failures_total{{filter=\"probe\",reason=\"{reason}\"}} 1"
            )),
            "{text}"
        );
    }
}

#[tokio::test]
async fn fail_open_lets_the_request_through_without_the_filter() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&probe(app.addr, "    failure_policy: fail_open\n")).await;
    let seen = get(&gw.url("/trap")).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-probe-tag"), None);
    assert_eq!(
        get(&gw.url("/next")).await.header("x-probe-tag"),
        Some("t1")
    );
}

#[tokio::test]
async fn component_and_proxy_wasm_filters_mix_in_one_chain() {
    let app = Upstream::echo();
    // proxy-wasm headers, then the component port of headers reading what the first one set,
    // then the probe (a component), then a proxy-wasm api-key check.
    let filters = format!(
        "  - name: pw-headers
    module: {HEADERS_WASM}
    configuration:
      request: {{ set: {{ x-first: proxy-wasm }} }}
      response: {{ add: {{ x-pw: \"yes\" }} }}
  - name: c-headers
    module: {HEADERS}
    configuration:
      request: {{ set: {{ x-second: \"after ${{request.header.x-first}}\", x-client: \"${{source.ip}}\" }} }}
      response: {{ add: {{ x-component: \"${{request.method}} ${{route.name}}\" }} }}
  - name: probe
    module: {PROBE}
    configuration: {{ tag: mixed }}
  - name: api-key
    module: {API_KEY_RUST}
    configuration: {{ header_name: x-api-key-filter, header_value: ran, api_keys: [k] }}"
    );
    let yaml = filters_config(
        app.addr,
        &filters,
        "[pw-headers, c-headers, probe, api-key]",
    );
    let gw = TestGateway::start(&yaml).await;

    let seen = send(
        &http1(),
        Request::get(gw.url("/ok"))
            .header("x-api-key", "k")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(seen.status, 200);
    let echo = seen.json();
    assert_eq!(echo["headers"]["x-first"][0], "proxy-wasm");
    assert_eq!(echo["headers"]["x-second"][0], "after proxy-wasm");
    assert_eq!(echo["headers"]["x-client"][0], "127.0.0.1");
    assert_eq!(echo["headers"]["x-probe-route"][0], "api");
    assert!(echo["headers"].get("x-api-key").is_none());
    for (header, value) in [
        ("x-pw", "yes"),
        ("x-component", "GET api"),
        ("x-probe-tag", "mixed"),
        ("x-api-key-filter", "ran"),
    ] {
        assert_eq!(seen.header(header), Some(value), "{header}");
    }

    // The probe answers /respond itself: the api-key filter after it never runs, the filters
    // before it see the answer in their response phases.
    let seen = get(&gw.url("/respond")).await;
    assert_eq!(seen.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(seen.header("x-pw"), Some("yes"));
    assert_eq!(seen.header("x-component"), Some("GET api"));
    assert_eq!(seen.header("x-api-key-filter"), None);

    // And the api-key filter's own 401 passes back through the component filters.
    let seen = get(&gw.url("/no-key")).await;
    assert_eq!(seen.status, StatusCode::UNAUTHORIZED);
    assert_eq!(seen.header("x-probe-status"), Some("401"));
    assert_eq!(seen.header("x-component"), Some("GET api"));
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn routes_can_give_a_component_filter_their_own_configuration() {
    let app = Upstream::echo();
    let yaml = format!(
        "listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
clusters:
  - name: up
    endpoints:
      - url: http://{}
filters:
  - name: probe
    module: {PROBE}
    configuration: {{ tag: default }}
routes:
  - name: special
    match: {{ path: {{ prefix: /special }} }}
    cluster: up
    filters: [{{ name: probe, configuration: {{ tag: special }} }}]
  - name: rest
    match: {{ path: {{ prefix: / }} }}
    cluster: up
    filters: [probe]
",
        app.addr
    );
    let gw = TestGateway::start(&yaml).await;
    assert_eq!(
        get(&gw.url("/special")).await.header("x-probe-tag"),
        Some("special")
    );
    assert_eq!(
        get(&gw.url("/other")).await.header("x-probe-tag"),
        Some("default")
    );
}

#[tokio::test]
async fn bad_component_filters_are_refused_at_load_with_the_reason() {
    let app = Upstream::echo();
    let refused = probe(app.addr, "").replace("{ tag: t1 }", "{ refuse: true }");
    let err = TestGateway::try_start(&refused)
        .await
        .err()
        .expect("refused");
    assert!(
        err.contains(
            "filter probe: the filter rejected its configuration: refuse: true was asked for"
        ),
        "{err}"
    );

    let unknown = probe(app.addr, "").replace("{ tag: t1 }", "{ colour: red }");
    let err = TestGateway::try_start(&unknown)
        .await
        .err()
        .expect("refused");
    assert!(err.contains("unknown field `colour`"), "{err}");

    // A balancer component is not a filter.
    let wrong = probe(app.addr, "").replace(PROBE, balancers::ROUND_ROBIN);
    let err = TestGateway::try_start(&wrong).await.err().expect("refused");
    assert!(
        err.contains("filter probe") && err.contains("not an http-filter component"),
        "{err}"
    );

    let proxy_wasm_settings = probe(app.addr, "    root_id: x\n");
    let err = TestGateway::try_start(&proxy_wasm_settings)
        .await
        .err()
        .expect("refused");
    assert!(
        err.contains("root_id, vm_id and vm_configuration are proxy-wasm settings"),
        "{err}"
    );
}

#[tokio::test]
async fn a_call_to_a_cluster_decides_before_the_request_goes_on() {
    let app = Upstream::echo();
    // 200 with a body for /call/allow (when the probe said who asks), 401 for anything else.
    let auth = Upstream::start(|req| async move {
        let asked_by_probe = req
            .headers()
            .get("x-asked-by")
            .is_some_and(|v| v == "probe");
        if req.uri().path() == "/call/allow" && asked_by_probe {
            let mut r = rustygate_tests::upstream::text(StatusCode::OK, "twelve bytes");
            r.headers_mut()
                .insert("content-type", "text/plain".parse().unwrap());
            r
        } else {
            rustygate_tests::upstream::text(StatusCode::UNAUTHORIZED, "no")
        }
    });
    let yaml = probe(app.addr, "").replace(
        "filters:\n  - name: probe",
        &format!(
            "  - name: auth\n    endpoints:\n      - url: http://{}\nfilters:\n  - name: probe",
            auth.addr
        ),
    );
    let gw = TestGateway::start(&yaml).await;

    let allowed = get(&gw.url("/call/allow")).await;
    assert_eq!(allowed.status, 200);
    let echo = allowed.json();
    assert_eq!(echo["headers"]["x-auth-body-bytes"][0], "12");
    assert_eq!(echo["headers"]["x-auth-type"][0], "text/plain");
    assert_eq!(echo["headers"]["x-auth-calls"][0], "1");

    let denied = get(&gw.url("/call/deny")).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.header("x-auth-status"), Some("401"));
    assert_eq!(&denied.body[..], b"denied by probe-filter\n");
    // The answer passed the probe's own response phase.
    assert_eq!(denied.header("x-probe-status"), Some("403"));

    // A call answer may ask again: two calls, one request upstream.
    let twice = get(&gw.url("/call/twice")).await;
    assert_eq!(twice.json()["headers"]["x-auth-calls"][0], "2");

    let nowhere = get(&gw.url("/call/nowhere")).await;
    assert_eq!(nowhere.status, StatusCode::BAD_GATEWAY);
    let reason = String::from_utf8_lossy(&nowhere.body).into_owned();
    assert!(reason.contains("unknown cluster \"nowhere\""), "{reason}");

    assert_eq!(auth.requests(), 4);
    assert_eq!(app.requests(), 2);
}
