//! Hot reload through the real binary: `.wasm` and configuration swapped under load by file
//! watching, SIGHUP and `POST /admin/reload`; failed reloads keep the old version serving; the
//! token-protected admin API.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use rustygate_tests::client::get;
use rustygate_tests::process::free_port;
use rustygate_tests::reload::{Rig, TOKEN, config_text, finish, load, replace, versions};
use rustygate_tests::upstream::{Upstream, sha256_hex};
use rustygate_tests::{ABI_PROBE_WASM, STAMP_V1_WASM, STAMP_V2_WASM, balancers, component_filters};

#[tokio::test]
async fn swapping_the_wasm_under_load_fails_no_request() {
    let rig = Rig::start("swap").await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(rig.url("/load"), 8, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // v1 → v2 → v1 → ... by file replacement: the watcher picks each one up.
    let mut generation = 1;
    for i in 0..6 {
        let next = if i % 2 == 0 {
            STAMP_V2_WASM
        } else {
            STAMP_V1_WASM
        };
        replace(&rig.module(), &std::fs::read(next).unwrap());
        generation += 1;
        rig.wait_generation(generation).await;
        let want = if i % 2 == 0 { "v2" } else { "v1" };
        // Once the reload is done, every new request runs the new module.
        assert!(
            versions(&rig, 20).await.iter().all(|v| v == want),
            "after swap {i} not every response came from {want}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let tally = finish(clients).await;
    assert!(
        tally.bad.is_empty(),
        "failed or unstamped responses: {:?}",
        &tally.bad[..tally.bad.len().min(10)]
    );
    assert!(
        tally.v1 > 0 && tally.v2 > 0,
        "load saw v1 {} and v2 {}",
        tally.v1,
        tally.v2
    );

    let metrics = rig.metrics().await;
    assert!(
        metrics.contains("rustygate_reload_total{result=\"success\"} 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rustygate_config_generation 7"),
        "{metrics}"
    );
    let v1_sha = sha256_hex(&std::fs::read(STAMP_V1_WASM).unwrap());
    assert!(
        metrics.contains(&format!(
            "rustygate_filter_module_info{{filter=\"stamp\",sha256=\"{v1_sha}\"}} 1"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_module_it_started_with() {
    let rig = Rig::start_with("inflight", Upstream::slow(Duration::from_millis(1500))).await;
    let url = rig.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    replace(&rig.module(), &std::fs::read(STAMP_V2_WASM).unwrap());
    rig.wait_generation(2).await;
    // The old generation's VMs live on in the request that holds them.
    let during = rig
        .admin(Method::GET, "/admin/filters", Some(TOKEN))
        .await
        .json();
    let seen = in_flight.await.unwrap();
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(
        seen.header("x-filter-version"),
        Some("v1"),
        "the request that started on v1 ended on v1"
    );
    assert_eq!(
        get(&rig.url("/slow")).await.header("x-filter-version"),
        Some("v2")
    );
    // ... and are dropped with it: only the new module's VMs remain.
    let v1_sha = sha256_hex(&std::fs::read(STAMP_V1_WASM).unwrap());
    let draining = &during["draining"][0];
    assert_eq!(draining["sha256"], v1_sha, "{during}");
    assert_eq!(
        draining["module_vms"], 1,
        "only the worker serving the request keeps v1: {during}"
    );
    rig.assert_only_current_vms().await;
}

#[tokio::test]
async fn a_corrupt_wasm_is_refused_and_the_old_one_keeps_serving() {
    let mut rig = Rig::start("corrupt").await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(rig.url("/load"), 4, stop.clone());

    let mut corrupt = std::fs::read(STAMP_V2_WASM).unwrap();
    corrupt.truncate(corrupt.len() / 2);
    replace(&rig.module(), &corrupt);
    let line = rig
        .gw
        .wait_for_log("reload refused", Duration::from_secs(10))
        .await;
    assert!(
        line.contains("stamp.wasm"),
        "the error names the file: {line}"
    );
    assert!(line.contains("not a valid WebAssembly module"), "{line}");
    assert_eq!(rig.generation().await, 1);
    assert!(versions(&rig, 20).await.iter().all(|v| v == "v1"));
    assert!(
        rig.metrics()
            .await
            .contains("rustygate_reload_total{result=\"failure\"} 1")
    );

    // A module that compiles but is no proxy-wasm filter is refused the same way.
    replace(&rig.module(), b"\0asm\x01\0\0\0");
    rig.gw
        .wait_for_log("not a proxy-wasm module", Duration::from_secs(10))
        .await;
    assert_eq!(rig.generation().await, 1);

    // A module that loads but refuses its configuration in `proxy_on_configure` is refused
    // too, with the filter's own reason.
    let text = std::fs::read_to_string(rig.dir.join("config.yaml")).unwrap();
    let refusing = text
        .replace("module: stamp.wasm", &format!("module: {ABI_PROBE_WASM}"))
        .replace(
            "configuration: { password: hunter2, header: x-filter-version }",
            "configuration: '{not json'",
        );
    let mark = rig.gw.mark();
    replace(&rig.dir.join("config.yaml"), refusing.as_bytes());
    let line = rig
        .gw
        .wait_for_log_since(mark, "reload refused", Duration::from_secs(10))
        .await;
    assert!(line.contains("invalid configuration"), "{line}");
    assert_eq!(rig.generation().await, 1);
    assert!(versions(&rig, 5).await.iter().all(|v| v == "v1"));
    replace(&rig.dir.join("config.yaml"), text.as_bytes());

    // The next good file is picked up.
    replace(&rig.module(), &std::fs::read(STAMP_V2_WASM).unwrap());
    rig.wait_generation(2).await;
    assert!(versions(&rig, 20).await.iter().all(|v| v == "v2"));

    stop.store(true, Ordering::Relaxed);
    let tally = finish(clients).await;
    assert!(
        tally.bad.is_empty(),
        "{:?}",
        &tally.bad[..tally.bad.len().min(10)]
    );
}

#[tokio::test]
async fn config_edits_add_routes_and_invalid_yaml_is_refused_with_its_line() {
    let mut rig = Rig::start("config").await;
    let upstream = rig.upstream.addr;
    let config = rig.dir.join("config.yaml");
    assert_eq!(
        get(&rig.url("/new/x")).await.header("x-filter-version"),
        Some("v1")
    );

    // A new route in front, without filters: it answers without a restart.
    let extra = "  - name: new
    match: { path: { prefix: /new } }
    cluster: up
";
    replace(
        &config,
        config_text(rig.port, rig.admin, upstream, extra).as_bytes(),
    );
    rig.wait_generation(2).await;
    let seen = get(&rig.url("/new/x")).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(
        seen.header("x-filter-version"),
        None,
        "the new route has no filters"
    );

    // Broken YAML: refused with file, line and column; the running config stays.
    let broken = config_text(rig.port, rig.admin, upstream, extra).replace(
        "    cluster: up\n    filters: [stamp]",
        "    cluster: up\n    filters: [stamp]\n    timeout: soon",
    );
    replace(&config, broken.as_bytes());
    let line = rig
        .gw
        .wait_for_log("reload refused", Duration::from_secs(10))
        .await;
    let lineno = broken
        .lines()
        .position(|l| l.contains("timeout: soon"))
        .unwrap()
        + 1;
    assert!(
        line.contains(&format!("config.yaml:{lineno}:")) && line.contains("routes[1].timeout"),
        "the error names file:line and the field: {line}"
    );
    assert_eq!(rig.generation().await, 2);
    assert_eq!(get(&rig.url("/new/x")).await.status, StatusCode::OK);

    // The admin API reports the same refusal, with the generation still serving.
    let seen = rig.admin(Method::POST, "/admin/reload", Some(TOKEN)).await;
    assert_eq!(seen.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = seen.json();
    assert_eq!(body["result"], "failure");
    assert_eq!(body["generation"], 2);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("config.yaml:{lineno}:")),
        "{body}"
    );

    // Changing what only a restart can change is refused, naming it.
    let moved = config_text(free_port(), rig.admin, upstream, extra);
    replace(&config, moved.as_bytes());
    let line = rig
        .gw
        .wait_for_log("take effect only on restart", Duration::from_secs(10))
        .await;
    assert!(line.contains("listeners"), "{line}");
    assert_eq!(rig.generation().await, 2);
}

#[tokio::test]
async fn sighup_and_the_admin_api_reload_without_a_file_event() {
    let mut rig = Rig::start("signal").await;
    // SIGHUP reloads even though nothing changed on disk.
    rig.gw.signal("HUP");
    rig.wait_generation(2).await;
    let line = rig
        .gw
        .wait_for_log("configuration reloaded", Duration::from_secs(5))
        .await;
    assert!(line.contains("SIGHUP"), "{line}");

    let seen = rig.admin(Method::POST, "/admin/reload", Some(TOKEN)).await;
    assert_eq!(seen.status, StatusCode::OK, "{:?}", seen.body);
    assert_eq!(seen.json()["result"], "success");
    assert_eq!(seen.json()["generation"], 3);
    assert_eq!(seen.json()["changed_filters"], serde_json::json!([]));
    assert!(versions(&rig, 5).await.iter().all(|v| v == "v1"));
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_reports_the_running_gateway() {
    let rig = Rig::start("admin").await;
    for path in ["/admin/config", "/admin/filters", "/admin/clusters"] {
        let none = rig.admin(Method::GET, path, None).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            none.header("www-authenticate")
                .unwrap()
                .starts_with("Bearer")
        );
        let wrong = rig.admin(Method::GET, path, Some("test-admin-tokeN")).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(
        rig.admin(Method::POST, "/admin/reload", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        rig.generation().await,
        1,
        "an unauthorised reload did nothing"
    );
    // Probes and scrapers need no token.
    assert_eq!(
        rig.admin(Method::GET, "/metrics", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        rig.admin(Method::GET, "/readyz", None).await.status,
        StatusCode::OK
    );

    let config = rig
        .admin(Method::GET, "/admin/config", Some(TOKEN))
        .await
        .json();
    let text = config.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains(TOKEN),
        "secrets shown: {text}"
    );
    assert_eq!(
        config["config"]["filters"][0]["configuration"]["header"],
        "x-filter-version"
    );
    assert_eq!(config["generation"], 1);

    let filters = rig
        .admin(Method::GET, "/admin/filters", Some(TOKEN))
        .await
        .json();
    let stamp = &filters["filters"][0];
    assert_eq!(stamp["name"], "stamp");
    assert_eq!(
        stamp["sha256"],
        sha256_hex(&std::fs::read(STAMP_V1_WASM).unwrap())
    );
    assert_eq!(stamp["abi"], "0.2.1");
    assert_eq!(stamp["module_vms"], 2, "one VM per worker: {filters}");
    assert_eq!(stamp["routes"], serde_json::json!(["api"]));

    let clusters = rig
        .admin(Method::GET, "/admin/clusters", Some(TOKEN))
        .await
        .json();
    assert_eq!(clusters["clusters"][0]["name"], "up");
    assert_eq!(
        clusters["clusters"][0]["endpoints"][0]["url"],
        format!("http://{}", rig.upstream.addr)
    );
    assert_eq!(clusters["clusters"][0]["endpoints"][0]["health"], "healthy");
}

/// Each worker records durations into its own shard of a series, taken per configuration
/// generation: across reloads the histograms keep counting (Prometheus counters never go
/// back) and each series is still exposed once.
#[tokio::test]
async fn duration_histograms_keep_counting_across_reloads() {
    let rig = Rig::start("histograms").await;
    let mut sent = 0;
    for generation in 2..=4 {
        sent += versions(&rig, 5).await.len();
        rig.gw.signal("HUP");
        rig.wait_generation(generation).await;
    }
    sent += versions(&rig, 5).await.len();
    let text = rig.metrics().await;
    for series in [
        r#"rustygate_request_duration_seconds_count{route="api"}"#,
        r#"rustygate_upstream_duration_seconds_count{cluster="up"}"#,
        r#"rustygate_filter_duration_seconds_count{filter="stamp",phase="request_headers"}"#,
    ] {
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(series)).collect();
        assert_eq!(lines, [format!("{series} {sent}")], "{text}");
    }
}

/// Component filters and balancer components are part of the running gateway's picture like
/// proxy-wasm modules: `/admin/filters` lists them with their module and hash, a reload names
/// a swapped component filter among the changed filters, and `rustygate_filter_module_info`
/// follows it.
#[tokio::test]
async fn the_admin_api_reports_component_filters_and_balancers() {
    let mut rig = Rig::start("components").await;
    std::fs::copy(component_filters::HEADERS, rig.dir.join("comp.wasm")).unwrap();
    std::fs::copy(balancers::ROUND_ROBIN, rig.dir.join("rr.wasm")).unwrap();
    let config = |comp_configuration: &str| {
        config_text(rig.port, rig.admin, rig.upstream.addr, "")
            .replace(
                "filters:\n",
                &format!("balancers:\n  - name: rr\n    module: rr.wasm\nfilters:\n  - name: comp\n    module: comp.wasm\n    configuration: {comp_configuration}\n"),
            )
            .replace("    filters: [stamp]", "    filters: [stamp, comp]")
            .replace("  - name: up\n", "  - name: up\n    balancer: rr\n")
    };
    let headers = r#"{ response: { add: { x-comp: "yes" } } }"#;
    // Through the file watcher, as an operator's edit would go.
    let mark = rig.gw.mark();
    replace(&rig.dir.join("config.yaml"), config(headers).as_bytes());
    rig.wait_generation(2).await;
    let reloaded = rig
        .gw
        .wait_for_log_since(mark, "configuration reloaded", Duration::from_secs(10))
        .await;
    assert!(reloaded.contains(r#"[\"comp\"]"#), "{reloaded}");
    let served = get(&rig.url("/x")).await;
    assert_eq!(served.header("x-comp"), Some("yes"));

    let view = rig
        .admin(Method::GET, "/admin/filters", Some(TOKEN))
        .await
        .json();
    let comp = view["filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "comp")
        .unwrap_or_else(|| panic!("no component filter in {view}"))
        .clone();
    let comp_sha = sha256_hex(&std::fs::read(component_filters::HEADERS).unwrap());
    assert_eq!(comp["abi"], "component", "{comp}");
    assert_eq!(comp["sha256"], comp_sha.as_str(), "{comp}");
    assert!(
        comp["module"].as_str().unwrap().ends_with("comp.wasm"),
        "{comp}"
    );
    assert_eq!(comp["routes"], serde_json::json!(["api"]), "{comp}");
    let rr = &view["balancers"][0];
    assert_eq!(rr["name"], "rr", "{view}");
    assert_eq!(rr["clusters"], serde_json::json!(["up"]), "{view}");
    assert_eq!(
        rr["sha256"],
        sha256_hex(&std::fs::read(balancers::ROUND_ROBIN).unwrap()).as_str(),
        "{view}"
    );

    // Another component in its place: named as changed, and the info gauge moves to it.
    let mark = rig.gw.mark();
    replace(
        &rig.dir.join("comp.wasm"),
        &std::fs::read(component_filters::PROBE).unwrap(),
    );
    replace(
        &rig.dir.join("config.yaml"),
        config("{ tag: swapped }").as_bytes(),
    );
    rig.wait_generation(3).await;
    let reloaded = rig
        .gw
        .wait_for_log_since(mark, "configuration reloaded", Duration::from_secs(10))
        .await;
    assert!(reloaded.contains(r#"[\"comp\"]"#), "{reloaded}");
    let probe_sha = sha256_hex(&std::fs::read(component_filters::PROBE).unwrap());
    let metrics = rig.metrics().await;
    for (sha, value) in [(&comp_sha, 0), (&probe_sha, 1)] {
        let line =
            format!("rustygate_filter_module_info{{filter=\"comp\",sha256=\"{sha}\"}} {value}");
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in\n{metrics}"
        );
    }
}
