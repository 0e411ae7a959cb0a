//! MQTT 5 backend (`--protocol mqtt5`), on rumqttc's `v5` client (no TLS features).
//!
//! The same mapping as the MQTT 3.1.1 backend ([`super::mqtt`]), so figures compare directly:
//! topic `loadgen/<name>`; the shared layout has exactly one subscriber (competing consumers
//! would need shared subscriptions), fan-out N subscribers of the same topic; QoS 0/1/2 from
//! `--qos`; publisher "confirms" are PUBACK (QoS 1) / PUBCOMP (QoS 2), the confirm window is the
//! client's outgoing in-flight limit (default 100). Clean start, no session expiry, Nagle off.
//! Idle connections use the 3.1.1 backend's raw CONNECT (the version does not change what an idle
//! connection costs the broker's transport, but use `mqtt` for that scenario).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{NetworkOptions, Outgoing};
use tokio::task::JoinHandle;

use super::mqtt::{IdleMqtt, MqttBackend};
use super::{Backend, ConsumeSettings, Consumer, Layout, Producer, PublishSettings, Topology};
use crate::stats::{Counters, Received};

/// Largest packet either side accepts.
const MAX_PACKET: u32 = 16 << 20;
/// How long connect/subscribe and the final flush may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// An MQTT 5 broker at one address.
#[derive(Debug)]
pub struct Mqtt5Backend {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    next_id: AtomicUsize,
    /// For idle connections (3.1.1 CONNECT).
    v3: MqttBackend,
}

impl Mqtt5Backend {
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
        Ok(Self { host, port, credentials, next_id: AtomicUsize::new(0), v3: MqttBackend::new(url)? })
    }

    /// Connects and waits for a successful CONNACK.
    async fn connect(&self, role: &str, inflight: u16) -> anyhow::Result<(AsyncClient, EventLoop)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut opts = MqttOptions::new(format!("loadgen5-{role}-{}-{id}", std::process::id()), &self.host, self.port);
        opts.set_keep_alive(Duration::from_secs(60));
        opts.set_clean_start(true);
        opts.set_max_packet_size(Some(MAX_PACKET));
        opts.set_outgoing_inflight_upper_limit(inflight.max(1));
        if let Some((user, pass)) = &self.credentials {
            opts.set_credentials(user, pass);
        }
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        opts.set_network_options(net);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        tokio::time::timeout(SETUP_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(err) => return Err(anyhow!("connecting to mqtt://{}:{} (v5): {err}", self.host, self.port)),
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

impl Backend for Mqtt5Backend {
    type Producer = Mqtt5Producer;
    type Consumer = Mqtt5Consumer;
    type Idle = IdleMqtt;

    async fn declare(&self, _topology: &Topology) -> anyhow::Result<()> {
        Ok(())
    }

    async fn producer(&self, topology: &Topology, settings: PublishSettings) -> anyhow::Result<Mqtt5Producer> {
        let window = u16::try_from(settings.confirm_window).unwrap_or(u16::MAX);
        let (client, mut eventloop) = self.connect("pub", if window == 0 { 100 } else { window }).await?;
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
        Ok(Mqtt5Producer {
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
        index: usize,
        settings: ConsumeSettings,
    ) -> anyhow::Result<Mqtt5Consumer> {
        if topology.layout == Layout::Shared && index > 0 {
            bail!("MQTT subscribers each get every message: use --consumers 1 for e2e, or the fanout scenario");
        }
        let (client, mut eventloop) = self.connect("sub", 100).await?;
        let topic = Self::topic(topology);
        client.subscribe(topic.clone(), qos(settings.qos)).await.context("SUBSCRIBE")?;
        tokio::time::timeout(SETUP_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        return match ack.return_codes.first() {
                            Some(SubscribeReasonCode::Success(_)) => Ok(()),
                            other => Err(anyhow!("subscription to {topic} refused: {other:?}")),
                        };
                    }
                    Ok(_) => {}
                    Err(err) => return Err(anyhow!("subscribing to {topic}: {err}")),
                }
            }
        })
        .await
        .map_err(|_| anyhow!("no SUBACK within {SETUP_TIMEOUT:?}"))??;
        Ok(Mqtt5Consumer { client, eventloop })
    }

    async fn teardown(&self, _topology: &Topology) -> anyhow::Result<()> {
        Ok(())
    }

    async fn idle_connection(&self) -> anyhow::Result<IdleMqtt> {
        self.v3.idle_connection().await
    }
}

/// One publishing MQTT 5 client; a background task drives its event loop and counts acks.
pub struct Mqtt5Producer {
    client: AsyncClient,
    topic: String,
    qos: QoS,
    acked: Arc<AtomicU64>,
    reported: u64,
    published: u64,
    failure: Arc<Mutex<Option<String>>>,
    driver: JoinHandle<()>,
}

impl Mqtt5Producer {
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

impl Producer for Mqtt5Producer {
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
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(SETUP_TIMEOUT, self.driver).await;
        Ok(())
    }
}

/// One subscribed MQTT 5 client.
pub struct Mqtt5Consumer {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl Consumer for Mqtt5Consumer {
    async fn recv(&mut self) -> anyhow::Result<Option<Received>> {
        loop {
            match self.eventloop.poll().await.context("mqtt5 subscriber")? {
                Event::Incoming(Packet::Publish(publish)) => return Ok(Some(Received::of(&publish.payload))),
                Event::Incoming(Packet::Disconnect(_)) => return Ok(None),
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

#[cfg(test)]
mod tests {
    use super::Mqtt5Backend;

    #[test]
    fn parses_urls() {
        let b = Mqtt5Backend::new("mqtt://guest:secret@127.0.0.1:1893").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 1893));
        assert_eq!(b.credentials, Some(("guest".into(), "secret".into())));
        assert!(Mqtt5Backend::new("mqtt://:1883").is_err());
    }
}
