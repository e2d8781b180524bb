//! A request path made canonical before routing (RFC 3986 §6), so that routes, filters and
//! the upstream all read the path the same way.

use rustygate_config::{EscapedSlashes, PathNormalization};

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path has an escaped slash or backslash (%2F or %5C), which this listener refuses")]
    EscapedSlash,
}

/// The canonical form of `path` (the path alone, without its query) under `rules`, or `None`
/// when it is canonical already, which is the common case and costs one scan.
pub fn normalize(path: &str, rules: &PathNormalization) -> Result<Option<String>, PathError> {
    if !path.starts_with('/') || !needs_work(path.as_bytes(), rules) {
        return Ok(None);
    }
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    // Percent-escapes first: `%2e%2e` must be seen as `..` below.
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        let decoded = escape
            .get(1..3)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(b @ (b'/' | b'\\')) => match rules.escaped_slashes {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Unescape => out.push(b as char),
                EscapedSlashes::Keep => out.push_str(&escape[..3]),
            },
            Some(b) if rules.normalize && is_unreserved(b) => out.push(b as char),
            Some(_) => out.push_str(&escape[..3]),
            None => out.push('%'),
        }
        rest = &escape[if decoded.is_some() { 3 } else { 1 }..];
    }
    out.push_str(rest);
    if rules.normalize && out.contains('\\') {
        out = out.replace('\\', "/");
    }
    if rules.merge_slashes && out.contains("//") {
        let mut merged = String::with_capacity(out.len());
        for c in out.chars() {
            if !(c == '/' && merged.ends_with('/')) {
                merged.push(c);
            }
        }
        out = merged;
    }
    if rules.normalize {
        out = remove_dot_segments(&out);
    }
    Ok((out != path).then_some(out))
}

/// Whether `path` may change: it has an escape, a backslash, a doubled slash or a segment
/// that starts with a dot. Every request takes this scan: letters and digits, nearly every
/// byte of a path, sort above all four bytes that matter but `\` and are passed over with
/// two comparisons.
fn needs_work(path: &[u8], rules: &PathNormalization) -> bool {
    for (i, &b) in path.iter().enumerate() {
        if b > b'/' && b != b'\\' {
            continue;
        }
        let hit = match b {
            b'%' => true,
            b'\\' => rules.normalize,
            b'/' => match path.get(i + 1) {
                Some(b'/') => rules.merge_slashes || rules.normalize,
                Some(b'.') => rules.normalize,
                _ => false,
            },
            _ => false,
        };
        if hit {
            return true;
        }
    }
    false
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §5.2.4 for an absolute path: `.` segments dropped, `..` segments remove the one
/// before them (never above the root); a path that ends in either ends in a slash.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    kept.pop();
                }
                if i == last {
                    kept.push("");
                }
            }
            other => kept.push(other),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(
        normalize: bool,
        merge_slashes: bool,
        escaped_slashes: EscapedSlashes,
    ) -> PathNormalization {
        PathNormalization {
            normalize,
            merge_slashes,
            escaped_slashes,
        }
    }

    fn canonical(path: &str) -> String {
        let r = PathNormalization::default();
        normalize(path, &r)
            .unwrap()
            .unwrap_or_else(|| path.to_owned())
    }

    #[test]
    fn canonical_paths_are_left_alone() {
        let r = PathNormalization::default();
        for p in [
            "/",
            "/api/users/42",
            "/a.b/c..d/.e",
            "/a/b/",
            "*",
            "/%2F",
            "/~user",
        ] {
            assert_eq!(normalize(p, &r), Ok(None), "{p}");
        }
    }

    #[test]
    fn dot_segments_are_resolved_as_rfc_3986_says() {
        // RFC 3986 §5.4's examples that are absolute paths, and the edges.
        assert_eq!(canonical("/a/b/c/./../../g"), "/a/g");
        assert_eq!(canonical("/a/b/../c"), "/a/c");
        assert_eq!(canonical("/a/b/.."), "/a/");
        assert_eq!(canonical("/a/b/."), "/a/b/");
        assert_eq!(canonical("/../../x"), "/x");
        assert_eq!(canonical("/.."), "/");
        assert_eq!(canonical("/."), "/");
        assert_eq!(canonical("/public/../secure"), "/secure");
    }

    #[test]
    fn unreserved_escapes_are_decoded_so_escaped_dots_are_dots() {
        assert_eq!(canonical("/public/%2e%2e/secure"), "/secure");
        assert_eq!(canonical("/%41pi/%7Euser"), "/Api/~user");
        // Reserved and other escapes stay as they are, and so does a stray `%`.
        assert_eq!(canonical("/a%20b/%3F/100%"), "/a%20b/%3F/100%");
        assert_eq!(canonical("/%zz/%4"), "/%zz/%4");
    }

    #[test]
    fn slashes_are_merged_before_dot_segments_are_resolved() {
        assert_eq!(canonical("//api///users"), "/api/users");
        // As nginx and Go's path.Clean read it: `/a//../b` is `/b`.
        assert_eq!(canonical("/a//../b"), "/b");
        let keep = rules(true, false, EscapedSlashes::Keep);
        // Without merging, an empty segment is a segment (RFC 3986).
        assert_eq!(
            normalize("/a//../b", &keep).unwrap().as_deref(),
            Some("/a/b")
        );
        assert_eq!(normalize("//api", &keep), Ok(None));
    }

    #[test]
    fn backslashes_are_slashes() {
        assert_eq!(canonical("/api\\secure"), "/api/secure");
        assert_eq!(canonical("/public\\..\\secure"), "/secure");
    }

    #[test]
    fn escaped_slashes_are_kept_refused_or_decoded_as_configured() {
        let path = "/public%2F..%2Fsecure";
        assert_eq!(canonical(path), path);
        let reject = rules(true, true, EscapedSlashes::Reject);
        assert_eq!(normalize(path, &reject), Err(PathError::EscapedSlash));
        assert_eq!(normalize("/a%5cb", &reject), Err(PathError::EscapedSlash));
        let unescape = rules(true, true, EscapedSlashes::Unescape);
        assert_eq!(
            normalize(path, &unescape).unwrap().as_deref(),
            Some("/secure")
        );
        assert_eq!(
            normalize("/a%5Cb", &unescape).unwrap().as_deref(),
            Some("/a/b")
        );
    }

    #[test]
    fn switched_off_nothing_changes() {
        let off = rules(false, false, EscapedSlashes::Keep);
        for p in ["/a/../b", "//a", "/%2e%2e/x", "/a\\b"] {
            assert_eq!(normalize(p, &off), Ok(None), "{p}");
        }
    }

    /// A canonical path is canonical: normalizing it again changes nothing, so the gateway
    /// and an upstream that normalizes too read it alike. Random paths over the bytes that
    /// matter, under every combination of rules.
    #[test]
    fn a_normalized_path_normalizes_to_itself() {
        let mut rng = fastrand::Rng::with_seed(3);
        let bytes = b"/.%2eEfF5cCa\\x";
        for _ in 0..20_000 {
            let len = rng.usize(1..14);
            let path: String = std::iter::once('/')
                .chain((0..len).map(|_| char::from(bytes[rng.usize(..bytes.len())])))
                .collect();
            for normalize in [true, false] {
                for merge_slashes in [true, false] {
                    for escaped_slashes in [
                        EscapedSlashes::Keep,
                        EscapedSlashes::Unescape,
                        EscapedSlashes::Reject,
                    ] {
                        let r = rules(normalize, merge_slashes, escaped_slashes);
                        let Ok(once) = super::normalize(&path, &r) else {
                            continue;
                        };
                        let once = once.unwrap_or_else(|| path.clone());
                        assert_eq!(
                            super::normalize(&once, &r),
                            Ok(None),
                            "{path:?} became {once:?} under {normalize} {merge_slashes}"
                        );
                    }
                }
            }
        }
    }
}
