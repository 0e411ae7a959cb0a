//! A minimal WebSocket client (RFC 6455) that turns one WebSocket connection into a plain byte
//! stream — an [`AsyncRead`] half and an [`AsyncWrite`] half — so the STOMP and MQTT clients of
//! the load generator run over WebSocket unchanged (`ws-stomp`, `ws-mqtt`). Brokers that carry
//! STOMP/MQTT over WebSocket (Switchyard, RabbitMQ Web-STOMP/Web-MQTT) concatenate message
//! payloads into one byte stream, so message boundaries carry no meaning here.
//!
//! - Handshake: `GET <path>` with `Upgrade: websocket`, a `Sec-WebSocket-Protocol`, and a
//!   `101 Switching Protocols` expected back (the accept hash is not checked: this is a load
//!   generator talking to a broker on purpose, not a browser).
//! - Writing: every `write` becomes one binary message (at most [`MAX_MESSAGE`] bytes), masked
//!   with an all-zero key, which RFC 6455 permits and which makes masking free.
//! - Reading: text, binary and continuation payloads are delivered in order; a ping is answered
//!   with a pong (echoing its payload when it is at hand), written between two data messages by
//!   whichever half gets to the socket first, so a consumer that never writes is not closed by
//!   the broker's idle timeout; pongs are skipped; a close message ends the stream.
//!
//! No TLS (`wss://` is refused).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Largest payload put into one WebSocket message (Switchyard accepts up to 8 MiB).
pub const MAX_MESSAGE: usize = 1 << 20;
/// How long the TCP connect and the upgrade may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where a WebSocket endpoint is: `ws://host[:port][/path]`.
#[derive(Debug, Clone)]
pub struct WsTarget {
    /// `host:port`.
    pub addr: String,
    /// Request path (`/ws`).
    pub path: String,
    /// `Sec-WebSocket-Protocol` to ask for.
    pub subprotocol: String,
}

impl WsTarget {
    /// Parses `ws://[userinfo@]host[:port][/path]` (port 80 and path `/` by default); the
    /// userinfo, if any, is returned separately for the protocol's own login.
    pub fn parse(url: &str, subprotocol: &str) -> anyhow::Result<(Self, Option<String>)> {
        if url.starts_with("wss://") {
            bail!("wss:// (TLS) is not supported by loadgen ({url:?})");
        }
        let rest = url.strip_prefix("ws://").ok_or_else(|| anyhow!("WebSocket URL must start with ws:// ({url:?})"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h),
            None => (None, authority),
        };
        let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
        if host.is_empty() {
            bail!("no host in WebSocket URL {url:?}");
        }
        if let Some((_, port)) = hostport.rsplit_once(':') {
            port.parse::<u16>().with_context(|| format!("invalid port in WebSocket URL {url:?}"))?;
        }
        let addr = if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:80") };
        Ok((Self { addr, path: path.to_owned(), subprotocol: subprotocol.to_owned() }, userinfo))
    }

    /// Connects and upgrades; returns the two halves of the byte stream.
    pub async fn connect(&self) -> anyhow::Result<(WsReader, WsWriter)> {
        tokio::time::timeout(TIMEOUT, self.handshake())
            .await
            .map_err(|_| anyhow!("WebSocket upgrade at {} timed out", self.addr))?
    }

    async fn handshake(&self) -> anyhow::Result<(WsReader, WsWriter)> {
        let socket = TcpStream::connect(&self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
        socket.set_nodelay(true)?;
        let (mut rd, mut wr) = socket.into_split();
        // Any 16 bytes, base64: the key only proves to the server that we speak WebSocket.
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: bG9hZGdlbi13cy1rZXktMQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {}\r\n\r\n",
            self.path, self.addr, self.subprotocol
        );
        wr.write_all(request.as_bytes()).await.context("sending the WebSocket upgrade")?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut len = 0;
        let head_end = loop {
            if let Some(i) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if len == buf.len() {
                bail!("WebSocket upgrade answer head too large");
            }
            let n = rd.read(&mut buf[len..]).await.context("reading the WebSocket upgrade answer")?;
            if n == 0 {
                bail!("the broker closed the connection during the WebSocket upgrade");
            }
            len += n;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]);
        let status = head.lines().next().unwrap_or_default();
        if status.split(' ').nth(1) != Some("101") {
            bail!("WebSocket upgrade refused: {status:?}");
        }
        let shared =
            Arc::new(Mutex::new(WriteState { wr, frame: Vec::with_capacity(64 * 1024), sent: 0, accepted: 0 }));
        let reader = WsReader {
            rd,
            buf,
            start: head_end,
            end: len,
            left: 0,
            skip: false,
            closed: false,
            writer: Arc::clone(&shared),
            pong_pending: false,
        };
        Ok((reader, WsWriter { state: shared }))
    }
}

/// The read half: WebSocket message payloads as one byte stream.
#[derive(Debug)]
pub struct WsReader {
    rd: OwnedReadHalf,
    /// Raw bytes from the socket; `buf[start..end]` is not yet parsed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Payload bytes of the current WebSocket frame not yet delivered (or skipped).
    left: u64,
    /// The current frame is a control frame whose payload is dropped.
    skip: bool,
    /// A close message arrived: end of stream.
    closed: bool,
    /// The write side, for pongs.
    writer: Arc<Mutex<WriteState>>,
    /// A pong is queued in `writer` and may still need driving.
    pong_pending: bool,
}

impl WsReader {
    /// Queues a pong (unless a frame is being written: then the pong is dropped, the broker's
    /// next ping gets one) and tries to write it.
    fn queue_pong(&mut self, payload: &[u8], cx: &mut TaskContext<'_>) {
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if w.frame.is_empty() {
            w.frame.push(0x8A);
            w.frame.push(0x80 | payload.len() as u8);
            w.frame.extend_from_slice(&[0, 0, 0, 0]);
            w.frame.extend_from_slice(payload);
            w.sent = 0;
            w.accepted = 0;
            self.pong_pending = true;
        }
        drop(w);
        self.drive_pong(cx);
    }

    /// Writes what is left of a queued pong, if the writer has not done it meanwhile.
    fn drive_pong(&mut self, cx: &mut TaskContext<'_>) {
        if !self.pong_pending {
            return;
        }
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if w.frame.is_empty() || w.accepted != 0 {
            self.pong_pending = false;
            return;
        }
        match w.drive(cx) {
            Poll::Ready(_) => {
                w.frame.clear();
                w.sent = 0;
                self.pong_pending = false;
            }
            Poll::Pending => {}
        }
    }
}

/// A parsed frame header: opcode, payload length, header length.
fn parse_header(raw: &[u8]) -> io::Result<Option<(u8, u64, usize)>> {
    let [b0, b1, ..] = *raw else { return Ok(None) };
    if b1 & 0x80 != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the server sent a masked WebSocket frame"));
    }
    let opcode = b0 & 0x0f;
    let (len, header) = match b1 & 0x7f {
        126 => match raw.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match raw.get(2..10) {
            Some(b) => (u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    Ok(Some((opcode, len, header)))
}

impl AsyncRead for WsReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.drive_pong(cx);
        loop {
            if this.closed {
                return Poll::Ready(Ok(()));
            }
            let avail = this.end - this.start;
            if this.left > 0 && avail > 0 {
                let n = (this.left.min(avail as u64) as usize).min(if this.skip { avail } else { out.remaining() });
                if !this.skip {
                    out.put_slice(&this.buf[this.start..this.start + n]);
                }
                this.start += n;
                this.left -= n as u64;
                if !this.skip {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.left == 0 {
                match parse_header(&this.buf[this.start..this.end])? {
                    Some((opcode, len, header)) => {
                        this.start += header;
                        this.left = len;
                        match opcode {
                            0..=2 => this.skip = false,
                            8 => this.closed = true,
                            9 => {
                                this.skip = true;
                                // Echo the ping's payload when it is already here (it is ≤ 125
                                // bytes), else answer with an empty pong.
                                let at_hand = (len as usize) <= this.end - this.start && len <= 125;
                                let (s, e) = (this.start, this.start + if at_hand { len as usize } else { 0 });
                                let payload = this.buf[s..e].to_vec();
                                this.queue_pong(&payload, cx);
                            }
                            _ => this.skip = true,
                        }
                        continue;
                    }
                    None => {
                        // Need more header bytes: make room at the end.
                        if this.start > 0 {
                            this.buf.copy_within(this.start..this.end, 0);
                            this.end -= this.start;
                            this.start = 0;
                        }
                    }
                }
            } else {
                this.start = 0;
                this.end = 0;
            }
            let mut rb = ReadBuf::new(&mut this.buf[this.end..]);
            ready!(Pin::new(&mut this.rd).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                // EOF without a close message.
                return Poll::Ready(Ok(()));
            }
            this.end += n;
        }
    }
}

/// The write half: each write becomes one binary WebSocket message.
#[derive(Debug)]
pub struct WsWriter {
    /// Shared with the read half, which writes pongs between data messages.
    state: Arc<Mutex<WriteState>>,
}

/// The socket's write half and the frame being written on it.
#[derive(Debug)]
struct WriteState {
    wr: OwnedWriteHalf,
    /// The frame being written (header + payload); empty when none.
    frame: Vec<u8>,
    /// Bytes of `frame` already written.
    sent: usize,
    /// Caller bytes `frame` carries (reported once the frame is written); 0 for a pong.
    accepted: usize,
}

impl WriteState {
    /// Writes the rest of `frame`.
    fn drive(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.frame.len() {
            let n = ready!(Pin::new(&mut self.wr).poll_write(cx, &self.frame[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// Appends the header of a masked (all-zero key) binary frame of `len` bytes.
fn put_header(out: &mut Vec<u8>, len: usize) {
    out.push(0x82);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
}

impl AsyncWrite for WsWriter {
    /// Frames `buf` (up to [`MAX_MESSAGE`] bytes) and returns once the whole frame is written.
    /// While it returns `Pending`, the caller must call again with the same bytes (as
    /// `write_all` does); they are not framed twice.
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if w.frame.is_empty() {
                if buf.is_empty() {
                    return Poll::Ready(Ok(0));
                }
                let n = buf.len().min(MAX_MESSAGE);
                put_header(&mut w.frame, n);
                w.frame.extend_from_slice(&buf[..n]);
                w.sent = 0;
                w.accepted = n;
            }
            ready!(w.drive(cx))?;
            let accepted = w.accepted;
            w.frame.clear();
            w.sent = 0;
            w.accepted = 0;
            if accepted > 0 {
                return Poll::Ready(Ok(accepted));
            }
            // That was a pong queued by the read half; now the caller's bytes.
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        ready!(w.drive(cx))?;
        Pin::new(&mut w.wr).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Pin::new(&mut w.wr).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let (t, user) = WsTarget::parse("ws://guest:pw@127.0.0.1:15674/ws", "v12.stomp").unwrap();
        assert_eq!((t.addr.as_str(), t.path.as_str(), user.as_deref()), ("127.0.0.1:15674", "/ws", Some("guest:pw")));
        let (t, user) = WsTarget::parse("ws://localhost", "mqtt").unwrap();
        assert_eq!((t.addr.as_str(), t.path.as_str(), user), ("localhost:80", "/", None));
        assert!(WsTarget::parse("wss://h/ws", "mqtt").is_err());
        assert!(WsTarget::parse("ws://h:x/ws", "mqtt").is_err());
    }

    #[test]
    fn frame_headers() {
        for (len, header) in [(5usize, 2 + 4), (126, 4 + 4), (70_000, 10 + 4)] {
            let mut out = Vec::new();
            put_header(&mut out, len);
            assert_eq!(out.len(), header);
            // The same header unmasked parses back to the length.
            let mut unmasked = out[..header - 4].to_vec();
            unmasked[1] &= 0x7f;
            assert_eq!(parse_header(&unmasked).unwrap(), Some((2, len as u64, header - 4)));
        }
        assert_eq!(parse_header(&[0x82]).unwrap(), None);
        assert!(parse_header(&[0x82, 0x85]).is_err());
    }
}
