//! Gives the memory that glibc's allocator keeps after a burst back to the system.
//!
//! glibc's `malloc` keeps freed memory in its arenas and returns only the top of each heap on
//! its own. A broker frees in a pattern that defeats that: a queue that pages a backlog out
//! frees each body after writing it, between allocations that live on, and a deleted or drained
//! queue frees millions of small blocks at once. Measured on the benchmark's AMQP publish-only
//! run (5.2 M × 1 KiB, paged): RSS 1.3 GiB after the queue was deleted, 134 MiB after one
//! `malloc_trim(0)`, which walks every arena and `madvise`s its free pages away.
//!
//! [`TrimPolicy`] decides when that is worth doing, from two figures sampled every
//! [`CHECK_EVERY`]: the resident set (grown by [`GROWTH`] since the last trim: there may be
//! freed memory behind it) and the message bytes the [`MemoryMonitor`] has charged (fallen by
//! [`FALL`] from their peak: a queue drained or went away). At most one trim per [`MIN_GAP`]:
//! a trim holds each arena's lock while it walks it, stalling threads that allocate there.
//! The trim runs on a blocking thread, never on a runtime worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::memory::MemoryMonitor;
use tokio_util::sync::CancellationToken;

/// How often the resident set and the charged bytes are sampled.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Resident-set growth since the last trim that makes the next check trim.
pub const GROWTH: u64 = 64 << 20;
/// Fall of the charged message bytes from their peak that makes the next check trim.
pub const FALL: u64 = 32 << 20;
/// The least time between two trims.
pub const MIN_GAP: Duration = Duration::from_secs(10);

/// When to trim, as a state machine fed samples (time since start, resident bytes, charged
/// bytes), so it is tested without a clock or an allocator.
#[derive(Debug)]
pub struct TrimPolicy {
    /// Resident bytes right after the last trim (or at start).
    baseline_rss: u64,
    /// The highest charged bytes seen since the last trim.
    peak_charged: u64,
    /// When the last trim ran.
    last_trim: Option<Duration>,
}

impl TrimPolicy {
    /// A policy whose baseline is the broker at rest.
    pub fn new(rss: u64, charged: u64) -> TrimPolicy {
        TrimPolicy { baseline_rss: rss, peak_charged: charged, last_trim: None }
    }

    /// Takes one sample; true if a trim should run now.
    pub fn sample(&mut self, now: Duration, rss: u64, charged: u64) -> bool {
        self.peak_charged = self.peak_charged.max(charged);
        let grew = rss >= self.baseline_rss.saturating_add(GROWTH);
        let fell = self.peak_charged >= charged.saturating_add(FALL);
        let rested = self.last_trim.is_none_or(|at| now >= at + MIN_GAP);
        (grew || fell) && rested
    }

    /// Records a trim that ended at `now`, leaving `rss` resident with `charged` bytes charged.
    pub fn trimmed(&mut self, now: Duration, rss: u64, charged: u64) {
        self.baseline_rss = rss;
        self.peak_charged = charged;
        self.last_trim = Some(now);
    }
}

/// Samples and trims until `shutdown`.
pub fn spawn(memory: Arc<MemoryMonitor>, shutdown: CancellationToken) {
    if !trim_supported() {
        return;
    }
    tokio::spawn(async move {
        let start = Instant::now();
        let mut policy = TrimPolicy::new(resident_bytes().unwrap_or(0), memory.used());
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(rss) = resident_bytes() else { return };
            if !policy.sample(start.elapsed(), rss, memory.used()) {
                continue;
            }
            let began = Instant::now();
            if tokio::task::spawn_blocking(trim).await.is_err() {
                return;
            }
            let after = resident_bytes().unwrap_or(rss);
            tracing::debug!(
                rss_before = rss,
                rss_after = after,
                took_us = began.elapsed().as_micros() as u64,
                "returned freed heap to the system"
            );
            policy.trimmed(start.elapsed(), after, memory.used());
        }
    });
}

/// This process's resident set in bytes, from `/proc/self/status` (`None` where there is none).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// True where [`trim`] does something: Linux with glibc.
const fn trim_supported() -> bool {
    cfg!(all(target_os = "linux", target_env = "gnu"))
}

/// `malloc_trim(0)`: every arena's free pages go back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "glibc's malloc_trim has no safe wrapper; it takes no pointers")]
fn trim() {
    // SAFETY: `malloc_trim` reads no caller memory and glibc serialises it with every other
    // allocator call through the arenas' own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Elsewhere the allocator returns memory on its own or has no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_broker_at_rest_never_trims() {
        let mut p = TrimPolicy::new(14 * MIB, 0);
        for s in 0..100 {
            assert!(!p.sample(secs(s * 2), 14 * MIB + s * 1024, 1024));
        }
    }

    #[test]
    fn growth_of_the_resident_set_trims_then_moves_the_baseline() {
        let mut p = TrimPolicy::new(14 * MIB, 0);
        assert!(!p.sample(secs(2), 14 * MIB + GROWTH - 1, 0));
        assert!(p.sample(secs(4), 14 * MIB + GROWTH, 0));
        // The trim gave nothing back (the memory is live): the next trim needs more growth.
        p.trimmed(secs(4), 14 * MIB + GROWTH, 0);
        assert!(!p.sample(secs(30), 14 * MIB + GROWTH + GROWTH / 2, 0));
        assert!(p.sample(secs(32), 14 * MIB + 2 * GROWTH, 0));
    }

    #[test]
    fn charged_bytes_falling_from_their_peak_trims_without_growth() {
        // A queue held 200 MiB of bodies since before the last trim, then was deleted: the
        // resident set does not grow, but the charges fall.
        let mut p = TrimPolicy::new(14 * MIB, 0);
        p.trimmed(secs(10), 300 * MIB, 200 * MIB);
        assert!(!p.sample(secs(30), 300 * MIB, 200 * MIB - FALL + 1));
        assert!(p.sample(secs(32), 300 * MIB, 200 * MIB - FALL));
    }

    #[test]
    fn trims_are_at_least_the_minimum_gap_apart() {
        let mut p = TrimPolicy::new(14 * MIB, 0);
        assert!(p.sample(secs(2), 500 * MIB, 0));
        p.trimmed(secs(2), 14 * MIB, 0);
        let due = secs(2) + MIN_GAP;
        assert!(!p.sample(due - Duration::from_millis(1), 500 * MIB, 0));
        assert!(p.sample(due, 500 * MIB, 0));
    }
}
