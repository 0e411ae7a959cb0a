#!/usr/bin/env python3
"""boto3 Kinesis against a broker in strict mode (the default): per-shard throughput limits
answer ProvisionedThroughputExceededException — per record in PutRecords, for the call in
GetRecords — and another shard keeps its own budget."""

import time

from _kinesis_common import check, client, eq, error_code, main, name, test

kin = client()


@test
def put_records_over_a_thousand_a_second_are_throttled_per_record():
    s = name("lim")
    kin.create_stream(StreamName=s, ShardCount=2)
    # Every record to shard 0 (hash key 0).
    recs = [{"Data": b"x", "PartitionKey": "k", "ExplicitHashKey": "0"} for _ in range(500)]
    failed = 0
    codes = set()
    start = time.monotonic()
    for _ in range(3):
        r = kin.put_records(StreamName=s, Records=recs)
        failed += r["FailedRecordCount"]
        codes |= {x["ErrorCode"] for x in r["Records"] if "ErrorCode" in x}
    elapsed = time.monotonic() - start
    check(elapsed < 1.0 or failed > 0, "slow machine: no throttling to observe", elapsed)
    check(failed >= 300, "records over the 1,000/s budget fail", failed, elapsed)
    eq(codes, {"ProvisionedThroughputExceededException"}, "error code")
    # Another shard is not affected.
    r = kin.put_record(StreamName=s, Data=b"y", PartitionKey="k", ExplicitHashKey=str(2**128 - 1))
    eq(r["ShardId"], "shardId-000000000001", "other shard")
    time.sleep(1.1)
    kin.put_record(StreamName=s, Data=b"z", PartitionKey="k", ExplicitHashKey="0")
    kin.delete_stream(StreamName=s)


@test
def more_than_five_reads_a_second_are_throttled():
    s = name("lim")
    kin.create_stream(StreamName=s, ShardCount=1)
    it = kin.get_shard_iterator(StreamName=s, ShardId="shardId-000000000000",
                                ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    throttled, calls, start = False, 0, time.monotonic()
    while not throttled and calls < 200:
        calls += 1
        try:
            it = kin.get_records(ShardIterator=it)["NextShardIterator"]
        except kin.exceptions.ProvisionedThroughputExceededException:
            throttled = True
    rate = calls / max(time.monotonic() - start, 1e-3)
    check(throttled or rate <= 5.5, "reads over 5/s are throttled", calls, rate)
    time.sleep(1.1)
    kin.get_records(ShardIterator=it)
    kin.delete_stream(StreamName=s)


@test
def record_too_large_with_key():
    s = name("lim")
    kin.create_stream(StreamName=s, ShardCount=1)
    eq(error_code(kin.put_record, StreamName=s, Data=b"x" * (1024 * 1024), PartitionKey="kk")[0],
       "ValidationException", "over 1 MiB")
    kin.delete_stream(StreamName=s)


if __name__ == "__main__":
    main()
