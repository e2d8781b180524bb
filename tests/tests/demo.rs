//! What `make run` serves: the real binary on config/default.yaml, with the shipped filters,
//! driven the way README.md tells a user to (including its token-minting script).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use rustygate_tests::client::{Seen, http1, send};
use rustygate_tests::process::{GatewayProcess, free_port};
use rustygate_tests::upstream::Upstream;

async fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Seen {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&http1(), req.body(Full::<Bytes>::default()).unwrap()).await
}

#[tokio::test]
async fn the_default_configuration_serves_the_demo_chains() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let demo = Upstream::echo();
    let (port, admin) = (free_port(), free_port());
    let _gw = GatewayProcess::start_file(
        &root.join("config/default.yaml"),
        &[
            ("RUSTYGATE_PORT", port.to_string()),
            ("RUSTYGATE_ADMIN_PORT", admin.to_string()),
            ("DEMO_UPSTREAM_PORT", demo.addr.port().to_string()),
        ],
    )
    .await;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every response through the chains carries the headers filter's mark.
    let seen = request(port, "GET", "/api/test", &[]).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-rustygate-plugin"), Some("executed"));

    let seen = request(
        port,
        "GET",
        "/api/public/items",
        &[("origin", "http://localhost:3000")],
    )
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("x-rustygate-plugin"), Some("executed"));
    assert_eq!(
        seen.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert!(
        seen.header("ratelimit")
            .unwrap()
            .starts_with("\"per-ip\";r=59;")
    );

    let preflight = [
        ("origin", "http://localhost:3000"),
        ("access-control-request-method", "DELETE"),
    ];
    let seen = request(port, "OPTIONS", "/api/public/items", &preflight).await;
    assert_eq!(seen.status, StatusCode::NO_CONTENT);

    let seen = request(port, "GET", "/api/secure/me", &[]).await;
    assert_eq!(seen.status, StatusCode::UNAUTHORIZED);
    assert!(
        seen.header("www-authenticate")
            .unwrap()
            .contains("missing token")
    );

    let minted = std::process::Command::new(root.join("examples/mint-token.sh"))
        .arg("alice")
        .output()
        .expect("the README's token script runs");
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = String::from_utf8(minted.stdout).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let seen = request(port, "GET", "/api/secure/me", &[("authorization", &auth)]).await;
    assert_eq!(
        seen.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&seen.body)
    );
    let echo = seen.json();
    assert_eq!(echo["headers"]["x-user-id"][0], "alice");
    assert!(echo["headers"].get("authorization").is_none());
    assert!(
        seen.header("ratelimit")
            .unwrap()
            .starts_with("\"per-user\";r=29;")
    );
}
