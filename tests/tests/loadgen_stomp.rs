//! The load generator's STOMP backend (`bench/src/backend/stomp.rs`) against the real binary:
//! short `loadgen` runs over STOMP must deliver every message they send (count equality, no
//! errors), with each ack mode, with receipts as confirms, with fan-out, and idle connections
//! must open. A backend that loses, duplicates or stalls messages fails here, so the benchmark
//! figures it produces can be trusted to count real deliveries.

mod loadgen_common;

use serde_json::Value;
use switchyard_tests::Broker;

/// Runs `loadgen <args> --protocol stomp` against `broker` and returns its JSON record.
fn loadgen(broker: &Broker, args: &[&str]) -> Value {
    loadgen_common::loadgen(broker, "stomp", &format!("stomp://guest:guest@{}", broker.stomp), args)
}

fn count(rec: &Value, field: &str) -> u64 {
    loadgen_common::count(rec, field)
}

/// Every sent message was received `copies` times, nothing missing, no errors.
fn assert_complete(rec: &Value, sent: u64, copies: u64) {
    loadgen_common::assert_complete(rec, "stomp", sent, copies);
}

#[test]
fn e2e_client_individual_acks_deliver_every_message() {
    let broker = Broker::start();
    let rec = loadgen(&broker, &["e2e", "--count", "5000", "--size", "1024", "--manual-ack", "--prefetch", "100"]);
    assert_complete(&rec, 5000, 1);
    assert_eq!(rec["params"]["manual_ack"], true);
    // Every delivery carried its send stamp back.
    assert_eq!(rec["latency_us"]["count"].as_u64(), Some(5000), "{rec}");
}

#[test]
fn e2e_auto_ack_and_cumulative_acks_with_receipts() {
    let broker = Broker::start();
    let rec = loadgen(&broker, &["e2e", "--count", "4000", "--size", "100"]);
    assert_complete(&rec, 4000, 1);
    // ack:client every 25 messages; persistent SENDs with receipts, at most 50 outstanding.
    let rec = loadgen(
        &broker,
        &["e2e", "--count", "3000", "--manual-ack", "--ack-every", "25", "--persistent", "--confirm", "50"],
    );
    assert_complete(&rec, 3000, 1);
    assert_eq!(count(&rec, "confirmed"), 3000, "one RECEIPT per SEND: {rec}");
    // Two producers and two competing consumers on one /queue/.
    let rec = loadgen(&broker, &["e2e", "--count", "4000", "--producers", "2", "--consumers", "2", "--manual-ack"]);
    assert_complete(&rec, 4000, 1);
}

#[test]
fn fanout_topic_and_idle_connections() {
    let broker = Broker::start();
    let rec = loadgen(&broker, &["fanout", "--count", "1000", "--consumers", "3"]);
    assert_complete(&rec, 1000, 3);
    let rec = loadgen(&broker, &["idle-conns", "--connections", "50", "--hold", "0.2"]);
    assert_eq!(count(&rec, "errors"), 0, "errors: {}", rec["first_error"]);
    assert_eq!(rec["idle"]["opened"].as_u64(), Some(50), "{rec}");
}
