//! Long, heavy durability measurements — not part of CI (`#[ignore]`), run on
//! demand and documented in `docs/durability.md`:
//!
//! ```sh
//! cargo build --release -p switchyard-server
//! SWITCHYARD_BIN=$PWD/target/release/switchyard SOAK_MESSAGES=10000000 SWITCHYARD_READY_TIMEOUT=600 \
//!   cargo test -p switchyard-tests --test soak -- --ignored --nocapture
//! ```
//!
//! (Not nextest: its profile kills a test after 5 minutes; 10 M messages take ~25.)
//!
//! It publishes `SOAK_MESSAGES` (default 1,000,000) persistent 1 KiB messages with
//! confirms from `SOAK_PUBLISHERS` (default 8) connections into one durable queue,
//! SIGKILLs the broker, restarts it, consumes everything, and prints: publish
//! throughput, peak broker RSS, disk use, recovery time, bytes written per byte
//! published (write amplification, from /proc/<pid>/io) for the publish+consume cycle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use switchyard_tests::Broker;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| rd.filter_map(|e| e.ok()).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

#[tokio::test]
#[ignore = "heavy: writes SOAK_MESSAGES KiB to disk; run on demand (docs/durability.md)"]
async fn backlog_of_persistent_messages() {
    let total = env_or("SOAK_MESSAGES", 1_000_000);
    let publishers = env_or("SOAK_PUBLISHERS", 8);
    let mut broker = Broker::start();
    let pid = broker.pid().expect("pid");
    {
        let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default()).await.expect("connect");
        let ch = conn.create_channel().await.expect("channel");
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        ch.queue_declare("soak".into(), durable, FieldTable::default()).await.expect("declare");
    }
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = Arc::clone(&peak_rss);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(proc_field(pid, "status", "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    let per = total / publishers;
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let url = broker.amqp_url();
        tasks.push(tokio::spawn(async move {
            let conn = Connection::connect(&url, ConnectionProperties::default()).await.expect("connect");
            let ch = conn.create_channel().await.expect("channel");
            ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
            let body = vec![0x5au8; 1024];
            let props = BasicProperties::default().with_delivery_mode(2);
            let mut window = Vec::with_capacity(500);
            for _ in 0..per {
                window.push(
                    ch.basic_publish("".into(), "soak".into(), BasicPublishOptions::default(), &body, props.clone())
                        .await
                        .expect("publish"),
                );
                if window.len() == 500 {
                    for c in window.drain(..) {
                        assert!(c.await.expect("confirm").is_ack());
                    }
                }
            }
            for c in window.drain(..) {
                assert!(c.await.expect("confirm").is_ack());
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let published = per * publishers;
    let written_publish = proc_field(pid, "io", "write_bytes:");
    let disk = dir_size(&broker.data_dir().join("messages"));
    sampler.abort();
    let peak = peak_rss.load(Ordering::Relaxed);

    eprintln!(
        "soak: published {published} in {publish_secs:.1} s ({:.0} msg/s), peak RSS {} MiB, log on disk {} MiB, \
         written {:.2}x of bytes published",
        published as f64 / publish_secs,
        peak / 1024,
        disk / (1024 * 1024),
        written_publish as f64 / (published * 1024) as f64,
    );
    let first_run_logs = broker.logs();
    broker.kill();
    let t = Instant::now();
    broker.restart();
    let recovery = t.elapsed();
    let pid = broker.pid().expect("pid");
    let rss_recovered = proc_field(pid, "status", "VmRSS:");

    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default()).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(1000, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume("soak".into(), "drain".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let t = Instant::now();
    let mut got = 0u64;
    while got < published {
        let d = consumer.next().await.expect("delivery").expect("ok");
        got += 1;
        if got.is_multiple_of(500) || got == published {
            d.ack(BasicAckOptions { multiple: true }).await.expect("ack");
        }
    }
    let consume_secs = t.elapsed().as_secs_f64();
    // Let the writer record the last forgets, then read the process's write total.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let written_consume = proc_field(pid, "io", "write_bytes:");
    let rss_drained = proc_field(pid, "status", "VmRSS:");
    // The writer logs its fsync counters once a minute (group-commit evidence).
    let activity: Vec<String> = first_run_logs
        .lines()
        .filter(|l| l.contains("message log activity"))
        .map(|l| l.split("INFO").last().unwrap_or(l).trim().to_string())
        .collect();
    let bytes_published = published * 1024;
    eprintln!(
        "soak: {published} x 1 KiB persistent, {publishers} publishers\n\
         publish: {:.0} msg/s ({publish_secs:.1} s), peak RSS {} MiB, log on disk {} MiB\n\
         recovery after SIGKILL: {:.2} s (ready line), RSS after recovery {} MiB\n\
         consume: {:.0} msg/s, RSS after draining {} MiB\n\
         write amplification: publish {:.2}x, consume (marks) {:.3}x of bytes published\n\
         writer activity while publishing (per minute):\n  {}",
        published as f64 / publish_secs,
        peak / 1024,
        disk / (1024 * 1024),
        recovery.as_secs_f64(),
        rss_recovered / 1024,
        published as f64 / consume_secs,
        rss_drained / 1024,
        written_publish as f64 / bytes_published as f64,
        written_consume as f64 / bytes_published as f64,
        activity.join("\n  "),
    );
    assert_eq!(got, published);
}
