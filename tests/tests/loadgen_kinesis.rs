//! The load generator's Kinesis backend (`bench/src/backend/kinesis.rs`) against the real
//! binary with `[aws.kinesis] throughput = "relaxed"`: PutRecords batches must all be confirmed
//! (producer-only), and end-to-end runs must read back every record exactly once through
//! GetShardIterator/GetRecords, on one shard and on several shards split between consumers,
//! and with fan-out (every reader reads every shard).

mod loadgen_common;

use loadgen_common::{assert_complete, count, loadgen};
use switchyard_tests::Broker;

const RELAXED: &str = "[aws.kinesis]\nthroughput = \"relaxed\"\n";

fn url(broker: &Broker) -> String {
    format!("http://{}", broker.listeners.get("aws").expect("the ready line names an aws listener"))
}

#[test]
fn produce_confirms_every_record_in_batches() {
    let broker = Broker::start_with(RELAXED, &[]);
    // 2,345 records in batches of 500: four full batches and a partial one on flush.
    let rec = loadgen(&broker, "kinesis", &url(&broker), &["produce", "--count", "2345", "--size", "1024"]);
    assert_eq!(count(&rec, "errors"), 0, "errors: {}", rec["first_error"]);
    assert_eq!(count(&rec, "sent"), 2345, "{rec}");
    assert_eq!(count(&rec, "confirmed"), 2345, "{rec}");
    assert_eq!(count(&rec, "nacked"), 0, "{rec}");
}

#[test]
fn e2e_reads_back_every_record() {
    let broker = Broker::start_with(RELAXED, &[]);
    let u = url(&broker);
    let rec = loadgen(&broker, "kinesis", &u, &["e2e", "--count", "5000", "--size", "1024", "--batch", "100"]);
    assert_complete(&rec, "kinesis", 5000, 1);
    assert_eq!(rec["latency_us"]["count"].as_u64(), Some(5000), "every record carried its stamp: {rec}");
    // Four shards, two producers, two consumers splitting the shards; odd sizes (base64 padding).
    let rec = loadgen(
        &broker,
        "kinesis",
        &u,
        &["e2e", "--count", "4001", "--size", "1001", "--shards", "4", "--producers", "2", "--consumers", "2"],
    );
    assert_complete(&rec, "kinesis", 4001, 1);
    assert_eq!(count(&rec, "confirmed"), 4001, "{rec}");
}

#[test]
fn fanout_every_reader_sees_every_record() {
    let broker = Broker::start_with(RELAXED, &[]);
    let rec =
        loadgen(&broker, "kinesis", &url(&broker), &["fanout", "--count", "1500", "--consumers", "3", "--shards", "2"]);
    assert_complete(&rec, "kinesis", 1500, 3);
}
