//! The load generator's MQTT-over-WebSocket protocol (`--protocol ws-mqtt`: loadgen's MQTT
//! client, `bench/src/backend/mqtt.rs`, over `bench/src/backend/ws.rs`) against the real
//! binary's `ws_mqtt` listener: every message sent must arrive (count equality, no errors) at QoS 0, 1
//! (PUBACKs as confirms) and 2 (PUBREC/PUBREL/PUBCOMP both ways), with 16 KiB bodies, with
//! fan-out, and idle connections must open.

mod loadgen_common;

use loadgen_common::{assert_complete, count, loadgen};
use switchyard_tests::Broker;

fn url(broker: &Broker) -> String {
    format!("ws://{}/ws", broker.ws_mqtt)
}

#[test]
fn e2e_every_qos_delivers_every_message() {
    let broker = Broker::start();
    let u = url(&broker);
    let rec = loadgen(&broker, "ws-mqtt", &u, &["e2e", "--count", "5000", "--size", "1024", "--qos", "0"]);
    assert_complete(&rec, "ws-mqtt", 5000, 1);
    assert_eq!(rec["latency_us"]["count"].as_u64(), Some(5000), "{rec}");
    let rec = loadgen(
        &broker,
        "ws-mqtt",
        &u,
        &["e2e", "--count", "3000", "--size", "16384", "--qos", "1", "--confirm", "50"],
    );
    assert_complete(&rec, "ws-mqtt", 3000, 1);
    assert_eq!(count(&rec, "confirmed"), 3000, "one PUBACK per PUBLISH: {rec}");
    let rec = loadgen(&broker, "ws-mqtt", &u, &["e2e", "--count", "2000", "--qos", "2"]);
    assert_complete(&rec, "ws-mqtt", 2000, 1);
    assert_eq!(count(&rec, "confirmed"), 2000, "one PUBCOMP per PUBLISH: {rec}");
}

#[test]
fn fanout_and_idle_connections() {
    let broker = Broker::start();
    let u = url(&broker);
    let rec = loadgen(&broker, "ws-mqtt", &u, &["fanout", "--count", "1000", "--consumers", "3", "--qos", "1"]);
    assert_complete(&rec, "ws-mqtt", 1000, 3);
    let rec = loadgen(&broker, "ws-mqtt", &u, &["idle-conns", "--connections", "50", "--hold", "0.2"]);
    assert_eq!(count(&rec, "errors"), 0, "errors: {}", rec["first_error"]);
    assert_eq!(rec["idle"]["opened"].as_u64(), Some(50), "{rec}");
}

#[test]
fn answers_pings_so_a_silent_subscriber_outlives_the_idle_timeout() {
    // Pings every second, closed after 2 s without anything from the client: a QoS 0
    // subscriber sends nothing but pongs for the whole 4 s run.
    let broker = Broker::start_with("[ws]\nping_interval = 1\nidle_timeout = 2\n", &[]);
    let rec = loadgen(&broker, "ws-mqtt", &url(&broker), &["e2e", "--duration", "4", "--rate", "500", "--qos", "0"]);
    let sent = count(&rec, "sent");
    assert!(sent > 1000, "{rec}");
    assert_complete(&rec, "ws-mqtt", sent, 1);
}
