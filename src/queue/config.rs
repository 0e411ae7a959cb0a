//! Queue settings: the protocol-neutral [`QueueConfig`] the state machine runs
//! on, and its parsing from RabbitMQ's `x-` queue arguments.
//!
//! SQS attributes (visibility timeout, delay, redrive) map onto the same
//! fields: a delivery limit plus a dead-letter target is SQS's
//! `maxReceiveCount` + DLQ, a lease timeout is the visibility timeout.

use crate::error::{CoreError, CoreResult};
use crate::message::{FieldTable, FieldValue};
use crate::time::Millis;

/// What a full queue does with a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready message to make room.
    #[default]
    DropHead,
    /// Refuse the new message (publisher confirm nack).
    RejectPublish,
    /// Refuse the new message and dead-letter it.
    RejectPublishDlx,
}

/// RabbitMQ's `x-queue-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// The default queue type.
    #[default]
    Classic,
    /// Accepted for compatibility; behaves as a classic queue with a delivery limit.
    Quorum,
    /// An append-only stream (served by the streams engine, not yet exposed).
    Stream,
}

/// Everything that shapes a queue's behaviour, independent of protocol.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueConfig {
    /// Per-queue message TTL (`x-message-ttl`).
    pub message_ttl: Option<Millis>,
    /// Delete the queue after it is unused this long (`x-expires`).
    pub expires: Option<Millis>,
    /// Most ready messages (`x-max-length`).
    pub max_length: Option<u64>,
    /// Most ready body bytes (`x-max-length-bytes`).
    pub max_length_bytes: Option<u64>,
    /// Full-queue policy (`x-overflow`).
    pub overflow: Overflow,
    /// Dead-letter exchange (`x-dead-letter-exchange`); `Some("")` is the default exchange.
    pub dead_letter_exchange: Option<String>,
    /// Routing key for dead letters (`x-dead-letter-routing-key`).
    pub dead_letter_routing_key: Option<String>,
    /// Highest priority honoured (`x-max-priority`); `None` means priorities are ignored.
    pub max_priority: Option<u8>,
    /// Only one consumer receives at a time (`x-single-active-consumer`).
    pub single_active_consumer: bool,
    /// Dead-letter (or drop) a message once delivered this many times (`x-delivery-limit`,
    /// SQS `maxReceiveCount`).
    pub delivery_limit: Option<u32>,
    /// Default lease length: an unsettled delivery returns to the queue after this long
    /// (`x-lease-timeout`, SQS visibility timeout). `None` = until the consumer goes away.
    pub lease_timeout: Option<Millis>,
    /// Delay before a new message becomes ready (`x-delivery-delay`, SQS `DelaySeconds`).
    pub delivery_delay: Option<Millis>,
    /// FIFO mode: message groups block while leased, deduplication by id.
    pub fifo: bool,
    /// Deduplication window for FIFO mode.
    pub dedup_window: Millis,
    /// `x-queue-type`.
    pub queue_type: QueueType,
    /// Expired messages are dropped even with a dead-letter exchange (`x-drop-expired`;
    /// SQS: retention ends a message, only `maxReceiveCount` redrives it).
    pub drop_expired: bool,
}

/// Arguments this broker understands; others are stored and ignored, as RabbitMQ does.
const EQUIVALENCE_ARGS: &[&str] = &[
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-single-active-consumer",
    "x-delivery-limit",
    "x-queue-type",
    "x-lease-timeout",
    "x-delivery-delay",
    "x-fifo",
    "x-drop-expired",
];

fn invalid_arg(arg: &str, queue: &str, vhost: &str, why: &str) -> CoreError {
    CoreError::precondition(format!("invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}': {why}"))
}

fn int_arg(args: &FieldTable, arg: &str, queue: &str, vhost: &str, min: i64) -> CoreResult<Option<u64>> {
    match args.get(arg) {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if n >= min => Ok(Some(n as u64)),
            Some(0) => Err(invalid_arg(arg, queue, vhost, "{value_zero,0}")),
            Some(n) => Err(invalid_arg(arg, queue, vhost, &format!("{{value_negative,{n}}}"))),
            None => Err(invalid_arg(arg, queue, vhost, &format!("\"expected integer, got {}\"", type_name(v)))),
        },
    }
}

fn str_arg<'a>(args: &'a FieldTable, arg: &str, queue: &str, vhost: &str) -> CoreResult<Option<&'a str>> {
    match args.get(arg) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| {
            CoreError::precondition(format!(
                "invalid type '{}' for arg '{arg}' in queue '{queue}' in vhost '{vhost}'",
                type_name(v)
            ))
        }),
    }
}

/// RabbitMQ's name for a field type, used in error texts.
pub fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Bool(_) => "bool",
        FieldValue::I8(_) => "byte",
        FieldValue::U8(_) => "unsignedbyte",
        FieldValue::I16(_) => "short",
        FieldValue::U16(_) => "unsignedshort",
        FieldValue::I32(_) => "signedint",
        FieldValue::U32(_) => "unsignedint",
        FieldValue::I64(_) => "long",
        FieldValue::F32(_) => "float",
        FieldValue::F64(_) => "double",
        FieldValue::Decimal { .. } => "decimal",
        FieldValue::ShortString(_) => "shortstr",
        FieldValue::LongString(_) => "longstr",
        FieldValue::Array(_) => "array",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Table(_) => "table",
        FieldValue::Bytes(_) => "binary",
        FieldValue::Void => "void",
    }
}

impl QueueConfig {
    /// Parse RabbitMQ `x-` arguments, with RabbitMQ's validation errors (406).
    pub fn from_arguments(args: &FieldTable, queue: &str, vhost: &str) -> CoreResult<QueueConfig> {
        let mut cfg = QueueConfig { dedup_window: 5 * 60 * 1000, ..QueueConfig::default() };
        cfg.message_ttl = int_arg(args, "x-message-ttl", queue, vhost, 0)?;
        cfg.expires = int_arg(args, "x-expires", queue, vhost, 1)?;
        cfg.max_length = int_arg(args, "x-max-length", queue, vhost, 0)?;
        cfg.max_length_bytes = int_arg(args, "x-max-length-bytes", queue, vhost, 0)?;
        cfg.delivery_limit = int_arg(args, "x-delivery-limit", queue, vhost, 0)?.map(|n| n.min(u32::MAX as u64) as u32);
        cfg.lease_timeout = int_arg(args, "x-lease-timeout", queue, vhost, 1)?;
        cfg.delivery_delay = int_arg(args, "x-delivery-delay", queue, vhost, 0)?.filter(|d| *d > 0);
        if let Some(p) = int_arg(args, "x-max-priority", queue, vhost, 0)? {
            if p > 255 {
                return Err(invalid_arg("x-max-priority", queue, vhost, &format!("{{max_value_exceeded,{p}}}")));
            }
            cfg.max_priority = Some(p as u8);
        }
        cfg.overflow = match str_arg(args, "x-overflow", queue, vhost)? {
            None | Some("drop-head") => Overflow::DropHead,
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            Some(_) => return Err(invalid_arg("x-overflow", queue, vhost, "invalid_overflow")),
        };
        cfg.dead_letter_exchange = str_arg(args, "x-dead-letter-exchange", queue, vhost)?.map(str::to_string);
        cfg.dead_letter_routing_key = str_arg(args, "x-dead-letter-routing-key", queue, vhost)?.map(str::to_string);
        if cfg.dead_letter_routing_key.is_some() && cfg.dead_letter_exchange.is_none() {
            return Err(invalid_arg("x-dead-letter-routing-key", queue, vhost, "routing_key_but_no_dlx_defined"));
        }
        cfg.single_active_consumer = match args.get("x-single-active-consumer") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| {
                invalid_arg(
                    "x-single-active-consumer",
                    queue,
                    vhost,
                    &format!("{{unacceptable_type,{}}}", type_name(v)),
                )
            })?,
        };
        cfg.fifo = match args.get("x-fifo") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| {
                invalid_arg("x-fifo", queue, vhost, &format!("{{unacceptable_type,{}}}", type_name(v)))
            })?,
        };
        cfg.drop_expired = match args.get("x-drop-expired") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| {
                invalid_arg("x-drop-expired", queue, vhost, &format!("{{unacceptable_type,{}}}", type_name(v)))
            })?,
        };
        cfg.queue_type = match str_arg(args, "x-queue-type", queue, vhost)? {
            None | Some("classic") => QueueType::Classic,
            Some("quorum") => QueueType::Quorum,
            Some("stream") => QueueType::Stream,
            Some(other) => {
                return Err(invalid_arg(
                    "x-queue-type",
                    queue,
                    vhost,
                    &format!("\"unsupported queue type '{other}'\""),
                ));
            }
        };
        if cfg.queue_type == QueueType::Quorum && cfg.delivery_limit.is_none() {
            // RabbitMQ 4.x quorum queues default to a delivery limit of 20.
            cfg.delivery_limit = Some(20);
        }
        Ok(cfg)
    }
}

/// Check a redeclaration's arguments against the existing queue's, as RabbitMQ does:
/// only arguments that change behaviour must be equal.
pub fn check_equivalent(existing: &FieldTable, requested: &FieldTable, queue: &str, vhost: &str) -> CoreResult<()> {
    check_args_equivalent(existing, requested, EQUIVALENCE_ARGS, "queue", queue, vhost)
}

/// Compare the listed arguments of an existing object and a redeclaration, with
/// RabbitMQ's `inequivalent arg` text: bare values when both sides have one,
/// `the value 'v' of type 't'` / `none` when one side lacks it.
pub fn check_args_equivalent(
    existing: &FieldTable,
    requested: &FieldTable,
    args: &[&str],
    what: &str,
    name: &str,
    vhost: &str,
) -> CoreResult<()> {
    for arg in args {
        let (cur, got) = (existing.get(*arg), requested.get(*arg));
        if loosely_equal(cur, got) {
            continue;
        }
        let detail = match (got, cur) {
            (Some(g), Some(c)) => format!("received '{}' but current is '{}'", render(g), render(c)),
            _ => {
                let describe = |v: Option<&FieldValue>| match v {
                    Some(v) => format!("the value '{}' of type '{}'", render(v), type_name(v)),
                    None => "none".to_string(),
                };
                format!("received {} but current is {}", describe(got), describe(cur))
            }
        };
        return Err(CoreError::precondition(format!(
            "inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': {detail}"
        )));
    }
    Ok(())
}

fn loosely_equal(a: Option<&FieldValue>, b: Option<&FieldValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => values_equal(a, b),
        _ => false,
    }
}

/// Value equality that ignores the integer/string width, as Erlang's `==` does for RabbitMQ.
pub fn values_equal(a: &FieldValue, b: &FieldValue) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        return x == y;
    }
    match (a, b) {
        (FieldValue::F64(x), FieldValue::F64(y)) => x == y,
        (FieldValue::F32(x), FieldValue::F32(y)) => x == y,
        (FieldValue::F64(x), other) | (other, FieldValue::F64(x)) => other.as_i64().is_some_and(|i| i as f64 == *x),
        _ => a == b,
    }
}

/// A short rendering of a value for error texts.
pub fn render(v: &FieldValue) -> String {
    match v {
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::F32(f) => f.to_string(),
        FieldValue::F64(f) => f.to_string(),
        other => match (other.as_i64(), other.as_str()) {
            (Some(i), _) => i.to_string(),
            (_, Some(s)) => s.to_string(),
            _ => format!("{other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, FieldValue)]) -> FieldTable {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn parses_known_arguments() {
        let args = table(&[
            ("x-message-ttl", FieldValue::I32(1000)),
            ("x-max-length", FieldValue::I64(5)),
            ("x-overflow", FieldValue::text("reject-publish")),
            ("x-dead-letter-exchange", FieldValue::text("dlx")),
            ("x-max-priority", FieldValue::U8(10)),
            ("x-single-active-consumer", FieldValue::Bool(true)),
        ]);
        let c = QueueConfig::from_arguments(&args, "q", "/").expect("valid");
        assert_eq!(c.message_ttl, Some(1000));
        assert_eq!(c.max_length, Some(5));
        assert_eq!(c.overflow, Overflow::RejectPublish);
        assert_eq!(c.dead_letter_exchange.as_deref(), Some("dlx"));
        assert_eq!(c.max_priority, Some(10));
        assert!(c.single_active_consumer);
    }

    #[test]
    fn rejects_bad_types_and_values() {
        for args in [
            table(&[("x-message-ttl", FieldValue::text("x"))]),
            table(&[("x-message-ttl", FieldValue::I32(-1))]),
            table(&[("x-expires", FieldValue::I32(0))]),
            table(&[("x-overflow", FieldValue::text("bogus"))]),
            table(&[("x-max-priority", FieldValue::I32(256))]),
            table(&[("x-dead-letter-routing-key", FieldValue::text("k"))]),
        ] {
            let e = QueueConfig::from_arguments(&args, "q", "/").expect_err("invalid");
            assert_eq!(e.kind, crate::error::ErrorKind::PreconditionFailed, "{args:?}");
        }
    }

    #[test]
    fn equivalence_ignores_width_but_not_value() {
        let a = table(&[("x-message-ttl", FieldValue::I32(100))]);
        let b = table(&[("x-message-ttl", FieldValue::I64(100))]);
        let c = table(&[("x-message-ttl", FieldValue::I64(200))]);
        assert!(check_equivalent(&a, &b, "q", "/").is_ok());
        assert!(check_equivalent(&a, &c, "q", "/").is_err());
        assert!(check_equivalent(&a, &FieldTable::new(), "q", "/").is_err());
        // Unknown arguments are not compared.
        let d = table(&[("x-message-ttl", FieldValue::I32(100)), ("x-custom", FieldValue::I32(1))]);
        assert!(check_equivalent(&a, &d, "q", "/").is_ok());
    }
}
