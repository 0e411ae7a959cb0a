//! On-demand end-to-end measurement (`#[ignore]`): SNS Publish (the action, in process, without
//! HTTP) to a topic with 100 SQS subscriptions each holding a filter policy, on a broker with
//! its message log, persistent copies fsynced before each Publish answers. Run in release:
//!
//! ```text
//! cargo test -p switchyard-aws --release --lib sns::bench -- --ignored --nocapture
//! ```

use std::time::Instant;

use axum::http::Uri;
use switchyard::auth::User;
use switchyard::vhost::QueueSpec;
use switchyard::{Broker, ClientContext, CoreConfig};
use tokio_util::sync::CancellationToken;

use crate::config::AwsConfig;
use crate::sns::Sns;
use crate::sns::xml::uuid;

fn form(pairs: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn policy(i: usize) -> String {
    let p = match i % 5 {
        0 => serde_json::json!({"region": [format!("r{}", i % 7)], "price": [{"numeric": [">", i, "<=", i + 50]}]}),
        1 => serde_json::json!({"region": [{"prefix": format!("r{}", i % 5)}]}),
        2 => serde_json::json!({"kind": [{"anything-but": ["spam"]}], "price": [{"numeric": ["<", i]}]}),
        3 => serde_json::json!({"tags": ["t1", format!("t{}", i % 9)], "kind": ["order"]}),
        _ => serde_json::json!({"$or": [{"region": [format!("r{}", i % 3)]}, {"kind": [{"suffix": "x"}]}]}),
    };
    p.to_string()
}

async fn call(sns: &Sns, body: String) {
    let resp = sns.try_handle(&Uri::from_static("/"), body.as_bytes()).await.expect("an SNS action");
    assert_eq!(resp.status(), 200, "SNS action failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run on demand in release"]
async fn publish_to_100_filtered_sqs_subscriptions() {
    let dir = std::env::temp_dir().join(format!("sns-bench-{}", uuid()));
    let broker = Broker::open(CoreConfig { data_dir: dir.clone(), ..CoreConfig::default() }).await.expect("broker");
    let handle = broker.handle();
    let cfg = AwsConfig::default();
    let sns =
        Sns::new(handle.clone(), cfg.clone(), "http://127.0.0.1:4566".into(), CancellationToken::new()).expect("sns");
    let user = User::superuser("bench", &["/"]);
    let vhost = handle.open_vhost("/", &user).expect("vhost");
    let ctx = ClientContext { connection: handle.next_connection_id(), user };
    for raw in [true, false] {
        let topic = format!("bench-{}", if raw { "raw" } else { "enveloped" });
        call(&sns, form(&[("Action", "CreateTopic".into()), ("Name", topic.clone())])).await;
        let arn = format!("arn:aws:sns:{}:{}:{topic}", cfg.region, cfg.account_id);
        let mut queues = Vec::new();
        for i in 0..100 {
            let q = format!("{topic}-q{i}");
            vhost
                .declare_queue(QueueSpec { name: q.clone(), durable: true, ..Default::default() }, &ctx)
                .expect("queue");
            let endpoint = format!("arn:aws:sqs:{}:{}:{q}", cfg.region, cfg.account_id);
            call(
                &sns,
                form(&[
                    ("Action", "Subscribe".into()),
                    ("TopicArn", arn.clone()),
                    ("Protocol", "sqs".into()),
                    ("Endpoint", endpoint),
                    ("Attributes.entry.1.key", "FilterPolicy".into()),
                    ("Attributes.entry.1.value", policy(i)),
                    ("Attributes.entry.2.key", "RawMessageDelivery".into()),
                    ("Attributes.entry.2.value", raw.to_string()),
                ]),
            )
            .await;
            queues.push(q);
        }
        let publishers = 16usize;
        let per = 500usize;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for p in 0..publishers {
            let sns = sns.clone();
            let arn = arn.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..per {
                    let k = p * per + n;
                    let attr = |i: usize, name: &str, ty: &str, v: String| {
                        vec![
                            (format!("MessageAttributes.entry.{i}.Name"), name.to_string()),
                            (format!("MessageAttributes.entry.{i}.Value.DataType"), ty.to_string()),
                            (format!("MessageAttributes.entry.{i}.Value.StringValue"), v),
                        ]
                    };
                    let mut pairs =
                        vec![("Action".to_string(), "Publish".to_string()), ("TopicArn".into(), arn.clone())];
                    pairs.push(("Message".into(), format!("{{\"order\": {k}, \"note\": \"benchmark message\"}}")));
                    pairs.extend(attr(1, "region", "String", format!("r{}", k % 7)));
                    pairs.extend(attr(
                        2,
                        "kind",
                        "String",
                        if k.is_multiple_of(3) { "order".into() } else { "refund".into() },
                    ));
                    pairs.extend(attr(3, "price", "Number", (k % 200).to_string()));
                    pairs.extend(attr(4, "tags", "String.Array", format!("[\"t{}\", \"t2\"]", k % 9)));
                    let refs: Vec<(&str, String)> = pairs.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
                    call(&sns, form(&refs)).await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("publisher");
        }
        let secs = started.elapsed().as_secs_f64();
        let n = publishers * per;
        let delivered: u64 = queues.iter().filter_map(|q| vhost.queue(q)).map(|q| q.counts().ready).sum();
        println!(
            "SNS Publish -> 100 filtered SQS subscriptions ({}, {publishers} concurrent publishers, fsynced): {n} publishes in {secs:.2} s = {:.0} publishes/s, {:.0} filter evaluations/s, {:.0} deliveries/s ({:.1} per publish)",
            if raw { "raw" } else { "signed envelope" },
            n as f64 / secs,
            (n * 100) as f64 / secs,
            delivered as f64 / secs,
            delivered as f64 / n as f64
        );
    }
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
