//! A WebSocket as a byte stream, so the STOMP and MQTT connection tasks (which
//! take any `AsyncRead + AsyncWrite`) run over it unchanged.
//!
//! Reading yields the payloads of text and binary messages back to back: a
//! protocol frame may span several messages or share one, and the codec above
//! sees only bytes. Each write becomes one WebSocket message (the connection
//! tasks write whole batches of frames at once): binary for MQTT, which requires
//! it; for STOMP text when the bytes are UTF-8, binary otherwise, since a binary
//! STOMP body cannot travel in a text message. Writes start at once, without
//! waiting for a flush, because the MQTT task never flushes (TCP needs none);
//! reads push on whatever the socket could not take yet.
//!
//! Keepalive lives here too, because the protocol above cannot send WebSocket
//! pings: every `ping_interval` a ping goes out while the connection task waits
//! for input, and a peer silent for `idle_timeout` (pongs count) makes the next
//! read fail with [`std::io::ErrorKind::TimedOut`].
//!
//! Backpressure is the socket's: a flush that tungstenite cannot hand to the
//! kernel stays pending, the connection task waits on it, and the core stops
//! handing out deliveries once that task's unwritten-delivery credit is used.
//!
//! What went wrong, if anything, is kept ([`WsByteStream::close_frame`]) so the
//! server can send the matching close code when the connection task returns.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite;

/// Close code sent when the peer stayed silent past the idle timeout.
pub const CLOSE_IDLE_TIMEOUT: u16 = 4408;

/// A write larger than this is split into several messages (a bound on one
/// message, not on memory: the connection task bounds what it writes).
const MAX_OUT_MESSAGE: usize = 16 * 1024 * 1024;

/// How outbound bytes are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFraming {
    /// Always binary messages (MQTT over WebSocket requires them).
    Binary,
    /// Text messages when the bytes are UTF-8, else binary (STOMP).
    TextWhenUtf8,
}

/// A WebSocket connection seen as a byte stream; see the module docs.
#[derive(Debug)]
pub struct WsByteStream {
    ws: WebSocket,
    framing: OutFraming,
    read_buf: Bytes,
    /// The peer closed (close frame or end of stream): reads return EOF.
    eof: bool,
    /// We sent a close frame.
    close_sent: bool,
    ping: Interval,
    last_seen: Instant,
    idle_timeout: Duration,
    /// Why the connection failed, as the close frame to send.
    failure: Option<(u16, &'static str)>,
}

impl WsByteStream {
    /// Wraps an upgraded WebSocket.
    pub fn new(ws: WebSocket, framing: OutFraming, ping_interval: Duration, idle_timeout: Duration) -> WsByteStream {
        let period = ping_interval.max(Duration::from_millis(100));
        let mut ping = tokio::time::interval_at(Instant::now() + period, period);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        WsByteStream {
            ws,
            framing,
            read_buf: Bytes::new(),
            eof: false,
            close_sent: false,
            ping,
            last_seen: Instant::now(),
            idle_timeout: idle_timeout.max(period),
            failure: None,
        }
    }

    /// The close frame this connection should end with: the failure seen while
    /// reading (size, encoding, protocol, idle timeout) or a normal close.
    pub fn close_frame(&self) -> (u16, &'static str) {
        self.failure.unwrap_or((close_code::NORMAL, ""))
    }

    /// Whether a close frame was already sent (by `shutdown` or [`WsByteStream::close`]).
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Flushes what is buffered, sends a close frame with `code` and `reason` unless one
    /// was sent, and waits for the close handshake; at most `within`.
    pub async fn close(&mut self, code: u16, reason: &'static str, within: Duration) {
        let closing = async {
            let _ = futures_util::SinkExt::flush(&mut self.ws).await;
            if !self.close_sent {
                self.close_sent = true;
                let frame = CloseFrame { code, reason: reason.into() };
                let _ = futures_util::SinkExt::send(&mut self.ws, Message::Close(Some(frame))).await;
            }
            // Read until the peer's close (or the end), so the close handshake completes.
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut self.ws).await {}
        };
        let _ = tokio::time::timeout(within, closing).await;
    }

    /// Hands `buf` (at most [`MAX_OUT_MESSAGE`] of it) to the WebSocket as one message
    /// and starts writing it out.
    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
        let n = buf.len().min(MAX_OUT_MESSAGE);
        let chunk = Bytes::copy_from_slice(&buf[..n]);
        let msg = match self.framing {
            OutFraming::Binary => Message::Binary(chunk),
            OutFraming::TextWhenUtf8 => match axum::extract::ws::Utf8Bytes::try_from(chunk.clone()) {
                Ok(text) => Message::Text(text),
                Err(_) => Message::Binary(chunk),
            },
        };
        Pin::new(&mut self.ws).start_send(msg).map_err(io::Error::other)?;
        // The connection task may never call flush (a TCP socket needs none): start the
        // write now; what the socket cannot take yet is pushed on by later polls.
        if let Poll::Ready(Err(e)) = Pin::new(&mut self.ws).poll_flush(cx) {
            return Poll::Ready(Err(io::Error::other(e)));
        }
        Poll::Ready(Ok(n))
    }

    /// Sends a ping when one is due and fails when the peer has been silent too long.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.ping.poll_tick(cx).is_ready() {
            if self.last_seen.elapsed() > self.idle_timeout {
                self.failure = Some((CLOSE_IDLE_TIMEOUT, "idle timeout"));
                return Err(io::Error::new(io::ErrorKind::TimedOut, "websocket peer silent past the idle timeout"));
            }
            // Best effort: a socket that cannot take a ping now gets none this round.
            if let Poll::Ready(Ok(())) = Pin::new(&mut self.ws).poll_ready(cx) {
                let _ = Pin::new(&mut self.ws).start_send(Message::Ping(Bytes::new()));
                let _ = Pin::new(&mut self.ws).poll_flush(cx);
            }
        }
        Ok(())
    }
}

/// The close frame for an error reading from the WebSocket.
pub fn close_for_error(err: &axum::Error) -> (u16, &'static str) {
    let inner = std::error::Error::source(err).and_then(|e| e.downcast_ref::<tungstenite::Error>());
    match inner {
        Some(tungstenite::Error::Capacity(_)) => (close_code::SIZE, "message too big"),
        Some(tungstenite::Error::Utf8(_)) => (close_code::INVALID, "invalid UTF-8 in a text message"),
        Some(tungstenite::Error::Protocol(_)) => (close_code::PROTOCOL, "WebSocket protocol error"),
        _ => (close_code::ERROR, "connection error"),
    }
}

impl AsyncRead for WsByteStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.read_buf.is_empty() {
                let n = this.read_buf.len().min(buf.remaining());
                buf.put_slice(&this.read_buf[..n]);
                this.read_buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            this.poll_keepalive(cx)?;
            // Push on what earlier writes left in the WebSocket's buffer (see `poll_send`).
            if !this.close_sent
                && let Poll::Ready(Err(e)) = Pin::new(&mut this.ws).poll_flush(cx)
            {
                return Poll::Ready(Err(io::Error::other(e)));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None => this.eof = true,
                Some(Err(e)) => {
                    this.failure = Some(close_for_error(&e));
                    return Poll::Ready(Err(io::Error::other(e)));
                }
                Some(Ok(msg)) => {
                    this.last_seen = Instant::now();
                    match msg {
                        Message::Text(t) => this.read_buf = Bytes::from(t),
                        Message::Binary(b) => this.read_buf = b,
                        Message::Ping(_) | Message::Pong(_) => {}
                        Message::Close(_) => {
                            // tungstenite answers the close itself.
                            this.close_sent = true;
                            this.eof = true;
                        }
                    }
                }
            }
        }
    }
}

impl AsyncWrite for WsByteStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.close_sent {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed")));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.poll_send(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.close_sent {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.close_sent {
            ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io::Error::other)?;
            let (code, reason) = this.close_frame();
            let frame = CloseFrame { code, reason: reason.into() };
            Pin::new(&mut this.ws).start_send(Message::Close(Some(frame))).map_err(io::Error::other)?;
            this.close_sent = true;
        }
        Pin::new(&mut this.ws).poll_flush(cx).map_err(io::Error::other)
    }
}
