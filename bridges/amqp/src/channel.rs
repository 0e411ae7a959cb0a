//! One AMQP channel: its consumers, unacknowledged deliveries, confirm and tx
//! modes, and the content being assembled for a `basic.publish`. Each method
//! handler translates one AMQP method into calls on the core's `VHost`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rustc_hash::FxHashMap;
use std::sync::Arc;

use amq_protocol::protocol::{AMQPClass, access, basic, channel, confirm, exchange, queue, tx};
use amq_protocol::types::{AMQPValue, FieldTable as AmqpTable, LongString, ShortString};
use bytes::{Bytes, BytesMut};
use switchyard::exchange::Destination;
use switchyard::message::{Message, Properties};
use switchyard::queue::state::{ConsumerId, Delivery, LeaseId, SharedCredit};
use switchyard::queue::{ConsumerSink, Queue};
use switchyard::store::Lsn;
use switchyard::vhost::{ConsumeSpec, ExchangeSpec, Outcome, PublishCache, QueueSpec};
use switchyard::{ClientContext, VHost};

use crate::codec::convert::{plain_properties, properties_to_amqp, put_plain_properties, table_from_amqp};
use crate::codec::{ContentProperties, DeliverArgs, MethodRef};
use crate::error::{AmqpError, code};
use crate::outbound::Outbound;

/// RabbitMQ's direct reply-to pseudo-queue name.
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// What a channel needs from its connection.
pub(crate) struct ConnState {
    pub(crate) vhost: Arc<VHost>,
    pub(crate) ctx: ClientContext,
    pub(crate) out: Outbound,
    pub(crate) sink: ConsumerSink,
    /// Which channel each of this connection's consumers belongs to.
    pub(crate) consumer_channels: FxHashMap<ConsumerId, u16>,
    pub(crate) max_message_size: usize,
    pub(crate) consumer_cancel_notify: bool,
    /// Deliveries encoded this turn as runs of one queue and consumer, reported to their
    /// queues once written.
    pub(crate) written: Vec<(Arc<Queue>, ConsumerId, u32)>,
    /// The highest message-log LSN known durable; confirms wait for it.
    pub(crate) synced: Lsn,
    /// The message log failed: nothing above `synced` will ever be durable.
    pub(crate) log_failed: bool,
}

struct Pending {
    /// The message being assembled, in the `Arc` the core will keep it in: the header's
    /// properties and the body are written into it in place, so the ~400-byte `Message` is
    /// never moved between the frames (its moves showed as 5% of a publisher's time).
    message: Arc<Message>,
    mandatory: bool,
    /// The content header has arrived (its properties are in `message`).
    has_header: bool,
    body_size: u64,
    /// Body frames so far, when the body spans several frames.
    body: BytesMut,
}

struct Unacked {
    queue: Arc<Queue>,
    lease: LeaseId,
}

struct ConsumerEntry {
    id: ConsumerId,
    queue: Arc<Queue>,
}

#[derive(Clone, Copy)]
enum SettleOp {
    Ack,
    Nack { requeue: bool },
}

#[derive(Default)]
struct TxState {
    publishes: Vec<(Arc<Message>, bool)>,
    settles: Vec<(u64, bool, SettleOp)>,
}

#[derive(Default)]
struct Confirms {
    next_seq: u64,
    /// Acks waiting for their message to be durable: (publish seq, LSN), in seq order.
    deferred: VecDeque<(u64, Lsn)>,
    /// A run of consecutive acks not yet sent, sent as one `multiple` ack.
    pending: Option<(u64, u64)>,
}

/// Per-channel state.
pub(crate) struct Channel {
    id: u16,
    /// We sent `channel.close` and wait for `close-ok`; everything else is dropped.
    pub(crate) closing: bool,
    pending: Option<Pending>,
    next_tag: u64,
    unacked: BTreeMap<u64, Unacked>,
    consumers: HashMap<String, ConsumerEntry>,
    tags_by_id: FxHashMap<ConsumerId, String>,
    prefetch: u32,
    shared: Arc<SharedCredit>,
    global_limit: bool,
    confirms: Option<Confirms>,
    tx: Option<TxState>,
    last_queue: Option<String>,
    reply_queue: Option<String>,
    /// A tx.commit-ok waiting for its messages to be durable.
    commit_ok_after: Option<Lsn>,
    /// Permission and default-exchange queue of the last publish.
    publish_cache: PublishCache,
}

fn ss(s: &str) -> ShortString {
    ShortString::from(crate::error::truncate(s, 255))
}

fn ids(m: &AMQPClass) -> (u16, u16) {
    crate::codec::class_method_ids(m)
}

impl Channel {
    pub(crate) fn new(id: u16) -> Channel {
        Channel {
            id,
            closing: false,
            pending: None,
            next_tag: 1,
            unacked: BTreeMap::new(),
            consumers: HashMap::new(),
            tags_by_id: FxHashMap::default(),
            prefetch: 0,
            shared: SharedCredit::new(0),
            global_limit: false,
            confirms: None,
            tx: None,
            last_queue: None,
            reply_queue: None,
            commit_ok_after: None,
            publish_cache: PublishCache::default(),
        }
    }

    /// True while a publish's header or body frames are expected.
    pub(crate) fn expects_content(&self) -> bool {
        self.pending.is_some()
    }

    /// Handle one method. Errors close the channel (soft) or the connection (hard).
    pub(crate) fn method(&mut self, method: MethodRef<'_>, st: &mut ConnState) -> Result<(), AmqpError> {
        let method = match method {
            // The hot path: the publish's strings go straight from the read buffer into the
            // pending publish (what `dispatch` does for an `AMQPClass` publish).
            MethodRef::Publish(p) => {
                return self
                    .begin_publish(p.exchange, p.routing_key, p.mandatory, p.immediate)
                    .map_err(|e| e.on(60, 40));
            }
            // The same as `dispatch` of the `AMQPClass` ack, without building one.
            MethodRef::Ack { delivery_tag, multiple } => {
                return self
                    .settle(delivery_tag, multiple, SettleOp::Ack, st)
                    .map_err(|e| if e.class_id == 0 { e.on(60, 80) } else { e });
            }
            MethodRef::Amqp(method) => *method,
        };
        let (class_id, method_id) = ids(&method);
        self.dispatch(method, st).map_err(|e| if e.class_id == 0 { e.on(class_id, method_id) } else { e })
    }

    /// `basic.publish`: the content header and body frames that follow complete it.
    fn begin_publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        immediate: bool,
    ) -> Result<(), AmqpError> {
        if immediate {
            return Err(AmqpError::connection(code::NOT_IMPLEMENTED, "immediate=true"));
        }
        self.pending = Some(Pending {
            message: Arc::new(Message::new(exchange, routing_key, Properties::default(), Bytes::new())),
            mandatory,
            has_header: false,
            body_size: 0,
            body: BytesMut::new(),
        });
        Ok(())
    }

    fn dispatch(&mut self, method: AMQPClass, st: &mut ConnState) -> Result<(), AmqpError> {
        let ch = self.id;
        match method {
            AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => {
                self.begin_publish(p.exchange.as_str(), p.routing_key.as_str(), p.mandatory, p.immediate)
            }
            AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => self.settle(a.delivery_tag, a.multiple, SettleOp::Ack, st),
            AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                self.settle(n.delivery_tag, n.multiple, SettleOp::Nack { requeue: n.requeue }, st)
            }
            AMQPClass::Basic(basic::AMQPMethod::Reject(r)) => {
                self.settle(r.delivery_tag, false, SettleOp::Nack { requeue: r.requeue }, st)
            }
            AMQPClass::Basic(basic::AMQPMethod::Qos(q)) => {
                if q.global {
                    self.shared.set_limit(q.prefetch_count.into());
                    self.global_limit = q.prefetch_count > 0;
                    self.kick_all(st);
                } else {
                    self.prefetch = q.prefetch_count.into();
                }
                st.out.method(ch, AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})));
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => self.consume(c, st),
            AMQPClass::Basic(basic::AMQPMethod::Cancel(c)) => {
                let tag = c.consumer_tag.as_str().to_string();
                self.cancel_consumer(&tag, st);
                if !c.nowait {
                    st.out.method(
                        ch,
                        AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk { consumer_tag: c.consumer_tag })),
                    );
                }
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Get(g)) => self.get(g, st),
            AMQPClass::Basic(basic::AMQPMethod::Recover(r)) => {
                self.recover(r.requeue, st)?;
                st.out.method(ch, AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})));
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(r)) => self.recover(r.requeue, st),
            AMQPClass::Exchange(m) => self.exchange_method(m, st),
            AMQPClass::Queue(m) => self.queue_method(m, st),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                if self.tx.is_some() {
                    return Err(AmqpError::channel(code::PRECONDITION_FAILED, "cannot switch from tx to confirm mode"));
                }
                if self.confirms.is_none() {
                    self.confirms = Some(Confirms { next_seq: 1, ..Confirms::default() });
                }
                if !s.nowait {
                    st.out.method(ch, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})));
                }
                Ok(())
            }
            AMQPClass::Tx(m) => self.tx_method(m, st),
            AMQPClass::Channel(channel::AMQPMethod::Flow(f)) => {
                if !f.active {
                    return Err(AmqpError::connection(code::NOT_IMPLEMENTED, "active=false"));
                }
                st.out.method(ch, AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active: true })));
                Ok(())
            }
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                st.out.method(ch, AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})));
                Ok(())
            }
            other => {
                let (c, m) = ids(&other);
                Err(AmqpError::connection(
                    code::COMMAND_INVALID,
                    format!(
                        "unexpected method {} on channel {ch}",
                        crate::codec::method_name_by_id(c, m).unwrap_or("unknown")
                    ),
                ))
            }
        }
    }

    fn queue_name(&self, given: &str) -> Result<String, AmqpError> {
        if !given.is_empty() {
            return Ok(given.to_string());
        }
        self.last_queue.clone().ok_or_else(|| AmqpError::channel(code::NOT_FOUND, "no previously declared queue"))
    }

    fn exchange_method(&mut self, m: exchange::AMQPMethod, st: &mut ConnState) -> Result<(), AmqpError> {
        let ch = self.id;
        match m {
            exchange::AMQPMethod::Declare(d) => {
                st.vhost.declare_exchange(
                    ExchangeSpec {
                        name: d.exchange.as_str().to_string(),
                        kind: d.kind.as_str().to_string(),
                        passive: d.passive,
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: d.internal,
                        arguments: table_from_amqp(&d.arguments),
                    },
                    &st.ctx,
                )?;
                if !d.nowait {
                    st.out.method(ch, AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})));
                }
            }
            exchange::AMQPMethod::Delete(d) => {
                st.vhost.delete_exchange(d.exchange.as_str(), d.if_unused, &st.ctx)?;
                if !d.nowait {
                    st.out.method(ch, AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})));
                }
            }
            exchange::AMQPMethod::Bind(b) => {
                st.vhost.bind(
                    b.source.as_str(),
                    Destination::Exchange(b.destination.as_str().to_string()),
                    b.routing_key.as_str(),
                    table_from_amqp(&b.arguments),
                    &st.ctx,
                )?;
                if !b.nowait {
                    st.out.method(ch, AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})));
                }
            }
            exchange::AMQPMethod::Unbind(b) => {
                st.vhost.unbind(
                    b.source.as_str(),
                    Destination::Exchange(b.destination.as_str().to_string()),
                    b.routing_key.as_str(),
                    &table_from_amqp(&b.arguments),
                    &st.ctx,
                )?;
                if !b.nowait {
                    st.out.method(ch, AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})));
                }
            }
            other => {
                return Err(AmqpError::connection(
                    code::COMMAND_INVALID,
                    format!("unexpected exchange method {other:?}").chars().take(120).collect::<String>(),
                ));
            }
        }
        Ok(())
    }

    fn queue_method(&mut self, m: queue::AMQPMethod, st: &mut ConnState) -> Result<(), AmqpError> {
        let ch = self.id;
        match m {
            queue::AMQPMethod::Declare(d) if d.queue.as_str() == REPLY_TO => {
                // The pseudo-queue always exists and always reports one consumer.
                if !d.nowait {
                    st.out.method(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                            queue: ss(REPLY_TO),
                            message_count: 0,
                            consumer_count: 1,
                        })),
                    );
                }
            }
            queue::AMQPMethod::Declare(d) => {
                let ok = st.vhost.declare_queue(
                    QueueSpec {
                        name: d.queue.as_str().to_string(),
                        passive: d.passive,
                        durable: d.durable,
                        exclusive: d.exclusive,
                        auto_delete: d.auto_delete,
                        arguments: table_from_amqp(&d.arguments),
                    },
                    &st.ctx,
                )?;
                self.last_queue = Some(ok.name.clone());
                if !d.nowait {
                    st.out.method(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                            queue: ss(&ok.name),
                            message_count: ok.message_count,
                            consumer_count: ok.consumer_count,
                        })),
                    );
                }
            }
            queue::AMQPMethod::Bind(b) => {
                let q = self.queue_name(b.queue.as_str())?;
                st.vhost.bind(
                    b.exchange.as_str(),
                    Destination::Queue(q),
                    b.routing_key.as_str(),
                    table_from_amqp(&b.arguments),
                    &st.ctx,
                )?;
                if !b.nowait {
                    st.out.method(ch, AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})));
                }
            }
            queue::AMQPMethod::Unbind(b) => {
                let q = self.queue_name(b.queue.as_str())?;
                st.vhost.unbind(
                    b.exchange.as_str(),
                    Destination::Queue(q),
                    b.routing_key.as_str(),
                    &table_from_amqp(&b.arguments),
                    &st.ctx,
                )?;
                st.out.method(ch, AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})));
            }
            queue::AMQPMethod::Purge(p) => {
                let q = self.queue_name(p.queue.as_str())?;
                let n = st.vhost.purge_queue(&q, &st.ctx)?;
                if !p.nowait {
                    st.out.method(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                            message_count: n.min(u32::MAX as u64) as u32,
                        })),
                    );
                }
            }
            queue::AMQPMethod::Delete(d) => {
                let q = self.queue_name(d.queue.as_str())?;
                let n = st.vhost.delete_queue(&q, d.if_unused, d.if_empty, &st.ctx)?;
                if !d.nowait {
                    st.out.method(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                            message_count: n.min(u32::MAX as u64) as u32,
                        })),
                    );
                }
            }
            other => {
                return Err(AmqpError::connection(
                    code::COMMAND_INVALID,
                    format!("unexpected queue method {other:?}").chars().take(120).collect::<String>(),
                ));
            }
        }
        Ok(())
    }

    fn tx_method(&mut self, m: tx::AMQPMethod, st: &mut ConnState) -> Result<(), AmqpError> {
        let ch = self.id;
        match m {
            tx::AMQPMethod::Select(_) => {
                if self.confirms.is_some() {
                    return Err(AmqpError::channel(code::PRECONDITION_FAILED, "cannot switch from confirm to tx mode"));
                }
                self.tx.get_or_insert_with(TxState::default);
                st.out.method(ch, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
            }
            tx::AMQPMethod::Commit(_) => {
                let Some(txs) = self.tx.as_mut() else {
                    return Err(AmqpError::channel(code::PRECONDITION_FAILED, "channel is not transactional"));
                };
                let TxState { publishes, settles } = std::mem::take(txs);
                let mut lsn = None;
                for (msg, mandatory) in publishes {
                    lsn = lsn.max(self.route(msg, mandatory, st)?);
                }
                for (tag, multiple, op) in settles {
                    self.apply_settle(tag, multiple, op, st)?;
                }
                // commit-ok promises the messages are durable: wait for their fsync.
                match lsn {
                    Some(l) if l > st.synced => self.commit_ok_after = Some(l),
                    _ => st.out.method(ch, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {}))),
                }
            }
            tx::AMQPMethod::Rollback(_) => {
                let Some(txs) = self.tx.as_mut() else {
                    return Err(AmqpError::channel(code::PRECONDITION_FAILED, "channel is not transactional"));
                };
                *txs = TxState::default();
                st.out.method(ch, AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})));
            }
            other => {
                return Err(AmqpError::connection(
                    code::COMMAND_INVALID,
                    format!("unexpected tx method {other:?}").chars().take(120).collect::<String>(),
                ));
            }
        }
        Ok(())
    }

    /// A content header frame for the pending publish.
    pub(crate) fn content_header(
        &mut self,
        class_id: u16,
        body_size: u64,
        properties: &ContentProperties<'_>,
        st: &mut ConnState,
    ) -> Result<(), AmqpError> {
        let Some(p) = self.pending.as_mut() else {
            return Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                format!("expected method frame, got non method frame instead on channel {}", self.id),
            ));
        };
        if p.has_header || class_id != 60 {
            return Err(AmqpError::connection(code::UNEXPECTED_FRAME, "expected content body, got content header"));
        }
        if body_size > st.max_message_size as u64 {
            self.pending = None;
            return Err(AmqpError::channel(
                code::PRECONDITION_FAILED,
                format!("message size {body_size} is larger than configured max size {}", st.max_message_size),
            )
            .on(60, 40));
        }
        // `make_mut` never clones here: nothing else holds the pending message yet.
        properties.fill(&mut Arc::make_mut(&mut p.message).properties);
        p.has_header = true;
        p.body_size = body_size;
        if body_size == 0 {
            return self.complete_publish(Bytes::new(), st);
        }
        Ok(())
    }

    /// A content body frame for the pending publish.
    pub(crate) fn content_body(&mut self, payload: &[u8], st: &mut ConnState) -> Result<(), AmqpError> {
        let Some(p) = self.pending.as_mut().filter(|p| p.has_header) else {
            return Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                format!("expected method frame, got non method frame instead on channel {}", self.id),
            ));
        };
        if p.body.len() as u64 + payload.len() as u64 > p.body_size {
            return Err(AmqpError::connection(
                code::FRAME_ERROR,
                format!("content body larger than the {} bytes the content header announced", p.body_size),
            ));
        }
        if p.body.is_empty() && payload.len() as u64 == p.body_size {
            // The whole body in one frame (the usual case): one exact-size copy out of the
            // read buffer. The copy is deliberate: a slice would keep the whole read buffer
            // alive for as long as the message is queued, beyond what it is charged for.
            return self.complete_publish(Bytes::copy_from_slice(payload), st);
        }
        if p.body.is_empty() {
            p.body.reserve(p.body_size.min(1 << 20) as usize);
        }
        p.body.extend_from_slice(payload);
        if p.body.len() as u64 == p.body_size {
            let body = std::mem::take(&mut p.body).freeze();
            return self.complete_publish(body, st);
        }
        Ok(())
    }

    fn complete_publish(&mut self, body: Bytes, st: &mut ConnState) -> Result<(), AmqpError> {
        let Some(Pending { mut message, mandatory, .. }) = self.pending.take() else { return Ok(()) };
        // `make_mut` never clones: the pending message is not shared until it is published.
        let msg = Arc::make_mut(&mut message);
        msg.body = body;
        if msg.properties.reply_to.as_deref() == Some(REPLY_TO) {
            match &self.reply_queue {
                Some(q) => msg.properties.reply_to = Some(q.clone()),
                None => {
                    return Err(
                        AmqpError::channel(code::PRECONDITION_FAILED, "fast reply consumer does not exist").on(60, 40)
                    );
                }
            }
        }
        let msg = message;
        if let Some(txs) = self.tx.as_mut() {
            // Publishing to a missing exchange fails at publish time even in a transaction.
            if st.vhost.exchange(&msg.exchange).is_none() {
                return Err(AmqpError::channel(
                    code::NOT_FOUND,
                    format!("no exchange '{}' in vhost '{}'", msg.exchange, st.vhost.name()),
                )
                .on(60, 40));
            }
            txs.publishes.push((msg, mandatory));
            return Ok(());
        }
        self.route(msg, mandatory, st).map(|_| ()).map_err(|e| e.on(60, 40))
    }

    /// Publish and handle return/confirm; returns the LSN the message must reach to be durable.
    fn route(&mut self, msg: Arc<Message>, mandatory: bool, st: &mut ConnState) -> Result<Option<Lsn>, AmqpError> {
        let seq = self.confirms.as_mut().map(|c| {
            let s = c.next_seq;
            c.next_seq += 1;
            s
        });
        let returned = mandatory
            .then(|| (msg.exchange.clone(), msg.routing_key.clone(), msg.properties.clone(), msg.body.clone()));
        let outcome = st.vhost.publish_shared(msg, &st.ctx, &mut self.publish_cache)?;
        if let Some((exchange, routing_key, props, body)) = returned
            && !outcome.routed
        {
            st.out.content(
                self.id,
                AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                    reply_code: code::NO_ROUTE,
                    reply_text: ss("NO_ROUTE"),
                    exchange: ss(&exchange),
                    routing_key: ss(&routing_key),
                })),
                &properties_to_amqp(&props),
                &body,
            );
        }
        if let Some(seq) = seq {
            if outcome.rejected {
                self.flush_confirms(st);
                st.out.method(
                    self.id,
                    AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: seq,
                        multiple: false,
                        requeue: false,
                    })),
                );
            } else if let Some(c) = self.confirms.as_mut() {
                c.deferred.push_back((seq, outcome.lsn.unwrap_or(0)));
                self.release_confirms(st);
            }
        }
        Ok(outcome.lsn)
    }

    /// Confirms or a commit-ok wait for the message log to reach their writes.
    pub(crate) fn waits_for_sync(&self) -> bool {
        self.commit_ok_after.is_some() || self.confirms.as_ref().is_some_and(|c| !c.deferred.is_empty())
    }

    /// Move acks whose messages are now durable (LSN <= `st.synced`) into the coalesced
    /// run that [`Channel::flush_confirms`] sends; send a deferred commit-ok likewise.
    pub(crate) fn release_confirms(&mut self, st: &mut ConnState) {
        if self.commit_ok_after.is_some_and(|l| l <= st.synced) {
            self.commit_ok_after = None;
            st.out.method(self.id, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
        }
        loop {
            let Some(c) = self.confirms.as_mut() else { return };
            let Some(&(seq, lsn)) = c.deferred.front() else { return };
            if lsn > st.synced {
                if !st.log_failed {
                    return;
                }
                // Its write or fsync failed: it is not durable and never will be (the log
                // does not retry), so the publisher gets a nack, after the acks before it.
                c.deferred.pop_front();
                self.flush_confirms(st);
                st.out.method(
                    self.id,
                    AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: seq,
                        multiple: false,
                        requeue: false,
                    })),
                );
                continue;
            }
            c.deferred.pop_front();
            let contiguous = c.pending.filter(|(_, last)| last + 1 == seq);
            if contiguous.is_none() {
                self.flush_confirms(st);
            }
            if let Some(c) = self.confirms.as_mut() {
                c.pending = Some((contiguous.map_or(seq, |(first, _)| first), seq));
            }
        }
    }

    /// Send the coalesced publisher-confirm acks (called once per loop turn).
    pub(crate) fn flush_confirms(&mut self, st: &mut ConnState) {
        if let Some((first, last)) = self.confirms.as_mut().and_then(|c| c.pending.take()) {
            st.out.method(
                self.id,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: last, multiple: first != last })),
            );
        }
    }

    fn consume(&mut self, c: basic::Consume, st: &mut ConnState) -> Result<(), AmqpError> {
        let mut tag = c.consumer_tag.as_str().to_string();
        if tag.is_empty() {
            tag = format!("amq.ctag-{}", switchyard::vhost::generate_queue_name().trim_start_matches("amq.gen-"));
        }
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::connection(code::NOT_ALLOWED, format!("attempt to reuse consumer tag '{tag}'")));
        }
        let args = table_from_amqp(&c.arguments);
        let priority = args.get("x-priority").and_then(|v| v.as_i64()).unwrap_or(0) as i32;
        let queue_name = if c.queue.as_str() == REPLY_TO {
            if !c.no_ack {
                return Err(AmqpError::channel(code::PRECONDITION_FAILED, "reply consumer cannot acknowledge"));
            }
            if self.reply_queue.is_some() {
                return Err(AmqpError::channel(code::PRECONDITION_FAILED, "reply consumer already set"));
            }
            let q = st.vhost.declare_reply_queue(&st.ctx);
            self.reply_queue = Some(q.name().to_string());
            q.name().to_string()
        } else {
            self.queue_name(c.queue.as_str())?
        };
        let spec = ConsumeSpec {
            prefetch: self.prefetch,
            auto_ack: c.no_ack,
            exclusive: c.exclusive,
            priority,
            shared_credit: Some(Arc::clone(&self.shared)),
            filter: None,
        };
        // Deliveries reach the connection through its event channel and are encoded
        // only after this frame is handled, so consume-ok always precedes them.
        let (queue, id) = if st.vhost.streams().get(&queue_name).is_some() {
            st.vhost.consume_stream(&queue_name, &args, spec, st.sink.clone(), &st.ctx)?
        } else {
            st.vhost.consume(&queue_name, spec, st.sink.clone(), &st.ctx)?
        };
        if !c.nowait {
            st.out.method(
                self.id,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk { consumer_tag: ss(&tag) })),
            );
        }
        st.consumer_channels.insert(id, self.id);
        self.tags_by_id.insert(id, tag.clone());
        self.consumers.insert(tag, ConsumerEntry { id, queue });
        Ok(())
    }

    /// Stop a consumer. Deliveries already queued for it are still sent by the
    /// connection before the cancel-ok, which it drains first.
    pub(crate) fn cancel_consumer(&mut self, tag: &str, st: &mut ConnState) {
        if let Some(entry) = self.consumers.remove(tag) {
            if self.reply_queue.as_deref() == Some(entry.queue.name()) {
                self.reply_queue = None;
            }
            st.vhost.cancel(&entry.queue, entry.id);
            self.tags_by_id.remove(&entry.id);
            st.consumer_channels.remove(&entry.id);
        }
    }

    /// The broker cancelled a consumer (queue deleted): tell the client if it can hear it.
    pub(crate) fn broker_cancelled(&mut self, id: ConsumerId, st: &mut ConnState) {
        if let Some(tag) = self.tags_by_id.remove(&id) {
            self.consumers.remove(&tag);
            st.consumer_channels.remove(&id);
            if st.consumer_cancel_notify && !self.closing {
                st.out.method(
                    self.id,
                    AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel { consumer_tag: ss(&tag), nowait: true })),
                );
            }
        }
    }

    /// Encode a delivery for one of this channel's consumers.
    pub(crate) fn deliver(&mut self, id: ConsumerId, queue: Arc<Queue>, d: Delivery, st: &mut ConnState) {
        let Some(tag) = self.tags_by_id.get(&id).filter(|_| !self.closing) else {
            if let Some(lease) = d.lease {
                st.vhost.settle(&queue, lease, Outcome::Requeue);
            }
            return;
        };
        let delivery_tag = self.next_tag;
        self.next_tag += 1;
        let args = DeliverArgs {
            consumer_tag: tag,
            delivery_tag,
            redelivered: d.redelivered,
            exchange: &d.message.exchange,
            routing_key: &d.message.routing_key,
        };
        let props = &d.message.properties;
        if plain_properties(props) {
            st.out.deliver_with(self.id, &args, |out| put_plain_properties(props, out), &d.message.body);
        } else {
            st.out.deliver(self.id, &args, &properties_to_amqp(props), &d.message.body);
        }
        if let Some(lease) = d.lease {
            self.unacked.insert(delivery_tag, Unacked { queue: Arc::clone(&queue), lease });
        }
        match st.written.last_mut() {
            Some((q, c, n)) if *c == id && Arc::ptr_eq(q, &queue) => *n += 1,
            _ => st.written.push((queue, id, 1)),
        }
    }

    fn get(&mut self, g: basic::Get, st: &mut ConnState) -> Result<(), AmqpError> {
        let q = self.queue_name(g.queue.as_str())?;
        match st.vhost.get(&q, g.no_ack, &st.ctx)? {
            None => st.out.method(self.id, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {}))),
            Some((queue, d, left)) => {
                let delivery_tag = self.next_tag;
                self.next_tag += 1;
                let method = AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                    delivery_tag,
                    redelivered: d.redelivered,
                    exchange: ss(&d.message.exchange),
                    routing_key: ss(&d.message.routing_key),
                    message_count: left.min(u32::MAX as u64) as u32,
                }));
                st.out.content(self.id, method, &properties_to_amqp(&d.message.properties), &d.message.body);
                if let Some(lease) = d.lease {
                    self.unacked.insert(delivery_tag, Unacked { queue, lease });
                }
            }
        }
        Ok(())
    }

    fn settle(&mut self, tag: u64, multiple: bool, op: SettleOp, st: &mut ConnState) -> Result<(), AmqpError> {
        if let Some(txs) = self.tx.as_mut() {
            let known = self.unacked.contains_key(&tag)
                || (multiple && (tag == 0 || self.unacked.range(..=tag).next().is_some()));
            if !known {
                return Err(AmqpError::channel(code::PRECONDITION_FAILED, format!("unknown delivery tag {tag}")));
            }
            txs.settles.push((tag, multiple, op));
            return Ok(());
        }
        self.apply_settle(tag, multiple, op, st)
    }

    fn apply_settle(&mut self, tag: u64, multiple: bool, op: SettleOp, st: &mut ConnState) -> Result<(), AmqpError> {
        let outcome = match op {
            SettleOp::Ack => Outcome::Ack,
            SettleOp::Nack { requeue: true } => Outcome::Requeue,
            SettleOp::Nack { requeue: false } => Outcome::Reject,
        };
        if !multiple {
            // One tag (the common case): no list of tags to build.
            let Some(u) = self.unacked.remove(&tag) else {
                return Err(AmqpError::channel(code::PRECONDITION_FAILED, format!("unknown delivery tag {tag}")));
            };
            st.vhost.settle(&u.queue, u.lease, outcome);
            if self.global_limit {
                self.kick_all(st);
            }
            return Ok(());
        }
        let tags: Vec<u64> = if tag == 0 {
            self.unacked.keys().copied().collect()
        } else {
            self.unacked.range(..=tag).map(|(t, _)| *t).collect()
        };
        if tags.is_empty() && tag != 0 {
            return Err(AmqpError::channel(code::PRECONDITION_FAILED, format!("unknown delivery tag {tag}")));
        }
        for t in tags {
            if let Some(u) = self.unacked.remove(&t) {
                st.vhost.settle(&u.queue, u.lease, outcome);
            }
        }
        if self.global_limit {
            self.kick_all(st);
        }
        Ok(())
    }

    fn kick_all(&self, st: &ConnState) {
        let mut seen: Vec<*const Queue> = Vec::new();
        for c in self.consumers.values() {
            let p = Arc::as_ptr(&c.queue);
            if !seen.contains(&p) {
                seen.push(p);
                st.vhost.kick(&c.queue);
            }
        }
    }

    fn recover(&mut self, requeue: bool, st: &mut ConnState) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::connection(code::NOT_IMPLEMENTED, "requeue=false"));
        }
        self.requeue_unacked(st);
        Ok(())
    }

    fn requeue_unacked(&mut self, st: &mut ConnState) {
        let mut by_queue: Vec<(Arc<Queue>, Vec<LeaseId>)> = Vec::new();
        for (_, u) in std::mem::take(&mut self.unacked) {
            match by_queue.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
                Some((_, v)) => v.push(u.lease),
                None => by_queue.push((u.queue, vec![u.lease])),
            }
        }
        for (q, leases) in by_queue {
            st.vhost.requeue_all(&q, &leases);
        }
    }

    /// Release everything the channel holds: consumers go, unacked messages return.
    pub(crate) fn release(&mut self, st: &mut ConnState) {
        let tags: Vec<String> = self.consumers.keys().cloned().collect();
        for tag in tags {
            self.cancel_consumer(&tag, st);
        }
        self.requeue_unacked(st);
        self.pending = None;
        if let Some(c) = self.confirms.as_mut() {
            c.pending = None;
        }
    }
}

/// `true` if `value` is an AMQP boolean `true`; used to read client capabilities.
pub(crate) fn capability(props: &AmqpTable, name: &str) -> bool {
    match props.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(caps)) => matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true))),
        _ => false,
    }
}

/// A long string from text.
pub(crate) fn long(s: &str) -> LongString {
    LongString::from(s.as_bytes().to_vec())
}
