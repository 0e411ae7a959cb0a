//! AMQP 0-9-1 framing for the server side: bytes ⇄ [`Frame`]s. Pure: no
//! async, no I/O, and no dependency on the broker core (only [`convert`]
//! touches core types).
//!
//! amq-protocol supplies the generated method, property and field-table
//! parsers and generators; this module owns the frame layer around them,
//! because a server has to check things before the parser runs:
//!
//! - the frame size against the negotiated `frame_max`, *before* waiting for
//!   (or allocating) the payload;
//! - the frame-end octet, the frame type and heartbeat rules;
//! - whether a method is known at all (540 NOT_IMPLEMENTED) as opposed to
//!   known but malformed (502 SYNTAX_ERROR), see [`DecodeError::reply_code`];
//! - field-table nesting depth, because amq-protocol recurses per level and a
//!   hostile frame could overflow the stack (see `nesting`).
//!
//! Body frames (type 3) are cut out of the read buffer by hand as
//! [`Bytes`] — amq-protocol would copy them into a `Vec<u8>`.
//!
//! The connection decodes with [`decode_in_place`], which borrows the read
//! buffer instead of consuming it: `basic.publish` and `basic.ack` are decoded
//! by hand without amq-protocol's types, bodies are slices, and a content
//! header's property list without a headers table is checked by hand and
//! turned into the core's [`Properties`] directly (the one place outside
//! [`convert`] that names a core type). [`decode`] stays the owning reference
//! form; property tests check the two agree, errors included.
//!
//! # Invariants worth naming
//!
//! - [`decode`] never panics, whatever the input, and consumes bytes only
//!   when it returns a frame. After an error the connection must be closed;
//!   the buffer is left as it was.
//! - A frame whose size exceeds `frame_max` is refused as soon as its 7-byte
//!   header is buffered.

pub mod convert;
mod fast;
mod methods;
mod nesting;
mod sink;

use amq_protocol::frame::{GenError, ParserError, WriteContext};
use amq_protocol::protocol::basic::{gen_properties, parse_properties};
use amq_protocol::protocol::{AMQPClass, BasicProperties, gen_class, parse_class};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use switchyard::message::Properties;

pub use self::fast::PublishRef;
pub use self::methods::{class_method_ids, method_name, method_name_by_id};
pub use self::nesting::MAX_TABLE_DEPTH;
use self::sink::Sink;

/// The protocol header a 0-9-1 client sends first, and the one a server
/// sends back before closing when the client asked for another version.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Bytes a frame adds around its payload: type (1), channel (2), size (4),
/// frame-end (1). `frame_max` counts them.
pub const FRAME_OVERHEAD: u32 = 8;

/// The largest frame accepted or produced whatever `frame_max` says,
/// including when it is 0 ("no limit"): 128 MiB of payload plus overhead.
pub const FRAME_MAX_CAP: u32 = 128 * 1024 * 1024 + FRAME_OVERHEAD;

/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
/// Type, channel and size.
const FRAME_HEADER_LEN: usize = 7;
const HEARTBEAT_FRAME: [u8; 8] = [FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END];
/// At most this much is reserved ahead for a partly received frame.
const RESERVE_AHEAD_MAX: usize = 128 * 1024;

/// One AMQP 0-9-1 frame.
// A content header is much larger than the other variants (BasicProperties
// has fourteen optional fields). Frames are transient and moved a couple of
// times, so boxing would cost an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The 8-byte "AMQP\0\0\x09\x01" header a client sends first.
    ProtocolHeader,
    /// A method frame (type 1).
    Method {
        /// The channel (0 for connection-class methods).
        channel: u16,
        /// The method and its arguments.
        method: AMQPClass,
    },
    /// A content header frame (type 2), announcing `body_size` bytes of body.
    Header {
        /// The channel.
        channel: u16,
        /// The content class; 60 (basic) is the only one 0-9-1 uses.
        class_id: u16,
        /// Total body bytes that follow in body frames.
        body_size: u64,
        /// The basic properties.
        properties: BasicProperties,
    },
    /// A content body frame (type 3). The payload is split from the read
    /// buffer, not copied, so it shares (and keeps alive) that buffer's
    /// allocation: a consumer that stores small bodies for long may want to
    /// copy them out rather than pin a whole read chunk per message.
    Body {
        /// The channel.
        channel: u16,
        /// This frame's slice of the body.
        payload: Bytes,
    },
    /// A heartbeat frame (type 8), always on channel 0.
    Heartbeat,
}

/// Why bytes could not be decoded into a frame. Every variant is fatal to
/// the connection; [`DecodeError::reply_code`] says how to close it.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The client's first 8 bytes were not `AMQP\0\0\x09\x01` (another AMQP
    /// version, or not AMQP at all). Reply with [`PROTOCOL_HEADER`], then close.
    #[error("unsupported protocol header \"{}\", expected \"AMQP\\x00\\x00\\x09\\x01\"", .received.escape_ascii())]
    BadProtocolHeader {
        /// The 8 bytes received.
        received: [u8; 8],
    },
    /// The frame is larger than the negotiated `frame_max` (or [`FRAME_MAX_CAP`]).
    #[error("frame of {size} payload bytes exceeds frame_max {max}")]
    FrameTooLarge {
        /// The payload size the frame header announced.
        size: u32,
        /// The effective frame_max, overhead included.
        max: u32,
    },
    /// The frame did not end with 0xCE.
    #[error("frame (type {frame_type}, channel {channel}) ends with {found:#04x}, not 0xCE")]
    BadFrameEnd {
        /// The frame's type octet.
        frame_type: u8,
        /// The frame's channel.
        channel: u16,
        /// The octet found where 0xCE belongs.
        found: u8,
    },
    /// The frame type is not 1, 2, 3 or 8.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// A heartbeat not on channel 0, or with a payload.
    #[error("heartbeat frame on channel {channel} with {size} payload bytes (must be channel 0, empty)")]
    BadHeartbeat {
        /// The frame's channel.
        channel: u16,
        /// The frame's payload size.
        size: u32,
    },
    /// A method frame names a method that AMQP 0-9-1 does not have.
    #[error("unknown method: class {class_id}, method {method_id}")]
    UnknownMethod {
        /// The class-id.
        class_id: u16,
        /// The method-id.
        method_id: u16,
    },
    /// A known method whose arguments do not parse (truncated, a bad
    /// field-table type, invalid UTF-8 in a short string, trailing bytes, a
    /// table nested deeper than [`MAX_TABLE_DEPTH`]), or a method payload too
    /// short to hold the ids (then the missing ids are 0).
    #[error("malformed {}: {detail}", method_label(*.class_id, *.method_id))]
    Syntax {
        /// The class-id (0 if the payload was too short to hold it).
        class_id: u16,
        /// The method-id (0 if the payload was too short to hold it).
        method_id: u16,
        /// What was wrong, for the close reason and logs.
        detail: String,
    },
    /// A well-formed method asking for something this server does not implement
    /// (basic.qos with a non-zero prefetch-size). The detail is the close text.
    #[error("{detail}")]
    NotImplemented {
        /// The class-id.
        class_id: u16,
        /// The method-id.
        method_id: u16,
        /// RabbitMQ's text, without the code prefix.
        detail: String,
    },
    /// A content header frame that does not parse (too short, weight not 0,
    /// bad properties).
    #[error("malformed content header on channel {channel}: {detail}")]
    BadContentHeader {
        /// The frame's channel.
        channel: u16,
        /// What was wrong.
        detail: String,
    },
}

fn method_label(class_id: u16, method_id: u16) -> String {
    match method_name_by_id(class_id, method_id) {
        Some(name) => name.to_owned(),
        None => format!("method {class_id}.{method_id}"),
    }
}

impl DecodeError {
    /// The `connection.close` reply code for this error, as RabbitMQ sends
    /// it: 501 FRAME_ERROR, 502 SYNTAX_ERROR or 540 NOT_IMPLEMENTED. `None`
    /// for [`DecodeError::BadProtocolHeader`], where the server answers with
    /// [`PROTOCOL_HEADER`] and closes the socket instead.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            DecodeError::BadProtocolHeader { .. } => None,
            DecodeError::FrameTooLarge { .. }
            | DecodeError::BadFrameEnd { .. }
            | DecodeError::UnknownFrameType(_)
            | DecodeError::BadHeartbeat { .. }
            | DecodeError::BadContentHeader { .. } => Some(501),
            DecodeError::Syntax { .. } => Some(502),
            DecodeError::UnknownMethod { .. } | DecodeError::NotImplemented { .. } => Some(540),
        }
    }
}

/// The frame_max actually enforced: `frame_max`, or [`FRAME_MAX_CAP`] when it
/// is 0 or larger than the cap.
pub fn effective_frame_max(frame_max: u32) -> u32 {
    if frame_max == 0 { FRAME_MAX_CAP } else { frame_max.min(FRAME_MAX_CAP) }
}

/// The largest body-frame payload under `frame_max` (at least 1, so that a
/// nonsensical `frame_max` below the overhead still makes progress).
pub fn max_body_chunk(frame_max: u32) -> usize {
    (effective_frame_max(frame_max).saturating_sub(FRAME_OVERHEAD)).max(1) as usize
}

/// Decode one frame from the front of `buf` (consuming it) if a whole one is
/// buffered; `Ok(None)` if more bytes are needed.
///
/// `frame_max` is the negotiated maximum frame size including the 8 bytes of
/// overhead (0 = no limit, still capped at [`FRAME_MAX_CAP`]).
/// `expect_protocol_header` is true until the handshake header was read;
/// while it is, only [`PROTOCOL_HEADER`] is accepted.
///
/// The connection decodes with [`decode_in_place`] instead, which borrows the buffer;
/// this owning form is the reference the in-place one is tested against.
pub fn decode(buf: &mut BytesMut, frame_max: u32, expect_protocol_header: bool) -> Result<Option<Frame>, DecodeError> {
    if expect_protocol_header {
        return decode_protocol_header(buf);
    }
    let (frame_type, channel, size) = match frame_head(buf, frame_max)? {
        Head::Partial { total } => {
            reserve_for_frame(buf, total);
            return Ok(None);
        }
        Head::Whole { frame_type, channel, size } => (frame_type, channel, size),
    };
    let payload_end = FRAME_HEADER_LEN + size;
    let frame = match frame_type {
        FRAME_BODY => {
            buf.advance(FRAME_HEADER_LEN);
            let payload = buf.split_to(size).freeze();
            buf.advance(1);
            return Ok(Some(Frame::Body { channel, payload }));
        }
        FRAME_METHOD => Frame::Method { channel, method: decode_method(&buf[FRAME_HEADER_LEN..payload_end])? },
        FRAME_HEADER => decode_content_header(channel, &buf[FRAME_HEADER_LEN..payload_end])?,
        _ => Frame::Heartbeat,
    };
    buf.advance(payload_end + 1);
    Ok(Some(frame))
}

/// Make room in `buf` for the rest of a partly received frame `total` bytes long (as
/// [`Scan::Partial`] reports it), bounded: 7 bytes announcing a large frame must not make
/// us allocate it before it arrives.
pub fn reserve_for_frame(buf: &mut BytesMut, total: usize) {
    if total > buf.len() {
        buf.reserve((total - buf.len()).min(RESERVE_AHEAD_MAX));
    }
}

/// What [`frame_head`] found at the front of a buffer.
enum Head {
    /// Not a whole frame yet; `total` is its full length if the 7-byte header is buffered
    /// (0 otherwise).
    Partial { total: usize },
    /// A whole frame of a known type whose frame-end octet checked out; its payload is
    /// `size` bytes after the 7-byte header.
    Whole { frame_type: u8, channel: u16, size: usize },
}

/// The frame-level checks, in the order the connection reports them: frame type, size
/// against `frame_max`, heartbeat shape (all as soon as the 7-byte header is buffered),
/// then the frame-end octet once the whole frame is.
fn frame_head(buf: &[u8], frame_max: u32) -> Result<Head, DecodeError> {
    let [frame_type, c0, c1, s0, s1, s2, s3, ..] = *buf else {
        return Ok(Head::Partial { total: 0 });
    };
    let channel = u16::from_be_bytes([c0, c1]);
    let size = u32::from_be_bytes([s0, s1, s2, s3]);
    if !matches!(frame_type, FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT) {
        return Err(DecodeError::UnknownFrameType(frame_type));
    }
    let max = effective_frame_max(frame_max);
    if u64::from(size) + u64::from(FRAME_OVERHEAD) > u64::from(max) {
        return Err(DecodeError::FrameTooLarge { size, max });
    }
    if frame_type == FRAME_HEARTBEAT && (channel != 0 || size != 0) {
        return Err(DecodeError::BadHeartbeat { channel, size });
    }
    // Cannot overflow: size + 8 <= FRAME_MAX_CAP.
    let size = size as usize;
    let payload_end = FRAME_HEADER_LEN + size;
    let Some(&found) = buf.get(payload_end) else {
        return Ok(Head::Partial { total: payload_end + 1 });
    };
    if found != FRAME_END {
        return Err(DecodeError::BadFrameEnd { frame_type, channel, found });
    }
    Ok(Head::Whole { frame_type, channel, size })
}

/// A method as [`decode_in_place`] returns it: the two every message passes through
/// without amq-protocol's types, everything else boxed, so a frame stays small to move.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodRef<'a> {
    /// `basic.publish`, borrowed from the buffer (the publisher's hot path).
    Publish(PublishRef<'a>),
    /// `basic.ack` (the manual-ack consumer's hot path).
    Ack {
        /// The delivery tag.
        delivery_tag: u64,
        /// The `multiple` bit.
        multiple: bool,
    },
    /// Any other method (and a publish or ack the fast decoders declined but the parser
    /// accepted).
    Amqp(Box<AMQPClass>),
}

impl MethodRef<'_> {
    /// The method's class and method ids.
    pub fn ids(&self) -> (u16, u16) {
        match self {
            MethodRef::Publish(_) => (60, 40),
            MethodRef::Ack { .. } => (60, 80),
            MethodRef::Amqp(m) => class_method_ids(m),
        }
    }

    /// The method as amq-protocol's type.
    pub fn into_amqp(self) -> AMQPClass {
        match self {
            MethodRef::Publish(p) => p.to_amqp(),
            MethodRef::Ack { delivery_tag, multiple } => {
                AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Ack(amq_protocol::protocol::basic::Ack {
                    delivery_tag,
                    multiple,
                }))
            }
            MethodRef::Amqp(m) => *m,
        }
    }
}

/// A content header's properties as [`decode_in_place`] returns them: already checked,
/// turned into core [`Properties`] by whoever keeps them.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentProperties<'a> {
    /// A property list without a headers table, validated (complete, UTF-8) but not yet
    /// converted: the wire bytes, flags first.
    Plain(&'a [u8]),
    /// Parsed by amq-protocol (a headers table, or input the fast path declines). Boxed:
    /// `BasicProperties` is large and this is the rare case.
    Parsed(Box<BasicProperties>),
}

impl ContentProperties<'_> {
    /// The core properties these stand for.
    pub fn to_properties(&self) -> Properties {
        let mut out = Properties::default();
        self.fill(&mut out);
        out
    }

    /// Writes the core properties these stand for into `out`, which should be
    /// `Properties::default()` (a plain list sets only the properties it holds): the
    /// connection decodes into the pending publish's slot rather than moving a value there.
    pub fn fill(&self, out: &mut Properties) {
        match self {
            // The publishers' usual shapes: no properties, or only a delivery mode.
            ContentProperties::Plain([0, 0]) => {}
            ContentProperties::Plain([0x10, 0, mode]) => out.delivery_mode = Some(*mode),
            ContentProperties::Plain(bytes) => {
                if convert::fill_from_plain(bytes, out).is_none() {
                    // Not reached: `Plain` holds only lists the fast walker accepted. Should
                    // the two ever disagree, the parser still gives the right value.
                    *out = match parse_properties(*bytes) {
                        Ok((_, p)) => convert::properties_from_amqp(&p),
                        Err(_) => Properties::default(),
                    };
                }
            }
            ContentProperties::Parsed(p) => *out = convert::properties_from_amqp(p),
        }
    }
}

/// One frame decoded in place by [`decode_in_place`]: methods other than `basic.publish`
/// are parsed into amq-protocol's types, everything else borrows the read buffer, so
/// nothing large is built or moved per message.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameRef<'a> {
    /// The 8-byte "AMQP\0\0\x09\x01" header a client sends first.
    ProtocolHeader,
    /// A method frame (type 1).
    Method {
        /// The channel (0 for connection-class methods).
        channel: u16,
        /// The method and its arguments.
        method: MethodRef<'a>,
    },
    /// A content header frame (type 2).
    Header {
        /// The channel.
        channel: u16,
        /// The content class; 60 (basic) is the only one 0-9-1 uses.
        class_id: u16,
        /// Total body bytes that follow in body frames.
        body_size: u64,
        /// The properties.
        properties: ContentProperties<'a>,
    },
    /// A content body frame (type 3): this frame's slice of the body.
    Body {
        /// The channel.
        channel: u16,
        /// The payload, in the read buffer.
        payload: &'a [u8],
    },
    /// A heartbeat frame (type 8), always on channel 0.
    Heartbeat,
}

/// What [`decode_in_place`] found at the front of the buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Scan<'a> {
    /// A whole frame, `len` bytes long: the caller consumes them once done with it.
    Frame {
        /// The frame.
        frame: FrameRef<'a>,
        /// How many bytes of the buffer it took.
        len: usize,
    },
    /// More bytes are needed; `total` is the length of the frame begun, when its header is
    /// buffered (0 otherwise), for reserving room. At most `total` is worth reserving.
    Partial {
        /// The whole frame's length, or 0 if not known yet.
        total: usize,
    },
}

/// Decode the frame at the front of `buf` without consuming or copying it: the same frames
/// and the same errors, in the same order, as [`decode`], with the differences of
/// [`FrameRef`] (a `basic.publish` and the body borrow `buf`, properties are left as
/// validated bytes when they have no headers table).
// Inlined into the connection's frame loop: the frame is then built where it is matched,
// not written out and read back.
#[inline]
pub fn decode_in_place(buf: &[u8], frame_max: u32, expect_protocol_header: bool) -> Result<Scan<'_>, DecodeError> {
    if expect_protocol_header {
        let Some(head) = buf.first_chunk::<8>() else {
            return Ok(Scan::Partial { total: PROTOCOL_HEADER.len() });
        };
        if head != PROTOCOL_HEADER {
            return Err(DecodeError::BadProtocolHeader { received: *head });
        }
        return Ok(Scan::Frame { frame: FrameRef::ProtocolHeader, len: PROTOCOL_HEADER.len() });
    }
    let (frame_type, channel, size) = match frame_head(buf, frame_max)? {
        Head::Partial { total } => return Ok(Scan::Partial { total }),
        Head::Whole { frame_type, channel, size } => (frame_type, channel, size),
    };
    let payload_end = FRAME_HEADER_LEN + size;
    let payload = &buf[FRAME_HEADER_LEN..payload_end];
    let frame = match frame_type {
        FRAME_BODY => FrameRef::Body { channel, payload },
        FRAME_METHOD => {
            let fast = match payload {
                [0, 60, 0, 40, ..] => fast::publish_ref(payload).map(MethodRef::Publish),
                [0, 60, 0, 80, ..] => {
                    fast::ack_ref(payload).map(|(delivery_tag, multiple)| MethodRef::Ack { delivery_tag, multiple })
                }
                _ => None,
            };
            let method = match fast {
                Some(method) => method,
                None => MethodRef::Amqp(Box::new(decode_method(payload)?)),
            };
            FrameRef::Method { channel, method }
        }
        FRAME_HEADER => {
            let (class_id, body_size, props) = content_header_prefix(channel, payload)?;
            let properties = if fast::walk_plain_properties(props, |_, _| ()).is_some() {
                ContentProperties::Plain(props)
            } else {
                ContentProperties::Parsed(Box::new(parse_content_properties(channel, props)?))
            };
            FrameRef::Header { channel, class_id, body_size, properties }
        }
        _ => FrameRef::Heartbeat,
    };
    Ok(Scan::Frame { frame, len: payload_end + 1 })
}

fn decode_protocol_header(buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
    let Some(head) = buf.get(..PROTOCOL_HEADER.len()) else {
        return Ok(None);
    };
    if head != PROTOCOL_HEADER {
        let mut received = [0u8; 8];
        received.copy_from_slice(head);
        return Err(DecodeError::BadProtocolHeader { received });
    }
    buf.advance(PROTOCOL_HEADER.len());
    Ok(Some(Frame::ProtocolHeader))
}

fn decode_method(payload: &[u8]) -> Result<AMQPClass, DecodeError> {
    let (class_id, method_id) = match payload {
        [c0, c1, m0, m1, ..] => (u16::from_be_bytes([*c0, *c1]), u16::from_be_bytes([*m0, *m1])),
        _ => {
            let class_id = match payload {
                [c0, c1, ..] => u16::from_be_bytes([*c0, *c1]),
                _ => 0,
            };
            return Err(DecodeError::Syntax {
                class_id,
                method_id: 0,
                detail: format!("method frame payload of {} bytes cannot hold class-id and method-id", payload.len()),
            });
        }
    };
    if let Some(method) = fast::decode(class_id, method_id, payload) {
        return Ok(method);
    }
    let syntax = |detail: String| DecodeError::Syntax { class_id, method_id, detail };
    if method_name_by_id(class_id, method_id).is_none() {
        return Err(DecodeError::UnknownMethod { class_id, method_id });
    }
    // basic.qos: amq-protocol drops prefetch-size, which RabbitMQ refuses unless it is 0.
    if (class_id, method_id) == (60, 10)
        && let [s0, s1, s2, s3, ..] = payload[4..]
    {
        let size = u32::from_be_bytes([s0, s1, s2, s3]);
        if size != 0 {
            return Err(DecodeError::NotImplemented {
                class_id,
                method_id,
                detail: format!("prefetch_size!=0 ({size})"),
            });
        }
    }
    if nesting::method_too_deep(class_id, method_id, &payload[4..], MAX_TABLE_DEPTH) {
        return Err(syntax(format!("field table nested deeper than {MAX_TABLE_DEPTH} levels")));
    }
    match parse_class(payload) {
        Ok(([], method)) => Ok(method),
        Ok((rest, _)) => Err(syntax(format!("{} unexpected bytes after the arguments", rest.len()))),
        Err(err) => Err(syntax(parser_error_text("arguments", &err))),
    }
}

fn decode_content_header(channel: u16, payload: &[u8]) -> Result<Frame, DecodeError> {
    let (class_id, body_size, props) = content_header_prefix(channel, payload)?;
    // The common shapes on a publisher's hot path, without the parser: no properties, or
    // only a delivery mode (what parse_properties would return for these bytes).
    match props {
        [0, 0] => return Ok(Frame::Header { channel, class_id, body_size, properties: BasicProperties::default() }),
        [0x10, 0, mode] => {
            let properties = BasicProperties::default().with_delivery_mode(*mode);
            return Ok(Frame::Header { channel, class_id, body_size, properties });
        }
        _ => {}
    }
    let properties = parse_content_properties(channel, props)?;
    Ok(Frame::Header { channel, class_id, body_size, properties })
}

/// A content header's class id, weight (checked to be 0) and body size; returns the class
/// id, the body size and the property list (flags onwards, at least the two flag bytes).
fn content_header_prefix(channel: u16, payload: &[u8]) -> Result<(u16, u64, &[u8]), DecodeError> {
    let bad = |detail: String| DecodeError::BadContentHeader { channel, detail };
    // class-id (2), weight (2), body-size (8), property flags (2).
    let [c0, c1, w0, w1, s0, s1, s2, s3, s4, s5, s6, s7, props @ ..] = payload else {
        return Err(bad(format!("payload of {} bytes is shorter than the 14-byte minimum", payload.len())));
    };
    if props.len() < 2 {
        return Err(bad(format!("payload of {} bytes is shorter than the 14-byte minimum", payload.len())));
    }
    let class_id = u16::from_be_bytes([*c0, *c1]);
    let weight = u16::from_be_bytes([*w0, *w1]);
    if weight != 0 {
        return Err(bad(format!("weight is {weight}, must be 0")));
    }
    let body_size = u64::from_be_bytes([*s0, *s1, *s2, *s3, *s4, *s5, *s6, *s7]);
    Ok((class_id, body_size, props))
}

/// The property list through amq-protocol's parser, with the nesting guard first.
fn parse_content_properties(channel: u16, props: &[u8]) -> Result<BasicProperties, DecodeError> {
    let bad = |detail: String| DecodeError::BadContentHeader { channel, detail };
    if nesting::properties_too_deep(props, MAX_TABLE_DEPTH) {
        return Err(bad(format!("headers table nested deeper than {MAX_TABLE_DEPTH} levels")));
    }
    match parse_properties(props) {
        Ok(([], properties)) => Ok(properties),
        Ok((rest, _)) => Err(bad(format!("{} unexpected bytes after the properties", rest.len()))),
        Err(err) => Err(bad(parser_error_text("properties", &err))),
    }
}

fn parser_error_text(what: &str, err: &ParserError) -> String {
    match err {
        ParserError::Incomplete(_) => format!("{what} truncated"),
        ParserError::Error(e) | ParserError::Failure(e) => format!("invalid {what} ({e})"),
    }
}

/// Append the wire form of `frame` to `out`.
///
/// Bodies longer than `u32::MAX` bytes cannot be one frame; split them with
/// [`encode_content`] (such a frame is not written).
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::ProtocolHeader => out.extend_from_slice(PROTOCOL_HEADER),
        Frame::Heartbeat => out.extend_from_slice(&HEARTBEAT_FRAME),
        Frame::Method { channel, method } => put_method_frame(out, *channel, method),
        Frame::Header { channel, class_id, body_size, properties } => {
            put_header_frame(out, *channel, *class_id, *body_size, properties)
        }
        Frame::Body { channel, payload } => put_body_frame(out, *channel, payload),
    }
}

/// Append a whole message to `out`: the method (basic.deliver, basic.get-ok
/// or basic.return), a content header, and the body split into frames of at
/// most `frame_max` bytes (no body frame for an empty body).
pub fn encode_content(
    channel: u16,
    method: &AMQPClass,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
    out: &mut BytesMut,
) {
    let props = |out: &mut BytesMut| put_properties(out, properties);
    put_content(out, channel, method.get_amqp_class_id(), props, body, frame_max, |out| {
        put_method_frame(out, channel, method)
    });
}

/// The arguments of a `basic.deliver`, borrowed from the message being delivered.
#[derive(Debug, Clone, Copy)]
pub struct DeliverArgs<'a> {
    /// The consumer's tag.
    pub consumer_tag: &'a str,
    /// The channel's delivery tag for this delivery.
    pub delivery_tag: u64,
    /// Whether the message was delivered before.
    pub redelivered: bool,
    /// The exchange it was published to.
    pub exchange: &'a str,
    /// The routing key it was published with.
    pub routing_key: &'a str,
}

/// [`encode_content`] for `basic.deliver`, the method on every consumed message's path,
/// with its method frame written by hand: no owned `ShortString`s, no generator layers.
/// Strings longer than a short string allows are cut at a character boundary.
pub fn encode_deliver(
    channel: u16,
    args: &DeliverArgs<'_>,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
    out: &mut BytesMut,
) {
    encode_deliver_with(channel, args, |out| put_properties(out, properties), body, frame_max, out);
}

/// [`encode_deliver`] with the content header's property flags and values written by
/// `put_properties` (which must write a complete, valid property list), so a caller that
/// can encode its own property form directly need not build a [`BasicProperties`] first.
pub fn encode_deliver_with(
    channel: u16,
    args: &DeliverArgs<'_>,
    put_properties: impl FnOnce(&mut BytesMut) -> Result<(), GenError>,
    body: &[u8],
    frame_max: u32,
    out: &mut BytesMut,
) {
    put_content(out, channel, 60, put_properties, body, frame_max, |out| {
        let start = begin_frame(out, FRAME_METHOD, channel);
        out.put_u16(60);
        out.put_u16(60);
        put_short_str(out, args.consumer_tag);
        out.put_u64(args.delivery_tag);
        out.put_u8(u8::from(args.redelivered));
        put_short_str(out, args.exchange);
        put_short_str(out, args.routing_key);
        end_frame(out, start, Ok(()));
    });
}

/// A method frame written by `put_method`, then the content header and the body split into
/// frames of at most `frame_max` bytes (none for an empty body), with room reserved up front.
fn put_content(
    out: &mut BytesMut,
    channel: u16,
    class_id: u16,
    properties: impl FnOnce(&mut BytesMut) -> Result<(), GenError>,
    body: &[u8],
    frame_max: u32,
    put_method: impl FnOnce(&mut BytesMut),
) {
    let chunk = max_body_chunk(frame_max);
    let body_frames = body.len().div_ceil(chunk);
    // Method and header frames are rarely above a few hundred bytes.
    out.reserve(body.len() + body_frames * FRAME_OVERHEAD as usize + 512);
    put_method(out);
    put_header_frame_with(out, channel, class_id, body.len() as u64, properties);
    for piece in body.chunks(chunk) {
        put_body_frame(out, channel, piece);
    }
}

/// A short string: one length octet, then at most 255 bytes, cut at a character boundary.
fn put_short_str(out: &mut BytesMut, s: &str) {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    // `end` ≤ 255 by construction.
    out.put_u8(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// Writes the frame header with a placeholder size; returns where the frame starts.
fn begin_frame(out: &mut BytesMut, frame_type: u8, channel: u16) -> usize {
    let start = out.len();
    out.put_u8(frame_type);
    out.put_u16(channel);
    out.put_u32(0);
    start
}

/// Fills in the size and the frame end, or removes the partial frame if
/// generation failed (which amq-protocol's generators cannot do on a growable
/// buffer with values built through its checked constructors).
fn end_frame(out: &mut BytesMut, start: usize, generated: Result<(), GenError>) {
    let size = u32::try_from(out.len() - start - FRAME_HEADER_LEN);
    debug_assert!(generated.is_ok() && size.is_ok(), "frame generation failed: {generated:?}");
    match (generated, size) {
        (Ok(()), Ok(size)) => {
            out[start + 3..start + FRAME_HEADER_LEN].copy_from_slice(&size.to_be_bytes());
            out.put_u8(FRAME_END);
        }
        _ => out.truncate(start),
    }
}

fn put_method_frame(out: &mut BytesMut, channel: u16, method: &AMQPClass) {
    let start = begin_frame(out, FRAME_METHOD, channel);
    let generated = gen_class(method)(WriteContext::from(Sink::new(out))).map(|_| ());
    end_frame(out, start, generated);
}

fn put_header_frame(out: &mut BytesMut, channel: u16, class_id: u16, body_size: u64, properties: &BasicProperties) {
    put_header_frame_with(out, channel, class_id, body_size, |out| put_properties(out, properties));
}

/// A content header whose property flags and values `properties` writes.
fn put_header_frame_with(
    out: &mut BytesMut,
    channel: u16,
    class_id: u16,
    body_size: u64,
    properties: impl FnOnce(&mut BytesMut) -> Result<(), GenError>,
) {
    let start = begin_frame(out, FRAME_HEADER, channel);
    out.put_u16(class_id);
    out.put_u16(0); // weight
    out.put_u64(body_size);
    let generated = properties(out);
    end_frame(out, start, generated);
}

/// amq-protocol's encoding of `properties` (flags, then the values present).
fn put_properties(out: &mut BytesMut, properties: &BasicProperties) -> Result<(), GenError> {
    gen_properties(properties)(WriteContext::from(Sink::new(out))).map(|_| ())
}

fn put_body_frame(out: &mut BytesMut, channel: u16, payload: &[u8]) {
    let Ok(size) = u32::try_from(payload.len()) else {
        debug_assert!(false, "body frame of {} bytes", payload.len());
        return;
    };
    out.reserve(payload.len() + FRAME_OVERHEAD as usize);
    out.put_u8(FRAME_BODY);
    out.put_u16(channel);
    out.put_u32(size);
    out.extend_from_slice(payload);
    out.put_u8(FRAME_END);
}

#[cfg(test)]
mod tests {
    use amq_protocol::protocol::{basic, connection, exchange, queue};
    use amq_protocol::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString};
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    use super::*;

    fn frame_bytes(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![frame_type];
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out.push(FRAME_END);
        out
    }

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(frame, &mut out);
        out.to_vec()
    }

    /// A frame payload that starts like the real thing for `frame_type` (a method's class and
    /// method ids, a content header's class id and body size) and goes on with `tail`.
    fn garbage_payload(frame_type: u8, ids: (u16, u16), tail: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        if frame_type == 1 {
            payload.extend_from_slice(&ids.0.to_be_bytes());
            payload.extend_from_slice(&ids.1.to_be_bytes());
        } else if frame_type == 2 {
            payload.extend_from_slice(b"\x00\x3c\x00\x00\0\0\0\0\0\0\0\x01");
        }
        payload.extend_from_slice(tail);
        payload
    }

    /// Overwrites `bytes` at the given positions (taken modulo its length) with the values.
    fn overwrite(bytes: &mut [u8], flips: &[(usize, u8)]) {
        for &(at, value) in flips {
            let at = at % bytes.len();
            bytes[at] = value;
        }
    }

    /// Decodes every frame in `bytes`; errors if bytes are left over.
    fn decode_all(bytes: &[u8], frame_max: u32) -> Result<Vec<Frame>, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = decode(&mut buf, frame_max, false)? {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        Ok(frames)
    }

    fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
        decode(&mut BytesMut::from(bytes), 131_072, false)
    }

    /// `Ok(None)` for every strict prefix, and the buffer is untouched.
    fn assert_needs_more_at_every_split(bytes: &[u8]) {
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(decode(&mut buf, 131_072, false), Ok(None), "cut at {cut}");
            assert_eq!(&buf[..], &bytes[..cut]);
        }
    }

    fn publish(exchange: &str, routing_key: &str, mandatory: bool) -> AMQPClass {
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory,
            immediate: false,
        }))
    }

    // ---- golden bytes ----

    #[test]
    fn golden_heartbeat() {
        let bytes = [8, 0, 0, 0, 0, 0, 0, 0xCE];
        assert_eq!(decode_all(&bytes, 4096), Ok(vec![Frame::Heartbeat]));
        assert_eq!(encoded(&Frame::Heartbeat), bytes);
        assert_needs_more_at_every_split(&bytes);
    }

    #[test]
    fn golden_connection_start_ok_as_pika_sends_it() {
        // Built by hand from the 0-9-1 spec: client-properties
        // {capabilities: {publisher_confirms: true}, product: "pika"},
        // mechanism PLAIN, response "\0guest\0guest", locale en_US.
        let payload = [
            &b"\x00\x0a\x00\x0b"[..],
            b"\x00\x00\x00\x38",
            b"\x0ccapabilities",
            b"F\x00\x00\x00\x15",
            b"\x12publisher_confirms",
            b"t\x01",
            b"\x07product",
            b"S\x00\x00\x00\x04pika",
            b"\x05PLAIN",
            b"\x00\x00\x00\x0c\x00guest\x00guest",
            b"\x05en_US",
        ]
        .concat();
        assert_eq!(payload.len(), 0x5c);
        let bytes = frame_bytes(1, 0, &payload);

        let mut capabilities = FieldTable::default();
        capabilities.insert("publisher_confirms".into(), AMQPValue::Boolean(true));
        let mut client_properties = FieldTable::default();
        client_properties.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
        client_properties.insert("product".into(), AMQPValue::LongString("pika".into()));
        let expected = Frame::Method {
            channel: 0,
            method: AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties,
                mechanism: "PLAIN".into(),
                response: b"\0guest\0guest".to_vec().into(),
                locale: "en_US".into(),
            })),
        };
        assert_eq!(decode_all(&bytes, 4096), Ok(vec![expected.clone()]));
        assert_eq!(encoded(&expected), bytes);
        assert_needs_more_at_every_split(&bytes);
    }

    #[test]
    fn golden_basic_publish() {
        let bytes = [
            &b"\x01\x00\x01\x00\x00\x00\x15"[..],
            b"\x00\x3c\x00\x28",
            b"\x00\x00",
            b"\x0aamq.direct",
            b"\x02rk",
            b"\x01",
            b"\xce",
        ]
        .concat();
        let frame = Frame::Method { channel: 1, method: publish("amq.direct", "rk", true) };
        assert_eq!(decode_all(&bytes, 4096), Ok(vec![frame.clone()]));
        assert_eq!(encoded(&frame), bytes);
        assert_needs_more_at_every_split(&bytes);
    }

    #[test]
    fn golden_content_header_and_body() {
        let header = [
            &b"\x02\x00\x01\x00\x00\x00\x1a"[..],
            b"\x00\x3c\x00\x00",
            b"\x00\x00\x00\x00\x00\x00\x00\x05",
            b"\x90\x00",
            b"\x0atext/plain",
            b"\x02",
            b"\xce",
        ]
        .concat();
        let body = b"\x03\x00\x01\x00\x00\x00\x05hello\xce";
        let frames = vec![
            Frame::Header {
                channel: 1,
                class_id: 60,
                body_size: 5,
                properties: BasicProperties::default().with_content_type("text/plain".into()).with_delivery_mode(2),
            },
            Frame::Body { channel: 1, payload: Bytes::from_static(b"hello") },
        ];
        assert_eq!(decode_all(&[&header[..], body].concat(), 4096), Ok(frames.clone()));
        assert_eq!(encoded(&frames[0]), header);
        assert_eq!(encoded(&frames[1]), body);
        assert_needs_more_at_every_split(&header);
        assert_needs_more_at_every_split(body);
        // The header amq-protocol's own test expects (no properties).
        let bare = Frame::Header { channel: 1, class_id: 60, body_size: 5, properties: BasicProperties::default() };
        assert_eq!(encoded(&bare), [2, 0, 1, 0, 0, 0, 14, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 206]);
    }

    #[test]
    fn body_payload_is_split_from_the_read_buffer_not_copied() {
        let mut buf = BytesMut::from(&b"\x03\x00\x02\x00\x00\x00\x04data\xce"[..]);
        let range = buf.as_ptr_range();
        let Ok(Some(Frame::Body { channel, payload })) = decode(&mut buf, 4096, false) else {
            panic!("expected a body frame");
        };
        assert_eq!((channel, &payload[..]), (2, &b"data"[..]));
        assert!(range.contains(&payload.as_ptr()));
    }

    // ---- protocol header ----

    #[test]
    fn protocol_header() {
        let mut buf = BytesMut::from(&b"AMQP\x00\x00\x09\x01\x08"[..]);
        assert_eq!(decode(&mut buf, 0, true), Ok(Some(Frame::ProtocolHeader)));
        assert_eq!(&buf[..], b"\x08");
        assert_eq!(encoded(&Frame::ProtocolHeader), PROTOCOL_HEADER);
        for cut in 0..8 {
            let mut buf = BytesMut::from(&PROTOCOL_HEADER[..cut]);
            assert_eq!(decode(&mut buf, 0, true), Ok(None));
        }
    }

    #[test]
    fn bad_protocol_header() {
        for bytes in [
            &b"AMQP\x01\x01\x00\x09"[..], // 0-9 style
            b"AMQP\x00\x01\x00\x00",      // AMQP 1.0
            b"AMQP\x00\x00\x08\x00",      // 0-8
            b"GET / HTTP/1.1\r\n",
        ] {
            let mut buf = BytesMut::from(bytes);
            let err = decode(&mut buf, 0, true).expect_err("refused");
            assert_eq!(err, DecodeError::BadProtocolHeader { received: bytes[..8].try_into().expect("8 bytes") });
            assert_eq!(err.reply_code(), None);
        }
        let err = decode(&mut BytesMut::from(&b"AMQP\x00\x01\x00\x00"[..]), 0, true).expect_err("refused");
        assert_eq!(
            err.to_string(),
            r#"unsupported protocol header "AMQP\x00\x01\x00\x00", expected "AMQP\x00\x00\x09\x01""#
        );
        // Once past the handshake, "AMQP" is just an unknown frame type.
        assert_eq!(decode_one(PROTOCOL_HEADER), Err(DecodeError::UnknownFrameType(b'A')));
    }

    // ---- frame-level errors ----

    #[test]
    fn frame_over_frame_max_is_refused_before_its_payload_arrives() {
        // Only the 7-byte header of a 5000-byte body frame is buffered.
        let mut buf = BytesMut::from(&b"\x03\x00\x01\x00\x00\x13\x88"[..]);
        assert_eq!(decode(&mut buf, 4096, false), Err(DecodeError::FrameTooLarge { size: 5000, max: 4096 }));
        // size + 8 == frame_max is fine.
        let mut buf = BytesMut::from(&b"\x03\x00\x01\x00\x00\x0f\xf8"[..]);
        assert_eq!(decode(&mut buf, 4096, false), Ok(None));
        // frame_max 0 is "no limit", still capped.
        let mut buf = BytesMut::from(&b"\x01\x00\x00\xff\xff\xff\xff"[..]);
        let err = decode(&mut buf, 0, false).expect_err("capped");
        assert_eq!(err, DecodeError::FrameTooLarge { size: u32::MAX, max: FRAME_MAX_CAP });
        assert_eq!(err.reply_code(), Some(501));
    }

    #[test]
    fn an_announced_frame_is_not_allocated_before_it_arrives() {
        // 7 bytes announcing a 100 MiB body frame, with no frame_max.
        let mut buf = BytesMut::from(&b"\x03\x00\x01\x06\x40\x00\x00"[..]);
        assert_eq!(decode(&mut buf, 0, false), Ok(None));
        assert!(buf.capacity() <= 2 * RESERVE_AHEAD_MAX, "{}", buf.capacity());
    }

    #[test]
    fn bad_frame_end() {
        let mut bytes = frame_bytes(8, 0, b"");
        bytes[7] = 0xCD;
        assert_eq!(decode_one(&bytes), Err(DecodeError::BadFrameEnd { frame_type: 8, channel: 0, found: 0xCD }));
        let mut bytes = encoded(&Frame::Method { channel: 3, method: publish("", "q", false) });
        *bytes.last_mut().expect("non-empty") = 0;
        assert!(matches!(decode_one(&bytes), Err(DecodeError::BadFrameEnd { frame_type: 1, channel: 3, found: 0 })));
    }

    #[test]
    fn unknown_frame_type() {
        for t in [0u8, 4, 7, 9, 0xCE, 0xFF] {
            let err = decode_one(&frame_bytes(t, 0, b"")).expect_err("refused");
            assert_eq!(err, DecodeError::UnknownFrameType(t));
            assert_eq!(err.reply_code(), Some(501));
        }
    }

    #[test]
    fn heartbeat_must_be_on_channel_zero_and_empty() {
        assert_eq!(decode_one(&frame_bytes(8, 1, b"")), Err(DecodeError::BadHeartbeat { channel: 1, size: 0 }));
        assert_eq!(decode_one(&frame_bytes(8, 0, b"x")), Err(DecodeError::BadHeartbeat { channel: 0, size: 1 }));
    }

    // ---- method errors ----

    #[test]
    fn unknown_method() {
        let err = decode_one(&frame_bytes(1, 1, b"\x00\x3c\x00\x63")).expect_err("refused");
        assert_eq!(err, DecodeError::UnknownMethod { class_id: 60, method_id: 99 });
        assert_eq!(err.reply_code(), Some(540));
        assert_eq!(err.to_string(), "unknown method: class 60, method 99");
        // Unknown class, and a method-id that exists only in another class.
        assert!(matches!(
            decode_one(&frame_bytes(1, 1, b"\x00\x46\x00\x0a\x00")),
            Err(DecodeError::UnknownMethod { class_id: 70, method_id: 10 })
        ));
        assert!(matches!(
            decode_one(&frame_bytes(1, 1, b"\x00\x55\x00\x14")),
            Err(DecodeError::UnknownMethod { class_id: 85, method_id: 20 })
        ));
    }

    #[test]
    fn method_syntax_errors() {
        let syntax = |bytes: &[u8]| match decode_one(bytes) {
            Err(err @ DecodeError::Syntax { .. }) => {
                assert_eq!(err.reply_code(), Some(502));
                err
            }
            other => panic!("expected a syntax error, got {other:?}"),
        };
        // Payload too short for the ids.
        for payload in [&b""[..], b"\x00", b"\x00\x3c", b"\x00\x3c\x00"] {
            syntax(&frame_bytes(1, 1, payload));
        }
        assert!(matches!(
            syntax(&frame_bytes(1, 1, b"\x00\x3c\x00")),
            DecodeError::Syntax { class_id: 60, method_id: 0, .. }
        ));
        // basic.publish whose exchange name claims 10 bytes but has 3.
        let err = syntax(&frame_bytes(1, 1, b"\x00\x3c\x00\x28\x00\x00\x0aamq"));
        assert_eq!(err.to_string(), "malformed basic.publish: arguments truncated");
        // Trailing bytes after the arguments.
        let mut bytes = encoded(&Frame::Method { channel: 1, method: publish("", "q", false) });
        let end = bytes.len() - 1;
        bytes.insert(end, 0);
        bytes[6] += 1;
        assert!(syntax(&bytes).to_string().contains("1 unexpected bytes"));
        // queue.declare with a field-table value of unknown type 'z'.
        let payload = [&b"\x00\x32\x00\x0a\x00\x00\x01q\x02"[..], b"\x00\x00\x00\x04\x01kz\x00"].concat();
        syntax(&frame_bytes(1, 1, &payload));
        // Invalid UTF-8 in a short string.
        syntax(&frame_bytes(1, 1, b"\x00\x3c\x00\x28\x00\x00\x01\xff\x00\x00"));
    }

    /// `{"a": {"a": ... {}}}`, `depth` tables deep.
    fn nested(depth: usize) -> FieldTable {
        let mut table = FieldTable::default();
        for _ in 1..depth {
            let mut outer = FieldTable::default();
            outer.insert("a".into(), AMQPValue::FieldTable(table));
            table = outer;
        }
        table
    }

    /// Every method that carries a field table, with non-empty strings
    /// before the table so that the nesting guard must skip them correctly.
    fn methods_with_table(table: FieldTable) -> Vec<AMQPClass> {
        vec![
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: table.clone(),
                mechanisms: "PLAIN".into(),
                locales: "en_US".into(),
            })),
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: table.clone(),
                mechanism: "PLAIN".into(),
                response: "\0a\0b".into(),
                locale: "en_US".into(),
            })),
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: "ex".into(),
                kind: "topic".into(),
                durable: true,
                arguments: table.clone(),
                ..Default::default()
            })),
            AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
                destination: "d".into(),
                source: "src".into(),
                routing_key: "rk.#".into(),
                nowait: true,
                arguments: table.clone(),
            })),
            AMQPClass::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
                destination: "d".into(),
                source: "src".into(),
                routing_key: "rk.#".into(),
                nowait: false,
                arguments: table.clone(),
            })),
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "q1".into(),
                exclusive: true,
                arguments: table.clone(),
                ..Default::default()
            })),
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: "q1".into(),
                exchange: "ex".into(),
                routing_key: "rk".into(),
                nowait: true,
                arguments: table.clone(),
            })),
            AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
                queue: "q1".into(),
                exchange: "ex".into(),
                routing_key: "rk".into(),
                arguments: table.clone(),
            })),
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: "q1".into(),
                consumer_tag: "ctag".into(),
                no_ack: true,
                arguments: table,
                ..Default::default()
            })),
        ]
    }

    #[test]
    fn field_tables_nested_up_to_the_limit_decode() {
        for method in methods_with_table(nested(MAX_TABLE_DEPTH)) {
            let frame = Frame::Method { channel: 1, method };
            assert_eq!(decode_all(&encoded(&frame), 0), Ok(vec![frame]));
        }
        let frame = Frame::Header {
            channel: 1,
            class_id: 60,
            body_size: 0,
            properties: BasicProperties::default()
                .with_content_type("a/b".into())
                .with_content_encoding("gzip".into())
                .with_headers(nested(MAX_TABLE_DEPTH)),
        };
        assert_eq!(decode_all(&encoded(&frame), 0), Ok(vec![frame]));
    }

    #[test]
    fn field_tables_nested_deeper_are_refused_for_every_method() {
        for method in methods_with_table(nested(MAX_TABLE_DEPTH + 1)) {
            let name = method_name(&method);
            let frame = Frame::Method { channel: 1, method };
            match decode_one(&encoded(&frame)) {
                Err(DecodeError::Syntax { detail, .. }) => {
                    assert!(detail.contains("nested deeper"), "{name}: {detail}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        for properties in [
            BasicProperties::default().with_headers(nested(MAX_TABLE_DEPTH + 1)),
            BasicProperties::default()
                .with_content_type("a/b".into())
                .with_content_encoding("gzip".into())
                .with_headers(nested(MAX_TABLE_DEPTH + 1))
                .with_priority(1),
        ] {
            let frame = Frame::Header { channel: 1, class_id: 60, body_size: 0, properties };
            assert!(matches!(decode_one(&encoded(&frame)), Err(DecodeError::BadContentHeader { .. })));
        }
    }

    #[test]
    fn hostile_nesting_is_an_error_not_a_stack_overflow() {
        // 20,000 levels in a 140 KB queue.declare: amq-protocol alone
        // would overflow the stack and abort the process.
        let mut table = 0u32.to_be_bytes().to_vec();
        for _ in 0..20_000 {
            let mut outer = ((table.len() + 3) as u32).to_be_bytes().to_vec();
            outer.extend_from_slice(&[1, b'a', b'F']);
            outer.extend_from_slice(&table);
            table = outer;
        }
        let payload = [&b"\x00\x32\x00\x0a\x00\x00\x01q\x00"[..], &table].concat();
        assert!(matches!(
            decode(&mut BytesMut::from(&frame_bytes(1, 1, &payload)[..]), 0, false),
            Err(DecodeError::Syntax { class_id: 50, method_id: 10, .. })
        ));
        let header = [&b"\x00\x3c\x00\x00\0\0\0\0\0\0\0\0\x20\x00"[..], &table].concat();
        assert!(matches!(
            decode(&mut BytesMut::from(&frame_bytes(2, 1, &header)[..]), 0, false),
            Err(DecodeError::BadContentHeader { .. })
        ));
    }

    // ---- content header errors ----

    #[test]
    fn content_header_errors() {
        let bad = |payload: &[u8]| match decode_one(&frame_bytes(2, 1, payload)) {
            Err(DecodeError::BadContentHeader { channel: 1, detail }) => detail,
            other => panic!("expected a content header error, got {other:?}"),
        };
        assert!(bad(b"\x00\x3c\x00\x00").contains("shorter"));
        assert!(bad(b"\x00\x3c\x00\x00\0\0\0\0\0\0\0\x05\x00").contains("shorter"));
        assert!(bad(b"\x00\x3c\x00\x01\0\0\0\0\0\0\0\x05\x00\x00").contains("weight is 1"));
        // content-type flag set, string missing.
        assert!(bad(b"\x00\x3c\x00\x00\0\0\0\0\0\0\0\x05\x80\x00").contains("truncated"));
        // A property flag word followed by junk.
        assert!(bad(b"\x00\x3c\x00\x00\0\0\0\0\0\0\0\x05\x00\x00\x01").contains("unexpected"));
    }

    // ---- encode_content ----

    #[test]
    fn encode_deliver_writes_what_the_generic_encoder_writes() {
        let long = "é".repeat(200);
        for (tag, exchange, key) in
            [("ctag", "", "q"), ("amq.ctag-1", "amq.topic", "a.b.c"), (&long[..], &long[..], "k")]
        {
            for redelivered in [false, true] {
                let props = BasicProperties::default().with_delivery_mode(2);
                let body = vec![7u8; 300];
                let mut fast = BytesMut::new();
                let args = DeliverArgs { consumer_tag: tag, delivery_tag: 42, redelivered, exchange, routing_key: key };
                encode_deliver(3, &args, &props, &body, 256, &mut fast);
                let method = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: crate::error::truncate(tag, 255).into(),
                    delivery_tag: 42,
                    redelivered,
                    exchange: crate::error::truncate(exchange, 255).into(),
                    routing_key: key.into(),
                }));
                let mut generic = BytesMut::new();
                encode_content(3, &method, &props, &body, 256, &mut generic);
                assert_eq!(fast, generic);
            }
        }
    }

    #[test]
    fn encode_content_splits_the_body_at_frame_max() {
        let deliver = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "ctag".into(),
            delivery_tag: 7,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
        }));
        let props = BasicProperties::default().with_message_id("m1".into());
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut out = BytesMut::new();
        encode_content(5, &deliver, &props, &body, 4096, &mut out);
        let frames = decode_all(&out, 4096).expect("decodes");
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[0], Frame::Method { channel: 5, method: deliver.clone() });
        assert_eq!(frames[1], Frame::Header { channel: 5, class_id: 60, body_size: 10_000, properties: props.clone() });
        let sizes: Vec<usize> = frames[2..]
            .iter()
            .map(|f| match f {
                Frame::Body { channel: 5, payload } => payload.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, [4088, 4088, 1824]);

        // An empty body has no body frame.
        let mut out = BytesMut::new();
        encode_content(5, &deliver, &props, b"", 4096, &mut out);
        assert_eq!(decode_all(&out, 4096).expect("decodes").len(), 2);
    }

    // ---- property tests ----

    fn short_string() -> impl Strategy<Value = ShortString> {
        prop_oneof!["[ -~]{0,30}", "\\PC{0,12}"].prop_map(ShortString::from)
    }

    fn amqp_value() -> impl Strategy<Value = AMQPValue> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(AMQPValue::Boolean),
            any::<i8>().prop_map(AMQPValue::ShortShortInt),
            any::<u8>().prop_map(AMQPValue::ShortShortUInt),
            any::<i16>().prop_map(AMQPValue::ShortInt),
            any::<u16>().prop_map(AMQPValue::ShortUInt),
            any::<i32>().prop_map(AMQPValue::LongInt),
            any::<u32>().prop_map(AMQPValue::LongUInt),
            any::<i64>().prop_map(AMQPValue::LongLongInt),
            any::<f32>().prop_filter("NaN != NaN", |f| !f.is_nan()).prop_map(AMQPValue::Float),
            any::<f64>().prop_filter("NaN != NaN", |f| !f.is_nan()).prop_map(AMQPValue::Double),
            (any::<u8>(), any::<u32>())
                .prop_map(|(scale, value)| AMQPValue::DecimalValue(DecimalValue { scale, value })),
            // Arbitrary bytes: long strings need not be UTF-8.
            vec(any::<u8>(), 0..24).prop_map(|b| AMQPValue::LongString(LongString::from(b))),
            any::<u64>().prop_map(AMQPValue::Timestamp),
            vec(any::<u8>(), 0..24).prop_map(|b| AMQPValue::ByteArray(ByteArray::from(b))),
            Just(AMQPValue::Void),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(|v| AMQPValue::FieldArray(FieldArray::from(v))),
                btree_map(short_string(), inner, 0..6).prop_map(|m| AMQPValue::FieldTable(FieldTable::from(m))),
            ]
        })
    }

    fn field_table() -> impl Strategy<Value = FieldTable> {
        btree_map(short_string(), amqp_value(), 0..6).prop_map(FieldTable::from)
    }

    fn properties() -> impl Strategy<Value = BasicProperties> {
        let s = || proptest::option::of(short_string());
        (
            (s(), s(), proptest::option::of(field_table())),
            (any::<Option<u8>>(), any::<Option<u8>>(), s(), s(), s()),
            (s(), any::<Option<u64>>(), s(), s(), s(), s()),
        )
            .prop_map(
                |(
                    (content_type, content_encoding, headers),
                    (delivery_mode, priority, correlation_id, reply_to, expiration),
                    (message_id, timestamp, kind, user_id, app_id, cluster_id),
                )| {
                    let mut p = BasicProperties::default();
                    macro_rules! set {
                        ($($field:ident => $with:ident),*) => {
                            $(if let Some(v) = $field { p = p.$with(v); })*
                        };
                    }
                    set!(
                        content_type => with_content_type,
                        content_encoding => with_content_encoding,
                        headers => with_headers,
                        delivery_mode => with_delivery_mode,
                        priority => with_priority,
                        correlation_id => with_correlation_id,
                        reply_to => with_reply_to,
                        expiration => with_expiration,
                        message_id => with_message_id,
                        timestamp => with_timestamp,
                        kind => with_type,
                        user_id => with_user_id,
                        app_id => with_app_id,
                        cluster_id => with_cluster_id
                    );
                    p
                },
            )
    }

    fn method() -> impl Strategy<Value = AMQPClass> {
        prop_oneof![
            (short_string(), short_string(), any::<bool>(), any::<bool>()).prop_map(
                |(exchange, routing_key, mandatory, immediate)| {
                    AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                        exchange,
                        routing_key,
                        mandatory,
                        immediate,
                    }))
                }
            ),
            (short_string(), any::<u64>(), any::<bool>(), short_string(), short_string()).prop_map(
                |(consumer_tag, delivery_tag, redelivered, exchange, routing_key)| {
                    AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                        consumer_tag,
                        delivery_tag,
                        redelivered,
                        exchange,
                        routing_key,
                    }))
                }
            ),
            (short_string(), any::<[bool; 5]>(), field_table()).prop_map(
                |(queue, [passive, durable, exclusive, auto_delete, nowait], arguments)| {
                    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                        queue,
                        passive,
                        durable,
                        exclusive,
                        auto_delete,
                        nowait,
                        arguments,
                    }))
                }
            ),
        ]
    }

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (any::<u16>(), method()).prop_map(|(channel, method)| Frame::Method { channel, method }),
            (any::<u16>(), any::<u16>(), any::<u64>(), properties()).prop_map(
                |(channel, class_id, body_size, properties)| Frame::Header { channel, class_id, body_size, properties }
            ),
            (any::<u16>(), vec(any::<u8>(), 0..200))
                .prop_map(|(channel, payload)| { Frame::Body { channel, payload: payload.into() } }),
            Just(Frame::Heartbeat),
        ]
    }

    /// Feeds `bytes` in the given pieces, decoding as a connection would.
    fn decode_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, DecodeError> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut fed = 0;
        for cut in cuts {
            buf.extend_from_slice(&bytes[fed..cut]);
            fed = cut;
            while let Some(frame) = decode(&mut buf, 0, frames.is_empty())? {
                frames.push(frame);
            }
        }
        assert!(buf.is_empty());
        Ok(frames)
    }

    /// Decodes until the input is exhausted or an error; must not panic.
    fn drain(bytes: &[u8], frame_max: u32, expect_header: bool) {
        let mut buf = BytesMut::from(bytes);
        let mut expect_header = expect_header;
        while let Ok(Some(frame)) = decode(&mut buf, frame_max, expect_header) {
            expect_header = false;
            // Whatever decodes must re-encode to bytes that decode and encode
            // to the same bytes (compared as bytes: a table may hold a NaN).
            if frame != Frame::ProtocolHeader {
                let bytes = encoded(&frame);
                let again = decode_all(&bytes, 0).expect("re-encoded frame decodes");
                assert_eq!(again.len(), 1);
                assert_eq!(encoded(&again[0]), bytes);
            }
        }
    }

    #[test]
    fn hot_path_content_headers_decode_as_the_parser_does() {
        for props in [&[0u8, 0][..], &[0x10, 0, 2], &[0x10, 0, 1]] {
            let mut payload = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0];
            payload.extend_from_slice(props);
            let Ok(Frame::Header { properties, body_size, .. }) = decode_content_header(1, &payload) else {
                panic!("header did not decode");
            };
            assert_eq!(body_size, 1024);
            assert_eq!(Ok((&[][..], properties)), parse_properties(props));
        }
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(frame in frame()) {
            let bytes = encoded(&frame);
            prop_assert_eq!(decode_all(&bytes, 0), Ok(vec![frame]));
        }

        #[test]
        fn a_stream_split_anywhere_decodes_to_the_same_frames(
            frames in vec(frame(), 1..6),
            cuts in vec(any::<usize>(), 0..12),
        ) {
            let mut bytes = PROTOCOL_HEADER.to_vec();
            for frame in &frames {
                bytes.extend_from_slice(&encoded(frame));
            }
            let mut expected = vec![Frame::ProtocolHeader];
            expected.extend(frames);
            prop_assert_eq!(decode_in_pieces(&bytes, &cuts), Ok(expected));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
            for frame_max in [0, 16, 4096] {
                drain(&bytes, frame_max, true);
                drain(&bytes, frame_max, false);
            }
        }

        #[test]
        fn well_framed_garbage_never_panics(
            frame_type in prop_oneof![Just(1u8), Just(2), Just(3), Just(8)],
            channel in any::<u16>(),
            ids in proptest::sample::select(vec![
                (60u16, 40u16), (60, 60), (60, 20), (10, 11), (10, 10), (40, 10),
                (40, 30), (50, 10), (50, 20), (50, 50), (20, 40), (10, 50), (60, 99),
            ]),
            tail in vec(any::<u8>(), 0..300),
        ) {
            let payload = garbage_payload(frame_type, ids, &tail);
            drain(&frame_bytes(frame_type, channel, &payload), 0, false);
        }

        #[test]
        fn mutated_frames_never_panic(
            frame in frame(),
            flips in vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = encoded(&frame);
            overwrite(&mut bytes, &flips);
            drain(&bytes, 0, false);
        }

        #[test]
        fn encode_content_frames_respect_frame_max(
            body in vec(any::<u8>(), 0..3000),
            frame_max in 9u32..700,
            props in properties(),
        ) {
            let method = AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: 1,
                redelivered: true,
                exchange: "ex".into(),
                routing_key: "rk".into(),
                message_count: 3,
            }));
            let mut out = BytesMut::new();
            encode_content(9, &method, &props, &body, frame_max, &mut out);
            let frames = decode_all(&out, 0).expect("decodes");
            prop_assert_eq!(&frames[0], &Frame::Method { channel: 9, method });
            prop_assert_eq!(&frames[1], &Frame::Header {
                channel: 9,
                class_id: 60,
                body_size: body.len() as u64,
                properties: props,
            });
            let chunk = frame_max as usize - 8;
            prop_assert_eq!(frames.len() - 2, body.len().div_ceil(chunk));
            let mut joined = Vec::new();
            for frame in &frames[2..] {
                let Frame::Body { channel: 9, payload } = frame else {
                    return Err(TestCaseError::fail(format!("{frame:?}")));
                };
                prop_assert!(!payload.is_empty() && payload.len() <= chunk);
                joined.extend_from_slice(payload);
            }
            prop_assert_eq!(joined, body);
        }

        /// The in-place decoder agrees with `decode` on encoded frame streams, cut anywhere.
        #[test]
        fn in_place_agrees_on_frame_streams(
            frames in vec(frame(), 1..6),
            cuts in vec(any::<usize>(), 0..6),
        ) {
            let mut bytes = PROTOCOL_HEADER.to_vec();
            for frame in &frames {
                bytes.extend_from_slice(&encoded(frame));
            }
            for frame_max in [0, 64, 4096] {
                assert_in_place_agrees(&bytes, frame_max, true);
            }
            // Every prefix: the same frames, then the same "need more" or error.
            for cut in cuts {
                assert_in_place_agrees(&bytes[..cut % (bytes.len() + 1)], 0, true);
            }
        }

        /// ... on frames with bytes overwritten (bad types, sizes, frame ends, strings, flags).
        #[test]
        fn in_place_agrees_on_mutated_frames(
            frames in vec(frame(), 1..4),
            flips in vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = Vec::new();
            for frame in &frames {
                bytes.extend_from_slice(&encoded(frame));
            }
            overwrite(&mut bytes, &flips);
            assert_in_place_agrees(&bytes, 0, false);
        }

        /// ... on well-framed garbage: method payloads for the hot methods, content headers
        /// with arbitrary property lists, arbitrary frame types and sizes.
        #[test]
        fn in_place_agrees_on_garbage(
            frame_type in prop_oneof![Just(1u8), Just(2), Just(3), Just(8), any::<u8>()],
            ids in proptest::sample::select(vec![(60u16, 40u16), (60, 80), (60, 10), (10, 11), (20, 40), (60, 99)]),
            tail in vec(any::<u8>(), 0..80),
            raw in vec(any::<u8>(), 0..40),
        ) {
            let payload = garbage_payload(frame_type, ids, &tail);
            for frame_max in [0, 20, 4096] {
                assert_in_place_agrees(&frame_bytes(frame_type, 1, &payload), frame_max, false);
            }
            assert_in_place_agrees(&raw, 0, false);
            assert_in_place_agrees(&raw, 0, true);
        }

        /// A publish with every shape of exchange and routing key (empty, non-ASCII, 255
        /// bytes) and every bit pattern decodes in place, to the parser's value.
        #[test]
        fn publishes_decode_in_place(
            exchange in "\\PC{0,20}",
            key in prop_oneof!["\\PC{0,60}", "[a-z]{255}"],
            bits in any::<u8>(),
        ) {
            prop_assume!(exchange.len() < 256 && key.len() < 256);
            let mut payload = vec![0, 60, 0, 40, 0, 0, exchange.len() as u8];
            payload.extend_from_slice(exchange.as_bytes());
            payload.push(key.len() as u8);
            payload.extend_from_slice(key.as_bytes());
            payload.push(bits);
            let bytes = frame_bytes(1, 7, &payload);
            let Ok(Scan::Frame { frame: FrameRef::Method { channel: 7, method: MethodRef::Publish(p) }, len }) =
                decode_in_place(&bytes, 0, false)
            else {
                return Err(TestCaseError::fail("not decoded in place as a publish"));
            };
            prop_assert_eq!(len, bytes.len());
            prop_assert_eq!((p.exchange, p.routing_key), (exchange.as_str(), key.as_str()));
            assert_in_place_agrees(&bytes, 0, false);
        }

        /// Property lists without headers take the plain path and decode to what the parser
        /// gives; with headers they are parsed, to the same value.
        #[test]
        fn content_properties_decode_as_the_parser_does(props in properties(), body_size in any::<u64>()) {
            let mut payload = BytesMut::new();
            payload.put_u16(60);
            payload.put_u16(0);
            payload.put_u64(body_size);
            put_properties(&mut payload, &props).expect("encodes");
            let bytes = frame_bytes(2, 3, &payload);
            let Ok(Scan::Frame { frame: FrameRef::Header { properties, body_size: size, .. }, .. }) =
                decode_in_place(&bytes, 0, false)
            else {
                return Err(TestCaseError::fail("header did not decode"));
            };
            prop_assert_eq!(size, body_size);
            prop_assert_eq!(matches!(properties, ContentProperties::Plain(_)), props.headers().is_none());
            prop_assert_eq!(format!("{:?}", properties.to_properties()), format!("{:?}", convert::properties_from_amqp(&props)));
            assert_in_place_agrees(&bytes, 0, false);
            // Every truncation of the property list is refused with the parser's error.
            for cut in 14..payload.len() {
                assert_in_place_agrees(&frame_bytes(2, 3, &payload[..cut]), 0, false);
            }
        }

        /// Whatever bytes follow the flags, the plain walker either declines or agrees with
        /// amq-protocol's parser (value, and no bytes left over).
        #[test]
        fn plain_walker_never_disagrees_with_the_parser(
            // Half the cases sparse and without headers, so that some lists are accepted.
            flags in prop_oneof![any::<u16>(), (any::<u16>(), any::<u16>()).prop_map(|(a, b)| a & b & !(1 << 13))],
            rest in vec(any::<u8>(), 0..40),
        ) {
            let mut props = flags.to_be_bytes().to_vec();
            props.extend_from_slice(&rest);
            if let Some(fast) = convert::properties_from_plain(&props) {
                let parsed = parse_properties(props.as_slice());
                let Ok(([], parsed)) = parsed else {
                    return Err(TestCaseError::fail(format!("parser refused what the walker accepted: {parsed:?}")));
                };
                prop_assert_eq!(fast, convert::properties_from_amqp(&parsed));
            }
        }
    }

    /// A frame from either decoder in a form both can be compared in: methods as
    /// amq-protocol values, properties as core values (printed, since a header may hold NaN).
    fn comparable(frame: &Frame) -> String {
        match frame {
            Frame::Header { channel, class_id, body_size, properties } => {
                format!("Header {channel} {class_id} {body_size} {:?}", convert::properties_from_amqp(properties))
            }
            Frame::Body { channel, payload } => format!("Body {channel} {:?}", &payload[..]),
            other => format!("{other:?}"),
        }
    }

    fn comparable_ref(frame: FrameRef<'_>) -> String {
        match frame {
            FrameRef::ProtocolHeader => comparable(&Frame::ProtocolHeader),
            FrameRef::Heartbeat => comparable(&Frame::Heartbeat),
            FrameRef::Method { channel, method } => comparable(&Frame::Method { channel, method: method.into_amqp() }),
            FrameRef::Header { channel, class_id, body_size, properties } => {
                format!("Header {channel} {class_id} {body_size} {:?}", properties.to_properties())
            }
            FrameRef::Body { channel, payload } => format!("Body {channel} {payload:?}"),
        }
    }

    /// Decodes `bytes` with both decoders, as a connection would (header first if asked),
    /// and checks they give the same frames, then the same error or the same "need more".
    fn assert_in_place_agrees(bytes: &[u8], frame_max: u32, expect_header: bool) {
        let mut buf = BytesMut::from(bytes);
        let mut expected = Vec::new();
        let mut header = expect_header;
        let expected_end = loop {
            match decode(&mut buf, frame_max, header) {
                Ok(Some(frame)) => expected.push(comparable(&frame)),
                Ok(None) => break Ok(bytes.len() - buf.len()),
                Err(e) => break Err(e),
            }
            header = false;
        };
        let mut got = Vec::new();
        let mut done = 0;
        let mut header = expect_header;
        let got_end = loop {
            match decode_in_place(&bytes[done..], frame_max, header) {
                Ok(Scan::Frame { frame, len }) => {
                    got.push(comparable_ref(frame));
                    done += len;
                }
                Ok(Scan::Partial { total }) => {
                    assert!(total == 0 || total > bytes.len() - done, "partial frame of {total} bytes is buffered");
                    break Ok(done);
                }
                Err(e) => break Err(e),
            }
            header = false;
        };
        assert_eq!(got, expected);
        assert_eq!(got_end, expected_end);
    }

    #[test]
    fn in_place_publish_and_body_borrow_the_buffer() {
        let mut bytes = frame_bytes(1, 1, &[0, 60, 0, 40, 0, 0, 0, 3, b'k', b'e', b'y', 0b10]);
        bytes.extend_from_slice(&frame_bytes(3, 1, b"body"));
        let Ok(Scan::Frame { frame, len }) = decode_in_place(&bytes, 0, false) else { panic!("no frame") };
        let publish = PublishRef { exchange: "", routing_key: "key", mandatory: false, immediate: true };
        assert_eq!(frame, FrameRef::Method { channel: 1, method: MethodRef::Publish(publish) });
        assert_eq!(MethodRef::Publish(publish).ids(), (60, 40));
        let Ok(Scan::Frame { frame, len: body_len }) = decode_in_place(&bytes[len..], 0, false) else { panic!() };
        assert_eq!(frame, FrameRef::Body { channel: 1, payload: b"body" });
        assert_eq!(len + body_len, bytes.len());
        assert_eq!(decode_in_place(&bytes[..len - 1], 0, false), Ok(Scan::Partial { total: len }));
        assert_eq!(decode_in_place(&bytes[..3], 0, false), Ok(Scan::Partial { total: 0 }));
    }

    #[test]
    fn in_place_ack_is_not_an_amqp_class() {
        let mut payload = vec![0, 60, 0, 80];
        payload.extend_from_slice(&u64::MAX.to_be_bytes());
        payload.push(1);
        let bytes = frame_bytes(1, 2, &payload);
        let ack = MethodRef::Ack { delivery_tag: u64::MAX, multiple: true };
        assert_eq!(
            decode_in_place(&bytes, 0, false),
            Ok(Scan::Frame { frame: FrameRef::Method { channel: 2, method: ack.clone() }, len: bytes.len() })
        );
        assert_eq!(ack.ids(), (60, 80));
        assert_eq!(Frame::Method { channel: 2, method: ack.into_amqp() }, decode_one(&bytes).unwrap().unwrap());
        // One byte short or long: the parser's verdict.
        payload.pop();
        assert_in_place_agrees(&frame_bytes(1, 2, &payload), 0, false);
        payload.extend_from_slice(&[1, 1]);
        assert_in_place_agrees(&frame_bytes(1, 2, &payload), 0, false);
    }

    #[test]
    fn in_place_hot_path_headers_are_plain() {
        for (props, mode) in [(&[0u8, 0][..], None), (&[0x10, 0, 2], Some(2)), (&[0x10, 0, 1], Some(1))] {
            let mut payload = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0];
            payload.extend_from_slice(props);
            let bytes = frame_bytes(2, 1, &payload);
            let Ok(Scan::Frame { frame: FrameRef::Header { properties, body_size: 1024, .. }, .. }) =
                decode_in_place(&bytes, 0, false)
            else {
                panic!("header did not decode");
            };
            assert_eq!(properties, ContentProperties::Plain(props));
            assert_eq!(properties.to_properties(), Properties { delivery_mode: mode, ..Properties::default() });
        }
    }

    #[test]
    fn in_place_protocol_header() {
        assert_eq!(decode_in_place(b"AMQP", 0, true), Ok(Scan::Partial { total: 8 }));
        assert_eq!(
            decode_in_place(b"AMQP\x00\x00\x09\x01rest", 0, true),
            Ok(Scan::Frame { frame: FrameRef::ProtocolHeader, len: 8 })
        );
        assert_eq!(
            decode_in_place(b"AMQP\x01\x01\x00\x0a", 0, true),
            Err(DecodeError::BadProtocolHeader { received: *b"AMQP\x01\x01\x00\x0a" })
        );
    }
}
