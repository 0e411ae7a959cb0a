//! Queues at runtime: the [`state::QueueState`] machine behind a lock, the
//! consumers' delivery sinks, and the timer that ticks it.
//!
//! The lock is a `parking_lot::Mutex`, not a tokio one: nothing awaits while it
//! is held (deliveries go into unbounded channels whose depth the state
//! machine bounds by credit). Effects other than deliveries — dead letters,
//! expiry, auto-delete — are returned to the caller, which runs them after the
//! lock is released, so one queue never locks another while held.

pub mod config;
mod groups;
mod head;
mod ready;
pub mod state;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::memory::MemoryMonitor;
use crate::message::{FieldTable, Message};
use crate::store::log::Detached;
use crate::store::{MessageLog, Persisted};
use crate::time::{Millis, now_ms};
use config::QueueConfig;
use state::{ConsumerId, ConsumerSpec, Delivery, Effect, Enqueued, LeaseId, PublishOptions, QueueCounts, QueueState};

/// Identifies a client connection broker-wide (exclusive queue ownership).
pub type ConnectionId = u64;

/// What a consumer's front-end receives.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// A message for `consumer`.
    Deliver {
        /// Which consumer.
        consumer: ConsumerId,
        /// The queue it came from (settle through it).
        queue: Arc<Queue>,
        /// The delivery.
        delivery: Delivery,
    },
    /// The broker cancelled `consumer` (its queue was deleted).
    Cancelled {
        /// Which consumer.
        consumer: ConsumerId,
    },
}

/// Where a consumer's events go: one channel per front-end session, shared by its consumers.
pub type ConsumerSink = mpsc::UnboundedSender<ConsumerEvent>;

#[derive(Debug)]
struct ConsumerLink {
    sink: ConsumerSink,
    exclusive: bool,
}

#[derive(Debug)]
struct Inner {
    state: QueueState,
    links: HashMap<ConsumerId, ConsumerLink, BuildHasherDefault<state::IdHasher>>,
    armed: Option<Millis>,
}

/// A queue: its identity, its declared arguments, and its state.
#[derive(Debug)]
pub struct Queue {
    name: String,
    vhost: String,
    durable: bool,
    exclusive_owner: Option<ConnectionId>,
    auto_delete: bool,
    arguments: FieldTable,
    /// Arguments set after declare, overriding `arguments` (see [`Queue::set_policy`]).
    policy: Mutex<FieldTable>,
    store_id: u64,
    inner: Mutex<Inner>,
    timer: Notify,
    /// Wakes one waiter whenever an operation leaves ready messages in the queue: a
    /// publish, a delay passing, a lease expiring or being returned. A get that takes
    /// messages and leaves more wakes the next waiter (one wake-up per batch taken, not
    /// every waiter per message); a get that takes nothing wakes nobody. Deleting the
    /// queue wakes every waiter. Long polls (SQS `WaitTimeSeconds`) wait on it. Waiters
    /// register before looking, so none is missed; a woken waiter that goes away passes
    /// the wake-up on (tokio's `Notify` semantics).
    available: Notify,
    /// Live [`WakeHold`]s: while nonzero, wake-ups are deferred to the last one's drop.
    holds: AtomicUsize,
    /// A wake-up was deferred by a hold.
    held_wake: AtomicBool,
    deleted: AtomicBool,
}

/// How an operation wakes long polls waiting for available messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// If ready messages remain after it (publish, return, tick, ...).
    IfReady,
    /// Only if it took messages and ready ones remain (a get passes the wake-up on).
    IfTookAndReady,
}

/// Defers the queue's "messages available" wake-up while held (see
/// [`Queue::hold_wakeups`]); dropping the last hold sends the wake-up if one was due.
#[derive(Debug)]
pub struct WakeHold<'a> {
    queue: &'a Queue,
}

impl Drop for WakeHold<'_> {
    fn drop(&mut self) {
        if self.queue.holds.fetch_sub(1, Ordering::SeqCst) == 1 && self.queue.held_wake.swap(false, Ordering::SeqCst) {
            self.queue.available.notify_one();
        }
    }
}

/// Non-delivery effects a queue operation left for the vhost to carry out.
pub type Followups = Vec<Effect>;

impl Queue {
    /// A new queue. `store_id` is nonzero for durable queues (see [`Queue::store_id`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        vhost: String,
        durable: bool,
        exclusive_owner: Option<ConnectionId>,
        auto_delete: bool,
        arguments: FieldTable,
        config: QueueConfig,
        store_id: u64,
    ) -> Arc<Queue> {
        Arc::new(Queue {
            name,
            vhost,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            policy: Mutex::new(FieldTable::new()),
            store_id,
            inner: Mutex::new(Inner::new(QueueState::new(config, now_ms()))),
            timer: Notify::new(),
            available: Notify::new(),
            holds: AtomicUsize::new(0),
            held_wake: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The vhost it lives in.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }
    /// Survives a restart.
    pub fn durable(&self) -> bool {
        self.durable
    }
    /// The owning connection of an exclusive queue.
    pub fn exclusive_owner(&self) -> Option<ConnectionId> {
        self.exclusive_owner
    }
    /// Deleted when its last consumer goes.
    pub fn auto_delete(&self) -> bool {
        self.auto_delete
    }
    /// Arguments as declared.
    pub fn arguments(&self) -> &FieldTable {
        &self.arguments
    }
    /// Arguments changed after declare (empty unless [`Queue::set_policy`] was called).
    pub fn policy(&self) -> FieldTable {
        self.policy.lock().clone()
    }
    /// The declared arguments with the policy's on top: what the queue runs on.
    pub fn effective_arguments(&self) -> FieldTable {
        overlay(&self.arguments, &self.policy.lock())
    }
    /// Replace the policy (arguments overriding the declared ones; a `Void` value removes a
    /// declared argument) and reconfigure the queue with the result; invalid arguments are
    /// refused and change nothing.
    pub fn set_policy(self: &Arc<Self>, policy: FieldTable) -> crate::error::CoreResult<Followups> {
        let mut current = self.policy.lock();
        let args = overlay(&self.arguments, &policy);
        let config = QueueConfig::from_arguments(&args, &self.name, &self.vhost)?;
        *current = policy;
        drop(current);
        Ok(self.run(|i, now, fx| i.state.set_config(config, now, fx)).1)
    }
    /// The parsed configuration.
    pub fn config(&self) -> QueueConfig {
        self.inner.lock().state.config().clone()
    }
    /// True once deleted; operations on a deleted queue do nothing.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }
    /// Current counters.
    pub fn counts(&self) -> QueueCounts {
        self.inner.lock().state.counts()
    }

    /// Run `f` on the state, deliver what it produced, and return the rest.
    fn run<R>(self: &Arc<Self>, f: impl FnOnce(&mut Inner, Millis, &mut Vec<Effect>) -> R) -> (R, Followups) {
        self.run_waking(Wake::IfReady, f)
    }

    /// [`Queue::run`] with the wake-up rule for long polls given.
    fn run_waking<R>(
        self: &Arc<Self>,
        wake: Wake,
        f: impl FnOnce(&mut Inner, Millis, &mut Vec<Effect>) -> R,
    ) -> (R, Followups) {
        let now = now_ms();
        let mut rest = Vec::new();
        let mut inner = self.inner.lock();
        if self.is_deleted() {
            drop(inner);
            let r = f(&mut Inner::dead(), now, &mut Vec::new());
            return (r, rest);
        }
        let (mut fx, mut batch) = (effect_buffer(), effect_buffer());
        let ready_before = match wake {
            Wake::IfReady => 0,
            Wake::IfTookAndReady => inner.state.counts().ready,
        };
        let r = f(&mut inner, now, &mut fx);
        while !fx.is_empty() {
            // Effects may cause more effects (a dead consumer's message goes to the next).
            std::mem::swap(&mut fx, &mut batch);
            for effect in batch.drain(..) {
                match effect {
                    Effect::Deliver { consumer, delivery } => {
                        let lease = delivery.lease;
                        let sent = inner.links.get(&consumer).is_some_and(|l| {
                            l.sink.send(ConsumerEvent::Deliver { consumer, queue: Arc::clone(self), delivery }).is_ok()
                        });
                        if !sent {
                            // The consumer's session is gone: take it out and put the message back.
                            inner.links.remove(&consumer);
                            inner.state.remove_consumer(consumer, now, &mut fx);
                            if let Some(lease) = lease {
                                inner.state.requeue(lease, now, &mut fx);
                            }
                        }
                    }
                    other => rest.push(other),
                }
            }
        }
        let ready = inner.state.counts().ready;
        let wake_one = match wake {
            Wake::IfReady => ready > 0,
            Wake::IfTookAndReady => ready > 0 && ready < ready_before,
        };
        let next = inner.state.next_deadline();
        let rearm = next.is_some() && (inner.armed.is_none() || next < inner.armed);
        if rearm {
            inner.armed = next;
        }
        drop(inner);
        return_effect_buffer(fx);
        return_effect_buffer(batch);
        if rearm {
            self.timer.notify_one();
        }
        if wake_one {
            self.wake_one();
        }
        (r, rest)
    }

    /// Enqueue a message; `persisted` is its record in the message log, if it has one.
    pub fn publish(
        self: &Arc<Self>,
        message: Arc<Message>,
        opts: PublishOptions,
        persisted: Option<Persisted>,
    ) -> (Enqueued, Followups) {
        self.run(|i, now, fx| i.state.publish(message, opts, persisted, now, fx))
    }

    /// Put back a message recovered from the message log.
    pub fn restore(
        self: &Arc<Self>,
        message: Arc<Message>,
        persisted: Persisted,
        redelivered: bool,
        enqueued_at: Millis,
        group: Option<Arc<str>>,
    ) -> Followups {
        self.run(|i, now, fx| i.state.restore(message, persisted, redelivered, enqueued_at, group, now, fx)).1
    }

    /// Let this queue keep only `resident_budget` bytes of ready bodies in memory,
    /// paging the rest to `log`.
    pub fn enable_paging(&self, log: MessageLog, memory: Arc<MemoryMonitor>, resident_budget: u64) {
        let pager = LogPager { log, memory, queue_id: self.store_id };
        self.inner.lock().state.enable_paging(Arc::new(pager), resident_budget);
    }

    /// The id this queue's messages carry in the message log (0 for transient queues).
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// Wakes one long poll waiting for available messages, or defers that to the last
    /// [`WakeHold`].
    fn wake_one(&self) {
        if self.holds.load(Ordering::SeqCst) > 0 {
            self.held_wake.store(true, Ordering::SeqCst);
            // The last hold may have been dropped in between: then send it here.
            if self.holds.load(Ordering::SeqCst) == 0 && self.held_wake.swap(false, Ordering::SeqCst) {
                self.available.notify_one();
            }
            return;
        }
        self.available.notify_one();
    }

    /// Defers "messages available" wake-ups until the returned hold (and every other live
    /// one) is dropped, so a batch of publishes wakes one long poll that takes the batch
    /// (which passes the wake-up on if messages remain) instead of one per message.
    pub fn hold_wakeups(&self) -> WakeHold<'_> {
        self.holds.fetch_add(1, Ordering::SeqCst);
        WakeHold { queue: self }
    }

    /// Pull one message; `lease_deadline` overrides the queue's lease timeout.
    pub fn get(self: &Arc<Self>, auto_ack: bool, lease_deadline: Option<Millis>) -> (Option<Delivery>, Followups) {
        self.run_waking(Wake::IfTookAndReady, |i, now, fx| i.state.get(auto_ack, lease_deadline, now, fx))
    }

    /// Pull up to `max` messages at once (SQS `ReceiveMessage`); `lease_deadline` overrides
    /// the queue's lease timeout for all of them.
    pub fn get_many(
        self: &Arc<Self>,
        max: usize,
        auto_ack: bool,
        lease_deadline: Option<Millis>,
    ) -> (Vec<Delivery>, Followups) {
        self.run_waking(Wake::IfTookAndReady, |i, now, fx| i.state.get_batch(max, auto_ack, lease_deadline, now, fx))
    }

    /// A future that completes the next time the queue has ready messages after an
    /// operation (see the `available` field). Call [`tokio::sync::futures::Notified::enable`]
    /// on it, then look, then await it, so a wake-up between looking and waiting is kept.
    pub fn available(&self) -> tokio::sync::futures::Notified<'_> {
        self.available.notified()
    }

    /// True if a consumer holds the queue exclusively, or `exclusive` is asked while others consume.
    pub(crate) fn exclusive_conflict(&self, exclusive: bool) -> bool {
        let inner = self.inner.lock();
        inner.links.values().any(|l| l.exclusive) || (exclusive && !inner.links.is_empty())
    }

    /// Register a consumer whose deliveries go to `sink`.
    pub fn add_consumer(self: &Arc<Self>, spec: ConsumerSpec, exclusive: bool, sink: ConsumerSink) -> Followups {
        self.run(|i, now, fx| {
            i.links.insert(spec.id, ConsumerLink { sink, exclusive });
            i.state.add_consumer(spec, now, fx);
        })
        .1
    }

    /// Unregister a consumer; its leases stay until settled or requeued.
    pub fn remove_consumer(self: &Arc<Self>, consumer: ConsumerId) -> Followups {
        let (_, mut rest) = self.run(|i, now, fx| {
            i.links.remove(&consumer);
            i.state.remove_consumer(consumer, now, fx)
        });
        if !self.auto_delete {
            rest.retain(|e| !matches!(e, Effect::AutoDelete));
        }
        rest
    }

    /// The front-end wrote `n` of `consumer`'s deliveries to its client.
    pub fn written(self: &Arc<Self>, consumer: ConsumerId, n: u32) -> Followups {
        self.run(|i, now, fx| i.state.written(consumer, n, now, fx)).1
    }

    /// Change a consumer's prefetch.
    pub fn set_prefetch(self: &Arc<Self>, consumer: ConsumerId, prefetch: u32) -> Followups {
        self.run(|i, now, fx| i.state.set_prefetch(consumer, prefetch, now, fx)).1
    }

    /// Re-run delivery (a shared credit pool got room).
    pub fn kick(self: &Arc<Self>) -> Followups {
        self.run(|i, now, fx| i.state.kick(now, fx)).1
    }

    /// Acknowledge a lease. False if unknown.
    pub fn ack(self: &Arc<Self>, lease: LeaseId) -> (bool, Followups) {
        self.run(|i, now, fx| i.state.ack(lease, now, fx))
    }

    /// Return a lease to the queue.
    pub fn requeue(self: &Arc<Self>, lease: LeaseId) -> (bool, Followups) {
        self.run(|i, now, fx| i.state.requeue(lease, now, fx))
    }

    /// Return many leases (channel closed).
    pub fn requeue_all(self: &Arc<Self>, leases: &[LeaseId]) -> Followups {
        self.run(|i, now, fx| i.state.requeue_all(leases, now, fx)).1
    }

    /// Reject a lease: dead-letter or drop.
    pub fn reject(self: &Arc<Self>, lease: LeaseId) -> (bool, Followups) {
        self.run(|i, now, fx| i.state.reject(lease, now, fx))
    }

    /// Move a lease's deadline.
    pub fn set_lease_deadline(self: &Arc<Self>, lease: LeaseId, deadline: Option<Millis>) -> (bool, Followups) {
        self.run(|i, now, fx| i.state.set_lease_deadline(lease, deadline, now, fx))
    }

    /// Remove all ready messages.
    pub fn purge(self: &Arc<Self>) -> u64 {
        self.run(|i, _, _| i.state.purge()).0
    }

    /// Record a use (declare) for `x-expires`.
    pub fn touch(self: &Arc<Self>) {
        self.run(|i, now, _| i.state.touch(now));
    }

    /// Advance time to now.
    pub fn tick(self: &Arc<Self>) -> Followups {
        // `armed` is left alone: the timer task re-arms itself right after ticking, and
        // clearing it here would make `run` wake the timer again at once.
        self.run(|i, now, fx| i.state.tick(now, fx)).1
    }

    /// Mark deleted, tell every consumer, and stop the timer.
    pub(crate) fn mark_deleted(&self) -> u64 {
        let mut inner = self.inner.lock();
        self.deleted.store(true, Ordering::Release);
        for (&consumer, link) in inner.links.iter() {
            let _ = link.sink.send(ConsumerEvent::Cancelled { consumer });
        }
        inner.links.clear();
        let n = inner.state.counts().ready;
        inner.state.purge();
        drop(inner);
        self.timer.notify_one();
        self.available.notify_waiters();
        n
    }

    /// End every lease and drop its message (SQS `PurgeQueue`); returns how many.
    pub fn purge_in_flight(self: &Arc<Self>) -> (u64, Followups) {
        self.run(|i, now, fx| i.state.drop_in_flight(now, fx))
    }

    /// Make the timer look at its deadline again (the clock moved: [`crate::time::advance_clock`]).
    pub(crate) fn wake_timer(&self) {
        self.timer.notify_one();
    }

    /// Wait until the timer may have work: the next deadline, or a change to it.
    pub(crate) async fn wait_for_deadline(&self) {
        let next = {
            let mut inner = self.inner.lock();
            let next = inner.state.next_deadline();
            inner.armed = next;
            next
        };
        let notified = self.timer.notified();
        match next {
            Some(at) => {
                let delay = at.saturating_sub(now_ms());
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(delay)) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

/// `declared` with `policy` on top; a `Void` in the policy removes the argument.
fn overlay(declared: &FieldTable, policy: &FieldTable) -> FieldTable {
    let mut args = declared.clone();
    for (k, v) in policy {
        if matches!(v, crate::message::FieldValue::Void) {
            args.remove(k);
        } else {
            args.insert(k.clone(), v.clone());
        }
    }
    args
}

/// Pages bodies through the message log: transient messages get a copy that
/// recovery ignores; persistent ones are read back from their durable record.
#[derive(Debug)]
struct LogPager {
    log: MessageLog,
    memory: Arc<MemoryMonitor>,
    queue_id: u64,
}

impl state::Pager for LogPager {
    fn page_out(&self, message: &Message, enqueued_at: Millis) -> Option<Persisted> {
        self.log.append_transient(self.queue_id, enqueued_at, &MessageLog::encode(message)).ok()
    }

    fn page_in(&self, persisted: &Persisted) -> Option<Arc<Message>> {
        let mut m = persisted.read().map_err(|e| tracing::error!(error = %e, "paging a message in failed")).ok()?;
        m.charge = Some(self.memory.charge(m.memory_size() as u64));
        Some(Arc::new(m))
    }

    fn attach(&self, at: Detached, delivered: bool) -> Persisted {
        self.log.attach(at, delivered)
    }

    fn forget(&self, at: Detached) {
        self.log.forget_detached(at);
    }
}

thread_local! {
    /// Emptied effect buffers of this thread's finished queue operations, reused so that
    /// an operation (a publish that hands a message to a consumer, say) allocates none.
    static EFFECT_BUFFERS: RefCell<Vec<Vec<Effect>>> = const { RefCell::new(Vec::new()) };
}

/// An empty effect buffer, reused when this thread has one.
fn effect_buffer() -> Vec<Effect> {
    EFFECT_BUFFERS.try_with(|b| b.borrow_mut().pop()).ok().flatten().unwrap_or_default()
}

/// Keeps an emptied effect buffer for the thread's next operation, unless it grew large
/// (a purge or a big batch) or enough are kept.
fn return_effect_buffer(mut buffer: Vec<Effect>) {
    const KEEP: usize = 4;
    const LARGEST: usize = 64;
    if buffer.capacity() == 0 || buffer.capacity() > LARGEST {
        return;
    }
    buffer.clear();
    let _ = EFFECT_BUFFERS.try_with(|b| {
        let mut kept = b.borrow_mut();
        if kept.len() < KEEP {
            kept.push(buffer);
        }
    });
}

impl Inner {
    /// A throwaway state for operations racing with deletion.
    fn new(state: QueueState) -> Inner {
        Inner { state, links: HashMap::default(), armed: None }
    }

    fn dead() -> Inner {
        Inner::new(QueueState::new(QueueConfig::default(), 0))
    }
}

/// The long-poll wake-up rules of [`Queue::available`].
#[cfg(test)]
mod wake_tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use bytes::Bytes;

    use super::*;
    use crate::message::Properties;

    fn queue(fifo: bool) -> Arc<Queue> {
        let cfg = QueueConfig { fifo, ..QueueConfig::default() };
        Queue::new("q".into(), "/".into(), false, None, false, FieldTable::new(), cfg, 0)
    }

    fn publish(q: &Arc<Queue>, group: Option<&str>) {
        let m = Arc::new(Message::new("", "q", Properties::default(), Bytes::from_static(b"x")));
        let opts = PublishOptions { group: group.map(Arc::from), ..PublishOptions::default() };
        q.publish(m, opts, None);
    }

    /// Polls a registered waiter once: true if it was woken.
    fn woken(f: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) -> bool {
        f.poll(&mut Context::from_waker(Waker::noop())) == Poll::Ready(())
    }

    #[test]
    fn a_held_batch_wakes_one_waiter_once_released() {
        let q = queue(false);
        let mut a = pin!(q.available());
        let mut b = pin!(q.available());
        a.as_mut().enable();
        b.as_mut().enable();
        {
            let _hold = q.hold_wakeups();
            for _ in 0..10 {
                publish(&q, None);
            }
            assert!(!woken(a.as_mut()) && !woken(b.as_mut()), "nobody is woken while the batch is held");
        }
        assert!(woken(a.as_mut()), "the oldest waiter is woken once the hold ends");
        assert!(!woken(b.as_mut()), "one wake-up for the whole batch");
        // The woken waiter takes 5 of the 10: the rest wakes the next waiter.
        let (ds, _) = q.get_many(5, false, Some(u64::MAX));
        assert_eq!(ds.len(), 5);
        assert!(woken(b.as_mut()), "a get that leaves messages passes the wake-up on");
    }

    #[test]
    fn a_get_that_takes_nothing_wakes_nobody() {
        let q = queue(true);
        publish(&q, Some("g"));
        publish(&q, Some("g"));
        let (ds, _) = q.get_many(1, false, Some(u64::MAX));
        let lease = ds.first().and_then(|d| d.lease).expect("one message leased; its group is now blocked");
        // That get left a message and nobody waited: a permit is stored. Use it up.
        let mut spare = pin!(q.available());
        spare.as_mut().enable();
        assert!(woken(spare.as_mut()));
        let mut w = pin!(q.available());
        w.as_mut().enable();
        let (ds, _) = q.get_many(10, false, Some(u64::MAX));
        assert!(ds.is_empty());
        assert!(!woken(w.as_mut()), "a receive that finds only blocked groups does not wake itself");
        // Acking the in-flight message unblocks the group: that wakes the waiter.
        q.ack(lease);
        assert!(woken(w.as_mut()), "the ack that unblocks the group wakes a waiter");
    }

    #[test]
    fn deleting_the_queue_wakes_every_waiter() {
        let q = queue(false);
        let mut a = pin!(q.available());
        let mut b = pin!(q.available());
        a.as_mut().enable();
        b.as_mut().enable();
        q.mark_deleted();
        assert!(woken(a.as_mut()) && woken(b.as_mut()));
    }
}
