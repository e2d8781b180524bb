//! Balancer components (the WIT `load-balancer` world) choosing among real upstreams: what a
//! client's requests reach, with each shipped strategy, under health changes and when the
//! component misbehaves.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use rustygate_tests::client::{get, http1, send};
use rustygate_tests::scratch::Scratch;
use rustygate_tests::upstream::{Upstream, text};
use rustygate_tests::{TestGateway, balancers};

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// Upstreams that answer with their own name.
fn named(n: usize) -> Vec<Upstream> {
    NAMES[..n]
        .iter()
        .map(|&name| Upstream::start(move |_| async move { text(StatusCode::OK, name) }))
        .collect()
}

/// One cluster over `ups` (with per-endpoint `weights`) picked by `module`.
fn config(ups: &[Upstream], weights: &[u32], module: &str, cluster_extra: &str) -> String {
    let endpoints: String = ups
        .iter()
        .zip(weights)
        .map(|(u, w)| format!("      - url: http://{}\n        weight: {w}\n", u.addr))
        .collect();
    format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
balancers:
  - name: strategy
    module: {module}
clusters:
  - name: up
    balancer: strategy
{cluster_extra}    endpoints:
{endpoints}routes:
  - name: all
    cluster: up
"
    )
}

async fn who(gw: &TestGateway, headers: &[(&str, &str)]) -> String {
    let mut req = Request::get(gw.url("/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let seen = send(&http1(), req.body(Full::<Bytes>::default()).unwrap()).await;
    assert_eq!(
        seen.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&seen.body)
    );
    String::from_utf8(seen.body.to_vec()).unwrap()
}

async fn metrics(gw: &TestGateway) -> String {
    let seen = get(&format!("http://{}/metrics", gw.admin)).await;
    String::from_utf8(seen.body.to_vec()).unwrap()
}

#[tokio::test]
async fn round_robin_goes_in_configuration_order() {
    let ups = named(3);
    let gw = TestGateway::start(&config(&ups, &[1, 5, 1], balancers::ROUND_ROBIN, "")).await;
    let mut seq = String::new();
    for _ in 0..9 {
        seq += &who(&gw, &[]).await;
    }
    assert_eq!(seq, "abcabcabc", "weights are ignored by plain round-robin");
}

#[tokio::test]
async fn weighted_strategies_follow_the_weights() {
    let ups = named(3);
    let weights = [1, 2, 7];
    for module in [balancers::WEIGHTED_ROUND_ROBIN, balancers::RANDOM] {
        let gw = TestGateway::start(&config(&ups, &weights, module, "")).await;
        let mut counts: HashMap<String, u32> = HashMap::new();
        let n = 10_000;
        for _ in 0..n {
            *counts.entry(who(&gw, &[]).await).or_default() += 1;
        }
        for (name, w) in NAMES.iter().zip(weights) {
            let share = f64::from(counts.get(*name).copied().unwrap_or(0)) / f64::from(n);
            let want = f64::from(w) / 10.0;
            assert!(
                (share - want).abs() <= 0.02,
                "{module}: {name} got {share:.3}, weight share {want}: {counts:?}"
            );
        }
        gw.stop(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn smooth_weighted_round_robin_interleaves() {
    let ups = named(3);
    let gw = TestGateway::start(&config(
        &ups,
        &[5, 1, 1],
        balancers::WEIGHTED_ROUND_ROBIN,
        "",
    ))
    .await;
    let mut seq = String::new();
    for _ in 0..7 {
        seq += &who(&gw, &[]).await;
    }
    assert_eq!(seq, "aabacaa", "nginx's order");
}

#[tokio::test]
async fn least_request_and_peak_ewma_prefer_the_fast_endpoint() {
    let fast = Upstream::start(|_| async { text(StatusCode::OK, "fast") });
    let slow = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        text(StatusCode::OK, "slow")
    });
    let ups = [fast, slow];
    for module in [balancers::LEAST_REQUEST, balancers::PEAK_EWMA] {
        let gw = TestGateway::start(&config(&ups, &[1, 1], module, "")).await;
        let url = gw.url("/");
        // 20 clients in parallel, 10 requests each.
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    let mut fast = 0;
                    for _ in 0..10 {
                        let seen = get(&url).await;
                        assert_eq!(seen.status, 200);
                        fast += u32::from(&seen.body[..] == b"fast");
                    }
                    fast
                })
            })
            .collect();
        let mut to_fast = 0;
        for t in tasks {
            to_fast += t.await.unwrap();
        }
        assert!(
            to_fast >= 150,
            "{module}: only {to_fast} of 200 requests went to the fast endpoint\n{}",
            metrics(&gw).await
        );
        gw.stop(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn consistent_hashing_keeps_keys_and_moves_few_when_an_endpoint_goes() {
    let hc = "    hash_key: { header: x-user }
    health_check:
      path: /
      interval: 100ms
      timeout: 1s
      unhealthy_threshold: 1
";
    for module in [balancers::RING_HASH, balancers::MAGLEV] {
        let mut ups = named(4);
        let gw = TestGateway::start(&config(&ups, &[1, 1, 1, 1], module, hc)).await;
        let keys: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
        let mut before = Vec::new();
        for k in &keys {
            before.push(who(&gw, &[("x-user", k)]).await);
        }
        for (k, b) in keys.iter().zip(&before).take(50) {
            let now = who(&gw, &[("x-user", k)]).await;
            assert_eq!(&now, b, "{module}: {k} moved\n{}", metrics(&gw).await);
        }
        let spread: HashMap<&str, usize> = NAMES
            .iter()
            .map(|n| (*n, before.iter().filter(|b| b == n).count()))
            .collect();
        assert!(spread.values().all(|&c| c > 50), "{module}: {spread:?}");

        // "d" goes down; once health checks take it out, its keys move and few others do.
        ups[3].stop();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut moved = 0;
        for (k, b) in keys.iter().zip(&before) {
            let now = who(&gw, &[("x-user", k)]).await;
            assert_ne!(now, "d");
            moved += usize::from(&now != b);
        }
        let owned = spread["d"];
        assert!(
            moved >= owned,
            "{module}: d's {owned} keys must move, {moved} did"
        );
        // The keys d owned (about 1/4) move; of the others, hardly any.
        assert!(
            (moved - owned) as f64 <= keys.len() as f64 * 0.05,
            "{module}: {moved} of {} keys moved, {owned} of them d's",
            keys.len()
        );
        gw.stop(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn unhealthy_endpoints_are_never_offered() {
    let good_a = Upstream::start(|_| async { text(StatusCode::OK, "a") });
    let sick = Upstream::start(|req| async move {
        if req.uri().path() == "/healthz" {
            text(StatusCode::INTERNAL_SERVER_ERROR, "sick")
        } else {
            text(StatusCode::OK, "sick")
        }
    });
    let good_c = Upstream::start(|_| async { text(StatusCode::OK, "c") });
    let ups = [good_a, sick, good_c];
    let hc = "    health_check:
      path: /healthz
      interval: 100ms
      unhealthy_threshold: 1
    panic_threshold: 0
";
    for module in [balancers::ROUND_ROBIN, balancers::MAGLEV] {
        let gw = TestGateway::start(&config(
            &ups,
            &[1, 1, 1],
            module,
            &format!("    hash_key: {{ header: x-user }}\n{hc}"),
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        for i in 0..150 {
            let user = format!("u{i}");
            assert_ne!(who(&gw, &[("x-user", &user)]).await, "sick", "{module}");
        }
        gw.stop(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_misbehaving_balancer_never_fails_a_request() {
    let ups = named(2);
    let gw = TestGateway::start(&config(
        &ups,
        &[1, 1],
        balancers::FAULTY,
        "    hash_key: { header: x-mode }\n",
    ))
    .await;
    for mode in ["trap", "spin", "stranger", "grow"] {
        let got = who(&gw, &[("x-mode", mode)]).await;
        assert!(NAMES.contains(&got.as_str()), "{mode}: {got}");
        // A failed instance is replaced at most once a second; meanwhile round-robin serves.
        let got = who(&gw, &[("x-mode", mode)]).await;
        assert!(NAMES.contains(&got.as_str()), "{mode}: {got}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // Plain requests keep flowing, first from the native round-robin, then (after the
    // once-a-second rebuild) from a fresh instance.
    for _ in 0..20 {
        who(&gw, &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let seq: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(who(&gw, &[]).await);
        }
        v
    };
    assert_eq!(seq.iter().filter(|s| *s == "a").count(), 2, "{seq:?}");
    let text = metrics(&gw).await;
    for reason in ["trap", "cpu_deadline", "bad_pick", "memory"] {
        assert!(
            text.contains(&format!(
                "rustygate_balancer_failures_total{{cluster=\"up\",balancer=\"strategy\",reason=\"{reason}\"}}"
            )),
            "no {reason} failure counted:\n{text}"
        );
    }
    gw.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_balancer_that_refuses_its_configuration_refuses_the_gateway() {
    let ups = named(1);
    let yaml = config(&ups, &[1], balancers::FAULTY, "")
        .replace("    module: ", "    configuration: refuse\n    module: ");
    let err = TestGateway::try_start(&yaml).await.err().expect("refused");
    assert!(err.contains("balancer strategy"), "{err}");
    assert!(err.contains("told to refuse"), "{err}");

    let yaml = config(&ups, &[1], "/nonexistent/balancer.wasm", "");
    let err = TestGateway::try_start(&yaml).await.err().expect("refused");
    assert!(err.contains("/nonexistent/balancer.wasm"), "{err}");
}

#[tokio::test]
async fn a_balancer_is_swapped_by_editing_the_file_and_a_broken_one_is_refused() {
    use rustygate_tests::process::{GatewayProcess, free_port};
    let ups = named(3);
    let port = free_port();
    let dir = Scratch::new("balancer-reload");
    let file = dir.join("config.yaml");
    let admin = free_port();
    let write = |module: &str, weights: &[u32]| {
        let yaml = config(&ups, weights, module, "")
            .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
            .replace(
                "workers: 1\n",
                &format!("workers: 1\nadmin: {{ address: 127.0.0.1:{admin} }}\n"),
            );
        let tmp = dir.join("config.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    write(balancers::ROUND_ROBIN, &[5, 1, 1]);
    let mut gw = GatewayProcess::start_file(&file, &[]).await;
    // Serving starts before the file watch does: an edit made in between would go unseen.
    gw.wait_for_log("watching for changes", Duration::from_secs(20))
        .await;
    let url = format!("http://127.0.0.1:{port}/");
    let mut seq = String::new();
    for _ in 0..6 {
        seq += std::str::from_utf8(&get(&url).await.body).unwrap();
    }
    assert_eq!(seq, "abcabc");

    let mark = gw.mark();
    write(balancers::WEIGHTED_ROUND_ROBIN, &[5, 1, 1]);
    gw.wait_for_log_since(mark, "configuration reloaded", Duration::from_secs(10))
        .await;
    let mut seq = String::new();
    for _ in 0..7 {
        seq += std::str::from_utf8(&get(&url).await.body).unwrap();
    }
    assert_eq!(seq, "aabacaa", "the new strategy, from its first pick");

    let mark = gw.mark();
    let broken = dir.join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x0d\0\x01\0garbage").unwrap();
    write(broken.to_str().unwrap(), &[5, 1, 1]);
    let line = gw
        .wait_for_log_since(mark, "reload refused", Duration::from_secs(10))
        .await;
    assert!(line.contains("broken.wasm"), "{line}");
    let mut seq = String::new();
    for _ in 0..7 {
        seq += std::str::from_utf8(&get(&url).await.body).unwrap();
    }
    assert_eq!(seq, "aabacaa", "the running strategy keeps serving");
}
