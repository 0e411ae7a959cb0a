//! `loadgen`: Switchyard's load generator.
//!
//! One invocation runs one scenario against one broker and prints one JSON line on stdout (the
//! machine-readable record `scripts/bench-compare` aggregates) plus a table on stderr. Modules:
//! [`cli`] (flags), [`backend`] (one module per protocol behind a common trait), [`scenario`]
//! (the scenarios, written once against that trait), [`stats`] (clock, payload stamps, counters,
//! histograms), [`procfs`] (broker RSS/CPU from `/proc`), [`report`] (JSON and table output).
//!
//! See `docs/benchmarks.md` for how to use it and how the figures are defined.

mod backend;
mod cli;
mod procfs;
mod report;
mod scenario;
mod stats;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use crate::backend::mqtt::MqttBackend;
use crate::backend::mqtt_wire::Version;
use crate::backend::{Backend, ConsumeSettings, PublishSettings, Topology};
use crate::cli::{AmqpClient, Cli, Protocol, Scenario, seconds};
use crate::procfs::CpuMeter;
use crate::report::{BrokerUsage, Params, Report};
use crate::scenario::Plan;
use crate::stats::STAMP_LEN;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Start the clock before anything else so stamps are small and monotonic.
    let _ = stats::epoch();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loadgen: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("loadgen");
    if cli.threads > 0 {
        builder.worker_threads(cli.threads);
    }
    let runtime = builder.build().context("starting the tokio runtime")?;
    let report = runtime.block_on(run_with_protocol(&cli))?;
    // lapin's I/O threads may linger a moment after their connections close; do not wait.
    runtime.shutdown_timeout(Duration::from_millis(200));
    report.print_json()?;
    if !cli.quiet {
        report.print_table();
    }
    Ok(())
}

/// Picks the backend for `--protocol`. New protocols plug in here.
async fn run_with_protocol(cli: &Cli) -> anyhow::Result<Report> {
    let url = cli.url.clone().unwrap_or_else(|| cli.protocol.default_url().to_owned());
    match cli.protocol {
        Protocol::Amqp => match cli.client {
            AmqpClient::Raw => run_scenario(Arc::new(backend::amqp_raw::RawAmqpBackend::new(&url)?), cli, &url).await,
            AmqpClient::Lapin => run_scenario(Arc::new(backend::amqp::AmqpBackend::new(&url)?), cli, &url).await,
        },
        Protocol::Mqtt | Protocol::Mqtt5 => {
            let version = if cli.protocol == Protocol::Mqtt5 { Version::V5 } else { Version::V311 };
            run_scenario(Arc::new(MqttBackend::new(&url, version, cli.keepalive)?), cli, &url).await
        }
        Protocol::Stomp => run_scenario(Arc::new(backend::stomp::StompBackend::new(&url)?), cli, &url).await,
        Protocol::Sqs => run_scenario(Arc::new(backend::sqs::SqsBackend::new(&url)?), cli, &url).await,
        Protocol::WsMqtt => run_scenario(Arc::new(MqttBackend::new_ws(&url, cli.keepalive)?), cli, &url).await,
        Protocol::WsStomp => run_scenario(Arc::new(backend::stomp::StompBackend::new_ws(&url)?), cli, &url).await,
        Protocol::Kinesis => {
            let backend = backend::kinesis::KinesisBackend::new(&url, cli.batch, cli.shards, cli.consumers)?;
            run_scenario(Arc::new(backend), cli, &url).await
        }
        other => bail!(
            "protocol {other} is not implemented in loadgen yet; the scenarios and reports are \
             protocol-independent, only a backend module is missing (see docs/benchmarks.md)"
        ),
    }
}

async fn run_scenario<B: Backend>(backend: Arc<B>, cli: &Cli, url: &str) -> anyhow::Result<Report> {
    if cli.size < STAMP_LEN {
        bail!("--size must be at least {STAMP_LEN} bytes (the send timestamp lives there)");
    }
    if cli.producers == 0 && cli.scenario != Scenario::IdleConns {
        bail!("--producers must be at least 1");
    }
    let duration = seconds("duration", cli.duration)?;
    let warmup = seconds("warmup", cli.warmup)?;
    let drain_timeout = seconds("drain-timeout", cli.drain_timeout)?;
    let hold = seconds("hold", cli.hold)?;
    let progress = !cli.no_progress;

    let mut report = Report {
        label: cli.label.clone(),
        protocol: cli.protocol,
        scenario: cli.scenario,
        client: (cli.protocol == Protocol::Amqp).then_some(cli.client),
        url: redact(url),
        params: Params {
            producers: cli.producers,
            consumers: if cli.scenario == Scenario::Produce { 0 } else { cli.consumers },
            size: cli.size,
            duration_s: cli.count.is_none().then_some(cli.duration),
            count: cli.count,
            warmup_s: cli.warmup,
            rate: cli.rate,
            persistent: cli.persistent,
            durable: cli.durable || cli.persistent,
            confirm: cli.confirm,
            manual_ack: cli.manual_ack,
            ack_every: cli.ack_every,
            prefetch: cli.prefetch,
            max_inflight: cli.max_inflight,
            qos: cli.qos,
            connections: (cli.scenario == Scenario::IdleConns).then_some(cli.connections),
        },
        elapsed_s: 0.0,
        sent: 0,
        received: 0,
        confirmed: 0,
        nacked: 0,
        missing: 0,
        errors: 0,
        first_error: None,
        send_rate: 0.0,
        recv_rate: 0.0,
        send_mb_s: 0.0,
        recv_mb_s: 0.0,
        latency_us: None,
        pacing_lag_us: None,
        broker: None,
        loadgen_cpu_pct: None,
        idle: None,
    };

    let broker_rss_before = cli.broker_pid.and_then(procfs::rss_kib);
    let broker_cpu = CpuMeter::start(cli.broker_pid);
    let own_cpu = CpuMeter::start(None);

    if cli.scenario == Scenario::IdleConns {
        let (idle, first_error) = scenario::run_idle(backend, cli.connections, hold, cli.broker_pid, progress).await?;
        report.errors = idle.failed as u64;
        report.first_error = first_error;
        report.idle = Some(idle);
    } else {
        if cli.scenario == Scenario::Fanout && cli.consumers == 0 {
            bail!("fanout needs --consumers ≥ 1 (the fan-out degree)");
        }
        if cli.scenario == Scenario::Latency && cli.rate == 0 {
            report.params.rate = 1000;
        }
        let plan = Plan {
            topology: Topology {
                name: format!("{}-{}-{}-{}", cli.name, cli.scenario, std::process::id(), stats::now_ns() % 1_000_000),
                layout: scenario::layout_for(cli.scenario, cli.consumers),
                durable: cli.durable || cli.persistent,
            },
            producers: cli.producers,
            consumers: report.params.consumers,
            size: cli.size,
            duration,
            count: cli.count,
            warmup,
            rate: report.params.rate,
            publish: PublishSettings { persistent: cli.persistent, confirm_window: cli.confirm, qos: cli.qos },
            consume: ConsumeSettings {
                manual_ack: cli.manual_ack,
                ack_every: cli.ack_every,
                prefetch: cli.prefetch,
                qos: cli.qos,
            },
            max_inflight: cli.max_inflight,
            drain_timeout,
            progress,
        };
        let outcome = scenario::run_flow(backend, &plan).await?;
        let c = &outcome.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        report.elapsed_s = outcome.elapsed_s;
        report.sent = load(&c.sent);
        report.received = load(&c.received);
        report.confirmed = load(&c.confirmed);
        report.nacked = load(&c.nacked);
        report.errors = load(&c.errors);
        report.first_error = c.first_error();
        report.missing = outcome.missing;
        let per_s = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        report.send_rate = per_s(report.sent, outcome.elapsed_s);
        report.send_mb_s = per_s(load(&c.sent_bytes), outcome.elapsed_s) / 1e6;
        report.recv_rate = per_s(report.received, outcome.recv_elapsed_s);
        report.recv_mb_s = per_s(load(&c.received_bytes), outcome.recv_elapsed_s) / 1e6;
        report.latency_us = scenario::percentiles(&c.latency());
        report.pacing_lag_us = scenario::percentiles(&c.pacing_lag());
    }

    report.loadgen_cpu_pct = own_cpu.percent();
    report.broker = cli.broker_pid.map(|pid| BrokerUsage {
        pid,
        rss_kib_before: broker_rss_before,
        rss_kib_after: procfs::rss_kib(pid),
        cpu_pct: broker_cpu.percent(),
    });
    Ok(report)
}

/// Drops the password from a URL for the report.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact("mqtt://127.0.0.1:1883"), "mqtt://127.0.0.1:1883");
    }
}
