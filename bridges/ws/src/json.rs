//! The JSON live API's wire forms: requests from the client, and the
//! conversion between the core's [`Message`] and JSON (headers, properties,
//! body as text or base64). `docs/websocket.md` documents every field.

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Number, Value, json};
use switchyard::message::FieldTable;
use switchyard::{ErrorKind, FieldValue, Message, Properties};

use crate::error::LiveError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One request from a client (`{"type": "...", ...}`).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Log in (unless the upgrade request carried credentials).
    Auth {
        /// User name.
        user: String,
        /// Password.
        password: String,
        /// Virtual host; default `[ws] vhost`.
        #[serde(default)]
        vhost: Option<String>,
        /// Echoed in the reply.
        #[serde(default)]
        req: Option<Value>,
    },
    /// Subscribe to a topic pattern, a queue, or a stream.
    Subscribe(Box<SubscribeReq>),
    /// End a subscription.
    Unsubscribe {
        /// The subscription's id.
        subscription: String,
        /// Echoed in the reply.
        #[serde(default)]
        req: Option<Value>,
    },
    /// Publish a message.
    Publish(Box<PublishReq>),
    /// Settle a queue delivery: done with it.
    Ack {
        /// The delivery's `tag`.
        tag: u64,
        /// Also every earlier unsettled tag of the same subscription.
        #[serde(default)]
        multiple: bool,
    },
    /// Settle a queue delivery: put it back (default) or reject it (dead-letter or drop).
    Nack {
        /// The delivery's `tag`.
        tag: u64,
        /// Also every earlier unsettled tag of the same subscription.
        #[serde(default)]
        multiple: bool,
        /// Put it back (default true).
        #[serde(default = "yes")]
        requeue: bool,
    },
    /// Application-level keepalive for clients that cannot see WebSocket pings.
    Ping {
        /// Echoed in the `pong`.
        #[serde(default)]
        req: Option<Value>,
    },
}

fn yes() -> bool {
    true
}

/// `subscribe`: exactly one of `topic`, `queue`, `stream`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeReq {
    /// The client's name for the subscription (default: `sub-<n>`).
    #[serde(default)]
    pub subscription: Option<String>,
    /// A topic pattern (`a.*.c`, `a.#`) bound on `exchange`.
    #[serde(default)]
    pub topic: Option<String>,
    /// The exchange for `topic` (default `[ws] default_exchange`, `amq.topic`).
    #[serde(default)]
    pub exchange: Option<String>,
    /// An existing queue to consume.
    #[serde(default)]
    pub queue: Option<String>,
    /// Queue subscriptions: `"client"` (default: each delivery has a `tag` to ack) or
    /// `"auto"` (settled when written).
    #[serde(default)]
    pub ack: Option<String>,
    /// Queue subscriptions: most unacknowledged deliveries.
    #[serde(default)]
    pub window: Option<u32>,
    /// A stream to tail.
    #[serde(default)]
    pub stream: Option<String>,
    /// Stream position: `"oldest"`, `"latest"`, `{"sequence": "..."}`, `{"timestamp": ms}`.
    #[serde(default)]
    pub from: Option<Value>,
    /// Echoed in the reply.
    #[serde(default)]
    pub req: Option<Value>,
}

/// `publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishReq {
    /// Exchange (default `[ws] default_exchange`; `""` is the default exchange, which
    /// routes to the queue named by the routing key).
    #[serde(default)]
    pub exchange: Option<String>,
    /// Routing key (the topic).
    #[serde(default)]
    pub routing_key: String,
    /// The body: text, or base64 when `encoding` is `"base64"`.
    #[serde(default)]
    pub body: String,
    /// `"text"` (default) or `"base64"`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Application headers (strings, numbers, booleans, null, arrays, objects).
    #[serde(default)]
    pub headers: Option<Map<String, Value>>,
    /// Message properties (see [`properties_from_json`]).
    #[serde(default)]
    pub properties: Option<Map<String, Value>>,
    /// When set, a `published` reply is sent (after the fsync, for a persistent message
    /// that reached a durable queue).
    #[serde(default)]
    pub req: Option<Value>,
}

/// The wire name of a core error kind.
pub fn error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "not_found",
        ErrorKind::AccessRefused => "access_refused",
        ErrorKind::ResourceLocked => "resource_locked",
        ErrorKind::PreconditionFailed => "precondition_failed",
        ErrorKind::NotAllowed => "not_allowed",
        ErrorKind::Invalid => "invalid",
        ErrorKind::ResourceLimit => "resource_limit",
        ErrorKind::CommandInvalid => "command_invalid",
        ErrorKind::NotImplemented => "not_implemented",
        ErrorKind::Internal => "internal_error",
    }
}

/// An `error` event.
pub fn error_event(code: &str, message: &str, req: Option<&Value>) -> String {
    let mut v = json!({"type": "error", "code": code, "message": message});
    if let (Some(req), Some(obj)) = (req, v.as_object_mut()) {
        obj.insert("req".into(), req.clone());
    }
    v.to_string()
}

/// A reply event of `kind` with `fields`, echoing `req` when given.
pub fn reply(kind: &str, req: Option<&Value>, fields: Value) -> String {
    let mut obj = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    obj.insert("type".into(), Value::String(kind.into()));
    if let Some(req) = req {
        obj.insert("req".into(), req.clone());
    }
    Value::Object(obj).to_string()
}

/// What a `message` event carries besides the message itself.
#[derive(Debug, Clone)]
pub struct DeliveryInfo<'a> {
    /// The subscription it belongs to.
    pub subscription: &'a str,
    /// The tag to ack with (client-ack queue subscriptions).
    pub tag: Option<u64>,
    /// Delivered before.
    pub redelivered: bool,
    /// Topic messages this subscription lost to overflow so far (shown when non-zero).
    pub dropped: u64,
}

/// A `message` event.
pub fn message_event(msg: &Message, info: &DeliveryInfo<'_>) -> String {
    let mut obj = Map::new();
    obj.insert("type".into(), "message".into());
    obj.insert("subscription".into(), info.subscription.into());
    obj.insert("exchange".into(), msg.exchange.as_str().into());
    obj.insert("routing_key".into(), msg.routing_key.as_str().into());
    if let Some(tag) = info.tag {
        obj.insert("tag".into(), tag.into());
    }
    if info.redelivered {
        obj.insert("redelivered".into(), true.into());
    }
    if info.dropped > 0 {
        obj.insert("dropped".into(), info.dropped.into());
    }
    let props = properties_to_json(&msg.properties);
    if !props.is_empty() {
        obj.insert("properties".into(), Value::Object(props));
    }
    let headers = msg.properties.headers.as_ref().map(table_to_json).unwrap_or_default();
    obj.insert("headers".into(), Value::Object(headers));
    match std::str::from_utf8(&msg.body) {
        Ok(text) => {
            obj.insert("body".into(), text.into());
        }
        Err(_) => {
            obj.insert("body".into(), B64.encode(&msg.body).into());
            obj.insert("encoding".into(), "base64".into());
        }
    }
    Value::Object(obj).to_string()
}

/// A `message` event for a stream record.
pub fn record_event(subscription: &str, stream: &str, r: &switchyard::stream::StreamRecord) -> String {
    let mut obj = Map::new();
    obj.insert("type".into(), "message".into());
    obj.insert("subscription".into(), subscription.into());
    obj.insert("stream".into(), stream.into());
    obj.insert("partition_key".into(), r.partition_key.as_str().into());
    obj.insert("sequence".into(), r.sequence.to_string().into());
    obj.insert("shard".into(), r.sequence.shard.into());
    obj.insert("arrival".into(), r.arrival.into());
    obj.insert("headers".into(), Value::Object(Map::new()));
    match std::str::from_utf8(&r.data) {
        Ok(text) => {
            obj.insert("body".into(), text.into());
        }
        Err(_) => {
            obj.insert("body".into(), B64.encode(&r.data).into());
            obj.insert("encoding".into(), "base64".into());
        }
    }
    Value::Object(obj).to_string()
}

fn properties_to_json(p: &Properties) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<&String>| {
        if let Some(v) = v {
            m.insert(k.into(), v.as_str().into());
        }
    };
    put("content_type", p.content_type.as_ref());
    put("content_encoding", p.content_encoding.as_ref());
    put("correlation_id", p.correlation_id.as_ref());
    put("reply_to", p.reply_to.as_ref());
    put("expiration", p.expiration.as_ref());
    put("message_id", p.message_id.as_ref());
    put("type", p.kind.as_ref());
    put("user_id", p.user_id.as_ref());
    put("app_id", p.app_id.as_ref());
    if let Some(ts) = p.timestamp {
        m.insert("timestamp".into(), ts.into());
    }
    if let Some(pr) = p.priority {
        m.insert("priority".into(), pr.into());
    }
    if p.is_persistent() {
        m.insert("persistent".into(), true.into());
    }
    m
}

/// A header table as a JSON object (typed values become their nearest JSON form;
/// byte arrays become base64 strings).
pub fn table_to_json(t: &FieldTable) -> Map<String, Value> {
    t.iter().map(|(k, v)| (k.clone(), field_to_json(v))).collect()
}

fn field_to_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => (*b).into(),
        FieldValue::I8(x) => (*x).into(),
        FieldValue::U8(x) => (*x).into(),
        FieldValue::I16(x) => (*x).into(),
        FieldValue::U16(x) => (*x).into(),
        FieldValue::I32(x) => (*x).into(),
        FieldValue::U32(x) => (*x).into(),
        FieldValue::I64(x) => (*x).into(),
        FieldValue::Timestamp(x) => (*x).into(),
        FieldValue::F32(x) => Number::from_f64(f64::from(*x)).map_or(Value::Null, Value::Number),
        FieldValue::F64(x) => Number::from_f64(*x).map_or(Value::Null, Value::Number),
        FieldValue::Decimal { scale, value } => {
            Number::from_f64(f64::from(*value) / 10f64.powi(i32::from(*scale))).map_or(Value::Null, Value::Number)
        }
        FieldValue::ShortString(s) => s.as_str().into(),
        FieldValue::LongString(b) => match std::str::from_utf8(b) {
            Ok(s) => s.into(),
            Err(_) => B64.encode(b).into(),
        },
        FieldValue::Bytes(b) => B64.encode(b).into(),
        FieldValue::Array(a) => Value::Array(a.iter().map(field_to_json).collect()),
        FieldValue::Table(t) => Value::Object(table_to_json(t)),
        FieldValue::Void => Value::Null,
    }
}

fn json_to_field(v: &Value) -> FieldValue {
    match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => FieldValue::I64(i),
            (None, Some(f)) => FieldValue::F64(f),
            (None, None) => FieldValue::text(n.to_string()),
        },
        Value::String(s) => FieldValue::text(s),
        Value::Array(a) => FieldValue::Array(a.iter().map(json_to_field).collect()),
        Value::Object(o) => FieldValue::Table(o.iter().map(|(k, v)| (k.clone(), json_to_field(v))).collect()),
    }
}

/// Message properties from the `properties` object of a `publish`: the string
/// properties by their snake_case names, `priority` (0-255), `timestamp` (seconds),
/// `persistent` (bool) or `delivery_mode` (1/2).
pub fn properties_from_json(m: &Map<String, Value>) -> Result<Properties, LiveError> {
    let mut p = Properties::default();
    for (k, v) in m {
        let text = || match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(LiveError::BadRequest(format!("property {k:?} must be a string"))),
        };
        let int = |max: u64| {
            v.as_u64()
                .filter(|x| *x <= max)
                .ok_or_else(|| LiveError::BadRequest(format!("property {k:?} must be an integer 0..={max}")))
        };
        match k.as_str() {
            "content_type" => p.content_type = Some(text()?),
            "content_encoding" => p.content_encoding = Some(text()?),
            "correlation_id" => p.correlation_id = Some(text()?),
            "reply_to" => p.reply_to = Some(text()?),
            "expiration" => p.expiration = Some(text()?),
            "message_id" => p.message_id = Some(text()?),
            "type" => p.kind = Some(text()?),
            "user_id" => p.user_id = Some(text()?),
            "app_id" => p.app_id = Some(text()?),
            "timestamp" => p.timestamp = Some(int(u64::MAX)?),
            "priority" => p.priority = Some(int(255)? as u8),
            "delivery_mode" => p.delivery_mode = Some(int(2)? as u8),
            "persistent" => match v.as_bool() {
                Some(b) => p.delivery_mode = Some(if b { 2 } else { 1 }),
                None => return Err(LiveError::BadRequest("property \"persistent\" must be a boolean".into())),
            },
            other => return Err(LiveError::BadRequest(format!("unknown property {other:?}"))),
        }
    }
    Ok(p)
}

/// The message a `publish` request describes.
pub fn message_from_publish(req: &PublishReq, default_exchange: &str) -> Result<Message, LiveError> {
    let body = match req.encoding.as_deref() {
        None | Some("text") => Bytes::copy_from_slice(req.body.as_bytes()),
        Some("base64") => Bytes::from(
            B64.decode(req.body.as_bytes()).map_err(|e| LiveError::BadRequest(format!("body is not base64: {e}")))?,
        ),
        Some(other) => return Err(LiveError::BadRequest(format!("unknown encoding {other:?}"))),
    };
    let mut props = match &req.properties {
        Some(m) => properties_from_json(m)?,
        None => Properties::default(),
    };
    if let Some(h) = &req.headers {
        props.headers = Some(h.iter().map(|(k, v)| (k.clone(), json_to_field(v))).collect());
    }
    let exchange = req.exchange.clone().unwrap_or_else(|| default_exchange.to_string());
    Ok(Message::new(exchange, req.routing_key.clone(), props, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_unknown_fields_are_refused() {
        let r: Request = serde_json::from_str(r#"{"type":"subscribe","topic":"a.#"}"#).expect("parses");
        assert!(matches!(r, Request::Subscribe(s) if s.topic.as_deref() == Some("a.#")));
        let r: Request = serde_json::from_str(r#"{"type":"nack","tag":3}"#).expect("parses");
        assert!(matches!(r, Request::Nack { tag: 3, requeue: true, multiple: false }));
        assert!(serde_json::from_str::<Request>(r#"{"type":"subscribe","topik":"a"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"type":"fly"}"#).is_err());
    }

    #[test]
    fn publish_round_trips_through_a_message_event() {
        let req: PublishReq = serde_json::from_str(
            r#"{"routing_key":"a.b","body":"AAEC/w==","encoding":"base64",
                "headers":{"n":1,"s":"x","f":1.5,"b":true,"l":[1,"two"],"t":{"k":null}},
                "properties":{"content_type":"application/octet-stream","persistent":true,"priority":3}}"#,
        )
        .expect("parses");
        let msg = message_from_publish(&req, "amq.topic").expect("valid");
        assert_eq!(msg.exchange, "amq.topic");
        assert_eq!(&msg.body[..], &[0, 1, 2, 255]);
        assert!(msg.properties.is_persistent());
        let ev: Value = serde_json::from_str(&message_event(
            &msg,
            &DeliveryInfo { subscription: "s", tag: Some(7), redelivered: false, dropped: 2 },
        ))
        .expect("json");
        assert_eq!(ev["body"], "AAEC/w==");
        assert_eq!(ev["encoding"], "base64");
        assert_eq!(ev["headers"], json!({"n":1,"s":"x","f":1.5,"b":true,"l":[1,"two"],"t":{"k":null}}));
        assert_eq!(ev["properties"]["priority"], 3);
        assert_eq!(ev["properties"]["persistent"], true);
        assert_eq!((ev["tag"].as_u64(), ev["dropped"].as_u64()), (Some(7), Some(2)));
    }

    #[test]
    fn text_bodies_stay_text_and_bad_input_is_refused() {
        let msg = Message::new("x", "k", Properties::default(), Bytes::from_static("héllo".as_bytes()));
        let ev: Value = serde_json::from_str(&message_event(
            &msg,
            &DeliveryInfo { subscription: "s", tag: None, redelivered: false, dropped: 0 },
        ))
        .expect("json");
        assert_eq!(ev["body"], "héllo");
        assert!(ev.get("encoding").is_none() && ev.get("dropped").is_none());
        let bad: PublishReq = serde_json::from_str(r#"{"body":"@@","encoding":"base64"}"#).expect("parses");
        assert!(message_from_publish(&bad, "amq.topic").is_err());
        let bad: PublishReq = serde_json::from_str(r#"{"properties":{"priority":300}}"#).expect("parses");
        assert!(message_from_publish(&bad, "amq.topic").is_err());
    }
}
