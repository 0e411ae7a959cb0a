//! Shared by the `loadgen_<protocol>` tests: builds (or finds) the load generator, runs it
//! against a test broker and checks its JSON record.
//!
//! Which loadgen: `$LOADGEN_BIN` if set, else `<target>/debug/loadgen`, built first with
//! `cargo build -p switchyard-bench --bin loadgen` (a no-op when it is fresh).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use switchyard_tests::{Broker, cargo_build, run_with_timeout};

/// How long one loadgen run may take (debug builds on a busy 2-core machine).
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The loadgen binary, built once per test process.
pub fn loadgen_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("LOADGEN_BIN") {
            return PathBuf::from(bin);
        }
        let bin = cargo_build("switchyard-bench", "loadgen");
        assert!(bin.is_file(), "cargo build did not produce {}", bin.display());
        bin
    })
    .clone()
}

/// Runs `loadgen <args> --protocol <protocol> --url <url>` against `broker`; returns its JSON
/// record. Panics (with loadgen's stderr and the broker log) if it fails or times out.
pub fn loadgen(broker: &Broker, protocol: &str, url: &str, args: &[&str]) -> Value {
    run(broker.pid(), &|| broker.logs(), protocol, url, args)
}

/// Like [`loadgen`], against a broker that is not Switchyard (process `pid`, whose log
/// `logs` returns), e.g. a Mosquitto started by the test.
#[allow(dead_code)] // not every loadgen_<protocol> test has a foreign broker
pub fn loadgen_foreign(pid: u32, logs: &dyn Fn() -> String, protocol: &str, url: &str, args: &[&str]) -> Value {
    run(Some(pid), logs, protocol, url, args)
}

fn run(pid: Option<u32>, logs: &dyn Fn() -> String, protocol: &str, url: &str, args: &[&str]) -> Value {
    let mut cmd = Command::new(loadgen_bin());
    cmd.args(args).args(["--protocol", protocol, "--url", url, "--no-progress", "--quiet", "--drain-timeout", "30"]);
    if let Some(pid) = pid {
        cmd.args(["--broker-pid", &pid.to_string()]);
    }
    let output = run_with_timeout(&mut cmd, RUN_TIMEOUT).unwrap_or_else(|out| {
        panic!("loadgen {args:?} timed out\nstderr: {}\nbroker log:\n{}", String::from_utf8_lossy(&out.stderr), logs())
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen {args:?} failed ({})\nstdout: {stdout}\nstderr: {}\nbroker log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        logs()
    );
    let line = stdout.lines().rfind(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON line in {stdout:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON from loadgen ({e}): {line}"))
}

/// A numeric field of a record.
pub fn count(rec: &Value, field: &str) -> u64 {
    rec[field].as_u64().unwrap_or_else(|| panic!("no numeric '{field}' in {rec}"))
}

/// Every sent message was received `copies` times, nothing missing, no errors, over `protocol`.
pub fn assert_complete(rec: &Value, protocol: &str, sent: u64, copies: u64) {
    assert_eq!(rec["protocol"], protocol, "{rec}");
    assert_eq!(count(rec, "errors"), 0, "errors: {}", rec["first_error"]);
    assert_eq!(count(rec, "sent"), sent, "{rec}");
    assert_eq!(count(rec, "received"), sent * copies, "{rec}");
    assert_eq!(count(rec, "missing"), 0, "{rec}");
}
