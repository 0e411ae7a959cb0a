//! STOMP frames ⇄ bytes. Pure: no I/O, no core types.
//!
//! A frame is `COMMAND EOL *(header EOL) EOL body NUL`. The per-version rules
//! this module implements (STOMP 1.0, 1.1, 1.2 specifications):
//! - EOL is LF; a CR before the LF is dropped in every version (1.2 allows
//!   CRLF; 1.0/1.1 clients send it in practice, and RabbitMQ accepts it too).
//! - Header escaping: none in 1.0; `\n`, `\c`, `\\` in 1.1; `\r` as well in
//!   1.2. CONNECT, STOMP and CONNECTED frames are never escaped. An undefined
//!   escape is a protocol error (1.1+ spec: "MUST treat as a fatal error").
//! - 1.0 header values lose their leading spaces (as RabbitMQ trims them).
//! - A repeated header: the first occurrence wins ([`Frame::header`]).
//! - `content-length` makes the body binary: exactly that many bytes, which
//!   may contain NUL, followed by the NUL terminator. Without it the body
//!   ends at the first NUL.
//! - EOLs between frames are heart-beats ([`Decoded::Heartbeat`]).
//!
//! Bounded by design: [`Limits`] caps the command line, the number and length
//! of header lines, and the body. Every cap is checked while *scanning* the
//! buffer, before anything is allocated, so a peer cannot make us buffer or
//! allocate more than the limits allow; a frame over a limit is an error, not
//! a wait for more bytes.

use bytes::{BufMut, Bytes, BytesMut};

/// The longest command name (`UNSUBSCRIBE`), plus slack for a CR.
const MAX_COMMAND: usize = 16;

/// A negotiated protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escaping, no NACK, `id` optional on SUBSCRIBE.
    V1_0,
    /// STOMP 1.1: escaping of `\n \c \\`, NACK, heart-beats.
    V1_1,
    /// STOMP 1.2: adds `\r` escaping, CRLF, and the `ack` header on MESSAGE.
    V1_2,
}

impl Version {
    /// The version as written in `accept-version` and `version` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parse `1.0`, `1.1` or `1.2`.
    pub fn parse(s: &str) -> Option<Version> {
        match s.trim() {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }
}

/// Every command of the protocol, client and server frames alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Client: open a session.
    Connect,
    /// Client: open a session (1.1+ synonym of CONNECT).
    Stomp,
    /// Client: publish.
    Send,
    /// Client: start consuming.
    Subscribe,
    /// Client: stop consuming.
    Unsubscribe,
    /// Client: acknowledge.
    Ack,
    /// Client: negative acknowledgement (1.1+).
    Nack,
    /// Client: start a transaction.
    Begin,
    /// Client: commit a transaction.
    Commit,
    /// Client: roll back a transaction.
    Abort,
    /// Client: close the session.
    Disconnect,
    /// Server: the session is open.
    Connected,
    /// Server: a delivery.
    Message,
    /// Server: a frame with `receipt` was processed.
    Receipt,
    /// Server: a failure; the connection closes after it.
    Error,
}

impl Command {
    /// The command's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Connected => "CONNECTED",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// The command named `name`, if any (case-sensitive, as the spec says).
    pub fn parse(name: &[u8]) -> Option<Command> {
        Some(match name {
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"SEND" => Command::Send,
            b"SUBSCRIBE" => Command::Subscribe,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"ACK" => Command::Ack,
            b"NACK" => Command::Nack,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            b"CONNECTED" => Command::Connected,
            b"MESSAGE" => Command::Message,
            b"RECEIPT" => Command::Receipt,
            b"ERROR" => Command::Error,
            _ => return None,
        })
    }

    /// CONNECT, STOMP and CONNECTED headers are never escaped (1.1/1.2 spec).
    fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command.
    pub command: Command,
    /// Headers in wire order, unescaped; repeats are kept (the first wins on lookup).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and no body.
    pub fn new(command: Command) -> Frame {
        Frame { command, headers: Vec::new(), body: Bytes::new() }
    }

    /// Add a header (builder style).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Frame {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first value of header `name` (STOMP: a repeated header's first occurrence wins).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Caps on what one frame may hold; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most header lines in one frame.
    pub max_headers: usize,
    /// Longest header line in bytes, escapes included.
    pub max_header_length: usize,
    /// Largest body in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_headers: 1000, max_header_length: 10 * 1024, max_body: 16 * 1024 * 1024 }
    }
}

/// Why bytes are not a valid frame. Every variant is fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The command line is not a known command.
    #[error("could not interpret command \"{0}\"")]
    UnknownCommand(String),
    /// A header line has no `:`.
    #[error("header line {line} has no ':' separator")]
    MissingColon {
        /// 1-based header line number.
        line: usize,
    },
    /// A header uses an escape the version does not define.
    #[error("undefined escape sequence '\\{escape}' in header line {line}")]
    BadEscape {
        /// 1-based header line number.
        line: usize,
        /// The character after the backslash (`?` at the end of the line).
        escape: char,
    },
    /// A header name or value is not UTF-8.
    #[error("header line {line} is not valid UTF-8")]
    NotUtf8 {
        /// 1-based header line number.
        line: usize,
    },
    /// More header lines than [`Limits::max_headers`].
    #[error("frame has more than {max} headers")]
    TooManyHeaders {
        /// The limit.
        max: usize,
    },
    /// A header line longer than [`Limits::max_header_length`].
    #[error("header line longer than {max} bytes")]
    HeaderTooLong {
        /// The limit.
        max: usize,
    },
    /// A body larger than [`Limits::max_body`].
    #[error("frame body of {size} bytes is larger than the maximum of {max} bytes")]
    BodyTooLarge {
        /// The declared size (or the bytes seen so far without a NUL).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// `content-length` is not a non-negative integer.
    #[error("invalid content-length '{0}'")]
    BadContentLength(String),
    /// The byte after a `content-length` body is not NUL.
    #[error("frame not terminated by NUL after {content_length} body bytes")]
    MissingNul {
        /// The declared body length.
        content_length: usize,
    },
}

/// What [`Decoder::decode`] found at the start of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Not a whole frame yet: read more.
    Incomplete,
    /// `len` bytes of EOLs (heart-beats, or padding after a frame): consume them.
    Heartbeat {
        /// Bytes to consume.
        len: usize,
    },
    /// A whole frame of `len` bytes: consume them.
    Frame {
        /// The frame.
        frame: Frame,
        /// Bytes to consume.
        len: usize,
    },
}

/// Where the header block of a partially received frame ends, so a large body
/// arriving in many reads is not rescanned from the start each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scanned {
    body_start: usize,
    /// Header lines seen, so parsing allocates the header list once.
    headers: usize,
    content_length: Option<usize>,
    /// Bytes after `body_start` already searched for a NUL.
    searched: usize,
}

/// A decoder for one connection's byte stream.
///
/// It caches how far it scanned a partial frame; the cache is valid as long as
/// the caller only appends to the buffer between calls and consumes exactly the
/// `len` of each returned item from its front.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    scanned: Option<Scanned>,
}

/// Decode one item from `buf` without a cache (tests, fuzzing).
pub fn decode(buf: &[u8], version: Version, limits: &Limits) -> Result<Decoded, DecodeError> {
    Decoder::default().decode(buf, version, limits)
}

impl Decoder {
    /// A decoder with an empty cache.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Decode the item at the start of `buf`. `version` decides escaping (use
    /// [`Version::V1_0`] before CONNECT: CONNECT is never escaped anyway).
    pub fn decode(&mut self, buf: &[u8], version: Version, limits: &Limits) -> Result<Decoded, DecodeError> {
        let result = self.decode_inner(buf, version, limits);
        if !matches!(result, Ok(Decoded::Incomplete)) {
            self.scanned = None;
        }
        result
    }

    fn decode_inner(&mut self, buf: &[u8], version: Version, limits: &Limits) -> Result<Decoded, DecodeError> {
        if self.scanned.is_none() {
            let eols = leading_eols(buf);
            if eols > 0 {
                return Ok(Decoded::Heartbeat { len: eols });
            }
            match scan_head(buf, limits)? {
                None => return Ok(Decoded::Incomplete),
                Some(s) => self.scanned = Some(s),
            }
        }
        let Some(mut s) = self.scanned else { return Ok(Decoded::Incomplete) };
        let body_end = match s.content_length {
            Some(n) => {
                if buf.len() < s.body_start + n + 1 {
                    return Ok(Decoded::Incomplete);
                }
                if buf[s.body_start + n] != 0 {
                    return Err(DecodeError::MissingNul { content_length: n });
                }
                s.body_start + n
            }
            None => {
                let from = s.body_start + s.searched;
                let window_end = buf.len().min(s.body_start + limits.max_body + 1);
                match buf.get(from..window_end).and_then(|w| find_byte(0, w)) {
                    Some(i) => from + i,
                    None => {
                        let seen = buf.len().saturating_sub(s.body_start);
                        if seen > limits.max_body {
                            return Err(DecodeError::BodyTooLarge { size: seen, max: limits.max_body });
                        }
                        s.searched = seen;
                        self.scanned = Some(s);
                        return Ok(Decoded::Incomplete);
                    }
                }
            }
        };
        let frame = parse_frame(&buf[..s.body_start], &buf[s.body_start..body_end], version, s.headers)?;
        Ok(Decoded::Frame { frame, len: body_end + 1 })
    }
}

/// Bytes of EOLs (`\n` or `\r\n`) at the start of `buf`. A lone trailing `\r`
/// is left for the next read.
fn leading_eols(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i) {
            Some(b'\n') => i += 1,
            Some(b'\r') if buf.get(i + 1) == Some(&b'\n') => i += 2,
            _ => return i,
        }
    }
}

/// Find the end of the next line starting at `from`, looking at most `max`
/// bytes (plus the EOL) ahead. `Ok(None)`: incomplete.
fn find_eol(
    buf: &[u8],
    from: usize,
    max: usize,
    too_long: impl FnOnce() -> DecodeError,
) -> Result<Option<usize>, DecodeError> {
    let window_end = buf.len().min(from + max + 2);
    match find_byte(b'\n', &buf[from..window_end]) {
        Some(i) => Ok(Some(from + i)),
        None if buf.len() - from > max + 1 => Err(too_long()),
        None => Ok(None),
    }
}

/// Word-at-a-time byte search: these scans (line ends, colons, escapes) are most of the codec's
/// work, and a byte-by-byte loop costs several instructions per byte.
const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Nonzero iff some byte of `word` equals `b`.
#[inline]
fn has_byte(word: u64, b: u8) -> u64 {
    let x = word ^ (LO * u64::from(b));
    x.wrapping_sub(LO) & !x & HI
}

/// Index of the first `needle` in `hay`.
fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    find_first(hay, |w| has_byte(w, needle) != 0, |b| b == needle)
}

/// Index of the first byte that 1.1/1.2 header escaping changes (`\n`, `\r`, `:`, `\\`).
fn first_special(bytes: &[u8]) -> Option<usize> {
    let word_has = |w| (has_byte(w, b'\n') | has_byte(w, b'\r') | has_byte(w, b':') | has_byte(w, b'\\')) != 0;
    find_first(bytes, word_has, |b| matches!(b, b'\n' | b'\r' | b':' | b'\\'))
}

/// The first byte matching `byte_is`, checking whole 8-byte words with `word_has` first (which
/// may only say "somewhere in this word").
#[inline]
fn find_first(hay: &[u8], word_has: impl Fn(u64) -> bool, byte_is: impl Fn(u8) -> bool) -> Option<usize> {
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if word_has(u64::from_le_bytes(word)) {
            return chunk.iter().position(|b| byte_is(*b)).map(|i| at + i);
        }
        at += 8;
    }
    chunks.remainder().iter().position(|b| byte_is(*b)).map(|i| at + i)
}

/// Lines of a header block, split at LF (like `split(b'\n')`, without the empty tail).
struct Lines<'a>(&'a [u8]);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        let rest = self.0;
        match find_byte(b'\n', rest) {
            Some(i) => {
                self.0 = &rest[i + 1..];
                Some(&rest[..i])
            }
            None => {
                self.0 = &[];
                Some(rest)
            }
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Check the command and header block of the frame at the start of `buf`
/// without allocating, returning where the body starts and its declared length.
fn scan_head(buf: &[u8], limits: &Limits) -> Result<Option<Scanned>, DecodeError> {
    let unknown = |b: &[u8]| DecodeError::UnknownCommand(String::from_utf8_lossy(&b[..b.len().min(40)]).into_owned());
    let Some(eol) = find_eol(buf, 0, MAX_COMMAND, || unknown(buf))? else { return Ok(None) };
    let name = trim_cr(&buf[..eol]);
    if Command::parse(name).is_none() {
        return Err(unknown(name));
    }
    let mut pos = eol + 1;
    let mut count = 0usize;
    let mut content_length: Option<usize> = None;
    loop {
        if pos >= buf.len() {
            return Ok(None);
        }
        let too_long = || DecodeError::HeaderTooLong { max: limits.max_header_length };
        let Some(eol) = find_eol(buf, pos, limits.max_header_length, too_long)? else { return Ok(None) };
        let line = trim_cr(&buf[pos..eol]);
        pos = eol + 1;
        if line.is_empty() {
            break;
        }
        count += 1;
        if count > limits.max_headers {
            return Err(DecodeError::TooManyHeaders { max: limits.max_headers });
        }
        let Some(colon) = find_byte(b':', line) else {
            return Err(DecodeError::MissingColon { line: count });
        };
        if content_length.is_none() && &line[..colon] == b"content-length" {
            let raw = &line[colon + 1..];
            let text = std::str::from_utf8(raw).map_err(|_| DecodeError::NotUtf8 { line: count })?;
            let n: usize =
                text.trim().parse().map_err(|_| DecodeError::BadContentLength(text.chars().take(40).collect()))?;
            if n > limits.max_body {
                return Err(DecodeError::BodyTooLarge { size: n, max: limits.max_body });
            }
            content_length = Some(n);
        }
    }
    Ok(Some(Scanned { body_start: pos, headers: count, content_length, searched: 0 }))
}

/// Parse an already scanned head (command line + headers + blank line).
fn parse_frame(head: &[u8], body: &[u8], version: Version, count: usize) -> Result<Frame, DecodeError> {
    let mut lines = Lines(head).map(trim_cr);
    let command = lines.next().and_then(Command::parse).ok_or_else(|| DecodeError::UnknownCommand(String::new()))?;
    let escape = if command.escapes_headers() { version } else { Version::V1_0 };
    let mut headers = Vec::with_capacity(count);
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            break;
        }
        let n = i + 1;
        let colon = find_byte(b':', line).ok_or(DecodeError::MissingColon { line: n })?;
        let name = unescape(&line[..colon], escape, n)?;
        let mut value = unescape(&line[colon + 1..], escape, n)?;
        if version == Version::V1_0 {
            let trimmed = value.trim_start_matches(' ');
            if trimmed.len() != value.len() {
                value = trimmed.to_string();
            }
        }
        headers.push((name, value));
    }
    Ok(Frame { command, headers, body: Bytes::copy_from_slice(body) })
}

fn unescape(raw: &[u8], version: Version, line: usize) -> Result<String, DecodeError> {
    let bytes = if version == Version::V1_0 || !raw.contains(&b'\\') {
        raw.to_vec()
    } else {
        let mut out = Vec::with_capacity(raw.len());
        let mut it = raw.iter();
        while let Some(&b) = it.next() {
            if b != b'\\' {
                out.push(b);
                continue;
            }
            match it.next() {
                Some(b'n') => out.push(b'\n'),
                Some(b'c') => out.push(b':'),
                Some(b'\\') => out.push(b'\\'),
                Some(b'r') if version == Version::V1_2 => out.push(b'\r'),
                Some(&other) => return Err(DecodeError::BadEscape { line, escape: char::from(other) }),
                None => return Err(DecodeError::BadEscape { line, escape: '?' }),
            }
        }
        out
    };
    String::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8 { line })
}

/// Append `frame` to `out` as `version` writes it. Headers are written exactly
/// as given (the caller adds `content-length` where a body may hold NUL).
///
/// In 1.0, which cannot escape, a CR or LF inside a header is written as a
/// space, since it would otherwise end the header line.
pub fn encode(frame: &Frame, version: Version, out: &mut BytesMut) {
    let escape = if frame.command.escapes_headers() { version } else { Version::V1_0 };
    let size: usize = frame.headers.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>() + frame.body.len() + 16;
    out.reserve(size);
    out.put_slice(frame.command.as_str().as_bytes());
    out.put_u8(b'\n');
    for (k, v) in &frame.headers {
        put_escaped(out, k, escape, true);
        out.put_u8(b':');
        put_escaped(out, v, escape, false);
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.put_slice(&frame.body);
    out.put_u8(0);
}

fn put_escaped(out: &mut BytesMut, s: &str, version: Version, is_name: bool) {
    let bytes = s.as_bytes();
    // Most names and values need no escaping (ids, numbers, destinations): one copy. Bytes
    // before the first special one are written as-is in every version.
    let Some(first) = first_special(bytes) else {
        out.put_slice(bytes);
        return;
    };
    out.put_slice(&bytes[..first]);
    for &b in &bytes[first..] {
        match (version, b) {
            (Version::V1_0, b'\n' | b'\r') => out.put_u8(b' '),
            // 1.0 splits at the first colon, so a colon in a name cannot be written.
            (Version::V1_0, b':') if is_name => out.put_u8(b'_'),
            (Version::V1_0, _) => out.put_u8(b),
            (_, b'\n') => out.put_slice(b"\\n"),
            (_, b':') => out.put_slice(b"\\c"),
            (_, b'\\') => out.put_slice(b"\\\\"),
            (Version::V1_2, b'\r') => out.put_slice(b"\\r"),
            // 1.1 has no escape for CR; a bare CR before the LF would be dropped.
            (Version::V1_1, b'\r') => out.put_u8(b' '),
            _ => out.put_u8(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn one(buf: &[u8], v: Version) -> Frame {
        match decode(buf, v, &limits()) {
            Ok(Decoded::Frame { frame, len }) => {
                assert_eq!(len, buf.len(), "whole buffer consumed");
                frame
            }
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn spec_connect_frame() {
        let f = one(b"CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\0", Version::V1_0);
        assert_eq!(f.command, Command::Connect);
        assert_eq!(f.header("accept-version"), Some("1.2"));
        assert_eq!(f.header("host"), Some("stomp.github.org"));
        assert!(f.body.is_empty());
    }

    #[test]
    fn crlf_line_endings() {
        let f = one(b"SEND\r\ndestination:/queue/a\r\n\r\nhello\0", Version::V1_2);
        assert_eq!(f.header("destination"), Some("/queue/a"));
        assert_eq!(&f.body[..], b"hello");
    }

    #[test]
    fn repeated_header_first_wins() {
        let f = one(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0", Version::V1_2);
        assert_eq!(f.header("foo"), Some("World"));
        assert_eq!(f.headers.len(), 2);
    }

    #[test]
    fn escapes_per_version() {
        let raw = b"SEND\na\\cb:x\\ny\\\\z\\rw\n\n\0";
        let f = one(raw, Version::V1_2);
        assert_eq!(f.headers[0], ("a:b".to_string(), "x\ny\\z\rw".to_string()));
        assert_eq!(
            decode(raw, Version::V1_1, &limits()),
            Err(DecodeError::BadEscape { line: 1, escape: 'r' }),
            "\\r is undefined in 1.1"
        );
        let f = one(raw, Version::V1_0);
        assert_eq!(f.headers[0], ("a\\cb".to_string(), "x\\ny\\\\z\\rw".to_string()), "1.0 does not unescape");
        assert!(matches!(decode(b"SEND\na:\\t\n\n\0", Version::V1_2, &limits()), Err(DecodeError::BadEscape { .. })));
    }

    #[test]
    fn connect_is_never_unescaped() {
        let f = one(b"CONNECT\npasscode:a\\cb\n\n\0", Version::V1_2);
        assert_eq!(f.header("passcode"), Some("a\\cb"));
        let mut out = BytesMut::new();
        encode(&Frame::new(Command::Connected).with("server", "a:b"), Version::V1_2, &mut out);
        assert_eq!(&out[..], b"CONNECTED\nserver:a:b\n\n\0");
    }

    #[test]
    fn v10_trims_leading_spaces() {
        let f = one(b"SEND\ndestination: /queue/a\n\n\0", Version::V1_0);
        assert_eq!(f.header("destination"), Some("/queue/a"));
        let f = one(b"SEND\ndestination: /queue/a\n\n\0", Version::V1_1);
        assert_eq!(f.header("destination"), Some(" /queue/a"));
    }

    #[test]
    fn content_length_body_may_hold_nul() {
        let f = one(b"SEND\ncontent-length:5\n\na\0b\0c\0", Version::V1_2);
        assert_eq!(&f.body[..], b"a\0b\0c");
        assert_eq!(
            decode(b"SEND\ncontent-length:2\n\nabc\0", Version::V1_2, &limits()),
            Err(DecodeError::MissingNul { content_length: 2 })
        );
        assert!(matches!(
            decode(b"SEND\ncontent-length:x\n\n\0", Version::V1_2, &limits()),
            Err(DecodeError::BadContentLength(_))
        ));
    }

    #[test]
    fn heartbeats_and_trailing_eols() {
        assert_eq!(decode(b"\n\r\n\nSEND", Version::V1_2, &limits()), Ok(Decoded::Heartbeat { len: 4 }));
        assert_eq!(decode(b"\r", Version::V1_2, &limits()), Ok(Decoded::Incomplete));
    }

    #[test]
    fn incomplete_until_nul() {
        let full = b"SEND\ndestination:/queue/a\n\nbody\0";
        for cut in 0..full.len() {
            assert_eq!(decode(&full[..cut], Version::V1_2, &limits()), Ok(Decoded::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn bad_input_errors() {
        assert!(
            matches!(decode(b"FOO\n\n\0", Version::V1_2, &limits()), Err(DecodeError::UnknownCommand(c)) if c == "FOO")
        );
        assert!(matches!(
            decode(b"GET / HTTP/1.1 and a long line without end", Version::V1_2, &limits()),
            Err(DecodeError::UnknownCommand(_))
        ));
        assert_eq!(
            decode(b"SEND\nnocolon\n\n\0", Version::V1_2, &limits()),
            Err(DecodeError::MissingColon { line: 1 })
        );
        assert_eq!(decode(b"SEND\na:\xff\n\n\0", Version::V1_2, &limits()), Err(DecodeError::NotUtf8 { line: 1 }));
    }

    #[test]
    fn limits_are_checked_before_the_frame_is_complete() {
        let small = Limits { max_headers: 2, max_header_length: 8, max_body: 4 };
        assert_eq!(
            decode(b"SEND\na:1\nb:2\nc:3\n", Version::V1_2, &small),
            Err(DecodeError::TooManyHeaders { max: 2 })
        );
        assert_eq!(decode(b"SEND\naaaaaaaaaaaa", Version::V1_2, &small), Err(DecodeError::HeaderTooLong { max: 8 }));
        assert_eq!(decode(b"SEND\n\n12345", Version::V1_2, &small), Err(DecodeError::BodyTooLarge { size: 5, max: 4 }));
        assert_eq!(
            decode(b"SEND\ncontent-length:9\n\n", Version::V1_2, &Limits { max_header_length: 32, ..small }),
            Err(DecodeError::BodyTooLarge { size: 9, max: 4 })
        );
    }

    #[test]
    fn cached_decoder_resumes_body_search() {
        let mut d = Decoder::new();
        let mut buf = b"SEND\n\nab".to_vec();
        assert_eq!(d.decode(&buf, Version::V1_2, &limits()), Ok(Decoded::Incomplete));
        buf.extend_from_slice(b"cd");
        assert_eq!(d.decode(&buf, Version::V1_2, &limits()), Ok(Decoded::Incomplete));
        buf.extend_from_slice(b"\0\n");
        match d.decode(&buf, Version::V1_2, &limits()) {
            Ok(Decoded::Frame { frame, len }) => {
                assert_eq!(&frame.body[..], b"abcd");
                assert_eq!(len, 11);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.decode(&buf[11..], Version::V1_2, &limits()), Ok(Decoded::Heartbeat { len: 1 }));
    }

    #[test]
    fn encode_escapes() {
        let f = Frame::new(Command::Message).with("a:b", "x\ny\\z\r");
        let mut out = BytesMut::new();
        encode(&f, Version::V1_2, &mut out);
        assert_eq!(&out[..], b"MESSAGE\na\\cb:x\\ny\\\\z\\r\n\n\0");
        out.clear();
        encode(&f, Version::V1_1, &mut out);
        assert_eq!(&out[..], b"MESSAGE\na\\cb:x\\ny\\\\z \n\n\0");
        out.clear();
        encode(&f, Version::V1_0, &mut out);
        assert_eq!(&out[..], b"MESSAGE\na_b:x y\\z \n\n\0");
        // Clean values are copied whole; a special byte after a clean prefix is still escaped.
        let f = Frame::new(Command::Message).with("ack", "T_s@@1").with("destination", "/queue/a:b");
        out.clear();
        encode(&f, Version::V1_2, &mut out);
        assert_eq!(&out[..], b"MESSAGE\nack:T_s@@1\ndestination:/queue/a\\cb\n\n\0");
    }

    proptest! {
        #[test]
        fn word_scans_match_bytewise(hay in prop::collection::vec(prop::sample::select(b"ab\n\r:\\\0x".to_vec()), 0..40),
                                     skip in 0usize..8) {
            let hay = &hay[skip.min(hay.len())..];
            for needle in [b'\n', b':', 0u8, b'x'] {
                prop_assert_eq!(find_byte(needle, hay), hay.iter().position(|b| *b == needle));
            }
            prop_assert_eq!(first_special(hay), hay.iter().position(|b| matches!(b, b'\n' | b'\r' | b':' | b'\\')));
            let naive: Vec<&[u8]> = hay.split(|b| *b == b'\n').collect();
            let ours: Vec<&[u8]> = Lines(hay).collect();
            let expect = if hay.last() == Some(&b'\n') || hay.is_empty() { &naive[..naive.len() - 1] } else { &naive[..] };
            prop_assert_eq!(&ours[..], expect);
        }
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        prop::sample::select(vec![
            Command::Send,
            Command::Subscribe,
            Command::Unsubscribe,
            Command::Ack,
            Command::Nack,
            Command::Begin,
            Command::Commit,
            Command::Abort,
            Command::Disconnect,
            Command::Message,
            Command::Receipt,
            Command::Error,
        ])
    }

    proptest! {
        /// decode(encode(f)) == f for escaped versions, any header text and any body.
        #[test]
        fn round_trip(
            command in arb_command(),
            headers in prop::collection::vec(("[a-z:\\\\\n\r -]{1,12}", "[ -~\n\r\\\\:é]{0,24}"), 0..8),
            body in prop::collection::vec(any::<u8>(), 0..64),
            v12 in any::<bool>(),
        ) {
            let version = if v12 { Version::V1_2 } else { Version::V1_1 };
            let mut headers: Vec<(String, String)> = headers
                .into_iter()
                .filter(|(k, _)| k != "content-length")
                .map(|(k, v)| if version == Version::V1_1 { (k.replace('\r', " "), v.replace('\r', " ")) } else { (k, v) })
                .collect();
            headers.insert(0, ("content-length".to_string(), body.len().to_string()));
            let frame = Frame { command, headers, body: Bytes::from(body) };
            let mut out = BytesMut::new();
            encode(&frame, version, &mut out);
            out.extend_from_slice(b"\n");
            match decode(&out, version, &Limits::default()) {
                Ok(Decoded::Frame { frame: back, len }) => {
                    prop_assert_eq!(back, frame);
                    prop_assert_eq!(len + 1, out.len());
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        /// Arbitrary bytes never panic, and the decoder never claims more bytes than it was given.
        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..256), split in 0usize..256) {
            let limits = Limits { max_headers: 4, max_header_length: 32, max_body: 64 };
            let mut d = Decoder::new();
            let split = split.min(data.len());
            let mut buf = data[..split].to_vec();
            let mut rest = &data[split..];
            loop {
                match d.decode(&buf, Version::V1_2, &limits) {
                    Ok(Decoded::Incomplete) => {
                        if rest.is_empty() { break; }
                        buf.extend_from_slice(rest);
                        rest = &[];
                    }
                    Ok(Decoded::Heartbeat { len }) | Ok(Decoded::Frame { len, .. }) => {
                        prop_assert!(len > 0 && len <= buf.len());
                        buf.drain(..len);
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
