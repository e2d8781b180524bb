//! Foreign functions (`proxy_call_foreign_function`): host services a filter may use by name
//! when it runs in RustyGate. A filter meant to run in Envoy as well treats NOT_FOUND as "not
//! here" and falls back to something portable.
//!
//! `rustygate_rate_limit`: an exact, process-wide fixed-window counter. Arguments (little
//! endian): `u32 limit`, `u64 window_ms`, then the key bytes. Result: `u8 allowed`,
//! `u32 remaining`, `u64 reset_ms` (time until the window ends).

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

#[cfg(test)]
mod tests {
    use super::*;

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
