//! The load generator's STOMP-over-WebSocket protocol (`--protocol ws-stomp`: the STOMP backend
//! over `bench/src/backend/ws.rs`) against the real binary's `ws_stomp` listener: every message
//! sent must arrive (count equality, no errors) with client-individual acks, with receipts as
//! confirms and 16 KiB bodies (frames spanning WebSocket reads), with fan-out, and idle
//! connections must open.

mod loadgen_common;

use loadgen_common::{assert_complete, count, loadgen};
use switchyard_tests::Broker;

fn url(broker: &Broker) -> String {
    format!("ws://guest:guest@{}/ws", broker.ws_stomp)
}

#[test]
fn e2e_with_acks_and_receipts_delivers_every_message() {
    let broker = Broker::start();
    let u = url(&broker);
    let rec = loadgen(&broker, "ws-stomp", &u, &["e2e", "--count", "5000", "--size", "1024", "--manual-ack"]);
    assert_complete(&rec, "ws-stomp", 5000, 1);
    assert_eq!(rec["latency_us"]["count"].as_u64(), Some(5000), "{rec}");
    let rec = loadgen(
        &broker,
        "ws-stomp",
        &u,
        &["e2e", "--count", "2000", "--size", "16384", "--persistent", "--confirm", "50", "--manual-ack"],
    );
    assert_complete(&rec, "ws-stomp", 2000, 1);
    assert_eq!(count(&rec, "confirmed"), 2000, "one RECEIPT per SEND: {rec}");
}

#[test]
fn fanout_and_idle_connections() {
    let broker = Broker::start();
    let u = url(&broker);
    let rec = loadgen(&broker, "ws-stomp", &u, &["fanout", "--count", "1000", "--consumers", "3"]);
    assert_complete(&rec, "ws-stomp", 1000, 3);
    let rec = loadgen(&broker, "ws-stomp", &u, &["idle-conns", "--connections", "50", "--hold", "0.2"]);
    assert_eq!(count(&rec, "errors"), 0, "errors: {}", rec["first_error"]);
    assert_eq!(rec["idle"]["opened"].as_u64(), Some(50), "{rec}");
}

#[test]
fn answers_pings_so_a_silent_consumer_outlives_the_idle_timeout() {
    // Pings every second, closed after 2 s without anything from the client: an auto-ack
    // consumer sends nothing but pongs for the whole 4 s run.
    let broker = Broker::start_with("[ws]\nping_interval = 1\nidle_timeout = 2\n", &[]);
    let rec = loadgen(&broker, "ws-stomp", &url(&broker), &["e2e", "--duration", "4", "--rate", "500"]);
    let sent = count(&rec, "sent");
    assert!(sent > 1000, "{rec}");
    assert_complete(&rec, "ws-stomp", sent, 1);
}
