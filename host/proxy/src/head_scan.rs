//! A client's HTTP/1 request head, checked off its bytes as they arrive and before the HTTP
//! parser sees them.
//!
//! Two things need the head as it was sent. hyper frames a request that has both
//! `Content-Length` and `Transfer-Encoding` by the coding alone and drops the length before the
//! handler sees the request, as RFC 9112 §6.3 allows; such a request is the classic smuggling
//! attempt, and Envoy refuses it with 400 (`http1.content_length_and_chunked_not_allowed`).
//! And hyper answers a head it cannot parse itself, with an empty body, where every other error
//! the gateway gives is JSON: a head with bytes HTTP does not allow, or over the listener's
//! limits, is told here and withheld from hyper, and the connection answers it.
//!
//! The scan skips eight bytes a step through the request line and field values, stopping only
//! at control bytes (a line's end among them), and reads field names byte by byte. Where the
//! head's body ends, and so where the next head begins, is [`crate::request_scan`]'s to follow.

use rustygate_core::ErrorKind;

/// How what follows a head is framed, as hyper frames it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Body {
    /// Nothing: the next head follows.
    None,
    Length(u64),
    /// By the transfer coding (which hyper takes over a length).
    Chunked,
    /// No telling: the request may switch protocols (`Upgrade`, `CONNECT`).
    Unknown,
}

/// Why a head is refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum HeadFault {
    /// A control byte or DEL in the request line or a field value, or a CR that no LF follows.
    InvalidByte,
    /// A field line that is not a token and a colon: a space before the colon, a folded
    /// line, a line with no colon.
    InvalidName,
    /// A `Content-Length` that is not a number, or whose values disagree.
    InvalidLength,
    /// More bytes than `max_header_bytes`.
    TooLarge,
    /// More fields than `max_headers`.
    TooManyFields,
}

impl HeadFault {
    /// The error the client is answered with, what it says, and Envoy's response code details
    /// for the same fault.
    pub(crate) fn answer(self) -> (ErrorKind, &'static str, &'static str) {
        match self {
            HeadFault::InvalidByte => (
                ErrorKind::BadRequest,
                "the request head has a byte HTTP does not allow there",
                "http1.invalid_characters",
            ),
            HeadFault::InvalidName => (
                ErrorKind::BadRequest,
                "a line of the request head is not a field name and a colon",
                "http1.invalid_characters",
            ),
            HeadFault::InvalidLength => (
                ErrorKind::BadRequest,
                "the request's Content-Length is not one number",
                "http1.codec_error",
            ),
            HeadFault::TooLarge => (
                ErrorKind::HeadersTooLarge,
                "the request head is larger than the listener's max_header_bytes",
                "http1.headers_too_large",
            ),
            HeadFault::TooManyFields => (
                ErrorKind::HeadersTooLarge,
                "the request head has more fields than the listener's max_headers",
                "http1.headers_too_large",
            ),
        }
    }
}

const LENGTH_NAME: &[u8] = b"content-length";
const CODING_NAME: &[u8] = b"transfer-encoding";
/// The longest name worth remembering when a read ends within it.
const LONGEST: usize = CODING_NAME.len();

const UPGRADE_NAME: &[u8] = b"upgrade";
/// How a request line that opens a tunnel begins.
const CONNECT: &[u8] = b"CONNECT ";

const LENGTH: u8 = 1;
const CODING: u8 = 2;
const UPGRADE: u8 = 4;

/// RFC 9110 §5.6.2 `tchar`, by byte: a table, since a name is read a byte at a time.
static TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// The scan of one request head.
pub(crate) struct HeadScan {
    max_bytes: usize,
    max_fields: usize,
    at: At,
    /// Bytes of the head so far.
    size: usize,
    fields: usize,
    /// The last byte read was a CR, which only an LF may follow.
    after_cr: bool,
    /// Bytes of the field name being read, in reads before this one.
    name_len: usize,
    /// Their first bytes.
    carry: [u8; LONGEST],
    /// Which of the fields that frame what follows the head it named ([`LENGTH`],
    /// [`CODING`], [`UPGRADE`], the last also for a `CONNECT`).
    seen: u8,
    /// The body length its `Content-Length` values agreed on so far.
    length: Option<u64>,
    /// The digits of the `Content-Length` value being read, and whether space has followed
    /// them.
    number: Option<u64>,
    number_ended: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum At {
    /// Before the request line: empty lines a client may send first (RFC 9112 §2.2).
    Start,
    RequestLine,
    /// At or in a field name, or at the empty line that ends the head.
    Name,
    Value,
    /// In a `Content-Length` value: numbers, all the same, separated by commas (RFC 9110
    /// §8.6), as hyper reads it.
    Length,
    /// Past the head's end (the rest is body, or the next head read with this one), or
    /// refused.
    Done,
}

impl HeadScan {
    /// Under the listener's `max_header_bytes` and `max_headers`.
    pub(crate) fn new(max_bytes: usize, max_fields: usize) -> Self {
        Self {
            max_bytes,
            max_fields,
            at: At::Start,
            size: 0,
            fields: 0,
            after_cr: false,
            name_len: 0,
            carry: [0; LONGEST],
            seen: 0,
            length: None,
            number: None,
            number_ended: false,
        }
    }

    /// Ready for the next head.
    pub(crate) fn reset(&mut self) {
        *self = Self::new(self.max_bytes, self.max_fields);
    }

    /// Reads the next `bytes` of the head: `Some(n)` once it has ended, `n` bytes in (the rest
    /// follow it); `None` while it goes on past them.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, HeadFault> {
        if self.at == At::Done {
            return Ok(Some(0));
        }
        let used = self.run(bytes)?;
        self.size += used;
        // Unfinished at the limit, it can only end over it.
        if self.size > self.max_bytes || (self.size == self.max_bytes && self.at != At::Done) {
            return Err(HeadFault::TooLarge);
        }
        Ok((self.at == At::Done).then_some(used))
    }

    /// Whether the head, now ended, named both `Content-Length` and `Transfer-Encoding`.
    pub(crate) fn both_framings(&self) -> bool {
        self.seen & (LENGTH | CODING) == LENGTH | CODING
    }

    /// How what follows the head, now ended, is framed.
    pub(crate) fn body(&self) -> Body {
        if self.seen & UPGRADE != 0 {
            Body::Unknown
        } else if self.seen & CODING != 0 {
            Body::Chunked
        } else {
            match self.length {
                Some(n) if n > 0 => Body::Length(n),
                _ => Body::None,
            }
        }
    }

    /// Goes through `bytes`: how many of them are the head's.
    fn run(&mut self, bytes: &[u8]) -> Result<usize, HeadFault> {
        let n = bytes.len();
        let mut i = 0;
        if self.after_cr {
            match bytes.first() {
                None => return Ok(0),
                Some(b'\n') => self.after_cr = false,
                Some(_) => return Err(HeadFault::InvalidByte),
            }
        }
        while i < n {
            match self.at {
                At::Start => {
                    while i < n && matches!(bytes[i], b'\r' | b'\n') {
                        i += 1;
                    }
                    if i < n {
                        self.at = At::RequestLine;
                        // A read that ends within the method counts as a CONNECT if it may
                        // be one.
                        let method = &bytes[i..n.min(i + CONNECT.len())];
                        if CONNECT.starts_with(method) {
                            self.seen |= UPGRADE;
                        }
                    }
                }
                At::RequestLine | At::Value => {
                    i = next_control(bytes, i);
                    match bytes.get(i) {
                        None => {}
                        Some(b'\t') => i += 1,
                        Some(b'\r') => match self.cr(bytes, i)? {
                            Some(next) => {
                                i = next;
                                self.at = At::Name;
                            }
                            None => i = n,
                        },
                        Some(b'\n') => {
                            i += 1;
                            self.at = At::Name;
                        }
                        Some(_) => return Err(HeadFault::InvalidByte),
                    }
                }
                At::Name => {
                    let start = i;
                    while let Some(&b) = bytes.get(i)
                        && TOKEN[usize::from(b)]
                    {
                        i += 1;
                    }
                    let here = &bytes[start..i];
                    match bytes.get(i) {
                        None => {
                            self.stash(here);
                        }
                        Some(b':') if self.name_len + here.len() > 0 => {
                            i += 1;
                            self.fields += 1;
                            if self.fields > self.max_fields {
                                return Err(HeadFault::TooManyFields);
                            }
                            let field = self.framing_field(here);
                            self.seen |= field;
                            self.name_len = 0;
                            self.at = if field == LENGTH {
                                At::Length
                            } else {
                                At::Value
                            };
                        }
                        Some(b'\r') if self.name_len + here.len() == 0 => {
                            match self.cr(bytes, i)? {
                                Some(next) => {
                                    self.at = At::Done;
                                    return Ok(next);
                                }
                                None => i = n,
                            }
                        }
                        Some(b'\n') if self.name_len + here.len() == 0 => {
                            self.at = At::Done;
                            return Ok(i + 1);
                        }
                        Some(_) => return Err(HeadFault::InvalidName),
                    }
                }
                At::Length => i = self.length(bytes, i)?,
                // Left by returning, above.
                At::Done => return Ok(i),
            }
        }
        Ok(n)
    }

    /// Reads a `Content-Length` value from `bytes[i]` on: where it stopped (at the line's end,
    /// left to [`At::Value`], or at the end of `bytes`).
    fn length(&mut self, bytes: &[u8], mut i: usize) -> Result<usize, HeadFault> {
        while let Some(&b) = bytes.get(i) {
            match b {
                b'0'..=b'9' if !self.number_ended => {
                    let number = self.number.unwrap_or(0).checked_mul(10);
                    let number = number.and_then(|v| v.checked_add(u64::from(b - b'0')));
                    self.number = Some(number.ok_or(HeadFault::InvalidLength)?);
                }
                b' ' | b'\t' => self.number_ended = self.number.is_some(),
                b',' => self.length_element()?,
                b'\r' | b'\n' => {
                    self.length_element()?;
                    self.at = At::Value;
                    return Ok(i);
                }
                _ => return Err(HeadFault::InvalidLength),
            }
            i += 1;
        }
        Ok(i)
    }

    /// One number of a `Content-Length` value has ended.
    fn length_element(&mut self) -> Result<(), HeadFault> {
        let number = self.number.take().ok_or(HeadFault::InvalidLength)?;
        self.number_ended = false;
        match self.length {
            Some(agreed) if agreed != number => Err(HeadFault::InvalidLength),
            _ => {
                self.length = Some(number);
                Ok(())
            }
        }
    }

    /// At the CR at `bytes[i]`: the index past its LF, or `None` when the read ends before the
    /// LF (the next read must begin with it).
    #[inline]
    fn cr(&mut self, bytes: &[u8], i: usize) -> Result<Option<usize>, HeadFault> {
        match bytes.get(i + 1) {
            Some(b'\n') => Ok(Some(i + 2)),
            Some(_) => Err(HeadFault::InvalidByte),
            None => {
                self.after_cr = true;
                Ok(None)
            }
        }
    }

    /// Keeps the part of a name a read ended within.
    #[cold]
    fn stash(&mut self, part: &[u8]) {
        let had = self.name_len;
        if had + part.len() <= LONGEST {
            self.carry[had..had + part.len()].copy_from_slice(part);
        }
        self.name_len += part.len();
    }

    /// Which of the fields that frame what follows the head the name that ends with `here` is,
    /// if one is.
    #[inline]
    fn framing_field(&self, here: &[u8]) -> u8 {
        let len = self.name_len + here.len();
        if len != LENGTH_NAME.len() && len != CODING_NAME.len() && len != UPGRADE_NAME.len() {
            return 0;
        }
        let mut whole = [0u8; LONGEST];
        let name = if self.name_len == 0 {
            here
        } else {
            whole[..self.name_len].copy_from_slice(&self.carry[..self.name_len]);
            whole[self.name_len..len].copy_from_slice(here);
            &whole[..len]
        };
        if name.eq_ignore_ascii_case(LENGTH_NAME) {
            LENGTH
        } else if name.eq_ignore_ascii_case(CODING_NAME) {
            CODING
        } else if name.eq_ignore_ascii_case(UPGRADE_NAME) {
            UPGRADE
        } else {
            0
        }
    }
}

/// The index of the first byte from `i` on that is a control byte (below 0x20) or DEL, or the
/// length of `bytes` if none is. Eight bytes a step: the high bit of each such byte, and of no
/// other.
#[inline]
fn next_control(bytes: &[u8], mut i: usize) -> usize {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH3: u64 = 0xe0e0_e0e0_e0e0_e0e0;
    // Each byte that is zero, exactly (no carry crosses a byte).
    let zeros = |y: u64| !(((y & LOW7).wrapping_add(LOW7)) | y | LOW7);
    while let Some(word) = bytes.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let found = zeros(x & HIGH3) | zeros(x ^ LOW7);
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && bytes[i] >= 0x20 && bytes[i] != 0x7f {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMUGGLE: &[u8] = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    /// What a head says, for these tests.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Verdict {
        /// Nothing against it: it goes on, or it ended well.
        Fine,
        /// It ended, having named both framings.
        BothFramings,
        Refuse(HeadFault),
    }

    fn verdict(scan: &mut HeadScan, bytes: &[u8]) -> Verdict {
        match scan.feed(bytes) {
            Err(fault) => Verdict::Refuse(fault),
            Ok(Some(_)) if scan.both_framings() => Verdict::BothFramings,
            Ok(_) => Verdict::Fine,
        }
    }

    fn whole(head: &[u8]) -> Verdict {
        verdict(&mut HeadScan::new(65536, 100), head)
    }

    /// `head` fed in pieces cut at `cuts`; the first verdict that is not `Fine`.
    fn in_pieces(head: &[u8], cuts: &[usize]) -> Verdict {
        let mut scan = HeadScan::new(65536, 100);
        let mut from = 0;
        for &to in cuts.iter().chain([head.len()].iter()) {
            let told = verdict(&mut scan, &head[from..to]);
            if told != Verdict::Fine {
                return told;
            }
            from = to;
        }
        Verdict::Fine
    }

    /// `head`, cut at every pair of places, says `expected` every time.
    fn cut_anywhere(head: &[u8], expected: Verdict) {
        for a in 0..=head.len() {
            for b in a..=head.len() {
                assert_eq!(in_pieces(head, &[a, b]), expected, "cut at {a} and {b}");
            }
        }
        let ones: Vec<usize> = (1..head.len()).collect();
        assert_eq!(in_pieces(head, &ones), expected, "a byte at a time");
    }

    #[test]
    fn a_head_with_both_framing_fields_is_told_at_its_end() {
        assert_eq!(whole(SMUGGLE), Verdict::BothFramings);
        assert_eq!(
            whole(b"POST / HTTP/1.1\ntransfer-encoding: chunked\nCONTENT-LENGTH: 4\n\n"),
            Verdict::BothFramings
        );
    }

    #[test]
    fn either_framing_field_alone_is_fine() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(whole(head), Verdict::Fine);
        }
    }

    #[test]
    fn names_that_only_begin_alike_and_values_do_not_count() {
        assert_eq!(
            whole(b"POST / HTTP/1.1\r\nContent-Type: x\r\nTransfer-Encoding: chunked\r\nX: content-length: 4\r\n\r\n"),
            Verdict::Fine
        );
        assert_eq!(
            whole(b"POST / HTTP/1.1\r\nContent-Lengthy: 4\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Verdict::Fine
        );
    }

    #[test]
    fn the_request_line_and_the_body_do_not_count() {
        assert_eq!(
            whole(b"POST /content-length: HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Verdict::Fine
        );
        // Nor do the body's bytes, whatever they are.
        assert_eq!(
            whole(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ncontent-length: 1\r\n\x00\x01\x7f"),
            Verdict::Fine
        );
    }

    #[test]
    fn a_head_cut_anywhere_across_reads_is_read_the_same() {
        cut_anywhere(SMUGGLE, Verdict::BothFramings);
        cut_anywhere(
            b"GET /a HTTP/1.1\r\nHost: a\r\nX-Long-Name-Here: v\r\n\r\n",
            Verdict::Fine,
        );
        cut_anywhere(
            b"GET /a HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
            Verdict::Refuse(HeadFault::InvalidByte),
        );
        cut_anywhere(
            b"GET /a HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
            Verdict::Refuse(HeadFault::InvalidName),
        );
        cut_anywhere(
            b"GET /a HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            Verdict::Refuse(HeadFault::InvalidByte),
        );
    }

    #[test]
    fn control_bytes_are_found_wherever_they_fall_in_a_word() {
        // A path of every length moves each byte through every place in a word.
        for pad in 0..17 {
            let path = "p".repeat(pad);
            for bad in [0u8, 0x01, 0x0b, 0x1f, 0x7f] {
                let mut head = format!("GET /{path} HTTP/1.1\r\nX: v").into_bytes();
                head.push(bad);
                head.extend_from_slice(b"w\r\n\r\n");
                assert_eq!(
                    whole(&head),
                    Verdict::Refuse(HeadFault::InvalidByte),
                    "{pad} {bad:#x}"
                );
            }
            // Tabs, and bytes above ASCII (obs-text), are allowed in values.
            let fine = format!("GET /{path} HTTP/1.1\r\nX: a\tb\u{e9}c\u{7e}\r\n\r\n");
            assert_eq!(whole(fine.as_bytes()), Verdict::Fine, "{pad}");
            let both = format!(
                "POST /{path} HTTP/1.1\r\nX: \x20\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            assert_eq!(whole(both.as_bytes()), Verdict::BothFramings, "{pad}");
        }
    }

    #[test]
    fn a_bad_byte_in_the_request_line_is_refused() {
        assert_eq!(
            whole(b"GET /a\x01b HTTP/1.1\r\n\r\n"),
            Verdict::Refuse(HeadFault::InvalidByte)
        );
        assert_eq!(
            whole(b"GET /a\x7f HTTP/1.1\r\n\r\n"),
            Verdict::Refuse(HeadFault::InvalidByte)
        );
    }

    #[test]
    fn field_lines_that_are_not_a_token_and_a_colon_are_refused() {
        for line in [
            &b"Bad Name: x"[..],
            b"Name : x",
            b" folded",
            b"\tfolded",
            b"no-colon",
            b": no name",
            b"N\xe9me: x",
            b"Na(me): x",
        ] {
            let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
            head.extend_from_slice(line);
            head.extend_from_slice(b"\r\n\r\n");
            assert_eq!(
                whole(&head),
                Verdict::Refuse(HeadFault::InvalidName),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            whole(b"GET / HTTP/1.1\r\nX-!#$%&'*+-.^_`|~09az: v\r\n\r\n"),
            Verdict::Fine
        );
    }

    #[test]
    fn content_lengths_must_be_one_number() {
        for (head, fine) in [
            (&b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n"[..], true),
            (b"POST / HTTP/1.1\r\ncontent-length:4 \r\n\r\n", true),
            (b"POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n", true),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
                true,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
                false,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: 4, 5\r\n\r\n", false),
            (b"POST / HTTP/1.1\r\nContent-Length: 4 4\r\n\r\n", false),
            (b"POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n", false),
            (b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", false),
            (b"POST / HTTP/1.1\r\nContent-Length: 4,\r\n\r\n", false),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                false,
            ),
        ] {
            let expected = if fine {
                Verdict::Fine
            } else {
                Verdict::Refuse(HeadFault::InvalidLength)
            };
            assert_eq!(whole(head), expected, "{}", String::from_utf8_lossy(head));
        }
        cut_anywhere(
            b"POST / HTTP/1.1\r\nContent-Length: 12\r\nContent-Length: 13\r\n\r\n",
            Verdict::Refuse(HeadFault::InvalidLength),
        );
        cut_anywhere(
            b"POST / HTTP/1.1\r\nContent-Length: 12, 12\r\n\r\nbody",
            Verdict::Fine,
        );
    }

    #[test]
    fn empty_lines_before_the_request_line_are_skipped() {
        assert_eq!(
            whole(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Verdict::Fine
        );
        assert_eq!(whole(b"\nGET / HTTP/1.1\nHost: a\n\n"), Verdict::Fine);
    }

    #[test]
    fn a_head_over_the_limits_is_refused() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789\r\n\r\n";
        let scan = |max_bytes, max_fields| HeadScan::new(max_bytes, max_fields);
        // Exactly the limit: fine. One byte less: over it, whether the head has ended or not.
        assert_eq!(verdict(&mut scan(head.len(), 100), head), Verdict::Fine);
        assert_eq!(
            verdict(&mut scan(head.len() - 1, 100), head),
            Verdict::Refuse(HeadFault::TooLarge)
        );
        let mut twenty = scan(20, 100);
        assert_eq!(verdict(&mut twenty, &head[..10]), Verdict::Fine);
        assert_eq!(
            verdict(&mut twenty, &head[10..20]),
            Verdict::Refuse(HeadFault::TooLarge)
        );
        // The body's bytes are not the head's.
        let with_body = [&head[..], b"body"].concat();
        assert_eq!(
            verdict(&mut scan(head.len(), 100), &with_body),
            Verdict::Fine
        );
        // Fields: two allowed, three not.
        assert_eq!(verdict(&mut scan(65536, 2), head), Verdict::Fine);
        assert_eq!(
            verdict(
                &mut scan(65536, 2),
                b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
            ),
            Verdict::Refuse(HeadFault::TooManyFields)
        );
    }

    #[test]
    fn what_follows_a_head_is_framed_as_hyper_frames_it() {
        let body = |head: &[u8]| {
            let mut scan = HeadScan::new(65536, 100);
            let used = scan.feed(head).unwrap().expect("the head ends");
            (used, scan.body())
        };
        assert_eq!(body(b"GET / HTTP/1.1\r\n\r\nGET"), (18, Body::None));
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            (38, Body::None)
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n").1,
            Body::Length(12)
        );
        // The coding over the length, as hyper takes it (when the listener lets both through).
        assert_eq!(body(SMUGGLE).1, Body::Chunked);
        // A protocol switch may follow.
        assert_eq!(
            body(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n").1,
            Body::Unknown
        );
        assert_eq!(
            body(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n").1,
            Body::Unknown
        );
        // A read cut within a method that may be CONNECT counts as one.
        let mut scan = HeadScan::new(65536, 100);
        assert_eq!(scan.feed(b"CON").unwrap(), None);
        assert_eq!(scan.feed(b"NECT a:443 HTTP/1.1\r\n\r\n").unwrap(), Some(23));
        assert_eq!(scan.body(), Body::Unknown);
    }
}
