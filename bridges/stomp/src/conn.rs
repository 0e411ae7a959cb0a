//! One client connection: the read/deliver/write loop, heart-beats, the
//! CONNECT deadline, memory-alarm pausing, and the close sequence. The only
//! file in the bridge that does I/O.
//!
//! Each loop turn writes what the session encoded, then waits for the first of:
//! shutdown, bytes from the client, deliveries from the core, a memory-alarm
//! change, or the next deadline (heart-beat to send, heart-beat overdue,
//! CONNECT overdue). Backpressure is structural: while a write is pending
//! nothing is read and no delivery is taken, and the core stops handing out
//! deliveries once a consumer's credit (prefetch, or the unwritten bound for
//! `ack:auto`) is used up.
//!
//! Closing after an ERROR: the frame is written, the write side shut down, and
//! the socket drained briefly before it is dropped, so the client reads the
//! ERROR instead of a reset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use switchyard::BrokerHandle;
use switchyard::queue::ConsumerEvent;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::codec::{Decoded, Decoder, Limits, Version};
use crate::config::StompConfig;
use crate::error::StompError;
use crate::session::{Next, Session};

/// Most consumer events handled per loop turn, so reads are not starved.
const EVENTS_PER_TURN: usize = 512;
/// How long we keep reading (and discarding) after sending an ERROR, so the client sees it.
const LINGER: Duration = Duration::from_secs(2);
/// A client missing heart-beats is given this many intervals before it is dropped.
const HEART_BEAT_GRACE: u32 = 2;

pub use switchyard_kit::CloseReason;

/// Serve one accepted client until it disconnects, fails, or `shutdown` fires.
pub async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    broker: BrokerHandle,
    cfg: Arc<StompConfig>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let id = broker.next_connection_id();
    let limits = cfg.limits();
    let handshake = Duration::from_secs(cfg.handshake_timeout.max(1));
    let mut conn = Conn {
        session: Session::new(broker.clone(), cfg, id, peer, events_tx),
        limits,
        decoder: Decoder::new(),
        close: None,
        id,
    };
    tracing::debug!(connection = id, %peer, "stomp connection accepted");
    let reason = match conn.run(stream, events_rx, shutdown, &broker, handshake).await {
        Ok(reason) => reason,
        Err(e) => {
            tracing::debug!(connection = id, error = %e, "stomp connection i/o error");
            CloseReason::PeerGone
        }
    };
    conn.session.close();
    tracing::debug!(connection = id, ?reason, "stomp connection closed");
}

struct Conn {
    session: Session,
    limits: Limits,
    decoder: Decoder,
    /// Set once the connection must end: flush, then close.
    close: Option<CloseReason>,
    id: u64,
}

impl Conn {
    async fn run<S>(
        &mut self,
        mut stream: S,
        mut events: mpsc::UnboundedReceiver<ConsumerEvent>,
        shutdown: CancellationToken,
        broker: &BrokerHandle,
        handshake: Duration,
    ) -> std::io::Result<CloseReason>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let mut blocked = broker.memory().subscribe();
        let mut synced = broker.message_log().synced();
        self.session.release_receipts(*synced.borrow_and_update());
        // Watches whose sender is gone (only at broker shutdown) are not polled again.
        let (mut synced_live, mut blocked_live) = (true, true);
        let started = Instant::now();
        let mut last_read = started;
        let mut last_write = started;
        // The waits that outlive a turn are made once and polled in place (building and
        // dropping them every turn registered each with its notifier again). The timer is
        // moved only when a turn needs it sooner, or after it fired.
        let stopped = shutdown.cancelled();
        tokio::pin!(stopped);
        let timer = tokio::time::sleep_until(started + handshake);
        tokio::pin!(timer);
        loop {
            if !self.session.out.is_empty() {
                stream.write_all_buf(&mut self.session.out).await?;
                stream.flush().await?;
                last_write = Instant::now();
                self.session.report_written();
            }
            if let Some(reason) = self.close {
                if reason != CloseReason::ClientClosed {
                    linger(&mut stream).await;
                }
                return Ok(reason);
            }
            let (send_every, expect_every) = self.session.heart_beat;
            let mut deadline = if self.session.is_connected() { None } else { Some(started + handshake) };
            if expect_every > 0 {
                let d = last_read + Duration::from_millis(expect_every) * HEART_BEAT_GRACE;
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
            if send_every > 0 {
                let d = last_write + Duration::from_millis(send_every);
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
            if let Some(d) = deadline
                && (timer.is_elapsed() || d < timer.deadline())
            {
                timer.as_mut().reset(d);
            }
            // The alarm and the log's fsyncs are watched only while they matter to this
            // connection: while the alarm pauses it, and while receipts wait for an fsync.
            let paused = self.session.published && *blocked.borrow_and_update();
            tokio::select! {
                biased;
                _ = &mut stopped => {
                    self.fail(StompError::new("Server shutdown", "The broker is shutting down\n"), None);
                    self.close = Some(CloseReason::Shutdown);
                }
                read = stream.read_buf(&mut buf), if !paused => {
                    if read? == 0 {
                        return Ok(CloseReason::PeerGone);
                    }
                    last_read = Instant::now();
                    self.handle_bytes(&mut buf, &mut events);
                    self.check_store();
                }
                Some(ev) = events.recv(), if self.session.is_connected() => {
                    self.session.handle_event(ev);
                    for _ in 1..EVENTS_PER_TURN {
                        match events.try_recv() {
                            Ok(ev) => self.session.handle_event(ev),
                            Err(_) => break,
                        }
                    }
                }
                changed = synced.changed(), if synced_live && self.session.waits_for_sync() => {
                    if changed.is_ok() {
                        let now_synced = *synced.borrow_and_update();
                        self.session.release_receipts(now_synced);
                        self.check_store();
                        if self.close.is_none() && self.session.finished() {
                            self.close = Some(CloseReason::ClientClosed);
                        }
                    } else {
                        synced_live = false;
                    }
                }
                changed = blocked.changed(), if blocked_live && paused => {
                    blocked_live = changed.is_ok();
                }
                () = &mut timer, if deadline.is_some() => {
                    let now = Instant::now();
                    if !self.session.is_connected() && now >= started + handshake {
                        tracing::debug!(connection = self.id, "no CONNECT within the handshake timeout");
                        return Ok(CloseReason::HandshakeTimeout);
                    }
                    // Reads are paused under the memory alarm: the silence is ours, not the client's.
                    if paused {
                        last_read = now;
                    }
                    if expect_every > 0 && now >= last_read + Duration::from_millis(expect_every) * HEART_BEAT_GRACE {
                        tracing::info!(connection = self.id, "stomp client missed heart-beats ({expect_every} ms); closing");
                        return Ok(CloseReason::HeartbeatTimeout);
                    }
                    if send_every > 0 && now >= last_write + Duration::from_millis(send_every) {
                        self.session.out.extend_from_slice(b"\n");
                    }
                }
            }
        }
    }

    fn handle_bytes(&mut self, buf: &mut BytesMut, events: &mut mpsc::UnboundedReceiver<ConsumerEvent>) {
        while self.close.is_none() {
            let version = if self.session.is_connected() { self.session.version } else { Version::V1_0 };
            match self.decoder.decode(buf, version, &self.limits) {
                Ok(Decoded::Incomplete) => return,
                Ok(Decoded::Heartbeat { len }) => buf.advance(len),
                Ok(Decoded::Frame { frame, len }) => {
                    buf.advance(len);
                    if frame.command == crate::codec::Command::Unsubscribe {
                        // Deliveries the core already queued for it go out first.
                        while let Ok(ev) = events.try_recv() {
                            self.session.handle_event(ev);
                        }
                    }
                    let receipt = frame.header("receipt").map(str::to_string);
                    match self.session.handle_frame(frame) {
                        Ok(Next::Continue) => {}
                        Ok(Next::Close) => self.close = Some(CloseReason::ClientClosed),
                        Err(e) => self.fail(e, receipt.as_deref()),
                    }
                }
                Err(e) => {
                    buf.clear();
                    self.fail(e.into(), None);
                }
            }
        }
    }

    /// If the message log failed while receipts wait for their writes to be durable,
    /// refuse them: an ERROR naming the first one, then close (as RabbitMQ does for a
    /// failed publish). Every waiting frame failed: its messages may or may not be stored.
    fn check_store(&mut self) {
        if self.close.is_some() {
            return;
        }
        if let Some(receipt) = self.session.lost_receipt() {
            tracing::warn!(connection = self.id, receipt = %receipt, "message log failed; refusing waiting receipts");
            let e = StompError::new(
                "message store failed: the message was not stored",
                "The message store could not write this frame's persistent messages to disk; \
                 they may be lost, and no later receipt on this connection will be sent\n",
            );
            self.fail(e, Some(&receipt));
        }
    }

    fn fail(&mut self, e: StompError, receipt: Option<&str>) {
        tracing::debug!(connection = self.id, message = %e.message, detail = %e.detail.trim_end(), "stomp error");
        self.session.send_error(&e, receipt);
        self.close = Some(CloseReason::ProtocolError);
    }
}

/// Half-close and read until the client closes too (or [`LINGER`] passes).
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = stream.shutdown().await;
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        loop {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}
