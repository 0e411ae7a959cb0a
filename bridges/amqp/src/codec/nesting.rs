//! A guard against deeply nested field tables, run before amq-protocol sees
//! the bytes.
//!
//! amq-protocol parses a nested table (`F`) or array (`A`) by recursion, a
//! few kilobytes of stack per level in a debug build and about one in a
//! release build. A single method frame within RabbitMQ's default `frame_max`
//! (128 KiB) can nest some 20,000 levels deep (six bytes per level), which
//! overflows any thread's stack and aborts the whole process — not just the
//! connection. So before parsing, the decoder walks every field table it is
//! about to hand over, iteratively, and refuses one nested deeper than
//! [`MAX_TABLE_DEPTH`]. Real traffic stays far below that: RabbitMQ's own
//! deepest header, `x-death`, is four levels deep.
//!
//! The walk follows amq-protocol's grammar (RabbitMQ's type letters) in the
//! same order the parser does, so whenever the bytes are malformed before the
//! limit is reached, the parser stops at the same place no deeper than the
//! walk went; the walk then reports "not too deep" and lets the parser produce
//! the syntax error.

/// How many levels of tables and arrays a field table may have (the
/// outermost table is level 1).
pub const MAX_TABLE_DEPTH: usize = 32;

/// A field that precedes the field table in a method's arguments.
#[derive(Clone, Copy)]
enum Skip {
    /// A fixed number of bytes (integers, reserved fields, packed bits).
    Bytes(usize),
    /// A short string: one length byte, then that many bytes.
    ShortStr,
}

use Skip::{Bytes, ShortStr};

/// Where the field table sits in the arguments of the methods that carry one
/// (after the class-id and method-id). Every table-bearing 0-9-1 method has
/// exactly one table; no argument after it matters for the walk.
fn fields_before_table(class_id: u16, method_id: u16) -> Option<&'static [Skip]> {
    Some(match (class_id, method_id) {
        // connection.start: version-major, version-minor, server-properties.
        (10, 10) => &[Bytes(2)],
        // connection.start-ok: client-properties first.
        (10, 11) => &[],
        // exchange.declare: reserved-1, exchange, type, 5 bits, arguments.
        (40, 10) => &[Bytes(2), ShortStr, ShortStr, Bytes(1)],
        // exchange.bind / exchange.unbind: reserved-1, destination, source,
        // routing-key, no-wait, arguments.
        (40, 30) | (40, 40) => &[Bytes(2), ShortStr, ShortStr, ShortStr, Bytes(1)],
        // queue.declare: reserved-1, queue, 5 bits, arguments.
        (50, 10) => &[Bytes(2), ShortStr, Bytes(1)],
        // queue.bind: reserved-1, queue, exchange, routing-key, no-wait, arguments.
        (50, 20) => &[Bytes(2), ShortStr, ShortStr, ShortStr, Bytes(1)],
        // queue.unbind has no no-wait bit.
        (50, 50) => &[Bytes(2), ShortStr, ShortStr, ShortStr],
        // basic.consume: reserved-1, queue, consumer-tag, 4 bits, arguments.
        (60, 20) => &[Bytes(2), ShortStr, ShortStr, Bytes(1)],
        _ => return None,
    })
}

/// True if the method's arguments (after class-id and method-id) hold a field
/// table nested deeper than `max_depth`.
pub(crate) fn method_too_deep(class_id: u16, method_id: u16, args: &[u8], max_depth: usize) -> bool {
    let Some(skips) = fields_before_table(class_id, method_id) else {
        return false;
    };
    let mut pos = 0usize;
    for skip in skips {
        let len = match *skip {
            Bytes(n) => n,
            ShortStr => match args.get(pos) {
                Some(&len) => 1 + usize::from(len),
                None => return false,
            },
        };
        pos += len;
    }
    args.get(pos..).is_some_and(|table| table_too_deep(table, max_depth))
}

/// True if content-header properties (starting at the property flags) carry a
/// `headers` table nested deeper than `max_depth`.
pub(crate) fn properties_too_deep(props: &[u8], max_depth: usize) -> bool {
    const CONTENT_TYPE: u16 = 1 << 15;
    const CONTENT_ENCODING: u16 = 1 << 14;
    const HEADERS: u16 = 1 << 13;
    let Some(flags) = read_u16(props, 0) else {
        return false;
    };
    if flags & HEADERS == 0 {
        return false;
    }
    let mut pos = 2usize;
    for bit in [CONTENT_TYPE, CONTENT_ENCODING] {
        if flags & bit != 0 {
            match props.get(pos) {
                Some(&len) => pos += 1 + usize::from(len),
                None => return false,
            }
        }
    }
    props.get(pos..).is_some_and(|table| table_too_deep(table, max_depth))
}

fn read_u16(data: &[u8], pos: usize) -> Option<u16> {
    let bytes = data.get(pos..pos.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn read_u32(data: &[u8], pos: usize) -> Option<u32> {
    let bytes = data.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Walks the field table at the start of `data` without recursion. True only
/// if it reaches a level deeper than `max_depth` before any malformation.
pub(crate) fn table_too_deep(data: &[u8], max_depth: usize) -> bool {
    walk(data, max_depth) == Some(true)
}

/// `Some(true)`: too deep. `Some(false)`: shallow enough, or an unknown type
/// letter before the limit. `None`: malformed (truncated, or a length running
/// past its container) before the limit.
fn walk(data: &[u8], max_depth: usize) -> Option<bool> {
    /// An open container: where it ends, and whether its entries have keys.
    struct Open {
        end: usize,
        is_table: bool,
    }
    let len = read_u32(data, 0)? as usize;
    let mut pos = 4usize;
    let end = pos.checked_add(len).filter(|&end| end <= data.len())?;
    let mut stack = vec![Open { end, is_table: true }];
    while let Some(open) = stack.last() {
        let end = open.end;
        if pos == end {
            stack.pop();
            continue;
        }
        if open.is_table {
            let key_len = usize::from(*data.get(pos)?);
            pos = pos.checked_add(1 + key_len).filter(|&p| p <= end)?;
        }
        if pos >= end {
            return Some(false);
        }
        let kind = data[pos];
        pos += 1;
        let size = match kind {
            b'V' => 0,
            b't' | b'b' | b'B' => 1,
            b's' | b'U' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'L' | b'l' | b'd' | b'T' => 8,
            b'S' | b'x' => 4 + read_u32(data, pos)? as usize,
            b'F' | b'A' => {
                let len = read_u32(data, pos)? as usize;
                pos += 4;
                let child_end = pos.checked_add(len).filter(|&e| e <= end)?;
                if stack.len() >= max_depth {
                    return Some(true);
                }
                stack.push(Open { end: child_end, is_table: kind == b'F' });
                continue;
            }
            // Unknown type: the parser fails here too.
            _ => return Some(false),
        };
        pos = pos.checked_add(size).filter(|&p| p <= end)?;
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table nested `depth` levels deep: `{"a": {"a": ... {}}}`, with
    /// arrays at odd levels when `with_arrays`.
    pub(crate) fn nested_table(depth: usize, with_arrays: bool) -> Vec<u8> {
        let mut inner: Vec<u8> = 0u32.to_be_bytes().to_vec();
        let mut inner_is_table = true;
        for level in 1..depth {
            let as_array = with_arrays && level % 2 == 1;
            let mut outer = Vec::new();
            let mut body = Vec::new();
            if !as_array {
                body.extend_from_slice(&[1, b'a']);
            }
            body.push(if inner_is_table { b'F' } else { b'A' });
            body.extend_from_slice(&inner);
            outer.extend_from_slice(&(body.len() as u32).to_be_bytes());
            outer.extend_from_slice(&body);
            inner = outer;
            inner_is_table = !as_array;
        }
        if !inner_is_table {
            // Wrap the outermost array in a table so the result is a table.
            let mut body = vec![1, b'a', b'A'];
            body.extend_from_slice(&inner);
            let mut outer = (body.len() as u32).to_be_bytes().to_vec();
            outer.extend_from_slice(&body);
            inner = outer;
        }
        inner
    }

    #[test]
    fn depth_limit_is_exact() {
        assert!(!table_too_deep(&nested_table(1, false), 1));
        assert!(!table_too_deep(&nested_table(32, false), 32));
        assert!(table_too_deep(&nested_table(33, false), 32));
        assert!(!table_too_deep(&nested_table(31, true), 32));
        assert!(table_too_deep(&nested_table(40, true), 32));
    }

    #[test]
    fn scalars_and_strings_are_skipped() {
        let mut body = Vec::new();
        for (key, kind, payload) in [
            (&b"b"[..], b't', &[1u8][..]),
            (b"s", b's', &[0, 1]),
            (b"i", b'I', &[0, 0, 0, 1]),
            (b"d", b'D', &[2, 0, 0, 0, 1]),
            (b"l", b'l', &[0; 8]),
            (b"S", b'S', &[0, 0, 0, 2, b'F', b'A']),
            (b"V", b'V', &[]),
        ] {
            body.push(key.len() as u8);
            body.extend_from_slice(key);
            body.push(kind);
            body.extend_from_slice(payload);
        }
        let mut table = (body.len() as u32).to_be_bytes().to_vec();
        table.extend_from_slice(&body);
        assert!(!table_too_deep(&table, 1));
    }

    #[test]
    fn huge_nesting_is_refused_without_recursion() {
        let table = nested_table(200_000, true);
        assert!(table_too_deep(&table, MAX_TABLE_DEPTH));
    }

    #[test]
    fn malformed_input_is_left_to_the_parser() {
        assert!(!table_too_deep(&[], 1));
        assert!(!table_too_deep(&[0, 0, 0, 9, 1], 1));
        // Inner table claims to run past its parent.
        assert!(!table_too_deep(&[0, 0, 0, 7, 1, b'a', b'F', 0, 0, 0, 9], 1));
    }
}
