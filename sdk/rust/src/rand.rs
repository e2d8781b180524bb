//! A small, fast random number generator for strategies that draw endpoints at random
//! (xorshift64*), seeded from the host's random source.

/// xorshift64*: not for secrets, plenty for spreading requests.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from the host (the standard library seeds its hash maps from WASI
    /// random, which the gateway provides).
    pub fn from_host() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0);
        Self::seeded(h.finish())
    }

    /// A generator with a fixed seed, for tests.
    pub fn seeded(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
