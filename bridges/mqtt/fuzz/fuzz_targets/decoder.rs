//! Feed arbitrary bytes, split into two reads at a fuzzer-chosen point, through the
//! MQTT decoder as a connection does; every packet it returns must re-encode to bytes
//! that decode to the same packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_mqtt::codec::{Packet, Protocol, decode};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let protocol = match data[0] % 4 {
        0 => None,
        1 => Some(Protocol::V31),
        2 => Some(Protocol::V311),
        _ => Some(Protocol::V5),
    };
    let max = 1usize << (data[1] % 24 + 2);
    let rest = &data[2..];
    let cut = if rest.is_empty() { 0 } else { usize::from(data[1]) % rest.len() };
    let mut buf = BytesMut::from(&rest[..cut]);
    let mut packets = Vec::new();
    for chunk in [&rest[cut..], &[][..]] {
        loop {
            let before = buf.len();
            match decode(&mut buf, protocol, max) {
                Ok(Some(p)) => packets.push(p),
                Ok(None) => {
                    assert_eq!(buf.len(), before, "consumed bytes without a packet");
                    break;
                }
                Err(_) => return,
            }
        }
        buf.extend_from_slice(chunk);
    }
    for p in packets {
        let wire = match &p {
            Packet::Connect(c) => c.protocol,
            _ => protocol.unwrap_or(Protocol::V5),
        };
        let mut out = BytesMut::new();
        p.encode(wire, &mut out);
        let again = decode(&mut out, if matches!(p, Packet::Connect(_)) { None } else { Some(wire) }, usize::MAX);
        assert_eq!(again, Ok(Some(p)));
    }
});
