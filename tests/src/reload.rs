//! A gateway process for the hot-reload tests: a config file and the `stamp` module in a
//! directory of their own, an admin API with a token, and clients that tally which module
//! version answered.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use crate::STAMP_V1_WASM;
use crate::client::{Seen, get, http1, send};
use crate::process::{GatewayProcess, free_port};
use crate::scratch::Scratch;
use crate::upstream::Upstream;

/// The admin token the rig's gateway is started with.
pub const TOKEN: &str = "test-admin-token";

/// A gateway process running from a config file in a directory of its own, next to its module.
pub struct Rig {
    /// The directory holding `config.yaml` and `stamp.wasm`.
    pub dir: PathBuf,
    /// The gateway process.
    pub gw: GatewayProcess,
    /// Traffic port.
    pub port: u16,
    /// Admin port.
    pub admin: u16,
    /// The upstream every route forwards to.
    pub upstream: Upstream,
    _files: Scratch,
}

pub fn config_text(port: u16, admin: u16, upstream: SocketAddr, extra_routes: &str) -> String {
    format!(
        "workers: 2
listeners:
  - name: main
    address: 127.0.0.1:{port}
admin:
  address: 127.0.0.1:{admin}
  token: ${{RG_TEST_ADMIN_TOKEN}}
logging: {{ access_log: false }}
clusters:
  - name: up
    endpoints: [{{ url: http://{upstream} }}]
filters:
  - name: stamp
    module: stamp.wasm
    configuration: {{ password: hunter2, header: x-filter-version }}
routes:
{extra_routes}  - name: api
    match: {{ path: {{ prefix: / }} }}
    cluster: up
    filters: [stamp]
"
    )
}

/// Replaces `path` the way editors and deploy tools do: write a temporary file, rename it over.
pub fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Rig {
    pub async fn start(name: &str) -> Rig {
        Self::start_with(name, Upstream::echo()).await
    }

    pub async fn start_with(name: &str, upstream: Upstream) -> Rig {
        let files = Scratch::new(&format!("reload-{name}"));
        let dir = files.path().to_path_buf();
        std::fs::copy(STAMP_V1_WASM, dir.join("stamp.wasm")).unwrap();
        let (port, admin) = (free_port(), free_port());
        std::fs::write(
            dir.join("config.yaml"),
            config_text(port, admin, upstream.addr, ""),
        )
        .unwrap();
        let gw = GatewayProcess::start_file(
            &dir.join("config.yaml"),
            &[("RG_TEST_ADMIN_TOKEN", TOKEN.to_owned())],
        )
        .await;
        let mut rig = Rig {
            dir,
            gw,
            port,
            admin,
            upstream,
            _files: files,
        };
        rig.gw
            .wait_for_log("watching for changes", Duration::from_secs(30))
            .await;
        rig
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn module(&self) -> PathBuf {
        self.dir.join("stamp.wasm")
    }

    pub async fn admin(&self, method: Method, path: &str, token: Option<&str>) -> Seen {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.admin));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        send(&http1(), req.body(Full::default()).unwrap()).await
    }

    pub async fn generation(&self) -> u64 {
        let seen = self.admin(Method::GET, "/admin/filters", Some(TOKEN)).await;
        assert_eq!(seen.status, StatusCode::OK);
        seen.json()["generation"].as_u64().unwrap()
    }

    /// Waits until generation `n` serves new requests.
    pub async fn wait_generation(&self, n: u64) {
        for _ in 0..200 {
            if self.generation().await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("generation {n} never became current");
    }

    /// Asserts that only the current generation's VMs are alive: one per worker, and none of
    /// a replaced module.
    pub async fn assert_only_current_vms(&self) {
        let filters = self
            .admin(Method::GET, "/admin/filters", Some(TOKEN))
            .await
            .json();
        assert_eq!(filters["filters"][0]["module_vms"], 2, "{filters}");
        assert_eq!(filters["draining"], serde_json::json!([]), "{filters}");
    }

    pub async fn metrics(&self) -> String {
        String::from_utf8(
            get(&format!("http://127.0.0.1:{}/metrics", self.admin))
                .await
                .body
                .to_vec(),
        )
        .unwrap()
    }
}

/// What the clients saw while they ran.
#[derive(Default)]
pub struct Tally {
    /// 200s stamped v1.
    pub v1: usize,
    /// 200s stamped v2.
    pub v2: usize,
    /// Anything else, described.
    pub bad: Vec<String>,
}

/// `clients` concurrent keep-alive clients sending GETs until `stop` is set.
pub fn load(
    url: String,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    (0..clients)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let client = http1();
                let mut t = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    let req = Request::get(&url).body(Full::<Bytes>::default()).unwrap();
                    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                        Ok(Ok(resp)) => {
                            let status = resp.status();
                            let version = resp
                                .headers()
                                .get("x-filter-version")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                            match (status, version.as_deref()) {
                                (StatusCode::OK, Some("v1")) => t.v1 += 1,
                                (StatusCode::OK, Some("v2")) => t.v2 += 1,
                                other => t.bad.push(format!("{other:?}")),
                            }
                        }
                        Ok(Err(e)) => t.bad.push(format!("client error: {e}")),
                        Err(_) => t.bad.push("no response within 10s".into()),
                    }
                }
                t
            })
        })
        .collect()
}

pub async fn finish(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await.unwrap();
        all.v1 += t.v1;
        all.v2 += t.v2;
        all.bad.extend(t.bad);
    }
    all
}

pub async fn versions(rig: &Rig, n: usize) -> Vec<String> {
    let client = http1();
    let mut out = Vec::new();
    for _ in 0..n {
        let seen = send(
            &client,
            Request::get(rig.url("/after"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(seen.status, StatusCode::OK);
        out.push(seen.header("x-filter-version").unwrap_or("none").to_owned());
    }
    out
}
