//! Test harness: builders for real upstream servers, the real gateway (in-process or as the
//! `rustygate` binary) and real clients, all on `127.0.0.1:0`. Assertions in the tests are
//! about what a client sees.

pub mod client;
pub mod grpc;
pub mod jwt;
pub mod otlp;
pub mod process;
pub mod reload;
pub mod scratch;
pub mod tls;
pub mod upstream;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use rustygate_proxy::Gateway;
use rustygate_telemetry::Metrics;

/// A gateway running in this process, plus its admin listener.
pub struct TestGateway {
    gateway: Option<Gateway>,
    /// Address of the listener named `main`.
    pub addr: SocketAddr,
    /// Address of the admin listener.
    pub admin: SocketAddr,
    stop_admin: Option<tokio::sync::oneshot::Sender<()>>,
    tracer: Option<Arc<rustygate_telemetry::trace::Tracer>>,
    _runtime: Option<Arc<rustygate_wasm_runtime::Runtime>>,
}

/// A WebAssembly runtime for tests: a module cache under `target/`, shared by test runs.
pub fn test_runtime(pool_slots: u32) -> rustygate_wasm_runtime::Runtime {
    rustygate_wasm_runtime::Runtime::new(&rustygate_wasm_runtime::RuntimeConfig {
        pool_slots,
        cache_dir: Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/module-cache"),
        ),
        ..Default::default()
    })
    .expect("runtime")
}

/// Path of the abi-probe guest filter, built from `tests/guests/rust/abi-probe` by build.rs.
pub const ABI_PROBE_WASM: &str = env!("ABI_PROBE_WASM");
/// A no-op filter without an SDK that exports only context creation and request headers
/// (`tests/guests/rust/bare-noop`), built by build.rs.
pub const BARE_NOOP_WASM: &str = env!("BARE_NOOP_WASM");
/// The Go test filter (stock Go, `GOOS=wasip1`, hand-declared ABI), built by `build.rs`.
pub const GO_PROBE_WASM: &str = env!("GO_PROBE_WASM");
/// The C test filter (clang + wasi-libc), built by `build.rs`.
pub const C_PROBE_WASM: &str = env!("C_PROBE_WASM");
/// The shipped filters (`filters/`), built by `build.rs` as `make filters` builds them.
pub const HEADERS_WASM: &str = env!("HEADERS_WASM");
/// See [`HEADERS_WASM`].
pub const CORS_WASM: &str = env!("CORS_WASM");
/// See [`HEADERS_WASM`].
pub const RATE_LIMIT_WASM: &str = env!("RATE_LIMIT_WASM");
/// See [`HEADERS_WASM`].
pub const JWT_AUTH_WASM: &str = env!("JWT_AUTH_WASM");
/// The `stamp` guest built as v1: responses carry `x-filter-version: v1`.
pub const STAMP_V1_WASM: &str = env!("STAMP_V1_WASM");
/// The `stamp` guest built as v2.
pub const STAMP_V2_WASM: &str = env!("STAMP_V2_WASM");
/// Balancer components (`filters/balancers/`, wasm32-wasip2), built by `build.rs`.
pub mod balancers {
    pub const ROUND_ROBIN: &str = env!("COMPONENT_ROUND_ROBIN_WASM");
    pub const WEIGHTED_ROUND_ROBIN: &str = env!("COMPONENT_WEIGHTED_ROUND_ROBIN_WASM");
    pub const RANDOM: &str = env!("COMPONENT_RANDOM_WASM");
    pub const LEAST_REQUEST: &str = env!("COMPONENT_LEAST_REQUEST_WASM");
    pub const PEAK_EWMA: &str = env!("COMPONENT_PEAK_EWMA_WASM");
    pub const RING_HASH: &str = env!("COMPONENT_RING_HASH_WASM");
    pub const MAGLEV: &str = env!("COMPONENT_MAGLEV_WASM");
    /// Misbehaves on demand (tests/guests/components/faulty).
    pub const FAULTY: &str = env!("COMPONENT_FAULTY_BALANCER_WASM");
}

/// The Go test filter on `sdk/go`, built by `build.rs`.
pub const GO_SDK_PROBE_WASM: &str = env!("GO_SDK_PROBE_WASM");
/// The AssemblyScript test filter on `sdk/assemblyscript` (asc 0.28), built by `build.rs`.
pub const AS_SDK_PROBE_WASM: &str = env!("AS_SDK_PROBE_WASM");
/// Component filters (the `http-filter` world, wasm32-wasip2), built by `build.rs`.
pub mod component_filters {
    /// `filters/headers-component`: the headers filter ported to the typed world.
    pub const HEADERS: &str = env!("COMPONENT_HEADERS_COMPONENT_WASM");
    /// tests/guests/components/probe-filter: every part of the world, and failures on demand.
    pub const PROBE: &str = env!("COMPONENT_PROBE_FILTER_WASM");
}

/// The AssemblyScript test filter (`@solo-io/proxy-runtime`), built by `build.rs`.
pub const AS_PROBE_WASM: &str = env!("AS_PROBE_WASM");

/// `examples/api-key`: the same filter written with each SDK, built by `build.rs` as
/// `make examples` builds it.
pub mod examples {
    /// Rust, the upstream `proxy-wasm` crate.
    pub const API_KEY_RUST: &str = env!("API_KEY_RUST_WASM");
    /// Go, `sdk/go`.
    pub const API_KEY_GO: &str = env!("API_KEY_GO_WASM");
    /// AssemblyScript, `sdk/assemblyscript`.
    pub const API_KEY_ASSEMBLYSCRIPT: &str = env!("API_KEY_ASSEMBLYSCRIPT_WASM");
}

impl TestGateway {
    /// Starts a gateway from YAML text. The text should use port 0 for its listeners; the
    /// admin listener is always started on a free port. Panics with the config error.
    pub async fn start(yaml: &str) -> Self {
        Self::try_start(yaml)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`TestGateway::start`], returning configuration, filter and start-up errors.
    /// Filter module paths are absolute or relative to the current directory.
    pub async fn try_start(yaml: &str) -> Result<Self, String> {
        let config =
            rustygate_config::parse("test.yaml", yaml, &|_| None).map_err(|e| e.to_string())?;
        let metrics = Metrics::new();
        // The binary's loading path (rustygate_reload::load), on an engine with the tests'
        // module cache.
        let workers = config
            .workers
            .unwrap_or_else(rustygate_proxy::default_workers);
        let runtime = (!config.filters.is_empty() || !config.balancers.is_empty()).then(|| {
            Arc::new(test_runtime(rustygate_proxy_wasm::vm_slots(
                &config, workers,
            )))
        });
        let mut wasm = match &runtime {
            Some(r) => rustygate_reload::Wasm::with_runtime(metrics.clone(), r.clone()),
            None => rustygate_reload::Wasm::new(metrics.clone()),
        };
        let loaded = rustygate_reload::load_parsed(config, std::path::Path::new("."), &mut wasm)
            .map_err(|e| e.to_string())?;
        let chains = loaded.chains();
        let config = loaded.config;
        let tracer = config
            .tracing
            .enabled
            .then(|| rustygate_telemetry::trace::Tracer::new(&config.tracing).map(Arc::new))
            .transpose()
            .map_err(|e| e.to_string())?;
        let gateway = Gateway::start(&config, metrics.clone(), chains, tracer.clone())
            .map_err(|e| e.to_string())?;
        let addr = gateway.local_addrs()[0].1;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = listener.local_addr().unwrap();
        let readiness = gateway.readiness();
        let state = rustygate_admin::AdminState {
            metrics,
            ready: Arc::new(move || readiness.is_ready()),
            // In-process gateways have no configuration file to reload; the binary's admin API
            // is tested through `GatewayProcess`.
            operations: None,
            token: None,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(rustygate_admin::serve(listener, state, async {
            let _ = rx.await;
        }));
        Ok(TestGateway {
            gateway: Some(gateway),
            addr,
            admin,
            stop_admin: Some(tx),
            tracer,
            _runtime: runtime,
        })
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Exports the spans ended so far now, rather than at the exporter's next batch.
    pub async fn flush_traces(&self) {
        if let Some(t) = self.tracer.clone() {
            tokio::task::spawn_blocking(move || t.flush())
                .await
                .expect("flush");
        }
    }

    /// The admin `/metrics` text once it contains `line`. Some counts are taken after the
    /// client has its answer (a response hyper writes itself is counted when the connection
    /// ends), so this waits up to 5 s for one; it panics with the text it last saw.
    pub async fn metrics_with(&self, line: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let seen = client::get(&format!("http://{}/metrics", self.admin)).await;
            let text = String::from_utf8_lossy(&seen.body).into_owned();
            if text.contains(line) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{line} not in /metrics:\n{text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The running gateway.
    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("running")
    }

    /// Drains and stops the gateway, then its admin listener (which reports 503 on
    /// `/readyz` during the drain, as in the binary).
    pub async fn stop(mut self, grace: std::time::Duration) -> rustygate_proxy::DrainReport {
        let report = self.gateway.take().expect("running").shutdown(grace).await;
        if let Some(tx) = self.stop_admin.take() {
            let _ = tx.send(());
        }
        report
    }
}

/// An address that refuses connections for as long as the returned socket lives: bound, so no
/// other test of the same run can be given the port, but not listening. (Binding a listener
/// and dropping it frees the port for the next test that asks for one, which then answers.)
pub fn refusing_address() -> (socket2::Socket, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind a loopback port");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("a bound address");
    (socket, addr)
}

/// A one-cluster, one-route config with a port-0 listener in front of `upstream`.
pub fn simple_config(upstream: SocketAddr, extra_route_yaml: &str) -> String {
    format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
logging:
  access_log: false
clusters:
  - name: up
    endpoints:
      - url: http://{upstream}
routes:
{extra_route_yaml}  - name: all
    cluster: up
"
    )
}

/// `yaml`, a configuration made here (its listener at `address: 127.0.0.1:0`), with `settings`
/// (lines indented as the listener's fields, four spaces) added to the listener.
pub fn with_listener(yaml: &str, settings: &str) -> String {
    const LISTENER: &str = "    address: 127.0.0.1:0\n";
    assert!(
        yaml.contains(LISTENER),
        "no listener at 127.0.0.1:0 in {yaml}"
    );
    yaml.replace(LISTENER, &format!("{LISTENER}{settings}"))
}

/// A gateway with two workers and one route (`/`) to `upstream` whose chain is `chain_yaml`;
/// `filters_yaml` is the `filters:` list (entries indented two spaces).
pub fn filters_config(upstream: SocketAddr, filters_yaml: &str, chain_yaml: &str) -> String {
    format!(
        "workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
clusters:
  - name: up
    endpoints:
      - url: http://{upstream}
filters:
{filters_yaml}
routes:
  - name: api
    match: {{ path: {{ prefix: / }} }}
    cluster: up
    filters: {chain_yaml}
"
    )
}

/// A gateway in front of `upstream` whose one route runs abi-probe with `configuration` (a
/// YAML flow map, as `{ name: x }`).
pub async fn start_probe(upstream: SocketAddr, configuration: &str) -> TestGateway {
    TestGateway::start(&probe_config(
        upstream,
        &format!("    configuration: {configuration}"),
        "[probe]",
    ))
    .await
}

/// [`filters_config`] with the abi-probe filter declared as `probe` with `filter_yaml`
/// settings (indented four spaces).
pub fn probe_config(upstream: SocketAddr, filter_yaml: &str, chain_yaml: &str) -> String {
    filters_config(
        upstream,
        &format!("  - name: probe\n    module: {ABI_PROBE_WASM}\n{filter_yaml}"),
        chain_yaml,
    )
}
