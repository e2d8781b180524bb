//! Real upstream HTTP servers on loopback, each on its own runtime thread so that they are
//! independent of the test's runtime and of the gateway's workers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};

/// Response body type for test handlers.
pub type Body = BoxBody<Bytes, std::io::Error>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// A running upstream.
pub struct Upstream {
    /// Bound address.
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    handler: Handler,
    /// Set for an `https://` upstream.
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    /// Requests this upstream has received.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Connections to this upstream that are open now (accepted, not yet closed by either
    /// side).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections this upstream has accepted in all.
    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Starts a server on 127.0.0.1:0 answering with `handler`. Serves HTTP/1.1 and h2c.
    pub fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        Self::start_with(None, handler)
    }

    /// [`Upstream::start`] behind TLS with `config` (HTTP/1.1 and HTTP/2 by ALPN, as its
    /// `alpn_protocols` allow).
    pub fn start_tls<F, Fut>(config: Arc<rustls::ServerConfig>, handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(config)), handler)
    }

    /// [`Upstream::echo`] behind TLS with `config`.
    pub fn echo_tls(config: Arc<rustls::ServerConfig>) -> Upstream {
        Upstream::start_tls(config, |req| async move { echo_response(req).await })
    }

    fn start_with<F, Fut>(tls: Option<tokio_rustls::TlsAcceptor>, handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let mut up = Upstream {
            addr,
            requests: Arc::new(AtomicUsize::new(0)),
            open: Arc::new(AtomicUsize::new(0)),
            accepted: Arc::new(AtomicUsize::new(0)),
            handler,
            tls,
            stop: None,
            thread: None,
        };
        up.serve(std_listener);
        up
    }

    /// Stops the server like a crashed process: the port refuses connections and open
    /// connections are closed.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Serves again on the same address after [`Upstream::stop`].
    pub fn restart(&mut self) {
        self.stop();
        let listener = std::net::TcpListener::bind(self.addr).unwrap();
        self.serve(listener);
    }

    fn serve(&mut self, std_listener: std::net::TcpListener) {
        std_listener.set_nonblocking(true).unwrap();
        let (handler, counter) = (self.handler.clone(), self.requests.clone());
        let (open, accepted_total) = (self.open.clone(), self.accepted.clone());
        let tls = self.tls.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let accepted = tokio::select! {
                        r = listener.accept() => r,
                        _ = &mut stopped => break,
                    };
                    let Ok((stream, _)) = accepted else {
                        continue;
                    };
                    let (handler, counter) = (handler.clone(), counter.clone());
                    let (open, tls) = (open.clone(), tls.clone());
                    open.fetch_add(1, Ordering::SeqCst);
                    accepted_total.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(async move {
                        let svc = service_fn(move |req| {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let fut = handler(req);
                            async move { Ok::<_, Infallible>(fut.await) }
                        });
                        let builder = auto::Builder::new(TokioExecutor::new());
                        match tls {
                            None => {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    let _ =
                                        builder.serve_connection(TokioIo::new(stream), svc).await;
                                }
                            }
                        }
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                connections.abort_all();
            });
            // Dropping the runtime closes every socket it still holds.
            drop(rt);
        });
        self.stop = Some(stop);
        self.thread = Some(thread);
    }

    /// Echoes the request as JSON: method, path, version, headers (name → list of values),
    /// body length and SHA-256, trailers. Tests read this to see what the gateway forwarded.
    pub fn echo() -> Upstream {
        Upstream::start(|req| async move { echo_response(req).await })
    }

    /// Streams `len` bytes of a deterministic pattern, in 64 KiB frames.
    pub fn download(len: u64) -> Upstream {
        Upstream::start(move |_req| async move {
            let stream = futures_util::stream::unfold(0u64, move |sent| async move {
                (sent < len).then(|| {
                    let n = (len - sent).min(64 * 1024);
                    let chunk = pattern(sent, n as usize);
                    (
                        Ok::<_, std::io::Error>(Frame::data(Bytes::from(chunk))),
                        sent + n,
                    )
                })
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert(header::CONTENT_LENGTH, len.into());
            r
        })
    }

    /// Waits `delay`, then answers 200 "slow".
    pub fn slow(delay: Duration) -> Upstream {
        Upstream::start(move |_req| async move {
            tokio::time::sleep(delay).await;
            text(StatusCode::OK, "slow")
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // As before stop/restart existed: a dropped upstream keeps serving until the test
        // process ends (gateways built from its address may outlive the handle).
        if let Some(stop) = self.stop.take() {
            std::mem::forget(stop);
        }
    }
}

/// The byte pattern `download` serves, from offset `start`.
pub fn pattern(start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| ((start + i) % 251) as u8).collect()
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r
}

/// A complete body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// What [`Upstream::echo`] answers to `req`.
pub async fn echo_response(req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut trailers = serde_json::Map::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        match frame.into_data() {
            Ok(d) => {
                len += d.len() as u64;
                hasher.update(&d);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    for (k, v) in &t {
                        trailers
                            .insert(k.to_string(), String::from_utf8_lossy(v.as_bytes()).into());
                    }
                }
            }
        }
    }
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<serde_json::Value> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into())
            .collect();
        headers.insert(name.to_string(), values.into());
    }
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("", |p| p.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": len,
        "body_sha256": hex(&hasher.finalize()),
        "trailers": trailers,
    });
    let mut r = Response::new(full(json.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A server that answers wrongly on purpose: on each connection it reads what arrives first
/// (the request head), writes `answer` as it is (nothing: it just closes) and closes. Runs on
/// the caller's tokio runtime.
pub async fn canned(answer: &'static [u8]) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut head = vec![0u8; 4096];
            let _ = s.read(&mut head).await;
            let _ = s.write_all(answer).await;
        }
    });
    addr
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}
