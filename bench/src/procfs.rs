//! Process accounting from `/proc`: a broker's resident memory and CPU time, and our own CPU
//! time, so every report says whether the broker or the load generator was the one saturated.

use std::time::Instant;

/// Linux reports `utime`/`stime` in clock ticks; `USER_HZ` is 100 on every mainstream kernel.
const TICKS_PER_SECOND: f64 = 100.0;

/// Resident set size (`VmRSS`) of `pid` in KiB, if the process exists.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// User + system CPU time of a process (all its threads) in clock ticks. `None` = no such process.
pub fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |pid| format!("/proc/{pid}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Measures the CPU a process uses between [`CpuMeter::start`] and [`CpuMeter::percent`].
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: Option<u32>,
    ticks: Option<u64>,
    at: Instant,
}

impl CpuMeter {
    /// Starts measuring `pid`, or this process when `None`.
    pub fn start(pid: Option<u32>) -> Self {
        Self { pid, ticks: cpu_ticks(pid), at: Instant::now() }
    }

    /// CPU used since [`CpuMeter::start`] as a percentage of one core (200 = two cores busy).
    pub fn percent(&self) -> Option<f64> {
        let before = self.ticks?;
        let after = cpu_ticks(self.pid)?;
        let wall = self.at.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        Some(after.saturating_sub(before) as f64 / TICKS_PER_SECOND / wall * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_rss_and_cpu() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        assert!(cpu_ticks(None).is_some());
        assert!(cpu_ticks(Some(pid)).is_some());
        assert!(rss_kib(u32::MAX).is_none());
    }
}
