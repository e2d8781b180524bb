//! proxy-wasm filters through the real gateway: abi-probe is built from source with the
//! upstream Rust SDK (`proxy-wasm` crate), exactly as a filter for Envoy is built; the WAT
//! probes misbehave on purpose. Assertions are what a client sees.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use rustygate_tests::client::{Seen, get, http1, send};
use rustygate_tests::scratch::Scratch;
use rustygate_tests::upstream::{Upstream, text};
use rustygate_tests::{ABI_PROBE_WASM, TestGateway, probe_config, start_probe};

fn config(upstream: std::net::SocketAddr, filter_yaml: &str, chain_yaml: &str) -> String {
    probe_config(upstream, filter_yaml, chain_yaml)
}

#[tokio::test]
async fn filter_rewrites_request_and_response_headers() {
    let up = Upstream::echo();
    let filter = "    configuration:
      name: p1
      request_add: { x-added: from-filter }
      request_remove: [x-secret]
      response_add: { x-resp: r1 }
      response_remove: [content-type]";
    let gw = TestGateway::start(&config(up.addr, filter, "[probe]")).await;
    let req = Request::get(gw.url("/a"))
        .header("x-secret", "s")
        .body(Full::<Bytes>::default())
        .unwrap();
    let seen = send(&http1(), req).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-resp"), Some("r1"));
    assert_eq!(seen.header("x-probe"), Some("p1"));
    assert_eq!(seen.header("content-type"), None, "removed by the filter");
    let echo: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(echo["headers"]["x-added"][0], "from-filter");
    assert!(echo["headers"].get("x-secret").is_none());
    // The filter saw the gateway's forwarding headers, as filters do in Envoy.
    assert!(echo["headers"]["x-request-id"][0].is_string());
    // Host reached the upstream once, from `:authority`.
    assert_eq!(echo["headers"]["host"].as_array().unwrap().len(), 1);
}

/// `proxy_close_stream` (the Rust SDK's `reset_http_request` / `reset_http_response`) resets
/// the client's stream as Envoy does: no response at all (HTTP/1.1: the connection closes;
/// HTTP/2: `RST_STREAM`), and mid-body the rest of the body never comes. The gateway keeps
/// serving, and the request is counted with status 0.
#[tokio::test]
async fn close_stream_resets_the_client_stream_in_every_phase() {
    let up = Upstream::echo();
    let big = Upstream::download(4 * 1024 * 1024);
    let filter = "    configuration: { name: r, reset_request_path: /reset-request, reset_response_path: /reset-response, reset_body_path: /reset-body, connection_ops_path: /connection-ops }";
    let gw = TestGateway::start(&config(up.addr, filter, "[probe]")).await;
    let gw_big = TestGateway::start(&config(big.addr, filter, "[probe]")).await;
    let fails = |client: &hyper_util::client::legacy::Client<_, Full<Bytes>>, url: String| {
        let req = Request::get(url).body(Full::<Bytes>::default()).unwrap();
        client.request(req)
    };

    // Request phase: nothing reaches the upstream, the client gets no response.
    let err = fails(&http1(), gw.url("/reset-request")).await.unwrap_err();
    assert!(format!("{err:?}").contains("IncompleteMessage"), "{err:?}");
    assert_eq!(up.requests(), 0);
    // The same over HTTP/2: the stream is reset, the connection goes on serving.
    let h2 = rustygate_tests::client::h2c();
    let err = fails(&h2, gw.url("/reset-request")).await.unwrap_err();
    let source = format!("{:?}", std::error::Error::source(&err));
    assert!(
        source.contains("INTERNAL_ERROR") || source.contains("Reset"),
        "{err:?}"
    );
    let ok = h2
        .request(Request::get(gw.url("/fine")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // Response phase: the upstream answered, the client still gets nothing.
    let before = up.requests();
    let err = fails(&http1(), gw.url("/reset-response"))
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("IncompleteMessage"), "{err:?}");
    assert_eq!(up.requests(), before + 1);

    // Mid-body: the rest of the body never comes. Whether the head (and the first chunk) got
    // out before the reset depends on when the server last flushed; either way the client
    // must not take the response for complete.
    if let Ok(resp) = fails(&http1(), gw_big.url("/reset-body")).await {
        assert_eq!(resp.status(), 200);
        let body = http_body_util::BodyExt::collect(resp.into_body()).await;
        assert!(body.is_err(), "the body must end in an error, not complete");
    }
    assert_eq!(big.requests(), 1, "the upstream answered before the reset");

    // Closing the downstream or upstream connection is not an HTTP filter's to do: as in
    // Envoy, the calls answer OK (the SDK would trap on anything else) and the request goes
    // on, edited after them.
    let client = http1();
    for _ in 0..2 {
        let resp = fails(&client, gw.url("/connection-ops")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echoed["headers"]["x-connection-ops"][0], "done", "{echoed}");
    }

    // Other paths are unaffected, and the resets are counted with status 0.
    assert_eq!(get(&gw.url("/fine")).await.status, 200);
    let text = String::from_utf8_lossy(&get(&format!("http://{}/metrics", gw.admin)).await.body)
        .into_owned();
    let resets = text
        .lines()
        .find(|l| l.starts_with("rustygate_requests_total{") && l.contains("status=\"0\""))
        .unwrap_or_else(|| panic!("no status 0 series in\n{text}"));
    assert!(resets.ends_with(" 3"), "{resets}");
}

#[tokio::test]
async fn one_module_serves_routes_with_different_configurations() {
    let up = Upstream::echo();
    let filter = "    configuration: { name: base, response_add: { x-base: \"1\" } }";
    let chain = "[probe, { name: probe, configuration: { name: override, response_add: { x-override: \"2\" } } }]";
    let gw = TestGateway::start(&config(up.addr, filter, chain)).await;
    let seen = get(&gw.url("/x")).await;
    assert_eq!(seen.status, 200);
    // Response phases run in reverse: the override (second in the chain) adds its header first.
    let probes: Vec<&str> = seen
        .headers
        .get_all("x-probe")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(probes, ["override", "base"]);
    assert_eq!(seen.header("x-base"), Some("1"));
    assert_eq!(seen.header("x-override"), Some("2"));
}

/// Envoy answers a gRPC request's local reply in gRPC's own form ("trailers-only"): HTTP 200,
/// the status as `grpc-status` (mapped from the HTTP one), the body as `grpc-message`, before
/// the response phases, which see that form.
#[tokio::test]
async fn local_response_to_a_grpc_request_is_trailers_only() {
    let up = Upstream::echo();
    let filter = "    configuration: { name: guard, deny_path: /pkg.Svc/Denied, properties: [response.headers.grpc-status, response.headers.content-type] }";
    let gw = TestGateway::start(&config(up.addr, filter, "[probe]")).await;
    let req = rustygate_tests::client::grpc_call(&gw.url("/pkg.Svc/Denied"));
    let seen = send(&rustygate_tests::client::h2c(), req).await;
    assert_eq!(seen.status, 200);
    assert!(seen.body.is_empty());
    assert_eq!(seen.header("content-type"), Some("application/grpc"));
    assert_eq!(
        seen.header("grpc-status"),
        Some("7"),
        "403 is PERMISSION_DENIED"
    );
    assert_eq!(seen.header("grpc-message"), Some("denied by abi-probe"));
    assert_eq!(seen.header("x-denied-by"), Some("guard"));
    assert_eq!(
        seen.header("x-prop-response-headers-grpc-status"),
        Some("7")
    );
    assert_eq!(
        seen.header("x-prop-response-headers-content-type"),
        Some("application/grpc")
    );
    assert_eq!(up.requests(), 0);
}

/// The gateway's own error for a gRPC request on a filtered route: trailers-only, its message
/// in words as `grpc-message`, and the filters' response phases see that form.
#[tokio::test]
async fn gateway_error_to_a_grpc_request_is_trailers_only_through_the_filters() {
    let (_port, refused) = rustygate_tests::refusing_address();
    let filter =
        "    configuration: { name: p, properties: [response.headers.grpc-status, response.code] }";
    let gw = TestGateway::start(&config(refused, filter, "[probe]")).await;
    let req = rustygate_tests::client::grpc_call(&gw.url("/pkg.Svc/Call"));
    let seen = send(&rustygate_tests::client::h2c(), req).await;
    assert_eq!(seen.status, 200);
    assert!(seen.body.is_empty());
    assert_eq!(seen.header("grpc-status"), Some("14"), "502 is UNAVAILABLE");
    let message = seen.header("grpc-message").unwrap_or_default();
    assert!(
        message.starts_with("could not connect to upstream: "),
        "{message}"
    );
    assert_eq!(
        seen.header("x-prop-response-headers-grpc-status"),
        Some("14")
    );
    assert_eq!(seen.header("x-prop-response-code"), Some("200"));
}

#[tokio::test]
async fn local_response_from_the_request_phase_skips_the_upstream() {
    let up = Upstream::echo();
    let filter = "    configuration: { name: guard, deny_path: /denied, response_add: { x-seen-by-response-phase: \"yes\" }, properties: [response.headers.content-length, response.headers.content-type] }";
    let gw = TestGateway::start(&config(up.addr, filter, "[probe]")).await;
    let seen = get(&gw.url("/denied")).await;
    assert_eq!(seen.status, StatusCode::FORBIDDEN);
    assert_eq!(&seen.body[..], b"denied by abi-probe\n");
    assert_eq!(seen.header("x-denied-by"), Some("guard"));
    assert_eq!(seen.header("content-type"), Some("text/plain"));
    assert_eq!(seen.header("content-length"), Some("20"));
    // The local reply ran through the same filter's response phase, as in Envoy.
    assert_eq!(seen.header("x-seen-by-response-phase"), Some("yes"));
    // That phase saw the head Envoy shows it: the body's length and type.
    assert_eq!(
        seen.header("x-prop-response-headers-content-length"),
        Some("20")
    );
    assert_eq!(
        seen.header("x-prop-response-headers-content-type"),
        Some("text/plain")
    );
    assert!(seen.header("x-request-id").is_some());
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn local_response_from_the_response_phase_replaces_the_upstream_response() {
    let up =
        Upstream::start(|_| async { text(StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded") });
    let filter = "    configuration: { name: mask, replace_status: 500 }";
    let gw = TestGateway::start(&config(up.addr, filter, "[probe]")).await;
    let seen = get(&gw.url("/x")).await;
    assert_eq!(seen.status, StatusCode::BAD_GATEWAY);
    assert_eq!(&seen.body[..], b"replaced by abi-probe\n");
    assert_eq!(seen.header("x-replaced-by"), Some("mask"));
}

#[tokio::test]
async fn properties_are_encoded_as_envoy_does() {
    let up = Upstream::echo();
    let filter = "    configuration: { properties: [request.path, request.method, request.host, source.port, plugin_name, route_name, request.headers.x-tag] }";
    let gw = TestGateway::start(&config(up.addr, filter, "[probe]")).await;
    let req = Request::get(gw.url("/p?q=1"))
        .header("x-tag", "t1")
        .body(Full::<Bytes>::default())
        .unwrap();
    let seen = send(&http1(), req).await;
    assert_eq!(seen.header("x-prop-request-path"), Some("/p?q=1"));
    assert_eq!(seen.header("x-prop-request-method"), Some("GET"));
    assert_eq!(seen.header("x-prop-plugin_name"), Some("probe"));
    assert_eq!(seen.header("x-prop-route_name"), Some("api"));
    assert_eq!(seen.header("x-prop-request-headers-x-tag"), Some("t1"));
    assert_eq!(
        seen.header("x-prop-request-host"),
        Some(gw.addr.to_string().as_str())
    );
    // source.port is an 8-byte little-endian integer; the probe decodes it.
    let port: u16 = seen.header("x-prop-source-port").unwrap().parse().unwrap();
    assert!(port > 0);
}

#[tokio::test]
async fn shared_data_counts_exactly_across_workers() {
    let up = Upstream::echo();
    let filter = "    configuration: { shared_counter: hits }";
    let gw = TestGateway::start(&config(up.addr, filter, "[probe]")).await;
    // As in Envoy, a set on a key that does not exist yet ignores the CAS: two workers that
    // both read "not found" would both create the counter. So one request creates it first;
    // from then on every increment must serialize through the CAS.
    let first = get(&gw.url("/c")).await;
    assert_eq!(first.header("x-shared-count"), Some("1"));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let url = gw.url("/c");
        // Separate connections, so both workers (SO_REUSEPORT) take part.
        tasks.push(tokio::spawn(async move { get(&url).await }));
    }
    let mut counts: Vec<u64> = Vec::new();
    for t in tasks {
        counts.push(
            t.await
                .unwrap()
                .header("x-shared-count")
                .unwrap()
                .parse()
                .unwrap(),
        );
    }
    counts.sort_unstable();
    assert_eq!(
        counts,
        (2..=41).collect::<Vec<u64>>(),
        "every increment landed exactly once"
    );
}

#[tokio::test]
async fn filter_metrics_and_failures_appear_on_metrics() {
    let up = Upstream::echo();
    let filter = "    configuration: { metric: probe_requests, trap_path: /trap }";
    let gw = TestGateway::start(&config(up.addr, filter, "[probe]")).await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/ok")).await.status, 200);
    }
    assert_eq!(get(&gw.url("/trap")).await.status, 503);
    let text = String::from_utf8_lossy(&get(&format!("http://{}/metrics", gw.admin)).await.body)
        .into_owned();
    // The trapping request died before the probe counted it.
    assert!(
        text.contains(r#"rustygate_filter_probe_requests{filter="probe"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"rustygate_filter_failures_total{filter="probe",reason="trap"} 1"#),
        "{text}"
    );
}

/// `metrics.filter_tags` turns parts of the names filters give their metrics into labels, as
/// Envoy's `stats_tags` do; a fixed tag labels every filter metric.
#[tokio::test]
async fn filter_metric_names_give_up_their_tags() {
    let up = Upstream::echo();
    let filter = "    configuration: { metric: requests_zone=blue_total }";
    let yaml = config(up.addr, filter, "[probe]").replacen(
        "clusters:",
        "metrics:\n  filter_tags:\n    - { name: zone, regex: '(_zone=([a-z]+))' }\n    - { name: mesh, fixed_value: east }\nclusters:",
        1,
    );
    let gw = TestGateway::start(&yaml).await;
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/ok")).await.status, 200);
    }
    let text = String::from_utf8_lossy(&get(&format!("http://{}/metrics", gw.admin)).await.body)
        .into_owned();
    assert!(
        text.contains(
            r#"rustygate_filter_requests_total{filter="probe",zone="blue",mesh="east"} 2"#
        ),
        "{text}"
    );
}

/// A route's and a cluster's `metadata` reach filters as Envoy's `route_metadata` and
/// `cluster_metadata` properties: strings raw, numbers as doubles, maps as pairs, lists as
/// pairs with empty values, the whole property as the `Metadata` protobuf message; a route
/// without it has none.
#[tokio::test]
async fn route_and_cluster_metadata_reach_filters_as_in_envoy() {
    let up = Upstream::echo();
    let filter = "    configuration: { properties: [route_metadata.filter_metadata.acme.auth, route_metadata.filter_metadata.acme.rpm_num, route_metadata.filter_metadata.acme.owner_map, route_metadata.filter_metadata.acme.regions_list, route_metadata.filter_metadata.acme.missing, cluster_metadata.filter_metadata.acme.zone, cluster_metadata], property_status: [route_metadata, cluster_metadata, route_metadata.filter_metadata.acme.missing] }";
    let yaml = config(up.addr, filter, "[probe]")
        .replacen("prefix: / }", "prefix: /meta }", 1)
        .replacen(
            "filters:\n  - name: probe",
            "    metadata: { filter_metadata: { acme: { zone: eu-west } } }\nfilters:\n  - name: probe",
            1,
        )
        + "    metadata:
      filter_metadata:
        acme: { auth: x-auth, rpm_num: 60, owner_map: { team: edge, tier: gold }, regions_list: [eu, us] }
  - name: answer
    match: { path: { prefix: /answer } }
    direct_response: { status: 200, body: here }
    filters: [probe]
  - name: plain
    match: { path: { prefix: / } }
    cluster: up
    filters: [probe]
";
    let gw = TestGateway::start(&yaml).await;
    let seen = get(&gw.url("/meta")).await;
    let prop = |p: &str| seen.header(&format!("x-prop-route_metadata-filter_metadata-acme-{p}"));
    assert_eq!(prop("auth"), Some("x-auth"));
    assert_eq!(prop("rpm_num"), Some("60"));
    assert_eq!(prop("owner_map"), Some("team=edge,tier=gold"));
    assert_eq!(prop("regions_list"), Some("eu=,us="));
    assert_eq!(prop("missing"), Some("<none>"));
    assert_eq!(
        seen.header("x-prop-cluster_metadata-filter_metadata-acme-zone"),
        Some("eu-west")
    );
    // Metadata{filter_metadata{"acme": Struct{fields{"zone": Value{string_value: "eu-west"}}}}}
    assert_eq!(
        seen.header("x-prop-cluster_metadata"),
        Some("0a1b0a0461636d6512130a110a047a6f6e6512091a0765752d77657374")
    );
    let status = |seen: &Seen, p: &str| {
        seen.header(&format!("x-prop-status-{p}"))
            .map(str::to_owned)
    };
    assert_eq!(status(&seen, "cluster_metadata").as_deref(), Some("ok 29"));
    assert_eq!(
        status(&seen, "route_metadata-filter_metadata-acme-missing").as_deref(),
        Some("not_found")
    );
    let plain = get(&gw.url("/other")).await;
    assert_eq!(
        plain.header("x-prop-route_metadata-filter_metadata-acme-auth"),
        Some("<none>")
    );
    // A route without metadata has Envoy's empty `Metadata`: found, with no bytes.
    assert_eq!(status(&plain, "route_metadata").as_deref(), Some("ok 0"));
    // A route that answers by itself has no cluster, so no cluster metadata at all.
    let answer = get(&gw.url("/answer")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(status(&answer, "route_metadata").as_deref(), Some("ok 0"));
    assert_eq!(
        status(&answer, "cluster_metadata").as_deref(),
        Some("not_found")
    );
}

async fn assert_fails_closed_then_recovers(gw: &TestGateway, path: &str, reason: &str) {
    let started = Instant::now();
    let seen = get(&gw.url(path)).await;
    let took = started.elapsed();
    assert_eq!(seen.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
    let body = seen.json();
    assert_eq!(body["error"], "filter_failed");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.ends_with(&format!("filter probe failed: {reason}")),
        "{message}"
    );
    assert!(
        !message.contains("wasm"),
        "no guest internals in client errors: {message}"
    );
    assert!(took < Duration::from_secs(2), "{path} took {took:?}");
    // The VM was replaced: the gateway keeps serving through the same filter.
    for _ in 0..4 {
        let ok = get(&gw.url("/fine")).await;
        assert_eq!(ok.status, 200, "after {path}");
        assert_eq!(ok.header("x-probe"), Some("f"));
    }
}

#[tokio::test]
async fn trap_infinite_loop_and_memory_bomb_fail_the_request_not_the_gateway() {
    let up = Upstream::echo();
    let filter =
        "    configuration: { name: f, trap_path: /trap, loop_path: /loop, oom_path: /oom }
    limits: { max_memory_bytes: 8388608, cpu_per_callback: 20ms }";
    let gw = TestGateway::start(&config(up.addr, filter, "[probe]")).await;
    assert_fails_closed_then_recovers(&gw, "/trap", "trap").await;
    assert_fails_closed_then_recovers(&gw, "/loop", "cpu_deadline").await;
    assert_fails_closed_then_recovers(&gw, "/oom", "memory").await;
    assert_eq!(
        up.requests(),
        12,
        "only the 12 good requests reached the upstream"
    );
}

#[tokio::test]
async fn fail_open_skips_the_failed_filter() {
    let up = Upstream::echo();
    let filter = "    configuration: { name: f, trap_path: /trap, request_add: { x-added: \"1\" } }
    failure_policy: fail_open";
    let gw = TestGateway::start(&config(up.addr, filter, "[probe]")).await;
    let seen = get(&gw.url("/trap")).await;
    assert_eq!(seen.status, 200, "the request passed through");
    assert_eq!(
        seen.header("x-probe"),
        None,
        "the failed filter did not run its response phase"
    );
    assert_eq!(get(&gw.url("/next")).await.header("x-probe"), Some("f"));
}

/// Builds `guests/wat/<name>.wat` into `<dir>/<name>.wasm`; returns that path.
fn wat_file(dir: &Scratch, name: &str) -> String {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("guests/wat")
        .join(format!("{name}.wat"));
    let wasm = wat::parse_file(&src).unwrap();
    let out = dir.join(format!("{name}.wasm"));
    std::fs::write(&out, wasm).unwrap();
    out.display().to_string()
}

fn with_module(upstream: std::net::SocketAddr, module: &str, extra: &str) -> String {
    config(upstream, extra, "[probe]").replace(ABI_PROBE_WASM, module)
}

#[tokio::test]
async fn bad_guest_pointers_get_invalid_memory_access_not_a_crash() {
    let up = Upstream::echo();
    let dir = Scratch::new("wat");
    let module = wat_file(&dir, "bad_pointers");
    let gw = TestGateway::start(&with_module(up.addr, &module, "")).await;
    for _ in 0..3 {
        // 400 + 6 * 10 + 6: both calls returned INVALID_MEMORY_ACCESS and the VM lives on.
        assert_eq!(get(&gw.url("/x")).await.status.as_u16(), 466);
    }
}

#[tokio::test]
async fn modules_that_cannot_work_are_refused_at_load_with_the_reason() {
    let up = Upstream::echo();
    let dir = Scratch::new("refused");
    let err = TestGateway::try_start(&with_module(up.addr, &wat_file(&dir, "unknown_import"), ""))
        .await
        .err()
        .unwrap();
    assert!(
        err.contains("filter probe") && err.contains("proxy_does_not_exist"),
        "{err}"
    );

    let err = TestGateway::try_start(&with_module(up.addr, &wat_file(&dir, "no_abi"), ""))
        .await
        .err()
        .unwrap();
    assert!(err.contains("not a proxy-wasm module"), "{err}");

    let full = std::fs::read(ABI_PROBE_WASM).unwrap();
    let truncated = dir.join("truncated.wasm");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let err = TestGateway::try_start(&with_module(up.addr, &truncated.display().to_string(), ""))
        .await
        .err()
        .unwrap();
    assert!(
        err.contains("truncated.wasm") && err.contains("not a valid WebAssembly module"),
        "{err}"
    );

    let err = TestGateway::try_start(&with_module(up.addr, "/nonexistent/filter.wasm", ""))
        .await
        .err()
        .unwrap();
    assert!(
        err.contains("/nonexistent/filter.wasm: cannot read"),
        "{err}"
    );
}

#[tokio::test]
async fn a_filter_that_rejects_its_configuration_stops_start_up() {
    let up = Upstream::echo();
    let filter = "    configuration: { no_such_option: true }";
    let err = TestGateway::try_start(&config(up.addr, filter, "[probe]"))
        .await
        .err()
        .unwrap();
    assert!(
        err.contains("filter probe") && err.contains("rejected its configuration"),
        "{err}"
    );
}

#[tokio::test]
async fn every_worker_gets_its_own_vm_for_every_filter() {
    // 16 workers × 5 filters with distinct vm_ids = 80 VMs, each instantiated at start-up.
    let up = Upstream::echo();
    let filters: String = (1..=5)
        .map(|i| format!("  - {{ name: p{i}, module: {ABI_PROBE_WASM}, vm_id: vm{i}, configuration: {{ name: p{i} }} }}\n"))
        .collect();
    let yaml = format!(
        "workers: 16
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
logging: {{ access_log: false }}
clusters: [{{ name: up, endpoints: [{{ url: http://{} }}] }}]
filters:
{filters}routes: [{{ name: api, cluster: up, filters: [p1, p2, p3, p4, p5] }}]
",
        up.addr
    );
    let gw = TestGateway::start(&yaml).await;
    let seen = get(&gw.url("/x")).await;
    let probes: Vec<&str> = seen
        .headers
        .get_all("x-probe")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(probes, ["p5", "p4", "p3", "p2", "p1"]);
}

/// GETs `/` until `header` satisfies `done` (at most 5 s); returns the last value seen.
async fn poll_header(gw: &TestGateway, header: &str, done: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = get(&gw.url("/")).await;
        let value: u64 = seen.header(header).expect(header).parse().unwrap();
        if done(value) || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ticks_fire_on_every_worker_until_the_filter_stops_them() {
    let app = Upstream::echo();
    let gw = start_probe(app.addr, "{ tick_ms: 20, tick_stop_after: 5 }").await;
    // Each worker's VM counts its own ticks and stops at 5.
    assert_eq!(poll_header(&gw, "x-ticks", |n| n == 5).await, 5);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..8 {
        let seen = get(&gw.url("/")).await;
        assert_eq!(
            seen.header("x-ticks"),
            Some("5"),
            "no tick after the period was set to 0, on any worker"
        );
    }
}

#[tokio::test]
async fn shared_queue_items_from_every_worker_reach_the_consumer() {
    let app = Upstream::echo();
    let gw = start_probe(app.addr, "{ queue: audit }").await;
    let sent = 20;
    let mut tasks = Vec::new();
    for _ in 0..sent {
        let url = gw.url("/item");
        tasks.push(tokio::spawn(async move { get(&url).await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // Each request enqueued its path; the consumer (one worker's VM) is told with
    // proxy_on_queue_ready and counts what it dequeued. The polling requests enqueue too.
    let consumed = poll_header(&gw, "x-queue-consumed", |n| n >= sent).await;
    assert!(consumed >= sent, "consumed {consumed} of {sent}");
}

#[tokio::test]
async fn gateway_errors_pass_through_the_filters_response_phases() {
    // Nothing listens on this port: the gateway answers 502 itself.
    let (_port, addr) = rustygate_tests::refusing_address();
    let filter = "    configuration: { name: edge, response_add: { x-edge: \"1\" } }";
    let gw = TestGateway::start(&config(addr, filter, "[probe]")).await;
    let seen = get(&gw.url("/x")).await;
    assert_eq!(seen.status, StatusCode::BAD_GATEWAY);
    assert_eq!(seen.json()["error"], "connect_failure");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    // As in Envoy, the filter saw the gateway's own response.
    assert_eq!(seen.header("x-edge"), Some("1"));
    assert_eq!(seen.header("x-probe"), Some("edge"));
}

/// Two echo upstreams as clusters `first` and `second`, the ABI probe as filter `probe` with
/// `probe_config`, and `routes` (YAML list items).
fn two_clusters(first: &Upstream, second: &Upstream, probe_config: &str, routes: &str) -> String {
    format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
clusters:
  - name: first
    endpoints: [ {{ url: \"http://{}\" }} ]
  - name: second
    endpoints: [ {{ url: \"http://{}\" }} ]
filters:
  - name: probe
    module: {ABI_PROBE_WASM}
    configuration: {probe_config}
routes:
{routes}",
        first.addr, second.addr
    )
}

#[tokio::test]
async fn a_rewritten_path_is_routed_again() {
    let (old, new) = (Upstream::echo(), Upstream::echo());
    let routes = "  - { name: v2, match: { path: { prefix: /v2/ } }, cluster: second }
  - { name: v1, match: { path: { prefix: /v1/ } }, cluster: first, filters: [probe] }
";
    let yaml = two_clusters(&old, &new, "{ rewrite_prefix: [/v1/, /v2/] }", routes);
    let gw = TestGateway::start(&yaml).await;
    let seen = get(&gw.url("/v1/users?id=7")).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.json()["path"], "/v2/users?id=7");
    // As in Envoy (the route cache is cleared on header writes), the new path picked the v2
    // route's cluster.
    assert_eq!((old.requests(), new.requests()), (0, 1));
}

#[tokio::test]
async fn a_header_a_filter_adds_is_routed_on_when_a_route_matches_on_it() {
    let (plain, tagged) = (Upstream::echo(), Upstream::echo());
    let routes = "  - name: gold
    match: { path: { prefix: /tiered/ }, headers: [ { name: x-tier, exact: gold } ] }
    cluster: second
  - { name: tiered, match: { path: { prefix: /tiered/ } }, cluster: first, filters: [probe] }
  - { name: other, match: { path: { prefix: /other/ } }, cluster: first, filters: [probe] }
";
    let yaml = two_clusters(&plain, &tagged, "{ request_add: { x-tier: gold } }", routes);
    let gw = TestGateway::start(&yaml).await;
    let seen = get(&gw.url("/tiered/a")).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.json()["headers"]["x-tier"][0], "gold");
    assert_eq!((plain.requests(), tagged.requests()), (0, 1));
    // No route matches /other/ with the header: the request stays where it was.
    let seen = get(&gw.url("/other/b")).await;
    assert_eq!(seen.status, 200);
    assert_eq!((plain.requests(), tagged.requests()), (1, 1));
}

/// A filter that sets `:authority` takes the request to the route whose `host` (or
/// `:authority`) condition the new one meets, as the client's `Host` would have.
#[tokio::test]
async fn an_authority_a_filter_sets_is_routed_on() {
    let (plain, tenant) = (Upstream::echo(), Upstream::echo());
    let routes = "  - name: tenant
    match: { path: { prefix: /t/ }, headers: [ { name: host, exact: tenant.test } ] }
    cluster: second
  - { name: any, match: { path: { prefix: /t/ } }, cluster: first, filters: [probe] }
";
    let yaml = two_clusters(
        &plain,
        &tenant,
        "{ request_add: { ':authority': tenant.test } }",
        routes,
    );
    let gw = TestGateway::start(&yaml).await;
    let seen = get(&gw.url("/t/a")).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.json()["headers"]["host"][0], "tenant.test");
    assert_eq!((plain.requests(), tenant.requests()), (0, 1));
}

#[tokio::test]
async fn what_envoy_tells_filters_about_the_request_and_its_outcome() {
    let up = Upstream::echo();
    let filter = "    configuration:
      properties: [request.time, request.referer, request.useragent, request.headers_bytes, request.duration, connection.id, upstream.address, upstream.request_attempt_count]
      log_properties: [request.duration, request.size, request.total_size, response.code, response.size, upstream.address, upstream.port, upstream.request_attempt_count, connection.id]";
    let gw = TestGateway::start(&config(up.addr, filter, "[probe]")).await;
    let client = http1();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let req = Request::post(gw.url("/logged"))
        .header("user-agent", "probe-test/1")
        .header("referer", "https://ref.example/")
        .body(Full::new(Bytes::from_static(b"12345")))
        .unwrap();
    let first = send(&client, req).await;
    assert_eq!(first.status, 200);
    let prop = |name: &str| first.header(&format!("x-prop-{name}")).unwrap().to_owned();
    assert_eq!(prop("request-useragent"), "probe-test/1");
    assert_eq!(prop("request-referer"), "https://ref.example/");
    let time: u64 = prop("request-time").parse().unwrap();
    assert!(
        time + 1_000_000_000 > before && time < before + 10_000_000_000,
        "request.time {time} is not about now ({before})"
    );
    assert!(prop("request-headers_bytes").parse::<u64>().unwrap() > 20);
    assert_eq!(prop("upstream-address"), up.addr.to_string());
    assert_eq!(prop("upstream-request_attempt_count"), "1");
    let connection: u64 = prop("connection-id").parse().unwrap();
    assert!(connection >= 1);

    // What `on_log` saw of the first request, reported by the next one.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let second = send(
        &client,
        Request::get(gw.url("/next")).body(Full::default()).unwrap(),
    )
    .await;
    let logged: std::collections::HashMap<&str, &str> = second
        .header("x-logged")
        .expect("on_log ran for the first request")
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(logged["response.code"], "200");
    assert_eq!(logged["request.size"], "5");
    assert!(logged["request.total_size"].parse::<u64>().unwrap() > 5);
    assert_eq!(logged["response.size"], first.body.len().to_string());
    assert_eq!(logged["upstream.address"], up.addr.to_string());
    assert_eq!(logged["upstream.port"], up.addr.port().to_string());
    assert_eq!(logged["upstream.request_attempt_count"], "1");
    assert_eq!(logged["connection.id"], connection.to_string());
    let duration: u64 = logged["request.duration"].parse().unwrap();
    assert!(duration > 0 && duration < 10_000_000_000, "{duration} ns");
    // Before the request is over its duration is not known, as in Envoy.
    assert_eq!(prop("request-duration"), "<none>");
}
