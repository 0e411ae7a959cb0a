//! The AMQP 0-9-1 method table: which (class-id, method-id) pairs exist and
//! what they are called.
//!
//! The decoder consults it before handing arguments to amq-protocol, so an
//! unknown method is reported as such (RabbitMQ closes with 540
//! NOT_IMPLEMENTED) instead of as a parse failure, and error texts can name
//! the method the way RabbitMQ does ("basic.publish"). The table is the 0-9-1
//! spec plus RabbitMQ's extensions (exchange.bind/unbind, basic.nack,
//! confirm.*, connection.blocked/unblocked/update-secret); a test checks it
//! against amq-protocol's generated parser.

use amq_protocol::protocol::AMQPClass;

/// Every method amq-protocol (and RabbitMQ) knows, as (class-id, method-id,
/// name). `basic` comes first because it carries the per-message traffic.
const METHODS: &[(u16, u16, &str)] = &[
    (60, 40, "basic.publish"),
    (60, 80, "basic.ack"),
    (60, 60, "basic.deliver"),
    (60, 120, "basic.nack"),
    (60, 90, "basic.reject"),
    (60, 10, "basic.qos"),
    (60, 11, "basic.qos-ok"),
    (60, 20, "basic.consume"),
    (60, 21, "basic.consume-ok"),
    (60, 30, "basic.cancel"),
    (60, 31, "basic.cancel-ok"),
    (60, 50, "basic.return"),
    (60, 70, "basic.get"),
    (60, 71, "basic.get-ok"),
    (60, 72, "basic.get-empty"),
    (60, 100, "basic.recover-async"),
    (60, 110, "basic.recover"),
    (60, 111, "basic.recover-ok"),
    (10, 10, "connection.start"),
    (10, 11, "connection.start-ok"),
    (10, 20, "connection.secure"),
    (10, 21, "connection.secure-ok"),
    (10, 30, "connection.tune"),
    (10, 31, "connection.tune-ok"),
    (10, 40, "connection.open"),
    (10, 41, "connection.open-ok"),
    (10, 50, "connection.close"),
    (10, 51, "connection.close-ok"),
    (10, 60, "connection.blocked"),
    (10, 61, "connection.unblocked"),
    (10, 70, "connection.update-secret"),
    (10, 71, "connection.update-secret-ok"),
    (20, 10, "channel.open"),
    (20, 11, "channel.open-ok"),
    (20, 20, "channel.flow"),
    (20, 21, "channel.flow-ok"),
    (20, 40, "channel.close"),
    (20, 41, "channel.close-ok"),
    (30, 10, "access.request"),
    (30, 11, "access.request-ok"),
    (40, 10, "exchange.declare"),
    (40, 11, "exchange.declare-ok"),
    (40, 20, "exchange.delete"),
    (40, 21, "exchange.delete-ok"),
    (40, 30, "exchange.bind"),
    (40, 31, "exchange.bind-ok"),
    (40, 40, "exchange.unbind"),
    // Not a typo: RabbitMQ numbers exchange.unbind-ok 51.
    (40, 51, "exchange.unbind-ok"),
    (50, 10, "queue.declare"),
    (50, 11, "queue.declare-ok"),
    (50, 20, "queue.bind"),
    (50, 21, "queue.bind-ok"),
    (50, 30, "queue.purge"),
    (50, 31, "queue.purge-ok"),
    (50, 40, "queue.delete"),
    (50, 41, "queue.delete-ok"),
    (50, 50, "queue.unbind"),
    (50, 51, "queue.unbind-ok"),
    (85, 10, "confirm.select"),
    (85, 11, "confirm.select-ok"),
    (90, 10, "tx.select"),
    (90, 11, "tx.select-ok"),
    (90, 20, "tx.commit"),
    (90, 21, "tx.commit-ok"),
    (90, 30, "tx.rollback"),
    (90, 31, "tx.rollback-ok"),
];

/// The name of a known method ("basic.publish"), or `None` if the pair is not
/// an AMQP 0-9-1 (+ RabbitMQ extension) method.
pub fn method_name_by_id(class_id: u16, method_id: u16) -> Option<&'static str> {
    METHODS.iter().find(|&&(c, m, _)| c == class_id && m == method_id).map(|&(_, _, name)| name)
}

/// The (class-id, method-id) pair of a method.
pub fn class_method_ids(method: &AMQPClass) -> (u16, u16) {
    (method.get_amqp_class_id(), method.get_amqp_method_id())
}

/// The RabbitMQ-style name of a method, e.g. `"basic.publish"`, for logs and
/// error texts.
pub fn method_name(method: &AMQPClass) -> &'static str {
    let (class_id, method_id) = class_method_ids(method);
    method_name_by_id(class_id, method_id).unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use amq_protocol::protocol::parse_class;

    use super::*;

    /// Arguments made only of zero bytes parse for every method (empty
    /// strings and tables, zero numbers, cleared bits).
    fn zero_args(class_id: u16, method_id: u16) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&class_id.to_be_bytes());
        payload.extend_from_slice(&method_id.to_be_bytes());
        payload.extend_from_slice(&[0u8; 64]);
        payload
    }

    #[test]
    fn table_matches_amq_protocols_parser_exactly() {
        for class_id in 0..=120u16 {
            for method_id in 0..=130u16 {
                let payload = zero_args(class_id, method_id);
                let parsed = parse_class(&payload[..]);
                let known = method_name_by_id(class_id, method_id).is_some();
                assert_eq!(
                    parsed.is_ok(),
                    known,
                    "{class_id}.{method_id}: amq-protocol parses it: {}, in our table: {known}",
                    parsed.is_ok()
                );
            }
        }
    }

    #[test]
    fn names_and_ids_agree_with_amq_protocols_types() {
        assert_eq!(METHODS.len(), 66);
        for &(class_id, method_id, name) in METHODS {
            let payload = zero_args(class_id, method_id);
            let (_, method) = parse_class(&payload[..]).expect("known method parses");
            assert_eq!(class_method_ids(&method), (class_id, method_id), "{name}");
            assert_eq!(method_name(&method), name);
            // The name's class part matches amq-protocol's variant.
            let class_part = format!("{method:?}").to_lowercase();
            assert!(class_part.starts_with(name.split('.').next().unwrap_or_default()), "{name} vs {class_part}");
        }
    }
}
