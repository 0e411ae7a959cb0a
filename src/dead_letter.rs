//! Dead-lettering: the message a dead-letter exchange receives, with the
//! `x-death` history RabbitMQ writes, so tools that read it keep working.

use crate::message::{FieldTable, FieldValue, Message};
use crate::queue::state::DeathReason;
use crate::time::Millis;

/// Build the dead-lettered copy of `message` leaving `queue` for `reason`.
///
/// As RabbitMQ does: the `expiration` property moves into `original-expiration`;
/// the `x-death` entry for the same queue and reason is counted up and moved to
/// the front, otherwise a new entry is prepended; `x-first-death-*` is set once.
/// (RabbitMQ 3.12, the version our client tests were checked against, writes no
/// `x-last-death-*`.) The routing key becomes the queue's
/// `x-dead-letter-routing-key` when it has one.
pub fn dead_lettered(
    message: &Message,
    queue: &str,
    reason: DeathReason,
    dead_letter_exchange: &str,
    dead_letter_routing_key: Option<&str>,
    now: Millis,
) -> Message {
    let mut props = message.properties.clone();
    let original_expiration = props.expiration.take();
    let mut headers = props.headers.take().unwrap_or_default();

    let routing_keys = {
        let mut keys = vec![FieldValue::text(&message.routing_key)];
        if let Some(FieldValue::Array(cc)) = headers.get("CC") {
            keys.extend(cc.iter().cloned());
        }
        keys
    };
    let mut deaths = match headers.remove("x-death") {
        Some(FieldValue::Array(v)) => v,
        _ => Vec::new(),
    };
    let same = |e: &FieldValue| match e {
        FieldValue::Table(t) => {
            t.get("queue").and_then(FieldValue::as_str) == Some(queue)
                && t.get("reason").and_then(FieldValue::as_str) == Some(reason.as_str())
        }
        _ => false,
    };
    let entry = match deaths.iter().position(same) {
        Some(i) => {
            let mut e = deaths.remove(i);
            if let FieldValue::Table(t) = &mut e {
                let count = t.get("count").and_then(FieldValue::as_i64).unwrap_or(0);
                t.insert("count".into(), FieldValue::I64(count + 1));
                t.insert("time".into(), FieldValue::Timestamp(now / 1000));
            }
            e
        }
        None => {
            let mut t = FieldTable::new();
            t.insert("count".into(), FieldValue::I64(1));
            t.insert("reason".into(), FieldValue::text(reason.as_str()));
            t.insert("queue".into(), FieldValue::text(queue));
            t.insert("time".into(), FieldValue::Timestamp(now / 1000));
            t.insert("exchange".into(), FieldValue::text(&message.exchange));
            t.insert("routing-keys".into(), FieldValue::Array(routing_keys));
            if let Some(exp) = &original_expiration {
                t.insert("original-expiration".into(), FieldValue::text(exp));
            }
            FieldValue::Table(t)
        }
    };
    deaths.insert(0, entry);
    headers.insert("x-death".into(), FieldValue::Array(deaths));
    if !headers.contains_key("x-first-death-reason") {
        headers.insert("x-first-death-reason".into(), FieldValue::text(reason.as_str()));
        headers.insert("x-first-death-queue".into(), FieldValue::text(queue));
        headers.insert("x-first-death-exchange".into(), FieldValue::text(&message.exchange));
    }
    if dead_letter_routing_key.is_some() {
        // The new routing key replaces the original ones, CC included (RabbitMQ).
        headers.remove("CC");
    }
    props.headers = Some(headers);

    let routing_key = dead_letter_routing_key.unwrap_or(&message.routing_key).to_string();
    Message::new(dead_letter_exchange, routing_key, props, message.body.clone())
}

/// True if routing this dead letter into `target` would loop without any rejection
/// in between (RabbitMQ drops such messages instead of cycling forever).
pub fn is_cycle(message: &Message, target: &str) -> bool {
    let Some(FieldValue::Array(deaths)) = message.properties.header("x-death") else { return false };
    let mut seen_target = false;
    for d in deaths {
        if let FieldValue::Table(t) = d {
            if t.get("reason").and_then(FieldValue::as_str) == Some("rejected") {
                return false;
            }
            if t.get("queue").and_then(FieldValue::as_str) == Some(target) {
                seen_target = true;
            }
        }
    }
    seen_target
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Properties;
    use bytes::Bytes;

    #[test]
    fn x_death_counts_up_for_same_queue_and_reason() {
        let props = Properties { expiration: Some("100".into()), ..Properties::default() };
        let m = Message::new("ex", "rk", props, Bytes::from_static(b"x"));
        let d1 = dead_lettered(&m, "q", DeathReason::Expired, "dlx", None, 5_000);
        assert_eq!(d1.properties.expiration, None);
        assert_eq!(d1.exchange, "dlx");
        assert_eq!(d1.routing_key, "rk");
        let Some(FieldValue::Array(deaths)) = d1.properties.header("x-death") else { panic!("no x-death") };
        let FieldValue::Table(t) = &deaths[0] else { panic!("not a table") };
        assert_eq!(t.get("count"), Some(&FieldValue::I64(1)));
        assert_eq!(t.get("original-expiration").and_then(FieldValue::as_str), Some("100"));
        assert_eq!(t.get("time"), Some(&FieldValue::Timestamp(5)));

        let d2 = dead_lettered(&d1, "q", DeathReason::Expired, "dlx", Some("other"), 6_000);
        assert_eq!(d2.routing_key, "other");
        let Some(FieldValue::Array(deaths)) = d2.properties.header("x-death") else { panic!("no x-death") };
        assert_eq!(deaths.len(), 1);
        let FieldValue::Table(t) = &deaths[0] else { panic!("not a table") };
        assert_eq!(t.get("count"), Some(&FieldValue::I64(2)));

        let d3 = dead_lettered(&d2, "q2", DeathReason::Rejected, "dlx", None, 7_000);
        let Some(FieldValue::Array(deaths)) = d3.properties.header("x-death") else { panic!("no x-death") };
        assert_eq!(deaths.len(), 2);
        assert_eq!(d3.properties.header("x-first-death-queue").and_then(FieldValue::as_str), Some("q"));
        assert_eq!(d3.properties.header("x-last-death-queue"), None);
    }

    #[test]
    fn cycles_are_detected_unless_rejected() {
        let m = Message::new("ex", "rk", Properties::default(), Bytes::new());
        let d = dead_lettered(&m, "q", DeathReason::Expired, "dlx", None, 0);
        assert!(is_cycle(&d, "q"));
        assert!(!is_cycle(&d, "other"));
        let r = dead_lettered(&d, "q2", DeathReason::Rejected, "dlx", None, 0);
        assert!(!is_cycle(&r, "q"));
    }
}
