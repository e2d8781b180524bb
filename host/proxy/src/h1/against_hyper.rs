//! The direct client's reading of responses against hyper's own HTTP/1 client, which the
//! gateway uses for the requests the direct client does not take: the same upstream response
//! must read alike either way. Responses are made by mutating good ones a byte or two at a
//! time (a fixed seed). Wherever both take a response, they must agree on its status and how
//! many body bytes it has; wherever one takes it, so must the other, but for an HTTP/1.0
//! response with a `Transfer-Encoding`, which hyper refuses and the direct client reads to
//! the connection's end, as RFC 9112 §6.1 has it.

use std::time::Duration;

use bytes::BytesMut;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::decode::{State, Step};
use super::head::parse_response;
use crate::against_hyper::mutated;

/// Responses of every framing: a length, chunks with extensions and trailers, to the
/// connection's end, none (204, a zero length), lists and repeated lengths, a coding before
/// `chunked`, a length beside a coding, an informational response first.
const RESPONSES: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello",
    b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nT: v\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nX: a\r\n\r\nbody until close",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-E:\r\n\r\n",
    b"HTTP/1.1 302 \r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3 ; a=\"b\"\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n",
];

/// How hyper's client reads `response` to a GET, the upstream closing after it: `ok STATUS
/// BODY_LEN`, or why not.
async fn hyper_reads(response: Vec<u8>) -> String {
    let (client, mut server) = tokio::io::duplex(1 << 16);
    let upstream = tokio::spawn(async move {
        let mut request = [0u8; 4096];
        let _ = server.read(&mut request).await;
        let _ = server.write_all(&response).await;
        let _ = server.shutdown().await;
        // Held open until the client is done, so that it reads the end above, not a reset.
        let _ = server.read_to_end(&mut Vec::new()).await;
    });
    let io = hyper_util::rt::TokioIo::new(client);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    let driver = tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "a")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let wait = Duration::from_millis(500);
    let read = match tokio::time::timeout(wait, send.send_request(req)).await {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body());
            match tokio::time::timeout(wait, body).await {
                Ok(Ok(b)) => format!("ok {status} {}", b.to_bytes().len()),
                Ok(Err(e)) => format!("body refused: {e}"),
                Err(_) => "body unfinished".into(),
            }
        }
        Ok(Err(e)) => format!("refused: {e}"),
        Err(_) => "unanswered".into(),
    };
    upstream.abort();
    driver.abort();
    read
}

/// How the direct client reads `response` to a GET when the upstream closes after it.
fn direct_reads(response: &[u8]) -> String {
    let mut buf = BytesMut::from(response);
    let head = match parse_response(&mut buf, &Method::GET) {
        Ok(Some(head)) => head,
        Ok(None) => return "unfinished head".into(),
        Err(e) => return format!("refused: {e}"),
    };
    let status = head.status.as_u16();
    let mut state = State::new(head.framing);
    let mut len = 0;
    loop {
        match state.step(&mut buf) {
            Ok(Step::Data(d)) => len += d.len(),
            Ok(Step::Trailers(_) | Step::End) => return format!("ok {status} {len}"),
            // The end of the stream ends only a body read to the connection's end.
            Ok(Step::NeedMore) if state == State::Close => return format!("ok {status} {len}"),
            Ok(Step::NeedMore) => return "body unfinished".into(),
            Err(e) => return format!("body refused: {e}"),
        }
    }
}

/// An HTTP/1.0 response with a `Transfer-Encoding`: hyper refuses it, the direct client reads
/// it to the connection's end (RFC 9112 §6.1).
fn http10_coding(response: &[u8]) -> bool {
    response.starts_with(b"HTTP/1.0")
        && String::from_utf8_lossy(response)
            .to_ascii_lowercase()
            .contains("\r\ntransfer-encoding:")
}

#[tokio::test]
async fn the_direct_client_reads_responses_as_hyper_does() {
    let mut rng = fastrand::Rng::with_seed(20261205);
    let mut disagree = Vec::new();
    for _ in 0..4_000 {
        let good = RESPONSES[rng.usize(..RESPONSES.len())];
        let response = mutated(&mut rng, good, 0, 1..=2);
        let direct = direct_reads(&response);
        let hyper = hyper_reads(response.clone()).await;
        let agree = match (direct.starts_with("ok"), hyper.starts_with("ok")) {
            (false, false) => true,
            (true, true) => direct == hyper,
            (true, false) => http10_coding(&response),
            (false, true) => false,
        };
        if !agree {
            disagree.push(format!(
                "{:?}: direct {direct:?}, hyper {hyper:?}",
                String::from_utf8_lossy(&response)
            ));
        }
    }
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
}
