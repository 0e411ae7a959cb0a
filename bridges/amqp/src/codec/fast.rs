//! Hand decoders for the two methods every message passes through: `basic.publish` and
//! `basic.ack`.
//!
//! amq-protocol's generated nom parsers cost thousands of instructions per method (error
//! contexts, combinator layers); these two layouts are fixed and tiny. A fast decoder only
//! answers for input it fully understands — exact length, valid UTF-8 — and returns `None`
//! otherwise, so the generic parser still produces every error, with the same text.

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::ShortString;

/// `basic` class id.
const BASIC: u16 = 60;
/// `basic.publish` method id.
const PUBLISH: u16 = 40;
/// `basic.ack` method id.
const ACK: u16 = 80;

/// Decodes `payload` (class id, method id, arguments) if it is a well-formed `basic.publish`
/// or `basic.ack`; `None` for anything else, including malformed input.
pub(super) fn decode(class_id: u16, method_id: u16, payload: &[u8]) -> Option<AMQPClass> {
    let args = payload.get(4..)?;
    match (class_id, method_id) {
        (BASIC, PUBLISH) => publish(args),
        (BASIC, ACK) => ack(args),
        _ => None,
    }
}

/// `reserved-1` (short), `exchange` (shortstr), `routing-key` (shortstr), bits
/// `mandatory`, `immediate`.
fn publish(args: &[u8]) -> Option<AMQPClass> {
    publish_args(args).map(|p| p.to_amqp())
}

/// A `basic.publish` decoded in place: its strings borrow the frame's bytes, so the hot
/// path builds no `AMQPClass` (and no `ShortString`s) for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRef<'a> {
    /// The exchange name (`""` for the default exchange).
    pub exchange: &'a str,
    /// The routing key.
    pub routing_key: &'a str,
    /// The `mandatory` bit.
    pub mandatory: bool,
    /// The `immediate` bit.
    pub immediate: bool,
}

impl PublishRef<'_> {
    /// The same method as amq-protocol's type.
    pub fn to_amqp(&self) -> AMQPClass {
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: ShortString::from(self.exchange),
            routing_key: ShortString::from(self.routing_key),
            mandatory: self.mandatory,
            immediate: self.immediate,
        }))
    }
}

/// Decodes a method frame's `payload` (class id, method id, arguments) in place if it is a
/// well-formed `basic.publish`; `None` for anything else, including malformed input (which
/// the generic parser then reports).
pub(super) fn publish_ref(payload: &[u8]) -> Option<PublishRef<'_>> {
    match payload {
        [0, 60, 0, 40, args @ ..] => publish_args(args),
        _ => None,
    }
}

fn publish_args(args: &[u8]) -> Option<PublishRef<'_>> {
    let rest = args.get(2..)?;
    let (exchange, rest) = short_str(rest)?;
    let (routing_key, rest) = short_str(rest)?;
    let [bits] = rest else { return None };
    Some(PublishRef { exchange, routing_key, mandatory: bits & 0b01 != 0, immediate: bits & 0b10 != 0 })
}

/// One value in a content header's property list, as [`walk_plain_properties`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PropertyValue<'a> {
    /// A short string (content-type, reply-to, message-id, ...).
    Str(&'a str),
    /// An octet (delivery-mode, priority).
    Octet(u8),
    /// A timestamp.
    Timestamp(u64),
}

/// The `headers` property's flag: a field table, which the fast path leaves to amq-protocol.
pub(super) const HEADERS_FLAG: u16 = 1 << 13;

/// Walks a content header's property flags and values, calling `visit(flag_bit, value)`
/// for each present property in wire order (bit 15 = content-type ... bit 2 = cluster-id).
///
/// Answers only for lists it fully understands: no headers table, every value complete,
/// short strings valid UTF-8, nothing after the last value; `None` otherwise (the generic
/// parser then produces the value or the error). Like amq-protocol's parser, it ignores
/// flag bits 1 and 0 (the continuation bit, which 0-9-1 never uses).
pub(super) fn walk_plain_properties<'a>(props: &'a [u8], mut visit: impl FnMut(u8, PropertyValue<'a>)) -> Option<()> {
    let (flags, mut rest) = props.split_first_chunk::<2>()?;
    let flags = u16::from_be_bytes(*flags);
    if flags & HEADERS_FLAG != 0 {
        return None;
    }
    // Walk only the present bits, high to low (the wire order).
    let mut pending = flags & 0xFFFC;
    while pending != 0 {
        let bit = 15 - pending.leading_zeros() as u8;
        pending &= !(1 << bit);
        let value = match bit {
            // delivery-mode, priority
            12 | 11 => {
                let (&octet, tail) = rest.split_first()?;
                rest = tail;
                PropertyValue::Octet(octet)
            }
            // timestamp
            6 => {
                let (stamp, tail) = rest.split_first_chunk::<8>()?;
                rest = tail;
                PropertyValue::Timestamp(u64::from_be_bytes(*stamp))
            }
            _ => {
                let (text, tail) = short_str(rest)?;
                rest = tail;
                PropertyValue::Str(text)
            }
        };
        visit(bit, value);
    }
    rest.is_empty().then_some(())
}

/// A length-prefixed short string, borrowed, and what follows it.
fn short_str(input: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = input.split_first()?;
    if len == 0 {
        // The default exchange's name, on every publish to it.
        return Some(("", rest));
    }
    let (text, rest) = rest.split_at_checked(usize::from(len))?;
    Some((std::str::from_utf8(text).ok()?, rest))
}

/// Decodes a method frame's `payload` if it is a well-formed `basic.ack`: its delivery tag
/// and `multiple` bit; `None` for anything else.
pub(super) fn ack_ref(payload: &[u8]) -> Option<(u64, bool)> {
    let [0, 60, 0, 80, t0, t1, t2, t3, t4, t5, t6, t7, bits] = *payload else { return None };
    Some((u64::from_be_bytes([t0, t1, t2, t3, t4, t5, t6, t7]), bits & 1 != 0))
}

/// `delivery-tag` (longlong), bit `multiple`.
fn ack(args: &[u8]) -> Option<AMQPClass> {
    let [t0, t1, t2, t3, t4, t5, t6, t7, bits] = args else { return None };
    let delivery_tag = u64::from_be_bytes([*t0, *t1, *t2, *t3, *t4, *t5, *t6, *t7]);
    Some(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag, multiple: bits & 1 != 0 })))
}

#[cfg(test)]
mod tests {
    use amq_protocol::protocol::parse_class;
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    fn generic(payload: &[u8]) -> Option<AMQPClass> {
        match parse_class(payload) {
            Ok(([], method)) => Some(method),
            _ => None,
        }
    }

    fn ids(payload: &[u8]) -> (u16, u16) {
        (u16::from_be_bytes([payload[0], payload[1]]), u16::from_be_bytes([payload[2], payload[3]]))
    }

    fn publish_payload(exchange: &[u8], key: &[u8], bits: u8) -> Vec<u8> {
        let mut p = vec![0, 60, 0, 40, 0, 0, exchange.len() as u8];
        p.extend_from_slice(exchange);
        p.push(key.len() as u8);
        p.extend_from_slice(key);
        p.push(bits);
        p
    }

    #[test]
    fn publish_matches_the_generic_parser() {
        for bits in 0..4 {
            let p = publish_payload(b"amq.topic", b"a.b.c", bits);
            assert_eq!(decode(60, 40, &p), generic(&p));
            assert!(decode(60, 40, &p).is_some());
        }
    }

    #[test]
    fn ack_matches_the_generic_parser() {
        let mut p = vec![0, 60, 0, 80];
        p.extend_from_slice(&u64::MAX.to_be_bytes());
        p.push(1);
        assert_eq!(decode(60, 80, &p), generic(&p));
        assert!(decode(60, 80, &p).is_some());
    }

    #[test]
    fn unusual_input_is_left_to_the_generic_parser() {
        // Invalid UTF-8, a trailing byte, a truncated string, another method.
        assert_eq!(decode(60, 40, &publish_payload(&[0xff, 0xfe], b"k", 0)), None);
        let mut trailing = publish_payload(b"x", b"k", 0);
        trailing.push(0);
        assert_eq!(decode(60, 40, &trailing), None);
        assert_eq!(decode(60, 40, &[0, 60, 0, 40, 0, 0, 9, b'a']), None);
        assert_eq!(decode(60, 10, &[0, 60, 0, 10, 0, 0, 0, 0, 0, 10, 0]), None);
    }

    proptest! {
        /// Whatever the bytes, the fast decoder either declines or agrees with amq-protocol.
        #[test]
        fn never_disagrees_with_the_generic_parser(method in prop_oneof![Just(40u16), Just(80u16)],
                                                   args in vec(any::<u8>(), 0..40)) {
            let mut p = vec![0, 60];
            p.extend_from_slice(&method.to_be_bytes());
            p.extend_from_slice(&args);
            let (c, m) = ids(&p);
            if let Some(fast) = decode(c, m, &p) {
                prop_assert_eq!(Some(fast), generic(&p));
            }
        }

        /// The in-place publish decoder declines or agrees with amq-protocol, whatever the bytes.
        #[test]
        fn publish_ref_never_disagrees_with_the_generic_parser(args in vec(any::<u8>(), 0..40)) {
            let mut p = vec![0, 60, 0, 40];
            p.extend_from_slice(&args);
            if let Some(fast) = publish_ref(&p) {
                prop_assert_eq!(Some(fast.to_amqp()), generic(&p));
            }
            prop_assert_eq!(publish_ref(&p).map(|f| f.to_amqp()), decode(60, 40, &p));
        }

        #[test]
        fn well_formed_publishes_take_the_fast_path(exchange in "[a-z.]{0,40}", key in "\\PC{0,60}", bits in 0u8..4) {
            prop_assume!(key.len() < 256);
            let p = publish_payload(exchange.as_bytes(), key.as_bytes(), bits);
            let fast = decode(60, 40, &p);
            prop_assert!(fast.is_some());
            prop_assert_eq!(fast, generic(&p));
        }
    }
}
