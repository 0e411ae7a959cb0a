//! `stream_read`: how fast one AMQP stream consumer reads a stream queue from a position.
//!
//! ```text
//! stream_read <amqp-url> <stream-queue> <count> [prefetch=2000] [x-stream-offset=first]
//! ```
//!
//! Consumes `<stream-queue>` with `x-stream-offset` (`first`, `last`, `next` or a number) and
//! manual acks (one `multiple` ack per half prefetch window: on a stream queue acks only give
//! credit back), until `<count>` messages have arrived or nothing arrived for 10 s. Prints the
//! rate every 5 s and at the end: messages, bytes, seconds, messages/s, MiB/s. Uses lapin (a
//! pika consumer tops out near 28k msg/s, below the broker).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        bail!("usage: stream_read <amqp-url> <stream-queue> <count> [prefetch=2000] [x-stream-offset=first]");
    }
    let (url, queue) = (&args[1], &args[2]);
    let count: u64 = args[3].parse().context("count")?;
    let prefetch: u16 = args.get(4).map_or(Ok(2000), |p| p.parse()).context("prefetch")?;
    let offset = args.get(5).map_or("first", String::as_str);
    let offset_value = match offset.parse::<i64>() {
        Ok(n) => AMQPValue::LongLongInt(n),
        Err(_) => AMQPValue::LongString(LongString::from(offset)),
    };

    let conn = Connection::connect(url, ConnectionProperties::default()).await.context("connect")?;
    let channel = conn.create_channel().await.context("channel")?;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await.context("basic.qos")?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-stream-offset".into(), offset_value);
    let mut consumer = channel
        .basic_consume(queue.as_str().into(), "stream-read".into(), BasicConsumeOptions::default(), arguments)
        .await
        .context("basic.consume")?;

    let ack_every = u64::from(prefetch / 2).max(1);
    let (mut n, mut bytes, mut unacked) = (0u64, 0u64, 0u64);
    let mut started: Option<Instant> = None;
    let mut last_report = Instant::now();
    let mut last_tag = 0;
    let mut last_at = Instant::now();
    while n < count {
        let next = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await;
        let Ok(Some(delivery)) = next else { break };
        let delivery = delivery.context("delivery")?;
        started.get_or_insert_with(Instant::now);
        n += 1;
        last_at = Instant::now();
        bytes += delivery.data.len() as u64;
        last_tag = delivery.delivery_tag;
        unacked += 1;
        if unacked >= ack_every {
            channel.basic_ack(last_tag, BasicAckOptions { multiple: true }).await.context("basic.ack")?;
            unacked = 0;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
            println!("{n} messages, {secs:.1} s, {:.0} msg/s", n as f64 / secs.max(1e-9));
        }
    }
    if unacked > 0 {
        channel.basic_ack(last_tag, BasicAckOptions { multiple: true }).await.context("basic.ack")?;
    }
    // Up to the last message (not the 10 s of silence that may end the loop).
    let secs = started.map_or(0.0, |s| last_at.duration_since(s).as_secs_f64()).max(1e-9);
    println!(
        "done: {n} messages, {bytes} bytes, {secs:.1} s, {:.0} msg/s, {:.1} MiB/s",
        n as f64 / secs,
        bytes as f64 / secs / (1 << 20) as f64
    );
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}
