//! Foreign functions (`proxy_call_foreign_function`): host services a filter may use by name
//! when it runs in RustyGate. A filter meant to run in Envoy as well treats NOT_FOUND as "not
//! here" and falls back to something portable.
//!
//! `rustygate_rate_limit`: an exact, process-wide fixed-window counter. Arguments (little
//! endian): `u32 limit`, `u64 window_ms`, then the key bytes. Result: `u8 allowed`,
//! `u32 remaining`, `u64 reset_ms` (time until the window ends).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The answer for one request against one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    pub allowed: bool,
    pub remaining: u32,
    pub reset: Duration,
}

struct Window {
    start: Instant,
    count: u32,
}

/// Every limit's current window, by key. One short lock per request and limit.
#[derive(Default)]
pub(crate) struct Limiter {
    windows: Mutex<HashMap<Vec<u8>, Window>>,
}

/// Windows kept before expired ones are swept.
const SWEEP_AT: usize = 65_536;

impl Limiter {
    /// Counts one request against `key` (at most `limit` per `window`).
    pub fn admit(&self, key: &[u8], limit: u32, window: Duration, now: Instant) -> Admission {
        let mut windows = self.windows.lock();
        if windows.len() >= SWEEP_AT {
            windows
                .retain(|_, w| now.duration_since(w.start) < window.max(Duration::from_secs(3600)));
        }
        let w = windows.entry(key.to_vec()).or_insert(Window {
            start: now,
            count: 0,
        });
        if now.duration_since(w.start) >= window {
            *w = Window {
                start: now,
                count: 0,
            };
        }
        let reset = window.saturating_sub(now.duration_since(w.start));
        if w.count < limit {
            w.count += 1;
            Admission {
                allowed: true,
                remaining: limit - w.count,
                reset,
            }
        } else {
            Admission {
                allowed: false,
                remaining: 0,
                reset,
            }
        }
    }

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
        let a = self.admit(
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
    fn fixed_window_admits_exactly_the_limit_then_resets() {
        let l = Limiter::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        for i in 0..3 {
            let a = l.admit(b"k", 3, w, t0);
            assert!(a.allowed);
            assert_eq!(a.remaining, 2 - i);
        }
        let denied = l.admit(b"k", 3, w, t0 + Duration::from_secs(4));
        assert!(!denied.allowed);
        assert_eq!(denied.reset, Duration::from_secs(6));
        assert!(l.admit(b"other", 3, w, t0).allowed, "keys are independent");
        assert!(l.admit(b"k", 3, w, t0 + w).allowed, "a new window");
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
