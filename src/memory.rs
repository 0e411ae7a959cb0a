//! Resource alarms that block publishers, as RabbitMQ's do: the memory
//! high-watermark (message bodies charge a shared counter while alive), the
//! disk-free limit (checked periodically on the data directory) and the message
//! log's write backlog (records waiting in memory for a disk that fell behind; the
//! log reports it, see [`crate::store::log::BACKLOG_HIGH`]). Publishers are blocked
//! while any alarm is on.
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
    memory_alarm: std::sync::atomic::AtomicBool,
    disk_alarm: std::sync::atomic::AtomicBool,
    log_alarm: std::sync::atomic::AtomicBool,
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
        Arc::new(MemoryMonitor {
            used: AtomicU64::new(0),
            high_watermark,
            memory_alarm: std::sync::atomic::AtomicBool::new(false),
            disk_alarm: std::sync::atomic::AtomicBool::new(false),
            log_alarm: std::sync::atomic::AtomicBool::new(false),
            blocked,
        })
    }

    /// Charge `bytes`; the returned guard releases them on drop.
    pub fn charge(self: &Arc<Self>, bytes: u64) -> MemoryCharge {
        let used = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if used > self.high_watermark && !self.memory_alarm.swap(true, Ordering::AcqRel) {
            tracing::warn!(used, high_watermark = self.high_watermark, "memory alarm set: blocking publishers");
            self.update();
        }
        MemoryCharge { monitor: Arc::clone(self), bytes }
    }

    fn release(&self, bytes: u64) {
        let used = self.used.fetch_sub(bytes, Ordering::Relaxed).saturating_sub(bytes);
        // Hysteresis: unblock a little below the mark so we don't flap.
        if used <= self.high_watermark / 10 * 9 && self.memory_alarm.swap(false, Ordering::AcqRel) {
            tracing::info!(used, "memory alarm cleared");
            self.update();
        }
    }

    fn update(&self) {
        let blocked = self.memory_alarm.load(Ordering::Acquire)
            || self.disk_alarm.load(Ordering::Acquire)
            || self.log_alarm.load(Ordering::Acquire);
        self.blocked.send_if_modified(|b| std::mem::replace(b, blocked) != blocked);
    }

    /// Set or clear the disk-free alarm (see [`watch_disk`]).
    pub fn set_disk_alarm(&self, on: bool) {
        if self.disk_alarm.swap(on, Ordering::AcqRel) != on {
            self.update();
        }
    }

    /// Set or clear the message log's backlog alarm (see [`crate::store::log::MessageLog::on_backlog`]).
    pub fn set_log_alarm(&self, on: bool) {
        if self.log_alarm.swap(on, Ordering::AcqRel) != on {
            self.update();
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

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_disk_space(path: &std::path::Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Check the free space under `dir` every second and keep the disk alarm in step
/// with `limit` (RabbitMQ's `disk_free_limit`), until the monitor is dropped.
pub fn watch_disk(monitor: &Arc<MemoryMonitor>, dir: std::path::PathBuf, limit: u64) {
    let check = move |m: &MemoryMonitor| match free_disk_space(&dir) {
        Ok(free) => {
            let low = free < limit;
            if low != m.disk_alarm.load(Ordering::Acquire) {
                if low {
                    tracing::warn!(free, limit, dir = %dir.display(), "disk alarm set: free space below disk_free_limit; blocking publishers");
                } else {
                    tracing::info!(free, limit, "disk alarm cleared");
                }
            }
            m.set_disk_alarm(low);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read free disk space"),
    };
    check(monitor);
    let weak = Arc::downgrade(monitor);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(m) => check(&m),
                None => return,
            }
        }
    });
}
