//! The serialized header-map format: u32 LE count, then every pair's (name_len, value_len),
//! then each name and value followed by a NUL. All lengths first, then all data.

/// Serializes pairs; an empty list serializes to nothing (the host then returns `0, 0`).
pub fn encode<'a>(pairs: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    if pairs.len() == 0 {
        return Vec::new();
    }
    let data: usize = pairs.clone().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + data);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Parses a serialized map. Malformed input (wrong lengths, missing NULs, more than 1,024
/// pairs or 1 MiB) yields `None`; callers treat it as empty, as Envoy does.
pub fn decode(buf: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if buf.len() <= 1 {
        return Some(Vec::new());
    }
    if buf.len() > 1 << 20 {
        return None;
    }
    let word = |at: usize| {
        buf.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let count = word(0)?;
    if count > 1024 {
        return None;
    }
    let mut data = 4 + count * 8;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (klen, vlen) = (word(4 + i * 8)?, word(8 + i * 8)?);
        let key = buf.get(data..data + klen)?;
        if *buf.get(data + klen)? != 0 {
            return None;
        }
        data += klen + 1;
        let value = buf.get(data..data + vlen)?;
        if *buf.get(data + vlen)? != 0 {
            return None;
        }
        data += vlen + 1;
        out.push((key, value));
    }
    (data == buf.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_layout() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"b", b"22")];
        let enc = encode(pairs.iter().copied());
        let expected: Vec<u8> = vec![
            2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'1', 0, b'b', 0,
            b'2', b'2', 0,
        ];
        assert_eq!(enc, expected);
        assert_eq!(decode(&enc).unwrap(), pairs);
    }

    #[test]
    fn empty_and_malformed() {
        assert!(encode(std::iter::empty::<(&[u8], &[u8])>()).is_empty());
        assert_eq!(decode(&[]).unwrap().len(), 0);
        assert_eq!(decode(&[0, 0, 0, 0]).unwrap().len(), 0);
        assert!(decode(&[1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, b'a', 0]).is_none());
    }
}
