//! The filter-policy exchange type (`x-sns`): its bindings are *subscriptions*.
//!
//! An `x-sns` exchange routes a message to every binding whose filter policy accepts it. A
//! binding's arguments carry the subscription's attributes, so they persist with the binding
//! in the vhost's definitions file and are visible to AMQP (`queue.bind` may set them too):
//!
//! | argument | meaning |
//! |---|---|
//! | `x-filter-policy` | the policy's JSON text (absent: every message) |
//! | `x-filter-policy-scope` | `MessageAttributes` (default) or `MessageBody` |
//! | `x-raw-delivery` | true: raw delivery (the transform is told; with none, nothing changes) |
//! | `x-subscription-arn` | the subscription's identifier (front-ends name it) |
//!
//! What a subscribed queue receives is decided by a [`DeliveryTransform`] registered on the
//! vhost for the exchange type (the AWS front-end registers one that wraps the message in SNS's
//! JSON envelope, or for raw delivery the message and its attributes). With no transform,
//! destinations get the message unchanged. Bindings to other exchanges always forward the published message unchanged.

use std::sync::Arc;

use crate::exchange::{Binding, Destination, Exchange};
use crate::filter_policy::{FilterPolicy, MessageView, PolicyError, Scope, parse};
use crate::message::{FieldTable, FieldValue, Message};

/// The AMQP type name of filter-policy exchanges.
pub const EXCHANGE_TYPE: &str = "x-sns";
/// Binding argument: the filter policy's JSON text.
pub const ARG_FILTER_POLICY: &str = "x-filter-policy";
/// Binding argument: the policy's scope.
pub const ARG_FILTER_POLICY_SCOPE: &str = "x-filter-policy-scope";
/// Binding argument: deliver the published message itself, not a transformed one.
pub const ARG_RAW_DELIVERY: &str = "x-raw-delivery";
/// Binding argument: the subscription's identifier.
pub const ARG_SUBSCRIPTION_ARN: &str = "x-subscription-arn";

/// A binding of an `x-sns` exchange with its policy compiled.
#[derive(Debug)]
pub struct Subscription {
    /// Where accepted messages go.
    pub destination: Destination,
    /// The binding key (not used for routing).
    pub key: String,
    /// The binding's arguments, as given.
    pub arguments: FieldTable,
    /// The compiled policy; `None` accepts everything.
    pub policy: Option<FilterPolicy>,
    /// Deliver the published message unchanged.
    pub raw: bool,
}

impl Subscription {
    /// Compiles a binding's subscription attributes, refusing a bad policy with SNS's text.
    pub fn from_binding(b: &Binding) -> Result<Subscription, PolicyError> {
        let text = |k: &str| b.arguments.get(k).and_then(FieldValue::as_str);
        let scope = match text(ARG_FILTER_POLICY_SCOPE) {
            None => Scope::MessageAttributes,
            Some(s) => Scope::parse(s).ok_or_else(|| {
                PolicyError(format!(
                    "FilterPolicyScope: Invalid value [{s}]. Please use either MessageBody or MessageAttributes"
                ))
            })?,
        };
        let policy = match text(ARG_FILTER_POLICY) {
            None | Some("") => None,
            Some(p) => Some(parse(p, scope)?),
        };
        let raw = match b.arguments.get(ARG_RAW_DELIVERY) {
            Some(FieldValue::Bool(v)) => *v,
            Some(v) => v.as_str() == Some("true"),
            None => false,
        };
        Ok(Subscription {
            destination: b.destination.clone(),
            key: b.key.clone(),
            arguments: b.arguments.clone(),
            policy,
            raw,
        })
    }

    /// The subscription's identifier, if the binding names one.
    pub fn arn(&self) -> Option<&str> {
        self.arguments.get(ARG_SUBSCRIPTION_ARN).and_then(FieldValue::as_str)
    }

    /// True when the policy accepts the message.
    pub fn accepts(&self, message: &MessageView<'_>) -> bool {
        self.policy.as_ref().is_none_or(|p| p.matches(message))
    }
}

/// Builds what each subscribed queue of a filter-policy exchange receives. Registered on a
/// vhost by a front-end ([`crate::VHost::set_delivery_transform`]); the core stays unaware of
/// the format it produces.
pub trait DeliveryTransform: Send + Sync + std::fmt::Debug {
    /// Called once per publish that reaches `topic` and matches at least one queue
    /// subscription; the returned value is asked once per matching queue subscription.
    fn begin<'a>(&'a self, topic: &'a Exchange, message: &'a Message) -> Box<dyn TopicPublish + 'a>;
}

/// One publish's per-subscription message builder (see [`DeliveryTransform::begin`]).
pub trait TopicPublish {
    /// The message `subscription`'s queue gets; `None` delivers the published one unchanged.
    fn message_for(&mut self, subscription: &Subscription) -> Option<Message>;
}

/// Compiles every binding of a filter-policy exchange, skipping (and logging) any whose
/// policy no longer validates, so one bad stored binding cannot stop routing.
pub(crate) fn compile_all(topic: &str, list: &[Binding]) -> Vec<Arc<Subscription>> {
    list.iter()
        .filter_map(|b| match Subscription::from_binding(b) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::warn!(exchange = topic, error = %e, "binding with an invalid filter policy ignored");
                None
            }
        })
        .collect()
}

/// Routes `message` through filter-policy exchange `topic`: every accepting subscription's
/// destination, with the transform's message for queue subscriptions (`None` where the
/// published message goes unchanged).
pub(crate) fn route_topic(
    topic: &Exchange,
    message: &Message,
    transform: Option<&dyn DeliveryTransform>,
    out: &mut Vec<(Destination, Option<Message>)>,
) {
    let view = MessageView::new(message.properties.headers.as_ref(), &message.body);
    let mut subs = Vec::new();
    topic.route_subscriptions(&view, &mut subs);
    let mut publish: Option<Box<dyn TopicPublish + '_>> = None;
    for s in subs {
        let own = match (&s.destination, transform) {
            (Destination::Queue(_), Some(t)) => publish.get_or_insert_with(|| t.begin(topic, message)).message_for(&s),
            _ => None,
        };
        out.push((s.destination.clone(), own));
    }
}
