//! Topic actions: CreateTopic, DeleteTopic, ListTopics, Get/SetTopicAttributes and the tag
//! actions.

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard::exchange::{Destination, ExchangeKind};
use switchyard::filter_policy::subscription::EXCHANGE_TYPE;
use switchyard::time::now_ms;
use switchyard::vhost::ExchangeSpec;
use switchyard::{FieldTable, FieldValue};

use crate::sns::error::SnsError;
use crate::sns::params::Params;
use crate::sns::state::TopicState;
use crate::sns::xml::Xml;
use crate::sns::{Inner, Res, core_err};

/// Topic attributes that may be set, besides the create-only `FifoTopic`.
const SETTABLE: &[&str] = &[
    "DisplayName",
    "Policy",
    "DeliveryPolicy",
    "KmsMasterKeyId",
    "SignatureVersion",
    "TracingConfig",
    "ContentBasedDeduplication",
    "ArchivePolicy",
    "DataProtectionPolicy",
    "FifoThroughputScope",
    "HTTPSuccessFeedbackRoleArn",
    "HTTPSuccessFeedbackSampleRate",
    "HTTPFailureFeedbackRoleArn",
    "SQSSuccessFeedbackRoleArn",
    "SQSSuccessFeedbackSampleRate",
    "SQSFailureFeedbackRoleArn",
];

/// Most tags on one topic.
const MAX_TAGS: usize = 50;

/// Argument recording that the exchange is a FIFO topic (visible to AMQP too).
const FIFO_ARG: &str = "x-sns-fifo";

fn valid_topic_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !base.is_empty() && name.len() <= 256 && base.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Checks one topic attribute's value.
fn check_attribute(name: &str, value: &str, fifo: bool) -> Res<()> {
    match name {
        "SignatureVersion" if !matches!(value, "1" | "2") => {
            Err(SnsError::param("SignatureVersion: Invalid value. Must be 1 or 2."))
        }
        "TracingConfig" if !matches!(value, "PassThrough" | "Active") => {
            Err(SnsError::param("TracingConfig: Invalid value. Must be PassThrough or Active."))
        }
        "ContentBasedDeduplication" if !fifo => Err(SnsError::param(
            "ContentBasedDeduplication Reason: ContentBasedDeduplication is only valid for FIFO topics",
        )),
        "ContentBasedDeduplication" if !matches!(value, "true" | "false") => {
            Err(SnsError::param("ContentBasedDeduplication Reason: must be true or false"))
        }
        "DeliveryPolicy" | "Policy" | "ArchivePolicy" | "DataProtectionPolicy" if !value.is_empty() => {
            serde_json::from_str::<serde_json::Value>(value)
                .map(|_| ())
                .map_err(|_| SnsError::param(format!("{name}: failed to parse JSON")))
        }
        "DisplayName" if value.len() > 100 => {
            Err(SnsError::param("DisplayName Reason: must be at most 100 characters"))
        }
        _ => Ok(()),
    }
}

impl Inner {
    /// True if the topic is FIFO.
    pub(super) fn is_fifo_topic(&self, name: &str) -> bool {
        name.ends_with(".fifo")
    }

    /// A topic attribute as set (`None` if unset).
    pub(super) fn topic_attribute(&self, topic: &str, name: &str) -> Option<String> {
        self.state.lock().topics.get(topic).and_then(|t| t.attributes.get(name).cloned())
    }

    pub(super) fn create_topic(self: &Arc<Self>, p: &Params) -> Res<Xml> {
        let name = p.required("Name")?.to_string();
        let mut attrs = p.entry_map("Attributes");
        let tags: BTreeMap<String, String> = p.tags("Tags").into_iter().collect();
        let fifo_attr = attrs.get("FifoTopic").map(String::as_str);
        let fifo = fifo_attr == Some("true");
        if fifo && !name.ends_with(".fifo") || !fifo && name.ends_with(".fifo") {
            return Err(SnsError::param(
                "Fifo Topic names must end with .fifo and must be made up of only uppercase and lowercase ASCII letters, numbers, underscores, and hyphens, and must be between 1 and 256 characters long.",
            ));
        }
        if !valid_topic_name(&name) {
            return Err(SnsError::param("Topic Name"));
        }
        if let Some(v) = fifo_attr
            && !matches!(v, "true" | "false")
        {
            return Err(SnsError::param("FifoTopic Reason: must be true or false"));
        }
        attrs.remove("FifoTopic");
        for (k, v) in &attrs {
            if !SETTABLE.contains(&k.as_str()) {
                return Err(SnsError::param(format!("Attributes Reason: Unknown attribute {k}")));
            }
            check_attribute(k, v, fifo)?;
        }
        if tags.len() > MAX_TAGS {
            return Err(SnsError::TagLimitExceeded(
                "Could not complete request: tag quota of per resource exceeded".into(),
            ));
        }
        if let Some(ex) = self.vhost.exchange(&name) {
            if ex.kind != ExchangeKind::FilterPolicy {
                return Err(SnsError::param(format!(
                    "Name Reason: an exchange named {name} of type {} exists",
                    ex.kind.as_str()
                )));
            }
            let state = self.state.lock();
            let existing = state.topics.get(&name).cloned().unwrap_or_default();
            if !attrs.is_empty() && existing.attributes != attrs {
                return Err(SnsError::param("Attributes Reason: Topic already exists with different attributes"));
            }
            if !tags.is_empty() && existing.tags != tags {
                return Err(SnsError::param("Tags Reason: Topic already exists with different tags"));
            }
            return Ok(topic_arn_xml(&self.topic_arn(&name)));
        }
        let mut arguments = FieldTable::new();
        if fifo {
            arguments.insert(FIFO_ARG.into(), FieldValue::Bool(true));
        }
        arguments.insert("x-sns-created".into(), FieldValue::I64((now_ms() / 1000) as i64));
        let spec = ExchangeSpec {
            name: name.clone(),
            kind: EXCHANGE_TYPE.into(),
            durable: true,
            arguments,
            ..Default::default()
        };
        self.vhost.declare_exchange(spec, &self.ctx).map_err(core_err)?;
        // MQTT and AMQP topic subscribers see the topic's publishes through amq.topic.
        if let Err(e) =
            self.vhost.bind(&name, Destination::Exchange("amq.topic".into()), "#", FieldTable::new(), &self.ctx)
        {
            tracing::warn!(topic = %name, error = %e.text, "cannot bind the topic into amq.topic");
        }
        let mut state = self.state.lock();
        state.topics.insert(name.clone(), TopicState { attributes: attrs, tags });
        self.save_state(&state);
        Ok(topic_arn_xml(&self.topic_arn(&name)))
    }

    pub(super) fn delete_topic(self: &Arc<Self>, p: &Params) -> Res<Xml> {
        let arn = p.required("TopicArn")?;
        let name = match self.topic_from_arn(arn) {
            Ok(n) => n,
            Err(SnsError::NotFound(_)) => return Ok(Xml::new()),
            Err(e) => return Err(e),
        };
        for sub in self.subscriptions(Some(&name)) {
            self.remove_subscription(&sub);
        }
        self.vhost.delete_exchange(&name, false, &self.ctx).map_err(core_err)?;
        let mut state = self.state.lock();
        state.topics.remove(&name);
        state.pending.retain(|_, pend| pend.topic != name);
        self.save_state(&state);
        self.dedup.lock().remove(&name);
        Ok(Xml::new())
    }

    pub(super) fn list_topics(&self, p: &Params) -> Res<Xml> {
        let mut names: Vec<String> = self
            .vhost
            .exchanges()
            .iter()
            .filter(|e| e.kind == ExchangeKind::FilterPolicy)
            .map(|e| e.name.clone())
            .collect();
        names.sort();
        let (page, next) = Self::page(&names, p, 100)?;
        let mut x = Xml::new();
        x.element("Topics", |x| {
            for n in &page {
                x.element("member", |m| {
                    m.field("TopicArn", &self.topic_arn(n));
                });
            }
        });
        if let Some(t) = next {
            x.field("NextToken", &t);
        }
        Ok(x)
    }

    pub(super) fn get_topic_attributes(&self, p: &Params) -> Res<Xml> {
        let name = self.topic_from_arn(p.required("TopicArn")?)?;
        let arn = self.topic_arn(&name);
        let set = self.state.lock().topics.get(&name).cloned().unwrap_or_default();
        let subs = self.subscriptions(Some(&name));
        let pending = self.state.lock().pending.values().filter(|x| x.topic == name).count();
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        out.insert("TopicArn".into(), arn.clone());
        out.insert("Owner".into(), self.cfg.account_id.clone());
        out.insert("DisplayName".into(), String::new());
        out.insert("SubscriptionsConfirmed".into(), subs.len().to_string());
        out.insert("SubscriptionsPending".into(), pending.to_string());
        out.insert("SubscriptionsDeleted".into(), "0".into());
        out.insert("Policy".into(), default_policy(&arn, &self.cfg.account_id));
        out.insert("EffectiveDeliveryPolicy".into(), crate::sns::http::DEFAULT_DELIVERY_POLICY.into());
        if self.is_fifo_topic(&name) {
            out.insert("FifoTopic".into(), "true".into());
            out.insert("ContentBasedDeduplication".into(), "false".into());
        }
        out.extend(set.attributes);
        let mut x = Xml::new();
        x.entries("Attributes", &out);
        Ok(x)
    }

    pub(super) fn set_topic_attributes(&self, p: &Params) -> Res<Xml> {
        let name = self.topic_from_arn(p.required("TopicArn")?)?;
        let attr = p.required("AttributeName")?;
        let value = p.get("AttributeValue").unwrap_or("");
        if !SETTABLE.contains(&attr) {
            return Err(SnsError::param("AttributeName"));
        }
        check_attribute(attr, value, self.is_fifo_topic(&name))?;
        let mut state = self.state.lock();
        state.topics.entry(name).or_default().attributes.insert(attr.to_string(), value.to_string());
        self.save_state(&state);
        Ok(Xml::new())
    }

    /// The topic a tag action names (`ResourceNotFound` otherwise).
    fn tagged_topic(&self, p: &Params) -> Res<String> {
        let arn = p.required("ResourceArn")?;
        self.topic_from_arn(arn).map_err(|e| match e {
            SnsError::NotFound(_) => SnsError::ResourceNotFound("Resource does not exist".into()),
            other => other,
        })
    }

    pub(super) fn tag_resource(&self, p: &Params) -> Res<Xml> {
        let name = self.tagged_topic(p)?;
        let tags = p.tags("Tags");
        for (k, v) in &tags {
            if k.is_empty() || k.len() > 128 || v.len() > 256 || k.starts_with("aws:") {
                return Err(SnsError::param(format!("Tags Reason: invalid tag {k}")));
            }
        }
        let mut state = self.state.lock();
        let t = state.topics.entry(name).or_default();
        let mut merged = t.tags.clone();
        merged.extend(tags);
        if merged.len() > MAX_TAGS {
            return Err(SnsError::TagLimitExceeded(
                "Could not complete request: tag quota of per resource exceeded".into(),
            ));
        }
        t.tags = merged;
        self.save_state(&state);
        Ok(Xml::new())
    }

    pub(super) fn untag_resource(&self, p: &Params) -> Res<Xml> {
        let name = self.tagged_topic(p)?;
        let keys = p.members("TagKeys");
        let mut state = self.state.lock();
        let t = state.topics.entry(name).or_default();
        for k in keys {
            t.tags.remove(&k);
        }
        self.save_state(&state);
        Ok(Xml::new())
    }

    pub(super) fn list_tags(&self, p: &Params) -> Res<Xml> {
        let name = self.tagged_topic(p)?;
        let tags = self.state.lock().topics.get(&name).map(|t| t.tags.clone()).unwrap_or_default();
        let mut x = Xml::new();
        x.element("Tags", |x| {
            for (k, v) in &tags {
                x.element("member", |m| {
                    m.field("Key", k).field("Value", v);
                });
            }
        });
        Ok(x)
    }
}

fn topic_arn_xml(arn: &str) -> Xml {
    let mut x = Xml::new();
    x.field("TopicArn", arn);
    x
}

/// The access policy a new topic has (owner may do everything).
fn default_policy(arn: &str, account: &str) -> String {
    serde_json::json!({
        "Version": "2008-10-17",
        "Id": "__default_policy_ID",
        "Statement": [{
            "Sid": "__default_statement_ID",
            "Effect": "Allow",
            "Principal": {"AWS": "*"},
            "Action": ["SNS:GetTopicAttributes", "SNS:SetTopicAttributes", "SNS:AddPermission", "SNS:RemovePermission",
                       "SNS:DeleteTopic", "SNS:Subscribe", "SNS:ListSubscriptionsByTopic", "SNS:Publish"],
            "Resource": arn,
            "Condition": {"StringEquals": {"AWS:SourceOwner": account}}
        }]
    })
    .to_string()
}
