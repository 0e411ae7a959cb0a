//! Ready messages indexed by message group, and the fair-queue tenant measures.
//!
//! Two queue kinds need to skip whole groups while picking the next message:
//! - a **FIFO** queue skips every group that has a message leased;
//! - a **fair** queue (a standard queue whose messages carry a group, SQS's
//!   `MessageGroupId` on standard queues) serves quiet tenants before noisy ones.
//!
//! Walking the ready set in order would cost the length of a skipped group's backlog on
//! every pick — the backlog of a noisy tenant is exactly what fills the front of the queue.
//! [`GroupIndex`] keeps each group's ready keys and each group's *first* key in one ordered
//! map, so a pick walks groups, not messages. It is off until the first grouped message
//! arrives; queues that never see a group pay one branch per insert and removal.
//!
//! [`FairShare`] holds what decides whether a tenant is noisy: its share of the in-flight
//! messages (counted by the state machine) and its share of recent consumer processing time
//! (lease time, decayed exponentially with time passed in). The thresholds are SQS's:
//! a tenant is noisy with more than 10% of the in-flight messages and at least 30 of its own,
//! or more than 10% of the recent processing time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::queue::ready::ReadyKey;
use crate::time::Millis;

/// A tenant whose in-flight count reaches this may be noisy (SQS: 30).
pub(crate) const NOISY_MIN_IN_FLIGHT: u32 = 30;
/// A tenant above this share (in percent) of in-flight messages or processing time is noisy.
pub(crate) const NOISY_SHARE_PERCENT: u64 = 10;
/// Time constant of the processing-time decay: time older than a few of these no longer counts.
const PROCESSING_DECAY_MS: f64 = 60_000.0;
/// Recent processing time below this (in ms, whole queue) is too little to judge shares by.
const MIN_PROCESSING_MS: f64 = 1_000.0;
/// A tenant's decayed processing time below this is forgotten.
const FORGET_BELOW_MS: f64 = 1.0;
/// Lease ends between sweeps of forgotten tenants.
const SWEEP_EVERY: u32 = 1024;

/// Ready keys by group; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct GroupIndex {
    /// True once a grouped message was seen and until the ready set empties.
    active: bool,
    /// Each group's ready keys, in delivery order.
    members: HashMap<Arc<str>, BTreeSet<ReadyKey>>,
    /// Each group's first ready key, mapped back to the group.
    heads: BTreeMap<ReadyKey, Arc<str>>,
    /// Ready keys of messages without a group.
    loose: BTreeSet<ReadyKey>,
}

impl GroupIndex {
    /// True while the index tracks the ready set.
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.active
    }

    /// Record that `key` became ready. `existing` lists the other ready keys, read only when
    /// this insert switches the index on (the first grouped message).
    pub(crate) fn insert<I: Iterator<Item = ReadyKey>>(
        &mut self,
        key: ReadyKey,
        group: Option<&Arc<str>>,
        existing: impl FnOnce() -> I,
    ) {
        if !self.active {
            if group.is_none() {
                return;
            }
            self.active = true;
            self.loose = existing().filter(|k| *k != key).collect();
        }
        let Some(g) = group else {
            self.loose.insert(key);
            return;
        };
        let keys = self.members.entry(Arc::clone(g)).or_default();
        let old_head = keys.first().copied();
        keys.insert(key);
        if old_head.is_none_or(|h| key < h) {
            if let Some(h) = old_head {
                self.heads.remove(&h);
            }
            self.heads.insert(key, Arc::clone(g));
        }
    }

    /// Record that `key` left the ready set.
    pub(crate) fn remove(&mut self, key: ReadyKey, group: Option<&Arc<str>>) {
        if !self.active {
            return;
        }
        match group {
            None => {
                self.loose.remove(&key);
            }
            Some(g) => {
                let Some(keys) = self.members.get_mut(g) else { return };
                let was_head = keys.first() == Some(&key);
                keys.remove(&key);
                if was_head {
                    self.heads.remove(&key);
                    match keys.first() {
                        Some(next) => {
                            self.heads.insert(*next, Arc::clone(g));
                        }
                        None => {
                            self.members.remove(g);
                        }
                    }
                }
            }
        }
        if self.members.is_empty() && self.loose.is_empty() {
            self.active = false;
        }
    }

    /// Forget everything (purge).
    pub(crate) fn clear(&mut self) {
        *self = GroupIndex::default();
    }

    /// The first ready key whose group `skip` does not exclude; messages without a group are
    /// never skipped. Walks one entry per skipped group.
    pub(crate) fn first_where(&self, mut skip: impl FnMut(&Arc<str>) -> bool) -> Option<ReadyKey> {
        let grouped = self.heads.iter().find(|(_, g)| !skip(g)).map(|(k, _)| *k);
        match (grouped, self.loose.first().copied()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Each group with ready messages and its first ready key, in delivery order.
    pub(crate) fn heads(&self) -> impl Iterator<Item = (ReadyKey, &Arc<str>)> {
        self.heads.iter().map(|(k, g)| (*k, g))
    }

    /// Ready messages of `group` (for tests and introspection).
    #[cfg(test)]
    pub(crate) fn ready_in(&self, group: &str) -> usize {
        self.members.get(group).map_or(0, BTreeSet::len)
    }
}

/// Decayed processing time of one tenant or of the whole queue.
#[derive(Debug, Clone, Copy, Default)]
struct Decayed {
    ms: f64,
    at: Millis,
}

impl Decayed {
    fn value_at(&self, now: Millis) -> f64 {
        if now <= self.at {
            return self.ms;
        }
        // Millisecond spans far below 2^52 convert exactly enough.
        self.ms * (-((now - self.at) as f64) / PROCESSING_DECAY_MS).exp()
    }

    fn add(&mut self, ms: f64, now: Millis) {
        self.ms = self.value_at(now) + ms;
        self.at = self.at.max(now);
    }
}

/// Recent processing time per tenant (fair queues); see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct FairShare {
    total: Decayed,
    tenants: HashMap<Arc<str>, Decayed>,
    since_sweep: u32,
}

impl FairShare {
    /// A lease of `group` held for `held_ms` ended at `now`.
    pub(crate) fn lease_ended(&mut self, group: &Arc<str>, held_ms: Millis, now: Millis) {
        let ms = held_ms as f64;
        self.total.add(ms, now);
        self.tenants.entry(Arc::clone(group)).or_default().add(ms, now);
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.tenants.retain(|_, d| d.value_at(now) >= FORGET_BELOW_MS);
        }
    }

    /// True if `group` holds more than its share of recent processing time.
    fn busy(&self, group: &Arc<str>, now: Millis) -> bool {
        let total = self.total.value_at(now);
        if total < MIN_PROCESSING_MS {
            return false;
        }
        self.tenants.get(group).is_some_and(|d| d.value_at(now) * 100.0 > total * NOISY_SHARE_PERCENT as f64)
    }

    /// True if `group`, with `in_flight` of the queue's `total_in_flight` leased messages, is
    /// a noisy neighbour at `now`.
    pub(crate) fn is_noisy(&self, group: &Arc<str>, in_flight: u32, total_in_flight: usize, now: Millis) -> bool {
        let crowding = in_flight >= NOISY_MIN_IN_FLIGHT
            && u64::from(in_flight) * 100 > total_in_flight as u64 * NOISY_SHARE_PERCENT;
        crowding || self.busy(group, now)
    }

    /// Tenants with recent processing time (for tests and introspection).
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.tenants.len()
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;

    use super::*;

    fn k(seq: u64) -> ReadyKey {
        (Reverse(0), seq)
    }

    #[test]
    fn the_index_stays_off_until_a_grouped_message_and_then_tracks_everything() {
        let mut ix = GroupIndex::default();
        ix.insert(k(1), None, std::iter::empty);
        assert!(!ix.is_active());
        let a: Arc<str> = Arc::from("a");
        ix.insert(k(3), Some(&a), || [k(1), k(2), k(3)].into_iter());
        assert!(ix.is_active());
        ix.insert(k(4), Some(&a), std::iter::empty);
        // Skipping `a` leaves the ungrouped messages 1 and 2 that were ready before.
        assert_eq!(ix.first_where(|g| &**g == "a"), Some(k(1)));
        ix.remove(k(1), None);
        ix.remove(k(2), None);
        assert_eq!(ix.first_where(|g| &**g == "a"), None);
        assert_eq!(ix.first_where(|_| false), Some(k(3)));
        ix.remove(k(3), Some(&a));
        assert_eq!(ix.heads().collect::<Vec<_>>(), [(k(4), &a)]);
        ix.remove(k(4), Some(&a));
        assert!(!ix.is_active(), "an empty ready set switches the index off");
    }

    #[test]
    fn a_pick_walks_groups_not_messages() {
        let mut ix = GroupIndex::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        for seq in 1..=10_000 {
            ix.insert(k(seq), Some(&a), std::iter::empty);
        }
        ix.insert(k(10_001), Some(&b), std::iter::empty);
        let mut walked = 0;
        let first = ix.first_where(|g| {
            walked += 1;
            &**g == "a"
        });
        assert_eq!((first, walked), (Some(k(10_001)), 2));
        assert_eq!(ix.ready_in("a"), 10_000);
        // A key inserted ahead of a group's head (a requeued message) becomes its head.
        ix.remove(k(5), Some(&a));
        ix.remove(k(1), Some(&a));
        ix.insert(k(1), Some(&a), std::iter::empty);
        assert_eq!(ix.heads().next(), Some((k(1), &a)));
        ix.clear();
        assert!(!ix.is_active());
    }

    #[test]
    fn crowding_needs_thirty_in_flight_and_more_than_a_tenth() {
        let s = FairShare::default();
        let g: Arc<str> = Arc::from("g");
        assert!(!s.is_noisy(&g, 29, 29, 0), "29 in flight is below the floor");
        assert!(s.is_noisy(&g, 30, 299, 0));
        assert!(!s.is_noisy(&g, 30, 300, 0), "exactly 10% is not more than a tenth");
    }

    #[test]
    fn processing_time_share_decays_with_time_passed_in() {
        let mut s = FairShare::default();
        let (slow, other): (Arc<str>, Arc<str>) = (Arc::from("slow"), Arc::from("other"));
        for i in 0..100 {
            s.lease_ended(&other, 10, i);
        }
        assert!(!s.is_noisy(&other, 1, 1, 100), "under a second of processing in all: no judgement yet");
        s.lease_ended(&slow, 5_000, 100);
        assert!(s.is_noisy(&slow, 1, 10, 100));
        // Only `slow` keeps working: after ten minutes `other`'s share has decayed away.
        for i in 0..10 {
            s.lease_ended(&slow, 60_000, 100 + 60_000 * (i + 1));
        }
        let later = 100 + 60_000 * 10;
        assert!(!s.is_noisy(&other, 0, 10, later));
        assert!(s.is_noisy(&slow, 0, 10, later));
        // Forgotten once decayed to nothing: sweeps bound the map to recent tenants.
        let much_later = later + 3_600_000;
        for i in 0..SWEEP_EVERY {
            s.lease_ended(&slow, 1, much_later + u64::from(i));
        }
        assert_eq!(s.tracked(), 1);
    }
}
