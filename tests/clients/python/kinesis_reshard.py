#!/usr/bin/env python3
"""boto3 Kinesis: SplitShard, MergeShards and UpdateShardCount while records flow, then a
reader that follows lineage the way the KCL does (a child only after its parents are done,
parents ending with a null NextShardIterator plus ChildShards) reads every record exactly
once and in order per partition key."""

import time

from _kinesis_common import check, client, eq, error_code, main, name, test

kin = client()
KEYS = ["key-%d" % i for i in range(16)]


def put_round(s, counters):
    put_round_with(kin, s, counters)


def put_round_with(kc, s, counters):
    recs = []
    for k in KEYS:
        counters[k] = counters.get(k, 0) + 1
        recs.append({"Data": b"%s:%d" % (k.encode(), counters[k]), "PartitionKey": k})
    r = kc.put_records(StreamName=s, Records=recs)
    eq(r["FailedRecordCount"], 0, "put")


def read_everything(s):
    """Read all shards, parents before children."""
    shards = {x["ShardId"]: x for x in kin.list_shards(StreamName=s)["Shards"]}
    done, got = set(), {}
    progress = True
    while progress:
        progress = False
        for sid, sh in sorted(shards.items()):
            if sid in done:
                continue
            parents = [p for p in (sh.get("ParentShardId"), sh.get("AdjacentParentShardId")) if p in shards]
            if any(p not in done for p in parents):
                continue
            it = kin.get_shard_iterator(StreamName=s, ShardId=sid, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while it:
                r = kin.get_records(ShardIterator=it, Limit=7)
                for x in r["Records"]:
                    got.setdefault(x["PartitionKey"], []).append(x["Data"])
                nxt = r.get("NextShardIterator")
                if nxt is None:
                    kids = [c["ShardId"] for c in r["ChildShards"]]
                    check(kids, "a closed shard names its children", sid)
                    for c in r["ChildShards"]:
                        check(sid in c["ParentShards"], "child names its parent", c, sid)
                    break
                if not r["Records"] and r["MillisBehindLatest"] == 0:
                    break
                it = nxt
            done.add(sid)
            progress = True
    eq(done, set(shards), "every shard read")
    return got


@test
def split_merge_rescale_read_exactly_once_in_order():
    s = name("rs")
    kin.create_stream(StreamName=s, ShardCount=2)
    counters = {}
    put_round(s, counters)
    kin.split_shard(StreamName=s, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**126))
    put_round(s, counters)
    kin.merge_shards(StreamName=s, ShardToMerge="shardId-000000000002", AdjacentShardToMerge="shardId-000000000003")
    put_round(s, counters)
    r = kin.update_shard_count(StreamName=s, TargetShardCount=3, ScalingType="UNIFORM_SCALING")
    eq((r["CurrentShardCount"], r["TargetShardCount"]), (2, 3), "rescale answer")
    put_round(s, counters)
    eq(kin.describe_stream_summary(StreamName=s)["StreamDescriptionSummary"]["OpenShardCount"], 3, "open shards")
    got = read_everything(s)
    for k in KEYS:
        eq(got.get(k), [b"%s:%d" % (k.encode(), i) for i in range(1, 5)], "records of %s" % k)
    kin.delete_stream(StreamName=s)


@test
def resharding_under_load_loses_and_repeats_nothing():
    import threading

    s = name("rl")
    kin.create_stream(StreamName=s, ShardCount=2)
    writer = client()
    counters, stop, errors = {}, threading.Event(), []

    def write():
        try:
            while not stop.is_set():
                put_round_with(writer, s, counters)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=write)
    t.start()
    time.sleep(0.3)
    kin.split_shard(StreamName=s, ShardToSplit="shardId-000000000001", NewStartingHashKey=str(3 * 2**126))
    time.sleep(0.3)
    kin.merge_shards(StreamName=s, ShardToMerge="shardId-000000000002", AdjacentShardToMerge="shardId-000000000003")
    time.sleep(0.3)
    kin.update_shard_count(StreamName=s, TargetShardCount=4, ScalingType="UNIFORM_SCALING")
    time.sleep(0.3)
    stop.set()
    t.join()
    eq(errors, [], "writer errors")
    check(min(counters.values()) >= 4, "records were written throughout", counters)
    got = read_everything(s)
    for k in KEYS:
        eq(got.get(k), [b"%s:%d" % (k.encode(), i) for i in range(1, counters[k] + 1)], "records of %s" % k)
    kin.delete_stream(StreamName=s)


@test
def reshard_errors():
    s = name("re")
    kin.create_stream(StreamName=s, ShardCount=3)
    eq(error_code(kin.split_shard, StreamName=s, ShardToSplit="shardId-000000000009", NewStartingHashKey="1")[0],
       "ResourceNotFoundException", "unknown shard")
    eq(error_code(kin.split_shard, StreamName=s, ShardToSplit="shardId-000000000000", NewStartingHashKey="0")[0],
       "InvalidArgumentException", "key at the range start")
    eq(error_code(kin.merge_shards, StreamName=s, ShardToMerge="shardId-000000000000",
                  AdjacentShardToMerge="shardId-000000000002")[0], "InvalidArgumentException", "not adjacent")
    kin.merge_shards(StreamName=s, ShardToMerge="shardId-000000000000", AdjacentShardToMerge="shardId-000000000001")
    eq(error_code(kin.split_shard, StreamName=s, ShardToSplit="shardId-000000000000", NewStartingHashKey="5")[0],
       "InvalidArgumentException", "split a closed shard")
    eq(error_code(kin.update_shard_count, StreamName=s, TargetShardCount=5, ScalingType="UNIFORM_SCALING")[0],
       "InvalidArgumentException", "more than double")
    kin.delete_stream(StreamName=s)


if __name__ == "__main__":
    main()
