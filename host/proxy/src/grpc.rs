//! gRPC calls for filters (proxy-wasm `proxy_grpc_call` / `proxy_grpc_stream`) over the
//! worker's HTTP/2 pools: length-prefixed messages out through a channel-fed request body,
//! and the response's metadata, messages and status back as [`GrpcEvent`]s, from a task of
//! the call's own on the worker. As in Envoy, every failure (unreachable, timed out, reset,
//! not gRPC) still ends in a `Close` with a gRPC status, never in silence.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use rustygate_config::UpstreamProtocol;
use rustygate_filter_api::LocalFuture;
use rustygate_filter_api::grpc::{GrpcEvent, GrpcOutbound, GrpcRequest, code, status_from_http};
use tokio::sync::{Notify, mpsc};

use crate::body::BoxError;
use crate::pool::{EndpointSettings, Pool, SendError, UpstreamBody};

/// Largest message a filter may receive (gRPC's own default receive limit).
const MAX_MESSAGE: usize = 4 << 20;

/// Where and how one call goes.
pub(crate) struct Target {
    pub authority: Arc<str>,
    /// Always HTTP/2, whatever the cluster's protocol says: gRPC has no other transport.
    pub settings: EndpointSettings,
    /// `http` or `https`, from the endpoint.
    pub scheme: &'static str,
}

/// Opens the call: the request goes out when the returned task first runs.
pub(crate) fn open(
    pool: Rc<Pool>,
    cluster: &str,
    mut target: Target,
    request: GrpcRequest,
    events: Box<dyn FnMut(GrpcEvent)>,
) -> Result<(Outbound, LocalFuture<'static, ()>), String> {
    target.settings.protocol = UpstreamProtocol::Http2;
    let authority = request.authority.as_deref().unwrap_or(cluster);
    let uri: Uri = format!(
        "{}://{}/{}/{}",
        target.scheme, authority, request.service, request.method
    )
    .parse()
    .map_err(|e| {
        format!(
            "gRPC request for {}/{}: {e}",
            request.service, request.method
        )
    })?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut http = Request::new(Box::pin(MessageBody(rx)) as UpstreamBody);
    *http.method_mut() = Method::POST;
    *http.uri_mut() = uri;
    *http.version_mut() = Version::HTTP_2;
    let headers = http.headers_mut();
    for (k, v) in &request.metadata {
        // Pseudo-headers and the framing headers are the transport's to set.
        let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(k),
            HeaderValue::from_bytes(v),
        ) else {
            continue;
        };
        if !matches!(
            name.as_str(),
            "content-type" | "te" | "grpc-timeout" | "host"
        ) {
            headers.append(name, value);
        }
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(t) = request.timeout {
        // gRPC allows at most 8 digits per unit.
        let ms = t.as_millis().min(99_999_999);
        headers.insert(
            "grpc-timeout",
            HeaderValue::from_str(&format!("{ms}m")).expect("digits"),
        );
    }
    let cancel = Rc::new(Notify::new());
    let outbound = Outbound {
        tx: RefCell::new(Some(tx)),
        cancel: cancel.clone(),
    };
    let timeout = request.timeout;
    let task = Box::pin(async move {
        let run = async {
            let mut sink = Sink(events);
            match timeout {
                None => exchange(&pool, &target, http, &mut sink).await,
                Some(t) => {
                    let call = exchange(&pool, &target, http, &mut sink);
                    if tokio::time::timeout(t, call).await.is_err() {
                        sink.close(code::DEADLINE_EXCEEDED, "deadline exceeded");
                    }
                }
            }
        };
        tokio::select! {
            biased;
            () = cancel.notified() => {}
            () = run => {}
        }
    });
    Ok((outbound, task))
}

struct Sink(Box<dyn FnMut(GrpcEvent)>);

impl Sink {
    fn close(&mut self, status: u32, message: impl Into<String>) {
        (self.0)(GrpcEvent::Close {
            status,
            message: message.into(),
        });
    }
}

async fn exchange(
    pool: &Rc<Pool>,
    target: &Target,
    request: Request<UpstreamBody>,
    sink: &mut Sink,
) {
    let response = match pool
        .send(&target.authority, &target.settings, request)
        .await
    {
        Ok(r) => r,
        Err(e @ (SendError::Connect(_) | SendError::Overflow(_))) => {
            return sink.close(code::UNAVAILABLE, format!("upstream unavailable: {e}"));
        }
        Err(SendError::Exchange(e)) => {
            return sink.close(code::UNAVAILABLE, format!("upstream reset: {e}"));
        }
    };
    let (parts, mut body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        return sink.close(
            status_from_http(parts.status.as_u16()),
            format!("upstream answered HTTP {}", parts.status.as_u16()),
        );
    }
    if parts.headers.contains_key("grpc-status") {
        // Trailers-only: the status came with the headers and there is no body.
        (sink.0)(GrpcEvent::TrailingMetadata(pairs(&parts.headers)));
        let (status, message) = status_of(&parts.headers);
        return sink.close(status, message);
    }
    (sink.0)(GrpcEvent::InitialMetadata(pairs(&parts.headers)));
    let mut buf = BytesMut::new();
    loop {
        let frame = match body.frame().await {
            None => {
                return sink.close(
                    code::INTERNAL,
                    "upstream ended the response without a status",
                );
            }
            Some(Err(e)) => return sink.close(code::UNAVAILABLE, format!("upstream reset: {e}")),
            Some(Ok(f)) => f,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                buf.extend_from_slice(&data);
                while buf.len() >= 5 {
                    let compressed = buf[0] != 0;
                    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                    if compressed {
                        return sink.close(
                            code::INTERNAL,
                            "upstream sent a compressed message; compression is not negotiated",
                        );
                    }
                    if len > MAX_MESSAGE {
                        return sink.close(
                            code::RESOURCE_EXHAUSTED,
                            format!("message of {len} bytes exceeds the limit of {MAX_MESSAGE}"),
                        );
                    }
                    if buf.len() < 5 + len {
                        break;
                    }
                    buf.advance(5);
                    (sink.0)(GrpcEvent::Message(buf.split_to(len).freeze()));
                }
                continue;
            }
            Err(f) => f,
        };
        if let Ok(trailers) = frame.into_trailers() {
            if !buf.is_empty() {
                return sink.close(code::INTERNAL, "upstream ended inside a message");
            }
            (sink.0)(GrpcEvent::TrailingMetadata(pairs(&trailers)));
            let (status, message) = status_of(&trailers);
            return sink.close(status, message);
        }
    }
}

fn pairs(headers: &HeaderMap) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// `grpc-status` (UNKNOWN when missing or not a number) and the percent-decoded
/// `grpc-message`.
fn status_of(headers: &HeaderMap) -> (u32, String) {
    let status = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
        .unwrap_or(code::UNKNOWN);
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    (status, message)
}

fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            raw[i],
            raw.get(i + 1).and_then(|b| hex(*b)),
            raw.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One gRPC message as it goes on the wire: not compressed, 4-byte big-endian length.
fn framed(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(0);
    b.put_u32(message.len() as u32);
    b.extend_from_slice(message);
    b.freeze()
}

/// The request body: framed messages as the filter sends them; it ends when the filter
/// half-closes.
struct MessageBody(mpsc::UnboundedReceiver<Bytes>);

impl Body for MessageBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// The filter's end of a call.
pub(crate) struct Outbound {
    tx: RefCell<Option<mpsc::UnboundedSender<Bytes>>>,
    cancel: Rc<Notify>,
}

impl GrpcOutbound for Outbound {
    fn send(&self, message: Option<Bytes>, end_stream: bool) {
        let mut tx = self.tx.borrow_mut();
        if let (Some(tx), Some(m)) = (tx.as_ref(), message) {
            // A closed channel is a call already over; the message has nowhere to go.
            let _ = tx.send(framed(&m));
        }
        if end_stream {
            *tx = None;
        }
    }

    fn cancel(&self) {
        self.tx.borrow_mut().take();
        self.cancel.notify_one();
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_length_prefixed() {
        assert_eq!(&framed(b"hi")[..], &[0, 0, 0, 0, 2, b'h', b'i']);
    }

    #[test]
    fn status_and_message_come_from_the_trailers() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("7"));
        h.insert("grpc-message", HeaderValue::from_static("no%20way%"));
        assert_eq!(status_of(&h), (7, "no way%".to_owned()));
        assert_eq!(status_of(&HeaderMap::new()), (code::UNKNOWN, String::new()));
    }
}
