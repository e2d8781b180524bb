//! The filters RustyGate ships (`filters/`), built from source, through the real gateway.
//! Assertions are what a client sees.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use rustygate_tests::client::{Seen, http1, send};
use rustygate_tests::upstream::Upstream;
use rustygate_tests::{CORS_WASM, HEADERS_WASM, RATE_LIMIT_WASM, TestGateway, filters_config};

/// All three filters declared (`headers`, `cors`, `rate-limit` with `rate_limit_yaml`), and one
/// route whose chain is `chain`.
fn config(app: &Upstream, rate_limit: &str, chain: &str) -> String {
    let filters = format!(
        "  - name: headers
    module: {HEADERS_WASM}
    configuration:
      request:
        remove: [x-secret]
        set: {{ user-agent: rustygate }}
        add: {{ x-trace: \"${{request.id}}|${{request.header.x-tenant}}|${{request.method}}\" }}
      response:
        add: {{ X-RustyGate-Plugin: executed }}
  - name: cors
    module: {CORS_WASM}
    configuration:
      allow_origins: [\"https://app.example.com\", \"https://*.example.org\"]
      allow_methods: [GET, POST, PUT]
      allow_headers: [content-type, authorization]
      expose_headers: [x-request-id]
      max_age: 600
  - name: rate-limit
    module: {RATE_LIMIT_WASM}
    configuration: {rate_limit}"
    );
    filters_config(app.addr, &filters, chain)
}

async fn request(gw: &TestGateway, method: &str, path: &str, headers: &[(&str, &str)]) -> Seen {
    let mut req = Request::builder().method(method).uri(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&http1(), req.body(Full::<Bytes>::default()).unwrap()).await
}

const GENEROUS: &str = "{ limits: [ { rate: \"1000 per 60s\" } ] }";

#[tokio::test]
async fn headers_filter_rewrites_both_directions_with_request_data() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&config(&app, GENEROUS, "[headers]")).await;
    let seen = request(
        &gw,
        "GET",
        "/x",
        &[
            ("x-secret", "s3cret"),
            ("x-tenant", "acme"),
            ("user-agent", "curl/8"),
            ("x-request-id", "req-1"),
        ],
    )
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-rustygate-plugin"), Some("executed"));
    let echo = seen.json();
    assert_eq!(echo["headers"]["x-trace"][0], "req-1|acme|GET");
    assert_eq!(echo["headers"]["user-agent"][0], "rustygate");
    assert!(echo["headers"].get("x-secret").is_none(), "{echo}");
}

#[tokio::test]
async fn cors_answers_preflights_and_labels_allowed_origins_only() {
    let app = Upstream::echo();
    let gw = TestGateway::start(&config(&app, GENEROUS, "[cors]")).await;

    let preflight = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "Content-Type"),
    ];
    let seen = request(&gw, "OPTIONS", "/items", &preflight).await;
    assert_eq!(seen.status, StatusCode::NO_CONTENT);
    assert_eq!(
        seen.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        seen.header("access-control-allow-methods"),
        Some("GET, POST, PUT")
    );
    assert_eq!(
        seen.header("access-control-allow-headers"),
        Some("content-type, authorization")
    );
    assert_eq!(seen.header("access-control-max-age"), Some("600"));
    assert!(seen.header("vary").unwrap().contains("Origin"));

    let evil = [
        ("origin", "https://evil.example.com"),
        ("access-control-request-method", "GET"),
    ];
    let seen = request(&gw, "OPTIONS", "/items", &evil).await;
    assert_eq!(seen.status, StatusCode::FORBIDDEN);
    assert_eq!(seen.header("access-control-allow-origin"), None);
    assert_eq!(app.requests(), 0, "preflights are answered by the gateway");

    let seen = request(
        &gw,
        "GET",
        "/items",
        &[("origin", "https://shop.example.org")],
    )
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(
        seen.header("access-control-allow-origin"),
        Some("https://shop.example.org")
    );
    assert_eq!(
        seen.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(seen.header("vary"), Some("Origin"));

    let seen = request(
        &gw,
        "GET",
        "/items",
        &[("origin", "https://evil.example.com")],
    )
    .await;
    assert_eq!(
        seen.status, 200,
        "the upstream still answers; the browser withholds it"
    );
    assert_eq!(seen.header("access-control-allow-origin"), None);

    let seen = request(&gw, "GET", "/items", &[]).await;
    assert_eq!(seen.header("access-control-allow-origin"), None);
    assert_eq!(seen.header("vary"), None, "not a CORS request");
}

/// Sends `n` requests at once; returns how many got 200 and how many 429, and one 429.
async fn burst(
    gw: &TestGateway,
    n: usize,
    headers: &[(&'static str, &'static str)],
) -> (usize, usize, Option<Seen>) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let url = gw.url("/limited");
        let headers = headers.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut req = Request::get(url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            send(&http1(), req.body(Full::<Bytes>::default()).unwrap()).await
        }));
    }
    let (mut ok, mut limited, mut sample) = (0, 0, None);
    for t in tasks {
        let seen = t.await.unwrap();
        match seen.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                sample = Some(seen);
            }
            other => panic!("unexpected {other}"),
        }
    }
    (ok, limited, sample)
}

#[tokio::test]
async fn rate_limit_admits_exactly_the_limit_across_workers() {
    for backend in ["auto", "shared_data"] {
        let app = Upstream::echo();
        let limit = format!(
            "{{ backend: {backend}, limits: [ {{ name: per-ip, rate: \"7 per 60s\" }} ] }}"
        );
        let gw = TestGateway::start(&config(&app, &limit, "[rate-limit]")).await;
        let (ok, limited, sample) = if backend == "auto" {
            // The host's limiter is exact from the very first request.
            burst(&gw, 30, &[]).await
        } else {
            // Shared data has no atomic create (cas 0 always writes, in Envoy too): the key is
            // made by one request, then compare-and-swap keeps every count exact.
            assert_eq!(request(&gw, "GET", "/limited", &[]).await.status, 200);
            let (ok, limited, sample) = burst(&gw, 29, &[]).await;
            (ok + 1, limited, sample)
        };
        assert_eq!((ok, limited), (7, 23), "backend {backend}");
        assert_eq!(app.requests(), 7);
        let denied = sample.unwrap();
        let retry: u64 = denied.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(
            denied.header("ratelimit-policy"),
            Some("\"per-ip\";q=7;w=60")
        );
        assert!(
            denied
                .header("ratelimit")
                .unwrap()
                .starts_with("\"per-ip\";r=0;t=")
        );
        assert_eq!(denied.json()["error"], "rate_limited");
    }
}

#[tokio::test]
async fn allowed_responses_carry_the_remaining_quota_and_header_keys_apply_per_value() {
    let app = Upstream::echo();
    let limit = "{ limits: [ { rate: \"100 per 60s\" }, { name: user, rate: \"2 per 60s\", key: { header: x-user-id } } ] }";
    let gw = TestGateway::start(&config(&app, limit, "[rate-limit]")).await;
    let seen = request(&gw, "GET", "/", &[("x-user-id", "alice")]).await;
    assert_eq!(seen.status, 200);
    assert_eq!(
        seen.header("ratelimit-policy"),
        Some("\"client_ip\";q=100;w=60, \"user\";q=2;w=60")
    );
    assert!(
        seen.header("ratelimit")
            .unwrap()
            .starts_with("\"user\";r=1;t="),
        "{:?}",
        seen.header("ratelimit")
    );
    assert_eq!(
        request(&gw, "GET", "/", &[("x-user-id", "alice")])
            .await
            .status,
        200
    );
    assert_eq!(
        request(&gw, "GET", "/", &[("x-user-id", "alice")])
            .await
            .status,
        429
    );
    // Another user, and requests without the header, are not held by alice's count.
    assert_eq!(
        request(&gw, "GET", "/", &[("x-user-id", "bob")])
            .await
            .status,
        200
    );
    let anonymous = request(&gw, "GET", "/", &[]).await;
    assert_eq!(anonymous.status, 200);
    // Five requests so far from this address, the refused one included.
    assert!(
        anonymous
            .header("ratelimit")
            .unwrap()
            .starts_with("\"client_ip\";r=95;")
    );
}

#[tokio::test]
async fn an_earlier_local_response_stops_the_later_filters() {
    let app = Upstream::echo();
    let limit = "{ limits: [ { rate: \"1 per 60s\" } ] }";
    let gw = TestGateway::start(&config(&app, limit, "[cors, rate-limit, headers]")).await;
    let origin = [("origin", "https://app.example.com")];
    let first = request(&gw, "GET", "/", &origin).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-rustygate-plugin"), Some("executed"));
    assert_eq!(
        first.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let second = request(&gw, "GET", "/", &origin).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    // rate-limit answered: headers (after it) never ran, cors (before it) still labels the
    // answer so the browser can read the 429.
    assert_eq!(second.header("x-rustygate-plugin"), None);
    assert_eq!(
        second.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn bad_filter_configurations_stop_start_up_naming_the_field() {
    let app = Upstream::echo();
    let yaml = config(
        &app,
        "{ limits: [ { rate: \"many per 60s\" } ] }",
        "[rate-limit]",
    );
    let err = TestGateway::try_start(&yaml).await.err().expect("refused");
    assert!(
        err.contains("filter rate-limit") && err.contains("rejected its configuration"),
        "{err}"
    );
}

#[tokio::test]
async fn configurations_are_checked_against_the_filters_published_schema_at_load() {
    let app = Upstream::echo();
    // A number where the schema says string: refused before any VM runs, with the path.
    let yaml = config(&app, "{ limits: [ { rate: 5 } ] }", "[rate-limit]");
    let err = TestGateway::try_start(&yaml).await.err().expect("refused");
    assert!(
        err.contains("filter rate-limit") && err.contains("configuration does not match the filter's schema: /limits/0/rate: 5 is not of type \"string\""),
        "{err}"
    );
    // Per-route overrides are checked too, and named by route.
    let yaml = config(
        &app,
        GENEROUS,
        "[{ name: rate-limit, configuration: { limitz: [] } }]",
    );
    let err = TestGateway::try_start(&yaml).await.err().expect("refused");
    assert!(
        err.contains("configuration on route api does not match the filter's schema"),
        "{err}"
    );
    assert!(err.contains("limitz"), "{err}");
}
