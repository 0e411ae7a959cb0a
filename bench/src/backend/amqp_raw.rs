//! A lean AMQP 0-9-1 client for the hot path (`--client raw`): hand-encoded frames on a plain
//! tokio socket, writes coalesced by a writer task, deliveries parsed in place.
//!
//! Why: with lapin, every message crosses lapin's per-connection I/O thread and is copied several
//! times; on a 2-core machine the load generator then used 130% CPU against Switchyard's 55% and
//! was the bottleneck. This client does the same protocol work (publish, confirms, consume,
//! prefetch, acks) with a fraction of the CPU, so more of the machine goes to the broker under test.
//! It implements only what the scenarios need: channel 1, `basic.publish` with optional delivery
//! mode 2, `confirm.select`, `basic.qos`, `basic.consume`, `basic.ack`. Queues and exchanges are
//! still declared and deleted with lapin ([`super::amqp::AmqpBackend`]), and the handshake here is
//! shared with its idle connections.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use lapin::uri::AMQPUri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::amqp::{AmqpBackend, IdleAmqp, consumer_queue, publish_target};
use super::outbox::Outbox;
use super::{Backend, ConsumeSettings, Consumer, Producer, PublishSettings, Topology};
use crate::stats::{Counters, Received, STAMP_LEN};

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_END: u8 = 0xCE;
const CHANNEL: u16 = 1;

const CONNECTION: u16 = 10;
const CHANNEL_CLASS: u16 = 20;
const BASIC: u16 = 60;
const CONFIRM: u16 = 85;

/// How long setup steps and the final flush may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Connects, authenticates (PLAIN), tunes (heartbeats off) and opens the vhost. Returns the
/// socket and the negotiated frame-max.
pub async fn handshake(uri: &AMQPUri) -> anyhow::Result<(TcpStream, u32)> {
    let addr = format!("{}:{}", uri.authority.host, uri.authority.port);
    let mut socket = TcpStream::connect(&addr).await.with_context(|| format!("connecting to {addr}"))?;
    socket.set_nodelay(true)?;
    socket.write_all(b"AMQP\x00\x00\x09\x01").await?;
    expect_handshake(&mut socket, 10).await?;

    let mut start_ok = method_payload(CONNECTION, 11);
    start_ok.extend_from_slice(&0u32.to_be_bytes()); // empty client-properties table
    put_short_str(&mut start_ok, "PLAIN")?;
    let user = &uri.authority.userinfo;
    let response = format!("\0{}\0{}", user.username, user.password);
    start_ok.extend_from_slice(&u32::try_from(response.len())?.to_be_bytes());
    start_ok.extend_from_slice(response.as_bytes());
    put_short_str(&mut start_ok, "en_US")?;
    socket.write_all(&frame(FRAME_METHOD, 0, &start_ok)).await?;

    let tune = expect_handshake(&mut socket, 30).await?;
    let args = tune.get(4..12).ok_or_else(|| anyhow!("short connection.tune"))?;
    let frame_max = u32::from_be_bytes([args[2], args[3], args[4], args[5]]);
    let mut tune_ok = method_payload(CONNECTION, 31);
    tune_ok.extend_from_slice(&args[..6]); // channel-max, frame-max as offered
    tune_ok.extend_from_slice(&0u16.to_be_bytes()); // heartbeat off
    socket.write_all(&frame(FRAME_METHOD, 0, &tune_ok)).await?;

    let mut open = method_payload(CONNECTION, 40);
    put_short_str(&mut open, &uri.vhost)?;
    put_short_str(&mut open, "")?;
    open.push(0);
    socket.write_all(&frame(FRAME_METHOD, 0, &open)).await?;
    expect_handshake(&mut socket, 41).await?;
    Ok((socket, frame_max))
}

/// Reads frames until a connection-class method arrives; fails unless it is `want`.
async fn expect_handshake(socket: &mut TcpStream, want: u16) -> anyhow::Result<Vec<u8>> {
    loop {
        let mut header = [0u8; 7];
        socket.read_exact(&mut header).await.context("reading a handshake frame")?;
        if &header[..4] == b"AMQP" {
            bail!("broker refused the protocol version");
        }
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        if size > 1 << 20 {
            bail!("handshake frame of {size} bytes");
        }
        let mut payload = vec![0u8; size + 1];
        socket.read_exact(&mut payload).await.context("reading a handshake frame")?;
        payload.truncate(size);
        if header[0] != FRAME_METHOD || payload.len() < 4 {
            continue;
        }
        match method_ids(&payload) {
            (CONNECTION, m) if m == want => return Ok(payload),
            (CONNECTION, 50) => bail!("broker closed the connection during the handshake: {}", close_text(&payload)),
            (c, m) => bail!("unexpected method {c}.{m} during the handshake (wanted 10.{want})"),
        }
    }
}

fn method_ids(payload: &[u8]) -> (u16, u16) {
    match payload {
        [a, b, c, d, ..] => (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])),
        _ => (0, 0),
    }
}

/// The reply text of a `connection.close` / `channel.close` payload.
fn close_text(payload: &[u8]) -> String {
    let code = payload.get(4..6).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let len = payload.get(6).copied().unwrap_or(0) as usize;
    let text = payload.get(7..7 + len).map(String::from_utf8_lossy).unwrap_or_default();
    format!("{code} {text}")
}

fn method_payload(class: u16, method: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&method.to_be_bytes());
    out
}

fn put_short_str(out: &mut Vec<u8>, s: &str) -> anyhow::Result<()> {
    out.push(u8::try_from(s.len()).context("short string longer than 255 bytes")?);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends one frame to `out`.
fn put_frame(out: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    put_frame(&mut out, kind, channel, payload);
    out
}

/// Buffered frame parser over the read half.
struct FrameReader {
    rd: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    fn new(rd: OwnedReadHalf) -> Self {
        Self { rd, buf: vec![0; 256 * 1024], start: 0, end: 0 }
    }

    /// The next complete frame in the buffer: (type, channel, payload range). Ranges stay valid
    /// until the next [`FrameReader::fill`].
    fn try_frame(&mut self) -> anyhow::Result<Option<(u8, u16, Range<usize>)>> {
        let avail = &self.buf[self.start..self.end];
        let Some(header) = avail.get(..7) else { return Ok(None) };
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        if avail.len() < 7 + size + 1 {
            if 7 + size + 1 > self.buf.len() {
                self.buf.resize(7 + size + 1, 0); // a frame larger than the buffer
            }
            return Ok(None);
        }
        if avail[7 + size] != FRAME_END {
            bail!("malformed frame from the broker (no frame-end octet)");
        }
        let (kind, channel) = (header[0], u16::from_be_bytes([header[1], header[2]]));
        let payload = self.start + 7..self.start + 7 + size;
        self.start += 7 + size + 1;
        Ok(Some((kind, channel, payload)))
    }

    /// Reads more bytes (cancel-safe). Fails on EOF.
    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
        let n = self.rd.read(&mut self.buf[self.end..]).await.context("reading from the broker")?;
        if n == 0 {
            bail!("the broker closed the connection");
        }
        self.end += n;
        Ok(())
    }

    /// Waits for a method frame `class.method` on channel 1, ignoring anything else.
    async fn expect(&mut self, class: u16, method: u16) -> anyhow::Result<()> {
        let result = tokio::time::timeout(TIMEOUT, async {
            loop {
                while let Some((kind, _, range)) = self.try_frame()? {
                    if kind != FRAME_METHOD {
                        continue;
                    }
                    let payload = &self.buf[range];
                    match method_ids(payload) {
                        ids if ids == (class, method) => return Ok(()),
                        (CONNECTION, 50) | (CHANNEL_CLASS, 40) => bail!("broker closed: {}", close_text(payload)),
                        _ => {}
                    }
                }
                self.fill().await?;
            }
        })
        .await;
        result.map_err(|_| anyhow!("no {class}.{method} from the broker within {TIMEOUT:?}"))?
    }
}

/// Queues `connection.close` and waits until it is written. The socket stays open: the caller
/// waits for `close-ok` before [`Outbox::stop`], because a broker that sees the socket close
/// first may drop publishes still in its pipeline (RabbitMQ does).
async fn send_close(outbox: &Outbox) {
    let mut close = method_payload(CONNECTION, 50);
    close.extend_from_slice(&200u16.to_be_bytes());
    close.push(0); // empty reply text
    close.extend_from_slice(&[0, 0, 0, 0]); // class id, method id
    let _ = outbox.push(|out| put_frame(out, FRAME_METHOD, 0, &close)).await;
    let _ = outbox.flush().await;
}

/// Opens a connection and channel 1; returns the reader, the outbox (with its writer task) and
/// the frame-max.
async fn open_channel(uri: &AMQPUri) -> anyhow::Result<(FrameReader, Arc<Outbox>, JoinHandle<()>, u32)> {
    let (socket, frame_max) = handshake(uri).await?;
    let (rd, wr) = socket.into_split();
    let mut reader = FrameReader::new(rd);
    let (outbox, writer) = Outbox::start(wr);
    let mut open = method_payload(CHANNEL_CLASS, 10);
    open.push(0);
    outbox.push(|out| put_frame(out, FRAME_METHOD, CHANNEL, &open)).await?;
    reader.expect(CHANNEL_CLASS, 11).await.context("channel.open")?;
    Ok((reader, outbox, writer, frame_max))
}

/// AMQP with the lean client for producers and consumers; lapin for setup and teardown.
#[derive(Debug, Clone)]
pub struct RawAmqpBackend {
    inner: AmqpBackend,
}

impl RawAmqpBackend {
    /// Parses `url` like [`AmqpBackend::new`].
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(Self { inner: AmqpBackend::new(url)? })
    }
}

impl Backend for RawAmqpBackend {
    type Producer = RawProducer;
    type Consumer = RawConsumer;
    type Idle = IdleAmqp;

    async fn declare(&self, topology: &Topology) -> anyhow::Result<()> {
        self.inner.declare(topology).await
    }

    async fn producer(&self, topology: &Topology, settings: PublishSettings) -> anyhow::Result<RawProducer> {
        let (mut reader, outbox, writer, frame_max) = open_channel(self.inner.uri()).await?;
        if settings.confirm_window > 0 {
            let mut select = method_payload(CONFIRM, 10);
            select.push(0);
            outbox.push(|out| put_frame(out, FRAME_METHOD, CHANNEL, &select)).await?;
            reader.expect(CONFIRM, 11).await.context("confirm.select")?;
        }
        let (exchange, routing_key) = publish_target(topology);
        let mut publish = method_payload(BASIC, 40);
        publish.extend_from_slice(&0u16.to_be_bytes());
        put_short_str(&mut publish, exchange.as_str())?;
        put_short_str(&mut publish, routing_key.as_str())?;
        publish.push(0);
        let confirms = Arc::new(ConfirmState::default());
        let closing = Arc::new(AtomicBool::new(false));
        let reader_task = tokio::spawn(read_confirms(reader, Arc::clone(&confirms), Arc::clone(&closing)));
        Ok(RawProducer {
            outbox,
            writer,
            closing,
            reader_task,
            confirms,
            publish_frame: frame(FRAME_METHOD, CHANNEL, &publish),
            persistent: settings.persistent,
            chunk: if frame_max == 0 { 128 * 1024 } else { frame_max.saturating_sub(8).max(1) as usize },
            window: settings.confirm_window as u64,
            published: 0,
            reported: (0, 0),
        })
    }

    async fn consumer(
        &self,
        topology: &Topology,
        index: usize,
        settings: ConsumeSettings,
    ) -> anyhow::Result<RawConsumer> {
        let (mut reader, outbox, writer, _) = open_channel(self.inner.uri()).await?;
        if settings.manual_ack && settings.prefetch > 0 {
            let mut qos = method_payload(BASIC, 10);
            qos.extend_from_slice(&0u32.to_be_bytes());
            qos.extend_from_slice(&settings.prefetch.to_be_bytes());
            qos.push(0);
            outbox.push(|out| put_frame(out, FRAME_METHOD, CHANNEL, &qos)).await?;
            reader.expect(BASIC, 11).await.context("basic.qos")?;
        }
        let queue = consumer_queue(topology, index);
        let mut consume = method_payload(BASIC, 20);
        consume.extend_from_slice(&0u16.to_be_bytes());
        put_short_str(&mut consume, &queue)?;
        put_short_str(&mut consume, &format!("loadgen-{index}"))?;
        consume.push(if settings.manual_ack { 0 } else { 0b10 }); // no-ack bit
        consume.extend_from_slice(&0u32.to_be_bytes()); // arguments
        outbox.push(|out| put_frame(out, FRAME_METHOD, CHANNEL, &consume)).await?;
        reader.expect(BASIC, 21).await.with_context(|| format!("basic.consume on {queue}"))?;
        let ack_every = if settings.prefetch > 0 {
            settings.ack_every.clamp(1, u32::from(settings.prefetch))
        } else {
            settings.ack_every.max(1)
        };
        Ok(RawConsumer {
            reader,
            outbox,
            writer,
            manual_ack: settings.manual_ack,
            ack_every,
            unacked: 0,
            last_tag: 0,
            current: None,
        })
    }

    async fn teardown(&self, topology: &Topology) -> anyhow::Result<()> {
        self.inner.teardown(topology).await
    }

    async fn idle_connection(&self) -> anyhow::Result<IdleAmqp> {
        self.inner.idle_connection().await
    }
}

/// Publisher-confirm bookkeeping shared by a producer and its reader task. Delivery tags are
/// 1, 2, 3, … in publish order; `basic.ack`/`basic.nack` settle one tag or, with `multiple`,
/// every tag up to it.
#[derive(Default)]
struct ConfirmState {
    inner: Mutex<Settled>,
    settled: AtomicU64,
    acked: AtomicU64,
    nacked: AtomicU64,
    changed: Notify,
    failed: Mutex<Option<String>>,
}

#[derive(Default)]
struct Settled {
    /// Every tag ≤ watermark is settled.
    watermark: u64,
    /// Settled tags above the watermark.
    extra: BTreeSet<u64>,
}

impl ConfirmState {
    fn settle(&self, tag: u64, multiple: bool, ack: bool) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &mut *guard;
        let newly = if multiple {
            if tag <= s.watermark {
                0
            } else {
                let above: Vec<u64> = s.extra.range(..=tag).copied().collect();
                for t in &above {
                    s.extra.remove(t);
                }
                let n = tag - s.watermark - above.len() as u64;
                s.watermark = tag;
                n
            }
        } else if tag > s.watermark && s.extra.insert(tag) {
            1
        } else {
            0
        };
        loop {
            let next = s.watermark + 1;
            if !s.extra.remove(&next) {
                break;
            }
            s.watermark = next;
        }
        drop(guard);
        if ack {
            self.acked.fetch_add(newly, Ordering::Relaxed);
        } else {
            self.nacked.fetch_add(newly, Ordering::Relaxed);
        }
        self.settled.fetch_add(newly, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn fail(&self, err: String) {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(err);
        self.changed.notify_waiters();
    }

    fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Reads a producer's socket: confirms, and the broker closing the channel or connection.
async fn read_confirms(mut reader: FrameReader, confirms: Arc<ConfirmState>, closing: Arc<AtomicBool>) {
    let result: anyhow::Result<()> = async {
        loop {
            while let Some((kind, _, range)) = reader.try_frame()? {
                if kind != FRAME_METHOD {
                    continue;
                }
                let payload = &reader.buf[range];
                match method_ids(payload) {
                    (BASIC, m @ (80 | 120)) => {
                        let tag = payload.get(4..12).map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
                        let multiple = payload.get(12).is_some_and(|bits| bits & 1 == 1);
                        confirms.settle(tag, multiple, m == 80);
                    }
                    (CONNECTION, 51) => return Ok(()),
                    (CONNECTION, 50) | (CHANNEL_CLASS, 40) => bail!("broker closed: {}", close_text(payload)),
                    _ => {}
                }
            }
            reader.fill().await?;
        }
    }
    .await;
    if let Err(err) = result
        && !closing.load(Ordering::Acquire)
    {
        confirms.fail(format!("{err:#}"));
    }
}

/// A publishing connection of the lean client.
pub struct RawProducer {
    outbox: Arc<Outbox>,
    writer: JoinHandle<()>,
    /// Set before `connection.close` goes out, so the reader task's end is not a failure.
    closing: Arc<AtomicBool>,
    reader_task: JoinHandle<()>,
    confirms: Arc<ConfirmState>,
    publish_frame: Vec<u8>,
    persistent: bool,
    chunk: usize,
    window: u64,
    published: u64,
    reported: (u64, u64),
}

impl RawProducer {
    fn report(&mut self, counters: &Counters) -> anyhow::Result<()> {
        let (acked, nacked) =
            (self.confirms.acked.load(Ordering::Relaxed), self.confirms.nacked.load(Ordering::Relaxed));
        counters.confirmed.fetch_add(acked - self.reported.0, Ordering::Relaxed);
        counters.nacked.fetch_add(nacked - self.reported.1, Ordering::Relaxed);
        self.reported = (acked, nacked);
        match self.confirms.failure() {
            Some(err) => bail!("{err}"),
            None => Ok(()),
        }
    }

    /// Waits until at most `limit` messages are unconfirmed.
    async fn wait_window(&mut self, limit: u64) -> anyhow::Result<()> {
        loop {
            let changed = self.confirms.changed.notified();
            if self.published - self.confirms.settled.load(Ordering::Acquire) <= limit {
                return Ok(());
            }
            if let Some(err) = self.confirms.failure() {
                bail!("{err}");
            }
            if tokio::time::timeout(TIMEOUT, changed).await.is_err() {
                bail!("no publisher confirm for {TIMEOUT:?}");
            }
        }
    }
}

impl Producer for RawProducer {
    async fn send(&mut self, payload: &[u8], counters: &Counters) -> anyhow::Result<()> {
        if self.window > 0 {
            self.wait_window(self.window - 1).await?;
        }
        let (publish, persistent, chunk) = (&self.publish_frame, self.persistent, self.chunk);
        self.outbox
            .push(|out| {
                out.extend_from_slice(publish);
                let mut header = [0u8; 15];
                header[..2].copy_from_slice(&BASIC.to_be_bytes());
                header[4..12].copy_from_slice(&(payload.len() as u64).to_be_bytes());
                if persistent {
                    header[12..14].copy_from_slice(&0x1000u16.to_be_bytes()); // delivery-mode present
                    header[14] = 2;
                    put_frame(out, FRAME_HEADER, CHANNEL, &header);
                } else {
                    put_frame(out, FRAME_HEADER, CHANNEL, &header[..14]);
                }
                for body in payload.chunks(chunk) {
                    put_frame(out, FRAME_BODY, CHANNEL, body);
                }
            })
            .await?;
        self.published += 1;
        self.report(counters)
    }

    async fn flush(&mut self, counters: &Counters) -> anyhow::Result<()> {
        self.outbox.flush().await?;
        if self.window > 0 {
            self.wait_window(0).await?;
        }
        self.report(counters)
    }

    async fn close(self) -> anyhow::Result<()> {
        self.closing.store(true, Ordering::Release);
        send_close(&self.outbox).await;
        // The reader task ends on `connection.close-ok` (or on an error).
        let _ = tokio::time::timeout(TIMEOUT, self.reader_task).await;
        self.outbox.stop(self.writer).await;
        Ok(())
    }
}

/// A delivery being assembled from its method, header and body frames.
struct Assembling {
    tag: u64,
    size: Option<u64>,
    got: u64,
    head: [u8; STAMP_LEN],
}

/// A consuming connection of the lean client.
pub struct RawConsumer {
    reader: FrameReader,
    outbox: Arc<Outbox>,
    writer: JoinHandle<()>,
    manual_ack: bool,
    ack_every: u32,
    unacked: u32,
    last_tag: u64,
    current: Option<Assembling>,
}

impl RawConsumer {
    /// Advances the delivery being assembled by one frame; returns it once complete.
    fn on_frame(&mut self, kind: u8, range: Range<usize>) -> anyhow::Result<Option<Received>> {
        let payload = &self.reader.buf[range];
        match kind {
            FRAME_METHOD => match method_ids(payload) {
                (BASIC, 60) => {
                    // consumer-tag (short string), then delivery-tag.
                    let tag_len = payload.get(4).copied().unwrap_or(0) as usize;
                    let at = 5 + tag_len;
                    let tag = payload
                        .get(at..at + 8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_be_bytes)
                        .ok_or_else(|| anyhow!("short basic.deliver"))?;
                    self.current = Some(Assembling { tag, size: None, got: 0, head: [0; STAMP_LEN] });
                    Ok(None)
                }
                (BASIC, 30) => bail!("the broker cancelled the consumer"),
                (CONNECTION, 50) | (CHANNEL_CLASS, 40) => bail!("broker closed: {}", close_text(payload)),
                _ => Ok(None),
            },
            FRAME_HEADER => {
                let size = payload
                    .get(4..12)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| anyhow!("short content header"))?;
                let Some(cur) = self.current.as_mut() else { return Ok(None) };
                cur.size = Some(size);
                Ok(self.complete_if_done())
            }
            FRAME_BODY => {
                let Some(cur) = self.current.as_mut() else { return Ok(None) };
                let have = cur.got as usize;
                if have < STAMP_LEN {
                    let n = (STAMP_LEN - have).min(payload.len());
                    cur.head[have..have + n].copy_from_slice(&payload[..n]);
                }
                cur.got += payload.len() as u64;
                Ok(self.complete_if_done())
            }
            _ => Ok(None),
        }
    }

    fn complete_if_done(&mut self) -> Option<Received> {
        let cur = self.current.as_ref()?;
        let size = cur.size?;
        if cur.got < size {
            return None;
        }
        let cur = self.current.take()?;
        let stamp_ns = (size >= STAMP_LEN as u64).then(|| u64::from_be_bytes(cur.head));
        self.last_tag = cur.tag;
        Some(Received { stamp_ns, len: size as usize })
    }

    async fn ack(&mut self, tag: u64, multiple: bool) -> anyhow::Result<()> {
        let mut ack = [0u8; 13];
        ack[..2].copy_from_slice(&BASIC.to_be_bytes());
        ack[2..4].copy_from_slice(&80u16.to_be_bytes());
        ack[4..12].copy_from_slice(&tag.to_be_bytes());
        ack[12] = u8::from(multiple);
        self.outbox.push(|out| put_frame(out, FRAME_METHOD, CHANNEL, &ack)).await
    }
}

impl Consumer for RawConsumer {
    async fn recv(&mut self) -> anyhow::Result<Option<Received>> {
        loop {
            while let Some((kind, _, range)) = self.reader.try_frame()? {
                if let Some(received) = self.on_frame(kind, range)? {
                    if self.manual_ack {
                        self.unacked += 1;
                        if self.unacked >= self.ack_every {
                            self.unacked = 0;
                            self.ack(self.last_tag, self.ack_every > 1).await?;
                        }
                    }
                    return Ok(Some(received));
                }
            }
            self.reader.fill().await?;
        }
    }

    async fn close(mut self) -> anyhow::Result<()> {
        if self.manual_ack && self.unacked > 0 {
            let _ = self.ack(self.last_tag, true).await;
        }
        send_close(&self.outbox).await;
        self.current = None;
        let _ = self.reader.expect(CONNECTION, 51).await;
        self.outbox.stop(self.writer).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_settle_single_and_multiple() {
        let c = ConfirmState::default();
        c.settle(2, false, true);
        assert_eq!(c.settled.load(Ordering::Relaxed), 1);
        c.settle(1, false, true);
        assert_eq!(c.inner.lock().unwrap().watermark, 2);
        c.settle(5, false, false);
        c.settle(6, true, true); // settles 3, 4 and 6; 5 was already nacked
        assert_eq!(c.settled.load(Ordering::Relaxed), 6);
        assert_eq!(c.acked.load(Ordering::Relaxed), 5);
        assert_eq!(c.nacked.load(Ordering::Relaxed), 1);
        c.settle(6, true, true); // duplicate
        assert_eq!(c.settled.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn frames_round_trip() {
        let mut out = Vec::new();
        put_frame(&mut out, FRAME_BODY, 1, b"abc");
        assert_eq!(out, [3, 0, 1, 0, 0, 0, 3, b'a', b'b', b'c', FRAME_END]);
    }
}
