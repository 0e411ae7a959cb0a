//! `ReceiveRequestAttemptId` (FIFO queues): a receive retried with the same attempt id
//! within the window (5 minutes) gets the batch the first attempt returned. Time is an
//! input, so the window is tested without waiting.

use std::collections::HashMap;

use serde_json::Value;
use switchyard::time::Millis;

/// One remembered receive: when it happened, the leases it took and the answer it gave.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When the first receive ran.
    pub at: Millis,
    /// The core leases of its messages.
    pub leases: Vec<u64>,
    /// The response it returned (same receipt handles on a retry).
    pub batch: Value,
}

/// The remembered receives of one queue, by attempt id.
#[derive(Debug, Default)]
pub struct Attempts {
    by_id: HashMap<String, Attempt>,
}

impl Attempts {
    /// Remember the receive `id` made at `now`.
    pub fn record(&mut self, id: String, now: Millis, window: Millis, leases: Vec<u64>, batch: Value) {
        self.prune(now, window);
        self.by_id.insert(id, Attempt { at: now, leases, batch });
    }

    /// The receive `id` made less than `window` before `now`.
    pub fn recall(&mut self, id: &str, now: Millis, window: Millis) -> Option<&Attempt> {
        self.prune(now, window);
        self.by_id.get(id)
    }

    fn prune(&mut self, now: Millis, window: Millis) {
        self.by_id.retain(|_, a| a.at.saturating_add(window) > now);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_attempt_is_recalled_only_inside_the_window() {
        let window = 5 * 60 * 1000;
        let mut a = Attempts::default();
        a.record("r1".into(), 1_000, window, vec![7], json!({"Messages": []}));
        assert_eq!(a.recall("r1", 1_000 + window - 1, window).map(|x| x.leases.clone()), Some(vec![7]));
        assert!(a.recall("r2", 1_000, window).is_none());
        assert!(a.recall("r1", 1_000 + window, window).is_none());
    }
}
