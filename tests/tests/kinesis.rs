//! Kinesis end to end against the real binary: boto3 scenario scripts for every action and
//! error (`tests/clients/python/kinesis_*.py`), strict-mode throughput limits, durability
//! across a clean restart and across `kill -9` (every record acknowledged with a 200 is read
//! back intact), and raw JSON 1.1 requests with malformed bodies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
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
scenario!(awscli_kinesis_every_action, FUNCTIONAL, "kinesis_awscli.py");

/// Retention expiry on the test clock: records past 24 h disappear from TRIM_HORIZON a whole
/// segment at a time and their segment files are deleted (`kinesis_retention.py` looks at the
/// broker's data directory).
#[test]
fn retention_expiry_drops_whole_segments_on_the_test_clock() {
    let broker = Broker::start_with(FUNCTIONAL, &[]);
    let data = broker.data_dir().to_string_lossy().into_owned();
    run_client_script_with(Client::Python, "kinesis_retention.py", &broker, &[&data]);
}

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

/// A minimal CBOR value for the raw CBOR test (encoded and decoded here by hand, independent
/// of the server's CBOR crate).
#[derive(Debug, Clone, PartialEq)]
enum Cb {
    Uint(u64),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Cb>),
    Map(Vec<(String, Cb)>),
    Tag(u64, Box<Cb>),
    Float(f64),
    Bool(bool),
    Null,
}

impl Cb {
    fn get(&self, key: &str) -> Option<&Cb> {
        match self {
            Cb::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn text(&self) -> &str {
        match self {
            Cb::Text(s) => s,
            other => panic!("not text: {other:?}"),
        }
    }
}

fn cb_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n < 256 {
        out.extend([m | 24, n as u8]);
    } else if n < 65_536 {
        out.push(m | 25);
        out.extend((n as u16).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend(n.to_be_bytes());
    }
}

fn cb_encode(v: &Cb, out: &mut Vec<u8>) {
    match v {
        Cb::Uint(n) => cb_head(out, 0, *n),
        Cb::Bytes(b) => {
            cb_head(out, 2, b.len() as u64);
            out.extend(b);
        }
        Cb::Text(s) => {
            cb_head(out, 3, s.len() as u64);
            out.extend(s.as_bytes());
        }
        Cb::Array(a) => {
            cb_head(out, 4, a.len() as u64);
            a.iter().for_each(|x| cb_encode(x, out));
        }
        Cb::Map(m) => {
            cb_head(out, 5, m.len() as u64);
            for (k, x) in m {
                cb_encode(&Cb::Text(k.clone()), out);
                cb_encode(x, out);
            }
        }
        Cb::Tag(t, x) => {
            cb_head(out, 6, *t);
            cb_encode(x, out);
        }
        Cb::Float(f) => {
            out.push(0xfb);
            out.extend(f.to_be_bytes());
        }
        Cb::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Cb::Null => out.push(0xf6),
    }
}

fn cb_decode(b: &[u8], pos: &mut usize) -> Cb {
    let first = b[*pos];
    *pos += 1;
    let (major, info) = (first >> 5, first & 31);
    let arg = |info: u8, pos: &mut usize| -> u64 {
        let n = match info {
            0..=23 => return u64::from(info),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => panic!("unsupported CBOR length {info}"),
        };
        let v = b[*pos..*pos + n].iter().fold(0u64, |a, x| (a << 8) | u64::from(*x));
        *pos += n;
        v
    };
    match major {
        0 => Cb::Uint(arg(info, pos)),
        2 | 3 => {
            let n = arg(info, pos) as usize;
            let raw = b[*pos..*pos + n].to_vec();
            *pos += n;
            if major == 2 { Cb::Bytes(raw) } else { Cb::Text(String::from_utf8(raw).expect("utf8")) }
        }
        4 => Cb::Array((0..arg(info, pos)).map(|_| cb_decode(b, pos)).collect()),
        5 => {
            let n = arg(info, pos);
            Cb::Map((0..n).map(|_| (cb_decode(b, pos).text().to_string(), cb_decode(b, pos))).collect())
        }
        6 => {
            let t = arg(info, pos);
            Cb::Tag(t, Box::new(cb_decode(b, pos)))
        }
        7 => match info {
            20 => Cb::Bool(false),
            21 => Cb::Bool(true),
            22 => Cb::Null,
            27 => {
                let mut f = [0u8; 8];
                f.copy_from_slice(&b[*pos..*pos + 8]);
                *pos += 8;
                Cb::Float(f64::from_be_bytes(f))
            }
            26 => {
                let mut f = [0u8; 4];
                f.copy_from_slice(&b[*pos..*pos + 4]);
                *pos += 4;
                Cb::Float(f64::from(f32::from_be_bytes(f)))
            }
            other => panic!("unsupported simple value {other}"),
        },
        other => panic!("unsupported major type {other}"),
    }
}

/// One CBOR request; returns (status, content type, decoded body).
fn post_cbor(addr: SocketAddr, action: &str, body: &Cb) -> (u16, String, Cb) {
    let mut payload = Vec::new();
    cb_encode(body, &mut payload);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-amz-cbor-1.1\r\nX-Amz-Target: Kinesis_20131202.{action}\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(&payload).expect("write body");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let ctype = head.lines().find_map(|l| l.strip_prefix("content-type: ")).unwrap_or_default().to_string();
    let body = &raw[split + 4..];
    let decoded = if body.is_empty() { Cb::Null } else { cb_decode(body, &mut 0) };
    (status, ctype, decoded)
}

fn map(pairs: &[(&str, Cb)]) -> Cb {
    Cb::Map(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

#[test]
fn cbor_requests_as_the_java_sdk_sends_them() {
    let broker = Broker::start_with(FUNCTIONAL, &[]);
    let addr = aws(&broker);
    let name = Cb::Text("cbor-stream".into());
    let (status, ctype, _) =
        post_cbor(addr, "CreateStream", &map(&[("StreamName", name.clone()), ("ShardCount", Cb::Uint(1))]));
    assert_eq!((status, ctype.as_str()), (200, "application/x-amz-cbor-1.1"));
    let data = vec![0u8, 1, 2, 255, 254];
    let (status, _, put) = post_cbor(
        addr,
        "PutRecord",
        &map(&[
            ("StreamName", name.clone()),
            ("PartitionKey", Cb::Text("pk".into())),
            ("Data", Cb::Bytes(data.clone())),
        ]),
    );
    assert_eq!(status, 200, "{put:?}");
    let seq = put.get("SequenceNumber").expect("sequence number").text().to_string();
    let (_, _, it) = post_cbor(
        addr,
        "GetShardIterator",
        &map(&[
            ("StreamName", name.clone()),
            ("ShardId", Cb::Text("shardId-000000000000".into())),
            ("ShardIteratorType", Cb::Text("AT_TIMESTAMP".into())),
            ("Timestamp", Cb::Tag(1, Box::new(Cb::Float(1_000_000_000.0)))),
        ]),
    );
    let iterator = it.get("ShardIterator").expect("iterator").clone();
    let (status, _, got) = post_cbor(addr, "GetRecords", &map(&[("ShardIterator", iterator)]));
    assert_eq!(status, 200, "{got:?}");
    let Some(Cb::Array(records)) = got.get("Records") else { panic!("records: {got:?}") };
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].get("Data"), Some(&Cb::Bytes(data)), "blob as a CBOR byte string");
    assert_eq!(records[0].get("SequenceNumber").map(Cb::text), Some(seq.as_str()));
    assert!(matches!(records[0].get("ApproximateArrivalTimestamp"), Some(Cb::Tag(1, _))), "{:?}", records[0]);
    assert!(matches!(got.get("NextShardIterator"), Some(Cb::Text(_))));
    // Errors come back in CBOR too.
    let (status, ctype, err) = post_cbor(addr, "DescribeStream", &map(&[("StreamName", Cb::Text("none".into()))]));
    assert_eq!((status, ctype.as_str()), (400, "application/x-amz-cbor-1.1"));
    assert_eq!(err.get("__type").map(Cb::text), Some("ResourceNotFoundException"));
    // Garbage CBOR is a SerializationException, and the broker carries on.
    let mut s = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-amz-cbor-1.1\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Length: 3\r\n\r\n\u{1f}\u{ff}\u{0}"
    );
    s.write_all(head.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert!(String::from_utf8_lossy(&raw).contains("SerializationException"));
    let (status, _, list) = post_cbor(addr, "ListStreams", &map(&[]));
    assert_eq!(status, 200);
    assert!(matches!(list.get("StreamNames"), Some(Cb::Array(a)) if a.len() == 1));
}

scenario!(pika_boto3_stream_queue_interop, FUNCTIONAL, "kinesis_amqp_interop.py");

/// CRC32 (IEEE), for checking event-stream frames independently of the server's code.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// Split event-stream messages off the front of `buf`: (`:event-type`, JSON payload) each,
/// checking both CRCs.
fn events(buf: &mut Vec<u8>) -> Vec<(String, serde_json::Value)> {
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let mut out = Vec::new();
    while buf.len() >= 12 && buf.len() >= be(&buf[0..4]) {
        let total = be(&buf[0..4]);
        let hlen = be(&buf[4..8]);
        assert_eq!(crc32(&buf[..8]) as usize, be(&buf[8..12]), "prelude CRC");
        assert_eq!(crc32(&buf[..total - 4]) as usize, be(&buf[total - 4..total]), "message CRC");
        let mut p = 12;
        let mut event_type = String::new();
        while p < 12 + hlen {
            let n = buf[p] as usize;
            let name = String::from_utf8_lossy(&buf[p + 1..p + 1 + n]).into_owned();
            assert_eq!(buf[p + 1 + n], 7, "string header");
            let vl = u16::from_be_bytes([buf[p + 2 + n], buf[p + 3 + n]]) as usize;
            let value = String::from_utf8_lossy(&buf[p + 4 + n..p + 4 + n + vl]).into_owned();
            if name == ":event-type" {
                event_type = value;
            }
            p += 4 + n + vl;
        }
        let payload: serde_json::Value = serde_json::from_slice(&buf[12 + hlen..total - 4]).expect("JSON payload");
        out.push((event_type, payload));
        buf.drain(..total);
    }
    out
}

/// De-chunk what arrived so far of an HTTP/1.1 chunked body into `body`; returns false at the
/// last chunk.
fn dechunk(raw: &mut Vec<u8>, body: &mut Vec<u8>) -> bool {
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else { return true };
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..eol]).trim(), 16).expect("chunk size");
        if size == 0 {
            return false;
        }
        if raw.len() < eol + 2 + size + 2 {
            return true;
        }
        body.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw.drain(..eol + 2 + size + 2);
    }
}

#[test]
fn subscribe_to_shard_pushes_records_as_an_event_stream() {
    let broker = Broker::start_with(FUNCTIONAL, &[]);
    let addr = aws(&broker);
    assert_eq!(post(addr, "CreateStream", br#"{"StreamName":"efo","ShardCount":1}"#).0, 200);
    for i in 0..3 {
        let body = format!(r#"{{"StreamName":"efo","PartitionKey":"k","Data":"{}"}}"#, ["YQ==", "Yg==", "Yw=="][i]);
        assert_eq!(post(addr, "PutRecord", body.as_bytes()).0, 200);
    }
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/efo";
    let (status, text) =
        post(addr, "RegisterStreamConsumer", format!(r#"{{"StreamARN":"{arn}","ConsumerName":"c"}}"#).as_bytes());
    assert_eq!(status, 200, "{text}");
    let consumer: serde_json::Value = serde_json::from_str(&text).expect("json");
    let consumer_arn = consumer["Consumer"]["ConsumerARN"].as_str().expect("arn").to_string();
    let req = format!(
        r#"{{"ConsumerARN":"{consumer_arn}","ShardId":"shardId-000000000000","StartingPosition":{{"Type":"TRIM_HORIZON"}}}}"#
    );
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: Kinesis_20131202.SubscribeToShard\r\nContent-Length: {}\r\n\r\n{req}",
        req.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let mut body = Vec::new();
    let mut got: Vec<(String, serde_json::Value)> = Vec::new();
    let mut header_done = false;
    let mut put_more = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "connection closed early; events so far: {got:?}");
        raw.extend_from_slice(&buf[..n]);
        if !header_done {
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            assert!(head.contains("application/vnd.amazon.eventstream"), "{head}");
            raw.drain(..end + 4);
            header_done = true;
        }
        dechunk(&mut raw, &mut body);
        got.extend(events(&mut body));
        let records: usize = got.iter().map(|(_, p)| p["Records"].as_array().map_or(0, Vec::len)).sum();
        if records >= 3 && !put_more {
            put_more = true;
            assert_eq!(post(addr, "PutRecord", br#"{"StreamName":"efo","PartitionKey":"k","Data":"ZA=="}"#).0, 200);
        }
        if records >= 4 {
            break;
        }
    }
    assert_eq!(got[0].0, "initial-response");
    let data: Vec<&str> = got
        .iter()
        .filter(|(t, _)| t == "SubscribeToShardEvent")
        .flat_map(|(_, p)| p["Records"].as_array().cloned().unwrap_or_default())
        .map(|r| match r["Data"].as_str() {
            Some("YQ==") => "a",
            Some("Yg==") => "b",
            Some("Yw==") => "c",
            Some("ZA==") => "d",
            _ => "?",
        })
        .collect();
    assert_eq!(data, ["a", "b", "c", "d"], "records pushed in order, the last one live");
    let last = got.last().expect("event");
    assert!(last.1["ContinuationSequenceNumber"].is_string());
    assert_eq!(last.1["MillisBehindLatest"], 0);

    // HTTP/2 with prior knowledge (h2c), as the Java SDK connects on plain HTTP: curl, if present.
    if Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let out = Command::new("curl")
            .args(["-s", "--http2-prior-knowledge", "--max-time", "2", "-o", "-", "-w", "%{http_version}"])
            .args([
                "-H",
                "Content-Type: application/x-amz-json-1.1",
                "-H",
                "X-Amz-Target: Kinesis_20131202.SubscribeToShard",
            ])
            .args(["--data", &req, &format!("http://{addr}/")])
            .output()
            .expect("curl");
        let mut bytes = out.stdout;
        let version = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(1)..]).into_owned();
        bytes.truncate(bytes.len().saturating_sub(1));
        assert_eq!(version, "2", "served over HTTP/2");
        let evs = events(&mut bytes);
        assert_eq!(evs.first().map(|e| e.0.as_str()), Some("initial-response"));
        assert!(evs.iter().any(|(_, p)| p["Records"].as_array().is_some_and(|r| r.len() == 4)), "{evs:?}");
    }
}

scenario!(
    paho_mqtt_ingest_into_a_stream,
    "[aws.kinesis]\nthroughput = \"relaxed\"\nmqtt_ingest = [{ topic_filter = \"sensors/+/temp\", stream = \"telemetry\", partition_key_level = 1, shards = 2 }]\n",
    "kinesis_mqtt_ingest.py"
);
