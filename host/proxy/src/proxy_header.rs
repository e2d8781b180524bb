//! A listener's PROXY protocol header ([`rustygate_core::proxy_protocol`]), read off a new
//! connection without taking a byte of what follows it (the client's request or TLS
//! handshake): the bytes are peeked at, and only those known to be the header's are read.

use std::net::SocketAddr;
use std::time::Duration;

use rustygate_core::proxy_protocol::{self, Addresses, HeaderError, Parsed, Start};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How a listener takes the header.
#[derive(Clone, Copy)]
pub(crate) enum Expect {
    /// Every connection sends one.
    Required,
    /// A connection may start without one (`allow_requests_without_proxy_protocol`).
    Optional,
}

/// The connection's client and local ends: the header's, or `own` where it names none (or,
/// where it may, the connection sent none). `None` when the header is missing, invalid or not
/// whole within `limit`, counted in `failed`: the connection is then closed unanswered.
pub(crate) async fn ends(
    stream: &mut TcpStream,
    own: (SocketAddr, SocketAddr),
    (expect, limit): (Expect, Duration),
    failed: &metrics::Counter,
) -> Option<(SocketAddr, SocketAddr)> {
    let peer = own.0;
    match tokio::time::timeout(limit, read(stream, expect)).await {
        Ok(Ok(Some(told))) => Some((told.source, told.destination)),
        Ok(Ok(None)) => Some(own),
        Ok(Err(e)) => {
            failed.increment(1);
            tracing::debug!(%peer, error = %e, "PROXY protocol header refused");
            None
        }
        Err(_) => {
            failed.increment(1);
            tracing::debug!(%peer, "PROXY protocol header timed out");
            None
        }
    }
}

/// Why a connection's header could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The bytes are not a header.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The client closed before the header ended.
    #[error("the connection closed within the PROXY protocol header")]
    Closed,
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The connection's real ends as `stream`'s header gives them (`None`: its own stand),
/// consuming exactly the header.
async fn read(stream: &mut TcpStream, expect: Expect) -> Result<Option<Addresses>, ReadError> {
    // What was read so far: all of it the header's.
    let mut header = Vec::new();
    // Version 2's addresses and usual TLVs fit; a longer header is taken in several turns.
    let mut waiting = [0u8; 512];
    loop {
        let n = stream.peek(&mut waiting).await?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        // Where the header is optional nothing is consumed until a whole signature says
        // there is one: the bytes may be the client's own.
        if let (Expect::Optional, true) = (expect, header.is_empty()) {
            match proxy_protocol::start(&waiting[..n]) {
                Start::NotHeader => return Ok(None),
                Start::Header => {}
                // A few bytes that may begin a signature: the rest is a moment away (peeking
                // again at once would find the same bytes).
                Start::Undecided => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
            }
        }
        let seen = [header.as_slice(), &waiting[..n]].concat();
        let take = match proxy_protocol::parse(&seen)? {
            Parsed::Header { len, addresses } => {
                let mut rest = vec![0u8; len - header.len()];
                stream.read_exact(&mut rest).await?;
                return Ok(addresses);
            }
            // `parse` counts at least one byte that arrived as the header's (or refuses them),
            // so each turn reads something and the next peek waits for more.
            Parsed::Incomplete { at_least } => at_least.saturating_sub(header.len()).min(n),
        };
        if take == 0 {
            return Err(HeaderError::Missing.into());
        }
        let start = header.len();
        header.resize(start + take, 0);
        stream.read_exact(&mut header[start..]).await?;
    }
}
