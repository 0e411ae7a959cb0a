//! Conversions between amq-protocol's wire types and the core's message
//! types ([`switchyard::message`]).
//!
//! The core keeps AMQP's field-table types, so a table read from the wire
//! converts to the core and back without loss. Two things the core can hold
//! have no 0-9-1 wire form, and are mapped rather than dropped:
//!
//! - [`FieldValue::ShortString`] becomes a long string (`S`) with the same
//!   bytes. RabbitMQ reads the type letter `s` as a signed 16-bit integer, so
//!   a short string cannot appear in a field table; amq-protocol would write
//!   its `AMQPValue::ShortString` with the type letter `_`, which no peer
//!   (amq-protocol included) can decode.
//! - A string property longer than 255 bytes (possible when another
//!   protocol published the message) cannot be a short string. It moves into
//!   the headers as a long string named `x-<property>` (`x-message-id`,
//!   `x-correlation-id`, ..., the names RabbitMQ uses for the first two),
//!   unless the publisher already set that header. A header *key* longer
//!   than 255 bytes cannot be encoded at all and is left out.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable as AmqpFieldTable, LongString, ShortString,
};
use bytes::Bytes;
use switchyard::message::{FieldTable, FieldValue, Properties};

/// Core properties from AMQP basic properties.
pub fn properties_from_amqp(p: &BasicProperties) -> Properties {
    let text = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_owned());
    Properties {
        content_type: text(p.content_type()),
        content_encoding: text(p.content_encoding()),
        headers: p.headers().as_ref().map(table_from_amqp),
        delivery_mode: *p.delivery_mode(),
        priority: *p.priority(),
        correlation_id: text(p.correlation_id()),
        reply_to: text(p.reply_to()),
        expiration: text(p.expiration()),
        message_id: text(p.message_id()),
        timestamp: *p.timestamp(),
        kind: text(p.kind()),
        user_id: text(p.user_id()),
        app_id: text(p.app_id()),
        cluster_id: text(p.cluster_id()),
    }
}

/// Core properties straight from a content header's property list (flags and values),
/// without amq-protocol's `BasicProperties` in between, when the hand decoder
/// understands the list (no headers table, every value complete and valid, nothing after
/// the last); `None` otherwise. The same value as [`properties_from_amqp`] of amq-protocol's parse
/// (property-tested).
pub fn properties_from_plain(props: &[u8]) -> Option<Properties> {
    let mut out = Properties::default();
    fill_from_plain(props, &mut out)?;
    Some(out)
}

/// [`properties_from_plain`] into `out`, which should be `Properties::default()`: sets the
/// properties present in the list, in place (a `Properties` is large; building one to move
/// it costs more than decoding the usual header). On `None`, `out` may be partly set.
pub(super) fn fill_from_plain(props: &[u8], out: &mut Properties) -> Option<()> {
    use super::fast::PropertyValue::{Octet, Str, Timestamp};
    super::fast::walk_plain_properties(props, |bit, value| match (bit, value) {
        (12, Octet(v)) => out.delivery_mode = Some(v),
        (11, Octet(v)) => out.priority = Some(v),
        (6, Timestamp(v)) => out.timestamp = Some(v),
        (bit, Str(s)) => {
            let slot = match bit {
                15 => &mut out.content_type,
                14 => &mut out.content_encoding,
                10 => &mut out.correlation_id,
                9 => &mut out.reply_to,
                8 => &mut out.expiration,
                7 => &mut out.message_id,
                5 => &mut out.kind,
                4 => &mut out.user_id,
                3 => &mut out.app_id,
                _ => &mut out.cluster_id,
            };
            *slot = Some(s.to_owned());
        }
        // The walker reports octets and timestamps only for their own bits.
        _ => {}
    })
}

/// AMQP basic properties from core properties. See the module docs for
/// string properties longer than 255 bytes.
pub fn properties_to_amqp(p: &Properties) -> BasicProperties {
    let mut headers = p.headers.as_ref().map(table_to_amqp);
    // Moves an overlong value into the headers; returns the short string if it fits.
    let mut short = |name: &str, value: &Option<String>| -> Option<ShortString> {
        let value = value.as_deref()?;
        match ShortString::try_new(value) {
            Ok(s) => Some(s),
            Err(_) => {
                let key = ShortString::from(format!("x-{name}"));
                let table = headers.get_or_insert_with(AmqpFieldTable::default);
                if !table.contains_key(key.as_str()) {
                    table.insert(key, AMQPValue::LongString(value.into()));
                }
                None
            }
        }
    };
    let content_type = short("content-type", &p.content_type);
    let content_encoding = short("content-encoding", &p.content_encoding);
    let correlation_id = short("correlation-id", &p.correlation_id);
    let reply_to = short("reply-to", &p.reply_to);
    let expiration = short("expiration", &p.expiration);
    let message_id = short("message-id", &p.message_id);
    let kind = short("type", &p.kind);
    let user_id = short("user-id", &p.user_id);
    let app_id = short("app-id", &p.app_id);
    let cluster_id = short("cluster-id", &p.cluster_id);

    let mut out = BasicProperties::default();
    if let Some(v) = content_type {
        out = out.with_content_type(v);
    }
    if let Some(v) = content_encoding {
        out = out.with_content_encoding(v);
    }
    if let Some(v) = headers {
        out = out.with_headers(v);
    }
    if let Some(v) = p.delivery_mode {
        out = out.with_delivery_mode(v);
    }
    if let Some(v) = p.priority {
        out = out.with_priority(v);
    }
    if let Some(v) = correlation_id {
        out = out.with_correlation_id(v);
    }
    if let Some(v) = reply_to {
        out = out.with_reply_to(v);
    }
    if let Some(v) = expiration {
        out = out.with_expiration(v);
    }
    if let Some(v) = message_id {
        out = out.with_message_id(v);
    }
    if let Some(v) = p.timestamp {
        out = out.with_timestamp(v);
    }
    if let Some(v) = kind {
        out = out.with_type(v);
    }
    if let Some(v) = user_id {
        out = out.with_user_id(v);
    }
    if let Some(v) = app_id {
        out = out.with_app_id(v);
    }
    if let Some(v) = cluster_id {
        out = out.with_cluster_id(v);
    }
    out
}

/// True when `p` encodes without a field table or any conversion: no headers, and every
/// text property fits a short string. [`put_plain_properties`] writes those directly.
pub fn plain_properties(p: &Properties) -> bool {
    let fits = |s: &Option<String>| s.as_ref().is_none_or(|s| s.len() <= 255);
    p.headers.is_none()
        && fits(&p.content_type)
        && fits(&p.content_encoding)
        && fits(&p.correlation_id)
        && fits(&p.reply_to)
        && fits(&p.expiration)
        && fits(&p.message_id)
        && fits(&p.kind)
        && fits(&p.user_id)
        && fits(&p.app_id)
        && fits(&p.cluster_id)
}

/// Writes the property flags and values of a content header for `p`, which must satisfy
/// [`plain_properties`] (it fails otherwise, writing nothing): the same bytes as
/// amq-protocol's encoding of [`properties_to_amqp`], without building the intermediate
/// value on the delivery path.
pub fn put_plain_properties(p: &Properties, out: &mut bytes::BytesMut) -> Result<(), amq_protocol::frame::GenError> {
    use bytes::BufMut;
    if !plain_properties(p) {
        return Err(amq_protocol::frame::GenError::CustomError(0));
    }
    let mut flags = 0u16;
    let mut bit = |present: bool, n: u16| {
        if present {
            flags |= 1 << n;
        }
    };
    bit(p.content_type.is_some(), 15);
    bit(p.content_encoding.is_some(), 14);
    bit(p.delivery_mode.is_some(), 12);
    bit(p.priority.is_some(), 11);
    bit(p.correlation_id.is_some(), 10);
    bit(p.reply_to.is_some(), 9);
    bit(p.expiration.is_some(), 8);
    bit(p.message_id.is_some(), 7);
    bit(p.timestamp.is_some(), 6);
    bit(p.kind.is_some(), 5);
    bit(p.user_id.is_some(), 4);
    bit(p.app_id.is_some(), 3);
    bit(p.cluster_id.is_some(), 2);
    out.put_u16(flags);
    let short = |out: &mut bytes::BytesMut, s: &Option<String>| {
        if let Some(s) = s {
            // `plain_properties` checked the length.
            out.put_u8(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
    };
    short(out, &p.content_type);
    short(out, &p.content_encoding);
    if let Some(v) = p.delivery_mode {
        out.put_u8(v);
    }
    if let Some(v) = p.priority {
        out.put_u8(v);
    }
    short(out, &p.correlation_id);
    short(out, &p.reply_to);
    short(out, &p.expiration);
    short(out, &p.message_id);
    if let Some(v) = p.timestamp {
        out.put_u64(v);
    }
    short(out, &p.kind);
    short(out, &p.user_id);
    short(out, &p.app_id);
    short(out, &p.cluster_id);
    Ok(())
}

/// A core field table from an AMQP one.
pub fn table_from_amqp(t: &AmqpFieldTable) -> FieldTable {
    t.inner().iter().map(|(k, v)| (k.as_str().to_owned(), value_from_amqp(v))).collect()
}

/// An AMQP field table from a core one. Keys longer than 255 bytes have no
/// wire form and are left out.
pub fn table_to_amqp(t: &FieldTable) -> AmqpFieldTable {
    let mut out = AmqpFieldTable::default();
    for (k, v) in t {
        if let Ok(key) = ShortString::try_new(k.as_str()) {
            out.insert(key, value_to_amqp(v));
        }
    }
    out
}

/// A core field value from an AMQP one (exact for every type).
pub fn value_from_amqp(v: &AMQPValue) -> FieldValue {
    match v {
        AMQPValue::Boolean(b) => FieldValue::Bool(*b),
        AMQPValue::ShortShortInt(i) => FieldValue::I8(*i),
        AMQPValue::ShortShortUInt(u) => FieldValue::U8(*u),
        AMQPValue::ShortInt(i) => FieldValue::I16(*i),
        AMQPValue::ShortUInt(u) => FieldValue::U16(*u),
        AMQPValue::LongInt(i) => FieldValue::I32(*i),
        AMQPValue::LongUInt(u) => FieldValue::U32(*u),
        AMQPValue::LongLongInt(i) => FieldValue::I64(*i),
        AMQPValue::Float(f) => FieldValue::F32(*f),
        AMQPValue::Double(d) => FieldValue::F64(*d),
        AMQPValue::DecimalValue(d) => FieldValue::Decimal { scale: d.scale, value: d.value },
        AMQPValue::ShortString(s) => FieldValue::ShortString(s.as_str().to_owned()),
        AMQPValue::LongString(s) => FieldValue::LongString(Bytes::copy_from_slice(s.as_bytes())),
        AMQPValue::FieldArray(a) => FieldValue::Array(a.as_slice().iter().map(value_from_amqp).collect()),
        AMQPValue::Timestamp(t) => FieldValue::Timestamp(*t),
        AMQPValue::FieldTable(t) => FieldValue::Table(table_from_amqp(t)),
        AMQPValue::ByteArray(b) => FieldValue::Bytes(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Void => FieldValue::Void,
    }
}

/// An AMQP field value from a core one. Exact for every type except
/// [`FieldValue::ShortString`], which becomes a long string with the same
/// bytes (see the module docs).
pub fn value_to_amqp(v: &FieldValue) -> AMQPValue {
    match v {
        FieldValue::Bool(b) => AMQPValue::Boolean(*b),
        FieldValue::I8(i) => AMQPValue::ShortShortInt(*i),
        FieldValue::U8(u) => AMQPValue::ShortShortUInt(*u),
        FieldValue::I16(i) => AMQPValue::ShortInt(*i),
        FieldValue::U16(u) => AMQPValue::ShortUInt(*u),
        FieldValue::I32(i) => AMQPValue::LongInt(*i),
        FieldValue::U32(u) => AMQPValue::LongUInt(*u),
        FieldValue::I64(i) => AMQPValue::LongLongInt(*i),
        FieldValue::F32(f) => AMQPValue::Float(*f),
        FieldValue::F64(d) => AMQPValue::Double(*d),
        FieldValue::Decimal { scale, value } => AMQPValue::DecimalValue(DecimalValue { scale: *scale, value: *value }),
        FieldValue::ShortString(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        FieldValue::LongString(b) => AMQPValue::LongString(LongString::from(&b[..])),
        FieldValue::Array(a) => {
            AMQPValue::FieldArray(FieldArray::from(a.iter().map(value_to_amqp).collect::<Vec<_>>()))
        }
        FieldValue::Timestamp(t) => AMQPValue::Timestamp(*t),
        FieldValue::Table(t) => AMQPValue::FieldTable(table_to_amqp(t)),
        FieldValue::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(&b[..])),
        FieldValue::Void => AMQPValue::Void,
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::types::FieldArray;
    use bytes::BytesMut;
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    use super::*;
    use crate::codec::{DecodeError, Frame, decode, encode};

    fn plain_props() -> impl Strategy<Value = Properties> {
        let text = || proptest::option::of("[a-z0-9./-]{0,40}");
        (
            (text(), text(), proptest::option::of(any::<u8>()), proptest::option::of(any::<u8>()), text(), text()),
            (text(), text(), proptest::option::of(any::<u64>()), text(), text(), text(), text()),
        )
            .prop_map(|((ct, ce, dm, pr, corr, reply), (exp, mid, ts, kind, uid, app, cluster))| Properties {
                content_type: ct,
                content_encoding: ce,
                headers: None,
                delivery_mode: dm,
                priority: pr,
                correlation_id: corr,
                reply_to: reply,
                expiration: exp,
                message_id: mid,
                timestamp: ts,
                kind,
                user_id: uid,
                app_id: app,
                cluster_id: cluster,
            })
    }

    proptest! {
        #[test]
        fn plain_properties_encode_as_amq_protocol_does(p in plain_props()) {
            let args = crate::codec::DeliverArgs {
                consumer_tag: "ctag",
                delivery_tag: 7,
                redelivered: false,
                exchange: "",
                routing_key: "q",
            };
            let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
            crate::codec::encode_deliver_with(1, &args, |out| put_plain_properties(&p, out), b"body", 4096, &mut ours);
            crate::codec::encode_deliver(1, &args, &properties_to_amqp(&p), b"body", 4096, &mut theirs);
            prop_assert_eq!(&ours[..], &theirs[..]);
        }
    }

    #[test]
    fn headers_or_long_strings_are_not_plain() {
        let mut p = Properties { headers: Some(FieldTable::new()), ..Properties::default() };
        assert!(!plain_properties(&p));
        p.headers = None;
        assert!(plain_properties(&p));
        p.message_id = Some("x".repeat(256));
        assert!(!plain_properties(&p));
        assert!(put_plain_properties(&p, &mut BytesMut::new()).is_err());
    }

    /// One core value of every type, nested.
    fn every_core_value() -> FieldTable {
        let scalars = vec![
            FieldValue::Bool(true),
            FieldValue::I8(-8),
            FieldValue::U8(200),
            FieldValue::I16(-1600),
            FieldValue::U16(60_000),
            FieldValue::I32(-3_200_000),
            FieldValue::U32(4_000_000_000),
            FieldValue::I64(i64::MIN),
            FieldValue::F32(1.5),
            FieldValue::F64(-2.25e300),
            FieldValue::Decimal { scale: 2, value: 12_345 },
            FieldValue::LongString(Bytes::from_static(b"\xff\xfe not utf-8 \x00")),
            FieldValue::Timestamp(1_700_000_000),
            FieldValue::Bytes(Bytes::from_static(b"\x00\x01\x02")),
            FieldValue::Void,
        ];
        let mut table: FieldTable = scalars.iter().enumerate().map(|(i, v)| (format!("k{i:02}"), v.clone())).collect();
        let inner: FieldTable = [("x-death".to_owned(), FieldValue::Array(scalars.clone()))].into();
        table.insert("array".into(), FieldValue::Array(scalars));
        table.insert("table".into(), FieldValue::Table(inner));
        table
    }

    /// Through a content header frame on the wire and back.
    fn over_the_wire(p: &BasicProperties) -> Result<BasicProperties, DecodeError> {
        let mut buf = BytesMut::new();
        encode(&Frame::Header { channel: 1, class_id: 60, body_size: 0, properties: p.clone() }, &mut buf);
        match decode(&mut buf, 0, false)? {
            Some(Frame::Header { properties, .. }) => Ok(properties),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_value_type_round_trips_core_to_amqp_and_back() {
        let table = every_core_value();
        assert_eq!(table_from_amqp(&table_to_amqp(&table)), table);
        for value in table.values() {
            assert_eq!(&value_from_amqp(&value_to_amqp(value)), value);
        }
    }

    #[test]
    fn every_value_type_round_trips_amqp_to_core_and_back() {
        let table = table_to_amqp(&every_core_value());
        assert_eq!(table_to_amqp(&table_from_amqp(&table)), table);
        // A ShortString amq-protocol value keeps its type in the core.
        let short = AMQPValue::ShortString("s".into());
        assert_eq!(value_from_amqp(&short), FieldValue::ShortString("s".into()));
    }

    #[test]
    fn every_value_type_survives_the_wire_including_non_utf8() {
        let headers = every_core_value();
        let props = Properties { headers: Some(headers.clone()), ..Properties::default() };
        let back = over_the_wire(&properties_to_amqp(&props)).expect("decodes");
        assert_eq!(properties_from_amqp(&back).headers, Some(headers));
    }

    #[test]
    fn short_string_values_become_long_strings() {
        let v = FieldValue::ShortString("héllo".into());
        assert_eq!(value_to_amqp(&v), AMQPValue::LongString("héllo".into()));
        assert_eq!(value_from_amqp(&value_to_amqp(&v)).as_str(), Some("héllo"));
    }

    #[test]
    fn amq_protocols_own_short_string_value_cannot_be_decoded() {
        // Documents why value_to_amqp never produces AMQPValue::ShortString:
        // amq-protocol writes it with the type letter '_'.
        let mut table = AmqpFieldTable::default();
        table.insert("k".into(), AMQPValue::ShortString("v".into()));
        let p = BasicProperties::default().with_headers(table);
        assert!(matches!(over_the_wire(&p), Err(DecodeError::BadContentHeader { .. })));
    }

    fn full_properties() -> Properties {
        Properties {
            content_type: Some("application/json".into()),
            content_encoding: Some("gzip".into()),
            headers: Some(every_core_value()),
            delivery_mode: Some(2),
            priority: Some(9),
            correlation_id: Some("corr".into()),
            reply_to: Some("amq.rabbitmq.reply-to".into()),
            expiration: Some("60000".into()),
            message_id: Some("msg-1".into()),
            timestamp: Some(1_700_000_000),
            kind: Some("order.created".into()),
            user_id: Some("guest".into()),
            app_id: Some("shop".into()),
            cluster_id: Some("c1".into()),
        }
    }

    #[test]
    fn properties_round_trip_both_ways_and_over_the_wire() {
        for props in [Properties::default(), full_properties()] {
            let amqp = properties_to_amqp(&props);
            assert_eq!(properties_from_amqp(&amqp), props);
            assert_eq!(properties_to_amqp(&properties_from_amqp(&amqp)), amqp);
            let wire = over_the_wire(&amqp).expect("decodes");
            assert_eq!(properties_from_amqp(&wire), props);
        }
        let amqp = properties_to_amqp(&full_properties());
        assert_eq!(amqp.kind().as_ref().map(ShortString::as_str), Some("order.created"));
        assert_eq!(amqp.bitmask(), 0xFFFC);
    }

    #[test]
    fn overlong_string_properties_move_to_headers() {
        let long = "m".repeat(300);
        let props = Properties {
            message_id: Some(long.clone()),
            correlation_id: Some(long.clone()),
            reply_to: Some("r".into()),
            headers: Some([("x-correlation-id".to_owned(), FieldValue::text("mine"))].into()),
            ..Properties::default()
        };
        let amqp = properties_to_amqp(&props);
        assert_eq!(amqp.message_id(), &None);
        assert_eq!(amqp.correlation_id(), &None);
        assert_eq!(amqp.reply_to().as_ref().map(ShortString::as_str), Some("r"));
        let back = properties_from_amqp(&over_the_wire(&amqp).expect("decodes"));
        assert_eq!(back.header("x-message-id").and_then(FieldValue::as_str), Some(long.as_str()));
        // The publisher's own header wins.
        assert_eq!(back.header("x-correlation-id").and_then(FieldValue::as_str), Some("mine"));
        // Without headers, a table is created.
        let props = Properties { app_id: Some(long.clone()), ..Properties::default() };
        let amqp = properties_to_amqp(&props);
        let headers = amqp.headers().as_ref().expect("created");
        assert_eq!(headers.inner().get("x-app-id"), Some(&AMQPValue::LongString(long.into())));
    }

    #[test]
    fn overlong_header_keys_are_left_out() {
        let table: FieldTable =
            [("k".repeat(256), FieldValue::Bool(true)), ("k".repeat(255), FieldValue::Bool(false))].into();
        let amqp = table_to_amqp(&table);
        assert_eq!(amqp.inner().len(), 1);
        assert!(amqp.contains_key(&"k".repeat(255)));
    }

    fn core_value() -> impl Strategy<Value = FieldValue> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            any::<i8>().prop_map(FieldValue::I8),
            any::<u8>().prop_map(FieldValue::U8),
            any::<i16>().prop_map(FieldValue::I16),
            any::<u16>().prop_map(FieldValue::U16),
            any::<i32>().prop_map(FieldValue::I32),
            any::<u32>().prop_map(FieldValue::U32),
            any::<i64>().prop_map(FieldValue::I64),
            any::<f32>().prop_filter("NaN != NaN", |f| !f.is_nan()).prop_map(FieldValue::F32),
            any::<f64>().prop_filter("NaN != NaN", |f| !f.is_nan()).prop_map(FieldValue::F64),
            (any::<u8>(), any::<u32>()).prop_map(|(scale, value)| FieldValue::Decimal { scale, value }),
            vec(any::<u8>(), 0..24).prop_map(|b| FieldValue::LongString(b.into())),
            any::<u64>().prop_map(FieldValue::Timestamp),
            vec(any::<u8>(), 0..24).prop_map(|b| FieldValue::Bytes(b.into())),
            Just(FieldValue::Void),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(FieldValue::Array),
                btree_map("\\PC{0,10}", inner, 0..6).prop_map(FieldValue::Table),
            ]
        })
    }

    proptest! {
        #[test]
        fn core_tables_survive_the_wire(
            headers in btree_map("\\PC{0,10}", core_value(), 0..6),
            message_id in proptest::option::of("\\PC{0,40}"),
            timestamp in any::<Option<u64>>(),
        ) {
            let props = Properties {
                headers: Some(headers),
                message_id,
                timestamp,
                ..Properties::default()
            };
            let wire = over_the_wire(&properties_to_amqp(&props));
            prop_assert_eq!(wire.map(|p| properties_from_amqp(&p)), Ok(props));
        }

        #[test]
        fn amqp_arrays_convert_element_for_element(values in vec(core_value(), 0..8)) {
            let amqp = value_to_amqp(&FieldValue::Array(values.clone()));
            let AMQPValue::FieldArray(array) = &amqp else {
                return Err(TestCaseError::fail("not an array"));
            };
            prop_assert_eq!(array.as_slice().len(), values.len());
            prop_assert_eq!(value_from_amqp(&amqp), FieldValue::Array(values));
            prop_assert_eq!(
                value_to_amqp(&value_from_amqp(&amqp)),
                AMQPValue::FieldArray(FieldArray::from(array.as_slice().to_vec()))
            );
        }
    }
}
