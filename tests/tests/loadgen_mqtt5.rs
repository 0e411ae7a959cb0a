//! The load generator's MQTT 5 protocol (`--protocol mqtt5`: loadgen's own MQTT client,
//! `bench/src/backend/mqtt.rs`, speaking version 5) against the real binary: every message sent
//! must arrive (count equality, no errors) at QoS 0, 1 and 2, with PUBACK/PUBCOMP counted as
//! confirms, and with fan-out.

mod loadgen_common;

use loadgen_common::{assert_complete, count, loadgen};
use switchyard_tests::Broker;

fn url(broker: &Broker) -> String {
    format!("mqtt://{}", broker.mqtt)
}

#[test]
fn e2e_every_qos_delivers_every_message() {
    let broker = Broker::start();
    let u = url(&broker);
    let rec = loadgen(&broker, "mqtt5", &u, &["e2e", "--count", "3000", "--size", "1024", "--qos", "0"]);
    assert_complete(&rec, "mqtt5", 3000, 1);
    let rec = loadgen(&broker, "mqtt5", &u, &["e2e", "--count", "3000", "--qos", "1", "--confirm", "100"]);
    assert_complete(&rec, "mqtt5", 3000, 1);
    assert_eq!(count(&rec, "confirmed"), 3000, "one PUBACK per PUBLISH: {rec}");
    let rec = loadgen(&broker, "mqtt5", &u, &["e2e", "--count", "1500", "--qos", "2"]);
    assert_complete(&rec, "mqtt5", 1500, 1);
    assert_eq!(count(&rec, "confirmed"), 1500, "one PUBCOMP per PUBLISH: {rec}");
}

#[test]
fn fanout_delivers_a_copy_to_every_subscriber() {
    let broker = Broker::start();
    let rec =
        loadgen(&broker, "mqtt5", &url(&broker), &["fanout", "--count", "1000", "--consumers", "3", "--qos", "1"]);
    assert_complete(&rec, "mqtt5", 1000, 3);
}
