//! Property values as text, for the response headers the tests read.

/// A property value as text: the integer ones (8 bytes little-endian in Envoy's encoding) as
/// numbers, `connection.mtls` as a bool, maps as `k: v` lines, anything else as UTF-8.
pub(crate) fn display(name: &str, value: Option<Vec<u8>>) -> String {
    const INTEGERS: &[&str] = &[
        "source.port",
        "destination.port",
        "connection.id",
        "connection_id",
        "request.time",
        "request.duration",
        "request.size",
        "request.total_size",
        "request.headers_bytes",
        "response.code",
        "response.size",
        "response.total_size",
        "response.headers_bytes",
        "response.grpc_status",
        "response.flags",
        "upstream.port",
        "upstream.request_attempt_count",
    ];
    let Some(bytes) = value else {
        return "<none>".into();
    };
    if INTEGERS.contains(&name) && bytes.len() == 8 {
        return u64::from_le_bytes(bytes.try_into().unwrap()).to_string();
    }
    if name == "connection.mtls" {
        return (bytes == [1]).to_string();
    }
    // The whole metadata property is a protobuf message: shown in hex.
    if name == "route_metadata" || name == "cluster_metadata" {
        return bytes.iter().map(|b| format!("{b:02x}")).collect();
    }
    // Route and cluster metadata: a map or a list (named `*_map`, `*_list` by the tests) comes
    // as pairs (a list's values empty), a number as a double.
    let metadata = name.starts_with("route_metadata.") || name.starts_with("cluster_metadata.");
    if metadata && (name.ends_with("_map") || name.ends_with("_list")) {
        return pairs_text(&bytes, "=", ",");
    }
    if metadata && name.ends_with("_num") && bytes.len() == 8 {
        return f64::from_le_bytes(bytes.try_into().unwrap()).to_string();
    }
    if name.ends_with(".headers") || name.ends_with(".trailers") {
        return pairs_text(&bytes, ": ", ", ");
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A map as `k<between>v` items joined by `sep`.
fn pairs_text(bytes: &[u8], between: &str, sep: &str) -> String {
    decode_pairs(bytes)
        .map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}{between}{v}"))
                .collect::<Vec<_>>()
                .join(sep)
        })
        .unwrap_or_else(|| "<bad map>".into())
}

/// proxy-wasm's map encoding: a count, then each key and value length, then the NUL-ended
/// keys and values.
pub(crate) fn decode_pairs(b: &[u8]) -> Option<Vec<(String, String)>> {
    let word = |at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize);
    let n = word(0)?;
    let mut at = 4 + 8 * n;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (kl, vl) = (word(4 + 8 * i)?, word(8 + 8 * i)?);
        let k = String::from_utf8_lossy(b.get(at..at + kl)?).into_owned();
        at += kl + 1;
        let v = String::from_utf8_lossy(b.get(at..at + vl)?).into_owned();
        at += vl + 1;
        out.push((k, v));
    }
    Some(out)
}
