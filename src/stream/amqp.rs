//! Streams as AMQP sees them: RabbitMQ's stream queues (`x-queue-type: stream`).
//!
//! - **Declare / route / delete.** A stream's AMQP face is an ordinary durable queue of the
//!   same name whose `x-queue-type` is `stream` (so exchanges, bindings, the default exchange,
//!   passive declares and `queue.delete` need nothing new). Such a queue has one internal
//!   consumer, the *feeder*, which appends what it receives to the core stream and then acks
//!   it. A confirm is sent when the message is in the (fsynced) message log, as for any
//!   durable queue; a crash between that and the append re-feeds the message after recovery
//!   (at-least-once: a record may be appended twice then). Deleting the queue deletes the
//!   stream, and a stream created through Kinesis gets its queue at once.
//! - **Consume.** `basic.consume` with `x-stream-offset` (`first`, `last`, `next`, a number =
//!   the stream-wide offset, or an AMQP timestamp) reads without removing: a private
//!   in-memory queue is filled by a reader task from that position and delivers to the
//!   consumer under its prefetch, which is required, as in RabbitMQ. Acks only make room.
//! - **Arguments.** `x-stream-shards` (default 1) sets the number of shards;
//!   `x-max-age` (`7D`, `12h`, `90m`, `30s`; rounded up to hours, at least 24 h, at most
//!   8,760 h), `x-max-length-bytes` and `x-stream-max-segment-size-bytes` set retention and
//!   segment size; `x-stream-partition-key-level: n` takes the partition key from the n-th
//!   `.`-separated level of the routing key (0-based) instead of the whole key, which is how
//!   MQTT topics (`a/b/c` arrives as `a.b.c`) are ingested (`[aws.kinesis] mqtt_ingest`).
//!
//! Records carry the AMQP properties, exchange and routing key (encoded as the message log
//! encodes messages, without the body) in their metadata; a record appended through Kinesis
//! becomes a message whose routing key is its partition key. Each delivery carries
//! `x-stream-offset` (the record's offset) and `x-partition-key` headers. A KPL-aggregated
//! record ([`super::kpl`]) becomes one message per user record, with `x-kpl-index`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::state::{HOUR_MS, StreamSettings};
use super::{NewRecord, StartPosition, Stream, StreamError, StreamRecord};
use crate::auth::{Access, ResourceKind, User};
use crate::error::{CoreError, CoreResult};
use crate::message::{FieldTable, FieldValue, Message, Properties};
use crate::queue::config::{QueueConfig, QueueType};
use crate::queue::state::{ConsumerId, ConsumerSpec, PublishOptions};
use crate::queue::{ConsumerEvent, ConsumerSink, Queue};
use crate::store::codec::{decode_message, encode_message};
use crate::vhost::{ClientContext, ConsumeSpec, Outcome, QueueSpec, VHost};

/// Most messages the feeder holds unacknowledged (what it appends in one batch at most).
const FEED_PREFETCH: u32 = 500;
/// Consumer ids for internal consumers live far above the broker's counter.
static INTERNAL_IDS: AtomicU64 = AtomicU64::new(1 << 62);

fn internal_id() -> ConsumerId {
    INTERNAL_IDS.fetch_add(1, Ordering::Relaxed)
}

fn is_stream_queue(q: &Queue) -> bool {
    q.config().queue_type == QueueType::Stream
}

/// Stream settings and shard count from a stream queue's arguments.
fn settings_from(args: &FieldTable) -> CoreResult<(u32, StreamSettings)> {
    let mut settings = StreamSettings::default();
    let shards = match args.get("x-stream-shards") {
        None => 1,
        Some(v) => v
            .as_i64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=super::state::MAX_OPEN_SHARDS).contains(n))
            .ok_or_else(|| CoreError::precondition("invalid arg 'x-stream-shards': must be between 1 and 500"))?,
    };
    if let Some(v) = args.get("x-max-age") {
        let text = v.as_str().ok_or_else(|| CoreError::precondition("invalid arg 'x-max-age'"))?;
        let ms = parse_age(text).ok_or_else(|| CoreError::precondition(format!("invalid arg 'x-max-age': {text}")))?;
        let hours = ms.div_ceil(HOUR_MS).clamp(24, u64::from(super::state::MAX_RETENTION_HOURS));
        settings.retention_hours = hours as u32;
    }
    if let Some(v) = args.get("x-max-length-bytes") {
        settings.max_bytes = v.as_i64().and_then(|n| u64::try_from(n).ok());
    }
    if let Some(n) = args.get("x-stream-max-segment-size-bytes").and_then(FieldValue::as_i64) {
        settings.segment_bytes = (n.max(4096)) as u64;
    }
    Ok((shards, settings))
}

/// RabbitMQ's `x-max-age`: a number and a unit (Y, M, D, h, m, s).
fn parse_age(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = text[..split].parse().ok()?;
    let unit = match &text[split..] {
        "Y" => 365 * 24 * HOUR_MS,
        "M" => 30 * 24 * HOUR_MS,
        "D" => 24 * HOUR_MS,
        "h" => HOUR_MS,
        "m" => 60_000,
        "s" => 1_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

fn internal_ctx(vhost: &VHost) -> ClientContext {
    ClientContext { connection: 0, user: User::superuser("streams", &[vhost.name()]) }
}

impl VHost {
    /// Create a stream and its AMQP queue (what Kinesis `CreateStream` calls).
    /// `extra` are further queue arguments (e.g. `x-stream-partition-key-level`).
    pub fn declare_stream(
        &self,
        name: &str,
        shards: u32,
        settings: StreamSettings,
        extra: FieldTable,
    ) -> Result<Arc<Stream>, StreamError> {
        if self.queue(name).is_some() {
            return Err(StreamError::StreamExists(name.to_string()));
        }
        let stream = self.streams().create(name, shards, settings, &[], self.streams().now())?;
        let mut args = extra;
        args.insert("x-queue-type".into(), FieldValue::text("stream"));
        args.insert("x-stream-shards".into(), FieldValue::I64(i64::from(shards)));
        let spec = QueueSpec { name: name.to_string(), durable: true, arguments: args, ..QueueSpec::default() };
        if let Err(e) = self.declare_queue(spec, &internal_ctx(self)) {
            tracing::error!(stream = name, error = %e.text, "cannot declare the AMQP queue of a stream");
        }
        Ok(stream)
    }

    /// Refuse an operation that would drain a stream queue's feed (`basic.get`, purge, SQS receive).
    pub(crate) fn refuse_stream(&self, name: &str, what: &str) -> CoreResult<()> {
        if self.streams().get(name).is_some() {
            return Err(CoreError::precondition(format!(
                "{what} is not supported by stream queues (queue '{name}' in vhost '{}')",
                self.name()
            )));
        }
        Ok(())
    }

    /// Delete a stream and its AMQP queue (Kinesis `DeleteStream`).
    pub fn delete_stream(&self, name: &str) -> Result<(), StreamError> {
        if self.streams().get(name).is_none() {
            return Err(StreamError::StreamNotFound(name.to_string()));
        }
        let _ = self.delete_queue(name, false, false, &internal_ctx(self));
        match self.streams().delete(name) {
            Ok(()) | Err(StreamError::StreamNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Consume from stream queue `name` from `x-stream-offset` in `arguments` (see the module
    /// docs). Returns the private queue to settle through and the consumer id.
    pub fn consume_stream(
        &self,
        name: &str,
        arguments: &FieldTable,
        spec: ConsumeSpec,
        sink: ConsumerSink,
        ctx: &ClientContext,
    ) -> CoreResult<(Arc<Queue>, ConsumerId)> {
        if spec.auto_ack {
            return Err(CoreError::precondition("noAck=true is not supported for stream queues"));
        }
        if spec.prefetch == 0 {
            return Err(CoreError::precondition("consumer prefetch count is not set for stream queue"));
        }
        let start = parse_offset(arguments.get("x-stream-offset"))?;
        self.consume_stream_from(name, Some(start), spec, sink, ctx)
    }

    /// A stream reader for `name` from `start` (`None`: only new records) delivering to `sink`
    /// under `spec` (other protocols' consumers; a prefetch of 0 becomes 100).
    pub(crate) fn consume_stream_from(
        &self,
        name: &str,
        start: Option<Start>,
        spec: ConsumeSpec,
        sink: ConsumerSink,
        ctx: &ClientContext,
    ) -> CoreResult<(Arc<Queue>, ConsumerId)> {
        ctx.user.check(self.name(), ResourceKind::Queue, name, Access::Read)?;
        let stream = self
            .streams()
            .get(name)
            .ok_or_else(|| CoreError::not_found(format!("no queue '{name}' in vhost '{}'", self.name())))?;
        let start = start.unwrap_or(Start::Position(StartPosition::Latest));
        let spec = ConsumeSpec { prefetch: if spec.prefetch == 0 { 100 } else { spec.prefetch }, ..spec };
        let q = Queue::new(
            format!("amq.stream-reader.{name}.{}", internal_id()),
            self.name().to_string(),
            false,
            Some(ctx.connection),
            false,
            FieldTable::new(),
            QueueConfig::default(),
            0,
        );
        let id = internal_id();
        let cs = ConsumerSpec {
            id,
            prefetch: spec.prefetch,
            auto_ack: spec.auto_ack,
            priority: spec.priority,
            shared_credit: spec.shared_credit,
            filter: spec.filter,
        };
        let fx = q.add_consumer(cs, false, sink);
        self.handle(&q, fx);
        let window = (spec.prefetch as u64).saturating_mul(2).clamp(64, 4096);
        tokio::spawn(read_into(stream, Arc::clone(&q), start, window));
        Ok((q, id))
    }
}

/// The hook the vhost calls for every queue it starts (declared or recovered): a stream
/// queue gets its stream (created if missing) and its feeder.
pub(crate) fn queue_started(vhost: &Weak<VHost>, q: &Arc<Queue>) {
    if !is_stream_queue(q) || q.exclusive_owner().is_some() {
        return;
    }
    let Some(v) = vhost.upgrade() else { return };
    let stream = match v.streams().get(q.name()) {
        Some(s) => s,
        None => {
            let created = settings_from(q.arguments())
                .map_err(|e| StreamError::Invalid(e.text))
                .and_then(|(shards, settings)| v.streams().create(q.name(), shards, settings, &[], v.streams().now()));
            match created {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(queue = q.name(), error = %e, "cannot create the stream of a stream queue");
                    return;
                }
            }
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let id = internal_id();
    let cs =
        ConsumerSpec { id, prefetch: FEED_PREFETCH, auto_ack: false, priority: 0, shared_credit: None, filter: None };
    let fx = q.add_consumer(cs, false, tx);
    v.handle(q, fx);
    tokio::spawn(feed(Arc::downgrade(&v), Arc::clone(q), id, stream, rx));
}

/// Encode what a record keeps of an AMQP message besides its body.
fn meta_of(m: &Message) -> Bytes {
    let head = Message::new(m.exchange.clone(), m.routing_key.clone(), m.properties.clone(), Bytes::new());
    let mut out = Vec::new();
    encode_message(&head, &mut out);
    Bytes::from(out)
}

/// The feeder of one stream queue: append what the queue delivers, then ack it.
async fn feed(
    vhost: Weak<VHost>,
    q: Arc<Queue>,
    id: ConsumerId,
    stream: Arc<Stream>,
    mut rx: mpsc::UnboundedReceiver<ConsumerEvent>,
) {
    // `x-stream-partition-key-level: n` takes the partition key from the n-th `.`-separated
    // level of the routing key (0-based; an MQTT topic a/b/c arrives as a.b.c).
    let level = q.arguments().get("x-stream-partition-key-level").and_then(FieldValue::as_i64);
    let key_of = |rk: &str| match level {
        Some(n) if n >= 0 => rk.split('.').nth(n as usize).unwrap_or(rk).to_string(),
        _ => rk.to_string(),
    };
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::new();
        let mut next = Some(first);
        let mut cancelled = false;
        while let Some(ev) = next {
            match ev {
                ConsumerEvent::Deliver { delivery, .. } => batch.push(delivery),
                ConsumerEvent::Cancelled { .. } => cancelled = true,
            }
            next = rx.try_recv().ok();
        }
        let Some(v) = vhost.upgrade() else { return };
        if !batch.is_empty() {
            let records = batch
                .iter()
                .map(|d| NewRecord {
                    partition_key: key_of(&d.message.routing_key),
                    explicit_hash_key: None,
                    data: d.message.body.clone(),
                    meta: meta_of(&d.message),
                })
                .collect();
            let now = stream.now();
            let results = stream.append(records, now).await;
            let n = batch.len() as u32;
            for (d, r) in batch.iter().zip(results) {
                let Some(lease) = d.lease else { continue };
                let outcome = match r {
                    Ok(_) => Outcome::Ack,
                    Err(StreamError::StreamNotFound(_)) => Outcome::Reject,
                    Err(e) => {
                        tracing::error!(stream = stream.name(), error = %e, "stream append failed; message kept in the queue");
                        Outcome::Requeue
                    }
                };
                v.settle(&q, lease, outcome);
            }
            v.written(&q, id, n);
            if stream.is_deleted() {
                cancelled = true;
            }
        }
        if cancelled {
            // The queue was deleted (queue.delete): the stream goes with it.
            if q.is_deleted() && v.streams().get(stream.name()).is_some_and(|s| Arc::ptr_eq(&s, &stream)) {
                let _ = v.streams().delete(stream.name());
            }
            return;
        }
    }
}

fn parse_offset(v: Option<&FieldValue>) -> CoreResult<Start> {
    let bad = || CoreError::precondition("invalid arg 'x-stream-offset'");
    Ok(match v {
        None => Start::Position(StartPosition::Latest),
        Some(FieldValue::Timestamp(secs)) => Start::Position(StartPosition::AtTimestamp(secs.saturating_mul(1000))),
        Some(v) => match (v.as_str(), v.as_i64()) {
            (Some("first"), _) => Start::First,
            (Some("last"), _) => Start::Last,
            (Some("next"), _) => Start::Position(StartPosition::Latest),
            (_, Some(n)) if n >= 0 => Start::Offset(n as u64),
            _ => return Err(bad()),
        },
    })
}

/// Where an AMQP stream consumer starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    First,
    Last,
    Offset(u64),
    Position(StartPosition),
}

/// The message an AMQP consumer receives for a record.
fn message_of(stream: &str, r: &StreamRecord) -> Message {
    let mut m = match decode_message(&r.meta) {
        Ok(m) if !r.meta.is_empty() => m,
        _ => Message::new(String::new(), r.partition_key.clone(), Properties::default(), Bytes::new()),
    };
    m.body = r.data.clone();
    let headers = m.properties.headers.get_or_insert_with(FieldTable::new);
    headers.insert("x-stream-offset".into(), FieldValue::I64(r.sequence.counter as i64));
    headers.insert("x-partition-key".into(), FieldValue::text(&r.partition_key));
    if m.properties.timestamp.is_none() {
        m.properties.timestamp = Some(r.arrival / 1000);
    }
    let _ = stream;
    m
}

/// The messages for a record: one, or one per user record of a KPL-aggregated record (each
/// with the record's offset, its own partition key as routing key, and `x-kpl-index`).
fn messages_of(stream: &str, r: &StreamRecord) -> Vec<Message> {
    match super::kpl::deaggregate(&r.data) {
        Some(users) if r.meta.is_empty() => users
            .into_iter()
            .enumerate()
            .map(|(i, u)| {
                let sub = StreamRecord { partition_key: u.partition_key, data: u.data, ..r.clone() };
                let mut m = message_of(stream, &sub);
                m.routing_key = sub.partition_key.as_str().into();
                if let Some(h) = m.properties.headers.as_mut() {
                    h.insert("x-kpl-index".into(), FieldValue::I64(i as i64));
                }
                m
            })
            .collect(),
        _ => vec![message_of(stream, r)],
    }
}

/// Fill `q` from `stream` starting at `start`, keeping at most `window` ready messages in it,
/// until its consumer goes (cancel, channel or connection closed) or the stream is deleted.
async fn read_into(stream: Arc<Stream>, q: Arc<Queue>, start: Start, window: u64) {
    let mut wake = stream.subscribe();
    // shard → next counter; shards are added as their parents end.
    let mut cursors: BTreeMap<u32, u64> = BTreeMap::new();
    let shards = stream.with_state(|st| st.shards());
    let present: Vec<u32> = shards.iter().map(|s| s.index).collect();
    for s in &shards {
        let root =
            s.parent.is_none_or(|p| !present.contains(&p)) && s.adjacent_parent.is_none_or(|p| !present.contains(&p));
        let from = match start {
            Start::First if root => Some(s.starting_counter),
            Start::First => None,
            _ if !s.is_open() => None,
            Start::Offset(n) => Some(n),
            Start::Last => Some(stream.with_state(|st| st.next_counter()).saturating_sub(1)),
            Start::Position(p) => stream.start(s.index, p).ok(),
        };
        if let Some(from) = from {
            cursors.insert(s.index, from);
        }
    }
    if let Start::Last = start {
        // RabbitMQ's `last`: from the newest record (per shard here).
        for (shard, next) in cursors.iter_mut() {
            if let Some(last) = stream.with_state(|st| st.last_visible(*shard)) {
                *next = last;
            }
        }
    }
    let mut done: Vec<u32> = Vec::new();
    loop {
        if q.is_deleted() || q.counts().consumers == 0 || stream.is_deleted() {
            break;
        }
        let ready = q.counts().ready;
        if ready >= window {
            // Full: the consumer still has a prefetch worth buffered, so a coarse poll is enough.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let room = (window - ready) as usize;
        let mut got = 0usize;
        let shard_ids: Vec<u32> = cursors.keys().copied().collect();
        for shard in shard_ids {
            let Some(&from) = cursors.get(&shard) else { continue };
            let Ok(batch) = stream.read(shard, from, room.max(1), 4 << 20, stream.now()) else {
                cursors.remove(&shard);
                continue;
            };
            for r in &batch.records {
                for m in messages_of(stream.name(), r) {
                    let (_, fx) = q.publish(Arc::new(m), PublishOptions::default(), None);
                    drop(fx);
                }
            }
            got += batch.records.len();
            cursors.insert(shard, batch.next);
            if batch.end_of_shard {
                cursors.remove(&shard);
                done.push(shard);
                for c in batch.children {
                    if !done.contains(&c.index) {
                        cursors.entry(c.index).or_insert(c.starting_counter);
                    }
                }
            }
        }
        if got == 0 {
            tokio::select! {
                r = wake.changed() => if r.is_err() { break },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
    q.mark_deleted();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_parses_rabbitmq_units() {
        assert_eq!(parse_age("7D"), Some(7 * 24 * HOUR_MS));
        assert_eq!(parse_age("12h"), Some(12 * HOUR_MS));
        assert_eq!(parse_age("90m"), Some(90 * 60_000));
        assert_eq!(parse_age("1Y"), Some(365 * 24 * HOUR_MS));
        assert_eq!(parse_age("5x"), None);
        assert_eq!(parse_age("h"), None);
    }

    #[test]
    fn stream_queue_arguments() {
        let mut args = FieldTable::new();
        args.insert("x-stream-shards".into(), FieldValue::I64(3));
        args.insert("x-max-age".into(), FieldValue::text("3D"));
        let (shards, s) = settings_from(&args).expect("valid");
        assert_eq!((shards, s.retention_hours), (3, 72));
        args.insert("x-max-age".into(), FieldValue::text("1h"));
        assert_eq!(settings_from(&args).expect("valid").1.retention_hours, 24);
        args.insert("x-stream-shards".into(), FieldValue::I64(0));
        assert!(settings_from(&args).is_err());
    }

    #[test]
    fn offsets() {
        assert!(matches!(parse_offset(Some(&FieldValue::text("first"))), Ok(Start::First)));
        assert!(matches!(parse_offset(Some(&FieldValue::text("last"))), Ok(Start::Last)));
        assert!(matches!(parse_offset(Some(&FieldValue::text("next"))), Ok(Start::Position(StartPosition::Latest))));
        assert!(matches!(parse_offset(Some(&FieldValue::I64(42))), Ok(Start::Offset(42))));
        assert!(matches!(
            parse_offset(Some(&FieldValue::Timestamp(5))),
            Ok(Start::Position(StartPosition::AtTimestamp(5000)))
        ));
        assert!(parse_offset(Some(&FieldValue::text("bogus"))).is_err());
        assert!(parse_offset(Some(&FieldValue::I64(-1))).is_err());
    }

    #[test]
    fn kpl_aggregated_records_are_split_for_amqp() {
        let agg = super::super::kpl::tests::aggregate(&["k1", "k2"], &[(0, b"x"), (1, b"y")]);
        let r = StreamRecord {
            sequence: super::super::SequenceNumber { counter: 3, shard: 0 },
            arrival: 0,
            partition_key: "outer".into(),
            hash_key: 0,
            data: Bytes::from(agg),
            meta: Bytes::new(),
        };
        let ms = messages_of("s", &r);
        let flat: Vec<(&str, &[u8])> = ms.iter().map(|m| (m.routing_key.as_str(), &m.body[..])).collect();
        assert_eq!(flat, [("k1", &b"x"[..]), ("k2", b"y")]);
        assert_eq!(ms[1].properties.header("x-kpl-index"), Some(&FieldValue::I64(1)));
        assert_eq!(ms[1].properties.header("x-stream-offset"), Some(&FieldValue::I64(3)));
    }

    #[test]
    fn records_become_messages_with_their_amqp_properties() {
        let props = Properties { content_type: Some("text/plain".into()), ..Properties::default() };
        let m = Message::new("ex".to_string(), "rk".to_string(), props, Bytes::from("body"));
        let r = StreamRecord {
            sequence: super::super::SequenceNumber { counter: 7, shard: 0 },
            arrival: 5_000,
            partition_key: "rk".into(),
            hash_key: 0,
            data: Bytes::from("body"),
            meta: meta_of(&m),
        };
        let back = message_of("s", &r);
        assert_eq!((back.exchange.as_str(), back.routing_key.as_str()), ("ex", "rk"));
        assert_eq!(back.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(back.body, Bytes::from("body"));
        assert_eq!(back.properties.header("x-stream-offset"), Some(&FieldValue::I64(7)));
        let kinesis = StreamRecord { meta: Bytes::new(), ..r };
        let back = message_of("s", &kinesis);
        assert_eq!((back.exchange.as_str(), back.routing_key.as_str()), ("", "rk"));
        assert_eq!(back.properties.timestamp, Some(5));
    }
}
