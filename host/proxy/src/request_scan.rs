//! The requests on a client's HTTP/1 connection, followed through their bodies as they are
//! read, so that each head is known for a head wherever it falls: a pipelined one read with
//! the request before it, or after a body that took several reads. Heads are checked by
//! [`HeadScan`]; bodies are only counted through (a length) or framed (chunks: their size
//! lines and the trailers), never looked into.
//!
//! A head refused here is withheld from hyper, with everything after it; what the read held
//! before it (the requests pipelined ahead of it) is not, and the refusal is answered once
//! those have been ([`crate::write_stall`]). What follows a request that may switch protocols
//! (`Upgrade`, `CONNECT`) is held back until that request is answered: tunnelled bytes if it
//! switched, the next head if not. The scan stops at a refused head, at a body whose framing
//! hyper will refuse, once a protocol switch has been made, and after a request that may
//! switch and names a body too.

use crate::head_scan::{Body, HeadFault, HeadScan};

/// The scan of one connection's requests.
pub(crate) struct RequestScan {
    head: HeadScan,
    part: Part,
    /// The request being read, counted from 1.
    index: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    Head,
    /// Body bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// After a request that may switch protocols (`Upgrade`, `CONNECT`): what follows is the
    /// next head only if the request is answered, and no tunnel opened, first. Bytes that come
    /// before the answer are held back until it ([`Told::hold`]).
    Switch,
    /// Nothing more is read here: the connection may have switched protocols, a head was
    /// refused, or a framing is past following.
    Stopped,
}

/// Where a chunked body is (RFC 9112 §7.1), state for state as hyper's decoder reads it, so
/// that a body hyper takes ends here where it ends there.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Chunk {
    /// At a chunk-size line, whose first byte must be a hex digit.
    Start,
    /// In the size's digits: the size so far.
    Size(u64),
    /// In spaces or tabs after the digits.
    SizeSpace(u64),
    /// In the extensions, after a `;`, up to the CR (an LF there is refused).
    Extension(u64),
    /// At the LF that ends a size line.
    SizeLf(u64),
    /// Data bytes still to come.
    Data(u64),
    /// At the CR, then the LF, after a chunk's data.
    DataCr,
    DataLf,
    /// After the last chunk's size line or a trailer line: a CR ends the body, anything else
    /// begins a trailer line.
    EndCr,
    /// In a trailer line, up to its CR (an LF is part of the line, as hyper reads it).
    Trailer,
    TrailerLf,
    /// At the body's last LF.
    EndLf,
}

/// What a read said.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Told {
    /// The first request (by index) whose head named both `Content-Length` and
    /// `Transfer-Encoding`.
    pub both_framings: Option<u64>,
    /// A head in this read was refused: its bytes, and those after it, must not reach hyper.
    pub refuse: Option<Refusal>,
    /// The read's bytes from this one on came after a request that may switch protocols, and
    /// before its answer: they wait for it. Tunnelled if it switches, they are the next head
    /// if it does not, and are to be read here again then.
    pub hold: Option<usize>,
}

/// A refused head.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Refusal {
    pub fault: HeadFault,
    /// Its request, counted from 1: it is answered once every request before it has been.
    pub index: u64,
    /// The read's bytes before it, which hyper is given (0 when the head began in an earlier
    /// read: hyper then holds its first bytes, an unfinished head it will not answer).
    pub keep: usize,
}

impl RequestScan {
    /// Heads limited to `max_bytes` and `max_fields` (the listener's).
    pub(crate) fn new(max_bytes: usize, max_fields: usize) -> Self {
        Self {
            head: HeadScan::new(max_bytes, max_fields),
            part: Part::Head,
            index: 1,
        }
    }

    /// Reads the connection's next `bytes`; `answered` says how many requests have been
    /// answered in full so far (none is in flight).
    pub(crate) fn feed(&mut self, bytes: &[u8], answered: Option<u64>) -> Told {
        let mut told = Told::default();
        // No tunnel opened (the connection would not be read here), so the next head follows.
        if self.part == Part::Switch && answered == Some(self.index) {
            self.next_request();
        }
        let mut i = 0;
        // Where the head being read began in this read.
        let mut head_from = 0;
        while i < bytes.len() {
            match &mut self.part {
                Part::Head => match self.head.feed(&bytes[i..]) {
                    Ok(None) => i = bytes.len(),
                    Ok(Some(used)) => {
                        i += used;
                        if self.head.both_framings() && told.both_framings.is_none() {
                            told.both_framings = Some(self.index);
                        }
                        match self.head.body() {
                            Body::None => {
                                self.next_request();
                                head_from = i;
                            }
                            Body::Length(n) => self.part = Part::Length(n),
                            Body::Chunked => self.part = Part::Chunked(Chunk::Start),
                            Body::Switch => self.part = Part::Switch,
                            // Where its body ends is not followed.
                            Body::Unknown => self.part = Part::Stopped,
                        }
                    }
                    Err(fault) => {
                        told.refuse = Some(Refusal {
                            fault,
                            index: self.index,
                            keep: head_from,
                        });
                        self.part = Part::Stopped;
                    }
                },
                Part::Length(rest) => {
                    i += count_through(rest, bytes.len() - i);
                    if *rest == 0 {
                        self.next_request();
                        head_from = i;
                    }
                }
                Part::Chunked(chunk) => {
                    let (next, ended) = chunked(chunk, bytes, i);
                    i = next;
                    match ended {
                        Some(true) => {
                            self.next_request();
                            head_from = i;
                        }
                        Some(false) => self.part = Part::Stopped,
                        None => {}
                    }
                }
                // Bytes before the answer: tunnelled, or the next head.
                Part::Switch => {
                    told.hold = Some(i);
                    break;
                }
                Part::Stopped => break,
            }
        }
        told
    }

    /// The bytes of a request line the last read ended within, 0 if none
    /// ([`HeadScan::unfinished_line`]).
    pub(crate) fn unfinished_line(&self) -> usize {
        match self.part {
            Part::Head => self.head.unfinished_line(),
            _ => 0,
        }
    }

    /// The request whose answer held bytes wait for ([`Told::hold`]).
    pub(crate) fn holding_for(&self) -> u64 {
        self.index
    }

    fn next_request(&mut self) {
        self.index += 1;
        self.part = Part::Head;
        self.head.reset();
    }
}

/// Takes up to `rest` of the `available` bytes: how many it took.
fn count_through(rest: &mut u64, available: usize) -> usize {
    let take = usize::try_from(*rest).map_or(available, |rest| rest.min(available));
    *rest -= take as u64;
    take
}

/// Goes through a chunked body from `bytes[i]`: where it stopped, and whether the body ended
/// there (`Some(true)`), or has a framing hyper refuses (`Some(false)`).
fn chunked(chunk: &mut Chunk, bytes: &[u8], mut i: usize) -> (usize, Option<bool>) {
    while let Some(&b) = bytes.get(i) {
        if let Chunk::Data(rest) = chunk {
            i += count_through(rest, bytes.len() - i);
            if *rest == 0 {
                *chunk = Chunk::DataCr;
            }
            continue;
        }
        i += 1;
        *chunk = match (*chunk, b) {
            (Chunk::Start, _) => match hex(0, b) {
                Some(size) => Chunk::Size(size),
                None => return (i, Some(false)),
            },
            (Chunk::Size(size), b' ' | b'\t') => Chunk::SizeSpace(size),
            (Chunk::Size(size) | Chunk::SizeSpace(size), b';') => Chunk::Extension(size),
            (Chunk::Size(size) | Chunk::SizeSpace(size) | Chunk::Extension(size), b'\r') => {
                Chunk::SizeLf(size)
            }
            (Chunk::Size(size), _) => match hex(size, b) {
                Some(size) => Chunk::Size(size),
                None => return (i, Some(false)),
            },
            (Chunk::SizeSpace(size), b' ' | b'\t') => Chunk::SizeSpace(size),
            (Chunk::Extension(_), b'\n') => return (i, Some(false)),
            (Chunk::Extension(size), _) => Chunk::Extension(size),
            (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
            (Chunk::SizeLf(size), b'\n') => Chunk::Data(size),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Start,
            (Chunk::EndCr, b'\r') => Chunk::EndLf,
            (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
            (Chunk::EndCr | Chunk::Trailer, _) => Chunk::Trailer,
            (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
            (Chunk::EndLf, b'\n') => return (i, Some(true)),
            _ => return (i, Some(false)),
        };
    }
    (i, None)
}

/// `size` with the hex digit `b` after it; `None` if `b` is not one, or the size overflows.
fn hex(size: u64, b: u8) -> Option<u64> {
    let digit = char::from(b).to_digit(16)?;
    size.checked_mul(16)?.checked_add(u64::from(digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const BAD: &[u8] = b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n";
    const SMUGGLE: &[u8] =
        b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    fn scan() -> RequestScan {
        RequestScan::new(65536, 100)
    }

    /// `stream` in pieces cut at every pair of places, with every request before the last
    /// answered: the refusals and the first request that named both framings.
    fn cut_anywhere(stream: &[u8], answered: u64) -> Told {
        let whole = scan().feed(stream, Some(answered));
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let mut s = scan();
                let mut told = Told::default();
                for piece in [&stream[..a], &stream[a..b], &stream[b..]] {
                    let t = s.feed(piece, Some(answered));
                    told.both_framings = told.both_framings.or(t.both_framings);
                    told.refuse = told.refuse.or(t.refuse);
                }
                assert_eq!(
                    told.both_framings, whole.both_framings,
                    "cut at {a} and {b}"
                );
            }
        }
        whole
    }

    #[test]
    fn heads_after_bodies_of_every_framing_are_found() {
        let stream = [
            GET,
            b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nX: \x01\r\n\r\n\r\n\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5;ext=1\r\n\x00\r\n\x01\n\r\nA\r\nGET / HTTP\r\n0\r\nTrailer: \x01\r\n\r\n",
            SMUGGLE,
        ]
        .concat();
        // The body bytes that look like bad heads are bodies; the fourth request is the one
        // with both framings.
        let told = cut_anywhere(&stream, 0);
        assert_eq!(told.both_framings, Some(4));
        assert_eq!(told.refuse, None);
    }

    #[test]
    fn a_bad_head_is_refused_with_the_requests_ahead_of_it_kept() {
        let refusal = |index, keep| {
            Some(Refusal {
                fault: HeadFault::InvalidByte,
                index,
                keep,
            })
        };
        // First on the connection.
        assert_eq!(scan().feed(BAD, Some(0)).refuse, refusal(1, 0));
        // After a request, in a read of its own, whether that request is answered yet or not.
        let mut s = scan();
        assert_eq!(s.feed(GET, Some(0)), Told::default());
        assert_eq!(s.feed(BAD, None).refuse, refusal(2, 0));
        // Read with the requests ahead of it, of every framing: those are kept, and nothing
        // more is read.
        let post = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n";
        let ahead = [GET, post, chunked].concat();
        let mut s = scan();
        let told = s.feed(&[&ahead, BAD].concat(), Some(0));
        assert_eq!(told.refuse, refusal(4, ahead.len()));
        assert_eq!(s.feed(GET, Some(3)), Told::default());
        // A head begun in an earlier read: nothing of this read is kept (hyper holds the
        // head's first bytes, an unfinished head it does not answer).
        let mut s = scan();
        s.feed(GET, Some(0));
        s.feed(&BAD[..10], Some(0));
        assert_eq!(s.feed(&BAD[10..], Some(1)).refuse, refusal(2, 0));
    }

    const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n";

    #[test]
    fn what_follows_a_request_that_may_switch_waits_for_its_answer() {
        // Bytes before the request is answered may be tunnelled: they are held back.
        let mut s = scan();
        assert_eq!(s.feed(UPGRADE, Some(0)), Told::default());
        assert_eq!(s.feed(BAD, None).hold, Some(0));
        assert_eq!(s.holding_for(), 1);
        // Read with the request, what follows its head is held back from the head's end.
        let mut s = scan();
        let told = s.feed(&[UPGRADE, SMUGGLE].concat(), Some(0));
        assert_eq!(told.hold, Some(UPGRADE.len()));
        assert_eq!(told.refuse, None);
        // Held, then read again once the request was answered: the next head.
        assert_eq!(s.feed(SMUGGLE, Some(1)).both_framings, Some(2));
        // A request that may switch and names a body: where the body ends is not followed.
        let mut s = scan();
        s.feed(
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\nContent-Length: 3\r\n\r\n",
            Some(0),
        );
        assert_eq!(s.feed(b"abc", Some(1)), Told::default());
        assert_eq!(s.part, Part::Stopped);
    }

    #[test]
    fn a_request_answered_without_a_switch_is_followed_by_the_next_head() {
        // (A tunnel, once opened, is never fed to the scan.)
        let mut s = scan();
        s.feed(UPGRADE, Some(0));
        assert_eq!(
            s.feed(SMUGGLE, Some(1)),
            Told {
                both_framings: Some(2),
                refuse: None,
                hold: None,
            }
        );
        let mut s = scan();
        s.feed(UPGRADE, Some(0));
        assert_eq!(
            s.feed(BAD, Some(1)).refuse.map(|r| r.fault),
            Some(HeadFault::InvalidByte)
        );
    }

    #[test]
    fn a_chunked_framing_hyper_refuses_stops_the_scan() {
        for body in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nabcdeX",
            b"fffffffffffffffff1\r\n",
        ] {
            let mut s = scan();
            s.feed(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Some(0),
            );
            s.feed(body, Some(0));
            assert_eq!(s.part, Part::Stopped, "{}", String::from_utf8_lossy(body));
        }
    }
}
