//! Route matching over 1,000 routes: the per-request cost of picking a route, and of making
//! the path canonical first.

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use std::hint::black_box;

use rustygate_config::{PathMatch, PathNormalization, RouteMatch, ValueMatch};
use rustygate_core::path;
use rustygate_core::router::{RequestView, Router};

/// 1,000 routes in a realistic mix: mostly prefixes and exact paths, some with a method or a
/// header condition, and a few regexes (which cannot be indexed and are checked every time).
fn routes() -> Vec<RouteMatch> {
    (0..1000)
        .map(|i| {
            let path = match i % 10 {
                0..=5 => PathMatch::Prefix(format!("/svc{i}/")),
                6..=8 => PathMatch::Exact(format!("/svc{i}/status")),
                _ => PathMatch::Regex(format!("/re{i}/[0-9]+")),
            };
            RouteMatch {
                path: Some(path),
                methods: if i % 3 == 0 {
                    vec!["GET".into()]
                } else {
                    vec![]
                },
                headers: if i % 7 == 0 {
                    vec![ValueMatch {
                        name: "x-tenant".into(),
                        exact: Some("a".into()),
                        ..Default::default()
                    }]
                } else {
                    vec![]
                },
                ..Default::default()
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let routes = routes();
    let router = Router::new(&routes).unwrap();
    let headers = HeaderMap::new();
    let get = Method::GET;
    let view = |path| RequestView {
        method: &get,
        path,
        query: None,
        host: Some("api.example.com"),
        scheme: "http",
        headers: &headers,
    };
    let mut g = c.benchmark_group("route_match_1000");
    g.bench_function("last_prefix_route", |b| {
        b.iter(|| router.find(&view("/svc995/users/1")))
    });
    g.bench_function("exact_route", |b| {
        b.iter(|| router.find(&view("/svc998/status")))
    });
    g.bench_function("regex_route", |b| {
        b.iter(|| router.find(&view("/re999/42")))
    });
    g.bench_function("no_match", |b| {
        b.iter(|| router.find(&view("/nothing/here")))
    });
    g.finish();

    // Every request's path is made canonical before it is routed: nearly all are already.
    let rules = PathNormalization::default();
    let mut g = c.benchmark_group("path_normalization");
    g.bench_function("canonical", |b| {
        b.iter(|| path::normalize(black_box("/api/v1/users/42/orders"), &rules))
    });
    g.bench_function("dot_segments", |b| {
        b.iter(|| path::normalize(black_box("/api/v1/../v2/./users//42"), &rules))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
