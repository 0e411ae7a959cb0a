//! The load generator's STOMP backend (`bench/src/backend/stomp.rs`) against the real binary:
//! short `loadgen` runs over STOMP must deliver every message they send (count equality, no
//! errors), with each ack mode, with receipts as confirms, with fan-out, and idle connections
//! must open. A backend that loses, duplicates or stalls messages fails here, so the benchmark
//! figures it produces can be trusted to count real deliveries.
//!
//! Which loadgen: `$LOADGEN_BIN` if set, else `<target>/debug/loadgen`, built first with
//! `cargo build -p switchyard-bench --bin loadgen` (a no-op when it is fresh).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use switchyard_tests::{Broker, repo_root, run_with_timeout, target_dir};

/// How long one loadgen run may take (debug builds on a busy 2-core machine).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn loadgen_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("LOADGEN_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(&cargo)
            .args(["build", "-p", "switchyard-bench", "--bin", "loadgen"])
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", Path::new(&cargo).display()));
        assert!(
            output.status.success(),
            "cargo build -p switchyard-bench failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let bin = target_dir().join("debug").join(format!("loadgen{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.is_file(), "cargo build did not produce {}", bin.display());
        bin
    })
    .clone()
}

/// Runs `loadgen <args> --protocol stomp` against `broker` and returns its JSON record.
fn loadgen(broker: &Broker, args: &[&str]) -> Value {
    let url = format!("stomp://guest:guest@{}", broker.stomp);
    let mut cmd = Command::new(loadgen_bin());
    cmd.args(args).args(["--protocol", "stomp", "--url", &url, "--no-progress", "--quiet", "--drain-timeout", "30"]);
    if let Some(pid) = broker.pid() {
        cmd.args(["--broker-pid", &pid.to_string()]);
    }
    let output = run_with_timeout(&mut cmd, RUN_TIMEOUT).unwrap_or_else(|out| {
        panic!(
            "loadgen {args:?} timed out\nstderr: {}\nbroker log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            broker.logs()
        )
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen {args:?} failed ({})\nstdout: {stdout}\nstderr: {}\nbroker log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        broker.logs()
    );
    let line = stdout.lines().rfind(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON line in {stdout:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON from loadgen ({e}): {line}"))
}

fn count(rec: &Value, field: &str) -> u64 {
    rec[field].as_u64().unwrap_or_else(|| panic!("no numeric '{field}' in {rec}"))
}

/// Every sent message was received `copies` times, nothing missing, no errors.
fn assert_complete(rec: &Value, sent: u64, copies: u64) {
    assert_eq!(rec["protocol"], "stomp", "{rec}");
    assert_eq!(count(rec, "errors"), 0, "errors: {}", rec["first_error"]);
    assert_eq!(count(rec, "sent"), sent, "{rec}");
    assert_eq!(count(rec, "received"), sent * copies, "{rec}");
    assert_eq!(count(rec, "missing"), 0, "{rec}");
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
