//! MQTT 3.1, 3.1.1 and 5.0 packets: bytes ⇄ [`Packet`], pure and bounded.
//!
//! No I/O, no async, no core types. [`decode`] looks at the fixed header first and
//! refuses a packet larger than the caller's maximum *before* anything is buffered
//! or allocated for it; `Ok(None)` means "not a whole packet yet". Every length
//! inside a packet is checked against what is actually there, so no input can make
//! the decoder allocate more than the packet's own size or panic.
//!
//! Which version a connection speaks is known only from its CONNECT, so CONNECT
//! decodes its own protocol level and every later packet is decoded with the
//! [`Protocol`] the session passes in.
//!
//! What the codec checks is what the spec calls a *Malformed Packet* (reason
//! 0x81) or, for some property rules, a *Protocol Error* (0x82). Rules that need
//! session state (topic aliases, packet-id reuse, wildcards in a PUBLISH topic)
//! are the session's.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol level a client connected with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// MQTT 3.1 (`MQIsdp`, level 3).
    V31,
    /// MQTT 3.1.1 (`MQTT`, level 4).
    V311,
    /// MQTT 5.0 (`MQTT`, level 5).
    V5,
}

impl Protocol {
    /// The protocol level byte.
    pub fn level(self) -> u8 {
        match self {
            Protocol::V31 => 3,
            Protocol::V311 => 4,
            Protocol::V5 => 5,
        }
    }

    /// True for MQTT 5.0.
    pub fn is_v5(self) -> bool {
        self == Protocol::V5
    }
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a wire value; 3 and above are malformed.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// MQTT 5 properties. One struct serves every packet type; [`decode`] refuses a
/// property the packet type does not allow (Protocol Error), so a decoded packet
/// only carries what its type may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01 Payload Format Indicator: 1 = UTF-8 payload.
    pub payload_format_indicator: Option<u8>,
    /// 0x02 Message Expiry Interval, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03 Content Type.
    pub content_type: Option<String>,
    /// 0x08 Response Topic.
    pub response_topic: Option<String>,
    /// 0x09 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// 0x0B Subscription Identifier(s): one in SUBSCRIBE, any number in PUBLISH.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11 Session Expiry Interval, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12 Assigned Client Identifier.
    pub assigned_client_identifier: Option<String>,
    /// 0x13 Server Keep Alive, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15 Authentication Method.
    pub authentication_method: Option<String>,
    /// 0x16 Authentication Data.
    pub authentication_data: Option<Bytes>,
    /// 0x17 Request Problem Information.
    pub request_problem_information: Option<u8>,
    /// 0x18 Will Delay Interval, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19 Request Response Information.
    pub request_response_information: Option<u8>,
    /// 0x1A Response Information.
    pub response_information: Option<String>,
    /// 0x1C Server Reference.
    pub server_reference: Option<String>,
    /// 0x1F Reason String.
    pub reason_string: Option<String>,
    /// 0x21 Receive Maximum.
    pub receive_maximum: Option<u16>,
    /// 0x22 Topic Alias Maximum.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 Topic Alias.
    pub topic_alias: Option<u16>,
    /// 0x24 Maximum QoS.
    pub maximum_qos: Option<u8>,
    /// 0x25 Retain Available.
    pub retain_available: Option<u8>,
    /// 0x26 User Property pairs, in order; names may repeat.
    pub user_properties: Vec<(String, String)>,
    /// 0x27 Maximum Packet Size.
    pub maximum_packet_size: Option<u32>,
    /// 0x28 Wildcard Subscription Available.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29 Subscription Identifier Available.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A Shared Subscription Available.
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// A last-will message from CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic to publish to.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS to publish with.
    pub qos: QoS,
    /// Publish as retained.
    pub retain: bool,
    /// Will properties (MQTT 5).
    pub properties: Properties,
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level.
    pub protocol: Protocol,
    /// Clean Session (3.x) / Clean Start (5).
    pub clean_start: bool,
    /// Keep alive, seconds; 0 disables.
    pub keep_alive: u16,
    /// Client identifier, possibly empty.
    pub client_id: String,
    /// Last will.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<String>,
    /// Password (binary).
    pub password: Option<Bytes>,
    /// CONNECT properties (MQTT 5).
    pub properties: Properties,
}

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// Return code (3.x) or reason code (5).
    pub code: u8,
    /// CONNACK properties (MQTT 5).
    pub properties: Properties,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name; empty only with a topic alias (MQTT 5).
    pub topic: String,
    /// Packet identifier, present for QoS 1 and 2.
    pub packet_id: Option<u16>,
    /// PUBLISH properties (MQTT 5).
    pub properties: Properties,
    /// Application payload.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP: a packet id and (MQTT 5) a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Packet identifier.
    pub packet_id: u16,
    /// Reason code (MQTT 5; 0 for 3.x).
    pub reason: u8,
    /// Properties (MQTT 5).
    pub properties: Properties,
}

impl Ack {
    /// A successful ack for `packet_id`.
    pub fn ok(packet_id: u16) -> Ack {
        Ack { packet_id, reason: 0, properties: Properties::default() }
    }
}

/// Subscription options of one topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local (MQTT 5).
    pub no_local: bool,
    /// Retain As Published (MQTT 5).
    pub retain_as_published: bool,
    /// Retain Handling 0, 1 or 2 (MQTT 5).
    pub retain_handling: u8,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// Properties (MQTT 5): subscription identifier, user properties.
    pub properties: Properties,
    /// Topic filters and their options; never empty.
    pub filters: Vec<(String, SubOptions)>,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier.
    pub packet_id: u16,
    /// Properties (MQTT 5).
    pub properties: Properties,
    /// One return/reason code per filter.
    pub codes: Vec<u8>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// Properties (MQTT 5).
    pub properties: Properties,
    /// Topic filters; never empty.
    pub filters: Vec<String>,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier.
    pub packet_id: u16,
    /// Properties (MQTT 5).
    pub properties: Properties,
    /// One reason code per filter (MQTT 5; empty for 3.x).
    pub codes: Vec<u8>,
}

/// DISCONNECT or AUTH: a reason and properties (both MQTT 5; empty for 3.x).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reasoned {
    /// Reason code.
    pub reason: u8,
    /// Properties.
    pub properties: Properties,
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (1).
    Connect(Box<Connect>),
    /// CONNACK (2).
    ConnAck(ConnAck),
    /// PUBLISH (3).
    Publish(Box<Publish>),
    /// PUBACK (4).
    PubAck(Ack),
    /// PUBREC (5).
    PubRec(Ack),
    /// PUBREL (6).
    PubRel(Ack),
    /// PUBCOMP (7).
    PubComp(Ack),
    /// SUBSCRIBE (8).
    Subscribe(Subscribe),
    /// SUBACK (9).
    SubAck(SubAck),
    /// UNSUBSCRIBE (10).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (11).
    UnsubAck(UnsubAck),
    /// PINGREQ (12).
    PingReq,
    /// PINGRESP (13).
    PingResp,
    /// DISCONNECT (14).
    Disconnect(Reasoned),
    /// AUTH (15, MQTT 5 only).
    Auth(Reasoned),
}

impl Packet {
    /// The packet type's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

/// Why bytes are not a valid packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The remaining-length field is longer than four bytes.
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// The packet is larger than the maximum packet size.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge {
        /// Announced packet size, fixed header included.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The packet breaks the wire format (reason 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet is well-formed but breaks a protocol rule (reason 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// CONNECT names a protocol or level this server does not speak.
    #[error("unsupported protocol name or level {level}")]
    UnsupportedProtocol {
        /// The level byte sent (0 if the name was unknown).
        level: u8,
    },
}

impl DecodeError {
    /// The MQTT 5 reason code for this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::MalformedRemainingLength | DecodeError::Malformed(_) => 0x81,
            DecodeError::PacketTooLarge { .. } => 0x95,
            DecodeError::Protocol(_) => 0x82,
            DecodeError::UnsupportedProtocol { .. } => 0x84,
        }
    }
}

type DResult<T> = Result<T, DecodeError>;

/// The largest remaining length MQTT can express (four varint bytes).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Read a variable byte integer from the front of `buf`: `Ok(None)` if incomplete.
fn peek_varint(buf: &[u8]) -> DResult<Option<(u32, usize)>> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else { return Ok(None) };
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::MalformedRemainingLength)
}

/// Decode one packet from the front of `buf`, consuming its bytes.
///
/// `protocol` is the connection's version (`None` before CONNECT: only CONNECT is
/// decoded then, anything else is a protocol error). `max_size` bounds the whole
/// packet including its fixed header and is checked before the body is buffered.
pub fn decode(buf: &mut BytesMut, protocol: Option<Protocol>, max_size: usize) -> DResult<Option<Packet>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let first = buf[0];
    let Some((remaining, len_bytes)) = peek_varint(&buf[1..])? else {
        return Ok(None);
    };
    let total = 1 + len_bytes + remaining as usize;
    if total > max_size {
        return Err(DecodeError::PacketTooLarge { size: total, max: max_size });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let mut packet = buf.split_to(total).freeze();
    packet.advance(1 + len_bytes);
    decode_body(first, packet, protocol).map(Some)
}

/// Bytes needed before [`decode`] can return the packet at the front of `buf`, if the
/// fixed header is complete (for read-buffer sizing).
pub fn packet_size(buf: &[u8]) -> Option<usize> {
    let (remaining, n) = peek_varint(buf.get(1..)?).ok()??;
    Some(1 + n + remaining as usize)
}

/// Cursor helpers over a packet body; every read is bounds-checked.
struct Reader {
    buf: Bytes,
}

impl Reader {
    fn remaining(&self) -> usize {
        self.buf.len()
    }
    fn u8(&mut self) -> DResult<u8> {
        if self.buf.is_empty() {
            return Err(DecodeError::Malformed("packet too short"));
        }
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self) -> DResult<u16> {
        if self.buf.len() < 2 {
            return Err(DecodeError::Malformed("packet too short"));
        }
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self) -> DResult<u32> {
        if self.buf.len() < 4 {
            return Err(DecodeError::Malformed("packet too short"));
        }
        Ok(self.buf.get_u32())
    }
    fn varint(&mut self) -> DResult<u32> {
        match peek_varint(&self.buf) {
            Ok(Some((v, n))) => {
                self.buf.advance(n);
                Ok(v)
            }
            Ok(None) => Err(DecodeError::Malformed("truncated variable byte integer")),
            Err(_) => Err(DecodeError::Malformed("variable byte integer longer than four bytes")),
        }
    }
    fn binary(&mut self) -> DResult<Bytes> {
        let len = self.u16()? as usize;
        if self.buf.len() < len {
            return Err(DecodeError::Malformed("length prefix beyond the end of the packet"));
        }
        Ok(self.buf.split_to(len))
    }
    fn string(&mut self) -> DResult<String> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(&raw).map_err(|_| DecodeError::Malformed("invalid UTF-8 string"))?;
        // MQTT-1.5.4-2: a UTF-8 string must not contain U+0000.
        if s.contains('\0') {
            return Err(DecodeError::Malformed("UTF-8 string contains U+0000"));
        }
        Ok(s.to_string())
    }
    fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }
    fn take(&mut self, n: usize) -> DResult<Reader> {
        if self.buf.len() < n {
            return Err(DecodeError::Malformed("property length beyond the end of the packet"));
        }
        Ok(Reader { buf: self.buf.split_to(n) })
    }
    fn done(&self) -> DResult<()> {
        if self.buf.is_empty() { Ok(()) } else { Err(DecodeError::Malformed("trailing bytes after the packet")) }
    }
}

/// Which packet a property list belongs to (each allows a different set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PropCtx {
    Connect,
    ConnAck,
    Publish,
    Will,
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

fn allowed(id: u8, ctx: PropCtx) -> bool {
    use PropCtx::*;
    match id {
        0x01..=0x03 | 0x08 | 0x09 => matches!(ctx, Publish | Will),
        0x0B => matches!(ctx, Publish | Subscribe),
        0x11 => matches!(ctx, Connect | ConnAck | Disconnect),
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => ctx == ConnAck,
        0x15 | 0x16 => matches!(ctx, Connect | ConnAck | Auth),
        0x17 | 0x19 => ctx == Connect,
        0x18 => ctx == Will,
        0x1C => matches!(ctx, ConnAck | Disconnect),
        0x1F => matches!(ctx, ConnAck | Ack | SubAck | UnsubAck | Disconnect | Auth),
        0x21 | 0x22 | 0x27 => matches!(ctx, Connect | ConnAck),
        0x23 => ctx == Publish,
        0x26 => true,
        _ => false,
    }
}

fn set_once<T>(slot: &mut Option<T>, v: T) -> DResult<()> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("a property appears twice"));
    }
    *slot = Some(v);
    Ok(())
}

fn bool_byte(r: &mut Reader) -> DResult<u8> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::Protocol("a boolean property is neither 0 nor 1")),
    }
}

fn read_properties(r: &mut Reader, ctx: PropCtx) -> DResult<Properties> {
    let len = r.varint()? as usize;
    let mut pr = r.take(len)?;
    let mut p = Properties::default();
    while pr.remaining() > 0 {
        let id = pr.varint()?;
        let id = u8::try_from(id).map_err(|_| DecodeError::Malformed("unknown property identifier"))?;
        if !allowed(id, ctx) {
            return Err(
                if matches!(id, 0x01..=0x03 | 0x08 | 0x09 | 0x0B | 0x11..=0x13 | 0x15..=0x1A | 0x1C | 0x1F | 0x21..=0x2A)
                {
                    DecodeError::Protocol("property not allowed in this packet")
                } else {
                    DecodeError::Malformed("unknown property identifier")
                },
            );
        }
        match id {
            0x01 => {
                let v = bool_byte(&mut pr)?;
                set_once(&mut p.payload_format_indicator, v)?
            }
            0x02 => set_once(&mut p.message_expiry_interval, pr.u32()?)?,
            0x03 => set_once(&mut p.content_type, pr.string()?)?,
            0x08 => set_once(&mut p.response_topic, pr.string()?)?,
            0x09 => set_once(&mut p.correlation_data, pr.binary()?)?,
            0x0B => {
                let v = pr.varint()?;
                if v == 0 {
                    return Err(DecodeError::Protocol("subscription identifier 0"));
                }
                if ctx == PropCtx::Subscribe && !p.subscription_identifiers.is_empty() {
                    return Err(DecodeError::Protocol("a property appears twice"));
                }
                p.subscription_identifiers.push(v);
            }
            0x11 => set_once(&mut p.session_expiry_interval, pr.u32()?)?,
            0x12 => set_once(&mut p.assigned_client_identifier, pr.string()?)?,
            0x13 => set_once(&mut p.server_keep_alive, pr.u16()?)?,
            0x15 => set_once(&mut p.authentication_method, pr.string()?)?,
            0x16 => set_once(&mut p.authentication_data, pr.binary()?)?,
            0x17 => {
                let v = bool_byte(&mut pr)?;
                set_once(&mut p.request_problem_information, v)?
            }
            0x18 => set_once(&mut p.will_delay_interval, pr.u32()?)?,
            0x19 => {
                let v = bool_byte(&mut pr)?;
                set_once(&mut p.request_response_information, v)?
            }
            0x1A => set_once(&mut p.response_information, pr.string()?)?,
            0x1C => set_once(&mut p.server_reference, pr.string()?)?,
            0x1F => set_once(&mut p.reason_string, pr.string()?)?,
            0x21 => {
                let v = pr.u16()?;
                if v == 0 {
                    return Err(DecodeError::Protocol("receive maximum 0"));
                }
                set_once(&mut p.receive_maximum, v)?
            }
            0x22 => set_once(&mut p.topic_alias_maximum, pr.u16()?)?,
            0x23 => set_once(&mut p.topic_alias, pr.u16()?)?,
            0x24 => {
                let v = bool_byte(&mut pr)?;
                set_once(&mut p.maximum_qos, v)?
            }
            0x25 => {
                let v = bool_byte(&mut pr)?;
                set_once(&mut p.retain_available, v)?
            }
            0x26 => {
                let k = pr.string()?;
                let v = pr.string()?;
                p.user_properties.push((k, v));
            }
            0x27 => {
                let v = pr.u32()?;
                if v == 0 {
                    return Err(DecodeError::Protocol("maximum packet size 0"));
                }
                set_once(&mut p.maximum_packet_size, v)?
            }
            0x28 => {
                let v = bool_byte(&mut pr)?;
                set_once(&mut p.wildcard_subscription_available, v)?
            }
            0x29 => {
                let v = bool_byte(&mut pr)?;
                set_once(&mut p.subscription_identifier_available, v)?
            }
            0x2A => {
                let v = bool_byte(&mut pr)?;
                set_once(&mut p.shared_subscription_available, v)?
            }
            _ => return Err(DecodeError::Malformed("unknown property identifier")),
        }
    }
    Ok(p)
}

fn decode_body(first: u8, body: Bytes, protocol: Option<Protocol>) -> DResult<Packet> {
    let kind = first >> 4;
    let flags = first & 0x0f;
    let mut r = Reader { buf: body };
    let Some(proto) = protocol else {
        if kind == 1 && flags == 0 {
            return decode_connect(&mut r);
        }
        return Err(DecodeError::Protocol("the first packet must be CONNECT"));
    };
    let v5 = proto.is_v5();
    // MQTT-2.2.2-1/2: fixed flags per packet type; a wrong value is malformed.
    let want_flags = match kind {
        3 => None,
        6 | 8 | 10 => Some(0b0010),
        _ => Some(0),
    };
    if want_flags.is_some_and(|f| f != flags) {
        return Err(DecodeError::Malformed("invalid fixed header flags"));
    }
    let packet = match kind {
        1 => return Err(DecodeError::Protocol("second CONNECT")),
        2 => {
            let ack_flags = r.u8()?;
            if ack_flags & 0xfe != 0 {
                return Err(DecodeError::Malformed("CONNACK reserved flags set"));
            }
            let code = r.u8()?;
            let properties = if v5 { read_properties(&mut r, PropCtx::ConnAck)? } else { Properties::default() };
            Packet::ConnAck(ConnAck { session_present: ack_flags & 1 == 1, code, properties })
        }
        3 => Packet::Publish(Box::new(decode_publish(flags, &mut r, v5)?)),
        4 => Packet::PubAck(decode_ack(&mut r, v5)?),
        5 => Packet::PubRec(decode_ack(&mut r, v5)?),
        6 => Packet::PubRel(decode_ack(&mut r, v5)?),
        7 => Packet::PubComp(decode_ack(&mut r, v5)?),
        8 => Packet::Subscribe(decode_subscribe(&mut r, v5)?),
        9 => {
            let packet_id = r.u16()?;
            let properties = if v5 { read_properties(&mut r, PropCtx::SubAck)? } else { Properties::default() };
            let codes = r.rest().to_vec();
            Packet::SubAck(SubAck { packet_id, properties, codes })
        }
        10 => Packet::Unsubscribe(decode_unsubscribe(&mut r, v5)?),
        11 => {
            let packet_id = r.u16()?;
            let (properties, codes) = if v5 {
                (read_properties(&mut r, PropCtx::UnsubAck)?, r.rest().to_vec())
            } else {
                (Properties::default(), Vec::new())
            };
            Packet::UnsubAck(UnsubAck { packet_id, properties, codes })
        }
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(decode_reasoned(&mut r, v5, PropCtx::Disconnect)?),
        15 if v5 => Packet::Auth(decode_reasoned(&mut r, v5, PropCtx::Auth)?),
        _ => return Err(DecodeError::Malformed("reserved packet type")),
    };
    r.done()?;
    Ok(packet)
}

fn decode_connect(r: &mut Reader) -> DResult<Packet> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (name.as_ref(), level) {
        (b"MQTT", 4) => Protocol::V311,
        (b"MQTT", 5) => Protocol::V5,
        (b"MQIsdp", 3) => Protocol::V31,
        (b"MQTT" | b"MQIsdp", level) => return Err(DecodeError::UnsupportedProtocol { level }),
        _ => return Err(DecodeError::UnsupportedProtocol { level: 0 }),
    };
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed("will QoS or retain set without a will"));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("will QoS 3"))?;
    if !v5 && has_password && !has_username {
        return Err(DecodeError::Malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let properties = if v5 { read_properties(r, PropCtx::Connect)? } else { Properties::default() };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 { read_properties(r, PropCtx::Will)? } else { Properties::default() };
        let topic = r.string()?;
        let payload = r.binary()?;
        Some(Will { topic, payload, qos: will_qos, retain: will_retain, properties })
    } else {
        None
    };
    let username = if has_username { Some(r.string()?) } else { None };
    let password = if has_password { Some(r.binary()?) } else { None };
    r.done()?;
    Ok(Packet::Connect(Box::new(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })))
}

fn decode_publish(flags: u8, r: &mut Reader, v5: bool) -> DResult<Publish> {
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::Malformed("PUBLISH with QoS 3"))?;
    let dup = flags & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        match r.u16()? {
            0 => return Err(DecodeError::Malformed("packet identifier 0")),
            id => Some(id),
        }
    };
    let properties = if v5 { read_properties(r, PropCtx::Publish)? } else { Properties::default() };
    if !v5 && topic.is_empty() {
        return Err(DecodeError::Malformed("empty topic name"));
    }
    let payload = r.rest();
    Ok(Publish { dup, qos, retain: flags & 0x01 != 0, topic, packet_id, properties, payload })
}

fn decode_ack(r: &mut Reader, v5: bool) -> DResult<Ack> {
    let packet_id = r.u16()?;
    if packet_id == 0 {
        return Err(DecodeError::Malformed("packet identifier 0"));
    }
    let mut ack = Ack::ok(packet_id);
    if v5 && r.remaining() > 0 {
        ack.reason = r.u8()?;
        if r.remaining() > 0 {
            ack.properties = read_properties(r, PropCtx::Ack)?;
        }
    }
    Ok(ack)
}

fn decode_subscribe(r: &mut Reader, v5: bool) -> DResult<Subscribe> {
    let packet_id = r.u16()?;
    if packet_id == 0 {
        return Err(DecodeError::Malformed("packet identifier 0"));
    }
    let properties = if v5 { read_properties(r, PropCtx::Subscribe)? } else { Properties::default() };
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string()?;
        let o = r.u8()?;
        let reserved = if v5 { 0xc0 } else { 0xfc };
        if o & reserved != 0 {
            return Err(DecodeError::Malformed("subscription options reserved bits set"));
        }
        let qos = QoS::from_u8(o & 0x03).ok_or(DecodeError::Malformed("subscription with QoS 3"))?;
        let retain_handling = (o >> 4) & 0x03;
        if retain_handling == 3 {
            return Err(DecodeError::Malformed("retain handling 3"));
        }
        let opts = SubOptions { qos, no_local: o & 0x04 != 0, retain_as_published: o & 0x08 != 0, retain_handling };
        filters.push((filter, opts));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe { packet_id, properties, filters })
}

fn decode_unsubscribe(r: &mut Reader, v5: bool) -> DResult<Unsubscribe> {
    let packet_id = r.u16()?;
    if packet_id == 0 {
        return Err(DecodeError::Malformed("packet identifier 0"));
    }
    let properties = if v5 { read_properties(r, PropCtx::Unsubscribe)? } else { Properties::default() };
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe { packet_id, properties, filters })
}

fn decode_reasoned(r: &mut Reader, v5: bool, ctx: PropCtx) -> DResult<Reasoned> {
    let mut out = Reasoned::default();
    if v5 && r.remaining() > 0 {
        out.reason = r.u8()?;
        if r.remaining() > 0 {
            out.properties = read_properties(r, ctx)?;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn put_varint(out: &mut impl BufMut, mut v: u32) {
    loop {
        let mut b = (v & 0x7f) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if v == 0 {
            return;
        }
    }
}

fn varint_len(v: u32) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Write a length-prefixed byte string, truncated at 65535 bytes (the most MQTT can carry).
fn put_binary(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(u16::MAX as usize)];
    out.put_u16(b.len() as u16);
    out.extend_from_slice(b);
}

/// Write a UTF-8 string, truncated on a char boundary to fit a length prefix.
fn put_string(out: &mut Vec<u8>, s: &str) {
    put_binary(out, wire_str(s));
}

fn encode_properties(p: &Properties, out: &mut Vec<u8>) {
    let mut b = Vec::new();
    let byte = |b: &mut Vec<u8>, id: u8, v: Option<u8>| {
        if let Some(v) = v {
            b.push(id);
            b.push(v);
        }
    };
    byte(&mut b, 0x01, p.payload_format_indicator);
    if let Some(v) = p.message_expiry_interval {
        b.push(0x02);
        b.put_u32(v);
    }
    if let Some(v) = &p.content_type {
        b.push(0x03);
        put_string(&mut b, v);
    }
    if let Some(v) = &p.response_topic {
        b.push(0x08);
        put_string(&mut b, v);
    }
    if let Some(v) = &p.correlation_data {
        b.push(0x09);
        put_binary(&mut b, v);
    }
    for id in &p.subscription_identifiers {
        b.push(0x0B);
        put_varint(&mut b, *id);
    }
    if let Some(v) = p.session_expiry_interval {
        b.push(0x11);
        b.put_u32(v);
    }
    if let Some(v) = &p.assigned_client_identifier {
        b.push(0x12);
        put_string(&mut b, v);
    }
    if let Some(v) = p.server_keep_alive {
        b.push(0x13);
        b.put_u16(v);
    }
    if let Some(v) = &p.authentication_method {
        b.push(0x15);
        put_string(&mut b, v);
    }
    if let Some(v) = &p.authentication_data {
        b.push(0x16);
        put_binary(&mut b, v);
    }
    byte(&mut b, 0x17, p.request_problem_information);
    if let Some(v) = p.will_delay_interval {
        b.push(0x18);
        b.put_u32(v);
    }
    byte(&mut b, 0x19, p.request_response_information);
    if let Some(v) = &p.response_information {
        b.push(0x1A);
        put_string(&mut b, v);
    }
    if let Some(v) = &p.server_reference {
        b.push(0x1C);
        put_string(&mut b, v);
    }
    if let Some(v) = &p.reason_string {
        b.push(0x1F);
        put_string(&mut b, v);
    }
    if let Some(v) = p.receive_maximum {
        b.push(0x21);
        b.put_u16(v);
    }
    if let Some(v) = p.topic_alias_maximum {
        b.push(0x22);
        b.put_u16(v);
    }
    if let Some(v) = p.topic_alias {
        b.push(0x23);
        b.put_u16(v);
    }
    byte(&mut b, 0x24, p.maximum_qos);
    byte(&mut b, 0x25, p.retain_available);
    for (k, v) in &p.user_properties {
        b.push(0x26);
        put_string(&mut b, k);
        put_string(&mut b, v);
    }
    if let Some(v) = p.maximum_packet_size {
        b.push(0x27);
        b.put_u32(v);
    }
    byte(&mut b, 0x28, p.wildcard_subscription_available);
    byte(&mut b, 0x29, p.subscription_identifier_available);
    byte(&mut b, 0x2A, p.shared_subscription_available);
    put_varint(out, b.len() as u32);
    out.extend_from_slice(&b);
}

fn header(out: &mut BytesMut, first: u8, remaining: usize) {
    out.put_u8(first);
    put_varint(out, remaining.min(MAX_REMAINING_LENGTH) as u32);
}

/// The bytes [`put_string`] writes for `s` after its length prefix: `s` truncated on a
/// char boundary to at most 65535 bytes.
fn wire_str(s: &str) -> &[u8] {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

/// The encoded MQTT 5 properties of a PUBLISH (length included); empty for 3.x.
fn publish_properties(p: &Publish, v5: bool) -> Vec<u8> {
    let mut props = Vec::new();
    if v5 {
        encode_properties(&p.properties, &mut props);
    }
    props
}

/// The remaining length of a PUBLISH whose encoded properties are `props`.
fn publish_remaining(p: &Publish, props: &[u8]) -> usize {
    2 + wire_str(&p.topic).len() + if p.packet_id.is_some() { 2 } else { 0 } + props.len() + p.payload.len()
}

/// The encoded size of `p` (fixed header included), for maximum-packet-size checks.
pub fn publish_size(p: &Publish, protocol: Protocol) -> usize {
    let remaining = publish_remaining(p, &publish_properties(p, protocol.is_v5()));
    1 + varint_len(remaining as u32) + remaining
}

impl Publish {
    /// Append the wire form of this PUBLISH for a connection speaking `protocol`,
    /// written straight into `out` (the same bytes as [`Packet::encode`] gives).
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        let props = publish_properties(self, protocol.is_v5());
        let mut first = 0x30 | ((self.qos as u8) << 1);
        if self.dup {
            first |= 0x08;
        }
        if self.retain {
            first |= 0x01;
        }
        let remaining = publish_remaining(self, &props);
        out.reserve(5 + remaining);
        header(out, first, remaining);
        let topic = wire_str(&self.topic);
        out.put_u16(topic.len() as u16);
        out.extend_from_slice(topic);
        if let Some(id) = self.packet_id {
            out.put_u16(id);
        }
        out.extend_from_slice(&props);
        out.extend_from_slice(&self.payload);
    }
}

impl Packet {
    /// Append the wire form of this packet for a connection speaking `protocol`.
    /// MQTT 5-only fields are left out for 3.x.
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        let v5 = protocol.is_v5();
        let mut b: Vec<u8> = Vec::new();
        let first: u8 = match self {
            Packet::Connect(c) => {
                if c.protocol == Protocol::V31 {
                    put_string(&mut b, "MQIsdp");
                } else {
                    put_string(&mut b, "MQTT");
                }
                b.push(c.protocol.level());
                let mut flags = 0u8;
                if c.clean_start {
                    flags |= 0x02;
                }
                if let Some(w) = &c.will {
                    flags |= 0x04 | ((w.qos as u8) << 3);
                    if w.retain {
                        flags |= 0x20;
                    }
                }
                if c.password.is_some() {
                    flags |= 0x40;
                }
                if c.username.is_some() {
                    flags |= 0x80;
                }
                b.push(flags);
                b.put_u16(c.keep_alive);
                let cv5 = c.protocol.is_v5();
                if cv5 {
                    encode_properties(&c.properties, &mut b);
                }
                put_string(&mut b, &c.client_id);
                if let Some(w) = &c.will {
                    if cv5 {
                        encode_properties(&w.properties, &mut b);
                    }
                    put_string(&mut b, &w.topic);
                    put_binary(&mut b, &w.payload);
                }
                if let Some(u) = &c.username {
                    put_string(&mut b, u);
                }
                if let Some(p) = &c.password {
                    put_binary(&mut b, p);
                }
                0x10
            }
            Packet::ConnAck(c) => {
                b.push(u8::from(c.session_present));
                b.push(c.code);
                if v5 {
                    encode_properties(&c.properties, &mut b);
                }
                0x20
            }
            Packet::Publish(p) => {
                p.encode(protocol, out);
                return;
            }
            Packet::PubAck(a) => encode_ack(a, v5, &mut b, 0x40),
            Packet::PubRec(a) => encode_ack(a, v5, &mut b, 0x50),
            Packet::PubRel(a) => encode_ack(a, v5, &mut b, 0x62),
            Packet::PubComp(a) => encode_ack(a, v5, &mut b, 0x70),
            Packet::Subscribe(s) => {
                b.put_u16(s.packet_id);
                if v5 {
                    encode_properties(&s.properties, &mut b);
                }
                for (f, o) in &s.filters {
                    put_string(&mut b, f);
                    let mut opt = o.qos as u8;
                    if v5 {
                        opt |= u8::from(o.no_local) << 2
                            | u8::from(o.retain_as_published) << 3
                            | (o.retain_handling & 0x03) << 4;
                    }
                    b.push(opt);
                }
                0x82
            }
            Packet::SubAck(s) => {
                b.put_u16(s.packet_id);
                if v5 {
                    encode_properties(&s.properties, &mut b);
                }
                b.extend_from_slice(&s.codes);
                0x90
            }
            Packet::Unsubscribe(u) => {
                b.put_u16(u.packet_id);
                if v5 {
                    encode_properties(&u.properties, &mut b);
                }
                for f in &u.filters {
                    put_string(&mut b, f);
                }
                0xA2
            }
            Packet::UnsubAck(u) => {
                b.put_u16(u.packet_id);
                if v5 {
                    encode_properties(&u.properties, &mut b);
                    b.extend_from_slice(&u.codes);
                }
                0xB0
            }
            Packet::PingReq => 0xC0,
            Packet::PingResp => 0xD0,
            Packet::Disconnect(d) => {
                encode_reasoned(d, v5, &mut b);
                0xE0
            }
            Packet::Auth(d) => {
                encode_reasoned(d, v5, &mut b);
                0xF0
            }
        };
        header(out, first, b.len());
        out.extend_from_slice(&b);
    }
}

fn encode_ack(a: &Ack, v5: bool, b: &mut Vec<u8>, first: u8) -> u8 {
    b.put_u16(a.packet_id);
    if v5 && (a.reason != 0 || !a.properties.is_empty()) {
        b.push(a.reason);
        if !a.properties.is_empty() {
            encode_properties(&a.properties, b);
        }
    }
    first
}

fn encode_reasoned(d: &Reasoned, v5: bool, b: &mut Vec<u8>) {
    if v5 && (d.reason != 0 || !d.properties.is_empty()) {
        b.push(d.reason);
        if !d.properties.is_empty() {
            encode_properties(&d.properties, b);
        }
    }
}

#[cfg(test)]
mod tests;
