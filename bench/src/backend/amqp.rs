//! AMQP 0-9-1 backend, on lapin.
//!
//! Each producer and consumer gets its own connection and channel (as RabbitMQ PerfTest does),
//! so the broker sees the same number of sockets whichever broker it is. The shared layout is one
//! queue reached through the default exchange; the fan-out layout is a `fanout` exchange with one
//! queue per consumer. Idle connections are opened with a hand-rolled handshake on a plain tokio
//! socket, because lapin runs one I/O thread per connection and 10k threads would measure the
//! load generator rather than the broker.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm};
use tokio::net::TcpStream;

use super::{Backend, ConsumeSettings, Consumer, Layout, Producer, PublishSettings, Topology};
use crate::stats::{Counters, Received};

/// How long a polite close may take before the connection is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// An AMQP 0-9-1 broker at one URL.
#[derive(Debug, Clone)]
pub struct AmqpBackend {
    url: String,
    uri: AMQPUri,
}

impl AmqpBackend {
    /// Parses `url` (`amqp://user:pass@host:port/vhost`).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let uri: AMQPUri = url.parse().map_err(|e: String| anyhow!("invalid AMQP URL {url:?}: {e}"))?;
        Ok(Self { url: url.to_owned(), uri })
    }

    async fn connect(&self, role: &str) -> anyhow::Result<Connection> {
        let props = ConnectionProperties::default().with_connection_name(format!("loadgen-{role}").into());
        Connection::connect(&self.url, props)
            .await
            .with_context(|| format!("connecting to {} ({role})", self.redacted()))
    }

    /// The parsed URL.
    pub fn uri(&self) -> &AMQPUri {
        &self.uri
    }

    fn redacted(&self) -> String {
        format!("amqp://{}:{}/{}", self.uri.authority.host, self.uri.authority.port, self.uri.vhost)
    }
}

/// Where a producer publishes: exchange and routing key.
pub(super) fn publish_target(topology: &Topology) -> (ShortString, ShortString) {
    match topology.layout {
        Layout::Shared => ("".into(), topology.name.clone().into()),
        Layout::Fanout(_) => (topology.name.clone().into(), "".into()),
    }
}

/// The queue consumer `index` reads.
pub(super) fn consumer_queue(topology: &Topology, index: usize) -> String {
    match topology.layout {
        Layout::Shared => topology.name.clone(),
        Layout::Fanout(_) => format!("{}.{index}", topology.name),
    }
}

async fn close_connection(conn: &Connection) {
    // A failed or slow close only matters to the broker's logs, not to the figures.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, "loadgen done".into())).await;
}

impl Backend for AmqpBackend {
    type Producer = AmqpProducer;
    type Consumer = AmqpConsumer;
    type Idle = IdleAmqp;

    async fn declare(&self, topology: &Topology) -> anyhow::Result<()> {
        let conn = self.connect("setup").await?;
        let channel = conn.create_channel().await.context("opening the setup channel")?;
        let queue_opts = QueueDeclareOptions { durable: topology.durable, ..QueueDeclareOptions::default() };
        let result = async {
            match topology.layout {
                Layout::Shared => {
                    channel
                        .queue_declare(topology.name.clone().into(), queue_opts, FieldTable::default())
                        .await
                        .with_context(|| format!("declaring queue {}", topology.name))?;
                }
                Layout::Fanout(n) => {
                    let opts =
                        ExchangeDeclareOptions { durable: topology.durable, ..ExchangeDeclareOptions::default() };
                    channel
                        .exchange_declare(
                            topology.name.clone().into(),
                            ExchangeKind::Fanout,
                            opts,
                            FieldTable::default(),
                        )
                        .await
                        .with_context(|| format!("declaring fanout exchange {}", topology.name))?;
                    for i in 0..n {
                        let queue = consumer_queue(topology, i);
                        channel
                            .queue_declare(queue.clone().into(), queue_opts, FieldTable::default())
                            .await
                            .with_context(|| format!("declaring queue {queue}"))?;
                        channel
                            .queue_bind(
                                queue.clone().into(),
                                topology.name.clone().into(),
                                "".into(),
                                QueueBindOptions::default(),
                                FieldTable::default(),
                            )
                            .await
                            .with_context(|| format!("binding queue {queue}"))?;
                    }
                }
            }
            anyhow::Ok(())
        }
        .await;
        close_connection(&conn).await;
        result
    }

    async fn producer(&self, topology: &Topology, settings: PublishSettings) -> anyhow::Result<AmqpProducer> {
        let conn = self.connect("producer").await?;
        let channel = conn.create_channel().await.context("opening a producer channel")?;
        if settings.confirm_window > 0 {
            channel.confirm_select(ConfirmSelectOptions::default()).await.context("confirm.select")?;
        }
        let (exchange, routing_key) = publish_target(topology);
        let props = if settings.persistent {
            BasicProperties::default().with_delivery_mode(2)
        } else {
            BasicProperties::default()
        };
        Ok(AmqpProducer {
            conn,
            channel,
            exchange,
            routing_key,
            props,
            window: settings.confirm_window,
            writes: VecDeque::with_capacity(WRITE_PIPELINE + 1),
            pending: VecDeque::with_capacity(settings.confirm_window),
        })
    }

    async fn consumer(
        &self,
        topology: &Topology,
        index: usize,
        settings: ConsumeSettings,
    ) -> anyhow::Result<AmqpConsumer> {
        let conn = self.connect("consumer").await?;
        let channel = conn.create_channel().await.context("opening a consumer channel")?;
        if settings.manual_ack && settings.prefetch > 0 {
            channel.basic_qos(settings.prefetch, BasicQosOptions::default()).await.context("basic.qos")?;
        }
        let queue = consumer_queue(topology, index);
        let opts = BasicConsumeOptions { no_ack: !settings.manual_ack, ..BasicConsumeOptions::default() };
        let consumer = channel
            .basic_consume(queue.clone().into(), format!("loadgen-{index}").into(), opts, FieldTable::default())
            .await
            .with_context(|| format!("basic.consume on {queue}"))?;
        let ack_every = if settings.prefetch > 0 {
            settings.ack_every.clamp(1, u32::from(settings.prefetch))
        } else {
            settings.ack_every.max(1)
        };
        Ok(AmqpConsumer {
            conn,
            channel,
            consumer,
            manual_ack: settings.manual_ack,
            ack_every,
            unacked: 0,
            last_tag: 0,
            acks: VecDeque::new(),
        })
    }

    async fn teardown(&self, topology: &Topology) -> anyhow::Result<()> {
        let conn = self.connect("teardown").await?;
        let channel = conn.create_channel().await.context("opening the teardown channel")?;
        let result = async {
            let queues: Vec<String> = match topology.layout {
                Layout::Shared => vec![topology.name.clone()],
                Layout::Fanout(n) => (0..n).map(|i| consumer_queue(topology, i)).collect(),
            };
            for queue in queues {
                channel
                    .queue_delete(queue.clone().into(), QueueDeleteOptions::default())
                    .await
                    .with_context(|| format!("deleting queue {queue}"))?;
            }
            if let Layout::Fanout(_) = topology.layout {
                channel
                    .exchange_delete(topology.name.clone().into(), ExchangeDeleteOptions::default())
                    .await
                    .with_context(|| format!("deleting exchange {}", topology.name))?;
            }
            anyhow::Ok(())
        }
        .await;
        close_connection(&conn).await;
        result
    }

    async fn idle_connection(&self) -> anyhow::Result<IdleAmqp> {
        IdleAmqp::open(&self.uri).await
    }
}

/// A `basic.publish` (or `basic.ack`) whose frames are queued but whose write lapin has not yet
/// reported.
type Written<T> = Pin<Box<dyn Future<Output = lapin::Result<T>> + Send>>;

/// Polls `fut` once (which hands its frames to lapin's I/O thread) and queues it if the write
/// is still under way. lapin resolves each publish only after its I/O thread wrote it; awaiting
/// that before the next publish costs a thread round trip per message and made the load
/// generator, not the broker, the bottleneck (≈25k msg/s). Keeping up to `depth` writes
/// outstanding lets the I/O thread batch them.
async fn pipeline<T>(queue: &mut VecDeque<Written<T>>, mut fut: Written<T>, depth: usize) -> anyhow::Result<Vec<T>> {
    let mut done = Vec::new();
    match futures_lite::future::poll_once(&mut fut).await {
        Some(result) => done.push(result?),
        None => queue.push_back(fut),
    }
    while queue.len() > depth {
        if let Some(oldest) = queue.pop_front() {
            done.push(oldest.await?);
        }
    }
    Ok(done)
}

/// Writes kept outstanding per producer / consumer connection.
const WRITE_PIPELINE: usize = 256;

/// One publishing connection.
pub struct AmqpProducer {
    conn: Connection,
    channel: Channel,
    exchange: ShortString,
    routing_key: ShortString,
    props: BasicProperties,
    window: usize,
    writes: VecDeque<Written<PublisherConfirm>>,
    pending: VecDeque<PublisherConfirm>,
}

impl AmqpProducer {
    /// Queues the confirms of written messages and waits while more than the window are out.
    async fn track_confirms(&mut self, written: Vec<PublisherConfirm>, counters: &Counters) -> anyhow::Result<()> {
        if self.window == 0 {
            return Ok(());
        }
        self.pending.extend(written);
        while self.pending.len() + self.writes.len() > self.window {
            if self.pending.is_empty() {
                let Some(write) = self.writes.pop_front() else { break };
                self.pending.push_back(write.await.context("basic.publish")?);
            }
            self.settle_oldest(counters).await?;
        }
        Ok(())
    }

    async fn settle_oldest(&mut self, counters: &Counters) -> anyhow::Result<()> {
        if let Some(confirm) = self.pending.pop_front() {
            let confirmation = confirm.await.context("waiting for a publisher confirm")?;
            if confirmation.is_nack() {
                counters.nacked.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.confirmed.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

impl Producer for AmqpProducer {
    async fn send(&mut self, payload: &[u8], counters: &Counters) -> anyhow::Result<()> {
        let channel = self.channel.clone();
        let (exchange, routing_key, props) = (self.exchange.clone(), self.routing_key.clone(), self.props.clone());
        let payload = payload.to_vec();
        let publish: Written<PublisherConfirm> = Box::pin(async move {
            channel.basic_publish(exchange, routing_key, BasicPublishOptions::default(), &payload, props).await
        });
        let written = pipeline(&mut self.writes, publish, WRITE_PIPELINE).await.context("basic.publish")?;
        self.track_confirms(written, counters).await
    }

    async fn flush(&mut self, counters: &Counters) -> anyhow::Result<()> {
        while let Some(write) = self.writes.pop_front() {
            let confirm = write.await.context("basic.publish")?;
            self.track_confirms(vec![confirm], counters).await?;
        }
        while !self.pending.is_empty() {
            self.settle_oldest(counters).await?;
        }
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        close_connection(&self.conn).await;
        Ok(())
    }
}

/// One consuming connection.
pub struct AmqpConsumer {
    conn: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    manual_ack: bool,
    ack_every: u32,
    unacked: u32,
    last_tag: u64,
    acks: VecDeque<Written<()>>,
}

impl Consumer for AmqpConsumer {
    async fn recv(&mut self) -> anyhow::Result<Option<Received>> {
        let Some(delivery) = self.consumer.next().await else { return Ok(None) };
        let delivery = delivery.context("consumer delivery")?;
        let received = Received::of(&delivery.data);
        if self.manual_ack {
            self.unacked += 1;
            self.last_tag = delivery.delivery_tag;
            if self.unacked >= self.ack_every {
                let multiple = self.ack_every > 1;
                self.unacked = 0;
                let channel = self.channel.clone();
                let tag = delivery.delivery_tag;
                let ack: Written<()> =
                    Box::pin(async move { channel.basic_ack(tag, BasicAckOptions { multiple }).await });
                pipeline(&mut self.acks, ack, WRITE_PIPELINE).await.context("basic.ack")?;
            }
        }
        Ok(Some(received))
    }

    async fn close(self) -> anyhow::Result<()> {
        for ack in self.acks {
            let _ = ack.await;
        }
        if self.manual_ack && self.unacked > 0 {
            let _ = self.channel.basic_ack(self.last_tag, BasicAckOptions { multiple: true }).await;
        }
        close_connection(&self.conn).await;
        Ok(())
    }
}

/// An idle AMQP connection: handshake done, heartbeats off, socket held open.
#[derive(Debug)]
pub struct IdleAmqp {
    _socket: TcpStream,
}

impl IdleAmqp {
    async fn open(uri: &AMQPUri) -> anyhow::Result<Self> {
        let (socket, _) = super::amqp_raw::handshake(uri).await?;
        Ok(Self { _socket: socket })
    }
}
