//! AMQP scenarios through lapin (Rust) against the real binary. lapin shares
//! our codec crate (amq-protocol), so the pika and amqplib scenarios in
//! `stock_clients.rs` are the independent check; these cover the same paths
//! from the Rust side and a few things easier to assert here.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use switchyard_tests::Broker;

async fn connect(broker: &Broker) -> (Connection, Channel) {
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default()).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn longstr(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

async fn declare(ch: &Channel, name: &str, args: FieldTable) {
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), args).await.expect("queue.declare");
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, props)
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

async fn get(ch: &Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get")
}

async fn get_body(ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    get(ch, queue).await.map(|m| m.delivery.data)
}

/// Poll `basic.get` until a message arrives (dead letters travel asynchronously).
async fn wait_get(ch: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    for _ in 0..200 {
        if let Some(m) = get(ch, queue).await {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no message arrived on {queue}");
}

#[tokio::test]
async fn properties_and_every_field_type_round_trip() {
    let broker = Broker::start();
    let (_c, ch) = connect(&broker).await;
    declare(&ch, "props", FieldTable::default()).await;
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::LongLongInt(-7));
    let headers = table(&[
        ("bool", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-8)),
        ("u8", AMQPValue::ShortShortUInt(8)),
        ("i16", AMQPValue::ShortInt(-16)),
        ("u16", AMQPValue::ShortUInt(16)),
        ("i32", AMQPValue::LongInt(-32)),
        ("u32", AMQPValue::LongUInt(32)),
        ("i64", AMQPValue::LongLongInt(-64)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(2.25)),
        ("dec", AMQPValue::DecimalValue(lapin::types::DecimalValue { scale: 2, value: 12345 })),
        ("str", longstr("text")),
        ("bin", AMQPValue::LongString(LongString::from(vec![0u8, 159, 146, 150]))),
        ("arr", AMQPValue::FieldArray(vec![AMQPValue::LongInt(1), longstr("two")].into())),
        ("ts", AMQPValue::Timestamp(1_700_000_000)),
        ("table", AMQPValue::FieldTable(nested)),
        ("bytes", AMQPValue::ByteArray(vec![1u8, 2, 3].into())),
        ("void", AMQPValue::Void),
    ]);
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(headers.clone())
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id("corr".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("mid".into())
        .with_timestamp(1_700_000_001)
        .with_type("kind".into())
        .with_user_id("guest".into())
        .with_app_id("app".into());
    publish(&ch, "", "props", b"{}", props.clone()).await;
    let got = get(&ch, "props").await.expect("message");
    assert_eq!(got.delivery.properties, props);
    assert_eq!(got.delivery.data, b"{}");
}

#[tokio::test]
async fn empty_and_one_mib_bodies() {
    let broker = Broker::start();
    let (_c, ch) = connect(&broker).await;
    declare(&ch, "sizes", FieldTable::default()).await;
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    publish(&ch, "", "sizes", b"", BasicProperties::default()).await;
    publish(&ch, "", "sizes", &big, BasicProperties::default()).await;
    assert_eq!(get_body(&ch, "sizes").await.expect("empty"), b"");
    assert_eq!(get_body(&ch, "sizes").await.expect("big"), big);
}

#[tokio::test]
async fn exchange_types_route() {
    let broker = Broker::start();
    let (_c, ch) = connect(&broker).await;
    for (name, kind) in
        [("x.direct", ExchangeKind::Direct), ("x.fanout", ExchangeKind::Fanout), ("x.topic", ExchangeKind::Topic)]
    {
        ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), FieldTable::default())
            .await
            .expect("exchange.declare");
    }
    ch.exchange_declare(
        "x.headers".into(),
        ExchangeKind::Headers,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.declare");
    for q in ["qd", "qf1", "qf2", "qt", "qh"] {
        declare(&ch, q, FieldTable::default()).await;
    }
    let bind = |q: &'static str, x: &'static str, k: &'static str, args: FieldTable| {
        let ch = ch.clone();
        async move { ch.queue_bind(q.into(), x.into(), k.into(), QueueBindOptions::default(), args).await.expect("bind") }
    };
    bind("qd", "x.direct", "k", FieldTable::default()).await;
    bind("qf1", "x.fanout", "", FieldTable::default()).await;
    bind("qf2", "x.fanout", "", FieldTable::default()).await;
    bind("qt", "x.topic", "a.*.c.#", FieldTable::default()).await;
    bind("qh", "x.headers", "", table(&[("x-match", longstr("any")), ("a", AMQPValue::LongInt(1))])).await;

    publish(&ch, "x.direct", "k", b"d", BasicProperties::default()).await;
    publish(&ch, "x.direct", "other", b"nope", BasicProperties::default()).await;
    publish(&ch, "x.fanout", "whatever", b"f", BasicProperties::default()).await;
    publish(&ch, "x.topic", "a.b.c", b"t1", BasicProperties::default()).await;
    publish(&ch, "x.topic", "a.b.c.d.e", b"t2", BasicProperties::default()).await;
    publish(&ch, "x.topic", "a.c", b"nope", BasicProperties::default()).await;
    let h = BasicProperties::default().with_headers(table(&[("a", AMQPValue::LongLongInt(1))]));
    publish(&ch, "x.headers", "", b"h", h).await;

    assert_eq!(get_body(&ch, "qd").await.as_deref(), Some(&b"d"[..]));
    assert_eq!(get_body(&ch, "qd").await, None);
    assert_eq!(get_body(&ch, "qf1").await.as_deref(), Some(&b"f"[..]));
    assert_eq!(get_body(&ch, "qf2").await.as_deref(), Some(&b"f"[..]));
    assert_eq!(get_body(&ch, "qt").await.as_deref(), Some(&b"t1"[..]));
    assert_eq!(get_body(&ch, "qt").await.as_deref(), Some(&b"t2"[..]));
    assert_eq!(get_body(&ch, "qt").await, None);
    assert_eq!(get_body(&ch, "qh").await.as_deref(), Some(&b"h"[..]));
}

#[tokio::test]
async fn confirms_and_mandatory_returns() {
    let broker = Broker::start();
    let (_c, ch) = connect(&broker).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    declare(&ch, "confirmed", FieldTable::default()).await;
    for i in 0..100u32 {
        let c = ch
            .basic_publish(
                "".into(),
                "confirmed".into(),
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(c.is_ack());
    }
    let c = ch
        .basic_publish(
            "".into(),
            "no-such-queue".into(),
            BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
            b"lost",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(c.is_ack(), "unroutable mandatory messages are returned, then acked");
    let returned = c.take_message().expect("basic.return");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.data, b"lost");
}

#[tokio::test]
async fn reject_publish_overflow_nacks() {
    let broker = Broker::start();
    let (_c, ch) = connect(&broker).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    declare(&ch, "full", table(&[("x-max-length", AMQPValue::LongInt(1)), ("x-overflow", longstr("reject-publish"))]))
        .await;
    let send = |body: &'static [u8]| {
        let ch = ch.clone();
        async move {
            ch.basic_publish("".into(), "full".into(), BasicPublishOptions::default(), body, BasicProperties::default())
                .await
                .expect("publish")
                .await
                .expect("confirm")
        }
    };
    assert!(send(b"1").await.is_ack());
    assert!(send(b"2").await.is_nack());
}

#[tokio::test]
async fn prefetch_nack_requeue_and_redelivered_flag() {
    let broker = Broker::start();
    let (_c, ch) = connect(&broker).await;
    declare(&ch, "work", FieldTable::default()).await;
    for i in 0..5u8 {
        publish(&ch, "", "work", &[i], BasicProperties::default()).await;
    }
    ch.basic_qos(2, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume("work".into(), "c1".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let first = consumer.next().await.expect("delivery").expect("ok");
    let second = consumer.next().await.expect("delivery").expect("ok");
    assert_eq!((first.data[0], second.data[0]), (0, 1));
    // With prefetch 2 nothing else arrives until we settle.
    assert!(tokio::time::timeout(Duration::from_millis(200), consumer.next()).await.is_err());
    second.nack(BasicNackOptions { multiple: true, requeue: true }).await.expect("nack");
    let again = consumer.next().await.expect("delivery").expect("ok");
    assert_eq!(again.data[0], 0);
    assert!(again.redelivered);
    again.ack(BasicAckOptions::default()).await.expect("ack");
}

#[tokio::test]
async fn transactions_commit_and_rollback() {
    let broker = Broker::start();
    let (_c, ch) = connect(&broker).await;
    declare(&ch, "txq", FieldTable::default()).await;
    ch.tx_select().await.expect("tx.select");
    publish(&ch, "", "txq", b"rolled-back", BasicProperties::default()).await;
    ch.tx_rollback().await.expect("rollback");
    publish(&ch, "", "txq", b"committed", BasicProperties::default()).await;
    let (_c2, other) = connect(&broker).await;
    assert_eq!(get_body(&other, "txq").await, None, "nothing visible before commit");
    ch.tx_commit().await.expect("commit");
    assert_eq!(get_body(&other, "txq").await.as_deref(), Some(&b"committed"[..]));
    assert_eq!(get_body(&other, "txq").await, None);
}

#[tokio::test]
async fn dead_letter_on_expiry_with_x_death() {
    let broker = Broker::start();
    let (_c, ch) = connect(&broker).await;
    ch.exchange_declare("dlx".into(), ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .expect("dlx");
    declare(&ch, "dead", FieldTable::default()).await;
    ch.queue_bind("dead".into(), "dlx".into(), "".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind");
    declare(
        &ch,
        "short-lived",
        table(&[("x-message-ttl", AMQPValue::LongInt(50)), ("x-dead-letter-exchange", longstr("dlx"))]),
    )
    .await;
    publish(&ch, "", "short-lived", b"bye", BasicProperties::default()).await;
    let m = wait_get(&ch, "dead").await;
    assert_eq!(m.delivery.data, b"bye");
    let headers = m.delivery.properties.headers().clone().expect("headers");
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else { panic!("no x-death: {headers:?}") };
    let Some(AMQPValue::FieldTable(d)) = deaths.as_slice().first() else { panic!("x-death entry") };
    assert_eq!(d.inner().get("reason"), Some(&longstr("expired")));
    assert_eq!(d.inner().get("queue"), Some(&longstr("short-lived")));
    assert_eq!(d.inner().get("count"), Some(&AMQPValue::LongLongInt(1)));
}

#[tokio::test]
async fn priorities_deliver_highest_first() {
    let broker = Broker::start();
    let (_c, ch) = connect(&broker).await;
    declare(&ch, "prio", table(&[("x-max-priority", AMQPValue::ShortShortUInt(10))])).await;
    for p in [1u8, 9, 5] {
        publish(&ch, "", "prio", &[p], BasicProperties::default().with_priority(p)).await;
    }
    let order: Vec<u8> = [get_body(&ch, "prio").await, get_body(&ch, "prio").await, get_body(&ch, "prio").await]
        .into_iter()
        .map(|b| b.expect("msg")[0])
        .collect();
    assert_eq!(order, [9, 5, 1]);
}

#[tokio::test]
async fn hundred_channels_on_one_connection() {
    let broker = Broker::start();
    let (conn, ch0) = connect(&broker).await;
    declare(&ch0, "many", FieldTable::default()).await;
    let mut channels = Vec::new();
    for _ in 0..100 {
        channels.push(conn.create_channel().await.expect("channel"));
    }
    for (i, ch) in channels.iter().enumerate() {
        publish(ch, "", "many", &(i as u32).to_be_bytes(), BasicProperties::default()).await;
    }
    let ok = ch0
        .queue_declare(
            "many".into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("passive");
    assert_eq!(ok.message_count(), 100);
}

#[tokio::test]
async fn exclusive_queue_is_locked_for_other_connections() {
    let broker = Broker::start();
    let (_c1, ch1) = connect(&broker).await;
    ch1.queue_declare(
        "mine".into(),
        QueueDeclareOptions { exclusive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let (_c2, ch2) = connect(&broker).await;
    let err = ch2
        .basic_consume("mine".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect_err("locked");
    assert!(err.to_string().contains("RESOURCE_LOCKED"), "{err}");
}

#[tokio::test]
async fn sigterm_closes_clients_with_320_and_exits_cleanly() {
    let mut broker = Broker::start();
    let (conn, _ch) = connect(&broker).await;
    let status = broker.terminate();
    assert!(status.success(), "exit status {status}");
    // The client was told (connection.close 320) rather than just cut off.
    for _ in 0..100 {
        if !conn.status().connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!conn.status().connected());
}

#[tokio::test]
async fn memory_alarm_blocks_publishers_until_memory_falls() {
    // 2 MB high watermark: a few hundred KB messages trip it.
    let broker = Broker::start_with("[broker]\nmemory_high_watermark = 2000000\n", &[]);
    let (pub_conn, pub_ch) = connect(&broker).await;
    declare(&pub_ch, "hog", FieldTable::default()).await;
    let body = vec![7u8; 100_000];
    let publisher = {
        let ch = pub_ch.clone();
        tokio::spawn(async move {
            // 2.5 MB: trips the 2 MB alarm once; after the purge the rest fits below it.
            for _ in 0..25 {
                ch.basic_publish(
                    "".into(),
                    "hog".into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await
                .expect("publish");
            }
        })
    };
    let mut blocked = false;
    for _ in 0..500 {
        if pub_conn.status().blocked() {
            blocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(blocked, "connection.blocked never arrived");
    // Drain the queue from another connection: memory falls, publishers are released.
    let (_c2, ch2) = connect(&broker).await;
    ch2.queue_purge("hog".into(), QueuePurgeOptions::default()).await.expect("purge");
    let mut unblocked = false;
    for _ in 0..500 {
        if !pub_conn.status().blocked() {
            unblocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(unblocked, "connection.unblocked never arrived");
    tokio::time::timeout(Duration::from_secs(30), publisher).await.expect("publisher finished").expect("join");
}

#[tokio::test]
async fn auto_delete_exclusive_and_server_named_queues() {
    let broker = Broker::start();
    let (c1, ch1) = connect(&broker).await;
    let q = ch1
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("declare");
    assert!(q.name().as_str().starts_with("amq.gen-"), "{}", q.name());
    let name = q.name().as_str().to_string();
    c1.close(200, "bye".into()).await.expect("close");
    let (_c2, ch2) = connect(&broker).await;
    let gone = ch2
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert!(gone.is_err(), "exclusive queue outlived its connection");
}

#[tokio::test]
async fn configured_users_hashed_passwords_and_permissions() {
    // `limited` may configure and read only `limited-*` queues and write everywhere.
    // The hash is RabbitMQ's rabbit_password_hashing_sha256 of "secret" with salt 0x01020304.
    let config = r#"
[broker]
loopback_users = []

[[broker.users]]
name = "admin"
password = "adminpw"
tags = ["administrator"]
[broker.users.permissions."/"]
configure = ".*"
write = ".*"
read = ".*"

[[broker.users]]
name = "limited"
password_hash = "AQIDBDB9kM21iEUzN1lZ+6VReCsdNqS0sERdAQTcY6Xs3PMz"
[broker.users.permissions."/"]
configure = "^limited-"
write = ".*"
read = "^limited-"
"#;
    let broker = Broker::start_with(config, &[]);
    let url = |u: &str, p: &str| broker.amqp_url_for(u, p, "/");
    assert!(
        Connection::connect(&url("guest", "guest"), ConnectionProperties::default()).await.is_err(),
        "guest does not exist once users are configured"
    );
    assert!(Connection::connect(&url("limited", "wrong"), ConnectionProperties::default()).await.is_err());
    let conn = Connection::connect(&url("limited", "secret"), ConnectionProperties::default()).await.expect("login");
    let ch = conn.create_channel().await.expect("channel");
    declare(&ch, "limited-q", FieldTable::default()).await;
    let err = ch
        .queue_declare("other-q".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect_err("configure refused");
    assert!(
        err.to_string()
            .contains("ACCESS_REFUSED - configure access to queue 'other-q' in vhost '/' refused for user 'limited'"),
        "{err}"
    );
    let admin = Connection::connect(&url("admin", "adminpw"), ConnectionProperties::default()).await.expect("admin");
    let ach = admin.create_channel().await.expect("channel");
    declare(&ach, "admin-q", FieldTable::default()).await;
    let ch = conn.create_channel().await.expect("channel");
    let err = ch.basic_get("admin-q".into(), BasicGetOptions::default()).await.expect_err("read refused");
    assert!(err.to_string().contains("read access to queue 'admin-q'"), "{err}");
}

#[tokio::test]
async fn disk_alarm_blocks_publishers() {
    // A limit no disk can meet: the disk alarm is on from the start.
    let broker = Broker::start_with("[broker]\ndisk_free_limit = 1000000000000000000\n", &[]);
    let (conn, ch) = connect(&broker).await;
    declare(&ch, "d", FieldTable::default()).await;
    ch.basic_publish("".into(), "d".into(), BasicPublishOptions::default(), b"x", BasicProperties::default())
        .await
        .expect("publish");
    let mut blocked = false;
    for _ in 0..500 {
        if conn.status().blocked() {
            blocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(blocked, "a publishing connection is blocked while the disk alarm is on");
    assert!(broker.logs().contains("disk alarm set"), "the log says why");
}

#[tokio::test]
async fn memory_freed_by_a_deleted_queue_goes_back_to_the_system() {
    // Bodies stay in memory (no paging), so the queue's 192 MiB are charged and resident.
    let broker = Broker::start_with("[broker]\nqueue_resident_bytes = 1073741824\n", &[]);
    let (conn, ch) = connect(&broker).await;
    declare(&ch, "big", FieldTable::default()).await;
    declare(&ch, "small", FieldTable::default()).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let body = vec![7u8; 16 * 1024];
    for i in 0..12_288u32 {
        let confirm = ch
            .basic_publish("".into(), "big".into(), BasicPublishOptions::default(), &body, BasicProperties::default())
            .await
            .expect("publish");
        // A few small messages that outlive the big ones, spread through the heap.
        if i % 64 == 0 {
            ch.basic_publish(
                "".into(),
                "small".into(),
                BasicPublishOptions::default(),
                b"s",
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        }
        if i % 1024 == 1023 {
            confirm.await.expect("confirm");
        }
    }
    ch.wait_for_confirms().await.expect("confirms");
    let peak = broker.rss_kib();
    assert!(peak > 192 * 1024, "the queue's bodies are resident: {peak} KiB");
    ch.queue_delete("big".into(), QueueDeleteOptions::default()).await.expect("queue.delete");
    // The reclaim task samples every 2 s and trims at most every 10 s.
    let mut now = peak;
    for _ in 0..300 {
        now = broker.rss_kib();
        if now < peak / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(now < peak / 2, "resident set after the delete: {now} KiB (peak {peak} KiB)");
    let _ = conn.close(200, "bye".into()).await;
}
