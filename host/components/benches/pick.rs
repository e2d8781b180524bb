//! The per-request cost of choosing an endpoint: the round-robin balancer component's `pick`
//! (request info lowered into the guest, the call under its CPU budget, the answer lifted
//! back) against the native smooth weighted round-robin, over the same 4 endpoints.
//!
//! The component is `filters/balancers/round-robin` as `make filters` builds it.

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rustygate_components::Components;
use rustygate_core::balance::SmoothWrr;
use rustygate_filter_api::{BalancerEndpoint, PickRequest};
use rustygate_wasm_runtime::{Runtime, RuntimeConfig};

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let module = root.join("target/filters/wasm32-wasip2/filter/round_robin.wasm");
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
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let components = Components::load(&config, Path::new("."), &runtime).expect("load");
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
    let request = PickRequest {
        method: "GET",
        path: "/api/users/42?expand=orders",
        host: Some("api.example.com"),
        hash_key: None,
    };
    let mut group = c.benchmark_group("pick");
    group.bench_function("component round-robin", |b| {
        b.iter(|| balancer.pick(&request).expect("pick"))
    });
    let mut native = SmoothWrr::new([1, 1, 1, 1]);
    group.bench_function("native smooth wrr", |b| b.iter(|| native.pick()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
