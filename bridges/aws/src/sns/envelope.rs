//! The delivery transform registered on the vhost: what each subscription of an SNS topic
//! receives, whichever protocol published to the topic.
//!
//! - Not raw: SNS's JSON envelope, keys in SNS's order — `Type`, `MessageId`, (`SequenceNumber`),
//!   `TopicArn`, (`Subject`), `Message`, `Timestamp`, `SignatureVersion`, `Signature`,
//!   `SigningCertURL`, `UnsubscribeURL`, (`MessageAttributes`) — signed once per publish and
//!   protocol; the copy carries no attributes of its own.
//! - Raw (`RawMessageDelivery`): the message text, with the attributes as the copy's headers
//!   (SQS shows them as message attributes).
//!
//! `MessageStructure=json` publishes pick the protocol's entry (`sqs`, `http`) or `default`.
//! A publish from AMQP/STOMP/MQTT gets a fresh MessageId and its AMQP timestamp (or now).
//! Bindings that are not SNS subscriptions (an AMQP `queue.bind` without a subscription ARN)
//! get the message as published.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use switchyard::exchange::Exchange;
use switchyard::filter_policy::{DeliveryTransform, Subscription, TopicPublish};
use switchyard::time::now_ms;
use switchyard::{FieldTable, FieldValue, Message, Properties};

use crate::sns::attributes::{self, Attr};
use crate::sns::publish::{DEDUP_HEADER, SEQ_HEADER, STRUCTURE_HEADER, SUBJECT_HEADER, TIMESTAMP_HEADER};
use crate::sns::signing::string_to_sign;
use crate::sns::subscriptions::ARG_PROTOCOL;
use crate::sns::xml::uuid;
use crate::sns::{CERT_PATH, Inner};

/// Header on HTTP push copies: the SNS MessageId (for `x-amz-sns-message-id`).
pub const MESSAGE_ID_HEADER: &str = "x-sns-message-id";
/// Header on HTTP push copies: true for raw deliveries.
pub const RAW_HEADER: &str = "x-sns-raw";

/// The transform; holds the service weakly (the vhost owns the transform, the service the vhost).
#[derive(Debug)]
pub struct Envelope {
    inner: Weak<Inner>,
}

impl Envelope {
    /// A transform for the service `inner`.
    pub(super) fn new(inner: Weak<Inner>) -> Envelope {
        Envelope { inner }
    }
}

/// Formats epoch milliseconds as SNS does: `2026-11-25T22:59:01.123Z`.
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

fn js(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// What one publish shares across its subscriptions.
struct Publish<'a> {
    inner: Arc<Inner>,
    topic: &'a Exchange,
    message: &'a Message,
    message_id: String,
    timestamp: String,
    subject: Option<String>,
    sequence: Option<String>,
    attributes: std::collections::BTreeMap<String, Attr>,
    structure: Option<serde_json::Value>,
    signature_version: String,
    /// Signature per message text (one per protocol at most).
    signatures: HashMap<String, String>,
}

impl DeliveryTransform for Envelope {
    fn begin<'a>(&'a self, topic: &'a Exchange, message: &'a Message) -> Box<dyn TopicPublish + 'a> {
        let Some(inner) = self.inner.upgrade() else { return Box::new(Unchanged) };
        let h = message.properties.headers.as_ref();
        let text = |k: &str| h.and_then(|h| h.get(k)).and_then(FieldValue::as_str).map(str::to_string);
        let ms = h
            .and_then(|h| h.get(TIMESTAMP_HEADER))
            .and_then(FieldValue::as_i64)
            .map(|v| v as u64)
            .or(message.properties.timestamp.map(|s| s * 1000))
            .unwrap_or_else(now_ms);
        let structure = (text(STRUCTURE_HEADER).as_deref() == Some("json"))
            .then(|| serde_json::from_slice(&message.body).ok())
            .flatten();
        let signature_version = inner.topic_attribute(&topic.name, "SignatureVersion").unwrap_or_else(|| "1".into());
        Box::new(Publish {
            topic,
            message,
            message_id: message.properties.message_id.clone().unwrap_or_else(uuid),
            timestamp: iso8601(ms),
            subject: text(SUBJECT_HEADER),
            sequence: text(SEQ_HEADER),
            attributes: attributes::from_headers(h),
            structure,
            signature_version,
            signatures: HashMap::new(),
            inner,
        })
    }
}

/// Used when the service is gone: copies go out unchanged.
struct Unchanged;

impl TopicPublish for Unchanged {
    fn message_for(&mut self, _subscription: &Subscription) -> Option<Message> {
        None
    }
}

impl Publish<'_> {
    /// The message text for `protocol`.
    fn text_for(&self, protocol: &str) -> String {
        if let Some(s) = &self.structure {
            let pick = s.get(protocol).or_else(|| s.get("default"));
            if let Some(t) = pick.and_then(serde_json::Value::as_str) {
                return t.to_string();
            }
        }
        String::from_utf8_lossy(&self.message.body).into_owned()
    }

    fn topic_arn(&self) -> String {
        self.inner.topic_arn(&self.topic.name)
    }

    fn signature(&mut self, text: &str) -> String {
        if let Some(s) = self.signatures.get(text) {
            return s.clone();
        }
        let to_sign = string_to_sign(&[
            ("Message", Some(text)),
            ("MessageId", Some(&self.message_id)),
            ("Subject", self.subject.as_deref()),
            ("Timestamp", Some(&self.timestamp)),
            ("TopicArn", Some(&self.topic_arn())),
            ("Type", Some("Notification")),
        ]);
        let sig = self.inner.signer.sign(&self.signature_version, &to_sign);
        self.signatures.insert(text.to_string(), sig.clone());
        sig
    }

    fn envelope(&mut self, text: &str, subscription_arn: &str) -> String {
        let signature = self.signature(text);
        let base = &self.inner.base_url;
        let mut out = String::with_capacity(text.len() + 1024);
        out.push_str(&format!("{{\"Type\":\"Notification\",\"MessageId\":{}", js(&self.message_id)));
        if let Some(s) = &self.sequence {
            out.push_str(&format!(",\"SequenceNumber\":{}", js(s)));
        }
        out.push_str(&format!(",\"TopicArn\":{}", js(&self.topic_arn())));
        if let Some(s) = &self.subject {
            out.push_str(&format!(",\"Subject\":{}", js(s)));
        }
        out.push_str(&format!(
            ",\"Message\":{},\"Timestamp\":{},\"SignatureVersion\":{},\"Signature\":{},\"SigningCertURL\":{},\"UnsubscribeURL\":{}",
            js(text),
            js(&self.timestamp),
            js(&self.signature_version),
            js(&signature),
            js(&format!("{base}{CERT_PATH}")),
            js(&format!("{base}/?Action=Unsubscribe&SubscriptionArn={subscription_arn}")),
        ));
        if !self.attributes.is_empty() {
            let attrs: serde_json::Map<String, serde_json::Value> = self
                .attributes
                .iter()
                .map(|(k, a)| (k.clone(), serde_json::json!({"Type": a.data_type, "Value": a.envelope_value()})))
                .collect();
            out.push_str(&format!(",\"MessageAttributes\":{}", serde_json::Value::Object(attrs)));
        }
        out.push('}');
        out
    }
}

impl TopicPublish for Publish<'_> {
    fn message_for(&mut self, s: &Subscription) -> Option<Message> {
        // A plain AMQP binding (no subscription ARN) gets the message as published.
        s.arn()?;
        let protocol = s.arguments.get(ARG_PROTOCOL).and_then(FieldValue::as_str).unwrap_or("sqs").to_string();
        let text = self.text_for(&protocol);
        let source = self.message.properties.headers.as_ref();
        let mut headers = FieldTable::new();
        for k in [SEQ_HEADER, DEDUP_HEADER] {
            if let Some(v) = source.and_then(|h| h.get(k)) {
                headers.insert(k.into(), v.clone());
            }
        }
        let body = if s.raw {
            if let Some(h) = source {
                for (k, v) in h {
                    if !attributes::is_internal(k) || k.starts_with(switchyard::filter_policy::view::TYPE_HEADER_PREFIX)
                    {
                        headers.insert(k.clone(), v.clone());
                    }
                }
            }
            text
        } else {
            self.envelope(&text, s.arn().unwrap_or_default())
        };
        if protocol != "sqs" {
            headers.insert(MESSAGE_ID_HEADER.into(), FieldValue::text(&self.message_id));
            headers.insert(RAW_HEADER.into(), FieldValue::Bool(s.raw));
        }
        let props = Properties {
            delivery_mode: self.message.properties.delivery_mode.or(Some(2)),
            message_id: Some(uuid()),
            timestamp: self.message.properties.timestamp,
            headers: (!headers.is_empty()).then_some(headers),
            ..Properties::default()
        };
        Some(Message::new(self.topic.name.clone(), self.message.routing_key.clone(), props, Bytes::from(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso8601_utc_with_millis() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_764_111_541_123), "2025-11-25T22:59:01.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
