//! Fuzzes the AMQP frame decoder the way a connection drives it: bytes
//! arrive in two reads split at a fuzzer-chosen point, and `decode` is called
//! in a loop until it wants more bytes or reports an error.
//!
//! Input layout: byte 0 picks `frame_max` and whether the protocol header is
//! expected first; bytes 1-2 pick the split point; the rest is the stream.
//! Besides "never panics", every decoded frame must re-encode to bytes that
//! decode and re-encode to the same bytes.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_amqp::codec::{Frame, decode, encode};

fuzz_target!(|data: &[u8]| {
    let [control, split_hi, split_lo, stream @ ..] = data else {
        return;
    };
    let frame_max = match control & 0b11 {
        0 => 0,
        1 => 4096,
        2 => 131_072,
        _ => u32::from(*split_lo),
    };
    let mut expect_header = control & 0b100 != 0;
    let split = usize::from(u16::from_be_bytes([*split_hi, *split_lo])) % (stream.len() + 1);

    let mut buf = BytesMut::new();
    for piece in [&stream[..split], &stream[split..]] {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decode(&mut buf, frame_max, expect_header) {
                Ok(Some(frame)) => {
                    assert!(buf.len() < before, "a frame must consume bytes");
                    check_reencodes(&frame);
                    expect_header = false;
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "waiting must not consume bytes");
                    break;
                }
                // The connection would be closed here.
                Err(_) => return,
            }
        }
    }
});

/// Re-encoding a decoded frame must give bytes that decode to a frame which
/// encodes to the very same bytes. (Compared as bytes, not frames: a table may
/// hold a NaN, which is not equal to itself.)
fn check_reencodes(frame: &Frame) {
    let mut first = BytesMut::new();
    encode(frame, &mut first);
    let bytes = first.clone();
    let expect_header = matches!(frame, Frame::ProtocolHeader);
    let again =
        decode(&mut first, 0, expect_header).expect("re-encoded frame decodes").expect("re-encoded frame is complete");
    assert!(first.is_empty(), "re-encoded frame fully consumed");
    let mut second = BytesMut::new();
    encode(&again, &mut second);
    assert_eq!(bytes, second);
}
