//! KPL (Kinesis Producer Library) aggregated records: one Kinesis record holding many user
//! records. Layout: magic `F3 89 9A C2`, a protobuf `AggregatedRecord`, and the MD5 of that
//! protobuf. Kinesis readers get such records as sent; front-ends that bridge a stream to
//! another protocol (AMQP) split them with [`deaggregate`].
//!
//! ```text
//! message AggregatedRecord { repeated string partition_key_table = 1;
//!                            repeated string explicit_hash_key_table = 2;
//!                            repeated Record records = 3; }
//! message Record { required uint64 partition_key_index = 1;
//!                  optional uint64 explicit_hash_key_index = 2;
//!                  required bytes data = 3; repeated Tag tags = 4; }
//! ```
//!
//! The decoder is bounded by its input (no allocation beyond it) and returns `None` for
//! anything malformed, in which case the record is treated as plain data.

use bytes::Bytes;
use md5::{Digest, Md5};

/// The first four bytes of an aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// One user record out of an aggregated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its partition key.
    pub partition_key: String,
    /// Its data.
    pub data: Bytes,
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Iterate the fields of a protobuf message: (field number, wire type, value slice or varint).
fn fields(b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = varint(b, &mut pos)?;
        let f = match key & 7 {
            0 => Field::Varint(varint(b, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(b, &mut pos)?).ok()?;
                let s = b.get(pos..pos.checked_add(len)?)?;
                pos += len;
                Field::Bytes(s)
            }
            1 => {
                pos = pos.checked_add(8)?;
                Field::Other
            }
            5 => {
                pos = pos.checked_add(4)?;
                Field::Other
            }
            _ => return None,
        };
        out.push((key >> 3, f));
    }
    (pos == b.len()).then_some(out)
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

/// The user records of an aggregated record; `None` if `data` is not one (or is damaged).
pub fn deaggregate(data: &[u8]) -> Option<Vec<UserRecord>> {
    if data.len() < MAGIC.len() + 16 || data[..4] != MAGIC {
        return None;
    }
    let (body, digest) = data[4..].split_at(data.len() - 4 - 16);
    if Md5::digest(body).as_slice() != digest {
        return None;
    }
    let mut keys = Vec::new();
    let mut records = Vec::new();
    for (n, f) in fields(body)? {
        match (n, f) {
            (1, Field::Bytes(k)) => keys.push(String::from_utf8_lossy(k).into_owned()),
            (3, Field::Bytes(r)) => {
                let mut key = None;
                let mut payload = None;
                for (m, g) in fields(r)? {
                    match (m, g) {
                        (1, Field::Varint(i)) => key = Some(i),
                        (3, Field::Bytes(d)) => payload = Some(Bytes::copy_from_slice(d)),
                        _ => {}
                    }
                }
                records.push((key?, payload?));
            }
            _ => {}
        }
    }
    records
        .into_iter()
        .map(|(k, data)| {
            let partition_key = keys.get(usize::try_from(k).ok()?)?.clone();
            Some(UserRecord { partition_key, data })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        put_varint(out, (field << 3) | 2);
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    /// An aggregated record as the KPL writes it.
    pub(crate) fn aggregate(keys: &[&str], records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for k in keys {
            put_bytes(&mut body, 1, k.as_bytes());
        }
        for (k, d) in records {
            let mut r = Vec::new();
            put_varint(&mut r, 1 << 3);
            put_varint(&mut r, *k);
            put_bytes(&mut r, 3, d);
            put_bytes(&mut body, 3, &r);
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&Md5::digest(&body));
        out
    }

    #[test]
    fn splits_an_aggregated_record() {
        let agg = aggregate(&["a", "b"], &[(0, b"one"), (1, b"two"), (0, b"three")]);
        let got = deaggregate(&agg).expect("aggregated");
        let flat: Vec<(&str, &[u8])> = got.iter().map(|r| (r.partition_key.as_str(), &r.data[..])).collect();
        assert_eq!(flat, [("a", &b"one"[..]), ("b", b"two"), ("a", b"three")]);
    }

    #[test]
    fn plain_or_damaged_data_is_not_aggregated() {
        assert_eq!(deaggregate(b"plain data"), None);
        let mut agg = aggregate(&["a"], &[(0, b"x")]);
        let n = agg.len();
        agg[n - 1] ^= 1; // digest
        assert_eq!(deaggregate(&agg), None);
        // A key index past the table.
        assert_eq!(deaggregate(&aggregate(&["a"], &[(5, b"x")])), None);
        // Truncated protobuf with a valid digest.
        let mut body = vec![0x1a, 0x10, 0x01];
        let mut bad = MAGIC.to_vec();
        bad.append(&mut body.clone());
        bad.extend_from_slice(&Md5::digest(&body));
        body.clear();
        assert_eq!(deaggregate(&bad), None);
    }
}
