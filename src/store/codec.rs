//! The on-disk encoding of a [`Message`]: compact, versioned by the record
//! format, and bounded on decode (every length is checked against what is
//! left before anything is allocated).

use bytes::Bytes;
use thiserror::Error;

use crate::message::{FieldTable, FieldValue, Message, Properties};

/// Why stored bytes could not be decoded. A record that passed its CRC but fails
/// here was written by a different format version or is a bug.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    /// The input ended inside a field.
    #[error("truncated at offset {0}")]
    Truncated(usize),
    /// A tag byte is not one we write.
    #[error("unknown tag {tag} at offset {offset}")]
    UnknownTag {
        /// The tag.
        tag: u8,
        /// Where.
        offset: usize,
    },
    /// A string is not UTF-8.
    #[error("invalid utf-8 at offset {0}")]
    Utf8(usize),
    /// Tables nest deeper than we ever write.
    #[error("field tables nested too deeply")]
    TooDeep,
}

const MAX_DEPTH: usize = 64;

/// Append the encoding of `m` to `out`.
pub fn encode_message(m: &Message, out: &mut Vec<u8>) {
    put_str(out, &m.exchange);
    put_str(out, &m.routing_key);
    encode_properties(&m.properties, out);
    put_bytes(out, &m.body);
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn encode_properties(p: &Properties, out: &mut Vec<u8>) {
    let strs = [
        &p.content_type,
        &p.content_encoding,
        &p.correlation_id,
        &p.reply_to,
        &p.expiration,
        &p.message_id,
        &p.kind,
        &p.user_id,
        &p.app_id,
        &p.cluster_id,
    ];
    let mut flags: u16 = 0;
    for (i, s) in strs.iter().enumerate() {
        if s.is_some() {
            flags |= 1 << i;
        }
    }
    if p.headers.is_some() {
        flags |= 1 << 10;
    }
    if p.delivery_mode.is_some() {
        flags |= 1 << 11;
    }
    if p.priority.is_some() {
        flags |= 1 << 12;
    }
    if p.timestamp.is_some() {
        flags |= 1 << 13;
    }
    out.extend_from_slice(&flags.to_le_bytes());
    for s in strs.iter().copied().flatten() {
        put_str(out, s);
    }
    if let Some(h) = &p.headers {
        encode_table(h, out);
    }
    if let Some(d) = p.delivery_mode {
        out.push(d);
    }
    if let Some(pr) = p.priority {
        out.push(pr);
    }
    if let Some(t) = p.timestamp {
        out.extend_from_slice(&t.to_le_bytes());
    }
}

fn encode_table(t: &FieldTable, out: &mut Vec<u8>) {
    put_u32(out, t.len() as u32);
    for (k, v) in t {
        put_str(out, k);
        encode_value(v, out);
    }
}

fn encode_value(v: &FieldValue, out: &mut Vec<u8>) {
    match v {
        FieldValue::Bool(b) => out.extend_from_slice(&[0, u8::from(*b)]),
        FieldValue::I8(x) => out.extend_from_slice(&[1, *x as u8]),
        FieldValue::U8(x) => out.extend_from_slice(&[2, *x]),
        FieldValue::I16(x) => {
            out.push(3);
            out.extend_from_slice(&x.to_le_bytes());
        }
        FieldValue::U16(x) => {
            out.push(4);
            out.extend_from_slice(&x.to_le_bytes());
        }
        FieldValue::I32(x) => {
            out.push(5);
            out.extend_from_slice(&x.to_le_bytes());
        }
        FieldValue::U32(x) => {
            out.push(6);
            out.extend_from_slice(&x.to_le_bytes());
        }
        FieldValue::I64(x) => {
            out.push(7);
            out.extend_from_slice(&x.to_le_bytes());
        }
        FieldValue::F32(x) => {
            out.push(8);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        FieldValue::F64(x) => {
            out.push(9);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        FieldValue::Decimal { scale, value } => {
            out.extend_from_slice(&[10, *scale]);
            out.extend_from_slice(&value.to_le_bytes());
        }
        FieldValue::ShortString(s) => {
            out.push(11);
            put_str(out, s);
        }
        FieldValue::LongString(b) => {
            out.push(12);
            put_bytes(out, b);
        }
        FieldValue::Array(items) => {
            out.push(13);
            put_u32(out, items.len() as u32);
            for i in items {
                encode_value(i, out);
            }
        }
        FieldValue::Timestamp(t) => {
            out.push(14);
            out.extend_from_slice(&t.to_le_bytes());
        }
        FieldValue::Table(t) => {
            out.push(15);
            encode_table(t, out);
        }
        FieldValue::Bytes(b) => {
            out.push(16);
            put_bytes(out, b);
        }
        FieldValue::Void => out.push(17),
    }
}

/// A bounds-checked reader over a record.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() - self.pos < n {
            return Err(CodecError::Truncated(self.pos));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, CodecError> {
        let at = self.pos;
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| CodecError::Utf8(at))
    }
    /// A count of items that each take at least `min_size` bytes, checked against what is left.
    fn count(&mut self, min_size: usize) -> Result<usize, CodecError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.buf.len() - self.pos {
            return Err(CodecError::Truncated(self.pos));
        }
        Ok(n)
    }
}

/// Decode a message encoded by [`encode_message`].
pub fn decode_message(buf: &[u8]) -> Result<Message, CodecError> {
    let mut r = Reader { buf, pos: 0 };
    let exchange = r.string()?;
    let routing_key = r.string()?;
    let properties = decode_properties(&mut r)?;
    let body = Bytes::copy_from_slice(r.bytes()?);
    Ok(Message::new(exchange, routing_key, properties, body))
}

fn decode_properties(r: &mut Reader<'_>) -> Result<Properties, CodecError> {
    let flags = u16::from_le_bytes(r.array()?);
    let mut strs: [Option<String>; 10] = Default::default();
    for (i, slot) in strs.iter_mut().enumerate() {
        if flags & (1 << i) != 0 {
            *slot = Some(r.string()?);
        }
    }
    let headers = if flags & (1 << 10) != 0 { Some(decode_table(r, 0)?) } else { None };
    let delivery_mode = if flags & (1 << 11) != 0 { Some(r.u8()?) } else { None };
    let priority = if flags & (1 << 12) != 0 { Some(r.u8()?) } else { None };
    let timestamp = if flags & (1 << 13) != 0 { Some(r.u64()?) } else { None };
    let [
        content_type,
        content_encoding,
        correlation_id,
        reply_to,
        expiration,
        message_id,
        kind,
        user_id,
        app_id,
        cluster_id,
    ] = strs;
    Ok(Properties {
        content_type,
        content_encoding,
        headers,
        delivery_mode,
        priority,
        correlation_id,
        reply_to,
        expiration,
        message_id,
        timestamp,
        kind,
        user_id,
        app_id,
        cluster_id,
    })
}

fn decode_table(r: &mut Reader<'_>, depth: usize) -> Result<FieldTable, CodecError> {
    if depth > MAX_DEPTH {
        return Err(CodecError::TooDeep);
    }
    let n = r.count(5)?;
    let mut t = FieldTable::new();
    for _ in 0..n {
        let k = r.string()?;
        let v = decode_value(r, depth)?;
        t.insert(k, v);
    }
    Ok(t)
}

fn decode_value(r: &mut Reader<'_>, depth: usize) -> Result<FieldValue, CodecError> {
    let at = r.pos;
    Ok(match r.u8()? {
        0 => FieldValue::Bool(r.u8()? != 0),
        1 => FieldValue::I8(r.u8()? as i8),
        2 => FieldValue::U8(r.u8()?),
        3 => FieldValue::I16(i16::from_le_bytes(r.array()?)),
        4 => FieldValue::U16(u16::from_le_bytes(r.array()?)),
        5 => FieldValue::I32(i32::from_le_bytes(r.array()?)),
        6 => FieldValue::U32(u32::from_le_bytes(r.array()?)),
        7 => FieldValue::I64(i64::from_le_bytes(r.array()?)),
        8 => FieldValue::F32(f32::from_bits(u32::from_le_bytes(r.array()?))),
        9 => FieldValue::F64(f64::from_bits(u64::from_le_bytes(r.array()?))),
        10 => {
            let scale = r.u8()?;
            FieldValue::Decimal { scale, value: r.u32()? }
        }
        11 => FieldValue::ShortString(r.string()?),
        12 => FieldValue::LongString(Bytes::copy_from_slice(r.bytes()?)),
        13 => {
            if depth >= MAX_DEPTH {
                return Err(CodecError::TooDeep);
            }
            let n = r.count(1)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(decode_value(r, depth + 1)?);
            }
            FieldValue::Array(items)
        }
        14 => FieldValue::Timestamp(r.u64()?),
        15 => FieldValue::Table(decode_table(r, depth + 1)?),
        16 => FieldValue::Bytes(Bytes::copy_from_slice(r.bytes()?)),
        17 => FieldValue::Void,
        tag => return Err(CodecError::UnknownTag { tag, offset: at }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = FieldValue> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            any::<i8>().prop_map(FieldValue::I8),
            any::<u8>().prop_map(FieldValue::U8),
            any::<i16>().prop_map(FieldValue::I16),
            any::<u16>().prop_map(FieldValue::U16),
            any::<i32>().prop_map(FieldValue::I32),
            any::<u32>().prop_map(FieldValue::U32),
            any::<i64>().prop_map(FieldValue::I64),
            any::<i32>().prop_map(|x| FieldValue::F32(x as f32)),
            any::<i64>().prop_map(|x| FieldValue::F64(x as f64)),
            (any::<u8>(), any::<u32>()).prop_map(|(scale, value)| FieldValue::Decimal { scale, value }),
            ".{0,8}".prop_map(FieldValue::ShortString),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(|v| FieldValue::LongString(Bytes::from(v))),
            any::<u64>().prop_map(FieldValue::Timestamp),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(|v| FieldValue::Bytes(Bytes::from(v))),
            Just(FieldValue::Void),
        ];
        leaf.prop_recursive(3, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(FieldValue::Array),
                proptest::collection::btree_map(".{0,6}", inner, 0..4).prop_map(FieldValue::Table),
            ]
        })
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            ".{0,10}",
            ".{0,10}",
            proptest::option::of(".{0,10}"),
            proptest::option::of(proptest::collection::btree_map(".{0,6}", value(), 0..5)),
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u64>()),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(exchange, key, ct, headers, prio, ts, body)| {
                let props = Properties {
                    content_type: ct.clone(),
                    headers,
                    priority: prio,
                    timestamp: ts,
                    reply_to: ct,
                    delivery_mode: Some(2),
                    ..Properties::default()
                };
                Message::new(exchange, key, props, Bytes::from(body))
            })
    }

    proptest! {
        #[test]
        fn round_trips(m in message()) {
            let mut buf = Vec::new();
            encode_message(&m, &mut buf);
            prop_assert_eq!(decode_message(&buf).expect("decodes"), m);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_message(&bytes);
        }

        #[test]
        fn truncation_is_an_error(m in message(), cut in 0usize..64) {
            let mut buf = Vec::new();
            encode_message(&m, &mut buf);
            let cut = cut.min(buf.len().saturating_sub(1));
            prop_assert!(decode_message(&buf[..cut]).is_err());
        }
    }
}
