//! SQS limits in one table, with a strict (AWS's numbers, the default) and a relaxed column.
//!
//! | limit | strict (AWS) | relaxed |
//! |---|---|---|
//! | visibility timeout, and a lease's total length from its receive | 43,200 s (12 h) | 86,400 s |
//! | `DelaySeconds` | 900 s | 86,400 s |
//! | `MessageRetentionPeriod` | 60 – 1,209,600 s | 1 – 31,536,000 s |
//! | message size (`MaximumMessageSize`, batch total) | 1,024 – 1,048,576 B | 1 – 8,388,608 B |
//! | `WaitTimeSeconds` | 20 s | 20 s (SDK read timeouts assume it) |
//! | batch entries | 10 | 10 (SDKs build batches of 10) |
//! | message attributes | 10 | 100 |
//! | `maxReceiveCount` | 1 – 1,000 | 1 – 1,000,000 |
//! | messages in flight per queue | 120,000 (standard and FIFO) | unlimited |
//! | tags per queue | 50 | 1,000 |
//! | FIFO deduplication window | 5 min | 5 min |
//! | `ReceiveRequestAttemptId` window | 5 min | 5 min |
//! | move task rate (`MaxNumberOfMessagesPerSecond`) | 1 – 500 | 1 – 1,000,000 |
//! | `PurgeQueue` calls per queue | one per 60 s | unlimited |

use serde::{Deserialize, Serialize};

/// Which column of the limits table applies (`[aws] limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitsMode {
    /// AWS's numbers (the default): what a migration test should see.
    #[default]
    Strict,
    /// Larger limits for local development and load tests.
    Relaxed,
}

/// The limits SQS enforces; see the module table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest visibility timeout, seconds.
    pub max_visibility: i64,
    /// Longest a lease may last from its receive, ms (`ChangeMessageVisibility` cap).
    pub max_lease_ms: u64,
    /// Largest `DelaySeconds`.
    pub max_delay: i64,
    /// Smallest `MessageRetentionPeriod`, seconds.
    pub min_retention: i64,
    /// Largest `MessageRetentionPeriod`, seconds.
    pub max_retention: i64,
    /// Default `MessageRetentionPeriod`, seconds.
    pub default_retention: i64,
    /// Smallest `MaximumMessageSize`.
    pub min_message_size: i64,
    /// Largest `MaximumMessageSize` (and the default), also a batch's total.
    pub max_message_size: i64,
    /// Largest `WaitTimeSeconds`.
    pub max_wait: i64,
    /// Most entries in a batch.
    pub max_batch: usize,
    /// Most message attributes on one message.
    pub max_attributes: usize,
    /// Largest `maxReceiveCount`.
    pub max_receive_count: i64,
    /// Most messages in flight (received, not deleted) per queue; receive past it is `OverLimit`.
    pub max_in_flight: u64,
    /// Most tags per queue.
    pub max_tags: usize,
    /// FIFO deduplication window, ms.
    pub dedup_window_ms: u64,
    /// How long a `ReceiveRequestAttemptId` returns the same batch, ms.
    pub attempt_window_ms: u64,
    /// Largest `MaxNumberOfMessagesPerSecond` of a move task.
    pub max_move_rate: i64,
    /// Shortest time between two `PurgeQueue` calls on one queue, ms.
    pub purge_interval_ms: u64,
}

impl Limits {
    /// AWS's numbers.
    pub const STRICT: Limits = Limits {
        max_visibility: 43_200,
        max_lease_ms: 12 * 3600 * 1000,
        max_delay: 900,
        min_retention: 60,
        max_retention: 1_209_600,
        default_retention: 345_600,
        min_message_size: 1_024,
        max_message_size: 1_048_576,
        max_wait: 20,
        max_batch: 10,
        max_attributes: 10,
        max_receive_count: 1_000,
        max_in_flight: 120_000,
        max_tags: 50,
        dedup_window_ms: 5 * 60 * 1000,
        attempt_window_ms: 5 * 60 * 1000,
        max_move_rate: 500,
        purge_interval_ms: 60_000,
    };

    /// Larger limits for development and load tests.
    pub const RELAXED: Limits = Limits {
        max_visibility: 86_400,
        max_lease_ms: 24 * 3600 * 1000,
        max_delay: 86_400,
        min_retention: 1,
        max_retention: 31_536_000,
        default_retention: 345_600,
        min_message_size: 1,
        max_message_size: 8 * 1024 * 1024,
        max_wait: 20,
        max_batch: 10,
        max_attributes: 100,
        max_receive_count: 1_000_000,
        max_in_flight: u64::MAX,
        max_tags: 1_000,
        dedup_window_ms: 5 * 60 * 1000,
        attempt_window_ms: 5 * 60 * 1000,
        max_move_rate: 1_000_000,
        purge_interval_ms: 0,
    };

    /// The column for `mode`.
    pub fn of(mode: LimitsMode) -> &'static Limits {
        match mode {
            LimitsMode::Strict => &Limits::STRICT,
            LimitsMode::Relaxed => &Limits::RELAXED,
        }
    }
}
