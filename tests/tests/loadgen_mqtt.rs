//! The load generator's MQTT client (`bench/src/backend/mqtt.rs` and `mqtt_wire.rs`: one lean
//! client for `--protocol mqtt`, `mqtt5` and `ws-mqtt`) over TCP, in MQTT 3.1.1, against the
//! real binary: every message sent must arrive (count equality, no errors) at QoS 0, 1 (PUBACKs
//! as confirms) and 2 (PUBREC/PUBREL/PUBCOMP both ways), with 16 KiB bodies, with fan-out at
//! QoS 0 and 1; idle connections must open; a subscriber that only receives must keep its
//! connection alive with PINGREQ. The same client against Debian's Mosquitto broker, if it is
//! installed (an independent implementation of both versions), checks it is not only correct
//! against Switchyard.

mod loadgen_common;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadgen_common::{assert_complete, count, loadgen, loadgen_foreign};
use switchyard_tests::Broker;

fn url(broker: &Broker) -> String {
    format!("mqtt://guest:guest@{}", broker.mqtt)
}

#[test]
fn e2e_every_qos_delivers_every_message() {
    let broker = Broker::start();
    let u = url(&broker);
    let rec = loadgen(&broker, "mqtt", &u, &["e2e", "--count", "5000", "--size", "1024", "--qos", "0"]);
    assert_complete(&rec, "mqtt", 5000, 1);
    assert_eq!(rec["latency_us"]["count"].as_u64(), Some(5000), "{rec}");
    let rec =
        loadgen(&broker, "mqtt", &u, &["e2e", "--count", "3000", "--size", "16384", "--qos", "1", "--confirm", "50"]);
    assert_complete(&rec, "mqtt", 3000, 1);
    assert_eq!(count(&rec, "confirmed"), 3000, "one PUBACK per PUBLISH: {rec}");
    let rec = loadgen(&broker, "mqtt", &u, &["e2e", "--count", "2000", "--qos", "2"]);
    assert_complete(&rec, "mqtt", 2000, 1);
    assert_eq!(count(&rec, "confirmed"), 2000, "one PUBCOMP per PUBLISH: {rec}");
}

#[test]
fn fanout_at_qos_0_and_1_and_idle_connections() {
    let broker = Broker::start();
    let u = url(&broker);
    let rec = loadgen(&broker, "mqtt", &u, &["fanout", "--count", "2000", "--consumers", "3", "--qos", "0"]);
    assert_complete(&rec, "mqtt", 2000, 3);
    let rec = loadgen(&broker, "mqtt", &u, &["fanout", "--count", "1000", "--consumers", "3", "--qos", "1"]);
    assert_complete(&rec, "mqtt", 1000, 3);
    assert_eq!(count(&rec, "confirmed"), 1000, "{rec}");
    let rec = loadgen(&broker, "mqtt", &u, &["idle-conns", "--connections", "50", "--hold", "0.2"]);
    assert_eq!(count(&rec, "errors"), 0, "errors: {}", rec["first_error"]);
    assert_eq!(rec["idle"]["opened"].as_u64(), Some(50), "{rec}");
}

#[test]
fn pingreq_keeps_a_silent_subscriber_connected() {
    // Keep-alive 1 s: the broker closes a connection it has heard nothing from for 1.5 s. A QoS 0
    // subscriber sends nothing but PINGREQs (every 0.5 s) for the whole 4 s run.
    let broker = Broker::start();
    let args = ["e2e", "--duration", "4", "--rate", "500", "--qos", "0", "--keepalive", "1"];
    let rec = loadgen(&broker, "mqtt", &url(&broker), &args);
    let sent = count(&rec, "sent");
    assert!(sent > 1000, "{rec}");
    assert_complete(&rec, "mqtt", sent, 1);
}

/// A private Mosquitto broker on a free loopback port, stopped on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto`, or returns `None` (with a note) if it is not installed.
    fn start() -> Option<Mosquitto> {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].into_iter().find(|p| std::path::Path::new(p).exists());
        let Some(bin) = bin else {
            eprintln!("NOTE: mosquitto not installed (apt-get install mosquitto); test skipped");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"))
            .expect("writing mosquitto.conf");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Mosquitto { child, port, _dir: dir })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_same_client_against_mosquitto_in_both_versions() {
    let Some(mosquitto) = Mosquitto::start() else { return };
    let u = format!("mqtt://127.0.0.1:{}", mosquitto.port);
    let logs = || String::from("(mosquitto runs with its log off)");
    for protocol in ["mqtt", "mqtt5"] {
        for qos in ["0", "1", "2"] {
            // Mosquitto takes 20 incoming QoS 2 flows per client (`max_inflight_messages`); it tells an
            // MQTT 5 client so (Receive Maximum, which the client obeys) but drops the excess of a
            // 3.1.1 client silently after PUBREC. So QoS 2 runs with a window of 20.
            let window = if qos == "2" { "20" } else { "100" };
            let args = ["e2e", "--count", "2000", "--qos", qos, "--confirm", window];
            let rec = loadgen_foreign(mosquitto.child.id(), &logs, protocol, &u, &args);
            assert_complete(&rec, protocol, 2000, 1);
            if qos != "0" {
                assert_eq!(count(&rec, "confirmed"), 2000, "{protocol} QoS {qos}: {rec}");
            }
        }
        let args = ["fanout", "--count", "1000", "--consumers", "3", "--qos", "1"];
        let rec = loadgen_foreign(mosquitto.child.id(), &logs, protocol, &u, &args);
        assert_complete(&rec, protocol, 1000, 3);
    }
}
