//! Per-shard throughput limits (strict mode): token buckets refilled by elapsed time, which
//! is an argument. Kinesis' numbers: in, 1,000 records/s and 1 MiB/s; out, 5 GetRecords
//! calls/s and 2 MiB/s (a single call may return up to 10 MiB, after which the shard's
//! read budget is in debt for the next seconds).

use std::collections::HashMap;

use parking_lot::Mutex;
use switchyard::time::Millis;

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last: Millis,
    rate: f64,
    cap: f64,
}

impl Bucket {
    fn new(rate: f64, cap: f64, now: Millis) -> Bucket {
        Bucket { tokens: cap, last: now, rate, cap }
    }

    fn refill(&mut self, now: Millis) {
        let dt = now.saturating_sub(self.last) as f64 / 1000.0;
        self.tokens = (self.tokens + dt * self.rate).min(self.cap);
        self.last = self.last.max(now);
    }
}

#[derive(Debug, Clone)]
struct ShardBuckets {
    in_records: Bucket,
    in_bytes: Bucket,
    reads: Bucket,
    out_bytes: Bucket,
}

impl ShardBuckets {
    fn new(now: Millis) -> ShardBuckets {
        ShardBuckets {
            in_records: Bucket::new(1000.0, 1000.0, now),
            in_bytes: Bucket::new(MIB, MIB, now),
            reads: Bucket::new(5.0, 5.0, now),
            out_bytes: Bucket::new(2.0 * MIB, 10.0 * MIB, now),
        }
    }
}

/// Key of a shard: stream incarnation and shard index.
pub type ShardKey = (u64, u32);

/// The limits of every shard; `enabled = false` (relaxed mode) admits everything.
#[derive(Debug)]
pub struct Limits {
    enabled: bool,
    shards: Mutex<HashMap<ShardKey, ShardBuckets>>,
}

impl Limits {
    /// Limits on (strict) or off (relaxed).
    pub fn new(enabled: bool) -> Limits {
        Limits { enabled, shards: Mutex::new(HashMap::new()) }
    }

    /// Admit one record of `bytes` into `shard` at `now`; false means throttled.
    pub fn admit_put(&self, shard: ShardKey, bytes: usize, now: Millis) -> bool {
        if !self.enabled {
            return true;
        }
        let mut map = self.shards.lock();
        let b = map.entry(shard).or_insert_with(|| ShardBuckets::new(now));
        b.in_records.refill(now);
        b.in_bytes.refill(now);
        if b.in_records.tokens < 1.0 || b.in_bytes.tokens < bytes as f64 {
            return false;
        }
        b.in_records.tokens -= 1.0;
        b.in_bytes.tokens -= bytes as f64;
        true
    }

    /// Admit one GetRecords call on `shard` at `now`; false means throttled.
    pub fn admit_read(&self, shard: ShardKey, now: Millis) -> bool {
        if !self.enabled {
            return true;
        }
        let mut map = self.shards.lock();
        let b = map.entry(shard).or_insert_with(|| ShardBuckets::new(now));
        b.reads.refill(now);
        b.out_bytes.refill(now);
        if b.reads.tokens < 1.0 || b.out_bytes.tokens <= 0.0 {
            return false;
        }
        b.reads.tokens -= 1.0;
        true
    }

    /// Charge the bytes a GetRecords call returned.
    pub fn charge_read(&self, shard: ShardKey, bytes: usize) {
        if !self.enabled {
            return;
        }
        if let Some(b) = self.shards.lock().get_mut(&shard) {
            b.out_bytes.tokens -= bytes as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_records_a_second_then_throttled_then_refilled() {
        let l = Limits::new(true);
        for _ in 0..1000 {
            assert!(l.admit_put((1, 0), 10, 0));
        }
        assert!(!l.admit_put((1, 0), 10, 0));
        assert!(l.admit_put((1, 1), 10, 0), "another shard has its own budget");
        assert!(l.admit_put((1, 0), 10, 1));
        assert!(!l.admit_put((1, 0), 10, 1));
        assert!(l.admit_put((1, 0), 10, 1000));
    }

    #[test]
    fn a_mebibyte_a_second_in() {
        let l = Limits::new(true);
        assert!(l.admit_put((1, 0), 1024 * 1024, 0));
        assert!(!l.admit_put((1, 0), 1, 0));
        assert!(l.admit_put((1, 0), 512 * 1024, 500));
    }

    #[test]
    fn five_reads_a_second_and_read_debt() {
        let l = Limits::new(true);
        for _ in 0..5 {
            assert!(l.admit_read((1, 0), 0));
        }
        assert!(!l.admit_read((1, 0), 0));
        assert!(l.admit_read((1, 0), 200));
        l.charge_read((1, 0), 11 * 1024 * 1024);
        assert!(!l.admit_read((1, 0), 400));
        assert!(l.admit_read((1, 0), 2000));
    }

    #[test]
    fn relaxed_mode_admits_everything() {
        let l = Limits::new(false);
        for _ in 0..5000 {
            assert!(l.admit_put((1, 0), 1 << 20, 0));
            assert!(l.admit_read((1, 0), 0));
        }
    }
}
