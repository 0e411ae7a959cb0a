//! MQTT PUBLISH ⇄ the core's [`Message`], by the table in `docs/mqtt.md`.
//!
//! The names of the headers MQTT-specific data travels in are RabbitMQ's where
//! RabbitMQ has one (`x-mqtt-publish-qos`, `x-reply-to-topic`, `x-correlation-id`),
//! so AMQP applications written against RabbitMQ's MQTT plugin see what they expect.

use bytes::Bytes;
use switchyard::message::{CompactString, FieldTable, FieldValue, Message, Properties as AmqpProps};

use crate::codec::{Properties, Publish, QoS};
use crate::topic::{from_routing_key, to_routing_key};

/// Header carrying the QoS the message was published with (RabbitMQ's name).
pub const H_PUBLISH_QOS: &str = "x-mqtt-publish-qos";
/// Header set (to `true`) on messages published with RETAIN, for Retain As Published.
pub const H_RETAIN: &str = "x-mqtt-retain";
/// Header carrying an MQTT 5 Response Topic, as a routing key (RabbitMQ's name).
pub const H_REPLY_TO_TOPIC: &str = "x-reply-to-topic";
/// Header carrying Correlation Data that is not a valid short string (RabbitMQ's name).
pub const H_CORRELATION_ID: &str = "x-correlation-id";
/// Header carrying the MQTT 5 Payload Format Indicator.
pub const H_PAYLOAD_FORMAT: &str = "x-mqtt-payload-format-indicator";
/// Header naming the publishing client, set only when that client has a No Local
/// subscription (the only case where anyone needs to know).
pub const H_PUBLISHER: &str = "x-mqtt-publisher";
/// Header keeping the order of user property names when the header table (sorted by
/// name) cannot: MQTT-3.3.2-18 wants the order kept when forwarding.
pub const H_PROPERTY_ORDER: &str = "x-mqtt-user-property-order";

/// Headers that are MQTT bookkeeping, not user properties.
fn is_internal(name: &str) -> bool {
    matches!(
        name,
        H_PUBLISH_QOS
            | H_RETAIN
            | H_REPLY_TO_TOPIC
            | H_CORRELATION_ID
            | H_PAYLOAD_FORMAT
            | H_PUBLISHER
            | H_PROPERTY_ORDER
    )
}

/// Build the core message for a PUBLISH (topic already resolved from any alias).
///
/// `publisher` is the client id to record for No Local, if needed.
pub fn to_message(p: &Publish, exchange: &str, publisher: Option<&str>) -> Message {
    to_message_with_key(p, exchange, publisher, to_routing_key(&p.topic).into())
}

/// [`to_message`] with the routing key already converted from `p.topic` (a session keeps the
/// last conversion: publishers usually repeat their topic).
pub fn to_message_with_key(
    p: &Publish,
    exchange: &str,
    publisher: Option<&str>,
    routing_key: CompactString,
) -> Message {
    debug_assert_eq!(routing_key, to_routing_key(&p.topic));
    let mut props =
        AmqpProps { delivery_mode: Some(if p.qos == QoS::AtMostOnce { 1 } else { 2 }), ..AmqpProps::default() };
    let mut headers = FieldTable::new();
    headers.insert(H_PUBLISH_QOS.into(), FieldValue::I8(p.qos as i8));
    if p.retain {
        headers.insert(H_RETAIN.into(), FieldValue::Bool(true));
    }
    if let Some(who) = publisher {
        headers.insert(H_PUBLISHER.into(), FieldValue::text(who));
    }
    let mp = &p.properties;
    props.content_type = mp.content_type.clone();
    if let Some(pfi) = mp.payload_format_indicator {
        headers.insert(H_PAYLOAD_FORMAT.into(), FieldValue::U8(pfi));
    }
    if let Some(rt) = &mp.response_topic {
        headers.insert(H_REPLY_TO_TOPIC.into(), FieldValue::text(to_routing_key(rt)));
    }
    if let Some(cd) = &mp.correlation_data {
        match std::str::from_utf8(cd) {
            Ok(s) if s.len() <= 255 => props.correlation_id = Some(s.to_string()),
            _ => {
                headers.insert(H_CORRELATION_ID.into(), FieldValue::LongString(cd.clone()));
            }
        }
    }
    if let Some(secs) = mp.message_expiry_interval {
        props.expiration = Some((u64::from(secs) * 1000).to_string());
    }
    for (k, v) in &mp.user_properties {
        let value = FieldValue::text(v);
        match headers.get_mut(k) {
            // A repeated name keeps every value, in order, as an array.
            Some(FieldValue::Array(values)) if !is_internal(k) => values.push(value),
            Some(existing) if !is_internal(k) => {
                let first = std::mem::replace(existing, FieldValue::Void);
                *existing = FieldValue::Array(vec![first, value]);
            }
            Some(_) => {}
            None => {
                headers.insert(k.clone(), value);
            }
        }
    }
    let names: Vec<&str> = mp.user_properties.iter().map(|(k, _)| k.as_str()).collect();
    if names.windows(2).any(|w| w[0] > w[1]) {
        let order = names.iter().map(FieldValue::text).collect();
        headers.insert(H_PROPERTY_ORDER.into(), FieldValue::Array(order));
    }
    props.headers = Some(headers);
    Message::new(exchange, routing_key, props, p.payload.clone())
}

/// The QoS a message was published with: its `x-mqtt-publish-qos` header, else
/// persistent (delivery mode 2) = QoS 1 and anything else QoS 0, as RabbitMQ does.
pub fn message_qos(m: &Message) -> QoS {
    match m.properties.header(H_PUBLISH_QOS).and_then(FieldValue::as_i64) {
        Some(q) => QoS::from_u8(q.clamp(0, 2) as u8).unwrap_or(QoS::AtMostOnce),
        None if m.properties.is_persistent() => QoS::AtLeastOnce,
        None => QoS::AtMostOnce,
    }
}

/// True if the message was published with RETAIN.
pub fn message_retained(m: &Message) -> bool {
    m.properties.header(H_RETAIN).and_then(FieldValue::as_bool).unwrap_or(false)
}

/// The client recorded for No Local, if any.
pub fn message_publisher(m: &Message) -> Option<&str> {
    m.properties.header(H_PUBLISHER).and_then(FieldValue::as_str)
}

/// A header value as user-property text.
fn value_text(v: &FieldValue) -> Option<String> {
    if let Some(s) = v.as_str() {
        return Some(s.to_string());
    }
    if let Some(i) = v.as_i64() {
        return Some(i.to_string());
    }
    match v {
        FieldValue::Bool(b) => Some(b.to_string()),
        FieldValue::F32(f) => Some(f.to_string()),
        FieldValue::F64(f) => Some(f.to_string()),
        FieldValue::Decimal { scale, value } => {
            let s = value.to_string();
            let scale = usize::from(*scale);
            Some(if scale == 0 {
                s
            } else if s.len() > scale {
                format!("{}.{}", &s[..s.len() - scale], &s[s.len() - scale..])
            } else {
                format!("0.{}{s}", "0".repeat(scale - s.len()))
            })
        }
        _ => None,
    }
}

/// The MQTT 5 properties (and topic) of a core message delivered to an MQTT client.
///
/// `elapsed_ms` is how long the message has waited, so Message Expiry Interval is the
/// time left, as MQTT-3.3.2-6 asks.
pub fn to_publish_properties(m: &Message, elapsed_ms: u64) -> Properties {
    let mut p = Properties { content_type: m.properties.content_type.clone(), ..Properties::default() };
    if let Some(ttl) = m.properties.ttl_ms() {
        let left = ttl.saturating_sub(elapsed_ms);
        p.message_expiry_interval = Some(left.div_ceil(1000).min(u64::from(u32::MAX)) as u32);
    }
    if let Some(cid) = &m.properties.correlation_id {
        p.correlation_data = Some(Bytes::copy_from_slice(cid.as_bytes()));
    }
    if let Some(headers) = &m.properties.headers {
        let mut user: Vec<(String, String)> = Vec::new();
        for (k, v) in headers {
            match k.as_str() {
                H_REPLY_TO_TOPIC => p.response_topic = v.as_str().map(from_routing_key),
                H_CORRELATION_ID => {
                    p.correlation_data = match v {
                        FieldValue::LongString(b) | FieldValue::Bytes(b) => Some(b.clone()),
                        other => other.as_str().map(|s| Bytes::copy_from_slice(s.as_bytes())),
                    }
                }
                H_PAYLOAD_FORMAT => p.payload_format_indicator = v.as_i64().map(|i| u8::from(i == 1)),
                name if is_internal(name) => {}
                name => match v {
                    FieldValue::Array(values) => {
                        for item in values {
                            if let Some(t) = value_text(item) {
                                user.push((name.to_string(), t));
                            }
                        }
                    }
                    other => {
                        if let Some(t) = value_text(other) {
                            user.push((name.to_string(), t));
                        }
                    }
                },
            }
        }
        p.user_properties = match headers.get(H_PROPERTY_ORDER) {
            Some(FieldValue::Array(order)) => reorder(user, order),
            _ => user,
        };
    }
    p
}

/// Put user properties (grouped by name, values in order) back in the recorded order;
/// anything the order does not mention follows.
fn reorder(mut user: Vec<(String, String)>, order: &[FieldValue]) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(user.len());
    for name in order.iter().filter_map(FieldValue::as_str) {
        if let Some(i) = user.iter().position(|(k, _)| k == name) {
            out.push(user.remove(i));
        }
    }
    out.extend(user);
    out
}

/// The MQTT topic of a core message: its routing key with the separators swapped back.
pub fn message_topic(m: &Message) -> String {
    from_routing_key(&m.routing_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: QoS, props: Properties) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: "a/b.c".into(),
            packet_id: None,
            properties: props,
            payload: Bytes::from_static(b"hi"),
        }
    }

    #[test]
    fn properties_survive_the_round_trip() {
        let props = Properties {
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/x".into()),
            correlation_data: Some(Bytes::from_static(b"c1")),
            message_expiry_interval: Some(30),
            payload_format_indicator: Some(1),
            user_properties: vec![("o".into(), "x".into()), ("k".into(), "v1".into()), ("k".into(), "v2".into())],
            ..Properties::default()
        };
        let m = to_message(&publish(QoS::AtLeastOnce, props.clone()), "amq.topic", None);
        assert_eq!(m.routing_key, "a.b/c");
        assert_eq!(m.properties.delivery_mode, Some(2));
        assert_eq!(m.properties.expiration.as_deref(), Some("30000"));
        assert_eq!(m.properties.correlation_id.as_deref(), Some("c1"));
        assert_eq!(message_qos(&m), QoS::AtLeastOnce);
        assert_eq!(message_topic(&m), "a/b.c");
        let back = to_publish_properties(&m, 1500);
        assert_eq!(back.content_type, props.content_type);
        assert_eq!(back.response_topic, props.response_topic);
        assert_eq!(back.correlation_data, props.correlation_data);
        assert_eq!(back.message_expiry_interval, Some(29));
        assert_eq!(back.payload_format_indicator, Some(1));
        assert_eq!(back.user_properties, props.user_properties);
    }

    #[test]
    fn binary_correlation_data_goes_to_a_header() {
        let props = Properties { correlation_data: Some(Bytes::from_static(&[0xff, 0])), ..Properties::default() };
        let m = to_message(&publish(QoS::AtMostOnce, props), "amq.topic", None);
        assert!(m.properties.correlation_id.is_none());
        assert_eq!(to_publish_properties(&m, 0).correlation_data.as_deref(), Some(&[0xff, 0][..]));
        assert_eq!(message_qos(&m), QoS::AtMostOnce);
    }

    #[test]
    fn amqp_messages_get_qos_from_delivery_mode() {
        let mut p = AmqpProps { delivery_mode: Some(2), ..AmqpProps::default() };
        let mut h = FieldTable::new();
        h.insert("n".into(), FieldValue::I32(5));
        h.insert("d".into(), FieldValue::Decimal { scale: 2, value: 5 });
        p.headers = Some(h);
        let m = Message::new("amq.topic", "a.b", p, Bytes::new());
        assert_eq!(message_qos(&m), QoS::AtLeastOnce);
        let props = to_publish_properties(&m, 0);
        assert_eq!(props.user_properties, vec![("d".into(), "0.05".into()), ("n".into(), "5".into())]);
    }
}
