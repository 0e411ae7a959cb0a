//! The JSON live API (`/ws/live`): one connection's task.
//!
//! Two tasks per connection. The **main task** reads requests, takes the
//! core's deliveries, keeps time (auth deadline, pings, idle timeout) and never
//! waits on the socket. The **writer task** drains the [`Outbox`] into the
//! socket, encoding deliveries to JSON only when it writes them.
//!
//! The outbox is the bounded outbound buffer (`outbound_max_messages`,
//! `outbound_max_bytes`). What happens when it is full depends on what fills it:
//! - topic deliveries are taken from the core at once (their private queue never
//!   grows) and, on overflow, either the oldest buffered topic delivery is
//!   dropped and counted (`dropped` on the subscription's next message) or the
//!   connection is closed with 4429, per `[ws] topic_overflow`;
//! - queue deliveries are never dropped: a queue subscription has a window
//!   (prefetch), and the core's unwritten-delivery cap holds the rest in the queue;
//! - replies are small, and requests are not read while the outbox is full.
//!
//! So a browser that stops reading costs at most the outbox plus the socket
//! buffers, whatever the publish rate.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, close_code};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use switchyard::auth::User;
use switchyard::exchange::Destination;
use switchyard::queue::state::{ConsumerId, LeaseId};
use switchyard::queue::{ConsumerEvent, Queue};
use switchyard::stream::{SequenceNumber, StartPosition, Stream, StreamRecord};
use switchyard::time::now_ms;
use switchyard::vhost::{ConsumeSpec, Outcome, QueueSpec};
use switchyard::{BrokerHandle, ClientContext, CoreError, FieldTable, Message, VHost};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::{TopicOverflow, WsConfig};
use crate::error::LiveError;
use crate::json::{self, DeliveryInfo, Request, SubscribeReq};
use crate::stream::{CLOSE_IDLE_TIMEOUT, close_for_error};

/// Close code: authentication failed.
pub const CLOSE_AUTH_FAILED: u16 = 4401;
/// Close code: the outbound buffer overflowed and `topic_overflow = "disconnect"`.
pub const CLOSE_SLOW_CONSUMER: u16 = 4429;
/// How long the writer gets to send the close frame before the socket is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Bytes charged per buffered item on top of its body.
const ITEM_OVERHEAD: usize = 256;
/// Most core events handled per loop turn, so requests are not starved.
const EVENTS_PER_TURN: usize = 256;

/// A subscription as the writer sees it: its name and its overflow counter.
#[derive(Debug)]
struct SubShared {
    id: String,
    dropped: AtomicU64,
}

/// A delivery waiting in the outbox.
#[derive(Debug)]
struct Pending {
    sub: Arc<SubShared>,
    message: Arc<Message>,
    tag: Option<u64>,
    redelivered: bool,
    /// Topic deliveries may be dropped on overflow; queue deliveries may not.
    droppable: bool,
    /// Tell the queue once written (queue subscriptions; topic ones are told on receipt).
    written: Option<(Arc<VHost>, Arc<Queue>, ConsumerId)>,
}

/// A stream record waiting in the outbox.
#[derive(Debug)]
struct PendingRecord {
    sub: Arc<SubShared>,
    stream: Arc<str>,
    record: StreamRecord,
}

#[derive(Debug)]
enum Out {
    Text(String),
    Ping,
    Delivery(Box<Pending>),
    Record(Box<PendingRecord>),
}

impl Out {
    fn size(&self) -> usize {
        match self {
            Out::Text(s) => s.len() + ITEM_OVERHEAD,
            Out::Ping => ITEM_OVERHEAD,
            Out::Delivery(p) => p.message.body.len() + ITEM_OVERHEAD,
            Out::Record(r) => r.record.data.len() + ITEM_OVERHEAD,
        }
    }
}

#[derive(Debug, Default)]
struct OutState {
    items: VecDeque<Out>,
    bytes: usize,
    close: Option<(u16, String)>,
}

/// The bounded outbound buffer shared by the main and writer tasks.
#[derive(Debug)]
struct Outbox {
    state: Mutex<OutState>,
    notify: Notify,
    /// Told when the writer takes an item out of a full outbox (the main task stops
    /// reading requests while it is full).
    room: Notify,
    max_items: usize,
    max_bytes: usize,
}

/// The outbox overflowed under `topic_overflow = "disconnect"`.
struct Overflow;

impl Outbox {
    fn full(st: &OutState, max_items: usize, max_bytes: usize, extra: usize) -> bool {
        st.items.len() >= max_items || st.bytes + extra > max_bytes
    }

    fn is_full(&self) -> bool {
        Outbox::full(&self.state.lock(), self.max_items, self.max_bytes, 0)
    }

    fn push(&self, item: Out) {
        let mut st = self.state.lock();
        st.bytes += item.size();
        st.items.push_back(item);
        drop(st);
        self.notify.notify_one();
    }

    fn push_front(&self, item: Out) {
        let mut st = self.state.lock();
        st.bytes += item.size();
        st.items.push_front(item);
        drop(st);
        self.notify.notify_one();
    }

    /// Buffers a topic delivery under the overflow policy.
    fn push_droppable(&self, p: Pending, policy: TopicOverflow) -> Result<(), Overflow> {
        let size = p.message.body.len() + ITEM_OVERHEAD;
        let mut st = self.state.lock();
        while Outbox::full(&st, self.max_items, self.max_bytes, size) {
            if policy == TopicOverflow::Disconnect {
                return Err(Overflow);
            }
            let oldest = st.items.iter().position(|i| matches!(i, Out::Delivery(d) if d.droppable));
            match oldest.and_then(|i| st.items.remove(i)) {
                Some(old) => {
                    st.bytes -= old.size();
                    if let Out::Delivery(d) = old {
                        d.sub.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => {
                    // Only undroppable items are buffered: this one goes.
                    p.sub.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
        st.bytes += size;
        st.items.push_back(Out::Delivery(Box::new(p)));
        drop(st);
        self.notify.notify_one();
        Ok(())
    }

    /// Discards what is buffered and asks the writer to close with `code` at once.
    fn close(&self, code: u16, reason: impl Into<String>) {
        let mut st = self.state.lock();
        st.items.clear();
        st.bytes = 0;
        st.close.get_or_insert((code, reason.into()));
        drop(st);
        self.notify.notify_one();
    }

    fn closing(&self) -> bool {
        self.state.lock().close.is_some()
    }
}

/// Drains the outbox into the socket until a close is asked for or the socket fails.
async fn writer(mut sink: SplitSink<WebSocket, WsMessage>, outbox: Arc<Outbox>) {
    loop {
        let (next, close, more) = {
            let mut st = outbox.state.lock();
            let was_full = Outbox::full(&st, outbox.max_items, outbox.max_bytes, 0);
            let item = st.items.pop_front();
            if let Some(i) = &item {
                st.bytes -= i.size();
                if was_full {
                    outbox.room.notify_one();
                }
            }
            let close = if item.is_none() { st.close.take() } else { None };
            (item, close, !st.items.is_empty())
        };
        if let Some((code, reason)) = close {
            let frame = CloseFrame { code, reason: reason.into() };
            let _ = sink.send(WsMessage::Close(Some(frame))).await;
            return;
        }
        let Some(item) = next else {
            // Everything fed so far goes out before we sleep.
            if sink.flush().await.is_err() {
                return;
            }
            outbox.notify.notified().await;
            continue;
        };
        // Feed while more is buffered, so a burst shares socket writes; flush at the end.
        let sent = match item {
            Out::Text(s) => sink.feed(WsMessage::Text(s.into())).await,
            Out::Ping => sink.feed(WsMessage::Ping(bytes::Bytes::new())).await,
            Out::Delivery(p) => {
                let info = DeliveryInfo {
                    subscription: &p.sub.id,
                    tag: p.tag,
                    redelivered: p.redelivered,
                    dropped: p.sub.dropped.load(Ordering::Relaxed),
                };
                let text = json::message_event(&p.message, &info);
                let r = sink.feed(WsMessage::Text(text.into())).await;
                if let Some((vhost, queue, consumer)) = &p.written {
                    vhost.written(queue, *consumer, 1);
                }
                r
            }
            Out::Record(r) => {
                sink.feed(WsMessage::Text(json::record_event(&r.sub.id, &r.stream, &r.record).into())).await
            }
        };
        if sent.is_err() || (!more && sink.flush().await.is_err()) {
            return;
        }
    }
}

/// Everything the live API needs from the server.
#[derive(Debug)]
pub(crate) struct LiveShared {
    pub(crate) broker: BrokerHandle,
    pub(crate) cfg: Arc<WsConfig>,
}

#[derive(Debug)]
enum SubKind {
    /// A private queue bound to an exchange; deleted with the subscription.
    Topic,
    /// An existing queue.
    Queue { auto_ack: bool },
    /// A stream tail, run by its own task until this token is cancelled.
    Stream(CancellationToken),
}

#[derive(Debug)]
struct Subscription {
    shared: Arc<SubShared>,
    kind: SubKind,
    /// The queue consumer (topic and queue subscriptions).
    consumer: Option<(Arc<Queue>, ConsumerId)>,
}

#[derive(Debug)]
struct Unacked {
    consumer: ConsumerId,
    queue: Arc<Queue>,
    lease: LeaseId,
}

struct Open {
    vhost: Arc<VHost>,
    ctx: ClientContext,
}

struct Conn {
    shared: Arc<LiveShared>,
    id: u64,
    peer: SocketAddr,
    outbox: Arc<Outbox>,
    open: Option<Open>,
    subs: HashMap<String, Subscription>,
    by_consumer: HashMap<ConsumerId, String>,
    unacked: BTreeMap<u64, Unacked>,
    next_tag: u64,
    next_sub: u64,
    events_tx: mpsc::UnboundedSender<ConsumerEvent>,
    published: bool,
}

/// Serves one live API connection until it closes. `login` is set when the upgrade
/// request carried valid credentials.
pub(crate) async fn serve_live(
    ws: WebSocket,
    peer: SocketAddr,
    login: Option<(Arc<User>, Arc<VHost>)>,
    shared: Arc<LiveShared>,
    shutdown: CancellationToken,
) {
    let cfg = Arc::clone(&shared.cfg);
    let (sink, mut stream) = ws.split();
    let outbox = Arc::new(Outbox {
        state: Mutex::new(OutState::default()),
        notify: Notify::new(),
        room: Notify::new(),
        max_items: cfg.outbound_max_messages.max(1),
        max_bytes: cfg.outbound_max_bytes.max(ITEM_OVERHEAD),
    });
    let mut writer_task = tokio::spawn(writer(sink, Arc::clone(&outbox)));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let id = shared.broker.next_connection_id();
    let mut conn = Conn {
        shared: Arc::clone(&shared),
        id,
        peer,
        outbox: Arc::clone(&outbox),
        open: None,
        subs: HashMap::new(),
        by_consumer: HashMap::new(),
        unacked: BTreeMap::new(),
        next_tag: 1,
        next_sub: 1,
        events_tx,
        published: false,
    };
    if let Some((user, vhost)) = login {
        conn.opened(user, vhost, None);
    }
    tracing::debug!(connection = id, %peer, "live websocket connection accepted");

    let ping_every = Duration::from_secs(cfg.ping_interval.max(1));
    let idle = Duration::from_secs(cfg.idle_timeout.max(1)).max(ping_every);
    let auth_deadline = Instant::now() + Duration::from_secs(cfg.auth_timeout.max(1));
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let mut blocked = shared.broker.memory().subscribe();
    let mut writer_done = false;
    let mut blocked_live = true;

    while !outbox.closing() {
        let paused = outbox.is_full() || (conn.published && *blocked.borrow());
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => outbox.close(close_code::AWAY, "server shutdown"),
            _ = outbox.room.notified(), if paused => {}
            _ = &mut writer_task => {
                writer_done = true;
                break;
            }
            _ = tokio::time::sleep_until(auth_deadline), if conn.open.is_none() => {
                outbox.close(CLOSE_IDLE_TIMEOUT, "authentication timeout");
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > idle {
                    outbox.close(CLOSE_IDLE_TIMEOUT, "idle timeout");
                } else {
                    outbox.push_front(Out::Ping);
                }
            }
            Some(ev) = events.recv() => {
                let mut written = Vec::new();
                conn.event(ev, &mut written);
                for _ in 1..EVENTS_PER_TURN {
                    match events.try_recv() {
                        Ok(ev) => conn.event(ev, &mut written),
                        Err(_) => break,
                    }
                }
                if let (Some(open), false) = (&conn.open, written.is_empty()) {
                    open.vhost.written_batch(written);
                }
            }
            changed = blocked.changed(), if blocked_live => {
                // The broker is going away when the watch closes; shutdown follows.
                blocked_live = changed.is_ok();
            }
            msg = stream.next(), if !paused => match msg {
                None => break,
                Some(Err(e)) => {
                    let (code, reason) = close_for_error(&e);
                    tracing::debug!(connection = id, error = %e, code, "live websocket read error");
                    outbox.close(code, reason);
                }
                Some(Ok(msg)) => {
                    last_seen = Instant::now();
                    match msg {
                        WsMessage::Text(t) => conn.request(t.as_bytes()).await,
                        WsMessage::Binary(b) => conn.request(&b).await,
                        WsMessage::Ping(_) | WsMessage::Pong(_) => {}
                        WsMessage::Close(_) => break,
                    }
                }
            },
        }
    }
    conn.close();
    if !writer_done && tokio::time::timeout(CLOSE_WAIT, &mut writer_task).await.is_err() {
        writer_task.abort();
    }
    tracing::debug!(connection = id, %peer, "live websocket connection closed");
}

impl Conn {
    fn opened(&mut self, user: Arc<User>, vhost: Arc<VHost>, req: Option<&Value>) {
        let reply = json::reply("authenticated", req, json!({"user": user.name, "vhost": vhost.name()}));
        self.outbox.push(Out::Text(reply));
        self.open = Some(Open { ctx: ClientContext { connection: self.id, user }, vhost });
    }

    fn send_error(&self, err: &LiveError, req: Option<&Value>) {
        self.outbox.push(Out::Text(json::error_event(err.code(), &err.to_string(), req)));
    }

    async fn request(&mut self, raw: &[u8]) {
        let req: Request = match serde_json::from_slice(raw) {
            Ok(r) => r,
            Err(e) => {
                let what =
                    if serde_json::from_slice::<Value>(raw).is_ok() { "invalid request" } else { "malformed JSON" };
                self.send_error(&LiveError::BadRequest(format!("{what}: {e}")), None);
                return;
            }
        };
        match req {
            Request::Auth { user, password, vhost, req } => self.auth(&user, &password, vhost, req.as_ref()),
            Request::Ping { req } => self.outbox.push(Out::Text(json::reply("pong", req.as_ref(), json!({})))),
            Request::Subscribe(s) => {
                let req = s.req.clone();
                if let Err(e) = self.subscribe(*s) {
                    self.send_error(&e, req.as_ref());
                }
            }
            Request::Unsubscribe { subscription, req } => match self.unsubscribe(&subscription) {
                Ok(()) => {
                    let reply = json::reply("unsubscribed", req.as_ref(), json!({"subscription": subscription}));
                    self.outbox.push(Out::Text(reply));
                }
                Err(e) => self.send_error(&e, req.as_ref()),
            },
            Request::Publish(p) => {
                let req = p.req.clone();
                match self.publish(&p) {
                    Ok((routed, lsn)) => {
                        if let Some(req) = req {
                            if let Some(lsn) = lsn {
                                let mut synced = self.shared.broker.message_log().synced();
                                let _ = synced.wait_for(|s| *s >= lsn).await;
                            }
                            let reply = json::reply("published", Some(&req), json!({"routed": routed}));
                            self.outbox.push(Out::Text(reply));
                        }
                    }
                    Err(e) => self.send_error(&e, req.as_ref()),
                }
            }
            Request::Ack { tag, multiple } => {
                if let Err(e) = self.settle(tag, multiple, Outcome::Ack) {
                    self.send_error(&e, None);
                }
            }
            Request::Nack { tag, multiple, requeue } => {
                let outcome = if requeue { Outcome::Requeue } else { Outcome::Reject };
                if let Err(e) = self.settle(tag, multiple, outcome) {
                    self.send_error(&e, None);
                }
            }
        }
    }

    fn auth(&mut self, user: &str, password: &str, vhost: Option<String>, req: Option<&Value>) {
        if self.open.is_some() {
            self.send_error(&LiveError::AlreadyAuthenticated, req);
            return;
        }
        let broker = &self.shared.broker;
        let vhost_name = vhost.unwrap_or_else(|| self.shared.cfg.vhost.clone());
        let opened = broker
            .authenticate(user, password, Some(self.peer.ip()))
            .and_then(|u| broker.open_vhost(&vhost_name, &u).map(|v| (u, v)));
        match opened {
            Ok((u, v)) => self.opened(u, v, req),
            Err(e) => {
                tracing::info!(connection = self.id, peer = %self.peer, user, error = %e, "live websocket login refused");
                self.send_error(&LiveError::Core(e), req);
                self.close_after_flush(CLOSE_AUTH_FAILED, "authentication failed");
            }
        }
    }

    /// Queues a close behind what is already buffered (the error event that explains it).
    fn close_after_flush(&self, code: u16, reason: &str) {
        let mut st = self.outbox.state.lock();
        st.close.get_or_insert((code, reason.to_string()));
        drop(st);
        self.outbox.notify.notify_one();
    }

    fn open(&self) -> Result<&Open, LiveError> {
        self.open.as_ref().ok_or(LiveError::NotAuthenticated)
    }

    fn subscribe(&mut self, s: SubscribeReq) -> Result<(), LiveError> {
        let open = self.open()?;
        let (vhost, ctx) = (Arc::clone(&open.vhost), open.ctx.clone());
        let id = match s.subscription {
            Some(id) if self.subs.contains_key(&id) => return Err(LiveError::DuplicateSubscription(id)),
            Some(id) => id,
            None => loop {
                let id = format!("sub-{}", self.next_sub);
                self.next_sub += 1;
                if !self.subs.contains_key(&id) {
                    break id;
                }
            },
        };
        let which = [s.topic.is_some(), s.queue.is_some(), s.stream.is_some()].iter().filter(|x| **x).count();
        if which != 1 {
            return Err(LiveError::BadRequest(
                "subscribe needs exactly one of \"topic\", \"queue\", \"stream\"".into(),
            ));
        }
        if let Some(name) = s.stream {
            let stream = vhost.streams().get(&name).ok_or_else(|| {
                LiveError::Core(CoreError::not_found(format!("no stream '{name}' in vhost '{}'", vhost.name())))
            })?;
            let from = parse_position(s.from.as_ref())?;
            let shards = start_shards(&stream, &from)?;
            let cancel = CancellationToken::new();
            let shared = Arc::new(SubShared { id: id.clone(), dropped: AtomicU64::new(0) });
            let mut reply = json!({"kind": "stream", "stream": name, "from": s.from.clone().unwrap_or(json!("latest")),
                                   "shards": shards.iter().map(|(i, _)| *i).collect::<Vec<u32>>()});
            if let Some(obj) = reply.as_object_mut() {
                obj.insert("subscription".into(), Value::String(id.clone()));
            }
            self.outbox.push(Out::Text(json::reply("subscribed", s.req.as_ref(), reply)));
            tokio::spawn(tail_stream(stream, shards, Arc::clone(&self.outbox), Arc::clone(&shared), cancel.clone()));
            self.subs.insert(id, Subscription { shared, kind: SubKind::Stream(cancel), consumer: None });
            return Ok(());
        }
        let (kind, queue_name, consume, detail) = if let Some(topic) = s.topic {
            let exchange = s.exchange.unwrap_or_else(|| self.shared.cfg.default_exchange.clone());
            let name = format!("ws-live-{:016x}", rand::random::<u64>());
            let spec = QueueSpec { name: name.clone(), exclusive: true, auto_delete: true, ..QueueSpec::default() };
            vhost.declare_queue(spec, &ctx)?;
            let bound = vhost.bind(&exchange, Destination::Queue(name.clone()), &topic, FieldTable::new(), &ctx);
            if let Err(e) = bound {
                let _ = vhost.delete_queue(&name, false, false, &ctx);
                return Err(e.into());
            }
            let detail = json!({"kind": "topic", "exchange": exchange, "topic": topic, "queue": name});
            (SubKind::Topic, name, ConsumeSpec { auto_ack: true, exclusive: true, ..ConsumeSpec::default() }, detail)
        } else {
            let name = s.queue.unwrap_or_default();
            let auto_ack = match s.ack.as_deref() {
                None | Some("client") => false,
                Some("auto") => true,
                Some(other) => {
                    return Err(LiveError::BadRequest(format!("ack must be \"client\" or \"auto\", not {other:?}")));
                }
            };
            let window = s.window.unwrap_or(self.shared.cfg.default_window).max(1);
            let detail = json!({"kind": "queue", "queue": name, "window": window, "ack": if auto_ack { "auto" } else { "client" }});
            (
                SubKind::Queue { auto_ack },
                name,
                ConsumeSpec { prefetch: window, auto_ack, ..ConsumeSpec::default() },
                detail,
            )
        };
        let consumed = vhost.consume(&queue_name, consume, self.events_tx.clone(), &ctx);
        let (queue, consumer) = match consumed {
            Ok(x) => x,
            Err(e) => {
                if matches!(kind, SubKind::Topic) {
                    let _ = vhost.delete_queue(&queue_name, false, false, &ctx);
                }
                return Err(e.into());
            }
        };
        let mut reply = detail;
        if let Some(obj) = reply.as_object_mut() {
            obj.insert("subscription".into(), Value::String(id.clone()));
        }
        self.outbox.push(Out::Text(json::reply("subscribed", s.req.as_ref(), reply)));
        self.by_consumer.insert(consumer, id.clone());
        let shared = Arc::new(SubShared { id: id.clone(), dropped: AtomicU64::new(0) });
        self.subs.insert(id, Subscription { shared, kind, consumer: Some((queue, consumer)) });
        Ok(())
    }

    fn unsubscribe(&mut self, id: &str) -> Result<(), LiveError> {
        let sub = self.subs.remove(id).ok_or_else(|| LiveError::UnknownSubscription(id.to_string()))?;
        if let Some((_, consumer)) = &sub.consumer {
            self.by_consumer.remove(consumer);
        }
        self.end_subscription(&sub);
        Ok(())
    }

    /// Stops a stream tail; cancels a consumer, returns its unsettled deliveries, deletes a
    /// topic queue.
    fn end_subscription(&mut self, sub: &Subscription) {
        if let SubKind::Stream(cancel) = &sub.kind {
            cancel.cancel();
        }
        let (Some(open), Some((queue, consumer))) = (&self.open, &sub.consumer) else { return };
        open.vhost.cancel(queue, *consumer);
        let tags: Vec<u64> = self.unacked.iter().filter(|(_, u)| u.consumer == *consumer).map(|(t, _)| *t).collect();
        let leases: Vec<LeaseId> = tags.iter().filter_map(|t| self.unacked.remove(t)).map(|u| u.lease).collect();
        if !leases.is_empty() {
            open.vhost.requeue_all(queue, &leases);
        }
        if matches!(sub.kind, SubKind::Topic) {
            let _ = open.vhost.delete_queue(queue.name(), false, false, &open.ctx);
        }
    }

    fn publish(&mut self, p: &json::PublishReq) -> Result<(bool, Option<switchyard::store::Lsn>), LiveError> {
        let open = self.open()?;
        let msg = json::message_from_publish(p, &self.shared.cfg.default_exchange)?;
        let max = self.shared.broker.config().max_message_size;
        if msg.body.len() as u64 > max as u64 {
            return Err(LiveError::BadRequest(format!(
                "message body is {} bytes, more than the {max} allowed",
                msg.body.len()
            )));
        }
        let outcome = open.vhost.publish(msg, &open.ctx)?;
        self.published = true;
        Ok((outcome.routed, outcome.lsn))
    }

    fn settle(&mut self, tag: u64, multiple: bool, outcome: Outcome) -> Result<(), LiveError> {
        let open = self.open.as_ref().ok_or(LiveError::NotAuthenticated)?;
        let consumer = self.unacked.get(&tag).ok_or(LiveError::UnknownTag(tag))?.consumer;
        let tags: Vec<u64> = if multiple {
            self.unacked.range(..=tag).filter(|(_, u)| u.consumer == consumer).map(|(t, _)| *t).collect()
        } else {
            vec![tag]
        };
        for t in tags {
            if let Some(u) = self.unacked.remove(&t) {
                open.vhost.settle(&u.queue, u.lease, outcome);
            }
        }
        Ok(())
    }

    fn event(&mut self, ev: ConsumerEvent, written: &mut Vec<(Arc<Queue>, ConsumerId)>) {
        match ev {
            ConsumerEvent::Deliver { consumer, queue, delivery } => {
                let Some(open) = &self.open else { return };
                let Some(sub) = self.by_consumer.get(&consumer).and_then(|id| self.subs.get(id)) else {
                    // A delivery racing an unsubscribe: give it back.
                    if let Some(lease) = delivery.lease {
                        open.vhost.settle(&queue, lease, Outcome::Requeue);
                    }
                    return;
                };
                match sub.kind {
                    SubKind::Topic => {
                        written.push((queue, consumer));
                        let p = Pending {
                            sub: Arc::clone(&sub.shared),
                            message: delivery.message,
                            tag: None,
                            redelivered: false,
                            droppable: true,
                            written: None,
                        };
                        if self.outbox.push_droppable(p, self.shared.cfg.topic_overflow).is_err() {
                            tracing::info!(connection = self.id, peer = %self.peer, "live websocket slow consumer disconnected");
                            self.outbox.close(CLOSE_SLOW_CONSUMER, "slow consumer: outbound buffer full");
                        }
                    }
                    SubKind::Stream(_) => {}
                    SubKind::Queue { auto_ack } => {
                        let tag = match (auto_ack, delivery.lease) {
                            (false, Some(lease)) => {
                                let tag = self.next_tag;
                                self.next_tag += 1;
                                self.unacked.insert(tag, Unacked { consumer, queue: Arc::clone(&queue), lease });
                                Some(tag)
                            }
                            _ => None,
                        };
                        let p = Pending {
                            sub: Arc::clone(&sub.shared),
                            message: delivery.message,
                            tag,
                            redelivered: delivery.redelivered,
                            droppable: false,
                            written: Some((Arc::clone(&open.vhost), queue, consumer)),
                        };
                        self.outbox.push(Out::Delivery(Box::new(p)));
                    }
                }
            }
            ConsumerEvent::Cancelled { consumer } => {
                if let Some(id) = self.by_consumer.remove(&consumer)
                    && let Some(sub) = self.subs.remove(&id)
                {
                    self.end_subscription(&sub);
                    let ev = json!({"type": "cancelled", "subscription": id, "reason": "the queue was deleted"});
                    self.outbox.push(Out::Text(ev.to_string()));
                }
            }
        }
    }

    fn close(&mut self) {
        let subs: Vec<Subscription> = self.subs.drain().map(|(_, s)| s).collect();
        for sub in &subs {
            self.end_subscription(sub);
        }
        self.shared.broker.connection_closed(self.id);
    }
}

/// Records read per batch of a stream tail, and about how many bytes.
const TAIL_BATCH: usize = 256;
const TAIL_BATCH_BYTES: u64 = 1 << 20;
/// How often a stream tail whose outbox is full looks again.
const TAIL_BACKOFF: Duration = Duration::from_millis(20);

/// A stream position from `subscribe`'s `from`.
fn parse_position(from: Option<&Value>) -> Result<StartPosition, LiveError> {
    let bad = || {
        LiveError::BadRequest(
            "from must be \"oldest\", \"latest\", {\"sequence\": \"<n>\"} or {\"timestamp\": <ms>}".into(),
        )
    };
    match from {
        None => Ok(StartPosition::Latest),
        Some(Value::String(s)) if s == "latest" => Ok(StartPosition::Latest),
        Some(Value::String(s)) if s == "oldest" => Ok(StartPosition::TrimHorizon),
        Some(Value::Object(o)) if o.len() == 1 => {
            if let Some(seq) = o.get("sequence") {
                let text = match seq {
                    Value::String(t) => t.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(bad()),
                };
                SequenceNumber::parse(&text).map(StartPosition::At).ok_or_else(bad)
            } else if let Some(ts) = o.get("timestamp") {
                ts.as_u64().map(StartPosition::AtTimestamp).ok_or_else(bad)
            } else {
                Err(bad())
            }
        }
        Some(_) => Err(bad()),
    }
}

/// The shards a tail starts on and the counter it reads each from. `latest`: the open
/// shards; otherwise the oldest shards (those whose parents are gone), whose children are
/// followed as they end. With a sequence number, its shard starts there and the other
/// shards at their latest record.
fn start_shards(stream: &Stream, from: &StartPosition) -> Result<Vec<(u32, u64)>, LiveError> {
    let shards = stream.with_state(|st| st.shards());
    let known: std::collections::HashSet<u32> = shards.iter().map(|s| s.index).collect();
    let mut out = Vec::new();
    for shard in &shards {
        let start = match from {
            StartPosition::Latest if !shard.is_open() => continue,
            StartPosition::Latest => StartPosition::Latest,
            _ if shard.parent.is_some_and(|p| known.contains(&p))
                || shard.adjacent_parent.is_some_and(|p| known.contains(&p)) =>
            {
                continue;
            }
            StartPosition::At(seq) | StartPosition::After(seq) if seq.shard != shard.index => {
                if !shard.is_open() {
                    continue;
                }
                StartPosition::Latest
            }
            other => *other,
        };
        let counter = stream.start(shard.index, start).map_err(|e| LiveError::BadRequest(e.to_string()))?;
        out.push((shard.index, counter));
    }
    Ok(out)
}

/// Reads `shards` of `stream` from their counters into the outbox, following children of
/// shards that end, and waits for new records at the tip. Never drops: it reads only while
/// the outbox has room.
async fn tail_stream(
    stream: Arc<Stream>,
    shards: Vec<(u32, u64)>,
    outbox: Arc<Outbox>,
    sub: Arc<SubShared>,
    cancel: CancellationToken,
) {
    let name: Arc<str> = Arc::from(stream.name());
    let mut wake = stream.subscribe();
    let mut readers: BTreeMap<u32, u64> = shards.into_iter().collect();
    let mut done: std::collections::HashSet<u32> = std::collections::HashSet::new();
    while !cancel.is_cancelled() && !readers.is_empty() {
        if outbox.is_full() {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(TAIL_BACKOFF) => continue,
            }
        }
        wake.borrow_and_update();
        let mut got = 0usize;
        let mut ended = Vec::new();
        for (shard, next) in readers.iter_mut() {
            let batch = match stream.read(*shard, *next, TAIL_BATCH, TAIL_BATCH_BYTES, now_ms()) {
                Ok(b) => b,
                Err(e) => {
                    let ev = json::error_event("not_found", &format!("stream tail ended: {e}"), None);
                    outbox.push(Out::Text(ev));
                    return;
                }
            };
            *next = batch.next;
            got += batch.records.len();
            for record in batch.records {
                outbox.push(Out::Record(Box::new(PendingRecord {
                    sub: Arc::clone(&sub),
                    stream: Arc::clone(&name),
                    record,
                })));
            }
            if batch.end_of_shard {
                ended.push((*shard, batch.children));
            }
        }
        for (shard, children) in ended {
            readers.remove(&shard);
            done.insert(shard);
            for child in children {
                if done.contains(&child.index) || readers.contains_key(&child.index) {
                    continue;
                }
                let parents_done = [child.parent, child.adjacent_parent]
                    .iter()
                    .flatten()
                    .all(|p| done.contains(p) || !readers.contains_key(p));
                if parents_done {
                    readers.insert(child.index, child.starting_counter);
                }
            }
        }
        if got == 0 {
            tokio::select! {
                _ = cancel.cancelled() => break,
                changed = wake.changed() => if changed.is_err() || stream.is_deleted() { break },
            }
        }
    }
}
