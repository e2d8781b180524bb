//! A real gRPC server on loopback (h2c, length-prefixed messages, status in trailers) for
//! the filters' outbound gRPC calls: service `test.Echo`, written against the HTTP/2 wire
//! format directly so that every framing case (trailers-only, streaming, hanging) is at hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::mpsc;

use crate::upstream::{Body, Upstream};

/// A running `test.Echo` server.
pub struct GrpcServer {
    pub upstream: Upstream,
    /// `Hang` calls whose response the client abandoned (reset or cancelled).
    pub abandoned: Arc<AtomicUsize>,
    /// The request headers (initial metadata) of the last call.
    pub last_metadata: Arc<parking_lot::Mutex<HeaderMap>>,
}

/// Methods of `test.Echo`:
/// - `Unary`: answers `hello <message>` (metadata `x-server: echo`, status 0).
/// - `Deny`: trailers-only, status 7 `not allowed`.
/// - `Empty`: status 0 and no message.
/// - `Chat`: answers every message upper-cased as it comes; status 0 and trailer
///   `x-trailer: done` once the client half-closes.
/// - `Hang`: headers, then nothing until the client goes away.
/// - anything else: trailers-only, status 12 (unimplemented), as gRPC servers answer.
pub fn echo_server() -> GrpcServer {
    let abandoned = Arc::new(AtomicUsize::new(0));
    let last_metadata = Arc::new(parking_lot::Mutex::new(HeaderMap::new()));
    let (a, u) = (abandoned.clone(), last_metadata.clone());
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        let (abandoned, last_metadata) = (a.clone(), u.clone());
        async move {
            *last_metadata.lock() = req.headers().clone();
            let is_grpc = req.headers().get("content-type").map(|v| v.as_bytes())
                == Some(b"application/grpc");
            if req.version() != http::Version::HTTP_2 || !is_grpc {
                return plain(StatusCode::UNSUPPORTED_MEDIA_TYPE);
            }
            let method = req.uri().path().to_owned();
            let (tx, rx) = mpsc::unbounded_channel::<Frame<Bytes>>();
            let mut body = req.into_body();
            match method.as_str() {
                "/test.Echo/Deny" => {
                    let mut r = plain(StatusCode::OK);
                    let h = r.headers_mut();
                    h.insert("content-type", HeaderValue::from_static("application/grpc"));
                    h.insert("grpc-status", HeaderValue::from_static("7"));
                    h.insert("grpc-message", HeaderValue::from_static("not%20allowed"));
                    return r;
                }
                "/test.Echo/Unary" | "/test.Echo/Empty" => {
                    let all = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    if method.ends_with("Unary") {
                        let first = messages(&mut BytesMut::from(&all[..]))
                            .into_iter()
                            .next()
                            .unwrap_or_default();
                        let mut reply = b"hello ".to_vec();
                        reply.extend_from_slice(&first);
                        let _ = tx.send(Frame::data(framed(&reply)));
                    }
                    let _ = tx.send(Frame::trailers(status(0, None)));
                }
                "/test.Echo/Chat" => {
                    tokio::spawn(async move {
                        let mut buf = BytesMut::new();
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Ok(data) = frame.into_data() {
                                buf.extend_from_slice(&data);
                                for m in messages(&mut buf) {
                                    let _ = tx.send(Frame::data(framed(&m.to_ascii_uppercase())));
                                }
                            }
                        }
                        let mut t = status(0, None);
                        t.insert("x-trailer", HeaderValue::from_static("done"));
                        let _ = tx.send(Frame::trailers(t));
                    });
                }
                "/test.Echo/Hang" => {
                    // Keep the sender alive until the response is dropped.
                    let guard = Abandoned(abandoned, tx);
                    let stream = futures_util::stream::unfold((rx, guard), |(mut rx, g)| async {
                        let f = rx.recv().await?;
                        Some((Ok::<_, std::io::Error>(f), (rx, g)))
                    });
                    return grpc_response(BodyExt::boxed(StreamBody::new(stream)));
                }
                _ => {
                    let mut r = grpc_response(BodyExt::boxed(
                        http_body_util::Empty::new().map_err(|never| match never {}),
                    ));
                    r.headers_mut()
                        .insert("grpc-status", HeaderValue::from(12u32));
                    return r;
                }
            }
            let stream = futures_util::stream::unfold(rx, |mut rx| async {
                let f = rx.recv().await?;
                Some((Ok::<_, std::io::Error>(f), rx))
            });
            grpc_response(BodyExt::boxed(StreamBody::new(stream)))
        }
    });
    GrpcServer {
        upstream,
        abandoned,
        last_metadata,
    }
}

/// Counts a `Hang` response dropped by the server: the client reset the stream.
struct Abandoned(
    Arc<AtomicUsize>,
    #[allow(dead_code)] mpsc::UnboundedSender<Frame<Bytes>>,
);

impl GrpcServer {
    /// A header of the last call's initial metadata.
    pub fn last(&self, name: &str) -> Option<String> {
        let m = self.last_metadata.lock();
        Some(m.get(name)?.to_str().ok()?.to_owned())
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn grpc_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("x-server", HeaderValue::from_static("echo"));
    r
}

fn plain(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed(
        http_body_util::Empty::new().map_err(|never| match never {}),
    ));
    *r.status_mut() = code;
    r
}

fn status(code: u32, message: Option<&str>) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from(code));
    if let Some(m) = message {
        t.insert("grpc-message", HeaderValue::from_str(m).unwrap());
    }
    t
}

fn framed(message: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(0);
    b.put_u32(message.len() as u32);
    b.extend_from_slice(message);
    b.freeze()
}

/// The whole messages at the front of `buf`, taken out of it.
fn messages(buf: &mut BytesMut) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        buf.advance(5);
        out.push(buf.split_to(len).to_vec());
    }
    out
}
