//! gRPC calls and streams from proxy-wasm filters (`proxy_grpc_*`), through the real
//! gateway to a real gRPC server (tests/src/grpc.rs): abi-probe makes them with the upstream
//! Rust SDK, as a filter for Envoy does. Assertions are what a client sees.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use rustygate_tests::client::{Seen, get, http1, send};
use rustygate_tests::upstream::Upstream;
use rustygate_tests::{TestGateway, probe_config};

fn config(upstream: std::net::SocketAddr, filter_yaml: &str, chain_yaml: &str) -> String {
    probe_config(upstream, filter_yaml, chain_yaml)
}

fn with_grpc_cluster(yaml: String, grpc: std::net::SocketAddr) -> String {
    yaml.replace(
        "filters:\n  - name: probe",
        &format!(
            "  - name: grpc\n    protocol: http2\n    endpoints:\n      - url: http://{grpc}\nfilters:\n  - name: probe"
        ),
    )
}

async fn grpc_gateway(grpc: &rustygate_tests::grpc::GrpcServer, app: &Upstream) -> TestGateway {
    let yaml = with_grpc_cluster(
        config(
            app.addr,
            "    configuration: { grpc_cluster: grpc }",
            "[probe]",
        ),
        grpc.upstream.addr,
    );
    TestGateway::start(&yaml).await
}

async fn grpc_request(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Seen {
    let mut req = Request::get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&http1(), req.body(Full::<Bytes>::default()).unwrap()).await
}

/// `proxy_grpc_call` as Envoy runs it: the call goes to the cluster over HTTP/2 with the
/// filter's metadata, the paused request resumes from `proxy_on_grpc_receive` with the
/// reply, and a failed call arrives in `proxy_on_grpc_close` with its gRPC status and message
/// (`proxy_get_status`): the upstream's own, or the one the gateway gives a deadline, an
/// unreachable cluster or a call that answered no message.
#[tokio::test]
async fn grpc_call_answers_the_paused_request() {
    let grpc = rustygate_tests::grpc::echo_server();
    let app = Upstream::echo();
    let gw = grpc_gateway(&grpc, &app).await;

    let seen = grpc_request(
        &gw,
        "/grpc/call/Unary",
        &[("x-message", "world"), ("x-user", "ann")],
    )
    .await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(seen.json()["headers"]["x-grpc-reply"][0], "hello world");
    assert_eq!(
        grpc.last("x-user").as_deref(),
        Some("ann"),
        "initial metadata reached the server"
    );
    assert_eq!(grpc.last("te").as_deref(), Some("trailers"));
    assert_eq!(grpc.last("grpc-timeout").as_deref(), Some("2000m"));

    let seen = grpc_request(&gw, "/grpc/call/Deny", &[]).await;
    assert_eq!(seen.status, StatusCode::FORBIDDEN);
    assert_eq!(seen.header("x-grpc-status"), Some("7"));
    assert_eq!(seen.header("x-grpc-message"), Some("not allowed"));

    let seen = grpc_request(&gw, "/grpc/call/Empty", &[]).await;
    assert_eq!(
        seen.header("x-grpc-status"),
        Some("13"),
        "status 0 without a message"
    );

    let seen = grpc_request(&gw, "/grpc/call/Nope", &[]).await;
    assert_eq!(seen.header("x-grpc-status"), Some("12"), "unknown method");

    let started = Instant::now();
    let seen = grpc_request(&gw, "/grpc/call/Hang", &[("x-grpc-timeout-ms", "200")]).await;
    assert_eq!(seen.header("x-grpc-status"), Some("4"), "deadline exceeded");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        app.requests(),
        1,
        "only the successful call let its request through"
    );
}

/// A gRPC stream delivers, in Envoy's order, the initial metadata, each message as it
/// comes, the trailing metadata and the close with its status; the filter's half-close ends
/// the request stream and the server's answers still arrive after it.
#[tokio::test]
async fn grpc_stream_delivers_metadata_messages_and_close() {
    let grpc = rustygate_tests::grpc::echo_server();
    let app = Upstream::echo();
    let gw = grpc_gateway(&grpc, &app).await;
    let seen = grpc_request(&gw, "/grpc/stream", &[("x-user", "bo")]).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    let h = &seen.json()["headers"];
    assert_eq!(h["x-grpc-stream-initial"][0], "echo");
    assert_eq!(h["x-grpc-stream-messages"][0], "ONE,TWO");
    assert_eq!(h["x-grpc-stream-trailer"][0], "done");
    assert_eq!(h["x-grpc-stream-status"][0], "0");
    assert_eq!(grpc.last("x-user").as_deref(), Some("bo"));
}

/// `proxy_grpc_cancel` resets the upstream stream and no callback for it follows (the probe
/// traps if one does, which would fail later requests on that VM).
#[tokio::test]
async fn grpc_cancel_resets_the_call_and_silences_it() {
    let grpc = rustygate_tests::grpc::echo_server();
    let app = Upstream::echo();
    let gw = grpc_gateway(&grpc, &app).await;
    let seen = grpc_request(&gw, "/grpc/cancel-at-once", &[]).await;
    assert_eq!(seen.json()["headers"]["x-grpc-cancelled"][0], "at-once");
    assert_eq!(
        grpc.upstream.requests(),
        0,
        "a call cancelled before it started is never sent"
    );
    for _ in 0..3 {
        let seen = grpc_request(&gw, "/grpc/cancel", &[]).await;
        assert_eq!(seen.status, 200, "{seen:?}");
        assert_eq!(
            seen.json()["headers"]["x-grpc-cancelled"][0],
            "after-metadata"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while grpc.abandoned.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "the server never saw the cancels"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = grpc_request(&gw, "/grpc/call/Unary", &[("x-message", "again")]).await;
    assert_eq!(seen.json()["headers"]["x-grpc-reply"][0], "hello again");
    let metrics = get(&format!("http://{}/metrics", gw.admin)).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(!text.contains("rustygate_filter_failures_total"), "{text}");
}

/// An unreachable cluster fails the call with UNAVAILABLE; a cluster the gateway does not
/// have is refused when the call is made (PARSE_FAILURE, which the SDK returns as an error).
#[tokio::test]
async fn grpc_call_to_an_unreachable_or_unknown_cluster() {
    let (_port, addr) = rustygate_tests::refusing_address();
    let app = Upstream::echo();
    let yaml = with_grpc_cluster(
        config(
            app.addr,
            "    configuration: { grpc_cluster: grpc }",
            "[probe]",
        ),
        addr,
    );
    let gw = TestGateway::start(&yaml).await;
    let seen = grpc_request(&gw, "/grpc/call/Unary", &[]).await;
    assert_eq!(seen.status, StatusCode::FORBIDDEN);
    assert_eq!(seen.header("x-grpc-status"), Some("14"));
    assert!(
        seen.header("x-grpc-message")
            .unwrap()
            .contains("unavailable"),
        "{seen:?}"
    );

    let yaml = config(
        app.addr,
        "    configuration: { grpc_cluster: nowhere }",
        "[probe]",
    );
    let gw = TestGateway::start(&yaml).await;
    let seen = grpc_request(&gw, "/grpc/call/Unary", &[]).await;
    assert_eq!(seen.status, 500);
    assert_eq!(&seen.body[..], b"grpc call refused: ParseFailure\n");
    let seen = grpc_request(&gw, "/grpc/stream", &[]).await;
    assert_eq!(&seen.body[..], b"grpc stream refused: ParseFailure\n");
    assert_eq!(app.requests(), 0);
}
