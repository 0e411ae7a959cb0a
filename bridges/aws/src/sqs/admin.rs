//! The SQS administration actions: tags, permissions (the `Policy` attribute),
//! `ListDeadLetterSourceQueues`, `RedriveAllowPolicy`, and message move tasks (moving
//! messages out of a dead-letter queue, back to where they came from or to a given queue).
//!
//! Tags and permissions are queue state like the attributes: they live in the queue's
//! arguments and policy (`x-sqs-tags`, the `Policy` attribute) and survive restarts.
//! Move tasks are in memory: a restart ends them (the messages already moved stay moved).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Value, json};
use switchyard::queue::state::PublishOptions;
use switchyard::time::{Millis, now_ms};
use switchyard::vhost::Outcome;
use switchyard::{BrokerHandle, ClientContext, FieldValue, Message, VHost};
use tokio_util::sync::CancellationToken;

use super::limits::Limits;
use super::{Res, Sqs, TAGS_ARG, opt_int, opt_str, opt_str_list, paginate, req_str, string_map};
use crate::error::AwsError;

/// The actions `AddPermission` accepts (`*` for all).
const PERMISSION_ACTIONS: &[&str] = &[
    "*",
    "SendMessage",
    "ReceiveMessage",
    "DeleteMessage",
    "ChangeMessageVisibility",
    "GetQueueAttributes",
    "GetQueueUrl",
    "ListDeadLetterSourceQueues",
    "PurgeQueue",
    "ListQueueTags",
    "CancelMessageMoveTask",
    "ListMessageMoveTasks",
    "StartMessageMoveTask",
    "SendMessageBatch",
    "DeleteMessageBatch",
    "ChangeMessageVisibilityBatch",
];

/// Checks tags against SQS's rules (count, key and value lengths).
pub(super) fn check_tags(tags: &BTreeMap<String, String>, limits: &Limits) -> Res<()> {
    if tags.len() > limits.max_tags {
        return Err(AwsError::InvalidParameterValue(format!(
            "Too many tags: a queue can have at most {} tags.",
            limits.max_tags
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(AwsError::InvalidParameterValue(format!("Tag key {k} must be 1 to 128 characters long.")));
        }
        if v.chars().count() > 256 {
            return Err(AwsError::InvalidParameterValue(format!("Tag value for {k} must be at most 256 characters.")));
        }
        if k.starts_with("aws:") {
            return Err(AwsError::InvalidParameterValue(format!("Tag key {k} may not start with aws:.")));
        }
    }
    Ok(())
}

/// The `(redrivePermission, sourceQueueArns)` of a `RedriveAllowPolicy`, validated.
pub(super) fn parse_redrive_allow(policy: &str) -> Res<(String, Vec<String>)> {
    let bad = |why: &str| {
        AwsError::InvalidParameterValue(format!(
            "Value {policy} for parameter RedriveAllowPolicy is invalid. Reason: {why}"
        ))
    };
    let v: Value = serde_json::from_str(policy).map_err(|_| bad("Redrive allow policy is not a valid JSON map."))?;
    let obj = v.as_object().ok_or_else(|| bad("Redrive allow policy is not a valid JSON map."))?;
    for k in obj.keys() {
        if k != "redrivePermission" && k != "sourceQueueArns" {
            return Err(bad(&format!("Unknown attribute {k}.")));
        }
    }
    let permission = obj
        .get("redrivePermission")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Redrive allow policy does not contain mandatory attribute: redrivePermission."))?;
    let arns: Vec<String> = match obj.get("sourceQueueArns") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(|| bad("sourceQueueArns must be a list of ARNs.")))
            .collect::<Res<_>>()?,
        Some(_) => return Err(bad("sourceQueueArns must be a list of ARNs.")),
    };
    match permission {
        "allowAll" | "denyAll" if !arns.is_empty() => {
            Err(bad("sourceQueueArns may only be given with redrivePermission byQueue."))
        }
        "allowAll" | "denyAll" => Ok((permission.to_string(), arns)),
        "byQueue" if arns.is_empty() || arns.len() > 10 => {
            Err(bad("redrivePermission byQueue needs 1 to 10 sourceQueueArns."))
        }
        "byQueue" => Ok((permission.to_string(), arns)),
        other => Err(bad(&format!("Invalid redrivePermission {other}: must be allowAll, denyAll or byQueue."))),
    }
}

/// True if a DLQ with `RedriveAllowPolicy` `policy` (empty: none, which allows all) lets
/// the queue `source_arn` dead-letter into it.
pub(super) fn redrive_allowed(policy: &str, source_arn: &str) -> bool {
    if policy.is_empty() {
        return true;
    }
    match parse_redrive_allow(policy) {
        Ok((p, arns)) => match p.as_str() {
            "allowAll" => true,
            "byQueue" => arns.iter().any(|a| a == source_arn),
            _ => false,
        },
        Err(_) => false,
    }
}

/// Status of a move task, as `ListMessageMoveTasks` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Running,
    Completed,
    Cancelling,
    Cancelled,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Running => "RUNNING",
            Status::Completed => "COMPLETED",
            Status::Cancelling => "CANCELLING",
            Status::Cancelled => "CANCELLED",
            Status::Failed => "FAILED",
        }
    }
}

/// One message move task.
#[derive(Debug)]
struct MoveTask {
    handle: String,
    source_arn: String,
    source: String,
    destination_arn: Option<String>,
    destination: Option<String>,
    rate: Option<i64>,
    started: Millis,
    to_move: u64,
    moved: AtomicU64,
    state: Mutex<(Status, Option<String>)>,
    cancel: CancellationToken,
}

impl MoveTask {
    fn status(&self) -> Status {
        self.state.lock().0
    }

    fn finish(&self, status: Status, reason: Option<String>) {
        *self.state.lock() = (status, reason);
    }

    fn describe(&self) -> Value {
        let (status, reason) = self.state.lock().clone();
        let mut v = json!({
            "Status": status.as_str(),
            "SourceArn": self.source_arn,
            "ApproximateNumberOfMessagesMoved": self.moved.load(Ordering::Relaxed),
            "ApproximateNumberOfMessagesToMove": self.to_move,
            "StartedTimestamp": self.started,
        });
        if status == Status::Running {
            v["TaskHandle"] = json!(self.handle);
        }
        if let Some(d) = &self.destination_arn {
            v["DestinationArn"] = json!(d);
        }
        if let Some(r) = self.rate {
            v["MaxNumberOfMessagesPerSecond"] = json!(r);
        }
        if let Some(r) = reason {
            v["FailureReason"] = json!(r);
        }
        v
    }
}

/// The move tasks of this process, oldest first.
#[derive(Debug, Default)]
pub struct MoveTasks {
    tasks: Vec<Arc<MoveTask>>,
}

impl MoveTasks {
    /// Cancels every running task and forgets them all (the reset test hook).
    pub(super) fn cancel_all(&mut self) {
        for t in &self.tasks {
            t.cancel.cancel();
        }
        self.tasks.clear();
    }
}

/// The queue an `arn:aws:sqs:region:account:name` names.
fn arn_queue(arn: &str, param: &str) -> Res<String> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts[..] {
        ["arn", _, "sqs", _, _, name] if !name.is_empty() => Ok(name.to_string()),
        _ => Err(AwsError::InvalidParameterValue(format!(
            "Value {arn} for parameter {param} is invalid. Reason: Invalid ARN."
        ))),
    }
}

/// The queue a dead-lettered message came from (the latest `x-death` entry).
pub(super) fn death_source(m: &Message) -> Option<String> {
    let Some(FieldValue::Array(deaths)) = m.properties.header("x-death") else { return None };
    deaths.iter().find_map(|d| match d {
        FieldValue::Table(t) => t.get("queue").and_then(FieldValue::as_str).map(str::to_string),
        _ => None,
    })
}

impl Sqs {
    /// The stored tags of a queue.
    fn tags_of(q: &switchyard::queue::Queue) -> BTreeMap<String, String> {
        q.effective_arguments()
            .get(TAGS_ARG)
            .and_then(FieldValue::as_str)
            .and_then(|s| serde_json::from_str::<BTreeMap<String, String>>(s).ok())
            .unwrap_or_default()
    }

    pub(super) fn tag_queue(&self, input: &Value) -> Res<Value> {
        let (name, q) = self.queue_from_url(input)?;
        let given = string_map(input.get("Tags"), "Tags")?;
        if given.is_empty() {
            return Err(AwsError::MissingParameter("Tags".into()));
        }
        let mut tags = Self::tags_of(&q);
        tags.extend(given);
        check_tags(&tags, self.limits)?;
        let explicit = Self::explicit_attributes(&q);
        self.store(&name, &q, &explicit, Some(&tags))
    }

    pub(super) fn untag_queue(&self, input: &Value) -> Res<Value> {
        let (name, q) = self.queue_from_url(input)?;
        let keys = opt_str_list(input, "TagKeys")?.ok_or_else(|| AwsError::MissingParameter("TagKeys".into()))?;
        let mut tags = Self::tags_of(&q);
        for k in &keys {
            tags.remove(k);
        }
        let explicit = Self::explicit_attributes(&q);
        self.store(&name, &q, &explicit, Some(&tags))
    }

    pub(super) fn list_queue_tags(&self, input: &Value) -> Res<Value> {
        let (_, q) = self.queue_from_url(input)?;
        let tags = Self::tags_of(&q);
        if tags.is_empty() {
            return Ok(json!({}));
        }
        Ok(json!({ "Tags": tags }))
    }

    /// The queue's access policy document (the `Policy` attribute), parsed.
    fn policy_document(&self, name: &str, q: &Arc<switchyard::queue::Queue>) -> Value {
        self.effective_attributes(name, q).get("Policy").and_then(|p| serde_json::from_str(p).ok()).unwrap_or_else(
            || {
                json!({
                    "Version": "2012-10-17",
                    "Id": format!("{}/SQSDefaultPolicy", self.queue_arn(name)),
                    "Statement": [],
                })
            },
        )
    }

    /// Stores a new `Policy` document (an empty statement list removes it).
    fn set_policy_document(&self, name: &str, q: &Arc<switchyard::queue::Queue>, doc: &Value) -> Res<Value> {
        let mut explicit = Self::explicit_attributes(q);
        let empty = doc.get("Statement").and_then(Value::as_array).is_none_or(|s| s.is_empty());
        explicit.insert("Policy".into(), if empty { String::new() } else { doc.to_string() });
        self.store(name, q, &explicit, None)
    }

    pub(super) fn add_permission(&self, input: &Value) -> Res<Value> {
        let (name, q) = self.queue_from_url(input)?;
        let label = req_str(input, "Label")?;
        if label.is_empty()
            || label.len() > 80
            || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(AwsError::InvalidParameterValue(format!(
                "Value {label} for parameter Label is invalid. Reason: Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length."
            )));
        }
        let accounts = opt_str_list(input, "AWSAccountIds")?.unwrap_or_default();
        if accounts.is_empty() {
            return Err(AwsError::MissingParameter("AWSAccountIds".into()));
        }
        let actions = opt_str_list(input, "Actions")?.unwrap_or_default();
        if actions.is_empty() {
            return Err(AwsError::MissingParameter("Actions".into()));
        }
        for a in &actions {
            if !PERMISSION_ACTIONS.contains(&a.as_str()) {
                return Err(AwsError::InvalidParameterValue(format!(
                    "Value SQS:{a} for parameter ActionName is invalid. Reason: Only the queue owner is allowed to invoke this action."
                )));
            }
        }
        let mut doc = self.policy_document(&name, &q);
        let statements = doc["Statement"].as_array().cloned().unwrap_or_default();
        if statements.iter().any(|s| s.get("Sid").and_then(Value::as_str) == Some(label)) {
            return Err(AwsError::InvalidParameterValue(format!(
                "Value {label} for parameter Label is invalid. Reason: Already exists."
            )));
        }
        let principals: Vec<String> = accounts.iter().map(|a| format!("arn:aws:iam::{a}:root")).collect();
        let principal = if principals.len() == 1 { json!(principals[0]) } else { json!(principals) };
        let acts: Vec<String> = actions.iter().map(|a| format!("SQS:{a}")).collect();
        let action = if acts.len() == 1 { json!(acts[0]) } else { json!(acts) };
        let mut statements = statements;
        statements.push(json!({
            "Sid": label,
            "Effect": "Allow",
            "Principal": { "AWS": principal },
            "Action": action,
            "Resource": self.queue_arn(&name),
        }));
        doc["Statement"] = Value::Array(statements);
        self.set_policy_document(&name, &q, &doc)
    }

    pub(super) fn remove_permission(&self, input: &Value) -> Res<Value> {
        let (name, q) = self.queue_from_url(input)?;
        let label = req_str(input, "Label")?;
        let mut doc = self.policy_document(&name, &q);
        let mut statements = doc["Statement"].as_array().cloned().unwrap_or_default();
        let before = statements.len();
        statements.retain(|s| s.get("Sid").and_then(Value::as_str) != Some(label));
        if statements.len() == before {
            return Err(AwsError::InvalidParameterValue(format!(
                "Value {label} for parameter Label is invalid. Reason: can't find label on existing policy."
            )));
        }
        doc["Statement"] = Value::Array(statements);
        self.set_policy_document(&name, &q, &doc)
    }

    /// Queues whose `RedrivePolicy` names `dlq` as their dead-letter queue.
    fn dead_letter_sources(&self, dlq: &str) -> Vec<String> {
        self.sqs_queue_names()
            .into_iter()
            .filter(|(n, q)| {
                self.effective_attributes(n, q)
                    .get("RedrivePolicy")
                    .and_then(|p| super::parse_redrive(p, &Limits::RELAXED).ok())
                    .is_some_and(|(target, _)| target == dlq)
            })
            .map(|(n, _)| n)
            .collect()
    }

    pub(super) fn list_dead_letter_source_queues(&self, input: &Value, host: &str) -> Res<Value> {
        let (name, _) = self.queue_from_url(input)?;
        let (page, next) = paginate(self.dead_letter_sources(&name), input)?;
        let mut out = json!({ "queueUrls": page.iter().map(|n| self.queue_url(host, n)).collect::<Vec<_>>() });
        if let Some(t) = next {
            out["NextToken"] = json!(t);
        }
        Ok(out)
    }

    pub(super) fn start_message_move_task(&self, input: &Value) -> Res<Value> {
        let source_arn = req_str(input, "SourceArn")?.to_string();
        let source = arn_queue(&source_arn, "SourceArn")?;
        let q = self.live_queue(&source).ok_or(AwsError::QueueDoesNotExist)?;
        if self.dead_letter_sources(&source).is_empty() {
            return Err(AwsError::InvalidParameterValue(format!(
                "Value {source_arn} for parameter SourceArn is invalid. Reason: Source queue must be configured as a Dead Letter Queue."
            )));
        }
        let destination_arn = opt_str(input, "DestinationArn")?.map(str::to_string);
        let destination = match &destination_arn {
            Some(arn) => {
                let d = arn_queue(arn, "DestinationArn")?;
                self.live_queue(&d).ok_or(AwsError::QueueDoesNotExist)?;
                if d.ends_with(".fifo") != source.ends_with(".fifo") {
                    return Err(AwsError::InvalidParameterValue(format!(
                        "Value {arn} for parameter DestinationArn is invalid. Reason: The destination must be the same type of queue as the source."
                    )));
                }
                Some(d)
            }
            None => None,
        };
        let rate = opt_int(input, "MaxNumberOfMessagesPerSecond")?;
        if let Some(r) = rate
            && !(1..=self.limits.max_move_rate).contains(&r)
        {
            return Err(AwsError::InvalidParameterValue(format!(
                "Value {r} for parameter MaxNumberOfMessagesPerSecond is invalid. Reason: Must be between 1 and {}.",
                self.limits.max_move_rate
            )));
        }
        let mut tasks = self.tasks.lock();
        if tasks.tasks.iter().any(|t| t.source == source && t.status() == Status::Running) {
            return Err(AwsError::UnsupportedOperation(format!(
                "There is already a task running on {source_arn}; only one active message movement task is supported per queue."
            )));
        }
        let task = Arc::new(MoveTask {
            handle: super::new_message_id(),
            source_arn,
            source,
            destination_arn,
            destination,
            rate,
            started: now_ms(),
            to_move: q.counts().ready,
            moved: AtomicU64::new(0),
            state: Mutex::new((Status::Running, None)),
            cancel: CancellationToken::new(),
        });
        tasks.tasks.push(Arc::clone(&task));
        let (vhost, broker, ctx) = (Arc::clone(&self.vhost), self.broker.clone(), self.ctx.clone());
        tokio::spawn(run_move(task.clone(), vhost, broker, ctx));
        tracing::info!(source = %task.source, to_move = task.to_move, "message move task started");
        Ok(json!({ "TaskHandle": task.handle }))
    }

    pub(super) fn list_message_move_tasks(&self, input: &Value) -> Res<Value> {
        let source_arn = req_str(input, "SourceArn")?;
        let source = arn_queue(source_arn, "SourceArn")?;
        self.live_queue(&source).ok_or(AwsError::QueueDoesNotExist)?;
        let max = opt_int(input, "MaxResults")?.unwrap_or(1);
        if !(1..=10).contains(&max) {
            return Err(AwsError::InvalidParameterValue(format!(
                "Value {max} for parameter MaxResults is invalid. Reason: Must be between 1 and 10."
            )));
        }
        let tasks = self.tasks.lock();
        let results: Vec<Value> =
            tasks.tasks.iter().rev().filter(|t| t.source == source).take(max as usize).map(|t| t.describe()).collect();
        Ok(json!({ "Results": results }))
    }

    pub(super) fn cancel_message_move_task(&self, input: &Value) -> Res<Value> {
        let handle = req_str(input, "TaskHandle")?;
        let tasks = self.tasks.lock();
        let task = tasks
            .tasks
            .iter()
            .find(|t| t.handle == handle)
            .ok_or_else(|| AwsError::ResourceNotFound(format!("Task does not exist: {handle}")))?;
        {
            let mut state = task.state.lock();
            if state.0 != Status::Running {
                return Err(AwsError::UnsupportedOperation(format!(
                    "Only a RUNNING task can be cancelled; this one is {}.",
                    state.0.as_str()
                )));
            }
            state.0 = Status::Cancelling;
        }
        task.cancel.cancel();
        Ok(json!({ "ApproximateNumberOfMessagesMoved": task.moved.load(Ordering::Relaxed) }))
    }
}

/// Moves messages out of the task's source queue until it has moved as many as the queue
/// held at the start, the queue is empty, or the task is cancelled. Each message is
/// published to its destination and made durable before it is deleted from the source.
async fn run_move(task: Arc<MoveTask>, vhost: Arc<VHost>, broker: BrokerHandle, ctx: ClientContext) {
    let started = tokio::time::Instant::now();
    loop {
        if task.cancel.is_cancelled() {
            task.finish(Status::Cancelled, None);
            return;
        }
        let moved = task.moved.load(Ordering::Relaxed);
        if moved >= task.to_move {
            task.finish(Status::Completed, None);
            return;
        }
        if let Some(rate) = task.rate {
            // Pace: message n may go at n / rate seconds after the start.
            let due = started + Duration::from_secs_f64(moved as f64 / rate as f64);
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = task.cancel.cancelled() => continue,
            }
        }
        let batch = (task.to_move - moved).min(task.rate.map_or(10, |r| r.clamp(1, 10) as u64)) as usize;
        let deliveries = match vhost.receive(&task.source, batch, Some(now_ms() + 60_000), &ctx) {
            Ok((_, ds)) => ds,
            Err(e) => {
                task.finish(Status::Failed, Some(format!("The source queue is gone: {}", e.text)));
                return;
            }
        };
        let Some(source_q) = vhost.queue(&task.source) else {
            task.finish(Status::Failed, Some("The source queue is gone.".into()));
            return;
        };
        if deliveries.is_empty() {
            task.finish(Status::Completed, None);
            return;
        }
        for d in deliveries {
            let Some(lease) = d.lease else { continue };
            let target = task.destination.clone().or_else(|| death_source(&d.message));
            let Some(target) = target.filter(|t| vhost.queue(t).is_some_and(|q| !q.is_deleted())) else {
                vhost.settle(&source_q, lease, Outcome::Requeue);
                task.finish(
                    Status::Failed,
                    Some(
                        "AWS.SimpleQueueService.NonExistentQueue: a message's destination queue does not exist".into(),
                    ),
                );
                return;
            };
            let m = &d.message;
            let copy = Message::new("", &target, m.properties.clone(), Bytes::clone(&m.body));
            let opts = PublishOptions { delay: Some(0), group: d.group.clone(), dedup_id: None };
            let lsn = match vhost.publish_with(copy, opts, &ctx) {
                Ok(o) if o.routed => o.lsn,
                Ok(_) | Err(_) => {
                    vhost.settle(&source_q, lease, Outcome::Requeue);
                    task.finish(Status::Failed, Some(format!("Could not publish to {target}")));
                    return;
                }
            };
            if let Some(lsn) = lsn
                && broker.message_log().wait_synced(lsn).await.is_err()
            {
                vhost.settle(&source_q, lease, Outcome::Requeue);
                task.finish(Status::Failed, Some("The message store refused a write".into()));
                return;
            }
            vhost.settle(&source_q, lease, Outcome::Ack);
            task.moved.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_allow_policy_rules() {
        let arn = "arn:aws:sqs:us-east-1:000000000000:src";
        assert!(redrive_allowed("", arn));
        assert!(redrive_allowed(r#"{"redrivePermission":"allowAll"}"#, arn));
        assert!(!redrive_allowed(r#"{"redrivePermission":"denyAll"}"#, arn));
        assert!(redrive_allowed(&format!(r#"{{"redrivePermission":"byQueue","sourceQueueArns":["{arn}"]}}"#), arn));
        assert!(!redrive_allowed(
            r#"{"redrivePermission":"byQueue","sourceQueueArns":["arn:aws:sqs:r:a:other"]}"#,
            arn
        ));
        assert!(parse_redrive_allow(r#"{"redrivePermission":"byQueue"}"#).is_err());
        assert!(parse_redrive_allow(r#"{"redrivePermission":"allowAll","sourceQueueArns":["x"]}"#).is_err());
        assert!(parse_redrive_allow(r#"{"redrivePermission":"maybe"}"#).is_err());
    }

    #[test]
    fn arns_name_queues() {
        assert_eq!(arn_queue("arn:aws:sqs:us-east-1:000000000000:dlq", "SourceArn").ok().as_deref(), Some("dlq"));
        assert!(arn_queue("arn:aws:sns:us-east-1:000000000000:t", "SourceArn").is_err());
        assert!(arn_queue("dlq", "SourceArn").is_err());
    }
}
