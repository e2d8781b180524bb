//! A real Prometheus (Debian's `prometheus`, installed by `make deps`) scrapes the admin
//! listener, and PromQL queries through its HTTP API return what the clients did: the request
//! count, and every query of the Grafana dashboard shipped in examples/observability/.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustygate_tests::client::{Seen, get};
use rustygate_tests::otlp::OtlpReceiver;
use rustygate_tests::process::{GatewayProcess, free_port};
use rustygate_tests::scratch::Scratch;
use rustygate_tests::upstream::Upstream;
use rustygate_tests::{TestGateway, simple_config};

fn prometheus_bin() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("prometheus");
        if p.is_file() {
            return p;
        }
    }
    panic!("prometheus is not installed: `make deps` installs Debian's prometheus package");
}

/// A Prometheus on loopback with `config` (a prometheus.yml), stopped when dropped.
struct Prometheus {
    port: u16,
    _child: tokio::process::Child,
    _files: Scratch,
}

impl Prometheus {
    fn start(name: &str, config: &str) -> Self {
        let dir = Scratch::new(&format!("prometheus-{name}"));
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = tokio::process::Command::new(prometheus_bin())
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
        Prometheus {
            port,
            _child: child,
            _files: dir,
        }
    }

    /// Runs an instant query; `None` while Prometheus is not up yet.
    async fn query(&self, query: &str) -> Option<Seen> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}",
            self.port,
            query
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        );
        match tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
            Ok(_) => Some(get(&url).await),
            Err(_) => None,
        }
    }

    /// Polls `query` until `done` holds for its answer (a JSON body with status success),
    /// at most a minute.
    async fn wait_for(
        &self,
        query: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.query(query).await;
            if let Some(seen) = &answer
                && seen.status == 200
            {
                let body = seen.json();
                assert_eq!(body["status"], "success", "{query}: {body}");
                if done(&body) {
                    return body;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never answered {query} as expected: {:?}",
                answer.map(|a| String::from_utf8_lossy(&a.body).into_owned())
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn scrape_config(target: &str) -> String {
    format!(
        "global:\n  scrape_interval: 500ms\nscrape_configs:\n  - job_name: rustygate\n    static_configs:\n      - targets: ['{target}']\n"
    )
}

#[tokio::test]
async fn prometheus_scrapes_the_request_count() {
    let up = Upstream::echo();
    let gw = TestGateway::start(&simple_config(up.addr, "")).await;
    for _ in 0..7 {
        assert_eq!(get(&gw.url("/api/x")).await.status, 200);
    }
    let prometheus = Prometheus::start("count", &scrape_config(&gw.admin.to_string()));
    let query = "sum(rustygate_requests_total{route=\"all\",status=\"200\"})";
    let last = prometheus
        .wait_for(query, |b| b["data"]["result"][0]["value"][1] == "7")
        .await;
    assert_eq!(last["data"]["resultType"], "vector");
}

/// The example stack as docs/observability.md runs it, minus the containers: the binary on
/// examples/observability/gateway.yaml, Prometheus on that directory's scrape config, and
/// each query of the provisioned Grafana dashboard, which must be valid PromQL and, for the
/// panels that traffic feeds, return series. Spans go to an OTLP receiver in Jaeger's place.
#[tokio::test]
async fn the_example_dashboard_queries_answer_from_a_real_scrape() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = root.join("examples/observability");
    let demo = Upstream::echo();
    let otlp = OtlpReceiver::start();
    let (port, admin) = (free_port(), free_port());
    let mut gw = GatewayProcess::start_file(
        &example.join("gateway.yaml"),
        &[
            ("RUSTYGATE_PORT", port.to_string()),
            ("RUSTYGATE_ADMIN_PORT", admin.to_string()),
            ("DEMO_UPSTREAM_PORT", demo.addr.port().to_string()),
            ("OTLP_ENDPOINT", otlp.grpc_endpoint()),
        ],
    )
    .await;
    gw.wait_for_log("gateway started", Duration::from_secs(20))
        .await;
    for path in ["/api/public/a", "/api/b", "/api/public/c"] {
        let seen = get(&format!("http://127.0.0.1:{port}{path}")).await;
        assert_eq!(seen.status, 200, "{path}");
        assert_eq!(seen.header("x-rustygate-plugin"), Some("executed"));
    }

    let config = std::fs::read_to_string(example.join("prometheus.yml")).unwrap();
    assert!(
        config.contains("127.0.0.1:8081"),
        "the example scrapes the default admin port"
    );
    let config = config
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{admin}"))
        .replace("scrape_interval: 5s", "scrape_interval: 500ms");
    let prometheus = Prometheus::start("dashboard", &config);
    prometheus
        .wait_for("sum(rustygate_requests_total)", |b| {
            b["data"]["result"][0]["value"][1] == "3"
        })
        .await;
    // `rate` needs the counters to grow between scrapes: keep traffic flowing meanwhile.
    let traffic = tokio::spawn(async move {
        loop {
            for path in ["/api/public/t", "/api/t"] {
                get(&format!("http://127.0.0.1:{port}{path}")).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(example.join("grafana/dashboards/rustygate.json")).unwrap(),
    )
    .unwrap();
    // Panels that stay empty without errors, retries or failures.
    let may_be_empty = [
        "Error rate by route",
        "Upstream failures and retries",
        "Filter failures",
    ];
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m");
            queried += 1;
            let empty_ok = may_be_empty.contains(&title);
            // `wait_for` also asserts the query is valid PromQL (status success).
            prometheus
                .wait_for(&expr, |b| {
                    empty_ok
                        || b["data"]["result"].as_array().is_some_and(|r| {
                            r.iter()
                                .any(|s| s["value"][1].as_str().is_some_and(|v| v != "NaN"))
                        })
                })
                .await;
        }
    }
    assert!(queried >= 10, "{queried} queries");
    traffic.abort();

    // Per route and per filter, as the panels group them.
    let by_route = prometheus
        .wait_for("sum by (route) (rustygate_requests_total)", |b| {
            b["data"]["result"].as_array().is_some_and(|r| r.len() == 2)
        })
        .await;
    let routes: Vec<&str> = by_route["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"]["route"].as_str().unwrap())
        .collect();
    assert!(
        routes.contains(&"public") && routes.contains(&"api"),
        "{routes:?}"
    );
    prometheus
        .wait_for(
            "count(rustygate_filter_duration_seconds_count{filter=\"rate-limit\",phase=\"request_headers\"})",
            |b| b["data"]["result"][0]["value"][1] == "1",
        )
        .await;
    prometheus
        .wait_for("rustygate_endpoint_healthy{cluster=\"demo\"}", |b| {
            b["data"]["result"][0]["value"][1] == "1"
        })
        .await;

    // And the traces went to the OTLP endpoint the example points at.
    gw.signal("TERM");
    let _ = tokio::time::timeout(Duration::from_secs(10), gw.child.wait()).await;
    let spans = otlp.spans();
    for path in [
        "GET /api/public/a",
        "GET /api/b",
        "GET /api/public/c",
        "GET /api/t",
    ] {
        assert!(
            spans.iter().any(|s| s.name == path),
            "no span {path}: {spans:#?}"
        );
    }
    assert!(
        spans
            .iter()
            .any(|s| s.name == "filter rate-limit request_headers")
    );
}
