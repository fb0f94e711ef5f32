//! The hashes behind the interners and caches: an integer mix for packed label-set keys, one
//! multiply for addresses and slots, and a fast hash for names.
//!
//! None of them is meant to resist a chosen input: every table they serve is capped, so a
//! collision can only cost probes, never memory.

use std::hash::Hasher;

/// 2^64 / φ, odd: the multiplier of Fibonacci hashing (it spreads consecutive integers over the
/// whole word) and SplitMix64's increment.
pub(crate) const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// A multiply-xorshift mix for keys that are already small integers (SplitMix64's finaliser).
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(GOLDEN);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = fold(n);
    }
}

/// A 128-bit key folded to 64 bits (the high half holds label value ids, 0 without labels: such
/// keys hash as their low half alone).
#[inline]
fn fold(key: u128) -> u64 {
    (key as u64) ^ ((key >> 64) as u64).wrapping_mul(GOLDEN)
}

/// Fibonacci hashing: the high half of one multiply.
#[inline]
fn fibonacci(word: u64) -> usize {
    (word.wrapping_mul(GOLDEN) >> 32) as usize
}

/// The first slot of a packed label-set key.
#[inline]
pub(crate) fn key_slot(key: u128) -> usize {
    fibonacci(fold(key))
}

/// The first slot of an address (axum's `MatchedPath` cache).
#[cfg(feature = "axum")]
#[inline]
pub(crate) fn addr_slot(addr: usize) -> usize {
    fibonacci(addr as u64)
}

/// A fast hash of a name: every byte, read 8 (or 4) at a time with the last word overlapping
/// the one before (no byte loop), then a final mix.
pub(crate) fn str_hash(name: &str) -> usize {
    let b = name.as_bytes();
    let n = b.len();
    let word =
        |i: usize| b.get(i..i + 8).and_then(|w| w.try_into().ok()).map_or(0, u64::from_le_bytes);
    let half =
        |i: usize| b.get(i..i + 4).and_then(|w| w.try_into().ok()).map_or(0, u32::from_le_bytes);
    let mut h = (n as u64).wrapping_mul(GOLDEN);
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            h = (h ^ word(i)).wrapping_mul(GOLDEN).rotate_left(29);
            i += 8;
        }
        h = (h ^ word(n - 8)).wrapping_mul(GOLDEN);
    } else if n >= 4 {
        h = (h ^ (u64::from(half(0)) << 32 | u64::from(half(n - 4)))).wrapping_mul(GOLDEN);
    } else if let (Some(&first), Some(&mid), Some(&last)) = (b.first(), b.get(n / 2), b.last()) {
        h = (h ^ (u64::from(first) << 16 | u64::from(mid) << 8 | u64::from(last)))
            .wrapping_mul(GOLDEN);
    }
    h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (h ^ (h >> 32)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_differ_in_one_byte_hash_apart() {
        assert_ne!(str_hash("/a"), str_hash("/b"));
        assert_ne!(str_hash("/users/{id}/x"), str_hash("/users/{id}/y"));
        assert_ne!(str_hash("/abcd"), str_hash("/abce"));
        assert_ne!(key_slot(1), key_slot(2));
        assert_ne!(key_slot(1 << 64), key_slot(0), "label ids in the high half count");
    }
}
