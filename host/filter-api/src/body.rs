//! Body data as filters see it during a body phase.

use bytes::{Bytes, BytesMut};

use crate::InlineDeque;

/// The body data a filter holds: the chunk it is being shown, plus everything it asked to keep
/// from earlier chunks. Held as the chunks that arrived (no copy when a filter lets each chunk
/// through); read and edited by byte range.
#[derive(Debug, Default, Clone)]
pub struct BodyBuffer {
    /// A chunk shown to a filter that lets it through (the usual case) allocates no queue.
    chunks: InlineDeque<Bytes>,
    len: usize,
}

/// An edit the buffer cannot make (proxy-wasm answers `BAD_ARGUMENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("only a prefix replacement or an append can be made to a body")]
pub struct UnsupportedEdit;

impl BodyBuffer {
    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a chunk.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Appends everything `other` holds.
    pub fn append(&mut self, mut other: BodyBuffer) {
        self.len += other.len;
        self.chunks.append(&mut other.chunks);
    }

    /// Takes everything, leaving the buffer empty.
    pub fn take(&mut self) -> BodyBuffer {
        std::mem::take(self)
    }

    /// The bytes in `[start, start + max)`, clamped to what is held.
    pub fn range(&self, start: usize, max: usize) -> Vec<u8> {
        let end = self.len.min(start.saturating_add(max));
        let mut out = Vec::with_capacity(end.saturating_sub(start));
        let mut at = 0;
        for c in self.chunks.iter() {
            let (from, to) = (start.max(at), end.min(at + c.len()));
            if from < to {
                out.extend_from_slice(&c[from - at..to - at]);
            }
            at += c.len();
            if at >= end {
                break;
            }
        }
        out
    }

    /// Replaces `[start, start + len)` with `data`, within what proxy hosts support: at
    /// `start == 0` the first `len` bytes are replaced (0 prepends, `len >= self.len()` replaces
    /// everything); at `start >= self.len()` `data` is appended. Edits in the middle are refused,
    /// as Envoy refuses them.
    pub fn splice(&mut self, start: usize, len: usize, data: Bytes) -> Result<(), UnsupportedEdit> {
        if start == 0 {
            let mut drop = len.min(self.len);
            self.len -= drop;
            while drop > 0 {
                let front = self.chunks.front_mut().expect("len counts the chunks");
                if front.len() <= drop {
                    drop -= front.len();
                    self.chunks.pop_front();
                } else {
                    let _ = front.split_to(drop);
                    drop = 0;
                }
            }
            if !data.is_empty() {
                self.len += data.len();
                self.chunks.push_front(data);
            }
            Ok(())
        } else if start >= self.len {
            self.push(data);
            Ok(())
        } else {
            Err(UnsupportedEdit)
        }
    }

    /// Takes everything held as one `Bytes`, leaving the buffer empty (no copy when it is a
    /// single chunk, and then nothing is built or dropped either).
    pub fn take_bytes(&mut self) -> Bytes {
        if self.chunks.len() <= 1 {
            self.len = 0;
            return self.chunks.pop_front().unwrap_or_default();
        }
        self.take().into_bytes()
    }

    /// Everything held as one `Bytes` (no copy when it is a single chunk).
    pub fn into_bytes(mut self) -> Bytes {
        if self.chunks.len() <= 1 {
            return self.chunks.pop_front().unwrap_or_default();
        }
        let mut out = BytesMut::with_capacity(self.len);
        for c in self.chunks {
            out.extend_from_slice(&c);
        }
        out.freeze()
    }
}

impl From<Bytes> for BodyBuffer {
    fn from(b: Bytes) -> Self {
        let mut buf = BodyBuffer::default();
        buf.push(b);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(parts: &[&'static str]) -> BodyBuffer {
        let mut b = BodyBuffer::default();
        for p in parts {
            b.push(Bytes::from_static(p.as_bytes()));
        }
        b
    }

    #[test]
    fn range_reads_across_chunks_and_clamps() {
        let b = buf(&["hello ", "wide ", "world"]);
        assert_eq!(b.len(), 16);
        assert_eq!(b.range(0, usize::MAX), b"hello wide world");
        assert_eq!(b.range(4, 4), b"o wi");
        assert_eq!(b.range(10, 100), b" world");
        assert_eq!(b.range(16, 1), b"");
        assert_eq!(b.range(99, 1), b"");
    }

    #[test]
    fn splice_replaces_prefix_prepends_and_appends() {
        let mut b = buf(&["hello ", "world"]);
        b.splice(0, 8, Bytes::from_static(b"HELLO WO")).unwrap();
        assert_eq!(b.clone().into_bytes(), "HELLO WOrld");
        b.splice(0, 0, Bytes::from_static(b">> ")).unwrap();
        assert_eq!(b.clone().into_bytes(), ">> HELLO WOrld");
        let n = b.len();
        b.splice(n, 0, Bytes::from_static(b"!")).unwrap();
        assert_eq!(b.clone().into_bytes(), ">> HELLO WOrld!");
        b.splice(0, usize::MAX, Bytes::from_static(b"new")).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b.clone().into_bytes(), "new");
        assert_eq!(b.splice(1, 1, Bytes::new()), Err(UnsupportedEdit));
        b.splice(0, 3, Bytes::new()).unwrap();
        assert!(b.is_empty());
    }

    #[test]
    fn chunks_keep_their_order_through_the_inline_first_one() {
        let mut b = buf(&["b", "c"]);
        b.splice(0, 0, Bytes::from_static(b"a")).unwrap();
        b.push(Bytes::from_static(b"d"));
        assert_eq!(b.range(0, 9), b"abcd");
        // Dropping whole chunks and part of the next moves a later chunk to the front.
        b.splice(0, 3, Bytes::new()).unwrap();
        assert_eq!((b.len(), b.range(0, 9)), (1, b"d".to_vec()));
        let mut other = buf(&["e", "f"]);
        other.splice(0, 1, Bytes::new()).unwrap();
        b.append(other);
        b.append(BodyBuffer::default());
        assert_eq!(b.clone().into_bytes(), "df");
        assert_eq!(b.clone().take_bytes(), "df");
        assert_eq!(b.take().into_bytes(), "df");
        assert!(b.is_empty() && b.clone().into_bytes().is_empty());
        b.push(Bytes::from_static(b"g"));
        assert_eq!((b.take_bytes(), b.len()), (Bytes::from_static(b"g"), 0));
        // Empty chunks are not kept, whatever the position.
        b.push(Bytes::new());
        assert_eq!(b.range(0, 1), b"");
    }
}
