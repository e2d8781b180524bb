//! Failing upstreams, through the gateway to real clients: active health checks take a
//! stopped endpoint out of rotation and bring it back, retries hide failures from idempotent
//! requests (and only those), per-try timeouts, outlier ejection, the retry budget in a full
//! outage, and circuit-breaker overflow. Every endpoint is a real server on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use rustygate_tests::TestGateway;
use rustygate_tests::client::{get, http1, send};
use rustygate_tests::upstream::{Body, Upstream, full, pattern, sha256_hex, text};

/// An upstream that names itself in `x-upstream` and answers `/health` with 200.
fn named(name: &'static str) -> Upstream {
    Upstream::start(move |_req| async move {
        let mut r: Response<Body> = text(StatusCode::OK, name);
        r.headers_mut().insert("x-upstream", name.parse().unwrap());
        r
    })
}

/// An upstream that answers every request with `status` after `delay`.
fn answering(status: StatusCode, delay: Duration) -> Upstream {
    Upstream::start(move |_req| async move {
        tokio::time::sleep(delay).await;
        text(status, "upstream says so")
    })
}

/// Gateway with one route `/` to cluster `up` (`cluster_yaml` is the rest of the cluster,
/// indented four spaces) and `route_yaml` added to the route (four spaces).
async fn gateway(endpoints: &[&Upstream], cluster_yaml: &str, route_yaml: &str) -> TestGateway {
    let eps: String = endpoints
        .iter()
        .map(|u| format!("      - url: http://{}\n", u.addr))
        .collect();
    TestGateway::start(&format!(
        "workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
logging: {{ access_log: false }}
clusters:
  - name: up
    endpoints:
{eps}{cluster_yaml}
routes:
  - name: api
    cluster: up
{route_yaml}
"
    ))
    .await
}

async fn metrics(gw: &TestGateway) -> String {
    String::from_utf8(
        get(&format!("http://{}/metrics", gw.admin))
            .await
            .body
            .to_vec(),
    )
    .unwrap()
}

/// The value of the metric line starting with `series` (name and labels), if present.
async fn metric(gw: &TestGateway, series: &str) -> Option<f64> {
    metrics(gw)
        .await
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every series of a metric (`prefix` is its name and `{`).
async fn total(gw: &TestGateway, prefix: &str) -> f64 {
    metrics(gw)
        .await
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_metric(gw: &TestGateway, series: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let v = metric(gw, series).await;
        if v == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {v:?}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Clients sending GETs until stopped; returns what went wrong.
fn steady_load(
    url: String,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(usize, Vec<String>)>> {
    (0..clients)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let client = http1();
                let (mut ok, mut bad) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let seen = send(
                        &client,
                        Request::get(&url).body(Full::<Bytes>::default()).unwrap(),
                    )
                    .await;
                    if seen.status == StatusCode::OK {
                        ok += 1;
                    } else {
                        bad.push(format!(
                            "{} {}",
                            seen.status,
                            String::from_utf8_lossy(&seen.body)
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (ok, bad)
            })
        })
        .collect()
}

#[tokio::test]
async fn a_stopped_endpoint_leaves_rotation_and_rejoins_without_client_errors() {
    let a = named("a");
    let mut b = named("b");
    let gw = gateway(
        &[&a, &b],
        "    health_check:
      path: /health
      interval: 100ms
      timeout: 200ms
      jitter: 20ms
      healthy_threshold: 2
      unhealthy_threshold: 2
    # Four clients may all be retrying at once while b is going down.
    circuit_breaker: { max_retries: 10, retry_budget_min_concurrency: 10 }",
        "    retry: { retry_on: [connect-failure, reset, gateway-error], max_retries: 2 }",
    )
    .await;
    let b_series = format!(
        "rustygate_endpoint_healthy{{cluster=\"up\",endpoint=\"{}\"}}",
        b.addr
    );
    wait_metric(&gw, &b_series, 1.0, Duration::from_secs(3)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let clients = steady_load(gw.url("/x"), 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.requests() > 0, "b took traffic before it stopped");

    b.stop();
    // Two failed checks 100ms apart: out of rotation well within a second.
    wait_metric(&gw, &b_series, 0.0, Duration::from_secs(2)).await;
    // From now on nothing is sent to b, so nothing needs retrying.
    let retries = metric(&gw, "rustygate_upstream_retries_total{cluster=\"up\"}")
        .await
        .unwrap_or(0.0);
    let failures = total(&gw, "rustygate_upstream_failures_total{").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        metric(&gw, "rustygate_upstream_retries_total{cluster=\"up\"}")
            .await
            .unwrap_or(0.0),
        retries,
        "requests still went to the unhealthy endpoint"
    );
    assert_eq!(
        total(&gw, "rustygate_upstream_failures_total{").await,
        failures
    );

    let before = b.requests();
    b.restart();
    wait_metric(&gw, &b_series, 1.0, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        b.requests() > before + 10,
        "b did not rejoin: {} requests since restart",
        b.requests() - before
    );

    stop.store(true, Ordering::Relaxed);
    let mut ok = 0;
    for c in clients {
        let (n, bad) = c.await.unwrap();
        assert!(
            bad.is_empty(),
            "clients saw errors: {bad:?}\n{}",
            metrics(&gw).await
        );
        ok += n;
    }
    assert!(ok > 100, "only {ok} requests completed");
}

#[tokio::test]
async fn an_initially_unhealthy_endpoint_waits_for_its_tcp_checks() {
    let a = named("a");
    let b = named("b");
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
logging: {{ access_log: false }}
clusters:
  - name: up
    endpoints:
      - url: http://{}
      - url: http://{}
        initial: unhealthy
    health_check: {{ type: tcp, interval: 300ms, jitter: 1ms, healthy_threshold: 2 }}
routes: [{{ cluster: up }}]
",
        a.addr, b.addr
    ))
    .await;
    for _ in 0..6 {
        assert_eq!(get(&gw.url("/")).await.header("x-upstream"), Some("a"));
    }
    // Two passing checks, 300ms apart, then it takes its share.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut seen_b = false;
    for _ in 0..6 {
        seen_b |= get(&gw.url("/")).await.header("x-upstream") == Some("b");
    }
    assert!(seen_b, "b never joined");
}

#[tokio::test]
async fn a_slow_endpoint_times_out_per_try_and_the_retry_on_another_succeeds() {
    let slow = answering(StatusCode::OK, Duration::from_secs(3));
    let fast = named("fast");
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
logging: {{ access_log: false }}
clusters:
  - name: mixed
    endpoints: [{{ url: http://{slow} }}, {{ url: http://{fast} }}]
  - name: slow-only
    endpoints: [{{ url: http://{slow} }}]
routes:
  - name: no-retry
    match: {{ path: {{ prefix: /once }} }}
    cluster: slow-only
    timeout: 10s
    retry: {{ max_retries: 0, per_try_timeout: 300ms }}
  - name: retry
    cluster: mixed
    timeout: 10s
    retry: {{ retry_on: [reset], max_retries: 1, per_try_timeout: 300ms }}
",
        slow = slow.addr,
        fast = fast.addr
    ))
    .await;

    // Alone, the slow endpoint gives a 504 at the per-try timeout, not the route's 10s.
    let started = Instant::now();
    let seen = get(&gw.url("/once")).await;
    let took = started.elapsed();
    assert_eq!(seen.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(seen.json()["error"], "timeout");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );

    // With a retry, every request succeeds; those that tried the slow endpoint first took
    // one per-try timeout longer.
    for _ in 0..4 {
        let started = Instant::now();
        let seen = get(&gw.url("/x")).await;
        assert_eq!(seen.status, StatusCode::OK);
        assert_eq!(seen.header("x-upstream"), Some("fast"));
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
    let retries = metric(&gw, "rustygate_upstream_retries_total{cluster=\"mixed\"}").await;
    assert!(retries >= Some(1.0), "no retry counted: {retries:?}");
}

#[tokio::test]
async fn the_route_timeout_cuts_the_last_try_short() {
    let slow = answering(StatusCode::OK, Duration::from_secs(5));
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
logging: {{ access_log: false }}
clusters:
  - name: slow
    endpoints: [{{ url: http://{slow} }}]
routes:
  - name: tries
    cluster: slow
    timeout: 700ms
    retry: {{ retry_on: [reset], max_retries: 3, per_try_timeout: 500ms, backoff_base: 1ms }}
",
        slow = slow.addr
    ))
    .await;
    // The first try ends at 500 ms; the second would end at 1 s but the route's deadline
    // (700 ms after the request started) comes first, and there is no time for a third.
    let started = Instant::now();
    let seen = get(&gw.url("/")).await;
    let took = started.elapsed();
    assert_eq!(seen.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(950),
        "{took:?}"
    );
    let retries = metric(&gw, "rustygate_upstream_retries_total{cluster=\"slow\"}").await;
    assert_eq!(retries, Some(1.0));
}

#[tokio::test]
async fn an_endpoint_answering_503_is_ejected() {
    let failing = answering(StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO);
    let good = named("good");
    let gw = gateway(
        &[&failing, &good],
        "    outlier_detection:
      consecutive_5xx: 3
      base_ejection_time: 30s
      max_ejection_percent: 50",
        "",
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(get(&gw.url("/x")).await.status.as_u16());
    }
    // The default policy does not retry a 503: the first three reach the client, then the
    // endpoint is out and every request goes to the good one.
    assert_eq!(failing.requests(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 3);
    assert!(
        statuses[statuses.iter().rposition(|s| *s == 503).unwrap() + 1..]
            .iter()
            .all(|s| *s == 200)
    );
    assert_eq!(
        metric(&gw, "rustygate_upstream_ejections_total{cluster=\"up\"}").await,
        Some(1.0)
    );
    let series = format!(
        "rustygate_endpoint_healthy{{cluster=\"up\",endpoint=\"{}\"}}",
        failing.addr
    );
    wait_metric(&gw, &series, 0.0, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn the_retry_budget_caps_retries_in_a_full_outage() {
    // Every endpoint fails, slowly: retries would pile on top of the load.
    let a = answering(StatusCode::SERVICE_UNAVAILABLE, Duration::from_millis(400));
    let b = answering(StatusCode::SERVICE_UNAVAILABLE, Duration::from_millis(400));
    let gw = gateway(
        &[&a, &b],
        "    circuit_breaker: { retry_budget_percent: 0, retry_budget_min_concurrency: 2 }",
        "    retry: { retry_on: [5xx], max_retries: 3, backoff_base: 1ms, backoff_max: 1ms }",
    )
    .await;
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let url = gw.url("/x");
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let retries = metric(&gw, "rustygate_upstream_retries_total{cluster=\"up\"}")
        .await
        .unwrap_or(0.0);
    let denied = metric(
        &gw,
        "rustygate_circuit_open_total{cluster=\"up\",limit=\"retries\"}",
    )
    .await
    .unwrap_or(0.0);
    // Without a budget: 20 × 3 = 60 retries. With two in flight at a time, each lasting
    // 400ms, at most a handful fit while the 20 first attempts fail together.
    assert!(retries <= 8.0, "{retries} retries went out");
    assert!(denied >= 12.0, "only {denied} retries were refused");
    assert!(a.requests() + b.requests() <= 28);
}

#[tokio::test]
async fn circuit_breaker_overflow_is_a_counted_503() {
    let slow = answering(StatusCode::OK, Duration::from_millis(500));
    let gw = gateway(&[&slow], "    circuit_breaker: { max_requests: 2 }", "").await;
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let url = gw.url("/x");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut ok = 0;
    let mut overflow = 0;
    for r in requests {
        let seen = r.await.unwrap();
        match seen.status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(seen.json()["error"], "upstream_overflow");
                assert_eq!(seen.header("content-type"), Some("application/json"));
                overflow += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, overflow), (2, 4));
    assert_eq!(
        metric(
            &gw,
            "rustygate_circuit_open_total{cluster=\"up\",limit=\"requests\"}"
        )
        .await,
        Some(4.0)
    );
    // The slots are released with the responses: the next request goes through.
    assert_eq!(get(&gw.url("/x")).await.status, StatusCode::OK);

    // One connection at most: concurrent requests that would need a second one overflow.
    let gw = gateway(&[&slow], "    circuit_breaker: { max_connections: 1 }", "").await;
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let url = gw.url("/x");
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap().as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 503, 503]);
    assert_eq!(
        metric(
            &gw,
            "rustygate_circuit_open_total{cluster=\"up\",limit=\"connections\"}"
        )
        .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn post_is_not_retried_unless_the_route_says_so() {
    let failing = answering(StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO);
    let gw = gateway(
        &[&failing],
        "",
        "    retry: { retry_on: [5xx], max_retries: 2, backoff_base: 1ms, backoff_max: 1ms }",
    )
    .await;
    let client = http1();
    let get_seen = send(
        &client,
        Request::get(gw.url("/x")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(get_seen.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failing.requests(), 3, "a GET is tried three times");
    let post = send(
        &client,
        Request::post(gw.url("/x")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(post.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failing.requests(), 4, "a POST is sent once");
    // A GET with a (small) body is retried like one without: the body is kept for it.
    let with_body = send(
        &client,
        Request::get(gw.url("/x"))
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap(),
    )
    .await;
    assert_eq!(with_body.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failing.requests(), 7);

    let opted_in = gateway(
        &[&failing],
        "",
        "    retry: { retry_on: [5xx], max_retries: 1, retry_non_idempotent: true, backoff_base: 1ms, backoff_max: 1ms }",
    )
    .await;
    let post = send(
        &client,
        Request::post(opted_in.url("/x"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        failing.requests(),
        9,
        "retry_non_idempotent: the POST is tried twice"
    );
}

/// A pooled upstream connection is closed once it has been idle for the cluster's
/// `pool_idle_timeout` (as Envoy's upstream idle timeout does), over HTTP/1.1 and HTTP/2:
/// it does not linger until a later request finds it expired. Until then it is reused.
#[tokio::test]
async fn idle_pooled_connections_close_after_the_idle_timeout() {
    for protocol in ["http1", "http2"] {
        let up = named("a");
        let cluster = format!("    protocol: {protocol}\n    pool_idle_timeout: 400ms");
        let gw = gateway(&[&up], &cluster, "").await;
        let client = http1();
        for _ in 0..5 {
            let seen = send(
                &client,
                Request::get(gw.url("/"))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
            assert_eq!(seen.status, StatusCode::OK, "{protocol}");
        }
        let last = Instant::now();
        // One client connection is served by one worker, which reuses its one upstream
        // connection for every request.
        assert_eq!(up.open_connections(), 1, "{protocol}");
        while up.open_connections() > 0 {
            assert!(
                last.elapsed() < Duration::from_secs(5),
                "{protocol}: the idle upstream connection was never closed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            last.elapsed() >= Duration::from_millis(300),
            "{protocol}: closed after {:?}, before the idle timeout",
            last.elapsed()
        );
        // The next request gets a new connection.
        assert_eq!(get(&gw.url("/")).await.status, StatusCode::OK, "{protocol}");
        assert_eq!(up.open_connections(), 1, "{protocol}");
    }
}

/// A request body up to `retry.max_body_bytes` is kept, so a retry after the upstream saw the
/// first attempt sends the same bytes again (as Envoy buffers bodies for retries); a larger
/// one streams and is sent once.
#[tokio::test]
async fn a_small_body_is_sent_again_on_retry_and_a_large_one_once() {
    let seen = Arc::new(AtomicUsize::new(0));
    let up = {
        let seen = seen.clone();
        // Fails the first attempt after reading the whole body; answers later ones with the
        // SHA-256 of the body it got.
        Upstream::start(move |req| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let status = if n == 0 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                let mut r = Response::new(full(sha256_hex(&body)));
                *r.status_mut() = status;
                r
            }
        })
    };
    let gw = gateway(
        &[&up],
        "",
        "    retry: { retry_on: [5xx], max_retries: 1, backoff_base: 1ms, backoff_max: 1ms, max_body_bytes: 8192 }",
    )
    .await;
    let client = http1();
    let put = |len: usize| {
        Request::put(gw.url("/x"))
            .body(Full::new(Bytes::from(pattern(7, len))))
            .unwrap()
    };

    let small = send(&client, put(8192)).await;
    assert_eq!(small.status, StatusCode::OK, "{:?}", small.body);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert_eq!(
        String::from_utf8_lossy(&small.body),
        sha256_hex(&pattern(7, 8192)),
        "the retry carried the whole body"
    );

    seen.store(0, Ordering::SeqCst);
    let large = send(&client, put(8193)).await;
    assert_eq!(large.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.load(Ordering::SeqCst), 1, "a larger body is sent once");
}

/// An HTTP/2 connection is idle only while no stream is open on it (as in Envoy): a response
/// that takes longer than `pool_idle_timeout` does not age it out of the pool, and the next
/// request reuses it.
#[tokio::test]
async fn a_long_http2_response_does_not_make_its_connection_idle() {
    let up = Upstream::start(|req| async move {
        if req.uri().path() == "/slow" {
            // Longer than the idle timeout plus the reaper's longest sleep (1 s).
            tokio::time::sleep(Duration::from_millis(1600)).await;
        }
        text(StatusCode::OK, "done")
    });
    let gw = gateway(
        &[&up],
        "    protocol: http2\n    pool_idle_timeout: 300ms",
        "",
    )
    .await;
    let client = http1();
    for path in ["/slow", "/next"] {
        let seen = send(
            &client,
            Request::get(gw.url(path)).body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(seen.status, StatusCode::OK, "{path}");
    }
    assert_eq!(
        up.connections_accepted(),
        1,
        "the request after the long one opened a new connection"
    );
}
