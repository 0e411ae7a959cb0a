//! The result of one run: a serde structure printed as one JSON line on stdout (what
//! `scripts/bench-compare` aggregates) and as a short table on stderr (what a person reads).

use std::io::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::{AmqpClient, Protocol, Scenario};

/// Everything one run measured. Field names are the JSON keys; rates are per second of the
/// measured window (after warm-up).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Name of the broker under test (`--label`).
    pub label: String,
    /// Protocol used.
    pub protocol: Protocol,
    /// Scenario run.
    pub scenario: Scenario,
    /// AMQP client used (`raw` or `lapin`); absent for other protocols.
    pub client: Option<AmqpClient>,
    /// Broker address, credentials removed.
    pub url: String,
    /// The knobs of this run.
    pub params: Params,
    /// Seconds producers published inside the measured window.
    pub elapsed_s: f64,
    /// Messages sent inside the window.
    pub sent: u64,
    /// Deliveries received of messages sent inside the window (fan-out counts each copy).
    pub received: u64,
    /// Positive publisher confirms, whole run.
    pub confirmed: u64,
    /// Negative confirms, whole run.
    pub nacked: u64,
    /// Deliveries expected (whole run, sent × copies) but not received before the drain timeout.
    pub missing: u64,
    /// Connection-level errors.
    pub errors: u64,
    /// The first error, verbatim.
    pub first_error: Option<String>,
    /// Messages/s sent.
    pub send_rate: f64,
    /// Deliveries/s received.
    pub recv_rate: f64,
    /// Payload MB/s (10^6 bytes) sent.
    pub send_mb_s: f64,
    /// Payload MB/s received.
    pub recv_mb_s: f64,
    /// End-to-end latency from intended send time to receipt, µs.
    pub latency_us: Option<Percentiles>,
    /// Paced runs: how late the producer actually sent versus its schedule, µs.
    pub pacing_lag_us: Option<Percentiles>,
    /// Broker process figures (`--broker-pid`).
    pub broker: Option<BrokerUsage>,
    /// CPU used by the load generator itself, % of one core.
    pub loadgen_cpu_pct: Option<f64>,
    /// `idle-conns` results.
    pub idle: Option<IdleReport>,
}

/// Parameters echoed into the report.
#[derive(Debug, Serialize, Clone)]
pub struct Params {
    /// Producer connections.
    pub producers: usize,
    /// Consumer connections (fan-out degree for `fanout`).
    pub consumers: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Publishing duration in seconds (when no count).
    pub duration_s: Option<f64>,
    /// Total messages (when no duration).
    pub count: Option<u64>,
    /// Warm-up seconds excluded from figures.
    pub warmup_s: f64,
    /// Target rate, msgs/s (0 = unpaced).
    pub rate: u64,
    /// Persistent messages.
    pub persistent: bool,
    /// Durable queues.
    pub durable: bool,
    /// Confirm window (0 = off).
    pub confirm: usize,
    /// Manual acks.
    pub manual_ack: bool,
    /// Ack every N.
    pub ack_every: u32,
    /// Prefetch.
    pub prefetch: u16,
    /// In-flight bound.
    pub max_inflight: u64,
    /// MQTT QoS.
    pub qos: u8,
    /// Idle connections requested.
    pub connections: Option<usize>,
}

/// Latency summary in microseconds.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    /// Summarises a nanosecond histogram; `None` if it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Some(Self {
            count: h.len(),
            mean: h.mean() / 1_000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        })
    }
}

/// Broker process figures.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct BrokerUsage {
    /// The PID sampled.
    pub pid: u32,
    /// VmRSS before the run, KiB.
    pub rss_kib_before: Option<u64>,
    /// VmRSS after the run (after teardown), KiB.
    pub rss_kib_after: Option<u64>,
    /// CPU during the run, % of one core.
    pub cpu_pct: Option<f64>,
}

/// `idle-conns` results.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct IdleReport {
    /// Connections that completed the handshake.
    pub opened: usize,
    /// Connections that failed.
    pub failed: usize,
    /// Seconds it took to open them all.
    pub open_s: f64,
    /// Broker VmRSS before opening, KiB.
    pub rss_kib_before: Option<u64>,
    /// Broker VmRSS with all connections open, KiB.
    pub rss_kib_open: Option<u64>,
    /// Broker VmRSS after closing them, KiB.
    pub rss_kib_closed: Option<u64>,
    /// (open − before) / opened, bytes.
    pub bytes_per_conn: Option<f64>,
}

impl Report {
    /// Prints the JSON line on stdout.
    pub fn print_json(&self) -> anyhow::Result<()> {
        let line = serde_json::to_string(self)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    }

    /// Prints the human-readable table on stderr.
    pub fn print_table(&self) {
        let mut t = String::new();
        let p = &self.params;
        t.push_str(&format!(
            "── loadgen {} · {}{} · {} · {}P/{}C · {} B{}{}{}{}\n",
            self.scenario,
            self.protocol,
            self.client.map_or_else(String::new, |c| format!(" ({c:?})").to_lowercase()),
            self.label,
            p.producers,
            p.consumers,
            p.size,
            if p.persistent { " · persistent" } else { "" },
            if p.confirm > 0 { format!(" · confirm {}", p.confirm) } else { String::new() },
            if p.manual_ack { format!(" · manual ack (prefetch {})", p.prefetch) } else { String::new() },
            if p.rate > 0 { format!(" · {} msg/s", p.rate) } else { String::new() },
        ));
        if let Some(idle) = &self.idle {
            t.push_str(&format!(
                "  connections  {:>12} opened, {} failed in {:.2}s\n",
                idle.opened, idle.failed, idle.open_s
            ));
            t.push_str(&format!(
                "  broker RSS   {:>12} → {} → {} KiB (before → open → closed)\n",
                fmt_opt(idle.rss_kib_before),
                fmt_opt(idle.rss_kib_open),
                fmt_opt(idle.rss_kib_closed)
            ));
            if let Some(b) = idle.bytes_per_conn {
                t.push_str(&format!("  per conn     {:>12.0} bytes\n", b));
            }
        } else {
            t.push_str(&format!(
                "  sent         {:>12} msgs  {:>12.0} msg/s  {:>8.2} MB/s\n",
                self.sent, self.send_rate, self.send_mb_s
            ));
            t.push_str(&format!(
                "  received     {:>12} msgs  {:>12.0} msg/s  {:>8.2} MB/s\n",
                self.received, self.recv_rate, self.recv_mb_s
            ));
            if self.confirmed + self.nacked > 0 {
                t.push_str(&format!("  confirms     {:>12} ack   {:>12} nack\n", self.confirmed, self.nacked));
            }
            if let Some(l) = &self.latency_us {
                t.push_str(&format!(
                    "  latency µs   p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  (n={})\n",
                    l.p50, l.p90, l.p99, l.p999, l.max, l.count
                ));
            }
            if let Some(l) = &self.pacing_lag_us {
                t.push_str(&format!("  pacing lag µs p50 {:.0}  p99 {:.0}  max {:.0}\n", l.p50, l.p99, l.max));
            }
        }
        if let Some(b) = &self.broker {
            t.push_str(&format!(
                "  broker pid {}  RSS {} → {} KiB  CPU {}%\n",
                b.pid,
                fmt_opt(b.rss_kib_before),
                fmt_opt(b.rss_kib_after),
                b.cpu_pct.map_or_else(|| "?".into(), |c| format!("{c:.0}"))
            ));
        }
        if let Some(c) = self.loadgen_cpu_pct {
            t.push_str(&format!("  loadgen CPU  {c:.0}%\n"));
        }
        if self.missing > 0 || self.errors > 0 {
            t.push_str(&format!(
                "  missing {}  errors {}  {}\n",
                self.missing,
                self.errors,
                self.first_error.as_deref().unwrap_or("")
            ));
        }
        eprint!("{t}");
    }
}

fn fmt_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}
