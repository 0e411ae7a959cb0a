//! The one message form every front-end converts to and from.
//!
//! A [`Message`] is immutable once published and is shared between queues as an
//! `Arc<Message>`, so a fan-out to a thousand queues stores the body once. The
//! property set is AMQP 0-9-1's, because it is the richest of our protocols;
//! the other front-ends map onto it (see `docs/conversion.md`). Header values
//! keep AMQP's field-table types so an AMQP publisher's headers reach an AMQP
//! consumer bit-exact.

use std::collections::BTreeMap;

use bytes::Bytes;
pub use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::memory::MemoryCharge;

/// A header table: AMQP's field table, ordered by key as RabbitMQ and the
/// amq-protocol crate keep it.
pub type FieldTable = BTreeMap<String, FieldValue>;

/// One typed header value. The variants are AMQP 0-9-1's field types as
/// RabbitMQ encodes them, so any table round-trips without loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FieldValue {
    /// `t`
    Bool(bool),
    /// `b`
    I8(i8),
    /// `B`
    U8(u8),
    /// `s`
    I16(i16),
    /// `u`
    U16(u16),
    /// `I`
    I32(i32),
    /// `i`
    U32(u32),
    /// `l`
    I64(i64),
    /// `f`
    F32(f32),
    /// `d`
    F64(f64),
    /// `D`: value × 10^-scale.
    Decimal {
        /// Number of decimal digits after the point.
        scale: u8,
        /// Unscaled value.
        value: u32,
    },
    /// `s` short string (used only where a peer sent one).
    ShortString(String),
    /// `S` long string: bytes, not necessarily UTF-8.
    LongString(Bytes),
    /// `A`
    Array(Vec<FieldValue>),
    /// `T`: seconds since the epoch.
    Timestamp(u64),
    /// `F`
    Table(FieldTable),
    /// `x`
    Bytes(Bytes),
    /// `V`
    Void,
}

impl FieldValue {
    /// A long-string value from text, the type RabbitMQ uses for its own string headers.
    pub fn text(s: impl AsRef<str>) -> FieldValue {
        FieldValue::LongString(Bytes::copy_from_slice(s.as_ref().as_bytes()))
    }

    /// The value as text, when it is a string type holding UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::ShortString(s) => Some(s),
            FieldValue::LongString(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, when it is any integer type.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            FieldValue::I8(v) => Some(v.into()),
            FieldValue::U8(v) => Some(v.into()),
            FieldValue::I16(v) => Some(v.into()),
            FieldValue::U16(v) => Some(v.into()),
            FieldValue::I32(v) => Some(v.into()),
            FieldValue::U32(v) => Some(v.into()),
            FieldValue::I64(v) => Some(v),
            FieldValue::Timestamp(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a boolean, accepting AMQP booleans only.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            FieldValue::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// Message properties: AMQP 0-9-1 `basic` content-header properties.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// MIME content type.
    pub content_type: Option<String>,
    /// MIME content encoding.
    pub content_encoding: Option<String>,
    /// Application headers.
    pub headers: Option<FieldTable>,
    /// 1 = transient, 2 = persistent.
    pub delivery_mode: Option<u8>,
    /// 0..=255; queues cap it at their `x-max-priority`.
    pub priority: Option<u8>,
    /// Application correlation identifier.
    pub correlation_id: Option<String>,
    /// Address to reply to.
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds, as a decimal string (AMQP convention).
    pub expiration: Option<String>,
    /// Application message identifier.
    pub message_id: Option<String>,
    /// Seconds since the epoch.
    pub timestamp: Option<u64>,
    /// Message type name (`type` on the wire).
    pub kind: Option<String>,
    /// Creating user id; RabbitMQ checks it against the connection's user.
    pub user_id: Option<String>,
    /// Creating application id.
    pub app_id: Option<String>,
    /// Deprecated in 0-9-1 but still carried.
    pub cluster_id: Option<String>,
}

impl Properties {
    /// True when the publisher asked for persistence (delivery mode 2).
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(2)
    }

    /// The per-message TTL in milliseconds, if `expiration` holds a valid one.
    pub fn ttl_ms(&self) -> Option<u64> {
        self.expiration.as_deref().and_then(|e| e.parse().ok())
    }

    /// A header by name.
    pub fn header(&self, name: &str) -> Option<&FieldValue> {
        self.headers.as_ref().and_then(|h| h.get(name))
    }
}

/// A published message: where it was published, what it carries.
#[derive(Debug)]
pub struct Message {
    /// The exchange it was published to (`""` for the default exchange).
    pub exchange: CompactString,
    /// The routing key it was published with. Inline up to 24 bytes: most keys and topic
    /// names are short, and a heap string here was one malloc per publish and one free on
    /// the consumer's thread (glibc's slow path for a cross-thread free).
    pub routing_key: CompactString,
    /// Properties and headers.
    pub properties: Properties,
    /// The body bytes.
    pub body: Bytes,
    /// Accounts the body against the broker's memory high-watermark until dropped.
    /// Inline rather than shared: a clone is a new message that is charged when it is
    /// published (see the `Clone` impl), and one allocation less per publish.
    pub(crate) charge: Option<MemoryCharge>,
}

impl Clone for Message {
    /// A copy of the message's content. The copy carries no memory charge of its own
    /// until it is published (every path that keeps a message charges it then).
    fn clone(&self) -> Message {
        Message {
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            properties: self.properties.clone(),
            body: self.body.clone(),
            charge: None,
        }
    }
}

impl Message {
    /// A message with the given address, properties and body.
    pub fn new(
        exchange: impl Into<CompactString>,
        routing_key: impl Into<CompactString>,
        properties: Properties,
        body: Bytes,
    ) -> Message {
        Message { exchange: exchange.into(), routing_key: routing_key.into(), properties, body, charge: None }
    }

    /// Approximate bytes this message costs in memory (body plus a fixed overhead).
    pub fn memory_size(&self) -> usize {
        self.body.len() + 256
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.exchange == other.exchange
            && self.routing_key == other.routing_key
            && self.properties == other.properties
            && self.body == other.body
    }
}
