//! The scenarios, written once against [`Backend`].
//!
//! `produce`, `e2e`, `fanout` and `latency` are one flow with different shapes (see [`Plan`]):
//! declare the topology, start the consumers, run the producers (unpaced on tokio tasks, or paced
//! on dedicated threads whose `nanosleep` is far finer than tokio's 1 ms timer), let the consumers
//! drain what is in flight, tear down. `idle-conns` opens connections and watches the broker's RSS.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::backend::{Backend, ConsumeSettings, Consumer, Layout, Producer, PublishSettings, Topology};
use crate::procfs;
use crate::report::{IdleReport, Percentiles};
use crate::stats::{self, ConsumerTally, Counters, STAMP_LEN};

/// How long the end of a run may wait on one stuck connection before giving up on it.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Paced producers stop sleeping this close to a message's due time and yield instead.
const SPIN_NS: u64 = 120_000;

/// One flow run, fully resolved from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Queues/exchanges to use.
    pub topology: Topology,
    /// Producer connections.
    pub producers: usize,
    /// Consumer connections (0 for `produce`).
    pub consumers: usize,
    /// Payload size (≥ [`STAMP_LEN`]).
    pub size: usize,
    /// Publishing time (ignored when `count` is set).
    pub duration: Duration,
    /// Total messages instead of a duration.
    pub count: Option<u64>,
    /// Warm-up excluded from the figures.
    pub warmup: Duration,
    /// Total publish rate (0 = unpaced).
    pub rate: u64,
    /// Publisher options.
    pub publish: PublishSettings,
    /// Consumer options.
    pub consume: ConsumeSettings,
    /// In-flight bound (0 = unbounded; ignored without consumers).
    pub max_inflight: u64,
    /// Time allowed for consumers to drain after producers stop.
    pub drain_timeout: Duration,
    /// Draw a progress bar.
    pub progress: bool,
}

/// What a flow run measured (the report adds the parameters).
#[derive(Debug)]
pub struct FlowOutcome {
    /// Length of the measured publishing window, seconds.
    pub elapsed_s: f64,
    /// Length of the measured receiving window, seconds.
    pub recv_elapsed_s: f64,
    /// Shared counters, final.
    pub counters: Arc<Counters>,
    /// Deliveries still missing after the drain.
    pub missing: u64,
}

/// Runs one `produce` / `e2e` / `fanout` / `latency` flow.
pub async fn run_flow<B: Backend>(backend: Arc<B>, plan: &Plan) -> anyhow::Result<FlowOutcome> {
    backend.declare(&plan.topology).await?;
    let outcome = flow_body(&backend, plan).await;
    let teardown = backend.teardown(&plan.topology).await;
    let outcome = outcome?;
    teardown.context("tearing down the benchmark queues")?;
    Ok(outcome)
}

async fn flow_body<B: Backend>(backend: &Arc<B>, plan: &Plan) -> anyhow::Result<FlowOutcome> {
    let copies = plan.topology.layout.copies();
    let bounded = plan.consumers > 0 && plan.max_inflight > 0;
    let window = usize::try_from(plan.max_inflight).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
    let inflight = bounded.then(|| Window::new(plan.topology.layout, plan.consumers, window));

    // Consumers first, so nothing published is missed.
    let mut consumers = Vec::with_capacity(plan.consumers);
    for i in 0..plan.consumers {
        consumers.push(backend.consumer(&plan.topology, i, plan.consume).await?);
    }
    let mut producers = Vec::with_capacity(plan.producers);
    for _ in 0..plan.producers {
        producers.push(backend.producer(&plan.topology, plan.publish).await?);
    }

    let start_ns = stats::now_ns();
    let warmup_ns = u64::try_from(plan.warmup.as_nanos()).unwrap_or(u64::MAX);
    let counters = Arc::new(Counters::new(start_ns + warmup_ns)?);
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut consumer_tasks = JoinSet::new();
    for (i, consumer) in consumers.into_iter().enumerate() {
        let room = inflight.as_ref().map(|w| w.consumer_room(i));
        consumer_tasks.spawn(consume_loop(consumer, Arc::clone(&counters), room, stop_rx.clone()));
    }

    let bar = progress_bar(plan);
    let ticker =
        tokio::spawn(tick_progress(bar.clone(), Arc::clone(&counters), plan.count, plan.duration, plan.warmup));

    let end_ns = start_ns + warmup_ns + u64::try_from(plan.duration.as_nanos()).unwrap_or(u64::MAX);
    let per_producer_count = plan.count.map(|c| c.div_ceil(plan.producers.max(1) as u64));
    let mut producer_tasks = JoinSet::new();
    let mut producer_threads = Vec::new();
    for (i, producer) in producers.into_iter().enumerate() {
        let job = ProducerJob {
            counters: Arc::clone(&counters),
            inflight: inflight.clone(),
            size: plan.size,
            start_ns,
            end_ns: if plan.count.is_some() { u64::MAX } else { end_ns },
            count: per_producer_count.map(|c| {
                // The last producer takes the remainder so the total is exact.
                let total = plan.count.unwrap_or(0);
                if i + 1 == plan.producers { total.saturating_sub(c * (plan.producers as u64 - 1)) } else { c }
            }),
        };
        if plan.rate > 0 {
            let interval_ns = (1e9 * plan.producers as f64 / plan.rate as f64).max(1.0);
            let handle = tokio::runtime::Handle::current();
            producer_threads.push(
                std::thread::Builder::new()
                    .name(format!("paced-producer-{i}"))
                    .spawn(move || handle.block_on(job.run_paced(producer, interval_ns)))
                    .context("spawning a paced producer thread")?,
            );
        } else {
            producer_tasks.spawn(job.run_unpaced(producer));
        }
    }
    while let Some(joined) = producer_tasks.join_next().await {
        joined.context("producer task panicked")?;
    }
    for thread in producer_threads {
        // `join` blocks, but only once every paced producer has reached its end time.
        let joined = tokio::task::spawn_blocking(move || thread.join()).await.context("joining a paced producer")?;
        joined.map_err(|_| anyhow::anyhow!("paced producer thread panicked"))?;
    }
    let producers_done_ns = stats::now_ns();

    // Drain: wait for every expected delivery, or the timeout.
    let expected = counters.sent_total.load(Ordering::Relaxed) * copies;
    if plan.consumers > 0 {
        let deadline = Instant::now() + plan.drain_timeout;
        while counters.received_total.load(Ordering::Relaxed) < expected
            && Instant::now() < deadline
            && counters.errors.load(Ordering::Relaxed) == 0
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let _ = stop_tx.send(true);
    while let Some(joined) = consumer_tasks.join_next().await {
        joined.context("consumer task panicked")?;
    }
    ticker.abort();
    bar.finish_and_clear();

    let received_total = counters.received_total.load(Ordering::Relaxed);
    let window_start = counters.window_start_ns;
    let publish_end = if plan.count.is_some() { producers_done_ns } else { end_ns.min(producers_done_ns) };
    let elapsed_s = publish_end.saturating_sub(window_start) as f64 / 1e9;
    let last_rx = counters.last_receive_ns.load(Ordering::Relaxed);
    let recv_elapsed_s = last_rx.saturating_sub(window_start) as f64 / 1e9;
    Ok(FlowOutcome {
        elapsed_s,
        recv_elapsed_s,
        missing: if plan.consumers > 0 { expected.saturating_sub(received_total) } else { 0 },
        counters,
    })
}

/// The bound on messages published but not yet consumed.
#[derive(Debug, Clone)]
enum Window {
    /// One count for every delivery of the run (consumers share one queue, or a fan-out
    /// whose consumers do not map one to one onto the copies).
    Shared { room: Arc<Semaphore>, copies: u32, batch: usize },
    /// A fan-out: one count per subscriber, so none can fall more than the window behind
    /// (a shared count let one slow subscriber lag by the whole of the others' room, past
    /// what a broker keeps for an at-most-once subscriber).
    PerConsumer { rooms: Vec<Arc<Semaphore>>, batch: usize },
}

impl Window {
    /// `window` messages for `consumers` consumers. Consumers give room back in batches (one
    /// semaphore lock per batch, not per delivery) of at most an eighth of their share of
    /// the window, so what they hold back can never fill it on its own.
    fn new(layout: Layout, consumers: usize, window: usize) -> Window {
        let copies = layout.copies();
        if copies > 1 && copies == consumers as u64 {
            let rooms = (0..consumers).map(|_| Arc::new(Semaphore::new(window))).collect();
            return Window::PerConsumer { rooms, batch: (window / 8).clamp(1, 64) };
        }
        let copies = usize::try_from(copies).unwrap_or(usize::MAX);
        let permits = window.saturating_mul(copies).min(Semaphore::MAX_PERMITS);
        Window::Shared {
            room: Arc::new(Semaphore::new(permits)),
            copies: u32::try_from(copies).unwrap_or(u32::MAX),
            batch: (permits / (8 * consumers.max(1))).clamp(1, 64),
        }
    }

    /// The semaphore consumer `i` gives room back to, and how many permits at a time.
    fn consumer_room(&self, i: usize) -> (Arc<Semaphore>, usize) {
        match self {
            Window::Shared { room, batch, .. } => (Arc::clone(room), *batch),
            Window::PerConsumer { rooms, batch } => (Arc::clone(&rooms[i % rooms.len()]), *batch),
        }
    }
}

/// Everything one producer needs besides its connection.
struct ProducerJob {
    counters: Arc<Counters>,
    inflight: Option<Window>,
    size: usize,
    start_ns: u64,
    end_ns: u64,
    count: Option<u64>,
}

impl ProducerJob {
    /// Waits for room in the in-flight window. `false` = the window stayed full too long.
    async fn reserve(&self) -> bool {
        match &self.inflight {
            None => true,
            Some(Window::Shared { room, copies, .. }) => self.take_room(room, *copies).await,
            Some(Window::PerConsumer { rooms, .. }) => {
                for room in rooms {
                    if !self.take_room(room, 1).await {
                        return false;
                    }
                }
                true
            }
        }
    }

    /// Takes `n` permits of `room`, waiting at most [`STALL_TIMEOUT`].
    async fn take_room(&self, room: &Semaphore, n: u32) -> bool {
        // Room at once is the usual case: no timer, no clock read.
        if let Ok(permit) = room.try_acquire_many(n) {
            permit.forget();
            return true;
        }
        match tokio::time::timeout(STALL_TIMEOUT, room.acquire_many(n)).await {
            Ok(Ok(permit)) => {
                permit.forget();
                true
            }
            Ok(Err(_)) => false,
            Err(_) => {
                self.counters.on_error("producer", &"in-flight window stayed full for 30s (messages lost?)");
                false
            }
        }
    }

    fn done(&self, sent: u64, now_ns: u64) -> bool {
        match self.count {
            Some(limit) => sent >= limit,
            None => now_ns >= self.end_ns,
        }
    }

    async fn run_unpaced<P: Producer>(self, mut producer: P) {
        let mut payload = vec![0u8; self.size.max(STAMP_LEN)];
        let mut sent = 0u64;
        // One clock read per message: the stamp, which the next round's end check reuses.
        let mut now = stats::now_ns();
        loop {
            if self.done(sent, now) || !self.reserve().await {
                break;
            }
            let stamp = stats::now_ns();
            now = stamp;
            stats::stamp(&mut payload, stamp);
            if let Err(err) = producer.send(&payload, &self.counters).await {
                self.counters.on_error("producer", &format!("{err:#}"));
                break;
            }
            self.counters.on_sent(stamp, payload.len());
            sent += 1;
        }
        self.finish(producer).await;
    }

    /// Paced loop, run with `block_on` on its own thread: message `i` is due at
    /// `start + i × interval` and is stamped with that time whatever happens.
    async fn run_paced<P: Producer>(self, mut producer: P, interval_ns: f64) {
        let mut payload = vec![0u8; self.size.max(STAMP_LEN)];
        let mut lag = stats::new_histogram().ok();
        let mut sent = 0u64;
        loop {
            let due = self.start_ns + (sent as f64 * interval_ns) as u64;
            if self.done(sent, due) {
                break;
            }
            pace_until(due);
            if !self.reserve().await {
                break;
            }
            if let Some(h) = lag.as_mut()
                && due >= self.counters.window_start_ns
            {
                let _ = h.record(stats::now_ns().saturating_sub(due).max(1_000));
            }
            stats::stamp(&mut payload, due);
            if let Err(err) = producer.send(&payload, &self.counters).await {
                self.counters.on_error("producer", &format!("{err:#}"));
                break;
            }
            self.counters.on_sent(due, payload.len());
            sent += 1;
        }
        if let Some(h) = lag {
            self.counters.merge_pacing_lag(&h);
        }
        self.finish(producer).await;
    }

    async fn finish<P: Producer>(&self, mut producer: P) {
        match tokio::time::timeout(STALL_TIMEOUT, producer.flush(&self.counters)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => self.counters.on_error("producer flush", &format!("{err:#}")),
            Err(_) => self.counters.on_error("producer flush", &"confirms still outstanding after 30s"),
        }
        if let Err(err) = producer.close().await {
            self.counters.on_error("producer close", &format!("{err:#}"));
        }
    }
}

/// Blocks the (dedicated) thread until `due`: `nanosleep` to within [`SPIN_NS`] of it, then
/// yields in a loop. Plain `nanosleep` overshoots by 60–90 µs on a stock kernel, which would
/// add that much to every latency sample.
fn pace_until(due: u64) {
    loop {
        let now = stats::now_ns();
        if now >= due {
            return;
        }
        if due - now > SPIN_NS {
            std::thread::sleep(Duration::from_nanos(due - now - SPIN_NS));
        } else {
            std::thread::yield_now();
        }
    }
}

/// Receives until `stop`; `inflight` is the window semaphore and how many permits to give
/// back at a time.
async fn consume_loop<C: Consumer>(
    mut consumer: C,
    counters: Arc<Counters>,
    inflight: Option<(Arc<Semaphore>, usize)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tally = match ConsumerTally::new() {
        Ok(t) => t,
        Err(err) => {
            counters.on_error("consumer", &err);
            return;
        }
    };
    let mut owed = 0usize;
    loop {
        // A delivery that is already there is taken without polling `stop` (which would
        // register and drop a waiter per message); `stop` is still checked after each one.
        tokio::select! {
            biased;
            got = consumer.recv() => match got {
                Ok(Some(msg)) => {
                    tally.record(&counters, msg, stats::now_ns());
                    if let Some((sem, batch)) = &inflight {
                        owed += 1;
                        if owed >= *batch {
                            sem.add_permits(owed);
                            owed = 0;
                        }
                    }
                    if !matches!(stop.has_changed(), Ok(false)) {
                        break;
                    }
                }
                Ok(None) => {
                    counters.on_error("consumer", &"cancelled by the broker");
                    break;
                }
                Err(err) => {
                    counters.on_error("consumer", &format!("{err:#}"));
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    tally.finish(&counters);
    if let Err(err) = consumer.close().await {
        counters.on_error("consumer close", &format!("{err:#}"));
    }
}

fn progress_bar(plan: &Plan) -> ProgressBar {
    let long = plan.count.is_some_and(|c| c >= 100_000) || plan.duration + plan.warmup >= Duration::from_secs(3);
    if !plan.progress || !long {
        return ProgressBar::hidden();
    }
    let (len, template) = match plan.count {
        Some(count) => (count, "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}"),
        None => (
            u64::try_from((plan.duration + plan.warmup).as_millis()).unwrap_or(u64::MAX),
            "{spinner} [{elapsed_precise}] {wide_bar} {msg}",
        ),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

async fn tick_progress(
    bar: ProgressBar,
    counters: Arc<Counters>,
    count: Option<u64>,
    duration: Duration,
    warmup: Duration,
) {
    if bar.is_hidden() {
        return;
    }
    let started = Instant::now();
    let total = duration + warmup;
    let mut last = (0u64, 0u64, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let sent = counters.sent_total.load(Ordering::Relaxed);
        let recv = counters.received_total.load(Ordering::Relaxed);
        let dt = last.2.elapsed().as_secs_f64().max(1e-3);
        let (srate, rrate) = ((sent - last.0) as f64 / dt, (recv.saturating_sub(last.1)) as f64 / dt);
        last = (sent, recv, Instant::now());
        match count {
            Some(_) => bar.set_position(sent),
            None => bar.set_position(u64::try_from(started.elapsed().min(total).as_millis()).unwrap_or(0)),
        }
        bar.set_message(format!("sent {sent} ({srate:.0}/s) recv {recv} ({rrate:.0}/s)"));
    }
}

/// Opens `connections` idle connections (64 handshakes at a time), holds them for `hold`,
/// and samples the broker's RSS before, while open and after closing.
pub async fn run_idle<B: Backend>(
    backend: Arc<B>,
    connections: usize,
    hold: Duration,
    broker_pid: Option<u32>,
    progress: bool,
) -> anyhow::Result<(IdleReport, Option<String>)> {
    let rss = || broker_pid.and_then(procfs::rss_kib);
    let rss_before = rss();
    let bar = if progress && connections >= 500 {
        let bar = ProgressBar::with_draw_target(Some(connections as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} opening {pos}/{len} {wide_bar}") {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut held = Vec::with_capacity(connections);
    let mut failed = 0usize;
    let mut first_error = None;
    let mut tasks = JoinSet::new();
    let mut launched = 0usize;
    while launched < connections || !tasks.is_empty() {
        while launched < connections && tasks.len() < 64 {
            let backend = Arc::clone(&backend);
            tasks.spawn(async move { backend.idle_connection().await });
            launched += 1;
        }
        if let Some(joined) = tasks.join_next().await {
            match joined.context("idle connection task panicked")? {
                Ok(conn) => held.push(conn),
                Err(err) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("{err:#}"));
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let open_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(hold).await;
    let rss_open = rss();
    let opened = held.len();
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_closed = rss();
    let bytes_per_conn = match (rss_before, rss_open) {
        (Some(before), Some(open)) if opened > 0 => Some((open as f64 - before as f64) * 1024.0 / opened as f64),
        _ => None,
    };
    Ok((
        IdleReport {
            opened,
            failed,
            open_s,
            rss_kib_before: rss_before,
            rss_kib_open: rss_open,
            rss_kib_closed: rss_closed,
            bytes_per_conn,
        },
        first_error,
    ))
}

/// Latency percentiles of a histogram in µs (re-exported for the caller's report).
pub fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Option<Percentiles> {
    Percentiles::of(h)
}

/// The layout each scenario uses.
pub fn layout_for(scenario: crate::cli::Scenario, consumers: usize) -> Layout {
    match scenario {
        crate::cli::Scenario::Fanout => Layout::Fanout(consumers.max(1)),
        _ => Layout::Shared,
    }
}
