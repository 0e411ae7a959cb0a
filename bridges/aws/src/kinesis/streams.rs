//! Stream, shard, tag and consumer management actions.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use switchyard::FieldTable;
use switchyard::stream::hashkey::parse_explicit;
use switchyard::stream::state::{
    DEFAULT_RETENTION_HOURS, MAX_RETENTION_HOURS, ShardMeta, StreamState, parse_shard_id, shard_id,
};
use switchyard::stream::{StreamMode, StreamSettings};
use switchyard::time::Millis;

use super::{Input, Kinesis, KinesisError, Res, secs};

/// Shards of a new on-demand stream.
const ON_DEMAND_SHARDS: u32 = 4;

fn mode_name(m: StreamMode) -> &'static str {
    match m {
        StreamMode::Provisioned => "PROVISIONED",
        StreamMode::OnDemand => "ON_DEMAND",
    }
}

fn parse_mode(i: &Input<'_>) -> Res<Option<StreamMode>> {
    let Some(d) = i.obj("StreamModeDetails")? else { return Ok(None) };
    match d.req_str("StreamMode")? {
        "PROVISIONED" => Ok(Some(StreamMode::Provisioned)),
        "ON_DEMAND" => Ok(Some(StreamMode::OnDemand)),
        other => Err(KinesisError::Validation(format!(
            "1 validation error detected: Value '{other}' at 'streamModeDetails.streamMode' failed to satisfy constraint: Member must satisfy enum value set: [ON_DEMAND, PROVISIONED]"
        ))),
    }
}

/// Kinesis' stream name rule: 1–128 of `[a-zA-Z0-9_.-]`.
fn check_stream_name(name: &str) -> Res<()> {
    if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        return Err(KinesisError::Validation(format!(
            "1 validation error detected: Value '{name}' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
        )));
    }
    Ok(())
}

/// The JSON shape of a shard.
pub(super) fn shard_json(s: &ShardMeta) -> Value {
    let mut range = json!({ "StartingSequenceNumber": s.starting_sequence().to_string() });
    if let Some(end) = s.ending_sequence() {
        range["EndingSequenceNumber"] = json!(end.to_string());
    }
    let mut v = json!({
        "ShardId": s.id(),
        "HashKeyRange": { "StartingHashKey": s.start_hash.to_string(), "EndingHashKey": s.end_hash.to_string() },
        "SequenceNumberRange": range,
    });
    if let Some(p) = s.parent {
        v["ParentShardId"] = json!(shard_id(p));
    }
    if let Some(p) = s.adjacent_parent {
        v["AdjacentParentShardId"] = json!(shard_id(p));
    }
    v
}

/// When a shard opened: its parents' closing time, else the stream's creation.
fn opened_at(st: &StreamState, s: &ShardMeta) -> Millis {
    s.parent.and_then(|p| st.shard(p)).and_then(|p| p.closed_at).unwrap_or_else(|| st.created_at())
}

impl Kinesis {
    pub(super) fn create_stream(&self, i: &Input<'_>) -> Res<Value> {
        let name = i.req_str("StreamName")?;
        check_stream_name(name)?;
        let mode = parse_mode(i)?;
        let count = i.i64_opt("ShardCount")?;
        let (mode, shards) = match (mode, count) {
            (Some(StreamMode::OnDemand), None) | (None, None) => (StreamMode::OnDemand, ON_DEMAND_SHARDS),
            (Some(StreamMode::OnDemand), Some(_)) => {
                return Err(KinesisError::InvalidArgument(
                    "ShardCount must not be specified for an ON_DEMAND stream.".into(),
                ));
            }
            (Some(StreamMode::Provisioned), None) => {
                return Err(KinesisError::InvalidArgument("ShardCount is required for a PROVISIONED stream.".into()));
            }
            (_, Some(n)) => {
                if !(1..=500).contains(&n) {
                    return Err(KinesisError::Validation(format!(
                        "1 validation error detected: Value '{n}' at 'shardCount' failed to satisfy constraint: Member must have value between 1 and 500"
                    )));
                }
                (StreamMode::Provisioned, n as u32)
            }
        };
        if self.vhost.queue(name).is_some() {
            return Err(KinesisError::ResourceInUse(format!(
                "Stream {name} under account {} already exists (as a queue).",
                self.account
            )));
        }
        let settings = StreamSettings { mode, ..StreamSettings::default() };
        let stream = self.vhost.declare_stream(name, shards, settings, FieldTable::new()).map_err(|e| self.err(e))?;
        if let Some(tags) = i.obj("Tags")? {
            let tags = tag_map(&tags)?;
            stream.update(|st| st.add_tags(&tags).map(|_| ())).map_err(|e| self.err(e))?;
        }
        tracing::info!(stream = name, shards, mode = mode_name(mode), "kinesis stream created");
        Ok(json!({}))
    }

    pub(super) fn delete_stream(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream(i)?;
        let enforce = i.bool_opt("EnforceConsumerDeletion")?.unwrap_or(false);
        if !enforce && stream.with_state(|st| !st.consumers().is_empty()) {
            return Err(KinesisError::ResourceInUse(format!(
                "Stream {} under account {} has registered consumers.",
                stream.name(),
                self.account
            )));
        }
        self.vhost.delete_stream(stream.name()).map_err(|e| self.err(e))?;
        Ok(json!({}))
    }

    fn summary(&self, st: &StreamState) -> Value {
        json!({
            "StreamName": st.name(),
            "StreamARN": self.stream_arn(st.name()),
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": { "StreamMode": mode_name(st.settings().mode) },
            "RetentionPeriodHours": st.settings().retention_hours,
            "StreamCreationTimestamp": secs(st.created_at()),
            "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
            "EncryptionType": "NONE",
        })
    }

    pub(super) fn describe_stream(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream(i)?;
        let limit = i.i64_opt("Limit")?.unwrap_or(100);
        if !(1..=10_000).contains(&limit) {
            return Err(KinesisError::Validation(format!(
                "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: Member must have value between 1 and 10000"
            )));
        }
        let after = match i.str_opt("ExclusiveStartShardId")? {
            Some(s) => Some(parse_shard_id(s).ok_or_else(|| bad_shard_id(s))?),
            None => None,
        };
        Ok(stream.with_state(|st| {
            let all: Vec<_> = st.shards().into_iter().filter(|s| after.is_none_or(|a| s.index > a)).collect();
            let more = all.len() > limit as usize;
            let shards: Vec<Value> = all.iter().take(limit as usize).map(shard_json).collect();
            let mut d = self.summary(st);
            d["Shards"] = json!(shards);
            d["HasMoreShards"] = json!(more);
            json!({ "StreamDescription": d })
        }))
    }

    pub(super) fn describe_stream_summary(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream(i)?;
        Ok(stream.with_state(|st| {
            let mut d = self.summary(st);
            d["OpenShardCount"] = json!(st.open_shard_count());
            d["ConsumerCount"] = json!(st.consumers().len());
            json!({ "StreamDescriptionSummary": d })
        }))
    }

    pub(super) fn list_streams(&self, i: &Input<'_>) -> Res<Value> {
        let limit = i.i64_opt("Limit")?.unwrap_or(100).clamp(1, 10_000) as usize;
        let after = match (i.str_opt("NextToken")?, i.str_opt("ExclusiveStartStreamName")?) {
            (Some(t), _) => Some(
                URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| KinesisError::InvalidArgument(format!("Invalid NextToken {t}")))?,
            ),
            (None, s) => s.map(str::to_string),
        };
        let all: Vec<_> =
            self.vhost.streams().list().into_iter().filter(|s| after.as_deref().is_none_or(|a| s.name() > a)).collect();
        let more = all.len() > limit;
        let page = &all[..all.len().min(limit)];
        let names: Vec<&str> = page.iter().map(|s| s.name()).collect();
        let summaries: Vec<Value> = page
            .iter()
            .map(|s| {
                s.with_state(|st| {
                    json!({
                        "StreamName": st.name(),
                        "StreamARN": self.stream_arn(st.name()),
                        "StreamStatus": "ACTIVE",
                        "StreamModeDetails": { "StreamMode": mode_name(st.settings().mode) },
                        "StreamCreationTimestamp": secs(st.created_at()),
                    })
                })
            })
            .collect();
        let mut out = json!({ "StreamNames": names, "HasMoreStreams": more, "StreamSummaries": summaries });
        if more && let Some(last) = names.last() {
            out["NextToken"] = json!(URL_SAFE_NO_PAD.encode(last));
        }
        Ok(out)
    }

    pub(super) fn list_shards(&self, i: &Input<'_>) -> Res<Value> {
        let token = i.str_opt("NextToken")?;
        let has_name = i.str_opt("StreamName")?.is_some() || i.str_opt("StreamARN")?.is_some();
        let max = i.i64_opt("MaxResults")?.unwrap_or(1000);
        if !(1..=10_000).contains(&max) {
            return Err(KinesisError::InvalidArgument(format!(
                "1 validation error detected: Value '{max}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 10000"
            )));
        }
        let (stream, mut after, filter) = match token {
            Some(t) => {
                if has_name || i.str_opt("ExclusiveStartShardId")?.is_some() || i.get("ShardFilter").is_some() {
                    return Err(KinesisError::InvalidArgument(
                        "NextToken and StreamName cannot be provided together.".into(),
                    ));
                }
                let (name, after) = decode_shard_token(t)?;
                let stream = self.vhost.streams().get(&name).ok_or_else(|| {
                    KinesisError::ResourceNotFound(format!("Stream {name} under account {} not found.", self.account))
                })?;
                (stream, Some(after), None)
            }
            None => {
                let after = match i.str_opt("ExclusiveStartShardId")? {
                    Some(s) => Some(parse_shard_id(s).ok_or_else(|| bad_shard_id(s))?),
                    None => None,
                };
                (self.stream(i)?, after, i.obj("ShardFilter")?.map(|f| parse_filter(&f)).transpose()?)
            }
        };
        if let Some(ShardFilter::AfterShardId(id)) = &filter {
            after = Some(after.map_or(*id, |a| a.max(*id)));
        }
        Ok(stream.with_state(|st| {
            let shards = st.shards();
            let present: Vec<u32> = shards.iter().map(|s| s.index).collect();
            let selected: Vec<&ShardMeta> = shards
                .iter()
                .filter(|s| after.is_none_or(|a| s.index > a))
                .filter(|s| match &filter {
                    None | Some(ShardFilter::AfterShardId(_)) | Some(ShardFilter::FromTrimHorizon) => true,
                    Some(ShardFilter::AtTrimHorizon) => {
                        s.parent.is_none_or(|p| !present.contains(&p))
                            && s.adjacent_parent.is_none_or(|p| !present.contains(&p))
                    }
                    Some(ShardFilter::AtLatest) => s.is_open(),
                    Some(ShardFilter::AtTimestamp(t)) => opened_at(st, s) <= *t && s.closed_at.is_none_or(|c| c > *t),
                    Some(ShardFilter::FromTimestamp(t)) => s.closed_at.is_none_or(|c| c >= *t),
                })
                .collect();
            let more = selected.len() > max as usize;
            let page: Vec<&ShardMeta> = selected.into_iter().take(max as usize).collect();
            let mut out = json!({ "Shards": page.iter().map(|s| shard_json(s)).collect::<Vec<_>>() });
            if more && let Some(last) = page.last() {
                out["NextToken"] = json!(encode_shard_token(st.name(), last.index));
            }
            out
        }))
    }

    pub(super) fn split_shard(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream(i)?;
        let shard = self.shard_arg(i, "ShardToSplit")?;
        let key_text = i.req_str("NewStartingHashKey")?;
        let key = parse_explicit(key_text).ok_or_else(|| {
            KinesisError::InvalidArgument(format!("NewStartingHashKey {key_text} is not a valid hash key"))
        })?;
        self.check_provisioned(&stream)?;
        let now = self.now();
        stream.update(|st| st.split(shard, key, now).map(|_| ())).map_err(|e| self.err(e))?;
        Ok(json!({}))
    }

    pub(super) fn merge_shards(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream(i)?;
        let a = self.shard_arg(i, "ShardToMerge")?;
        let b = self.shard_arg(i, "AdjacentShardToMerge")?;
        self.check_provisioned(&stream)?;
        let now = self.now();
        stream.update(|st| st.merge(a, b, now).map(|_| ())).map_err(|e| self.err(e))?;
        Ok(json!({}))
    }

    pub(super) fn update_shard_count(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream(i)?;
        let target = i.req_i64("TargetShardCount")?;
        let scaling = i.req_str("ScalingType")?;
        if scaling != "UNIFORM_SCALING" {
            return Err(KinesisError::Validation(format!(
                "1 validation error detected: Value '{scaling}' at 'scalingType' failed to satisfy constraint: Member must satisfy enum value set: [UNIFORM_SCALING]"
            )));
        }
        let target = u32::try_from(target)
            .map_err(|_| KinesisError::InvalidArgument(format!("TargetShardCount {target} is out of range")))?;
        self.check_provisioned(&stream)?;
        let now = self.now();
        let current = stream.with_state(StreamState::open_shard_count);
        stream.update(|st| st.update_shard_count(target, now).map(|_| ())).map_err(|e| self.err(e))?;
        Ok(json!({
            "StreamName": stream.name(),
            "StreamARN": self.stream_arn(stream.name()),
            "CurrentShardCount": current,
            "TargetShardCount": target,
        }))
    }

    fn check_provisioned(&self, stream: &switchyard::stream::Stream) -> Res<()> {
        if stream.with_state(|st| st.settings().mode) == StreamMode::OnDemand {
            return Err(KinesisError::Validation(format!(
                "This operation is not permitted on stream {} in ON_DEMAND mode.",
                stream.name()
            )));
        }
        Ok(())
    }

    pub(super) fn shard_arg(&self, i: &Input<'_>, key: &str) -> Res<u32> {
        let s = i.req_str(key)?;
        parse_shard_id(s).ok_or_else(|| bad_shard_id(s))
    }

    pub(super) fn change_retention(&self, i: &Input<'_>, increase: bool) -> Res<Value> {
        let stream = self.stream(i)?;
        let hours = i.req_i64("RetentionPeriodHours")?;
        let current = stream.with_state(|st| st.settings().retention_hours);
        if !(i64::from(DEFAULT_RETENTION_HOURS)..=i64::from(MAX_RETENTION_HOURS)).contains(&hours) {
            return Err(KinesisError::InvalidArgument(format!(
                "Minimum allowed retention period is {DEFAULT_RETENTION_HOURS} hours. Maximum allowed retention period is {MAX_RETENTION_HOURS} hours. Requested retention period ({hours} hours) is too {}.",
                if hours < i64::from(DEFAULT_RETENTION_HOURS) { "short" } else { "long" }
            )));
        }
        let hours = hours as u32;
        if increase && hours < current {
            return Err(KinesisError::InvalidArgument(format!(
                "Requested retention period ({hours} hours) for stream {} can not be shorter than existing retention period ({current} hours). Use DecreaseRetentionPeriod API.",
                stream.name()
            )));
        }
        if !increase && hours > current {
            return Err(KinesisError::InvalidArgument(format!(
                "Requested retention period ({hours} hours) for stream {} can not be longer than existing retention period ({current} hours). Use IncreaseRetentionPeriod API.",
                stream.name()
            )));
        }
        stream.update(|st| st.set_retention(hours).map(|_| ())).map_err(|e| self.err(e))?;
        Ok(json!({}))
    }

    pub(super) fn add_tags(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream(i)?;
        let tags = tag_map(&i.obj("Tags")?.ok_or_else(|| super::missing("Tags"))?)?;
        stream.update(|st| st.add_tags(&tags).map(|_| ())).map_err(|e| self.err(e))?;
        Ok(json!({}))
    }

    pub(super) fn list_tags(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream(i)?;
        let limit = i.i64_opt("Limit")?.unwrap_or(50).clamp(1, 50) as usize;
        let start = i.str_opt("ExclusiveStartTagKey")?.map(str::to_string);
        Ok(stream.with_state(|st| {
            let all: Vec<(&String, &String)> =
                st.tags().iter().filter(|(k, _)| start.as_ref().is_none_or(|s| *k > s)).collect();
            let tags: Vec<Value> = all.iter().take(limit).map(|(k, v)| json!({ "Key": k, "Value": v })).collect();
            json!({ "Tags": tags, "HasMoreTags": all.len() > limit })
        }))
    }

    pub(super) fn remove_tags(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream(i)?;
        let keys: Vec<String> = i
            .array("TagKeys")?
            .ok_or_else(|| super::missing("TagKeys"))?
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| KinesisError::Serialization("TagKeys".into())))
            .collect::<Res<_>>()?;
        stream.update(|st| Ok(st.remove_tags(&keys))).map_err(|e| self.err(e))?;
        Ok(json!({}))
    }

    pub(super) fn update_stream_mode(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream(i)?;
        let mode = parse_mode(i)?.ok_or_else(|| super::missing("StreamModeDetails"))?;
        stream.update(|st| Ok(st.set_mode(mode))).map_err(|e| self.err(e))?;
        Ok(json!({}))
    }

    fn consumer_arn(&self, stream: &str, name: &str, created: Millis) -> String {
        format!("{}/consumer/{name}:{}", self.stream_arn(stream), created / 1000)
    }

    fn consumer_json(&self, stream: &str, c: &switchyard::stream::state::ConsumerMeta) -> Value {
        json!({
            "ConsumerName": c.name,
            "ConsumerARN": self.consumer_arn(stream, &c.name, c.created_at),
            "ConsumerStatus": "ACTIVE",
            "ConsumerCreationTimestamp": secs(c.created_at),
        })
    }

    pub(super) fn register_consumer(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream_by_arn(i)?;
        let name = i.req_str("ConsumerName")?;
        check_stream_name(name).map_err(|_| {
            KinesisError::Validation(format!(
                "1 validation error detected: Value '{name}' at 'consumerName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
            ))
        })?;
        let now = self.now();
        let c = stream.update(|st| st.register_consumer(name, now)).map_err(|e| match e {
            switchyard::stream::StreamError::ConsumerExists(_) => KinesisError::ResourceInUse(format!(
                "Consumer {} under account {} already exists.",
                self.consumer_arn(stream.name(), name, now),
                self.account
            )),
            e => self.err(e),
        })?;
        Ok(json!({ "Consumer": self.consumer_json(stream.name(), &c) }))
    }

    /// The stream and consumer named by `ConsumerARN`, or by `StreamARN` + `ConsumerName`.
    fn consumer(&self, i: &Input<'_>) -> Res<(std::sync::Arc<switchyard::stream::Stream>, String)> {
        if let Some(arn) = i.str_opt("ConsumerARN")? {
            let (stream_arn, rest) = arn
                .split_once("/consumer/")
                .ok_or_else(|| KinesisError::InvalidArgument(format!("Invalid ConsumerARN {arn}")))?;
            let name = rest.rsplit_once(':').map_or(rest, |(n, _)| n).to_string();
            let stream_name = super::arn_stream_name(stream_arn)
                .ok_or_else(|| KinesisError::InvalidArgument(format!("Invalid ConsumerARN {arn}")))?;
            let stream = self.vhost.streams().get(stream_name).ok_or_else(|| {
                KinesisError::ResourceNotFound(format!("Consumer {arn}, account {} not found.", self.account))
            })?;
            return Ok((stream, name));
        }
        let stream = self.stream_by_arn(i)?;
        let name = i.req_str("ConsumerName")?.to_string();
        Ok((stream, name))
    }

    fn stream_by_arn(&self, i: &Input<'_>) -> Res<std::sync::Arc<switchyard::stream::Stream>> {
        let arn = i.req_str("StreamARN")?;
        let name = super::arn_stream_name(arn)
            .ok_or_else(|| KinesisError::InvalidArgument(format!("Invalid StreamARN {arn}")))?;
        self.vhost.streams().get(name).ok_or_else(|| {
            KinesisError::ResourceNotFound(format!("Stream {name} under account {} not found.", self.account))
        })
    }

    pub(super) fn describe_consumer(&self, i: &Input<'_>) -> Res<Value> {
        let (stream, name) = self.consumer(i)?;
        let c = stream.with_state(|st| st.consumers().iter().find(|c| c.name == name).cloned()).ok_or_else(|| {
            KinesisError::ResourceNotFound(format!("Consumer {name}, account {} not found.", self.account))
        })?;
        let mut d = self.consumer_json(stream.name(), &c);
        d["StreamARN"] = json!(self.stream_arn(stream.name()));
        Ok(json!({ "ConsumerDescription": d }))
    }

    pub(super) fn list_consumers(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream_by_arn(i)?;
        let consumers: Vec<Value> = stream
            .with_state(|st| st.consumers().to_vec())
            .iter()
            .map(|c| self.consumer_json(stream.name(), c))
            .collect();
        Ok(json!({ "Consumers": consumers }))
    }

    pub(super) fn deregister_consumer(&self, i: &Input<'_>) -> Res<Value> {
        let (stream, name) = self.consumer(i)?;
        stream.update(|st| st.deregister_consumer(&name)).map_err(|e| match e {
            switchyard::stream::StreamError::ConsumerNotFound(_) => {
                KinesisError::ResourceNotFound(format!("Consumer {name}, account {} not found.", self.account))
            }
            e => self.err(e),
        })?;
        Ok(json!({}))
    }
}

fn bad_shard_id(s: &str) -> KinesisError {
    KinesisError::Validation(format!(
        "1 validation error detected: Value '{s}' at 'shardId' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
    ))
}

fn tag_map(i: &Input<'_>) -> Res<BTreeMap<String, String>> {
    let Some(obj) = i.0.as_object() else { return Err(KinesisError::Serialization("Tags".into())) };
    obj.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) if !k.is_empty() && k.len() <= 128 && s.len() <= 256 => Ok((k.clone(), s.to_string())),
            Some(_) => Err(KinesisError::InvalidArgument(format!("Invalid tag {k}"))),
            None => Err(KinesisError::Serialization(format!("Expected a string value for tag {k}"))),
        })
        .collect()
}

enum ShardFilter {
    AfterShardId(u32),
    AtTrimHorizon,
    FromTrimHorizon,
    AtLatest,
    AtTimestamp(Millis),
    FromTimestamp(Millis),
}

fn parse_filter(f: &Input<'_>) -> Res<ShardFilter> {
    let kind = f.req_str("Type")?;
    let ts = || {
        f.time_opt("Timestamp")?
            .ok_or_else(|| KinesisError::InvalidArgument(format!("Timestamp is required for ShardFilter type {kind}")))
    };
    Ok(match kind {
        "AFTER_SHARD_ID" => {
            let id = f.str_opt("ShardId")?.ok_or_else(|| {
                KinesisError::InvalidArgument("ShardId is required for ShardFilter type AFTER_SHARD_ID".into())
            })?;
            ShardFilter::AfterShardId(parse_shard_id(id).ok_or_else(|| bad_shard_id(id))?)
        }
        "AT_TRIM_HORIZON" => ShardFilter::AtTrimHorizon,
        "FROM_TRIM_HORIZON" => ShardFilter::FromTrimHorizon,
        "AT_LATEST" => ShardFilter::AtLatest,
        "AT_TIMESTAMP" => ShardFilter::AtTimestamp(ts()?),
        "FROM_TIMESTAMP" => ShardFilter::FromTimestamp(ts()?),
        other => {
            return Err(KinesisError::Validation(format!(
                "1 validation error detected: Value '{other}' at 'shardFilter.type' failed to satisfy constraint: Member must satisfy enum value set: [AFTER_SHARD_ID, AT_TRIM_HORIZON, FROM_TRIM_HORIZON, AT_LATEST, AT_TIMESTAMP, FROM_TIMESTAMP]"
            )));
        }
    })
}

fn encode_shard_token(stream: &str, after: u32) -> String {
    URL_SAFE_NO_PAD.encode(format!("{after}/{stream}"))
}

fn decode_shard_token(t: &str) -> Res<(String, u32)> {
    let bad = || KinesisError::InvalidArgument(format!("Invalid NextToken {t}"));
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(t).map_err(|_| bad())?).map_err(|_| bad())?;
    let (after, stream) = text.split_once('/').ok_or_else(bad)?;
    Ok((stream.to_string(), after.parse().map_err(|_| bad())?))
}
