#!/usr/bin/env python3
"""boto3 Kinesis (AWS JSON 1.1): PutRecord, PutRecords (per-record results), GetShardIterator
of every type, GetRecords (a new iterator every call, MillisBehindLatest), and bad input:
partition keys, oversize records, 501-record batches, forged and expired iterators, unknown
shards. Needs `[aws.kinesis] test_clock = true` for the expiry test."""

import datetime
import hashlib

from _kinesis_common import advance_clock, check, client, eq, error_code, main, name, read_shard, test

kin = client()
SHARD0 = "shardId-000000000000"


def stream(shards=1):
    s = name()
    kin.create_stream(StreamName=s, ShardCount=shards)
    return s


@test
def put_and_read_from_trim_horizon():
    s = stream()
    seqs = []
    for i in range(5):
        r = kin.put_record(StreamName=s, Data=b"rec-%d" % i, PartitionKey="pk")
        eq(r["ShardId"], SHARD0, "shard")
        seqs.append(r["SequenceNumber"])
    eq(seqs, sorted(seqs, key=int), "sequence numbers increase")
    check(all(len(x) >= 20 for x in seqs), "Kinesis-like sequence numbers", seqs)
    recs, children = read_shard(kin, s, SHARD0)
    eq(children, None, "open shard")
    eq([r["Data"] for r in recs], [b"rec-%d" % i for i in range(5)], "data in order")
    eq([r["SequenceNumber"] for r in recs], seqs, "sequence numbers")
    eq({r["PartitionKey"] for r in recs}, {"pk"}, "partition keys")
    check(all(isinstance(r["ApproximateArrivalTimestamp"], datetime.datetime) for r in recs), "timestamps")
    kin.delete_stream(StreamName=s)


@test
def iterator_types():
    s = stream()
    seqs = [kin.put_record(StreamName=s, Data=b"%d" % i, PartitionKey="k")["SequenceNumber"] for i in range(4)]

    def first(kind, **kw):
        it = kin.get_shard_iterator(StreamName=s, ShardId=SHARD0, ShardIteratorType=kind, **kw)["ShardIterator"]
        return [r["Data"] for r in kin.get_records(ShardIterator=it)["Records"]]

    eq(first("AT_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[1]), [b"1", b"2", b"3"], "at")
    eq(first("AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[1]), [b"2", b"3"], "after")
    eq(first("TRIM_HORIZON"), [b"0", b"1", b"2", b"3"], "trim horizon")
    eq(first("AT_TIMESTAMP", Timestamp=datetime.datetime(2000, 1, 1)), [b"0", b"1", b"2", b"3"], "old timestamp")
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    eq(first("AT_TIMESTAMP", Timestamp=future), [], "future timestamp")
    latest = kin.get_shard_iterator(StreamName=s, ShardId=SHARD0, ShardIteratorType="LATEST")["ShardIterator"]
    r = kin.get_records(ShardIterator=latest)
    eq((r["Records"], r["MillisBehindLatest"]), ([], 0), "latest is at the tip")
    kin.put_record(StreamName=s, Data=b"new", PartitionKey="k")
    r2 = kin.get_records(ShardIterator=r["NextShardIterator"])
    eq([x["Data"] for x in r2["Records"]], [b"new"], "LATEST yields what comes after")
    check(r2["NextShardIterator"] != r["NextShardIterator"], "a new iterator every call")
    # The old iterator still works (within 5 minutes) and reads the same position.
    eq([x["Data"] for x in kin.get_records(ShardIterator=r["NextShardIterator"])["Records"]], [b"new"], "reuse")
    code, _, _ = error_code(kin.get_shard_iterator, StreamName=s, ShardId=SHARD0,
                            ShardIteratorType="AT_SEQUENCE_NUMBER")
    eq(code, "InvalidArgumentException", "AT_SEQUENCE_NUMBER without a number")
    code, _, _ = error_code(kin.get_shard_iterator, StreamName=s, ShardId=SHARD0,
                            ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber="12345")
    eq(code, "InvalidArgumentException", "foreign sequence number")
    kin.delete_stream(StreamName=s)


@test
def limit_and_millis_behind_latest():
    s = stream()
    kin.put_records(StreamName=s, Records=[{"Data": b"x%d" % i, "PartitionKey": "k"} for i in range(10)])
    it = kin.get_shard_iterator(StreamName=s, ShardId=SHARD0, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    r = kin.get_records(ShardIterator=it, Limit=3)
    eq(len(r["Records"]), 3, "limit")
    check(r["MillisBehindLatest"] >= 0, "behind", r["MillisBehindLatest"])
    r = kin.get_records(ShardIterator=r["NextShardIterator"], Limit=100)
    eq(len(r["Records"]), 7, "rest")
    eq(r["MillisBehindLatest"], 0, "at the tip")
    eq(error_code(kin.get_records, ShardIterator=it, Limit=10001)[0], "InvalidArgumentException", "limit 10001")
    kin.delete_stream(StreamName=s)


@test
def put_records_spreads_by_md5_and_keeps_per_key_order():
    s = stream(3)
    recs = [{"Data": b"%s:%d" % (k.encode(), i), "PartitionKey": k} for i in range(20) for k in ("a", "b", "c", "d")]
    r = kin.put_records(StreamName=s, Records=recs)
    eq(r["FailedRecordCount"], 0, "no failures")
    eq(len(r["Records"]), 80, "one result per record")
    desc = kin.describe_stream(StreamName=s)["StreamDescription"]["Shards"]

    def owner(pk):
        h = int(hashlib.md5(pk.encode()).hexdigest(), 16)
        return [x["ShardId"] for x in desc
                if int(x["HashKeyRange"]["StartingHashKey"]) <= h <= int(x["HashKeyRange"]["EndingHashKey"])][0]

    for rec, res in zip(recs, r["Records"]):
        eq(res["ShardId"], owner(rec["PartitionKey"]), "shard chosen by MD5 of %s" % rec["PartitionKey"])
    got = {}
    for sh in desc:
        for x in read_shard(kin, s, sh["ShardId"])[0]:
            got.setdefault(x["PartitionKey"], []).append(x["Data"])
    for k in "abcd":
        eq(got[k], [b"%s:%d" % (k.encode(), i) for i in range(20)], "order of key %s" % k)
    kin.delete_stream(StreamName=s)


@test
def explicit_hash_key_picks_the_shard():
    s = stream(2)
    r = kin.put_record(StreamName=s, Data=b"x", PartitionKey="k", ExplicitHashKey=str(2**128 - 1))
    eq(r["ShardId"], "shardId-000000000001", "top of the space")
    r = kin.put_record(StreamName=s, Data=b"x", PartitionKey="k", ExplicitHashKey="0")
    eq(r["ShardId"], SHARD0, "bottom of the space")
    eq(error_code(kin.put_record, StreamName=s, Data=b"x", PartitionKey="k", ExplicitHashKey=str(2**128))[0],
       "InvalidArgumentException", "past 2^128")
    kin.delete_stream(StreamName=s)


@test
def bad_records():
    s = stream()
    eq(error_code(kin.put_record, StreamName=s, Data=b"x", PartitionKey="k" * 257)[0], "ValidationException",
       "257-char key")
    eq(error_code(kin.put_record, StreamName=s, Data=b"x" * (1024 * 1024), PartitionKey="k")[0],
       "ValidationException", "record over 1 MiB with its key")
    kin.put_record(StreamName=s, Data=b"x" * (1024 * 1024 - 1), PartitionKey="k")
    recs = [{"Data": b"x", "PartitionKey": "k"}] * 501
    eq(error_code(kin.put_records, StreamName=s, Records=recs)[0], "ValidationException", "501 records")
    eq(error_code(kin.put_record, StreamName="nope-" + s, Data=b"x", PartitionKey="k")[0],
       "ResourceNotFoundException", "unknown stream")
    kin.delete_stream(StreamName=s)


@test
def a_put_records_of_five_mib_is_accepted():
    # Kinesis takes up to 5 MiB of data per PutRecords (≈ 6.7 MiB of base64 JSON): the
    # HTTP body limit must not refuse what the API allows.
    s = stream()
    recs = [{"Data": bytes([i % 251]) * 10_000, "PartitionKey": "k%d" % i} for i in range(500)]
    r = kin.put_records(StreamName=s, Records=recs)
    eq(r["FailedRecordCount"], 0, "no record failed")
    got, _ = read_shard(kin, s, SHARD0)
    eq(len(got), 500, "all 500 records stored")
    eq(got[499]["Data"], bytes([499 % 251]) * 10_000, "last record intact")
    kin.delete_stream(StreamName=s)


@test
def bad_iterators_and_shards():
    s = stream()
    eq(error_code(kin.get_shard_iterator, StreamName=s, ShardId="shardId-000000000009",
                  ShardIteratorType="TRIM_HORIZON")[0], "ResourceNotFoundException", "unknown shard")
    eq(error_code(kin.get_records, ShardIterator="AAAAforged")[0], "InvalidArgumentException", "forged")
    it = kin.get_shard_iterator(StreamName=s, ShardId=SHARD0, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    tampered = it[:-6] + ("A" if it[-6] != "A" else "B") + it[-5:]
    eq(error_code(kin.get_records, ShardIterator=tampered)[0], "InvalidArgumentException", "tampered")
    kin.delete_stream(StreamName=s)
    eq(error_code(kin.get_records, ShardIterator=it)[0], "ResourceNotFoundException", "deleted stream")


@test
def iterators_expire_after_five_minutes():
    s = stream()
    kin.put_record(StreamName=s, Data=b"x", PartitionKey="k")
    it = kin.get_shard_iterator(StreamName=s, ShardId=SHARD0, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    advance_clock(4 * 60 * 1000)
    r = kin.get_records(ShardIterator=it)
    eq(len(r["Records"]), 1, "still valid after 4 minutes")
    advance_clock(61 * 1000)
    code, status, msg = error_code(kin.get_records, ShardIterator=it)
    eq((code, status), ("ExpiredIteratorException", 400), "expired after 5 minutes")
    check("Iterator expired" in msg, "message", msg)
    # The iterator GetRecords returned 61 s ago is still fresh.
    eq(kin.get_records(ShardIterator=r["NextShardIterator"])["Records"], [], "fresh iterator")
    kin.delete_stream(StreamName=s)


if __name__ == "__main__":
    main()
