//! `MD5OfMessageBody` and `MD5OfMessageAttributes` as SDKs compute and verify them.
//!
//! Attributes are hashed sorted by name; each contributes its name, its data type, one
//! transport byte (1 = string value, 2 = binary value) and its value, every variable-length
//! part preceded by its length as a 4-byte big-endian integer.

use md5::{Digest, Md5};

/// A message attribute value as SQS carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrValue {
    /// `String`, `Number`, `Binary`, optionally with a `.custom` suffix.
    pub data_type: String,
    /// The string value (String and Number types).
    pub string: Option<String>,
    /// The binary value (Binary types).
    pub binary: Option<Vec<u8>>,
}

/// Adds `bytes` preceded by its length (4 bytes, big-endian).
fn put(h: &mut Md5, bytes: &[u8]) {
    h.update((bytes.len() as u32).to_be_bytes());
    h.update(bytes);
}

/// Hex MD5 of `body`.
pub fn md5_hex(body: &[u8]) -> String {
    lower_hex(&Md5::digest(body))
}

/// Lower-case hex of `bytes`. Written by a byte loop: the `hex` crate's encoder goes through
/// a `char` iterator (~1.3k instructions for an MD5, once per SQS message sent).
fn lower_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    push_hex(&mut s, bytes);
    s
}

/// Append the lower-case hex of `bytes` to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend(bytes.iter().flat_map(|b| [HEX[usize::from(b >> 4)] as char, HEX[usize::from(b & 15)] as char]));
}

/// Hex MD5 of the attributes, `None` when there are none (SQS omits the field then).
pub fn attributes_md5<'a>(attrs: impl IntoIterator<Item = (&'a String, &'a AttrValue)>) -> Option<String> {
    let mut sorted: Vec<_> = attrs.into_iter().collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Md5::new();
    for (name, v) in sorted {
        put(&mut h, name.as_bytes());
        put(&mut h, v.data_type.as_bytes());
        match &v.binary {
            Some(b) => {
                h.update([2u8]);
                put(&mut h, b);
            }
            None => {
                h.update([1u8]);
                put(&mut h, v.string.as_deref().unwrap_or("").as_bytes());
            }
        }
    }
    Some(lower_hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_hex_equals_the_hex_crate() {
        for body in [&b""[..], b"hello", &[0xff; 1000]] {
            assert_eq!(md5_hex(body), hex::encode(Md5::digest(body)));
        }
    }

    #[test]
    fn body_md5_is_hex_md5() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"hello"), "5d41402abc4b2a76b9719d911017c592");
    }

    #[test]
    fn no_attributes_no_md5() {
        let none: Vec<(&String, &AttrValue)> = Vec::new();
        assert_eq!(attributes_md5(none), None);
    }

    #[test]
    fn attribute_md5_is_order_independent() {
        let a = ("a".to_string(), AttrValue { data_type: "String".into(), string: Some("x".into()), binary: None });
        let b = ("b".to_string(), AttrValue { data_type: "Binary".into(), string: None, binary: Some(vec![1, 2]) });
        let one = attributes_md5([(&a.0, &a.1), (&b.0, &b.1)]);
        let two = attributes_md5([(&b.0, &b.1), (&a.0, &a.1)]);
        assert_eq!(one, two);
        assert_eq!(one.map(|s| s.len()), Some(32));
    }
}
