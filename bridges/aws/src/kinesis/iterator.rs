//! Shard iterators: opaque, tamper-evident tokens that say where a reader is and when the
//! token was issued. A token is base64 of `[version][incarnation u64][shard u32][counter u64]
//! [issued ms u64][nonce u32][stream name]` followed by a 16-byte keyed SHA-256 tag, so a forged or
//! truncated iterator is refused (`InvalidArgumentException`) and an old one expires after
//! five minutes (`ExpiredIteratorException`). Time is an argument.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use switchyard::time::Millis;

/// How long an iterator may be used.
pub const ITERATOR_TTL_MS: u64 = 5 * 60 * 1000;
const VERSION: u8 = 2;
/// Fixed-size part: version, incarnation, shard, counter, issued, nonce.
const FIXED: usize = 1 + 8 + 4 + 8 + 8 + 4;
/// Makes every iterator distinct, even two issued in the same millisecond for one position.
static NONCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
const TAG: usize = 16;
/// Fixed key: the tag detects tampering and garbage; iterators are not secrets.
const KEY: &[u8] = b"switchyard kinesis shard iterator v1";

/// What an iterator says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iter {
    /// Stream name.
    pub stream: String,
    /// The stream's incarnation (a re-created stream does not accept old iterators).
    pub incarnation: u64,
    /// Shard index.
    pub shard: u32,
    /// Next counter to read.
    pub counter: u64,
    /// When it was issued.
    pub issued: Millis,
}

/// Why an iterator was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IterError {
    /// Not one of ours, or altered.
    Invalid,
    /// Ours, but issued at `issued`, more than five minutes before `now`.
    Expired {
        /// Issue time.
        issued: Millis,
    },
}

fn tag(body: &[u8]) -> [u8; TAG] {
    let mut h = Sha256::new();
    h.update(KEY);
    h.update(body);
    let d = h.finalize();
    let mut t = [0u8; TAG];
    t.copy_from_slice(&d[..TAG]);
    t
}

/// Encode an iterator.
pub fn encode(it: &Iter) -> String {
    let mut b = Vec::with_capacity(FIXED + it.stream.len() + TAG);
    b.push(VERSION);
    b.extend_from_slice(&it.incarnation.to_be_bytes());
    b.extend_from_slice(&it.shard.to_be_bytes());
    b.extend_from_slice(&it.counter.to_be_bytes());
    b.extend_from_slice(&it.issued.to_be_bytes());
    b.extend_from_slice(&NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_be_bytes());
    b.extend_from_slice(it.stream.as_bytes());
    let t = tag(&b);
    b.extend_from_slice(&t);
    STANDARD.encode(b)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Decode and check an iterator at `now`.
pub fn decode(text: &str, now: Millis) -> Result<Iter, IterError> {
    let b = STANDARD.decode(text.as_bytes()).map_err(|_| IterError::Invalid)?;
    if b.len() < FIXED + TAG || b[0] != VERSION {
        return Err(IterError::Invalid);
    }
    let (body, t) = b.split_at(b.len() - TAG);
    if tag(body) != t {
        return Err(IterError::Invalid);
    }
    let stream = String::from_utf8(body[FIXED..].to_vec()).map_err(|_| IterError::Invalid)?;
    let it = Iter {
        stream,
        incarnation: be_u64(&body[1..9]),
        shard: u32::from_be_bytes([body[9], body[10], body[11], body[12]]),
        counter: be_u64(&body[13..21]),
        issued: be_u64(&body[21..29]),
    };
    if now.saturating_sub(it.issued) > ITERATOR_TTL_MS {
        return Err(IterError::Expired { issued: it.issued });
    }
    Ok(it)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Iter {
        Iter { stream: "clicks".into(), incarnation: 42, shard: 3, counter: 1_000, issued: 10_000 }
    }

    #[test]
    fn round_trips_within_five_minutes() {
        let text = encode(&sample());
        assert_ne!(text, encode(&sample()), "two iterators for one position differ");
        assert_eq!(decode(&text, 10_000), Ok(sample()));
        assert_eq!(decode(&text, 10_000 + ITERATOR_TTL_MS), Ok(sample()));
    }

    #[test]
    fn expires_after_five_minutes() {
        let text = encode(&sample());
        assert_eq!(decode(&text, 10_001 + ITERATOR_TTL_MS), Err(IterError::Expired { issued: 10_000 }));
    }

    #[test]
    fn forged_and_garbage_iterators_are_invalid() {
        let text = encode(&sample());
        let mut raw = STANDARD.decode(&text).expect("b64");
        raw[15] ^= 1;
        assert_eq!(decode(&STANDARD.encode(&raw), 10_000), Err(IterError::Invalid));
        assert_eq!(decode("not base64!!", 10_000), Err(IterError::Invalid));
        assert_eq!(decode("", 10_000), Err(IterError::Invalid));
        assert_eq!(decode(&STANDARD.encode([1u8; 20]), 10_000), Err(IterError::Invalid));
    }
}
