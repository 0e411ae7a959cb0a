//! Durability through the real binary: confirmed persistent messages and
//! durable definitions survive SIGKILL and SIGTERM; transient things don't;
//! unacked deliveries come back flagged redelivered; a torn log tail is cut.

use std::io::Write;
use std::time::Duration;

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use switchyard_tests::{Broker, rss_kib};

async fn connect(broker: &Broker) -> (Connection, Channel) {
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default()).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn publish_confirmed(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    let confirm = ch
        .basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, props)
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "{confirm:?} for {key}");
}

async fn drain(ch: &Channel, queue: &str) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    while let Some(m) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("get") {
        out.push((m.delivery.data, m.delivery.redelivered));
    }
    out
}

#[tokio::test]
async fn confirmed_messages_and_definitions_survive_sigkill() {
    let mut broker = Broker::start();
    {
        let (_c, ch) = connect(&broker).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        ch.exchange_declare(
            "orders-x".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("exchange");
        let mut args = FieldTable::default();
        args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(5));
        ch.queue_declare("orders".into(), durable(), args).await.expect("queue");
        ch.queue_bind(
            "orders".into(),
            "orders-x".into(),
            "eu.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        ch.queue_declare("scratch".into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .expect("transient");
        for i in 0..200u32 {
            publish_confirmed(&ch, "orders-x", "eu.de", &i.to_be_bytes(), persistent()).await;
        }
        publish_confirmed(&ch, "", "orders", b"transient-message", BasicProperties::default()).await;
        publish_confirmed(&ch, "", "scratch", b"x", persistent()).await;
    }
    broker.kill();
    broker.restart();
    let (_c, ch) = connect(&broker).await;
    let got = drain(&ch, "orders").await;
    let bodies: Vec<u32> = got.iter().map(|(b, _)| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(
        bodies,
        (0..200).collect::<Vec<_>>(),
        "every confirmed persistent message, in order; not the transient one"
    );
    assert!(got.iter().all(|(_, redelivered)| !redelivered), "never delivered, so not redelivered");
    // The binding survived: publishing through the exchange still reaches the queue.
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    publish_confirmed(&ch, "orders-x", "eu.fr", b"after", persistent()).await;
    assert_eq!(drain(&ch, "orders").await.len(), 1);
    // The transient queue did not survive.
    let (_c2, ch2) = connect(&broker).await;
    assert!(
        ch2.queue_declare(
            "scratch".into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default()
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn acked_messages_stay_gone_and_unacked_ones_return_redelivered() {
    let mut broker = Broker::start();
    {
        let (_c, ch) = connect(&broker).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        ch.queue_declare("work".into(), durable(), FieldTable::default()).await.expect("queue");
        for body in [b"a", b"b", b"c", b"d"] {
            publish_confirmed(&ch, "", "work", body, persistent()).await;
        }
        let a = ch.basic_get("work".into(), BasicGetOptions::default()).await.expect("get").expect("a");
        a.delivery.ack(BasicAckOptions::default()).await.expect("ack");
        let _b = ch.basic_get("work".into(), BasicGetOptions::default()).await.expect("get").expect("b");
        // Make sure the ack and the delivery reached the broker before the crash.
        ch.queue_declare(
            "work".into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("round trip");
        tokio::time::sleep(Duration::from_millis(100)).await; // marks are written after the next fsync batch
    }
    broker.kill();
    broker.restart();
    let (_c, ch) = connect(&broker).await;
    let got = drain(&ch, "work").await;
    assert_eq!(
        got,
        vec![(b"b".to_vec(), true), (b"c".to_vec(), false), (b"d".to_vec(), false)],
        "a was acked; b was delivered and unacked at the crash"
    );
}

#[tokio::test]
async fn graceful_restart_keeps_messages() {
    let mut broker = Broker::start();
    {
        let (_c, ch) = connect(&broker).await;
        ch.queue_declare("kept".into(), durable(), FieldTable::default()).await.expect("queue");
        ch.tx_select().await.expect("tx");
        for i in 0..50u8 {
            ch.basic_publish("".into(), "kept".into(), BasicPublishOptions::default(), &[i], persistent())
                .await
                .expect("publish");
        }
        ch.tx_commit().await.expect("commit-ok after fsync");
    }
    let status = broker.terminate();
    assert!(status.success());
    broker.restart();
    let (_c, ch) = connect(&broker).await;
    assert_eq!(drain(&ch, "kept").await.len(), 50);
}

#[tokio::test]
async fn torn_log_tail_is_truncated_without_losing_earlier_messages() {
    let mut broker = Broker::start();
    {
        let (_c, ch) = connect(&broker).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        ch.queue_declare("torn".into(), durable(), FieldTable::default()).await.expect("queue");
        for i in 0..10u8 {
            publish_confirmed(&ch, "", "torn", &[i], persistent()).await;
        }
    }
    broker.kill();
    // Simulate a write cut off mid-record at the end of the newest segment.
    let dir = broker.data_dir().join("messages");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .expect("messages dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment");
    let mut f = std::fs::OpenOptions::new().append(true).open(last).expect("open segment");
    f.write_all(&[0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]).expect("garbage");
    drop(f);
    broker.restart();
    let (_c, ch) = connect(&broker).await;
    assert_eq!(drain(&ch, "torn").await.len(), 10);
    assert!(broker.logs().contains("torn tail"), "a warning names the truncation");
}

#[tokio::test]
async fn dead_letters_into_a_durable_queue_are_durable() {
    let mut broker = Broker::start();
    {
        let (_c, ch) = connect(&broker).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        ch.queue_declare("dlq".into(), durable(), FieldTable::default()).await.expect("dlq");
        let mut args = FieldTable::default();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from(b"".to_vec())));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(b"dlq".to_vec())));
        ch.queue_declare("src".into(), durable(), args).await.expect("src");
        publish_confirmed(&ch, "", "src", b"poison", persistent()).await;
        let m = ch.basic_get("src".into(), BasicGetOptions::default()).await.expect("get").expect("msg");
        m.delivery.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
        // Wait until the dead letter is in the DLQ.
        for _ in 0..100 {
            let ok = ch
                .queue_declare(
                    "dlq".into(),
                    QueueDeclareOptions { passive: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .expect("passive");
            if ok.message_count() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.kill();
    broker.restart();
    let (_c, ch) = connect(&broker).await;
    assert_eq!(drain(&ch, "src").await.len(), 0, "the rejected original is gone");
    assert_eq!(drain(&ch, "dlq").await.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>(), vec![b"poison".to_vec()]);
}

#[tokio::test]
async fn a_long_backlog_is_paged_out_of_memory() {
    // 1 MiB of bodies per queue in memory; the backlog is 60 MiB of transient messages.
    let broker = Broker::start_with("[broker]\nqueue_resident_bytes = 1048576\n", &[]);
    let pid = broker.pid().expect("pid");
    let (_c, ch) = connect(&broker).await;
    ch.queue_declare("backlog".into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("queue");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let before = rss_kib(pid);
    let body = vec![b'x'; 1024];
    let n = 60 * 1024;
    let mut pending = Vec::new();
    for i in 0..n {
        let mut b = body.clone();
        b[..4].copy_from_slice(&(i as u32).to_be_bytes());
        pending.push(
            ch.basic_publish(
                "".into(),
                "backlog".into(),
                BasicPublishOptions::default(),
                &b,
                BasicProperties::default(),
            )
            .await
            .expect("publish"),
        );
        if pending.len() >= 512 {
            for p in pending.drain(..) {
                assert!(p.await.expect("confirm").is_ack());
            }
        }
    }
    for p in pending.drain(..) {
        assert!(p.await.expect("confirm").is_ack());
    }
    let after = rss_kib(pid);
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 30,
        "broker RSS grew by {grown_mib} MiB for a 60 MiB backlog (before {before} KiB, after {after} KiB)"
    );
    // Every message comes back, in order.
    ch.basic_qos(1000, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume(
            "backlog".into(),
            "drain".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    use futures_lite::StreamExt;
    for i in 0..n {
        let d = consumer.next().await.expect("delivery").expect("ok");
        assert_eq!(u32::from_be_bytes([d.data[0], d.data[1], d.data[2], d.data[3]]), i as u32);
        assert_eq!(d.data.len(), 1024);
    }
}

#[tokio::test]
async fn many_durable_queues_all_confirm_and_recover() {
    // Each durable queue gets its own random store id; every one of them must confirm
    // and recover (a bug once lost queues whose id had the top bit set).
    let mut broker = Broker::start();
    {
        let (_c, ch) = connect(&broker).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        for i in 0..24 {
            let q = format!("dq-{i}");
            ch.queue_declare(q.as_str().into(), durable(), FieldTable::default()).await.expect("queue");
            let confirm = tokio::time::timeout(
                Duration::from_secs(10),
                publish_confirmed(&ch, "", &q, q.as_bytes(), persistent()),
            )
            .await;
            assert!(confirm.is_ok(), "confirm for {q} never came");
        }
    }
    broker.kill();
    broker.restart();
    let (_c, ch) = connect(&broker).await;
    for i in 0..24 {
        let q = format!("dq-{i}");
        assert_eq!(drain(&ch, &q).await, vec![(q.as_bytes().to_vec(), false)], "{q}");
    }
}

#[tokio::test]
async fn a_failed_fsync_turns_confirms_into_nacks_and_keeps_what_was_stored() {
    // The broker's test hook (SWITCHYARD_FAULT_INJECTION): every fsync of the message log
    // fails while `messages/fail-fsync` exists, as on a full or broken disk.
    let mut broker = Broker::start_with("", &[("SWITCHYARD_FAULT_INJECTION", "1")]);
    let fault = broker.data_dir().join("messages").join("fail-fsync");
    {
        let (_c, ch) = connect(&broker).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        ch.queue_declare("safe".into(), durable(), FieldTable::default()).await.expect("queue");
        for i in 0..20u32 {
            publish_confirmed(&ch, "", "safe", &i.to_be_bytes(), persistent()).await;
        }
        std::fs::write(&fault, b"").expect("arm the fault");
        let confirm = ch
            .basic_publish("".into(), "safe".into(), BasicPublishOptions::default(), b"doomed", persistent())
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_nack(), "a message whose fsync failed must be nacked, got {confirm:?}");
        // The log refuses further persistent messages with a clear channel error.
        let refused = ch
            .basic_publish("".into(), "safe".into(), BasicPublishOptions::default(), b"refused", persistent())
            .await
            .expect("publish")
            .await;
        let closed = match &refused {
            Ok(c) => c.is_nack(),
            Err(e) => format!("{e:?}").contains("message store unavailable"),
        };
        assert!(closed, "after a failure the store refuses writes: {refused:?}");
        // Transient traffic and other clients carry on.
        let (_c2, ch2) = connect(&broker).await;
        ch2.queue_declare("scratch".into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .expect("transient queue");
        ch2.basic_publish(
            "".into(),
            "scratch".into(),
            BasicPublishOptions::default(),
            b"t",
            BasicProperties::default(),
        )
        .await
        .expect("transient publish");
        assert_eq!(drain(&ch2, "scratch").await.len(), 1);
    }
    // HTTP APIs answer 5xx: every SQS message is persistent.
    let (_, r) = sqs(&broker, "CreateQueue", &serde_json::json!({"QueueName": "sqs-after-failure"}));
    let url = r["QueueUrl"].as_str().expect("url").to_string();
    let (status, r) = sqs(&broker, "SendMessage", &serde_json::json!({"QueueUrl": url, "MessageBody": "m"}));
    assert_eq!(status, 500, "{r}");
    assert!(r["__type"].as_str().is_some_and(|t| t.ends_with("InternalError")), "{r}");
    assert_eq!(r["message"], "message store unavailable");
    assert!(broker.logs().contains("injected fsync failure"), "the failure is logged");
    std::fs::remove_file(&fault).expect("disarm");
    broker.kill();
    broker.restart();
    let (_c, ch) = connect(&broker).await;
    let got = drain(&ch, "safe").await;
    let confirmed: Vec<u32> =
        got.iter().filter(|(b, _)| b.len() == 4).map(|(b, _)| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(confirmed, (0..20).collect::<Vec<_>>(), "everything confirmed before the failure is intact");
    // The nacked message may or may not be there (at-least-once); nothing else is.
    assert!(got.iter().all(|(b, _)| b.len() == 4 || b == b"doomed"), "{got:?}");
}

/// A few lines of STOMP 1.2 over a `TcpStream` (independent of the broker's codec).
struct Stomp {
    s: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Stomp {
    fn open(broker: &Broker) -> Stomp {
        let s = std::net::TcpStream::connect(broker.stomp).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut c = Stomp { s, buf: Vec::new() };
        c.frame("CONNECT", &[("accept-version", "1.2"), ("host", "/"), ("login", "guest"), ("passcode", "guest")], b"");
        assert_eq!(c.read().0, "CONNECTED");
        c
    }

    fn frame(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut out = format!("{command}\n").into_bytes();
        for (k, v) in headers {
            out.extend_from_slice(format!("{k}:{v}\n").as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(body);
        out.push(0);
        self.s.write_all(&out).expect("write");
    }

    /// The next frame as (command, headers, body); panics on EOF or timeout.
    fn read(&mut self) -> (String, Vec<(String, String)>, Vec<u8>) {
        use std::io::Read;
        loop {
            while matches!(self.buf.first(), Some(b'\n' | b'\r')) {
                self.buf.remove(0);
            }
            if let Some(end) = self.buf.iter().position(|b| *b == 0) {
                let frame: Vec<u8> = self.buf.drain(..=end).collect();
                let split = frame.windows(2).position(|w| w == b"\n\n").expect("header end");
                let head = String::from_utf8_lossy(&frame[..split]).into_owned();
                let mut lines = head.lines();
                let command = lines.next().unwrap_or_default().to_string();
                let headers =
                    lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.to_string(), v.to_string()))).collect();
                return (command, headers, frame[split + 2..frame.len() - 1].to_vec());
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).expect("read");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Send a frame with a receipt and wait for it (a persistent SEND's receipt waits for its fsync).
    fn with_receipt(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut h = headers.to_vec();
        h.push(("receipt", "r"));
        self.frame(command, &h, body);
        let (cmd, _, _) = self.read();
        assert_eq!(cmd, "RECEIPT", "{command}");
    }
}

#[tokio::test]
async fn stomp_persistent_messages_and_durable_subscriptions_survive_sigkill() {
    let mut broker = Broker::start();
    {
        let mut c = Stomp::open(&broker);
        // A durable topic subscription (RabbitMQ style), left while messages arrive.
        let sub = [("destination", "/topic/restart.a"), ("id", "d1"), ("durable", "true"), ("auto-delete", "false")];
        c.with_receipt("SUBSCRIBE", &sub, b"");
        c.with_receipt("UNSUBSCRIBE", &[("id", "d1")], b"");
        // /queue/ destinations are durable queues in RabbitMQ's STOMP mapping.
        c.with_receipt("SEND", &[("destination", "/queue/stomp-kept"), ("persistent", "true")], b"persistent");
        c.with_receipt("SEND", &[("destination", "/queue/stomp-kept")], b"transient");
        c.with_receipt("SEND", &[("destination", "/topic/restart.a"), ("persistent", "true")], b"for-the-durable-sub");
    }
    broker.kill();
    broker.restart();
    let mut c = Stomp::open(&broker);
    c.frame("SUBSCRIBE", &[("destination", "/queue/stomp-kept"), ("id", "q"), ("ack", "auto")], b"");
    let (cmd, _, body) = c.read();
    assert_eq!((cmd.as_str(), body.as_slice()), ("MESSAGE", &b"persistent"[..]));
    let sub = [("destination", "/topic/restart.a"), ("id", "d1"), ("durable", "true"), ("auto-delete", "false")];
    c.frame("SUBSCRIBE", &sub, b"");
    let (cmd, _, body) = c.read();
    assert_eq!((cmd.as_str(), body.as_slice()), ("MESSAGE", &b"for-the-durable-sub"[..]));
    // The transient message did not survive: nothing else arrives on the queue.
    c.with_receipt("SEND", &[("destination", "/queue/stomp-kept")], b"marker");
    let (_, _, body) = c.read();
    assert_eq!(body, b"marker", "only the persistent message came back");
}

/// One AWS JSON 1.0 SQS call over a fresh `TcpStream`; returns (status, JSON body).
fn sqs(broker: &Broker, action: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    use std::io::Read;
    let addr = *broker.listeners.get("aws").expect("aws listener");
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-amz-json-1.0\r\n\
         X-Amz-Target: AmazonSQS.{action}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let status = String::from_utf8_lossy(&raw[..split]).split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status");
    let json = serde_json::from_slice(&raw[split + 4..]).unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test]
async fn sqs_messages_survive_sigkill_with_their_fifo_groups() {
    use serde_json::json;
    let mut broker = Broker::start();
    let (_, r) = sqs(&broker, "CreateQueue", &json!({"QueueName": "plain"}));
    let plain = r["QueueUrl"].as_str().expect("url").to_string();
    let fifo_attrs = json!({"FifoQueue": "true", "ContentBasedDeduplication": "true"});
    let (_, r) = sqs(&broker, "CreateQueue", &json!({"QueueName": "ordered.fifo", "Attributes": fifo_attrs}));
    let fifo = r["QueueUrl"].as_str().expect("url").to_string();
    for i in 0..3 {
        let (status, _) = sqs(&broker, "SendMessage", &json!({"QueueUrl": plain, "MessageBody": format!("p{i}")}));
        assert_eq!(status, 200);
    }
    for (body, group) in [("a1", "A"), ("a2", "A"), ("b1", "B")] {
        let send = json!({"QueueUrl": fifo, "MessageBody": body, "MessageGroupId": group});
        assert_eq!(sqs(&broker, "SendMessage", &send).0, 200);
    }
    broker.kill();
    broker.restart();
    let plain = plain.replace(&plain[..plain.find("/000000000000").unwrap_or(0)], "");
    let fifo = fifo.replace(&fifo[..fifo.find("/000000000000").unwrap_or(0)], "");
    let addr = broker.listeners.get("aws").expect("aws listener");
    let (plain, fifo) = (format!("http://{addr}{plain}"), format!("http://{addr}{fifo}"));
    let receive = |url: &str, n: u32| {
        let (status, r) = sqs(
            &broker,
            "ReceiveMessage",
            &json!({"QueueUrl": url, "MaxNumberOfMessages": n, "AttributeNames": ["All"], "VisibilityTimeout": 30}),
        );
        assert_eq!(status, 200, "{r}");
        r["Messages"].as_array().cloned().unwrap_or_default()
    };
    let bodies: Vec<String> =
        receive(&plain, 10).iter().map(|m| m["Body"].as_str().unwrap_or_default().to_string()).collect();
    let mut sorted = bodies.clone();
    sorted.sort();
    assert_eq!(sorted, ["p0", "p1", "p2"], "every SQS message is durable");
    // FIFO: groups come back in order; one receive may take consecutive messages of a group
    // (as SQS does), and a group stays blocked while any of its messages is in flight.
    let got: Vec<(String, String)> = receive(&fifo, 10)
        .iter()
        .map(|m| {
            (
                m["Body"].as_str().unwrap_or_default().to_string(),
                m["Attributes"]["MessageGroupId"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(got.contains(&("a1".to_string(), "A".to_string())), "{got:?}");
    let group_a: Vec<&str> = got.iter().filter(|(_, g)| g == "A").map(|(b, _)| b.as_str()).collect();
    assert_eq!(group_a.first(), Some(&"a1"), "group A in order: {got:?}");
    assert!(receive(&fifo, 10).is_empty(), "groups stay blocked while their messages are in flight");
}

/// A `SendMessageBatch` hands its records to the message log as one batch and answers after
/// one fsync covering them all: every entry it reported successful survives SIGKILL, FIFO
/// groups in order; a `DeleteMessageBatch` (forgets batched likewise) never loses a message
/// it did not delete.
#[tokio::test]
async fn sqs_batches_survive_sigkill() {
    use serde_json::json;
    let mut broker = Broker::start();
    let (_, r) = sqs(&broker, "CreateQueue", &json!({"QueueName": "batched"}));
    let plain = r["QueueUrl"].as_str().expect("url").to_string();
    let fifo_attrs = json!({"FifoQueue": "true", "ContentBasedDeduplication": "true"});
    let (_, r) = sqs(&broker, "CreateQueue", &json!({"QueueName": "batched.fifo", "Attributes": fifo_attrs}));
    let fifo = r["QueueUrl"].as_str().expect("url").to_string();
    let entries: Vec<_> = (0..10).map(|i| json!({"Id": format!("e{i}"), "MessageBody": format!("m{i}")})).collect();
    let (status, r) = sqs(&broker, "SendMessageBatch", &json!({"QueueUrl": plain, "Entries": entries}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["Successful"].as_array().map(Vec::len), Some(10), "{r}");
    let grouped: Vec<_> = [("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A")]
        .iter()
        .enumerate()
        .map(|(i, (body, group))| json!({"Id": format!("f{i}"), "MessageBody": body, "MessageGroupId": group}))
        .collect();
    let (status, r) = sqs(&broker, "SendMessageBatch", &json!({"QueueUrl": fifo, "Entries": grouped}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["Successful"].as_array().map(Vec::len), Some(4), "{r}");
    // Take four of the plain queue's messages and delete them in one batch.
    let (status, r) =
        sqs(&broker, "ReceiveMessage", &json!({"QueueUrl": plain, "MaxNumberOfMessages": 4, "VisibilityTimeout": 30}));
    assert_eq!(status, 200, "{r}");
    let taken = r["Messages"].as_array().cloned().unwrap_or_default();
    assert!(!taken.is_empty(), "{r}");
    let deleted: Vec<String> = taken.iter().map(|m| m["Body"].as_str().unwrap_or_default().to_string()).collect();
    let handles: Vec<_> = taken
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"Id": format!("d{i}"), "ReceiptHandle": m["ReceiptHandle"]}))
        .collect();
    let (status, r) = sqs(&broker, "DeleteMessageBatch", &json!({"QueueUrl": plain, "Entries": handles}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["Successful"].as_array().map(Vec::len), Some(taken.len()), "{r}");
    broker.kill();
    broker.restart();
    let addr = broker.listeners.get("aws").expect("aws listener");
    let relocate = |url: &str| format!("http://{addr}{}", &url[url.find("/000000000000").unwrap_or(0)..]);
    let (plain, fifo) = (relocate(&plain), relocate(&fifo));
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let (status, r) = sqs(
            &broker,
            "ReceiveMessage",
            &json!({"QueueUrl": plain, "MaxNumberOfMessages": 10, "VisibilityTimeout": 30}),
        );
        assert_eq!(status, 200, "{r}");
        bodies.extend(
            r["Messages"].as_array().into_iter().flatten().map(|m| m["Body"].as_str().unwrap_or_default().to_string()),
        );
    }
    for i in 0..10 {
        let body = format!("m{i}");
        assert!(
            bodies.contains(&body) || deleted.contains(&body),
            "{body} was sent in a successful batch and not deleted: it must survive ({bodies:?})"
        );
    }
    let (status, r) = sqs(
        &broker,
        "ReceiveMessage",
        &json!({"QueueUrl": fifo, "MaxNumberOfMessages": 10, "AttributeNames": ["All"], "VisibilityTimeout": 30}),
    );
    assert_eq!(status, 200, "{r}");
    let got: Vec<(String, String)> = r["Messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["Body"].as_str().unwrap_or_default().to_string(),
                m["Attributes"]["MessageGroupId"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let group_a: Vec<&str> = got.iter().filter(|(_, g)| g == "A").map(|(b, _)| b.as_str()).collect();
    assert_eq!(group_a.first(), Some(&"a1"), "group A in order: {got:?}");
    assert!(group_a.windows(2).all(|w| w[0] < w[1]), "group A in order: {got:?}");
    assert!(got.iter().any(|(b, _)| b == "b1"), "{got:?}");
}

/// A bare MQTT client over a `TcpStream` (packets built with the broker's codec for brevity).
struct Mqtt {
    s: std::net::TcpStream,
    buf: bytes::BytesMut,
    protocol: switchyard_mqtt::codec::Protocol,
}

impl Mqtt {
    /// Connect as `id`; `persistent` keeps the session (and its queue) durable.
    fn open(broker: &Broker, protocol: switchyard_mqtt::codec::Protocol, id: &str, persistent: bool) -> Mqtt {
        use switchyard_mqtt::codec::{Connect, Packet, Properties};
        let s = std::net::TcpStream::connect(broker.mqtt).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut c = Mqtt { s, buf: bytes::BytesMut::new(), protocol };
        let mut properties = Properties::default();
        if persistent && protocol.is_v5() {
            properties.session_expiry_interval = Some(3600);
        }
        let connect = Connect {
            protocol,
            clean_start: !persistent,
            keep_alive: 60,
            client_id: id.into(),
            will: None,
            username: None,
            password: None,
            properties,
        };
        c.send(&Packet::Connect(Box::new(connect)));
        match c.recv() {
            Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0, "CONNACK"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    fn send(&mut self, p: &switchyard_mqtt::codec::Packet) {
        let mut out = bytes::BytesMut::new();
        p.encode(self.protocol, &mut out);
        self.s.write_all(&out).expect("write");
    }

    /// The next packet, or `None` once the server closed the connection.
    fn recv(&mut self) -> Option<switchyard_mqtt::codec::Packet> {
        use std::io::Read;
        loop {
            if let Some(p) =
                switchyard_mqtt::codec::decode(&mut self.buf, Some(self.protocol), usize::MAX).expect("valid packet")
            {
                return Some(p);
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Subscribe to `filter` at QoS 1 and wait for the SUBACK.
    fn subscribe(&mut self, filter: &str) {
        use switchyard_mqtt::codec::{Packet, Properties, QoS, SubOptions, Subscribe};
        let filters = vec![(filter.to_string(), SubOptions { qos: QoS::AtLeastOnce, ..SubOptions::default() })];
        self.send(&Packet::Subscribe(Subscribe { packet_id: 1, properties: Properties::default(), filters }));
        assert!(matches!(self.recv(), Some(Packet::SubAck(_))), "SUBACK");
    }

    /// Send a QoS 1 PUBLISH with packet id `id`.
    fn publish(&mut self, topic: &str, id: u16, payload: &'static [u8]) {
        use switchyard_mqtt::codec::{Packet, Properties, Publish, QoS};
        let p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.into(),
            packet_id: Some(id),
            properties: Properties::default(),
            payload: bytes::Bytes::from_static(payload),
        };
        self.send(&Packet::Publish(Box::new(p)));
    }
}

/// The message log refuses writes for good after a failed fsync, so each protocol gets a
/// broker of its own: arm the fault, then make one persistent write wait for it.
fn broker_with_fault() -> (Broker, std::path::PathBuf) {
    let broker = Broker::start_with("", &[("SWITCHYARD_FAULT_INJECTION", "1")]);
    let fault = broker.data_dir().join("messages").join("fail-fsync");
    (broker, fault)
}

#[tokio::test]
async fn a_failed_fsync_turns_stomp_receipts_into_errors() {
    let (broker, fault) = broker_with_fault();
    let mut c = Stomp::open(&broker);
    c.with_receipt("SEND", &[("destination", "/queue/stomp-safe"), ("persistent", "true")], b"kept");
    std::fs::write(&fault, b"").expect("arm the fault");
    c.frame("SEND", &[("destination", "/queue/stomp-safe"), ("persistent", "true"), ("receipt", "doomed")], b"d");
    let (cmd, headers, _) = c.read();
    assert_eq!(cmd, "ERROR", "a SEND whose fsync failed gets no RECEIPT: {headers:?}");
    let header = |k: &str| headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.as_str());
    assert_eq!(header("receipt-id"), Some("doomed"), "{headers:?}");
    assert!(header("message").is_some_and(|m| m.starts_with("message store failed")), "{headers:?}");
    // Then the connection closes.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c.s, &mut rest);
    assert!(!String::from_utf8_lossy(&rest).contains("RECEIPT"), "no receipt after the ERROR");
    // A later persistent SEND is refused at once; a transient one still gets its receipt.
    let mut c = Stomp::open(&broker);
    c.with_receipt("SEND", &[("destination", "/queue/stomp-safe")], b"transient");
    c.frame("SEND", &[("destination", "/queue/stomp-safe"), ("persistent", "true"), ("receipt", "later")], b"l");
    let (cmd, headers, _) = c.read();
    assert_eq!(cmd, "ERROR", "{headers:?}");
    assert!(headers.iter().any(|(k, v)| k == "message" && v == "resource_error"), "{headers:?}");
}

#[tokio::test]
async fn a_failed_fsync_refuses_mqtt5_acks_with_0x80() {
    use switchyard_mqtt::codec::{Packet, Protocol};
    let (broker, fault) = broker_with_fault();
    // A persistent session's subscription makes QoS 1 messages to the topic durable.
    let mut sub = Mqtt::open(&broker, Protocol::V5, "fsync-sub-5", true);
    sub.subscribe("fsync/five");
    let mut c = Mqtt::open(&broker, Protocol::V5, "fsync-pub-5", false);
    c.publish("fsync/five", 1, b"kept");
    assert!(matches!(c.recv(), Some(Packet::PubAck(a)) if a.packet_id == 1 && a.reason == 0), "PUBACK");
    std::fs::write(&fault, b"").expect("arm the fault");
    c.publish("fsync/five", 2, b"doomed");
    match c.recv() {
        Some(Packet::PubAck(a)) => {
            assert_eq!((a.packet_id, a.reason), (2, 0x80), "a PUBLISH whose fsync failed gets Unspecified error")
        }
        other => panic!("expected PUBACK 0x80, got {other:?}"),
    }
    // The connection carries on; later persistent messages are refused at once.
    c.publish("fsync/five", 3, b"refused");
    assert!(matches!(c.recv(), Some(Packet::PubAck(a)) if a.packet_id == 3 && a.reason == 0x97), "PUBACK 0x97");
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(), Some(Packet::PingResp));
}

#[tokio::test]
async fn a_failed_fsync_closes_mqtt311_connections_without_puback() {
    use switchyard_mqtt::codec::{Packet, Protocol};
    let (broker, fault) = broker_with_fault();
    let mut sub = Mqtt::open(&broker, Protocol::V311, "fsync-sub-3", true);
    sub.subscribe("fsync/three");
    let mut c = Mqtt::open(&broker, Protocol::V311, "fsync-pub-3", false);
    c.publish("fsync/three", 1, b"kept");
    assert!(matches!(c.recv(), Some(Packet::PubAck(a)) if a.packet_id == 1), "PUBACK");
    std::fs::write(&fault, b"").expect("arm the fault");
    c.publish("fsync/three", 2, b"doomed");
    // MQTT 3.1.1 cannot refuse a PUBLISH: the connection closes unacknowledged.
    while let Some(p) = c.recv() {
        assert!(!matches!(p, Packet::PubAck(_)), "no PUBACK for a message whose fsync failed: {p:?}");
    }
}
