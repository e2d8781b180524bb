//! The jwt-auth filter through the gateway: inline secrets, a JWKS served by a real upstream
//! (with key rotation), claim forwarding, and what clients see when a token is refused.

use std::sync::Arc;

use parking_lot::Mutex;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use rustygate_tests::client::{Seen, http1, send};
use rustygate_tests::jwt::{es256, es256_key, hs256, now};
use rustygate_tests::upstream::{Upstream, full};
use rustygate_tests::{JWT_AUTH_WASM, TestGateway};

const SECRET: &str = "a-demo-secret-that-is-long-enough!!";

/// Two routes to `app`: `/secure` through jwt-auth configured with `jwt`, `/public` without.
fn config(app: &Upstream, jwt: &str, extra_clusters: &str) -> String {
    format!(
        "workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
clusters:
  - name: app
    endpoints: [ {{ url: \"http://{}\" }} ]
{extra_clusters}filters:
  - name: jwt
    module: {JWT_AUTH_WASM}
    configuration: {jwt}
routes:
  - name: secure
    match: {{ path: {{ prefix: /secure }} }}
    cluster: app
    filters: [jwt]
  - name: public
    cluster: app
",
        app.addr
    )
}

async fn get(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Seen {
    let mut req = Request::get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&http1(), req.body(Full::<Bytes>::default()).unwrap()).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn valid_tokens_pass_with_claims_forwarded_and_invalid_ones_get_401() {
    let app = Upstream::echo();
    let jwt = format!(
        "{{ keys: [ {{ secret: \"{SECRET}\" }} ], issuer: https://id.example.com, audiences: [api], \
         forward_claims: {{ sub: x-user-id, scope: x-scope }}, strip_authorization: true }}"
    );
    let gw = TestGateway::start(&config(&app, &jwt, "")).await;
    // What the app sees of a request with a valid token for `claims` and the client's own
    // `header`.
    let forwarded = async |claims: serde_json::Value, header: (&str, &str)| {
        let mut claims = claims;
        claims["iss"] = "https://id.example.com".into();
        claims["aud"] = "api".into();
        claims["exp"] = (now() + 300).into();
        let auth = bearer(&hs256(SECRET, claims));
        let seen = get(&gw, "/secure/data", &[("authorization", &auth), header]).await;
        assert_eq!(seen.status, 200);
        seen.json()["headers"].clone()
    };
    let echo = forwarded(
        serde_json::json!({"sub": "alice", "scope": ["read", "write"]}),
        ("x-user-id", "mallory"),
    )
    .await;
    assert_eq!(
        echo["x-user-id"],
        serde_json::json!(["alice"]),
        "the client's own x-user-id is replaced"
    );
    assert_eq!(echo["x-scope"][0], "read write");
    assert!(echo.get("authorization").is_none(), "stripped");
    // A claim the token lacks: the client's header of that name does not get through either.
    let echo = forwarded(serde_json::json!({"sub": "bob"}), ("x-scope", "admin")).await;
    assert_eq!(echo["x-user-id"][0], "bob");
    assert!(
        echo.get("x-scope").is_none(),
        "a client's x-scope is removed when the token has no scope"
    );

    let refused = [
        (None, "missing token"),
        (
            Some(hs256(
                SECRET,
                serde_json::json!({"sub": "a", "iss": "https://id.example.com", "aud": "api", "exp": now() - 3600}),
            )),
            "token expired",
        ),
        (
            Some(hs256(
                SECRET,
                serde_json::json!({"sub": "a", "iss": "https://id.example.com", "aud": "web", "exp": now() + 60}),
            )),
            "audience not accepted",
        ),
        (
            Some(hs256(
                "another-secret-that-is-long-enough!",
                serde_json::json!({"sub": "a"}),
            )),
            "signature verification failed",
        ),
        (Some("not.a.jwt".to_owned()), "malformed token"),
    ];
    for (token, why) in refused {
        let auth = token.map(|t| bearer(&t));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let seen = get(&gw, "/secure/data", &headers).await;
        assert_eq!(seen.status, StatusCode::UNAUTHORIZED, "{why}");
        let challenge = seen.header("www-authenticate").unwrap();
        assert!(
            challenge.starts_with("Bearer realm=\"rustygate\", error=\"invalid_token\""),
            "{challenge}"
        );
        assert!(challenge.contains(why), "{challenge} / {why}");
        assert_eq!(seen.json()["error"], "invalid_token");
    }
    assert_eq!(
        app.requests(),
        2,
        "only the two valid requests reached the app"
    );

    // The filter is on /secure only.
    assert_eq!(get(&gw, "/public", &[]).await.status, 200);
}

#[tokio::test]
async fn tokens_from_a_cookie_or_query_parameter() {
    let app = Upstream::echo();
    let jwt = format!(
        "{{ keys: [ {{ secret: \"{SECRET}\" }} ], from: {{ cookie: session, query: access_token }} }}"
    );
    let gw = TestGateway::start(&config(&app, &jwt, "")).await;
    let token = hs256(SECRET, serde_json::json!({"sub": "bob"}));
    let cookie = format!("theme=dark; session={token}");
    assert_eq!(
        get(&gw, "/secure", &[("cookie", &cookie)]).await.status,
        200
    );
    assert_eq!(
        get(&gw, &format!("/secure?access_token={token}"), &[])
            .await
            .status,
        200
    );
    assert_eq!(get(&gw, "/secure?access_token=", &[]).await.status, 401);
}

/// A JWKS endpoint whose key set the test can change, counting fetches.
struct Idp {
    upstream: Upstream,
    keys: Arc<Mutex<Vec<serde_json::Value>>>,
}

fn idp(keys: Vec<serde_json::Value>) -> Idp {
    let keys = Arc::new(Mutex::new(keys));
    let served = keys.clone();
    let upstream = Upstream::start(move |_req| {
        let doc = serde_json::json!({ "keys": *served.lock() }).to_string();
        async move {
            http::Response::builder()
                .header("content-type", "application/json")
                .body(full(doc))
                .unwrap()
        }
    });
    Idp { upstream, keys }
}

#[tokio::test]
async fn jwks_keys_are_fetched_and_refetched_for_a_new_kid_at_a_bounded_rate() {
    let app = Upstream::echo();
    let (k1, jwk1) = es256_key(1, "k1");
    let (k2, jwk2) = es256_key(2, "k2");
    let idp = idp(vec![jwk1]);
    let jwt = "{ jwks: { cluster: idp, path: /.well-known/jwks.json, refresh: 1h, min_refetch: 500ms }, forward_claims: { sub: x-user-id } }";
    let clusters = format!(
        "  - name: idp\n    endpoints: [ {{ url: \"http://{}\" }} ]\n",
        idp.upstream.addr
    );
    // One worker: key sets (and fetch budgets) are per worker, like everything in a VM.
    let yaml = config(&app, jwt, &clusters).replace("workers: 2", "workers: 1");
    let gw = TestGateway::start(&yaml).await;

    let t1 = es256(
        &k1,
        "k1",
        serde_json::json!({"sub": "alice", "exp": now() + 60}),
    );
    let seen = get(&gw, "/secure", &[("authorization", &bearer(&t1))]).await;
    assert_eq!(seen.status, 200, "{:?}", seen.body);
    assert_eq!(seen.json()["headers"]["x-user-id"][0], "alice");

    assert_eq!(idp.upstream.requests(), 1);

    // The identity provider rotates to k2. A token signed with k2 names a kid the gateway has
    // not seen: the filter fetches the key set again and lets the request through.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    idp.keys.lock().push(jwk2);
    let t2 = es256(
        &k2,
        "k2",
        serde_json::json!({"sub": "bob", "exp": now() + 60}),
    );
    let seen = get(&gw, "/secure", &[("authorization", &bearer(&t2))]).await;
    assert_eq!(seen.status, 200, "{:?}", seen.body);
    assert_eq!(seen.json()["headers"]["x-user-id"][0], "bob");
    assert_eq!(idp.upstream.requests(), 2, "one refetch");

    // Unknown kids right after a fetch get 401 without another one (min_refetch).
    let (k3, _) = es256_key(3, "k3");
    let t3 = es256(&k3, "k3", serde_json::json!({"sub": "eve"}));
    for _ in 0..6 {
        let seen = get(&gw, "/secure", &[("authorization", &bearer(&t3))]).await;
        assert_eq!(seen.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(idp.upstream.requests(), 2, "no fetch storm");
}

#[tokio::test]
async fn a_bad_configuration_stops_start_up() {
    let app = Upstream::echo();
    let yaml = config(&app, "{ keys: [ { secret: short } ] }", "");
    let err = TestGateway::try_start(&yaml).await.err().expect("refused");
    assert!(
        err.contains("filter jwt") && err.contains("rejected its configuration"),
        "{err}"
    );
}
