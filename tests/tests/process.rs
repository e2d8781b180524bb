//! The real `rustygate` binary: CLI behaviour, graceful shutdown on signals, JSON logs, and
//! flat memory while GiB bodies stream through.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustygate_tests::client::{get, http1, raw};
use rustygate_tests::process::{GatewayProcess, free_port, gateway_bin, validate};
use rustygate_tests::scratch::Scratch;
use rustygate_tests::upstream::Upstream;

fn config(port: u16, admin: u16, upstream: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "listeners:
  - name: main
    address: 127.0.0.1:{port}
admin:
  address: 127.0.0.1:{admin}
shutdown:
  grace_period: 10s
{extra}clusters:
  - name: up
    endpoints:
      - url: http://{upstream}
routes:
  - name: api
    match: {{ path: {{ prefix: / }} }}
    cluster: up
"
    )
}

async fn wait_ready(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gateway did not listen on {port}");
}

#[tokio::test]
async fn sigterm_drains_the_in_flight_request_and_exits_zero() {
    let up = Upstream::slow(Duration::from_millis(1500));
    let (port, admin) = (free_port(), free_port());
    let mut gw = GatewayProcess::start(&config(port, admin, up.addr, "")).await;
    wait_ready(port).await;
    let url = format!("http://127.0.0.1:{port}/slow");
    let slow = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    gw.wait_for_log("shutting down gracefully", Duration::from_secs(5))
        .await;
    // New connections are refused while the old request finishes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "still accepting"
    );
    let seen = slow.await.unwrap();
    assert_eq!(seen.status, 200);
    assert_eq!(&seen.body[..], b"slow");
    let done = gw
        .wait_for_log("shutdown complete", Duration::from_secs(5))
        .await;
    let done: serde_json::Value = serde_json::from_str(&done).unwrap();
    assert_eq!(done["drained"], 1);
    assert_eq!(done["abandoned"], 0);
    let status = tokio::time::timeout(Duration::from_secs(5), gw.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A busy admin port stops start-up before any traffic listener accepts a connection that
/// the exiting process would then drop.
#[test]
fn a_busy_admin_port_fails_start_up_before_traffic_is_accepted() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap().port();
    let port = free_port();
    let dir = Scratch::new("busy-admin");
    let path = dir.join("config.yaml");
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    std::fs::write(&path, config(port, admin, up, "")).unwrap();
    let out = Command::new(gateway_bin())
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains(&format!("admin: cannot bind 127.0.0.1:{admin}")),
        "stderr: {stderr}"
    );
    assert!(!stdout.contains("gateway started"), "stdout: {stdout}");
    drop(taken);
}

#[tokio::test]
async fn sigint_stops_an_idle_gateway_promptly() {
    let up = Upstream::echo();
    let (port, admin) = (free_port(), free_port());
    let mut gw = GatewayProcess::start(&config(port, admin, up.addr, "")).await;
    wait_ready(port).await;
    gw.signal("INT");
    let status = tokio::time::timeout(Duration::from_secs(3), gw.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn access_log_is_one_json_object_per_request() {
    let up = Upstream::echo();
    let (port, admin) = (free_port(), free_port());
    let mut gw = GatewayProcess::start(&config(port, admin, up.addr, "")).await;
    wait_ready(port).await;
    let seen = get(&format!("http://127.0.0.1:{port}/logged?a=1")).await;
    let id = seen.header("x-request-id").unwrap().to_owned();
    let line = gw.wait_for_log(&id, Duration::from_secs(5)).await;
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["target"], "access");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/logged?a=1");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["route"], "api");
    assert_eq!(entry["upstream"], up.addr.to_string());
    assert_eq!(entry["bytes_in"], 0);
    assert_eq!(entry["bytes_out"], seen.body.len());
    assert!(entry["latency_ms"].as_f64().unwrap() >= 0.0);
    // Envoy's %RESPONSE_FLAGS% and %RESPONSE_CODE_DETAILS%.
    assert_eq!(entry["response_flags"], "-");
    assert_eq!(entry["code_details"], "via_upstream");
    // The admin listener serves metrics from the same process.
    let metrics = get(&format!("http://127.0.0.1:{admin}/metrics")).await;
    assert!(
        String::from_utf8_lossy(&metrics.body)
            .contains(r#"rustygate_requests_total{route="api",status="200"} 1"#)
    );
    gw.signal("TERM");
    gw.child.wait().await.unwrap();
}

#[tokio::test]
async fn access_log_says_why_a_request_failed_as_envoy_does() {
    let mut up = Upstream::echo();
    let (port, admin) = (free_port(), free_port());
    let mut gw = GatewayProcess::start(&config(port, admin, up.addr, "")).await;
    wait_ready(port).await;
    up.stop();
    let seen = get(&format!("http://127.0.0.1:{port}/gone")).await;
    assert_eq!(seen.status, 502);
    let id = seen.header("x-request-id").unwrap().to_owned();
    // Refused, retried once by the default policy, refused again.
    let line = gw
        .wait_for_log(r#""response_flags":"UF,URX""#, Duration::from_secs(5))
        .await;
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["target"], "access");
    assert_eq!(entry["request_id"], id.as_str());
    assert_eq!(entry["status"], 502);
    assert_eq!(
        entry["code_details"],
        "upstream_reset_before_response_started{connection_failure}"
    );
    gw.signal("TERM");
    gw.child.wait().await.unwrap();
}

/// The access line of the request whose response carried `id`: the first line with the id
/// may be a warning about the same request.
async fn access_line(gw: &mut GatewayProcess, id: &str) -> serde_json::Value {
    let mut mark = 0;
    loop {
        let line = gw
            .wait_for_log_since(mark, id, Duration::from_secs(5))
            .await;
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        if entry["target"] == "access" {
            return entry;
        }
        mark = gw.log.iter().position(|l| *l == line).unwrap() + 1;
    }
}

/// A gateway on `upstream`, serving; `limits` goes into its listener.
async fn gateway_on(upstream: std::net::SocketAddr, limits: &str) -> (GatewayProcess, u16) {
    let (port, admin) = (free_port(), free_port());
    let listener = format!("    address: 127.0.0.1:{port}\n");
    let yaml = config(port, admin, upstream, "").replace(
        &listener,
        &format!("{listener}    limits: {{ {limits} }}\n"),
    );
    let gw = GatewayProcess::start(&yaml).await;
    wait_ready(port).await;
    (gw, port)
}

/// Long enough for any answer a test here waits for; the gateway closes the connection after.
const WAIT: Duration = Duration::from_secs(3);

fn gw_addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// A raw HTTP/1.1 `GET path` with request id `id`, on a connection of its own.
async fn raw_get(port: u16, path: &str, id: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nhost: gw\r\nx-request-id: {id}\r\n\r\n");
    client.write_all(head.as_bytes()).await.unwrap();
    client
}

/// Checks that the access log says request `id` got a 200 that ended with `flags` and
/// `details`, then stops the gateway.
async fn ended_as(mut gw: GatewayProcess, id: &str, flags: &str, details: &str) {
    let entry = access_line(&mut gw, id).await;
    assert_eq!(entry["status"], 200, "{id}");
    assert_eq!(entry["response_flags"], flags, "{id}");
    assert_eq!(entry["code_details"], details, "{id}");
    gw.signal("TERM");
    gw.child.wait().await.unwrap();
}

#[tokio::test]
async fn access_log_has_the_408_of_a_request_head_that_never_arrived() {
    let up = Upstream::echo();
    let (mut gw, port) = gateway_on(up.addr, "header_read_timeout: 300ms").await;
    let text = raw(gw_addr(port), b"GET /slow HTTP/1.1\r\nhost: gw\r\n", WAIT).await;
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("a request id")
        .to_owned();
    // As Envoy logs its request_headers_timeout: the head never arrived whole, so nothing of
    // it is known.
    let entry = access_line(&mut gw, &id).await;
    assert_eq!(entry["status"], 408);
    assert_eq!(entry["method"], "-");
    assert_eq!(entry["path"], "-");
    assert_eq!(entry["route"], "none");
    assert_eq!(entry["upstream"], "-");
    // Body bytes, as for every request (Envoy's %BYTES_SENT%).
    let body = text.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(entry["bytes_out"], body.len());
    assert_eq!(entry["code_details"], "request_header_timeout");
    let latency = entry["latency_ms"].as_f64().unwrap();
    assert!((250.0..2000.0).contains(&latency), "{latency}");
    assert_eq!(up.requests(), 0);
    gw.signal("TERM");
    gw.child.wait().await.unwrap();
}

#[tokio::test]
async fn access_log_has_the_400_of_a_request_head_that_could_not_be_parsed() {
    let up = Upstream::echo();
    let (mut gw, port) = gateway_on(up.addr, "").await;
    let bad = b"GET /bad HTTP/1.1\r\nhost: gw\r\nBad Header: x\r\n\r\n";
    let text = raw(gw_addr(port), bad, WAIT).await;
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    let body: serde_json::Value =
        serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    // Envoy's flag and details for a header it cannot parse.
    let line = gw
        .wait_for_log(r#""response_flags":"DPE""#, Duration::from_secs(5))
        .await;
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["target"], "access");
    assert_eq!(entry["status"], 400);
    assert_eq!(entry["method"], "-");
    assert_eq!(entry["route"], "none");
    assert_eq!(entry["code_details"], "http1.invalid_characters");
    assert_eq!(entry["request_id"].as_str().unwrap().len(), 36);
    // The client was told the id the log has.
    assert_eq!(entry["request_id"], body["request_id"]);
    // A head that names both framings is parsed, and its request refused: Envoy's details.
    let smuggle = b"POST /s HTTP/1.1\r\nhost: gw\r\nx-request-id: both-framings\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
    let text = raw(gw_addr(port), smuggle, WAIT).await;
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    let entry = access_line(&mut gw, "both-framings").await;
    assert_eq!(entry["response_flags"], "DPE");
    assert_eq!(
        entry["code_details"],
        "http1.content_length_and_chunked_not_allowed"
    );
    assert_eq!(up.requests(), 0);
    gw.signal("TERM");
    gw.child.wait().await.unwrap();
}

/// A CONNECT has no path: its access line prints the target, as nginx's request line does.
#[tokio::test]
async fn access_log_prints_a_connects_target_as_its_path() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::echo();
    let (port, admin) = (free_port(), free_port());
    let tunnel = "  - name: tunnel\n    match: { methods: [CONNECT] }\n    cluster: up\n    \
                  upgrades: [CONNECT]\n    connect: terminate\n";
    let yaml = config(port, admin, up.addr, "").replace("routes:\n", &format!("routes:\n{tunnel}"));
    let mut gw = GatewayProcess::start(&yaml).await;
    wait_ready(port).await;
    let mut client = tokio::net::TcpStream::connect(gw_addr(port)).await.unwrap();
    let head = "CONNECT db.internal:5432 HTTP/1.1\r\nhost: db.internal:5432\r\n\
                x-request-id: connect-target\r\n\r\n";
    client.write_all(head.as_bytes()).await.unwrap();
    let mut answer = [0u8; 12];
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let entry = access_line(&mut gw, "connect-target").await;
    assert_eq!(entry["method"], "CONNECT");
    assert_eq!(entry["path"], "db.internal:5432");
    assert_eq!(entry["route"], "tunnel");
    drop(client);
    gw.signal("TERM");
    gw.child.wait().await.unwrap();
}

#[tokio::test]
async fn access_log_says_when_the_client_left_or_the_upstream_broke_off() {
    use tokio::io::AsyncReadExt;
    let big = Upstream::download(64 * 1024 * 1024);

    // The client reads the head and some of the body, then closes its connection.
    let (gw, port) = gateway_on(big.addr, "").await;
    let mut client = raw_get(port, "/big", "left-early").await;
    let mut buf = vec![0u8; 64 * 1024];
    let n = client.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(client);
    ended_as(gw, "left-early", "DC", "downstream_remote_disconnect").await;

    // An upstream that promises 1000 bytes, sends 10 and closes.
    let raw_addr = rustygate_tests::upstream::canned(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789",
    )
    .await;
    let (gw, port) = gateway_on(raw_addr, "").await;
    let mut client = raw_get(port, "/short", "broke-off").await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got)).await;
    assert!(got.len() < 1000, "the client never sees the whole body");
    let details = "upstream_reset_after_response_started{connection_termination}";
    ended_as(gw, "broke-off", "UC", details).await;

    // A client that keeps its connection open but reads nothing: given up after the stream
    // idle timeout, which is what the log says rather than that the client left.
    let (gw, port) = gateway_on(big.addr, "stream_idle_timeout: 400ms").await;
    let client = raw_get(port, "/big", "never-read").await;
    ended_as(gw, "never-read", "SI", "stream_idle_timeout").await;
    drop(client);
}

/// An HTTP/2 connection to the gateway on `port`, driven by a task of its own, and a handle
/// on its socket to cut it with (hyper's client would reset its streams on the way out).
async fn h2_connection(
    port: u16,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    std::net::TcpStream,
) {
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let socket = tcp.try_clone().unwrap();
    tcp.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    (send, socket)
}

/// Asks for `/big` with request id `id` and reads the first frame of its body.
async fn first_frame_of(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    id: &str,
) -> hyper::body::Incoming {
    let req = Request::get("http://gw/big")
        .header("x-request-id", id)
        .body(http_body_util::Empty::new())
        .unwrap();
    let mut body = send.send_request(req).await.unwrap().into_body();
    body.frame().await.unwrap().unwrap();
    body
}

#[tokio::test]
async fn access_log_tells_a_reset_http2_stream_from_a_closed_connection() {
    let big = Upstream::download(64 * 1024 * 1024);

    // Dropping the body mid-way resets the stream (RST_STREAM, CANCEL); the connection
    // stays, and serves the next request.
    let (gw, port) = gateway_on(big.addr, "").await;
    let (mut send, socket) = h2_connection(port).await;
    drop(first_frame_of(&mut send, "stream-reset").await);
    drop(first_frame_of(&mut send, "same-connection").await);
    ended_as(gw, "stream-reset", "DR", "http2.remote_reset").await;
    drop(socket);

    // The client's whole connection goes: Envoy's DC, as for HTTP/1.1.
    let (gw, port) = gateway_on(big.addr, "").await;
    let (mut send, socket) = h2_connection(port).await;
    let body = first_frame_of(&mut send, "connection-gone").await;
    socket.shutdown(std::net::Shutdown::Both).unwrap();
    ended_as(gw, "connection-gone", "DC", "downstream_remote_disconnect").await;
    drop((send, body));
}

/// 1 GiB up and 1 GiB down through the binary: the gateway's resident memory must stay flat
/// (bodies are streamed frame by frame, never buffered).
#[tokio::test]
async fn gigabyte_bodies_stream_without_memory_growth() {
    const GIB: u64 = 1024 * 1024 * 1024;
    let up_sink = Upstream::echo();
    let up_source = Upstream::download(GIB);
    let (port, admin, port2, admin2) = (free_port(), free_port(), free_port(), free_port());
    let extra = "logging: { access_log: false }\n";
    let gw = GatewayProcess::start(&config(port, admin, up_sink.addr, extra)).await;
    let gw2 = GatewayProcess::start(&config(port2, admin2, up_source.addr, extra)).await;
    wait_ready(port).await;
    wait_ready(port2).await;
    // Warm up both so that pools and allocator arenas exist before the baseline is taken.
    get(&format!("http://127.0.0.1:{port}/warm")).await;
    let base = gw.rss_kib();
    let base2 = gw2.rss_kib();

    let chunk = Bytes::from(vec![0x5au8; 1024 * 1024]);
    let frames = (0..GIB / chunk.len() as u64)
        .map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone())));
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(
            Request::post(format!("http://127.0.0.1:{port}/upload"))
                .body(StreamBody::new(stream::iter(frames)))
                .unwrap(),
        )
        .await
        .unwrap();
    let echo: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echo["body_len"], GIB);

    let resp = http1()
        .request(
            Request::get(format!("http://127.0.0.1:{port2}/download"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            got += d.len() as u64;
        }
    }
    assert_eq!(got, GIB);

    let (up_growth, down_growth) = (
        gw.peak_rss_kib().saturating_sub(base),
        gw2.peak_rss_kib().saturating_sub(base2),
    );
    println!("peak RSS growth: upload {up_growth} KiB, download {down_growth} KiB");
    assert!(up_growth < 16 * 1024, "upload grew RSS by {up_growth} KiB");
    assert!(
        down_growth < 16 * 1024,
        "download grew RSS by {down_growth} KiB"
    );
}

#[test]
fn validate_accepts_the_default_config_and_rejects_bad_ones_with_location() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ok = validate(root.join("config/default.yaml"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK"));

    let bad = root.join("host/config/tests/golden/bad-unknown-cluster.yaml");
    let out = validate(&bad);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "bad-unknown-cluster.yaml:14:14: routes[2].cluster: unknown cluster \"users\""
        ),
        "{err}"
    );

    let out = validate("/nonexistent.yaml");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.yaml: cannot read config"));
}

#[test]
fn version_and_help() {
    let bin = gateway_bin();
    let v = Command::new(&bin).arg("--version").output().unwrap();
    assert!(v.status.success());
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("rustygate {}", env!("CARGO_PKG_VERSION"))
    );
    let h = Command::new(&bin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&h.stdout);
    for cmd in ["run", "validate", "schema"] {
        assert!(help.contains(cmd), "{help}");
    }
}

#[tokio::test]
async fn run_refuses_a_busy_port_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let up = Upstream::echo();
    let dir = Scratch::new("busy");
    let path = dir.join("c.yaml");
    // SO_REUSEPORT lets two sockets share a port only if both set it; this one does not.
    std::fs::write(&path, config(port, free_port(), up.addr, "")).unwrap();
    let out = Command::new(gateway_bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("listener main: cannot bind 127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn filter_log_lines_carry_the_filter_name_and_request_id() {
    let up = Upstream::echo();
    let (port, admin) = (free_port(), free_port());
    let extra = format!(
        "filters:\n  - name: probe\n    module: {}\n    configuration: {{ name: logged }}\n",
        rustygate_tests::ABI_PROBE_WASM
    );
    let yaml = config(port, admin, up.addr, &extra).replace(
        "    cluster: up\n",
        "    cluster: up\n    filters: [probe]\n",
    );
    let mut gw = GatewayProcess::start(&yaml).await;
    wait_ready(port).await;
    let seen = get(&format!("http://127.0.0.1:{port}/hello")).await;
    assert_eq!(seen.header("x-probe"), Some("logged"));
    let id = seen.header("x-request-id").unwrap().to_owned();
    let line = gw
        .wait_for_log("abi-probe[logged]", Duration::from_secs(5))
        .await;
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["target"], "filter");
    assert_eq!(entry["filter"], "probe");
    assert_eq!(entry["request_id"], id.as_str());
    assert!(
        entry["message"]
            .as_str()
            .unwrap()
            .ends_with("request GET /hello"),
        "{entry}"
    );
    gw.signal("TERM");
    assert_eq!(gw.child.wait().await.unwrap().code(), Some(0));
}

#[test]
fn validate_refuses_a_filter_that_is_not_webassembly() {
    let dir = Scratch::new("validate-filter");
    std::fs::write(dir.join("broken.wasm"), b"this is not wasm").unwrap();
    let yaml = config(
        free_port(),
        free_port(),
        "127.0.0.1:9".parse().unwrap(),
        "filters:\n  - name: broken\n    module: broken.wasm\n",
    );
    std::fs::write(dir.join("c.yaml"), yaml).unwrap();
    let out = validate(dir.join("c.yaml"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("filter broken")
            && err.contains("broken.wasm: not a valid WebAssembly module"),
        "{err}"
    );
}
