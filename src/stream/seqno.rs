//! Sequence numbers: Kinesis-like decimal strings, strictly increasing within a shard.
//!
//! A stream numbers its appends with one counter (so a child shard's numbers are above its
//! parents'), and a sequence number is rendered as `49` + the counter in 20 digits + the
//! shard's index in 12 digits: 34 decimal digits, fixed width, so comparing the strings and
//! comparing them as big integers agree. Parsing accepts the same value with or without
//! leading zeros.

use std::fmt;

const PREFIX: u128 = 49;
const SHARD_DIGITS: u32 = 12;
const COUNTER_DIGITS: u32 = 20;

/// A record's position: the stream-wide append counter and the shard it went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SequenceNumber {
    /// The stream-wide append counter (what AMQP `x-stream-offset` numbers are).
    pub counter: u64,
    /// The shard's index (`shardId-000000000003` is 3).
    pub shard: u32,
}

impl SequenceNumber {
    /// The number as a 128-bit integer.
    pub fn value(self) -> u128 {
        let shard_scale = 10u128.pow(SHARD_DIGITS);
        let prefix_scale = 10u128.pow(SHARD_DIGITS + COUNTER_DIGITS);
        PREFIX * prefix_scale + u128::from(self.counter) * shard_scale + u128::from(self.shard)
    }

    /// Parse a decimal sequence number this broker issued; `None` for anything else.
    pub fn parse(text: &str) -> Option<SequenceNumber> {
        if text.is_empty() || text.len() > 39 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: u128 = text.parse().ok()?;
        let shard_scale = 10u128.pow(SHARD_DIGITS);
        let prefix_scale = 10u128.pow(SHARD_DIGITS + COUNTER_DIGITS);
        if v / prefix_scale != PREFIX {
            return None;
        }
        let rest = v % prefix_scale;
        let shard = u32::try_from(rest % shard_scale).ok()?;
        let counter = u64::try_from(rest / shard_scale).ok()?;
        Some(SequenceNumber { counter, shard })
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fixed_width_and_round_trips() {
        let s = SequenceNumber { counter: 7, shard: 3 };
        let text = s.to_string();
        assert_eq!(text.len(), 34);
        assert_eq!(text, "4900000000000000000007000000000003");
        assert_eq!(SequenceNumber::parse(&text), Some(s));
        let big = SequenceNumber { counter: u64::MAX, shard: 999_999 };
        assert_eq!(SequenceNumber::parse(&big.to_string()), Some(big));
    }

    #[test]
    fn string_order_is_numeric_order_and_counter_order() {
        let a = SequenceNumber { counter: 9, shard: 5 }.to_string();
        let b = SequenceNumber { counter: 10, shard: 0 }.to_string();
        assert!(a < b);
        assert!(a.parse::<u128>().ok() < b.parse::<u128>().ok());
    }

    #[test]
    fn foreign_numbers_do_not_parse() {
        assert_eq!(SequenceNumber::parse("12345"), None);
        assert_eq!(SequenceNumber::parse("abc"), None);
        assert_eq!(SequenceNumber::parse(""), None);
        assert_eq!(SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898"), None);
    }
}
