//! AWS event-stream framing (`application/vnd.amazon.eventstream`), what SubscribeToShard
//! answers with: each message is a prelude (`total length u32`, `headers length u32`, CRC32
//! of those 8 bytes), headers (`name len u8, name, type u8, value`; only type 7, a string
//! with a u16 length, is written here), the payload, and a CRC32 of everything before it.
//! All integers big-endian; CRC32 is the IEEE polynomial.

/// CRC32 (IEEE 802.3, reflected, polynomial 0xEDB88320).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Encode one message with string headers.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_be_bytes());
    m.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&m[..8]);
    m.extend_from_slice(&prelude_crc.to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    let crc = crc32(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m
}

/// An event of type `event_type` with a payload of `content_type`.
pub fn event(event_type: &str, content_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(&[(":message-type", "event"), (":event-type", event_type), (":content-type", content_type)], payload)
}

/// A decoded message: string headers, payload, and how many bytes it took.
pub type Decoded = (Vec<(String, String)>, Vec<u8>, usize);

/// Decode one message from the front of `buf`; `None` if incomplete or corrupt. Used by
/// tests and kept next to the encoder.
pub fn decode(buf: &[u8]) -> Option<Decoded> {
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let prelude = buf.get(..12)?;
    let total = be(&prelude[0..4]) as usize;
    let hlen = be(&prelude[4..8]) as usize;
    if crc32(&prelude[..8]) != be(&prelude[8..12]) || total < 16 + hlen {
        return None;
    }
    let m = buf.get(..total)?;
    if crc32(&m[..total - 4]) != be(&m[total - 4..]) {
        return None;
    }
    let mut headers = Vec::new();
    let mut p = 12;
    while p < 12 + hlen {
        let n = *m.get(p)? as usize;
        let name = String::from_utf8(m.get(p + 1..p + 1 + n)?.to_vec()).ok()?;
        p += 1 + n;
        if *m.get(p)? != 7 {
            return None;
        }
        let vl = u16::from_be_bytes([*m.get(p + 1)?, *m.get(p + 2)?]) as usize;
        let value = String::from_utf8(m.get(p + 3..p + 3 + vl)?.to_vec()).ok()?;
        p += 3 + vl;
        headers.push((name, value));
    }
    Some((headers, m[12 + hlen..total - 4].to_vec(), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn an_empty_message_matches_the_reference_bytes() {
        // AWS's event-stream test vector "empty_message": 16 bytes, no headers, no payload.
        let m = encode(&[], b"");
        assert_eq!(m, [0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff]);
    }

    #[test]
    fn events_round_trip_and_corruption_is_detected() {
        let m = event("SubscribeToShardEvent", "application/json", br#"{"Records":[]}"#);
        let (h, p, used) = decode(&m).expect("decode");
        assert_eq!(used, m.len());
        assert_eq!(p, br#"{"Records":[]}"#);
        assert!(h.contains(&(":event-type".into(), "SubscribeToShardEvent".into())));
        let mut bad = m.clone();
        bad[20] ^= 1;
        assert!(decode(&bad).is_none());
        assert!(decode(&m[..m.len() - 1]).is_none());
    }
}
