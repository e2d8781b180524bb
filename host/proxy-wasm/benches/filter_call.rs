//! The per-request cost of a proxy-wasm filter, through the same API the proxy uses:
//! create the stream context, run `proxy_on_request_headers`, end the stream
//! (`on_log`, `on_done`, `on_delete`). Two guests: one that does nothing, and one that reads
//! `:path` and sets a header (a host call each way, with a guest allocation for the value).

use std::rc::Rc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use rustygate_filter_api::{
    ChainBuilder, Exchange, FilterFactory, LocalFuture, RequestHead, StreamInfo, Upstreams,
};
use rustygate_proxy_wasm::{ProxyWasm, Shared};
use rustygate_telemetry::Metrics;
use rustygate_wasm_runtime::{Runtime, RuntimeConfig};

const NOOP: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))"#;

/// Reads `:path` (host allocates the value in the guest) and replaces `x-bench: 1`.
const HEADERS: &str = r#"(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) ":path")
  (data (i32.const 32) "x-bench")
  (data (i32.const 48) "1")
  (func (export "proxy_abi_version_0_2_1"))
  ;; A bump allocator that resets per call: enough for a benchmark guest.
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $get (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 64) (i32.const 68)))
    (drop (call $set (i32.const 0) (i32.const 32) (i32.const 7) (i32.const 48) (i32.const 1)))
    (i32.const 0))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))"#;

fn factory(runtime: &Runtime, name: &str, wat_src: &str) -> Rc<dyn FilterFactory> {
    let dir = std::env::temp_dir().join(format!("rustygate-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.wasm")),
        wat::parse_str(wat_src).unwrap(),
    )
    .unwrap();
    let yaml = format!(
        "listeners: [{{ name: m, address: 127.0.0.1:0 }}]
clusters: [{{ name: c, endpoints: [{{ url: http://127.0.0.1:9 }}] }}]
filters: [{{ name: {name}, module: {name}.wasm }}]
routes: [{{ cluster: c, filters: [{name}] }}]
"
    );
    let config = rustygate_config::parse("bench.yaml", &yaml, &|_| None).unwrap();
    let host = ProxyWasm::load(&config, &dir, runtime, Shared::new(Metrics::new())).unwrap();
    // Compiled and held in memory: the file is no longer needed.
    let _ = std::fs::remove_dir_all(&dir);
    host.build(Rc::new(NoCalls)).unwrap().remove(0).remove(0)
}

/// The benchmark guests make no outbound calls.
struct NoCalls;

impl Upstreams for NoCalls {
    fn has_cluster(&self, _: &str) -> bool {
        false
    }

    fn call(
        &self,
        _: &str,
        _: http::Request<bytes::Bytes>,
        _: Option<std::time::Duration>,
    ) -> LocalFuture<'static, Result<http::Response<bytes::Bytes>, String>> {
        Box::pin(async { Err("no calls in benchmarks".to_owned()) })
    }

    fn spawn(&self, _: LocalFuture<'static, ()>) {}
}

fn exchange() -> Rc<Exchange> {
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-request-id", "0b6e"),
    ] {
        headers.insert(k, HeaderValue::from_static(v));
    }
    Rc::new(Exchange::new(
        RequestHead {
            method: Method::GET,
            path: "/api/test".into(),
            authority: "example.com".into(),
            scheme: "http",
            headers,
        },
        StreamInfo {
            client: "127.0.0.1:40000".parse().unwrap(),
            local: "127.0.0.1:8080".parse().unwrap(),
            request_id: HeaderValue::from_static("0b6e"),
            protocol: "HTTP/1.1",
            tls: None,
            connection_id: 1,
            start: std::time::Instant::now(),
        },
    ))
}

fn bench(c: &mut Criterion) {
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap();
    let mut g = c.benchmark_group("proxy_wasm_request");
    for (name, src) in [("noop", NOOP), ("get_and_set_header", HEADERS)] {
        let f = factory(&runtime, name, src);
        let ex = exchange();
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut filter = f.create(&ex).unwrap();
                let v = filter.on_request_headers(&ex, true).unwrap();
                filter.complete();
                v
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
