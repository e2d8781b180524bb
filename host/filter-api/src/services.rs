//! Host services that filters of any engine use, shared by every worker and kept across
//! reloads: an exact rate limiter and a key-value store. Both are plain data structures with
//! one short lock per operation; the engines expose them to guests (proxy-wasm through the
//! `rustygate_rate_limit` foreign function, components through WIT imports).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The answer for one request against one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub allowed: bool,
    /// Requests left in the window after this one.
    pub remaining: u32,
    /// Time until the window ends.
    pub reset: Duration,
}

struct Window {
    start: Instant,
    count: u32,
}

/// Fixed-window counters by key, exact across workers.
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<Vec<u8>, Window>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

/// Windows kept before expired ones are swept.
const SWEEP_AT: usize = 65_536;

impl RateLimiter {
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
}

/// Versioned values by (namespace, key). Versions come from one counter, so a version is
/// never reused for a key even after a delete.
#[derive(Default)]
pub struct KvStore {
    inner: Mutex<KvInner>,
}

#[derive(Default)]
struct KvInner {
    next_version: u64,
    spaces: HashMap<String, HashMap<String, (Vec<u8>, u64)>>,
}

impl KvInner {
    fn version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore").finish_non_exhaustive()
    }
}

impl KvStore {
    fn lock(&self) -> parking_lot::MutexGuard<'_, KvInner> {
        self.inner.lock()
    }

    /// The value and version of `key` in `space`.
    pub fn get(&self, space: &str, key: &str) -> Option<(Vec<u8>, u64)> {
        self.lock().spaces.get(space)?.get(key).cloned()
    }

    /// Sets `key`; with `expected`, only if its version is still that (0: absent). Returns the
    /// new version, or the current one (0 when absent) on a mismatch.
    pub fn set(
        &self,
        space: &str,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
    ) -> Result<u64, u64> {
        let mut inner = self.lock();
        let current = inner
            .spaces
            .get(space)
            .and_then(|s| s.get(key))
            .map_or(0, |(_, v)| *v);
        if expected.is_some_and(|e| e != current) {
            return Err(current);
        }
        let version = inner.version();
        inner
            .spaces
            .entry(space.to_owned())
            .or_default()
            .insert(key.to_owned(), (value, version));
        Ok(version)
    }

    /// Adds `delta` to the little-endian i64 at `key` (absent or not 8 bytes counts as 0).
    pub fn increment(&self, space: &str, key: &str, delta: i64) -> i64 {
        let mut inner = self.lock();
        let version = inner.version();
        let slot = inner
            .spaces
            .entry(space.to_owned())
            .or_default()
            .entry(key.to_owned())
            .or_insert_with(|| (Vec::new(), 0));
        let now = <[u8; 8]>::try_from(slot.0.as_slice()).map_or(0, i64::from_le_bytes);
        let next = now.wrapping_add(delta);
        *slot = (next.to_le_bytes().to_vec(), version);
        next
    }

    pub fn delete(&self, space: &str, key: &str) {
        if let Some(s) = self.lock().spaces.get_mut(space) {
            s.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_window_admits_exactly_the_limit_then_resets() {
        let l = RateLimiter::default();
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
    fn kv_versions_guard_writes_and_spaces_are_separate() {
        let kv = KvStore::default();
        assert_eq!(kv.get("a", "k"), None);
        let v1 = kv.set("a", "k", b"one".to_vec(), Some(0)).unwrap();
        assert_eq!(
            kv.set("a", "k", b"x".to_vec(), Some(0)),
            Err(v1),
            "no longer absent"
        );
        let v2 = kv.set("a", "k", b"two".to_vec(), Some(v1)).unwrap();
        assert!(v2 > v1);
        assert_eq!(
            kv.set("a", "k", b"x".to_vec(), Some(v1)),
            Err(v2),
            "stale version"
        );
        assert_eq!(kv.get("a", "k"), Some((b"two".to_vec(), v2)));
        assert_eq!(kv.get("b", "k"), None, "another filter's space");
        kv.delete("a", "k");
        assert_eq!(kv.get("a", "k"), None);
    }

    #[test]
    fn kv_increment_counts_from_zero() {
        let kv = KvStore::default();
        assert_eq!(kv.increment("a", "n", 2), 2);
        assert_eq!(kv.increment("a", "n", -5), -3);
        assert_eq!(kv.get("a", "n").unwrap().0, (-3i64).to_le_bytes().to_vec());
    }
}
