//! Foreign functions (`proxy_call_foreign_function`): host services a filter may use by name
//! when it runs in RustyGate. A filter meant to run in Envoy as well treats NOT_FOUND as "not
//! here" and falls back to something portable.
//!
//! `rustygate_rate_limit`: an exact, process-wide fixed-window counter. Arguments (little
//! endian): `u32 limit`, `u64 window_ms`, then the key bytes. Result: `u8 allowed`,
//! `u32 remaining`, `u64 reset_ms` (time until the window ends).
//!
//! `compress` and `uncompress`: the two that Envoy registers itself (through proxy-wasm-cpp-host),
//! so that filters written for Envoy that use them behave the same here: zlib's format (RFC
//! 1950) at the default level, and its inverse.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rustygate_filter_api::services::RateLimiter;

/// The limiter behind `rustygate_rate_limit`, shared with component filters.
#[derive(Default)]
pub(crate) struct Limiter(pub(crate) std::sync::Arc<RateLimiter>);

impl Limiter {
    /// The foreign-function form: decodes the arguments, encodes the result.
    pub fn call(&self, args: &[u8]) -> Option<Vec<u8>> {
        if args.len() < 12 {
            return None;
        }
        let limit = u32::from_le_bytes(args[0..4].try_into().ok()?);
        let window_ms = u64::from_le_bytes(args[4..12].try_into().ok()?);
        if window_ms == 0 {
            return None;
        }
        let a = self.0.admit(
            &args[12..],
            limit,
            Duration::from_millis(window_ms),
            Instant::now(),
        );
        let mut out = Vec::with_capacity(13);
        out.push(u8::from(a.allowed));
        out.extend_from_slice(&a.remaining.to_le_bytes());
        out.extend_from_slice(&(a.reset.as_millis() as u64).to_le_bytes());
        Some(out)
    }
}

/// Envoy's `compress`: the argument as a zlib stream, as zlib's `compress()` makes it.
pub fn compress(args: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(args.len() / 2 + 16),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = z.write_all(args);
    z.finish().unwrap_or_default()
}

/// Envoy's `uncompress`: the zlib stream inflated; `None` (SERIALIZATION_FAILURE, as in Envoy)
/// when it is not zlib data, is cut short, or inflates to more than `max` bytes. Envoy gives
/// up on anything that inflates to more than twice its size plus two (its output estimate);
/// here any ratio works up to `max`, the VM's memory limit, which the result could not
/// exceed anyway.
pub fn uncompress(args: &[u8], max: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(args.len().saturating_mul(2).saturating_add(2).min(max));
    let mut z = flate2::read::ZlibDecoder::new(args).take(max as u64 + 1);
    z.read_to_end(&mut out).ok()?;
    // Trailing bytes after the stream are an error for zlib's uncompress() too.
    if out.len() > max || z.into_inner().total_in() != args.len() as u64 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compress_is_zlib_and_uncompress_undoes_it() {
        let packed = compress(b"hello world!");
        // The zlib header of the default level, as zlib's compress() writes it.
        assert_eq!(&packed[..2], &[0x78, 0x9c]);
        assert_eq!(uncompress(&packed, 1 << 20).unwrap(), b"hello world!");
        assert_eq!(uncompress(&compress(b""), 1 << 20).unwrap(), b"");
        // Any ratio, up to the cap.
        let zeros = vec![0u8; 100_000];
        let packed = compress(&zeros);
        assert!(packed.len() < 1_000);
        assert_eq!(uncompress(&packed, 100_000).unwrap(), zeros);
        assert_eq!(uncompress(&packed, 99_999), None);
        // Not zlib, cut short, or followed by junk.
        assert_eq!(uncompress(b"hello", 1 << 20), None);
        let good = compress(b"hello world!");
        assert_eq!(uncompress(&good[..good.len() - 3], 1 << 20), None);
        let mut junk = good.clone();
        junk.push(0);
        assert_eq!(uncompress(&junk, 1 << 20), None);
    }

    #[test]
    fn wire_format() {
        let l = Limiter::default();
        let mut args = 1u32.to_le_bytes().to_vec();
        args.extend_from_slice(&1000u64.to_le_bytes());
        args.extend_from_slice(b"key");
        let first = l.call(&args).unwrap();
        assert_eq!(first[0], 1);
        assert_eq!(u32::from_le_bytes(first[1..5].try_into().unwrap()), 0);
        assert_eq!(l.call(&args).unwrap()[0], 0);
        assert_eq!(l.call(b"short"), None);
    }
}
