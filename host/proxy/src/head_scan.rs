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

use crate::request_line::{self, Line};

/// How what follows a head is framed, as hyper frames it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Body {
    /// Nothing: the next head follows.
    None,
    Length(u64),
    /// By the transfer coding (which hyper takes over a length).
    Chunked,
    /// None, and the request may switch protocols (`Upgrade`, `CONNECT`): what follows is
    /// tunnelled if it does, the next head if it is answered without switching.
    Switch,
    /// No telling: the request may switch protocols and names a body as well.
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
    /// A request line that is not a method, a target and `HTTP/1.0` or `HTTP/1.1`
    /// ([`crate::request_line`]).
    InvalidRequestLine,
    /// A request target that is neither a path nor a URI.
    InvalidTarget,
    /// A request target longer than hyper takes (64 KiB less two bytes).
    TargetTooLong,
    /// A `Transfer-Encoding` other than `chunked` alone, or one on a `CONNECT`: Envoy's 501.
    UnsupportedCoding,
    /// A `Transfer-Encoding` on an HTTP/1.0 request, whose framing is then faulty (RFC 9112
    /// §6.1).
    CodingInHttp10,
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
            HeadFault::InvalidRequestLine => (
                ErrorKind::BadRequest,
                "the request line is not a method, a target and HTTP/1.0 or HTTP/1.1",
                "http1.codec_error",
            ),
            HeadFault::InvalidTarget => (
                ErrorKind::BadRequest,
                "the request target is not a path or a URI",
                "http1.invalid_url",
            ),
            HeadFault::TargetTooLong => (
                ErrorKind::HeadersTooLarge,
                "the request target is longer than 65,534 bytes",
                "http1.headers_too_large",
            ),
            HeadFault::UnsupportedCoding => (
                ErrorKind::NotImplemented,
                "the request's Transfer-Encoding is not chunked alone",
                "http1.invalid_transfer_encoding",
            ),
            HeadFault::CodingInHttp10 => (
                ErrorKind::BadRequest,
                "an HTTP/1.0 request has a Transfer-Encoding",
                "http1.invalid_transfer_encoding",
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

/// The only transfer coding taken, alone.
const CHUNKED: &[u8] = b"chunked";

/// RFC 9110 §5.6.2 `tchar`, by byte: a table, since a name is read a byte at a time.
pub(crate) static TOKEN: [bool; 256] = {
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
    /// Letters of [`CHUNKED`] matched in the `Transfer-Encoding` value being read.
    coding: usize,
    /// The request line's bytes in reads before this one, when it spans reads.
    line: Vec<u8>,
    /// What the request line said, once it has ended.
    request_line: Option<Line>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum At {
    /// Before the request line: empty lines a client may send first (RFC 9112 §2.2).
    Start,
    RequestLine,
    /// At or in a field name, or at the empty line that ends the head.
    Name,
    Value,
    /// In a `Content-Length` value: one number, as hyper's server reads it (it refuses the
    /// list `4, 4` that RFC 9110 §8.6 lets a recipient take as 4; several fields that agree
    /// it takes).
    Length,
    /// In a `Transfer-Encoding` value.
    Coding,
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
            coding: 0,
            line: Vec::new(),
            request_line: None,
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

    /// The bytes of a request line the last read ended within (0 if it did not end within
    /// one): hyper would refuse some lines from their first bytes, before the line's end,
    /// where they are checked here.
    pub(crate) fn unfinished_line(&self) -> usize {
        if self.at == At::RequestLine {
            self.line.len()
        } else {
            0
        }
    }

    /// Whether the head, now ended, named both `Content-Length` and `Transfer-Encoding`.
    pub(crate) fn both_framings(&self) -> bool {
        self.seen & (LENGTH | CODING) == LENGTH | CODING
    }

    /// How what follows the head, now ended, is framed.
    pub(crate) fn body(&self) -> Body {
        if self.seen & UPGRADE != 0 {
            if self.seen & CODING != 0 || self.length.is_some_and(|n| n > 0) {
                Body::Unknown
            } else {
                Body::Switch
            }
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
        // Where the request line begins in this read.
        let mut line_from = 0;
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
                    // Empty lines before the request line are skipped, as httparse skips
                    // them: a CR only as part of a CRLF.
                    loop {
                        match bytes.get(i) {
                            Some(b'\n') => i += 1,
                            Some(b'\r') => match self.cr(bytes, i)? {
                                Some(next) => i = next,
                                None => i = n,
                            },
                            _ => break,
                        }
                    }
                    if i < n {
                        self.at = At::RequestLine;
                        line_from = i;
                        // A read that ends within the method counts as a CONNECT if it may
                        // be one.
                        let method = &bytes[i..n.min(i + CONNECT.len())];
                        if CONNECT.starts_with(method) {
                            self.seen |= UPGRADE;
                        }
                    }
                }
                At::RequestLine => {
                    i = next_control(bytes, i);
                    match bytes.get(i) {
                        None => self.keep_line(&bytes[line_from..]),
                        Some(b'\r' | b'\n') => {
                            self.request_line(&bytes[line_from..i])?;
                            // Its end is read as a field value's.
                            self.at = At::Value;
                        }
                        Some(_) => return Err(HeadFault::InvalidByte),
                    }
                }
                At::Value => {
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
                            if field == CODING {
                                self.coding_field()?;
                            }
                            self.seen |= field;
                            self.name_len = 0;
                            self.at = match field {
                                LENGTH => At::Length,
                                CODING => At::Coding,
                                _ => At::Value,
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
                At::Coding => i = self.coding(bytes, i)?,
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

    /// At a `Transfer-Encoding` field's name: whether the request may have one, and this one.
    fn coding_field(&mut self) -> Result<(), HeadFault> {
        let line = self.request_line.ok_or(HeadFault::InvalidRequestLine)?;
        if !line.http11 {
            Err(HeadFault::CodingInHttp10)
        } else if line.connect || self.seen & CODING != 0 {
            // A second field makes a list of codings.
            Err(HeadFault::UnsupportedCoding)
        } else {
            self.coding = 0;
            Ok(())
        }
    }

    /// Reads a `Transfer-Encoding` value from `bytes[i]` on, which must be `chunked` (in any
    /// case, space around it allowed): where it stopped, as [`Self::length`].
    fn coding(&mut self, bytes: &[u8], mut i: usize) -> Result<usize, HeadFault> {
        while let Some(&b) = bytes.get(i) {
            match b {
                b'\r' | b'\n' if self.coding == CHUNKED.len() => {
                    self.at = At::Value;
                    return Ok(i);
                }
                b' ' | b'\t' if self.coding == 0 || self.coding == CHUNKED.len() => {}
                _ if CHUNKED.get(self.coding) == Some(&b.to_ascii_lowercase()) => self.coding += 1,
                _ if b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n') || b == 0x7f => {
                    return Err(HeadFault::InvalidByte);
                }
                _ => return Err(HeadFault::UnsupportedCoding),
            }
            i += 1;
        }
        Ok(i)
    }

    /// The request line has ended with `part` (its bytes in this read).
    fn request_line(&mut self, part: &[u8]) -> Result<(), HeadFault> {
        let line = if self.line.is_empty() {
            request_line::check(part)?
        } else {
            let mut whole = std::mem::take(&mut self.line);
            whole.extend_from_slice(part);
            request_line::check(&whole)?
        };
        self.request_line = Some(line);
        Ok(())
    }

    /// Keeps the part of the request line a read ended within.
    #[cold]
    fn keep_line(&mut self, part: &[u8]) {
        self.line.extend_from_slice(part);
    }

    /// A `Content-Length` field's number has ended: it must agree with the fields before it.
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

/// The high bit of each byte of `y` that is zero, and of no other: exact, since no carry
/// crosses from one byte into the next.
#[inline]
pub(crate) fn zero_bytes(y: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((y & LOW7).wrapping_add(LOW7)) | y | LOW7)
}

/// The index of the first byte from `i` on that is a control byte (below 0x20) or DEL, or the
/// length of `bytes` if none is. Eight bytes a step: the high bit of each such byte, and of no
/// other.
#[inline]
fn next_control(bytes: &[u8], mut i: usize) -> usize {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH3: u64 = 0xe0e0_e0e0_e0e0_e0e0;
    let zeros = zero_bytes;
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
mod tests;
