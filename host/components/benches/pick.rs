//! The per-request cost of choosing an endpoint, over the same 4 endpoints: the round-robin
//! balancer component (which needs nothing from requests, so the gateway asks it for picks in
//! batches), the Maglev component (which reads the hash key: one call per pick, the key
//! lowered into the guest under the CPU budget, the answer lifted back), and the native
//! smooth weighted round-robin.
//!
//! The components are `filters/balancers/*` as `make filters` builds them.

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rustygate_components::Components;
use rustygate_core::balance::SmoothWrr;
use rustygate_filter_api::{BalancerEndpoint, PickRequest};
use rustygate_wasm_runtime::{Runtime, RuntimeConfig};

/// A worker's instance of the shipped balancer `file`, offered 4 endpoints.
fn balancer(runtime: &Runtime, file: &str) -> Box<dyn rustygate_filter_api::Balancer> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let module = root.join(format!("target/filters/wasm32-wasip2/filter/{file}.wasm"));
    assert!(
        module.exists(),
        "{} is missing: run `make filters` first",
        module.display()
    );
    let yaml = format!(
        "listeners: [ {{ name: main, address: 127.0.0.1:0 }} ]
balancers: [ {{ name: rr, module: {} }} ]
clusters:
  - name: up
    balancer: rr
    endpoints: [ {{ url: http://10.0.0.1 }}, {{ url: http://10.0.0.2 }}, {{ url: http://10.0.0.3 }}, {{ url: http://10.0.0.4 }} ]
routes: [ {{ cluster: up }} ]
",
        module.display()
    );
    let config = rustygate_config::parse("bench.yaml", &yaml, &|_| None).expect("config");
    let gauges = rustygate_telemetry::Metrics::new().wasm_gauges();
    let components = Components::load(&config, Path::new("."), runtime, &gauges).expect("load");
    let mut balancer = components
        .balancer(0)
        .expect("instance")
        .expect("a balancer");
    let endpoints: Vec<BalancerEndpoint> = (0..4)
        .map(|i| BalancerEndpoint {
            id: i,
            address: Arc::from(format!("10.0.0.{}:80", i + 1)),
            weight: 1,
            healthy: true,
            zone: None,
            metadata: Vec::new(),
        })
        .collect();
    balancer.set_endpoints(&endpoints).expect("set_endpoints");
    balancer
}

fn bench(c: &mut Criterion) {
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let request = PickRequest {
        method: "GET",
        path: "/api/users/42?expand=orders",
        host: Some("api.example.com"),
        hash_key: Some("user-42"),
    };
    let mut group = c.benchmark_group("pick");
    let mut round_robin = balancer(&runtime, "round_robin");
    group.bench_function("component round-robin", |b| {
        b.iter(|| round_robin.pick(&request).expect("pick"))
    });
    let mut maglev = balancer(&runtime, "maglev");
    group.bench_function("component maglev (hash key)", |b| {
        b.iter(|| maglev.pick(&request).expect("pick"))
    });
    let mut native = SmoothWrr::new([1, 1, 1, 1]);
    group.bench_function("native smooth wrr", |b| b.iter(|| native.pick()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
