//! Runs the filter through a real RustyGate on gateway.yaml, in front of a small upstream, and
//! checks what a client sees. `make test` builds the .wasm first. The gateway binary is
//! $RUSTYGATE, or `rustygate` on PATH.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Answers every request with 200 "hello from upstream".
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let body = "hello from upstream";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn responses_carry_the_configured_header() {
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into());
    let wasm = format!("{target}/__TARGET__/release/__CRATE__.wasm");
    assert!(
        std::path::Path::new(&wasm).exists(),
        "{wasm} is missing: build it first (make build)"
    );
    let (listen, upstream) = (free_port(), upstream());
    let bin = std::env::var("RUSTYGATE").unwrap_or_else(|_| "rustygate".into());
    let _gateway = Gateway(
        Command::new(&bin)
            .args([
                "run",
                "--config",
                concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml"),
            ])
            .env("FILTER_WASM", &wasm)
            .env("LISTEN_PORT", listen.to_string())
            .env("ADMIN_PORT", free_port().to_string())
            .env("UPSTREAM_PORT", upstream.to_string())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}; set RUSTYGATE to the binary")),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let response = loop {
        match get(listen, "/hello") {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("the gateway did not answer on port {listen}: {e}"),
        }
    };
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.to_lowercase().contains("\r\nx-hello: world\r\n"),
        "{response}"
    );
    assert!(response.ends_with("hello from upstream"), "{response}");
}
