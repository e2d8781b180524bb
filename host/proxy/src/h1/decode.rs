//! Response body framing on bytes alone: what is data, what are trailers, where the body ends.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::Error;
use super::head::{Framing, MAX_HEAD_BYTES, MAX_HEADERS};

/// Where in the body the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// This many bytes of a `Content-Length` body remain.
    Length(u64),
    /// Until the connection closes.
    Close,
    /// Before a chunk-size line.
    ChunkSize,
    /// This many bytes of the current chunk remain.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
    /// The body has ended.
    Done,
}

/// What the buffer yielded.
#[derive(Debug)]
pub(super) enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The buffer holds no more of the body: read more (or, in [`State::Close`], the end of
    /// the stream ends the body).
    NeedMore,
    End,
}

impl State {
    pub(super) fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        }
    }

    /// Takes the next piece of the body out of `buf`.
    pub(super) fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
        loop {
            match *self {
                State::Done => return Ok(Step::End),
                State::Length(_) | State::Close | State::ChunkData(_) if buf.is_empty() => {
                    return Ok(Step::NeedMore);
                }
                State::Length(left) => {
                    return Ok(self.counted(buf, left, State::Done, State::Length));
                }
                State::Close => return Ok(Step::Data(buf.split().freeze())),
                State::ChunkData(left) => {
                    return Ok(self.counted(buf, left, State::ChunkEnd, State::ChunkData));
                }
                State::ChunkSize => match chunk_size(buf)? {
                    Some((used, 0)) => {
                        buf.advance(used);
                        *self = State::Trailers;
                    }
                    Some((used, size)) => {
                        buf.advance(used);
                        *self = State::ChunkData(size);
                    }
                    None => return Ok(Step::NeedMore),
                },
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::Invalid("chunk data not followed by CRLF".into()));
                    }
                    buf.advance(2);
                    *self = State::ChunkSize;
                }
                State::Trailers => {
                    return trailers(buf).inspect(|s| {
                        if !matches!(s, Step::NeedMore) {
                            *self = State::Done;
                        }
                    });
                }
            }
        }
    }
}

impl State {
    /// Up to `left` bytes of data out of `buf` (not empty): the state becomes `then` when
    /// they are all there, else `more` of what is still to come.
    fn counted(
        &mut self,
        buf: &mut BytesMut,
        left: u64,
        then: State,
        more: fn(u64) -> State,
    ) -> Step {
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        *self = if n as u64 == left {
            then
        } else {
            more(left - n as u64)
        };
        Step::Data(buf.split_to(n).freeze())
    }
}

/// The longest chunk-size line taken: a size and a few extensions.
const MAX_SIZE_LINE: usize = 1024;

/// A chunk-size line at the start of `buf`, read as hyper's client reads it (httparse's
/// `parse_chunk_size` takes an empty line for a size of 0, and a bare LF for a line's end):
/// hex digits, at least one; spaces or tabs after them; extensions after a `;`, without an
/// LF; a CRLF. Its length and the size, or `None` if the line has not ended yet.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, Error> {
    let invalid = || Error::Invalid("invalid chunk size line".into());
    let mut size: u64 = 0;
    let mut digits = 0;
    let mut i = 0;
    while let Some(digit) = buf.get(i).and_then(|&b| char::from(b).to_digit(16)) {
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or_else(invalid)?;
        digits += 1;
        i += 1;
    }
    if digits == 0 && !buf.is_empty() {
        return Err(invalid());
    }
    while matches!(buf.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    if buf.get(i) == Some(&b';') {
        while let Some(&b) = buf.get(i)
            && b != b'\r'
        {
            if b == b'\n' {
                return Err(invalid());
            }
            i += 1;
        }
    }
    match (buf.get(i), buf.get(i + 1)) {
        (Some(b'\r'), Some(b'\n')) => Ok(Some((i + 2, size))),
        (Some(b'\r'), None) | (None, _) if i < MAX_SIZE_LINE => Ok(None),
        (None, _) => Err(Error::Invalid("chunk size line too long".into())),
        _ => Err(invalid()),
    }
}

/// The trailer section: `End` when it is empty, else the fields. The section is delimited as
/// hyper's client delimits it (lines that end in CRLF, a bare LF being part of a line, up to
/// an empty line), then its fields parsed.
fn trailers(buf: &mut BytesMut) -> Result<Step, Error> {
    if buf.starts_with(b"\r\n") {
        buf.advance(2);
        return Ok(Step::End);
    }
    let Some(len) = trailer_section(buf)? else {
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(Error::HeadTooLarge(MAX_HEAD_BYTES));
        }
        return Ok(Step::NeedMore);
    };
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let fields = match httparse::parse_headers(&buf[..len], &mut slots) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        Ok(httparse::Status::Partial) => {
            return Err(Error::Invalid("trailers: an unfinished field".into()));
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyHeaders(MAX_HEADERS)),
        Err(e) => return Err(Error::Invalid(format!("trailers: {e}"))),
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| Error::Invalid(format!("invalid trailer name {:?}", f.name)))?;
        let value = HeaderValue::from_bytes(f.value)
            .map_err(|_| Error::Invalid(format!("invalid value in trailer {name}")))?;
        map.append(name, value);
    }
    buf.advance(len);
    Ok(if map.is_empty() {
        Step::End
    } else {
        Step::Trailers(map)
    })
}

/// The length of the trailer section at the start of `buf` (not empty, not starting with a
/// CRLF), through the CRLF of its empty line; `None` if it has not ended yet. Every CR must
/// begin a CRLF.
fn trailer_section(buf: &[u8]) -> Result<Option<usize>, Error> {
    let mut i = 0;
    while let Some(cr) = buf[i..].iter().position(|&b| b == b'\r') {
        let at = i + cr;
        match buf.get(at + 1) {
            None => return Ok(None),
            Some(b'\n') => {}
            Some(_) => return Err(Error::Invalid("trailers: a CR without an LF".into())),
        }
        // The line ended; an empty one after it ends the section.
        if buf[at + 2..].starts_with(b"\r\n") {
            return Ok(Some(at + 4));
        }
        i = at + 2;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` a byte at a time and collects what comes out.
    fn decode(framing: Framing, wire: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>, bool), Error> {
        let mut state = State::new(framing);
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        let mut fed = 0;
        loop {
            match state.step(&mut buf)? {
                Step::Data(d) => data.extend_from_slice(&d),
                Step::Trailers(t) => trailers = Some(t),
                Step::End => return Ok((data, trailers, buf.is_empty())),
                Step::NeedMore if fed == wire.len() => return Ok((data, trailers, false)),
                Step::NeedMore => {
                    buf.extend_from_slice(&wire[fed..=fed]);
                    fed += 1;
                }
            }
        }
    }

    #[test]
    fn a_length_body_ends_at_its_length_leaving_what_follows() {
        let mut state = State::new(Framing::Length(3));
        let mut buf = BytesMut::from(&b"abcHTTP"[..]);
        assert!(matches!(state.step(&mut buf).unwrap(), Step::Data(d) if d == "abc"));
        assert!(matches!(state.step(&mut buf).unwrap(), Step::End));
        assert_eq!(&buf[..], b"HTTP");
        assert_eq!(State::new(Framing::Length(0)), State::Done);
    }

    #[test]
    fn chunks_with_extensions_and_trailers_decode_byte_by_byte() {
        let (data, trailers, ended) = decode(
            Framing::Chunked,
            b"5;name=x\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-Sum: abc\r\nX-Two: 2\r\n\r\n",
        )
        .unwrap();
        assert_eq!(data, b"hello world!");
        let t = trailers.unwrap();
        assert_eq!(t["x-sum"], "abc");
        assert_eq!(t["x-two"], "2");
        assert!(ended);
    }

    /// A trailer line ends at a CRLF; a bare LF within it is the field parser's to read, and
    /// the section ends at its empty line, as hyper's client reads it.
    #[test]
    fn the_trailer_section_ends_at_an_empty_line_after_a_crlf() {
        let (data, trailers, ended) = decode(
            Framing::Chunked,
            b"2 ; x=\"y\"\r\nok\r\n0\r\nT: v\nU: w\r\n\r\n",
        )
        .unwrap();
        assert_eq!(data, b"ok");
        let t = trailers.unwrap();
        assert_eq!(t["t"], "v");
        assert_eq!(t["u"], "w");
        assert!(ended);
    }

    #[test]
    fn a_last_chunk_without_trailers_ends_the_body() {
        let (data, trailers, ended) = decode(Framing::Chunked, b"2\r\nok\r\n0\r\n\r\n").unwrap();
        assert_eq!(data, b"ok");
        assert!(trailers.is_none());
        assert!(ended);
    }

    #[test]
    fn a_cut_chunked_body_does_not_end() {
        let (data, _, ended) = decode(Framing::Chunked, b"5\r\nhel").unwrap();
        assert_eq!(data, b"hel");
        assert!(!ended);
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"2\r\nokXX0\r\n\r\n",
            b"0\r\nbad header\r\n\r\n",
            // An empty size line, which httparse would take for a last chunk.
            b"2\r\nok\r\n\r\n",
            // Size lines not ended by a CRLF, space inside one, an LF in an extension.
            b"2\nok\r\n0\r\n\r\n",
            b"2\r\rok\r\n0\r\n\r\n",
            b"2 2\r\nok\r\n0\r\n\r\n",
            b"2;a\nb\r\nok\r\n0\r\n\r\n",
            // A CR in the trailer section that no LF follows.
            b"0\r\nT: v\rX\r\n\r\n",
            b"0\r\n\rX",
        ] {
            assert!(decode(Framing::Chunked, bad).is_err(), "{bad:?}");
        }
        let long = [b'1'; 2000];
        assert!(decode(Framing::Chunked, &long).is_err());
    }
}
