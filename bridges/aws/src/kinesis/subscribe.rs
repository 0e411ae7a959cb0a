//! SubscribeToShard (enhanced fan-out): the answer is an event stream
//! ([`super::eventstream`]) — an `initial-response` event, then `SubscribeToShardEvent`s with
//! records, `ContinuationSequenceNumber` and `MillisBehindLatest` as records arrive (an empty
//! one at least every 5 s), `ChildShards` at the end of a closed shard, for at most 5 minutes.
//! It is pushed as records become durable (the core's [`Stream::subscribe`] watch). Served on
//! HTTP/2 (h2c prior knowledge, what the Java SDK uses on plain HTTP) and on HTTP/1.1.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};
use switchyard::stream::state::shard_id;
use switchyard::stream::{SequenceNumber, StartPosition, Stream, StreamError};
use switchyard::time::now_ms;

use super::eventstream;
use super::streams::shard_json;
use super::{Input, Kinesis, KinesisError, Res, secs};

/// Longest a subscription lasts.
const SUBSCRIPTION_MS: u64 = 5 * 60 * 1000;
/// An event goes out at least this often, records or not.
const HEARTBEAT: Duration = Duration::from_secs(5);

struct Sub {
    stream: Arc<Stream>,
    shard: u32,
    next: u64,
    wake: tokio::sync::watch::Receiver<u64>,
    until: u64,
    started: bool,
    done: bool,
    cbor: bool,
}

impl Kinesis {
    /// Start a subscription; validation errors are ordinary error answers.
    pub(super) fn subscribe_to_shard(&self, i: &Input<'_>, cbor: bool) -> Res<Response> {
        let arn = i.req_str("ConsumerARN")?;
        let (stream_arn, rest) = arn
            .split_once("/consumer/")
            .ok_or_else(|| KinesisError::InvalidArgument(format!("Invalid ConsumerARN {arn}")))?;
        let consumer = rest.rsplit_once(':').map_or(rest, |(n, _)| n);
        let name = super::arn_stream_name(stream_arn)
            .ok_or_else(|| KinesisError::InvalidArgument(format!("Invalid ConsumerARN {arn}")))?;
        let not_found =
            || KinesisError::ResourceNotFound(format!("Consumer {arn}, account {} not found.", self.account));
        let stream = self.vhost.streams().get(name).ok_or_else(not_found)?;
        if !stream.with_state(|st| st.consumers().iter().any(|c| c.name == consumer)) {
            return Err(not_found());
        }
        let shard = self.shard_arg(i, "ShardId")?;
        let pos = i.obj("StartingPosition")?.ok_or_else(|| super::missing("StartingPosition"))?;
        let kind = pos.req_str("Type")?;
        let seq = || -> Res<SequenceNumber> {
            let s = pos.str_opt("SequenceNumber")?.ok_or_else(|| {
                KinesisError::InvalidArgument(format!("SequenceNumber must be specified for StartingPosition {kind}"))
            })?;
            SequenceNumber::parse(s)
                .ok_or_else(|| KinesisError::InvalidArgument(format!("Invalid StartingSequenceNumber {s}")))
        };
        let start = match kind {
            "TRIM_HORIZON" => StartPosition::TrimHorizon,
            "LATEST" => StartPosition::Latest,
            "AT_SEQUENCE_NUMBER" => StartPosition::At(seq()?),
            "AFTER_SEQUENCE_NUMBER" => StartPosition::After(seq()?),
            "AT_TIMESTAMP" => StartPosition::AtTimestamp(pos.time_opt("Timestamp")?.ok_or_else(|| {
                KinesisError::InvalidArgument("Timestamp must be specified for StartingPosition AT_TIMESTAMP".into())
            })?),
            other => return Err(KinesisError::Validation(format!("Invalid StartingPosition type {other}"))),
        };
        let next = stream.start(shard, start).map_err(|e| match e {
            StreamError::ShardNotFound { .. } => KinesisError::ResourceNotFound(format!(
                "Shard {} in stream {name} under account {} does not exist",
                shard_id(shard),
                self.account
            )),
            e => self.err(e),
        })?;
        let sub = Sub {
            wake: stream.subscribe(),
            stream,
            shard,
            next,
            until: now_ms() + SUBSCRIPTION_MS,
            started: false,
            done: false,
            cbor,
        };
        let body = Body::from_stream(futures_util::stream::unfold(sub, |s| async move {
            next_event(s).await.map(|(bytes, s)| (Ok::<Bytes, Infallible>(bytes), s))
        }));
        let mut resp = (StatusCode::OK, body).into_response();
        resp.headers_mut().insert("content-type", HeaderValue::from_static("application/vnd.amazon.eventstream"));
        Ok(resp)
    }
}

fn payload(v: &Value, cbor: bool) -> (Vec<u8>, &'static str) {
    if cbor {
        (super::cbor::encode(v), super::cbor::CONTENT_TYPE)
    } else {
        (v.to_string().into_bytes(), "application/json")
    }
}

/// The next event of a subscription, or `None` when it ends.
async fn next_event(mut s: Sub) -> Option<(Bytes, Sub)> {
    if s.done {
        return None;
    }
    if !s.started {
        s.started = true;
        let (p, ct) = payload(&json!({}), s.cbor);
        return Some((Bytes::from(eventstream::event("initial-response", ct, &p)), s));
    }
    loop {
        let now = now_ms();
        if now >= s.until || s.stream.is_deleted() {
            return None;
        }
        s.wake.borrow_and_update();
        let batch = s.stream.read(s.shard, s.next, 10_000, 1 << 20, now).ok()?;
        if batch.records.is_empty() && !batch.end_of_shard {
            let timeout = tokio::time::sleep(HEARTBEAT);
            tokio::select! {
                r = s.wake.changed() => {
                    if r.is_err() { return None; }
                    continue;
                }
                _ = timeout => {}
            }
        }
        let records: Vec<Value> = batch
            .records
            .iter()
            .map(|r| {
                json!({
                    "SequenceNumber": r.sequence.to_string(),
                    "ApproximateArrivalTimestamp": secs(r.arrival),
                    "Data": STANDARD.encode(&r.data),
                    "PartitionKey": r.partition_key,
                })
            })
            .collect();
        let last = batch
            .records
            .last()
            .map(|r| r.sequence)
            .unwrap_or(SequenceNumber { counter: batch.next.saturating_sub(1), shard: s.shard });
        s.next = batch.next;
        let mut ev = json!({
            "Records": records,
            "ContinuationSequenceNumber": last.to_string(),
            "MillisBehindLatest": batch.millis_behind_latest,
        });
        if batch.end_of_shard {
            s.done = true;
            let children: Vec<Value> = batch
                .children
                .iter()
                .map(|c| {
                    let parents: Vec<String> =
                        [c.parent, c.adjacent_parent].into_iter().flatten().map(shard_id).collect();
                    json!({ "ShardId": c.id(), "ParentShards": parents, "HashKeyRange": shard_json(c)["HashKeyRange"] })
                })
                .collect();
            ev["ChildShards"] = json!(children);
        }
        let (p, ct) = payload(&ev, s.cbor);
        return Some((Bytes::from(eventstream::event("SubscribeToShardEvent", ct, &p)), s));
    }
}
