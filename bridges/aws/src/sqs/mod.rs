//! Amazon SQS on the core's queues: the actions, in the AWS JSON 1.0 protocol's shapes (the query
//! protocol converts to and from them, see [`crate::query`]).
//!
//! An SQS queue *is* a core queue of the same name in the configured vhost: durable, its
//! messages persistent, so AMQP `orders` and STOMP `/amq/queue/orders` are the same queue as
//! `http://host:4566/000000000000/orders` (STOMP `/queue/` would redeclare it without the SQS
//! arguments and be refused, as RabbitMQ does; see docs/sqs.md). SQS attributes become queue
//! arguments so they survive restarts and shape AMQP consumers too:
//!
//! | SQS attribute | queue argument |
//! |---|---|
//! | `VisibilityTimeout` | `x-lease-timeout` (ms; omitted for 0) |
//! | `DelaySeconds` | `x-delivery-delay` (ms) |
//! | `MessageRetentionPeriod` | `x-message-ttl` (ms) |
//! | `RedrivePolicy` | `x-dead-letter-exchange` = `""`, `x-dead-letter-routing-key` = DLQ name, `x-delivery-limit` = `maxReceiveCount` − 1 |
//! | `RedrivePolicy` (also) | `x-drop-expired` = true: retention drops, it does not redrive |
//! | `FifoQueue` | `x-fifo` |
//! | all of them, as given | `x-sqs-attributes` (JSON text), plus `x-sqs-created` (epoch s) |
//!
//! A receipt handle is the base64 of `queue name, lease id, receive time`: the lease is the
//! core's, so a visibility timeout is a lease deadline and `ChangeMessageVisibility` moves it.
//! Long polls wait on the queue's "messages available" notification, so they wake on a send,
//! a delay passing, a lease expiring or a visibility change to 0.

pub mod admin;
pub mod attempts;
pub mod limits;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use switchyard::auth::User;
use switchyard::queue::Queue;
use switchyard::queue::state::{Delivery, PublishOptions};
use switchyard::time::{Millis, now_ms};
use switchyard::vhost::{Outcome, QueueSpec};
use switchyard::{
    BrokerHandle, ClientContext, CoreError, ErrorKind, FieldTable, FieldValue, Message, Properties, VHost,
};

use crate::config::AwsConfig;
use crate::error::{AwsError, json_error};
use crate::md5::{AttrValue, attributes_md5, md5_hex, push_hex};
use attempts::Attempts;
use limits::Limits;
use wire::{BatchInput, BatchOut, BodyText, Input, JsonOut, ReceiveOut, ReceivedMsg, Sent};

/// The `X-Amz-Target` prefix of SQS actions.
pub const TARGET_PREFIX: &str = "AmazonSQS";
/// The namespace in `__type` of SQS errors.
pub const NAMESPACE: &str = "com.amazonaws.sqs";

/// Queue attributes that may be set, with their defaults (empty: absent unless set).
const SETTABLE: &[(&str, &str)] = &[
    ("VisibilityTimeout", "30"),
    ("DelaySeconds", "0"),
    ("MessageRetentionPeriod", "345600"),
    ("MaximumMessageSize", "1048576"),
    ("ReceiveMessageWaitTimeSeconds", "0"),
    ("RedrivePolicy", ""),
    ("RedriveAllowPolicy", ""),
    ("Policy", ""),
    ("FifoQueue", "false"),
    ("ContentBasedDeduplication", "false"),
    ("DeduplicationScope", "queue"),
    ("FifoThroughputLimit", "perQueue"),
    ("SqsManagedSseEnabled", "true"),
    ("KmsMasterKeyId", ""),
    ("KmsDataKeyReusePeriodSeconds", ""),
];

/// Attributes only FIFO queues have.
const FIFO_ONLY: &[&str] = &["FifoQueue", "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit"];

/// The arguments key holding the SQS attributes as given (declared at creation; the
/// queue's policy holds later changes).
const ATTRS_ARG: &str = "x-sqs-attributes";
/// The arguments key holding the creation time (epoch seconds).
const CREATED_ARG: &str = "x-sqs-created";
/// The policy key holding the time of the last attribute change (epoch seconds).
const MODIFIED_ARG: &str = "x-sqs-modified";
/// The arguments/policy key holding the queue's tags (JSON object text).
const TAGS_ARG: &str = "x-sqs-tags";
/// Header carrying the FIFO sequence number of a message sent through SQS.
const SEQ_HEADER: &str = "x-sqs-sequence-number";
/// Header carrying the FIFO deduplication id.
const DEDUP_HEADER: &str = "x-sqs-deduplication-id";
/// Header carrying the `AWSTraceHeader` message system attribute.
const TRACE_HEADER: &str = "x-sqs-trace-header";
/// Header carrying `MD5OfMessageBody`, computed once at send so a receive need not hash the
/// body again: `<md5 hex>:<crc32c hex>`. The CRC32C (hardware-assisted, ~20× cheaper than
/// MD5) binds the cached MD5 to the body it was computed from: an app that relays the message
/// with a changed body but the same headers gets a fresh MD5, not a stale one the SDK would
/// reject. A message without it (sent by another protocol) is hashed at receive.
const BODY_MD5_HEADER: &str = "x-sqs-body-md5";

/// The [`BODY_MD5_HEADER`] value for `body` whose MD5 is `md5`.
fn body_md5_header(md5: &str, body: &[u8]) -> String {
    let mut out = String::with_capacity(md5.len() + 9);
    out.push_str(md5);
    out.push(':');
    push_hex(&mut out, &crc32c::crc32c(body).to_be_bytes());
    out
}

/// The MD5 a [`BODY_MD5_HEADER`] value holds, if it was computed over `body`.
fn cached_body_md5<'a>(header: &'a str, body: &[u8]) -> Option<&'a str> {
    let (md5, crc) = header.split_once(':')?;
    let crc = u32::from_str_radix(crc, 16).ok()?;
    (md5.len() == 32 && crc == crc32c::crc32c(body)).then_some(md5)
}
/// System attribute names `ReceiveMessage` knows.
const SYSTEM_ATTRIBUTES: &[&str] = &[
    "All",
    "SenderId",
    "SentTimestamp",
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageDeduplicationId",
    "MessageGroupId",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
];
/// Header prefix recording an attribute's SQS data type when it is not plain `String`/`Binary`.
const TYPE_HEADER_PREFIX: &str = "x-sqs-type.";

/// Which core arguments each SQS attribute governs (see the module table).
const GOVERNED: &[(&str, &[&str])] = &[
    ("VisibilityTimeout", &["x-lease-timeout"]),
    ("DelaySeconds", &["x-delivery-delay"]),
    ("MessageRetentionPeriod", &["x-message-ttl"]),
    ("RedrivePolicy", &["x-dead-letter-exchange", "x-dead-letter-routing-key", "x-delivery-limit", "x-drop-expired"]),
];

/// Per-queue front-end state kept in memory: FIFO deduplication answers (the original
/// message id for a duplicate) and `ReceiveRequestAttemptId` batches.
#[derive(Debug, Default)]
struct Overlay {
    dedup: HashMap<String, (String, String, Millis)>,
    attempts: Attempts,
}

/// The SQS service: the vhost it serves and the front-end state.
#[derive(Debug)]
pub struct Sqs {
    broker: BrokerHandle,
    vhost: Arc<VHost>,
    ctx: ClientContext,
    cfg: AwsConfig,
    limits: &'static Limits,
    overlays: Mutex<HashMap<String, Overlay>>,
    /// Parsed attributes per queue instance (dropped when SQS changes them).
    attrs_cache: Mutex<AttrsCache>,
    tasks: Arc<Mutex<admin::MoveTasks>>,
    sequence: AtomicU64,
    /// When each queue was last purged (`PurgeQueueInProgress` within the purge interval).
    purges: Mutex<HashMap<String, Millis>>,
    /// Random per process: lease ids restart after a restart, so a receipt handle from an
    /// earlier run must not settle a lease of this one.
    boot: u64,
}

type Res<T> = Result<T, AwsError>;

/// Queue name → (the queue instance, its parsed SQS attributes). The `Weak` pins the
/// instance's allocation, so a later queue of the same name can't share its address.
type AttrsCache = HashMap<String, (std::sync::Weak<Queue>, Arc<BTreeMap<String, String>>)>;

fn core_err(e: CoreError) -> AwsError {
    match e.kind {
        ErrorKind::NotFound => AwsError::QueueDoesNotExist,
        ErrorKind::PreconditionFailed => AwsError::QueueAlreadyExists(e.text),
        _ => AwsError::Internal(e.text),
    }
}

impl Sqs {
    /// SQS on the vhost named in `cfg`. Requests act as an internal superuser of that vhost
    /// (signatures, when checked, are checked before a request gets here).
    pub fn new(broker: BrokerHandle, cfg: AwsConfig) -> Result<Sqs, CoreError> {
        let user = User::superuser("aws", &[cfg.vhost.as_str()]);
        let vhost = broker.open_vhost(&cfg.vhost, &user)?;
        let ctx = ClientContext { connection: broker.next_connection_id(), user };
        // Sequence numbers keep growing across restarts: start from the clock.
        let sequence = AtomicU64::new(now_ms().saturating_mul(1000));
        let boot = rand::random();
        let limits = Limits::of(cfg.limits);
        Ok(Sqs {
            broker,
            vhost,
            ctx,
            cfg,
            limits,
            overlays: Mutex::new(HashMap::new()),
            attrs_cache: Mutex::new(HashMap::new()),
            tasks: Arc::new(Mutex::new(admin::MoveTasks::default())),
            sequence,
            purges: Mutex::new(HashMap::new()),
            boot,
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        self.limits
    }

    /// Runs the JSON-protocol `action` on `body`; `host` builds queue URLs.
    pub async fn handle_json(&self, action: &str, body: &[u8], host: &str) -> Response {
        if let Some(resp) = self.handle_typed(action, body).await {
            return resp;
        }
        let input: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return json_error(NAMESPACE, &AwsError::SerializationException("Expected a JSON object".into()));
                }
                Err(e) => return json_error(NAMESPACE, &AwsError::SerializationException(e.to_string())),
            }
        };
        let result = self.call(action, &input, host).await;
        match result {
            Ok(v) => ok(v),
            Err(e) => json_error(NAMESPACE, &e),
        }
    }

    /// The hot actions on a typed request, answered without a `Value` tree; `None` when the
    /// action is another one or the body does not parse as its typed shape (then the `Value`
    /// reading runs and reports the error as it always did).
    async fn handle_typed(&self, action: &str, body: &[u8]) -> Option<Response> {
        let mut out = JsonOut::with_capacity(256);
        let result = match action {
            "SendMessageBatch" => {
                let input: wire::SendBatchIn = wire::parse(body)?;
                self.send_message_batch(&input).await.map(|r| r.write(&mut out))
            }
            "SendMessage" => {
                let input: wire::SendMessageIn = wire::parse(body)?;
                self.send_message(&input).await.map(|r| r.write(&mut out, None))
            }
            "ReceiveMessage" => {
                let input: wire::ReceiveIn = wire::parse(body)?;
                self.receive_message(&input).await.map(|r| {
                    if let ReceiveOut::Messages(m) = &r {
                        out.buf.reserve(m.iter().map(|m| m.body.len() + 512).sum());
                    }
                    r.write(&mut out)
                })
            }
            "DeleteMessageBatch" => {
                let input: wire::DeleteBatchIn = wire::parse(body)?;
                self.delete_message_batch(&input).map(|r| r.write(&mut out))
            }
            "DeleteMessage" => {
                let input: wire::DeleteIn = wire::parse(body)?;
                self.delete_message(&input).map(|()| out.raw("{}"))
            }
            _ => return None,
        };
        Some(match result {
            Ok(()) => ok_bytes(out.buf),
            Err(e) => json_error(NAMESPACE, &e),
        })
    }

    /// Runs `action` on an input in the JSON protocol's shape; the query protocol converts
    /// its form to the same shape first.
    pub async fn call(&self, action: &str, input: &Value, host: &str) -> Result<Value, AwsError> {
        match action {
            "CreateQueue" => self.create_queue(input, host),
            "GetQueueUrl" => self.get_queue_url(input, host),
            "ListQueues" => self.list_queues(input, host),
            "GetQueueAttributes" => self.get_queue_attributes(input),
            "SetQueueAttributes" => self.set_queue_attributes(input),
            "DeleteQueue" => self.delete_queue(input),
            "PurgeQueue" => self.purge_queue(input),
            "SendMessage" => self.send_message(input).await.map(|s| s.to_value(None)),
            "SendMessageBatch" => self.send_message_batch(input).await.map(|b| b.to_value()),
            "ReceiveMessage" => self.receive_message(input).await.map(|r| r.to_value()),
            "DeleteMessage" => self.delete_message(input).map(|()| json!({})),
            "DeleteMessageBatch" => self.delete_message_batch(input).map(|b| b.to_value()),
            "ChangeMessageVisibility" => self.change_visibility(input),
            "ChangeMessageVisibilityBatch" => self.change_visibility_batch(input),
            "ListDeadLetterSourceQueues" => self.list_dead_letter_source_queues(input, host),
            "TagQueue" => self.tag_queue(input),
            "UntagQueue" => self.untag_queue(input),
            "ListQueueTags" => self.list_queue_tags(input),
            "AddPermission" => self.add_permission(input),
            "RemovePermission" => self.remove_permission(input),
            "StartMessageMoveTask" => self.start_message_move_task(input),
            "ListMessageMoveTasks" => self.list_message_move_tasks(input),
            "CancelMessageMoveTask" => self.cancel_message_move_task(input),
            "SwitchyardReset" if self.cfg.test_hooks => self.reset(),
            "SwitchyardAdvanceClock" if self.cfg.test_hooks => self.advance_clock(input),
            other => Err(AwsError::UnknownOperation(format!("Unknown operation AmazonSQS.{other}"))),
        }
    }

    // ----- queues -----

    fn queue_url(&self, host: &str, name: &str) -> String {
        format!("http://{host}/{}/{name}", self.cfg.account_id)
    }

    fn queue_arn(&self, name: &str) -> String {
        format!("arn:aws:sqs:{}:{}:{name}", self.cfg.region, self.cfg.account_id)
    }

    /// The live queue called `name`.
    fn live_queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.vhost.queue(name).filter(|q| !q.is_deleted())
    }

    /// The queue a `QueueUrl` names (the last path segment).
    fn queue_from_url<I: Input + ?Sized>(&self, input: &I) -> Res<(String, Arc<Queue>)> {
        let url = req_str(input, "QueueUrl")?;
        let name = url.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string();
        let q = self.live_queue(&name).ok_or(AwsError::QueueDoesNotExist)?;
        Ok((name, q))
    }

    fn create_queue(&self, input: &Value, host: &str) -> Res<Value> {
        let name = req_str(input, "QueueName")?.to_string();
        check_queue_name(&name)?;
        let given = string_map(input.get("Attributes"), "Attributes")?;
        let tags = string_map(input.get("tags"), "tags")?;
        admin::check_tags(&tags, self.limits)?;
        let attrs = normalize_attributes(&name, &given, true, self.limits)?;
        if let Some(existing) = self.live_queue(&name) {
            let current = self.effective_attributes(&name, &existing);
            for (k, v) in &attrs {
                if current.get(k) != Some(v) {
                    return Err(AwsError::QueueAlreadyExists(k.clone()));
                }
            }
            return Ok(json!({ "QueueUrl": self.queue_url(host, &name) }));
        }
        self.check_redrive_target(&name, &attrs)?;
        if name.ends_with(".fifo") {
            check_fifo_throughput(&attrs)?;
        }
        let mut arguments = queue_arguments(&attrs, true, self.limits)?;
        if !tags.is_empty() {
            arguments.insert(TAGS_ARG.into(), FieldValue::text(json!(tags).to_string()));
        }
        let spec = QueueSpec { name: name.clone(), durable: true, arguments, ..QueueSpec::default() };
        self.vhost.declare_queue(spec, &self.ctx).map_err(core_err)?;
        self.forget(&name);
        Ok(json!({ "QueueUrl": self.queue_url(host, &name) }))
    }

    /// The `SwitchyardReset` test hook (`[aws] test_hooks = true`): deletes every queue SQS
    /// can see (with its messages), cancels move tasks and forgets all front-end state.
    fn reset(&self) -> Res<Value> {
        self.tasks.lock().cancel_all();
        let mut deleted = 0;
        for (name, _) in self.sqs_queue_names() {
            if self.vhost.delete_queue(&name, false, false, &self.ctx).is_ok() {
                deleted += 1;
            }
        }
        self.overlays.lock().clear();
        self.attrs_cache.lock().clear();
        self.purges.lock().clear();
        tracing::info!(queues = deleted, "SQS state reset by the test hook");
        Ok(json!({ "QueuesDeleted": deleted }))
    }

    /// The `SwitchyardAdvanceClock` test hook (`[aws] test_hooks = true`): moves the broker's
    /// clock forward by `Millis` (a number, or a numeric string from the query protocol), so
    /// visibility timeouts, delays, retention and the deduplication window pass at once.
    fn advance_clock(&self, input: &Value) -> Res<Value> {
        let bad = || AwsError::InvalidParameterValue("Millis must be a non-negative integer".into());
        let ms = match input.get("Millis") {
            Some(Value::Number(n)) => n.as_u64().ok_or_else(bad)?,
            Some(Value::String(s)) => s.parse::<u64>().map_err(|_| bad())?,
            _ => return Err(AwsError::MissingParameter("Millis".into())),
        };
        let now = self.vhost.advance_clock(ms);
        tracing::info!(ms, now, "clock advanced by the test hook");
        Ok(json!({ "Now": now }))
    }

    /// Drops the front-end state of a queue that was created, changed or deleted.
    fn forget(&self, name: &str) {
        self.overlays.lock().remove(name);
        self.attrs_cache.lock().remove(name);
    }

    /// Checks that a `RedrivePolicy` among `attrs` of queue `name` names an existing DLQ of
    /// the same type whose `RedriveAllowPolicy` lets `name` use it.
    fn check_redrive_target(&self, name: &str, attrs: &BTreeMap<String, String>) -> Res<()> {
        let Some(policy) = attrs.get("RedrivePolicy").filter(|p| !p.is_empty()) else { return Ok(()) };
        let (dlq, _) = parse_redrive(policy, self.limits)?;
        let bad = |why: &str| {
            AwsError::InvalidParameterValue(format!(
                "Value {policy} for parameter RedrivePolicy is invalid. Reason: {why}"
            ))
        };
        let Some(target) = self.live_queue(&dlq) else {
            return Err(bad("Dead letter target does not exist."));
        };
        if dlq.ends_with(".fifo") != name.ends_with(".fifo") {
            return Err(bad("Dead-letter queue must be the same type of queue as the source."));
        }
        let allow = self.effective_attributes(&dlq, &target).get("RedriveAllowPolicy").cloned().unwrap_or_default();
        if !admin::redrive_allowed(&allow, &self.queue_arn(name)) {
            return Err(bad(&format!(
                "Queue {} does not allow this queue to use it as a dead-letter queue (RedriveAllowPolicy).",
                self.queue_arn(&dlq)
            )));
        }
        Ok(())
    }

    fn get_queue_url(&self, input: &Value, host: &str) -> Res<Value> {
        let name = req_str(input, "QueueName")?;
        self.live_queue(name).ok_or(AwsError::QueueDoesNotExist)?;
        Ok(json!({ "QueueUrl": self.queue_url(host, name) }))
    }

    /// Names of the queues SQS shows (valid SQS names, not exclusive), sorted.
    fn sqs_queue_names(&self) -> Vec<(String, Arc<Queue>)> {
        let mut v: Vec<(String, Arc<Queue>)> = self
            .vhost
            .queues()
            .into_iter()
            .filter(|q| !q.is_deleted() && q.exclusive_owner().is_none() && check_queue_name(q.name()).is_ok())
            .map(|q| (q.name().to_string(), q))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn list_queues(&self, input: &Value, host: &str) -> Res<Value> {
        let prefix = opt_str(input, "QueueNamePrefix")?.unwrap_or("");
        let names: Vec<String> =
            self.sqs_queue_names().into_iter().map(|(n, _)| n).filter(|n| n.starts_with(prefix)).collect();
        let (page, next) = paginate(names, input)?;
        let mut out = json!({});
        if let Some(t) = next {
            out["NextToken"] = json!(t);
        }
        if !page.is_empty() {
            out["QueueUrls"] = json!(page.iter().map(|n| self.queue_url(host, n)).collect::<Vec<_>>());
        }
        Ok(out)
    }

    /// The attributes given explicitly through SQS (at creation or later), as stored.
    fn explicit_attributes(q: &Queue) -> BTreeMap<String, String> {
        let args = q.effective_arguments();
        let mut out = BTreeMap::new();
        if let Some(stored) = args.get(ATTRS_ARG).and_then(FieldValue::as_str)
            && let Ok(Value::Object(m)) = serde_json::from_str::<Value>(stored)
        {
            for (k, v) in m {
                if let Some(s) = v.as_str() {
                    out.insert(k, s.to_string());
                }
            }
        }
        out
    }

    /// The queue's SQS attributes: defaults, then what its core configuration means in SQS
    /// terms (a queue declared by AMQP or STOMP), then what SQS was given.
    fn effective_attributes(&self, name: &str, q: &Arc<Queue>) -> Arc<BTreeMap<String, String>> {
        if let Some((k, a)) = self.attrs_cache.lock().get(name)
            && std::ptr::eq(k.as_ptr(), Arc::as_ptr(q))
        {
            return Arc::clone(a);
        }
        let mut attrs: BTreeMap<String, String> =
            SETTABLE.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if !name.ends_with(".fifo") {
            for k in FIFO_ONLY {
                attrs.remove(*k);
            }
        }
        attrs.insert("MaximumMessageSize".into(), self.limits.max_message_size.to_string());
        let cfg = q.config();
        if let Some(t) = cfg.lease_timeout {
            attrs.insert("VisibilityTimeout".into(), (t / 1000).to_string());
        }
        if let Some(d) = cfg.delivery_delay {
            attrs.insert("DelaySeconds".into(), (d / 1000).to_string());
        }
        if let Some(t) = cfg.message_ttl {
            attrs.insert("MessageRetentionPeriod".into(), (t / 1000).to_string());
        }
        attrs.extend(Self::explicit_attributes(q));
        attrs.retain(|_, v| !v.is_empty());
        let attrs = Arc::new(attrs);
        self.attrs_cache.lock().insert(name.to_string(), (Arc::downgrade(q), Arc::clone(&attrs)));
        attrs
    }

    fn attr_i64(&self, name: &str, q: &Arc<Queue>, key: &str) -> i64 {
        self.effective_attributes(name, q).get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    fn get_queue_attributes(&self, input: &Value) -> Res<Value> {
        let (name, q) = self.queue_from_url(input)?;
        let wanted = opt_str_list(input, "AttributeNames")?;
        let mut all = (*self.effective_attributes(&name, &q)).clone();
        let counts = q.counts();
        all.insert("ApproximateNumberOfMessages".into(), counts.ready.to_string());
        all.insert("ApproximateNumberOfMessagesNotVisible".into(), counts.unacked.to_string());
        all.insert("ApproximateNumberOfMessagesDelayed".into(), counts.delayed.to_string());
        let args = q.effective_arguments();
        let created = args.get(CREATED_ARG).and_then(FieldValue::as_i64).unwrap_or(0);
        all.insert("CreatedTimestamp".into(), created.to_string());
        let modified = args.get(MODIFIED_ARG).and_then(FieldValue::as_i64).unwrap_or(created);
        all.insert("LastModifiedTimestamp".into(), modified.to_string());
        all.insert("QueueArn".into(), self.queue_arn(&name));
        let mut out = Map::new();
        for w in wanted.unwrap_or_default() {
            if w == "All" {
                out.extend(all.iter().map(|(k, v)| (k.clone(), json!(v))));
            } else if let Some(v) = all.get(&w) {
                out.insert(w, json!(v));
            } else if !is_known_attribute(&w) {
                return Err(AwsError::InvalidAttributeName(w));
            }
        }
        if out.is_empty() {
            return Ok(json!({}));
        }
        Ok(json!({ "Attributes": out }))
    }

    fn set_queue_attributes(&self, input: &Value) -> Res<Value> {
        let (name, q) = self.queue_from_url(input)?;
        let given = string_map(input.get("Attributes"), "Attributes")?;
        if given.is_empty() {
            return Err(AwsError::MissingParameter("Attributes".into()));
        }
        let attrs = normalize_attributes(&name, &given, false, self.limits)?;
        self.check_redrive_target(&name, &attrs)?;
        let mut explicit = Self::explicit_attributes(&q);
        explicit.extend(attrs);
        if name.ends_with(".fifo") {
            check_fifo_throughput(&explicit)?;
        }
        self.store(&name, &q, &explicit, None)
    }

    /// Persists the explicit SQS attributes (and, if given, the tags) of queue `name`: the
    /// core arguments they govern and the attributes themselves go into the queue's policy,
    /// which the core keeps in the definitions. Other protocols see the change at once.
    fn store(
        &self,
        name: &str,
        q: &Arc<Queue>,
        explicit: &BTreeMap<String, String>,
        tags: Option<&BTreeMap<String, String>>,
    ) -> Res<Value> {
        let mut policy = q.policy();
        let computed = queue_arguments(explicit, false, self.limits)?;
        for (attr, keys) in GOVERNED {
            if !explicit.contains_key(*attr) {
                continue;
            }
            for k in *keys {
                match computed.get(*k) {
                    Some(v) => policy.insert(k.to_string(), v.clone()),
                    None => policy.insert(k.to_string(), FieldValue::Void),
                };
            }
        }
        if let Some(a) = computed.get(ATTRS_ARG) {
            policy.insert(ATTRS_ARG.into(), a.clone());
        }
        if let Some(tags) = tags {
            policy.insert(TAGS_ARG.into(), FieldValue::text(json!(tags).to_string()));
        } else {
            policy.insert(MODIFIED_ARG.into(), FieldValue::I64((now_ms() / 1000) as i64));
        }
        let result = self.vhost.set_queue_policy(name, policy, &self.ctx);
        self.attrs_cache.lock().remove(name);
        result.map_err(|e| AwsError::InvalidParameterValue(e.text))?;
        Ok(json!({}))
    }

    fn delete_queue(&self, input: &Value) -> Res<Value> {
        let (name, _) = self.queue_from_url(input)?;
        self.vhost.delete_queue(&name, false, false, &self.ctx).map_err(core_err)?;
        self.forget(&name);
        Ok(json!({}))
    }

    /// `PurgeQueue`: deletes the ready *and* the in-flight messages (their receipt handles
    /// then settle nothing). A second purge of the queue within the limits' purge interval
    /// (60 s strict, none relaxed) is `PurgeQueueInProgress`, as on AWS.
    fn purge_queue(&self, input: &Value) -> Res<Value> {
        let (name, q) = self.queue_from_url(input)?;
        let now = now_ms();
        {
            let mut purges = self.purges.lock();
            purges.retain(|_, at| now < at.saturating_add(self.limits.purge_interval_ms));
            if purges.contains_key(&name) {
                return Err(AwsError::PurgeQueueInProgress(format!(
                    "Only one PurgeQueue operation on {name} is allowed every 60 seconds."
                )));
            }
            if self.limits.purge_interval_ms > 0 {
                purges.insert(name.clone(), now);
            }
        }
        self.vhost.purge_queue(&name, &self.ctx).map_err(core_err)?;
        let (in_flight, fx) = q.purge_in_flight();
        self.vhost.handle(&q, fx);
        tracing::debug!(queue = %name, in_flight, "purged");
        Ok(json!({}))
    }

    // ----- messages -----

    async fn send_message<I: Input>(&self, input: &I) -> Res<Sent> {
        let (name, q) = self.queue_from_url(input)?;
        let attrs = self.effective_attributes(&name, &q);
        let max_size =
            attrs.get("MaximumMessageSize").and_then(|v| v.parse().ok()).unwrap_or(self.limits.max_message_size);
        let prepared = self.prepare(&name, &attrs, input, max_size as usize)?;
        let (out, lsn) = self.publish(&name, prepared)?;
        self.synced(lsn).await?;
        Ok(out)
    }

    async fn send_message_batch<B: BatchInput>(&self, input: &B) -> Res<BatchOut<Sent>> {
        let (name, q) = self.queue_from_url(input)?;
        let entries = batch_entries(input, "SendMessageBatchRequestEntry", self.limits)?;
        let attrs = self.effective_attributes(&name, &q);
        let max_size =
            attrs.get("MaximumMessageSize").and_then(|v| v.parse().ok()).unwrap_or(self.limits.max_message_size);
        let total: usize = entries.iter().map(|e| entry_str(e, "MessageBody").map_or(0, str::len)).sum();
        if total > self.limits.max_message_size as usize {
            return Err(AwsError::BatchRequestTooLong(self.limits.max_message_size as usize));
        }
        let mut out = BatchOut { ok: Vec::with_capacity(entries.len()), failed: Vec::new() };
        let mut last_lsn = None;
        {
            // One long poll wakes for the whole batch (and takes it), not one per message.
            let _hold = q.hold_wakeups();
            // The batch's records reach the log writer in one message; the one wait below
            // covers them all.
            let _log = self.broker.message_log().batch();
            for e in entries {
                let id = entry_str(e, "Id").unwrap_or_default().to_string();
                match self.prepare(&name, &attrs, e, max_size as usize).and_then(|p| self.publish(&name, p)) {
                    Ok((sent, lsn)) => {
                        last_lsn = last_lsn.max(lsn);
                        out.ok.push((id, sent));
                    }
                    Err(err) => out.failed.push(batch_error(&id, &err)),
                }
            }
        }
        self.synced(last_lsn).await?;
        Ok(out)
    }

    /// Waits until a persistent message is on disk: a 200 means it survives a crash.
    async fn synced(&self, lsn: Option<switchyard::store::Lsn>) -> Res<()> {
        if let Some(lsn) = lsn {
            self.broker.message_log().wait_synced(lsn).await.map_err(|e| AwsError::Internal(e.to_string()))?;
        }
        Ok(())
    }

    /// Validates one SendMessage input and builds the core message.
    fn prepare<I: Input>(
        &self,
        queue: &str,
        attrs: &BTreeMap<String, String>,
        input: &I,
        max_size: usize,
    ) -> Res<Prepared> {
        let fifo = queue.ends_with(".fifo");
        let body = req_str(input, "MessageBody")?;
        if body.is_empty() {
            return Err(AwsError::MissingParameter("MessageBody".into()));
        }
        // Fast path: ASCII from space up (checked a word at a time), tab, LF and CR are always allowed.
        let plain = wire::is_plain_ascii(body.as_bytes())
            || body.bytes().all(|b| (0x20..0x7f).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r'));
        if !plain && let Some(c) = body.chars().find(|c| !valid_body_char(*c)) {
            return Err(AwsError::InvalidMessageContents(format!(
                "Invalid binary character '#x{:X}' was found in the message body, the set of allowed characters is #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF",
                c as u32
            )));
        }
        let message_attrs = parse_message_attributes(input.value("MessageAttributes"), self.limits)?;
        let attrs_size: usize = message_attrs
            .iter()
            .map(|(k, v)| {
                k.len()
                    + v.data_type.len()
                    + v.string.as_ref().map_or(0, String::len)
                    + v.binary.as_ref().map_or(0, Vec::len)
            })
            .sum();
        if body.len() + attrs_size > max_size {
            return Err(AwsError::InvalidParameterValue(format!(
                "One or more parameters are invalid. Reason: Message must be shorter than {max_size} bytes."
            )));
        }
        let delay = opt_int(input, "DelaySeconds")?;
        if let Some(d) = delay {
            if fifo {
                return Err(AwsError::InvalidParameterValue(format!(
                    "Value {d} for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type."
                )));
            }
            if !(0..=self.limits.max_delay).contains(&d) {
                return Err(AwsError::InvalidParameterValue(format!(
                    "Value {d} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= {}.",
                    self.limits.max_delay
                )));
            }
        }
        let queue_delay: i64 = attrs.get("DelaySeconds").and_then(|v| v.parse().ok()).unwrap_or(0);
        let group = opt_str(input, "MessageGroupId")?.map(str::to_string);
        let mut dedup_id = opt_str(input, "MessageDeduplicationId")?.map(str::to_string);
        if fifo {
            if group.is_none() {
                return Err(AwsError::MissingParameter("MessageGroupId".into()));
            }
            if dedup_id.is_none() {
                if attrs.get("ContentBasedDeduplication").map(String::as_str) == Some("true") {
                    dedup_id = Some(hex::encode(Sha256::digest(body.as_bytes())));
                } else {
                    return Err(AwsError::InvalidParameterValue(
                        "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly".into(),
                    ));
                }
            }
        } else if dedup_id.is_some() {
            return Err(AwsError::InvalidParameterValue(
                "The request include parameter MessageDeduplicationId that is not valid for this queue type".into(),
            ));
        }
        for (field, v) in [("MessageGroupId", &group), ("MessageDeduplicationId", &dedup_id)] {
            if let Some(v) = v
                && (v.is_empty() || v.len() > 128 || !v.chars().all(|c| c.is_ascii_graphic()))
            {
                return Err(AwsError::InvalidParameterValue(format!(
                    "Value {v} for parameter {field} is invalid. Reason: It must be 1 to 128 printable ASCII characters."
                )));
            }
        }
        // With DeduplicationScope=messageGroup, one id may be used once per group.
        let dedup_key = dedup_id.as_ref().map(|d| match (&group, attrs.get("DeduplicationScope")) {
            (Some(g), Some(scope)) if scope == "messageGroup" => format!("{g}\u{0}{d}"),
            _ => d.clone(),
        });
        let trace = parse_system_attributes(input.value("MessageSystemAttributes"))?;
        Ok(Prepared {
            trace,
            dedup_key,
            body: body.to_string(),
            attributes: message_attrs,
            delay_ms: (delay.unwrap_or(queue_delay).max(0) as u64) * 1000,
            group,
            dedup_id,
            fifo,
        })
    }

    /// Publishes a prepared message to `queue` through the default exchange.
    fn publish(&self, queue: &str, p: Prepared) -> Res<(Sent, Option<switchyard::store::Lsn>)> {
        let body_md5 = md5_hex(p.body.as_bytes());
        let attrs_md5 = attributes_md5(p.attributes.iter());
        let now = now_ms();
        if let Some(id) = &p.dedup_key {
            let mut overlays = self.overlays.lock();
            let o = overlays.entry(queue.to_string()).or_default();
            o.dedup.retain(|_, (_, _, until)| *until > now);
            if let Some((mid, seq, _)) = o.dedup.get(id) {
                let sent = Sent {
                    message_id: mid.clone(),
                    md5_body: body_md5,
                    md5_attributes: attrs_md5,
                    sequence: Some(seq.clone()),
                    md5_system: None,
                };
                return Ok((sent, None));
            }
        }
        let message_id = new_message_id();
        let mut headers = FieldTable::new();
        for (k, v) in &p.attributes {
            match (&v.binary, &v.string) {
                (Some(b), _) => {
                    headers.insert(k.clone(), FieldValue::Bytes(Bytes::copy_from_slice(b)));
                    if v.data_type != "Binary" {
                        headers.insert(format!("{TYPE_HEADER_PREFIX}{k}"), FieldValue::text(&v.data_type));
                    }
                }
                (None, s) => {
                    headers.insert(k.clone(), FieldValue::text(s.as_deref().unwrap_or("")));
                    if v.data_type != "String" {
                        headers.insert(format!("{TYPE_HEADER_PREFIX}{k}"), FieldValue::text(&v.data_type));
                    }
                }
            }
        }
        let sequence = p.fifo.then(|| format!("{:020}", self.sequence.fetch_add(1, Ordering::Relaxed)));
        if let Some(s) = &sequence {
            headers.insert(SEQ_HEADER.into(), FieldValue::text(s));
        }
        if let Some(d) = &p.dedup_id {
            headers.insert(DEDUP_HEADER.into(), FieldValue::text(d));
        }
        if let Some(t) = &p.trace {
            headers.insert(TRACE_HEADER.into(), FieldValue::text(t));
        }
        headers.insert(BODY_MD5_HEADER.into(), FieldValue::text(body_md5_header(&body_md5, p.body.as_bytes())));
        let props = Properties {
            delivery_mode: Some(2),
            message_id: Some(message_id.clone()),
            timestamp: Some(now / 1000),
            headers: Some(headers),
            ..Properties::default()
        };
        let message = Message::new("", queue, props, Bytes::from(p.body.into_bytes()));
        let opts =
            PublishOptions { delay: Some(p.delay_ms), group: p.group.map(Arc::from), dedup_id: p.dedup_key.clone() };
        let outcome = self.vhost.publish_with(message, opts, &self.ctx).map_err(core_err)?;
        if !outcome.routed {
            return Err(AwsError::QueueDoesNotExist);
        }
        if let (Some(id), Some(seq)) = (&p.dedup_key, &sequence) {
            let mut overlays = self.overlays.lock();
            let o = overlays.entry(queue.to_string()).or_default();
            o.dedup.insert(id.clone(), (message_id.clone(), seq.clone(), now + self.limits.dedup_window_ms));
        }
        let md5_system = p.trace.as_ref().and_then(|t| {
            let a = AttrValue { data_type: "String".into(), string: Some(t.clone()), binary: None };
            attributes_md5([(&"AWSTraceHeader".to_string(), &a)])
        });
        let sent = Sent { message_id, md5_body: body_md5, md5_attributes: attrs_md5, sequence, md5_system };
        Ok((sent, outcome.lsn))
    }

    async fn receive_message<I: Input>(&self, input: &I) -> Res<ReceiveOut> {
        let (name, q) = self.queue_from_url(input)?;
        let max = opt_int(input, "MaxNumberOfMessages")?.unwrap_or(1);
        if !(1..=10).contains(&max) {
            return Err(AwsError::InvalidParameterValue(format!(
                "Value {max} for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided."
            )));
        }
        let visibility = match opt_int(input, "VisibilityTimeout")? {
            Some(v) if !(0..=self.limits.max_visibility).contains(&v) => {
                return Err(AwsError::InvalidParameterValue(format!(
                    "Value {v} for parameter VisibilityTimeout is invalid. Reason: Must be >= 0 and <= {}, if provided.",
                    self.limits.max_visibility
                )));
            }
            Some(v) => v,
            None => self.attr_i64(&name, &q, "VisibilityTimeout"),
        };
        let wait = match opt_int(input, "WaitTimeSeconds")? {
            Some(w) if !(0..=self.limits.max_wait).contains(&w) => {
                return Err(AwsError::InvalidParameterValue(format!(
                    "Value {w} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided."
                )));
            }
            Some(w) => w,
            None => self.attr_i64(&name, &q, "ReceiveMessageWaitTimeSeconds"),
        };
        let legacy = opt_str_list(input, "AttributeNames")?.unwrap_or_default();
        // The legacy list is typed as queue attribute names in the API model; accept those too.
        if let Some(bad) = legacy.iter().find(|n| !SYSTEM_ATTRIBUTES.contains(&n.as_str()) && !is_known_attribute(n)) {
            return Err(AwsError::InvalidAttributeName(bad.clone()));
        }
        let mut system = legacy;
        let named = opt_str_list(input, "MessageSystemAttributeNames")?.unwrap_or_default();
        if let Some(bad) = named.iter().find(|n| !SYSTEM_ATTRIBUTES.contains(&n.as_str())) {
            return Err(AwsError::InvalidAttributeName(bad.clone()));
        }
        system.extend(named);
        let wanted_attrs = opt_str_list(input, "MessageAttributeNames")?.unwrap_or_default();
        // A FIFO receive retried with the same attempt id within the window gets the same
        // batch (same receipt handles, visibility restarted) while its leases last.
        let attempt = match opt_str(input, "ReceiveRequestAttemptId")? {
            Some(a) if a.is_empty() || a.len() > 128 || !a.chars().all(|c| c.is_ascii_graphic()) => {
                return Err(AwsError::InvalidParameterValue(format!(
                    "Value {a} for parameter ReceiveRequestAttemptId is invalid. Reason: It must be 1 to 128 printable ASCII characters."
                )));
            }
            Some(a) if name.ends_with(".fifo") => Some(a.to_string()),
            _ => None,
        };
        if let Some(id) = &attempt
            && let Some(batch) = self.replay_attempt(&name, &q, id, visibility)
        {
            return Ok(ReceiveOut::Replayed(batch));
        }

        let give_up = tokio::time::Instant::now() + Duration::from_secs(wait.max(0) as u64);
        let deliveries = loop {
            let available = q.available();
            tokio::pin!(available);
            available.as_mut().enable();
            let now = now_ms();
            let deadline = now + visibility as u64 * 1000;
            let room = self.limits.max_in_flight.saturating_sub(q.counts().unacked);
            if room == 0 && wait == 0 {
                return Err(AwsError::OverLimit(self.limits.max_in_flight));
            }
            let take = (max as u64).min(room) as usize;
            let ds = if take == 0 {
                Vec::new()
            } else {
                // The delivered marks of the batch reach the log writer in one message.
                let _log = self.broker.message_log().batch();
                self.vhost.receive(&name, take, Some(deadline), &self.ctx).map_err(core_err)?.1
            };
            if !ds.is_empty() || q.is_deleted() || tokio::time::Instant::now() >= give_up {
                break ds.into_iter().map(|d| (d, now)).collect::<Vec<_>>();
            }
            tokio::select! {
                _ = &mut available => {}
                _ = tokio::time::sleep_until(give_up) => {}
            }
        };
        let incarnation = self.incarnation(q.store_id());
        let messages: Vec<ReceivedMsg> =
            deliveries.iter().map(|(d, at)| self.render(&name, incarnation, d, *at, &system, &wanted_attrs)).collect();
        if let Some(id) = attempt
            && !messages.is_empty()
        {
            let leases: Vec<u64> = deliveries.iter().filter_map(|(d, _)| d.lease).collect();
            let out = ReceiveOut::messages_value(&messages);
            let mut overlays = self.overlays.lock();
            let o = overlays.entry(name).or_default();
            o.attempts.record(id, now_ms(), self.limits.attempt_window_ms, leases, out);
        }
        Ok(ReceiveOut::Messages(messages))
    }

    /// The batch an earlier receive with attempt `id` returned, if it is inside the window
    /// and all its messages are still leased; their visibility restarts.
    fn replay_attempt(&self, name: &str, q: &Arc<Queue>, id: &str, visibility: i64) -> Option<Value> {
        let now = now_ms();
        let (leases, batch) = {
            let mut overlays = self.overlays.lock();
            let a = overlays.get_mut(name)?.attempts.recall(id, now, self.limits.attempt_window_ms)?;
            (a.leases.clone(), a.batch.clone())
        };
        let deadline = now + visibility as u64 * 1000;
        for lease in leases {
            let (found, fx) = q.set_lease_deadline(lease, Some(deadline));
            self.vhost.handle(q, fx);
            if !found {
                return None;
            }
        }
        Some(batch)
    }

    /// One received message in SQS's shape; `incarnation` identifies the queue instance.
    fn render(
        &self,
        queue: &str,
        incarnation: u64,
        d: &Delivery,
        received_at: Millis,
        system: &[String],
        wanted: &[String],
    ) -> ReceivedMsg {
        let m = &d.message;
        // Bodies sent through SQS are UTF-8; check fast, convert lossily only if not.
        let body = match std::str::from_utf8(&m.body) {
            Ok(_) => BodyText::Utf8(m.body.clone()),
            Err(_) => BodyText::Lossy(String::from_utf8_lossy(&m.body).into_owned()),
        };
        let receipt_handle = encode_handle(queue, d.lease.unwrap_or(0), received_at, incarnation);
        let message_id = m.properties.message_id.clone().unwrap_or_else(|| format!("{:032x}", d.seq));
        // The MD5 stored at send, if the message came through SQS with its body unchanged.
        let cached = match &body {
            BodyText::Utf8(_) => m.properties.header(BODY_MD5_HEADER).and_then(FieldValue::as_str),
            BodyText::Lossy(_) => None,
        };
        let md5_body = match cached.and_then(|h| cached_body_md5(h, &m.body)) {
            Some(md5) => md5.to_string(),
            None => md5_hex(body.as_str().as_bytes()),
        };
        let header_text = |name: &str| m.properties.header(name).and_then(FieldValue::as_str).map(str::to_string);
        let all = system.iter().any(|s| s == "All");
        let want = |s: &str| all || system.iter().any(|x| x == s);
        let mut sys = Map::new();
        if !system.is_empty() {
            if want("SenderId") {
                sys.insert("SenderId".into(), json!(self.cfg.account_id));
            }
            if want("SentTimestamp") {
                sys.insert("SentTimestamp".into(), json!(d.enqueued_at.to_string()));
            }
            if want("ApproximateReceiveCount") {
                sys.insert("ApproximateReceiveCount".into(), json!(d.delivery_count.to_string()));
            }
            if want("ApproximateFirstReceiveTimestamp") {
                sys.insert("ApproximateFirstReceiveTimestamp".into(), json!(d.first_delivered_at.to_string()));
            }
            if let Some(g) = &d.group
                && want("MessageGroupId")
            {
                sys.insert("MessageGroupId".into(), json!(g.as_ref()));
            }
            if want("MessageDeduplicationId")
                && let Some(s) = header_text(DEDUP_HEADER)
            {
                sys.insert("MessageDeduplicationId".into(), json!(s));
            }
            if want("SequenceNumber")
                && let Some(s) = header_text(SEQ_HEADER)
            {
                sys.insert("SequenceNumber".into(), json!(s));
            }
            if want("AWSTraceHeader")
                && let Some(s) = header_text(TRACE_HEADER)
            {
                sys.insert("AWSTraceHeader".into(), json!(s));
            }
            if want("DeadLetterQueueSourceArn")
                && let Some(source) = admin::death_source(m)
            {
                sys.insert("DeadLetterQueueSourceArn".into(), json!(self.queue_arn(&source)));
            }
        }
        let mut message_attributes = None;
        let mut md5_attributes = None;
        if !wanted.is_empty() {
            let attrs = message_attributes_of(m, self.limits);
            let selected: BTreeMap<&String, &AttrValue> =
                attrs.iter().filter(|(k, _)| wanted.iter().any(|w| attribute_selected(w, k))).collect();
            if !selected.is_empty() {
                let mut out = Map::new();
                for (k, a) in &selected {
                    let mut e = json!({ "DataType": a.data_type });
                    if let Some(b) = &a.binary {
                        e["BinaryValue"] = json!(STANDARD.encode(b));
                    } else {
                        e["StringValue"] = json!(a.string.clone().unwrap_or_default());
                    }
                    out.insert((*k).clone(), e);
                }
                message_attributes = Some(out);
                md5_attributes = attributes_md5(selected);
            }
        }
        ReceivedMsg {
            message_id,
            receipt_handle,
            md5_body,
            body,
            attributes: (!sys.is_empty()).then_some(sys),
            message_attributes,
            md5_attributes,
        }
    }

    /// The queue and lease a receipt handle names; it must belong to `queue`.
    fn lease_of(&self, queue: &str, handle: &str) -> Res<Handle> {
        let mut buf = [0; HANDLE_MAX];
        // Decoded in place; a handle too long for that (a queue name over 255 bytes) the slow way.
        let h = match HandleRef::decode(handle, &mut buf) {
            Some(h) if h.queue == queue => {
                Handle { queue: String::new(), lease: h.lease, received_at: h.received_at, incarnation: h.incarnation }
            }
            Some(_) => return Err(AwsError::ReceiptHandleIsInvalid(handle.to_string())),
            None => Handle::decode(handle)
                .filter(|h| h.queue == queue)
                .ok_or_else(|| AwsError::ReceiptHandleIsInvalid(handle.to_string()))?,
        };
        Ok(h)
    }

    /// Identifies this process's instance of a queue (lease ids restart with either).
    fn incarnation(&self, store_id: u64) -> u64 {
        self.boot ^ store_id.rotate_left(32)
    }

    /// True if `h` was issued for this instance of `q` (else its lease is long gone).
    fn current(&self, h: &Handle, q: &Queue) -> bool {
        h.incarnation == self.incarnation(q.store_id())
    }

    fn delete_one(&self, name: &str, q: &Arc<Queue>, handle: &str) -> Res<()> {
        let h = self.lease_of(name, handle)?;
        // A stale handle (lease already ended) is not an error in SQS.
        if self.current(&h, q) {
            self.vhost.settle(q, h.lease, Outcome::Ack);
        }
        Ok(())
    }

    fn delete_message<I: Input>(&self, input: &I) -> Res<()> {
        let (name, q) = self.queue_from_url(input)?;
        self.delete_one(&name, &q, req_str(input, "ReceiptHandle")?)
    }

    fn delete_message_batch<B: BatchInput>(&self, input: &B) -> Res<BatchOut<()>> {
        let (name, q) = self.queue_from_url(input)?;
        let entries = batch_entries(input, "DeleteMessageBatchRequestEntry", self.limits)?;
        let mut out = BatchOut { ok: Vec::with_capacity(entries.len()), failed: Vec::new() };
        // The forgets of the acked messages reach the log writer in one message.
        let _log = self.broker.message_log().batch();
        for e in entries {
            let id = entry_str(e, "Id").unwrap_or_default();
            match req_str(e, "ReceiptHandle").and_then(|h| self.delete_one(&name, &q, h)) {
                Ok(()) => out.ok.push((id.to_string(), ())),
                Err(err) => out.failed.push(batch_error(id, &err)),
            }
        }
        Ok(out)
    }

    fn change_one(&self, name: &str, q: &Arc<Queue>, handle: &str, timeout: Option<i64>) -> Res<()> {
        let h = self.lease_of(name, handle)?;
        let t = timeout.ok_or_else(|| AwsError::MissingParameter("VisibilityTimeout".into()))?;
        let now = now_ms();
        let deadline = visibility_deadline(h.received_at, now, t, self.limits)?;
        if !self.current(&h, q) {
            return Err(AwsError::MessageNotInflight(handle.to_string()));
        }
        let (found, fx) = q.set_lease_deadline(h.lease, Some(deadline));
        self.vhost.handle(q, fx);
        if !found {
            return Err(AwsError::MessageNotInflight(handle.to_string()));
        }
        Ok(())
    }

    fn change_visibility(&self, input: &Value) -> Res<Value> {
        let (name, q) = self.queue_from_url(input)?;
        let handle = req_str(input, "ReceiptHandle")?;
        self.change_one(&name, &q, handle, opt_int(input, "VisibilityTimeout")?)?;
        Ok(json!({}))
    }

    fn change_visibility_batch(&self, input: &Value) -> Res<Value> {
        let (name, q) = self.queue_from_url(input)?;
        let entries = batch_entries(input, "ChangeMessageVisibilityBatchRequestEntry", self.limits)?;
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        for e in entries {
            let id = e.get("Id").and_then(Value::as_str).unwrap_or_default();
            let r = req_str(e, "ReceiptHandle")
                .and_then(|h| opt_int(e, "VisibilityTimeout").and_then(|t| self.change_one(&name, &q, h, t)));
            match r {
                Ok(()) => ok.push(json!({ "Id": id })),
                Err(err) => failed.push(batch_error(id, &err)),
            }
        }
        Ok(json!({ "Successful": ok, "Failed": failed }))
    }
}

/// The lease deadline for a visibility change to `t` seconds at `now` of a message
/// received at `received_at`: `t` must be in range and the lease may not end more than
/// the cap (12 h in strict mode) after the receive.
fn visibility_deadline(received_at: Millis, now: Millis, t: i64, limits: &Limits) -> Res<Millis> {
    if !(0..=limits.max_visibility).contains(&t) {
        return Err(AwsError::InvalidParameterValue(format!(
            "Value {t} for parameter VisibilityTimeout is invalid. Reason: Must be >= 0 and <= {}.",
            limits.max_visibility
        )));
    }
    let deadline = now + t as u64 * 1000;
    if deadline > received_at + limits.max_lease_ms {
        return Err(AwsError::InvalidParameterValue(format!(
            "Value {t} for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout for the message is beyond the limit [{} seconds]",
            limits.max_lease_ms / 1000
        )));
    }
    Ok(deadline)
}

/// One page of sorted `names` after `NextToken`, at most `MaxResults` (1–1000) long, and
/// the token for the next page (only when `MaxResults` was given, as SQS does).
fn paginate(names: Vec<String>, input: &Value) -> Res<(Vec<String>, Option<String>)> {
    let max = opt_int(input, "MaxResults")?;
    if let Some(m) = max
        && !(1..=1000).contains(&m)
    {
        return Err(AwsError::InvalidParameterValue(format!(
            "Value {m} for parameter MaxResults is invalid. Reason: MaxResults must be an integer between 1 and 1000."
        )));
    }
    let after = match opt_str(input, "NextToken")? {
        Some(t) => Some(
            URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| AwsError::InvalidParameterValue("Invalid NextToken".into()))?,
        ),
        None => None,
    };
    let mut page: Vec<String> = names.into_iter().filter(|n| after.as_ref().is_none_or(|a| n > a)).collect();
    let limit = max.map_or(1000, |m| m as usize);
    let mut next = None;
    if max.is_some() && page.len() > limit {
        page.truncate(limit);
        next = page.last().map(|l| URL_SAFE_NO_PAD.encode(l));
    } else {
        page.truncate(limit);
    }
    Ok((page, next))
}

/// `FifoThroughputLimit=perMessageGroupId` needs `DeduplicationScope=messageGroup`.
fn check_fifo_throughput(attrs: &BTreeMap<String, String>) -> Res<()> {
    if attrs.get("FifoThroughputLimit").map(String::as_str) == Some("perMessageGroupId")
        && attrs.get("DeduplicationScope").map(String::as_str) != Some("messageGroup")
    {
        return Err(AwsError::InvalidParameterValue(
            "Invalid value for the parameter FifoThroughputLimit. Reason: perMessageGroupId is only valid with DeduplicationScope messageGroup.".into(),
        ));
    }
    Ok(())
}

/// A validated SendMessage entry.
#[derive(Debug)]
struct Prepared {
    body: String,
    attributes: BTreeMap<String, AttrValue>,
    delay_ms: u64,
    group: Option<String>,
    dedup_id: Option<String>,
    /// The key the deduplication window is kept under (the id, scoped by group if asked).
    dedup_key: Option<String>,
    /// The `AWSTraceHeader` system attribute.
    trace: Option<String>,
    fifo: bool,
}

/// What a receipt handle encodes: the queue, the lease, the receive time (12-hour cap) and
/// the queue instance (process and queue incarnation).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Handle {
    queue: String,
    lease: u64,
    received_at: Millis,
    incarnation: u64,
}

impl Handle {
    /// The base64url text of `v1\n<queue>\n<lease>\n<received_at>\n<incarnation hex>`.
    #[cfg(test)]
    fn encode(&self) -> String {
        encode_handle(&self.queue, self.lease, self.received_at, self.incarnation)
    }

    fn decode(s: &str) -> Option<Handle> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let mut parts = raw.split('\n');
        if parts.next()? != "v1" {
            return None;
        }
        let queue = parts.next()?.to_string();
        let lease = parts.next()?.parse().ok()?;
        let received_at = parts.next()?.parse().ok()?;
        let incarnation = u64::from_str_radix(parts.next()?, 16).ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Handle { queue, lease, received_at, incarnation })
    }
}

/// The receipt handle text of a lease: base64url of
/// `v1\n<queue>\n<lease>\n<received_at>\n<incarnation hex>`.
fn encode_handle(queue: &str, lease: u64, received_at: Millis, incarnation: u64) -> String {
    if queue.len() > 255 {
        return URL_SAFE_NO_PAD.encode(format!("v1\n{queue}\n{lease}\n{received_at}\n{incarnation:x}"));
    }
    let mut raw = [0u8; HANDLE_MAX];
    let mut n = 0;
    let mut put = |b: &[u8]| {
        let end = (n + b.len()).min(raw.len());
        raw[n..end].copy_from_slice(&b[..end - n]);
        n = end;
    };
    // Queue names are at most 255 bytes here, so the text always fits.
    put(b"v1\n");
    put(queue.as_bytes());
    put(b"\n");
    put(digits(lease, 10, &mut [0; 20]));
    put(b"\n");
    put(digits(received_at, 10, &mut [0; 20]));
    put(b"\n");
    put(digits(incarnation, 16, &mut [0; 20]));
    URL_SAFE_NO_PAD.encode(&raw[..n])
}

/// The longest receipt handle text (queue names are at most 255 bytes).
const HANDLE_MAX: usize = 320;

/// A decoded receipt handle borrowing its queue name from the decode buffer.
#[derive(Debug, PartialEq, Eq)]
struct HandleRef<'a> {
    queue: &'a str,
    lease: u64,
    received_at: Millis,
    incarnation: u64,
}

impl<'a> HandleRef<'a> {
    /// Decodes `s` into `buf` (a handle longer than that is not one of ours).
    fn decode(s: &str, buf: &'a mut [u8; HANDLE_MAX]) -> Option<HandleRef<'a>> {
        let n = URL_SAFE_NO_PAD.decode_slice(s, buf).ok()?;
        let raw = std::str::from_utf8(&buf[..n]).ok()?;
        let mut parts = raw.split('\n');
        if parts.next()? != "v1" {
            return None;
        }
        let queue = parts.next()?;
        let lease = parts.next()?.parse().ok()?;
        let received_at = parts.next()?.parse().ok()?;
        let incarnation = u64::from_str_radix(parts.next()?, 16).ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(HandleRef { queue, lease, received_at, incarnation })
    }
}

/// `n` in `radix` (10 or 16, lower case), written at the end of `buf`.
fn digits(mut n: u64, radix: u64, buf: &mut [u8; 20]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = HEX[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn ok(v: Value) -> Response {
    // `to_vec` writes straight into a buffer; `to_string` goes through `fmt::Display`, which
    // cost ~11 % of the broker's instructions per message (callgrind).
    ok_bytes(serde_json::to_vec(&v).unwrap_or_else(|_| b"{}".to_vec()))
}

/// A 200 with a JSON 1.0 body already written.
fn ok_bytes(body: Vec<u8>) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/x-amz-json-1.0"));
    resp
}

fn batch_error(id: &str, err: &AwsError) -> Value {
    let sh = crate::error::shape(err);
    json!({ "Id": id, "SenderFault": sh.fault == "Sender", "Code": sh.code, "Message": err.to_string() })
}

/// A random message id shaped like a UUID (8-4-4-4-12 lower-case hex digits).
fn new_message_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b: [u8; 16] = rand::random();
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[(byte >> 4) as usize] as char);
        s.push(HEX[(byte & 15) as usize] as char);
    }
    s
}

fn valid_body_char(c: char) -> bool {
    matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

fn check_queue_name(name: &str) -> Res<()> {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    if name.is_empty()
        || name.len() > 80
        || base.is_empty()
        || !base.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(AwsError::InvalidParameterValue(
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length".into(),
        ));
    }
    Ok(())
}

fn is_known_attribute(name: &str) -> bool {
    SETTABLE.iter().any(|(k, _)| *k == name)
        || matches!(
            name,
            "ApproximateNumberOfMessages"
                | "ApproximateNumberOfMessagesNotVisible"
                | "ApproximateNumberOfMessagesDelayed"
                | "CreatedTimestamp"
                | "LastModifiedTimestamp"
                | "QueueArn"
                | "Policy"
                | "KmsMasterKeyId"
                | "KmsDataKeyReusePeriodSeconds"
                | "SqsManagedSseEnabled"
                | "DeduplicationScope"
                | "FifoThroughputLimit"
                | "RedriveAllowPolicy"
        )
}

/// Validates attributes given to CreateQueue/SetQueueAttributes and returns them in their
/// canonical form (numbers without leading zeros, booleans lower case).
fn normalize_attributes(
    queue: &str,
    given: &BTreeMap<String, String>,
    create: bool,
    limits: &Limits,
) -> Res<BTreeMap<String, String>> {
    let fifo_name = queue.ends_with(".fifo");
    let mut out = BTreeMap::new();
    let bad = |k: &str, v: &str, why: &str| {
        AwsError::InvalidParameterValue(format!("Invalid value for the parameter {k}. Reason: {why} (got {v})"))
    };
    for (k, v) in given {
        let int = |lo: i64, hi: i64| -> Res<String> {
            match v.trim().parse::<i64>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(n.to_string()),
                _ => Err(bad(k, v, &format!("must be an integer between {lo} and {hi}"))),
            }
        };
        let boolean = || -> Res<String> {
            match v.to_ascii_lowercase().as_str() {
                "true" => Ok("true".into()),
                "false" => Ok("false".into()),
                _ => Err(bad(k, v, "must be true or false")),
            }
        };
        let value = match k.as_str() {
            "VisibilityTimeout" => int(0, limits.max_visibility)?,
            "DelaySeconds" => int(0, limits.max_delay)?,
            "MessageRetentionPeriod" => int(limits.min_retention, limits.max_retention)?,
            "MaximumMessageSize" => int(limits.min_message_size, limits.max_message_size)?,
            "ReceiveMessageWaitTimeSeconds" => int(0, limits.max_wait)?,
            "RedrivePolicy" => {
                if !v.is_empty() {
                    parse_redrive(v, limits)?;
                }
                v.clone()
            }
            "RedriveAllowPolicy" => {
                if !v.is_empty() {
                    admin::parse_redrive_allow(v)?;
                }
                v.clone()
            }
            "Policy" => {
                if !v.is_empty() && !matches!(serde_json::from_str::<Value>(v), Ok(Value::Object(_))) {
                    return Err(bad(k, v, "Invalid policy document"));
                }
                v.clone()
            }
            "SqsManagedSseEnabled" => boolean()?,
            "KmsMasterKeyId" => v.clone(),
            "KmsDataKeyReusePeriodSeconds" => int(60, 86_400)?,
            "DeduplicationScope" | "FifoThroughputLimit" => {
                if !fifo_name {
                    return Err(AwsError::InvalidAttributeName(k.clone()));
                }
                let allowed: &[&str] = if k == "DeduplicationScope" {
                    &["queue", "messageGroup"]
                } else {
                    &["perQueue", "perMessageGroupId"]
                };
                if !allowed.contains(&v.as_str()) {
                    return Err(bad(k, v, &format!("must be one of {}", allowed.join(", "))));
                }
                v.clone()
            }
            "FifoQueue" => {
                if !create {
                    return Err(AwsError::InvalidAttributeName(k.clone()));
                }
                let b = boolean()?;
                if (b == "true") != fifo_name {
                    return Err(AwsError::InvalidParameterValue(
                        "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length".into(),
                    ));
                }
                b
            }
            "ContentBasedDeduplication" => {
                if !fifo_name {
                    return Err(AwsError::InvalidAttributeName(k.clone()));
                }
                boolean()?
            }
            other if is_known_attribute(other) => {
                // Read-only attributes (counts, timestamps, the ARN).
                return Err(AwsError::InvalidAttributeName(other.to_string()));
            }
            other => return Err(AwsError::InvalidAttributeName(other.to_string())),
        };
        out.insert(k.clone(), value);
    }
    if create && fifo_name && !out.contains_key("FifoQueue") {
        return Err(AwsError::InvalidParameterValue(
            "The name of a FIFO queue must be created with the FifoQueue attribute set to true".into(),
        ));
    }
    if fifo_name {
        out.entry("ContentBasedDeduplication".into()).or_insert_with(|| "false".into());
    }
    Ok(out)
}

/// `(dead-letter queue name, maxReceiveCount)` from a RedrivePolicy JSON text.
fn parse_redrive(policy: &str, limits: &Limits) -> Res<(String, i64)> {
    let bad = |why: &str| {
        AwsError::InvalidParameterValue(format!("Value {policy} for parameter RedrivePolicy is invalid. Reason: {why}"))
    };
    let v: Value = serde_json::from_str(policy).map_err(|_| bad("Redrive policy is not a valid JSON map."))?;
    let arn = v
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Redrive policy does not contain mandatory attribute: deadLetterTargetArn."))?;
    let count = match v.get("maxReceiveCount") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| bad("Redrive policy does not contain mandatory attribute: maxReceiveCount."))?;
    if !(1..=limits.max_receive_count).contains(&count) {
        return Err(bad(&format!(
            "Invalid value for maxReceiveCount: must be between 1 and {}.",
            limits.max_receive_count
        )));
    }
    let name = arn.rsplit(':').next().filter(|n| !n.is_empty()).ok_or_else(|| bad("Invalid deadLetterTargetArn."))?;
    Ok((name.to_string(), count))
}

/// The core queue arguments for SQS attributes (see the module table).
/// With `create`, the defaults SQS applies at creation are filled in (retention, visibility).
fn queue_arguments(attrs: &BTreeMap<String, String>, create: bool, limits: &Limits) -> Res<FieldTable> {
    let num = |k: &str| attrs.get(k).and_then(|v| v.parse::<i64>().ok());
    let mut args = FieldTable::new();
    let stored: Map<String, Value> = attrs.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    args.insert(ATTRS_ARG.into(), FieldValue::text(Value::Object(stored).to_string()));
    if create {
        args.insert(CREATED_ARG.into(), FieldValue::I64((now_ms() / 1000) as i64));
    }
    let visibility = num("VisibilityTimeout").or(create.then_some(30)).unwrap_or(0);
    if visibility > 0 {
        args.insert("x-lease-timeout".into(), FieldValue::I64(visibility * 1000));
    }
    if let Some(d) = num("DelaySeconds").filter(|d| *d > 0) {
        args.insert("x-delivery-delay".into(), FieldValue::I64(d * 1000));
    }
    if let Some(retention) = num("MessageRetentionPeriod").or(create.then_some(limits.default_retention)) {
        args.insert("x-message-ttl".into(), FieldValue::I64(retention * 1000));
    }
    if attrs.get("FifoQueue").map(String::as_str) == Some("true") {
        args.insert("x-fifo".into(), FieldValue::Bool(true));
    }
    if let Some(policy) = attrs.get("RedrivePolicy").filter(|p| !p.is_empty()) {
        let (dlq, count) = parse_redrive(policy, limits)?;
        args.insert("x-dead-letter-exchange".into(), FieldValue::text(""));
        args.insert("x-dead-letter-routing-key".into(), FieldValue::text(dlq));
        // The core dead-letters a returned message whose delivery count is over the limit;
        // SQS moves it once its receive count reaches maxReceiveCount.
        args.insert("x-delivery-limit".into(), FieldValue::I64(count - 1));
        // Retention drops a message; only the receive count sends it to the DLQ.
        args.insert("x-drop-expired".into(), FieldValue::Bool(true));
    }
    Ok(args)
}

/// True if the `MessageAttributeNames` entry `pattern` selects attribute `name`.
fn attribute_selected(pattern: &str, name: &str) -> bool {
    match pattern {
        "All" | ".*" => true,
        p => match p.strip_suffix(".*") {
            Some(prefix) => name.starts_with(prefix) && name[prefix.len()..].starts_with('.'),
            None => p == name,
        },
    }
}

/// The SQS message attributes a core message carries (its headers, whatever protocol sent it).
fn message_attributes_of(m: &Message, limits: &Limits) -> BTreeMap<String, AttrValue> {
    let mut out = BTreeMap::new();
    let Some(headers) = m.properties.headers.as_ref() else { return out };
    for (k, v) in headers {
        if k.starts_with("x-sqs-")
            || k.starts_with("x-death")
            || k.starts_with("x-first-death")
            || k.starts_with("x-last-death")
        {
            continue;
        }
        let declared = headers.get(&format!("{TYPE_HEADER_PREFIX}{k}")).and_then(FieldValue::as_str);
        let value = match v {
            FieldValue::Bytes(b) => AttrValue { data_type: "Binary".into(), string: None, binary: Some(b.to_vec()) },
            FieldValue::Bool(b) => AttrValue { data_type: "String".into(), string: Some(b.to_string()), binary: None },
            FieldValue::F32(f) => AttrValue { data_type: "Number".into(), string: Some(f.to_string()), binary: None },
            FieldValue::F64(f) => AttrValue { data_type: "Number".into(), string: Some(f.to_string()), binary: None },
            other => match (other.as_str(), other.as_i64()) {
                (Some(s), _) => AttrValue { data_type: "String".into(), string: Some(s.to_string()), binary: None },
                (None, Some(n)) => AttrValue { data_type: "Number".into(), string: Some(n.to_string()), binary: None },
                // Tables, arrays and void have no SQS counterpart.
                _ => continue,
            },
        };
        let value = match declared {
            Some(t) => AttrValue { data_type: t.to_string(), ..value },
            None => value,
        };
        out.insert(k.clone(), value);
        if out.len() >= limits.max_attributes {
            break;
        }
    }
    out
}

fn parse_message_attributes(v: Option<&Value>, limits: &Limits) -> Res<BTreeMap<String, AttrValue>> {
    let mut out = BTreeMap::new();
    let Some(v) = v else { return Ok(out) };
    let m = v.as_object().ok_or_else(|| AwsError::SerializationException("MessageAttributes must be a map".into()))?;
    if m.len() > limits.max_attributes {
        return Err(AwsError::InvalidParameterValue(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{}].",
            m.len(),
            limits.max_attributes
        )));
    }
    for (name, a) in m {
        let bad = |why: &str| AwsError::InvalidParameterValue(format!("Message attribute '{name}' {why}"));
        if name.is_empty()
            || name.len() > 256
            || name.starts_with("AWS.")
            || name.starts_with("Amazon.")
            || name.starts_with("x-sqs-")
            || name.starts_with('.')
            || name.ends_with('.')
            || name.contains("..")
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(bad("has an invalid name."));
        }
        let data_type =
            a.get("DataType").and_then(Value::as_str).ok_or_else(|| bad("must contain a non-empty attribute type."))?;
        let base = data_type.split('.').next().unwrap_or_default();
        let value = match base {
            "String" | "Number" => {
                let s = a.get("StringValue").and_then(Value::as_str).ok_or_else(|| {
                    bad("must contain a non-empty message attribute value for message attribute type 'String'.")
                })?;
                if s.is_empty() {
                    return Err(bad("must contain a non-empty value."));
                }
                if base == "Number" && s.parse::<f64>().is_err() {
                    return Err(bad("has an invalid number value."));
                }
                AttrValue { data_type: data_type.to_string(), string: Some(s.to_string()), binary: None }
            }
            "Binary" => {
                let b64 = a
                    .get("BinaryValue")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("must contain a non-empty binary value."))?;
                let b = STANDARD.decode(b64).map_err(|_| bad("has an invalid base64 binary value."))?;
                AttrValue { data_type: data_type.to_string(), string: None, binary: Some(b) }
            }
            _ => {
                return Err(bad(
                    "has an invalid message attribute type, the set of supported type prefixes is Binary, Number, and String.",
                ));
            }
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// The `AWSTraceHeader` of a `MessageSystemAttributes` map, the only system attribute a
/// sender may set.
fn parse_system_attributes(v: Option<&Value>) -> Res<Option<String>> {
    let Some(v) = v else { return Ok(None) };
    let m = v
        .as_object()
        .ok_or_else(|| AwsError::SerializationException("MessageSystemAttributes must be a map".into()))?;
    let mut trace = None;
    for (name, a) in m {
        if name != "AWSTraceHeader" {
            return Err(AwsError::InvalidParameterValue(format!("Message system attribute name '{name}' is invalid.")));
        }
        match (a.get("DataType").and_then(Value::as_str), a.get("StringValue").and_then(Value::as_str)) {
            (Some("String"), Some(s)) if !s.is_empty() => trace = Some(s.to_string()),
            _ => {
                return Err(AwsError::InvalidParameterValue(
                    "Message system attribute 'AWSTraceHeader' must be a non-empty String.".into(),
                ));
            }
        }
    }
    Ok(trace)
}

/// The entries of a batch request, checked for count and ids.
fn batch_entries<'a, B: BatchInput>(input: &'a B, entry_name: &str, limits: &Limits) -> Res<&'a [B::Entry]> {
    let entries = input.entries()?;
    if entries.is_empty() {
        return Err(AwsError::EmptyBatchRequest(entry_name.to_string()));
    }
    if entries.len() > limits.max_batch {
        return Err(AwsError::TooManyEntriesInBatchRequest(entries.len()));
    }
    // Batches are small (at most `max_batch`, 10 as in AWS): each id is compared with the
    // ones before it, without hashing or allocating.
    for (i, e) in entries.iter().enumerate() {
        let id = entry_str(e, "Id").ok_or_else(|| AwsError::MissingParameter("Id".into()))?;
        if id.is_empty() || id.len() > 80 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(AwsError::InvalidBatchEntryId);
        }
        if entries[..i].iter().any(|earlier| entry_str(earlier, "Id") == Some(id)) {
            return Err(AwsError::BatchEntryIdsNotDistinct(id.to_string()));
        }
    }
    Ok(entries)
}

/// A string field of a batch entry, or `None` when absent or not a string.
fn entry_str<'a, I: Input>(e: &'a I, key: &str) -> Option<&'a str> {
    e.opt_str(key).ok().flatten()
}

fn req_str<'a, I: Input + ?Sized>(input: &'a I, key: &str) -> Res<&'a str> {
    input.opt_str(key)?.ok_or_else(|| AwsError::MissingParameter(key.to_string()))
}

fn opt_str<'a, I: Input + ?Sized>(input: &'a I, key: &str) -> Res<Option<&'a str>> {
    input.opt_str(key)
}

fn opt_int<I: Input + ?Sized>(input: &I, key: &str) -> Res<Option<i64>> {
    input.opt_int(key)
}

fn opt_str_list<I: Input + ?Sized>(input: &I, key: &str) -> Res<Option<Vec<String>>> {
    input.opt_str_list(key)
}

fn string_map(v: Option<&Value>, key: &str) -> Res<BTreeMap<String, String>> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| AwsError::SerializationException(format!("{key} values must be strings")))
            })
            .collect(),
        Some(_) => Err(AwsError::SerializationException(format!("{key} must be a map"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_md5_header_is_md5_colon_crc32c_in_8_hex_digits() {
        for body in [&b""[..], b"hello", &[7; 1000]] {
            let md5 = md5_hex(body);
            assert_eq!(body_md5_header(&md5, body), format!("{md5}:{:08x}", crc32c::crc32c(body)));
        }
    }

    #[test]
    fn a_cached_body_md5_is_used_only_for_the_body_it_was_computed_from() {
        let md5 = md5_hex(b"hello");
        let h = body_md5_header(&md5, b"hello");
        assert_eq!(cached_body_md5(&h, b"hello"), Some(md5.as_str()));
        assert_eq!(cached_body_md5(&h, b"hellO"), None, "a changed body");
        assert_eq!(cached_body_md5(&md5, b"hello"), None, "no checksum");
        assert_eq!(cached_body_md5("abc:00000000", b""), None, "not an MD5");
        assert_eq!(cached_body_md5(&format!("{md5}:zz"), b"hello"), None);
    }

    #[test]
    fn receipt_handle_round_trips_and_rejects_garbage() {
        let h = Handle { queue: "orders".into(), lease: 42, received_at: 1_700_000_000_000, incarnation: u64::MAX };
        assert_eq!(Handle::decode(&h.encode()), Some(h));
        let old = URL_SAFE_NO_PAD.encode("v1\norders.fifo\n0\n17\nabc");
        let h = Handle { queue: "orders.fifo".into(), lease: 0, received_at: 17, incarnation: 0xabc };
        assert_eq!(h.encode(), old, "the text format did not change");
        let long = Handle { queue: "q".repeat(255), lease: u64::MAX, received_at: u64::MAX, incarnation: u64::MAX };
        assert_eq!(Handle::decode(&long.encode()), Some(long));
        let mut buf = [0; HANDLE_MAX];
        let h = HandleRef::decode(&old, &mut buf).expect("ours");
        assert_eq!((h.queue, h.lease, h.received_at, h.incarnation), ("orders.fifo", 0, 17, 0xabc));
        let longer = Handle { queue: "q".repeat(400), lease: 1, received_at: 2, incarnation: 3 };
        assert_eq!(HandleRef::decode(&longer.encode(), &mut buf), None);
        assert_eq!(Handle::decode(&longer.encode()), Some(longer));
        assert_eq!(Handle::decode(&URL_SAFE_NO_PAD.encode("x".repeat(300))), None);
        assert_eq!(Handle::decode("not-a-handle"), None);
        assert_eq!(Handle::decode(&URL_SAFE_NO_PAD.encode("v2\nq\n1\n2")), None);
    }

    #[test]
    fn queue_names_follow_sqs_rules() {
        assert!(check_queue_name("orders-1_a").is_ok());
        assert!(check_queue_name("orders.fifo").is_ok());
        assert!(check_queue_name("").is_err());
        assert!(check_queue_name("a.b").is_err());
        assert!(check_queue_name(&"x".repeat(81)).is_err());
    }

    #[test]
    fn redrive_policy_maps_to_dead_lettering() {
        let mut attrs = BTreeMap::new();
        attrs.insert(
            "RedrivePolicy".to_string(),
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":"3"}"#.to_string(),
        );
        let args = queue_arguments(&attrs, true, &Limits::STRICT).expect("valid");
        assert_eq!(args.get("x-dead-letter-routing-key").and_then(FieldValue::as_str), Some("dlq"));
        assert_eq!(args.get("x-delivery-limit").and_then(FieldValue::as_i64), Some(2));
        assert!(parse_redrive(r#"{"deadLetterTargetArn":"arn:x:dlq","maxReceiveCount":0}"#, &Limits::STRICT).is_err());
    }

    #[test]
    fn attribute_normalisation_validates_ranges() {
        let mut given = BTreeMap::new();
        given.insert("VisibilityTimeout".to_string(), "043".to_string());
        assert_eq!(
            normalize_attributes("q", &given, true, &Limits::STRICT)
                .expect("valid")
                .get("VisibilityTimeout")
                .map(String::as_str),
            Some("43")
        );
        given.insert("VisibilityTimeout".to_string(), "43201".to_string());
        assert!(normalize_attributes("q", &given, true, &Limits::STRICT).is_err());
        let mut fifo = BTreeMap::new();
        fifo.insert("FifoQueue".to_string(), "true".to_string());
        assert!(normalize_attributes("q", &fifo, true, &Limits::STRICT).is_err());
        assert!(normalize_attributes("q.fifo", &fifo, true, &Limits::STRICT).is_ok());
        assert!(normalize_attributes("q.fifo", &BTreeMap::new(), true, &Limits::STRICT).is_err());
    }

    #[test]
    fn visibility_cap_counts_from_the_receive_without_waiting() {
        let received = 1_000_000;
        let twelve_h = 12 * 3600 * 1000;
        // At the receive, the full 12 h is allowed; one second later 43,200 s would pass the cap.
        assert_eq!(visibility_deadline(received, received, 43_200, &Limits::STRICT).ok(), Some(received + twelve_h));
        assert!(visibility_deadline(received, received + 1_000, 43_200, &Limits::STRICT).is_err());
        // Eleven hours in, one more hour is the most.
        let later = received + 11 * 3600 * 1000;
        assert!(visibility_deadline(received, later, 3_600, &Limits::STRICT).is_ok());
        assert!(visibility_deadline(received, later, 3_601, &Limits::STRICT).is_err());
        assert!(visibility_deadline(received, received, 43_201, &Limits::STRICT).is_err());
        assert!(visibility_deadline(received, received, -1, &Limits::STRICT).is_err());
        // Relaxed mode allows a day.
        assert!(visibility_deadline(received, received + 1_000, 43_200, &Limits::RELAXED).is_ok());
    }

    #[test]
    fn body_characters_follow_the_xml_set() {
        assert!(valid_body_char('a') && valid_body_char('\n') && valid_body_char('\u{1F600}'));
        assert!(!valid_body_char('\u{0}') && !valid_body_char('\u{FFFF}'));
    }

    #[test]
    fn attribute_name_patterns() {
        assert!(attribute_selected("All", "x"));
        assert!(attribute_selected(".*", "x"));
        assert!(attribute_selected("foo.*", "foo.bar"));
        assert!(!attribute_selected("foo.*", "foobar"));
        assert!(attribute_selected("x", "x"));
    }
}
