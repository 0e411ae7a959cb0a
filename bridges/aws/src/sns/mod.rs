//! Amazon SNS on the core's filter-policy exchanges: the query protocol (form in, XML out,
//! `Version=2010-03-31`).
//!
//! - A **topic** is a durable core exchange of type `x-sns` named like the topic; it is bound
//!   into `amq.topic` with key `#`, and SNS publishes use the topic name as routing key, so
//!   MQTT subscribers to `<topic>` or `<topic>/#` (AMQP: `amq.topic` with `<topic>.#`) get
//!   every publish. Attributes and tags live in [`state`].
//! - A **subscription** is a binding of that exchange whose arguments carry its attributes
//!   (see `switchyard::filter_policy::subscription`): `sqs` subscriptions bind the queue named
//!   by the ARN; `http` subscriptions bind a durable push queue `sns-push-<id>` that
//!   [`http`] drains to the endpoint with retries, backoff and a dead-letter queue.
//! - **Publishing** ([`publish`]) sends one core message to the topic exchange; the
//!   [`envelope::Envelope`] transform, registered on the vhost, builds each subscription's
//!   copy (SNS's JSON envelope, signed, or the raw message with its attributes). AMQP, STOMP and
//!   MQTT publishes to the exchange go through the same transform.
//!
//! Module map: [`params`] (flattened form parameters), [`xml`] (responses), [`error`] (codes),
//! [`topics`], [`subscriptions`], [`publish`], [`attributes`] (message attributes ⇄ headers),
//! [`envelope`], [`signing`] (RSA signatures and the certificate), [`http`] (push delivery),
//! [`state`].

pub mod attributes;
#[cfg(test)]
mod bench;
pub mod envelope;
pub mod error;
pub mod http;
pub mod params;
pub mod publish;
pub mod signing;
pub mod state;
pub mod subscriptions;
pub mod topics;
pub mod xml;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use switchyard::auth::User;
use switchyard::exchange::{Exchange, ExchangeKind};
use switchyard::time::{Millis, now_ms};
use switchyard::{BrokerHandle, ClientContext, CoreError, ErrorKind, VHost};
use tokio_util::sync::CancellationToken;

use crate::config::AwsConfig;
use error::SnsError;
use params::Params;
use signing::Signer;
use state::{State, StateFile};

/// The API version SNS query requests carry.
pub const VERSION: &str = "2010-03-31";

/// The path the signing certificate is served at.
pub const CERT_PATH: &str = "/_switchyard/sns/SimpleNotificationService.pem";

/// The actions this module serves (and so routes to SNS in the query protocol).
pub const ACTIONS: &[&str] = &[
    "CreateTopic",
    "DeleteTopic",
    "ListTopics",
    "GetTopicAttributes",
    "SetTopicAttributes",
    "Subscribe",
    "Unsubscribe",
    "ConfirmSubscription",
    "ListSubscriptions",
    "ListSubscriptionsByTopic",
    "GetSubscriptionAttributes",
    "SetSubscriptionAttributes",
    "Publish",
    "PublishBatch",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
];

type Res<T> = Result<T, SnsError>;

/// One FIFO topic's deduplication window: dedup id → (MessageId, SequenceNumber, expiry).
type DedupWindow = HashMap<String, (String, String, Millis)>;

/// The SNS service; cheap to clone.
#[derive(Debug, Clone)]
pub struct Sns {
    inner: Arc<Inner>,
}

/// Shared state of the service.
#[derive(Debug)]
struct Inner {
    broker: BrokerHandle,
    vhost: Arc<VHost>,
    ctx: ClientContext,
    cfg: AwsConfig,
    /// `http://<listener address>`: the base of SubscribeURL, UnsubscribeURL, SigningCertURL.
    base_url: String,
    state: Mutex<State>,
    file: StateFile,
    signer: Signer,
    /// FIFO topics' deduplication answers: topic → dedup id → (MessageId, SequenceNumber, until).
    dedup: Mutex<HashMap<String, DedupWindow>>,
    sequence: AtomicU64,
    /// Subscription ARNs whose HTTP push task runs.
    pushers: Mutex<std::collections::HashSet<String>>,
    shutdown: CancellationToken,
}

/// Maps a core error onto SNS's codes.
fn core_err(e: CoreError) -> SnsError {
    match e.kind {
        ErrorKind::NotFound => SnsError::NotFound(e.text),
        ErrorKind::AccessRefused => SnsError::AuthorizationError(e.text),
        ErrorKind::PreconditionFailed => SnsError::param(e.text),
        _ => SnsError::Internal(e.text),
    }
}

impl Sns {
    /// SNS on the vhost named in `cfg`; `base_url` is how clients reach this listener.
    pub fn new(
        broker: BrokerHandle,
        cfg: AwsConfig,
        base_url: String,
        shutdown: CancellationToken,
    ) -> Result<Sns, CoreError> {
        let user = User::superuser("aws-sns", &[cfg.vhost.as_str()]);
        let vhost = broker.open_vhost(&cfg.vhost, &user)?;
        let ctx = ClientContext { connection: broker.next_connection_id(), user };
        let file = StateFile::new(Some(&broker.config().data_dir));
        let state = file.load();
        let signer = Signer::default();
        signer.warm_up();
        let inner = Arc::new(Inner {
            broker,
            vhost,
            ctx,
            cfg,
            base_url,
            state: Mutex::new(state),
            file,
            signer,
            dedup: Mutex::new(HashMap::new()),
            sequence: AtomicU64::new(now_ms().saturating_mul(1000)),
            pushers: Mutex::new(Default::default()),
            shutdown,
        });
        inner.vhost.set_delivery_transform(Arc::new(envelope::Envelope::new(Arc::downgrade(&inner))));
        http::start_all(&inner);
        Ok(Sns { inner })
    }

    /// Handles the unauthenticated SNS requests: the certificate download and GETs of the
    /// SubscribeURL/UnsubscribeURL links SNS sends out. `None` for anything else.
    pub async fn try_handle_public(&self, method: &Method, uri: &Uri) -> Option<Response> {
        if method != Method::GET {
            return None;
        }
        if uri.path() == CERT_PATH {
            return Some(match self.inner.signer.certificate_pem() {
                Some(pem) => {
                    let mut r = (StatusCode::OK, pem).into_response();
                    r.headers_mut().insert("content-type", HeaderValue::from_static("application/x-pem-file"));
                    r
                }
                None => (StatusCode::SERVICE_UNAVAILABLE, "no signing key").into_response(),
            });
        }
        let params = Params::parse(uri.query().unwrap_or("").as_bytes());
        match params.get("Action") {
            Some("ConfirmSubscription" | "Unsubscribe") => self.try_handle(uri, &[]).await,
            _ => None,
        }
    }

    /// Handles a query-protocol request (form body, or the URL query when the body is empty)
    /// that names an SNS action or SNS's API version; `None` leaves it to the other services.
    pub async fn try_handle(&self, uri: &Uri, body: &[u8]) -> Option<Response> {
        let params =
            if body.is_empty() { Params::parse(uri.query().unwrap_or("").as_bytes()) } else { Params::parse(body) };
        let action = params.get("Action")?.to_string();
        let is_sns = params.get("Version") == Some(VERSION) || ACTIONS.contains(&action.as_str());
        if !is_sns {
            return None;
        }
        Some(match self.inner.call(&action, &params).await {
            Ok(result) => xml::ok(&action, result),
            Err(e) => e.to_response(),
        })
    }
}

impl Inner {
    async fn call(self: &Arc<Self>, action: &str, p: &Params) -> Res<xml::Xml> {
        match action {
            "CreateTopic" => self.create_topic(p),
            "DeleteTopic" => self.delete_topic(p),
            "ListTopics" => self.list_topics(p),
            "GetTopicAttributes" => self.get_topic_attributes(p),
            "SetTopicAttributes" => self.set_topic_attributes(p),
            "TagResource" => self.tag_resource(p),
            "UntagResource" => self.untag_resource(p),
            "ListTagsForResource" => self.list_tags(p),
            "Subscribe" => self.subscribe(p),
            "Unsubscribe" => self.unsubscribe(p),
            "ConfirmSubscription" => self.confirm_subscription(p),
            "ListSubscriptions" => self.list_subscriptions(p, None),
            "ListSubscriptionsByTopic" => {
                let topic = self.topic_from_arn(p.required("TopicArn")?)?;
                self.list_subscriptions(p, Some(&topic))
            }
            "GetSubscriptionAttributes" => self.get_subscription_attributes(p),
            "SetSubscriptionAttributes" => self.set_subscription_attributes(p),
            "Publish" => self.publish(p).await,
            "PublishBatch" => self.publish_batch(p).await,
            other => Err(SnsError::InvalidAction(format!("Unrecognized operation {other}"))),
        }
    }

    fn topic_arn(&self, name: &str) -> String {
        format!("arn:aws:sns:{}:{}:{name}", self.cfg.region, self.cfg.account_id)
    }

    /// The topic name an ARN names, checked to exist.
    fn topic_from_arn(&self, arn: &str) -> Res<String> {
        let parts: Vec<&str> = arn.split(':').collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[2] != "sns" || parts[5].is_empty() {
            return Err(SnsError::param("TopicArn"));
        }
        let name = parts[5].to_string();
        self.topic(&name)?;
        Ok(name)
    }

    /// The topic exchange by name.
    fn topic(&self, name: &str) -> Res<Arc<Exchange>> {
        match self.vhost.exchange(name) {
            Some(ex) if ex.kind == ExchangeKind::FilterPolicy => Ok(ex),
            _ => Err(SnsError::no_topic()),
        }
    }

    fn save_state(&self, state: &State) {
        if let Err(e) = self.file.save(state) {
            tracing::error!(error = %e, "cannot save the SNS state file");
        }
    }

    /// Page `items` by `NextToken` (an offset) and `limit`; returns the page and the next token.
    fn page<T: Clone>(items: &[T], p: &Params, limit: usize) -> Res<(Vec<T>, Option<String>)> {
        let start = match p.get("NextToken") {
            None | Some("") => 0,
            Some(t) => t.parse::<usize>().map_err(|_| SnsError::param("NextToken"))?,
        };
        let end = start.saturating_add(limit).min(items.len());
        let page = items.get(start..end).map(<[T]>::to_vec).unwrap_or_default();
        Ok((page, (end < items.len()).then(|| end.to_string())))
    }
}
