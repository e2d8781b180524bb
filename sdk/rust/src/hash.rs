//! Hashing for consistent-hash strategies: fast, stable across builds and platforms (unlike
//! `std`'s randomly seeded hasher), and well mixed in every bit.

/// 64-bit hash of `bytes` with `seed`: FNV-1a over the bytes, then the murmur3 finaliser so
/// that nearby inputs spread over the whole range.
pub fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// The murmur3 64-bit finaliser.
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_seeded() {
        assert_eq!(hash64(0, b"user-1"), hash64(0, b"user-1"));
        assert_ne!(hash64(0, b"user-1"), hash64(1, b"user-1"));
        assert_ne!(hash64(0, b"user-1"), hash64(0, b"user-2"));
    }

    #[test]
    fn spreads_over_the_range() {
        // Sequential keys land in all 16 top-nibble buckets, roughly evenly.
        let mut buckets = [0u32; 16];
        for i in 0..16_000u32 {
            buckets[(hash64(7, &i.to_le_bytes()) >> 60) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }
}
