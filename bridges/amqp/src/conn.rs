//! One client connection: the handshake, the read/deliver/write loop,
//! heartbeats, memory-alarm blocking, and the close sequence.
//!
//! This is the only file in the bridge that does I/O. Each loop turn reads
//! what the socket has, handles every whole frame, takes the deliveries the
//! core queued for this connection, and writes everything in one go.
//! Backpressure is structural: while a write is pending nothing is read.

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, basic, channel, connection};
use amq_protocol::types::{AMQPValue, FieldTable as AmqpTable, ShortString};
use bytes::{Buf, BytesMut};
use switchyard::queue::{ConnectionId, ConsumerEvent};
use switchyard::{BrokerHandle, ClientContext};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channel::{Channel, ConnState, capability, long};
use crate::codec::{self, DecodeError, FrameRef, MethodRef, PROTOCOL_HEADER, Scan};
use crate::config::AmqpConfig;
use crate::error::{AmqpError, code};
use crate::outbound::Outbound;

/// Below this much free room, the read buffer moves its partial frame to the front (or grows).
const READ_ROOM_MIN: usize = 16 * 1024;
/// The room a busy publisher's reads grow to: each read that fills the buffer doubles the
/// room kept free, up to this. Fewer, larger reads mean fewer wake-ups of this task and of
/// the consumers it feeds (a 1 → 1 transient run went from ~650k to ~800k msg/s going from
/// 64 KiB to 512 KiB reads); an idle connection keeps the small buffer.
const READ_ROOM_MAX: usize = 512 * 1024;
/// Most consumer events handled per loop turn, so reads are not starved.
const EVENTS_PER_TURN: usize = 512;
/// How long we wait for `connection.close-ok` after sending `connection.close`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// The smallest frame_max the spec lets a peer negotiate.
const FRAME_MIN_SIZE: u32 = 4096;

type Events = mpsc::UnboundedReceiver<ConsumerEvent>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Header,
    StartOk,
    TuneOk,
    Open,
    Running,
    /// We sent connection.close; waiting for close-ok.
    Closing,
    Done,
}

pub use switchyard_kit::CloseReason;

struct Conn {
    broker: BrokerHandle,
    cfg: Arc<AmqpConfig>,
    id: ConnectionId,
    peer: SocketAddr,
    phase: Phase,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    out: Outbound,
    user: Option<Arc<switchyard::auth::User>>,
    connection_blocked_cap: bool,
    consumer_cancel_notify: bool,
    state: Option<ConnState>,
    channels: Channels,
    events_tx: mpsc::UnboundedSender<ConsumerEvent>,
    published: bool,
    blocked_sent: bool,
    close_reason: CloseReason,
}

/// Serve one accepted client until it closes, fails, or `shutdown` fires.
pub async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    broker: BrokerHandle,
    cfg: Arc<AmqpConfig>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let id = broker.next_connection_id();
    let mut conn = Conn {
        frame_max: cfg.frame_max,
        channel_max: cfg.channel_max,
        heartbeat: 0,
        out: Outbound::new(cfg.frame_max),
        broker,
        cfg,
        id,
        peer,
        phase: Phase::Header,
        user: None,
        connection_blocked_cap: false,
        consumer_cancel_notify: false,
        state: None,
        channels: Channels::default(),
        events_tx,
        published: false,
        blocked_sent: false,
        close_reason: CloseReason::PeerGone,
    };
    tracing::debug!(connection = id, %peer, "amqp connection accepted");
    let result = conn.run(stream, events_rx, shutdown).await;
    if let Err(e) = &result {
        tracing::debug!(connection = id, error = %e, "amqp connection i/o error");
    }
    conn.cleanup();
    tracing::debug!(connection = id, reason = ?conn.close_reason, "amqp connection closed");
}

impl Conn {
    async fn run<S>(
        &mut self,
        mut stream: S,
        mut events: mpsc::UnboundedReceiver<ConsumerEvent>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut read_room = READ_ROOM_MIN;
        let mut blocked = self.broker.memory().subscribe();
        let mut synced = self.broker.message_log().synced();
        let handshake_deadline = Instant::now() + Duration::from_secs(self.cfg.handshake_timeout.max(1));
        let mut close_deadline: Option<Instant> = None;
        let mut last_read = Instant::now();
        let mut last_write = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Made once and polled in place: building and dropping it every turn registered it
        // with the token's notifier again.
        let stopped = shutdown.cancelled();
        tokio::pin!(stopped);
        loop {
            if !self.out.buf.is_empty() {
                stream.write_all_buf(&mut self.out.buf).await?;
                // Start the next turn's frames at the front of the allocation again: without
                // this, they go after the bytes just written, and growing past the end copies
                // the buffer (a whole turn of deliveries) instead of reusing it.
                let _ = self.out.buf.try_reclaim(self.out.buf.capacity() + 1);
                last_write = Instant::now();
                self.report_written();
            }
            // Likewise keep room to read a large batch: a read into the last few bytes of the
            // buffer would take only part of what the socket holds.
            if buf.capacity() - buf.len() < read_room {
                buf.reserve(read_room);
            }
            let room_before_read = buf.capacity() - buf.len();
            if self.phase == Phase::Done {
                stream.flush().await?;
                return Ok(());
            }
            if self.phase == Phase::Closing && close_deadline.is_none() {
                close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
            }
            // A publishing connection stops being read while the memory alarm is on.
            let paused = self.published && *blocked.borrow() && self.phase == Phase::Running;
            tokio::select! {
                biased;
                // Once it fired, `start_close` leaves the phase Closing or Done, so it is not
                // polled again.
                _ = &mut stopped, if self.phase != Phase::Closing => {
                    self.close_reason = CloseReason::Shutdown;
                    self.start_close(AmqpError::connection(code::CONNECTION_FORCED, "broker forced connection closure with reason 'shutdown'"));
                }
                read = stream.read_buf(&mut buf), if !paused => {
                    let read = read?;
                    if read == 0 {
                        return Ok(());
                    }
                    if read >= room_before_read && read_room < READ_ROOM_MAX {
                        read_room = (read_room * 2).min(READ_ROOM_MAX);
                    }
                    last_read = Instant::now();
                    let published = self.published;
                    self.handle_bytes(&mut buf, &mut events);
                    if published {
                        // A publish wakes its consumers' connections, and tokio runs a task
                        // woken from a worker on that same worker (its LIFO slot, which other
                        // workers cannot steal from) once this one yields: publisher and
                        // consumer then share one core. Yielding puts this task at the back
                        // of the run queue, where an idle worker can take it (or the consumer).
                        tokio::task::yield_now().await;
                    }
                }
                Some(ev) = events.recv() => {
                    self.handle_event(ev);
                    for _ in 1..EVENTS_PER_TURN {
                        match events.try_recv() {
                            Ok(ev) => self.handle_event(ev),
                            Err(_) => break,
                        }
                    }
                }
                // The log's fsyncs matter only to confirms and commits waiting for one; the
                // alarm only to a connection that publishes (RabbitMQ, too, blocks and tells
                // only publishers).
                changed = synced.changed(), if self.waits_for_sync() => {
                    if changed.is_ok() {
                        let now_synced = *synced.borrow_and_update();
                        self.release_confirms(now_synced);
                    }
                }
                changed = blocked.changed(), if self.published => {
                    if changed.is_ok() {
                        self.on_alarm_change(*blocked.borrow());
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    if let Some(d) = close_deadline && now >= d {
                        return Ok(());
                    }
                    if self.phase < Phase::Running && self.phase != Phase::Closing && now >= handshake_deadline {
                        self.close_reason = CloseReason::HandshakeTimeout;
                        return Ok(());
                    }
                    if self.heartbeat > 0 {
                        let hb = Duration::from_secs(self.heartbeat.into());
                        if now.duration_since(last_read) > hb * 2 {
                            self.close_reason = CloseReason::HeartbeatTimeout;
                            tracing::info!(connection = self.id, peer = %self.peer, "missed heartbeats from client, timeout: {}s", self.heartbeat);
                            return Ok(());
                        }
                        if now.duration_since(last_write) >= hb / 2 {
                            self.out.heartbeat();
                        }
                    }
                }
            }
            self.flush_confirms();
            // An alarm already on when this connection first published still blocks it.
            if self.published {
                let on = *blocked.borrow();
                self.on_alarm_change(on);
            }
        }
    }

    /// Handle every whole frame in `buf`, each decoded in place (borrowing `buf`), and
    /// consume them in one step at the end.
    fn handle_bytes(&mut self, buf: &mut BytesMut, events: &mut Events) {
        // Bytes of `buf` already handled.
        let mut done = 0;
        while self.phase != Phase::Done {
            let frame_max = if self.phase == Phase::Running { self.frame_max } else { self.cfg.frame_max };
            match codec::decode_in_place(&buf[done..], frame_max, self.phase == Phase::Header) {
                Ok(Scan::Frame { frame, len }) => {
                    done += len;
                    let handled = if self.phase == Phase::Running {
                        self.running_frame(frame, events)
                    } else {
                        self.handle_frame(frame, events)
                    };
                    if let Err(e) = handled {
                        self.fail(e);
                    }
                }
                Ok(Scan::Partial { total }) => {
                    buf.advance(done);
                    codec::reserve_for_frame(buf, total);
                    return;
                }
                Err(DecodeError::BadProtocolHeader { .. }) => {
                    self.out.buf.extend_from_slice(PROTOCOL_HEADER);
                    self.close_reason = CloseReason::ProtocolError;
                    self.phase = Phase::Done;
                    buf.advance(done);
                    return;
                }
                Err(e) => {
                    let code = e.reply_code().unwrap_or(code::FRAME_ERROR);
                    let (class_id, method_id) = match &e {
                        DecodeError::UnknownMethod { class_id, method_id }
                        | DecodeError::NotImplemented { class_id, method_id, .. }
                        | DecodeError::Syntax { class_id, method_id, .. } => (*class_id, *method_id),
                        _ => (0, 0),
                    };
                    buf.clear();
                    self.fail(AmqpError::connection(code, e.to_string()).on(class_id, method_id));
                    return;
                }
            }
        }
        buf.advance(done);
    }

    /// Close the connection with `e` (any error outside a running channel is fatal).
    fn fail(&mut self, e: AmqpError) {
        self.close_reason = CloseReason::ProtocolError;
        self.start_close(e);
    }

    fn start_close(&mut self, e: AmqpError) {
        if self.phase == Phase::Closing || self.phase == Phase::Done {
            return;
        }
        tracing::debug!(connection = self.id, code = e.code, text = %e.text, "closing connection");
        if self.phase == Phase::Header {
            self.phase = Phase::Done;
            return;
        }
        self.out.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: e.code,
                reply_text: ShortString::from(e.short_text()),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
        self.phase = Phase::Closing;
    }

    fn handle_frame(&mut self, frame: FrameRef<'_>, events: &mut Events) -> Result<(), AmqpError> {
        if self.phase == Phase::Running {
            return self.running_frame(frame, events);
        }
        // Outside the running phase only connection methods (and heartbeats) mean anything.
        let heartbeat = frame == FrameRef::Heartbeat;
        let method = match frame {
            FrameRef::Method { channel: 0, method } => Some(method.into_amqp()),
            _ => None,
        };
        match self.phase {
            Phase::Header => {
                self.send_start();
                self.phase = Phase::StartOk;
                Ok(())
            }
            Phase::StartOk => match method {
                Some(AMQPClass::Connection(connection::AMQPMethod::StartOk(s))) => self.start_ok(s),
                _ => Err(AmqpError::connection(code::COMMAND_INVALID, "expected connection.start-ok")),
            },
            Phase::TuneOk => match method {
                Some(AMQPClass::Connection(connection::AMQPMethod::TuneOk(t))) => self.tune_ok(t),
                _ if heartbeat => Ok(()),
                _ => Err(AmqpError::connection(code::COMMAND_INVALID, "expected connection.tune-ok")),
            },
            Phase::Open => match method {
                Some(AMQPClass::Connection(connection::AMQPMethod::Open(o))) => self.open(o),
                _ if heartbeat => Ok(()),
                _ => Err(AmqpError::connection(code::COMMAND_INVALID, "expected connection.open")),
            },
            Phase::Closing => {
                match method {
                    Some(AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => {
                        self.phase = Phase::Done;
                    }
                    Some(AMQPClass::Connection(connection::AMQPMethod::Close(_))) => {
                        self.out
                            .method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})));
                        self.phase = Phase::Done;
                    }
                    _ => {}
                }
                Ok(())
            }
            Phase::Running | Phase::Done => Ok(()),
        }
    }

    fn send_start(&mut self) {
        let mut caps = AmqpTable::default();
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "consumer_priorities",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ] {
            caps.insert(ShortString::from(cap), AMQPValue::Boolean(true));
        }
        let mut props = AmqpTable::default();
        let text = |s: &str| AMQPValue::LongString(long(s));
        props.insert(ShortString::from("capabilities"), AMQPValue::FieldTable(caps));
        props.insert(ShortString::from("product"), text("Switchyard"));
        props.insert(ShortString::from("version"), text(env!("CARGO_PKG_VERSION")));
        props.insert(ShortString::from("platform"), text("Rust"));
        props.insert(ShortString::from("cluster_name"), text("switchyard"));
        props.insert(ShortString::from("copyright"), text("The Switchyard authors"));
        props.insert(ShortString::from("information"), text("Licensed under the Apache License 2.0"));
        self.out.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: props,
                mechanisms: long("PLAIN AMQPLAIN"),
                locales: long("en_US"),
            })),
        );
    }

    fn start_ok(&mut self, s: connection::StartOk) -> Result<(), AmqpError> {
        self.connection_blocked_cap = capability(&s.client_properties, "connection.blocked");
        self.consumer_cancel_notify = capability(&s.client_properties, "consumer_cancel_notify");
        let mechanism = s.mechanism.as_str().to_string();
        let creds = match mechanism.as_str() {
            "PLAIN" => parse_plain(s.response.as_bytes()),
            "AMQPLAIN" => parse_amqplain(s.response.as_bytes()),
            other => {
                return Err(AmqpError::connection(
                    code::COMMAND_INVALID,
                    format!("unknown authentication mechanism '{other}'"),
                ));
            }
        };
        let refused = || {
            AmqpError::connection(
                code::ACCESS_REFUSED,
                format!(
                    "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
                ),
            )
        };
        let Some((user, pass)) = creds else { return Err(refused()) };
        match self.broker.authenticate(&user, &pass, Some(self.peer.ip())) {
            Ok(u) => self.user = Some(u),
            Err(e) => {
                tracing::info!(connection = self.id, peer = %self.peer, user = %user, "login refused: {}", e.text);
                if e.text.starts_with("Login was refused") {
                    return Err(refused());
                }
                return Err(AmqpError::connection(code::ACCESS_REFUSED, e.text));
            }
        }
        self.out.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
                channel_max: self.cfg.channel_max,
                frame_max: self.cfg.frame_max,
                heartbeat: self.cfg.heartbeat,
            })),
        );
        self.phase = Phase::TuneOk;
        Ok(())
    }

    fn tune_ok(&mut self, t: connection::TuneOk) -> Result<(), AmqpError> {
        let ours = self.cfg.frame_max;
        self.frame_max = match t.frame_max {
            0 => ours,
            n if ours != 0 && n > ours => {
                return Err(AmqpError::connection(code::NOT_ALLOWED, format!("frame_max={n} > {ours} max size")));
            }
            n => n.max(FRAME_MIN_SIZE),
        };
        self.out.frame_max = self.frame_max;
        self.channel_max = match t.channel_max {
            0 => self.cfg.channel_max,
            n => n.min(self.cfg.channel_max),
        };
        self.heartbeat = t.heartbeat;
        self.phase = Phase::Open;
        Ok(())
    }

    fn open(&mut self, o: connection::Open) -> Result<(), AmqpError> {
        let Some(user) = self.user.clone() else {
            return Err(AmqpError::connection(code::COMMAND_INVALID, "connection.open before login"));
        };
        let vhost = self.broker.open_vhost(o.virtual_host.as_str(), &user)?;
        tracing::debug!(connection = self.id, user = %user.name, vhost = %vhost.name(), "amqp connection open");
        self.state = Some(ConnState {
            vhost,
            ctx: ClientContext { connection: self.id, user },
            out: Outbound::new(self.frame_max),
            sink: self.events_tx.clone(),
            consumer_channels: FxHashMap::default(),
            max_message_size: self.broker.config().max_message_size,
            consumer_cancel_notify: self.consumer_cancel_notify,
            written: Vec::new(),
            synced: *self.broker.message_log().synced().borrow(),
            log_failed: self.broker.message_log().is_failed(),
        });
        self.out.method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})));
        self.phase = Phase::Running;
        Ok(())
    }

    fn running_frame(&mut self, frame: FrameRef<'_>, events: &mut Events) -> Result<(), AmqpError> {
        match frame {
            FrameRef::Heartbeat => Ok(()),
            FrameRef::ProtocolHeader => Err(AmqpError::connection(code::FRAME_ERROR, "unexpected protocol header")),
            FrameRef::Method { channel: 0, method } => self.connection_method(method.into_amqp()),
            FrameRef::Method { channel, method } => self.channel_method(channel, method, events),
            FrameRef::Header { channel, class_id, body_size, properties } => {
                self.published = true;
                self.with_channel(channel, |ch, st| ch.content_header(class_id, body_size, &properties, st))
            }
            FrameRef::Body { channel, payload } => self.with_channel(channel, |ch, st| ch.content_body(payload, st)),
        }
    }

    fn connection_method(&mut self, method: AMQPClass) -> Result<(), AmqpError> {
        let (c, m) = codec::class_method_ids(&method);
        match method {
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                self.close_reason = CloseReason::ClientClosed;
                self.out.method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})));
                self.phase = Phase::Done;
                Ok(())
            }
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => {
                self.phase = Phase::Done;
                Ok(())
            }
            AMQPClass::Connection(connection::AMQPMethod::Blocked(_))
            | AMQPClass::Connection(connection::AMQPMethod::Unblocked(_)) => Ok(()),
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(connection::UpdateSecretOk {})),
                );
                Ok(())
            }
            other => Err(AmqpError::connection(
                code::COMMAND_INVALID,
                format!("unexpected method {} on channel 0", codec::method_name(&other)),
            )
            .on(c, m)),
        }
    }

    fn channel_method(&mut self, id: u16, method: MethodRef<'_>, events: &mut Events) -> Result<(), AmqpError> {
        let (class_id, method_id) = method.ids();
        match method {
            MethodRef::Amqp(ref m) if matches!(**m, AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                if self.channels.contains_key(&id) {
                    return Err(AmqpError::connection(code::CHANNEL_ERROR, "second 'channel.open' seen")
                        .on(class_id, method_id));
                }
                if id > self.channel_max {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format!("channel {id} is above the negotiated channel_max ({})", self.channel_max),
                    )
                    .on(class_id, method_id));
                }
                self.channels.insert(id, Channel::new(id));
                self.out.method(id, AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})));
                Ok(())
            }
            MethodRef::Amqp(ref m) if matches!(**m, AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                self.drain_events(events);
                if let (Some(mut ch), Some(st)) = (self.channels.remove(&id), self.state.as_mut()) {
                    ch.flush_confirms(st);
                    ch.release(st);
                    append_out(&mut self.out.buf, &mut st.out.buf);
                }
                self.out.method(id, AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})));
                Ok(())
            }
            MethodRef::Amqp(ref m) if matches!(**m, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {
                if self.channels.get(&id).is_some_and(|c| c.closing) {
                    self.channels.remove(&id);
                }
                Ok(())
            }
            method => {
                let Some(ch) = self.channels.get(&id) else {
                    return Err(
                        AmqpError::connection(code::CHANNEL_ERROR, "expected 'channel.open'").on(class_id, method_id)
                    );
                };
                if ch.closing {
                    return Ok(());
                }
                if ch.expects_content() {
                    return Err(AmqpError::connection(
                        code::UNEXPECTED_FRAME,
                        "expected content header for class 60, got non content header frame instead",
                    )
                    .on(class_id, method_id));
                }
                if matches!(&method, MethodRef::Amqp(m) if matches!(**m, AMQPClass::Basic(basic::AMQPMethod::Cancel(_))))
                {
                    // Deliveries already queued for the consumer go out before cancel-ok.
                    self.drain_events(events);
                }
                self.with_channel(id, |ch, st| ch.method(method, st))
            }
        }
    }

    /// Run `f` on channel `id`; a soft error closes just that channel.
    fn with_channel(
        &mut self,
        id: u16,
        f: impl FnOnce(&mut Channel, &mut ConnState) -> Result<(), AmqpError>,
    ) -> Result<(), AmqpError> {
        let Some(st) = self.state.as_mut() else {
            return Err(AmqpError::connection(code::COMMAND_INVALID, "connection not open"));
        };
        let Some(ch) = self.channels.get_mut(&id) else {
            return Err(AmqpError::connection(code::CHANNEL_ERROR, "expected 'channel.open'"));
        };
        if ch.closing {
            return Ok(());
        }
        // The channel encodes straight into the connection's buffer (lent for the call).
        std::mem::swap(&mut self.out.buf, &mut st.out.buf);
        let result = f(ch, st);
        std::mem::swap(&mut self.out.buf, &mut st.out.buf);
        match result {
            Err(e) if !e.hard => {
                self.close_channel(id, &e);
                Ok(())
            }
            other => other,
        }
    }

    fn close_channel(&mut self, id: u16, e: &AmqpError) {
        tracing::debug!(connection = self.id, channel = id, code = e.code, text = %e.text, "closing channel");
        if let (Some(ch), Some(st)) = (self.channels.get_mut(&id), self.state.as_mut()) {
            ch.flush_confirms(st);
            ch.release(st);
            ch.closing = true;
            append_out(&mut self.out.buf, &mut st.out.buf);
        }
        self.out.method(
            id,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code,
                reply_text: ShortString::from(e.short_text()),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
    }

    /// Handle every delivery the core has already queued for this connection.
    fn drain_events(&mut self, events: &mut Events) {
        while let Ok(ev) = events.try_recv() {
            self.handle_event(ev);
        }
    }

    fn handle_event(&mut self, ev: ConsumerEvent) {
        let Some(st) = self.state.as_mut() else { return };
        // Deliveries are encoded straight into the connection's buffer (lent for the call),
        // not copied into it afterwards.
        std::mem::swap(&mut self.out.buf, &mut st.out.buf);
        match ev {
            ConsumerEvent::Deliver { consumer, queue, delivery } => {
                match st.consumer_channels.get(&consumer).and_then(|c| self.channels.get_mut(c)) {
                    Some(ch) => ch.deliver(consumer, queue, delivery, st),
                    None => {
                        if let Some(lease) = delivery.lease {
                            st.vhost.settle(&queue, lease, switchyard::vhost::Outcome::Requeue);
                        }
                    }
                }
            }
            ConsumerEvent::Cancelled { consumer } => {
                if let Some(ch) = st.consumer_channels.get(&consumer).and_then(|c| self.channels.get_mut(c)) {
                    ch.broker_cancelled(consumer, st);
                }
            }
        }
        std::mem::swap(&mut self.out.buf, &mut st.out.buf);
    }

    fn report_written(&mut self) {
        let Some(st) = self.state.as_mut() else { return };
        if st.written.is_empty() {
            return;
        }
        st.vhost.written_runs(&mut st.written);
    }

    fn release_confirms(&mut self, synced: switchyard::store::Lsn) {
        let Some(st) = self.state.as_mut() else { return };
        st.synced = synced;
        st.log_failed = self.broker.message_log().is_failed();
        for ch in self.channels.values_mut() {
            ch.release_confirms(st);
        }
        append_out(&mut self.out.buf, &mut st.out.buf);
    }

    /// Confirms or a commit wait for the message log's next fsync.
    fn waits_for_sync(&self) -> bool {
        self.channels.values().any(Channel::waits_for_sync)
    }

    fn flush_confirms(&mut self) {
        let Some(st) = self.state.as_mut() else { return };
        for ch in self.channels.values_mut() {
            ch.flush_confirms(st);
        }
        append_out(&mut self.out.buf, &mut st.out.buf);
    }

    fn on_alarm_change(&mut self, blocked: bool) {
        if self.phase != Phase::Running || !self.connection_blocked_cap {
            return;
        }
        if blocked && !self.blocked_sent {
            self.out.method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                    reason: ShortString::from("low on memory"),
                })),
            );
            self.blocked_sent = true;
        } else if !blocked && self.blocked_sent {
            self.out.method(0, AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})));
            self.blocked_sent = false;
        }
    }

    fn cleanup(&mut self) {
        if let Some(st) = self.state.as_mut() {
            for mut ch in self.channels.drain() {
                ch.release(st);
            }
        }
        self.broker.connection_closed(self.id);
    }
}

/// Channel ids below this are table slots; the rest (rare: clients number channels from 1)
/// go to a map, so a client opening channel 65535 does not make the table 512 KiB.
const DIRECT_CHANNELS: usize = 256;

/// A connection's open channels: a lookup per frame is an index for ids below
/// [`DIRECT_CHANNELS`], not a hash. Slots are boxed, so the table costs 8 bytes per id up to
/// the highest open one (at most 2 KiB).
#[derive(Default)]
struct Channels {
    slots: Vec<Option<Box<Channel>>>,
    high: FxHashMap<u16, Channel>,
}

impl Channels {
    fn get(&self, id: &u16) -> Option<&Channel> {
        match self.slots.get(usize::from(*id)) {
            Some(slot) => slot.as_deref(),
            None => self.high.get(id),
        }
    }

    fn get_mut(&mut self, id: &u16) -> Option<&mut Channel> {
        match self.slots.get_mut(usize::from(*id)) {
            Some(slot) => slot.as_deref_mut(),
            None => self.high.get_mut(id),
        }
    }

    fn contains_key(&self, id: &u16) -> bool {
        self.get(id).is_some()
    }

    fn insert(&mut self, id: u16, channel: Channel) {
        let at = usize::from(id);
        if at >= DIRECT_CHANNELS {
            self.high.insert(id, channel);
            return;
        }
        if self.slots.len() <= at {
            self.slots.resize_with(at + 1, || None);
        }
        if let Some(slot) = self.slots.get_mut(at) {
            *slot = Some(Box::new(channel));
        }
    }

    fn remove(&mut self, id: &u16) -> Option<Channel> {
        let Some(slot) = self.slots.get_mut(usize::from(*id)) else {
            return self.high.remove(id);
        };
        let channel = slot.take();
        // Keep the table as short as the highest open channel (it is walked every turn).
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        channel.map(|c| *c)
    }

    /// The open channels: the table's in id order, then the rest.
    fn values(&self) -> impl Iterator<Item = &Channel> {
        self.slots.iter().filter_map(|s| s.as_deref()).chain(self.high.values())
    }

    /// The open channels, as [`Channels::values`], to change.
    fn values_mut(&mut self) -> impl Iterator<Item = &mut Channel> {
        self.slots.iter_mut().filter_map(|s| s.as_deref_mut()).chain(self.high.values_mut())
    }

    /// Removes and yields every open channel.
    fn drain(&mut self) -> impl Iterator<Item = Channel> {
        self.slots.drain(..).flatten().map(|c| *c).chain(self.high.drain().map(|(_, c)| c))
    }
}

/// PLAIN: `[authzid] NUL authcid NUL passwd`.
fn parse_plain(resp: &[u8]) -> Option<(String, String)> {
    let mut parts = resp.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let pass = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((user, pass))
}

/// AMQPLAIN: a field table without its length prefix, holding LOGIN and PASSWORD.
fn parse_amqplain(resp: &[u8]) -> Option<(String, String)> {
    let mut framed = Vec::with_capacity(resp.len() + 4);
    framed.extend_from_slice(&u32::try_from(resp.len()).ok()?.to_be_bytes());
    framed.extend_from_slice(resp);
    let (_, table) = amq_protocol::types::parsing::parse_field_table(framed.as_slice()).ok()?;
    let get = |k: &str| match table.inner().get(k) {
        Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_string()),
        _ => None,
    };
    Some((get("LOGIN")?, get("PASSWORD")?))
}

/// Moves what a channel encoded into the connection's outgoing buffer: a swap when that is
/// empty (the usual case), so delivered bodies are not copied a second time.
fn append_out(dst: &mut BytesMut, src: &mut BytesMut) {
    if dst.is_empty() {
        std::mem::swap(dst, src);
    } else {
        dst.extend_from_slice(src);
        src.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_table_holds_low_and_high_ids() {
        let mut t = Channels::default();
        for id in [1, 3, 255, 256, 65535] {
            assert!(!t.contains_key(&id));
            t.insert(id, Channel::new(id));
            assert!(t.contains_key(&id));
        }
        assert_eq!(t.slots.len(), 256);
        assert_eq!(t.high.len(), 2);
        assert!(t.get(&2).is_none() && t.get_mut(&4).is_none() && t.get(&1000).is_none());
        assert_eq!(t.values_mut().count(), 5);
        assert!(t.remove(&255).is_some());
        assert!(t.remove(&255).is_none());
        // The table shrinks to the highest open slot.
        assert_eq!(t.slots.len(), 4);
        assert!(t.remove(&65535).is_some());
        assert!(t.remove(&7).is_none());
        assert_eq!(t.drain().count(), 3);
        assert_eq!(t.values_mut().count(), 0);
    }

    #[test]
    fn plain_response_parses() {
        assert_eq!(parse_plain(b"\0guest\0guest"), Some(("guest".into(), "guest".into())));
        assert_eq!(parse_plain(b"guest"), None);
    }

    #[test]
    fn amqplain_response_parses() {
        // "LOGIN" S "u", "PASSWORD" S "p", without the table's length prefix.
        let mut t = Vec::new();
        for (k, v) in [("LOGIN", "u"), ("PASSWORD", "p")] {
            t.push(k.len() as u8);
            t.extend_from_slice(k.as_bytes());
            t.push(b'S');
            t.extend_from_slice(&(v.len() as u32).to_be_bytes());
            t.extend_from_slice(v.as_bytes());
        }
        assert_eq!(parse_amqplain(&t), Some(("u".into(), "p".into())));
    }
}
