//! STOMP 1.2 backend: a lean hand-written client on a plain tokio socket, built like the raw AMQP
//! client ([`super::amqp_raw`]): one writer task per connection writes whatever accumulated in an
//! outbox while it was busy (many frames per `write` under load, one when idle, never a timer),
//! and frames are parsed in place in the read buffer, without allocating per message.
//!
//! URL: `stomp://user:pass@host:port[/vhost]` (port 61613 by default; the vhost, default `/`,
//! goes into CONNECT's `host` header; `%2f` and friends are decoded). Heart-beats are off
//! (`heart-beat:0,0`).
//!
//! Mapping of the scenario options:
//! - shared layout → `/queue/<name>` (every broker creates it on first SEND or SUBSCRIBE);
//!   fan-out → `/topic/<name>` with one subscription per consumer. STOMP has no way to delete a
//!   queue, so `declare` and `teardown` do nothing and the (empty) run queue stays behind.
//! - `--persistent` → `persistent:true` on every SEND.
//! - `--confirm N` → a `receipt` header on every SEND and at most N receipts outstanding.
//! - `--manual-ack` → `ack:client-individual` and one ACK per MESSAGE, or, with
//!   `--ack-every N` > 1, `ack:client` and one cumulative ACK every N messages; the prefetch goes
//!   out both as `prefetch-count` (RabbitMQ, Switchyard) and `activemq.prefetchSize` (ActiveMQ).
//!   Without it: `ack:auto`.
//! - Bodies are binary with `content-length` (the first 8 bytes are the send stamp).
//! - Closing: DISCONNECT with a receipt, and the socket is closed only once that RECEIPT arrived,
//!   so the broker has processed every earlier frame.
//!
//! The same client runs over WebSocket (`ws-stomp`, [`StompBackend::new_ws`]): the socket is
//! then a [`super::ws`] byte stream, `ws://[user:pass@]host:port/path` with subprotocol
//! `v12.stomp` (vhost `/`).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::outbox::Outbox;
use super::{Backend, ConsumeSettings, Consumer, Layout, Producer, PublishSettings, Topology, put_decimal};
use crate::stats::{Counters, Received};

/// How long the handshake, the final flush and the DISCONNECT receipt may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest frame accepted from the broker (headers and body).
const MAX_FRAME: usize = 64 << 20;
/// The receipt id of the DISCONNECT frame (SEND receipts are numbers, so it cannot clash).
const CLOSE_RECEIPT: &[u8] = b"loadgen-close";

/// The read half of a connection: a TCP socket or a WebSocket byte stream.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection: a TCP socket or a WebSocket byte stream.
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// A STOMP broker at one address.
#[derive(Debug)]
pub struct StompBackend {
    addr: String,
    login: String,
    passcode: String,
    vhost: String,
    /// STOMP over this WebSocket endpoint instead of plain TCP.
    ws: Option<super::ws::WsTarget>,
}

impl StompBackend {
    /// Parses `stomp://[user[:pass]@]host[:port][/vhost]`.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("stomp://").or_else(|| url.strip_prefix("tcp://")).unwrap_or(url);
        let (authority, vhost) = match rest.split_once('/') {
            Some((authority, vhost)) if !vhost.is_empty() => (authority, percent_decode(vhost)?),
            Some((authority, _)) => (authority, "/".to_owned()),
            None => (rest, "/".to_owned()),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (login, passcode) = match userinfo {
            Some(info) => {
                let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                (percent_decode(user)?, percent_decode(pass)?)
            }
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => {
                (host, port.parse::<u16>().with_context(|| format!("invalid port in STOMP URL {url:?}"))?)
            }
            None => (hostport, 61613),
        };
        if host.is_empty() {
            bail!("no host in STOMP URL {url:?}");
        }
        for (what, value) in [("login", &login), ("passcode", &passcode), ("vhost", &vhost)] {
            if value.bytes().any(|b| matches!(b, b'\n' | b'\r' | 0)) {
                bail!("the {what} in STOMP URL {url:?} contains a line break or NUL");
            }
        }
        Ok(Self { addr: format!("{host}:{port}"), login, passcode, vhost, ws: None })
    }

    /// STOMP over WebSocket: parses `ws://[user[:pass]@]host[:port][/path]` (login
    /// `guest`/`guest` by default, vhost `/`, subprotocol `v12.stomp`).
    pub fn new_ws(url: &str) -> anyhow::Result<Self> {
        let (target, userinfo) = super::ws::WsTarget::parse(url, "v12.stomp")?;
        let (login, passcode) = match userinfo {
            Some(info) => {
                let (user, pass) = info.split_once(':').unwrap_or((&info, ""));
                (percent_decode(user)?, percent_decode(pass)?)
            }
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        for (what, value) in [("login", &login), ("passcode", &passcode)] {
            if value.bytes().any(|b| matches!(b, b'\n' | b'\r' | 0)) {
                bail!("the {what} in URL {url:?} contains a line break or NUL");
            }
        }
        Ok(Self { addr: target.addr.clone(), login, passcode, vhost: "/".to_owned(), ws: Some(target) })
    }

    /// The STOMP destination of consumer/producer traffic.
    fn destination(topology: &Topology) -> String {
        match topology.layout {
            Layout::Shared => format!("/queue/{}", topology.name),
            Layout::Fanout(_) => format!("/topic/{}", topology.name),
        }
    }

    /// Connects and waits for CONNECTED; returns the socket split into a frame reader and the
    /// write half.
    async fn connect(&self) -> anyhow::Result<(FrameReader, WriteHalf)> {
        let (rd, mut wr): (ReadHalf, WriteHalf) = match &self.ws {
            Some(target) => {
                let (rd, wr) = target.connect().await?;
                (Box::new(rd), Box::new(wr))
            }
            None => {
                let socket = tokio::time::timeout(TIMEOUT, TcpStream::connect(&self.addr))
                    .await
                    .map_err(|_| anyhow!("connecting to {} timed out", self.addr))?
                    .with_context(|| format!("connecting to {}", self.addr))?;
                socket.set_nodelay(true)?;
                let (rd, wr) = socket.into_split();
                (Box::new(rd), Box::new(wr))
            }
        };
        // CONNECT headers are never escaped (STOMP 1.2).
        let mut connect = Vec::with_capacity(128);
        connect.extend_from_slice(b"CONNECT\naccept-version:1.2\nhost:");
        connect.extend_from_slice(self.vhost.as_bytes());
        connect.extend_from_slice(b"\nlogin:");
        connect.extend_from_slice(self.login.as_bytes());
        connect.extend_from_slice(b"\npasscode:");
        connect.extend_from_slice(self.passcode.as_bytes());
        connect.extend_from_slice(b"\nheart-beat:0,0\n\n\0");
        wr.write_all(&connect).await.context("sending CONNECT")?;
        let mut reader = FrameReader::new(rd);
        let result = tokio::time::timeout(TIMEOUT, async {
            loop {
                while let Some(frame) = reader.try_frame()? {
                    match frame.command {
                        Cmd::Connected => return Ok(()),
                        Cmd::Error => bail!("broker refused CONNECT: {}", reader.error_text(&frame)),
                        _ => {}
                    }
                }
                reader.fill().await?;
            }
        })
        .await;
        result.map_err(|_| anyhow!("no CONNECTED from {} within {TIMEOUT:?}", self.addr))??;
        Ok((reader, wr))
    }
}

/// Decodes `%XX` escapes (URL userinfo and vhost).
fn percent_decode(s: &str) -> anyhow::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| anyhow!("truncated %-escape in {s:?}"))?;
            out.push(u8::from_str_radix(hex, 16).with_context(|| format!("bad %-escape in {s:?}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).with_context(|| format!("{s:?} is not UTF-8 once decoded"))
}

/// Appends `name:value\n` with STOMP 1.2 header escaping (not for CONNECT frames).
fn put_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    put_escaped(out, name.as_bytes());
    out.push(b':');
    put_escaped(out, value);
    out.push(b'\n');
}

fn put_escaped(out: &mut Vec<u8>, raw: &[u8]) {
    for &b in raw {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b':' => out.extend_from_slice(b"\\c"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => out.push(b),
        }
    }
}

/// The server commands this client cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Connected,
    Message,
    Receipt,
    Error,
    Other,
}

/// One frame found in the read buffer; the ranges index [`FrameReader::buf`] and stay valid until
/// the next [`FrameReader::fill`].
#[derive(Debug, Clone)]
struct FrameAt {
    command: Cmd,
    /// The header lines (without the command line and the blank line).
    headers: Range<usize>,
    body: Range<usize>,
}

/// Buffered frame parser over the read half.
struct FrameReader {
    rd: ReadHalf,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    fn new(rd: ReadHalf) -> Self {
        Self { rd, buf: vec![0; 256 * 1024], start: 0, end: 0 }
    }

    /// The next complete frame in the buffer, skipping heart-beat EOLs.
    fn try_frame(&mut self) -> anyhow::Result<Option<FrameAt>> {
        while self.start < self.end && matches!(self.buf[self.start], b'\n' | b'\r') {
            self.start += 1;
        }
        let base = self.start;
        let avail = &self.buf[base..self.end];
        let Some(cmd_end) = memchr(b'\n', avail) else { return self.incomplete(avail.len()) };
        let command = match trim_cr(&avail[..cmd_end]) {
            b"MESSAGE" => Cmd::Message,
            b"RECEIPT" => Cmd::Receipt,
            b"CONNECTED" => Cmd::Connected,
            b"ERROR" => Cmd::Error,
            _ => Cmd::Other,
        };
        let headers_start = cmd_end + 1;
        let mut pos = headers_start;
        let mut content_length = None;
        let headers_end = loop {
            let Some(eol) = memchr(b'\n', &avail[pos..]) else { return self.incomplete(avail.len()) };
            let line = trim_cr(&avail[pos..pos + eol]);
            if line.is_empty() {
                break pos;
            }
            if content_length.is_none()
                && let Some(value) = line.strip_prefix(b"content-length:")
            {
                let text = std::str::from_utf8(value).unwrap_or("");
                let n: usize =
                    text.trim().parse().map_err(|_| anyhow!("bad content-length {text:?} from the broker"))?;
                if n > MAX_FRAME {
                    bail!("the broker sent a frame with a {n}-byte body");
                }
                content_length = Some(n);
            }
            pos += eol + 1;
        };
        let body_start = headers_end + trim_blank_len(&avail[headers_end..]);
        let body_end = match content_length {
            Some(n) => {
                if avail.len() < body_start + n + 1 {
                    return self.incomplete(body_start + n + 1);
                }
                if avail[body_start + n] != 0 {
                    bail!("malformed frame from the broker (no NUL after {n} body bytes)");
                }
                body_start + n
            }
            None => match memchr(0, &avail[body_start..]) {
                Some(i) => body_start + i,
                None => return self.incomplete(avail.len() + 1),
            },
        };
        self.start = base + body_end + 1;
        Ok(Some(FrameAt {
            command,
            headers: base + headers_start..base + headers_end,
            body: base + body_start..base + body_end,
        }))
    }

    /// No whole frame yet; makes sure a frame of `need` bytes fits the buffer.
    fn incomplete(&mut self, need: usize) -> anyhow::Result<Option<FrameAt>> {
        if need > MAX_FRAME {
            bail!("the broker sent a frame larger than {MAX_FRAME} bytes");
        }
        if need > self.buf.len() {
            self.buf.resize(need.next_power_of_two(), 0);
        }
        Ok(None)
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

    /// The raw (still escaped) value of header `name` of `frame`; the first occurrence wins.
    fn header(&self, frame: &FrameAt, name: &[u8]) -> Option<&[u8]> {
        let mut rest = &self.buf[frame.headers.clone()];
        while !rest.is_empty() {
            let eol = memchr(b'\n', rest).unwrap_or(rest.len());
            let line = trim_cr(&rest[..eol]);
            if line.len() > name.len() && line[name.len()] == b':' && line.starts_with(name) {
                return Some(&line[name.len() + 1..]);
            }
            rest = rest.get(eol + 1..).unwrap_or(&[]);
        }
        None
    }

    /// `message` header and body of an ERROR frame, for error messages.
    fn error_text(&self, frame: &FrameAt) -> String {
        let message = self.header(frame, b"message").map(String::from_utf8_lossy).unwrap_or_default();
        let body = String::from_utf8_lossy(&self.buf[frame.body.clone()]);
        format!("{message}: {}", body.trim()).trim_end_matches([':', ' ']).to_owned()
    }

    /// Reads until the RECEIPT of the DISCONNECT frame (or an error), ignoring everything else.
    async fn await_close_receipt(&mut self) -> anyhow::Result<()> {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                while let Some(frame) = self.try_frame()? {
                    match frame.command {
                        Cmd::Receipt if self.header(&frame, b"receipt-id") == Some(CLOSE_RECEIPT) => return Ok(()),
                        Cmd::Error => bail!("broker error: {}", self.error_text(&frame)),
                        _ => {}
                    }
                }
                self.fill().await?;
            }
        })
        .await
        .map_err(|_| anyhow!("no RECEIPT for DISCONNECT within {TIMEOUT:?}"))?
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Length of the blank line (`\n` or `\r\n`) that ends the headers at the start of `rest`.
fn trim_blank_len(rest: &[u8]) -> usize {
    if rest.first() == Some(&b'\r') { 2 } else { 1 }
}

impl Backend for StompBackend {
    type Producer = StompProducer;
    type Consumer = StompConsumer;
    type Idle = IdleStomp;

    async fn declare(&self, _topology: &Topology) -> anyhow::Result<()> {
        // `/queue/` and `/topic/` destinations are created on first use by every broker.
        Ok(())
    }

    async fn producer(&self, topology: &Topology, settings: PublishSettings) -> anyhow::Result<StompProducer> {
        let (reader, wr) = self.connect().await?;
        let (outbox, writer) = Outbox::start(wr);
        let mut prefix = Vec::with_capacity(128);
        prefix.extend_from_slice(b"SEND\n");
        put_header(&mut prefix, "destination", Self::destination(topology).as_bytes());
        if settings.persistent {
            put_header(&mut prefix, "persistent", b"true");
        }
        prefix.extend_from_slice(b"content-length:");
        let receipts = Arc::new(Receipts::default());
        let reader_task = tokio::spawn(read_receipts(reader, Arc::clone(&receipts)));
        Ok(StompProducer {
            outbox,
            writer,
            reader_task,
            receipts,
            prefix,
            window: settings.confirm_window as u64,
            published: 0,
            reported: 0,
        })
    }

    async fn consumer(
        &self,
        topology: &Topology,
        index: usize,
        settings: ConsumeSettings,
    ) -> anyhow::Result<StompConsumer> {
        let (mut reader, wr) = self.connect().await?;
        let (outbox, writer) = Outbox::start(wr);
        let ack = match (settings.manual_ack, settings.ack_every > 1) {
            (false, _) => AckMode::Auto,
            (true, false) => AckMode::Individual,
            (true, true) => AckMode::Cumulative,
        };
        let destination = Self::destination(topology);
        let id = format!("loadgen-{index}");
        outbox
            .push(|out| {
                out.extend_from_slice(b"SUBSCRIBE\n");
                put_header(out, "id", id.as_bytes());
                put_header(out, "destination", destination.as_bytes());
                put_header(
                    out,
                    "ack",
                    match ack {
                        AckMode::Auto => b"auto".as_slice(),
                        AckMode::Individual => b"client-individual",
                        AckMode::Cumulative => b"client",
                    },
                );
                if ack != AckMode::Auto && settings.prefetch > 0 {
                    let prefetch = settings.prefetch.to_string();
                    put_header(out, "prefetch-count", prefetch.as_bytes());
                    put_header(out, "activemq.prefetchSize", prefetch.as_bytes());
                }
                put_header(out, "receipt", b"loadgen-subscribed");
                out.extend_from_slice(b"\n\0");
            })
            .await?;
        // Wait for the subscription's receipt, so nothing published afterwards is missed.
        tokio::time::timeout(TIMEOUT, async {
            loop {
                while let Some(frame) = reader.try_frame()? {
                    match frame.command {
                        Cmd::Receipt => return Ok(()),
                        Cmd::Error => bail!("SUBSCRIBE to {destination} failed: {}", reader.error_text(&frame)),
                        _ => {}
                    }
                }
                reader.fill().await?;
            }
        })
        .await
        .map_err(|_| anyhow!("no RECEIPT for SUBSCRIBE to {destination} within {TIMEOUT:?}"))??;
        let ack_every = if settings.prefetch > 0 {
            settings.ack_every.clamp(1, u32::from(settings.prefetch))
        } else {
            settings.ack_every.max(1)
        };
        Ok(StompConsumer { reader, outbox, writer, ack, ack_every, unacked: 0, last_ack_id: Vec::with_capacity(64) })
    }

    async fn teardown(&self, _topology: &Topology) -> anyhow::Result<()> {
        // STOMP cannot delete a queue; the run's `/queue/<name>` is left behind, empty.
        Ok(())
    }

    async fn idle_connection(&self) -> anyhow::Result<IdleStomp> {
        let (reader, wr) = self.connect().await?;
        Ok(IdleStomp { _reader: reader, _writer: wr })
    }
}

/// RECEIPT bookkeeping shared by a producer and its reader task.
#[derive(Default)]
struct Receipts {
    /// RECEIPTs for SEND frames received so far.
    settled: AtomicU64,
    /// The DISCONNECT's RECEIPT arrived.
    closed: AtomicBool,
    changed: Notify,
    failed: Mutex<Option<String>>,
}

impl Receipts {
    fn fail(&self, err: String) {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(err);
        self.changed.notify_waiters();
    }

    fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Reads a producer's socket: RECEIPTs, and ERROR frames.
async fn read_receipts(mut reader: FrameReader, receipts: Arc<Receipts>) {
    let result: anyhow::Result<()> = async {
        loop {
            while let Some(frame) = reader.try_frame()? {
                match frame.command {
                    Cmd::Receipt => {
                        if reader.header(&frame, b"receipt-id") == Some(CLOSE_RECEIPT) {
                            receipts.closed.store(true, Ordering::Release);
                            receipts.changed.notify_waiters();
                            return Ok(());
                        }
                        receipts.settled.fetch_add(1, Ordering::Release);
                        receipts.changed.notify_waiters();
                    }
                    Cmd::Error => bail!("broker error: {}", reader.error_text(&frame)),
                    _ => {}
                }
            }
            reader.fill().await?;
        }
    }
    .await;
    if let Err(err) = result {
        receipts.fail(format!("{err:#}"));
    }
}

/// A publishing STOMP connection.
pub struct StompProducer {
    outbox: Arc<Outbox>,
    writer: JoinHandle<()>,
    reader_task: JoinHandle<()>,
    receipts: Arc<Receipts>,
    /// `SEND`, `destination`, optional `persistent`, and `content-length:` awaiting its value.
    prefix: Vec<u8>,
    window: u64,
    published: u64,
    reported: u64,
}

impl StompProducer {
    fn report(&mut self, counters: &Counters) -> anyhow::Result<()> {
        let settled = self.receipts.settled.load(Ordering::Acquire);
        counters.confirmed.fetch_add(settled - self.reported, Ordering::Relaxed);
        self.reported = settled;
        match self.receipts.failure() {
            Some(err) => bail!("{err}"),
            None => Ok(()),
        }
    }

    /// Waits until at most `limit` receipts are outstanding.
    async fn wait_window(&mut self, limit: u64) -> anyhow::Result<()> {
        loop {
            let changed = self.receipts.changed.notified();
            if self.published - self.receipts.settled.load(Ordering::Acquire) <= limit {
                return Ok(());
            }
            if let Some(err) = self.receipts.failure() {
                bail!("{err}");
            }
            if tokio::time::timeout(TIMEOUT, changed).await.is_err() {
                bail!("no RECEIPT for {TIMEOUT:?}");
            }
        }
    }
}

impl Producer for StompProducer {
    async fn send(&mut self, payload: &[u8], counters: &Counters) -> anyhow::Result<()> {
        if self.window > 0 {
            self.wait_window(self.window - 1).await?;
        }
        let (prefix, receipt) = (&self.prefix, (self.window > 0).then_some(self.published + 1));
        self.outbox
            .push(|out| {
                out.extend_from_slice(prefix);
                put_decimal(out, payload.len() as u64);
                out.push(b'\n');
                if let Some(id) = receipt {
                    out.extend_from_slice(b"receipt:");
                    put_decimal(out, id);
                    out.push(b'\n');
                }
                out.push(b'\n');
                out.extend_from_slice(payload);
                out.push(0);
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
        let sent = send_disconnect(&self.outbox).await;
        // The reader task ends on the DISCONNECT's RECEIPT (or on an error).
        let waited = tokio::time::timeout(TIMEOUT, self.reader_task).await;
        self.outbox.stop(self.writer).await;
        sent?;
        if waited.is_err() {
            bail!("no RECEIPT for DISCONNECT within {TIMEOUT:?}");
        }
        if !self.receipts.closed.load(Ordering::Acquire) {
            bail!("DISCONNECT was not acknowledged: {}", self.receipts.failure().unwrap_or_default());
        }
        Ok(())
    }
}

/// How a consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckMode {
    /// `ack:auto`.
    Auto,
    /// `ack:client-individual`, one ACK per MESSAGE.
    Individual,
    /// `ack:client`, one cumulative ACK every N MESSAGEs.
    Cumulative,
}

/// A subscribed STOMP connection.
pub struct StompConsumer {
    reader: FrameReader,
    outbox: Arc<Outbox>,
    writer: JoinHandle<()>,
    ack: AckMode,
    ack_every: u32,
    unacked: u32,
    /// The `ack` header (raw, as received) of the last MESSAGE not yet acknowledged.
    last_ack_id: Vec<u8>,
}

impl StompConsumer {
    async fn send_ack(&mut self) -> anyhow::Result<()> {
        let id = &self.last_ack_id;
        self.outbox
            .push(|out| {
                // The id is echoed exactly as received: it is already escaped.
                out.extend_from_slice(b"ACK\nid:");
                out.extend_from_slice(id);
                out.extend_from_slice(b"\n\n\0");
            })
            .await
    }
}

impl Consumer for StompConsumer {
    async fn recv(&mut self) -> anyhow::Result<Option<Received>> {
        loop {
            while let Some(frame) = self.reader.try_frame()? {
                match frame.command {
                    Cmd::Message => {
                        let body = &self.reader.buf[frame.body.clone()];
                        let received = Received::of(body);
                        if self.ack != AckMode::Auto {
                            // STOMP 1.2 names the ack id in `ack`; older servers in `message-id`.
                            let id = self
                                .reader
                                .header(&frame, b"ack")
                                .or_else(|| self.reader.header(&frame, b"message-id"))
                                .ok_or_else(|| anyhow!("MESSAGE without an ack or message-id header"))?;
                            self.last_ack_id.clear();
                            self.last_ack_id.extend_from_slice(id);
                            self.unacked += 1;
                            if self.unacked >= self.ack_every {
                                self.unacked = 0;
                                self.send_ack().await?;
                            }
                        }
                        return Ok(Some(received));
                    }
                    Cmd::Error => bail!("broker error: {}", self.reader.error_text(&frame)),
                    _ => {}
                }
            }
            self.reader.fill().await?;
        }
    }

    async fn close(mut self) -> anyhow::Result<()> {
        if self.ack != AckMode::Auto && self.unacked > 0 {
            // ack:client (the only mode that leaves some) settles everything up to this one.
            self.unacked = 0;
            let _ = self.send_ack().await;
        }
        let sent = send_disconnect(&self.outbox).await;
        let received = match sent {
            Ok(()) => self.reader.await_close_receipt().await,
            Err(err) => Err(err),
        };
        self.outbox.stop(self.writer).await;
        received
    }
}

/// An idle STOMP connection: CONNECTED received (heart-beats off), socket held.
pub struct IdleStomp {
    _reader: FrameReader,
    _writer: WriteHalf,
}

/// Queues DISCONNECT (with a receipt) and waits until it is written.
async fn send_disconnect(outbox: &Outbox) -> anyhow::Result<()> {
    outbox
        .push(|out| {
            out.extend_from_slice(b"DISCONNECT\n");
            put_header(out, "receipt", CLOSE_RECEIPT);
            out.extend_from_slice(b"\n\0");
        })
        .await?;
    outbox.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let b = StompBackend::new("stomp://guest:secret@127.0.0.1:61623").unwrap();
        assert_eq!(
            (b.addr.as_str(), b.login.as_str(), b.passcode.as_str(), b.vhost.as_str()),
            ("127.0.0.1:61623", "guest", "secret", "/")
        );
        let b = StompBackend::new("stomp://localhost/%2f").unwrap();
        assert_eq!((b.addr.as_str(), b.login.as_str(), b.vhost.as_str()), ("localhost:61613", "guest", "/"));
        let b = StompBackend::new("stomp://u:p@h:1/prod").unwrap();
        assert_eq!(b.vhost, "prod");
        assert!(StompBackend::new("stomp://:61613").is_err());
        assert!(StompBackend::new("stomp://h:x").is_err());
    }

    #[test]
    fn escapes_headers_and_writes_decimals() {
        let mut out = Vec::new();
        put_header(&mut out, "id", b"a:b\\c\nd");
        assert_eq!(out, b"id:a\\cb\\\\c\\nd\n");
        for n in [0u64, 7, 10, 1024, u64::MAX] {
            let mut out = Vec::new();
            put_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    /// Feeds `bytes` through a reader built on a real socket pair, returning (command, ack, body).
    async fn parse_all(bytes: &[u8]) -> Vec<(Cmd, Option<Vec<u8>>, Vec<u8>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (rd, _wr) = client.into_split();
        let mut reader = FrameReader::new(Box::new(rd));
        reader.buf = vec![0; 16]; // small, so frames straddle reads and the buffer grows
        // Write in small pieces so frames arrive split.
        for chunk in bytes.chunks(7) {
            server.write_all(chunk).await.unwrap();
        }
        drop(server);
        let mut frames = Vec::new();
        loop {
            while let Some(f) = reader.try_frame().unwrap() {
                let ack = reader.header(&f, b"ack").map(<[u8]>::to_vec);
                frames.push((f.command, ack, reader.buf[f.body.clone()].to_vec()));
            }
            if reader.fill().await.is_err() {
                return frames;
            }
        }
    }

    #[tokio::test]
    async fn parses_frames_in_place() {
        let mut wire = Vec::new();
        wire.extend_from_slice(b"CONNECTED\nversion:1.2\n\n\0\n\n");
        wire.extend_from_slice(b"MESSAGE\nsubscription:s\nack:ID\\c1\ncontent-length:5\n\na\0b\0c\0");
        wire.extend_from_slice(b"MESSAGE\r\nack:2\r\n\r\nhello\0\r\n");
        wire.extend_from_slice(b"RECEIPT\nreceipt-id:77\n\n\0");
        let frames = parse_all(&wire).await;
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0].0, Cmd::Connected);
        assert_eq!(frames[1], (Cmd::Message, Some(b"ID\\c1".to_vec()), b"a\0b\0c".to_vec()));
        assert_eq!(frames[2], (Cmd::Message, Some(b"2".to_vec()), b"hello".to_vec()));
        assert_eq!(frames[3].0, Cmd::Receipt);
    }
}
