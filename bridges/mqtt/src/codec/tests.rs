//! Codec tests: golden bytes from the specs, bounds, and proptest round trips.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn dec(bytes: &[u8], protocol: Option<Protocol>) -> DResult<Option<Packet>> {
    let mut b = BytesMut::from(bytes);
    decode(&mut b, protocol, 1 << 20)
}

fn enc(p: &Packet, protocol: Protocol) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(protocol, &mut out);
    out.to_vec()
}

#[test]
fn connect_311_golden() {
    // MQTT 3.1.1 CONNECT, clean session, keep alive 60, client id "abc", user "u", password "p".
    let bytes = b"\x10\x15\x00\x04MQTT\x04\xc2\x00\x3c\x00\x03abc\x00\x01u\x00\x01p";
    let Ok(Some(Packet::Connect(c))) = dec(bytes, None) else { panic!("not a connect") };
    assert_eq!(c.protocol, Protocol::V311);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 60);
    assert_eq!(c.client_id, "abc");
    assert_eq!(c.username.as_deref(), Some("u"));
    assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
    assert_eq!(enc(&Packet::Connect(c), Protocol::V311), bytes.to_vec());
}

#[test]
fn connect_31_and_5_are_recognised() {
    let v31 = b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01x";
    let Ok(Some(Packet::Connect(c))) = dec(v31, None) else { panic!("3.1") };
    assert_eq!(c.protocol, Protocol::V31);
    // MQTT 5 with Session Expiry Interval 10 and Receive Maximum 20.
    let v5 = b"\x10\x16\x00\x04MQTT\x05\x02\x00\x3c\x08\x11\x00\x00\x00\x0a\x21\x00\x14\x00\x01x";
    let Ok(Some(Packet::Connect(c))) = dec(v5, None) else { panic!("5") };
    assert_eq!(c.protocol, Protocol::V5);
    assert_eq!(c.properties.session_expiry_interval, Some(10));
    assert_eq!(c.properties.receive_maximum, Some(20));
}

#[test]
fn bad_connects_are_refused() {
    assert_eq!(
        dec(b"\x10\x0c\x00\x04MQTT\x06\x02\x00\x3c\x00\x00", None),
        Err(DecodeError::UnsupportedProtocol { level: 6 })
    );
    assert_eq!(
        dec(b"\x10\x0c\x00\x04MQTX\x04\x02\x00\x3c\x00\x00", None),
        Err(DecodeError::UnsupportedProtocol { level: 0 })
    );
    // Reserved flag.
    assert!(matches!(dec(b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00", None), Err(DecodeError::Malformed(_))));
    // Will QoS without will flag.
    assert!(matches!(dec(b"\x10\x0c\x00\x04MQTT\x04\x0a\x00\x3c\x00\x00", None), Err(DecodeError::Malformed(_))));
    // Anything but CONNECT first.
    assert!(matches!(dec(b"\xc0\x00", None), Err(DecodeError::Protocol(_))));
}

#[test]
fn publish_flags_and_qos3() {
    let p = b"\x32\x09\x00\x03a/b\x00\x07hi";
    let Ok(Some(Packet::Publish(p))) = dec(p, Some(Protocol::V311)) else { panic!("publish") };
    assert_eq!((p.qos, p.packet_id, p.topic.as_str(), &p.payload[..]), (QoS::AtLeastOnce, Some(7), "a/b", &b"hi"[..]));
    assert!(matches!(dec(b"\x36\x09\x00\x03a/b\x00\x07hi", Some(Protocol::V311)), Err(DecodeError::Malformed(_))));
    assert!(matches!(dec(b"\x38\x05\x00\x03a/b", Some(Protocol::V311)), Err(DecodeError::Malformed(_))));
    assert!(matches!(dec(b"\x30\x05\x00\x03a\xffb", Some(Protocol::V311)), Err(DecodeError::Malformed(_))));
    assert!(matches!(dec(b"\x30\x05\x00\x03a\x00b", Some(Protocol::V311)), Err(DecodeError::Malformed(_))));
}

#[test]
fn remaining_length_is_bounded_before_buffering() {
    // Five continuation bytes: malformed.
    assert_eq!(dec(b"\x30\xff\xff\xff\xff\x01", Some(Protocol::V311)), Err(DecodeError::MalformedRemainingLength));
    // A 200 MB packet is refused from its header alone.
    let mut b = BytesMut::from(&b"\x30\xff\xff\xff\x7f"[..]);
    assert!(matches!(decode(&mut b, Some(Protocol::V311), 1024), Err(DecodeError::PacketTooLarge { .. })));
    // Incomplete is `None`, not an error, and consumes nothing.
    let mut b = BytesMut::from(&b"\x30\x0a\x00\x03a/b"[..]);
    assert_eq!(decode(&mut b, Some(Protocol::V311), 1024), Ok(None));
    assert_eq!(b.len(), 7);
}

#[test]
fn fixed_header_flags_are_checked() {
    assert!(matches!(dec(b"\x60\x02\x00\x01", Some(Protocol::V311)), Err(DecodeError::Malformed(_))));
    assert!(matches!(dec(b"\x62\x02\x00\x01", Some(Protocol::V311)), Ok(Some(Packet::PubRel(_)))));
    assert!(matches!(dec(b"\x80\x06\x00\x01\x00\x01a\x00", Some(Protocol::V311)), Err(DecodeError::Malformed(_))));
    assert!(matches!(dec(b"\x00\x00", Some(Protocol::V311)), Err(DecodeError::Malformed(_))));
    assert!(matches!(dec(b"\xf0\x00", Some(Protocol::V311)), Err(DecodeError::Malformed(_))));
    assert!(matches!(dec(b"\xf0\x00", Some(Protocol::V5)), Ok(Some(Packet::Auth(_)))));
}

#[test]
fn properties_are_validated() {
    // PUBLISH with a duplicated Content Type: protocol error.
    let p = b"\x30\x0c\x00\x01a\x08\x03\x00\x01x\x03\x00\x01y";
    assert!(matches!(dec(&p[..], Some(Protocol::V5)), Err(DecodeError::Protocol(_))));
    // PUBLISH with Session Expiry Interval (not allowed there): protocol error.
    let p = b"\x30\x09\x00\x01a\x05\x11\x00\x00\x00\x01";
    assert!(matches!(dec(&p[..], Some(Protocol::V5)), Err(DecodeError::Protocol(_))));
    // Property length beyond the packet: malformed.
    let p = b"\x30\x05\x00\x01a\x09\x01";
    assert!(matches!(dec(&p[..], Some(Protocol::V5)), Err(DecodeError::Malformed(_))));
    // Two user properties with the same name are kept in order.
    let p = b"\x30\x12\x00\x01a\x0e\x26\x00\x01k\x00\x01a\x26\x00\x01k\x00\x01b";
    let Ok(Some(Packet::Publish(p))) = dec(&p[..], Some(Protocol::V5)) else { panic!("publish") };
    assert_eq!(p.properties.user_properties, vec![("k".into(), "a".into()), ("k".into(), "b".into())]);
}

#[test]
fn subscribe_options() {
    let s = b"\x82\x09\x00\x01\x00\x00\x03a/+\x2e";
    let Ok(Some(Packet::Subscribe(s))) = dec(s, Some(Protocol::V5)) else { panic!("subscribe") };
    let o = s.filters[0].1;
    assert_eq!((o.qos, o.no_local, o.retain_as_published, o.retain_handling), (QoS::ExactlyOnce, true, true, 2));
    // The same options byte is malformed in 3.1.1 (reserved bits).
    assert!(matches!(dec(b"\x82\x08\x00\x01\x00\x03a/+\x2e", Some(Protocol::V311)), Err(DecodeError::Malformed(_))));
    assert!(matches!(dec(b"\x82\x02\x00\x01", Some(Protocol::V311)), Err(DecodeError::Protocol(_))));
    assert!(matches!(dec(b"\x82\x08\x00\x01\x00\x03a/+\x03", Some(Protocol::V311)), Err(DecodeError::Malformed(_))));
}

#[test]
fn acks_encode_short_forms() {
    assert_eq!(enc(&Packet::PubAck(Ack::ok(5)), Protocol::V5), b"\x40\x02\x00\x05");
    let a = Ack { packet_id: 5, reason: 0x10, properties: Properties::default() };
    assert_eq!(enc(&Packet::PubAck(a), Protocol::V5), b"\x40\x03\x00\x05\x10");
    assert_eq!(enc(&Packet::Disconnect(Reasoned::default()), Protocol::V5), b"\xe0\x00");
    let d = Reasoned { reason: 0x8e, properties: Properties::default() };
    assert_eq!(enc(&Packet::Disconnect(d.clone()), Protocol::V5), b"\xe0\x01\x8e");
    assert_eq!(enc(&Packet::Disconnect(d), Protocol::V311), b"\xe0\x00");
    let c = ConnAck { session_present: true, code: 0, properties: Properties::default() };
    assert_eq!(enc(&Packet::ConnAck(c.clone()), Protocol::V311), b"\x20\x02\x01\x00");
    assert_eq!(enc(&Packet::ConnAck(c), Protocol::V5), b"\x20\x03\x01\x00\x00");
}

// ---------------------------------------------------------------------------------------------
// Property-based round trips.

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/ é._-]{0,12}"
}

fn bytes_s() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

fn publish_props() -> impl Strategy<Value = Properties> {
    (
        proptest::option::of(0u8..2),
        proptest::option::of(any::<u32>()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(bytes_s()),
        proptest::collection::vec(1u32..268_435_455, 0..3),
        proptest::option::of(1u16..100),
        proptest::collection::vec((text(), text()), 0..3),
    )
        .prop_map(|(pfi, exp, ct, rt, cd, ids, alias, up)| Properties {
            payload_format_indicator: pfi,
            message_expiry_interval: exp,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            subscription_identifiers: ids,
            topic_alias: alias,
            user_properties: up,
            ..Properties::default()
        })
}

fn publish(v5: bool) -> impl Strategy<Value = Packet> {
    (any::<bool>(), qos(), any::<bool>(), "[a-z/]{1,10}", 1u16.., publish_props(), bytes_s()).prop_map(
        move |(dup, qos, retain, topic, id, props, payload)| {
            Packet::Publish(Box::new(Publish {
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic,
                packet_id: (qos != QoS::AtMostOnce).then_some(id),
                properties: if v5 { props } else { Properties::default() },
                payload,
            }))
        },
    )
}

fn ack(v5: bool) -> impl Strategy<Value = Ack> {
    (1u16.., any::<u8>(), proptest::option::of(text())).prop_map(move |(id, reason, rs)| {
        if v5 {
            Ack { packet_id: id, reason, properties: Properties { reason_string: rs, ..Properties::default() } }
        } else {
            Ack::ok(id)
        }
    })
}

fn sub_options(v5: bool) -> impl Strategy<Value = SubOptions> {
    (qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(qos, nl, rap, rh)| {
        if v5 {
            SubOptions { qos, no_local: nl, retain_as_published: rap, retain_handling: rh }
        } else {
            SubOptions { qos, ..SubOptions::default() }
        }
    })
}

fn packet(v5: bool) -> impl Strategy<Value = Packet> {
    prop_oneof![
        publish(v5),
        ack(v5).prop_map(Packet::PubAck),
        ack(v5).prop_map(Packet::PubRec),
        ack(v5).prop_map(Packet::PubRel),
        ack(v5).prop_map(Packet::PubComp),
        (1u16.., proptest::collection::vec(("[a-z/+#]{1,8}", sub_options(v5)), 1..4), proptest::option::of(1u32..1000))
            .prop_map(move |(id, filters, sid)| Packet::Subscribe(Subscribe {
                packet_id: id,
                properties: Properties {
                    subscription_identifiers: if v5 { sid.into_iter().collect() } else { Vec::new() },
                    ..Properties::default()
                },
                filters,
            })),
        (1u16.., proptest::collection::vec("[a-z/+#]{1,8}", 1..4)).prop_map(|(id, filters)| {
            Packet::Unsubscribe(Unsubscribe { packet_id: id, properties: Properties::default(), filters })
        }),
        (1u16.., proptest::collection::vec(any::<u8>(), 1..4)).prop_map(|(id, codes)| Packet::SubAck(SubAck {
            packet_id: id,
            properties: Properties::default(),
            codes
        })),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        (any::<u8>(), proptest::option::of(any::<u32>())).prop_map(move |(reason, se)| {
            Packet::Disconnect(if v5 {
                Reasoned { reason, properties: Properties { session_expiry_interval: se, ..Properties::default() } }
            } else {
                Reasoned::default()
            })
        }),
    ]
}

fn connect() -> impl Strategy<Value = Packet> {
    (
        prop_oneof![Just(Protocol::V31), Just(Protocol::V311), Just(Protocol::V5)],
        any::<bool>(),
        any::<u16>(),
        text(),
        proptest::option::of((text(), bytes_s(), qos(), any::<bool>())),
        proptest::option::of((text(), bytes_s())),
        proptest::option::of(1u16..),
    )
        .prop_map(|(protocol, clean, ka, id, will, creds, rm)| {
            let v5 = protocol.is_v5();
            Packet::Connect(Box::new(Connect {
                protocol,
                clean_start: clean,
                keep_alive: ka,
                client_id: id,
                will: will.map(|(topic, payload, qos, retain)| Will {
                    topic,
                    payload,
                    qos,
                    retain,
                    properties: Properties::default(),
                }),
                username: creds.as_ref().map(|c| c.0.clone()),
                password: creds.map(|c| c.1),
                properties: Properties { receive_maximum: rm.filter(|_| v5), ..Properties::default() },
            }))
        })
}

proptest! {
    #[test]
    fn v311_packets_round_trip(p in packet(false)) {
        let bytes = enc(&p, Protocol::V311);
        let mut b = BytesMut::from(&bytes[..]);
        prop_assert_eq!(decode(&mut b, Some(Protocol::V311), usize::MAX), Ok(Some(p)));
        prop_assert!(b.is_empty());
    }

    #[test]
    fn v5_packets_round_trip(p in packet(true)) {
        let bytes = enc(&p, Protocol::V5);
        let mut b = BytesMut::from(&bytes[..]);
        prop_assert_eq!(decode(&mut b, Some(Protocol::V5), usize::MAX), Ok(Some(p)));
        prop_assert!(b.is_empty());
    }

    #[test]
    fn connects_round_trip(p in connect()) {
        let Packet::Connect(c) = &p else { unreachable!() };
        let bytes = enc(&p, c.protocol);
        let mut b = BytesMut::from(&bytes[..]);
        prop_assert_eq!(decode(&mut b, None, usize::MAX), Ok(Some(p)));
    }

    #[test]
    fn a_stream_split_anywhere_decodes_to_the_same_packets(ps in proptest::collection::vec(packet(true), 1..6), cut in any::<usize>()) {
        let mut all = BytesMut::new();
        for p in &ps {
            p.encode(Protocol::V5, &mut all);
        }
        let cut = cut % (all.len() + 1);
        let mut buf = BytesMut::from(&all[..cut]);
        let mut got = Vec::new();
        while let Some(p) = decode(&mut buf, Some(Protocol::V5), usize::MAX).expect("valid") {
            got.push(p);
        }
        buf.extend_from_slice(&all[cut..]);
        while let Some(p) = decode(&mut buf, Some(Protocol::V5), usize::MAX).expect("valid") {
            got.push(p);
        }
        prop_assert_eq!(got, ps);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), v in 0u8..4) {
        let protocol = match v { 0 => None, 1 => Some(Protocol::V31), 2 => Some(Protocol::V311), _ => Some(Protocol::V5) };
        let mut b = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode(&mut b, protocol, 1024) {}
    }

    #[test]
    fn mutated_packets_never_panic(p in packet(true), pos in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = enc(&p, Protocol::V5);
        let i = pos % bytes.len();
        bytes[i] = byte;
        let mut b = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode(&mut b, Some(Protocol::V5), 1 << 16) {}
    }
}
