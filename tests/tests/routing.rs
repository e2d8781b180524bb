//! Each route matcher kind, through the real gateway, as a client sees it: which upstream
//! answers, or a JSON 404.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rustygate_tests::{TestGateway, with_listener};
use std::time::Duration;

use rustygate_tests::client::{get, h2c, http1, raw, send};
use rustygate_tests::upstream::{Upstream, text};

/// Five upstreams that each answer with their own name, so the body says which route won.
fn named(name: &'static str) -> Upstream {
    Upstream::start(move |_| async move { text(http::StatusCode::OK, name) })
}

/// One worker on a port-0 listener, a cluster per `(name, upstream)` and `routes` (YAML list
/// items).
fn config(clusters: &[(&str, &Upstream)], routes: &str) -> String {
    let clusters: String = clusters
        .iter()
        .map(|(name, up)| {
            format!(
                "  - name: {name}\n    endpoints: [ {{ url: \"http://{}\" }} ]\n",
                up.addr
            )
        })
        .collect();
    format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
clusters:
{clusters}routes:
{routes}"
    )
}

async fn gateway() -> (TestGateway, Vec<Upstream>) {
    let names = [
        "exact", "prefix", "regex", "host", "method", "header", "query", "fallback",
    ];
    let ups: Vec<Upstream> = names.into_iter().map(named).collect();
    let clusters: Vec<(&str, &Upstream)> = names.into_iter().zip(&ups).collect();
    let yaml = config(
        &clusters,
        "  - { name: exact, match: { path: { exact: /exact } }, cluster: exact }
  - { name: prefix, match: { path: { prefix: /pre/ } }, cluster: prefix }
  - { name: regex, match: { path: { regex: '/items/[0-9]+' } }, cluster: regex }
  - { name: host, match: { host: '*.example.com' }, cluster: host }
  - { name: method, match: { methods: [DELETE] }, cluster: method }
  - { name: header, match: { headers: [{ name: x-tenant, exact: blue }] }, cluster: header }
  - { name: query, match: { query: [{ name: version, regex: 'v[12]' }] }, cluster: query }
  - { name: fallback, match: { path: { prefix: /fallback } }, cluster: fallback }
",
    );
    (TestGateway::start(&yaml).await, ups)
}

async fn req(
    gw: &TestGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut b = Request::builder().method(method).uri(gw.url(path));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let seen = send(&http1(), b.body(Full::<Bytes>::default()).unwrap()).await;
    (
        seen.status.as_u16(),
        String::from_utf8_lossy(&seen.body).into_owned(),
    )
}

#[tokio::test]
async fn each_matcher_kind_selects_its_route() {
    let (gw, _ups) = gateway().await;
    assert_eq!(req(&gw, "GET", "/exact", &[]).await, (200, "exact".into()));
    assert_eq!(
        req(&gw, "GET", "/pre/a/b?x=1", &[]).await,
        (200, "prefix".into())
    );
    assert_eq!(
        req(&gw, "GET", "/items/42", &[]).await,
        (200, "regex".into())
    );
    assert_eq!(
        req(&gw, "GET", "/x", &[("host", "api.example.com")]).await,
        (200, "host".into())
    );
    // Host names compare case-insensitively and without the port.
    assert_eq!(
        req(&gw, "GET", "/x", &[("host", "API.Example.COM:8080")]).await,
        (200, "host".into())
    );
    assert_eq!(req(&gw, "DELETE", "/x", &[]).await, (200, "method".into()));
    assert_eq!(
        req(&gw, "GET", "/x", &[("x-tenant", "blue")]).await,
        (200, "header".into())
    );
    assert_eq!(
        req(&gw, "GET", "/x?a=b&version=v2", &[]).await,
        (200, "query".into())
    );
    assert_eq!(
        req(&gw, "GET", "/fallback", &[]).await,
        (200, "fallback".into())
    );
}

#[tokio::test]
async fn near_misses_fall_through_and_first_match_wins() {
    let (gw, _ups) = gateway().await;
    // /exact/ is not exact; /items/abc fails the regex; both end up unmatched.
    assert_eq!(req(&gw, "GET", "/exact/", &[]).await.0, 404);
    assert_eq!(req(&gw, "GET", "/items/abc", &[]).await.0, 404);
    // The regex route is listed before the host route, so it wins when both match.
    assert_eq!(
        req(&gw, "GET", "/items/7", &[("host", "a.example.com")]).await,
        (200, "regex".into())
    );
    // example.com itself is not a subdomain of example.com.
    assert_eq!(
        req(&gw, "GET", "/x", &[("host", "example.com")]).await.0,
        404
    );
    assert_eq!(req(&gw, "GET", "/x", &[("x-tenant", "red")]).await.0, 404);
    assert_eq!(req(&gw, "GET", "/x?version=v3", &[]).await.0, 404);
}

#[tokio::test]
async fn unmatched_request_gets_json_404_with_request_id() {
    let (gw, ups) = gateway().await;
    let seen = get(&gw.url("/nowhere")).await;
    assert_eq!(seen.status, 404);
    assert_eq!(seen.header("content-type"), Some("application/json"));
    let body = seen.json();
    assert_eq!(body["error"], "no_route");
    assert_eq!(body["status"], 404);
    assert!(body["message"].as_str().unwrap().contains("GET /nowhere"));
    assert_eq!(body["request_id"].as_str(), seen.header("x-request-id"));
    assert!(
        ups.iter().all(|u| u.requests() == 0),
        "nothing was forwarded"
    );
}

/// A route's rewrites: the path (by prefix or regex, query kept) and host the upstream sees,
/// made after the route's filters, which see the request as the client sent it.
#[tokio::test]
async fn routes_rewrite_the_path_and_host_the_upstream_sees() {
    let up = Upstream::echo();
    let filters = format!(
        "filters:
  - name: headers
    module: {}
    configuration:
      request:
        add: {{ x-path-seen-by-filter: \"${{request.path}}\" }}
",
        rustygate_tests::HEADERS_WASM
    );
    let yaml = rustygate_tests::simple_config(
        up.addr,
        "  - name: users
    match: { path: { prefix: /api/users } }
    cluster: up
    filters: [headers]
    rewrite: { prefix: /, host: users.internal }
  - name: old
    match: { path: { exact: /old } }
    cluster: up
    rewrite: { prefix: /new/place }
  - name: v1
    match: { path: { prefix: /v1/ } }
    cluster: up
    rewrite: { path_regex: { pattern: '^/v1/(?P<shop>[a-z]+)/(\\d+)$', substitution: '/shops/$${shop}/items/$2' } }
",
    )
    .replace("routes:\n", &format!("{filters}routes:\n"));
    let gw = TestGateway::start(&yaml).await;
    let seen = |path: &'static str| {
        let url = gw.url(path);
        async move {
            let seen = send(
                &http1(),
                Request::get(url)
                    .header("host", "api.example.com")
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
            .await;
            assert_eq!(seen.status, 200, "{path}");
            seen.json()
        }
    };
    let users = seen("/api/users/42?fields=name").await;
    assert_eq!(users["path"], "/42?fields=name");
    assert_eq!(users["headers"]["host"][0], "users.internal");
    assert_eq!(users["headers"]["x-forwarded-host"][0], "api.example.com");
    assert_eq!(
        users["headers"]["x-path-seen-by-filter"][0],
        "/api/users/42?fields=name"
    );
    let root = seen("/api/users").await;
    assert_eq!(root["path"], "/");
    assert_eq!(seen("/old?x=1").await["path"], "/new/place?x=1");
    let v1 = seen("/v1/acme/7?full=1").await;
    assert_eq!(v1["path"], "/shops/acme/items/7?full=1");
    assert_eq!(v1["headers"]["host"][0], "api.example.com");
    // A path the regex does not match passes unchanged.
    assert_eq!(seen("/v1/acme/x").await["path"], "/v1/acme/x");
}

/// Envoy's route header matchers take pseudo-headers, and `host` is `:authority` there: a
/// condition on either holds for an HTTP/2 client, which sends no `Host` header, as for an
/// HTTP/1.1 one.
#[tokio::test]
async fn header_conditions_on_pseudo_headers_hold_for_http1_and_http2_clients() {
    let (one, two) = (named("one"), named("two"));
    let yaml = config(
        &[("one", &one), ("two", &two)],
        r"  - name: by-authority
    match: { path: { prefix: /a }, headers: [ { name: ':authority', regex: '127\.0\.0\.1:[0-9]+' } ] }
    cluster: one
  - name: by-host
    match: { path: { prefix: /h }, headers: [ { name: host, prefix: '127.0.0.1:' } ] }
    cluster: one
  - name: by-method-and-path
    match: { headers: [ { name: ':method', exact: PUT }, { name: ':path', exact: '/m?x=1' } ] }
    cluster: one
  - name: by-scheme
    match: { path: { prefix: /s }, headers: [ { name: ':scheme', exact: http } ] }
    cluster: one
  - { name: rest, match: { path: { prefix: / } }, cluster: two }
",
    );
    let gw = TestGateway::start(&yaml).await;
    for (client, proto) in [(http1(), "HTTP/1.1"), (h2c(), "HTTP/2")] {
        let ask = |method: &str, path: &str| {
            Request::builder()
                .method(method)
                .uri(gw.url(path))
                .body(Full::<Bytes>::default())
                .unwrap()
        };
        for (method, path, want) in [
            ("GET", "/a", "one"),
            ("GET", "/h", "one"),
            ("PUT", "/m?x=1", "one"),
            ("PUT", "/m?x=2", "two"),
            ("GET", "/m?x=1", "two"),
            ("GET", "/s", "one"),
        ] {
            let seen = send(&client, ask(method, path)).await;
            assert_eq!(seen.status, 200, "{proto} {method} {path}");
            assert_eq!(
                String::from_utf8_lossy(&seen.body),
                want,
                "{proto} {method} {path}"
            );
        }
    }
}

/// Sends `request` as the client wrote it (no client library tidies it), and says which of
/// `ups` (echo upstreams) answered and what it was sent, or what the client got when none did.
async fn sent_raw(
    gw: &TestGateway,
    ups: &[&Upstream],
    request: &str,
) -> Result<(usize, serde_json::Value), String> {
    let before: Vec<usize> = ups.iter().map(|u| u.requests()).collect();
    let out = raw(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
    let Some(which) = (0..ups.len()).find(|&i| ups[i].requests() > before[i]) else {
        return Err(out);
    };
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((which, serde_json::from_str(body).unwrap_or_default()))
}

/// [`sent_raw`] for `GET path`: which upstream answered, and the path it was sent.
async fn sent_as_written(
    gw: &TestGateway,
    ups: &[&Upstream],
    path: &str,
) -> Result<(usize, String), String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (which, json) = sent_raw(gw, ups, &request).await?;
    Ok((which, json["path"].as_str().unwrap_or_default().to_owned()))
}

#[tokio::test]
async fn paths_are_made_canonical_before_routing_so_dot_segments_cannot_skip_a_route() {
    let (public, secure) = (Upstream::echo(), Upstream::echo());
    let ups = [&public, &secure];
    let yaml = config(
        &[("public", &public), ("secure", &secure)],
        "  - { name: public, match: { path: { prefix: /public } }, cluster: public }
  - { name: secure, match: { path: { prefix: /secure } }, cluster: secure }
",
    );
    let gw = TestGateway::start(&yaml).await;
    // Each would match `/public` as sent, and reach `/secure` on a server that resolves it.
    for (sent, canonical) in [
        ("/public/../secure/x?next=/../y", "/secure/x?next=/../y"),
        ("/public/%2e%2E/secure/x", "/secure/x"),
        ("/public/..\\secure", "/secure"),
        ("/public//../secure", "/secure"),
        ("//secure//x/./y", "/secure/x/y"),
    ] {
        assert_eq!(
            sent_as_written(&gw, &ups, sent).await,
            Ok((1, canonical.to_owned())),
            "{sent}"
        );
    }
    // An escaped slash is data in a segment (RFC 3986), kept as sent by default.
    let escaped = "/public%2F..%2Fsecure";
    assert_eq!(
        sent_as_written(&gw, &ups, escaped).await,
        Ok((0, escaped.to_owned()))
    );

    // Refused, or decoded into a separator, where the listener says so.
    let with =
        |rules: &str| with_listener(&yaml, &format!("    path_normalization: {{ {rules} }}\n"));
    let gw = TestGateway::start(&with("escaped_slashes: reject")).await;
    let refused = sent_as_written(&gw, &ups, escaped).await.unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 400 "), "{refused}");
    assert!(refused.contains(r#""error":"bad_request""#), "{refused}");
    assert!(refused.contains("escaped slash"), "{refused}");
    let gw = TestGateway::start(&with("escaped_slashes: unescape")).await;
    assert_eq!(
        sent_as_written(&gw, &ups, escaped).await,
        Ok((1, "/secure".to_owned()))
    );
    // Switched off, the path goes as sent.
    let gw = TestGateway::start(&with("normalize: false, merge_slashes: false")).await;
    assert_eq!(
        sent_as_written(&gw, &ups, "/public/../secure").await,
        Ok((0, "/public/../secure".to_owned()))
    );
}

#[tokio::test]
async fn an_absolute_form_target_names_the_host_whatever_the_host_header_says() {
    let (public, admin) = (Upstream::echo(), Upstream::echo());
    let ups = [&public, &admin];
    let yaml = config(
        &[("public", &public), ("admin", &admin)],
        "  - { name: admin, match: { host: admin.example }, cluster: admin }
  - { name: public, match: { path: { prefix: / } }, cluster: public }
",
    );
    let gw = TestGateway::start(&yaml).await;
    // RFC 9112 §3.2.2: the target's authority is the host, and the upstream is told the same.
    let request =
        "GET http://admin.example/x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n";
    let (which, json) = sent_raw(&gw, &ups, request).await.unwrap();
    assert_eq!(which, 1, "{json}");
    assert_eq!(json["path"], "/x");
    assert_eq!(
        json["headers"]["host"],
        serde_json::json!(["admin.example"])
    );
    // An origin-form target leaves the host to the header.
    let request = "GET /x HTTP/1.1\r\nHost: admin.example\r\nConnection: close\r\n\r\n";
    assert_eq!(sent_raw(&gw, &ups, request).await.unwrap().0, 1);
    let request = "GET /x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n";
    assert_eq!(sent_raw(&gw, &ups, request).await.unwrap().0, 0);
}
