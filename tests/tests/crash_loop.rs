//! The crash harness: several publishers push persistent messages with confirms
//! at full speed into a durable queue while the real binary is SIGKILLed at
//! pseudo-random moments; after each restart a consumer takes some messages.
//! At the end every confirmed message must have been delivered at least once,
//! with its body intact, and every restart must have recovered.
//!
//! CI runs 20 kills (`CRASH_KILLS`, default 20). The long run is documented in
//! `docs/durability.md`: `CRASH_KILLS=1000 cargo test -p switchyard-tests --test crash_loop -- --nocapture`
//! (`cargo test`: nextest's profile kills a test after 5 minutes).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use switchyard_tests::Broker;

const PUBLISHERS: usize = 4;

/// A message body: 8-byte id, then a pattern derived from it (to detect corruption).
fn body(id: u64) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend((0..200u64).map(|i| (id.wrapping_mul(31).wrapping_add(i) % 251) as u8));
    b
}

/// The highest segment number among the message log's files (`NNNNNNNNNN.*`).
fn newest_segment(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.split('.').next()?.parse::<u64>().ok())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn check_body(b: &[u8]) -> u64 {
    assert!(b.len() >= 8, "body too short: {} bytes", b.len());
    let id = u64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
    assert_eq!(b, body(id).as_slice(), "body of message {id} is corrupted");
    id
}

async fn publisher(url: String, first_id: u64, confirmed: Arc<Mutex<Vec<u64>>>) {
    let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await else { return };
    let Ok(ch) = conn.create_channel().await else { return };
    if ch.confirm_select(ConfirmSelectOptions::default()).await.is_err() {
        return;
    }
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut id = first_id;
    loop {
        // A window of 50 outstanding confirms per publisher.
        let mut window = Vec::new();
        for _ in 0..50 {
            match ch
                .basic_publish("".into(), "crash".into(), BasicPublishOptions::default(), &body(id), props.clone())
                .await
            {
                Ok(c) => window.push((id, c)),
                Err(_) => return,
            }
            id += 1;
        }
        for (id, c) in window {
            match c.await {
                Ok(conf) if conf.is_ack() => confirmed.lock().expect("lock").push(id),
                _ => return,
            }
        }
    }
}

#[tokio::test]
async fn confirmed_messages_survive_repeated_sigkill() {
    let kills: usize = std::env::var("CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    // Small log segments (32 KiB): the kills then land across segment rollovers, prepared
    // (pre-zeroed) segments being renamed into place and overwritten, and segment cuts.
    let mut broker = Broker::start_with("[broker]\nlog_segment_bytes = 32768\n", &[]);
    {
        let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default()).await.expect("connect");
        let ch = conn.create_channel().await.expect("channel");
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        ch.queue_declare("crash".into(), durable, FieldTable::default()).await.expect("declare");
    }
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let mut delivered: HashSet<u64> = HashSet::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut last_segment = 0;
    for round in 0..kills {
        let url = broker.amqp_url();
        let tasks: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let first = ((round * PUBLISHERS + p) as u64) << 32;
                tokio::spawn(publisher(url.clone(), first, Arc::clone(&confirmed)))
            })
            .collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(30 + seed % 250)).await;
        broker.kill();
        last_segment = last_segment.max(newest_segment(&broker.data_dir().join("messages")));
        // A publisher whose connection died must end; lapin has been seen to leave a confirm
        // future pending forever after a SIGKILL (1 round in ~120), so give up on it after
        // 10 s. Only acked ids were recorded, so dropping it loses nothing confirmed.
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), t).await.is_err() {
                abort.abort();
            }
        }
        broker.restart();
        // Take some messages each round (acked), so recovery also sees forgotten ones.
        let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default()).await.expect("connect");
        let ch = conn.create_channel().await.expect("channel");
        for _ in 0..100 {
            match ch.basic_get("crash".into(), BasicGetOptions::default()).await.expect("get") {
                Some(m) => {
                    delivered.insert(check_body(&m.delivery.data));
                    m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
                }
                None => break,
            }
        }
        // Make the acks reach the broker before the next kill.
        ch.queue_declare(
            "crash".into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("round trip");
    }
    // Drain everything that is left.
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default()).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    while let Some(m) = ch.basic_get("crash".into(), BasicGetOptions { no_ack: true }).await.expect("get") {
        delivered.insert(check_body(&m.delivery.data));
    }
    let confirmed = confirmed.lock().expect("lock");
    assert!(!confirmed.is_empty(), "no publish was ever confirmed");
    let lost: Vec<_> = confirmed.iter().filter(|id| !delivered.contains(id)).take(10).collect();
    assert!(lost.is_empty(), "confirmed but never delivered (first 10): {lost:?} of {} confirmed", confirmed.len());
    // The run must have crossed many segments (else the small segment size did not apply).
    assert!(last_segment > kills as u64, "only {last_segment} segments for {kills} kills");
    eprintln!(
        "crash loop: {kills} kills, {} confirmed, {} delivered, last segment {last_segment}",
        confirmed.len(),
        delivered.len()
    );
}
