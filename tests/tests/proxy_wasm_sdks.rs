//! Filters written in other languages than Rust, built from source by the test build: Go
//! (stock Go, `GOOS=wasip1`, ABI 0.2.0, hand-declared imports) and C (clang + wasi-libc, ABI
//! 0.2.1). Each runs unchanged through the gateway; assertions are what a client sees.

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustygate_tests::client::{get, http1, send};
use rustygate_tests::upstream::{Upstream, sha256_hex};
use rustygate_tests::{AS_PROBE_WASM, C_PROBE_WASM, GO_PROBE_WASM, TestGateway, filters_config};

/// One route through `chain`, with the Go filter declared as `go` and the C filter as `c`.
fn config(upstream: std::net::SocketAddr, chain: &str) -> String {
    let filters = format!(
        "  - name: go
    module: {GO_PROBE_WASM}
    configuration: {{ tag: blue, deny_path: /teapot, upper_body: true, counter: go_requests }}
  - name: c
    module: {C_PROBE_WASM}
    configuration: \"<!--c-->\""
    );
    filters_config(upstream, &filters, chain)
}

#[tokio::test]
async fn a_go_filter_rewrites_headers_and_body_and_answers_locally() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&config(app.addr, "[go]")).await;

    let frames = ["hello ", "from ", "go"]
        .map(|p| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(p.as_bytes()))));
    let req = Request::post(gw.url("/echo"))
        .header("user-agent", "curl/8")
        .header("x-remove-me", "1")
        .body(StreamBody::new(stream::iter(frames)))
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let (head, body) = client.request(req).await.unwrap().into_parts();
    assert_eq!(head.status, 200);
    let echo: serde_json::Value =
        serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echo["headers"]["x-go-tag"][0], "blue");
    assert_eq!(echo["headers"]["user-agent"][0], "go-probe");
    assert!(echo["headers"].get("x-remove-me").is_none(), "{echo}");
    // Buffered across three body calls, then upper-cased in one piece.
    assert_eq!(echo["body_sha256"], sha256_hex(b"HELLO FROM GO").as_str());
    assert_eq!(head.headers["x-go-plugin"], "go");
    let hits: u64 = head.headers["x-go-hits"].to_str().unwrap().parse().unwrap();
    assert!(hits >= 1);
    let counted: u64 = head.headers["x-go-response-headers"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        counted >= 2,
        ":status and the upstream's headers, got {counted}"
    );

    let seen = get(&gw.url("/teapot")).await;
    assert_eq!(seen.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(seen.header("x-go-denied"), Some("yes"));
    assert_eq!(&seen.body[..], b"go says no\n");

    // Shared data is process-wide: the count goes on across requests and workers.
    for _ in 0..4 {
        get(&gw.url("/")).await;
    }
    let seen = get(&gw.url("/")).await;
    let later: u64 = seen.header("x-go-hits").unwrap().parse().unwrap();
    assert_eq!(later, hits + 5);

    let metrics = get(&format!("http://{}/metrics", gw.admin)).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"rustygate_filter_go_requests{filter="go"} 6"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_c_filter_sees_headers_trailers_and_appends_to_the_body() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&config(app.addr, "[c]")).await;

    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let frames = vec![
        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"data"))),
        Ok(Frame::trailers(trailers)),
    ];
    let req = Request::post(gw.url("/c"))
        .header("trailer", "x-checksum, x-c-trailer")
        .body(StreamBody::new(stream::iter(frames)))
        .unwrap();
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let (head, body) = client.request(req).await.unwrap().into_parts();
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["x-c-clock"], "wall");
    let body = body.collect().await.unwrap().to_bytes();
    assert!(body.ends_with(b"<!--c-->"), "{body:?}");
    let echo: serde_json::Value =
        serde_json::from_slice(&body[..body.len() - b"<!--c-->".len()]).unwrap();
    assert_eq!(echo["headers"]["x-c-headers"][0], "consistent");
    assert_eq!(echo["trailers"]["x-checksum"], "abc");
    assert_eq!(echo["trailers"]["x-c-trailer"], "seen");
}

#[tokio::test]
async fn go_and_c_filters_chain_with_each_other() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&config(app.addr, "[go, c]")).await;
    let seen = send(
        &http1(),
        Request::post(gw.url("/both"))
            .body(Full::new(Bytes::from_static(b"mixed")))
            .unwrap(),
    )
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-go-plugin"), Some("go"));
    assert_eq!(seen.header("x-c-clock"), Some("wall"));
    // The C filter removed the length before appending to the body: as in Envoy, the
    // response goes without one.
    assert_eq!(seen.header("content-length"), None);
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    let body = &seen.body[..seen.body.len() - b"<!--c-->".len()];
    let echo: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(echo["body_sha256"], sha256_hex(b"MIXED").as_str());
    assert_eq!(echo["headers"]["x-go-tag"][0], "blue");
    assert_eq!(echo["headers"]["x-c-headers"][0], "consistent");
}

#[tokio::test]
async fn an_assemblyscript_filter_asks_a_cluster_from_its_root_context() {
    let app = Upstream::echo();
    // 200 for alice, 401 for anyone else.
    let auth = Upstream::start(|req| async move {
        match req.headers().get("x-user").and_then(|v| v.to_str().ok()) {
            Some("alice") => rustygate_tests::upstream::text(StatusCode::OK, "ok"),
            _ => rustygate_tests::upstream::text(StatusCode::UNAUTHORIZED, "no"),
        }
    });
    let filters = format!(
        "  - name: guard
    module: {AS_PROBE_WASM}
    root_id: as_guard
    # proxy-runtime 0.1.8 reads a stale buffer for an empty configuration, in Envoy too.
    configuration: \"on\""
    );
    let yaml = filters_config(app.addr, &filters, "[guard]").replace(
        "filters:\n  - name: guard",
        &format!(
            "  - name: auth\n    endpoints:\n      - url: http://{}\nfilters:\n  - name: guard",
            auth.addr
        ),
    );
    let gw = TestGateway::start(&yaml).await;

    let req = |user: &str| {
        Request::get(gw.url("/app"))
            .header("x-user", user)
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let seen = send(&http1(), req("alice")).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-as-probe"), Some("seen"));
    assert_eq!(seen.json()["headers"]["x-as-user"][0], "approved");

    let seen = send(&http1(), req("mallory")).await;
    assert_eq!(seen.status, StatusCode::FORBIDDEN);
    assert_eq!(seen.header("x-as-status"), Some("401"));
    assert_eq!(&seen.body[..], b"denied by as-probe\n");
    // The local response passed through the filter's own response phase, as in Envoy.
    assert_eq!(seen.header("x-as-probe"), Some("seen"));

    let seen = get(&gw.url("/as-teapot")).await;
    assert_eq!(seen.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(seen.header("x-as-teapot"), Some("yes"));
    assert_eq!(app.requests(), 1);
    assert_eq!(auth.requests(), 2);

    // The runtime looks its root factory up by plugin_root_id: a wrong root_id is refused at
    // start-up, with the filter's own message, not at request time.
    let wrong = yaml.replace("root_id: as_guard", "root_id: nope");
    let err = TestGateway::try_start(&wrong).await.err().expect("refused");
    assert!(err.contains("filter guard"), "{err}");
}
