//! A real WebSocket server (tokio-tungstenite) on loopback, and a client, for the upgrade
//! tests. The server echoes every text and binary message, answers pings (the library does),
//! and records each handshake's request headers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::handshake::client::Response as ClientResponse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// A running WebSocket echo server.
pub struct WsUpstream {
    /// Bound address.
    pub addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<http::HeaderMap>>>,
    open: Arc<AtomicUsize>,
    _thread: std::thread::JoinHandle<()>,
}

impl WsUpstream {
    /// Starts the server on 127.0.0.1:0, on a runtime thread of its own.
    // The handshake callback's error type is tungstenite's whole HTTP response.
    #[allow(clippy::result_large_err)]
    pub fn start() -> WsUpstream {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(AtomicUsize::new(0));
        let (seen, count) = (handshakes.clone(), open.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (seen, count) = (seen.clone(), count.clone());
                    tokio::spawn(async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        let record = |req: &Request, resp: Response| {
                            seen.lock().push(req.headers().clone());
                            Ok(resp)
                        };
                        if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, record).await {
                            echo(ws).await;
                        }
                        count.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
        });
        WsUpstream {
            addr,
            handshakes,
            open,
            _thread: thread,
        }
    }

    /// The request headers of every handshake so far.
    pub fn handshakes(&self) -> Vec<http::HeaderMap> {
        self.handshakes.lock().clone()
    }

    /// WebSocket connections open now (the server drops its end once the peer has gone).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

async fn echo(mut ws: WebSocketStream<TcpStream>) {
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_close() {
            return;
        }
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

/// A WebSocket client connected to `url` (`ws://host:port/path`) over a new TCP connection,
/// with `headers` added to the handshake. Returns the handshake's error as is (an HTTP
/// refusal is `Error::Http` carrying the response).
pub async fn connect(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(WebSocketStream<TcpStream>, ClientResponse), Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(v).expect("header value"),
        );
    }
    let authority = req
        .uri()
        .authority()
        .expect("authority")
        .as_str()
        .to_owned();
    let stream = TcpStream::connect(authority).await.map_err(Error::Io)?;
    tokio_tungstenite::client_async(req, stream).await
}
