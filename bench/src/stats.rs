//! Shared run state: the clock every timestamp is taken from, the payload stamp, the counters
//! producers and consumers bump, and the latency histograms they fill.
//!
//! Every message carries, in its first 8 bytes, the nanoseconds since [`epoch`] at which it was
//! *meant* to be sent (big-endian). For unpaced runs that is the moment the producer handed it to
//! the client library; for paced runs it is the slot on the schedule, even if the producer was
//! late, so a stalled broker or client cannot hide latency (coordinated omission).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use parking::Mutex;

/// Minimal mutex wrapper so the rest of the crate does not deal with lock poisoning.
mod parking {
    /// A `std::sync::Mutex` that recovers from poisoning (a panicked holder cannot corrupt a
    /// histogram in a way that matters for a benchmark report).
    #[derive(Debug, Default)]
    pub struct Mutex<T>(std::sync::Mutex<T>);

    impl<T> Mutex<T> {
        /// Wraps `value`.
        pub fn new(value: T) -> Self {
            Self(std::sync::Mutex::new(value))
        }

        /// Locks, ignoring poisoning.
        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}

/// Size of the timestamp at the start of every payload.
pub const STAMP_LEN: usize = 8;

/// The process-wide time origin of every stamp.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Writes `stamp_ns` into the first [`STAMP_LEN`] bytes of `payload` (which must be that long).
pub fn stamp(payload: &mut [u8], stamp_ns: u64) {
    if let Some(head) = payload.get_mut(..STAMP_LEN) {
        head.copy_from_slice(&stamp_ns.to_be_bytes());
    }
}

/// Reads the stamp written by [`stamp`], if the payload is long enough.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    let head: [u8; STAMP_LEN] = payload.get(..STAMP_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

/// What a consumer hands back for one delivery.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// The send stamp found in the payload, if any.
    pub stamp_ns: Option<u64>,
    /// Payload length in bytes.
    pub len: usize,
}

impl Received {
    /// Describes a delivered payload.
    pub fn of(payload: &[u8]) -> Self {
        Self { stamp_ns: read_stamp(payload), len: payload.len() }
    }
}

/// A latency histogram in nanoseconds, 1 µs to 10 minutes at 3 significant digits.
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1_000, 600_000_000_000, 3).map_err(|e| anyhow::anyhow!("creating histogram: {e}"))
}

/// Counters shared by all producers and consumers of one run.
///
/// `repr(C)` with padding: the producers' counters and the consumers' live in separate
/// cache lines. Sharing one line made every publish and every delivery pull it from the
/// other core (false sharing), a cost the brokers' measurements paid for.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Counters {
    /// Start of the measured window (after warm-up), ns since [`epoch`].
    pub window_start_ns: u64,
    _pad_a: [u64; 7],
    /// Messages handed to the client library, all of them.
    pub sent_total: AtomicU64,
    /// Messages sent inside the measured window.
    pub sent: AtomicU64,
    /// Payload bytes sent inside the measured window.
    pub sent_bytes: AtomicU64,
    /// Publisher confirms (or QoS acks) received, positive.
    pub confirmed: AtomicU64,
    /// Negative confirms (`basic.nack`) and other per-message failures.
    pub nacked: AtomicU64,
    _pad_b: [u64; 3],
    /// Deliveries, all of them.
    pub received_total: AtomicU64,
    /// Deliveries of messages sent inside the measured window.
    pub received: AtomicU64,
    /// Payload bytes of those deliveries.
    pub received_bytes: AtomicU64,
    /// Time of the last counted delivery, ns since [`epoch`].
    pub last_receive_ns: AtomicU64,
    _pad_c: [u64; 4],
    /// Connection-level errors (each ends the producer or consumer that hit it).
    pub errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    latency: Mutex<Histogram<u64>>,
    pacing_lag: Mutex<Histogram<u64>>,
}

impl Counters {
    /// Fresh counters whose measured window opens at `window_start_ns`.
    pub fn new(window_start_ns: u64) -> anyhow::Result<Self> {
        Ok(Self {
            window_start_ns,
            _pad_a: [0; 7],
            sent_total: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            _pad_b: [0; 3],
            received_total: AtomicU64::new(0),
            received: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            last_receive_ns: AtomicU64::new(0),
            _pad_c: [0; 4],
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            latency: Mutex::new(new_histogram()?),
            pacing_lag: Mutex::new(new_histogram()?),
        })
    }

    /// Counts one message handed to the client, stamped `stamp_ns`.
    pub fn on_sent(&self, stamp_ns: u64, len: usize) {
        self.sent_total.fetch_add(1, Ordering::Relaxed);
        if stamp_ns >= self.window_start_ns {
            self.sent.fetch_add(1, Ordering::Relaxed);
            self.sent_bytes.fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    /// Records an error; the first one is kept verbatim for the report.
    pub fn on_error(&self, what: &str, err: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock();
        if first.is_none() {
            *first = Some(format!("{what}: {err}"));
        }
    }

    /// The first error recorded, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().clone()
    }

    /// Merges a consumer's local latency histogram and counts into the shared ones.
    pub fn merge_latency(&self, local: &Histogram<u64>) {
        let mut shared = self.latency.lock();
        // Both histograms share bounds, so `add` cannot fail; a failure would only drop samples.
        let _ = shared.add(local);
    }

    /// Merges a paced producer's lateness histogram (actual − intended send time).
    pub fn merge_pacing_lag(&self, local: &Histogram<u64>) {
        let _ = self.pacing_lag.lock().add(local);
    }

    /// A copy of the merged latency histogram.
    pub fn latency(&self) -> Histogram<u64> {
        self.latency.lock().clone()
    }

    /// A copy of the merged pacing-lag histogram.
    pub fn pacing_lag(&self) -> Histogram<u64> {
        self.pacing_lag.lock().clone()
    }
}

/// Per-consumer bookkeeping: counts go to the shared [`Counters`] at once (the progress bar reads
/// them), latency samples go to a local histogram merged at the end.
#[derive(Debug)]
pub struct ConsumerTally {
    histogram: Histogram<u64>,
}

impl ConsumerTally {
    /// An empty tally.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self { histogram: new_histogram()? })
    }

    /// Accounts for one delivery received at `now_ns`.
    pub fn record(&mut self, counters: &Counters, msg: Received, now_ns: u64) {
        counters.received_total.fetch_add(1, Ordering::Relaxed);
        let Some(stamp) = msg.stamp_ns else { return };
        if stamp < counters.window_start_ns {
            return;
        }
        counters.received.fetch_add(1, Ordering::Relaxed);
        counters.received_bytes.fetch_add(msg.len as u64, Ordering::Relaxed);
        counters.last_receive_ns.fetch_max(now_ns, Ordering::Relaxed);
        let _ = self.histogram.record(now_ns.saturating_sub(stamp).max(1_000));
    }

    /// Hands the latency samples to the shared counters.
    pub fn finish(self, counters: &Counters) {
        counters.merge_latency(&self.histogram);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips() {
        let mut payload = vec![0u8; 16];
        stamp(&mut payload, 0x0102_0304_0506_0708);
        assert_eq!(read_stamp(&payload), Some(0x0102_0304_0506_0708));
        assert_eq!(read_stamp(&payload[..4]), None);
    }

    #[test]
    fn warmup_messages_are_not_counted() {
        let counters = Counters::new(1_000_000).unwrap();
        let mut tally = ConsumerTally::new().unwrap();
        counters.on_sent(10, 100);
        counters.on_sent(2_000_000, 100);
        tally.record(&counters, Received { stamp_ns: Some(10), len: 100 }, 3_000_000);
        tally.record(&counters, Received { stamp_ns: Some(2_000_000), len: 100 }, 3_000_000);
        tally.finish(&counters);
        assert_eq!(counters.sent_total.load(Ordering::Relaxed), 2);
        assert_eq!(counters.sent.load(Ordering::Relaxed), 1);
        assert_eq!(counters.received_total.load(Ordering::Relaxed), 2);
        assert_eq!(counters.received.load(Ordering::Relaxed), 1);
        assert_eq!(counters.latency().len(), 1);
    }
}
