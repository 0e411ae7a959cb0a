//! A queue's ready messages in delivery order, sized for long queues.
//!
//! Two parts, merged on read:
//! - the **head**: full entries in a `BTreeMap` keyed by (priority descending, publish
//!   sequence). Everything with its body in memory lives here, plus anything that came
//!   back out of order (a requeued lease returns to its original position).
//! - the **tails**: one per priority, a `VecDeque` of 32-byte [`Slim`] records of messages
//!   whose bodies are in the message log only. A tail only grows at its back (a message
//!   joins it only if it sorts after everything already in it) and is read from its front;
//!   a message taken from the middle (a TTL expiring, a filtered consumer picking it) is
//!   tombstoned in place and the slot is reclaimed when it reaches the front.
//!
//! Nothing orders the head against the tails: [`ReadySet::keys`] merges them. So the cost
//! of a queued message whose body is on disk is one `Slim` (plus its FIFO group, if any),
//! instead of a full entry in a B-tree.
//!
//! The set is a plain container: it does no I/O and knows nothing about the log beyond the
//! [`Detached`] places it stores. The state machine decides what goes where.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::iter::Peekable;
use std::sync::Arc;

use super::head::Head;
use crate::store::log::Detached;
use crate::time::Millis;

/// Publish sequence number (see `state::Seq`).
type Seq = u64;
/// Delivery order: priority descending, then publish sequence.
pub(crate) type ReadyKey = (Reverse<u8>, Seq);

const REDELIVERED: u32 = 1 << 31;
const MARKED: u32 = 1 << 30;
const DEAD: u32 = 1 << 29;
const SIZE_MASK: u32 = DEAD - 1;
const NO_TTL: u32 = u32::MAX;

/// A ready message whose body is on disk only. 32 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slim {
    seq: Seq,
    enqueued_at: Millis,
    at: Detached,
    /// Body size in the low bits, flags in the high ones.
    size_flags: u32,
    /// Time to live from `enqueued_at`, in ms; [`NO_TTL`] for none.
    ttl: u32,
}

/// What a slim record stands for, unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlimParts {
    /// Publish sequence.
    pub seq: Seq,
    /// When it was enqueued.
    pub enqueued_at: Millis,
    /// Where the record is.
    pub at: Detached,
    /// Body size.
    pub size: u64,
    /// Absolute expiry time.
    pub expires_at: Option<Millis>,
    /// Delivered before (recovered after a restart).
    pub redelivered: bool,
    /// The log already holds a "delivered" mark for it.
    pub marked: bool,
}

impl Slim {
    /// Pack `p`; `None` if it does not fit (body ≥ 512 MiB, TTL ≥ 49 days).
    pub(crate) fn pack(p: &SlimParts) -> Option<Slim> {
        let size = u32::try_from(p.size).ok().filter(|s| *s <= SIZE_MASK)?;
        let ttl = match p.expires_at {
            None => NO_TTL,
            Some(at) => u32::try_from(at.saturating_sub(p.enqueued_at)).ok().filter(|t| *t < NO_TTL)?,
        };
        let mut size_flags = size;
        if p.redelivered {
            size_flags |= REDELIVERED;
        }
        if p.marked {
            size_flags |= MARKED;
        }
        Some(Slim { seq: p.seq, enqueued_at: p.enqueued_at, at: p.at, size_flags, ttl })
    }

    /// Unpack.
    pub(crate) fn parts(&self) -> SlimParts {
        SlimParts {
            seq: self.seq,
            enqueued_at: self.enqueued_at,
            at: self.at,
            size: u64::from(self.size_flags & SIZE_MASK),
            expires_at: self.expires_at(),
            redelivered: self.size_flags & REDELIVERED != 0,
            marked: self.size_flags & MARKED != 0,
        }
    }

    fn expires_at(&self) -> Option<Millis> {
        (self.ttl != NO_TTL).then(|| self.enqueued_at.saturating_add(u64::from(self.ttl)))
    }

    fn dead(&self) -> bool {
        self.size_flags & DEAD != 0
    }
}

#[derive(Debug, Default)]
struct Tail {
    slots: VecDeque<Slim>,
    live: usize,
}

impl Tail {
    /// Drop tombstones from the front so the front is always live.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(Slim::dead) {
            self.slots.pop_front();
        }
        if self.live == 0 {
            self.slots = VecDeque::new();
        }
    }
}

/// Where a removed message came from.
#[derive(Debug)]
pub(crate) enum Taken<E> {
    /// A full entry from the head.
    Head(E),
    /// A slim record from a tail, with its priority and FIFO group.
    Tail(u8, SlimParts, Option<Arc<str>>),
}

/// The ready set; see the module documentation.
#[derive(Debug)]
pub(crate) struct ReadySet<E> {
    head: Head<E>,
    tails: BTreeMap<Reverse<u8>, Tail>,
    tail_live: usize,
    /// FIFO groups of tail records (only queues that use groups pay for this).
    groups: HashMap<Seq, Arc<str>>,
}

impl<E> Default for ReadySet<E> {
    fn default() -> Self {
        ReadySet { head: Head::default(), tails: BTreeMap::new(), tail_live: 0, groups: HashMap::new() }
    }
}

impl<E> ReadySet<E> {
    /// Ready messages in all.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.tail_live
    }

    /// True if nothing is ready.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages held as slim records (bodies on disk only).
    pub(crate) fn tail_len(&self) -> usize {
        self.tail_live
    }

    /// True if `priority` has a tail (new messages of that priority must join it, so the
    /// messages in memory stay the ones nearest delivery).
    pub(crate) fn has_tail(&self, priority: u8) -> bool {
        self.tails.contains_key(&Reverse(priority))
    }

    /// True if a message with `key` may join its priority's tail (it sorts after it).
    pub(crate) fn can_join_tail(&self, key: ReadyKey) -> bool {
        self.tails.get(&key.0).and_then(|t| t.slots.back()).is_none_or(|s| s.seq < key.1)
    }

    /// Add a full entry to the head.
    pub(crate) fn insert_head(&mut self, key: ReadyKey, entry: E) {
        self.head.insert(key, entry);
    }

    /// Append a slim record to `priority`'s tail; the caller checked [`Self::can_join_tail`].
    pub(crate) fn push_tail(&mut self, priority: u8, slim: Slim, group: Option<Arc<str>>) {
        if let Some(g) = group {
            self.groups.insert(slim.seq, g);
        }
        let tail = self.tails.entry(Reverse(priority)).or_default();
        tail.slots.push_back(slim);
        tail.live += 1;
        self.tail_live += 1;
    }

    /// The first key in delivery order.
    pub(crate) fn first_key(&self) -> Option<ReadyKey> {
        let head = self.head.first_key();
        let tail = self.tails.iter().next().and_then(|(p, t)| t.slots.front().map(|s| (*p, s.seq)));
        match (head, tail) {
            (Some(h), Some(t)) => Some(h.min(t)),
            (h, t) => h.or(t),
        }
    }

    /// Every key in delivery order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = ReadyKey> + '_ {
        let tails = self.tails.iter().flat_map(|(p, t)| t.slots.iter().filter(|s| !s.dead()).map(move |s| (*p, s.seq)));
        Merge { a: self.head.keys().peekable(), b: tails.peekable() }
    }

    /// The head entry at `key`, if it is in the head.
    pub(crate) fn get_head(&self, key: &ReadyKey) -> Option<&E> {
        self.head.get(key)
    }

    /// True if `key` is in the head.
    pub(crate) fn in_head(&self, key: &ReadyKey) -> bool {
        self.head.contains(key)
    }

    /// Take the message at `key` out.
    pub(crate) fn remove(&mut self, key: ReadyKey) -> Option<Taken<E>> {
        if let Some(e) = self.head.remove(key) {
            return Some(Taken::Head(e));
        }
        let tail = self.tails.get_mut(&key.0)?;
        let idx = tail.slots.binary_search_by_key(&key.1, |s| s.seq).ok()?;
        let slot = tail.slots.get_mut(idx)?;
        if slot.dead() {
            return None;
        }
        let parts = slot.parts();
        slot.size_flags |= DEAD;
        tail.live -= 1;
        self.tail_live -= 1;
        tail.trim();
        if tail.live == 0 {
            self.tails.remove(&key.0);
        }
        Some(Taken::Tail(key.0.0, parts, self.groups.remove(&key.1)))
    }

    /// Take the first tail record in delivery order out (to bring it into memory).
    pub(crate) fn pop_tail_front(&mut self) -> Option<(ReadyKey, Taken<E>)> {
        let key = self.tails.iter().next().and_then(|(p, t)| t.slots.front().map(|s| (*p, s.seq)))?;
        self.remove(key).map(|t| (key, t))
    }

    /// Head entries, mutably (reconfiguration).
    pub(crate) fn head_mut(&mut self) -> impl Iterator<Item = (&ReadyKey, &mut E)> {
        self.head.iter_mut()
    }

    /// Recompute the TTL of every live tail record with `f(enqueued_at) -> expires_at`;
    /// returns the new (expiry, key) pairs. A TTL that no longer fits is capped.
    pub(crate) fn retime_tails(&mut self, f: impl Fn(Millis) -> Option<Millis>) -> Vec<(Millis, ReadyKey)> {
        let mut out = Vec::new();
        for (p, t) in self.tails.iter_mut() {
            for s in t.slots.iter_mut().filter(|s| !s.dead()) {
                let at = f(s.enqueued_at);
                s.ttl = at.map_or(NO_TTL, |at| {
                    u32::try_from(at.saturating_sub(s.enqueued_at)).unwrap_or(NO_TTL - 1).min(NO_TTL - 1)
                });
                if let Some(at) = s.expires_at() {
                    out.push((at, (*p, s.seq)));
                }
            }
        }
        out
    }

    /// Drop every head entry.
    pub(crate) fn clear_head(&mut self) {
        self.head.clear();
    }

    /// Empty the tails, returning the places of their records (for the caller to forget).
    pub(crate) fn clear_tails(&mut self) -> Vec<Detached> {
        self.groups.clear();
        self.tail_live = 0;
        let tails = std::mem::take(&mut self.tails);
        tails.into_values().flat_map(|t| t.slots.into_iter().filter(|s| !s.dead()).map(|s| s.at)).collect()
    }
}

/// Merge two ascending key streams.
pub(crate) struct Merge<A: Iterator<Item = ReadyKey>, B: Iterator<Item = ReadyKey>> {
    pub(crate) a: Peekable<A>,
    pub(crate) b: Peekable<B>,
}

impl<A: Iterator<Item = ReadyKey>, B: Iterator<Item = ReadyKey>> Iterator for Merge<A, B> {
    type Item = ReadyKey;
    fn next(&mut self) -> Option<ReadyKey> {
        match (self.a.peek(), self.b.peek()) {
            (Some(a), Some(b)) if b < a => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slim(seq: Seq) -> Slim {
        Slim::pack(&SlimParts {
            seq,
            enqueued_at: 5,
            at: Detached { segment: 1, offset: seq as u32 },
            size: 10,
            expires_at: None,
            redelivered: false,
            marked: false,
        })
        .expect("fits")
    }

    #[test]
    fn a_slim_record_is_32_bytes_and_round_trips() {
        assert_eq!(std::mem::size_of::<Slim>(), 32);
        let p = SlimParts {
            seq: 7,
            enqueued_at: 1000,
            at: Detached { segment: 3, offset: 4096 },
            size: 1024,
            expires_at: Some(61_000),
            redelivered: true,
            marked: true,
        };
        assert_eq!(Slim::pack(&p).expect("fits").parts(), p);
        assert!(Slim::pack(&SlimParts { size: 1 << 30, ..p }).is_none());
        assert!(Slim::pack(&SlimParts { expires_at: Some(u64::MAX), ..p }).is_none());
    }

    #[test]
    fn head_and_tails_merge_in_delivery_order_and_tombstones_are_skipped() {
        let mut r: ReadySet<&str> = ReadySet::default();
        r.insert_head((Reverse(0), 1), "h1");
        r.push_tail(0, slim(3), None);
        r.push_tail(0, slim(5), Some(Arc::from("g")));
        r.push_tail(0, slim(6), None);
        r.insert_head((Reverse(0), 4), "h4");
        r.push_tail(9, slim(8), None);
        assert_eq!(r.len(), 6);
        let keys: Vec<_> = r.keys().map(|(p, s)| (p.0, s)).collect();
        assert_eq!(keys, [(9, 8), (0, 1), (0, 3), (0, 4), (0, 5), (0, 6)]);
        assert_eq!(r.first_key(), Some((Reverse(9), 8)));
        // Take one from the middle of a tail: tombstoned, skipped, its group handed back.
        match r.remove((Reverse(0), 5)) {
            Some(Taken::Tail(0, p, Some(g))) => assert_eq!((p.seq, &*g), (5, "g")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(r.remove((Reverse(0), 5)).is_none(), "a tombstone is not taken twice");
        let keys: Vec<_> = r.keys().map(|(_, s)| s).collect();
        assert_eq!(keys, [8, 1, 3, 4, 6]);
        assert!(!r.can_join_tail((Reverse(0), 6)));
        assert!(r.can_join_tail((Reverse(0), 7)));
        assert!(matches!(r.pop_tail_front(), Some(((Reverse(9), 8), Taken::Tail(9, _, None)))));
        assert!(!r.has_tail(9));
        let left = r.clear_tails();
        assert_eq!(left.iter().map(|d| d.offset).collect::<Vec<_>>(), [3, 6]);
        r.clear_head();
        assert!(r.is_empty());
    }
}
