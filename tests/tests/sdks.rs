//! The project's own SDKs, `sdk/go` and `sdk/assemblyscript`, through the gateway: one probe
//! filter per SDK (tests/guests/go-sdk, tests/guests/assemblyscript-sdk) uses each API group —
//! http calls deciding allow/deny, gRPC calls and streams, body buffering and rewrite, shared
//! data with CAS across workers, ticks, shared queues, metrics, properties — and the same
//! assertions run on both.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, StatusCode};
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustygate_tests::client::{Seen, get, http1, send};
use rustygate_tests::upstream::{Upstream, sha256_hex, text};
use rustygate_tests::{AS_SDK_PROBE_WASM, GO_SDK_PROBE_WASM, TestGateway, filters_config};

const PROBES: [(&str, &str, &str); 2] = [
    ("go", GO_SDK_PROBE_WASM, "go_sdk_requests"),
    ("assemblyscript", AS_SDK_PROBE_WASM, "as_sdk_requests"),
];

/// The probe in front of an echo upstream, with an `auth` cluster for its http calls that
/// allows `/call/allow` and refuses anything else with 401 and a body.
async fn start(wasm: &str) -> (TestGateway, Upstream, Upstream) {
    let app = Upstream::echo();
    let auth = Upstream::start(|req| async move {
        if req.uri().path() == "/call/allow" {
            text(StatusCode::OK, "twelve bytes")
        } else {
            text(StatusCode::UNAUTHORIZED, "no")
        }
    });
    let filters = format!("  - name: probe\n    module: {wasm}\n    configuration: auth");
    let yaml = filters_config(app.addr, &filters, "[probe]").replace(
        "filters:\n  - name: probe",
        &format!(
            "  - name: auth\n    endpoints:\n      - url: http://{}\nfilters:\n  - name: probe",
            auth.addr
        ),
    );
    (TestGateway::start(&yaml).await, app, auth)
}

fn number(seen: &Seen, header: &str) -> u64 {
    seen.header(header)
        .unwrap_or_else(|| panic!("no {header}: {seen:?}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_http_call_decides_allow_or_deny() {
    for (lang, wasm, _) in PROBES {
        let (gw, app, auth) = start(wasm).await;
        let allowed = get(&gw.url("/call/allow")).await;
        assert_eq!(allowed.status, StatusCode::OK, "{lang}");
        // The callback ran on the paused request, read the call's body and resumed it.
        assert_eq!(
            allowed.json()["headers"]["x-auth-body-bytes"][0],
            "12",
            "{lang}"
        );

        let denied = get(&gw.url("/call/deny")).await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN, "{lang}");
        assert_eq!(denied.header("x-auth-status"), Some("401"), "{lang}");
        assert!(
            String::from_utf8_lossy(&denied.body).starts_with("denied by"),
            "{lang}"
        );
        assert_eq!(app.requests(), 1, "{lang}");
        assert_eq!(auth.requests(), 2, "{lang}");
    }
}

#[tokio::test]
async fn a_streamed_body_is_buffered_then_rewritten_in_one_piece() {
    for (lang, wasm, _) in PROBES {
        let (gw, _app, _auth) = start(wasm).await;
        let frames = ["first ", "second ", "third"]
            .map(|p| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(p.as_bytes()))));
        let req = Request::post(gw.url("/upper"))
            .body(StreamBody::new(stream::iter(frames)))
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{lang}");
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            echo["body_sha256"],
            sha256_hex(b"FIRST SECOND THIRD").as_str(),
            "{lang}"
        );
    }
}

#[tokio::test]
async fn shared_data_counts_across_workers_and_metrics_reach_the_admin() {
    for (lang, wasm, metric) in PROBES {
        let (gw, _app, _auth) = start(wasm).await;
        let client = http1();
        let mut hits = Vec::new();
        // Separate connections spread over both workers' VMs.
        for _ in 0..6 {
            let seen = send(
                &client,
                Request::get(gw.url("/count"))
                    .header("connection", "close")
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
            assert_eq!(seen.header("x-property-path"), Some("/count"), "{lang}");
            hits.push(
                seen.json()["headers"]["x-hits"][0]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
        }
        assert_eq!(
            hits,
            [1, 2, 3, 4, 5, 6],
            "{lang}: CAS increments lost or repeated"
        );

        let metrics = get(&format!("http://{}/metrics", gw.admin)).await;
        let text = String::from_utf8_lossy(&metrics.body);
        assert!(
            text.contains(&format!("rustygate_filter_{metric}{{filter=\"probe\"}} 6")),
            "{lang}: {text}"
        );
    }
}

#[tokio::test]
async fn ticks_fire_and_queued_items_reach_the_consumer() {
    for (lang, wasm, _) in PROBES {
        let (gw, _app, _auth) = start(wasm).await;
        // 20 ms ticks on each worker: well over one within a second.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = get(&gw.url("/ticks")).await;
        assert!(number(&seen, "x-ticks") >= 2, "{lang}: {seen:?}");
        assert!(seen.header("x-last-item").is_none(), "{lang}");

        get(&gw.url("/enqueue")).await;
        // The consumer is told on its own worker after the enqueuing callback returns.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let seen = get(&gw.url("/after")).await;
            if seen.header("x-last-item") == Some("item-from-request") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{lang}: item never consumed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The SDKs' gRPC calls (Go: `DispatchGrpcCall`, `OpenGrpcStream`; AssemblyScript:
/// `grpcCall`, `grpcStream`) to a real gRPC server: a unary reply resumes the request, a
/// refusal arrives with its status and message, a stream delivers its metadata, messages and
/// status.
#[tokio::test]
async fn filters_make_grpc_calls_and_streams() {
    for (lang, wasm, _) in PROBES {
        let grpc = rustygate_tests::grpc::echo_server();
        let app = Upstream::echo();
        let filters = format!("  - name: probe\n    module: {wasm}\n    configuration: auth");
        let yaml = filters_config(app.addr, &filters, "[probe]").replace(
            "filters:\n  - name: probe",
            &format!(
                "  - name: grpc\n    protocol: http2\n    endpoints:\n      - url: http://{}\nfilters:\n  - name: probe",
                grpc.upstream.addr
            ),
        );
        let gw = TestGateway::start(&yaml).await;
        let seen = get(&gw.url("/grpc/Unary")).await;
        assert_eq!(seen.status, StatusCode::OK, "{lang}: {seen:?}");
        assert_eq!(
            seen.json()["headers"]["x-grpc-reply"][0],
            "hello go",
            "{lang}"
        );
        assert_eq!(grpc.last("x-user").as_deref(), Some("gopher"), "{lang}");

        let seen = get(&gw.url("/grpc/Deny")).await;
        assert_eq!(seen.status, StatusCode::FORBIDDEN, "{lang}");
        assert_eq!(seen.header("x-grpc-status"), Some("7"), "{lang}");
        assert_eq!(seen.header("x-grpc-message"), Some("not allowed"), "{lang}");

        let seen = get(&gw.url("/grpc/stream")).await;
        assert_eq!(seen.status, StatusCode::OK, "{lang}: {seen:?}");
        let h = &seen.json()["headers"];
        assert_eq!(
            h["x-grpc-stream"][0], "server=echo,ONE,TWO,trailer=done",
            "{lang}"
        );
        assert_eq!(h["x-grpc-stream-status"][0], "0", "{lang}");
        assert_eq!(app.requests(), 2, "{lang}");
    }
}
