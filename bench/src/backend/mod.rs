//! Protocol backends. A scenario is written once against the [`Backend`] trait; each protocol
//! supplies how to lay out the topology, how to publish, how to consume and how to open an
//! idle connection. Adding STOMP, SQS, Kinesis or a WebSocket flavour means adding one module
//! here and one arm in [`crate::run_with_protocol`]; the scenarios, stats and reports stay as
//! they are.

pub mod amqp;
pub mod amqp_raw;
pub mod kinesis;
pub mod mqtt;
pub mod mqtt_wire;
mod outbox;
pub mod sqs;
pub mod stomp;
pub mod ws;

use std::future::Future;

use crate::stats::{Counters, Received};

/// How messages travel from producers to consumers in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One queue (AMQP) / topic (MQTT) shared by every producer; consumers compete for its
    /// messages (MQTT: each subscriber gets every message, so use one consumer).
    Shared,
    /// One exchange/topic; `n` queues or subscriptions each get a copy of every message.
    Fanout(usize),
}

impl Layout {
    /// How many deliveries one published message turns into.
    pub fn copies(self) -> u64 {
        match self {
            Layout::Shared => 1,
            Layout::Fanout(n) => n as u64,
        }
    }
}

/// The broker objects of one run.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Unique base name: the queue name (shared layout) or the exchange/topic name (fan-out;
    /// queues are `<name>.<i>`).
    pub name: String,
    /// Queue/topic layout.
    pub layout: Layout,
    /// Durable queues and exchanges.
    pub durable: bool,
}

/// Publisher-side options.
#[derive(Debug, Clone, Copy)]
pub struct PublishSettings {
    /// Persistent messages (AMQP delivery mode 2).
    pub persistent: bool,
    /// Maximum unconfirmed messages per producer; 0 = no confirms.
    pub confirm_window: usize,
    /// MQTT QoS.
    pub qos: u8,
}

/// Consumer-side options.
#[derive(Debug, Clone, Copy)]
pub struct ConsumeSettings {
    /// Manual acknowledgements (otherwise auto-ack).
    pub manual_ack: bool,
    /// Ack every N deliveries with `multiple` (manual ack only).
    pub ack_every: u32,
    /// Prefetch window; 0 = unlimited.
    pub prefetch: u16,
    /// MQTT QoS.
    pub qos: u8,
}

/// A broker reached over one protocol.
pub trait Backend: Send + Sync + 'static {
    /// A connected publisher.
    type Producer: Producer;
    /// A connected, subscribed consumer.
    type Consumer: Consumer;
    /// A connection held open and otherwise idle.
    type Idle: Send + 'static;

    /// Creates the queues/exchanges/bindings of `topology`.
    fn declare(&self, topology: &Topology) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Opens a connection that publishes into `topology`.
    fn producer(
        &self,
        topology: &Topology,
        settings: PublishSettings,
    ) -> impl Future<Output = anyhow::Result<Self::Producer>> + Send;

    /// Opens a connection that consumes consumer `index`'s share of `topology`.
    fn consumer(
        &self,
        topology: &Topology,
        index: usize,
        settings: ConsumeSettings,
    ) -> impl Future<Output = anyhow::Result<Self::Consumer>> + Send;

    /// Deletes what [`Backend::declare`] created.
    fn teardown(&self, topology: &Topology) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Opens one authenticated connection that does nothing further (no heartbeats).
    fn idle_connection(&self) -> impl Future<Output = anyhow::Result<Self::Idle>> + Send;
}

/// The sending half of a run.
pub trait Producer: Send + 'static {
    /// Publishes one message. With confirms, returns once the message is within the window
    /// (earlier confirms are collected as needed) and counts confirms in `counters`.
    fn send(&mut self, payload: &[u8], counters: &Counters) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Waits for every outstanding confirm.
    fn flush(&mut self, counters: &Counters) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Closes the connection politely.
    fn close(self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The receiving half of a run.
pub trait Consumer: Send + 'static {
    /// The next delivery (already acked when acks are due); `None` once the broker cancelled
    /// the consumer. Must be cancel-safe: the scenario drops it when the run ends.
    fn recv(&mut self) -> impl Future<Output = anyhow::Result<Option<Received>>> + Send;

    /// Acks what is still unacked and closes the connection.
    fn close(self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Appends the decimal digits of `n` (hand-written request encoders of the lean clients).
pub(crate) fn put_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}
