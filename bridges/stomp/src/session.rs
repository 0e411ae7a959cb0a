//! One STOMP session: login and version negotiation, subscriptions, pending
//! acknowledgements, transactions and temporary queues. Sans-IO: frames come
//! in through [`Session::handle_frame`], deliveries through
//! [`Session::handle_event`], and everything to send is encoded into
//! [`Session::out`]; the connection task (`conn.rs`) moves bytes.
//!
//! Invariants worth naming:
//! - Every delivery that needs settling has exactly one entry in `pending`,
//!   keyed by its delivery tag (the last `@@` field of `message-id`); it is
//!   settled by ACK/NACK (possibly cumulatively, for `ack:client`) or requeued
//!   when the session ends.
//! - A subscription whose queue is private to it (topic, exchange, temp-queue
//!   and durable subscriptions) evaluates its selector here and drops
//!   non-matching messages, as a JMS topic subscriber does; a shared queue
//!   (`/queue/`, `/amq/queue/`) gives the selector to the core, which leaves
//!   non-matching messages for other consumers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use switchyard::auth::User;
use switchyard::exchange::Destination as Bound;
use switchyard::message::Message;
use switchyard::queue::state::{ConsumerId, Delivery, LeaseId, MessageFilter};
use switchyard::queue::{ConnectionId, ConsumerEvent, ConsumerSink, Queue};
use switchyard::store::Lsn;
use switchyard::time::now_ms;
use switchyard::vhost::{ConsumeSpec, Outcome, PublishCache, QueueSpec};
use switchyard::{BrokerHandle, ClientContext, VHost};

use crate::codec::{Command, Frame, Version, encode};
use crate::config::StompConfig;
use crate::convert::{message_headers, properties_from_send, queue_arguments};
use crate::destination::{self, Destination};
use crate::error::StompError;
use crate::selector::Selector;

/// Most open transactions per session (RabbitMQ's limit).
const MAX_TRANSACTIONS: usize = 16;
/// Most SEND/ACK/NACK frames buffered in one transaction (RabbitMQ's limit).
const MAX_TRANSACTION_ACTIONS: usize = 1024;
/// Separator of the `message-id` fields, as RabbitMQ writes them.
const ID_SEPARATOR: &str = "@@";
/// Subscription ids of temporary queues start with this; clients may not use it.
const TEMP_PREFIX: &str = "/temp-queue/";

/// How a subscription's deliveries are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Settled on delivery.
    Auto,
    /// ACK settles this message and every earlier one of the subscription.
    Client,
    /// ACK settles just this message.
    ClientIndividual,
}

impl AckMode {
    fn parse(s: Option<&str>) -> Result<AckMode, StompError> {
        match s.unwrap_or("auto") {
            "auto" => Ok(AckMode::Auto),
            "client" => Ok(AckMode::Client),
            "client-individual" => Ok(AckMode::ClientIndividual),
            other => Err(StompError::new("Invalid header", format!("unknown ack mode '{other}'\n"))),
        }
    }
}

struct Subscription {
    /// The header value the client gave (`None` in 1.0 without `id`).
    client_id: Option<String>,
    queue: Arc<Queue>,
    consumer: ConsumerId,
    ack: AckMode,
    /// The selector, when evaluated here rather than by the core.
    local_filter: Option<Arc<Selector>>,
    /// The durable subscription queue, deleted by an UNSUBSCRIBE that says so.
    durable_queue: Option<String>,
    /// `T_<sub>@@<session>@@`: the message id of every MESSAGE for this subscription
    /// without its delivery tag, built once.
    id_prefix: String,
    /// The last `destination` header sent and the (exchange, routing key) it was
    /// formatted from, so consecutive messages from one destination format it once.
    last_destination: Option<(String, String, String)>,
}

struct Pending {
    subscription: String,
    cumulative: bool,
    queue: Arc<Queue>,
    lease: LeaseId,
}

enum TxAction {
    Send(Box<Message>),
    Settle { tag: u64, nack: bool, requeue: bool },
}

/// State that exists once CONNECT succeeded.
struct Open {
    vhost: Arc<VHost>,
    ctx: ClientContext,
    session_id: String,
    client_id: Option<String>,
    subscriptions: HashMap<String, Subscription>,
    by_consumer: HashMap<ConsumerId, String>,
    next_tag: u64,
    pending: BTreeMap<u64, Pending>,
    transactions: HashMap<String, Vec<TxAction>>,
    /// `/temp-queue/<n>` name → the queue created for it.
    temp_queues: HashMap<String, String>,
    /// `/queue/<name>` destinations this session declared with default settings (a SEND
    /// or SUBSCRIBE without declaring headers), so a repeat only checks that the queue
    /// is still the one declared instead of declaring again. At most
    /// [`DECLARED_CACHE_MAX`] entries.
    declared: HashMap<String, Arc<Queue>>,
    /// Saves the permission check and the route of repeated SENDs to one destination.
    publish_cache: PublishCache,
}

/// Most entries in [`Open::declared`]; the cache starts over when full.
const DECLARED_CACHE_MAX: usize = 64;

/// Headers that change how a `/queue/` destination is declared (see [`queue_arguments`]).
fn declares_with_settings(frame: &Frame) -> bool {
    frame
        .headers
        .iter()
        .any(|(k, _)| k.starts_with("x-") || matches!(k.as_str(), "durable" | "exclusive" | "auto-delete"))
}

/// What the connection should do after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep going.
    Continue,
    /// Flush the output and close (DISCONNECT).
    Close,
}

/// One client's STOMP session.
pub struct Session {
    broker: BrokerHandle,
    cfg: Arc<StompConfig>,
    connection: ConnectionId,
    peer: SocketAddr,
    sink: ConsumerSink,
    open: Option<Open>,
    /// The negotiated version (1.0 until CONNECT says otherwise).
    pub version: Version,
    /// Encoded frames waiting for the socket.
    pub out: BytesMut,
    /// Negotiated heart-beats in ms: (we send every, we expect every); 0 = off.
    pub heart_beat: (u64, u64),
    /// Deliveries encoded since the last report, reported to their queues once written.
    pub written: Vec<(Arc<Queue>, ConsumerId)>,
    /// The client has published (its reads pause under the memory alarm).
    pub published: bool,
    /// The highest message-log position known to be on disk.
    synced: Lsn,
    /// Receipts waiting for their messages to be durable, in frame order: (receipt-id, LSN).
    deferred_receipts: VecDeque<(String, Lsn)>,
    /// DISCONNECT was received; close once the deferred receipts are out.
    disconnecting: bool,
}

impl Session {
    /// A session for a new connection; deliveries for it arrive on `sink`'s receiver.
    pub fn new(
        broker: BrokerHandle,
        cfg: Arc<StompConfig>,
        connection: ConnectionId,
        peer: SocketAddr,
        sink: ConsumerSink,
    ) -> Session {
        Session {
            broker,
            cfg,
            connection,
            peer,
            sink,
            open: None,
            version: Version::V1_0,
            out: BytesMut::with_capacity(16 * 1024),
            heart_beat: (0, 0),
            written: Vec::new(),
            published: false,
            synced: 0,
            deferred_receipts: VecDeque::new(),
            disconnecting: false,
        }
    }

    /// True once DISCONNECT was handled and every receipt it waited for is sent.
    pub fn finished(&self) -> bool {
        self.disconnecting && self.deferred_receipts.is_empty()
    }

    /// Receipts wait for the message log's next fsync.
    pub fn waits_for_sync(&self) -> bool {
        !self.deferred_receipts.is_empty()
    }

    /// The message log reached `synced`: send the receipts that were waiting for it.
    pub fn release_receipts(&mut self, synced: Lsn) {
        self.synced = self.synced.max(synced);
        while let Some((_, lsn)) = self.deferred_receipts.front() {
            if *lsn > self.synced {
                return;
            }
            if let Some((id, _)) = self.deferred_receipts.pop_front() {
                let receipt = Frame::new(Command::Receipt).with("receipt-id", id);
                self.send(&receipt);
            }
        }
    }

    /// The receipt-id of the first receipt still waiting for a write that the message log
    /// can no longer make durable: the log failed, and a failed fsync is never retried as if
    /// it succeeded. `None` while the log works or no receipt waits for it.
    pub fn lost_receipt(&self) -> Option<String> {
        let (id, _) = self.deferred_receipts.iter().find(|(_, lsn)| *lsn > self.synced)?;
        self.broker.message_log().is_failed().then(|| id.clone())
    }

    /// True once CONNECT succeeded.
    pub fn is_connected(&self) -> bool {
        self.open.is_some()
    }

    fn send(&mut self, frame: &Frame) {
        encode(frame, self.version, &mut self.out);
    }

    /// Encode an ERROR frame for `e`, answering `receipt` if the failed frame had one.
    pub fn send_error(&mut self, e: &StompError, receipt: Option<&str>) {
        let mut f = Frame::new(Command::Error).with("message", e.message.clone());
        for (k, v) in &e.headers {
            f.headers.push((k.clone(), v.clone()));
        }
        if let Some(r) = receipt {
            f.headers.push(("receipt-id".into(), r.to_string()));
        }
        f.headers.push(("content-type".into(), "text/plain".into()));
        f.headers.push(("content-length".into(), e.detail.len().to_string()));
        f.body = Bytes::from(e.detail.clone());
        self.send(&f);
    }

    /// Handle one client frame. An error must be reported with [`Session::send_error`]
    /// and the connection closed.
    ///
    /// A RECEIPT promises that what the frame did is durable, so the receipt of a SEND
    /// or COMMIT that wrote persistent messages waits for their fsync
    /// ([`Session::release_receipts`]); later receipts queue behind it, keeping order.
    pub fn handle_frame(&mut self, frame: Frame) -> Result<Next, StompError> {
        if self.disconnecting {
            return Ok(Next::Continue);
        }
        if matches!(frame.command, Command::Connect | Command::Stomp) {
            if self.open.is_some() {
                return Err(StompError::new("Bad CONNECT", "already connected\n"));
            }
            self.connect(&frame)?;
            return Ok(Next::Continue);
        }
        if self.open.is_none() {
            return Err(StompError::new("Illegal command", "You must log in using CONNECT first\n"));
        }
        let lsn = match frame.command {
            Command::Send => self.send_frame(&frame)?,
            Command::Subscribe => self.subscribe(&frame).map(|()| None)?,
            Command::Unsubscribe => self.unsubscribe(&frame).map(|()| None)?,
            Command::Ack => self.ack(&frame, false).map(|()| None)?,
            Command::Nack => self.ack(&frame, true).map(|()| None)?,
            Command::Begin => self.begin(&frame).map(|()| None)?,
            Command::Commit => self.commit(&frame)?,
            Command::Abort => self.abort(&frame).map(|()| None)?,
            Command::Disconnect => {
                self.disconnecting = true;
                None
            }
            other => {
                return Err(StompError::new(
                    "Bad command",
                    format!("Could not interpret command \"{}\"\n", other.as_str()),
                ));
            }
        };
        if let Some(r) = frame.header("receipt") {
            self.deferred_receipts.push_back((r.to_string(), lsn.unwrap_or(0)));
            self.release_receipts(self.synced);
        }
        Ok(if self.finished() { Next::Close } else { Next::Continue })
    }

    // -----------------------------------------------------------------------
    // CONNECT

    fn connect(&mut self, frame: &Frame) -> Result<(), StompError> {
        let version = match frame.header("accept-version") {
            None => Version::V1_0,
            Some(list) => list.split(',').filter_map(Version::parse).max().ok_or_else(|| {
                StompError::new("Version mismatch", "Supported versions are 1.0,1.1,1.2\n")
                    .with("version", "1.0,1.1,1.2")
            })?,
        };
        self.version = version;
        let login = frame.header("login").unwrap_or(&self.cfg.default_login).to_string();
        let passcode = frame.header("passcode").unwrap_or(&self.cfg.default_passcode).to_string();
        let refused = || StompError::new("Bad CONNECT", format!("Access refused for user '{login}'\n"));
        if login.is_empty() {
            return Err(refused());
        }
        let user: Arc<User> = match self.broker.authenticate(&login, &passcode, Some(self.peer.ip())) {
            Ok(u) => u,
            Err(e) => {
                tracing::info!(connection = self.connection, peer = %self.peer, user = %login, "stomp login refused: {}", e.text);
                if e.text.contains("only connect via localhost") {
                    return Err(StompError::new("Bad CONNECT", "non-loopback access denied\n"));
                }
                return Err(refused());
            }
        };
        // RabbitMQ takes `host` as the vhost name. Most clients send the server's host name
        // there, so a `host` that names no vhost means the default vhost.
        let default_vhost = self.broker.config().vhosts.first().cloned().unwrap_or_else(|| "/".to_string());
        let vhost_name = match frame.header("host") {
            Some(h) if self.broker.vhost(h).is_some() => h.to_string(),
            _ => default_vhost,
        };
        let vhost = self
            .broker
            .open_vhost(&vhost_name, &user)
            .map_err(|_| StompError::new("Bad CONNECT", format!("Virtual host '{vhost_name}' access denied\n")))?;
        let (cx, cy) = match frame.header("heart-beat") {
            None => (0, 0),
            Some(hb) => parse_heart_beat(hb).ok_or_else(|| {
                StompError::new("Invalid header", format!("heart-beat header '{hb}' is not two integers\n"))
            })?,
        };
        let floor = self.cfg.heart_beat_min_ms;
        let negotiate = |theirs: u64| if theirs == 0 || floor == 0 { 0 } else { theirs.max(floor) };
        // cy: how often the client wants to hear from us; cx: how often it can send.
        self.heart_beat = (negotiate(cy), negotiate(cx));
        let session_id = format!("session-{}", random_id(22));
        tracing::debug!(connection = self.connection, user = %user.name, vhost = %vhost.name(), version = version.as_str(), "stomp session open");
        self.open = Some(Open {
            vhost,
            ctx: ClientContext { connection: self.connection, user },
            session_id: session_id.clone(),
            client_id: frame.header("client-id").map(str::to_string),
            subscriptions: HashMap::new(),
            by_consumer: HashMap::new(),
            next_tag: 1,
            pending: BTreeMap::new(),
            transactions: HashMap::new(),
            temp_queues: HashMap::new(),
            declared: HashMap::new(),
            publish_cache: PublishCache::default(),
        });
        let connected = Frame::new(Command::Connected)
            .with("server", format!("Switchyard/{}", env!("CARGO_PKG_VERSION")))
            .with("session", session_id)
            .with("heart-beat", format!("{},{}", self.heart_beat.0, self.heart_beat.1))
            .with("version", version.as_str());
        self.send(&connected);
        Ok(())
    }

    fn open_mut(&mut self) -> Result<&mut Open, StompError> {
        self.open.as_mut().ok_or_else(|| StompError::new("Illegal command", "You must log in using CONNECT first\n"))
    }

    // -----------------------------------------------------------------------
    // SEND

    /// Publish (or buffer, in a transaction); returns the LSN the message must reach to be durable.
    fn send_frame(&mut self, frame: &Frame) -> Result<Option<Lsn>, StompError> {
        self.published = true;
        let dest = frame.header("destination").ok_or_else(|| StompError::missing("SEND", "destination"))?;
        let parsed = parse_destination(dest)?;
        let max = self.broker.config().max_message_size;
        if frame.body.len() > max {
            return Err(StompError::new(
                "Frame too large",
                format!("message size {} is larger than configured max size {max}\n", frame.body.len()),
            ));
        }
        let tx = frame.header("transaction");
        if let Some(t) = tx {
            self.check_tx_room(t)?;
        }
        let (exchange, routing_key) = match parsed {
            Destination::Queue(q) => {
                self.declare_queue(&q, frame)?;
                (String::new(), q)
            }
            Destination::AmqQueue(q) | Destination::ReplyQueue(q) => (String::new(), q),
            Destination::Topic(k) => ("amq.topic".to_string(), k),
            Destination::Exchange { name, key } => (name, key.unwrap_or_default()),
            Destination::TempQueue(n) => (String::new(), self.temp_queue(&n)?),
        };
        let mut props = properties_from_send(frame, now_ms())?;
        if let Some(name) = props.reply_to.as_deref().and_then(|r| r.strip_prefix(TEMP_PREFIX)) {
            let name = name.to_string();
            let queue = self.temp_queue(&name)?;
            props.reply_to = Some(format!("/reply-queue/{queue}"));
        }
        let msg = Message::new(exchange, routing_key, props, frame.body.clone());
        let open = self.open_mut()?;
        match tx {
            Some(t) => {
                let actions = open.transactions.get_mut(t).ok_or_else(|| bad_transaction(t))?;
                actions.push(TxAction::Send(Box::new(msg)));
                Ok(None)
            }
            None => Ok(open.vhost.publish_cached(msg, &open.ctx, &mut open.publish_cache)?.lsn),
        }
    }

    /// Declare `/queue/<name>`: durable, shared, kept (RabbitMQ's defaults), unless
    /// the frame's `durable`/`auto-delete`/`exclusive` headers say otherwise.
    fn declare_queue(&mut self, name: &str, frame: &Frame) -> Result<(), StompError> {
        let plain = !declares_with_settings(frame);
        if plain {
            let open = self.open_mut()?;
            if let Some(q) = open.declared.get(name) {
                if open.vhost.queue(name).is_some_and(|live| Arc::ptr_eq(&live, q)) {
                    // The same queue, declared with the same (default) settings by this
                    // session: declaring again would only record the use.
                    q.touch();
                    return Ok(());
                }
                open.declared.remove(name);
            }
        }
        let flag = |h: &str, default: bool| frame.header(h).map_or(default, |v| v.eq_ignore_ascii_case("true"));
        let spec = QueueSpec {
            name: name.to_string(),
            passive: false,
            durable: flag("durable", true),
            exclusive: flag("exclusive", false),
            auto_delete: flag("auto-delete", false),
            arguments: queue_arguments(frame)?,
        };
        let open = self.open_mut()?;
        open.vhost.declare_queue(spec, &open.ctx)?;
        if plain && let Some(q) = open.vhost.queue(name) {
            if open.declared.len() >= DECLARED_CACHE_MAX {
                open.declared.clear();
            }
            open.declared.insert(name.to_string(), q);
        }
        Ok(())
    }

    /// The queue behind `/temp-queue/<name>`, created (exclusive, auto-delete, server-named)
    /// and subscribed to with `ack:auto` on first use.
    fn temp_queue(&mut self, name: &str) -> Result<String, StompError> {
        let sink = self.sink.clone();
        let open = self.open_mut()?;
        if let Some(q) = open.temp_queues.get(name) {
            return Ok(q.clone());
        }
        let spec = QueueSpec { name: String::new(), exclusive: true, auto_delete: true, ..QueueSpec::default() };
        let declared = open.vhost.declare_queue(spec, &open.ctx)?;
        let consume = ConsumeSpec { auto_ack: true, ..ConsumeSpec::default() };
        let (queue, consumer) = open.vhost.consume(&declared.name, consume, sink, &open.ctx)?;
        let id = format!("{TEMP_PREFIX}{name}");
        open.by_consumer.insert(consumer, id.clone());
        open.subscriptions.insert(
            id.clone(),
            Subscription {
                id_prefix: message_id_prefix(&id, &open.session_id),
                client_id: Some(id),
                queue,
                consumer,
                ack: AckMode::Auto,
                local_filter: None,
                durable_queue: None,
                last_destination: None,
            },
        );
        open.temp_queues.insert(name.to_string(), declared.name.clone());
        Ok(declared.name)
    }

    // -----------------------------------------------------------------------
    // SUBSCRIBE / UNSUBSCRIBE

    fn subscribe(&mut self, frame: &Frame) -> Result<(), StompError> {
        let dest = frame.header("destination").ok_or_else(|| StompError::missing("SUBSCRIBE", "destination"))?;
        let id = frame.header("id");
        if id.is_none() && self.version >= Version::V1_1 {
            return Err(StompError::missing("SUBSCRIBE", "id"));
        }
        let sub_id = id.unwrap_or(dest).to_string();
        if sub_id.starts_with(TEMP_PREFIX) {
            return Err(StompError::new("Invalid id", format!("SUBSCRIBE 'id' may not start with {TEMP_PREFIX}\n")));
        }
        let ack = AckMode::parse(frame.header("ack"))?;
        let prefetch = match frame.header("prefetch-count").or_else(|| frame.header("activemq.prefetchSize")) {
            Some(v) => v.trim().parse::<u32>().map_err(|_| {
                StompError::new("Invalid header", format!("'prefetch-count' header '{v}' is not an integer\n"))
            })?,
            None => self.cfg.default_prefetch,
        };
        let priority = match frame.header("x-priority") {
            Some(v) => v.trim().parse::<i32>().map_err(|_| {
                StompError::new("Invalid header", format!("'x-priority' header '{v}' is not an integer\n"))
            })?,
            None => 0,
        };
        let selector = match frame.header("selector") {
            Some(s) if !s.trim().is_empty() => {
                Some(Arc::new(Selector::parse(s).map_err(|e| StompError::new("Invalid selector", format!("{e}\n")))?))
            }
            _ => None,
        };
        let parsed = parse_destination(dest)?;
        if self.open_mut()?.subscriptions.contains_key(&sub_id) {
            return Err(StompError::new(
                "Duplicated subscription identifier",
                format!("A subscription identified by '{sub_id}' already exists.\n"),
            ));
        }
        if let Destination::TempQueue(n) = &parsed {
            // The temp queue's own ack:auto subscription receives its messages.
            self.temp_queue(n)?;
            return Ok(());
        }
        let (queue_name, private, durable_queue) = match parsed {
            Destination::Queue(q) => {
                self.declare_queue(&q, frame)?;
                (q, false, None)
            }
            Destination::AmqQueue(q) | Destination::ReplyQueue(q) => (q, false, None),
            Destination::Topic(key) => self.subscription_queue(frame, dest, id, "amq.topic", &key)?,
            Destination::Exchange { name, key } => {
                self.subscription_queue(frame, dest, id, &name, key.as_deref().unwrap_or(""))?
            }
            Destination::TempQueue(_) => return Ok(()),
        };
        let sink = self.sink.clone();
        let open = self.open_mut()?;
        let spec = ConsumeSpec {
            prefetch: if ack == AckMode::Auto { 0 } else { prefetch },
            auto_ack: ack == AckMode::Auto,
            exclusive: false,
            priority,
            shared_credit: None,
            filter: if private { None } else { selector.clone().map(|s| s as Arc<dyn MessageFilter>) },
        };
        let (queue, consumer) = open.vhost.consume(&queue_name, spec, sink, &open.ctx)?;
        open.by_consumer.insert(consumer, sub_id.clone());
        let id_prefix = message_id_prefix(&sub_id, &open.session_id);
        open.subscriptions.insert(
            sub_id,
            Subscription {
                id_prefix,
                last_destination: None,
                client_id: id.map(str::to_string),
                queue,
                consumer,
                ack,
                local_filter: if private { selector } else { None },
                durable_queue,
            },
        );
        Ok(())
    }

    /// The queue a topic or exchange subscription consumes: a fresh exclusive auto-delete
    /// queue, or a named durable one for durable subscriptions. Returns
    /// `(queue, private, durable queue)`.
    fn subscription_queue(
        &mut self,
        frame: &Frame,
        dest: &str,
        id: Option<&str>,
        exchange: &str,
        key: &str,
    ) -> Result<(String, bool, Option<String>), StompError> {
        let open = self.open_mut()?;
        if open.vhost.exchange(exchange).is_none() {
            return Err(StompError::new(
                "not_found",
                format!("NOT_FOUND - no exchange '{exchange}' in vhost '{}'\n", open.vhost.name()),
            ));
        }
        let is_true = |h: &str| frame.header(h).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let activemq_name =
            frame.header("activemq.subscriptionName").or_else(|| frame.header("durable-subscription-name"));
        let durable_name = if let Some(name) = activemq_name {
            let client_id =
                frame.header("client-id").map(str::to_string).or_else(|| open.client_id.clone()).ok_or_else(|| {
                    StompError::new("Missing header", "durable subscriptions need a 'client-id' header on CONNECT\n")
                })?;
            Some(format!("stomp-subscription-{}", digest(&["activemq", &client_id, name])))
        } else if is_true("durable") || is_true("persistent") {
            let id = id.ok_or_else(|| {
                StompError::new("Missing Header", "Header 'id' is required for durable subscriptions\n")
            })?;
            Some(format!("stomp-subscription-{}", digest(&["rabbitmq", dest, id])))
        } else {
            None
        };
        let explicit = frame.header("x-queue-name").map(str::to_string);
        let (spec, durable_queue) = match durable_name {
            Some(generated) => {
                let name = explicit.unwrap_or(generated);
                let spec = QueueSpec {
                    name: name.clone(),
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    arguments: queue_arguments(frame)?,
                    passive: false,
                };
                (spec, Some(name))
            }
            None => {
                let name = explicit.unwrap_or_else(|| format!("stomp-subscription-{}", random_id(22)));
                (QueueSpec { name, exclusive: true, auto_delete: true, ..QueueSpec::default() }, None)
            }
        };
        let declared = open.vhost.declare_queue(spec, &open.ctx)?;
        open.vhost.bind(exchange, Bound::Queue(declared.name.clone()), key, Default::default(), &open.ctx)?;
        Ok((declared.name, true, durable_queue))
    }

    fn unsubscribe(&mut self, frame: &Frame) -> Result<(), StompError> {
        let sub_id = frame
            .header("id")
            .or_else(|| if self.version == Version::V1_0 { frame.header("destination") } else { None })
            .ok_or_else(|| {
                StompError::new(
                    "Missing destination or id",
                    "UNSUBSCRIBE must include a 'destination' or 'id' header\n",
                )
            })?
            .to_string();
        let drop_durable = frame.header("activemq.subscriptionName").is_some()
            || frame.header("durable-subscription-name").is_some()
            || ["durable", "persistent"]
                .iter()
                .any(|h| frame.header(h).is_some_and(|v| v.eq_ignore_ascii_case("true")));
        let open = self.open_mut()?;
        let Some(sub) = open.subscriptions.remove(&sub_id) else {
            return Err(StompError::new(
                "No subscription found",
                format!(
                    "UNSUBSCRIBE must refer to an existing subscription.\nSubscription to id='{sub_id}' not found.\n"
                ),
            ));
        };
        open.by_consumer.remove(&sub.consumer);
        open.vhost.cancel(&sub.queue, sub.consumer);
        if drop_durable && let Some(q) = &sub.durable_queue {
            open.vhost.delete_queue(q, false, false, &open.ctx)?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // ACK / NACK

    fn ack(&mut self, frame: &Frame, nack: bool) -> Result<(), StompError> {
        let command = if nack { "NACK" } else { "ACK" };
        let header = if self.version == Version::V1_2 { "id" } else { "message-id" };
        let value = frame
            .header(header)
            .or_else(|| frame.header(if header == "id" { "message-id" } else { "id" }))
            .ok_or_else(|| StompError::missing(command, header))?;
        let tag = parse_message_id(value).ok_or_else(|| {
            StompError::new("Invalid header", format!("{command} must include a valid '{header}' header\n"))
        })?;
        let requeue = !frame.header("requeue").is_some_and(|v| v.eq_ignore_ascii_case("false"));
        let tx = frame.header("transaction");
        if let Some(t) = tx {
            self.check_tx_room(t)?;
        }
        let open = self.open_mut()?;
        if !open.pending.contains_key(&tag) {
            return Err(StompError::new(
                "Unknown message id",
                format!("{command} refers to message '{value}', which is not waiting for an acknowledgement\n"),
            ));
        }
        match tx {
            Some(t) => {
                let actions = open.transactions.get_mut(t).ok_or_else(|| bad_transaction(t))?;
                actions.push(TxAction::Settle { tag, nack, requeue });
            }
            None => open.settle(tag, nack, requeue),
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Transactions

    fn tx_header<'f>(frame: &'f Frame, command: &str) -> Result<&'f str, StompError> {
        frame.header("transaction").ok_or_else(|| StompError::missing(command, "transaction"))
    }

    fn check_tx_room(&mut self, tx: &str) -> Result<(), StompError> {
        let open = self.open_mut()?;
        let actions = open.transactions.get(tx).ok_or_else(|| bad_transaction(tx))?;
        if actions.len() >= MAX_TRANSACTION_ACTIONS {
            return Err(StompError::new(
                "Transaction too large",
                format!("transaction '{tx}' holds more than {MAX_TRANSACTION_ACTIONS} frames\n"),
            ));
        }
        Ok(())
    }

    fn begin(&mut self, frame: &Frame) -> Result<(), StompError> {
        let tx = Self::tx_header(frame, "BEGIN")?;
        let open = self.open_mut()?;
        if open.transactions.contains_key(tx) {
            return Err(StompError::new("Bad transaction", format!("Transaction '{tx}' is already open\n")));
        }
        if open.transactions.len() >= MAX_TRANSACTIONS {
            return Err(StompError::new(
                "Too many transactions",
                format!("at most {MAX_TRANSACTIONS} transactions may be open at once\n"),
            ));
        }
        open.transactions.insert(tx.to_string(), Vec::new());
        Ok(())
    }

    fn commit(&mut self, frame: &Frame) -> Result<Option<Lsn>, StompError> {
        let tx = Self::tx_header(frame, "COMMIT")?;
        let open = self.open_mut()?;
        let actions = open.transactions.remove(tx).ok_or_else(|| bad_transaction(tx))?;
        let mut lsn = None;
        for action in actions {
            match action {
                TxAction::Send(msg) => {
                    lsn = lsn.max(open.vhost.publish_cached(*msg, &open.ctx, &mut open.publish_cache)?.lsn);
                }
                // A message settled outside the transaction since is skipped.
                TxAction::Settle { tag, nack, requeue } => open.settle(tag, nack, requeue),
            }
        }
        Ok(lsn)
    }

    fn abort(&mut self, frame: &Frame) -> Result<(), StompError> {
        let tx = Self::tx_header(frame, "ABORT")?;
        let open = self.open_mut()?;
        open.transactions.remove(tx).ok_or_else(|| bad_transaction(tx))?;
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Deliveries

    /// Handle one event from the core: encode a MESSAGE, or report a cancelled subscription.
    pub fn handle_event(&mut self, ev: ConsumerEvent) {
        let version = self.version;
        let Some(open) = self.open.as_mut() else { return };
        match ev {
            ConsumerEvent::Deliver { consumer, queue, delivery } => {
                let Some(sub_id) = open.by_consumer.get(&consumer).cloned() else {
                    if let Some(lease) = delivery.lease {
                        open.vhost.settle(&queue, lease, Outcome::Requeue);
                    }
                    return;
                };
                self.written.push((Arc::clone(&queue), consumer));
                let Some(sub) = open.subscriptions.get_mut(&sub_id) else { return };
                if let Some(f) = &sub.local_filter
                    && !f.matches(&delivery.message)
                {
                    if let Some(lease) = delivery.lease {
                        open.vhost.settle(&queue, lease, Outcome::Ack);
                    }
                    return;
                }
                let tag = open.next_tag;
                open.next_tag += 1;
                let frame = message_frame(tag, sub, &delivery, version);
                let cumulative = sub.ack == AckMode::Client;
                if let Some(lease) = delivery.lease {
                    open.pending.insert(tag, Pending { subscription: sub_id, cumulative, queue, lease });
                }
                encode(&frame, version, &mut self.out);
            }
            ConsumerEvent::Cancelled { consumer } => {
                let Some(sub_id) = open.by_consumer.remove(&consumer) else { return };
                let Some(sub) = open.subscriptions.remove(&sub_id) else { return };
                // As RabbitMQ: an ERROR naming the subscription; the connection stays up.
                let detail = format!(
                    "The server has canceled a subscription.\nNo more messages will be delivered for '{sub_id}'.\n"
                );
                let mut f = Frame::new(Command::Error).with("message", "Server cancelled subscription");
                if let Some(id) = sub.client_id {
                    f.headers.push(("subscription".into(), id));
                }
                f.headers.push(("content-type".into(), "text/plain".into()));
                f.headers.push(("content-length".into(), detail.len().to_string()));
                f.body = Bytes::from(detail);
                encode(&f, version, &mut self.out);
            }
        }
    }

    /// Tell the queues how many deliveries were written to the socket (credit for `ack:auto`).
    pub fn report_written(&mut self) {
        let Some(open) = self.open.as_ref() else {
            self.written.clear();
            return;
        };
        if self.written.is_empty() {
            return;
        }
        open.vhost.written_batch(std::mem::take(&mut self.written));
    }

    /// The connection is gone: cancel consumers, requeue what was not acknowledged, drop
    /// the connection's exclusive queues.
    pub fn close(&mut self) {
        if let Some(open) = self.open.take() {
            for sub in open.subscriptions.values() {
                open.vhost.cancel(&sub.queue, sub.consumer);
            }
            let mut by_queue: Vec<(Arc<Queue>, Vec<LeaseId>)> = Vec::new();
            for p in open.pending.into_values() {
                match by_queue.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &p.queue)) {
                    Some((_, v)) => v.push(p.lease),
                    None => by_queue.push((p.queue, vec![p.lease])),
                }
            }
            for (q, leases) in by_queue {
                open.vhost.requeue_all(&q, &leases);
            }
        }
        self.broker.connection_closed(self.connection);
    }
}

impl Open {
    /// Settle `tag` (and, for `ack:client`, every earlier pending delivery of the same
    /// subscription). Unknown tags are ignored: the caller checked, or a transaction
    /// found it settled meanwhile.
    fn settle(&mut self, tag: u64, nack: bool, requeue: bool) {
        let Some(p) = self.pending.get(&tag) else { return };
        let tags: Vec<u64> = if p.cumulative {
            let sub = p.subscription.clone();
            self.pending.range(..=tag).filter(|(_, q)| q.subscription == sub).map(|(t, _)| *t).collect()
        } else {
            vec![tag]
        };
        let outcome = match (nack, requeue) {
            (false, _) => Outcome::Ack,
            (true, true) => Outcome::Requeue,
            (true, false) => Outcome::Reject,
        };
        for t in tags {
            if let Some(p) = self.pending.remove(&t) {
                self.vhost.settle(&p.queue, p.lease, outcome);
            }
        }
    }
}

/// `T_<sub>@@<session>@@`, the delivery tag follows (see [`parse_message_id`]).
fn message_id_prefix(sub_id: &str, session_id: &str) -> String {
    format!("T_{sub_id}{ID_SEPARATOR}{session_id}{ID_SEPARATOR}")
}

/// Append the decimal digits of `n` to `s` (what `n.to_string()` gives, without the
/// formatting machinery).
fn push_decimal(s: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        s.push(char::from(b));
    }
}

/// `n` in decimal.
fn decimal(n: u64) -> String {
    let mut s = String::with_capacity(20);
    push_decimal(&mut s, n);
    s
}

/// The MESSAGE frame for delivery `d` with delivery tag `tag`.
fn message_frame(tag: u64, sub: &mut Subscription, d: &Delivery, version: Version) -> Frame {
    let mut message_id = String::with_capacity(sub.id_prefix.len() + 20);
    message_id.push_str(&sub.id_prefix);
    push_decimal(&mut message_id, tag);
    let m = &d.message;
    let mut headers = Vec::with_capacity(12);
    if let Some(id) = &sub.client_id {
        headers.push(("subscription".to_string(), id.clone()));
    }
    let dest = match &sub.last_destination {
        Some((x, rk, dest)) if *x == m.exchange && *rk == m.routing_key => dest.clone(),
        _ => {
            let dest = destination::format(&m.exchange, &m.routing_key);
            sub.last_destination = Some((m.exchange.to_string(), m.routing_key.to_string(), dest.clone()));
            dest
        }
    };
    headers.push(("destination".to_string(), dest));
    let redelivered = if d.redelivered { "true" } else { "false" };
    if version == Version::V1_2 && sub.ack != AckMode::Auto {
        headers.push(("message-id".to_string(), message_id.clone()));
        headers.push(("redelivered".to_string(), redelivered.to_string()));
        headers.push(("ack".to_string(), message_id));
    } else {
        headers.push(("message-id".to_string(), message_id));
        headers.push(("redelivered".to_string(), redelivered.to_string()));
    }
    message_headers(&m.properties, d.enqueued_at, &mut headers);
    headers.push(("content-length".to_string(), decimal(m.body.len() as u64)));
    Frame { command: Command::Message, headers, body: m.body.clone() }
}

fn bad_transaction(tx: &str) -> StompError {
    StompError::new("Bad transaction", format!("Invalid transaction identifier: {tx}\n"))
}

fn parse_destination(dest: &str) -> Result<Destination, StompError> {
    destination::parse(dest).map_err(|e| {
        let (message, detail) = e.wire();
        StompError::new(message, detail)
    })
}

/// The delivery tag in a `message-id`/`ack` value (`T_<sub>@@<session>@@<tag>`).
fn parse_message_id(id: &str) -> Option<u64> {
    let (_, tag) = id.rsplit_once(ID_SEPARATOR)?;
    tag.parse().ok()
}

/// `cx,cy` from a `heart-beat` header.
fn parse_heart_beat(hb: &str) -> Option<(u64, u64)> {
    let (a, b) = hb.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

fn random_id(n: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..n).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// A stable, queue-name-safe digest of `parts` (durable subscription queue names).
fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_match_to_string() {
        for n in [0u64, 7, 10, 99, 1024, 123_456_789, u64::MAX] {
            assert_eq!(decimal(n), n.to_string());
        }
        let mut s = message_id_prefix("sub-0", "session-x");
        push_decimal(&mut s, 42);
        assert_eq!(s, "T_sub-0@@session-x@@42");
        assert_eq!(parse_message_id(&s), Some(42));
    }

    #[test]
    fn message_ids_parse() {
        assert_eq!(parse_message_id("T_sub-0@@session-abc@@42"), Some(42));
        assert_eq!(parse_message_id("T_a@@b@@c@@session@@7"), Some(7), "ids may contain the separator");
        assert_eq!(parse_message_id("42"), None);
        assert_eq!(parse_message_id("T_x@@s@@nope"), None);
    }

    #[test]
    fn heart_beats_parse() {
        assert_eq!(parse_heart_beat("0,0"), Some((0, 0)));
        assert_eq!(parse_heart_beat("1000, 2000"), Some((1000, 2000)));
        assert_eq!(parse_heart_beat("10"), None);
        assert_eq!(parse_heart_beat("a,b"), None);
    }

    #[test]
    fn durable_names_are_stable_and_distinct() {
        assert_eq!(digest(&["a", "b"]), digest(&["a", "b"]));
        assert_ne!(digest(&["a", "b"]), digest(&["ab", ""]));
        assert_eq!(digest(&["x"]).len(), 22);
    }

    #[test]
    fn ack_modes_parse() {
        assert_eq!(AckMode::parse(None), Ok(AckMode::Auto));
        assert_eq!(AckMode::parse(Some("client")), Ok(AckMode::Client));
        assert_eq!(AckMode::parse(Some("client-individual")), Ok(AckMode::ClientIndividual));
        assert!(AckMode::parse(Some("sometimes")).is_err());
    }
}
