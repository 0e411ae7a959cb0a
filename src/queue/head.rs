//! The in-memory part of a queue's ready set: full entries in delivery order.
//!
//! Almost every queue is used as a FIFO: fresh messages arrive in key order and are taken
//! from the front. A `BTreeMap` pays for generality on each of those: a node search per
//! insert, the leaf's remaining entries shifted on every removal from the front, a node
//! allocated and freed every few messages. Under a 1 → 1 AMQP load that was a sixth of the
//! broker's instructions per message. So the head keeps the entries that arrived in key
//! order in a deque (push at the back, pop at the front, both O(1)) and the few that did
//! not (a higher priority arriving behind lower ones) in a B-tree; readers merge the two.
//! Taking an entry out of the middle of the deque leaves a tombstone, dropped when it
//! reaches the front or when tombstones outnumber live entries; a requeued message whose
//! tombstone is still there goes back into it.

use std::collections::{BTreeMap, VecDeque};

use super::ready::{Merge, ReadyKey};

/// Below this many slots the deque is never compacted (tombstones are cheap there).
const COMPACT_MIN: usize = 64;

/// Full entries keyed by [`ReadyKey`]; see the module documentation.
#[derive(Debug)]
pub(crate) struct Head<E> {
    /// Strictly increasing keys; `None` marks an entry taken out of the middle. The front
    /// slot is always live.
    run: VecDeque<(ReadyKey, Option<E>)>,
    /// Live entries in `run`.
    run_live: usize,
    /// Entries that arrived out of key order.
    rest: BTreeMap<ReadyKey, E>,
}

impl<E> Default for Head<E> {
    fn default() -> Self {
        Head { run: VecDeque::new(), run_live: 0, rest: BTreeMap::new() }
    }
}

impl<E> Head<E> {
    /// Entries in all.
    pub(crate) fn len(&self) -> usize {
        self.run_live + self.rest.len()
    }

    /// Add `entry` at `key`, replacing any entry already there.
    pub(crate) fn insert(&mut self, key: ReadyKey, entry: E) {
        if self.run.back().is_none_or(|(last, _)| *last < key) {
            if !self.rest.is_empty() {
                self.rest.remove(&key);
            }
            self.run.push_back((key, Some(entry)));
            self.run_live += 1;
            return;
        }
        if let Ok(i) = self.find(key)
            && let Some((_, slot)) = self.run.get_mut(i)
        {
            if slot.replace(entry).is_none() {
                self.run_live += 1;
            }
            return;
        }
        self.rest.insert(key, entry);
    }

    /// The first key in order.
    pub(crate) fn first_key(&self) -> Option<ReadyKey> {
        let run = self.run.front().map(|(k, _)| *k);
        let rest = self.rest.keys().next().copied();
        match (run, rest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Every key in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = ReadyKey> + '_ {
        let run = self.run.iter().filter(|(_, e)| e.is_some()).map(|(k, _)| *k);
        Merge { a: run.peekable(), b: self.rest.keys().copied().peekable() }
    }

    /// The entry at `key`.
    pub(crate) fn get(&self, key: &ReadyKey) -> Option<&E> {
        match self.find(*key) {
            Ok(i) => self.run.get(i).and_then(|(_, e)| e.as_ref()),
            Err(_) => self.rest.get(key),
        }
    }

    /// True if an entry is at `key`.
    pub(crate) fn contains(&self, key: &ReadyKey) -> bool {
        self.get(key).is_some()
    }

    /// Take the entry at `key` out.
    pub(crate) fn remove(&mut self, key: ReadyKey) -> Option<E> {
        if self.run.front().is_some_and(|(k, _)| *k == key) {
            let (_, entry) = self.run.pop_front()?;
            self.run_live -= 1;
            self.trim_front();
            return entry;
        }
        match self.find(key) {
            Ok(i) => {
                let entry = self.run.get_mut(i).and_then(|(_, e)| e.take())?;
                self.run_live -= 1;
                if self.run.len() >= COMPACT_MIN && self.run_live * 2 < self.run.len() {
                    self.run.retain(|(_, e)| e.is_some());
                }
                Some(entry)
            }
            Err(_) => self.rest.remove(&key),
        }
    }

    /// Every entry, mutably, in no particular order.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&ReadyKey, &mut E)> {
        let run = self.run.iter_mut().filter_map(|(k, e)| e.as_mut().map(|e| (&*k, e)));
        run.chain(self.rest.iter_mut())
    }

    /// Drop every entry.
    pub(crate) fn clear(&mut self) {
        self.run.clear();
        self.run_live = 0;
        self.rest.clear();
    }

    /// Where `key` is or would be in `run`.
    fn find(&self, key: ReadyKey) -> Result<usize, usize> {
        self.run.binary_search_by(|(k, _)| k.cmp(&key))
    }

    /// Keep the front slot live.
    fn trim_front(&mut self) {
        while self.run.front().is_some_and(|(_, e)| e.is_none()) {
            self.run.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u16),
        Remove(u8, u16),
        RemoveFirst,
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Mostly appends and removals from the front (a FIFO's traffic), with keys out of
        // order, removals from the middle and priorities mixed in.
        prop_oneof![
            4 => (0u8..3, 0u16..400).prop_map(|(p, s)| Op::Insert(p, s)),
            3 => Just(Op::RemoveFirst),
            2 => (0u8..3, 0u16..400).prop_map(|(p, s)| Op::Remove(p, s)),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// The head behaves as the `BTreeMap` it replaces, whatever the operations.
        #[test]
        fn behaves_as_an_ordered_map(ops in proptest::collection::vec(op(), 0..600), fresh in any::<bool>()) {
            let mut head: Head<u32> = Head::default();
            let mut model: BTreeMap<ReadyKey, u32> = BTreeMap::new();
            let mut next = 0u64;
            for (n, op) in ops.into_iter().enumerate() {
                let value = n as u32;
                match op {
                    Op::Insert(p, s) => {
                        // `fresh`: increasing sequence numbers, as a queue publishes them.
                        let key = if fresh { next += 1; (Reverse(p), next) } else { (Reverse(p), u64::from(s)) };
                        head.insert(key, value);
                        model.insert(key, value);
                    }
                    Op::Remove(p, s) => {
                        let key = (Reverse(p), u64::from(s));
                        prop_assert_eq!(head.remove(key), model.remove(&key));
                    }
                    Op::RemoveFirst => {
                        let first = model.keys().next().copied();
                        prop_assert_eq!(head.first_key(), first);
                        if let Some(k) = first {
                            prop_assert_eq!(head.remove(k), model.remove(&k));
                        }
                    }
                    Op::Clear => {
                        if n % 7 == 0 {
                            head.clear();
                            model.clear();
                        }
                    }
                }
                prop_assert_eq!(head.len(), model.len());
                prop_assert_eq!(head.first_key(), model.keys().next().copied());
            }
            prop_assert!(head.keys().eq(model.keys().copied()));
            for (k, v) in &model {
                prop_assert_eq!(head.get(k), Some(v));
                prop_assert!(head.contains(k));
            }
            let mut all: Vec<_> = head.iter_mut().map(|(k, v)| (*k, *v)).collect();
            all.sort();
            prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_requeued_entry_goes_back_into_its_tombstone() {
        let mut head: Head<&str> = Head::default();
        for s in 1..=5 {
            head.insert((Reverse(0), s), "x");
        }
        assert_eq!(head.remove((Reverse(0), 3)), Some("x"));
        assert!(!head.contains(&(Reverse(0), 3)));
        head.insert((Reverse(0), 3), "back");
        assert!(head.rest.is_empty(), "it went back into the run");
        assert_eq!(head.keys().map(|k| k.1).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        // A higher priority behind lower ones goes to the tree, and still comes first.
        head.insert((Reverse(9), 6), "urgent");
        assert_eq!(head.first_key(), Some((Reverse(9), 6)));
        assert_eq!(head.len(), 6);
    }

    #[test]
    fn tombstones_are_compacted() {
        let mut head: Head<u64> = Head::default();
        for s in 0..1000 {
            head.insert((Reverse(0), s), s);
        }
        for s in (1..1000).step_by(2) {
            assert_eq!(head.remove((Reverse(0), s)), Some(s));
        }
        for s in (2..1000).step_by(4) {
            assert_eq!(head.remove((Reverse(0), s)), Some(s));
        }
        assert_eq!(head.len(), 250);
        assert!(head.run.len() < 2 * 250 + COMPACT_MIN, "slots {}", head.run.len());
        assert!(head.keys().eq((0..1000).step_by(4).map(|s| (Reverse(0), s))));
    }
}
