//! MQTT through the real binary over raw sockets: every QoS flow, sessions, takeover,
//! wills, retained messages, shared subscriptions, MQTT 5 properties, restarts, and
//! bad input (each gets the spec's reason code or disconnect, and other clients carry on).
//!
//! Packets are built with `switchyard_mqtt::codec` for brevity; bad input is written as
//! literal bytes. Independent clients (paho-mqtt, mosquitto, mqtt.js) are in
//! `mqtt_clients.rs` and `stock_clients.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use switchyard_mqtt::codec::{
    Ack, Connect, Packet, Properties, Protocol, Publish, QoS, Reasoned, SubOptions, Subscribe, Unsubscribe, Will,
    decode,
};
use switchyard_tests::Broker;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    protocol: Protocol,
    next_id: u16,
    /// PUBLISHes that arrived while waiting for something else.
    stash: std::collections::VecDeque<Publish>,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32
}

impl Client {
    fn open(broker: &Broker, protocol: Protocol) -> Client {
        let stream = TcpStream::connect_timeout(&broker.mqtt, IO_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client { stream, buf: BytesMut::new(), protocol, next_id: 1, stash: Default::default() }
    }

    fn connect_packet(protocol: Protocol, id: &str, clean: bool) -> Connect {
        Connect {
            protocol,
            clean_start: clean,
            keep_alive: 60,
            client_id: id.into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    /// Connect and return the CONNACK (session present, code).
    fn connect_with(broker: &Broker, c: Connect) -> (Client, bool, u8, Properties) {
        let mut cl = Client::open(broker, c.protocol);
        cl.send(&Packet::Connect(Box::new(c)));
        match cl.recv() {
            Packet::ConnAck(a) => (cl, a.session_present, a.code, a.properties),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    fn connect(broker: &Broker, protocol: Protocol, id: &str, clean: bool) -> (Client, bool) {
        let (c, present, code, _) = Client::connect_with(broker, Client::connect_packet(protocol, id, clean));
        assert_eq!(code, 0, "CONNACK code");
        (c, present)
    }

    fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        p.encode(self.protocol, &mut out);
        self.stream.write_all(&out).expect("write");
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The next packet, or `None` if the server closed the connection. PUBREL is answered
    /// with PUBCOMP here, so QoS 2 deliveries may interleave with anything.
    fn try_recv(&mut self) -> Option<Packet> {
        loop {
            let proto = Some(self.protocol);
            if let Some(p) = decode(&mut self.buf, proto, usize::MAX).expect("server sent a valid packet") {
                if let Packet::PubRel(a) = &p {
                    self.send(&Packet::PubComp(Ack::ok(a.packet_id)));
                    continue;
                }
                return Some(p);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn recv(&mut self) -> Packet {
        self.try_recv().expect("connection closed")
    }

    /// The next packet that is not a PUBLISH (those are stashed for `expect_publish`).
    fn recv_control(&mut self) -> Packet {
        loop {
            match self.recv() {
                Packet::Publish(p) => self.stash.push_back(*p),
                other => return other,
            }
        }
    }

    /// The next PUBLISH, not acknowledged.
    fn recv_publish(&mut self) -> Publish {
        if let Some(p) = self.stash.pop_front() {
            return p;
        }
        match self.recv() {
            Packet::Publish(p) => *p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    fn publish_packet(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) -> (Publish, Option<u16>) {
        let id = (qos != QoS::AtMostOnce).then(|| {
            let id = self.next_id;
            self.next_id += 1;
            id
        });
        let p = Publish {
            dup: false,
            qos,
            retain,
            topic: topic.into(),
            packet_id: id,
            properties: Properties::default(),
            payload: Bytes::copy_from_slice(payload),
        };
        (p, id)
    }

    /// Publish and complete the QoS flow.
    fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let (p, id) = self.publish_packet(topic, payload, qos, retain);
        self.publish_full(p, id);
    }

    fn publish_full(&mut self, p: Publish, id: Option<u16>) -> u8 {
        let qos = p.qos;
        self.send(&Packet::Publish(Box::new(p)));
        match qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => match self.recv_control() {
                Packet::PubAck(a) if Some(a.packet_id) == id => a.reason,
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                let code = match self.recv_control() {
                    Packet::PubRec(a) if Some(a.packet_id) == id => a.reason,
                    other => panic!("expected PUBREC, got {other:?}"),
                };
                self.send(&Packet::PubRel(Ack::ok(id.unwrap_or(1))));
                match self.recv_control() {
                    Packet::PubComp(a) if Some(a.packet_id) == id => {}
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
                code
            }
        }
    }

    fn subscribe_opts(&mut self, filters: &[(&str, SubOptions)], id: Option<u32>) -> Vec<u8> {
        let packet_id = self.next_id;
        self.next_id += 1;
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            properties: Properties { subscription_identifiers: id.into_iter().collect(), ..Properties::default() },
            filters: filters.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
        }));
        match self.recv_control() {
            Packet::SubAck(s) if s.packet_id == packet_id => s.codes,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    fn subscribe(&mut self, filter: &str, qos: QoS) -> u8 {
        self.subscribe_opts(&[(filter, SubOptions { qos, ..SubOptions::default() })], None)[0]
    }

    /// Receive a PUBLISH and acknowledge it as its QoS asks.
    fn expect_publish(&mut self) -> Publish {
        let p = self.recv_publish();
        self.ack(&p);
        p
    }

    fn ack(&mut self, p: &Publish) {
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.send(&Packet::PubAck(Ack::ok(id))),
            (QoS::ExactlyOnce, Some(id)) => self.send(&Packet::PubRec(Ack::ok(id))),
            _ => {}
        }
    }

    /// A round trip proving the connection is alive and everything before was handled.
    fn ping(&mut self) {
        self.send(&Packet::PingReq);
        while self.recv_control() != Packet::PingResp {}
        if let Some(p) = self.stash.front() {
            panic!("unexpected PUBLISH on {}", p.topic);
        }
    }

    /// Expect the server to close the connection, returning a DISCONNECT reason if it sent one.
    fn expect_closed(&mut self) -> Option<u8> {
        let mut reason = None;
        while let Some(p) = self.try_recv() {
            if let Packet::Disconnect(d) = p {
                reason = Some(d.reason);
            }
        }
        reason
    }

    fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Reasoned::default()));
    }
}

#[test]
fn every_qos_flow_with_wildcards_in_311_and_5() {
    let broker = Broker::start();
    for protocol in [Protocol::V311, Protocol::V5, Protocol::V31] {
        let base = unique("qos");
        let (mut sub, _) = Client::connect(&broker, protocol, &unique("sub"), true);
        assert_eq!(sub.subscribe(&format!("{base}/+/x"), QoS::ExactlyOnce), 2);
        assert_eq!(sub.subscribe(&format!("{base}/all/#"), QoS::AtLeastOnce), 1);
        let (mut publ, _) = Client::connect(&broker, protocol, &unique("pub"), true);
        publ.publish(&format!("{base}/a/x"), b"q0", QoS::AtMostOnce, false);
        publ.publish(&format!("{base}/b/x"), b"q1", QoS::AtLeastOnce, false);
        publ.publish(&format!("{base}/c/x"), b"q2", QoS::ExactlyOnce, false);
        publ.publish(&format!("{base}/all"), b"parent", QoS::ExactlyOnce, false);
        publ.publish(&format!("{base}/a/y"), b"nomatch", QoS::AtLeastOnce, false);
        let got: Vec<(String, QoS, Vec<u8>)> =
            (0..4).map(|_| sub.expect_publish()).map(|p| (p.topic, p.qos, p.payload.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (format!("{base}/a/x"), QoS::AtMostOnce, b"q0".to_vec()),
                (format!("{base}/b/x"), QoS::AtLeastOnce, b"q1".to_vec()),
                (format!("{base}/c/x"), QoS::ExactlyOnce, b"q2".to_vec()),
                // `#` matches the parent level; the subscription's QoS 1 caps the QoS 2 publish.
                (format!("{base}/all"), QoS::AtLeastOnce, b"parent".to_vec()),
            ],
            "{protocol:?}"
        );
        sub.ping();
        sub.disconnect();
        publ.disconnect();
    }
}

#[test]
fn qos2_inbound_is_exactly_once_until_pubrel() {
    let broker = Broker::start();
    let topic = unique("eo");
    let (mut sub, _) = Client::connect(&broker, Protocol::V311, &unique("s"), true);
    sub.subscribe(&topic, QoS::ExactlyOnce);
    let (mut publ, _) = Client::connect(&broker, Protocol::V311, &unique("p"), true);
    let (p, id) = publ.publish_packet(&topic, b"once", QoS::ExactlyOnce, false);
    let mut again = p.clone();
    again.dup = true;
    publ.send(&Packet::Publish(Box::new(p)));
    assert!(matches!(publ.recv(), Packet::PubRec(a) if Some(a.packet_id) == id));
    // The client did not see our PUBREC and resends with DUP: not routed again.
    publ.send(&Packet::Publish(Box::new(again)));
    assert!(matches!(publ.recv(), Packet::PubRec(a) if Some(a.packet_id) == id));
    publ.send(&Packet::PubRel(Ack::ok(id.unwrap_or(1))));
    assert!(matches!(publ.recv(), Packet::PubComp(_)));
    // After PUBREL the id is free: the same id is a new message.
    publ.publish_full(
        Publish { packet_id: id, payload: Bytes::from_static(b"twice"), ..publish_of(&topic, QoS::ExactlyOnce) },
        id,
    );
    assert_eq!(&sub.expect_publish().payload[..], b"once");
    assert_eq!(&sub.expect_publish().payload[..], b"twice");
    sub.ping();
}

fn publish_of(topic: &str, qos: QoS) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: None,
        properties: Properties::default(),
        payload: Bytes::new(),
    }
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let broker = Broker::start();
    let (mut all, _) = Client::connect(&broker, Protocol::V311, &unique("w"), true);
    all.subscribe("#", QoS::AtMostOnce);
    all.subscribe("+/dollar", QoS::AtMostOnce);
    let (mut sys, _) = Client::connect(&broker, Protocol::V311, &unique("d"), true);
    sys.subscribe("$SYS/#", QoS::AtMostOnce);
    let (mut publ, _) = Client::connect(&broker, Protocol::V311, &unique("p"), true);
    publ.publish("$SYS/dollar", b"x", QoS::AtLeastOnce, false);
    assert_eq!(sys.expect_publish().topic, "$SYS/dollar");
    all.ping();
}

#[test]
fn dots_in_topics_survive_and_map_to_slashes_for_amqp() {
    let broker = Broker::start();
    let (mut sub, _) = Client::connect(&broker, Protocol::V5, &unique("s"), true);
    sub.subscribe("spBv1.0/+/NDATA/#", QoS::AtLeastOnce);
    let (mut publ, _) = Client::connect(&broker, Protocol::V5, &unique("p"), true);
    publ.publish("spBv1.0/grp/NDATA/node.1", b"x", QoS::AtLeastOnce, false);
    assert_eq!(sub.expect_publish().topic, "spBv1.0/grp/NDATA/node.1");
    // `+` matches a level with dots in it.
    sub.subscribe("a/+", QoS::AtLeastOnce);
    publ.publish("a/b.c", b"y", QoS::AtLeastOnce, false);
    assert_eq!(sub.expect_publish().topic, "a/b.c");
    // ...and not two MQTT levels.
    publ.publish("a/b/c", b"z", QoS::AtLeastOnce, false);
    sub.ping();
}

#[test]
fn persistent_sessions_queue_offline_messages_and_resend_unacked_with_dup() {
    let broker = Broker::start();
    for protocol in [Protocol::V311, Protocol::V5] {
        let id = unique("persist");
        let topic = unique("t");
        let connect = |clean: bool| {
            let mut c = Client::connect_packet(protocol, &id, clean);
            if protocol == Protocol::V5 {
                c.properties.session_expiry_interval = Some(600);
            }
            Client::connect_with(&broker, c)
        };
        let (mut s, present, _, _) = connect(protocol == Protocol::V5);
        assert!(!present);
        s.subscribe(&topic, QoS::AtLeastOnce);
        drop(s);
        let (mut publ, _) = Client::connect(&broker, protocol, &unique("p"), true);
        for i in 0..3u8 {
            publ.publish(&topic, &[i], QoS::AtLeastOnce, false);
        }
        publ.ping();
        let (mut s, present, _, _) = connect(false);
        assert!(present, "{protocol:?}: session present");
        // Take the first without acknowledging it, then drop the connection.
        let first = s.recv_publish();
        assert_eq!(&first.payload[..], &[0]);
        // (DUP may already be set here: the first connection may still have been
        // consuming when the messages were published, and gave them back.)
        drop(s);
        let (mut s, present, _, _) = connect(false);
        assert!(present);
        let again = s.expect_publish();
        assert_eq!(&again.payload[..], &[0]);
        assert!(again.dup, "resent with DUP");
        assert_eq!(again.packet_id, first.packet_id, "resent with the same packet id");
        assert_eq!(&s.expect_publish().payload[..], &[1]);
        assert_eq!(&s.expect_publish().payload[..], &[2]);
        s.ping();
        s.disconnect();
        // Clean start discards the session.
        let (mut s, present, _, _) = connect(true);
        assert!(!present);
        publ.publish(&topic, b"gone", QoS::AtLeastOnce, false);
        s.ping();
    }
}

#[test]
fn persistent_sessions_and_retained_messages_survive_a_restart() {
    let mut broker = Broker::start();
    let id = unique("durable");
    let topic = unique("t");
    let (mut s, _) = Client::connect(&broker, Protocol::V311, &id, false);
    s.subscribe(&topic, QoS::AtLeastOnce);
    s.disconnect();
    let (mut publ, _) = Client::connect(&broker, Protocol::V311, &unique("p"), true);
    publ.publish(&topic, b"kept", QoS::AtLeastOnce, false);
    publ.publish(&format!("{topic}/r"), b"retained", QoS::AtLeastOnce, true);
    publ.publish(&format!("{topic}/cleared"), b"x", QoS::AtLeastOnce, true);
    publ.publish(&format!("{topic}/cleared"), b"", QoS::AtLeastOnce, true);
    broker.kill();
    broker.restart();
    let (mut s, present) = Client::connect(&broker, Protocol::V311, &id, false);
    assert!(present);
    let p = s.expect_publish();
    assert_eq!((p.topic.as_str(), &p.payload[..], p.qos), (topic.as_str(), &b"kept"[..], QoS::AtLeastOnce));
    let (mut r, _) = Client::connect(&broker, Protocol::V311, &unique("r"), true);
    r.subscribe(&format!("{topic}/#"), QoS::AtLeastOnce);
    let p = r.expect_publish();
    assert_eq!((p.topic, &p.payload[..], p.retain), (format!("{topic}/r"), &b"retained"[..], true));
    r.ping();
}

#[test]
fn offline_sessions_are_bounded() {
    let broker = Broker::start_with("[mqtt]\nsession_max_messages = 5\n", &[]);
    let id = unique("bounded");
    let topic = unique("t");
    let (mut s, _) = Client::connect(&broker, Protocol::V311, &id, false);
    s.subscribe(&topic, QoS::AtLeastOnce);
    s.disconnect();
    let (mut publ, _) = Client::connect(&broker, Protocol::V311, &unique("p"), true);
    for i in 0..20u8 {
        publ.publish(&topic, &[i], QoS::AtLeastOnce, false);
    }
    let (mut s, _) = Client::connect(&broker, Protocol::V311, &id, false);
    let got: Vec<u8> = (0..5).map(|_| s.expect_publish().payload[0]).collect();
    assert_eq!(got, vec![15, 16, 17, 18, 19], "the oldest were dropped");
    s.ping();
}

#[test]
fn reject_publish_overflow_answers_quota_exceeded() {
    let broker = Broker::start_with("[mqtt]\nsession_max_messages = 2\nsession_overflow = \"reject-publish\"\n", &[]);
    let topic = unique("t");
    let mut c = Client::connect_packet(Protocol::V5, &unique("full"), true);
    c.properties.session_expiry_interval = Some(60);
    let (mut s, _, _, _) = Client::connect_with(&broker, c);
    s.subscribe(&topic, QoS::AtLeastOnce);
    s.disconnect();
    let (mut publ, _) = Client::connect(&broker, Protocol::V5, &unique("p"), true);
    let codes: Vec<u8> = (0..3u8)
        .map(|i| {
            let (p, id) = publ.publish_packet(&topic, &[i], QoS::AtLeastOnce, false);
            publ.publish_full(p, id)
        })
        .collect();
    assert_eq!(codes, vec![0, 0, 0x97]);
    publ.ping();
}

#[test]
fn session_takeover_disconnects_the_first_connection() {
    let broker = Broker::start();
    let id = unique("take");
    let (mut first, _) = Client::connect(&broker, Protocol::V5, &id, true);
    first.subscribe(&unique("x"), QoS::AtLeastOnce);
    let (mut second, _) = Client::connect(&broker, Protocol::V5, &id, true);
    assert_eq!(first.expect_closed(), Some(0x8E));
    second.ping();
    let (mut third, _) = Client::connect(&broker, Protocol::V311, &id, true);
    assert_eq!(second.expect_closed(), Some(0x8E));
    third.ping();
}

#[test]
fn wills_are_published_on_abnormal_close_only() {
    let broker = Broker::start();
    let topic = unique("will");
    let (mut watcher, _) = Client::connect(&broker, Protocol::V5, &unique("w"), true);
    watcher.subscribe(&format!("{topic}/#"), QoS::AtLeastOnce);
    let with_will = |name: &str, delay: Option<u32>| {
        let mut c = Client::connect_packet(Protocol::V5, &unique(name), true);
        c.will = Some(Will {
            topic: format!("{topic}/{name}"),
            payload: Bytes::from(name.to_string()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties { will_delay_interval: delay, ..Properties::default() },
        });
        c.properties.session_expiry_interval = delay;
        Client::connect_with(&broker, c).0
    };
    let clean = with_will("clean", None);
    clean.disconnect();
    let crashed = with_will("crashed", None);
    drop(crashed);
    let p = watcher.expect_publish();
    assert_eq!(p.topic, format!("{topic}/crashed"));
    let mut asked = with_will("asked", None);
    asked.send(&Packet::Disconnect(Reasoned { reason: 0x04, properties: Properties::default() }));
    assert_eq!(watcher.expect_publish().topic, format!("{topic}/asked"));
    let started = Instant::now();
    let delayed = with_will("delayed", Some(1));
    drop(delayed);
    assert_eq!(watcher.expect_publish().topic, format!("{topic}/delayed"));
    assert!(started.elapsed() >= Duration::from_millis(900), "will delay honoured");
    watcher.ping();
}

#[test]
fn shared_subscriptions_split_messages_and_a_leaving_member_hands_its_messages_back() {
    let broker = Broker::start();
    let topic = unique("sh");
    let group = unique("g");
    let filter = format!("$share/{group}/{topic}/+");
    let (mut a, _) = Client::connect(&broker, Protocol::V5, &unique("a"), true);
    let (mut b, _) = Client::connect(&broker, Protocol::V5, &unique("b"), true);
    assert_eq!(a.subscribe(&filter, QoS::AtLeastOnce), 1);
    assert_eq!(b.subscribe(&filter, QoS::AtLeastOnce), 1);
    let (mut publ, _) = Client::connect(&broker, Protocol::V5, &unique("p"), true);
    for i in 0..10u8 {
        publ.publish(&format!("{topic}/x"), &[i], QoS::AtLeastOnce, false);
    }
    // `a` takes its half without acking, then leaves; `b` gets everything in the end.
    let mut a_got = Vec::new();
    for _ in 0..5 {
        a_got.push(a.recv_publish().payload[0]);
    }
    let mut b_got: Vec<u8> = (0..5).map(|_| b.expect_publish().payload[0]).collect();
    let mut all = a_got.clone();
    all.extend(&b_got);
    all.sort_unstable();
    assert_eq!(all, (0..10).collect::<Vec<u8>>(), "each message to one member");
    drop(a);
    b_got.extend((0..5).map(|_| b.expect_publish().payload[0]));
    b_got.sort_unstable();
    assert_eq!(b_got, (0..10).collect::<Vec<u8>>(), "a's unacked messages went to b");
    b.ping();
}

#[test]
fn mqtt5_properties_flags_and_subscription_options() {
    let broker = Broker::start();
    let topic = unique("p5");
    let id = unique("me");
    let mut c = Client::connect_packet(Protocol::V5, &id, true);
    c.properties.topic_alias_maximum = Some(2);
    let (mut me, _, _, props) = Client::connect_with(&broker, c);
    assert_eq!(props.shared_subscription_available, Some(1));
    assert!(props.maximum_packet_size.is_some());
    let no_local = SubOptions { qos: QoS::AtLeastOnce, no_local: true, ..SubOptions::default() };
    let rap = SubOptions { qos: QoS::AtLeastOnce, retain_as_published: true, ..SubOptions::default() };
    me.subscribe_opts(&[(&format!("{topic}/nl"), no_local)], Some(7));
    me.subscribe_opts(&[(&format!("{topic}/+"), rap)], Some(9));
    let (mut other, _) = Client::connect(&broker, Protocol::V5, &unique("o"), true);
    // No Local: my own publish is not sent back to me by the no-local subscription,
    // but the `+` subscription still matches.
    let mut p = publish_of(&format!("{topic}/nl"), QoS::AtLeastOnce);
    p.packet_id = Some(100);
    p.retain = true;
    p.payload = Bytes::from_static(b"mine");
    p.properties = Properties {
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"corr")),
        message_expiry_interval: Some(100),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        topic_alias: Some(1),
        ..Properties::default()
    };
    me.publish_full(p, Some(100));
    let got = me.expect_publish();
    assert_eq!(got.properties.subscription_identifiers, vec![9], "only the `+` subscription matched");
    assert!(got.retain, "retain as published");
    assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.properties.response_topic.as_deref(), Some("reply/here"));
    assert_eq!(got.properties.correlation_data.as_deref(), Some(&b"corr"[..]));
    assert!(got.properties.message_expiry_interval.is_some_and(|e| e <= 100 && e > 90));
    assert_eq!(got.properties.user_properties, vec![("k".into(), "v".into()), ("k".into(), "w".into())]);
    assert_eq!(got.properties.topic_alias, Some(1), "server assigned an outbound alias");
    // Inbound alias: topic empty, alias 1 = `<topic>/nl` set above.
    let mut p = publish_of("", QoS::AtLeastOnce);
    p.packet_id = Some(101);
    p.payload = Bytes::from_static(b"aliased");
    p.properties.topic_alias = Some(1);
    other.send(&Packet::Publish(Box::new(p)));
    // `other` never set alias 1: protocol error.
    assert_eq!(other.expect_closed(), Some(0x82));
    let (mut other, _) = Client::connect(&broker, Protocol::V5, &unique("o"), true);
    other.publish(&format!("{topic}/nl"), b"theirs", QoS::AtLeastOnce, false);
    let got = me.expect_publish();
    assert_eq!(&got.payload[..], b"theirs");
    assert_eq!(got.properties.subscription_identifiers, vec![7, 9]);
    assert!(got.topic.is_empty() && got.properties.topic_alias == Some(1), "alias reused");
    // Retain handling 2: no retained messages at subscribe.
    let rh2 = SubOptions { qos: QoS::AtLeastOnce, retain_handling: 2, ..SubOptions::default() };
    me.subscribe_opts(&[(&format!("{topic}/#"), rh2)], None);
    me.ping();
    // No subscribers: PUBACK says so.
    let (p, pid) = other.publish_packet(&unique("nobody"), b"x", QoS::AtLeastOnce, false);
    assert_eq!(other.publish_full(p, pid), 0x10);
    // Unsubscribe reports what existed.
    let uid = 77;
    me.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: uid,
        properties: Properties::default(),
        filters: vec![format!("{topic}/nl"), "never/subscribed".into()],
    }));
    match me.recv_control() {
        Packet::UnsubAck(u) => assert_eq!(u.codes, vec![0, 0x11]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn clients_get_ids_and_wrong_credentials_are_refused() {
    let broker = Broker::start();
    let (_, _, code, props) = Client::connect_with(&broker, Client::connect_packet(Protocol::V5, "", true));
    assert_eq!(code, 0);
    assert!(props.assigned_client_identifier.is_some_and(|id| !id.is_empty()));
    let (_, _, code, _) = Client::connect_with(&broker, Client::connect_packet(Protocol::V311, "", false));
    assert_eq!(code, 2, "identifier rejected");
    for (protocol, want) in [(Protocol::V311, 4), (Protocol::V5, 0x86)] {
        let mut c = Client::connect_packet(protocol, &unique("auth"), true);
        c.username = Some("guest".into());
        c.password = Some(Bytes::from_static(b"wrong"));
        let (mut cl, _, code, _) = Client::connect_with(&broker, c);
        assert_eq!(code, want);
        assert_eq!(cl.expect_closed(), None);
    }
    let mut c = Client::connect_packet(Protocol::V311, &unique("auth"), true);
    c.username = Some("/:guest".into());
    c.password = Some(Bytes::from_static(b"guest"));
    assert_eq!(Client::connect_with(&broker, c).2, 0, "vhost:user form");
}

#[test]
fn bad_input_gets_the_spec_answer_and_harms_no_one_else() {
    let broker = Broker::start_with("[mqtt]\nmax_packet_size = 4096\n", &[]);
    let (mut bystander, _) = Client::connect(&broker, Protocol::V311, &unique("by"), true);
    let topic = unique("by");
    bystander.subscribe(&topic, QoS::AtLeastOnce);

    // PUBLISH before CONNECT: closed without a CONNACK.
    let mut c = Client::open(&broker, Protocol::V311);
    c.raw(b"\x30\x05\x00\x01ahi");
    assert!(c.try_recv().is_none());
    // Unknown protocol level: CONNACK 0x01 then closed.
    let mut c = Client::open(&broker, Protocol::V311);
    c.raw(b"\x10\x0c\x00\x04MQTT\x07\x02\x00\x3c\x00\x00");
    assert!(matches!(c.try_recv(), Some(Packet::ConnAck(a)) if a.code == 1));
    assert!(c.try_recv().is_none());

    type Check = (&'static str, Protocol, &'static [u8], Option<u8>);
    let cases: &[Check] = &[
        ("oversize packet", Protocol::V5, b"\x30\xff\x7f", Some(0x95)),
        ("malformed remaining length", Protocol::V5, b"\x30\xff\xff\xff\xff\x01", Some(0x81)),
        ("wildcard topic", Protocol::V5, b"\x30\x06\x00\x03a/+\x00", Some(0x90)),
        ("wildcard topic 3.1.1", Protocol::V311, b"\x30\x05\x00\x03a/#", None),
        ("QoS 3", Protocol::V5, b"\x36\x08\x00\x03a/b\x00\x01\x00", Some(0x81)),
        ("invalid UTF-8 topic", Protocol::V5, b"\x30\x06\x00\x03a\xffb\x00", Some(0x81)),
        ("topic alias out of range", Protocol::V5, b"\x30\x09\x00\x03a/b\x03\x23\x01\x00", Some(0x94)),
        ("second CONNECT", Protocol::V5, b"\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00", Some(0x82)),
        ("reserved packet type", Protocol::V311, b"\x00\x00", None),
    ];
    for (what, protocol, bytes, want) in cases {
        let (mut c, _) = Client::connect(&broker, *protocol, &unique("bad"), true);
        c.raw(bytes);
        assert_eq!(c.expect_closed(), *want, "{what}");
    }
    // Everyone else carried on.
    let (mut publ, _) = Client::connect(&broker, Protocol::V311, &unique("p"), true);
    publ.publish(&topic, b"still here", QoS::AtLeastOnce, false);
    assert_eq!(&bystander.expect_publish().payload[..], b"still here");
}

#[test]
fn keep_alive_timeout_closes_the_connection() {
    let broker = Broker::start();
    let mut c = Client::connect_packet(Protocol::V5, &unique("ka"), true);
    c.keep_alive = 1;
    let started = Instant::now();
    let (mut cl, _, _, _) = Client::connect_with(&broker, c);
    assert_eq!(cl.expect_closed(), Some(0x8D));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn packets_within_keep_alive_keep_the_connection_open() {
    // The broker's keep-alive timer moves on only when it fires: a client that keeps pinging
    // within 1.5 keep-alive periods outlives several of them, and is closed once it stops.
    let broker = Broker::start();
    let mut c = Client::connect_packet(Protocol::V5, &unique("ka-live"), true);
    c.keep_alive = 1;
    let (mut cl, _, _, _) = Client::connect_with(&broker, c);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3500) {
        std::thread::sleep(Duration::from_millis(400));
        cl.ping();
    }
    let silent = Instant::now();
    assert_eq!(cl.expect_closed(), Some(0x8D));
    let waited = silent.elapsed();
    assert!(waited >= Duration::from_millis(1000) && waited < Duration::from_secs(5), "{waited:?}");
}
