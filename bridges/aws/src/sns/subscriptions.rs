//! Subscription actions: Subscribe, Unsubscribe, ConfirmSubscription, ListSubscriptions(ByTopic),
//! Get/SetSubscriptionAttributes. A confirmed subscription is a binding of the topic exchange;
//! its attributes are the binding's arguments.

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard::exchange::{Binding, Destination, ExchangeKind};
use switchyard::filter_policy::subscription::{
    ARG_FILTER_POLICY, ARG_FILTER_POLICY_SCOPE, ARG_RAW_DELIVERY, ARG_SUBSCRIPTION_ARN,
};
use switchyard::filter_policy::{Scope, parse};
use switchyard::vhost::QueueSpec;
use switchyard::{FieldTable, FieldValue};

use crate::sns::error::SnsError;
use crate::sns::params::Params;
use crate::sns::state::Pending;
use crate::sns::xml::{Xml, uuid};
use crate::sns::{Inner, Res, core_err, http};

/// Binding argument: `sqs` or `http`.
pub const ARG_PROTOCOL: &str = "x-sns-protocol";
/// Binding argument: the endpoint as given (queue ARN or URL).
pub const ARG_ENDPOINT: &str = "x-sns-endpoint";
/// Binding argument: the other subscription attributes, as JSON text.
pub const ARG_ATTRIBUTES: &str = "x-sns-attributes";
/// Binding argument: the confirmation token an HTTP subscription was confirmed with.
pub const ARG_TOKEN: &str = "x-sns-token";
/// Prefix of the push queues of HTTP subscriptions.
pub const PUSH_QUEUE_PREFIX: &str = "sns-push-";

/// Subscription attributes that may be set.
const SETTABLE: &[&str] = &[
    "DeliveryPolicy",
    "FilterPolicy",
    "FilterPolicyScope",
    "RawMessageDelivery",
    "RedrivePolicy",
    "SubscriptionRoleArn",
    "ReplayPolicy",
];

/// One confirmed subscription, read back from its binding.
#[derive(Debug, Clone)]
pub struct SubInfo {
    /// Topic name.
    pub topic: String,
    /// The binding.
    pub binding: Binding,
    /// Subscription ARN.
    pub arn: String,
    /// `sqs` or `http`.
    pub protocol: String,
    /// Queue ARN or URL.
    pub endpoint: String,
    /// Settable attributes that are set.
    pub attributes: BTreeMap<String, String>,
}

fn text<'a>(args: &'a FieldTable, k: &str) -> Option<&'a str> {
    args.get(k).and_then(FieldValue::as_str)
}

impl SubInfo {
    fn from_binding(topic: &str, b: &Binding) -> Option<SubInfo> {
        let arn = text(&b.arguments, ARG_SUBSCRIPTION_ARN)?.to_string();
        let mut attributes: BTreeMap<String, String> =
            text(&b.arguments, ARG_ATTRIBUTES).and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
        if let Some(p) = text(&b.arguments, ARG_FILTER_POLICY) {
            attributes.insert("FilterPolicy".into(), p.to_string());
            attributes.insert("FilterPolicyScope".into(), "MessageAttributes".into());
        }
        if let Some(s) = text(&b.arguments, ARG_FILTER_POLICY_SCOPE) {
            attributes.insert("FilterPolicyScope".into(), s.to_string());
        }
        let raw = matches!(b.arguments.get(ARG_RAW_DELIVERY), Some(FieldValue::Bool(true)));
        attributes.insert("RawMessageDelivery".into(), raw.to_string());
        Some(SubInfo {
            topic: topic.to_string(),
            binding: b.clone(),
            arn,
            protocol: text(&b.arguments, ARG_PROTOCOL).unwrap_or("sqs").to_string(),
            endpoint: text(&b.arguments, ARG_ENDPOINT).unwrap_or_default().to_string(),
            attributes,
        })
    }

    /// A subscription attribute (`None` when unset).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }
}

/// Validates subscription attributes; `reason` prefixes error texts (`Attributes Reason: `
/// for Subscribe, empty for SetSubscriptionAttributes).
fn check_attributes(attrs: &BTreeMap<String, String>, reason: &str, unknown: &dyn Fn(&str) -> SnsError) -> Res<()> {
    for (k, v) in attrs {
        if !SETTABLE.contains(&k.as_str()) {
            return Err(unknown(k));
        }
        match k.as_str() {
            "RawMessageDelivery" if !matches!(v.as_str(), "true" | "false") => {
                return Err(SnsError::param(format!(
                    "{reason}RawMessageDelivery: Invalid value [{v}]. Must be true or false."
                )));
            }
            "FilterPolicyScope" if Scope::parse(v).is_none() => {
                return Err(SnsError::param(format!(
                    "{reason}FilterPolicyScope: Invalid value [{v}]. Please use either MessageBody or MessageAttributes"
                )));
            }
            "RedrivePolicy" if !v.is_empty() => {
                let ok = serde_json::from_str::<serde_json::Value>(v).ok().and_then(|j| {
                    j.get("deadLetterTargetArn").and_then(|a| a.as_str()).map(|a| a.starts_with("arn:aws:sqs:"))
                });
                if ok != Some(true) {
                    return Err(SnsError::param(format!(
                        "{reason}RedrivePolicy: deadLetterTargetArn is invalid or missing"
                    )));
                }
            }
            "DeliveryPolicy" if !v.is_empty() => {
                http::RetryPolicy::parse(v).map_err(|e| SnsError::param(format!("{reason}DeliveryPolicy: {e}")))?;
            }
            _ => {}
        }
    }
    if let Some(p) = attrs.get("FilterPolicy").filter(|p| !p.is_empty()) {
        let scope = attrs.get("FilterPolicyScope").and_then(|s| Scope::parse(s)).unwrap_or_default();
        parse(p, scope).map_err(|e| SnsError::param(format!("{reason}{e}")))?;
    }
    Ok(())
}

/// The binding arguments for a subscription.
fn binding_args(arn: &str, protocol: &str, endpoint: &str, attrs: &BTreeMap<String, String>) -> FieldTable {
    let mut args = FieldTable::new();
    args.insert(ARG_SUBSCRIPTION_ARN.into(), FieldValue::text(arn));
    args.insert(ARG_PROTOCOL.into(), FieldValue::text(protocol));
    args.insert(ARG_ENDPOINT.into(), FieldValue::text(endpoint));
    if let Some(p) = attrs.get("FilterPolicy").filter(|p| !p.is_empty()) {
        args.insert(ARG_FILTER_POLICY.into(), FieldValue::text(p));
    }
    if let Some(s) = attrs.get("FilterPolicyScope").filter(|s| !s.is_empty()) {
        args.insert(ARG_FILTER_POLICY_SCOPE.into(), FieldValue::text(s));
    }
    if attrs.get("RawMessageDelivery").map(String::as_str) == Some("true") {
        args.insert(ARG_RAW_DELIVERY.into(), FieldValue::Bool(true));
    }
    let rest: BTreeMap<&String, &String> = attrs
        .iter()
        .filter(|(k, v)| {
            !matches!(k.as_str(), "FilterPolicy" | "FilterPolicyScope" | "RawMessageDelivery") && !v.is_empty()
        })
        .collect();
    if !rest.is_empty()
        && let Ok(json) = serde_json::to_string(&rest)
    {
        args.insert(ARG_ATTRIBUTES.into(), FieldValue::text(json));
    }
    args
}

/// The queue an SQS ARN names.
fn queue_of_arn(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts[..] {
        ["arn", _, "sqs", _, _, name] if !name.is_empty() => Some(name),
        _ => None,
    }
}

/// The queue a `RedrivePolicy`'s `deadLetterTargetArn` names.
pub fn dead_letter_queue(policy: &str) -> Option<String> {
    let j: serde_json::Value = serde_json::from_str(policy).ok()?;
    queue_of_arn(j.get("deadLetterTargetArn")?.as_str()?).map(str::to_string)
}

impl Inner {
    /// Confirmed subscriptions, of one topic or of all, in topic then creation order.
    pub(super) fn subscriptions(&self, topic: Option<&str>) -> Vec<SubInfo> {
        let mut exchanges: Vec<_> = self
            .vhost
            .exchanges()
            .into_iter()
            .filter(|e| e.kind == ExchangeKind::FilterPolicy && topic.is_none_or(|t| t == e.name))
            .collect();
        exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        exchanges
            .iter()
            .flat_map(|e| e.bindings().into_iter().filter_map(|b| SubInfo::from_binding(&e.name, &b)))
            .collect()
    }

    /// A confirmed subscription by ARN.
    pub(super) fn find_subscription(&self, arn: &str) -> Res<SubInfo> {
        let (topic_arn, _) = arn.rsplit_once(':').ok_or_else(|| SnsError::param("SubscriptionArn"))?;
        let topic = topic_arn.rsplit(':').next().unwrap_or_default();
        if !arn.starts_with("arn:aws:sns:") || topic.is_empty() {
            return Err(SnsError::param("SubscriptionArn"));
        }
        self.subscriptions(Some(topic))
            .into_iter()
            .find(|s| s.arn == arn)
            .ok_or_else(|| SnsError::NotFound("Subscription does not exist".into()))
    }

    /// Removes a subscription's binding (and an HTTP subscription's push queue).
    pub(super) fn remove_subscription(&self, sub: &SubInfo) {
        if let Err(e) = self.vhost.unbind(
            &sub.topic,
            sub.binding.destination.clone(),
            &sub.binding.key,
            &sub.binding.arguments,
            &self.ctx,
        ) {
            tracing::warn!(subscription = %sub.arn, error = %e.text, "unbinding a subscription failed");
        }
        if sub.protocol != "sqs"
            && let Destination::Queue(q) = &sub.binding.destination
            && let Err(e) = self.vhost.delete_queue(q, false, false, &self.ctx)
        {
            tracing::warn!(queue = %q, error = %e.text, "deleting a push queue failed");
        }
    }

    pub(super) fn subscribe(self: &Arc<Self>, p: &Params) -> Res<Xml> {
        let topic = self.topic_from_arn(p.required("TopicArn")?)?;
        let protocol = p.required("Protocol")?.to_string();
        let endpoint = p.get("Endpoint").unwrap_or("").to_string();
        let attrs = p.entry_map("Attributes");
        check_attributes(&attrs, "Attributes Reason: ", &|k| {
            SnsError::param(format!("Attributes Reason: Unknown attribute {k}"))
        })?;
        let return_arn = p.get("ReturnSubscriptionArn") == Some("true");
        let fifo = self.is_fifo_topic(&topic);
        let destination = match protocol.as_str() {
            "sqs" => {
                let q = queue_of_arn(&endpoint).ok_or_else(|| SnsError::param("SQS endpoint ARN"))?;
                if self.vhost.queue(q).is_none() {
                    return Err(SnsError::param(format!("Endpoint Reason: no SQS queue named {q} exists")));
                }
                if q.ends_with(".fifo") && !fifo {
                    return Err(SnsError::param(
                        "Endpoint Reason: FIFO SQS Queues can not be subscribed to standard SNS topics",
                    ));
                }
                Some(q.to_string())
            }
            "http" => {
                if !endpoint.starts_with("http://") || endpoint.len() <= "http://".len() {
                    return Err(SnsError::param("Endpoint must match the specified protocol"));
                }
                None
            }
            "https" => {
                return Err(SnsError::param(
                    "Endpoint Reason: https endpoints are not supported: Switchyard's default build has no TLS client; subscribe an http:// endpoint",
                ));
            }
            "email" | "email-json" | "sms" | "lambda" | "application" | "firehose" => {
                return Err(SnsError::param(format!(
                    "Protocol Reason: {protocol} subscriptions are not supported by Switchyard (supported: sqs, http)"
                )));
            }
            other => return Err(SnsError::param(format!("Amazon SNS does not support this protocol string: {other}"))),
        };
        // Subscribing the same endpoint again returns the existing subscription.
        if let Some(existing) =
            self.subscriptions(Some(&topic)).into_iter().find(|s| s.protocol == protocol && s.endpoint == endpoint)
        {
            let same = attrs.iter().all(|(k, v)| existing.attribute(k).unwrap_or("") == v.as_str());
            if !same {
                return Err(SnsError::param(
                    "Attributes Reason: Subscription already exists with different attributes",
                ));
            }
            let mut x = Xml::new();
            x.field("SubscriptionArn", &existing.arn);
            return Ok(x);
        }
        let id = uuid();
        let arn = format!("{}:{id}", self.topic_arn(&topic));
        let mut x = Xml::new();
        match destination {
            Some(queue) => {
                let args = binding_args(&arn, &protocol, &endpoint, &attrs);
                self.vhost.bind(&topic, Destination::Queue(queue), &id, args, &self.ctx).map_err(core_err)?;
                x.field("SubscriptionArn", &arn);
            }
            None => {
                let token = hex::encode(rand::random::<[u8; 32]>()) + &hex::encode(rand::random::<[u8; 32]>());
                let pending = Pending { topic: topic.clone(), id, protocol, endpoint, attributes: attrs };
                {
                    let mut state = self.state.lock();
                    state.pending.insert(token.clone(), pending.clone());
                    self.save_state(&state);
                }
                http::send_confirmation(self, &pending, &token);
                x.field("SubscriptionArn", if return_arn { arn.as_str() } else { "pending confirmation" });
            }
        }
        Ok(x)
    }

    pub(super) fn confirm_subscription(self: &Arc<Self>, p: &Params) -> Res<Xml> {
        let topic = self.topic_from_arn(p.required("TopicArn")?)?;
        let token = p.required("Token")?;
        let pending = self.state.lock().pending.get(token).cloned();
        let arn = match pending {
            Some(pend) if pend.topic == topic => {
                let arn = format!("{}:{}", self.topic_arn(&topic), pend.id);
                let queue = format!("{PUSH_QUEUE_PREFIX}{}", pend.id);
                let spec = QueueSpec { name: queue.clone(), durable: true, ..Default::default() };
                self.vhost.declare_queue(spec, &self.ctx).map_err(core_err)?;
                let mut args = binding_args(&arn, &pend.protocol, &pend.endpoint, &pend.attributes);
                args.insert(ARG_TOKEN.into(), FieldValue::text(token));
                self.vhost
                    .bind(&topic, Destination::Queue(queue.clone()), &pend.id, args, &self.ctx)
                    .map_err(core_err)?;
                let mut state = self.state.lock();
                state.pending.remove(token);
                self.save_state(&state);
                drop(state);
                http::start(self, arn.clone(), queue);
                arn
            }
            _ => self
                .subscriptions(Some(&topic))
                .into_iter()
                .find(|s| text(&s.binding.arguments, ARG_TOKEN) == Some(token))
                .map(|s| s.arn)
                .ok_or_else(|| SnsError::param("Token"))?,
        };
        let mut x = Xml::new();
        x.field("SubscriptionArn", &arn);
        Ok(x)
    }

    pub(super) fn unsubscribe(&self, p: &Params) -> Res<Xml> {
        let arn = p.required("SubscriptionArn")?;
        let sub = self.find_subscription(arn)?;
        self.remove_subscription(&sub);
        Ok(Xml::new())
    }

    pub(super) fn list_subscriptions(&self, p: &Params, topic: Option<&str>) -> Res<Xml> {
        let mut rows: Vec<(String, String, String, String)> = self
            .subscriptions(topic)
            .into_iter()
            .map(|s| (self.topic_arn(&s.topic), s.protocol, s.arn, s.endpoint))
            .collect();
        for pend in self.state.lock().pending.values() {
            if topic.is_none_or(|t| t == pend.topic) {
                rows.push((
                    self.topic_arn(&pend.topic),
                    pend.protocol.clone(),
                    "PendingConfirmation".into(),
                    pend.endpoint.clone(),
                ));
            }
        }
        let (page, next) = Self::page(&rows, p, 100)?;
        let mut x = Xml::new();
        x.element("Subscriptions", |x| {
            for (topic_arn, protocol, arn, endpoint) in &page {
                x.element("member", |m| {
                    m.field("TopicArn", topic_arn)
                        .field("Protocol", protocol)
                        .field("SubscriptionArn", arn)
                        .field("Owner", &self.cfg.account_id)
                        .field("Endpoint", endpoint);
                });
            }
        });
        if let Some(t) = next {
            x.field("NextToken", &t);
        }
        Ok(x)
    }

    pub(super) fn get_subscription_attributes(&self, p: &Params) -> Res<Xml> {
        let sub = self.find_subscription(p.required("SubscriptionArn")?)?;
        let mut out = sub.attributes.clone();
        out.insert("SubscriptionArn".into(), sub.arn.clone());
        out.insert("TopicArn".into(), self.topic_arn(&sub.topic));
        out.insert("Owner".into(), self.cfg.account_id.clone());
        out.insert("Protocol".into(), sub.protocol.clone());
        out.insert("Endpoint".into(), sub.endpoint.clone());
        out.insert("ConfirmationWasAuthenticated".into(), "true".into());
        out.insert("PendingConfirmation".into(), "false".into());
        if sub.protocol == "http" {
            let policy = sub.attribute("DeliveryPolicy").map(str::to_string);
            out.insert(
                "EffectiveDeliveryPolicy".into(),
                policy.unwrap_or_else(|| http::DEFAULT_DELIVERY_POLICY.to_string()),
            );
        }
        let mut x = Xml::new();
        x.entries("Attributes", &out);
        Ok(x)
    }

    pub(super) fn set_subscription_attributes(&self, p: &Params) -> Res<Xml> {
        let sub = self.find_subscription(p.required("SubscriptionArn")?)?;
        let name = p.required("AttributeName")?.to_string();
        let value = p.get("AttributeValue").unwrap_or("").to_string();
        let mut attrs = sub.attributes.clone();
        if name == "FilterPolicy" && value.is_empty() {
            attrs.remove("FilterPolicy");
            attrs.remove("FilterPolicyScope");
        } else {
            attrs.insert(name.clone(), value);
        }
        check_attributes(&attrs, "", &|_| SnsError::param("AttributeName"))?;
        let args = binding_args(&sub.arn, &sub.protocol, &sub.endpoint, &attrs);
        let mut args = args;
        if let Some(t) = text(&sub.binding.arguments, ARG_TOKEN) {
            args.insert(ARG_TOKEN.into(), FieldValue::text(t));
        }
        let new = Binding { arguments: args, ..sub.binding.clone() };
        if !self.vhost.replace_binding(&sub.topic, &sub.binding, new).map_err(core_err)? {
            return Err(SnsError::NotFound("Subscription does not exist".into()));
        }
        Ok(Xml::new())
    }
}
