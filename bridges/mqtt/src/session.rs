//! One MQTT session on one connection: the packet handlers that translate MQTT
//! into core operations, and the deliveries that go back as PUBLISH.
//!
//! No I/O here: handlers append encoded packets to [`Session::out`], and `conn`
//! writes them. The mapping onto the core:
//! - a session's subscriptions are bindings of one queue per client on the
//!   configured exchange (`amq.topic`): `mqtt-subscription-<client id>qos1`, durable,
//!   for a persistent session (its `x-expires` is the session expiry), and
//!   `mqtt-subscription-<client id>qos0`, exclusive, for a clean one. Both are bounded
//!   by `x-max-length`/`x-max-length-bytes` with the configured overflow. The
//!   subscription options travel in the binding arguments (`x-mqtt-*`), so a persistent
//!   session's subscriptions are restored from its bindings, also after a restart;
//! - a shared subscription `$share/<group>/<filter>` is one queue per group and
//!   filter, `mqtt-shared-<group>-<key>`, consumed by every member: the core's
//!   round robin spreads the messages, and a member that leaves returns its
//!   unacknowledged messages to the queue for the others;
//! - QoS ≥ 1 messages are persistent (delivery mode 2), so they survive in durable
//!   session queues; a PUBACK/PUBREC waits until the message log has fsynced them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::BytesMut;
use switchyard::auth::User;
use switchyard::exchange::Destination;
use switchyard::message::{CompactString, FieldTable, FieldValue, Message};
use switchyard::queue::state::{ConsumerId, Delivery, LeaseId};
use switchyard::queue::{ConnectionId, ConsumerEvent, ConsumerSink, Queue};
use switchyard::store::Lsn;
use switchyard::vhost::{ConsumeSpec, Outcome, PublishCache, QueueSpec};
use switchyard::{ClientContext, VHost};
use tokio::sync::mpsc;

use crate::codec::{
    Ack, ConnAck, Connect, Packet, Properties, Protocol, Publish, QoS, Reasoned, SubAck, SubOptions, Subscribe,
    UnsubAck, Unsubscribe, Will, publish_size,
};
use crate::convert::{
    message_publisher, message_qos, message_retained, message_topic, to_message, to_message_with_key,
    to_publish_properties,
};
use crate::error::{Violation, core_reason, core_text, reason};
use crate::retained::RetainedStore;
use crate::shared::{SessionSlot, Shared, SharedSub};
use crate::topic::{self, parse_shared, to_routing_key, validate_filter, validate_name};

/// Binding argument: the subscription's MQTT filter.
const ARG_FILTER: &str = "x-mqtt-filter";
/// Binding argument: granted QoS.
const ARG_QOS: &str = "x-mqtt-qos";
/// Binding argument: No Local.
const ARG_NO_LOCAL: &str = "x-mqtt-no-local";
/// Binding argument: Retain As Published.
const ARG_RAP: &str = "x-mqtt-retain-as-published";
/// Binding argument: subscription identifier.
const ARG_SUB_ID: &str = "x-mqtt-subscription-id";

/// The queue of a persistent session.
pub fn persistent_queue_name(client_id: &str) -> String {
    format!("mqtt-subscription-{client_id}qos1")
}

/// The queue of a clean session.
pub fn clean_queue_name(client_id: &str) -> String {
    format!("mqtt-subscription-{client_id}qos0")
}

/// The queue of a shared subscription group.
pub fn shared_queue_name(group: &str, filter: &str) -> String {
    format!("mqtt-shared-{group}-{}", to_routing_key(filter))
}

/// One ordinary subscription.
#[derive(Debug, Clone)]
struct Sub {
    options: SubOptions,
    id: Option<u32>,
    key: String,
    args: FieldTable,
}

/// One shared subscription of this session.
#[derive(Debug)]
struct SharedState {
    filter: String,
    options: SubOptions,
    id: Option<u32>,
    queue: Arc<Queue>,
    consumer: ConsumerId,
}

/// A delivery sent with QoS ≥ 1 and not yet acknowledged by the client.
#[derive(Debug)]
struct InFlight {
    /// The core lease to settle, if it came from a queue (retained messages have none).
    lease: Option<(Arc<Queue>, LeaseId, u64)>,
}

/// A PUBACK or PUBREC held back until its message is durable. MQTT-4.6.0-2 wants acks
/// in the order the PUBLISHes arrived, so they leave this queue only from the front.
#[derive(Debug)]
struct PendingAck {
    qos2: bool,
    ack: Ack,
    lsn: Lsn,
    retained_gen: u64,
    /// v3 cannot say "refused": such an ack is dropped instead of sent.
    suppress: bool,
}

/// What the connection needs to finish a CONNECT.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) user: Arc<User>,
    pub(crate) vhost: Arc<VHost>,
    pub(crate) client_id: String,
    pub(crate) assigned: bool,
}

/// The connection-independent outcome of authenticating a CONNECT.
pub(crate) fn authorize(
    shared: &Shared,
    c: &Connect,
    peer: Option<std::net::IpAddr>,
) -> Result<Accepted, (u8, String)> {
    let cfg = &shared.cfg;
    let (client_id, assigned) = if c.client_id.is_empty() {
        if !c.clean_start && !c.protocol.is_v5() {
            return Err((reason::CLIENT_ID_NOT_VALID, "an empty client id needs a clean session".into()));
        }
        (format!("switchyard-{}", random_id()), true)
    } else {
        (c.client_id.clone(), false)
    };
    let (vhost_name, user_name, password) = match &c.username {
        Some(u) => {
            let (vhost, user) = match u.split_once(':') {
                Some((v, user)) if shared.broker.vhost(v).is_some() => (v.to_string(), user.to_string()),
                _ => (cfg.vhost.clone(), u.clone()),
            };
            let pass = c.password.as_ref().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
            (vhost, user, pass)
        }
        None if cfg.allow_anonymous && !cfg.default_user.is_empty() => {
            (cfg.vhost.clone(), cfg.default_user.clone(), cfg.default_pass.clone())
        }
        None => return Err((reason::NOT_AUTHORIZED, "anonymous connections are not allowed".into())),
    };
    let user = shared
        .broker
        .authenticate(&user_name, &password, peer)
        .map_err(|e| (reason::BAD_USERNAME_OR_PASSWORD, e.text))?;
    let vhost = shared.broker.open_vhost(&vhost_name, &user).map_err(|e| (reason::NOT_AUTHORIZED, e.text))?;
    Ok(Accepted { user, vhost, client_id, assigned })
}

fn random_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..20).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
}

/// One session: see the module docs.
pub(crate) struct Session {
    shared: Arc<Shared>,
    pub(crate) protocol: Protocol,
    pub(crate) client_id: String,
    vhost: Arc<VHost>,
    ctx: ClientContext,
    pub(crate) slot: Arc<SessionSlot>,
    retained: Arc<RetainedStore>,
    exchange: String,
    /// The session survives this connection (3.x: clean session 0; 5: expiry > 0).
    pub(crate) persistent: bool,
    /// MQTT 5 Session Expiry Interval (seconds) in force.
    session_expiry: u32,
    queue_name: String,
    queue: Option<Arc<Queue>>,
    consumer: Option<ConsumerId>,
    subs: BTreeMap<String, Sub>,
    shared_subs: BTreeMap<(String, String), SharedState>,
    /// Where the core sends this session's deliveries; created with the first consumer, so
    /// an idle publish-only connection does not pay for a channel.
    sink: Option<ConsumerSink>,
    /// The receiving end of a channel just created, for the connection to take.
    pub(crate) new_events: Option<mpsc::UnboundedReceiver<ConsumerEvent>>,
    prefetch: u32,
    // Outbound.
    next_packet_id: u16,
    inflight: BTreeMap<u16, InFlight>,
    client_receive_max: u16,
    client_max_packet: usize,
    client_alias_max: u16,
    out_aliases: HashMap<String, u16>,
    retained_backlog: VecDeque<Publish>,
    // Inbound.
    in_aliases: HashMap<u16, String>,
    pending_acks: VecDeque<PendingAck>,
    pub(crate) synced: Lsn,
    pub(crate) retained_durable: u64,
    /// A PUBLISH since the last write reached a queue, so a subscriber's task may be waiting
    /// to write its delivery (the connection then writes its own packets after it).
    pub(crate) routed: bool,
    /// A No Local subscription exists: published messages carry the client id.
    no_local: bool,
    pub(crate) will: Option<Will>,
    problem_info: bool,
    /// Encoded packets waiting for the socket.
    pub(crate) out: BytesMut,
    /// Deliveries encoded since the last write, per (queue, consumer), for `written`.
    pub(crate) written: Vec<(Arc<Queue>, ConsumerId)>,
    /// The routing key of the last delivery and its MQTT topic ([`Session::topic_of`]).
    last_topic: Option<(String, String)>,
    /// The topic of the last PUBLISH and its routing key ([`Session::routing_key_of`]).
    last_key: Option<(String, CompactString)>,
    /// Saves the permission check and the route of repeated PUBLISHes to one topic.
    publish_cache: PublishCache,
}

impl Session {
    /// Open the session for an accepted CONNECT. Returns the session and whether a
    /// previous session was present.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        shared: Arc<Shared>,
        c: &Connect,
        acc: Accepted,
        connection: ConnectionId,
        slot: Arc<SessionSlot>,
        synced: Lsn,
    ) -> Result<(Session, bool), Violation> {
        let cfg = Arc::clone(&shared.cfg);
        let protocol = c.protocol;
        let (persistent, session_expiry) = if protocol.is_v5() {
            let e = c.properties.session_expiry_interval.unwrap_or(0).min(cfg.max_session_expiry);
            (e > 0, e)
        } else {
            (!c.clean_start, if c.clean_start { 0 } else { cfg.max_session_expiry })
        };
        let ctx = ClientContext { connection, user: acc.user };
        let vhost = acc.vhost;
        let retained = shared.retained(vhost.name());
        let client_receive_max = c.properties.receive_maximum.unwrap_or(u16::MAX);
        let prefetch = u32::from(cfg.prefetch.max(1)).min(u32::from(client_receive_max));
        let mut s = Session {
            exchange: cfg.exchange.clone(),
            protocol,
            client_id: acc.client_id,
            ctx,
            slot,
            retained,
            persistent,
            session_expiry,
            queue_name: String::new(),
            queue: None,
            consumer: None,
            subs: BTreeMap::new(),
            shared_subs: BTreeMap::new(),
            sink: None,
            new_events: None,
            prefetch,
            next_packet_id: 1,
            inflight: BTreeMap::new(),
            client_receive_max,
            client_max_packet: c.properties.maximum_packet_size.map_or(usize::MAX, |m| m as usize),
            client_alias_max: c.properties.topic_alias_maximum.unwrap_or(0),
            out_aliases: HashMap::new(),
            retained_backlog: VecDeque::new(),
            in_aliases: HashMap::new(),
            pending_acks: VecDeque::new(),
            synced,
            retained_durable: 0,
            routed: false,
            no_local: false,
            will: c.will.clone(),
            problem_info: c.properties.request_problem_information != Some(0),
            out: BytesMut::new(),
            written: Vec::new(),
            last_topic: None,
            last_key: None,
            publish_cache: PublishCache::default(),
            vhost,
            shared,
        };
        s.queue_name = if persistent { persistent_queue_name(&s.client_id) } else { clean_queue_name(&s.client_id) };
        let durable_name = persistent_queue_name(&s.client_id);
        let existing = s.vhost.queue(&durable_name);
        let session_present = if c.clean_start {
            if existing.is_some() {
                s.vhost.delete_queue(&durable_name, false, false, &s.ctx)?;
            }
            s.slot.state.lock().clear();
            false
        } else if existing.is_some() {
            // Resume: the stored session is the durable queue, whatever this CONNECT asks.
            s.queue_name = durable_name;
            s.ensure_queue()?;
            s.restore_subscriptions()?;
            true
        } else {
            let had_shared = !s.slot.state.lock().shared_subs.is_empty();
            s.restore_subscriptions()?;
            had_shared
        };
        if !session_present {
            s.slot.state.lock().clear();
        }
        // Resend PUBREL for QoS 2 deliveries whose PUBCOMP never came (MQTT-4.4.0-1).
        let pending: Vec<u16> = s.slot.state.lock().outbound_qos2.iter().copied().collect();
        for id in pending {
            s.send(&Packet::PubRel(Ack::ok(id)));
        }
        Ok((s, session_present))
    }

    /// The CONNACK properties for an accepted MQTT 5 connection.
    pub(crate) fn connack_properties(&self, assigned: bool, requested_keep_alive: u16) -> (Properties, u16) {
        let cfg = &self.shared.cfg;
        let mut p = Properties {
            receive_maximum: (cfg.receive_maximum < u16::MAX).then_some(cfg.receive_maximum.max(1)),
            maximum_packet_size: Some(cfg.max_packet_size),
            topic_alias_maximum: (cfg.topic_alias_maximum > 0).then_some(cfg.topic_alias_maximum),
            shared_subscription_available: Some(1),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(1),
            retain_available: Some(1),
            ..Properties::default()
        };
        if assigned {
            p.assigned_client_identifier = Some(self.client_id.clone());
        }
        let mut keep_alive = requested_keep_alive;
        if cfg.max_keep_alive > 0 && (keep_alive == 0 || keep_alive > cfg.max_keep_alive) {
            keep_alive = cfg.max_keep_alive;
            p.server_keep_alive = Some(keep_alive);
        }
        (p, keep_alive)
    }

    /// The delivery channel, created on first use.
    fn sink(&mut self) -> ConsumerSink {
        if let Some(s) = &self.sink {
            return s.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.sink = Some(tx.clone());
        self.new_events = Some(rx);
        tx
    }

    /// Queue an encoded packet.
    pub(crate) fn send(&mut self, p: &Packet) {
        p.encode(self.protocol, &mut self.out);
    }

    /// The queue arguments that bound a session queue.
    fn queue_args(&self, expires_ms: Option<u64>) -> FieldTable {
        let cfg = &self.shared.cfg;
        let mut args = FieldTable::new();
        args.insert("x-max-length".into(), FieldValue::I64(cfg.session_max_messages.min(i64::MAX as u64) as i64));
        if cfg.session_max_bytes > 0 {
            args.insert(
                "x-max-length-bytes".into(),
                FieldValue::I64(cfg.session_max_bytes.min(i64::MAX as u64) as i64),
            );
        }
        args.insert("x-overflow".into(), FieldValue::text(cfg.session_overflow.as_str()));
        if let Some(ms) = expires_ms {
            args.insert("x-expires".into(), FieldValue::I64(ms.max(1).min(i64::MAX as u64) as i64));
        }
        args
    }

    /// Declare the session queue (if needed) and consume from it.
    fn ensure_queue(&mut self) -> Result<(), Violation> {
        if self.queue.is_some() {
            return Ok(());
        }
        let durable = self.queue_name.ends_with("qos1");
        if self.vhost.queue(&self.queue_name).is_none() {
            let expires = durable.then(|| u64::from(self.session_expiry.max(1)) * 1000);
            let spec = QueueSpec {
                name: self.queue_name.clone(),
                passive: false,
                durable,
                exclusive: !durable,
                auto_delete: false,
                arguments: self.queue_args(expires),
            };
            self.vhost.declare_queue(spec, &self.ctx)?;
        }
        let spec = ConsumeSpec { prefetch: self.prefetch, ..ConsumeSpec::default() };
        let sink = self.sink();
        let (q, id) = self.vhost.consume(&self.queue_name, spec, sink, &self.ctx)?;
        self.queue = Some(q);
        self.consumer = Some(id);
        Ok(())
    }

    /// Rebuild the subscription table from the session queue's bindings and the slot's
    /// shared subscriptions.
    fn restore_subscriptions(&mut self) -> Result<(), Violation> {
        if let Some(ex) = self.vhost.exchange(&self.exchange) {
            let dest = Destination::Queue(self.queue_name.clone());
            for b in ex.bindings() {
                if b.destination != dest {
                    continue;
                }
                let Some(filter) = b.arguments.get(ARG_FILTER).and_then(FieldValue::as_str).map(str::to_string) else {
                    continue;
                };
                let int = |k: &str| b.arguments.get(k).and_then(FieldValue::as_i64);
                let flag = |k: &str| b.arguments.get(k).and_then(FieldValue::as_bool).unwrap_or(false);
                let options = SubOptions {
                    qos: QoS::from_u8(int(ARG_QOS).unwrap_or(0).clamp(0, 2) as u8).unwrap_or_default(),
                    no_local: flag(ARG_NO_LOCAL),
                    retain_as_published: flag(ARG_RAP),
                    retain_handling: 0,
                };
                self.no_local |= options.no_local;
                let id = int(ARG_SUB_ID).and_then(|v| u32::try_from(v).ok());
                self.subs.insert(filter, Sub { options, id, key: b.key, args: b.arguments });
            }
        }
        let shared: Vec<SharedSub> = self.slot.state.lock().shared_subs.clone();
        for s in shared {
            self.subscribe_shared(&s.group, &s.filter, s.options, s.id)?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Inbound packets

    /// Handle one packet after CONNECT. A returned violation ends the connection.
    pub(crate) fn handle(&mut self, packet: Packet) -> Result<(), Violation> {
        match packet {
            Packet::Publish(p) => self.publish(*p),
            Packet::PubAck(a) => {
                self.client_acked(a.packet_id, false, a.reason);
                Ok(())
            }
            Packet::PubRec(a) => {
                self.client_acked(a.packet_id, true, a.reason);
                Ok(())
            }
            Packet::PubRel(a) => {
                let known = self.slot.state.lock().inbound_qos2.remove(&a.packet_id);
                let mut ack = Ack::ok(a.packet_id);
                if !known && self.protocol.is_v5() {
                    ack.reason = reason::PACKET_ID_NOT_FOUND;
                }
                self.send(&Packet::PubComp(ack));
                Ok(())
            }
            Packet::PubComp(a) => {
                self.slot.state.lock().outbound_qos2.remove(&a.packet_id);
                self.pump_retained();
                Ok(())
            }
            Packet::Subscribe(s) => self.subscribe(s),
            Packet::Unsubscribe(u) => self.unsubscribe(u),
            Packet::PingReq => {
                self.send(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(_) => Err(Violation::protocol("DISCONNECT is handled by the connection")),
            Packet::Auth(_) => {
                Err(Violation::new(reason::BAD_AUTHENTICATION_METHOD, "enhanced authentication is not supported"))
            }
            Packet::Connect(_) => Err(Violation::protocol("second CONNECT")),
            other => Err(Violation::protocol(format!("a client may not send {}", other.name()))),
        }
    }

    /// A client DISCONNECT: returns whether the will must be published.
    pub(crate) fn disconnect(&mut self, d: &Reasoned) -> Result<bool, Violation> {
        if let Some(e) = d.properties.session_expiry_interval {
            if self.session_expiry == 0 && e > 0 {
                return Err(Violation::protocol("session expiry set at DISCONNECT after connecting with 0"));
            }
            self.session_expiry = e.min(self.shared.cfg.max_session_expiry);
            if self.session_expiry == 0 {
                self.persistent = false;
            }
        }
        Ok(d.reason == reason::DISCONNECT_WITH_WILL)
    }

    fn resolve_topic(&mut self, p: &mut Publish) -> Result<(), Violation> {
        if let Some(alias) = p.properties.topic_alias.take() {
            if alias == 0 || alias > self.shared.cfg.topic_alias_maximum {
                return Err(Violation::new(reason::TOPIC_ALIAS_INVALID, format!("topic alias {alias} out of range")));
            }
            if p.topic.is_empty() {
                match self.in_aliases.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => return Err(Violation::protocol(format!("unknown topic alias {alias}"))),
                }
            } else {
                self.in_aliases.insert(alias, p.topic.clone());
            }
        }
        if p.topic.is_empty() {
            return Err(Violation::protocol("PUBLISH without a topic name or alias"));
        }
        validate_name(&p.topic).map_err(|e| Violation::new(reason::TOPIC_NAME_INVALID, format!("topic name: {e}")))
    }

    fn publish(&mut self, mut p: Publish) -> Result<(), Violation> {
        self.resolve_topic(&mut p)?;
        if !p.properties.subscription_identifiers.is_empty() {
            return Err(Violation::protocol("a client may not send subscription identifiers"));
        }
        let id = p.packet_id.unwrap_or(0);
        if p.qos == QoS::ExactlyOnce && self.slot.state.lock().inbound_qos2.contains(&id) {
            // A repeat of a QoS 2 PUBLISH we already took: acknowledge, do not republish.
            self.pending_acks.push_back(PendingAck {
                qos2: true,
                ack: Ack::ok(id),
                lsn: 0,
                retained_gen: 0,
                suppress: false,
            });
            self.release_acks();
            return Ok(());
        }
        if p.qos != QoS::AtMostOnce {
            let in_flight = self.pending_acks.len() + self.slot.state.lock().inbound_qos2.len();
            if in_flight >= usize::from(self.shared.cfg.receive_maximum.max(1)) && self.protocol.is_v5() {
                return Err(Violation::new(reason::RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded"));
            }
        }
        if p.properties.payload_format_indicator == Some(1) && std::str::from_utf8(&p.payload).is_err() {
            return self.refuse_publish(&p, reason::PAYLOAD_FORMAT_INVALID, "payload is not UTF-8".into());
        }
        let retained_gen = if p.retain { self.retained.set(&p).unwrap_or(0) } else { 0 };
        let routing_key = self.routing_key_of(&p.topic);
        let publisher = self.no_local.then_some(self.client_id.as_str());
        let message = to_message_with_key(&p, &self.exchange, publisher, routing_key);
        let outcome = match self.vhost.publish_cached(message, &self.ctx, &mut self.publish_cache) {
            Ok(o) => o,
            Err(e) => {
                if !self.protocol.is_v5() {
                    return Err(e.into());
                }
                return self.refuse_publish(&p, core_reason(&e), core_text(&e));
            }
        };
        self.routed |= outcome.routed;
        if p.qos == QoS::AtMostOnce {
            return Ok(());
        }
        let v5 = self.protocol.is_v5();
        let mut ack = Ack::ok(id);
        if outcome.rejected {
            ack.reason = reason::QUOTA_EXCEEDED;
            if v5 && self.problem_info {
                ack.properties.reason_string = Some("a subscriber's queue is full".into());
            }
        } else if !outcome.routed && v5 {
            ack.reason = reason::NO_MATCHING_SUBSCRIBERS;
        }
        let qos2 = p.qos == QoS::ExactlyOnce;
        if qos2 && ack.reason < 0x80 {
            self.slot.state.lock().inbound_qos2.insert(id);
        }
        let suppress = outcome.rejected && !v5;
        self.pending_acks.push_back(PendingAck { qos2, ack, lsn: outcome.lsn.unwrap_or(0), retained_gen, suppress });
        self.release_acks();
        Ok(())
    }

    /// Answer a PUBLISH we refuse: an ack with `code` (MQTT 5, QoS ≥ 1), else nothing.
    fn refuse_publish(&mut self, p: &Publish, code: u8, text: String) -> Result<(), Violation> {
        tracing::debug!(client = %self.client_id, topic = %p.topic, code, %text, "publish refused");
        let Some(id) = p.packet_id else { return Ok(()) };
        if !self.protocol.is_v5() {
            return Err(Violation::new(code, text));
        }
        let mut ack = Ack { packet_id: id, reason: code, properties: Properties::default() };
        if self.problem_info {
            ack.properties.reason_string = Some(text);
        }
        self.pending_acks.push_back(PendingAck {
            qos2: p.qos == QoS::ExactlyOnce,
            ack,
            lsn: 0,
            retained_gen: 0,
            suppress: false,
        });
        self.release_acks();
        Ok(())
    }

    /// Send the held-back acks whose messages are now durable, in order.
    pub(crate) fn release_acks(&mut self) {
        while let Some(front) = self.pending_acks.front() {
            if front.lsn > self.synced || front.retained_gen > self.retained_durable {
                return;
            }
            let Some(a) = self.pending_acks.pop_front() else { return };
            if a.suppress {
                continue;
            }
            let packet = if a.qos2 { Packet::PubRec(a.ack) } else { Packet::PubAck(a.ack) };
            self.send(&packet);
        }
    }

    /// The message log failed (an fsync error is never retried as if it succeeded): the acks
    /// waiting for it will never be earned. MQTT 5 answers each with reason 0x80 (Unspecified
    /// error) and carries on; MQTT 3.1.1 has no way to refuse a PUBLISH, so this returns
    /// `false` and the connection must close without acknowledging (the client resends).
    pub(crate) fn fail_unsynced_acks(&mut self) -> bool {
        if !self.protocol.is_v5() {
            return false;
        }
        let synced = self.synced;
        let mut refused_qos2 = Vec::new();
        for a in self.pending_acks.iter_mut().filter(|a| a.lsn > synced) {
            a.lsn = 0;
            a.ack.reason = reason::UNSPECIFIED;
            if self.problem_info {
                a.ack.properties.reason_string = Some("message store failed: the message was not stored".into());
            }
            if a.qos2 {
                refused_qos2.push(a.ack.packet_id);
            }
        }
        if !refused_qos2.is_empty() {
            // A PUBREC ≥ 0x80 ends the exchange: a resend with this id is a new message.
            let mut state = self.slot.state.lock();
            for id in refused_qos2 {
                state.inbound_qos2.remove(&id);
            }
        }
        self.release_acks();
        true
    }

    /// True while some ack waits for the message log.
    pub(crate) fn waits_for_sync(&self) -> bool {
        self.pending_acks.iter().any(|a| a.lsn > self.synced)
    }

    /// The vhost's name.
    pub(crate) fn vhost_name(&self) -> &str {
        self.vhost.name()
    }

    /// True while some ack waits for the retained store.
    pub(crate) fn waits_for_retained(&self) -> bool {
        self.pending_acks.iter().any(|a| a.retained_gen > self.retained_durable)
    }

    fn client_acked(&mut self, id: u16, pubrec: bool, code: u8) {
        let Some(f) = self.inflight.remove(&id) else {
            if pubrec && self.slot.state.lock().outbound_qos2.contains(&id) {
                // A repeated PUBREC: repeat the PUBREL.
                self.send(&Packet::PubRel(Ack::ok(id)));
            }
            return;
        };
        if let Some((q, lease, _)) = f.lease {
            self.vhost.settle(&q, lease, Outcome::Ack);
        }
        if pubrec && code < 0x80 {
            self.slot.state.lock().outbound_qos2.insert(id);
            self.send(&Packet::PubRel(Ack::ok(id)));
        }
        self.pump_retained();
    }

    fn subscribe(&mut self, s: Subscribe) -> Result<(), Violation> {
        let v5 = self.protocol.is_v5();
        let id = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained: Vec<(Publish, SubOptions, Option<u32>)> = Vec::new();
        for (filter, options) in &s.filters {
            let failure = |code: u8| if v5 { code } else { 0x80 };
            let code = match parse_shared(filter) {
                Err(_) => failure(reason::TOPIC_FILTER_INVALID),
                Ok(Some(sh)) => {
                    if options.no_local {
                        return Err(Violation::protocol("No Local on a shared subscription"));
                    }
                    let (group, f) = (sh.group.to_string(), sh.filter.to_string());
                    match self.subscribe_shared(&group, &f, *options, id) {
                        Ok(()) => {
                            if self.persistent {
                                let mut st = self.slot.state.lock();
                                st.shared_subs.retain(|x| !(x.group == group && x.filter == f));
                                st.shared_subs.push(SharedSub { group, filter: f, options: *options, id });
                            }
                            options.qos as u8
                        }
                        Err(v) => failure(v.reason),
                    }
                }
                Ok(None) => {
                    if validate_filter(filter).is_err() {
                        failure(reason::TOPIC_FILTER_INVALID)
                    } else {
                        let existed = self.subs.contains_key(filter);
                        match self.subscribe_one(filter, *options, id) {
                            Ok(()) => {
                                let send = match options.retain_handling {
                                    0 => true,
                                    1 => !existed,
                                    _ => false,
                                };
                                if send {
                                    for p in self.retained.matching(filter) {
                                        retained.push((p, *options, id));
                                    }
                                }
                                options.qos as u8
                            }
                            Err(v) => failure(v.reason),
                        }
                    }
                }
            };
            codes.push(code);
        }
        self.send(&Packet::SubAck(SubAck { packet_id: s.packet_id, properties: Properties::default(), codes }));
        for (p, options, id) in retained {
            self.queue_retained(p, options, id);
        }
        self.pump_retained();
        Ok(())
    }

    fn binding_args(filter: &str, options: SubOptions, id: Option<u32>) -> FieldTable {
        let mut args = FieldTable::new();
        args.insert(ARG_FILTER.into(), FieldValue::text(filter));
        args.insert(ARG_QOS.into(), FieldValue::U8(options.qos as u8));
        if options.no_local {
            args.insert(ARG_NO_LOCAL.into(), FieldValue::Bool(true));
        }
        if options.retain_as_published {
            args.insert(ARG_RAP.into(), FieldValue::Bool(true));
        }
        if let Some(id) = id {
            args.insert(ARG_SUB_ID.into(), FieldValue::I64(i64::from(id)));
        }
        args
    }

    fn subscribe_one(&mut self, filter: &str, options: SubOptions, id: Option<u32>) -> Result<(), Violation> {
        self.ensure_queue()?;
        let key = to_routing_key(filter);
        let args = Self::binding_args(filter, options, id);
        let dest = || Destination::Queue(self.queue_name.clone());
        if let Some(old) = self.subs.get(filter)
            && old.args != args
        {
            self.vhost.unbind(&self.exchange, dest(), &old.key, &old.args, &self.ctx)?;
        }
        self.vhost.bind(&self.exchange, dest(), &key, args.clone(), &self.ctx)?;
        self.no_local |= options.no_local;
        self.subs.insert(filter.to_string(), Sub { options, id, key, args });
        Ok(())
    }

    fn subscribe_shared(
        &mut self,
        group: &str,
        filter: &str,
        options: SubOptions,
        id: Option<u32>,
    ) -> Result<(), Violation> {
        let k = (group.to_string(), filter.to_string());
        if let Some(s) = self.shared_subs.get_mut(&k) {
            s.options = options;
            s.id = id;
            return Ok(());
        }
        let name = shared_queue_name(group, filter);
        if self.vhost.queue(&name).is_none() {
            let spec = QueueSpec {
                name: name.clone(),
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: true,
                arguments: self.queue_args(None),
            };
            self.vhost.declare_queue(spec, &self.ctx)?;
        }
        let mut args = FieldTable::new();
        args.insert(ARG_FILTER.into(), FieldValue::text(filter));
        self.vhost.bind(&self.exchange, Destination::Queue(name.clone()), &to_routing_key(filter), args, &self.ctx)?;
        let spec = ConsumeSpec { prefetch: self.prefetch, ..ConsumeSpec::default() };
        let sink = self.sink();
        let (queue, consumer) = self.vhost.consume(&name, spec, sink, &self.ctx)?;
        self.shared_subs.insert(k, SharedState { filter: filter.to_string(), options, id, queue, consumer });
        Ok(())
    }

    fn unsubscribe(&mut self, u: Unsubscribe) -> Result<(), Violation> {
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            let code = match parse_shared(filter) {
                Ok(Some(sh)) => {
                    let k = (sh.group.to_string(), sh.filter.to_string());
                    match self.shared_subs.remove(&k) {
                        Some(s) => {
                            self.leave_shared(s);
                            self.slot.state.lock().shared_subs.retain(|x| !(x.group == k.0 && x.filter == k.1));
                            reason::SUCCESS
                        }
                        None => reason::NO_SUBSCRIPTION_EXISTED,
                    }
                }
                Ok(None) => match self.subs.remove(filter) {
                    Some(sub) => {
                        let dest = Destination::Queue(self.queue_name.clone());
                        match self.vhost.unbind(&self.exchange, dest, &sub.key, &sub.args, &self.ctx) {
                            Ok(()) => reason::SUCCESS,
                            Err(e) => core_reason(&e),
                        }
                    }
                    None => reason::NO_SUBSCRIPTION_EXISTED,
                },
                Err(_) => reason::TOPIC_FILTER_INVALID,
            };
            codes.push(code);
        }
        self.no_local = self.subs.values().any(|s| s.options.no_local);
        self.send(&Packet::UnsubAck(UnsubAck { packet_id: u.packet_id, properties: Properties::default(), codes }));
        Ok(())
    }

    /// Stop consuming a shared queue and give its unacknowledged messages back to the group.
    fn leave_shared(&mut self, s: SharedState) {
        self.vhost.cancel(&s.queue, s.consumer);
        let ids: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.lease.as_ref().is_some_and(|(q, _, _)| Arc::ptr_eq(q, &s.queue)))
            .map(|(id, _)| *id)
            .collect();
        let mut leases = Vec::new();
        for id in ids {
            if let Some(InFlight { lease: Some((_, lease, _)) }) = self.inflight.remove(&id) {
                leases.push(lease);
            }
        }
        self.vhost.requeue_all(&s.queue, &leases);
    }

    // -----------------------------------------------------------------------------------------
    // Outbound

    fn alloc_packet_id(&mut self) -> Option<u16> {
        let busy =
            |s: &Session, id: u16| s.inflight.contains_key(&id) || s.slot.state.lock().outbound_qos2.contains(&id);
        for _ in 0..u16::MAX {
            let id = self.next_packet_id;
            self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
            if !busy(self, id) {
                return Some(id);
            }
        }
        None
    }

    fn queue_retained(&mut self, mut p: Publish, options: SubOptions, id: Option<u32>) {
        p.qos = p.qos.min(options.qos);
        p.retain = true;
        p.dup = false;
        p.properties.subscription_identifiers = id.into_iter().collect();
        if p.qos == QoS::AtMostOnce {
            self.emit(p, None);
        } else {
            self.retained_backlog.push_back(p);
        }
    }

    /// Send waiting retained messages while the client's receive window has room.
    pub(crate) fn pump_retained(&mut self) {
        let window = usize::from(self.client_receive_max).saturating_sub(self.prefetch as usize).max(1);
        while self.inflight.len() < window {
            let Some(p) = self.retained_backlog.pop_front() else { return };
            self.emit(p, None);
        }
    }

    /// Encode a PUBLISH for the client, allocating a packet id (reusing `reuse_id` when
    /// free) and applying topic aliases; `lease` is the core lease it settles.
    fn emit(&mut self, mut p: Publish, lease: Option<(Arc<Queue>, LeaseId, u64, Option<u16>)>) {
        let v5 = self.protocol.is_v5();
        if !v5 {
            p.properties = Properties::default();
        }
        if p.qos != QoS::AtMostOnce {
            let reuse = lease.as_ref().and_then(|l| l.3).filter(|id| !self.inflight.contains_key(id));
            let Some(id) = reuse.or_else(|| self.alloc_packet_id()) else {
                // No packet id free: give the message back to its queue.
                if let Some((q, lease, _, _)) = lease {
                    self.vhost.settle(&q, lease, Outcome::Requeue);
                }
                return;
            };
            p.packet_id = Some(id);
        }
        if self.client_max_packet != usize::MAX && publish_size(&p, self.protocol) > self.client_max_packet {
            // MQTT-3.1.2-25: drop what the client cannot take, as if it was delivered.
            tracing::debug!(client = %self.client_id, topic = %p.topic, "message exceeds the client's maximum packet size; dropped");
            if let Some((q, lease, _, _)) = lease {
                self.vhost.settle(&q, lease, Outcome::Ack);
            }
            return;
        }
        if v5 && self.client_alias_max > 0 {
            if let Some(&alias) = self.out_aliases.get(&p.topic) {
                p.properties.topic_alias = Some(alias);
                p.topic.clear();
            } else if self.out_aliases.len() < usize::from(self.client_alias_max) {
                let alias = self.out_aliases.len() as u16 + 1;
                self.out_aliases.insert(p.topic.clone(), alias);
                p.properties.topic_alias = Some(alias);
            }
        }
        let qos = p.qos;
        let id = p.packet_id;
        p.encode(self.protocol, &mut self.out);
        match (qos, id) {
            (QoS::AtMostOnce, _) | (_, None) => {
                if let Some((q, lease, _, _)) = lease {
                    self.vhost.settle(&q, lease, Outcome::Ack);
                }
            }
            (_, Some(id)) => {
                self.inflight.insert(id, InFlight { lease: lease.map(|(q, l, seq, _)| (q, l, seq)) });
            }
        }
    }

    /// The routing key of a published topic; like [`Session::topic_of`], the last conversion is
    /// kept, since a publisher usually repeats its topic.
    fn routing_key_of(&mut self, topic: &str) -> CompactString {
        if let Some((cached_topic, key)) = &self.last_key
            && cached_topic == topic
        {
            return key.clone();
        }
        let key = CompactString::from(to_routing_key(topic));
        match &mut self.last_key {
            Some((cached_topic, cached)) => {
                cached_topic.clear();
                cached_topic.push_str(topic);
                cached.clone_from(&key);
            }
            None => self.last_key = Some((topic.to_owned(), key.clone())),
        }
        key
    }

    /// The MQTT topic of a delivered message. Deliveries usually come in runs from the same
    /// routing key, so the last conversion is kept and a repeat costs one `String` clone instead
    /// of a conversion (`from_routing_key` scans and rewrites the key).
    fn topic_of(&mut self, m: &Message) -> String {
        if let Some((key, topic)) = &self.last_topic
            && *key == m.routing_key
        {
            return topic.clone();
        }
        let topic = message_topic(m);
        match &mut self.last_topic {
            Some((key, cached)) => {
                key.clear();
                key.push_str(&m.routing_key);
                cached.clone_from(&topic);
            }
            None => self.last_topic = Some((m.routing_key.to_string(), topic.clone())),
        }
        topic
    }

    /// A delivery from the core for one of this session's consumers.
    pub(crate) fn deliver(&mut self, consumer: ConsumerId, queue: Arc<Queue>, d: Delivery) {
        let Some(lease) = d.lease else { return };
        let m = &d.message;
        let topic = self.topic_of(m);
        let mut granted: Option<QoS> = None;
        let mut rap = false;
        let mut ids: Vec<u32> = Vec::new();
        if self.consumer == Some(consumer) {
            // Only a No Local subscription needs the publisher (a header lookup per delivery).
            let own = self.no_local && message_publisher(m) == Some(self.client_id.as_str());
            for (filter, sub) in &self.subs {
                if (sub.options.no_local && own) || !topic::matches(filter, &topic) {
                    continue;
                }
                granted = Some(granted.map_or(sub.options.qos, |g| g.max(sub.options.qos)));
                rap |= sub.options.retain_as_published;
                ids.extend(sub.id);
            }
        } else if let Some(s) = self.shared_subs.values().find(|s| s.consumer == consumer)
            && topic::matches(&s.filter, &topic)
        {
            granted = Some(s.options.qos);
            rap = s.options.retain_as_published;
            ids.extend(s.id);
        }
        self.written.push((Arc::clone(&queue), consumer));
        let Some(granted) = granted else {
            // Routed by the AMQP key but not matched by MQTT's rules (e.g. a literal `*`).
            self.vhost.settle(&queue, lease, Outcome::Ack);
            return;
        };
        let elapsed = switchyard::time::now_ms().saturating_sub(d.enqueued_at);
        if m.properties.ttl_ms().is_some_and(|ttl| ttl < elapsed) {
            self.vhost.settle(&queue, lease, Outcome::Ack);
            return;
        }
        let qos = message_qos(m).min(granted);
        let mut properties =
            if self.protocol.is_v5() { to_publish_properties(m, elapsed) } else { Properties::default() };
        ids.sort_unstable();
        ids.dedup();
        properties.subscription_identifiers = ids;
        let reuse = if d.redelivered {
            self.slot.state.lock().resend_ids.remove(&(queue.name().to_string(), d.seq))
        } else {
            None
        };
        let p = Publish {
            dup: d.redelivered && qos != QoS::AtMostOnce,
            qos,
            retain: rap && message_retained(m),
            topic,
            packet_id: None,
            properties,
            payload: m.body.clone(),
        };
        self.emit(p, Some((queue, lease, d.seq, reuse)));
    }

    /// The core cancelled a consumer (its queue was deleted, e.g. by an administrator).
    pub(crate) fn consumer_cancelled(&mut self, consumer: ConsumerId) {
        if self.consumer == Some(consumer) {
            self.consumer = None;
            self.queue = None;
            self.subs.clear();
        }
        self.shared_subs.retain(|_, s| s.consumer != consumer);
    }

    /// Publish the will now (the caller handles Will Delay).
    pub(crate) fn will_publish(shared: &Shared, vhost: &VHost, ctx: &ClientContext, will: &Will) {
        let p = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain,
            topic: will.topic.clone(),
            packet_id: None,
            properties: Properties { will_delay_interval: None, ..will.properties.clone() },
            payload: will.payload.clone(),
        };
        if validate_name(&p.topic).is_err() {
            return;
        }
        if p.retain {
            shared.retained(vhost.name()).set(&p);
        }
        let message = to_message(&p, &shared.cfg.exchange, None);
        if let Err(e) = vhost.publish(message, ctx) {
            tracing::debug!(topic = %p.topic, error = %e.text, "will not published");
        }
    }

    /// What publishing the will later needs.
    pub(crate) fn will_context(&self) -> (Arc<VHost>, ClientContext) {
        (Arc::clone(&self.vhost), self.ctx.clone())
    }

    /// The Will Delay Interval that applies: capped by the session's own life.
    pub(crate) fn will_delay(&self) -> u32 {
        let Some(w) = &self.will else { return 0 };
        let delay = w.properties.will_delay_interval.unwrap_or(0);
        if self.persistent { delay.min(self.session_expiry) } else { 0 }
    }

    /// Release everything at the end of the connection: consumers go, unacknowledged
    /// messages return to their queues (remembering their packet ids for a persistent
    /// session), and a session that does not persist loses its queue.
    pub(crate) fn release(&mut self) {
        let persistent = self.persistent;
        if let (Some(q), Some(c)) = (self.queue.take(), self.consumer.take()) {
            self.vhost.cancel(&q, c);
        }
        let shared: Vec<SharedState> = std::mem::take(&mut self.shared_subs).into_values().collect();
        for s in shared {
            self.leave_shared(s);
        }
        let mut by_queue: Vec<(Arc<Queue>, Vec<LeaseId>)> = Vec::new();
        {
            let mut st = self.slot.state.lock();
            for (id, f) in std::mem::take(&mut self.inflight) {
                let Some((q, lease, seq)) = f.lease else { continue };
                if persistent {
                    st.resend_ids.insert((q.name().to_string(), seq), id);
                }
                match by_queue.iter_mut().find(|(x, _)| Arc::ptr_eq(x, &q)) {
                    Some((_, v)) => v.push(lease),
                    None => by_queue.push((q, vec![lease])),
                }
            }
            if !persistent {
                st.clear();
            }
        }
        for (q, leases) in by_queue {
            self.vhost.requeue_all(&q, &leases);
        }
        if !persistent {
            let durable = persistent_queue_name(&self.client_id);
            if self.vhost.queue(&durable).is_some()
                && let Err(e) = self.vhost.delete_queue(&durable, false, false, &self.ctx)
            {
                tracing::debug!(queue = %durable, error = %e.text, "session queue not deleted");
            }
        }
    }

    /// Tell the queues how many deliveries were written to the socket.
    pub(crate) fn report_written(&mut self) {
        if self.written.is_empty() {
            return;
        }
        self.vhost.written_batch(std::mem::take(&mut self.written));
    }

    /// Whether problem information (reason strings) may be sent.
    pub(crate) fn problem_info(&self) -> bool {
        self.problem_info
    }
}

/// The CONNACK for an accepted or refused CONNECT.
pub(crate) fn connack(protocol: Protocol, session_present: bool, code: u8, properties: Properties) -> Packet {
    let code = if protocol.is_v5() { code } else { crate::error::v3_connack_code(code) };
    Packet::ConnAck(ConnAck {
        session_present: session_present && code == 0,
        code,
        properties: if protocol.is_v5() { properties } else { Properties::default() },
    })
}
