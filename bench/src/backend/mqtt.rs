//! MQTT 3.1.1 backend, on rumqttc (no TLS features).
//!
//! Topics need no declaring: the shared layout is one topic `loadgen/<name>` with exactly one
//! subscriber (plain MQTT subscriptions each get every message, so competing consumers would need
//! MQTT 5 shared subscriptions); the fan-out layout is the same topic with N subscribers. QoS 1/2
//! publisher "confirms" are PUBACK/PUBCOMP, and the confirm window is rumqttc's in-flight limit.
//! Nagle is turned off on every socket (rumqttc leaves it on by default).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::{Backend, ConsumeSettings, Consumer, Layout, Producer, PublishSettings, Topology};
use crate::stats::{Counters, Received};

/// Largest packet either side accepts (rumqttc's default is 10 KiB).
const MAX_PACKET: usize = 16 << 20;
/// How long connect/subscribe and the final flush may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// An MQTT broker at one address.
#[derive(Debug)]
pub struct MqttBackend {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    next_id: AtomicUsize,
}

impl MqttBackend {
    /// Parses `mqtt://[user:pass@]host[:port]`.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")).unwrap_or(url);
        let rest = rest.trim_end_matches('/');
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((user.to_owned(), pass.to_owned())), hostport)
            }
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port.parse().with_context(|| format!("invalid port in {url:?}"))?),
            None => (hostport.to_owned(), 1883),
        };
        if host.is_empty() {
            bail!("no host in MQTT URL {url:?}");
        }
        Ok(Self { host, port, credentials, next_id: AtomicUsize::new(0) })
    }

    fn options(&self, role: &str, inflight: u16) -> MqttOptions {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut opts = MqttOptions::new(format!("loadgen-{role}-{}-{id}", std::process::id()), &self.host, self.port);
        opts.set_keep_alive(Duration::from_secs(60));
        opts.set_clean_session(true);
        opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        opts.set_inflight(inflight.max(1));
        if let Some((user, pass)) = &self.credentials {
            opts.set_credentials(user, pass);
        }
        opts
    }

    /// Connects and waits for CONNACK.
    async fn connect(&self, role: &str, inflight: u16, cap: usize) -> anyhow::Result<(AsyncClient, EventLoop)> {
        let (client, mut eventloop) = AsyncClient::new(self.options(role, inflight), cap);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        tokio::time::timeout(SETUP_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(err) => return Err(anyhow!("connecting to mqtt://{}:{}: {err}", self.host, self.port)),
                }
            }
        })
        .await
        .map_err(|_| anyhow!("no CONNACK from mqtt://{}:{} within {SETUP_TIMEOUT:?}", self.host, self.port))??;
        Ok((client, eventloop))
    }

    fn topic(topology: &Topology) -> String {
        format!("loadgen/{}", topology.name)
    }
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl Backend for MqttBackend {
    type Producer = MqttProducer;
    type Consumer = MqttConsumer;
    type Idle = IdleMqtt;

    async fn declare(&self, _topology: &Topology) -> anyhow::Result<()> {
        Ok(())
    }

    async fn producer(&self, topology: &Topology, settings: PublishSettings) -> anyhow::Result<MqttProducer> {
        let window = u16::try_from(settings.confirm_window).unwrap_or(u16::MAX);
        let (client, mut eventloop) = self.connect("pub", if window == 0 { 100 } else { window }, 64).await?;
        let acked = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None::<String>));
        let driver = {
            let (acked, failure) = (Arc::clone(&acked), Arc::clone(&failure));
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        Err(err) => {
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert_with(|| err.to_string());
                            }
                            break;
                        }
                    }
                }
            })
        };
        Ok(MqttProducer {
            client,
            topic: Self::topic(topology),
            qos: qos(settings.qos),
            acked,
            reported: 0,
            published: 0,
            failure,
            driver,
        })
    }

    async fn consumer(
        &self,
        topology: &Topology,
        _index: usize,
        settings: ConsumeSettings,
    ) -> anyhow::Result<MqttConsumer> {
        if topology.layout == Layout::Shared && _index > 0 {
            bail!("MQTT subscribers each get every message: use --consumers 1 for e2e, or the fanout scenario");
        }
        let (client, mut eventloop) = self.connect("sub", 100, 64).await?;
        let topic = Self::topic(topology);
        client.subscribe(topic.clone(), qos(settings.qos)).await.context("SUBSCRIBE")?;
        tokio::time::timeout(SETUP_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(err) => return Err(anyhow!("subscribing to {topic}: {err}")),
                }
            }
        })
        .await
        .map_err(|_| anyhow!("no SUBACK within {SETUP_TIMEOUT:?}"))??;
        Ok(MqttConsumer { client, eventloop })
    }

    async fn teardown(&self, _topology: &Topology) -> anyhow::Result<()> {
        Ok(())
    }

    async fn idle_connection(&self) -> anyhow::Result<IdleMqtt> {
        IdleMqtt::open(self).await
    }
}

/// One publishing MQTT client; a background task drives its event loop and counts acks.
pub struct MqttProducer {
    client: AsyncClient,
    topic: String,
    qos: QoS,
    acked: Arc<AtomicU64>,
    reported: u64,
    published: u64,
    failure: Arc<Mutex<Option<String>>>,
    driver: JoinHandle<()>,
}

impl MqttProducer {
    fn report(&mut self, counters: &Counters) -> anyhow::Result<()> {
        let acked = self.acked.load(Ordering::Relaxed);
        counters.confirmed.fetch_add(acked - self.reported, Ordering::Relaxed);
        self.reported = acked;
        if let Some(err) = self.failure.lock().ok().and_then(|f| f.clone()) {
            bail!("mqtt connection failed: {err}");
        }
        Ok(())
    }
}

impl Producer for MqttProducer {
    async fn send(&mut self, payload: &[u8], counters: &Counters) -> anyhow::Result<()> {
        self.client.publish(self.topic.as_str(), self.qos, false, payload.to_vec()).await.context("PUBLISH")?;
        self.published += 1;
        self.report(counters)
    }

    async fn flush(&mut self, counters: &Counters) -> anyhow::Result<()> {
        if self.qos != QoS::AtMostOnce {
            let deadline = Instant::now() + SETUP_TIMEOUT;
            while self.acked.load(Ordering::Relaxed) < self.published && Instant::now() < deadline {
                self.report(counters)?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        self.report(counters)
    }

    async fn close(self) -> anyhow::Result<()> {
        // DISCONNECT goes through the same queue, after every PUBLISH handed over before it.
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(SETUP_TIMEOUT, self.driver).await;
        Ok(())
    }
}

/// One subscribed MQTT client.
pub struct MqttConsumer {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl Consumer for MqttConsumer {
    async fn recv(&mut self) -> anyhow::Result<Option<Received>> {
        loop {
            match self.eventloop.poll().await.context("mqtt subscriber")? {
                Event::Incoming(Packet::Publish(publish)) => return Ok(Some(Received::of(&publish.payload))),
                Event::Incoming(Packet::Disconnect) => return Ok(None),
                _ => {}
            }
        }
    }

    async fn close(mut self) -> anyhow::Result<()> {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(event) = self.eventloop.poll().await {
                if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
        Ok(())
    }
}

/// An idle MQTT connection: CONNECT (clean session, keep-alive 0) acknowledged, socket held.
#[derive(Debug)]
pub struct IdleMqtt {
    _socket: TcpStream,
}

impl IdleMqtt {
    async fn open(backend: &MqttBackend) -> anyhow::Result<Self> {
        let addr = format!("{}:{}", backend.host, backend.port);
        let mut socket = TcpStream::connect(&addr).await.with_context(|| format!("connecting to {addr}"))?;
        socket.set_nodelay(true)?;
        let id = format!("loadgen-idle-{}-{}", std::process::id(), backend.next_id.fetch_add(1, Ordering::Relaxed));
        let mut body = Vec::with_capacity(64);
        put_str(&mut body, "MQTT")?;
        body.push(4); // protocol level 3.1.1
        let mut flags = 0x02u8; // clean session
        if backend.credentials.is_some() {
            flags |= 0xC0;
        }
        body.push(flags);
        body.extend_from_slice(&0u16.to_be_bytes()); // keep-alive off: the broker never times us out
        put_str(&mut body, &id)?;
        if let Some((user, pass)) = &backend.credentials {
            put_str(&mut body, user)?;
            put_str(&mut body, pass)?;
        }
        let mut packet = vec![0x10];
        let mut len = body.len();
        loop {
            let mut byte = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            packet.push(byte);
            if len == 0 {
                break;
            }
        }
        packet.extend_from_slice(&body);
        socket.write_all(&packet).await?;
        let mut connack = [0u8; 4];
        socket.read_exact(&mut connack).await.context("reading CONNACK")?;
        if connack[0] != 0x20 || connack[3] != 0 {
            bail!("broker refused the MQTT connection (CONNACK {connack:02x?})");
        }
        Ok(Self { _socket: socket })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) -> anyhow::Result<()> {
    out.extend_from_slice(&u16::try_from(s.len()).context("MQTT string longer than 65535 bytes")?.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::MqttBackend;

    #[test]
    fn parses_urls() {
        let b = MqttBackend::new("mqtt://guest:secret@127.0.0.1:1893").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 1893));
        assert_eq!(b.credentials, Some(("guest".into(), "secret".into())));
        let b = MqttBackend::new("mqtt://localhost").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.credentials), ("localhost", 1883, None));
        assert!(MqttBackend::new("mqtt://:1883").is_err());
    }
}
