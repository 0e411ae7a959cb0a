//! PutRecord, PutRecords, GetShardIterator and GetRecords.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};
use switchyard::stream::hashkey::{hash_key, parse_explicit};
use switchyard::stream::state::shard_id;
use switchyard::stream::{MAX_PARTITION_KEY, NewRecord, SequenceNumber, StartPosition, Stream, StreamError};

use super::iterator::{self, ITERATOR_TTL_MS, Iter, IterError};
use super::streams::shard_json;
use super::{Input, Kinesis, KinesisError, Res, secs};

/// Largest record: data plus partition key.
const MAX_RECORD: usize = 1024 * 1024;
/// Most records in one PutRecords.
const MAX_PUT_RECORDS: usize = 500;
/// Most bytes in one PutRecords.
const MAX_PUT_RECORDS_BYTES: usize = 5 * 1024 * 1024;
/// Most records one GetRecords returns.
const MAX_GET_RECORDS: i64 = 10_000;
/// Most bytes one GetRecords returns.
const MAX_GET_BYTES: u64 = 10 * 1024 * 1024;

/// A record of a put request, validated.
struct Put {
    record: NewRecord,
    hash: u128,
    size: usize,
}

fn parse_put(i: &Input<'_>, index: Option<usize>) -> Res<Put> {
    let at = |field: &str| match index {
        Some(n) => format!("records.{}.member.{field}", n + 1),
        None => field.to_string(),
    };
    let pk = i.str_opt("PartitionKey")?.ok_or_else(|| super::missing("PartitionKey"))?;
    let chars = pk.chars().count();
    if chars == 0 || chars > MAX_PARTITION_KEY {
        return Err(KinesisError::Validation(format!(
            "1 validation error detected: Value '{pk}' at '{}' failed to satisfy constraint: Member must have length {}",
            at("partitionKey"),
            if chars == 0 { "greater than or equal to 1" } else { "less than or equal to 256" }
        )));
    }
    let data_b64 = i.str_opt("Data")?.ok_or_else(|| super::missing("Data"))?;
    let data = STANDARD
        .decode(data_b64.as_bytes())
        .map_err(|_| KinesisError::Serialization(format!("Data of {} is not valid base64", at("data"))))?;
    if data.len() + pk.len() > MAX_RECORD {
        return Err(KinesisError::Validation(format!(
            "1 validation error detected: Value at '{}' failed to satisfy constraint: Member must have length less than or equal to {MAX_RECORD}",
            at("data")
        )));
    }
    let hash = match i.str_opt("ExplicitHashKey")? {
        Some(h) => parse_explicit(h).ok_or_else(|| {
            KinesisError::InvalidArgument(format!(
                "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {h}"
            ))
        })?,
        None => hash_key(pk),
    };
    let size = data.len() + pk.len();
    let record = NewRecord {
        partition_key: pk.to_string(),
        explicit_hash_key: Some(hash),
        data: Bytes::from(data),
        meta: Bytes::new(),
    };
    Ok(Put { record, hash, size })
}

impl Kinesis {
    fn throttled(&self, stream: &Stream, shard: u32) -> KinesisError {
        KinesisError::ProvisionedThroughputExceeded(format!(
            "Rate exceeded for shard {} in stream {} under account {}.",
            shard_id(shard),
            stream.name(),
            self.account
        ))
    }

    /// Append admitted records; per-record results in input order.
    async fn append(&self, stream: &std::sync::Arc<Stream>, puts: Vec<Put>) -> Vec<Result<Value, KinesisError>> {
        let now = self.now();
        let incarnation = stream.with_state(|st| st.incarnation());
        let mut results: Vec<Option<Result<Value, KinesisError>>> = Vec::with_capacity(puts.len());
        let mut admitted = Vec::new();
        let mut slots = Vec::new();
        for p in puts {
            let shard = stream.with_state(|st| st.shard_for(p.hash));
            match shard {
                Some(s) if !self.limits.admit_put((incarnation, s), p.size, now) => {
                    results.push(Some(Err(self.throttled(stream, s))));
                }
                _ => {
                    slots.push(results.len());
                    results.push(None);
                    admitted.push(p.record);
                }
            }
        }
        let out = stream.append(admitted, now).await;
        for (slot, r) in slots.into_iter().zip(out) {
            results[slot] = Some(match r {
                Ok(a) => Ok(json!({ "SequenceNumber": a.sequence.to_string(), "ShardId": shard_id(a.sequence.shard) })),
                Err(e) => Err(self.err(e)),
            });
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(KinesisError::Internal("record not processed".into()))))
            .collect()
    }

    pub(super) async fn put_record(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream(i)?;
        let put = parse_put(i, None)?;
        if let Some(s) = i.str_opt("SequenceNumberForOrdering")?
            && SequenceNumber::parse(s).is_none()
        {
            return Err(KinesisError::InvalidArgument(format!(
                "ExclusiveMinimumSequenceNumber {s} used in PutRecord on stream {} under account {} is invalid.",
                stream.name(),
                self.account
            )));
        }
        let mut out = self.append(&stream, vec![put]).await;
        let mut v = out.pop().unwrap_or_else(|| Err(KinesisError::Internal("no result".into())))?;
        v["EncryptionType"] = json!("NONE");
        Ok(v)
    }

    pub(super) async fn put_records(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream(i)?;
        let list = i.array("Records")?.ok_or_else(|| super::missing("Records"))?;
        if list.is_empty() || list.len() > MAX_PUT_RECORDS {
            return Err(KinesisError::Validation(format!(
                "1 validation error detected: Value '[...]' at 'records' failed to satisfy constraint: Member must have length {}",
                if list.is_empty() {
                    "greater than or equal to 1".to_string()
                } else {
                    format!("less than or equal to {MAX_PUT_RECORDS}")
                }
            )));
        }
        let mut puts = Vec::with_capacity(list.len());
        for (n, r) in list.iter().enumerate() {
            if !r.is_object() {
                return Err(KinesisError::Serialization("Records must be a list of objects".into()));
            }
            puts.push(parse_put(&Input(r), Some(n))?);
        }
        let total: usize = puts.iter().map(|p| p.size).sum();
        if total > MAX_PUT_RECORDS_BYTES {
            return Err(KinesisError::InvalidArgument(format!(
                "Records size exceeds {MAX_PUT_RECORDS_BYTES} bytes: {total}"
            )));
        }
        let results = self.append(&stream, puts).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        let records: Vec<Value> = results
            .into_iter()
            .map(|r| match r {
                Ok(v) => v,
                Err(e) => json!({ "ErrorCode": e.code(), "ErrorMessage": e.to_string() }),
            })
            .collect();
        Ok(json!({ "FailedRecordCount": failed, "Records": records, "EncryptionType": "NONE" }))
    }

    pub(super) fn get_shard_iterator(&self, i: &Input<'_>) -> Res<Value> {
        let stream = self.stream(i)?;
        let shard = self.shard_arg(i, "ShardId")?;
        let kind = i.req_str("ShardIteratorType")?;
        let seq = || -> Res<SequenceNumber> {
            let s = i.str_opt("StartingSequenceNumber")?.ok_or_else(|| {
                KinesisError::InvalidArgument(format!(
                    "StartingSequenceNumber must be specified for ShardIteratorType {kind}"
                ))
            })?;
            SequenceNumber::parse(s).ok_or_else(|| {
                KinesisError::InvalidArgument(format!(
                    "StartingSequenceNumber {s} used in GetShardIterator on shard {} in stream {} under account {} is invalid.",
                    shard_id(shard),
                    stream.name(),
                    self.account
                ))
            })
        };
        let start = match kind {
            "TRIM_HORIZON" => StartPosition::TrimHorizon,
            "LATEST" => StartPosition::Latest,
            "AT_SEQUENCE_NUMBER" => StartPosition::At(seq()?),
            "AFTER_SEQUENCE_NUMBER" => StartPosition::After(seq()?),
            "AT_TIMESTAMP" => StartPosition::AtTimestamp(i.time_opt("Timestamp")?.ok_or_else(|| {
                KinesisError::InvalidArgument("Timestamp must be specified for ShardIteratorType AT_TIMESTAMP".into())
            })?),
            other => {
                return Err(KinesisError::Validation(format!(
                    "1 validation error detected: Value '{other}' at 'shardIteratorType' failed to satisfy constraint: Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]"
                )));
            }
        };
        let counter = stream.start(shard, start).map_err(|e| match e {
            StreamError::ShardNotFound { .. } => KinesisError::ResourceNotFound(format!(
                "Shard {} in stream {} under account {} does not exist",
                shard_id(shard),
                stream.name(),
                self.account
            )),
            e => self.err(e),
        })?;
        let it = Iter {
            stream: stream.name().to_string(),
            incarnation: stream.with_state(|st| st.incarnation()),
            shard,
            counter,
            issued: self.now(),
        };
        Ok(json!({ "ShardIterator": iterator::encode(&it) }))
    }

    pub(super) fn get_records(&self, i: &Input<'_>) -> Res<Value> {
        let text = i.req_str("ShardIterator")?;
        let limit = i.i64_opt("Limit")?.unwrap_or(MAX_GET_RECORDS);
        if !(1..=MAX_GET_RECORDS).contains(&limit) {
            return Err(KinesisError::InvalidArgument(format!(
                "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: Member must have value less than or equal to {MAX_GET_RECORDS}"
            )));
        }
        let now = self.now();
        let it = iterator::decode(text, now).map_err(|e| match e {
            IterError::Invalid => KinesisError::InvalidArgument(format!("Invalid ShardIterator: {text}")),
            IterError::Expired { issued } => KinesisError::ExpiredIterator(format!(
                "Iterator expired. The iterator was created at time {} while right now it is {} which is further in the future than the tolerated delay of {ITERATOR_TTL_MS} milliseconds.",
                iso(issued),
                iso(now)
            )),
        })?;
        let stream = self
            .vhost
            .streams()
            .get(&it.stream)
            .filter(|s| s.with_state(|st| st.incarnation()) == it.incarnation)
            .ok_or_else(|| {
                KinesisError::ResourceNotFound(format!(
                    "Stream {} under account {} not found.",
                    it.stream, self.account
                ))
            })?;
        let key = (it.incarnation, it.shard);
        if !self.limits.admit_read(key, now) {
            return Err(self.throttled(&stream, it.shard));
        }
        let batch = stream.read(it.shard, it.counter, limit as usize, MAX_GET_BYTES, now).map_err(|e| self.err(e))?;
        let mut bytes = 0usize;
        let records: Vec<Value> = batch
            .records
            .iter()
            .map(|r| {
                bytes += r.data.len() + r.partition_key.len();
                json!({
                    "SequenceNumber": r.sequence.to_string(),
                    "ApproximateArrivalTimestamp": secs(r.arrival),
                    "Data": STANDARD.encode(&r.data),
                    "PartitionKey": r.partition_key,
                })
            })
            .collect();
        self.limits.charge_read(key, bytes);
        let mut out = json!({ "Records": records, "MillisBehindLatest": batch.millis_behind_latest });
        if batch.end_of_shard {
            out["NextShardIterator"] = Value::Null;
            let children: Vec<Value> = batch
                .children
                .iter()
                .map(|c| {
                    let parents: Vec<String> =
                        [c.parent, c.adjacent_parent].into_iter().flatten().map(shard_id).collect();
                    let s = shard_json(c);
                    json!({ "ShardId": c.id(), "ParentShards": parents, "HashKeyRange": s["HashKeyRange"] })
                })
                .collect();
            out["ChildShards"] = json!(children);
        } else {
            let next = Iter { counter: batch.next, issued: now, ..it };
            out["NextShardIterator"] = json!(iterator::encode(&next));
        }
        Ok(out)
    }
}

/// A millisecond time as ISO 8601 (UTC), for error texts.
fn iso(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn put_validation() {
        let v = json!({"PartitionKey": "", "Data": "aGk="});
        assert!(matches!(parse_put(&Input(&v), None), Err(KinesisError::Validation(_))));
        let long = "k".repeat(257);
        let v = json!({"PartitionKey": long, "Data": "aGk="});
        assert!(matches!(parse_put(&Input(&v), None), Err(KinesisError::Validation(_))));
        let v = json!({"PartitionKey": "k", "Data": "aGk=", "ExplicitHashKey": "-5"});
        assert!(matches!(parse_put(&Input(&v), None), Err(KinesisError::InvalidArgument(_))));
        let v = json!({"PartitionKey": "k", "Data": "!!"});
        assert!(matches!(parse_put(&Input(&v), None), Err(KinesisError::Serialization(_))));
        let v = json!({"PartitionKey": "k", "Data": "aGk="});
        let p = parse_put(&Input(&v), None).expect("valid");
        assert_eq!(p.record.data, Bytes::from("hi"));
        assert_eq!(p.hash, hash_key("k"));
    }
}
