//! The connection's outgoing byte buffer: methods and content are encoded into
//! it as they are produced and written to the socket once per loop turn, so
//! many frames share one `write` call.

use amq_protocol::protocol::{AMQPClass, BasicProperties};
use bytes::BytesMut;

use crate::codec::{self, Frame};

/// Encoded frames waiting for the socket.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) buf: BytesMut,
    pub(crate) frame_max: u32,
}

impl Outbound {
    pub(crate) fn new(frame_max: u32) -> Outbound {
        Outbound { buf: BytesMut::with_capacity(64 * 1024), frame_max }
    }

    /// Queue a method frame.
    pub(crate) fn method(&mut self, channel: u16, method: AMQPClass) {
        codec::encode(&Frame::Method { channel, method }, &mut self.buf);
    }

    /// Queue a method with content (deliver, get-ok, return).
    pub(crate) fn content(&mut self, channel: u16, method: AMQPClass, properties: &BasicProperties, body: &[u8]) {
        codec::encode_content(channel, &method, properties, body, self.frame_max, &mut self.buf);
    }

    /// Queue a `basic.deliver` with its content.
    pub(crate) fn deliver(
        &mut self,
        channel: u16,
        args: &codec::DeliverArgs<'_>,
        properties: &BasicProperties,
        body: &[u8],
    ) {
        codec::encode_deliver(channel, args, properties, body, self.frame_max, &mut self.buf);
    }

    /// Queue a `basic.deliver` whose content-header properties `put_properties` writes.
    pub(crate) fn deliver_with(
        &mut self,
        channel: u16,
        args: &codec::DeliverArgs<'_>,
        put_properties: impl FnOnce(&mut BytesMut) -> Result<(), amq_protocol::frame::GenError>,
        body: &[u8],
    ) {
        codec::encode_deliver_with(channel, args, put_properties, body, self.frame_max, &mut self.buf);
    }

    /// Queue a heartbeat frame.
    pub(crate) fn heartbeat(&mut self) {
        codec::encode(&Frame::Heartbeat, &mut self.buf);
    }
}
