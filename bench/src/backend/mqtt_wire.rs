//! MQTT 3.1.1 and 5 packets as the load generator's MQTT client needs them, independent of the
//! transport (TCP or WebSocket): encoders that append whole packets to an output buffer, a reader
//! that parses packets in place out of any byte stream, and the few decoders for what a broker
//! sends back (CONNACK, SUBACK, PUBLISH, acks). Only what a benchmark client uses is here: no
//! wills, no retained messages, no topic aliases, no AUTH.

use std::ops::Range;

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest packet accepted from the broker.
pub const MAX_PACKET: usize = 64 << 20;
/// Initial read buffer of a connection (grows for larger packets).
const READ_BUFFER: usize = 256 * 1024;

/// PINGREQ, whole.
pub const PINGREQ: [u8; 2] = [0xC0, 0];
/// DISCONNECT, whole (MQTT 5: reason "normal disconnection" is implied by the empty body).
pub const DISCONNECT: [u8; 2] = [0xE0, 0];

/// Packet types (the high nibble of the first byte).
pub mod kind {
    /// CONNACK.
    pub const CONNACK: u8 = 0x20;
    /// PUBLISH.
    pub const PUBLISH: u8 = 0x30;
    /// PUBACK.
    pub const PUBACK: u8 = 0x40;
    /// PUBREC.
    pub const PUBREC: u8 = 0x50;
    /// PUBREL.
    pub const PUBREL: u8 = 0x60;
    /// PUBCOMP.
    pub const PUBCOMP: u8 = 0x70;
    /// SUBACK.
    pub const SUBACK: u8 = 0x90;
    /// PINGRESP.
    pub const PINGRESP: u8 = 0xD0;
    /// DISCONNECT.
    pub const DISCONNECT: u8 = 0xE0;
}

/// Protocol version spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// What CONNECT carries.
#[derive(Debug)]
pub struct Connect<'a> {
    /// Protocol version.
    pub version: Version,
    /// Client identifier.
    pub client_id: &'a str,
    /// Keep-alive in seconds (0 = off).
    pub keep_alive: u16,
    /// User name and password.
    pub credentials: Option<(&'a str, &'a str)>,
}

/// A successful CONNACK's parameters that bind the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// MQTT 5 Receive Maximum: QoS > 0 publishes the broker takes unacknowledged.
    pub receive_maximum: Option<u16>,
    /// MQTT 5 Server Keep Alive, which replaces the client's keep-alive.
    pub server_keep_alive: Option<u16>,
}

/// Appends an MQTT string (u16 length + bytes).
pub fn put_str(out: &mut Vec<u8>, s: &str) -> anyhow::Result<()> {
    out.extend_from_slice(&u16::try_from(s.len()).context("MQTT string longer than 65535 bytes")?.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends a variable byte integer (remaining lengths, MQTT 5 property lengths).
pub fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

/// Appends a fixed header (`first` byte + remaining length) for `len` body bytes.
pub fn put_fixed_header(out: &mut Vec<u8>, first: u8, len: usize) {
    out.push(first);
    put_varint(out, len);
}

/// Appends a whole packet.
pub fn put_packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    put_fixed_header(out, first, body.len());
    out.extend_from_slice(body);
}

/// Appends a packet-id-only acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP). In MQTT 5 a
/// remaining length of 2 means reason code 0 (success) and no properties.
pub fn put_ack(out: &mut Vec<u8>, first: u8, id: u16) {
    let [hi, lo] = id.to_be_bytes();
    out.extend_from_slice(&[first, 2, hi, lo]);
}

/// Appends CONNECT (clean session / clean start, no will; MQTT 5: no properties, so the session
/// ends with the connection).
pub fn put_connect(out: &mut Vec<u8>, connect: &Connect<'_>) -> anyhow::Result<()> {
    let mut body = Vec::with_capacity(64);
    put_str(&mut body, "MQTT")?;
    body.push(match connect.version {
        Version::V311 => 4,
        Version::V5 => 5,
    });
    let mut flags = 0x02u8; // clean session / clean start
    if connect.credentials.is_some() {
        flags |= 0xC0;
    }
    body.push(flags);
    body.extend_from_slice(&connect.keep_alive.to_be_bytes());
    if connect.version == Version::V5 {
        body.push(0); // no properties
    }
    put_str(&mut body, connect.client_id)?;
    if let Some((user, pass)) = connect.credentials {
        put_str(&mut body, user)?;
        put_str(&mut body, pass)?;
    }
    put_packet(out, 0x10, &body);
    Ok(())
}

/// Appends SUBSCRIBE of one topic filter at `qos` with packet id `id`.
pub fn put_subscribe(out: &mut Vec<u8>, version: Version, id: u16, topic: &str, qos: u8) -> anyhow::Result<()> {
    let mut body = Vec::with_capacity(topic.len() + 8);
    body.extend_from_slice(&id.to_be_bytes());
    if version == Version::V5 {
        body.push(0); // no properties
    }
    put_str(&mut body, topic)?;
    body.push(qos.min(2)); // MQTT 5 subscription options: QoS only (local delivery, not retained as published)
    put_packet(out, 0x82, &body);
    Ok(())
}

/// Appends PUBLISH of `payload` to the topic given as an encoded MQTT string (`topic_field`).
/// `id` is used only for QoS > 0.
pub fn put_publish(out: &mut Vec<u8>, version: Version, topic_field: &[u8], qos: u8, id: u16, payload: &[u8]) {
    let id_len = if qos > 0 { 2 } else { 0 };
    let props_len = usize::from(version == Version::V5);
    out.reserve(topic_field.len() + id_len + props_len + payload.len() + 5);
    put_fixed_header(out, 0x30 | (qos << 1), topic_field.len() + id_len + props_len + payload.len());
    out.extend_from_slice(topic_field);
    if qos > 0 {
        out.extend_from_slice(&id.to_be_bytes());
    }
    if version == Version::V5 {
        out.push(0); // no properties
    }
    out.extend_from_slice(payload);
}

/// Reads a variable byte integer at the start of `raw`: `(value, bytes used)`, `None` if `raw`
/// ends first, an error if it is longer than four bytes.
fn varint(raw: &[u8]) -> anyhow::Result<Option<(usize, usize)>> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&b) = raw.get(i) else { return Ok(None) };
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    bail!("malformed variable byte integer from the broker")
}

fn u16_at(body: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]))
}

/// The packet id at the start of an acknowledgement's body.
pub fn ack_id(body: &[u8]) -> anyhow::Result<u16> {
    u16_at(body, 0).context("acknowledgement without a packet id")
}

/// An MQTT 5 acknowledgement's reason code (0 = success; absent means success). Always 0 in 3.1.1.
pub fn ack_reason(version: Version, body: &[u8]) -> u8 {
    if version == Version::V5 { body.get(2).copied().unwrap_or(0) } else { 0 }
}

/// Where an MQTT 5 property block starting at `at` ends (`at` points at its length).
fn skip_properties(body: &[u8], at: usize) -> anyhow::Result<usize> {
    let (len, used) = varint(body.get(at..).unwrap_or_default())?.context("truncated properties")?;
    let end = at + used + len;
    if end > body.len() {
        bail!("properties run past the end of the packet");
    }
    Ok(end)
}

/// Checks CONNACK: the broker accepted the connection; its MQTT 5 limits.
pub fn parse_connack(version: Version, body: &[u8]) -> anyhow::Result<ConnAck> {
    let code = body.get(1).copied().context("truncated CONNACK")?;
    if code != 0 {
        bail!("broker refused the MQTT connection (CONNACK return/reason code {code:#04x})");
    }
    let mut out = ConnAck::default();
    if version == Version::V5 && body.len() > 2 {
        let end = skip_properties(body, 2)?;
        let (_, used) = varint(&body[2..])?.context("truncated CONNACK properties")?;
        let mut at = 2 + used;
        while at < end {
            let id = body[at];
            at += 1;
            let size = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
                0x13 | 0x21 | 0x22 | 0x23 => 2,
                0x02 | 0x11 | 0x18 | 0x27 => 4,
                0x0B => varint(&body[at..end])?.context("truncated property")?.1,
                0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                    2 + usize::from(u16_at(&body[..end], at).context("truncated property")?)
                }
                0x26 => {
                    let k = 2 + usize::from(u16_at(&body[..end], at).context("truncated property")?);
                    k + 2 + usize::from(u16_at(&body[..end], at + k).context("truncated property")?)
                }
                other => bail!("unknown CONNACK property {other:#04x}"),
            };
            match id {
                0x21 => out.receive_maximum = u16_at(body, at),
                0x13 => out.server_keep_alive = u16_at(body, at),
                _ => {}
            }
            at += size;
        }
        if at != end {
            bail!("malformed CONNACK properties");
        }
    }
    Ok(out)
}

/// Checks SUBACK for one filter: the granted QoS, or an error if the broker refused.
pub fn parse_suback(version: Version, body: &[u8]) -> anyhow::Result<u8> {
    let at = match version {
        Version::V311 => 2,
        Version::V5 => skip_properties(body, 2)?,
    };
    match body.get(at).copied() {
        Some(granted @ 0..=2) => Ok(granted),
        Some(code) => bail!("the broker refused the subscription (SUBACK code {code:#04x})"),
        None => bail!("truncated SUBACK"),
    }
}

/// A received PUBLISH: its QoS, packet id (QoS > 0) and where its payload is in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// QoS from the fixed header.
    pub qos: u8,
    /// Packet id (0 for QoS 0).
    pub id: u16,
    /// The payload's range within the body.
    pub payload: Range<usize>,
}

/// Parses a PUBLISH body (`first` is the fixed header's first byte).
pub fn parse_publish(version: Version, first: u8, body: &[u8]) -> anyhow::Result<Publish> {
    let qos = (first >> 1) & 3;
    let topic_len = usize::from(u16_at(body, 0).context("truncated PUBLISH")?);
    let mut at = 2 + topic_len;
    let mut id = 0;
    if qos > 0 {
        id = u16_at(body, at).context("truncated PUBLISH")?;
        at += 2;
    }
    if version == Version::V5 {
        at = skip_properties(body, at)?;
    }
    if at > body.len() {
        bail!("truncated PUBLISH");
    }
    Ok(Publish { qos, id, payload: at..body.len() })
}

/// Parses MQTT packets out of a byte stream, in place.
pub struct PacketReader<R> {
    rd: R,
    /// Raw bytes; `buf[start..end]` is not parsed yet.
    pub buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    /// A reader over `rd`.
    pub fn new(rd: R) -> Self {
        Self { rd, buf: vec![0; READ_BUFFER], start: 0, end: 0 }
    }

    /// The stream, once the reader is no longer needed (unparsed bytes are dropped).
    pub fn into_inner(self) -> R {
        self.rd
    }

    /// The next packet: its first byte and the range of its body in `buf` (valid until the
    /// next call). Cancel-safe.
    pub async fn next(&mut self) -> anyhow::Result<(u8, Range<usize>)> {
        loop {
            if let Some(found) = self.try_packet()? {
                return Ok(found);
            }
            self.fill().await?;
        }
    }

    /// The next packet if it is already buffered in full.
    pub fn try_packet(&mut self) -> anyhow::Result<Option<(u8, Range<usize>)>> {
        let raw = &self.buf[self.start..self.end];
        let Some(&first) = raw.first() else { return Ok(None) };
        let Some((len, used)) = varint(&raw[1..])? else { return Ok(None) };
        if len > MAX_PACKET {
            bail!("the broker sent a {len}-byte packet (over {MAX_PACKET})");
        }
        let header = 1 + used;
        if raw.len() < header + len {
            if header + len > self.buf.len() {
                // Make room for the whole packet before the next read.
                let grown = (header + len).next_power_of_two();
                self.buf.resize(grown, 0);
            }
            return Ok(None);
        }
        let body = self.start + header..self.start + header + len;
        self.start += header + len;
        Ok(Some((first, body)))
    }

    /// Reads more bytes from the stream (at least one). Cancel-safe.
    pub async fn fill(&mut self) -> anyhow::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = self.buf.len() * 2;
            self.buf.resize(grown, 0);
        }
        let n = self.rd.read(&mut self.buf[self.end..]).await.context("reading from the broker")?;
        if n == 0 {
            bail!("the broker closed the connection");
        }
        self.end += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_lengths() {
        for (len, header) in [(0usize, 2usize), (127, 2), (128, 3), (16_383, 3), (16_384, 4), (2_097_152, 5)] {
            let mut out = Vec::new();
            put_fixed_header(&mut out, 0x30, len);
            assert_eq!(out.len(), header, "len {len}");
            assert_eq!(varint(&out[1..]).unwrap(), Some((len, header - 1)));
        }
        assert_eq!(varint(&[0x80]).unwrap(), None);
        assert!(varint(&[0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
    }

    #[test]
    fn connect_packets() {
        let mut out = Vec::new();
        let c = Connect { version: Version::V311, client_id: "c", keep_alive: 60, credentials: Some(("u", "p")) };
        put_connect(&mut out, &c).unwrap();
        assert_eq!(out, [0x10, 19, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 1, b'c', 0, 1, b'u', 0, 1, b'p']);
        let mut out = Vec::new();
        let c = Connect { version: Version::V5, client_id: "c", keep_alive: 0, credentials: None };
        put_connect(&mut out, &c).unwrap();
        assert_eq!(out, [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0, 0, 0, 1, b'c']);
    }

    #[test]
    fn publish_round_trip() {
        let mut topic = Vec::new();
        put_str(&mut topic, "a/b").unwrap();
        for version in [Version::V311, Version::V5] {
            for qos in 0..=2 {
                let mut out = Vec::new();
                put_publish(&mut out, version, &topic, qos, 7, b"hello");
                let (len, used) = varint(&out[1..]).unwrap().unwrap();
                let body = &out[1 + used..];
                assert_eq!(body.len(), len);
                let p = parse_publish(version, out[0], body).unwrap();
                assert_eq!((p.qos, p.id, &body[p.payload.clone()]), (qos, if qos > 0 { 7 } else { 0 }, &b"hello"[..]));
            }
        }
    }

    #[test]
    fn connack_and_suback() {
        assert_eq!(parse_connack(Version::V311, &[0, 0]).unwrap(), ConnAck::default());
        assert!(parse_connack(Version::V311, &[0, 5]).is_err());
        // Receive Maximum 20, a user property, Server Keep Alive 30, Topic Alias Maximum 10.
        let body = [0, 0, 16, 0x21, 0, 20, 0x26, 0, 1, b'k', 0, 1, b'v', 0x13, 0, 30, 0x22, 0, 10];
        let got = parse_connack(Version::V5, &body).unwrap();
        assert_eq!(got, ConnAck { receive_maximum: Some(20), server_keep_alive: Some(30) });
        assert!(parse_connack(Version::V5, &[0, 0x87, 0]).is_err());
        assert_eq!(parse_suback(Version::V311, &[0, 1, 1]).unwrap(), 1);
        assert!(parse_suback(Version::V311, &[0, 1, 0x80]).is_err());
        assert_eq!(parse_suback(Version::V5, &[0, 1, 3, 0x1F, 0, 0, 2]).unwrap(), 2);
        assert!(parse_suback(Version::V5, &[0, 1, 0, 0x87]).is_err());
    }

    #[test]
    fn acks() {
        let mut out = Vec::new();
        put_ack(&mut out, 0x62, 0x1234);
        assert_eq!(out, [0x62, 2, 0x12, 0x34]);
        assert_eq!(ack_id(&out[2..]).unwrap(), 0x1234);
        assert_eq!(ack_reason(Version::V5, &[0, 1, 0x80]), 0x80);
        assert_eq!(ack_reason(Version::V5, &[0, 1]), 0);
        assert_eq!(ack_reason(Version::V311, &[0, 1, 0x80]), 0);
    }

    #[tokio::test]
    async fn reader_splits_and_grows() {
        let mut stream = Vec::new();
        let mut topic = Vec::new();
        put_str(&mut topic, "t").unwrap();
        put_publish(&mut stream, Version::V311, &topic, 0, 0, &vec![7u8; READ_BUFFER * 2]);
        put_ack(&mut stream, 0x40, 9);
        let mut reader = PacketReader::new(&stream[..]);
        let (first, body) = reader.next().await.unwrap();
        assert_eq!((first, body.len()), (0x30, 3 + READ_BUFFER * 2));
        let (first, body) = reader.next().await.unwrap();
        assert_eq!((first, &reader.buf[body]), (0x40, &[0u8, 9][..]));
        assert!(reader.next().await.is_err());
    }
}
