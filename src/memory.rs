//! Memory accounting for the high-watermark: message bodies charge a shared
//! counter while alive, and publishers are blocked while it is above the mark.
//!
//! Charging on allocation and releasing on drop (rather than adding up queue
//! lengths) counts a fanned-out message once and never drifts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// The broker-wide memory monitor.
#[derive(Debug)]
pub struct MemoryMonitor {
    used: AtomicU64,
    high_watermark: u64,
    blocked: watch::Sender<bool>,
}

/// A charge against the monitor, released when dropped.
#[derive(Debug)]
pub struct MemoryCharge {
    monitor: Arc<MemoryMonitor>,
    bytes: u64,
}

impl MemoryMonitor {
    /// A monitor that blocks publishers above `high_watermark` bytes.
    pub fn new(high_watermark: u64) -> Arc<MemoryMonitor> {
        let (blocked, _) = watch::channel(false);
        Arc::new(MemoryMonitor { used: AtomicU64::new(0), high_watermark, blocked })
    }

    /// Charge `bytes`; the returned guard releases them on drop.
    pub fn charge(self: &Arc<Self>, bytes: u64) -> MemoryCharge {
        let used = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if used > self.high_watermark && !*self.blocked.borrow() {
            tracing::warn!(used, high_watermark = self.high_watermark, "memory alarm set: blocking publishers");
            self.blocked.send_replace(true);
        }
        MemoryCharge { monitor: Arc::clone(self), bytes }
    }

    fn release(&self, bytes: u64) {
        let used = self.used.fetch_sub(bytes, Ordering::Relaxed).saturating_sub(bytes);
        // Hysteresis: unblock a little below the mark so we don't flap.
        if *self.blocked.borrow() && used <= self.high_watermark / 10 * 9 {
            tracing::info!(used, "memory alarm cleared: unblocking publishers");
            self.blocked.send_replace(false);
        }
    }

    /// Bytes currently charged.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The configured high watermark in bytes.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// True while publishers must be blocked.
    pub fn is_blocked(&self) -> bool {
        *self.blocked.borrow()
    }

    /// Watch the blocked flag (front-ends send `connection.blocked`/`unblocked` on change).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.blocked.subscribe()
    }
}

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        self.monitor.release(self.bytes);
    }
}

/// Physical memory in bytes, read from `/proc/meminfo`; a fallback of 8 GiB elsewhere.
pub fn physical_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).map(|kb| kb * 1024))
        })
        .unwrap_or(8 << 30)
}
