//! STOMP headers ⇄ the core's message properties (the table is also in
//! `docs/stomp.md`).
//!
//! | STOMP header | core / AMQP property | notes |
//! |---|---|---|
//! | `content-type` | `content_type` | |
//! | `content-encoding` | `content_encoding` | |
//! | `persistent:true` | `delivery_mode = 2` | MESSAGE says `persistent:true` only for mode 2 |
//! | `priority` | `priority` | 0–255 |
//! | `correlation-id` | `correlation_id` | |
//! | `reply-to` | `reply_to` | `/temp-queue/<n>` is rewritten to `/reply-queue/<queue>` on SEND |
//! | `expiration` | `expiration` | TTL in ms (RabbitMQ) |
//! | `expires` | `expiration` | ActiveMQ: absolute epoch ms, turned into a TTL; MESSAGE carries it back |
//! | `amqp-message-id` (or `message-id` on SEND) | `message_id` | MESSAGE's own `message-id` is the ack id |
//! | `timestamp` | `timestamp` | seconds |
//! | `type` | `type` | |
//! | `user-id` | `user_id` | checked against the login, as RabbitMQ does |
//! | `app-id` | `app_id` | |
//! | any other header | `headers[name]` as a long string | frame-level headers excluded |
//!
//! Towards STOMP, header-table values that are strings, numbers or booleans
//! become header text; tables, arrays, byte arrays and void are left out.

use switchyard::message::{FieldTable, FieldValue, Properties};

use crate::codec::Frame;
use crate::error::StompError;

/// Headers that control the frame, never copied into the message's headers table.
const FRAME_HEADERS: &[&str] =
    &["destination", "receipt", "transaction", "content-length", "message-id", "expires", "subscription", "ack"];

/// Headers that map to a property.
const PROPERTY_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "persistent",
    "priority",
    "correlation-id",
    "reply-to",
    "expiration",
    "amqp-message-id",
    "timestamp",
    "type",
    "user-id",
    "app-id",
];

/// Headers a MESSAGE frame sets itself; a header-table entry with one of these names is not copied.
const MESSAGE_FRAME_HEADERS: &[&str] =
    &["destination", "message-id", "subscription", "ack", "content-length", "redelivered", "receipt"];

fn bad_header(name: &str, why: &str) -> StompError {
    StompError::new("Invalid header", format!("'{name}' header {why}\n"))
}

/// The properties a SEND frame asks for. `now_ms` turns ActiveMQ's absolute `expires` into a TTL.
pub fn properties_from_send(frame: &Frame, now_ms: u64) -> Result<Properties, StompError> {
    let text = |name: &str| frame.header(name).map(str::to_string);
    let mut p = Properties {
        content_type: text("content-type"),
        content_encoding: text("content-encoding"),
        correlation_id: text("correlation-id"),
        reply_to: text("reply-to"),
        message_id: text("amqp-message-id").or_else(|| text("message-id")),
        kind: text("type"),
        user_id: text("user-id"),
        app_id: text("app-id"),
        expiration: text("expiration"),
        ..Properties::default()
    };
    if frame.header("persistent").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        p.delivery_mode = Some(2);
    }
    if let Some(v) = frame.header("priority") {
        p.priority = Some(v.trim().parse().map_err(|_| bad_header("priority", "must be an integer from 0 to 255"))?);
    }
    if let Some(v) = frame.header("timestamp") {
        p.timestamp = Some(v.trim().parse().map_err(|_| bad_header("timestamp", "must be a non-negative integer"))?);
    }
    if p.expiration.is_none()
        && let Some(v) = frame.header("expires")
    {
        let at: u64 = v.trim().parse().map_err(|_| bad_header("expires", "must be a non-negative integer"))?;
        // ActiveMQ: 0 means "never expires".
        if at > 0 {
            p.expiration = Some(at.saturating_sub(now_ms).to_string());
        }
    }
    let mut headers = FieldTable::new();
    for (k, v) in &frame.headers {
        if FRAME_HEADERS.contains(&k.as_str()) || PROPERTY_HEADERS.contains(&k.as_str()) {
            continue;
        }
        // First occurrence wins.
        headers.entry(k.clone()).or_insert_with(|| FieldValue::text(v));
    }
    if !headers.is_empty() {
        p.headers = Some(headers);
    }
    Ok(p)
}

/// The property headers of a MESSAGE frame, in a fixed order. `enqueued_at`
/// (epoch ms) lets a TTL be reported as ActiveMQ's absolute `expires` too.
pub fn message_headers(p: &Properties, enqueued_at: u64, out: &mut Vec<(String, String)>) {
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            out.push((k.to_string(), v.clone()));
        }
    };
    put("content-type", &p.content_type);
    put("content-encoding", &p.content_encoding);
    put("correlation-id", &p.correlation_id);
    put("reply-to", &p.reply_to);
    put("expiration", &p.expiration);
    put("amqp-message-id", &p.message_id);
    put("type", &p.kind);
    put("user-id", &p.user_id);
    put("app-id", &p.app_id);
    if p.is_persistent() {
        out.push(("persistent".into(), "true".into()));
    }
    if let Some(n) = p.priority {
        out.push(("priority".into(), n.to_string()));
    }
    if let Some(t) = p.timestamp {
        out.push(("timestamp".into(), t.to_string()));
    }
    if let Some(ttl) = p.ttl_ms() {
        out.push(("expires".into(), enqueued_at.saturating_add(ttl).to_string()));
    }
    if let Some(h) = &p.headers {
        for (k, v) in h {
            if MESSAGE_FRAME_HEADERS.contains(&k.as_str()) || PROPERTY_HEADERS.contains(&k.as_str()) || k == "expires" {
                continue;
            }
            if let Some(text) = header_text(v) {
                out.push((k.clone(), text));
            }
        }
    }
}

fn header_text(v: &FieldValue) -> Option<String> {
    Some(match v {
        FieldValue::ShortString(_) | FieldValue::LongString(_) => v.as_str()?.to_string(),
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::F32(f) => f.to_string(),
        FieldValue::F64(f) => f.to_string(),
        FieldValue::Decimal { scale, value } => (f64::from(*value) / 10f64.powi(i32::from(*scale))).to_string(),
        other => other.as_i64()?.to_string(),
    })
}

/// Queue arguments a SUBSCRIBE or SEND to `/queue/` may carry as `x-` headers,
/// typed as RabbitMQ's STOMP plugin types them.
pub fn queue_arguments(frame: &Frame) -> Result<FieldTable, StompError> {
    const INTEGER: &[&str] =
        &["x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-max-priority", "x-delivery-limit"];
    const TEXT: &[&str] =
        &["x-dead-letter-exchange", "x-dead-letter-routing-key", "x-overflow", "x-queue-type", "x-queue-mode"];
    let mut args = FieldTable::new();
    for (k, v) in &frame.headers {
        if args.contains_key(k) {
            continue;
        }
        if INTEGER.contains(&k.as_str()) {
            let n: i64 = v.trim().parse().map_err(|_| bad_header(k, "must be an integer"))?;
            args.insert(k.clone(), FieldValue::I64(n));
        } else if TEXT.contains(&k.as_str()) {
            args.insert(k.clone(), FieldValue::text(v));
        } else if k == "x-single-active-consumer" {
            args.insert(k.clone(), FieldValue::Bool(v.eq_ignore_ascii_case("true")));
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Command;

    #[test]
    fn send_headers_become_properties() {
        let f = Frame::new(Command::Send)
            .with("destination", "/queue/q")
            .with("content-type", "text/plain")
            .with("persistent", "true")
            .with("priority", "7")
            .with("correlation-id", "c1")
            .with("reply-to", "/queue/r")
            .with("amqp-message-id", "m1")
            .with("type", "order")
            .with("app-id", "app")
            .with("timestamp", "1700000000")
            .with("expires", "10500")
            .with("receipt", "r1")
            .with("color", "red")
            .with("color", "blue");
        let p = properties_from_send(&f, 10_000).expect("valid");
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.delivery_mode, Some(2));
        assert_eq!(p.priority, Some(7));
        assert_eq!(p.correlation_id.as_deref(), Some("c1"));
        assert_eq!(p.reply_to.as_deref(), Some("/queue/r"));
        assert_eq!(p.message_id.as_deref(), Some("m1"));
        assert_eq!(p.kind.as_deref(), Some("order"));
        assert_eq!(p.app_id.as_deref(), Some("app"));
        assert_eq!(p.timestamp, Some(1_700_000_000));
        assert_eq!(p.expiration.as_deref(), Some("500"));
        let h = p.headers.expect("headers");
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h.get("color"), Some(&FieldValue::text("red")), "first wins");
    }

    #[test]
    fn bad_numbers_are_errors() {
        let f = Frame::new(Command::Send).with("priority", "high");
        assert_eq!(properties_from_send(&f, 0).expect_err("bad").message, "Invalid header");
    }

    #[test]
    fn properties_become_message_headers() {
        let mut table = FieldTable::new();
        table.insert("n".into(), FieldValue::I32(5));
        table.insert("b".into(), FieldValue::Bool(true));
        table.insert("t".into(), FieldValue::Table(FieldTable::new()));
        table.insert("destination".into(), FieldValue::text("/queue/evil"));
        let p = Properties {
            delivery_mode: Some(2),
            priority: Some(3),
            expiration: Some("1000".into()),
            message_id: Some("m".into()),
            headers: Some(table),
            ..Properties::default()
        };
        let mut out = Vec::new();
        message_headers(&p, 5000, &mut out);
        let get = |k: &str| out.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("persistent"), Some("true"));
        assert_eq!(get("priority"), Some("3"));
        assert_eq!(get("expiration"), Some("1000"));
        assert_eq!(get("expires"), Some("6000"));
        assert_eq!(get("amqp-message-id"), Some("m"));
        assert_eq!(get("n"), Some("5"));
        assert_eq!(get("b"), Some("true"));
        assert_eq!(get("t"), None);
        assert_eq!(get("destination"), None);
    }

    #[test]
    fn queue_arguments_are_typed() {
        let f = Frame::new(Command::Subscribe)
            .with("x-max-length", "10")
            .with("x-dead-letter-exchange", "dlx")
            .with("x-queue-name", "ignored-here");
        let args = queue_arguments(&f).expect("valid");
        assert_eq!(args.get("x-max-length"), Some(&FieldValue::I64(10)));
        assert_eq!(args.get("x-dead-letter-exchange"), Some(&FieldValue::text("dlx")));
        assert_eq!(args.len(), 2);
        assert!(queue_arguments(&Frame::new(Command::Subscribe).with("x-max-length", "ten")).is_err());
    }
}
