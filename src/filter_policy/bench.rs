//! On-demand measurements (`#[ignore]`): policy evaluation alone, and publish → delivery through
//! a filter-policy exchange with 100 filtered subscriptions. Run in release:
//!
//! ```text
//! cargo test -p switchyard --release --lib filter_policy::bench -- --ignored --nocapture --test-threads 1
//! ```

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use bytes::Bytes;
use serde_json::json;

use crate::auth::User;
use crate::exchange::{Destination, Exchange};
use crate::filter_policy::subscription::ARG_FILTER_POLICY;
use crate::filter_policy::{DeliveryTransform, MessageView, Scope, Subscription, TopicPublish, parse};
use crate::memory::MemoryMonitor;
use crate::message::{FieldTable, FieldValue, Message, Properties};
use crate::vhost::{ClientContext, ExchangeSpec, QueueSpec, VHost};

/// 100 policies mixing every operator; roughly one in ten accepts a given test message.
fn policies() -> Vec<serde_json::Value> {
    (0..100)
        .map(|i| match i % 10 {
            0 => json!({"region": [format!("r{}", i % 7)], "price": [{"numeric": [">", i, "<=", i + 50]}]}),
            1 => json!({"region": [{"prefix": format!("r{}", i % 5)}]}),
            2 => json!({"kind": [{"anything-but": ["spam", "test"]}], "price": [{"numeric": ["<", i]}]}),
            3 => json!({"ip": [{"cidr": format!("10.{}.0.0/16", i % 4)}]}),
            4 => json!({"tags": ["t1", format!("t{}", i % 9)], "kind": ["order"]}),
            5 => json!({"$or": [{"region": [format!("r{}", i % 3)]}, {"kind": [{"suffix": "x"}]}]}),
            6 => json!({"kind": [{"equals-ignore-case": "ORDER"}], "missing": [{"exists": false}]}),
            7 => json!({"price": [{"numeric": ["=", i]}]}),
            8 => json!({"region": [{"anything-but": {"prefix": "r1"}}], "kind": ["refund"]}),
            _ => json!({"region": ["r1", "r2", "r3"], "kind": ["order", "refund"], "tags": ["t2"]}),
        })
        .collect()
}

fn headers(n: u64) -> FieldTable {
    let mut h = FieldTable::new();
    h.insert("region".into(), FieldValue::text(format!("r{}", n % 7)));
    h.insert("kind".into(), FieldValue::text(if n.is_multiple_of(3) { "order" } else { "refund" }));
    h.insert("price".into(), FieldValue::text((n % 200).to_string()));
    h.insert("x-sqs-type.price".into(), FieldValue::text("Number"));
    h.insert("ip".into(), FieldValue::text(format!("10.{}.3.4", n % 8)));
    h.insert("tags".into(), FieldValue::text(format!("[\"t{}\", \"t2\"]", n % 9)));
    h.insert("x-sqs-type.tags".into(), FieldValue::text("String.Array"));
    h
}

#[test]
#[ignore = "measurement; run on demand in release"]
fn evaluation_rate_of_100_policies() {
    let compiled: Vec<_> =
        policies().iter().map(|p| parse(&p.to_string(), Scope::MessageAttributes).expect("valid")).collect();
    let messages: Vec<FieldTable> = (0..1000).map(headers).collect();
    let rounds = 200u64;
    let started = Instant::now();
    let mut matched = 0u64;
    for _ in 0..rounds {
        for h in &messages {
            let view = MessageView::new(Some(h), b"");
            matched += compiled.iter().filter(|p| p.matches(&view)).count() as u64;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let evals = rounds * messages.len() as u64 * compiled.len() as u64;
    println!(
        "filter evaluation: {evals} evaluations in {secs:.3} s = {:.1} M evaluations/s ({:.0} messages/s against 100 policies); {:.1}% matched",
        evals as f64 / secs / 1e6,
        (rounds * messages.len() as u64) as f64 / secs,
        100.0 * matched as f64 / evals as f64
    );
}

/// A transform standing in for the SNS envelope (a per-subscription copy, no signature).
#[derive(Debug)]
struct Copy;
struct CopyOne<'a>(&'a Message);
impl DeliveryTransform for Copy {
    fn begin<'a>(&'a self, _topic: &'a Exchange, message: &'a Message) -> Box<dyn TopicPublish + 'a> {
        Box::new(CopyOne(message))
    }
}
impl TopicPublish for CopyOne<'_> {
    fn message_for(&mut self, s: &Subscription) -> Option<Message> {
        let body = format!("{{\"Message\":{:?},\"Subscription\":{:?}}}", String::from_utf8_lossy(&self.0.body), s.key);
        Some(Message::new("", "", Properties::default(), Bytes::from(body)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run on demand in release"]
async fn publish_to_100_filtered_subscriptions() {
    for transform in [false, true] {
        let v = VHost::new("/", MemoryMonitor::new(u64::MAX), Arc::new(AtomicU64::new(1)), None);
        let ctx = ClientContext { connection: 1, user: User::superuser("bench", &["/"]) };
        v.declare_exchange(ExchangeSpec { name: "t".into(), kind: "x-sns".into(), ..Default::default() }, &ctx)
            .expect("topic");
        for (i, p) in policies().iter().enumerate() {
            let q = format!("q{i}");
            v.declare_queue(QueueSpec { name: q.clone(), ..Default::default() }, &ctx).expect("queue");
            let mut args = FieldTable::new();
            args.insert(ARG_FILTER_POLICY.into(), FieldValue::text(p.to_string()));
            v.bind("t", Destination::Queue(q), &format!("s{i}"), args, &ctx).expect("bind");
        }
        if transform {
            v.set_delivery_transform(Arc::new(Copy));
        }
        let n = 100_000u64;
        let started = Instant::now();
        for i in 0..n {
            let props = Properties { headers: Some(headers(i)), ..Default::default() };
            v.publish(Message::new("t", "t", props, Bytes::from_static(b"{\"order\": 1}")), &ctx).expect("publish");
        }
        let secs = started.elapsed().as_secs_f64();
        let delivered: u64 = v.queues().iter().map(|q| q.counts().ready).sum();
        println!(
            "publish -> 100 filtered subscriptions ({}): {n} messages in {secs:.3} s = {:.0} messages/s, {:.2} M filter evaluations/s, {:.0} deliveries/s ({:.1} per message)",
            if transform { "per-subscription copy" } else { "shared message" },
            n as f64 / secs,
            (n * 100) as f64 / secs / 1e6,
            delivered as f64 / secs,
            delivered as f64 / n as f64
        );
    }
}
