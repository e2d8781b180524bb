//! An HTTP/1 request line, checked as hyper reads it, so that a line hyper would refuse with
//! an empty 400 is answered with the gateway's JSON error instead (see [`crate::head_scan`]).
//!
//! hyper reads a request line with httparse's strict defaults (a method token, one space, a
//! target of visible bytes that is UTF-8, one space, `HTTP/1.0` or `HTTP/1.1`) and then parses
//! the target with `http::Uri`. The common target, a path and query of plain bytes, is checked
//! here, eight bytes a step; anything else goes to `http::Uri` itself, the same parser hyper
//! uses.

use crate::head_scan::{HeadFault, TOKEN, zero_bytes};

/// What the rest of the head's checks need of its request line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Line {
    /// `HTTP/1.1`, as opposed to `HTTP/1.0`.
    pub http11: bool,
    /// The method is `CONNECT`.
    pub connect: bool,
}

/// The version with the space before it.
const VERSION_LEN: usize = b" HTTP/1.1".len();
/// The version's first eight bytes, space included, as one word.
const HTTP1: u64 = u64::from_le_bytes(*b" HTTP/1.");

/// The longest target hyper takes (`http::Uri` refuses longer ones, hyper answers 414).
const MAX_TARGET: usize = u16::MAX as usize - 1;

/// Bytes that `http::Uri` takes as they are both in a path and in a query (`?` included): a
/// target that starts with `/` and holds only these is a valid origin-form target. Of the
/// visible ASCII bytes, all but the space, `"`, `#`, `<`, `>` and `` ` ``.
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 128 {
        table[b] = matches!(
            b as u8,
            0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x5F | 0x61..=0x7E
        );
        b += 1;
    }
    table
};

/// Whether all eight bytes of `x` are [`PLAIN`], given that none is a control byte or DEL
/// (the head's scan refuses those first): no byte is one of the six visible ASCII bytes that
/// are not, or above ASCII. `"` and `#` differ in their lowest bit only, as do `<` and `>`
/// in their second: one exact zero-byte test covers each pair.
#[inline]
fn plain_word(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let not_plain = zero_bytes(x ^ (ONES * b' ' as u64))
        | zero_bytes((x | ONES) ^ (ONES * b'#' as u64))
        | zero_bytes((x | (ONES * 2)) ^ (ONES * b'>' as u64))
        | zero_bytes(x ^ (ONES * b'`' as u64))
        | (x & (ONES * 0x80));
    not_plain == 0
}

/// Whether every byte of `target` (none a control byte or DEL) is [`PLAIN`]: eight bytes a
/// step, the last step overlapping the one before it rather than going a byte at a time.
#[inline]
fn plain(target: &[u8]) -> bool {
    let n = target.len();
    if n < 8 {
        return target
            .iter()
            .fold(true, |all, &b| all & PLAIN[usize::from(b)]);
    }
    let word = |i: usize| u64::from_le_bytes(target[i..i + 8].try_into().expect("eight bytes"));
    let mut all = true;
    let mut i = 0;
    while i + 8 < n {
        all &= plain_word(word(i));
        i += 8;
    }
    all & plain_word(word(n - 8))
}

/// Checks a request line, given without its line end (which holds no control byte: the head's
/// scan has seen to that).
#[inline]
pub(crate) fn check(line: &[u8]) -> Result<Line, HeadFault> {
    let (method, rest) = match line.strip_prefix(b"GET ") {
        Some(rest) => (&line[..3], rest),
        None => {
            let sp = line
                .iter()
                .position(|&b| b == b' ')
                .ok_or(HeadFault::InvalidRequestLine)?;
            let method = &line[..sp];
            if method.is_empty() || !method.iter().all(|&b| TOKEN[usize::from(b)]) {
                return Err(HeadFault::InvalidRequestLine);
            }
            (method, &line[sp + 1..])
        }
    };
    let split = rest
        .len()
        .checked_sub(VERSION_LEN)
        .ok_or(HeadFault::InvalidRequestLine)?;
    let (target, version) = rest.split_at(split);
    // One comparison of a word, then the minor version.
    let (word, minor) = version.split_at(VERSION_LEN - 1);
    let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
    let http11 = match minor {
        b"1" if word == HTTP1 => true,
        b"0" if word == HTTP1 => false,
        _ => return Err(HeadFault::InvalidRequestLine),
    };
    check_target(target)?;
    Ok(Line {
        http11,
        connect: method == b"CONNECT",
    })
}

#[inline]
fn check_target(target: &[u8]) -> Result<(), HeadFault> {
    if target.len() > MAX_TARGET {
        return Err(HeadFault::TargetTooLong);
    }
    if target.first() == Some(&b'/') && plain(target) {
        return Ok(());
    }
    uncommon_target(target)
}

/// A target with a byte outside [`PLAIN`], or not a path: as httparse and `http::Uri` read it
/// (which copies it, hence only here).
#[cold]
fn uncommon_target(target: &[u8]) -> Result<(), HeadFault> {
    let visible = !target.is_empty() && target.iter().all(|&b| b > b' ' && b != 0x7f);
    if visible && std::str::from_utf8(target).is_ok() && http::Uri::try_from(target).is_ok() {
        Ok(())
    } else {
        Err(HeadFault::InvalidTarget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(line: &str) -> Result<Line, HeadFault> {
        check(line.as_bytes())
    }

    #[test]
    fn well_formed_lines_pass() {
        let line = |http11, connect| Ok(Line { http11, connect });
        assert_eq!(told("GET / HTTP/1.1"), line(true, false));
        assert_eq!(told("GET /api/a?b=c&d=%20 HTTP/1.0"), line(false, false));
        assert_eq!(told("PURGE-ALL /x HTTP/1.1"), line(true, false));
        assert_eq!(told("OPTIONS * HTTP/1.1"), line(true, false));
        assert_eq!(told("CONNECT a.example:443 HTTP/1.1"), line(true, true));
        assert_eq!(told("GET http://a.example/x?y HTTP/1.1"), line(true, false));
        // Bytes http::Uri lets through although they should be escaped, and UTF-8.
        assert_eq!(told("GET /{\"a\"}?x={y}`z` HTTP/1.1"), line(true, false));
        assert_eq!(told("GET /caf\u{e9}?\u{e9} HTTP/1.1"), line(true, false));
        // A fragment is cut off by http::Uri, whatever it holds.
        assert_eq!(told("GET /a#<frag> HTTP/1.1"), line(true, false));
    }

    #[test]
    fn malformed_lines_are_refused() {
        for line in [
            "",
            "GET",
            "GET /",
            "GET / HTTP/1.1 ",
            "GET / http/1.1",
            "GET / HTTP/2.0",
            "GET / HTTP/1.2",
            "GET / HTTP/11",
            " GET / HTTP/1.1",
            "G(T / HTTP/1.1",
            "G\u{e9}T / HTTP/1.1",
        ] {
            assert_eq!(told(line), Err(HeadFault::InvalidRequestLine), "{line:?}");
        }
        for line in [
            "GET  / HTTP/1.1",
            "GET / / HTTP/1.1",
            "GET  HTTP/1.1",
            "GET /a<b HTTP/1.1",
            "GET /a?b\"c HTTP/1.1",
            "GET a/b HTTP/1.1",
            "GET ?a HTTP/1.1",
            "GET http://a b/ HTTP/1.1",
            "GET http://[::1/ HTTP/1.1",
        ] {
            assert_eq!(told(line), Err(HeadFault::InvalidTarget), "{line:?}");
        }
        // A target that is not UTF-8.
        assert_eq!(check(b"GET /a\xff HTTP/1.1"), Err(HeadFault::InvalidTarget));
    }

    #[test]
    fn a_target_over_http_uri_limit_is_too_long() {
        let at_limit = format!("GET /{} HTTP/1.1", "a".repeat(MAX_TARGET - 1));
        assert!(told(&at_limit).is_ok());
        let over = format!("GET /{} HTTP/1.1", "a".repeat(MAX_TARGET));
        assert_eq!(told(&over), Err(HeadFault::TargetTooLong));
    }

    #[test]
    fn a_word_is_plain_exactly_when_each_of_its_bytes_is() {
        // Every byte that can reach the check, at every place in targets of every length.
        let reachable = (0x20..=0xffu8).filter(|&b| b != 0x7f);
        for b in reachable {
            for len in 1..20 {
                for at in 0..len {
                    let mut target = vec![b'a'; len];
                    target[at] = b;
                    assert_eq!(
                        plain(&target),
                        PLAIN[usize::from(b)],
                        "{b:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn plain_bytes_are_what_http_uri_takes_in_both_path_and_query() {
        for b in 0..=255u8 {
            if PLAIN[usize::from(b)] {
                let path = [b"/a".as_slice(), &[b]].concat();
                let query = [b"/a?".as_slice(), &[b]].concat();
                assert!(
                    http::Uri::try_from(path.as_slice()).is_ok(),
                    "{b:#x} in a path"
                );
                assert!(
                    http::Uri::try_from(query.as_slice()).is_ok(),
                    "{b:#x} in a query"
                );
            }
        }
    }
}
