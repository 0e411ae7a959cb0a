//! Hash keys: where a record lands. Kinesis reads the MD5 of the UTF-8 partition key as an
//! unsigned 128-bit big-endian integer (or takes an `ExplicitHashKey`, a decimal string in
//! `[0, 2^128 - 1]`), and each open shard owns a contiguous range of that space.

use md5::{Digest, Md5};

/// A point of the 128-bit hash-key space.
pub type HashKey = u128;

/// The hash key of a partition key: MD5 of its UTF-8 bytes, big-endian.
pub fn hash_key(partition_key: &str) -> HashKey {
    let digest = Md5::digest(partition_key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest);
    u128::from_be_bytes(bytes)
}

/// Parse an `ExplicitHashKey` (a decimal string of at most 39 digits that fits 128 bits).
pub fn parse_explicit(text: &str) -> Option<HashKey> {
    if text.is_empty() || text.len() > 39 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Split the whole space into `n` contiguous ranges as CreateStream does: every range but the
/// last has `2^128 / n` keys (rounded down); the last one ends at `2^128 - 1`.
pub fn even_ranges(n: u32) -> Vec<(HashKey, HashKey)> {
    even_split(0, u128::MAX, n)
}

/// Split `[start, end]` into `n` contiguous ranges of (nearly) equal width.
pub fn even_split(start: HashKey, end: HashKey, n: u32) -> Vec<(HashKey, HashKey)> {
    if n <= 1 {
        return vec![(start, end)];
    }
    let n = n as u128;
    let width = end - start;
    // (width + 1) / n without overflowing when the range is the whole space.
    let step = width / n + u128::from(width % n == n - 1);
    (0..n)
        .map(|i| {
            let lo = start + step * i;
            let hi = if i == n - 1 { end } else { start + step * (i + 1) - 1 };
            (lo, hi)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_the_key_read_big_endian() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key(""), 0xd41d8cd98f00b204e9800998ecf8427e);
        assert_eq!(format!("{:032x}", hash_key("hello")), "5d41402abc4b2a76b9719d911017c592");
    }

    #[test]
    fn explicit_hash_keys_are_decimal_within_128_bits() {
        assert_eq!(parse_explicit("0"), Some(0));
        assert_eq!(parse_explicit("340282366920938463463374607431768211455"), Some(u128::MAX));
        assert_eq!(parse_explicit("340282366920938463463374607431768211456"), None);
        assert_eq!(parse_explicit("-1"), None);
        assert_eq!(parse_explicit("1e5"), None);
        assert_eq!(parse_explicit(""), None);
    }

    #[test]
    fn even_ranges_cover_the_space_like_kinesis() {
        let r = even_ranges(1);
        assert_eq!(r, [(0, u128::MAX)]);
        let r = even_ranges(2);
        assert_eq!(r[0], (0, 170141183460469231731687303715884105727));
        assert_eq!(r[1], (170141183460469231731687303715884105728, u128::MAX));
        for n in [3u32, 4, 7, 100] {
            let r = even_ranges(n);
            assert_eq!(r.len(), n as usize);
            assert_eq!(r[0].0, 0);
            assert_eq!(r[r.len() - 1].1, u128::MAX);
            for w in r.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0);
            }
        }
        // Kinesis' 4-shard layout starts the second shard at 2^126.
        assert_eq!(even_ranges(4)[1].0, 85070591730234615865843651857942052864);
    }
}
