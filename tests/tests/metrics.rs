//! The admin listener: Prometheus text after traffic, health and readiness.

use std::time::Duration;

use http::StatusCode;
use rustygate_tests::client::get;
use rustygate_tests::component_filters::PROBE;
use rustygate_tests::upstream::{Upstream, text};
use rustygate_tests::{TestGateway, balancers, simple_config};

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let up = Upstream::start(|req| async move {
        if req.uri().path() == "/fail" {
            text(StatusCode::SERVICE_UNAVAILABLE, "down")
        } else {
            text(StatusCode::OK, "up")
        }
    });
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/ok")).await.status, 200);
    }
    assert_eq!(get(&gw.url("/fail")).await.status, 503);

    let metrics = get(&format!("http://{}/metrics", gw.admin)).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"rustygate_requests_total{route="all",status="200"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"rustygate_requests_total{route="all",status="503"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"rustygate_request_duration_seconds_count{route="all"} 4"#),
        "{text}"
    );
    assert!(
        text.contains("# TYPE rustygate_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("rustygate_connections_active{listener=\"main\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn upstream_failures_are_counted_by_cluster_and_reason() {
    let (_port, dead) = rustygate_tests::refusing_address();
    let gw = TestGateway::start(&simple_config(dead, "")).await;
    assert_eq!(get(&gw.url("/x")).await.status, 502);
    assert_eq!(
        get(&gw.url("/nothing-routes-here-but-all-matches"))
            .await
            .status,
        502
    );
    let text = String::from_utf8_lossy(&get(&format!("http://{}/metrics", gw.admin)).await.body)
        .into_owned();
    // Each request tried twice (the default policy retries a connect failure once), and
    // every failed attempt counts.
    assert!(
        text.contains(
            r#"rustygate_upstream_failures_total{cluster="up",reason="connect_failure"} 4"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"rustygate_upstream_retries_total{cluster="up"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn health_and_readiness_follow_the_lifecycle() {
    let up = Upstream::slow(Duration::from_millis(500));
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    let admin = gw.admin;
    assert_eq!(get(&format!("http://{admin}/healthz")).await.status, 200);
    assert_eq!(get(&format!("http://{admin}/readyz")).await.status, 200);
    // Hold a request open so the drain has something to wait for, then check readiness mid-drain.
    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(gw.stop(Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(&format!("http://{admin}/readyz")).await.status, 503);
    assert_eq!(in_flight.await.unwrap().status, 200);
    let report = stopping.await.unwrap();
    assert_eq!(
        (
            report.in_flight_at_start,
            report.drained(),
            report.abandoned
        ),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn filter_upstream_and_vm_metrics() {
    let up = Upstream::echo();
    let gw = rustygate_tests::start_probe(up.addr, "{ name: p }").await;
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/x")).await.status, 200);
    }
    // Give the 200 ms samplers a turn.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let text = String::from_utf8_lossy(&get(&format!("http://{}/metrics", gw.admin)).await.body)
        .into_owned();
    for phase in ["request_headers", "response_headers", "log"] {
        assert!(
            text.contains(&format!(
                "rustygate_filter_duration_seconds_count{{filter=\"probe\",phase=\"{phase}\"}} 5"
            )),
            "{phase}: {text}"
        );
    }
    assert!(
        text.contains("rustygate_upstream_duration_seconds_count{cluster=\"up\"} 5"),
        "{text}"
    );
    // One VM per worker (two workers); the start-up canary is gone.
    assert!(text.contains("rustygate_wasm_vms 2\n"), "{text}");
    let memory: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("rustygate_wasm_memory_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no wasm memory gauge: {text}"));
    assert!(memory >= 2.0 * 65536.0, "{memory}");
    assert!(text.contains("rustygate_requests_active 0\n"), "{text}");
    // A plain listener has no TLS handshakes to count.
    assert!(!text.contains("tls_handshake"), "{text}");
}

/// `rustygate_wasm_vms` and `rustygate_wasm_memory_bytes` from the admin listener.
async fn wasm_gauges(gw: &TestGateway) -> (f64, f64) {
    let text = String::from_utf8_lossy(&get(&format!("http://{}/metrics", gw.admin)).await.body)
        .into_owned();
    let gauge = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name}: {text}"))
    };
    (
        gauge("rustygate_wasm_vms "),
        gauge("rustygate_wasm_memory_bytes "),
    )
}

#[tokio::test]
async fn component_filters_and_balancers_count_in_the_wasm_gauges() {
    let up = Upstream::echo();
    let yaml = format!(
        "workers: 1
listeners: [ {{ name: main, address: 127.0.0.1:0 }} ]
logging: {{ access_log: false }}
balancers:
  - name: rr
    module: {rr}
filters:
  - name: probe
    module: {PROBE}
clusters:
  - name: up
    balancer: rr
    endpoints: [ {{ url: http://{addr} }} ]
routes:
  - name: all
    cluster: up
    filters: [probe]
",
        rr = balancers::ROUND_ROBIN,
        addr = up.addr
    );
    let gw = TestGateway::start(&yaml).await;
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    // The worker's balancer and filter instances; the canaries configured at load are gone.
    let (vms, memory) = wasm_gauges(&gw).await;
    assert_eq!(vms, 2.0);
    assert!(memory >= 2.0 * 65536.0, "{memory}");
    // A trap retires the filter's instance, and its memory with it.
    assert_eq!(get(&gw.url("/trap")).await.status, 503);
    let (vms, after_trap) = wasm_gauges(&gw).await;
    assert_eq!(vms, 1.0);
    assert!(
        after_trap >= 65536.0 && after_trap < memory,
        "{after_trap} of {memory}"
    );
    // The next request makes a fresh one.
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    let (vms, again) = wasm_gauges(&gw).await;
    assert_eq!(vms, 2.0);
    assert!(again > after_trap, "{again}");
}
