//! Real HTTP clients (hyper) and a raw TCP client for requests a well-behaved client library
//! refuses to send.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a client saw.
#[derive(Debug)]
pub struct Seen {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl Seen {
    /// Body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTP/1.1 client with keep-alive.
pub fn http1() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn h2c() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// One HTTP/2 connection (h2c) to `addr`, driven by a task of its own: for what the pooled
/// client hides (CONNECT streams that become tunnels, several streams on one connection).
pub async fn h2_connection<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// A unary gRPC call to `url` over HTTP/2, as a gRPC client sends it (an empty message).
pub fn grpc_call(url: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap()
}

/// Sends `req` and reads the whole response.
pub async fn send(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Seen {
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("response within 30s")
        .expect("request succeeds");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Seen {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// GET `url` over HTTP/1.1.
pub async fn get(url: &str) -> Seen {
    send(&http1(), Request::get(url).body(Full::default()).unwrap()).await
}

/// GET `url` over HTTP/1.1 with `headers`.
pub async fn get_with_headers(url: &str, headers: &[(&str, &str)]) -> Seen {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&http1(), req.body(Full::default()).unwrap()).await
}

/// Writes `raw` to `addr` and reads until the server closes or `wait` passes; returns the text.
pub async fn raw(addr: SocketAddr, raw: &[u8], wait: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `head` and then `chunks`, `gap` apart, on a new connection (stopping early if the
/// gateway closes it); returns what the gateway answered and when the answer began, measured
/// from the last chunk sent. The gateway must close the connection after answering, within
/// 5 s (send `connection: close` for an answer that would otherwise keep it).
pub async fn raw_upload(
    addr: SocketAddr,
    head: &str,
    chunks: &[&[u8]],
    gap: Duration,
) -> (String, Duration) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        if s.write_all(chunk).await.is_err() {
            break;
        }
    }
    let sent = std::time::Instant::now();
    let mut first = [0u8; 1];
    let mut out = Vec::new();
    let answered = match tokio::time::timeout(Duration::from_secs(5), s.read(&mut first)).await {
        Ok(Ok(1)) => {
            out.push(first[0]);
            sent.elapsed()
        }
        _ => return (String::new(), sent.elapsed()),
    };
    // A reset after the answer is a close too.
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the gateway closes the connection after its answer");
    (String::from_utf8_lossy(&out).into_owned(), answered)
}
