//! A cookie-factory writer that appends straight into a `BytesMut`.
//!
//! amq-protocol's generators are cookie-factory serializers, which need a
//! writer that is `Write + BackToTheBuffer` (they reserve a length prefix,
//! write a field table, then go back and fill the prefix in). cookie-factory
//! implements that only for `Vec<u8>` and byte slices; this adapter lets the
//! codec serialize into the connection's outgoing `BytesMut` without a scratch
//! `Vec` per frame.

use std::io;

use amq_protocol::frame::{BackToTheBuffer, GenError, GenResult, WriteContext};
use bytes::{BufMut, BytesMut};

/// Appends to a `BytesMut`, or, while a reserved length prefix is being
/// filled in, overwrites the reserved bytes.
pub(crate) struct Sink<'a> {
    buf: &'a mut BytesMut,
    /// `Some(at)` while `BackToTheBuffer` fills a reserved region: writes go
    /// to `buf[at..]` instead of the end of `buf`.
    patch_at: Option<usize>,
}

impl<'a> Sink<'a> {
    /// A sink appending to `buf`.
    pub(crate) fn new(buf: &'a mut BytesMut) -> Self {
        Sink { buf, patch_at: None }
    }
}

impl io::Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.patch_at {
            None => self.buf.extend_from_slice(data),
            Some(at) => {
                let end = at
                    .checked_add(data.len())
                    .filter(|&end| end <= self.buf.len())
                    .ok_or_else(|| io::Error::other("write past the reserved bytes"))?;
                self.buf[at..end].copy_from_slice(data);
                self.patch_at = Some(end);
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BackToTheBuffer for Sink<'_> {
    fn reserve_write_use<
        Tmp,
        Gen: Fn(WriteContext<Self>) -> Result<(WriteContext<Self>, Tmp), GenError>,
        Before: Fn(WriteContext<Self>, Tmp) -> GenResult<Self>,
    >(
        s: WriteContext<Self>,
        reserved: usize,
        generate: &Gen,
        before: &Before,
    ) -> Result<WriteContext<Self>, GenError> {
        let WriteContext { write: sink, position } = s;
        // amq-protocol only reserves while appending (a length prefix is
        // filled with a plain integer); anything else is a generator we
        // don't know how to serve.
        if sink.patch_at.is_some() {
            return Err(GenError::NotYetImplemented);
        }
        let start = sink.buf.len();
        sink.buf.put_bytes(0, reserved);
        let (ctx, tmp) = generate(WriteContext { write: sink, position: position + reserved as u64 })?;
        let WriteContext { write: mut sink, position: end_position } = ctx;
        sink.patch_at = Some(start);
        let ctx = before(WriteContext { write: sink, position }, tmp)?;
        let mut sink = ctx.write;
        let filled_to = sink.patch_at.take();
        if filled_to != Some(start + reserved) {
            return Err(GenError::BufferTooBig(reserved));
        }
        Ok(WriteContext { write: sink, position: end_position })
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::types::generation::gen_field_table;
    use amq_protocol::types::{AMQPValue, FieldTable};

    use super::*;

    #[test]
    fn length_prefixed_output_matches_cookie_factorys_vec_writer() {
        let mut inner = FieldTable::default();
        inner.insert("n".into(), AMQPValue::LongInt(-7));
        let mut table = FieldTable::default();
        table.insert("a".into(), AMQPValue::LongString("hello".into()));
        table.insert("t".into(), AMQPValue::FieldTable(inner));

        let (expected, _) = gen_field_table(&table)(WriteContext::from(Vec::new())).expect("vec writer").into_inner();

        let mut out = BytesMut::from(&b"prefix"[..]);
        let position = gen_field_table(&table)(WriteContext::from(Sink::new(&mut out))).expect("sink writer").position;
        assert_eq!(position, expected.len() as u64);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(&out[6..], &expected[..]);
    }
}
