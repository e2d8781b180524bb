//! Which framing fields a client's HTTP/1 request head names, read off its bytes as they
//! arrive.
//!
//! hyper frames a request that has both `Content-Length` and `Transfer-Encoding` by the coding
//! alone and drops the length before the handler sees the request, as RFC 9112 §6.3 allows.
//! Such a request is the classic smuggling attempt, and Envoy refuses it with 400
//! (`http1.content_length_and_chunked_not_allowed`); refusing it too needs the head as it was
//! sent. The scan finds each line's start, eight bytes a step, and looks only there.

/// The field names looked for, with their colon: a name and its colon are never apart
/// (RFC 9112 §5.1; hyper refuses a head where they are).
const LENGTH_NAME: &[u8] = b"content-length:";
const CODING_NAME: &[u8] = b"transfer-encoding:";
/// Enough of a line's start to tell whether it is one of them.
const LONGEST: usize = CODING_NAME.len();

const LENGTH: u8 = 1;
const CODING: u8 = 2;

/// The scan of one connection's request heads, one at a time.
pub(crate) struct HeadScan {
    /// Requests the connection had started when the head being scanned began.
    head_of: u64,
    at: At,
    /// The start of a header line that the last read cut short.
    carry: [u8; LONGEST],
    carry_len: u8,
    /// Which of the fields the head named ([`LENGTH`], [`CODING`]).
    seen: u8,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum At {
    /// In the request line, which names no field.
    RequestLine,
    /// At the start of a line: a field or the head's end.
    LineStart,
    /// Past the start of a field line.
    InLine,
    /// Past the head's end: the rest is body (or the next head, read with this one).
    Done,
}

/// What a line's first bytes say.
enum Line {
    /// The empty line that ends the head.
    End,
    /// One of the fields.
    Field(u8),
    /// Any other line.
    Other,
    /// Too few bytes to tell.
    Unsure,
}

impl HeadScan {
    pub(crate) fn new() -> Self {
        Self {
            head_of: 0,
            at: At::RequestLine,
            carry: [0; LONGEST],
            carry_len: 0,
            seen: 0,
        }
    }

    /// Reads `bytes` of the head that follows the connection's first `started` requests.
    /// True when they end a head that named both a length and a transfer coding.
    pub(crate) fn feed(&mut self, started: u64, bytes: &[u8]) -> bool {
        if started != self.head_of {
            *self = Self::new();
            self.head_of = started;
        }
        if self.carry_len > 0
            && let Some(told) = self.resume(bytes)
        {
            return told;
        }
        match self.at {
            At::Done => return false,
            At::LineStart => {
                if let Some(told) = self.line_at(bytes, 0) {
                    return told;
                }
            }
            At::RequestLine | At::InLine => {}
        }
        // From here on, a line starts after each `\n`. Eight bytes a step: the high bit of
        // each byte that is `\n`, and of no other byte.
        const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
        const LF: u64 = 0x0a0a_0a0a_0a0a_0a0a;
        let (words, tail) = bytes.as_chunks::<8>();
        for (n, word) in words.iter().enumerate() {
            let x = u64::from_le_bytes(*word) ^ LF;
            let mut newlines = !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7);
            while newlines != 0 {
                let after = n * 8 + (newlines.trailing_zeros() / 8) as usize + 1;
                newlines &= newlines - 1;
                if let Some(told) = self.line_at(bytes, after) {
                    return told;
                }
            }
        }
        let base = bytes.len() - tail.len();
        for (k, &b) in tail.iter().enumerate() {
            if b == b'\n'
                && let Some(told) = self.line_at(bytes, base + k + 1)
            {
                return told;
            }
        }
        false
    }

    /// Takes in the line that starts at `bytes[i]`; `Some` as for [`HeadScan::line`].
    #[inline]
    fn line_at(&mut self, bytes: &[u8], i: usize) -> Option<bool> {
        // Most lines begin with a letter neither field name does.
        if let Some(first) = bytes.get(i)
            && !matches!(first, b'\r' | b'\n' | b'c' | b'C' | b't' | b'T')
        {
            self.at = At::InLine;
            return None;
        }
        self.line(&bytes[i..])
    }

    /// Goes on with the line the last read cut short; `Some` as for [`HeadScan::line`]. The
    /// rest of that line is in `bytes` from their first byte on.
    #[cold]
    fn resume(&mut self, bytes: &[u8]) -> Option<bool> {
        let had = usize::from(self.carry_len);
        let more = (LONGEST - had).min(bytes.len());
        let mut start = self.carry;
        start[had..had + more].copy_from_slice(&bytes[..more]);
        self.carry_len = 0;
        self.line(&start[..had + more])
    }

    /// Takes in the start of a line; `Some` when the scan stops here (at the head's end,
    /// saying whether it named both fields, or for want of bytes).
    fn line(&mut self, start: &[u8]) -> Option<bool> {
        match classify(start) {
            Line::End => {
                self.at = At::Done;
                Some(self.seen == LENGTH | CODING)
            }
            Line::Field(bit) => {
                self.seen |= bit;
                self.at = At::InLine;
                None
            }
            Line::Other => {
                self.at = At::InLine;
                None
            }
            Line::Unsure => {
                self.at = At::LineStart;
                // Shorter than LONGEST, or it would have been told.
                self.carry[..start.len()].copy_from_slice(start);
                self.carry_len = start.len() as u8;
                Some(false)
            }
        }
    }
}

fn classify(start: &[u8]) -> Line {
    let name = match start.first() {
        None => return Line::Unsure,
        Some(b'\n') => return Line::End,
        Some(b'\r') => {
            return match start.get(1) {
                None => Line::Unsure,
                Some(b'\n') => Line::End,
                // Not HTTP: hyper refuses it.
                Some(_) => Line::Other,
            };
        }
        Some(b'c' | b'C') => LENGTH_NAME,
        Some(b't' | b'T') => CODING_NAME,
        Some(_) => return Line::Other,
    };
    let n = start.len().min(name.len());
    if !start[..n].eq_ignore_ascii_case(&name[..n]) {
        Line::Other
    } else if n < name.len() {
        Line::Unsure
    } else if name.len() == LENGTH_NAME.len() {
        Line::Field(LENGTH)
    } else {
        Line::Field(CODING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMUGGLE: &[u8] = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    fn whole(head: &[u8]) -> bool {
        HeadScan::new().feed(0, head)
    }

    #[test]
    fn a_head_with_both_fields_is_told_at_its_end() {
        assert!(whole(SMUGGLE));
        assert!(whole(
            b"POST / HTTP/1.1\ntransfer-encoding: chunked\nCONTENT-LENGTH: 4\n\n"
        ));
    }

    #[test]
    fn either_field_alone_is_fine() {
        assert!(!whole(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"
        ));
        assert!(!whole(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ));
        assert!(!whole(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn names_that_only_begin_alike_and_values_do_not_count() {
        assert!(!whole(
            b"POST / HTTP/1.1\r\nContent-Type: x\r\nTransfer-Encoding: chunked\r\nX: content-length: 4\r\n\r\n"
        ));
        assert!(!whole(
            b"POST / HTTP/1.1\r\nContent-Lengthy: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
    }

    #[test]
    fn the_request_line_and_the_body_do_not_count() {
        assert!(!whole(
            b"POST /content-length: HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!whole(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ncontent-length: 1\r\n"
        ));
    }

    #[test]
    fn a_head_cut_anywhere_across_reads_is_read_the_same() {
        for cut in 0..=SMUGGLE.len() {
            for second in cut..=SMUGGLE.len() {
                let mut scan = HeadScan::new();
                let told = scan.feed(0, &SMUGGLE[..cut])
                    | scan.feed(0, &SMUGGLE[cut..second])
                    | scan.feed(0, &SMUGGLE[second..]);
                assert!(told, "cut at {cut} and {second}");
            }
        }
        // One byte at a time, with both names split.
        let mut scan = HeadScan::new();
        let told = SMUGGLE
            .chunks(1)
            .fold(false, |told, b| told | scan.feed(0, b));
        assert!(told);
    }

    #[test]
    fn lines_are_found_wherever_they_fall_in_a_word() {
        // A path of every length moves every newline through every place in a word; a 0x0b
        // (one past `\n`) before each field must not be taken for one.
        for pad in 0..17 {
            let path = "p".repeat(pad);
            let both = format!(
                "POST /{path} HTTP/1.1\r\nX: \x0b\r\nContent-Length: 4\r\nX: \x0b\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            assert!(whole(both.as_bytes()), "{pad}");
            let one = format!(
                "POST /{path} HTTP/1.1\r\nX: \x0bcontent-length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            assert!(!whole(one.as_bytes()), "{pad}");
        }
    }

    #[test]
    fn each_request_head_is_scanned_afresh() {
        let mut scan = HeadScan::new();
        assert!(!scan.feed(0, b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"));
        // The second head, after the first request started, names only the coding.
        assert!(!scan.feed(
            1,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ));
        assert!(scan.feed(2, SMUGGLE));
    }
}
