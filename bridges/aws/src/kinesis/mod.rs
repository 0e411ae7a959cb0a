//! Amazon Kinesis Data Streams on the core's streams ([`switchyard::stream`]), in the AWS JSON
//! 1.1 protocol (`X-Amz-Target: Kinesis_20131202.<Action>`).
//!
//! A Kinesis stream *is* the core stream of the same name in the configured vhost, so AMQP
//! and the WebSocket tail see the same records. Everything Kinesis-specific lives here:
//! input validation and AWS's texts ([`error`]), opaque expiring shard iterators
//! ([`iterator`]), per-shard throughput limits in strict mode ([`limits`]), and the actions
//! ([`streams`]: stream, shard, tag and consumer management; [`records`]: put and get), and
//! the CBOR encoding the Java SDK uses ([`cbor`]), and SubscribeToShard's event stream
//! ([`subscribe`], [`eventstream`]).
//!
//! Time: every handler reads [`Kinesis::now`], the vhost's stream clock
//! (`switchyard::stream::Streams::now`): the wall clock plus an offset that a test can move
//! forward (`[aws.kinesis] test_clock = true` enables the `SwitchyardAdvanceClock` action).
//! The retention timers and the AMQP face read the same clock, so the 5-minute iterator
//! expiry and retention expiry are testable without waiting.

pub mod cbor;
pub mod error;
pub mod eventstream;
pub mod iterator;
pub mod limits;
pub mod records;
pub mod streams;
pub mod subscribe;

use std::sync::Arc;

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard::auth::User;
use switchyard::stream::Stream;
use switchyard::time::Millis;
use switchyard::{BrokerHandle, CoreError, VHost};

pub use error::KinesisError;
use error::json_error;
use limits::Limits;

/// The content type of JSON 1.1 answers.
const JSON_TYPE: &str = "application/x-amz-json-1.1";

/// Parse a JSON 1.1 request body (empty means `{}`).
fn parse_json(body: &[u8]) -> Res<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(KinesisError::Serialization("Expected a JSON object".into())),
        Err(e) => Err(KinesisError::Serialization(e.to_string())),
    }
}

/// The `X-Amz-Target` prefix of Kinesis actions.
pub const TARGET_PREFIX: &str = "Kinesis_20131202";

/// Whether per-shard throughput limits are enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Throughput {
    /// AWS's per-shard limits (1,000 records/s and 1 MiB/s in, 5 reads/s and 2 MiB/s out).
    #[default]
    Strict,
    /// No throughput limits.
    Relaxed,
}

/// The `[aws.kinesis]` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KinesisConfig {
    /// `strict` (default) or `relaxed` per-shard throughput limits.
    pub throughput: Throughput,
    /// Allow the `SwitchyardAdvanceClock` action (tests only: moves this service's clock).
    pub test_clock: bool,
    /// MQTT topic filters whose publishes are appended to a stream (see [`MqttIngest`]).
    pub mqtt_ingest: Vec<MqttIngest>,
}

/// One MQTT ingest mapping: publishes matching `topic_filter` (on `exchange`, where the MQTT
/// front-end publishes; topic `a/b/c` is routing key `a.b.c`) are appended to `stream`, the
/// partition key being topic level `partition_key_level` (0-based). The stream is created
/// (with `shards` shards) and bound at start-up if needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttIngest {
    /// MQTT topic filter (`+` and `#` wildcards).
    pub topic_filter: String,
    /// Stream name.
    pub stream: String,
    /// Topic level (0-based) used as partition key; absent: the whole topic.
    #[serde(default)]
    pub partition_key_level: Option<u32>,
    /// Shards of the stream if it is created.
    #[serde(default = "one")]
    pub shards: u32,
    /// The exchange MQTT publishes to.
    #[serde(default = "amq_topic")]
    pub exchange: String,
}

fn one() -> u32 {
    1
}

fn amq_topic() -> String {
    "amq.topic".into()
}

/// An MQTT topic filter as an AMQP topic binding key (`/` → `.`, `+` → `*`, `#` stays).
pub fn mqtt_filter_to_binding_key(filter: &str) -> String {
    filter.split('/').map(|l| if l == "+" { "*" } else { l }).collect::<Vec<_>>().join(".")
}

type Res<T> = Result<T, KinesisError>;

/// The Kinesis service.
#[derive(Debug)]
pub struct Kinesis {
    vhost: Arc<VHost>,
    account: String,
    region: String,
    limits: Limits,
    test_clock: bool,
}

impl Kinesis {
    /// Kinesis on `vhost`'s streams; requests act as an internal superuser of that vhost.
    pub fn new(
        broker: &BrokerHandle,
        vhost: &str,
        account: &str,
        region: &str,
        cfg: &KinesisConfig,
    ) -> Result<Kinesis, CoreError> {
        let user = User::superuser("aws-kinesis", &[vhost]);
        let vhost = broker.open_vhost(vhost, &user)?;
        let ctx = switchyard::ClientContext { connection: broker.next_connection_id(), user };
        for m in &cfg.mqtt_ingest {
            if vhost.streams().get(&m.stream).is_none() {
                let mut extra = switchyard::FieldTable::new();
                if let Some(level) = m.partition_key_level {
                    extra.insert("x-stream-partition-key-level".into(), switchyard::FieldValue::I64(i64::from(level)));
                }
                vhost
                    .declare_stream(&m.stream, m.shards, switchyard::stream::StreamSettings::default(), extra)
                    .map_err(CoreError::from)?;
            }
            let key = mqtt_filter_to_binding_key(&m.topic_filter);
            let dest = switchyard::exchange::Destination::Queue(m.stream.clone());
            vhost.bind(&m.exchange, dest, &key, switchyard::FieldTable::new(), &ctx)?;
            tracing::info!(filter = %m.topic_filter, stream = %m.stream, "MQTT ingest into a stream");
        }
        Ok(Kinesis {
            vhost,
            account: account.to_string(),
            region: region.to_string(),
            limits: Limits::new(cfg.throughput == Throughput::Strict),
            test_clock: cfg.test_clock,
        })
    }

    /// This service's notion of now: the vhost's stream clock (the wall clock plus the test
    /// offset), shared with the retention timers and the other front-ends.
    pub fn now(&self) -> Millis {
        self.vhost.streams().now()
    }

    /// Runs a request in JSON 1.1, or in CBOR when `content_type` says so; the answer
    /// (and any error) is in the request's encoding.
    pub async fn handle(&self, action: &str, body: &[u8], content_type: Option<&str>) -> Response {
        let cbor = content_type.is_some_and(|c| c.starts_with(cbor::CONTENT_TYPE));
        let input = if cbor { cbor::decode(body) } else { parse_json(body) };
        if action == "SubscribeToShard" {
            match input.and_then(|i| self.subscribe_to_shard(&Input(&i), cbor)) {
                Ok(resp) => return resp,
                Err(e) if cbor => {
                    let body = cbor::encode(&json!({ "__type": e.code(), "message": e.to_string() }));
                    let mut resp = (e.status(), body).into_response();
                    resp.headers_mut().insert("content-type", HeaderValue::from_static(cbor::CONTENT_TYPE));
                    return resp;
                }
                Err(e) => return json_error(&e),
            }
        }
        let result = match input {
            Ok(input) => self.call(action, &input).await,
            Err(e) => Err(e),
        };
        let (status, body, ctype) = match result {
            Ok(v) => (axum::http::StatusCode::OK, v, if cbor { cbor::CONTENT_TYPE } else { JSON_TYPE }),
            Err(e) => {
                tracing::debug!(action, error = %e, code = e.code(), "kinesis request refused");
                if !cbor {
                    return json_error(&e);
                }
                (e.status(), json!({ "__type": e.code(), "message": e.to_string() }), cbor::CONTENT_TYPE)
            }
        };
        let bytes = if cbor { cbor::encode(&body) } else { body.to_string().into_bytes() };
        let mut resp = (status, bytes).into_response();
        resp.headers_mut().insert("content-type", HeaderValue::from_static(ctype));
        resp
    }

    /// Runs `action` on an input in the JSON shape (blobs as base64 strings, timestamps as
    /// epoch seconds); CBOR requests are converted to this shape first.
    pub async fn call(&self, action: &str, input: &Value) -> Res<Value> {
        let i = Input(input);
        match action {
            "CreateStream" => self.create_stream(&i),
            "DeleteStream" => self.delete_stream(&i),
            "DescribeStream" => self.describe_stream(&i),
            "DescribeStreamSummary" => self.describe_stream_summary(&i),
            "ListStreams" => self.list_streams(&i),
            "ListShards" => self.list_shards(&i),
            "SplitShard" => self.split_shard(&i),
            "MergeShards" => self.merge_shards(&i),
            "UpdateShardCount" => self.update_shard_count(&i),
            "IncreaseStreamRetentionPeriod" => self.change_retention(&i, true),
            "DecreaseStreamRetentionPeriod" => self.change_retention(&i, false),
            "AddTagsToStream" => self.add_tags(&i),
            "ListTagsForStream" => self.list_tags(&i),
            "RemoveTagsFromStream" => self.remove_tags(&i),
            "UpdateStreamMode" => self.update_stream_mode(&i),
            "RegisterStreamConsumer" => self.register_consumer(&i),
            "DescribeStreamConsumer" => self.describe_consumer(&i),
            "ListStreamConsumers" => self.list_consumers(&i),
            "DeregisterStreamConsumer" => self.deregister_consumer(&i),
            "PutRecord" => self.put_record(&i).await,
            "PutRecords" => self.put_records(&i).await,
            "GetShardIterator" => self.get_shard_iterator(&i),
            "GetRecords" => self.get_records(&i),
            "SwitchyardAdvanceClock" if self.test_clock => {
                let ms = i.req_u64("Millis")?;
                Ok(json!({ "Now": self.vhost.streams().advance_clock(ms) }))
            }
            "EnableEnhancedMonitoring"
            | "DisableEnhancedMonitoring"
            | "StartStreamEncryption"
            | "StopStreamEncryption"
            | "DescribeLimits"
            | "UpdateMaxRecordSize"
            | "GetResourcePolicy"
            | "PutResourcePolicy"
            | "DeleteResourcePolicy"
            | "TagResource"
            | "UntagResource"
            | "ListTagsForResource"
            | "DescribeAccountSettings"
            | "UpdateAccountSettings" => {
                Err(KinesisError::InvalidArgument(format!("{action} is not supported by this broker yet")))
            }
            other => Err(KinesisError::UnknownOperation(format!("Unknown operation {TARGET_PREFIX}.{other}"))),
        }
    }

    fn err(&self, e: switchyard::stream::StreamError) -> KinesisError {
        KinesisError::from_stream(e, &self.account)
    }

    fn stream_arn(&self, name: &str) -> String {
        format!("arn:aws:kinesis:{}:{}:stream/{name}", self.region, self.account)
    }

    /// The stream named by `StreamName` or `StreamARN`.
    fn stream(&self, i: &Input<'_>) -> Res<Arc<Stream>> {
        let name = self.stream_name(i)?;
        self.vhost.streams().get(&name).ok_or_else(|| {
            KinesisError::ResourceNotFound(format!("Stream {name} under account {} not found.", self.account))
        })
    }

    /// The name from `StreamName`, else from `StreamARN`.
    fn stream_name(&self, i: &Input<'_>) -> Res<String> {
        if let Some(n) = i.str_opt("StreamName")? {
            return Ok(n.to_string());
        }
        if let Some(arn) = i.str_opt("StreamARN")? {
            return arn_stream_name(arn)
                .map(str::to_string)
                .ok_or_else(|| KinesisError::InvalidArgument(format!("Invalid StreamARN {arn}")));
        }
        Err(KinesisError::Validation("Either StreamName or StreamARN should be provided.".into()))
    }
}

/// The stream name in `arn:aws:kinesis:<region>:<account>:stream/<name>[/consumer/...]`.
fn arn_stream_name(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    let (_, resource) = rest.split_once(":stream/")?;
    let name = resource.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// Epoch seconds (what JSON 1.1 timestamps are).
fn secs(ms: Millis) -> Value {
    json!(ms as f64 / 1000.0)
}

/// Typed access to a request's fields; a wrong type is a `SerializationException`, a
/// missing required field a `ValidationException`, as AWS answers.
struct Input<'a>(&'a Value);

impl Input<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    fn str_opt(&self, k: &str) -> Res<Option<&str>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(KinesisError::Serialization(format!("Expected a string for {k}"))),
        }
    }

    fn req_str(&self, k: &str) -> Res<&str> {
        self.str_opt(k)?.ok_or_else(|| missing(k))
    }

    fn i64_opt(&self, k: &str) -> Res<Option<i64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| KinesisError::Serialization(format!("Expected an integer for {k}"))),
        }
    }

    fn req_i64(&self, k: &str) -> Res<i64> {
        self.i64_opt(k)?.ok_or_else(|| missing(k))
    }

    fn req_u64(&self, k: &str) -> Res<u64> {
        let v = self.req_i64(k)?;
        u64::try_from(v).map_err(|_| KinesisError::Validation(format!("{k} must not be negative")))
    }

    fn bool_opt(&self, k: &str) -> Res<Option<bool>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(KinesisError::Serialization(format!("Expected a boolean for {k}"))),
        }
    }

    /// A timestamp: epoch seconds (number), or a numeric string.
    fn time_opt(&self, k: &str) -> Res<Option<Millis>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => {
                let secs = v
                    .as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| KinesisError::Serialization(format!("Expected a timestamp for {k}")))?;
                Ok(Some((secs.max(0.0) * 1000.0) as Millis))
            }
        }
    }

    fn obj(&self, k: &str) -> Res<Option<Input<'_>>> {
        match self.get(k) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(Input(v))),
            Some(_) => Err(KinesisError::Serialization(format!("Expected an object for {k}"))),
        }
    }

    fn array(&self, k: &str) -> Res<Option<&Vec<Value>>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(KinesisError::Serialization(format!("Expected a list for {k}"))),
        }
    }
}

fn missing(k: &str) -> KinesisError {
    let mut member = k.to_string();
    if let Some(first) = member.get_mut(0..1) {
        first.make_ascii_lowercase();
    }
    KinesisError::Validation(format!(
        "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_filters_become_binding_keys() {
        assert_eq!(mqtt_filter_to_binding_key("sensors/+/temp"), "sensors.*.temp");
        assert_eq!(mqtt_filter_to_binding_key("a/#"), "a.#");
        assert_eq!(mqtt_filter_to_binding_key("plain"), "plain");
    }

    #[test]
    fn stream_names_come_out_of_arns() {
        assert_eq!(arn_stream_name("arn:aws:kinesis:us-east-1:000000000000:stream/clicks"), Some("clicks"));
        assert_eq!(
            arn_stream_name("arn:aws:kinesis:us-east-1:000000000000:stream/clicks/consumer/c:1700000000"),
            Some("clicks")
        );
        assert_eq!(arn_stream_name("arn:aws:sqs:us-east-1:000000000000:q"), None);
        assert_eq!(arn_stream_name("clicks"), None);
    }

    #[test]
    fn inputs_are_typed() {
        let v = json!({"A": "x", "N": 3, "F": 1.5, "B": true, "T": 1700000000.25});
        let i = Input(&v);
        assert_eq!(i.req_str("A").ok(), Some("x"));
        assert!(matches!(i.req_str("N"), Err(KinesisError::Serialization(_))));
        assert!(matches!(i.req_str("Missing"), Err(KinesisError::Validation(_))));
        assert_eq!(i.req_i64("N").ok(), Some(3));
        assert!(i.req_i64("F").is_err());
        assert_eq!(i.bool_opt("B").ok(), Some(Some(true)));
        assert_eq!(i.time_opt("T").ok(), Some(Some(1_700_000_000_250)));
    }
}
