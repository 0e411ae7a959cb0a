//! Kinesis end to end against the real binary: boto3 scenario scripts for every action and
//! error (`tests/clients/python/kinesis_*.py`), strict-mode throughput limits, durability
//! across a clean restart and across `kill -9` (every record acknowledged with a 200 is read
//! back intact), and raw JSON 1.1 requests with malformed bodies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use switchyard_tests::{Broker, Client, client_command, run_client_script, run_client_script_with};

/// Functional tests: no throughput limits (readers poll freely), and the test clock on.
const FUNCTIONAL: &str = "[aws.kinesis]\nthroughput = \"relaxed\"\ntest_clock = true\n";

macro_rules! scenario {
    ($name:ident, $config:expr, $script:literal) => {
        #[test]
        fn $name() {
            let broker = Broker::start_with($config, &[]);
            run_client_script(Client::Python, $script, &broker);
        }
    };
}

scenario!(boto3_kinesis_streams, FUNCTIONAL, "kinesis_streams.py");
scenario!(boto3_kinesis_records, FUNCTIONAL, "kinesis_records.py");
scenario!(boto3_kinesis_reshard, FUNCTIONAL, "kinesis_reshard.py");
scenario!(boto3_kinesis_strict_limits, "", "kinesis_limits.py");

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn acknowledged_records_survive_a_restart() {
    let mut broker = Broker::start_with(FUNCTIONAL, &[]);
    let file = broker.dir().join("acked.jsonl");
    let file = file.to_string_lossy().into_owned();
    run_client_script_with(Client::Python, "kinesis_durability.py", &broker, &["put", "durable", "1000", &file]);
    broker.restart();
    let out = run_client_script_with(Client::Python, "kinesis_durability.py", &broker, &["check", "durable", &file]);
    assert!(stdout(&out).contains("1000 acknowledged"), "{}", stdout(&out));
}

#[test]
fn acknowledged_records_survive_kill_9() {
    let mut broker = Broker::start_with(FUNCTIONAL, &[]);
    let file = broker.dir().join("acked.jsonl");
    let file_s = file.to_string_lossy().into_owned();
    let mut putter = client_command(Client::Python, "kinesis_durability.py", &broker)
        .args(["put-forever", "crash", &file_s])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the putter");
    // Wait until records are being acknowledged, then kill the broker mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(&file) < 500 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.kill();
    let status = putter.wait().expect("putter exits once the broker is gone");
    assert!(status.success(), "putter failed: {status}");
    let acked = lines(&file);
    assert!(acked >= 500, "only {acked} records acknowledged before the kill");
    broker.restart();
    let out = run_client_script_with(Client::Python, "kinesis_durability.py", &broker, &["check", "crash", &file_s]);
    assert!(stdout(&out).contains("0 missing"), "{}", stdout(&out));
    // The stream still takes appends after recovery.
    let (status, _) = post(aws(&broker), "PutRecord", br#"{"StreamName":"crash","PartitionKey":"k","Data":"eA=="}"#);
    assert_eq!(status, 200);
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().filter(|l| l.starts_with('[')).count())
}

fn aws(broker: &Broker) -> SocketAddr {
    *broker.listeners.get("aws").expect("the ready line names an aws listener")
}

/// One JSON 1.1 request on a fresh connection; returns (status, body).
fn post(addr: SocketAddr, action: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: Kinesis_20131202.{action}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn malformed_requests_get_kinesis_errors_and_the_broker_carries_on() {
    let broker = Broker::start_with(FUNCTIONAL, &[]);
    let addr = aws(&broker);
    let cases: &[(&str, &[u8], &str)] = &[
        ("CreateStream", b"{not json", "SerializationException"),
        ("CreateStream", b"[1,2]", "SerializationException"),
        ("CreateStream", br#"{"StreamName": 5}"#, "SerializationException"),
        ("CreateStream", br#"{"ShardCount": 1}"#, "ValidationException"),
        ("NoSuchAction", b"{}", "UnknownOperationException"),
        ("GetRecords", br#"{"ShardIterator": "%%%"}"#, "InvalidArgumentException"),
        ("PutRecord", br#"{"StreamName": "none", "PartitionKey": "k", "Data": "eA=="}"#, "ResourceNotFoundException"),
    ];
    for (action, body, code) in cases {
        let (status, text) = post(addr, action, body);
        assert_eq!(status, 400, "{action} {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["__type"], *code, "{action}: {text}");
        assert!(v["message"].is_string(), "{text}");
    }
    let (status, _) = post(addr, "CreateStream", br#"{"StreamName": "after-errors", "ShardCount": 1}"#);
    assert_eq!(status, 200);
}
