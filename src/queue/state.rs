//! The queue as a deterministic state machine.
//!
//! Commands go in (`publish`, `get`, `add_consumer`, `ack`, `requeue`,
//! `reject`, `tick(now)`...), effects come out ([`Effect`]): deliveries to
//! consumers, dead letters, queue expiry. Nothing here touches a clock, a
//! socket or a lock; the runtime wrapper in `queue/mod.rs` does.
//!
//! Every delivery to a consumer that must acknowledge is a *lease*. A lease
//! ends with `ack` (gone), `requeue` (back at its original position, flagged
//! redelivered), `reject` (dead-lettered or dropped), or the lease deadline
//! passing (`tick` requeues it: SQS visibility timeout, or a queue's default
//! lease timeout).
//!
//! Invariants worth naming:
//! - A message is in exactly one of `ready`, `delayed`, `leases`.
//! - `ready` is ordered by (priority descending, publish sequence), so a
//!   requeued message goes back to where it was.
//! - `expiry` indexes exactly the `ready` entries that have a TTL.
//! - In FIFO mode, a group with a leased message delivers nothing else.
//! - A standard queue whose messages carry groups is a *fair* queue: tenants (groups) that
//!   crowd the in-flight messages or the consumers' time are served after quiet ones
//!   (see `groups.rs`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::message::Message;
use crate::queue::config::{Overflow, QueueConfig};
use crate::queue::groups::{FairShare, GroupIndex};
use crate::queue::ready::{ReadyKey, ReadySet, Slim, SlimParts, Taken};
use crate::store::Persisted;
use crate::store::log::Detached;
use crate::time::Millis;

/// Position of a message in publish order within one queue.
pub type Seq = u64;
/// Identifies one lease; a message leased twice gets two ids, so a stale ack can't settle a newer lease.
pub type LeaseId = u64;
/// Identifies a consumer broker-wide.
pub type ConsumerId = u64;

/// Why a message is dead-lettered; the strings are RabbitMQ's `x-death` reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    /// Rejected or nacked without requeue.
    Rejected,
    /// Its TTL passed.
    Expired,
    /// Dropped by `x-max-length`/`-bytes`.
    MaxLen,
    /// Delivered more times than the delivery limit.
    DeliveryLimit,
}

impl DeathReason {
    /// The `x-death` reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxLen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Per-publish options beyond the message itself.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Extra delay before the message becomes ready (SQS per-message `DelaySeconds`).
    pub delay: Option<Millis>,
    /// FIFO message group.
    pub group: Option<Arc<str>>,
    /// FIFO deduplication id.
    pub dedup_id: Option<String>,
}

/// What happened to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The queue took the message.
    Accepted,
    /// A message with the same deduplication id is inside the window; accepted, not stored twice.
    Duplicate,
    /// The queue is full and refuses publishes (`reject-publish`).
    Rejected,
}

/// One delivery handed to a consumer or a `get`.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The lease to settle; `None` when the delivery needed no acknowledgement.
    pub lease: Option<LeaseId>,
    /// The message.
    pub message: Arc<Message>,
    /// True if this message was delivered before.
    pub redelivered: bool,
    /// How many times it has been delivered, this time included (SQS `ApproximateReceiveCount`).
    pub delivery_count: u32,
    /// When it was first delivered (SQS `ApproximateFirstReceiveTimestamp`).
    pub first_delivered_at: Millis,
    /// When it was enqueued (SQS `SentTimestamp`).
    pub enqueued_at: Millis,
    /// Publish sequence number within this queue.
    pub seq: Seq,
    /// FIFO group, if any.
    pub group: Option<Arc<str>>,
}

/// An output of the state machine for the runtime to carry out.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Hand `delivery` to `consumer`.
    Deliver {
        /// Recipient.
        consumer: ConsumerId,
        /// What to hand over.
        delivery: Delivery,
    },
    /// Republish `message` to the dead-letter exchange.
    DeadLetter {
        /// The message as it was in this queue.
        message: Arc<Message>,
        /// Why.
        reason: DeathReason,
    },
    /// The queue was unused for its `x-expires` period and must be deleted.
    QueueExpired,
    /// The last consumer of an auto-delete queue went away.
    AutoDelete,
}

/// A credit pool shared by several consumers (AMQP `basic.qos` with `global`).
#[derive(Debug, Default)]
pub struct SharedCredit {
    limit: AtomicU32,
    used: AtomicU32,
}

impl SharedCredit {
    /// A pool allowing `limit` unsettled deliveries (0 = unlimited).
    pub fn new(limit: u32) -> Arc<SharedCredit> {
        Arc::new(SharedCredit { limit: AtomicU32::new(limit), used: AtomicU32::new(0) })
    }
    /// Change the limit.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }
    fn has_room(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        limit == 0 || self.used.load(Ordering::Relaxed) < limit
    }
    fn take(&self) {
        self.used.fetch_add(1, Ordering::Relaxed);
    }
    fn give(&self) {
        // Saturating: a limit change never makes `used` wrap.
        let _ = self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.saturating_sub(1)));
    }
}

/// Moves message bodies between memory and disk so a long queue keeps only a
/// small index in memory. Implemented over the message log by the runtime; the
/// state machine decides *when* (bodies beyond a queue's resident budget, taken
/// from the tail) and stays free of I/O itself.
pub trait Pager: Send + Sync + std::fmt::Debug {
    /// Write a message that has no on-disk copy yet, returning its handle.
    fn page_out(&self, message: &Message, enqueued_at: Millis) -> Option<Persisted>;
    /// Read a paged-out message back.
    fn page_in(&self, persisted: &Persisted) -> Option<Arc<Message>>;
    /// Take back a record given up with [`Persisted::detach`] (for a compact index entry).
    fn attach(&self, at: Detached, delivered: bool) -> Persisted;
    /// Record that a detached record is gone.
    fn forget(&self, at: Detached);
}

/// Stands in for a body that is on disk only (see [`Pager`]); never delivered.
fn paged_placeholder() -> Arc<Message> {
    static PLACEHOLDER: std::sync::OnceLock<Arc<Message>> = std::sync::OnceLock::new();
    Arc::clone(
        PLACEHOLDER
            .get_or_init(|| Arc::new(Message::new("", "", crate::message::Properties::default(), bytes::Bytes::new()))),
    )
}

/// A per-consumer message filter (JMS/ActiveMQ selectors). A message a consumer's
/// filter rejects stays in the queue for other consumers.
pub trait MessageFilter: Send + Sync + std::fmt::Debug {
    /// True if the consumer wants `message`.
    fn matches(&self, message: &Message) -> bool;
}

/// How many ready messages one filtered dispatch pass looks at, so a consumer whose
/// selector matches nothing can't make every publish scan the whole queue.
const FILTER_SCAN_LIMIT: usize = 4096;

/// How a consumer takes deliveries.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Broker-wide id.
    pub id: ConsumerId,
    /// Most unsettled leases at once (AMQP prefetch); 0 = unlimited.
    pub prefetch: u32,
    /// Deliveries need no settlement (AMQP `no-ack`, STOMP `ack:auto`).
    pub auto_ack: bool,
    /// Consumer priority (`x-priority`); higher is served first while it has credit.
    pub priority: i32,
    /// A pool shared with other consumers, checked in addition to `prefetch`.
    pub shared_credit: Option<Arc<SharedCredit>>,
    /// Only messages this filter accepts are delivered to the consumer.
    pub filter: Option<Arc<dyn MessageFilter>>,
}

/// Most deliveries handed to a consumer that its front-end has not yet written out.
/// Bounds memory for auto-ack and unlimited-prefetch consumers on slow sockets.
pub const MAX_UNWRITTEN: u32 = 512;

#[derive(Debug)]
struct ConsumerSlot {
    spec: ConsumerSpec,
    unsettled: u32,
    unwritten: u32,
}

impl ConsumerSlot {
    fn can_take(&self) -> bool {
        (self.spec.auto_ack || self.spec.prefetch == 0 || self.unsettled < self.spec.prefetch)
            && self.unwritten < MAX_UNWRITTEN
            && self.spec.shared_credit.as_ref().is_none_or(|c| c.has_room())
    }
}

#[derive(Debug)]
struct Entry {
    /// The message; [`paged_placeholder`] while `paged`.
    message: Arc<Message>,
    /// The body is on disk only (see [`Pager`]).
    paged: bool,
    /// The message's place in the message log; dropping the entry forgets it there.
    persisted: Option<Persisted>,
    seq: Seq,
    priority: u8,
    size: u64,
    enqueued_at: Millis,
    expires_at: Option<Millis>,
    delivery_count: u32,
    first_delivered_at: Option<Millis>,
    redelivered: bool,
    group: Option<Arc<str>>,
}

impl Entry {
    fn key(&self) -> ReadyKey {
        (Reverse(self.priority), self.seq)
    }
}

#[derive(Debug)]
struct Lease {
    entry: Entry,
    consumer: Option<ConsumerId>,
    deadline: Option<Millis>,
    /// When it was leased (fair queues count the time it is held).
    since: Millis,
}

/// Hashes lease and consumer ids for the queue's maps: one multiply instead of SipHash
/// (both are counters the broker hands out, so there is nothing to defend against). The
/// multiplier spreads a counter's low bits into the high bits the hash table probes with.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Counters a queue reports (AMQP declare-ok, management, SQS attributes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages ready for delivery.
    pub ready: u64,
    /// Messages leased and not yet settled.
    pub unacked: u64,
    /// Messages waiting for their delay to pass.
    pub delayed: u64,
    /// Body bytes of ready messages.
    pub ready_bytes: u64,
    /// Registered consumers.
    pub consumers: u32,
}

/// The queue's state. See the module documentation.
#[derive(Debug)]
pub struct QueueState {
    config: QueueConfig,
    next_seq: Seq,
    next_lease: LeaseId,
    /// Ready messages: full entries in memory plus compact records of paged-out ones.
    ready: ReadySet<Entry>,
    ready_bytes: u64,
    expiry: BTreeSet<(Millis, ReadyKey)>,
    delayed: BTreeMap<(Millis, Seq), Entry>,
    leases: HashMap<LeaseId, Lease, BuildHasherDefault<IdHasher>>,
    lease_deadlines: BTreeSet<(Millis, LeaseId)>,
    leased_groups: HashMap<Arc<str>, u32>,
    /// Ready keys by group, so FIFO and fair picks skip groups, not messages.
    groups: GroupIndex,
    /// Recent processing time per tenant (fair queues).
    fair: FairShare,
    dedup: HashMap<String, Millis>,
    dedup_expiry: BTreeSet<(Millis, String)>,
    consumers: Vec<ConsumerSlot>,
    cursor: usize,
    had_consumer: bool,
    last_used: Millis,
    pager: Option<Arc<dyn Pager>>,
    /// Body bytes of ready messages kept in memory before new ones are paged out.
    resident_budget: u64,
    /// Body bytes of ready messages in memory.
    resident_bytes: u64,
}

impl Drop for QueueState {
    fn drop(&mut self) {
        // Compact records own their log records like `Persisted` handles do.
        self.forget_tails();
    }
}

impl QueueState {
    /// A new, empty queue created at `now`.
    pub fn new(config: QueueConfig, now: Millis) -> QueueState {
        QueueState {
            config,
            next_seq: 1,
            next_lease: 1,
            ready: ReadySet::default(),
            ready_bytes: 0,
            expiry: BTreeSet::new(),
            delayed: BTreeMap::new(),
            leases: HashMap::default(),
            lease_deadlines: BTreeSet::new(),
            leased_groups: HashMap::new(),
            groups: GroupIndex::default(),
            fair: FairShare::default(),
            dedup: HashMap::new(),
            dedup_expiry: BTreeSet::new(),
            consumers: Vec::new(),
            cursor: 0,
            had_consumer: false,
            last_used: now,
            pager: None,
            resident_budget: u64::MAX,
            resident_bytes: 0,
        }
    }

    /// Page bodies beyond `resident_budget` bytes of ready messages out through `pager`.
    pub fn enable_paging(&mut self, pager: Arc<dyn Pager>, resident_budget: u64) {
        self.pager = Some(pager);
        self.resident_budget = resident_budget.max(1);
    }

    /// Ready messages whose bodies are on disk only.
    pub fn paged_count(&self) -> usize {
        self.ready.tail_len()
    }

    /// The queue's configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Replace the configuration at `now` (a queue's settings changed after declare).
    /// A changed message TTL applies to the messages already queued, counted from when
    /// each was enqueued, so lowering it expires them. (A paged-out message's own
    /// per-message TTL is not re-read; only the queue TTL is reapplied to it.)
    pub fn set_config(&mut self, config: QueueConfig, now: Millis, fx: &mut Vec<Effect>) {
        let ttl_changed = config.message_ttl != self.config.message_ttl;
        self.config = config;
        if ttl_changed {
            let queue_ttl = self.config.message_ttl;
            let ttl_of = |e: &Entry| {
                let own = if e.paged { None } else { e.message.properties.ttl_ms() };
                match (queue_ttl, own) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
                .map(|t| e.enqueued_at.saturating_add(t))
            };
            self.expiry.clear();
            for (key, e) in self.ready.head_mut() {
                e.expires_at = ttl_of(e);
                if let Some(at) = e.expires_at {
                    self.expiry.insert((at, *key));
                }
            }
            self.expiry.extend(self.ready.retime_tails(|enqueued_at| queue_ttl.map(|t| enqueued_at.saturating_add(t))));
            for e in self.delayed.values_mut() {
                e.expires_at = ttl_of(e);
            }
            for l in self.leases.values_mut() {
                l.entry.expires_at = ttl_of(&l.entry);
            }
        }
        self.tick(now, fx);
    }

    /// Current counters.
    pub fn counts(&self) -> QueueCounts {
        QueueCounts {
            ready: self.ready.len() as u64,
            unacked: self.leases.len() as u64,
            delayed: self.delayed.len() as u64,
            ready_bytes: self.ready_bytes,
            consumers: self.consumers.len() as u32,
        }
    }

    /// Record a use of the queue (declare, get, consume) for `x-expires`.
    pub fn touch(&mut self, now: Millis) {
        self.last_used = now;
    }

    /// Accept a message published at `now`.
    pub fn publish(
        &mut self,
        message: Arc<Message>,
        opts: PublishOptions,
        persisted: Option<Persisted>,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) -> Enqueued {
        if self.config.fifo
            && let Some(id) = &opts.dedup_id
        {
            self.prune_dedup(now);
            if self.dedup.contains_key(id) {
                return Enqueued::Duplicate;
            }
            let until = now + self.config.dedup_window;
            self.dedup.insert(id.clone(), until);
            self.dedup_expiry.insert((until, id.clone()));
        }
        let size = message.body.len() as u64;
        if self.config.overflow != Overflow::DropHead && self.would_overflow(size) {
            if self.config.overflow == Overflow::RejectPublishDlx {
                self.dead_letter(message, DeathReason::MaxLen, fx);
            }
            return Enqueued::Rejected;
        }
        let priority = match self.config.max_priority {
            Some(max) => message.properties.priority.unwrap_or(0).min(max),
            None => 0,
        };
        let ttl = match (self.config.message_ttl, message.properties.ttl_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let entry = Entry {
            seq: self.next_seq,
            priority,
            size,
            enqueued_at: now,
            expires_at: ttl.map(|t| now.saturating_add(t)),
            delivery_count: 0,
            first_delivered_at: None,
            redelivered: false,
            group: opts.group,
            message,
            paged: false,
            persisted,
        };
        self.next_seq += 1;
        match opts.delay.or(self.config.delivery_delay).filter(|d| *d > 0) {
            Some(delay) => {
                self.delayed.insert((now.saturating_add(delay), entry.seq), entry);
            }
            None => {
                if let Some(entry) = self.hand_over(entry, now, fx) {
                    self.insert_ready(entry);
                    self.dispatch(now, fx);
                }
                self.enforce_limits(fx);
                self.expire(now, fx);
            }
        }
        Enqueued::Accepted
    }

    /// Give a fresh message straight to a consumer when nothing is ready before it, instead of
    /// inserting it into the ready set only to take it out again (the steady state of a queue
    /// whose consumers keep up). Hands the entry back when it has to queue: messages are
    /// ready, a consumer filters, its FIFO group is leased, or no consumer has credit.
    fn hand_over(&mut self, entry: Entry, now: Millis, fx: &mut Vec<Effect>) -> Option<Entry> {
        let blocked = self.config.fifo && entry.group.as_ref().is_some_and(|g| self.leased_groups.contains_key(g));
        if !self.ready.is_empty() || blocked || self.consumers.iter().any(|c| c.spec.filter.is_some()) {
            return Some(entry);
        }
        let Some(idx) = self.pick_consumer() else { return Some(entry) };
        // A fresh message expires at or after `now`; like `dispatch`, a TTL of 0 still reaches
        // a consumer waiting at the instant it is published.
        self.hand_to(idx, entry, now, fx);
        None
    }

    /// Put back a message recovered from the message log at start-up, in log order.
    /// Its TTL still counts from when it was first enqueued.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        &mut self,
        message: Arc<Message>,
        persisted: Persisted,
        redelivered: bool,
        enqueued_at: Millis,
        group: Option<Arc<str>>,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let priority = match self.config.max_priority {
            Some(max) => message.properties.priority.unwrap_or(0).min(max),
            None => 0,
        };
        let ttl = match (self.config.message_ttl, message.properties.ttl_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let entry = Entry {
            seq: self.next_seq,
            priority,
            size: message.body.len() as u64,
            enqueued_at,
            expires_at: ttl.map(|t| enqueued_at.saturating_add(t)),
            delivery_count: u32::from(redelivered),
            first_delivered_at: None,
            redelivered,
            group,
            message,
            paged: false,
            persisted: Some(persisted),
        };
        self.next_seq += 1;
        self.insert_ready(entry);
        self.expire(now, fx);
    }

    fn would_overflow(&self, size: u64) -> bool {
        self.config.max_length.is_some_and(|max| self.ready.len() as u64 >= max)
            || self.config.max_length_bytes.is_some_and(|max| self.ready_bytes + size > max)
    }

    fn enforce_limits(&mut self, fx: &mut Vec<Effect>) {
        loop {
            let over_len = self.config.max_length.is_some_and(|max| self.ready.len() as u64 > max);
            let over_bytes = self.config.max_length_bytes.is_some_and(|max| self.ready_bytes > max);
            if !(over_len || over_bytes) {
                return;
            }
            let Some(key) = self.ready.first_key() else { return };
            if let Some(entry) = self.take_ready(key) {
                self.dead_letter_entry(entry, DeathReason::MaxLen, fx);
            }
        }
    }

    fn insert_ready(&mut self, entry: Entry) {
        // Only fresh entries become compact records: a requeued one keeps its delivery
        // history in a full entry (and goes back near the head anyway).
        let key = entry.key();
        let group = entry.group.clone();
        let to_tail = self.pager.is_some()
            && entry.first_delivered_at.is_none()
            && self.ready.can_join_tail(key)
            && (self.ready.has_tail(entry.priority) || self.resident_bytes + entry.size > self.resident_budget);
        let entry = match if to_tail { self.slim_down(entry) } else { Err(entry) } {
            Ok(()) => return self.index_group(key, group),
            Err(e) => e,
        };
        // Everything in the head has its body in memory.
        let Some(entry) = self.page_in(entry) else { return };
        if let Some(at) = entry.expires_at {
            self.expiry.insert((at, key));
        }
        self.ready_bytes += entry.size;
        self.resident_bytes += entry.size;
        self.ready.insert_head(key, entry);
        self.index_group(key, group);
    }

    /// Record a message that just became ready in the group index.
    fn index_group(&mut self, key: ReadyKey, group: Option<Arc<str>>) {
        if group.is_none() && !self.groups.is_active() {
            return;
        }
        let ready = &self.ready;
        self.groups.insert(key, group.as_ref(), || ready.keys());
    }

    /// Keep `entry` as a compact record with its body on disk only; gives it back when it
    /// cannot be (no pager, paging write failed, too large a body or TTL).
    fn slim_down(&mut self, mut entry: Entry) -> Result<(), Entry> {
        let Some(pager) = &self.pager else { return Err(entry) };
        if entry.persisted.is_none() {
            entry.persisted = pager.page_out(&entry.message, entry.enqueued_at);
        }
        let Some(persisted) = entry.persisted.take() else { return Err(entry) };
        let mut parts = SlimParts {
            seq: entry.seq,
            enqueued_at: entry.enqueued_at,
            at: Detached { segment: 0, offset: 0 },
            size: entry.size,
            expires_at: entry.expires_at,
            redelivered: entry.redelivered,
            marked: persisted.delivered(),
        };
        if Slim::pack(&parts).is_none() {
            entry.persisted = Some(persisted);
            return Err(entry);
        }
        (parts.at, parts.marked) = persisted.detach();
        let Some(slim) = Slim::pack(&parts) else {
            // Unreachable: the same parts packed a moment ago. Keep the record owned.
            entry.persisted = self.pager.as_ref().map(|p| p.attach(parts.at, parts.marked));
            return Err(entry);
        };
        let key = entry.key();
        if let Some(at) = entry.expires_at {
            self.expiry.insert((at, key));
        }
        self.ready_bytes += entry.size;
        self.ready.push_tail(entry.priority, slim, entry.group.take());
        Ok(())
    }

    /// A full (paged) entry for a compact record taken out of a tail.
    fn unslim(&self, priority: u8, p: SlimParts, group: Option<Arc<str>>) -> Entry {
        Entry {
            message: paged_placeholder(),
            paged: true,
            persisted: self.pager.as_ref().map(|pager| pager.attach(p.at, p.marked)),
            seq: p.seq,
            priority,
            size: p.size,
            enqueued_at: p.enqueued_at,
            expires_at: p.expires_at,
            delivery_count: u32::from(p.redelivered),
            first_delivered_at: None,
            redelivered: p.redelivered,
            group,
        }
    }

    /// Forget every compact record (the queue is purged or gone).
    fn forget_tails(&mut self) {
        let left = self.ready.clear_tails();
        if let Some(pager) = &self.pager {
            for at in left {
                pager.forget(at);
            }
        }
    }

    /// Take an entry out of `ready` without reading a paged body back.
    fn take_ready(&mut self, key: ReadyKey) -> Option<Entry> {
        let entry = match self.ready.remove(key)? {
            Taken::Head(e) => {
                self.resident_bytes -= e.size;
                e
            }
            Taken::Tail(priority, parts, group) => self.unslim(priority, parts, group),
        };
        if let Some(at) = entry.expires_at {
            self.expiry.remove(&(at, key));
        }
        if self.groups.is_active() {
            self.groups.remove(key, entry.group.as_ref());
        }
        self.ready_bytes -= entry.size;
        self.refill();
        Some(entry)
    }

    /// Take an entry out of `ready` with its body in memory (for delivery).
    fn remove_ready(&mut self, key: ReadyKey) -> Option<Entry> {
        let entry = self.take_ready(key)?;
        self.page_in(entry)
    }

    /// Bring a paged entry's body back; on an I/O failure the message is lost (logged).
    fn page_in(&self, mut entry: Entry) -> Option<Entry> {
        if !entry.paged {
            return Some(entry);
        }
        let loaded = match (&self.pager, &entry.persisted) {
            (Some(pager), Some(p)) => pager.page_in(p),
            _ => None,
        };
        match loaded {
            Some(m) => {
                entry.message = m;
                entry.paged = false;
                Some(entry)
            }
            None => {
                tracing::error!(seq = entry.seq, "a paged-out message could not be read back; it is lost");
                None
            }
        }
    }

    /// Read bodies back from the front of the tails while under half the budget, so
    /// deliveries rarely wait for a read.
    fn refill(&mut self) {
        const MAX_PER_CALL: usize = 256;
        if self.ready.tail_len() == 0 || self.resident_bytes >= self.resident_budget / 2 {
            return;
        }
        for _ in 0..MAX_PER_CALL {
            if self.resident_bytes >= self.resident_budget {
                return;
            }
            let Some((key, Taken::Tail(priority, parts, group))) = self.ready.pop_tail_front() else { return };
            self.bring_in(key, self.unslim(priority, parts, group));
        }
    }

    /// Put an entry just taken from a tail into the head with its body in memory.
    fn bring_in(&mut self, key: ReadyKey, entry: Entry) {
        let (size, expires_at, group) = (entry.size, entry.expires_at, entry.group.clone());
        match self.page_in(entry) {
            Some(e) => {
                self.resident_bytes += size;
                self.ready.insert_head(key, e);
            }
            None => {
                self.groups.remove(key, group.as_ref());
                self.ready_bytes -= size;
                if let Some(at) = expires_at {
                    self.expiry.remove(&(at, key));
                }
            }
        }
    }

    /// Make the ready entry at `key` resident (a filter needs its headers).
    fn ensure_resident(&mut self, key: ReadyKey) {
        if self.ready.in_head(&key) {
            return;
        }
        if let Some(Taken::Tail(priority, parts, group)) = self.ready.remove(key) {
            let entry = self.unslim(priority, parts, group);
            self.bring_in(key, entry);
        }
    }

    fn dead_letter(&self, message: Arc<Message>, reason: DeathReason, fx: &mut Vec<Effect>) {
        if self.wants_dead_letter(reason) {
            fx.push(Effect::DeadLetter { message, reason });
        }
    }

    /// True if a message dying for `reason` goes to the dead-letter exchange.
    fn wants_dead_letter(&self, reason: DeathReason) -> bool {
        self.config.dead_letter_exchange.is_some() && !(reason == DeathReason::Expired && self.config.drop_expired)
    }

    /// Dead-letter an entry that may be paged: its body is read back only if a DLX wants it.
    fn dead_letter_entry(&self, entry: Entry, reason: DeathReason, fx: &mut Vec<Effect>) {
        if self.wants_dead_letter(reason)
            && let Some(e) = self.page_in(entry)
        {
            fx.push(Effect::DeadLetter { message: e.message, reason });
        }
    }

    /// The ready message to deliver next at `now`: the first in order, except that a FIFO
    /// queue skips groups with a leased message and a fair queue serves quiet tenants first.
    fn next_deliverable(&self, now: Millis) -> Option<ReadyKey> {
        if !self.groups.is_active() {
            return self.ready.first_key();
        }
        if self.config.fifo {
            return self.groups.first_where(|g| self.leased_groups.contains_key(g));
        }
        self.next_fair(now)
    }

    /// A fair queue's pick (SQS fair queues): the first message of a tenant that is not a
    /// noisy neighbour (messages without a group are tenants of their own); when only noisy
    /// tenants have messages ready, the one with the fewest in flight.
    fn next_fair(&self, now: Millis) -> Option<ReadyKey> {
        let in_flight = |g: &Arc<str>| self.leased_groups.get(g).copied().unwrap_or(0);
        let noisy = |g: &Arc<str>| self.fair.is_noisy(g, in_flight(g), self.leases.len(), now);
        if let Some(key) = self.groups.first_where(noisy) {
            return Some(key);
        }
        // Every group left is noisy, and at most a few can be (each holds > 10% of something).
        self.groups.heads().min_by_key(|(key, g)| (in_flight(g), *key)).map(|(key, _)| key)
    }

    /// Pick the consumer for the next delivery: the highest priority among those with
    /// credit, round-robin within it. With single-active-consumer only the first may take.
    fn pick_consumer(&self) -> Option<usize> {
        if self.config.single_active_consumer {
            return self.consumers.first().filter(|c| c.can_take()).map(|_| 0);
        }
        let n = self.consumers.len();
        let best = self.consumers.iter().filter(|c| c.can_take()).map(|c| c.spec.priority).max()?;
        (0..n)
            .map(|i| (self.cursor + i) % n)
            .find(|&i| self.consumers[i].spec.priority == best && self.consumers[i].can_take())
    }

    /// Like `pick_consumer`, restricted to consumers whose filter accepts `message`.
    fn pick_consumer_for(&self, message: &Message) -> Option<usize> {
        let accepts = |c: &ConsumerSlot| c.can_take() && c.spec.filter.as_ref().is_none_or(|f| f.matches(message));
        if self.config.single_active_consumer {
            return self.consumers.first().filter(|c| accepts(c)).map(|_| 0);
        }
        let n = self.consumers.len();
        let best = self.consumers.iter().filter(|c| accepts(c)).map(|c| c.spec.priority).max()?;
        (0..n)
            .map(|i| (self.cursor + i) % n)
            .find(|&i| self.consumers[i].spec.priority == best && accepts(&self.consumers[i]))
    }

    /// Dispatch when some consumer has a filter: walk the ready messages in order and
    /// give each to a consumer that wants it; messages nobody wants stay put.
    fn dispatch_filtered(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        let keys: Vec<ReadyKey> = self.ready.keys().take(FILTER_SCAN_LIMIT).collect();
        let mut taken_groups: Vec<Arc<str>> = Vec::new();
        for key in keys {
            if !self.consumers.iter().any(ConsumerSlot::can_take) {
                return;
            }
            self.ensure_resident(key);
            let Some(entry) = self.ready.get_head(&key) else { continue };
            if self.config.fifo
                && let Some(g) = &entry.group
                && (self.leased_groups.contains_key(g) || taken_groups.contains(g))
            {
                continue;
            }
            let Some(idx) = self.pick_consumer_for(&entry.message) else {
                if let Some(g) = entry.group.clone() {
                    // A FIFO group's later messages must not overtake this one.
                    taken_groups.push(g);
                }
                continue;
            };
            let Some(entry) = self.remove_ready(key) else { continue };
            if entry.expires_at.is_some_and(|at| at < now) {
                self.dead_letter(entry.message, DeathReason::Expired, fx);
                continue;
            }
            self.hand_to(idx, entry, now, fx);
        }
    }

    /// Hand ready messages to consumers with credit.
    fn dispatch(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        if self.consumers.iter().any(|c| c.spec.filter.is_some()) {
            return self.dispatch_filtered(now, fx);
        }
        while !self.ready.is_empty() {
            let Some(idx) = self.pick_consumer() else { return };
            let Some(key) = self.next_deliverable(now) else { return };
            let Some(entry) = self.remove_ready(key) else { continue };
            // `<`, not `<=`: a TTL-0 message may still go to a consumer waiting at the
            // instant it is published, as in RabbitMQ.
            if entry.expires_at.is_some_and(|at| at < now) {
                self.dead_letter(entry.message, DeathReason::Expired, fx);
                continue;
            }
            self.hand_to(idx, entry, now, fx);
        }
    }

    /// Deliver `entry` to the consumer at `idx`, charging its credit.
    fn hand_to(&mut self, idx: usize, entry: Entry, now: Millis, fx: &mut Vec<Effect>) {
        self.cursor = (idx + 1) % self.consumers.len().max(1);
        let slot = &mut self.consumers[idx];
        slot.unwritten += 1;
        if !slot.spec.auto_ack {
            slot.unsettled += 1;
            if let Some(c) = &slot.spec.shared_credit {
                c.take();
            }
        }
        let (id, auto_ack) = (slot.spec.id, slot.spec.auto_ack);
        let delivery = self.deliver(entry, !auto_ack, Some(id), self.config.lease_timeout.map(|t| now + t), now);
        fx.push(Effect::Deliver { consumer: id, delivery });
    }

    /// Turn an entry into a delivery, leasing it when it must be settled.
    fn deliver(
        &mut self,
        mut entry: Entry,
        leased: bool,
        consumer: Option<ConsumerId>,
        deadline: Option<Millis>,
        now: Millis,
    ) -> Delivery {
        entry.delivery_count += 1;
        if let Some(p) = entry.persisted.as_mut() {
            p.mark_delivered();
        }
        let first = *entry.first_delivered_at.get_or_insert(now);
        if !leased {
            // Nothing keeps the entry: move its message out rather than count references.
            let (redelivered, delivery_count, enqueued_at, seq) =
                (entry.redelivered, entry.delivery_count, entry.enqueued_at, entry.seq);
            let Entry { message, group, .. } = entry;
            return Delivery {
                lease: None,
                message,
                redelivered,
                delivery_count,
                first_delivered_at: first,
                enqueued_at,
                seq,
                group,
            };
        }
        let mut delivery = Delivery {
            lease: None,
            message: Arc::clone(&entry.message),
            redelivered: entry.redelivered,
            delivery_count: entry.delivery_count,
            first_delivered_at: first,
            enqueued_at: entry.enqueued_at,
            seq: entry.seq,
            group: entry.group.clone(),
        };
        if leased {
            let id = self.next_lease;
            self.next_lease += 1;
            if let Some(g) = &entry.group {
                *self.leased_groups.entry(Arc::clone(g)).or_insert(0) += 1;
            }
            if let Some(at) = deadline {
                self.lease_deadlines.insert((at, id));
            }
            self.leases.insert(id, Lease { entry, consumer, deadline, since: now });
            delivery.lease = Some(id);
        }
        delivery
    }

    /// Pull one message (AMQP `basic.get`, SQS `ReceiveMessage`). `deadline` overrides the
    /// queue's lease timeout for this lease (SQS `VisibilityTimeout`).
    pub fn get(
        &mut self,
        auto_ack: bool,
        deadline: Option<Millis>,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) -> Option<Delivery> {
        self.last_used = now;
        self.expire(now, fx);
        loop {
            let key = self.next_deliverable(now)?;
            let entry = self.remove_ready(key)?;
            if entry.expires_at.is_some_and(|at| at <= now) {
                self.dead_letter(entry.message, DeathReason::Expired, fx);
                continue;
            }
            let deadline = deadline.or(self.config.lease_timeout.map(|t| now + t));
            return Some(self.deliver(entry, !auto_ack, None, deadline, now));
        }
    }

    /// Pull up to `max` messages at once (SQS `ReceiveMessage`). In FIFO mode a group with a
    /// message leased before this call is skipped, but the call may take several consecutive
    /// messages of a group it opens itself, in order (one SQS receive may return several
    /// messages of one group).
    pub fn get_batch(
        &mut self,
        max: usize,
        auto_ack: bool,
        deadline: Option<Millis>,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        if !self.config.fifo {
            while out.len() < max {
                match self.get(auto_ack, deadline, now, fx) {
                    Some(d) => out.push(d),
                    None => break,
                }
            }
            return out;
        }
        self.last_used = now;
        self.expire(now, fx);
        let blocked: std::collections::HashSet<Arc<str>> = self.leased_groups.keys().cloned().collect();
        while out.len() < max {
            let next = match self.groups.is_active() {
                true => self.groups.first_where(|g| blocked.contains(g)),
                false => self.ready.first_key(),
            };
            let Some(key) = next else { break };
            let Some(entry) = self.remove_ready(key) else { continue };
            if entry.expires_at.is_some_and(|at| at <= now) {
                self.dead_letter(entry.message, DeathReason::Expired, fx);
                continue;
            }
            let deadline = deadline.or(self.config.lease_timeout.map(|t| now + t));
            out.push(self.deliver(entry, !auto_ack, None, deadline, now));
        }
        out
    }

    /// Register a consumer at `now` and deliver what it may take.
    pub fn add_consumer(&mut self, spec: ConsumerSpec, now: Millis, fx: &mut Vec<Effect>) {
        self.consumers.push(ConsumerSlot { spec, unsettled: 0, unwritten: 0 });
        self.had_consumer = true;
        self.last_used = now;
        self.dispatch(now, fx);
    }

    /// Number of consumers.
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// True if `id` is the consumer currently receiving (first registered with single-active-consumer).
    pub fn is_active_consumer(&self, id: ConsumerId) -> bool {
        !self.config.single_active_consumer || self.consumers.first().is_some_and(|c| c.spec.id == id)
    }

    /// Unregister a consumer. Its leases stay leased (AMQP lets a channel ack after
    /// `basic.cancel`); they return when the front-end requeues them.
    pub fn remove_consumer(&mut self, id: ConsumerId, now: Millis, fx: &mut Vec<Effect>) -> bool {
        let Some(idx) = self.consumers.iter().position(|c| c.spec.id == id) else { return false };
        let slot = self.consumers.remove(idx);
        if let Some(c) = &slot.spec.shared_credit {
            for _ in 0..slot.unsettled {
                c.give();
            }
        }
        if self.cursor > idx {
            self.cursor -= 1;
        }
        if self.cursor >= self.consumers.len() {
            self.cursor = 0;
        }
        for lease in self.leases.values_mut() {
            if lease.consumer == Some(id) {
                lease.consumer = None;
            }
        }
        self.last_used = now;
        if self.consumers.is_empty() && self.had_consumer {
            fx.push(Effect::AutoDelete);
        }
        self.dispatch(now, fx);
        true
    }

    /// The front-end wrote `n` deliveries of `consumer` to its client.
    pub fn written(&mut self, consumer: ConsumerId, n: u32, now: Millis, fx: &mut Vec<Effect>) {
        if let Some(slot) = self.consumers.iter_mut().find(|c| c.spec.id == consumer) {
            let was_full = slot.unwritten >= MAX_UNWRITTEN;
            slot.unwritten = slot.unwritten.saturating_sub(n);
            if was_full {
                self.dispatch(now, fx);
            }
        }
    }

    /// Change a consumer's prefetch (AMQP `basic.qos` after `basic.consume`).
    pub fn set_prefetch(&mut self, consumer: ConsumerId, prefetch: u32, now: Millis, fx: &mut Vec<Effect>) {
        if let Some(slot) = self.consumers.iter_mut().find(|c| c.spec.id == consumer) {
            slot.spec.prefetch = prefetch;
        }
        self.dispatch(now, fx);
    }

    /// Re-run delivery, e.g. after a shared credit pool got room.
    pub fn kick(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        self.dispatch(now, fx);
    }

    fn end_lease(&mut self, lease: LeaseId, now: Millis) -> Option<Entry> {
        let l = self.leases.remove(&lease)?;
        if let Some(at) = l.deadline {
            self.lease_deadlines.remove(&(at, lease));
        }
        if let Some(g) = &l.entry.group {
            if let Some(n) = self.leased_groups.get_mut(g) {
                *n -= 1;
                if *n == 0 {
                    self.leased_groups.remove(g);
                }
            }
            if !self.config.fifo {
                self.fair.lease_ended(g, now.saturating_sub(l.since), now);
            }
        }
        if let Some(cid) = l.consumer
            && let Some(slot) = self.consumers.iter_mut().find(|c| c.spec.id == cid)
        {
            slot.unsettled = slot.unsettled.saturating_sub(1);
            if let Some(c) = &slot.spec.shared_credit {
                c.give();
            }
        }
        Some(l.entry)
    }

    /// Settle a lease as done. Returns false for an unknown lease.
    pub fn ack(&mut self, lease: LeaseId, now: Millis, fx: &mut Vec<Effect>) -> bool {
        if self.end_lease(lease, now).is_none() {
            return false;
        }
        self.dispatch(now, fx);
        true
    }

    /// Return a leased message to its original place, flagged redelivered — or
    /// dead-letter it if it reached the delivery limit.
    pub fn requeue(&mut self, lease: LeaseId, now: Millis, fx: &mut Vec<Effect>) -> bool {
        let Some(entry) = self.end_lease(lease, now) else { return false };
        self.return_entry(entry, now, fx);
        self.dispatch(now, fx);
        self.enforce_limits(fx);
        true
    }

    /// Requeue many leases at once (channel closed); order is restored by sequence.
    pub fn requeue_all(&mut self, leases: &[LeaseId], now: Millis, fx: &mut Vec<Effect>) {
        for &l in leases {
            if let Some(entry) = self.end_lease(l, now) {
                self.return_entry(entry, now, fx);
            }
        }
        self.dispatch(now, fx);
        self.enforce_limits(fx);
    }

    fn return_entry(&mut self, mut entry: Entry, now: Millis, fx: &mut Vec<Effect>) {
        entry.redelivered = true;
        if self.config.delivery_limit.is_some_and(|limit| entry.delivery_count > limit) {
            self.dead_letter(entry.message, DeathReason::DeliveryLimit, fx);
            return;
        }
        if entry.expires_at.is_some_and(|at| at <= now) {
            self.dead_letter(entry.message, DeathReason::Expired, fx);
            return;
        }
        self.insert_ready(entry);
    }

    /// Settle a lease as rejected: dead-letter it (or drop it without a DLX).
    pub fn reject(&mut self, lease: LeaseId, now: Millis, fx: &mut Vec<Effect>) -> bool {
        let Some(entry) = self.end_lease(lease, now) else { return false };
        self.dead_letter(entry.message, DeathReason::Rejected, fx);
        self.dispatch(now, fx);
        true
    }

    /// Move a lease's deadline (SQS `ChangeMessageVisibility`); `None` removes it.
    /// A deadline at or before `now` returns the message at once.
    pub fn set_lease_deadline(
        &mut self,
        lease: LeaseId,
        deadline: Option<Millis>,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) -> bool {
        let Some(l) = self.leases.get_mut(&lease) else { return false };
        if let Some(at) = l.deadline.take() {
            self.lease_deadlines.remove(&(at, lease));
        }
        if let Some(at) = deadline {
            l.deadline = Some(at);
            self.lease_deadlines.insert((at, lease));
        }
        self.tick(now, fx);
        true
    }

    /// True if `lease` is outstanding.
    pub fn has_lease(&self, lease: LeaseId) -> bool {
        self.leases.contains_key(&lease)
    }

    /// Remove every ready message; returns how many were removed.
    pub fn purge(&mut self) -> u64 {
        let n = self.ready.len() as u64;
        self.ready.clear_head();
        self.forget_tails();
        self.groups.clear();
        self.expiry.clear();
        self.ready_bytes = 0;
        self.resident_bytes = 0;
        n
    }

    /// End every lease and drop its message (SQS `PurgeQueue` deletes in-flight messages
    /// too; AMQP's `queue.purge` leaves them, so it calls only [`Self::purge`]). A later
    /// settlement of a dropped lease finds nothing. Returns how many were dropped.
    pub fn drop_in_flight(&mut self, now: Millis, fx: &mut Vec<Effect>) -> u64 {
        let leases: Vec<LeaseId> = self.leases.keys().copied().collect();
        let dropped = leases.iter().filter(|l| self.end_lease(**l, now).is_some()).count();
        self.dispatch(now, fx);
        dropped as u64
    }

    fn expire(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        while let Some(&(at, key)) = self.expiry.iter().next() {
            if at > now {
                break;
            }
            if let Some(entry) = self.take_ready(key) {
                self.dead_letter_entry(entry, DeathReason::Expired, fx);
            } else {
                self.expiry.remove(&(at, key));
            }
        }
    }

    fn prune_dedup(&mut self, now: Millis) {
        while let Some((at, _)) = self.dedup_expiry.iter().next() {
            if *at > now {
                break;
            }
            if let Some((_, id)) = self.dedup_expiry.pop_first() {
                self.dedup.remove(&id);
            }
        }
    }

    /// Advance time to `now`: delayed messages become ready, TTLs expire, lease
    /// deadlines return messages, the dedup window slides, an unused queue expires.
    pub fn tick(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        while let Some(&(at, seq)) = self.delayed.keys().next() {
            if at > now {
                break;
            }
            if let Some(entry) = self.delayed.remove(&(at, seq)) {
                self.insert_ready(entry);
            }
        }
        while let Some(&(at, lease)) = self.lease_deadlines.iter().next() {
            if at > now {
                break;
            }
            if let Some(entry) = self.end_lease(lease, now) {
                self.return_entry(entry, now, fx);
            } else {
                self.lease_deadlines.remove(&(at, lease));
            }
        }
        self.expire(now, fx);
        self.prune_dedup(now);
        self.dispatch(now, fx);
        self.enforce_limits(fx);
        if let Some(expires) = self.config.expires
            && self.consumers.is_empty()
            && now >= self.last_used.saturating_add(expires)
        {
            fx.push(Effect::QueueExpired);
        }
    }

    /// The earliest time at which `tick` has work to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        let candidates = [
            self.delayed.keys().next().map(|(at, _)| *at),
            self.expiry.iter().next().map(|(at, _)| *at),
            self.lease_deadlines.iter().next().map(|(at, _)| *at),
            self.dedup_expiry.iter().next().map(|(at, _)| *at),
            self.config.expires.filter(|_| self.consumers.is_empty()).map(|e| self.last_used.saturating_add(e)),
        ];
        candidates.into_iter().flatten().min()
    }

    /// Leases currently held, in lease order (for tests and introspection).
    pub fn lease_ids(&self) -> Vec<LeaseId> {
        let mut v: Vec<_> = self.leases.keys().copied().collect();
        v.sort_unstable();
        v
    }
}
