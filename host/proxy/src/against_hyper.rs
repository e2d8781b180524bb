//! The scans of a client's HTTP/1 bytes against hyper's own HTTP/1 server, which reads every
//! byte they let through. Heads and chunked bodies are made by mutating good ones a few bytes
//! at a time (a fixed seed, so a failure repeats).
//!
//! Every complete head the head scan lets through hyper must take, or the client would get
//! hyper's empty 400 instead of the gateway's JSON one; every head hyper takes the scan must
//! let through too, but for the refusals the gateway makes on purpose: both framings named
//! (Envoy's 400) and a transfer coding other than `chunked` alone (Envoy's 501). And a chunked
//! body must end where hyper ends it, or the request scan would take body bytes for a head or
//! a head for body bytes.

use std::convert::Infallible;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::head_scan::{HeadFault, HeadScan};
use crate::request_scan::RequestScan;

/// Heads of every shape the scan tells apart: origin, absolute, asterisk and authority forms,
/// both versions, both framings, repeated fields and empty values, bytes above ASCII, bare-LF
/// line ends, empty lines before the request line, and a length given as a list (which hyper
/// refuses; a mutation may make it one number).
const HEADS: &[&[u8]] = &[
    b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
    b"PUT http://a.example/x?y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\nX-A: b\r\n\r\n",
    b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
    b"POST /u HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\nX-E:\r\nX-F: \t v \t\r\n\r\n",
    b"GET http://u:p@[::1]:80/p%20q?r#f HTTP/1.1\r\nHost: [::1]\r\nX: \x80\xff\r\n\r\n",
    b"DELETE /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
    b"GET /p HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"\r\n\nGET /p HTTP/1.1\nHost: a\n\r\n",
    b"PATCH /l HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
];

/// What a mutation puts in: the bytes that separate, end or delimit the parts of a head, some
/// that a target must escape, digits, control bytes, DEL and bytes above ASCII.
const BYTES: &[u8] =
    b" \t\r\n:;,\"#<>`{}|\\^%?/@[]!$&'()*+=-._~0123456789aZ\x00\x01\x7f\x80\xc3\xa9\xff";

/// `bytes` with `times` bytes inserted, replaced, removed or doubled, its last `keep` bytes
/// left as they are.
pub(crate) fn mutated(
    rng: &mut fastrand::Rng,
    bytes: &[u8],
    keep: usize,
    times: std::ops::RangeInclusive<usize>,
) -> Vec<u8> {
    let mut m = bytes.to_vec();
    for _ in 0..rng.usize(times) {
        let at = rng.usize(..m.len() - keep);
        let b = BYTES[rng.usize(..BYTES.len())];
        match rng.u8(..4) {
            0 => m.insert(at, b),
            1 => m[at] = b,
            2 => {
                m.remove(at);
            }
            _ => m.splice(at..at, [b, b]).for_each(drop),
        }
    }
    m
}

/// The statuses, in order, that hyper's HTTP/1 server, set up as the gateway's is, answers
/// `stream` with, as in `"200 400"`: its service reads each request's body and answers 200,
/// or 422 if the body failed.
async fn hyper_answers(stream: &[u8]) -> String {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let serve = tokio::spawn(async move {
        let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async {
            let status = match http_body_util::BodyExt::collect(req.into_body()).await {
                Ok(_) => http::StatusCode::OK,
                Err(_) => http::StatusCode::UNPROCESSABLE_ENTITY,
            };
            let mut resp = http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
            *resp.status_mut() = status;
            Ok::<_, Infallible>(resp)
        });
        let mut b = hyper::server::conn::http1::Builder::new();
        // Half-closed, so the client can end its side after its bytes and still be answered.
        b.keep_alive(true)
            .half_close(true)
            .max_headers(100)
            .max_buf_size(65536);
        let io = hyper_util::rt::TokioIo::new(server);
        let _ = b.serve_connection(io, svc).with_upgrades().await;
    });
    client.write_all(stream).await.expect("write");
    client.shutdown().await.expect("shutdown");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        client.read_to_end(&mut out),
    )
    .await;
    serve.abort();
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| l.starts_with("HTTP/1."))
        .map(|l| l.split(' ').nth(1).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn the_scan_and_hyper_take_the_same_heads() {
    let mut rng = fastrand::Rng::with_seed(20261205);
    let mut disagree = Vec::new();
    let mut compared = 0;
    for _ in 0..20_000 {
        let base = HEADS[rng.usize(..HEADS.len())];
        // The empty line that ends it kept, so that the head usually still ends.
        let head = mutated(&mut rng, base, 4, 1..=3);
        let mut scan = HeadScan::new(65536, 100);
        let scan_takes = match scan.feed(&head) {
            // Refused either way (hyper reads no length after a coding).
            _ if scan.both_framings() => continue,
            Ok(Some(_)) => true,
            Err(HeadFault::UnsupportedCoding) => continue,
            Err(_) => false,
            // Not a whole head any more: nothing to compare.
            Ok(None) => continue,
        };
        compared += 1;
        let answer = hyper_answers(&head).await;
        // The first answer is the head's (a head that ended early leaves the rest to be read
        // as the next); one whose body never came was taken (and the body missed: 422).
        let hyper_takes = matches!(answer.split(' ').next(), Some("200" | "422"));
        if hyper_takes != scan_takes {
            let scan_says = if scan_takes { "taken" } else { "refused" };
            disagree.push(format!(
                "{:?}: scan {scan_says}, hyper {answer:?}",
                String::from_utf8_lossy(&head)
            ));
        }
    }
    // Most mutations keep the head whole.
    assert!(compared > 10_000, "{compared}");
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
}

/// Chunked bodies, some with extensions and trailers, mutated a byte or two at a time.
const CHUNKED: &[&[u8]] = &[
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5;a=b\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: v\r\n\r\n",
    b"005 ; ext\r\nhello\r\n0;x\r\nT: 1\r\nU: 2\r\n\r\n",
];

/// Taking body bytes for a head, the scan would withhold a body's end from hyper; taking a head
/// for body bytes, it would let the head through unchecked. A request with a mutated chunked
/// body is followed by a good request and a bad head; wherever hyper answers some requests
/// and then refuses the bad head, the scan must have refused the same head, counted the same
/// way.
#[tokio::test]
async fn chunked_bodies_end_where_hyper_ends_them() {
    let mut rng = fastrand::Rng::with_seed(20261205);
    let mut disagree = Vec::new();
    let mut compared = 0;
    for _ in 0..5_000 {
        let good = CHUNKED[rng.usize(..CHUNKED.len())];
        let body = mutated(&mut rng, good, 0, 1..=2);
        let stream = [
            &b"POST /one HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            &body,
            b"GET /two HTTP/1.1\r\nHost: a\r\n\r\nGET /three HTTP/1.2\r\n\r\n",
        ]
        .concat();
        let answers = hyper_answers(&stream).await;
        // A body hyper refused ends the connection: there is no head after it to compare.
        let Some(taken) = answers.strip_suffix("400") else {
            continue;
        };
        if taken.contains("422") {
            continue;
        }
        compared += 1;
        let oks = taken.split_whitespace().count() as u64;
        let refused = RequestScan::new(65536, 100)
            .feed(&stream, Some(0))
            .refuse
            .map(|r| r.index);
        if refused != Some(oks + 1) {
            disagree.push(format!(
                "{:?}: scan refused request {refused:?}, hyper answered {answers:?}",
                String::from_utf8_lossy(&body)
            ));
        }
    }
    assert!(compared > 500, "{compared}");
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
}
