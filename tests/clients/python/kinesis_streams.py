#!/usr/bin/env python3
"""boto3 Kinesis (AWS JSON 1.1): stream management — CreateStream (provisioned and
on-demand), DescribeStream(Summary), ListStreams and ListShards with pagination and filters,
retention changes, tags, stream mode, stream consumers, DeleteStream — and the error codes
SDKs map to exceptions."""

from _kinesis_common import check, client, eq, error_code, main, name, test

kin = client()


@test
def create_describe_delete_provisioned():
    s = name()
    kin.create_stream(StreamName=s, ShardCount=3)
    kin.get_waiter("stream_exists").wait(StreamName=s, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    d = kin.describe_stream(StreamName=s)["StreamDescription"]
    eq(d["StreamName"], s, "name")
    eq(d["StreamStatus"], "ACTIVE", "status")
    eq(d["StreamARN"], "arn:aws:kinesis:us-east-1:000000000000:stream/" + s, "arn")
    eq(d["RetentionPeriodHours"], 24, "retention")
    eq(d["StreamModeDetails"]["StreamMode"], "PROVISIONED", "mode")
    eq([x["ShardId"] for x in d["Shards"]], ["shardId-%012d" % i for i in range(3)], "shard ids")
    eq(d["Shards"][0]["HashKeyRange"]["StartingHashKey"], "0", "first start")
    eq(d["Shards"][1]["HashKeyRange"]["StartingHashKey"], "113427455640312821154458202477256070485", "second start")
    eq(d["Shards"][2]["HashKeyRange"]["EndingHashKey"], str(2**128 - 1), "last end")
    eq(d["HasMoreShards"], False, "more shards")
    check("EndingSequenceNumber" not in d["Shards"][0]["SequenceNumberRange"], "open shard has no end")
    sm = kin.describe_stream_summary(StreamName=s)["StreamDescriptionSummary"]
    eq(sm["OpenShardCount"], 3, "open shards")
    eq(sm["ConsumerCount"], 0, "consumers")
    # DescribeStream paginates shards with Limit + ExclusiveStartShardId.
    p = kin.describe_stream(StreamName=s, Limit=2)["StreamDescription"]
    eq((len(p["Shards"]), p["HasMoreShards"]), (2, True), "page 1")
    p = kin.describe_stream(StreamName=s, Limit=2, ExclusiveStartShardId=p["Shards"][-1]["ShardId"])
    eq([x["ShardId"] for x in p["StreamDescription"]["Shards"]], ["shardId-000000000002"], "page 2")
    # By ARN too.
    eq(kin.describe_stream_summary(StreamARN=d["StreamARN"])["StreamDescriptionSummary"]["StreamName"], s, "by arn")
    code, status, _ = error_code(kin.create_stream, StreamName=s, ShardCount=1)
    eq((code, status), ("ResourceInUseException", 400), "duplicate create")
    kin.delete_stream(StreamName=s)
    code, _, msg = error_code(kin.describe_stream, StreamName=s)
    eq(code, "ResourceNotFoundException", "describe deleted")
    eq(msg, "Stream %s under account 000000000000 not found." % s, "message")
    eq(error_code(kin.delete_stream, StreamName=s)[0], "ResourceNotFoundException", "delete twice")


@test
def create_on_demand_and_update_mode():
    s = name()
    kin.create_stream(StreamName=s, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    sm = kin.describe_stream_summary(StreamName=s)["StreamDescriptionSummary"]
    eq(sm["StreamModeDetails"]["StreamMode"], "ON_DEMAND", "mode")
    eq(sm["OpenShardCount"], 4, "on-demand shards")
    code, _, _ = error_code(kin.split_shard, StreamName=s, ShardToSplit="shardId-000000000000", NewStartingHashKey="5")
    eq(code, "ValidationException", "split on-demand")
    kin.update_stream_mode(StreamARN=sm["StreamARN"], StreamModeDetails={"StreamMode": "PROVISIONED"})
    eq(kin.describe_stream_summary(StreamName=s)["StreamDescriptionSummary"]["StreamModeDetails"]["StreamMode"],
       "PROVISIONED", "mode after update")
    code, _, _ = error_code(
        kin.create_stream, StreamName=name(), ShardCount=2, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    eq(code, "InvalidArgumentException", "on-demand with a shard count")
    kin.delete_stream(StreamName=s)


@test
def bad_names_and_counts():
    eq(error_code(kin.create_stream, StreamName="bad name!", ShardCount=1)[0], "ValidationException", "bad name")
    eq(error_code(kin.create_stream, StreamName=name(), ShardCount=501)[0], "ValidationException", "501 shards")
    eq(error_code(kin.describe_stream, StreamName="no-such-stream")[0], "ResourceNotFoundException", "missing")


@test
def list_streams_paginates():
    prefix = name("ls")
    names = sorted("%s-%d" % (prefix, i) for i in range(5))
    for n in names:
        kin.create_stream(StreamName=n, ShardCount=1)
    seen = []
    r = kin.list_streams(Limit=2)
    while True:
        seen.extend(x for x in r["StreamNames"] if x.startswith(prefix))
        check(len(r["StreamNames"]) <= 2, "page size", r)
        eq(len(r["StreamSummaries"]), len(r["StreamNames"]), "summaries")
        if not r["HasMoreStreams"]:
            break
        r = kin.list_streams(Limit=2, NextToken=r["NextToken"])
    eq(seen, names, "all streams, in order")
    r = kin.list_streams(ExclusiveStartStreamName=names[2])
    eq([x for x in r["StreamNames"] if x.startswith(prefix)], names[3:], "exclusive start")
    # The paginator works on top of that.
    pages = kin.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 3})
    eq(sorted(x for p in pages for x in p["StreamNames"] if x.startswith(prefix)), names, "paginator")
    for n in names:
        kin.delete_stream(StreamName=n)


@test
def list_shards_pagination_and_filters():
    s = name()
    kin.create_stream(StreamName=s, ShardCount=4)
    r = kin.list_shards(StreamName=s, MaxResults=3)
    eq(len(r["Shards"]), 3, "first page")
    r2 = kin.list_shards(NextToken=r["NextToken"])
    eq([x["ShardId"] for x in r2["Shards"]], ["shardId-000000000003"], "second page")
    check("NextToken" not in r2, "no more pages", r2)
    code, _, _ = error_code(kin.list_shards, StreamName=s, NextToken=r["NextToken"])
    eq(code, "InvalidArgumentException", "NextToken with StreamName")
    kin.split_shard(StreamName=s, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**124))
    all_ids = [x["ShardId"] for x in kin.list_shards(StreamName=s)["Shards"]]
    eq(len(all_ids), 6, "parent plus two children")
    latest = [x["ShardId"] for x in kin.list_shards(StreamName=s, ShardFilter={"Type": "AT_LATEST"})["Shards"]]
    eq(latest, ["shardId-%012d" % i for i in (1, 2, 3, 4, 5)], "open shards")
    horizon = kin.list_shards(StreamName=s, ShardFilter={"Type": "AT_TRIM_HORIZON"})["Shards"]
    eq([x["ShardId"] for x in horizon], ["shardId-%012d" % i for i in range(4)], "at trim horizon")
    after = kin.list_shards(StreamName=s, ShardFilter={"Type": "AFTER_SHARD_ID", "ShardId": "shardId-000000000003"})
    eq([x["ShardId"] for x in after["Shards"]], ["shardId-000000000004", "shardId-000000000005"], "after id")
    children = [x for x in kin.list_shards(StreamName=s)["Shards"] if x.get("ParentShardId")]
    eq([c["ParentShardId"] for c in children], ["shardId-000000000000"] * 2, "lineage")
    parent = kin.list_shards(StreamName=s)["Shards"][0]
    check("EndingSequenceNumber" in parent["SequenceNumberRange"], "closed parent has an end", parent)
    kin.delete_stream(StreamName=s)


@test
def retention_period_changes():
    s = name()
    kin.create_stream(StreamName=s, ShardCount=1)
    kin.increase_stream_retention_period(StreamName=s, RetentionPeriodHours=48)
    eq(kin.describe_stream_summary(StreamName=s)["StreamDescriptionSummary"]["RetentionPeriodHours"], 48, "48h")
    eq(error_code(kin.increase_stream_retention_period, StreamName=s, RetentionPeriodHours=30)[0],
       "InvalidArgumentException", "increase to less")
    eq(error_code(kin.decrease_stream_retention_period, StreamName=s, RetentionPeriodHours=72)[0],
       "InvalidArgumentException", "decrease to more")
    eq(error_code(kin.increase_stream_retention_period, StreamName=s, RetentionPeriodHours=8761)[0],
       "InvalidArgumentException", "past a year")
    kin.increase_stream_retention_period(StreamName=s, RetentionPeriodHours=8760)
    kin.decrease_stream_retention_period(StreamName=s, RetentionPeriodHours=24)
    eq(kin.describe_stream_summary(StreamName=s)["StreamDescriptionSummary"]["RetentionPeriodHours"], 24, "24h")
    kin.delete_stream(StreamName=s)


@test
def tags():
    s = name()
    kin.create_stream(StreamName=s, ShardCount=1)
    kin.add_tags_to_stream(StreamName=s, Tags={"env": "test", "team": "data", "z": "1"})
    r = kin.list_tags_for_stream(StreamName=s)
    eq(r["Tags"], [{"Key": "env", "Value": "test"}, {"Key": "team", "Value": "data"}, {"Key": "z", "Value": "1"}],
       "tags")
    eq(r["HasMoreTags"], False, "more")
    r = kin.list_tags_for_stream(StreamName=s, Limit=1, ExclusiveStartTagKey="env")
    eq((r["Tags"], r["HasMoreTags"]), ([{"Key": "team", "Value": "data"}], True), "paged")
    kin.remove_tags_from_stream(StreamName=s, TagKeys=["team", "absent"])
    eq([t["Key"] for t in kin.list_tags_for_stream(StreamName=s)["Tags"]], ["env", "z"], "after remove")
    too_many = {"k%d" % i: "v" for i in range(60)}
    eq(error_code(kin.add_tags_to_stream, StreamName=s, Tags=too_many)[0], "LimitExceededException", "51 tags")
    kin.delete_stream(StreamName=s)


@test
def stream_consumers():
    s = name()
    kin.create_stream(StreamName=s, ShardCount=1)
    arn = kin.describe_stream_summary(StreamName=s)["StreamDescriptionSummary"]["StreamARN"]
    c = kin.register_stream_consumer(StreamARN=arn, ConsumerName="app1")["Consumer"]
    eq(c["ConsumerName"], "app1", "name")
    eq(c["ConsumerStatus"], "ACTIVE", "status")
    check(c["ConsumerARN"].startswith(arn + "/consumer/app1:"), "consumer arn", c)
    eq(error_code(kin.register_stream_consumer, StreamARN=arn, ConsumerName="app1")[0], "ResourceInUseException",
       "twice")
    d = kin.describe_stream_consumer(ConsumerARN=c["ConsumerARN"])["ConsumerDescription"]
    eq((d["ConsumerName"], d["StreamARN"]), ("app1", arn), "describe by arn")
    d = kin.describe_stream_consumer(StreamARN=arn, ConsumerName="app1")["ConsumerDescription"]
    eq(d["ConsumerARN"], c["ConsumerARN"], "describe by name")
    kin.register_stream_consumer(StreamARN=arn, ConsumerName="app2")
    eq(sorted(x["ConsumerName"] for x in kin.list_stream_consumers(StreamARN=arn)["Consumers"]), ["app1", "app2"],
       "list")
    eq(kin.describe_stream_summary(StreamName=s)["StreamDescriptionSummary"]["ConsumerCount"], 2, "count")
    kin.deregister_stream_consumer(StreamARN=arn, ConsumerName="app2")
    eq(error_code(kin.describe_stream_consumer, StreamARN=arn, ConsumerName="app2")[0], "ResourceNotFoundException",
       "deregistered")
    eq(error_code(kin.delete_stream, StreamName=s)[0], "ResourceInUseException", "delete with consumers")
    kin.delete_stream(StreamName=s, EnforceConsumerDeletion=True)


if __name__ == "__main__":
    main()
