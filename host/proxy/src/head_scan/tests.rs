//! The head scan's checks, fed whole and cut across reads.

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
        // hyper's server refuses a list in one field, even of one number.
        (b"POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n", false),
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
        b"POST / HTTP/1.1\r\nContent-Length: 12\r\ncontent-length: 12\r\n\r\nbody",
        Verdict::Fine,
    );
    cut_anywhere(
        b"POST / HTTP/1.1\r\nContent-Length: 12, 12\r\n\r\nbody",
        Verdict::Refuse(HeadFault::InvalidLength),
    );
}

#[test]
fn empty_lines_before_the_request_line_are_skipped() {
    assert_eq!(
        whole(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Verdict::Fine
    );
    assert_eq!(whole(b"\nGET / HTTP/1.1\nHost: a\n\n"), Verdict::Fine);
    cut_anywhere(b"\r\n\nGET / HTTP/1.1\r\n\r\n", Verdict::Fine);
    // A CR on its own is not an empty line (httparse refuses it).
    for head in [
        &b"\rGET / HTTP/1.1\r\n\r\n"[..],
        b"\r\n\r\rGET / HTTP/1.1\r\n\r\n",
    ] {
        cut_anywhere(head, Verdict::Refuse(HeadFault::InvalidByte));
    }
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
        Body::Switch
    );
    assert_eq!(
        body(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n").1,
        Body::Switch
    );
    // Or a body, or both.
    assert_eq!(
        body(b"POST / HTTP/1.1\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\n").1,
        Body::Unknown
    );
    // A read cut within a method that may be CONNECT counts as one.
    let mut scan = HeadScan::new(65536, 100);
    assert_eq!(scan.feed(b"CON").unwrap(), None);
    assert_eq!(scan.feed(b"NECT a:443 HTTP/1.1\r\n\r\n").unwrap(), Some(23));
    assert_eq!(scan.body(), Body::Switch);
}

#[test]
fn a_request_line_hyper_would_refuse_is_refused_wherever_reads_cut_it() {
    for (head, expected) in [
        (
            &b"GET /a<b HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            Verdict::Refuse(HeadFault::InvalidTarget),
        ),
        (
            b"\r\nGET /a HTTP/1.2\r\nHost: a\r\n\r\n",
            Verdict::Refuse(HeadFault::InvalidRequestLine),
        ),
        (
            b"GET /a/long/path?with=a&query=1 HTTP/1.1\r\nHost: a\r\n\r\n",
            Verdict::Fine,
        ),
    ] {
        cut_anywhere(head, expected);
    }
    // A tab is not the space between the parts.
    assert_eq!(
        whole(b"GET\t/ HTTP/1.1\r\n\r\n"),
        Verdict::Refuse(HeadFault::InvalidByte)
    );
}

#[test]
fn transfer_encoding_must_be_chunked_alone() {
    for value in ["chunked", "Chunked", " CHUNKED \t", "\tchunked"] {
        let head = format!("POST / HTTP/1.1\r\nTransfer-Encoding:{value}\r\n\r\n");
        assert_eq!(whole(head.as_bytes()), Verdict::Fine, "{value:?}");
    }
    for value in [
        "gzip",
        "gzip, chunked",
        "chunked, gzip",
        "chunked,",
        "chunk",
        "chunkedx",
        "chun ked",
        "chun\tked",
        "",
        "identity",
    ] {
        let head = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {value}\r\n\r\n");
        assert_eq!(
            whole(head.as_bytes()),
            Verdict::Refuse(HeadFault::UnsupportedCoding),
            "{value:?}"
        );
    }
    for (head, fault) in [
        // Two fields are a list of two codings.
        (
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n"
                [..],
            HeadFault::UnsupportedCoding,
        ),
        // A control byte is a bad byte, here as in any value.
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chun\x01ked\r\n\r\n",
            HeadFault::InvalidByte,
        ),
        // No coding on a tunnel's request (as Envoy), nor in HTTP/1.0 (RFC 9112 §6.1).
        (
            b"CONNECT a:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadFault::UnsupportedCoding,
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadFault::CodingInHttp10,
        ),
    ] {
        assert_eq!(
            whole(head),
            Verdict::Refuse(fault),
            "{}",
            String::from_utf8_lossy(head)
        );
    }
    cut_anywhere(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked \r\n\r\n",
        Verdict::Fine,
    );
    cut_anywhere(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        Verdict::Refuse(HeadFault::UnsupportedCoding),
    );
}
