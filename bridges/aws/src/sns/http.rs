//! HTTP endpoints: the subscription confirmation round trip and push delivery.
//!
//! A confirmed HTTP subscription is bound to a durable push queue (`sns-push-<id>`); one task
//! per subscription leases its messages and POSTs each to the endpoint. A delivery succeeds on
//! a 2xx answer; otherwise it is retried by the subscription's (or topic's) `DeliveryPolicy`
//! `healthyRetryPolicy` — `numRetries` (default 3), `numNoDelayRetries`, `minDelayTarget` /
//! `maxDelayTarget` seconds (default 20/20) and `backoffFunction` (`linear`, `exponential`,
//! `geometric`, `arithmetic`; all but `linear` double the delay). When the retries are spent,
//! the message goes to the `RedrivePolicy`'s dead-letter queue (with `ErrorCode` and
//! `ErrorMessage` attributes) or is dropped, and the lease is acked either way. Pending
//! messages survive restarts in the push queue.
//!
//! The client is a minimal HTTP/1.1 POST over plain TCP (`Connection: close`); `https` is
//! refused at Subscribe, because the default build carries no TLS stack.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard::exchange::Destination;
use switchyard::queue::state::Delivery;
use switchyard::time::now_ms;
use switchyard::vhost::Outcome;
use switchyard::{FieldTable, FieldValue, Message, Properties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sns::envelope::{MESSAGE_ID_HEADER, RAW_HEADER, iso8601};
use crate::sns::signing::string_to_sign;
use crate::sns::state::Pending;
use crate::sns::subscriptions::{SubInfo, dead_letter_queue};
use crate::sns::xml::uuid;
use crate::sns::{CERT_PATH, Inner};

/// SNS's default HTTP delivery policy, as GetSubscriptionAttributes shows it.
pub const DEFAULT_DELIVERY_POLICY: &str = r#"{"healthyRetryPolicy":{"minDelayTarget":20,"maxDelayTarget":20,"numRetries":3,"numMaxDelayRetries":0,"numNoDelayRetries":0,"numMinDelayRetries":0,"backoffFunction":"linear"},"sicklyRetryPolicy":null,"throttlePolicy":null,"guaranteed":false}"#;

/// How long one POST may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a push lease lasts (longer than any retry schedule we run).
const LEASE_MS: u64 = 3600 * 1000;

/// The retry schedule of one subscription.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    num_retries: u32,
    no_delay: u32,
    min_delay: f64,
    max_delay: f64,
    doubling: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { num_retries: 3, no_delay: 0, min_delay: 20.0, max_delay: 20.0, doubling: false }
    }
}

impl RetryPolicy {
    /// Reads a `DeliveryPolicy` JSON text (its `healthyRetryPolicy`).
    pub fn parse(text: &str) -> Result<RetryPolicy, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("failed to parse JSON: {e}"))?;
        let Some(h) =
            v.get("healthyRetryPolicy").or_else(|| v.get("http").and_then(|x| x.get("defaultHealthyRetryPolicy")))
        else {
            return Ok(RetryPolicy::default());
        };
        let d = RetryPolicy::default();
        let num = |k: &str, dflt: f64| h.get(k).and_then(serde_json::Value::as_f64).unwrap_or(dflt);
        let p = RetryPolicy {
            num_retries: num("numRetries", f64::from(d.num_retries)) as u32,
            no_delay: num("numNoDelayRetries", 0.0) as u32,
            min_delay: num("minDelayTarget", d.min_delay),
            max_delay: num("maxDelayTarget", d.max_delay),
            doubling: h.get("backoffFunction").and_then(serde_json::Value::as_str).is_some_and(|f| f != "linear"),
        };
        if p.num_retries > 100 || p.min_delay < 0.0 || p.max_delay < p.min_delay || p.max_delay > 3600.0 {
            return Err("healthyRetryPolicy values are out of range".into());
        }
        Ok(p)
    }

    /// The delay before retry `n` (1-based).
    fn delay(&self, n: u32) -> Duration {
        if n <= self.no_delay {
            return Duration::ZERO;
        }
        let k = n - self.no_delay;
        let secs = if self.doubling {
            (self.min_delay * 2f64.powi(k.saturating_sub(1).min(30) as i32)).min(self.max_delay)
        } else {
            let span = (self.num_retries.saturating_sub(self.no_delay)).max(2) - 1;
            self.min_delay + (self.max_delay - self.min_delay) * f64::from(k - 1) / f64::from(span)
        };
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// POSTs `body` to an `http://` URL; the status code, or why there is none.
pub async fn post(url: &str, headers: &[(&str, String)], body: &[u8]) -> Result<u16, String> {
    let rest = url.strip_prefix("http://").ok_or("not an http:// URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    let work = async {
        let mut stream = TcpStream::connect(&addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: Amazon Simple Notification Service Agent\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        stream.write_all(body).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| "no HTTP status line".to_string())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work).await.map_err(|_| "timed out".to_string())?
}

/// Sends the `SubscriptionConfirmation` message for a pending subscription (in the background,
/// a few attempts).
pub(super) fn send_confirmation(inner: &Arc<Inner>, pending: &Pending, token: &str) {
    let topic_arn = inner.topic_arn(&pending.topic);
    let message_id = uuid();
    let timestamp = iso8601(now_ms());
    let base = &inner.base_url;
    let subscribe_url = format!("{base}/?Action=ConfirmSubscription&TopicArn={topic_arn}&Token={token}");
    let message = format!(
        "You have chosen to subscribe to the topic {topic_arn}.\nTo confirm the subscription, visit the SubscribeURL included in this message."
    );
    let version = inner.topic_attribute(&pending.topic, "SignatureVersion").unwrap_or_else(|| "1".into());
    let to_sign = string_to_sign(&[
        ("Message", Some(&message)),
        ("MessageId", Some(&message_id)),
        ("SubscribeURL", Some(&subscribe_url)),
        ("Timestamp", Some(&timestamp)),
        ("Token", Some(token)),
        ("TopicArn", Some(&topic_arn)),
        ("Type", Some("SubscriptionConfirmation")),
    ]);
    let inner = Arc::clone(inner);
    let endpoint = pending.endpoint.clone();
    let token = token.to_string();
    tokio::spawn(async move {
        let signature = inner.signer.sign(&version, &to_sign);
        let body = serde_json::json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": message_id,
            "Token": token,
            "TopicArn": topic_arn,
            "Message": message,
            "SubscribeURL": subscribe_url,
            "Timestamp": timestamp,
            "SignatureVersion": version,
            "Signature": signature,
            "SigningCertURL": format!("{}{CERT_PATH}", inner.base_url),
        })
        .to_string();
        let headers = [
            ("x-amz-sns-message-type", "SubscriptionConfirmation".to_string()),
            ("x-amz-sns-message-id", message_id.clone()),
            ("x-amz-sns-topic-arn", topic_arn.clone()),
        ];
        for attempt in 0..3 {
            match post(&endpoint, &headers, body.as_bytes()).await {
                Ok(code) if (200..300).contains(&code) => return,
                Ok(code) => tracing::info!(endpoint = %endpoint, code, attempt, "subscription confirmation refused"),
                Err(e) => tracing::info!(endpoint = %endpoint, error = %e, attempt, "subscription confirmation failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = inner.shutdown.cancelled() => return,
            }
        }
    });
}

/// Starts the push tasks of every confirmed HTTP subscription (at start-up).
pub(super) fn start_all(inner: &Arc<Inner>) {
    for sub in inner.subscriptions(None) {
        if sub.protocol == "http"
            && let Destination::Queue(q) = &sub.binding.destination
        {
            start(inner, sub.arn.clone(), q.clone());
        }
    }
}

/// Starts the push task of one subscription (once).
pub(super) fn start(inner: &Arc<Inner>, arn: String, queue: String) {
    if !inner.pushers.lock().insert(arn.clone()) {
        return;
    }
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        push_loop(&inner, &arn, &queue).await;
        inner.pushers.lock().remove(&arn);
        tracing::debug!(subscription = %arn, "push task ended");
    });
}

async fn push_loop(inner: &Arc<Inner>, arn: &str, queue: &str) {
    loop {
        if inner.shutdown.is_cancelled() {
            return;
        }
        let Some(q) = inner.vhost.queue(queue) else { return };
        let available = q.available();
        tokio::pin!(available);
        available.as_mut().enable();
        let deliveries = match inner.vhost.receive(queue, 10, Some(now_ms() + LEASE_MS), &inner.ctx) {
            Ok((_, ds)) => ds,
            Err(_) => return,
        };
        if deliveries.is_empty() {
            tokio::select! {
                _ = &mut available => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = inner.shutdown.cancelled() => return,
            }
            continue;
        }
        let Ok(sub) = inner.find_subscription(arn) else { return };
        for d in deliveries {
            deliver(inner, &sub, &d).await;
            if let Some(lease) = d.lease {
                inner.vhost.settle(&q, lease, Outcome::Ack);
            }
        }
    }
}

/// Delivers one message with retries; dead-letters it when they are spent.
async fn deliver(inner: &Arc<Inner>, sub: &SubInfo, d: &Delivery) {
    let m = &d.message;
    let header = |k: &str| m.properties.header(k);
    let raw = matches!(header(RAW_HEADER), Some(FieldValue::Bool(true)));
    let mut headers = vec![
        ("x-amz-sns-message-type", "Notification".to_string()),
        (
            "x-amz-sns-message-id",
            header(MESSAGE_ID_HEADER).and_then(FieldValue::as_str).unwrap_or_default().to_string(),
        ),
        ("x-amz-sns-topic-arn", inner.topic_arn(&sub.topic)),
        ("x-amz-sns-subscription-arn", sub.arn.clone()),
    ];
    if raw {
        headers.push(("x-amz-sns-rawdelivery", "true".to_string()));
    }
    let policy_text = sub
        .attribute("DeliveryPolicy")
        .map(str::to_string)
        .or_else(|| inner.topic_attribute(&sub.topic, "DeliveryPolicy"));
    let policy = policy_text.and_then(|t| RetryPolicy::parse(&t).ok()).unwrap_or_default();
    let mut last_error = String::new();
    for attempt in 0..=policy.num_retries {
        if attempt > 0 {
            tokio::select! {
                _ = tokio::time::sleep(policy.delay(attempt)) => {}
                _ = inner.shutdown.cancelled() => return,
            }
        }
        match post(&sub.endpoint, &headers, &m.body).await {
            Ok(code) if (200..300).contains(&code) => return,
            Ok(code) => last_error = format!("HTTP {code}"),
            Err(e) => last_error = e,
        }
        tracing::debug!(subscription = %sub.arn, attempt, error = %last_error, "HTTP delivery failed");
    }
    let dlq = sub.attribute("RedrivePolicy").and_then(dead_letter_queue);
    match dlq {
        Some(dlq) => dead_letter(inner, sub, &dlq, m, &last_error),
        None => {
            tracing::warn!(subscription = %sub.arn, error = %last_error, "HTTP delivery failed after retries; dropped")
        }
    }
}

/// Sends an undeliverable message to the subscription's dead-letter queue.
fn dead_letter(inner: &Inner, sub: &SubInfo, dlq: &str, m: &Message, error: &str) {
    let mut headers = FieldTable::new();
    if let Some(h) = &m.properties.headers {
        for (k, v) in h {
            if !crate::sns::attributes::is_internal(k) || k.starts_with("x-sqs-type.") {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    headers.insert("ErrorCode".into(), FieldValue::text("EndpointUnavailable"));
    headers.insert("ErrorMessage".into(), FieldValue::text(error));
    let props = Properties {
        delivery_mode: Some(2),
        message_id: Some(uuid()),
        timestamp: Some(now_ms() / 1000),
        headers: Some(headers),
        ..Properties::default()
    };
    let copy = Message::new("", dlq, props, Bytes::clone(&m.body));
    match inner.vhost.publish(copy, &inner.ctx) {
        Ok(o) if o.routed => tracing::info!(subscription = %sub.arn, dlq, "undeliverable message dead-lettered"),
        Ok(_) => tracing::warn!(subscription = %sub.arn, dlq, "dead-letter queue missing; message dropped"),
        Err(e) => tracing::warn!(subscription = %sub.arn, dlq, error = %e.text, "dead-lettering failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedules() {
        let p = RetryPolicy::parse(
            r#"{"healthyRetryPolicy":{"numRetries":4,"numNoDelayRetries":1,"minDelayTarget":1,"maxDelayTarget":3,"backoffFunction":"linear"}}"#,
        )
        .expect("valid");
        let delays: Vec<f64> = (1..=4).map(|n| p.delay(n).as_secs_f64()).collect();
        assert_eq!(delays, vec![0.0, 1.0, 2.0, 3.0]);
        let e = RetryPolicy::parse(r#"{"healthyRetryPolicy":{"numRetries":5,"minDelayTarget":1,"maxDelayTarget":5,"backoffFunction":"exponential"}}"#)
            .expect("valid");
        let delays: Vec<f64> = (1..=5).map(|n| e.delay(n).as_secs_f64()).collect();
        assert_eq!(delays, vec![1.0, 2.0, 4.0, 5.0, 5.0]);
        assert_eq!(RetryPolicy::parse("{}").expect("empty"), RetryPolicy::default());
        assert!(RetryPolicy::parse("nope").is_err());
    }
}
