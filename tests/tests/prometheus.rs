//! A real Prometheus (Debian's `prometheus`, installed by `make deps`) scrapes the admin
//! listener, and a PromQL query through its HTTP API returns what the clients did.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rustygate_tests::client::get;
use rustygate_tests::process::free_port;
use rustygate_tests::upstream::Upstream;
use rustygate_tests::{TestGateway, simple_config};

fn prometheus_bin() -> std::path::PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = std::path::Path::new(dir).join("prometheus");
        if p.is_file() {
            return p;
        }
    }
    panic!("prometheus is not installed: `make deps` installs Debian's prometheus package");
}

#[tokio::test]
async fn prometheus_scrapes_the_request_count() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    for _ in 0..7 {
        assert_eq!(get(&gw.url("/api/x")).await.status, 200);
    }

    let dir = std::env::temp_dir().join(format!("rustygate-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 500ms\nscrape_configs:\n  - job_name: rustygate\n    static_configs:\n      - targets: ['{}']\n",
            gw.admin
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = tokio::process::Command::new(prometheus_bin())
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");

    let query = "sum(rustygate_requests_total{route=\"all\",status=\"200\"})";
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/query?query={}",
        query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let answer = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(_) => Some(get(&url).await),
            Err(_) => None,
        };
        if let Some(seen) = &answer
            && seen.status == 200
        {
            let body = seen.json();
            assert_eq!(body["status"], "success", "{body}");
            if body["data"]["result"][0]["value"][1] == "7" {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned 7 for {query}: {:?}",
            answer.map(|a| String::from_utf8_lossy(&a.body).into_owned())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(last["data"]["resultType"], "vector");
}
