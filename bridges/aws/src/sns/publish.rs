//! Publish and PublishBatch: validate, build one core message, publish it to the topic
//! exchange (the core fans it out by the subscriptions' filter policies; the envelope transform
//! shapes each copy), and answer once persistent copies are on disk.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use switchyard::queue::state::PublishOptions;
use switchyard::store::Lsn;
use switchyard::time::now_ms;
use switchyard::{FieldTable, FieldValue, Message, Properties};

use crate::sns::attributes::{self, Attr};
use crate::sns::error::SnsError;
use crate::sns::params::Params;
use crate::sns::xml::{Xml, uuid};
use crate::sns::{Inner, Res, core_err};

/// Largest message (body plus attributes), as SNS.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Most entries in one PublishBatch.
const MAX_BATCH: usize = 10;
/// FIFO deduplication window.
const DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;

/// Header: the Subject.
pub const SUBJECT_HEADER: &str = "x-sns-subject";
/// Header: the publish time in epoch milliseconds.
pub const TIMESTAMP_HEADER: &str = "x-sns-timestamp";
/// Header: `json` when the message holds one body per protocol.
pub const STRUCTURE_HEADER: &str = "x-sns-message-structure";
/// Header (shared with SQS): FIFO sequence number.
pub const SEQ_HEADER: &str = "x-sqs-sequence-number";
/// Header (shared with SQS): FIFO deduplication id.
pub const DEDUP_HEADER: &str = "x-sqs-deduplication-id";

/// One validated publish.
#[derive(Debug)]
struct Prepared {
    message: String,
    subject: Option<String>,
    structure_json: bool,
    attributes: BTreeMap<String, Attr>,
    group: Option<String>,
    dedup_id: Option<String>,
}

fn check_group_or_dedup(field: &str, v: &str) -> Res<()> {
    if v.is_empty() || v.len() > 128 || !v.chars().all(|c| c.is_ascii_graphic()) {
        return Err(SnsError::param(format!(
            "{field} Reason: {field} can only include alphanumeric and punctuation characters. 1 to 128 in length."
        )));
    }
    Ok(())
}

impl Inner {
    /// Validates one Publish (or batch entry) for `topic`.
    fn prepare(&self, topic: &str, p: &Params) -> Res<Prepared> {
        let message = p.get("Message").unwrap_or("");
        if message.is_empty() {
            return Err(SnsError::param("Empty message"));
        }
        let attributes = attributes::validate(&p.message_attributes())?;
        let size = message.len() + attributes.iter().map(|(k, a)| a.size(k)).sum::<usize>();
        if size > MAX_MESSAGE_BYTES {
            return Err(SnsError::param("Message too long"));
        }
        let subject = p.get("Subject").map(str::to_string);
        if let Some(s) = &subject
            && (s.is_empty() || s.chars().count() > 100 || s.chars().any(|c| c.is_control() || !c.is_ascii()))
        {
            return Err(SnsError::param("Subject"));
        }
        let structure_json = match p.get("MessageStructure") {
            None | Some("") => false,
            Some("json") => {
                let v: serde_json::Value = serde_json::from_str(message)
                    .map_err(|_| SnsError::param("Message Structure - JSON message body failed to parse"))?;
                if !v.get("default").is_some_and(serde_json::Value::is_string) {
                    return Err(SnsError::param("Message Structure - No default entry in JSON message body"));
                }
                true
            }
            Some(_) => return Err(SnsError::param("MessageStructure")),
        };
        let fifo = self.is_fifo_topic(topic);
        let group = p.get("MessageGroupId").map(str::to_string);
        let mut dedup_id = p.get("MessageDeduplicationId").map(str::to_string);
        if fifo {
            let Some(g) = &group else {
                return Err(SnsError::param("The MessageGroupId parameter is required for FIFO topics"));
            };
            check_group_or_dedup("MessageGroupId", g)?;
            match &dedup_id {
                Some(d) => check_group_or_dedup("MessageDeduplicationId", d)?,
                None if self.topic_attribute(topic, "ContentBasedDeduplication").as_deref() == Some("true") => {
                    dedup_id = Some(hex::encode(Sha256::digest(message.as_bytes())));
                }
                None => {
                    return Err(SnsError::param(
                        "The topic should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly",
                    ));
                }
            }
        } else {
            if dedup_id.is_some() {
                return Err(SnsError::param(
                    "MessageDeduplicationId Reason: The request includes MessageDeduplicationId parameter that is not valid for this topic type",
                ));
            }
            if group.is_some() {
                return Err(SnsError::param(
                    "MessageGroupId Reason: The request includes MessageGroupId parameter that is not valid for this topic type",
                ));
            }
        }
        Ok(Prepared { message: message.to_string(), subject, structure_json, attributes, group, dedup_id })
    }

    /// Publishes a prepared message; returns (MessageId, SequenceNumber, LSN to wait for).
    fn send(&self, topic: &str, p: Prepared) -> Res<(String, Option<String>, Option<Lsn>)> {
        let now = now_ms();
        if let Some(id) = &p.dedup_id {
            let mut all = self.dedup.lock();
            let window = all.entry(topic.to_string()).or_default();
            window.retain(|_, (_, _, until)| *until > now);
            if let Some((mid, seq, _)) = window.get(id) {
                return Ok((mid.clone(), Some(seq.clone()), None));
            }
        }
        let message_id = uuid();
        let mut headers = FieldTable::new();
        attributes::to_headers(&p.attributes, &mut headers);
        if let Some(s) = &p.subject {
            headers.insert(SUBJECT_HEADER.into(), FieldValue::text(s));
        }
        headers.insert(TIMESTAMP_HEADER.into(), FieldValue::I64(now as i64));
        if p.structure_json {
            headers.insert(STRUCTURE_HEADER.into(), FieldValue::text("json"));
        }
        let fifo = p.group.is_some();
        let sequence = fifo.then(|| format!("{:020}", self.sequence.fetch_add(1, Ordering::Relaxed)));
        if let Some(s) = &sequence {
            headers.insert(SEQ_HEADER.into(), FieldValue::text(s));
        }
        if let Some(d) = &p.dedup_id {
            headers.insert(DEDUP_HEADER.into(), FieldValue::text(d));
        }
        let props = Properties {
            delivery_mode: Some(2),
            message_id: Some(message_id.clone()),
            timestamp: Some(now / 1000),
            content_type: Some("text/plain; charset=UTF-8".into()),
            headers: Some(headers),
            ..Properties::default()
        };
        let message = Message::new(topic, topic, props, Bytes::from(p.message.into_bytes()));
        let opts = PublishOptions { delay: None, group: p.group.map(Arc::from), dedup_id: p.dedup_id.clone() };
        let outcome = self.vhost.publish_with(message, opts, &self.ctx).map_err(core_err)?;
        if let (Some(id), Some(seq)) = (&p.dedup_id, &sequence) {
            let mut all = self.dedup.lock();
            all.entry(topic.to_string())
                .or_default()
                .insert(id.clone(), (message_id.clone(), seq.clone(), now + DEDUP_WINDOW_MS));
        }
        Ok((message_id, sequence, outcome.lsn))
    }

    /// Waits until a persistent copy is on disk: a 200 means it survives a crash.
    async fn synced(&self, lsn: Option<Lsn>) -> Res<()> {
        if let Some(lsn) = lsn {
            self.broker.message_log().wait_synced(lsn).await.map_err(|e| SnsError::Internal(e.to_string()))?;
        }
        Ok(())
    }

    /// The topic a Publish names (`TopicArn` or `TargetArn`).
    fn publish_target(&self, p: &Params) -> Res<String> {
        if p.get("PhoneNumber").is_some() {
            return Err(SnsError::param("PhoneNumber Reason: SMS is not supported by Switchyard"));
        }
        let arn = p
            .get("TopicArn")
            .or_else(|| p.get("TargetArn"))
            .ok_or_else(|| SnsError::param("TopicArn or TargetArn Reason: no value for required parameter"))?;
        self.topic_from_arn(arn)
    }

    pub(super) async fn publish(self: &Arc<Self>, p: &Params) -> Res<Xml> {
        let topic = self.publish_target(p)?;
        let prepared = self.prepare(&topic, p)?;
        let (id, seq, lsn) = self.send(&topic, prepared)?;
        self.synced(lsn).await?;
        let mut x = Xml::new();
        x.field("MessageId", &id);
        if let Some(s) = seq {
            x.field("SequenceNumber", &s);
        }
        Ok(x)
    }

    pub(super) async fn publish_batch(self: &Arc<Self>, p: &Params) -> Res<Xml> {
        let topic = self.topic_from_arn(p.required("TopicArn")?)?;
        let entries = p.indexed("PublishBatchRequestEntries.member.");
        if entries.is_empty() {
            return Err(SnsError::EmptyBatchRequest);
        }
        if entries.len() > MAX_BATCH {
            return Err(SnsError::TooManyEntriesInBatchRequest);
        }
        let mut ids = HashSet::new();
        let mut total = 0usize;
        for e in entries.values() {
            let id = e.get("Id").unwrap_or("");
            if id.is_empty() || id.len() > 80 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(SnsError::InvalidBatchEntryId);
            }
            if !ids.insert(id.to_string()) {
                return Err(SnsError::BatchEntryIdsNotDistinct);
            }
            total += e.get("Message").map_or(0, str::len);
        }
        if total > MAX_MESSAGE_BYTES {
            return Err(SnsError::BatchRequestTooLong);
        }
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        let mut last = None;
        for e in entries.values() {
            let id = e.get("Id").unwrap_or("").to_string();
            match self.prepare(&topic, e).and_then(|prep| self.send(&topic, prep)) {
                Ok((mid, seq, lsn)) => {
                    last = last.max(lsn);
                    ok.push((id, mid, seq));
                }
                Err(err) => failed.push((id, err)),
            }
        }
        self.synced(last).await?;
        let mut x = Xml::new();
        x.element("Successful", |x| {
            for (id, mid, seq) in &ok {
                x.element("member", |m| {
                    m.field("Id", id).field("MessageId", mid);
                    if let Some(s) = seq {
                        m.field("SequenceNumber", s);
                    }
                });
            }
        });
        x.element("Failed", |x| {
            for (id, err) in &failed {
                let (_, code, _) = err.shape();
                x.element("member", |m| {
                    m.field("Id", id)
                        .field("Code", code)
                        .field("Message", &err.to_string())
                        .field("SenderFault", "true");
                });
            }
        });
        Ok(x)
    }
}
