//! Command-line interface of `loadgen`: which protocol, which broker, which scenario, and the
//! knobs every scenario shares (message size, duration or count, persistence, confirms, acks).
//!
//! The flag names follow RabbitMQ PerfTest where one exists (`--producers`, `--consumers`,
//! `--size`, `--confirm`, `--prefetch`, `--rate`), so figures are easy to set side by side.

use std::fmt;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// `loadgen`: drives one benchmark scenario against one broker and prints one JSON line.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for Switchyard and the brokers it is compared with",
    long_about = "Runs one scenario against one broker. Prints one JSON line per run on stdout \
                  and a human-readable table on stderr. See docs/benchmarks.md."
)]
pub struct Cli {
    /// What to measure.
    #[arg(value_enum)]
    pub scenario: Scenario,

    /// Wire protocol used to talk to the broker.
    #[arg(long, value_enum, default_value_t = Protocol::Amqp)]
    pub protocol: Protocol,

    /// AMQP client: `raw` (default) is loadgen's own lean client for publish/consume/ack/confirm,
    /// `lapin` the lapin crate. Setup and teardown always use lapin.
    #[arg(long, value_enum, default_value_t = AmqpClient::Raw)]
    pub client: AmqpClient,

    /// Broker address, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f` or `mqtt://127.0.0.1:1883`.
    /// Defaults to the protocol's standard local port.
    #[arg(long)]
    pub url: Option<String>,

    /// Free-form name of the broker under test, copied into the report (`switchyard`, `rabbitmq`).
    #[arg(long, default_value = "broker")]
    pub label: String,

    /// Producer connections (each with one channel / session).
    #[arg(long, short = 'x', default_value_t = 1)]
    pub producers: usize,

    /// Consumer connections. For `fanout` this is the fan-out degree: one queue (or one
    /// subscription) per consumer, each receiving every message.
    #[arg(long, short = 'y', default_value_t = 1)]
    pub consumers: usize,

    /// Message body size in bytes (at least 8: the first 8 bytes carry the send timestamp).
    #[arg(long, short = 's', default_value_t = 1024)]
    pub size: usize,

    /// How long producers publish, in seconds (fractions allowed). Ignored when `--count` is set.
    #[arg(long, short = 'z', default_value_t = 10.0)]
    pub duration: f64,

    /// Total messages to publish (split across producers) instead of a duration.
    #[arg(long, short = 'C')]
    pub count: Option<u64>,

    /// Seconds at the start whose messages are sent but neither counted nor timed.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,

    /// Publish rate in messages/s summed over producers; 0 = as fast as possible.
    /// `latency` requires a rate (default 1000).
    #[arg(long, short = 'r', default_value_t = 0)]
    pub rate: u64,

    /// Persistent messages (AMQP delivery mode 2) on durable queues/exchanges.
    #[arg(long)]
    pub persistent: bool,

    /// Durable queues/exchanges even for transient messages (implied by `--persistent`).
    #[arg(long)]
    pub durable: bool,

    /// Publisher confirms with at most this many unconfirmed messages per producer
    /// (AMQP confirm.select; MQTT QoS ≥ 1 in-flight window). 0 = no confirms.
    #[arg(long, short = 'c', default_value_t = 0)]
    pub confirm: usize,

    /// Consumers ack manually (AMQP `basic.ack`); without it they use auto-ack / no-ack.
    #[arg(long)]
    pub manual_ack: bool,

    /// Ack every N-th delivery with `multiple=true` (manual ack only). 1 = ack each message.
    #[arg(long, default_value_t = 1)]
    pub ack_every: u32,

    /// Consumer prefetch (AMQP `basic.qos`), applies to manual-ack consumers. 0 = unlimited.
    #[arg(long, short = 'q', default_value_t = 1000)]
    pub prefetch: u16,

    /// Upper bound on messages published but not yet consumed, across the run
    /// (`e2e`, `fanout`, `latency`). 0 = unbounded.
    #[arg(long, default_value_t = 10_000)]
    pub max_inflight: u64,

    /// After producers stop, how long consumers may take to drain what is still in flight.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,

    /// MQTT quality of service for publishes and subscriptions (0, 1 or 2).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,

    /// MQTT keep-alive in seconds announced in CONNECT (0 = off); the client sends PINGREQ every
    /// half of it. Idle connections (`idle-conns`) always announce 0.
    #[arg(long, default_value_t = 60)]
    pub keepalive: u16,

    /// Connections to open for `idle-conns`.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,

    /// Seconds to hold idle connections open before measuring and closing them.
    #[arg(long, default_value_t = 2.0)]
    pub hold: f64,

    /// PID of the broker process: its RSS (VmRSS) and CPU time are sampled around the run.
    #[arg(long)]
    pub broker_pid: Option<u32>,

    /// Queue / exchange / topic name prefix; a unique suffix is added per run.
    #[arg(long, default_value = "loadgen")]
    pub name: String,

    /// Never draw progress bars (they are drawn only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,

    /// Do not print the human-readable table on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// Kinesis: records per `PutRecords` request (1–500; also capped at ~5 MiB of data).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,

    /// Kinesis: shards of the stream created for the run (provisioned mode, 1–500).
    #[arg(long, default_value_t = 1)]
    pub shards: u32,

    /// Tokio worker threads of the load generator (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// The scenarios the load generator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// N producers publish into one queue; nobody consumes. Measures ingest.
    Produce,
    /// N producers → one queue → M consumers, with a bound on messages in flight.
    E2e,
    /// 1 (or N) producers → fan-out exchange/topic → one queue per consumer.
    Fanout,
    /// Fixed-rate publishing; latency percentiles from the *intended* send time.
    Latency,
    /// Open N idle connections and report what they cost the broker in RSS.
    IdleConns,
}

/// Which AMQP client library drives producers and consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AmqpClient {
    /// loadgen's own minimal client (hand-encoded frames, coalesced writes).
    Raw,
    /// lapin 4.
    Lapin,
}

/// Wire protocols. Each maps to a backend in `crate::backend`; the ones not yet built fail with
/// a clear message, so scripts can already name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// AMQP 0-9-1 (lapin).
    Amqp,
    /// MQTT 3.1.1 over TCP.
    Mqtt,
    /// MQTT 5 over TCP.
    Mqtt5,
    /// STOMP 1.2 over TCP.
    Stomp,
    /// STOMP over WebSocket.
    WsStomp,
    /// MQTT 3.1.1 over WebSocket.
    WsMqtt,
    /// Switchyard's JSON WebSocket API.
    WsJson,
    /// Amazon SQS JSON protocol.
    Sqs,
    /// Amazon Kinesis JSON protocol.
    Kinesis,
}

impl Protocol {
    /// The URL used when `--url` is not given.
    pub fn default_url(self) -> &'static str {
        match self {
            Protocol::Amqp => "amqp://guest:guest@127.0.0.1:5672/%2f",
            Protocol::Mqtt | Protocol::Mqtt5 => "mqtt://127.0.0.1:1883",
            Protocol::Stomp => "stomp://guest:guest@127.0.0.1:61613",
            Protocol::WsStomp => "ws://127.0.0.1:15674/ws",
            Protocol::WsMqtt => "ws://127.0.0.1:15675/ws",
            Protocol::WsJson => "ws://127.0.0.1:15672/ws",
            Protocol::Sqs | Protocol::Kinesis => "http://127.0.0.1:4566",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
        f.write_str(&name)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
        f.write_str(&name)
    }
}

/// Converts a seconds flag into a [`Duration`], rejecting negative or non-finite values.
pub fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| anyhow::anyhow!("--{flag} must be a finite number ≥ 0, got {value}"))
}
