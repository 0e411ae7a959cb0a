//! The load generator's own MQTT client: `--protocol mqtt` (3.1.1 over TCP), `mqtt5` (MQTT 5
//! over TCP) and `ws-mqtt` (3.1.1 over WebSocket, [`super::ws`]). One client for all three, so the
//! protocol logic is written once and only the transport differs; the packets are in
//! [`super::mqtt_wire`]. It replaced rumqttc, which needed 31–55% of a core for what this client
//! does in a fraction of that (one `Vec` per publish and its event loop per packet), so the MQTT
//! figures measured the client as much as the broker.
//!
//! URLs: `mqtt://[user:pass@]host[:port]` (port 1883 by default; `tcp://` is accepted too) and
//! `ws://[user:pass@]host[:port]/path` (subprotocol `mqtt`).
//!
//! Mapping, the same for every broker: topic `loadgen/<name>`; the shared layout has exactly one
//! subscriber (plain subscriptions each get every message; competing consumers would need MQTT 5
//! shared subscriptions), fan-out N subscribers of the same topic. QoS 0, 1 and 2 from `--qos`
//! for publishes and subscriptions. Publisher "confirms" are PUBACK (QoS 1) / PUBCOMP (QoS 2):
//! at most `--confirm` (default 100) publishes per producer are unacknowledged — the bounded
//! in-flight window — and never more than an MQTT 5 broker's Receive Maximum (a 3.1.1 broker
//! cannot say: Mosquitto drops QoS 2 publishes beyond its `max_inflight_messages`, 20, after
//! PUBREC, so use `--confirm 20` for QoS 2 against it). PUBREC is
//! answered with PUBREL; an MQTT 5 acknowledgement with a reason code ≥ 0x80 counts as a nack.
//! Subscribers answer PUBACK, or PUBREC and then PUBCOMP on PUBREL; the acks of every packet
//! parsed from one read go out together before the next read. Clean session (MQTT 5: clean start,
//! session expiry 0), no will. Keep-alive `--keepalive` seconds (default 60; an MQTT 5 Server Keep
//! Alive replaces it) with a PINGREQ every half of it; idle connections announce 0 and send
//! nothing. Nagle is off.
//!
//! Each connection has a writer task that writes whatever accumulated in its outbox while it was
//! busy ([`super::outbox`]: many packets per `write` under load, one when idle, never a timer).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::mqtt_wire::{self as wire, ConnAck, Connect, PacketReader, Version, kind};
use super::outbox::Outbox;
use super::ws::WsTarget;
use super::{Backend, ConsumeSettings, Consumer, Layout, Producer, PublishSettings, Topology};
use crate::stats::{Counters, Received};

/// How long connect/subscribe, the final flush and waits for acks may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Unacknowledged publishes per producer when `--confirm` is 0 (QoS ≥ 1).
const DEFAULT_WINDOW: u64 = 100;

/// The read half of a connection, whatever the transport.
type ReadHalf = Box<dyn AsyncRead + Unpin + Send>;
/// The write half of a connection, whatever the transport.
type WriteHalf = Box<dyn AsyncWrite + Unpin + Send>;
/// Packets parsed from a read half.
type Reader = PacketReader<ReadHalf>;

/// How the client reaches the broker.
#[derive(Debug)]
enum Transport {
    /// Plain TCP to `host:port`.
    Tcp(String),
    /// A WebSocket carrying the MQTT byte stream.
    Ws(WsTarget),
}

/// An MQTT broker at one address, spoken to in one protocol version.
#[derive(Debug)]
pub struct MqttBackend {
    transport: Transport,
    version: Version,
    credentials: Option<(String, String)>,
    keep_alive: u16,
    next_id: AtomicUsize,
}

/// Splits `user[:pass]`.
fn credentials(userinfo: &str) -> (String, String) {
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    (user.to_owned(), pass.to_owned())
}

impl MqttBackend {
    /// MQTT over TCP: parses `mqtt://[user:pass@]host[:port]`.
    pub fn new(url: &str, version: Version, keep_alive: u16) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")).unwrap_or(url);
        let rest = rest.trim_end_matches('/');
        let (creds, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(credentials(userinfo)), hostport),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().with_context(|| format!("invalid port in {url:?}"))?),
            None => (hostport, 1883),
        };
        if host.is_empty() {
            bail!("no host in MQTT URL {url:?}");
        }
        Ok(Self {
            transport: Transport::Tcp(format!("{host}:{port}")),
            version,
            credentials: creds,
            keep_alive,
            next_id: AtomicUsize::new(0),
        })
    }

    /// MQTT 3.1.1 over WebSocket: parses `ws://[user[:pass]@]host[:port][/path]`.
    pub fn new_ws(url: &str, keep_alive: u16) -> anyhow::Result<Self> {
        let (target, userinfo) = WsTarget::parse(url, "mqtt")?;
        Ok(Self {
            transport: Transport::Ws(target),
            version: Version::V311,
            credentials: userinfo.as_deref().map(credentials),
            keep_alive,
            next_id: AtomicUsize::new(0),
        })
    }

    /// Opens the transport.
    async fn open(&self) -> anyhow::Result<(ReadHalf, WriteHalf)> {
        match &self.transport {
            Transport::Tcp(addr) => {
                let socket = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
                    .await
                    .map_err(|_| anyhow!("connecting to {addr} timed out"))?
                    .with_context(|| format!("connecting to {addr}"))?;
                socket.set_nodelay(true)?;
                let (rd, wr) = socket.into_split();
                Ok((Box::new(rd), Box::new(wr)))
            }
            Transport::Ws(target) => {
                let (rd, wr) = target.connect().await?;
                Ok((Box::new(rd), Box::new(wr)))
            }
        }
    }

    /// Connects, sends CONNECT announcing `keep_alive`, and waits for a successful CONNACK.
    async fn connect(&self, role: &str, keep_alive: u16) -> anyhow::Result<(Reader, WriteHalf, ConnAck)> {
        let (rd, mut wr) = self.open().await?;
        let prefix = match (&self.transport, self.version) {
            (Transport::Ws(_), _) => "loadgen-ws",
            (Transport::Tcp(_), Version::V311) => "loadgen",
            (Transport::Tcp(_), Version::V5) => "loadgen5",
        };
        let client_id =
            format!("{prefix}-{role}-{}-{}", std::process::id(), self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut packet = Vec::with_capacity(96);
        let connect = Connect {
            version: self.version,
            client_id: &client_id,
            keep_alive,
            credentials: self.credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        };
        wire::put_connect(&mut packet, &connect)?;
        wr.write_all(&packet).await.context("sending CONNECT")?;
        let mut reader = PacketReader::new(rd);
        let (first, range) = tokio::time::timeout(TIMEOUT, reader.next())
            .await
            .map_err(|_| anyhow!("no CONNACK within {TIMEOUT:?}"))??;
        if first & 0xF0 != kind::CONNACK {
            bail!("expected CONNACK, got packet type {first:#04x}");
        }
        let connack = wire::parse_connack(self.version, &reader.buf[range])?;
        Ok((reader, wr, connack))
    }

    /// The effective keep-alive after CONNACK.
    fn keep_alive(&self, connack: &ConnAck) -> u16 {
        connack.server_keep_alive.unwrap_or(self.keep_alive)
    }

    fn topic(topology: &Topology) -> String {
        format!("loadgen/{}", topology.name)
    }
}

/// Sends PINGREQ every half keep-alive (none when it is 0). PINGREQs are tiny, so they are
/// sent whether or not other packets went out meanwhile.
fn start_pinger(outbox: &Arc<Outbox>, keep_alive: u16) -> Option<JoinHandle<()>> {
    if keep_alive == 0 {
        return None;
    }
    let outbox = Arc::clone(outbox);
    let every = Duration::from_millis(u64::from(keep_alive) * 500);
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if outbox.failure().is_some() {
                return;
            }
            outbox.push_now(|out| out.extend_from_slice(&wire::PINGREQ));
        }
    }))
}

impl Backend for MqttBackend {
    type Producer = MqttProducer;
    type Consumer = MqttConsumer;
    type Idle = IdleMqtt;

    async fn declare(&self, _topology: &Topology) -> anyhow::Result<()> {
        Ok(())
    }

    async fn producer(&self, topology: &Topology, settings: PublishSettings) -> anyhow::Result<MqttProducer> {
        let (reader, wr, connack) = self.connect("pub", self.keep_alive).await?;
        let (outbox, writer) = Outbox::start(wr);
        let pinger = start_pinger(&outbox, self.keep_alive(&connack));
        let acks = Arc::new(Acks::default());
        let reader_task = tokio::spawn(read_acks(reader, self.version, Arc::clone(&acks), Arc::clone(&outbox)));
        let mut topic_field = Vec::new();
        wire::put_str(&mut topic_field, &Self::topic(topology))?;
        // Packet ids are 16-bit: never more in flight than there are ids, nor than the broker takes.
        let requested = if settings.confirm_window == 0 { DEFAULT_WINDOW } else { settings.confirm_window as u64 };
        let window = requested.min(65_535).min(connack.receive_maximum.map_or(u64::MAX, u64::from)).max(1);
        Ok(MqttProducer {
            version: self.version,
            outbox,
            writer,
            reader_task,
            pinger,
            acks,
            topic_field,
            qos: settings.qos.min(2),
            window,
            published: 0,
            reported_done: 0,
            reported_positive: 0,
            reported_nacked: 0,
            next_packet_id: 0,
        })
    }

    async fn consumer(
        &self,
        topology: &Topology,
        index: usize,
        settings: ConsumeSettings,
    ) -> anyhow::Result<MqttConsumer> {
        if topology.layout == Layout::Shared && index > 0 {
            bail!("MQTT subscribers each get every message: use --consumers 1 for e2e, or the fanout scenario");
        }
        let (mut reader, wr, connack) = self.connect("sub", self.keep_alive).await?;
        let (outbox, writer) = Outbox::start(wr);
        let pinger = start_pinger(&outbox, self.keep_alive(&connack));
        let mut subscribe = Vec::new();
        wire::put_subscribe(&mut subscribe, self.version, 1, &Self::topic(topology), settings.qos)?;
        outbox.push(|out| out.extend_from_slice(&subscribe)).await?;
        let version = self.version;
        tokio::time::timeout(TIMEOUT, async {
            loop {
                let (first, range) = reader.next().await?;
                if first & 0xF0 == kind::SUBACK {
                    return wire::parse_suback(version, &reader.buf[range]);
                }
            }
        })
        .await
        .map_err(|_| anyhow!("no SUBACK within {TIMEOUT:?}"))??;
        Ok(MqttConsumer { version, reader, outbox, writer, pinger, pending_acks: Vec::with_capacity(4096) })
    }

    async fn teardown(&self, _topology: &Topology) -> anyhow::Result<()> {
        Ok(())
    }

    async fn idle_connection(&self) -> anyhow::Result<IdleMqtt> {
        let (reader, wr, _) = self.connect("idle", 0).await?;
        Ok(IdleMqtt { _rd: reader.into_inner(), _wr: wr })
    }
}

/// An idle connection: CONNECT (clean session, keep-alive 0) acknowledged, both halves held.
pub struct IdleMqtt {
    _rd: ReadHalf,
    _wr: WriteHalf,
}

/// Acknowledgements seen by a producer's reader task.
#[derive(Default)]
struct Acks {
    /// Finished QoS 1/2 flows (PUBACK; PUBCOMP; MQTT 5 PUBREC refusing the message).
    done: AtomicU64,
    /// Of those, refused by the broker (MQTT 5 reason code ≥ 0x80).
    nacked: AtomicU64,
    changed: Notify,
    failed: Mutex<Option<String>>,
}

impl Acks {
    fn finish(&self, refused: bool) {
        if refused {
            self.nacked.fetch_add(1, Ordering::Release);
        }
        self.done.fetch_add(1, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn fail(&self, why: String) {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(why);
        self.changed.notify_waiters();
    }
}

/// A producer's reader: counts PUBACK/PUBCOMP, answers PUBREC with PUBREL.
async fn read_acks(mut reader: Reader, version: Version, acks: Arc<Acks>, outbox: Arc<Outbox>) {
    loop {
        let (first, range) = match reader.next().await {
            Ok(found) => found,
            Err(err) => return acks.fail(format!("{err:#}")),
        };
        let body = &reader.buf[range];
        match first & 0xF0 {
            kind::PUBACK | kind::PUBCOMP => acks.finish(wire::ack_reason(version, body) >= 0x80),
            kind::PUBREC => {
                if wire::ack_reason(version, body) >= 0x80 {
                    acks.finish(true);
                    continue;
                }
                match wire::ack_id(body) {
                    Ok(id) => outbox.push_now(|out| wire::put_ack(out, 0x62, id)),
                    Err(err) => return acks.fail(format!("{err:#}")),
                }
            }
            kind::DISCONNECT => {
                let reason = body.first().map_or(String::new(), |r| format!(" (reason {r:#04x})"));
                return acks.fail(format!("the broker sent DISCONNECT{reason}"));
            }
            _ => {}
        }
    }
}

/// One publishing connection.
pub struct MqttProducer {
    version: Version,
    outbox: Arc<Outbox>,
    writer: JoinHandle<()>,
    reader_task: JoinHandle<()>,
    pinger: Option<JoinHandle<()>>,
    acks: Arc<Acks>,
    /// The topic as an MQTT string (length + bytes).
    topic_field: Vec<u8>,
    qos: u8,
    window: u64,
    published: u64,
    reported_done: u64,
    /// Of `reported_done`, counted as confirmed and as nacked so far.
    reported_positive: u64,
    reported_nacked: u64,
    next_packet_id: u16,
}

impl MqttProducer {
    fn report(&mut self, counters: &Counters) -> anyhow::Result<()> {
        // `nacked` is counted before `done` for the same flow, so after this acquire it holds
        // at least the refusals among `done`, and at most one more (a flow being finished).
        let done = self.acks.done.load(Ordering::Acquire);
        let nacked = self.acks.nacked.load(Ordering::Acquire).min(done);
        let positive = done - nacked;
        counters.confirmed.fetch_add(positive.saturating_sub(self.reported_positive), Ordering::Relaxed);
        counters.nacked.fetch_add(nacked.saturating_sub(self.reported_nacked), Ordering::Relaxed);
        self.reported_positive = self.reported_positive.max(positive);
        self.reported_nacked = self.reported_nacked.max(nacked);
        self.reported_done = done;
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
                if self.published - self.reported_done <= limit {
                    return Ok(());
                }
                changed.await;
            }
        })
        .await
        .map_err(|_| anyhow!("publishes not acknowledged within {TIMEOUT:?}"))?
    }
}

impl Producer for MqttProducer {
    async fn send(&mut self, payload: &[u8], counters: &Counters) -> anyhow::Result<()> {
        if self.qos > 0 {
            let limit = self.window - 1;
            if self.published - self.reported_done > limit {
                self.wait_window(limit, counters).await?;
            }
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        }
        let (version, qos, id, topic) = (self.version, self.qos, self.next_packet_id, &self.topic_field);
        self.outbox.push(|out| wire::put_publish(out, version, topic, qos, id, payload)).await?;
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
        if let Some(pinger) = self.pinger {
            pinger.abort();
        }
        disconnect(&self.outbox, self.writer).await;
        self.reader_task.abort();
        Ok(())
    }
}

/// One subscribed connection.
pub struct MqttConsumer {
    version: Version,
    reader: Reader,
    outbox: Arc<Outbox>,
    writer: JoinHandle<()>,
    pinger: Option<JoinHandle<()>>,
    /// Acks for packets already returned, written before the next read from the socket.
    pending_acks: Vec<u8>,
}

impl MqttConsumer {
    fn send_pending_acks(&mut self) {
        if !self.pending_acks.is_empty() {
            let acks = &self.pending_acks;
            self.outbox.push_now(|out| out.extend_from_slice(acks));
            self.pending_acks.clear();
        }
    }
}

impl Consumer for MqttConsumer {
    async fn recv(&mut self) -> anyhow::Result<Option<Received>> {
        loop {
            let Some((first, range)) = self.reader.try_packet()? else {
                self.send_pending_acks();
                if let Some(err) = self.outbox.failure() {
                    bail!("writing to the broker: {err}");
                }
                self.reader.fill().await?;
                continue;
            };
            let body = &self.reader.buf[range];
            match first & 0xF0 {
                kind::PUBLISH => {
                    let publish = wire::parse_publish(self.version, first, body)?;
                    match publish.qos {
                        0 => {}
                        1 => wire::put_ack(&mut self.pending_acks, 0x40, publish.id),
                        _ => wire::put_ack(&mut self.pending_acks, 0x50, publish.id),
                    }
                    return Ok(Some(Received::of(&body[publish.payload])));
                }
                kind::PUBREL => wire::put_ack(&mut self.pending_acks, 0x70, wire::ack_id(body)?),
                kind::DISCONNECT => return Ok(None),
                kind::PINGRESP => {}
                _ => {}
            }
        }
    }

    async fn close(mut self) -> anyhow::Result<()> {
        if let Some(pinger) = self.pinger.take() {
            pinger.abort();
        }
        self.send_pending_acks();
        disconnect(&self.outbox, self.writer).await;
        Ok(())
    }
}

/// Queues DISCONNECT, waits until it is written, and stops the writer.
async fn disconnect(outbox: &Outbox, writer: JoinHandle<()>) {
    if outbox.push(|out| out.extend_from_slice(&wire::DISCONNECT)).await.is_ok() {
        let _ = outbox.flush().await;
    }
    outbox.stop(writer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_urls() {
        let b = MqttBackend::new("mqtt://guest:secret@127.0.0.1:1893", Version::V311, 60).unwrap();
        assert!(matches!(&b.transport, Transport::Tcp(a) if a == "127.0.0.1:1893"));
        assert_eq!(b.credentials, Some(("guest".into(), "secret".into())));
        let b = MqttBackend::new("mqtt://localhost", Version::V5, 60).unwrap();
        assert!(matches!(&b.transport, Transport::Tcp(a) if a == "localhost:1883"));
        assert_eq!((b.credentials, b.version), (None, Version::V5));
        assert!(MqttBackend::new("mqtt://:1883", Version::V311, 60).is_err());
        assert!(MqttBackend::new("mqtt://h:x", Version::V311, 60).is_err());
    }

    #[test]
    fn parses_ws_urls() {
        let b = MqttBackend::new_ws("ws://u:p@127.0.0.1:15675/ws", 60).unwrap();
        assert_eq!(b.credentials, Some(("u".into(), "p".into())));
        assert!(matches!(&b.transport, Transport::Ws(t) if t.addr == "127.0.0.1:15675" && t.path == "/ws"));
        assert!(MqttBackend::new_ws("mqtt://h", 60).is_err());
    }
}
