//! `proxy_http_call` as Envoy runs it, through abi-probe (built from source with the upstream
//! Rust SDK): the paused request resumes with what the call decided, and a call that gets no
//! answer (a refused, silent or closing upstream) arrives as the answer Envoy's router would
//! give, with its words.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use rustygate_tests::client::{get, http1, send};
use rustygate_tests::upstream::{Upstream, text};
use rustygate_tests::{TestGateway, probe_config, start_probe};

/// abi-probe on every route to `app`, configured with `configuration`, whose calls go to a
/// cluster named `auth` at `auth`.
async fn calling_gateway(
    app: &Upstream,
    configuration: &str,
    auth: std::net::SocketAddr,
) -> TestGateway {
    let yaml = probe_config(
        app.addr,
        &format!("    configuration: {configuration}"),
        "[probe]",
    );
    TestGateway::start(&with_auth_cluster(yaml, auth)).await
}

/// An auth service: 200 with the user's name for `x-user: alice`, 401 otherwise.
fn auth_service() -> Upstream {
    Upstream::start(|req| async move {
        match req.headers().get("x-user").and_then(|v| v.to_str().ok()) {
            Some("alice") => text(StatusCode::OK, "alice"),
            _ => text(StatusCode::UNAUTHORIZED, "who are you"),
        }
    })
}

fn with_auth_cluster(yaml: String, auth: std::net::SocketAddr) -> String {
    yaml.replace(
        "filters:\n  - name: probe",
        &format!(
            "  - name: auth\n    endpoints:\n      - url: http://{auth}\nfilters:\n  - name: probe"
        ),
    )
}

#[tokio::test]
async fn http_call_decides_and_the_paused_request_resumes() {
    let app = Upstream::echo();
    let auth = auth_service();
    let gw = calling_gateway(&app, "{ auth_cluster: auth, auth_path: /check }", auth.addr).await;

    let req = Request::get(gw.url("/data"))
        .header("x-user", "alice")
        .body(Full::<Bytes>::default())
        .unwrap();
    let seen = send(&http1(), req).await;
    assert_eq!(seen.status, 200);
    let echo: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        echo["headers"]["x-auth-user"][0], "alice",
        "header added after the call, before forwarding"
    );

    let req = Request::get(gw.url("/data"))
        .header("x-user", "mallory")
        .body(Full::<Bytes>::default())
        .unwrap();
    let seen = send(&http1(), req).await;
    assert_eq!(seen.status, StatusCode::FORBIDDEN);
    assert_eq!(seen.header("x-auth-status"), Some("401"));
    assert_eq!(
        app.requests(),
        1,
        "the denied request never reached the app"
    );
    assert_eq!(auth.requests(), 2);
}

#[tokio::test]
async fn many_paused_requests_resume_independently() {
    let app = Upstream::echo();
    let auth = auth_service();
    let gw = calling_gateway(&app, "{ auth_cluster: auth }", auth.addr).await;
    let client = http1();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (client, url) = (client.clone(), gw.url(&format!("/r{i}")));
        let user = if i % 3 == 0 { "mallory" } else { "alice" };
        tasks.push(tokio::spawn(async move {
            let req = Request::get(url)
                .header("x-user", user)
                .body(Full::<Bytes>::default())
                .unwrap();
            (user, send(&client, req).await.status)
        }));
    }
    for t in tasks {
        let (user, status) = t.await.unwrap();
        assert_eq!(status, if user == "alice" { 200 } else { 403 }, "{user}");
    }
    assert_eq!(app.requests(), 20);
}

#[tokio::test]
async fn http_call_to_a_down_cluster_answers_503_as_in_envoy() {
    let app = Upstream::echo();
    let (_port, dead) = rustygate_tests::refusing_address();
    let gw = calling_gateway(&app, "{ auth_cluster: auth }", dead).await;
    let seen = get(&gw.url("/x")).await;
    assert_eq!(seen.status, StatusCode::FORBIDDEN);
    assert_eq!(seen.header("x-auth-status"), Some("503"));
    // Envoy's router's words, and a head that says how long they are.
    let body = "upstream connect error or disconnect/reset before headers. reset reason: \
                remote connection failure, transport failure reason: delayed connect error: \
                Connection refused";
    assert_eq!(seen.header("x-auth-body"), Some(body));
    assert_eq!(
        seen.header("x-auth-length"),
        Some(body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn http_call_that_gets_no_answer_in_time_sees_envoys_504() {
    let app = Upstream::echo();
    // Accepts connections and never answers: the probe's call (2 s timeout) runs out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw = calling_gateway(&app, "{ auth_cluster: auth }", silent.local_addr().unwrap()).await;
    let started = Instant::now();
    let seen = get(&gw.url("/x")).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(seen.status, StatusCode::FORBIDDEN);
    assert_eq!(seen.header("x-auth-status"), Some("504"));
    assert_eq!(seen.header("x-auth-body"), Some("upstream request timeout"));
    assert_eq!(seen.header("x-auth-length"), Some("24"));
    assert_eq!(app.requests(), 0);
}

#[tokio::test]
async fn http_call_whose_upstream_closes_before_answering_sees_envoys_503() {
    let app = Upstream::echo();
    // Reads the request, then closes without a response.
    let closer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closer.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in closer.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
        }
    });
    let gw = calling_gateway(&app, "{ auth_cluster: auth }", addr).await;
    let seen = get(&gw.url("/x")).await;
    assert_eq!(seen.status, StatusCode::FORBIDDEN);
    assert_eq!(seen.header("x-auth-status"), Some("503"));
    assert_eq!(
        seen.header("x-auth-body"),
        Some(
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
        )
    );
}

#[tokio::test]
async fn http_call_to_an_unknown_cluster_is_refused_to_the_filter() {
    let app = Upstream::echo();
    let gw = start_probe(app.addr, "{ auth_cluster: nowhere }").await;
    let seen = get(&gw.url("/x")).await;
    assert_eq!(seen.status, 500);
    assert_eq!(&seen.body[..], b"http_call failed: BadArgument\n");
}

/// The foreign functions Envoy registers itself, `compress` and `uncompress` (zlib's format),
/// answer a filter as they do in Envoy; a name the host does not have is NOT_FOUND.
#[tokio::test]
async fn envoys_foreign_functions_compress_and_uncompress() {
    let app = Upstream::echo();
    let gw = start_probe(app.addr, "{ foreign_path: /foreign }").await;
    let client = http1();
    let call = |name: &str, arg: &str| {
        Request::get(gw.url("/foreign"))
            .header("x-foreign-name", name)
            .header("x-foreign-arg", arg)
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let hex = |s: &[u8]| s.iter().map(|b| format!("{b:02x}")).collect::<String>();
    // What zlib's compress() (CPython's zlib module) makes of "hello world!", byte for byte.
    let zlib_hello = "789ccb48cdc9c95728cf2fca495104001e89047e";

    let seen = send(&client, call("compress", &hex(b"hello world!"))).await;
    assert_eq!(seen.status, 200);
    assert_eq!(hex(&seen.body), zlib_hello);

    let seen = send(&client, call("uncompress", zlib_hello)).await;
    assert_eq!(
        (seen.status, &seen.body[..]),
        (StatusCode::OK, &b"hello world!"[..])
    );
    // zlib's output for 1,000 × "a": more than Envoy's twice-plus-two estimate, inflated whole.
    let seen = send(
        &client,
        call("uncompress", "789c4b4c1c05a360140c770000f9d87af8"),
    )
    .await;
    assert_eq!(seen.body, Bytes::from(vec![b'a'; 1000]));

    // Not zlib data: SERIALIZATION_FAILURE, as Envoy answers.
    let seen = send(&client, call("uncompress", &hex(b"hello"))).await;
    assert_eq!(seen.status, 502);
    assert_eq!(seen.headers["x-foreign-status"], "SerializationFailure");
    let seen = send(&client, call("no_such_function", "")).await;
    assert_eq!(seen.headers["x-foreign-status"], "NotFound");
    assert_eq!(app.requests(), 0);
}
