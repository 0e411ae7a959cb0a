//! A virtual host: its exchanges, queues and bindings, and the operations
//! front-ends perform on them (declare, bind, publish, consume, settle).
//!
//! Permission checks and RabbitMQ's error texts live here, not in a front-end,
//! so every protocol refuses the same things the same way.
//!
//! Locking: the exchange and queue maps are `RwLock`s held only to look up or
//! insert; no queue lock is taken while a map lock is held, and queue
//! operations return their dead letters instead of publishing under a lock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use rand::Rng;

use crate::auth::{Access, ResourceKind, User};
use crate::dead_letter::{dead_lettered, is_cycle};
use crate::error::{CoreError, CoreResult, ErrorKind};
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::filter_policy::DeliveryTransform;
use crate::memory::MemoryMonitor;
use crate::message::{CompactString, FieldTable, FieldValue, Message};
use crate::queue::config::{QueueConfig, check_args_equivalent, check_equivalent};
use crate::queue::state::{
    ConsumerId, ConsumerSpec, Delivery, Effect, Enqueued, LeaseId, MessageFilter, PublishOptions, SharedCredit,
};
use crate::queue::{ConnectionId, ConsumerSink, Followups, Queue};
use crate::store::definitions::{BindingDef, Definitions, DefinitionsFile, ExchangeDef, QueueDef};
use crate::store::{Lsn, MessageLog};
use crate::time::now_ms;

/// Who is asking: the connection (for exclusivity) and the user (for permissions).
#[derive(Debug, Clone)]
pub struct ClientContext {
    /// The client's connection.
    pub connection: ConnectionId,
    /// The authenticated user.
    pub user: Arc<User>,
}

/// An exchange declaration.
#[derive(Debug, Clone, Default)]
pub struct ExchangeSpec {
    /// Name.
    pub name: String,
    /// Type name (`direct`, `fanout`, `topic`, `headers`).
    pub kind: String,
    /// Only check that it exists.
    pub passive: bool,
    /// Survives a restart.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Clients may not publish to it.
    pub internal: bool,
    /// Arguments (`alternate-exchange`).
    pub arguments: FieldTable,
}

/// A queue declaration.
#[derive(Debug, Clone, Default)]
pub struct QueueSpec {
    /// Name; empty asks the broker to generate one.
    pub name: String,
    /// Only check that it exists.
    pub passive: bool,
    /// Survives a restart.
    pub durable: bool,
    /// Owned by the declaring connection and deleted with it.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// `x-` arguments.
    pub arguments: FieldTable,
}

/// The result of a queue declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDeclared {
    /// The queue's name (generated if none was given).
    pub name: String,
    /// Ready messages.
    pub message_count: u32,
    /// Consumers.
    pub consumer_count: u32,
}

/// How a consumer wants its deliveries.
#[derive(Debug, Clone, Default)]
pub struct ConsumeSpec {
    /// Most unsettled deliveries (0 = unlimited).
    pub prefetch: u32,
    /// No settlement needed.
    pub auto_ack: bool,
    /// Sole consumer of the queue.
    pub exclusive: bool,
    /// Consumer priority.
    pub priority: i32,
    /// A credit pool shared with other consumers of the same client channel.
    pub shared_credit: Option<Arc<SharedCredit>>,
    /// Deliver only messages this filter accepts (STOMP/JMS selectors).
    pub filter: Option<Arc<dyn MessageFilter>>,
}

/// The result of a publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishOutcome {
    /// At least one queue took the message.
    pub routed: bool,
    /// At least one queue refused it (`reject-publish`): confirm with a nack.
    pub rejected: bool,
    /// The message went to the message log; a confirm must wait until this LSN is
    /// durable (see [`MessageLog::synced`]).
    pub lsn: Option<Lsn>,
}

/// What one publishing session remembers between publishes (see [`VHost::publish_cached`]):
/// the exchange it last published to and whether its user may write to it, the queue the
/// default exchange last routed to, and the last route of a direct, topic or fanout exchange.
/// A session's user is fixed and immutable, so a granted permission stays granted; the rest
/// is reused only while it is still what a lookup would find (see [`RouteMemo`]).
#[derive(Debug, Default)]
pub struct PublishCache {
    /// The session may write to `exchange` (checked once per exchange).
    write_checked: bool,
    queue: Option<Arc<Queue>>,
    exchange: Option<Arc<Exchange>>,
    route: Option<RouteMemo>,
}

/// Where the last publish to a direct, topic or fanout exchange went, when that was a few
/// queues and nothing else (see [`VHost::queues_only`]): reused for the next publish with
/// the same routing key while the exchange's bindings are unchanged and no queue is deleted.
/// A device publishing to its own topic routes once, not per message.
#[derive(Debug)]
struct RouteMemo {
    exchange: Arc<Exchange>,
    generation: u64,
    routing_key: CompactString,
    queues: Vec<Arc<Queue>>,
}

impl RouteMemo {
    /// True when this memo still answers a publish to `ex` with `routing_key`.
    fn answers(&self, ex: &Arc<Exchange>, routing_key: &str) -> bool {
        Arc::ptr_eq(&self.exchange, ex)
            && self.generation == ex.generation()
            && same_name(&self.routing_key, routing_key)
            && self.queues.iter().all(|q| !q.is_deleted())
    }
}

/// How a lease is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done with it.
    Ack,
    /// Put it back.
    Requeue,
    /// Dead-letter or drop it.
    Reject,
}

/// A queue a publish reached, with the message it gets there when that differs from the one
/// published (filter-policy subscriptions get their own envelope).
type Routed = (Arc<Queue>, Option<Arc<Message>>);

/// A virtual host.
#[derive(Debug)]
pub struct VHost {
    name: String,
    exchanges: RwLock<HashMap<String, Arc<Exchange>>>,
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    memory: Arc<MemoryMonitor>,
    ids: Arc<AtomicU64>,
    this: Weak<VHost>,
    /// Where persistent messages of durable queues go; `None` runs fully in memory.
    log: Option<MessageLog>,
    /// Where durable definitions go; `None` keeps them in memory only.
    definitions: Option<DefinitionsFile>,
    /// Serialises definition snapshots so an older one never overwrites a newer one.
    save_lock: Mutex<()>,
    /// Per-queue resident body budget (see [`Persistence::queue_resident_bytes`]).
    resident_budget: u64,
    /// What queue subscriptions of filter-policy (`x-sns`) exchanges receive; set by a
    /// front-end (see [`crate::filter_policy::DeliveryTransform`]).
    delivery_transform: RwLock<Option<Arc<dyn DeliveryTransform>>>,
    /// The vhost's streams (see [`crate::stream`]); they share the namespace of queues.
    streams: crate::stream::Streams,
}

/// Where a vhost keeps what must survive a restart.
#[derive(Debug, Clone)]
pub struct Persistence {
    /// The shared message log.
    pub log: MessageLog,
    /// The broker's data directory.
    pub data_dir: std::path::PathBuf,
    /// Bytes of ready message bodies a queue keeps in memory before paging to the log.
    pub queue_resident_bytes: u64,
}

/// The exchanges every vhost starts with, as in RabbitMQ.
const PREDECLARED: &[(&str, ExchangeKind)] = &[
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// Prefix of direct reply-to pseudo-queues.
pub const REPLY_TO_PREFIX: &str = "amq.rabbitmq.reply-to.";

impl VHost {
    /// A vhost with the predeclared exchanges; with `persistence`, durable objects and
    /// persistent messages survive restarts.
    pub fn new(
        name: &str,
        memory: Arc<MemoryMonitor>,
        ids: Arc<AtomicU64>,
        persistence: Option<Persistence>,
    ) -> Arc<VHost> {
        let exchanges = PREDECLARED
            .iter()
            .map(|(n, k)| {
                (n.to_string(), Arc::new(Exchange::new(n.to_string(), *k, true, false, false, FieldTable::new())))
            })
            .collect();
        Arc::new_cyclic(|this| VHost {
            name: name.to_string(),
            exchanges: RwLock::new(exchanges),
            queues: RwLock::new(HashMap::new()),
            memory,
            ids,
            this: this.clone(),
            definitions: persistence.as_ref().map(|p| DefinitionsFile::for_vhost(&p.data_dir, name)),
            streams: crate::stream::Streams::new(name, persistence.as_ref().map(|p| p.data_dir.as_path())),
            resident_budget: persistence.as_ref().map_or(u64::MAX, |p| p.queue_resident_bytes),
            log: persistence.map(|p| p.log),
            save_lock: Mutex::new(()),
            delivery_transform: RwLock::new(None),
        })
    }

    /// The vhost's streams.
    pub fn streams(&self) -> &crate::stream::Streams {
        &self.streams
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An exchange by name.
    pub fn exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        self.exchanges.read().get(name).cloned()
    }

    /// A queue by name.
    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.read().get(name).cloned()
    }

    /// All queues.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.read().values().cloned().collect()
    }

    /// Move the broker's clock forward by `ms` (test hooks only: SQS `SwitchyardAdvanceClock`).
    /// Every queue of this vhost is ticked before this returns, so visibility timeouts,
    /// delays, TTLs and deduplication windows due by the new time have taken effect for the
    /// next request; queue and stream timers are woken to re-arm. The clock is process-wide;
    /// other vhosts' timers catch up at their next wake-up.
    pub fn advance_clock(&self, ms: u64) -> crate::time::Millis {
        let now = crate::time::advance_clock(ms);
        for q in self.queues() {
            let fx = q.tick();
            self.handle(&q, fx);
            q.wake_timer();
        }
        self.streams.advance_clock(0);
        now
    }

    /// Register what queue subscriptions of filter-policy exchanges receive (replaces any
    /// earlier one).
    pub fn set_delivery_transform(&self, transform: Arc<dyn DeliveryTransform>) {
        *self.delivery_transform.write() = Some(transform);
    }

    /// Replace a binding of `source` in one step (a subscription's attributes changed) and
    /// persist it; false if `old` does not exist.
    pub fn replace_binding(&self, source: &str, old: &Binding, new: Binding) -> CoreResult<bool> {
        let ex = self.existing_exchange(source)?;
        ex.validate_binding(&new.arguments)?;
        let durable = self.is_durable_binding(&ex, &new.destination);
        let replaced = ex.replace_binding(old, new);
        if replaced && durable {
            self.persist_definitions();
        }
        Ok(replaced)
    }

    /// All exchanges.
    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.exchanges.read().values().cloned().collect()
    }

    fn no_exchange(&self, name: &str) -> CoreError {
        CoreError::not_found(format!("no exchange '{name}' in vhost '{}'", self.name))
    }

    fn no_queue(&self, name: &str) -> CoreError {
        CoreError::not_found(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    fn locked(&self, name: &str) -> CoreError {
        CoreError::locked(format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            self.name
        ))
    }

    fn existing_exchange(&self, name: &str) -> CoreResult<Arc<Exchange>> {
        self.exchange(name).ok_or_else(|| self.no_exchange(name))
    }

    /// A queue the caller may use: it exists and is not another connection's exclusive queue.
    fn usable_queue(&self, name: &str, ctx: &ClientContext) -> CoreResult<Arc<Queue>> {
        let q = self.queue(name).ok_or_else(|| self.no_queue(name))?;
        if q.exclusive_owner().is_some_and(|o| o != ctx.connection) {
            return Err(self.locked(name));
        }
        Ok(q)
    }

    fn check(&self, ctx: &ClientContext, kind: ResourceKind, name: &str, access: Access) -> CoreResult<()> {
        ctx.user.check(&self.name, kind, name, access)
    }

    /// Declare (or check, if passive) an exchange.
    pub fn declare_exchange(&self, spec: ExchangeSpec, ctx: &ClientContext) -> CoreResult<()> {
        if spec.name.is_empty() {
            return Err(CoreError::access_refused("operation not permitted on the default exchange"));
        }
        if spec.passive {
            self.existing_exchange(&spec.name)?;
            return Ok(());
        }
        let kind = ExchangeKind::parse(&spec.kind).ok_or_else(|| {
            CoreError::new(ErrorKind::CommandInvalid, format!("unknown exchange type '{}'", spec.kind))
        })?;
        self.check(ctx, ResourceKind::Exchange, &spec.name, Access::Configure)?;
        if let Some(existing) = self.exchange(&spec.name) {
            return self.check_exchange_equivalent(&existing, &spec, kind);
        }
        if spec.name.starts_with("amq.") {
            return Err(CoreError::access_refused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                spec.name
            )));
        }
        let mut map = self.exchanges.write();
        if let Some(existing) = map.get(&spec.name) {
            let existing = Arc::clone(existing);
            drop(map);
            return self.check_exchange_equivalent(&existing, &spec, kind);
        }
        let ex = Exchange::new(spec.name.clone(), kind, spec.durable, spec.auto_delete, spec.internal, spec.arguments);
        map.insert(spec.name, Arc::new(ex));
        drop(map);
        if spec.durable {
            self.persist_definitions();
        }
        Ok(())
    }

    fn check_exchange_equivalent(&self, ex: &Exchange, spec: &ExchangeSpec, kind: ExchangeKind) -> CoreResult<()> {
        let mismatch = |arg: &str, got: String, cur: String| {
            Err(CoreError::precondition(format!(
                "inequivalent arg '{arg}' for exchange '{}' in vhost '{}': received '{got}' but current is '{cur}'",
                ex.name, self.name
            )))
        };
        if ex.kind != kind {
            return mismatch("type", kind.as_str().into(), ex.kind.as_str().into());
        }
        if ex.durable != spec.durable {
            return mismatch("durable", spec.durable.to_string(), ex.durable.to_string());
        }
        if ex.auto_delete != spec.auto_delete {
            return mismatch("auto_delete", spec.auto_delete.to_string(), ex.auto_delete.to_string());
        }
        if ex.internal != spec.internal {
            return mismatch("internal", spec.internal.to_string(), ex.internal.to_string());
        }
        check_args_equivalent(&ex.arguments, &spec.arguments, &["alternate-exchange"], "exchange", &ex.name, &self.name)
    }

    /// Delete an exchange and every binding to or from it. Deleting a missing exchange succeeds.
    pub fn delete_exchange(&self, name: &str, if_unused: bool, ctx: &ClientContext) -> CoreResult<()> {
        if name.is_empty() || name.starts_with("amq.") {
            return Err(CoreError::access_refused(if name.is_empty() {
                "operation not permitted on the default exchange".to_string()
            } else {
                format!("deletion of system exchange '{name}' in vhost '{}' not allowed", self.name)
            }));
        }
        self.check(ctx, ResourceKind::Exchange, name, Access::Configure)?;
        let Some(ex) = self.exchange(name) else { return Ok(()) };
        if if_unused && ex.binding_count() > 0 {
            return Err(CoreError::precondition(format!("exchange '{name}' in vhost '{}' in use", self.name)));
        }
        self.remove_exchange(name);
        Ok(())
    }

    fn remove_exchange(&self, name: &str) {
        let removed = self.exchanges.write().remove(name);
        if let Some(ex) = &removed {
            ex.retire();
        }
        if let Some(ex) = &removed
            && ex.durable
        {
            self.persist_definitions();
        }
        if removed.is_some() {
            let dest = Destination::Exchange(name.to_string());
            for ex in self.exchanges() {
                if ex.unbind_all(&dest) > 0 {
                    self.maybe_auto_delete_exchange(&ex);
                }
            }
        }
    }

    fn maybe_auto_delete_exchange(&self, ex: &Exchange) {
        if ex.auto_delete && ex.binding_count() == 0 {
            self.remove_exchange(&ex.name);
        }
    }

    /// Declare (or check, if passive) a queue.
    pub fn declare_queue(&self, spec: QueueSpec, ctx: &ClientContext) -> CoreResult<QueueDeclared> {
        if spec.passive {
            let q = self.usable_queue(&spec.name, ctx)?;
            q.touch();
            return Ok(declared(&q));
        }
        let name = if spec.name.is_empty() { generate_queue_name() } else { spec.name.clone() };
        self.check(ctx, ResourceKind::Queue, &name, Access::Configure)?;
        if let Some(q) = self.queue(&name) {
            return self.check_queue_equivalent(&q, &spec, ctx);
        }
        if name.starts_with("amq.") && !spec.name.is_empty() {
            return Err(CoreError::access_refused(format!("queue name '{name}' contains reserved prefix 'amq.*'")));
        }
        let config = QueueConfig::from_arguments(&spec.arguments, &name, &self.name)?;
        if let Some(dlx) = &config.dead_letter_exchange {
            // RabbitMQ checks that the declaring user could publish to the DLX.
            self.check(ctx, ResourceKind::Exchange, dlx, Access::Write)?;
        }
        let owner = spec.exclusive.then_some(ctx.connection);
        let persistent = spec.durable && !spec.exclusive;
        let store_id = if persistent { crate::store::log::new_store_id() } else { 0 };
        let q = Queue::new(
            name.clone(),
            self.name.clone(),
            spec.durable,
            owner,
            spec.auto_delete,
            spec.arguments.clone(),
            config,
            store_id,
        );
        {
            let mut map = self.queues.write();
            if let Some(existing) = map.get(&name) {
                let existing = Arc::clone(existing);
                drop(map);
                return self.check_queue_equivalent(&existing, &spec, ctx);
            }
            map.insert(name, Arc::clone(&q));
        }
        self.spawn_timer(&q);
        if persistent {
            self.persist_definitions();
        }
        Ok(declared(&q))
    }

    fn check_queue_equivalent(
        &self,
        q: &Arc<Queue>,
        spec: &QueueSpec,
        ctx: &ClientContext,
    ) -> CoreResult<QueueDeclared> {
        if q.exclusive_owner().is_some_and(|o| o != ctx.connection) {
            return Err(self.locked(q.name()));
        }
        let mismatch = |arg: &str, got: bool, cur: bool| {
            Err(CoreError::precondition(format!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received '{got}' but current is '{cur}'",
                q.name(),
                self.name
            )))
        };
        if q.durable() != spec.durable {
            return mismatch("durable", spec.durable, q.durable());
        }
        if q.exclusive_owner().is_some() != spec.exclusive {
            return Err(self.locked(q.name()));
        }
        if q.auto_delete() != spec.auto_delete {
            return mismatch("auto_delete", spec.auto_delete, q.auto_delete());
        }
        check_equivalent(q.arguments(), &spec.arguments, q.name(), &self.name)?;
        q.touch();
        Ok(declared(q))
    }

    /// Change a queue's mutable settings after declare: `policy` holds `x-` arguments that
    /// override the declared ones (as a RabbitMQ policy does; redeclaration still compares
    /// the declared arguments only). The previous policy is replaced as a whole. Durable
    /// queues keep it in the definitions, so it survives a restart.
    pub fn set_queue_policy(&self, name: &str, policy: FieldTable, ctx: &ClientContext) -> CoreResult<()> {
        self.check(ctx, ResourceKind::Queue, name, Access::Configure)?;
        let q = self.usable_queue(name, ctx)?;
        let fx = q.set_policy(policy)?;
        self.handle(&q, fx);
        if q.store_id() != 0 {
            self.persist_definitions();
        }
        Ok(())
    }

    /// Create a direct reply-to pseudo-queue for `ctx`'s connection (`amq.rabbitmq.reply-to`).
    pub fn declare_reply_queue(&self, ctx: &ClientContext) -> Arc<Queue> {
        let name = format!("{REPLY_TO_PREFIX}{}", random_suffix(24));
        let q = Queue::new(
            name.clone(),
            self.name.clone(),
            false,
            Some(ctx.connection),
            true,
            FieldTable::new(),
            QueueConfig::default(),
            0,
        );
        self.queues.write().insert(name, Arc::clone(&q));
        self.spawn_timer(&q);
        q
    }

    fn spawn_timer(&self, q: &Arc<Queue>) {
        if let Some(log) = &self.log {
            q.enable_paging(log.clone(), Arc::clone(&self.memory), self.resident_budget);
        }
        let queue = Arc::clone(q);
        let vhost = self.this.clone();
        tokio::spawn(async move {
            loop {
                queue.wait_for_deadline().await;
                if queue.is_deleted() {
                    return;
                }
                let fx = queue.tick();
                match vhost.upgrade() {
                    Some(v) => v.handle(&queue, fx),
                    None => return,
                }
            }
        });
        crate::stream::amqp::queue_started(&self.this, q);
    }

    /// Delete a queue, returning how many ready messages it held. Deleting a missing queue succeeds with 0.
    pub fn delete_queue(&self, name: &str, if_unused: bool, if_empty: bool, ctx: &ClientContext) -> CoreResult<u64> {
        let Some(q) = self.queue(name) else { return Ok(0) };
        if q.exclusive_owner().is_some_and(|o| o != ctx.connection) {
            return Err(self.locked(name));
        }
        self.check(ctx, ResourceKind::Queue, name, Access::Configure)?;
        let counts = q.counts();
        if if_unused && counts.consumers > 0 {
            return Err(CoreError::precondition(format!("queue '{name}' in vhost '{}' in use", self.name)));
        }
        if if_empty && counts.ready + counts.unacked + counts.delayed > 0 {
            return Err(CoreError::precondition(format!("queue '{name}' in vhost '{}' not empty", self.name)));
        }
        Ok(self.remove_queue(&q))
    }

    fn remove_queue(&self, q: &Arc<Queue>) -> u64 {
        {
            let mut map = self.queues.write();
            match map.get(q.name()) {
                Some(existing) if Arc::ptr_eq(existing, q) => {
                    map.remove(q.name());
                }
                _ => return 0,
            }
        }
        let dest = Destination::Queue(q.name().to_string());
        for ex in self.exchanges() {
            if ex.unbind_all(&dest) > 0 {
                self.maybe_auto_delete_exchange(&ex);
            }
        }
        let n = q.mark_deleted();
        if q.store_id() != 0 {
            self.persist_definitions();
        }
        n
    }

    /// Delete every exclusive queue of a closed connection.
    pub fn connection_closed(&self, connection: ConnectionId) {
        let owned: Vec<_> =
            self.queues.read().values().filter(|q| q.exclusive_owner() == Some(connection)).cloned().collect();
        for q in owned {
            self.remove_queue(&q);
        }
    }

    /// Remove all ready messages of a queue.
    pub fn purge_queue(&self, name: &str, ctx: &ClientContext) -> CoreResult<u64> {
        self.refuse_stream(name, "queue.purge")?;
        let q = self.usable_queue(name, ctx)?;
        self.check(ctx, ResourceKind::Queue, name, Access::Read)?;
        Ok(q.purge())
    }

    /// Bind `destination` to exchange `source`.
    pub fn bind(
        &self,
        source: &str,
        destination: Destination,
        key: &str,
        arguments: FieldTable,
        ctx: &ClientContext,
    ) -> CoreResult<()> {
        let ex = self.binding_endpoints(source, &destination, ctx)?;
        ex.validate_binding(&arguments)?;
        let durable = self.is_durable_binding(&ex, &destination);
        if ex.bind(Binding { destination, key: key.to_string(), arguments }) && durable {
            self.persist_definitions();
        }
        Ok(())
    }

    /// Remove a binding. As in RabbitMQ, removing a binding whose exchange, queue
    /// or binding is missing succeeds, and exclusivity is not checked.
    pub fn unbind(
        &self,
        source: &str,
        destination: Destination,
        key: &str,
        arguments: &FieldTable,
        ctx: &ClientContext,
    ) -> CoreResult<()> {
        if source.is_empty() || destination == Destination::Exchange(String::new()) {
            return Err(CoreError::access_refused("operation not permitted on the default exchange"));
        }
        match &destination {
            Destination::Queue(q) => self.check(ctx, ResourceKind::Queue, q, Access::Write)?,
            Destination::Exchange(e) => self.check(ctx, ResourceKind::Exchange, e, Access::Write)?,
        }
        self.check(ctx, ResourceKind::Exchange, source, Access::Read)?;
        if let Some(ex) = self.exchange(source)
            && ex.unbind(&destination, key, arguments)
        {
            if self.is_durable_binding(&ex, &destination) {
                self.persist_definitions();
            }
            self.maybe_auto_delete_exchange(&ex);
        }
        Ok(())
    }

    fn binding_endpoints(
        &self,
        source: &str,
        destination: &Destination,
        ctx: &ClientContext,
    ) -> CoreResult<Arc<Exchange>> {
        let default_refused = || CoreError::access_refused("operation not permitted on the default exchange");
        if source.is_empty() {
            return Err(default_refused());
        }
        let ex = self.existing_exchange(source)?;
        match destination {
            Destination::Queue(q) => {
                self.usable_queue(q, ctx)?;
                self.check(ctx, ResourceKind::Queue, q, Access::Write)?;
            }
            Destination::Exchange(e) => {
                if e.is_empty() {
                    return Err(default_refused());
                }
                self.existing_exchange(e)?;
                self.check(ctx, ResourceKind::Exchange, e, Access::Write)?;
            }
        }
        self.check(ctx, ResourceKind::Exchange, source, Access::Read)?;
        Ok(ex)
    }

    /// Publish a message to `message.exchange` with `message.routing_key`.
    pub fn publish(&self, message: Message, ctx: &ClientContext) -> CoreResult<PublishOutcome> {
        self.publish_with(message, PublishOptions::default(), ctx)
    }

    /// Publish with queue-level options (delay, FIFO group, dedup id).
    pub fn publish_with(
        &self,
        message: Message,
        opts: PublishOptions,
        ctx: &ClientContext,
    ) -> CoreResult<PublishOutcome> {
        self.publish_inner(Arc::new(message), opts, ctx, &mut PublishCache::default())
    }

    /// [`VHost::publish`] for a session that publishes repeatedly: `cache` (kept by the
    /// session, for one `ctx`) saves the permission check and the queue lookup when the
    /// exchange, or the default exchange's target queue, is the same as last time.
    pub fn publish_cached(
        &self,
        message: Message,
        ctx: &ClientContext,
        cache: &mut PublishCache,
    ) -> CoreResult<PublishOutcome> {
        self.publish_inner(Arc::new(message), PublishOptions::default(), ctx, cache)
    }

    /// [`VHost::publish_cached`] for a message the caller already put in an `Arc` (not
    /// shared yet): the message is not moved again on its way into the queues.
    pub fn publish_shared(
        &self,
        message: Arc<Message>,
        ctx: &ClientContext,
        cache: &mut PublishCache,
    ) -> CoreResult<PublishOutcome> {
        self.publish_inner(message, PublishOptions::default(), ctx, cache)
    }

    fn publish_inner(
        &self,
        mut message: Arc<Message>,
        opts: PublishOptions,
        ctx: &ClientContext,
        cache: &mut PublishCache,
    ) -> CoreResult<PublishOutcome> {
        let ex = match cache.exchange.as_ref().filter(|e| same_name(&e.name, &message.exchange) && !e.is_retired()) {
            Some(e) => Arc::clone(e),
            None => {
                let e = self.existing_exchange(&message.exchange)?;
                cache.exchange = Some(Arc::clone(&e));
                cache.write_checked = false;
                e
            }
        };
        if ex.internal {
            return Err(CoreError::access_refused(format!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                ex.name, self.name
            )));
        }
        if !cache.write_checked {
            self.check(ctx, ResourceKind::Exchange, &ex.name, Access::Write)?;
            cache.write_checked = true;
        }
        if let Some(uid) = &message.properties.user_id
            && *uid != ctx.user.name
        {
            return Err(CoreError::precondition(format!(
                "user_id property set to '{uid}' but authenticated user was '{}'",
                ctx.user.name
            )));
        }
        if let Some(exp) = &message.properties.expiration
            && let Err(why) = parse_expiration(exp)
        {
            return Err(CoreError::precondition(format!("invalid expiration '{exp}': {why}")));
        }
        let mut extra_keys = Vec::new();
        if let Some(h) = message.properties.headers.as_ref()
            && (h.contains_key("CC") || h.contains_key("BCC"))
        {
            // Only here is the message changed (BCC is taken out); a message not shared yet,
            // as every caller's is, is not copied for it.
            let h = Arc::make_mut(&mut message).properties.headers.get_or_insert_with(FieldTable::new);
            for name in ["CC", "BCC"] {
                if let Some(v) = h.get(name)
                    && !matches!(v, FieldValue::Array(_))
                {
                    return Err(CoreError::precondition(format!(
                        "invalid message: {{unacceptable_type_in_header,\"{name}\",{}}}",
                        crate::queue::config::type_name(v)
                    )));
                }
            }
            for name in ["CC", "BCC"] {
                if let Some(FieldValue::Array(extra)) = h.get(name) {
                    extra_keys.extend(extra.iter().filter_map(|v| v.as_str().map(CompactString::from)));
                }
            }
            h.remove("BCC");
        }
        if extra_keys.is_empty() && ex.name.is_empty() {
            // The default exchange with one routing key names exactly one queue and has no
            // alternate: no key list, no target list, and the queue of the last publish is
            // reused while it is the one of that name.
            let cached = cache.queue.as_ref().filter(|q| same_name(q.name(), &message.routing_key) && !q.is_deleted());
            let q = match cached {
                Some(q) => Arc::clone(q),
                None => match self.queue(&message.routing_key) {
                    Some(q) => {
                        cache.queue = Some(Arc::clone(&q));
                        q
                    }
                    None => return Ok(PublishOutcome::default()),
                },
            };
            return self.enqueue_all(message, std::iter::once((&q, None)), opts);
        }
        if extra_keys.is_empty() && matches!(ex.kind, ExchangeKind::Direct | ExchangeKind::Topic | ExchangeKind::Fanout)
        {
            if let Some(memo) = cache.route.as_ref().filter(|m| m.answers(&ex, &message.routing_key)) {
                return self.enqueue_all(message, memo.queues.iter().map(|q| (q, None)), opts);
            }
            let generation = ex.generation();
            let mut queues_only = false;
            let targets =
                self.route_noting(&ex, std::slice::from_ref(&message.routing_key), &message, &mut queues_only);
            if targets.is_empty() {
                return Ok(PublishOutcome::default());
            }
            if queues_only {
                cache.route = Some(RouteMemo {
                    exchange: Arc::clone(&ex),
                    generation,
                    routing_key: message.routing_key.clone(),
                    queues: targets.iter().map(|(q, _)| Arc::clone(q)).collect(),
                });
            }
            return self.enqueue_all(message, targets.iter().map(|(q, m)| (q, m.as_ref())), opts);
        }
        let mut keys = Vec::with_capacity(1 + extra_keys.len());
        keys.push(message.routing_key.clone());
        keys.append(&mut extra_keys);
        let targets = self.route(&ex, &keys, &message);
        if targets.is_empty() {
            return Ok(PublishOutcome::default());
        }
        self.enqueue_all(message, targets.iter().map(|(q, m)| (q, m.as_ref())), opts)
    }

    /// Charge `message` to the memory monitor and put it into every target queue.
    fn enqueue_all<'a>(
        &self,
        mut message: Arc<Message>,
        targets: impl IntoIterator<Item = (&'a Arc<Queue>, Option<&'a Arc<Message>>)>,
        opts: PublishOptions,
    ) -> CoreResult<PublishOutcome> {
        let charge = self.memory.charge(message.memory_size() as u64);
        Arc::make_mut(&mut message).charge = Some(charge);
        let mut outcome = PublishOutcome { routed: true, rejected: false, lsn: None };
        let mut encoded = None;
        for (q, own) in targets {
            let (enq, fx, lsn) = match own {
                Some(m) => self.enqueue(q, m, &mut None, opts.clone())?,
                None => self.enqueue(q, &message, &mut encoded, opts.clone())?,
            };
            if enq == Enqueued::Rejected {
                outcome.rejected = true;
            }
            outcome.lsn = outcome.lsn.max(lsn);
            self.handle(q, fx);
        }
        Ok(outcome)
    }

    /// Put `message` into `q`, writing it to the message log first when the queue
    /// is durable and the message persistent (encoded once per publish).
    fn enqueue(
        &self,
        q: &Arc<Queue>,
        message: &Arc<Message>,
        encoded: &mut Option<Vec<u8>>,
        opts: PublishOptions,
    ) -> CoreResult<(Enqueued, Followups, Option<Lsn>)> {
        let mut persisted = None;
        let mut lsn = None;
        if let Some(log) = &self.log
            && q.store_id() != 0
            && message.properties.is_persistent()
        {
            let bytes = encoded.get_or_insert_with(|| MessageLog::encode(message));
            let (p, l) = log.append_grouped(q.store_id(), now_ms(), opts.group.as_deref(), bytes).map_err(|e| {
                tracing::error!(error = %e, "cannot persist a message");
                CoreError::new(ErrorKind::ResourceLimit, "message store unavailable")
            })?;
            persisted = Some(p);
            lsn = Some(l);
        }
        let (enq, fx) = q.publish(Arc::clone(message), opts, persisted);
        Ok((enq, fx, lsn))
    }

    /// The queues a message reaches from `start`, following exchange-to-exchange
    /// bindings and alternate exchanges; each queue once. A queue subscribed to a
    /// filter-policy exchange may get its own (transformed) message, given alongside.
    fn route(&self, start: &Arc<Exchange>, keys: &[CompactString], message: &Message) -> Vec<Routed> {
        self.route_noting(start, keys, message, &mut false)
    }

    /// [`Self::route`], setting `queues_only` when the start exchange alone named the
    /// result (no exchange-to-exchange binding, alternate or filter policy was involved),
    /// so that it holds while the start exchange's bindings are unchanged.
    fn route_noting(
        &self,
        start: &Arc<Exchange>,
        keys: &[CompactString],
        message: &Message,
        queues_only: &mut bool,
    ) -> Vec<Routed> {
        // The default exchange with one routing key (no CC/BCC) names exactly one queue and has
        // no alternate: the common case needs no sets or work list.
        if let ([key], true) = (keys, start.name.is_empty()) {
            return self.queue(key).map(|q| vec![(q, None)]).unwrap_or_default();
        }
        let headers = message.properties.headers.as_ref();
        // The start exchange's destinations, routed once: for the fast path, else for the walk.
        let mut start_dests = None;
        if !start.name.is_empty() && start.kind != ExchangeKind::FilterPolicy {
            let mut dests = Vec::new();
            for k in keys {
                start.route(k, headers, &mut dests);
            }
            if let Some(out) = self.queues_only(&dests) {
                *queues_only = true;
                return out;
            }
            start_dests = Some(dests);
        }
        let mut seen_ex: HashSet<String> = HashSet::new();
        let mut seen_q: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        let mut work = VecDeque::from([Arc::clone(start)]);
        let mut dests = Vec::new();
        let mut own: HashMap<String, Message> = HashMap::new();
        while let Some(ex) = work.pop_front() {
            if !seen_ex.insert(ex.name.clone()) {
                continue;
            }
            dests.clear();
            own.clear();
            if ex.name.is_empty() {
                dests.extend(keys.iter().map(|k| Destination::Queue(k.to_string())));
            } else if ex.kind == ExchangeKind::FilterPolicy {
                let transform = self.delivery_transform.read().clone();
                let mut routed = Vec::new();
                crate::filter_policy::subscription::route_topic(&ex, message, transform.as_deref(), &mut routed);
                for (d, m) in routed {
                    if let (Destination::Queue(q), Some(m)) = (&d, m) {
                        own.insert(q.clone(), m);
                    }
                    dests.push(d);
                }
            } else if let Some(routed) = start_dests.take() {
                // `start` is the first exchange walked.
                dests.extend(routed);
            } else {
                for k in keys {
                    ex.route(k, headers, &mut dests);
                }
            }
            let before = out.len();
            let mut went_on = false;
            for d in dests.drain(..) {
                match d {
                    Destination::Queue(name) => {
                        if seen_q.insert(name.clone())
                            && let Some(q) = self.queue(&name)
                        {
                            let m = own.remove(&name).map(|mut m| {
                                m.charge = Some(self.memory.charge(m.memory_size() as u64));
                                Arc::new(m)
                            });
                            out.push((q, m));
                        }
                    }
                    Destination::Exchange(name) => {
                        if let Some(next) = self.exchange(&name) {
                            went_on = true;
                            work.push_back(next);
                        }
                    }
                }
            }
            if out.len() == before
                && !went_on
                && let Some(ae) = ex.alternate().and_then(|n| self.exchange(n))
            {
                work.push_back(ae);
            }
        }
        out
    }

    /// The common case of [`Self::route`] without its work list and sets: the start exchange's
    /// `dests` are a few existing queues and no exchanges (an MQTT publish into `amq.topic`, a
    /// fanout to a handful of queues). `None` when the general walk is needed: an
    /// exchange-to-exchange binding, many destinations, or nothing routed (the alternate
    /// exchange may apply).
    fn queues_only(&self, dests: &[Destination]) -> Option<Vec<Routed>> {
        /// Beyond this many destinations the linear duplicate check loses to the general walk.
        const FEW: usize = 16;
        if dests.is_empty() || dests.len() > FEW {
            return None;
        }
        let mut out: Vec<Routed> = Vec::with_capacity(dests.len());
        for d in dests {
            let Destination::Queue(name) = d else { return None };
            if let Some(q) = self.queue(name)
                && !out.iter().any(|(seen, _)| Arc::ptr_eq(seen, &q))
            {
                out.push((q, None));
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Register a consumer on `queue`; deliveries go to `sink`.
    pub fn consume(
        &self,
        queue: &str,
        spec: ConsumeSpec,
        sink: ConsumerSink,
        ctx: &ClientContext,
    ) -> CoreResult<(Arc<Queue>, ConsumerId)> {
        if self.streams().get(queue).is_some() {
            // STOMP, MQTT, WebSocket: a stream is read from `next`, never drained.
            return self.consume_stream_from(queue, None, spec, sink, ctx);
        }
        let q = self.usable_queue(queue, ctx)?;
        self.check(ctx, ResourceKind::Queue, queue, Access::Read)?;
        if q.exclusive_conflict(spec.exclusive) {
            return Err(CoreError::access_refused(format!(
                "queue '{queue}' in vhost '{}' in exclusive use",
                self.name
            )));
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let cs = ConsumerSpec {
            id,
            prefetch: spec.prefetch,
            auto_ack: spec.auto_ack,
            priority: spec.priority,
            shared_credit: spec.shared_credit,
            filter: spec.filter,
        };
        let fx = q.add_consumer(cs, spec.exclusive, sink);
        self.handle(&q, fx);
        Ok((q, id))
    }

    /// Unregister a consumer.
    pub fn cancel(&self, queue: &Arc<Queue>, consumer: ConsumerId) {
        let fx = queue.remove_consumer(consumer);
        self.handle(queue, fx);
    }

    /// Pull one message. Returns the queue (to settle through), the delivery and the
    /// number of ready messages left.
    pub fn get(
        &self,
        queue: &str,
        auto_ack: bool,
        ctx: &ClientContext,
    ) -> CoreResult<Option<(Arc<Queue>, Delivery, u64)>> {
        self.refuse_stream(queue, "basic.get")?;
        let q = self.usable_queue(queue, ctx)?;
        self.check(ctx, ResourceKind::Queue, queue, Access::Read)?;
        let (d, fx) = q.get(auto_ack, None);
        self.handle(&q, fx);
        Ok(d.map(|d| {
            let left = q.counts().ready;
            (q, d, left)
        }))
    }

    /// Pull up to `max` messages (SQS `ReceiveMessage`), each leased until `lease_deadline`
    /// (or the queue's lease timeout when `None`). Returns the queue to settle through.
    pub fn receive(
        &self,
        queue: &str,
        max: usize,
        lease_deadline: Option<crate::time::Millis>,
        ctx: &ClientContext,
    ) -> CoreResult<(Arc<Queue>, Vec<Delivery>)> {
        self.refuse_stream(queue, "ReceiveMessage")?;
        let q = self.usable_queue(queue, ctx)?;
        self.check(ctx, ResourceKind::Queue, queue, Access::Read)?;
        let (ds, fx) = q.get_many(max, false, lease_deadline);
        self.handle(&q, fx);
        Ok((q, ds))
    }

    /// Settle a lease. False if the lease is unknown (already settled, or the queue is gone).
    pub fn settle(&self, queue: &Arc<Queue>, lease: LeaseId, outcome: Outcome) -> bool {
        let (ok, fx) = match outcome {
            Outcome::Ack => queue.ack(lease),
            Outcome::Requeue => queue.requeue(lease),
            Outcome::Reject => queue.reject(lease),
        };
        self.handle(queue, fx);
        ok
    }

    /// Requeue many leases of one queue (a channel closed).
    pub fn requeue_all(&self, queue: &Arc<Queue>, leases: &[LeaseId]) {
        let fx = queue.requeue_all(leases);
        self.handle(queue, fx);
    }

    /// Tell the queue that `n` deliveries of `consumer` were written to the client.
    pub fn written(&self, queue: &Arc<Queue>, consumer: ConsumerId, n: u32) {
        let fx = queue.written(consumer, n);
        self.handle(queue, fx);
    }

    /// Report a front-end's written deliveries, one entry per delivery, grouped here so
    /// each (queue, consumer) pair is told once per batch.
    pub fn written_batch(&self, mut batch: Vec<(Arc<Queue>, ConsumerId)>) {
        batch.sort_by_key(|(q, c)| (Arc::as_ptr(q) as usize, *c));
        let mut i = 0;
        while i < batch.len() {
            let mut j = i + 1;
            while j < batch.len() && Arc::ptr_eq(&batch[j].0, &batch[i].0) && batch[j].1 == batch[i].1 {
                j += 1;
            }
            self.written(&batch[i].0, batch[i].1, (j - i) as u32);
            i = j;
        }
    }

    /// Report a front-end's written deliveries as runs of (queue, consumer, how many), which
    /// it coalesces as it encodes; pairs in several runs are added up here, so each is told
    /// once. Drains `runs`, keeping its allocation for the next batch.
    pub fn written_runs(&self, runs: &mut Vec<(Arc<Queue>, ConsumerId, u32)>) {
        if runs.len() > 1 {
            runs.sort_by_key(|(q, c, _)| (Arc::as_ptr(q) as usize, *c));
        }
        let mut pending: Option<(Arc<Queue>, ConsumerId, u32)> = None;
        for (q, c, n) in runs.drain(..) {
            match pending.as_mut() {
                Some((pq, pc, pn)) if Arc::ptr_eq(pq, &q) && *pc == c => *pn = pn.saturating_add(n),
                _ => {
                    if let Some((pq, pc, pn)) = pending.replace((q, c, n)) {
                        self.written(&pq, pc, pn);
                    }
                }
            }
        }
        if let Some((q, c, n)) = pending {
            self.written(&q, c, n);
        }
    }

    /// Re-run delivery on a queue (its consumer's shared credit got room).
    pub fn kick(&self, queue: &Arc<Queue>) {
        let fx = queue.kick();
        self.handle(queue, fx);
    }

    /// Carry out the effects a queue operation left: dead letters, expiry, auto-delete.
    pub fn handle(&self, queue: &Arc<Queue>, fx: Followups) {
        if fx.is_empty() {
            return;
        }
        let mut work: VecDeque<(Arc<Queue>, Effect)> = fx.into_iter().map(|e| (Arc::clone(queue), e)).collect();
        while let Some((q, effect)) = work.pop_front() {
            match effect {
                Effect::DeadLetter { message, reason } => {
                    let cfg = q.config();
                    let Some(dlx_name) = cfg.dead_letter_exchange.as_deref() else { continue };
                    let Some(dlx) = self.exchange(dlx_name) else {
                        tracing::debug!(
                            queue = q.name(),
                            dlx = dlx_name,
                            "dead-letter exchange missing; message dropped"
                        );
                        continue;
                    };
                    let mut dl = dead_lettered(
                        &message,
                        q.name(),
                        reason,
                        dlx_name,
                        cfg.dead_letter_routing_key.as_deref(),
                        now_ms(),
                    );
                    let mut keys = vec![dl.routing_key.clone()];
                    if let Some(FieldValue::Array(cc)) = dl.properties.header("CC") {
                        keys.extend(cc.iter().filter_map(|v| v.as_str().map(CompactString::from)));
                    }
                    let targets = self.route(&dlx, &keys, &dl);
                    dl.charge = Some(self.memory.charge(dl.memory_size() as u64));
                    let dl = Arc::new(dl);
                    let mut encoded = None;
                    for (t, own) in targets {
                        if is_cycle(&dl, t.name()) {
                            continue;
                        }
                        let enqueued = match &own {
                            Some(m) => self.enqueue(&t, m, &mut None, PublishOptions::default()),
                            None => self.enqueue(&t, &dl, &mut encoded, PublishOptions::default()),
                        };
                        match enqueued {
                            Ok((_, more, _)) => work.extend(more.into_iter().map(|e| (Arc::clone(&t), e))),
                            Err(e) => tracing::error!(queue = t.name(), error = %e.text, "dead letter lost"),
                        }
                    }
                }
                Effect::QueueExpired | Effect::AutoDelete => {
                    self.remove_queue(&q);
                }
                Effect::Deliver { .. } => {}
            }
        }
    }
}

impl VHost {
    /// True for a binding that must survive a restart: durable source, durable destination.
    fn is_durable_binding(&self, source: &Exchange, destination: &Destination) -> bool {
        source.durable
            && match destination {
                Destination::Queue(q) => self.queue(q).is_some_and(|q| q.store_id() != 0),
                Destination::Exchange(e) => self.exchange(e).is_some_and(|e| e.durable),
            }
    }

    /// Write the durable definitions if this vhost is persistent. A failure is logged:
    /// the in-memory state is already changed and the next successful save includes it.
    fn persist_definitions(&self) {
        let Some(file) = &self.definitions else { return };
        let _guard = self.save_lock.lock();
        let defs = self.snapshot_definitions();
        if let Err(e) = file.save(&defs) {
            tracing::error!(vhost = %self.name, error = %e, "cannot save definitions");
        }
    }

    /// The durable part of this vhost.
    pub fn snapshot_definitions(&self) -> Definitions {
        let predeclared = |n: &str| PREDECLARED.iter().any(|(p, _)| *p == n);
        let exchanges = self.exchanges();
        let mut defs = Definitions::default();
        for ex in &exchanges {
            if ex.durable && !predeclared(&ex.name) {
                defs.exchanges.push(ExchangeDef {
                    name: ex.name.clone(),
                    kind: ex.kind.as_str().to_string(),
                    auto_delete: ex.auto_delete,
                    internal: ex.internal,
                    arguments: ex.arguments.clone(),
                });
            }
            for b in ex.bindings() {
                if self.is_durable_binding(ex, &b.destination) {
                    let (destination, to_exchange) = match b.destination {
                        Destination::Queue(q) => (q, false),
                        Destination::Exchange(e) => (e, true),
                    };
                    defs.bindings.push(BindingDef {
                        source: ex.name.clone(),
                        destination,
                        to_exchange,
                        key: b.key,
                        arguments: b.arguments,
                    });
                }
            }
        }
        for q in self.queues() {
            if q.store_id() != 0 {
                defs.queues.push(QueueDef {
                    name: q.name().to_string(),
                    store_id: q.store_id(),
                    auto_delete: q.auto_delete(),
                    arguments: q.arguments().clone(),
                    policy: q.policy(),
                });
            }
        }
        defs.exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        defs.queues.sort_by(|a, b| a.name.cmp(&b.name));
        defs
    }

    /// Recreate the stored definitions at start-up (before any client connects).
    pub fn load_definitions(&self) -> Result<(), String> {
        let Some(file) = &self.definitions else { return Ok(()) };
        let defs = file.load()?;
        for e in defs.exchanges {
            let Some(kind) = ExchangeKind::parse(&e.kind) else {
                tracing::warn!(exchange = %e.name, kind = %e.kind, "stored exchange has an unknown type; skipped");
                continue;
            };
            let ex = Exchange::new(e.name.clone(), kind, true, e.auto_delete, e.internal, e.arguments);
            self.exchanges.write().insert(e.name, Arc::new(ex));
        }
        for d in defs.queues {
            let config = match QueueConfig::from_arguments(&d.arguments, &d.name, &self.name) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(queue = %d.name, error = %e.text, "stored queue has invalid arguments; skipped");
                    continue;
                }
            };
            let q = Queue::new(
                d.name.clone(),
                self.name.clone(),
                true,
                None,
                d.auto_delete,
                d.arguments,
                config,
                d.store_id,
            );
            if !d.policy.is_empty()
                && let Err(e) = q.set_policy(d.policy)
            {
                tracing::warn!(queue = %d.name, error = %e.text, "stored queue policy is invalid; ignored");
            }
            self.queues.write().insert(d.name, Arc::clone(&q));
            self.spawn_timer(&q);
        }
        for b in defs.bindings {
            let Some(ex) = self.exchange(&b.source) else { continue };
            let destination =
                if b.to_exchange { Destination::Exchange(b.destination) } else { Destination::Queue(b.destination) };
            ex.bind(Binding { destination, key: b.key, arguments: b.arguments });
        }
        Ok(())
    }

    /// Put a message recovered from the message log back into `queue`.
    pub fn restore_message(&self, queue: &Arc<Queue>, recovered: crate::store::log::Recovered) {
        let redelivered = recovered.delivered();
        let mut message = recovered.message;
        message.charge = Some(self.memory.charge(message.memory_size() as u64));
        let fx =
            queue.restore(Arc::new(message), recovered.persisted, redelivered, recovered.enqueued_at, recovered.group);
        self.handle(queue, fx);
    }
}

fn declared(q: &Queue) -> QueueDeclared {
    let c = q.counts();
    QueueDeclared {
        name: q.name().to_string(),
        message_count: c.ready.min(u32::MAX as u64) as u32,
        consumer_count: c.consumers,
    }
}

/// Parse an AMQP `expiration` the way RabbitMQ does (Erlang `string:to_integer`),
/// returning its error term on failure.
fn parse_expiration(exp: &str) -> Result<u64, String> {
    let digits_start = usize::from(exp.starts_with(['-', '+']));
    let digits_end = exp[digits_start..].find(|c: char| !c.is_ascii_digit()).map_or(exp.len(), |i| i + digits_start);
    if digits_end == digits_start {
        return Err("no_integer".to_string());
    }
    if digits_end < exp.len() {
        return Err(format!("{{leftover_string,\"{}\"}}", &exp[digits_end..]));
    }
    match exp.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("{{value_negative,{n}}}")),
        Ok(n) => Ok(n as u64),
        Err(_) => exp.parse::<u64>().map_err(|_| "no_integer".to_string()),
    }
}

fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..n).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// `a == b` for the short names the publish path compares on every message, without a
/// `memcmp` call for the common empty (default exchange) or differently sized names.
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// A server-generated queue name in RabbitMQ's format.
pub fn generate_queue_name() -> String {
    format!("amq.gen-{}", random_suffix(22))
}

#[cfg(test)]
mod route_memo_tests {
    //! A publishing session's [`PublishCache`] reuses the last route of a direct, topic or
    //! fanout exchange; every change that could alter that route must be seen.

    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use bytes::Bytes;

    use super::{ClientContext, ExchangeSpec, PublishCache, QueueSpec, VHost};
    use crate::auth::User;
    use crate::exchange::Destination;
    use crate::memory::MemoryMonitor;
    use crate::message::{FieldTable, Message, Properties};

    struct Fixture {
        v: Arc<VHost>,
        ctx: ClientContext,
        cache: PublishCache,
    }

    impl Fixture {
        fn new() -> Fixture {
            let v = VHost::new("/", MemoryMonitor::new(u64::MAX), Arc::new(AtomicU64::new(1)), None);
            let ctx = ClientContext { connection: 1, user: User::superuser("t", &["/"]) };
            Fixture { v, ctx, cache: PublishCache::default() }
        }
        fn exchange(&self, name: &str, kind: &str) {
            let spec = ExchangeSpec { name: name.into(), kind: kind.into(), ..Default::default() };
            self.v.declare_exchange(spec, &self.ctx).expect("declare exchange");
        }
        fn queue(&self, name: &str) {
            self.v.declare_queue(QueueSpec { name: name.into(), ..Default::default() }, &self.ctx).expect("declare");
        }
        fn bind(&self, ex: &str, q: &str, key: &str) {
            self.v.bind(ex, Destination::Queue(q.into()), key, FieldTable::new(), &self.ctx).expect("bind");
        }
        fn unbind(&self, ex: &str, q: &str, key: &str) {
            self.v.unbind(ex, Destination::Queue(q.into()), key, &FieldTable::new(), &self.ctx).expect("unbind");
        }
        fn publish(&mut self, ex: &str, key: &str) -> bool {
            let m = Message::new(ex, key, Properties::default(), Bytes::from_static(b"x"));
            self.v.publish_cached(m, &self.ctx, &mut self.cache).expect("publish").routed
        }
        fn ready(&self, q: &str) -> u64 {
            self.v.queue(q).map_or(0, |q| q.counts().ready)
        }
    }

    #[tokio::test]
    async fn bindings_added_and_removed_change_the_next_route() {
        let mut f = Fixture::new();
        f.exchange("t", "topic");
        for q in ["one", "two"] {
            f.queue(q);
        }
        f.bind("t", "one", "a.*");
        assert!(f.publish("t", "a.b"));
        assert!(f.cache.route.is_some(), "a route to queues only is kept");
        f.bind("t", "two", "a.#");
        assert!(f.publish("t", "a.b"));
        assert_eq!((f.ready("one"), f.ready("two")), (2, 1), "a new binding is seen");
        f.unbind("t", "one", "a.*");
        assert!(f.publish("t", "a.b"));
        assert_eq!((f.ready("one"), f.ready("two")), (2, 2), "a removed binding is seen");
        assert!(f.publish("t", "a.c.d"));
        assert_eq!(f.ready("two"), 3, "another routing key is routed afresh");
        f.unbind("t", "two", "a.#");
        assert!(!f.publish("t", "a.b"), "nothing bound: unroutable");
    }

    #[tokio::test]
    async fn a_deleted_queue_or_exchange_is_not_reused() {
        let mut f = Fixture::new();
        f.exchange("d", "direct");
        f.queue("q");
        f.bind("d", "q", "k");
        assert!(f.publish("d", "k"));
        f.v.delete_queue("q", false, false, &f.ctx).expect("delete queue");
        assert!(!f.publish("d", "k"), "the deleted queue's binding went with it");
        f.queue("q");
        f.bind("d", "q", "k");
        assert!(f.publish("d", "k"));
        assert_eq!(f.ready("q"), 1, "the new queue of the same name gets it");

        f.v.delete_exchange("d", false, &f.ctx).expect("delete exchange");
        let m = Message::new("d", "k", Properties::default(), Bytes::from_static(b"x"));
        assert!(f.v.publish_cached(m, &f.ctx, &mut f.cache).is_err(), "a deleted exchange is not found");
        f.exchange("d", "fanout");
        f.queue("other");
        f.bind("d", "other", "");
        assert!(f.publish("d", "k"));
        assert_eq!((f.ready("q"), f.ready("other")), (1, 1), "the re-declared exchange routes by its own bindings");
    }
}
