//! MQTT 3.1.1 over WebSocket (`--protocol ws-mqtt`): a minimal MQTT client of our own on the
//! [`super::ws`] byte stream (rumqttc's WebSocket transport pulls in another WebSocket stack;
//! this keeps one, and keeps the client lean).
//!
//! URL: `ws://[user:pass@]host[:port]/path`, subprotocol `mqtt`. Same mapping as the TCP MQTT
//! backend ([`super::mqtt`]): topic `loadgen/<name>`; the shared layout has exactly one
//! subscriber, fan-out N subscribers of the same topic. QoS 0, 1 and 2 for publishes and
//! subscriptions; publisher "confirms" are PUBACK (QoS 1) / PUBCOMP (QoS 2), with at most
//! `--confirm` (default 100) unacknowledged publishes per producer. Subscribers answer PUBACK,
//! or PUBREC then PUBCOMP on PUBREL. Clean sessions, keep-alive 0.
//!
//! Each connection has a writer task that writes whatever accumulated in its outbox while it was
//! busy (many packets per WebSocket message under load, one when idle, never a timer), as the
//! STOMP client does.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::outbox::Outbox;
use super::ws::{WsReader, WsTarget, WsWriter};
use super::{Backend, ConsumeSettings, Consumer, Layout, Producer, PublishSettings, Topology};
use crate::stats::{Counters, Received};

/// How long connect/subscribe, the final flush and waits for acks may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest packet accepted from the broker.
const MAX_PACKET: usize = 64 << 20;
/// Unacknowledged publishes per producer when `--confirm` is 0 (QoS ≥ 1).
const DEFAULT_WINDOW: u64 = 100;

/// An MQTT-over-WebSocket endpoint.
#[derive(Debug)]
pub struct WsMqttBackend {
    target: WsTarget,
    credentials: Option<(String, String)>,
    next_id: AtomicUsize,
}

impl WsMqttBackend {
    /// Parses `ws://[user[:pass]@]host[:port][/path]`.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let (target, userinfo) = WsTarget::parse(url, "mqtt")?;
        let credentials = userinfo.map(|info| {
            let (user, pass) = info.split_once(':').unwrap_or((&info, ""));
            (user.to_owned(), pass.to_owned())
        });
        Ok(Self { target, credentials, next_id: AtomicUsize::new(0) })
    }

    /// Connects, sends CONNECT and waits for a successful CONNACK.
    async fn connect(&self, role: &str) -> anyhow::Result<(PacketReader, WsWriter)> {
        let (rd, mut wr) = self.target.connect().await?;
        let id = format!("loadgen-ws-{role}-{}-{}", std::process::id(), self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut body = Vec::with_capacity(64);
        put_str(&mut body, "MQTT")?;
        body.push(4); // protocol level 3.1.1
        let mut flags = 0x02u8; // clean session
        if self.credentials.is_some() {
            flags |= 0xC0;
        }
        body.push(flags);
        body.extend_from_slice(&0u16.to_be_bytes()); // keep-alive off
        put_str(&mut body, &id)?;
        if let Some((user, pass)) = &self.credentials {
            put_str(&mut body, user)?;
            put_str(&mut body, pass)?;
        }
        let mut packet = Vec::with_capacity(body.len() + 5);
        put_packet(&mut packet, 0x10, &body);
        wr.write_all(&packet).await.context("sending CONNECT")?;
        let mut reader = PacketReader::new(rd);
        let (kind, range) = tokio::time::timeout(TIMEOUT, reader.next())
            .await
            .map_err(|_| anyhow!("no CONNACK within {TIMEOUT:?}"))??;
        let connack = &reader.buf[range];
        if kind != 0x20 || connack.get(1) != Some(&0) {
            bail!("broker refused the MQTT connection (packet {kind:#04x}, {connack:02x?})");
        }
        Ok((reader, wr))
    }

    fn topic(topology: &Topology) -> String {
        format!("loadgen/{}", topology.name)
    }
}

/// Appends an MQTT string (u16 length + bytes).
fn put_str(out: &mut Vec<u8>, s: &str) -> anyhow::Result<()> {
    out.extend_from_slice(&u16::try_from(s.len()).context("MQTT string longer than 65535 bytes")?.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends a fixed header (`first` byte + remaining length) for `len` body bytes.
fn put_fixed_header(out: &mut Vec<u8>, first: u8, mut len: usize) {
    out.push(first);
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

/// Appends a whole packet.
fn put_packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    put_fixed_header(out, first, body.len());
    out.extend_from_slice(body);
}

/// Appends a two-byte packet-id-only packet (PUBACK, PUBREC, PUBREL, PUBCOMP).
fn put_ack(out: &mut Vec<u8>, first: u8, id: u16) {
    out.extend_from_slice(&[first, 2]);
    out.extend_from_slice(&id.to_be_bytes());
}

/// Parses MQTT packets out of the read half, in place.
struct PacketReader {
    rd: WsReader,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl PacketReader {
    fn new(rd: WsReader) -> Self {
        Self { rd, buf: vec![0; 256 * 1024], start: 0, end: 0 }
    }

    /// The next packet: its first byte and the range of its body in `buf` (valid until the
    /// next call). Cancel-safe.
    async fn next(&mut self) -> anyhow::Result<(u8, Range<usize>)> {
        loop {
            if let Some(found) = self.try_packet()? {
                return Ok(found);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
            let n = self.rd.read(&mut self.buf[self.end..]).await.context("reading from the broker")?;
            if n == 0 {
                bail!("the broker closed the connection");
            }
            self.end += n;
        }
    }

    fn try_packet(&mut self) -> anyhow::Result<Option<(u8, Range<usize>)>> {
        let raw = &self.buf[self.start..self.end];
        let Some(&first) = raw.first() else { return Ok(None) };
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let Some(&b) = raw.get(i) else { return Ok(None) };
            len |= usize::from(b & 0x7f) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            if i > 4 {
                bail!("malformed remaining length from the broker");
            }
        }
        if len > MAX_PACKET {
            bail!("the broker sent a {len}-byte packet (over {MAX_PACKET})");
        }
        if raw.len() < i + len {
            return Ok(None);
        }
        let body = self.start + i..self.start + i + len;
        self.start += i + len;
        Ok(Some((first, body)))
    }
}

impl Backend for WsMqttBackend {
    type Producer = WsMqttProducer;
    type Consumer = WsMqttConsumer;
    type Idle = (PacketReaderHandle, WsWriter);

    async fn declare(&self, _topology: &Topology) -> anyhow::Result<()> {
        Ok(())
    }

    async fn producer(&self, topology: &Topology, settings: PublishSettings) -> anyhow::Result<WsMqttProducer> {
        let (reader, wr) = self.connect("pub").await?;
        let (outbox, writer) = Outbox::start(wr);
        let acks = Arc::new(Acks::default());
        let reader_task = tokio::spawn(read_acks(reader, Arc::clone(&acks), Arc::clone(&outbox)));
        let mut topic_field = Vec::new();
        put_str(&mut topic_field, &Self::topic(topology))?;
        Ok(WsMqttProducer {
            outbox,
            writer,
            reader_task,
            acks,
            topic_field,
            qos: settings.qos.min(2),
            // Packet ids are 16-bit: never more in flight than there are ids.
            window: if settings.confirm_window == 0 {
                DEFAULT_WINDOW
            } else {
                settings.confirm_window.min(65_535) as u64
            },
            published: 0,
            reported: 0,
            next_packet_id: 0,
        })
    }

    async fn consumer(
        &self,
        topology: &Topology,
        index: usize,
        settings: ConsumeSettings,
    ) -> anyhow::Result<WsMqttConsumer> {
        if topology.layout == Layout::Shared && index > 0 {
            bail!("MQTT subscribers each get every message: use --consumers 1 for e2e, or the fanout scenario");
        }
        let (mut reader, wr) = self.connect("sub").await?;
        let (outbox, writer) = Outbox::start(wr);
        let mut body = vec![0, 1];
        put_str(&mut body, &Self::topic(topology))?;
        body.push(settings.qos.min(2));
        outbox.push(|out| put_packet(out, 0x82, &body)).await?;
        tokio::time::timeout(TIMEOUT, async {
            loop {
                let (kind, range) = reader.next().await?;
                if kind == 0x90 {
                    let granted = reader.buf[range].get(2).copied().unwrap_or(0x80);
                    if granted == 0x80 {
                        bail!("the broker refused the subscription");
                    }
                    return Ok(());
                }
            }
        })
        .await
        .map_err(|_| anyhow!("no SUBACK within {TIMEOUT:?}"))??;
        Ok(WsMqttConsumer { reader, outbox, writer })
    }

    async fn teardown(&self, _topology: &Topology) -> anyhow::Result<()> {
        Ok(())
    }

    async fn idle_connection(&self) -> anyhow::Result<(PacketReaderHandle, WsWriter)> {
        let (reader, wr) = self.connect("idle").await?;
        Ok((PacketReaderHandle { _reader: reader }, wr))
    }
}

/// The read half of an idle connection, held open.
pub struct PacketReaderHandle {
    _reader: PacketReader,
}

/// Acknowledgements seen by a producer's reader task.
#[derive(Default)]
struct Acks {
    /// PUBACKs (QoS 1) and PUBCOMPs (QoS 2) received.
    done: AtomicU64,
    changed: Notify,
    failed: Mutex<Option<String>>,
}

/// A producer's reader: counts PUBACK/PUBCOMP, answers PUBREC with PUBREL.
async fn read_acks(mut reader: PacketReader, acks: Arc<Acks>, outbox: Arc<Outbox>) {
    loop {
        match reader.next().await {
            Ok((kind, range)) => {
                let body = &reader.buf[range];
                match kind & 0xF0 {
                    0x40 | 0x70 => {
                        acks.done.fetch_add(1, Ordering::Release);
                        acks.changed.notify_waiters();
                    }
                    0x50 => {
                        let id =
                            u16::from_be_bytes([body.first().copied().unwrap_or(0), body.get(1).copied().unwrap_or(0)]);
                        outbox.push_now(|out| put_ack(out, 0x62, id));
                    }
                    _ => {}
                }
            }
            Err(err) => {
                acks.failed.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(format!("{err:#}"));
                acks.changed.notify_waiters();
                return;
            }
        }
    }
}

/// One publishing connection.
pub struct WsMqttProducer {
    outbox: Arc<Outbox>,
    writer: JoinHandle<()>,
    reader_task: JoinHandle<()>,
    acks: Arc<Acks>,
    /// The topic as an MQTT string (length + bytes).
    topic_field: Vec<u8>,
    qos: u8,
    window: u64,
    published: u64,
    reported: u64,
    next_packet_id: u16,
}

impl WsMqttProducer {
    fn report(&mut self, counters: &Counters) -> anyhow::Result<()> {
        let done = self.acks.done.load(Ordering::Acquire);
        counters.confirmed.fetch_add(done - self.reported, Ordering::Relaxed);
        self.reported = done;
        if let Some(err) = self.acks.failed.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            bail!("mqtt connection failed: {err}");
        }
        Ok(())
    }

    /// Waits until at most `limit` publishes are unacknowledged.
    async fn wait_window(&mut self, limit: u64, counters: &Counters) -> anyhow::Result<()> {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                let acks = Arc::clone(&self.acks);
                let changed = acks.changed.notified();
                self.report(counters)?;
                if self.published - self.reported <= limit {
                    return Ok(());
                }
                changed.await;
            }
        })
        .await
        .map_err(|_| anyhow!("publishes not acknowledged within {TIMEOUT:?}"))?
    }
}

impl Producer for WsMqttProducer {
    async fn send(&mut self, payload: &[u8], counters: &Counters) -> anyhow::Result<()> {
        if self.qos > 0 {
            let limit = self.window.saturating_sub(1);
            if self.published - self.reported > limit {
                self.wait_window(limit, counters).await?;
            }
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        }
        let (qos, id, topic) = (self.qos, self.next_packet_id, &self.topic_field);
        let id_len = if qos > 0 { 2 } else { 0 };
        self.outbox
            .push(|out| {
                put_fixed_header(out, 0x30 | (qos << 1), topic.len() + id_len + payload.len());
                out.extend_from_slice(topic);
                if qos > 0 {
                    out.extend_from_slice(&id.to_be_bytes());
                }
                out.extend_from_slice(payload);
            })
            .await?;
        if self.qos > 0 {
            self.published += 1;
            self.report(counters)?;
        }
        Ok(())
    }

    async fn flush(&mut self, counters: &Counters) -> anyhow::Result<()> {
        self.outbox.flush().await?;
        if self.qos > 0 {
            self.wait_window(0, counters).await?;
        }
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        disconnect(&self.outbox, self.writer).await;
        self.reader_task.abort();
        Ok(())
    }
}

/// One subscribed connection.
pub struct WsMqttConsumer {
    reader: PacketReader,
    outbox: Arc<Outbox>,
    writer: JoinHandle<()>,
}

impl Consumer for WsMqttConsumer {
    async fn recv(&mut self) -> anyhow::Result<Option<Received>> {
        loop {
            let (kind, range) = self.reader.next().await?;
            let body = &self.reader.buf[range];
            match kind & 0xF0 {
                0x30 => {
                    let qos = (kind >> 1) & 3;
                    let topic_len = usize::from(u16::from_be_bytes([
                        body.first().copied().unwrap_or(0),
                        body.get(1).copied().unwrap_or(0),
                    ]));
                    let mut at = 2 + topic_len;
                    if qos > 0 {
                        let id = body.get(at..at + 2).ok_or_else(|| anyhow!("truncated PUBLISH"))?;
                        let id = u16::from_be_bytes([id[0], id[1]]);
                        self.outbox.push_now(|out| put_ack(out, if qos == 1 { 0x40 } else { 0x50 }, id));
                        at += 2;
                    }
                    let payload = body.get(at..).ok_or_else(|| anyhow!("truncated PUBLISH"))?;
                    return Ok(Some(Received::of(payload)));
                }
                0x60 => {
                    let id =
                        u16::from_be_bytes([body.first().copied().unwrap_or(0), body.get(1).copied().unwrap_or(0)]);
                    self.outbox.push_now(|out| put_ack(out, 0x70, id));
                }
                0xE0 => return Ok(None),
                _ => {}
            }
            if let Some(err) = self.outbox.failure() {
                bail!("writing to the broker: {err}");
            }
        }
    }

    async fn close(self) -> anyhow::Result<()> {
        disconnect(&self.outbox, self.writer).await;
        Ok(())
    }
}

/// Queues DISCONNECT, waits until it is written, and stops the writer.
async fn disconnect(outbox: &Outbox, writer: JoinHandle<()>) {
    if outbox.push(|out| out.extend_from_slice(&[0xE0, 0])).await.is_ok() {
        let _ = outbox.flush().await;
    }
    outbox.stop(writer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_lengths() {
        for (len, header) in [(0usize, 2usize), (127, 2), (128, 3), (16_383, 3), (16_384, 4), (2_097_152, 5)] {
            let mut out = Vec::new();
            put_fixed_header(&mut out, 0x30, len);
            assert_eq!(out.len(), header, "len {len}");
        }
    }

    #[test]
    fn parses_urls() {
        let b = WsMqttBackend::new("ws://u:p@127.0.0.1:15675/ws").unwrap();
        assert_eq!(b.credentials, Some(("u".into(), "p".into())));
        assert_eq!((b.target.addr.as_str(), b.target.path.as_str()), ("127.0.0.1:15675", "/ws"));
        assert!(WsMqttBackend::new("mqtt://h").is_err());
    }
}
