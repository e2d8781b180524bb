//! OpenTelemetry tracing, seen from outside: spans arrive at a real OTLP receiver (gRPC and
//! HTTP/protobuf), continue the caller's `traceparent`, and the upstream and the services a
//! filter calls see the gateway's spans as their parents; the access log names the trace.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use parking_lot::Mutex;
use rustygate_tests::client::{get, http1, send};
use rustygate_tests::otlp::{OtlpReceiver, ReceivedSpan};
use rustygate_tests::process::{GatewayProcess, free_port, validate};
use rustygate_tests::tls::Pki;
use rustygate_tests::upstream::{Upstream, text};
use rustygate_tests::{ABI_PROBE_WASM, TestGateway};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const INTERNAL: i32 = 1;

/// The `traceparent` a caller sends: its trace and its own span.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

/// Answers 200 "alice" and keeps the `traceparent` of every call.
fn auth_service(seen: Arc<Mutex<Vec<String>>>) -> Upstream {
    Upstream::start(move |req| {
        let seen = seen.clone();
        async move {
            if let Some(tp) = req.headers().get("traceparent") {
                seen.lock().push(tp.to_str().unwrap().to_owned());
            }
            text(StatusCode::OK, "alice")
        }
    })
}

fn traced_config(app: std::net::SocketAddr, auth: std::net::SocketAddr, tracing: &str) -> String {
    format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
tracing:
{tracing}
clusters:
  - name: app
    endpoints:
      - url: http://{app}
  - name: auth
    endpoints:
      - url: http://{auth}
filters:
  - name: probe
    module: {ABI_PROBE_WASM}
    configuration: {{ auth_cluster: auth, auth_path: /check }}
routes:
  - name: checked
    match: {{ path: {{ prefix: /checked }} }}
    cluster: app
    filters: [probe]
  - name: plain
    cluster: app
"
    )
}

/// `(trace id, span id, flags)` of a `traceparent` value.
fn parse_traceparent(v: &str) -> (String, String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {v:?}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// Flushes the gateway's spans and waits until a server span has arrived.
async fn exported(gw: &TestGateway, otlp: &OtlpReceiver) -> Vec<ReceivedSpan> {
    gw.flush_traces().await;
    otlp.wait_for(Duration::from_secs(10), |s| {
        s.iter().any(|s| s.kind == SERVER)
    })
    .await
}

fn find<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name:?} among {spans:#?}"))
}

#[tokio::test]
async fn a_request_is_one_trace_continuing_the_callers_over_grpc() {
    let otlp = OtlpReceiver::start();
    let app = Upstream::echo();
    let auth_seen = Arc::new(Mutex::new(Vec::new()));
    let auth = auth_service(auth_seen.clone());
    let gw = TestGateway::start(&traced_config(
        app.addr,
        auth.addr,
        &format!(
            "  enabled: true\n  endpoint: {}\n  service_name: edge",
            otlp.grpc_endpoint()
        ),
    ))
    .await;

    let req = Request::get(gw.url("/checked/items?x=1"))
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .header("x-user", "alice")
        .body(Full::<Bytes>::default())
        .unwrap();
    let seen = send(&http1(), req).await;
    assert_eq!(seen.status, 200);
    let echo = seen.json();
    assert_eq!(echo["headers"]["x-auth-user"][0], "alice");
    // The attempt's context replaces the caller's, which the filter saw.
    assert_eq!(
        echo["headers"]["traceparent"].as_array().map(Vec::len),
        Some(1)
    );
    let (up_trace, up_parent, up_flags) =
        parse_traceparent(echo["headers"]["traceparent"][0].as_str().unwrap());
    assert_eq!(up_trace, TRACE, "the upstream continues the caller's trace");
    assert_eq!(up_flags, "01");

    gw.flush_traces().await;
    let spans = otlp
        .wait_for(Duration::from_secs(10), |s| {
            s.iter().any(|s| s.kind == SERVER) && s.iter().any(|s| s.name == "filter probe log")
        })
        .await;
    assert!(spans.iter().all(|s| s.trace_id == TRACE), "{spans:#?}");
    assert!(spans.iter().all(|s| s.service == "edge" && s.via == "grpc"));

    let server = find(&spans, "GET /checked/items");
    assert_eq!(server.kind, SERVER);
    assert_eq!(server.parent_span_id, CALLER, "child of the caller's span");
    assert_eq!(server.attr("http.route"), Some("checked"));
    assert_eq!(server.attr("http.request.method"), Some("GET"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("client.address"), Some("127.0.0.1"));
    assert!(server.end_ns >= server.start_ns);

    let upstream = find(&spans, "upstream app");
    assert_eq!(upstream.kind, CLIENT);
    assert_eq!(upstream.parent_span_id, server.span_id);
    assert_eq!(
        up_parent, upstream.span_id,
        "the upstream's parent is the attempt span"
    );
    assert_eq!(
        upstream.attr("server.address"),
        Some(&*app.addr.to_string())
    );
    assert_eq!(upstream.attr("rustygate.try"), Some("1"));
    assert_eq!(upstream.attr("http.response.status_code"), Some("200"));

    // The filter paused on its outbound call; the call is a span of its own, and the auth
    // service sees it as its parent.
    let headers = find(&spans, "filter probe request_headers");
    assert_eq!(headers.kind, INTERNAL);
    assert_eq!(headers.parent_span_id, server.span_id);
    assert_eq!(headers.attr("rustygate.action"), Some("pause"));
    assert_eq!(headers.attr("rustygate.filter"), Some("probe"));
    let call = find(&spans, "http_call auth");
    assert_eq!(call.kind, CLIENT);
    assert_eq!(call.parent_span_id, server.span_id);
    assert_eq!(call.attr("http.response.status_code"), Some("200"));
    let auth_seen = auth_seen.lock().clone();
    assert_eq!(auth_seen.len(), 1, "{auth_seen:?}");
    let (auth_trace, auth_parent, _) = parse_traceparent(&auth_seen[0]);
    assert_eq!(auth_trace, TRACE);
    assert_eq!(auth_parent, call.span_id);

    let response = find(&spans, "filter probe response_headers");
    assert_eq!(response.attr("rustygate.action"), Some("continue"));
    let log = find(&spans, "filter probe log");
    assert_eq!(log.parent_span_id, server.span_id);
    assert!(
        log.start_ns >= headers.end_ns,
        "spans carry their own times"
    );

    gw.stop(Duration::from_secs(1)).await;
}

/// A filter's gRPC call is a client span of the request's trace, named `service/method`
/// with the RPC attributes and the call's status, and the gRPC server sees it as its parent.
#[tokio::test]
async fn a_filters_grpc_call_is_a_span_of_the_request() {
    let otlp = OtlpReceiver::start();
    let app = Upstream::echo();
    let grpc = rustygate_tests::grpc::echo_server();
    let yaml = traced_config(
        app.addr,
        grpc.upstream.addr,
        &format!("  enabled: true\n  endpoint: {}", otlp.grpc_endpoint()),
    )
    .replace("  - name: auth\n", "  - name: auth\n    protocol: http2\n")
    .replace(
        "auth_cluster: auth, auth_path: /check",
        "grpc_cluster: auth",
    )
    .replace("prefix: /checked", "prefix: /grpc");
    let gw = TestGateway::start(&yaml).await;
    for (path, status) in [("/grpc/call/Unary", 200), ("/grpc/call/Deny", 403)] {
        let req = Request::get(gw.url(path))
            .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
            .body(Full::<Bytes>::default())
            .unwrap();
        assert_eq!(send(&http1(), req).await.status, status);
    }
    let (trace, parent, _) = parse_traceparent(&grpc.last("traceparent").unwrap());
    assert_eq!(trace, TRACE);

    gw.flush_traces().await;
    let spans = otlp
        .wait_for(Duration::from_secs(10), |s| {
            s.iter()
                .filter(|s| s.name.starts_with("test.Echo/"))
                .count()
                == 2
        })
        .await;
    let call = find(&spans, "test.Echo/Unary");
    assert_eq!(call.kind, CLIENT);
    assert_eq!(call.attr("rpc.system"), Some("grpc"));
    assert_eq!(call.attr("rpc.service"), Some("test.Echo"));
    assert_eq!(call.attr("rpc.method"), Some("Unary"));
    assert_eq!(call.attr("rpc.grpc.status_code"), Some("0"));
    assert_eq!(call.attr("rustygate.cluster"), Some("auth"));
    assert_ne!(call.status, 2, "OK is not an error");
    let server = spans
        .iter()
        .find(|s| s.kind == SERVER && s.span_id == call.parent_span_id)
        .expect("the call hangs under its request's server span");
    assert_eq!(server.name, "GET /grpc/call/Unary");
    let denied = find(&spans, "test.Echo/Deny");
    assert_eq!(denied.attr("rpc.grpc.status_code"), Some("7"));
    assert_eq!(denied.status, 2, "a non-OK status is an error");
    assert_eq!(
        parent, denied.span_id,
        "the server's parent is the call's span"
    );
    gw.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn failures_mark_spans_as_errors_and_sampling_follows_the_caller() {
    let otlp = OtlpReceiver::start();
    let app = Upstream::echo();
    let auth = auth_service(Arc::default());
    // New traces are never sampled; callers' decisions are followed.
    let gw = TestGateway::start(&traced_config(
        app.addr,
        auth.addr,
        &format!(
            "  enabled: true\n  endpoint: {}\n  sampling_ratio: 0.0",
            otlp.grpc_endpoint()
        ),
    ))
    .await;

    // No traceparent: a new, unsampled trace. Nothing is exported, but the upstream still
    // gets a traceparent saying so, to keep the chain of calls in one trace.
    let seen = get(&gw.url("/plain/a")).await;
    assert_eq!(seen.status, 200);
    let (_, _, flags) =
        parse_traceparent(seen.json()["headers"]["traceparent"][0].as_str().unwrap());
    assert_eq!(flags, "00");

    // The caller decided not to sample: the same.
    let unsampled = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let req = Request::get(gw.url("/plain/b"))
        .header("traceparent", format!("00-{unsampled}-{CALLER}-00"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let seen = send(&http1(), req).await;
    let (t, _, flags) =
        parse_traceparent(seen.json()["headers"]["traceparent"][0].as_str().unwrap());
    assert_eq!((t.as_str(), flags.as_str()), (unsampled, "00"));

    // The caller sampled: exported, whatever the ratio.
    let sampled = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let req = Request::get(gw.url("/plain/c"))
        .header("traceparent", format!("00-{sampled}-{CALLER}-01"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let seen = send(&http1(), req).await;
    assert_eq!(seen.status, 200);

    let spans = exported(&gw, &otlp).await;
    assert!(
        spans.iter().all(|s| s.trace_id == sampled),
        "only the caller-sampled request is exported: {spans:#?}"
    );
    let server = find(&spans, "GET /plain/c");
    assert_eq!(server.attr("http.route"), Some("plain"));
    gw.stop(Duration::from_secs(1)).await;

    // A stopped upstream: the attempt span carries the error, the server span the 502.
    let otlp = OtlpReceiver::start();
    let mut dead = Upstream::echo();
    dead.stop();
    let gw = TestGateway::start(&traced_config(
        dead.addr,
        auth.addr,
        &format!("  enabled: true\n  endpoint: {}", otlp.grpc_endpoint()),
    ))
    .await;
    let seen = get(&gw.url("/plain/d")).await;
    assert_eq!(seen.status, 502);
    let spans = exported(&gw, &otlp).await;
    let server = find(&spans, "GET /plain/d");
    assert_eq!(server.status, 2, "error status");
    assert_eq!(server.attr("http.response.status_code"), Some("502"));
    let attempts: Vec<_> = spans.iter().filter(|s| s.name == "upstream app").collect();
    assert!(!attempts.is_empty());
    for a in &attempts {
        assert_eq!(a.status, 2);
        assert_eq!(a.attr("error.type"), Some("connect_failure"));
        assert_eq!(a.parent_span_id, server.span_id);
    }
    gw.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_binary_exports_over_http_and_its_access_log_names_the_trace() {
    let otlp = OtlpReceiver::start();
    let app = Upstream::echo();
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "listeners:
  - name: main
    address: 127.0.0.1:{port}
admin:
  address: 127.0.0.1:{admin}
tracing:
  enabled: true
  protocol: http
  endpoint: {endpoint}
clusters:
  - name: up
    endpoints:
      - url: http://{app}
routes:
  - name: api
    cluster: up
",
        app = app.addr,
        endpoint = otlp.http_endpoint(),
    );
    let mut gw = GatewayProcess::start(&yaml).await;
    gw.wait_for_log("tracing enabled", Duration::from_secs(10))
        .await;
    gw.wait_for_log("gateway started", Duration::from_secs(10))
        .await;
    let seen = get(&format!("http://127.0.0.1:{port}/orders/7")).await;
    assert_eq!(seen.status, 200);
    let id = seen.header("x-request-id").unwrap().to_owned();
    let line = gw.wait_for_log(&id, Duration::from_secs(5)).await;
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    let trace_id = entry["trace_id"]
        .as_str()
        .expect("trace_id in the access log");
    let span_id = entry["span_id"]
        .as_str()
        .expect("span_id in the access log");
    assert_eq!(trace_id.len(), 32);

    // Spans still buffered go out during the graceful stop.
    gw.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), gw.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let spans = otlp.spans();
    let server = find(&spans, "GET /orders/7");
    assert_eq!(server.via, "http");
    assert_eq!(server.service, "rustygate");
    assert_eq!(
        (server.trace_id.as_str(), server.span_id.as_str()),
        (trace_id, span_id)
    );
    assert_eq!(server.parent_span_id, "", "a new trace starts here");
    let upstream = find(&spans, "upstream up");
    assert_eq!(upstream.trace_id, trace_id);
    assert_eq!(upstream.parent_span_id, span_id);
}

#[tokio::test]
async fn tracing_off_sends_no_spans_and_adds_no_headers() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&rustygate_tests::simple_config(app.addr, "")).await;
    let seen = get(&gw.url("/x")).await;
    assert_eq!(seen.status, 200);
    assert!(seen.json()["headers"].get("traceparent").is_none());
    // A caller's trace context passes through untouched, as any other header.
    let tp = format!("00-{TRACE}-{CALLER}-01");
    let req = Request::get(gw.url("/x"))
        .header("traceparent", &tp)
        .body(Full::<Bytes>::default())
        .unwrap();
    let seen = send(&http1(), req).await;
    assert_eq!(seen.json()["headers"]["traceparent"][0], tp.as_str());
    gw.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn spans_reach_a_tls_collector_over_grpc_and_http_when_its_authority_is_trusted() {
    let pki = Pki::new("collector");
    let otlp = OtlpReceiver::start_tls(pki.server_config());
    let app = Upstream::echo();
    let auth = auth_service(Arc::default());
    let ca = pki.ca.display();
    for (protocol, endpoint) in [
        ("grpc", otlp.grpc_endpoint()),
        ("http", otlp.http_endpoint()),
    ] {
        assert!(endpoint.starts_with("https://"), "{endpoint}");
        let gw = TestGateway::start(&traced_config(
            app.addr,
            auth.addr,
            &format!(
                "  enabled: true\n  endpoint: {endpoint}\n  protocol: {protocol}\n  tls: {{ ca_certificates: {ca} }}"
            ),
        ))
        .await;
        let path = format!("/plain/{protocol}");
        assert_eq!(get(&gw.url(&path)).await.status, 200);
        let spans = exported(&gw, &otlp).await;
        let server = find(&spans, &format!("GET {path}"));
        assert_eq!(server.kind, SERVER);
        gw.stop(Duration::from_secs(1)).await;
    }

    // A collector whose certificate the gateway does not trust (Mozilla's roots) gets nothing.
    let untrusted = OtlpReceiver::start_tls(pki.server_config());
    let gw = TestGateway::start(&traced_config(
        app.addr,
        auth.addr,
        &format!("  enabled: true\n  endpoint: {}", untrusted.grpc_endpoint()),
    ))
    .await;
    assert_eq!(get(&gw.url("/plain/untrusted")).await.status, 200);
    gw.flush_traces().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(untrusted.spans().is_empty());
    gw.stop(Duration::from_secs(1)).await;
}

#[test]
fn a_collector_ca_file_that_cannot_be_read_is_refused_by_validate() {
    let pki = Pki::new("collector-ca");
    let missing = pki.dir.join("missing-ca.pem");
    let file = pki.dir.join("config.yaml");
    std::fs::write(
        &file,
        format!(
            "listeners: [ {{ name: main, address: 127.0.0.1:0 }} ]
tracing:
  enabled: true
  endpoint: https://127.0.0.1:4317
  tls: {{ ca_certificates: {} }}
clusters: [ {{ name: up, endpoints: [ {{ url: http://127.0.0.1:9 }} ] }} ]
routes: [ {{ cluster: up }} ]
",
            missing.display()
        ),
    )
    .unwrap();
    let out = validate(&file);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "tracing.tls: ca certificates {}: No such file",
            missing.display()
        )),
        "{stderr}"
    );
}
