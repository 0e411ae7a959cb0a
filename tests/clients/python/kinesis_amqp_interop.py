#!/usr/bin/env python3
"""pika + boto3: AMQP stream queues (x-queue-type: stream, consumed with x-stream-offset
first/last/next/number/timestamp, non-destructive, prefetch required) and cross-protocol
identity with Kinesis: PutRecords -> AMQP stream consumer from `first`, AMQP publish ->
Kinesis GetRecords, and deletion seen from both sides."""

import datetime
import os
import time

from _kinesis_common import check, client, eq, error_code, main, name, read_shard, test

import pika  # noqa: E402  (installed with boto3 in the client venv)

kin = client()
AMQP_URL = os.environ["AMQP_URL"]


def channel():
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    return conn, conn.channel()


def declare_stream(ch, q, **args):
    arguments = {"x-queue-type": "stream"}
    arguments.update(args)
    ch.queue_declare(q, durable=True, arguments=arguments)


def consume(ch, q, offset, n, prefetch=10, timeout=10):
    """Read n messages from stream queue q from `offset`; ack each; returns [(body, props, method)]."""
    ch.basic_qos(prefetch_count=prefetch)
    out = []
    for method, props, body in ch.consume(q, arguments={"x-stream-offset": offset}, inactivity_timeout=timeout):
        if method is None:
            break
        out.append((body, props, method))
        ch.basic_ack(method.delivery_tag)
        if len(out) == n:
            break
    ch.cancel()
    return out


@test
def stream_queue_offsets_and_non_destructive_reads():
    q = name("aq")
    conn, ch = channel()
    declare_stream(ch, q)
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", q, b"m%d" % i, pika.BasicProperties(content_type="text/plain", delivery_mode=2))
    got = consume(ch, q, "first", 10)
    eq([b for b, _, _ in got], [b"m%d" % i for i in range(10)], "from first")
    offsets = [p.headers["x-stream-offset"] for _, p, _ in got]
    eq(offsets, sorted(offsets), "offsets increase")
    eq(got[0][1].content_type, "text/plain", "properties kept")
    # Reading did not remove anything.
    eq([b for b, _, _ in consume(ch, q, "first", 10)], [b"m%d" % i for i in range(10)], "again from first")
    eq([b for b, _, _ in consume(ch, q, offsets[6], 4)], [b"m6", b"m7", b"m8", b"m9"], "from a number")
    eq([b for b, _, _ in consume(ch, q, "last", 1)], [b"m9"], "last")
    old = datetime.datetime(2001, 1, 1)
    eq(len(consume(ch, q, old, 10)), 10, "from a timestamp")
    # `next`: only what is published after the consumer starts.
    ch.basic_qos(prefetch_count=10)
    it = ch.consume(q, arguments={"x-stream-offset": "next"}, inactivity_timeout=1)
    method, _, _ = next(it)
    eq(method, None, "nothing yet from next")
    ch.basic_publish("", q, b"later", pika.BasicProperties(delivery_mode=2))
    method, _, body = next(ch.consume(q, arguments={"x-stream-offset": "next"}, inactivity_timeout=10))
    ch.cancel()
    # A fresh `next` consumer started after the publish sees nothing; the first one saw it.
    check(body in (None, b"later"), "next consumer", body)
    # The stream is visible to Kinesis under the same name.
    deadline = time.monotonic() + 10
    while True:
        recs, _ = read_shard(kin, q, "shardId-000000000000")
        if len(recs) >= 11 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    eq([r["Data"] for r in recs], [b"m%d" % i for i in range(10)] + [b"later"], "Kinesis sees AMQP messages")
    eq({r["PartitionKey"] for r in recs}, {q}, "partition key = routing key")
    ch.queue_delete(q)
    eq(error_code(kin.describe_stream, StreamName=q)[0], "ResourceNotFoundException", "queue.delete deletes the stream")
    conn.close()


@test
def prefetch_is_required_for_stream_consumers():
    q = name("aq")
    conn, ch = channel()
    declare_stream(ch, q)
    try:
        ch.basic_consume(q, lambda *a: None, arguments={"x-stream-offset": "first"})
        ch.connection.process_data_events(time_limit=2)
        raise AssertionError("consume without prefetch was accepted")
    except pika.exceptions.ChannelClosedByBroker as e:
        eq(e.reply_code, 406, "PRECONDITION_FAILED")
    ch = conn.channel()
    # basic.get and purge would drain the stream's feed: refused.
    for op in (lambda c: c.basic_get(q), lambda c: c.queue_purge(q)):
        try:
            op(ch)
            raise AssertionError("draining a stream queue was accepted")
        except pika.exceptions.ChannelClosedByBroker as e:
            eq(e.reply_code, 406, "PRECONDITION_FAILED")
        ch = conn.channel()
    ch.queue_delete(q)
    conn.close()


@test
def kinesis_put_records_reach_an_amqp_stream_consumer():
    s = name("ks")
    kin.create_stream(StreamName=s, ShardCount=2)
    recs = [{"Data": b"%s-%d" % (k.encode(), i), "PartitionKey": k} for i in range(10) for k in ("a", "b", "c")]
    eq(kin.put_records(StreamName=s, Records=recs)["FailedRecordCount"], 0, "put")
    conn, ch = channel()
    ch.queue_declare(s, passive=True)
    got = consume(ch, s, "first", 30)
    eq(len(got), 30, "every record")
    by_key = {}
    for body, props, method in got:
        eq(method.routing_key, props.headers["x-partition-key"], "routing key = partition key")
        by_key.setdefault(method.routing_key, []).append(body)
    for k in ("a", "b", "c"):
        eq(by_key[k], [b"%s-%d" % (k.encode(), i) for i in range(10)], "order of %s" % k)
    kin.delete_stream(StreamName=s)
    try:
        ch.queue_declare(s, passive=True)
        raise AssertionError("queue of a deleted stream still exists")
    except pika.exceptions.ChannelClosedByBroker as e:
        eq(e.reply_code, 404, "NOT_FOUND")
    conn.close()


@test
def amqp_publish_through_an_exchange_reaches_kinesis():
    q = name("ax")
    conn, ch = channel()
    declare_stream(ch, q, **{"x-stream-shards": 2})
    ch.queue_bind(q, "amq.direct", routing_key="orders")
    ch.confirm_delivery()
    for i in range(6):
        ch.basic_publish("amq.direct", "orders", b"o%d" % i, pika.BasicProperties(delivery_mode=2))
    shards = kin.list_shards(StreamName=q)["Shards"]
    eq(len(shards), 2, "x-stream-shards")
    # The confirm covers the durable queue; the stream append follows right after.
    deadline = time.monotonic() + 10
    while True:
        data = []
        for sh in shards:
            recs, _ = read_shard(kin, q, sh["ShardId"])
            data.extend(r["Data"] for r in recs)
            eq({r["PartitionKey"] for r in recs} - {"orders"}, set(), "partition key")
        if len(data) >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    eq(sorted(data), [b"o%d" % i for i in range(6)], "Kinesis reads what AMQP published")
    ch.queue_delete(q)
    conn.close()


def kpl_aggregate(keys, records):
    """A KPL-aggregated record, built by hand: magic, AggregatedRecord protobuf, MD5."""
    import hashlib

    def varint(v):
        out = b""
        while v >= 0x80:
            out += bytes([(v & 0x7F) | 0x80])
            v >>= 7
        return out + bytes([v])

    def field(n, b):
        return varint((n << 3) | 2) + varint(len(b)) + b

    body = b"".join(field(1, k.encode()) for k in keys)
    for k, d in records:
        body += field(3, varint(1 << 3) + varint(k) + field(3, d))
    return b"\xf3\x89\x9a\xc2" + body + hashlib.md5(body).digest()


@test
def kpl_aggregated_records_are_split_for_amqp_and_kept_for_kinesis():
    s = name("kpl")
    kin.create_stream(StreamName=s, ShardCount=1)
    agg = kpl_aggregate(["user-1", "user-2"], [(0, b"click"), (1, b"view"), (0, b"buy")])
    kin.put_record(StreamName=s, Data=agg, PartitionKey="agg")
    recs, _ = read_shard(kin, s, "shardId-000000000000")
    eq([r["Data"] for r in recs], [agg], "Kinesis readers get the record as sent")
    conn, ch = channel()
    got = consume(ch, s, "first", 3)
    eq([(m.routing_key, b) for b, _, m in got], [("user-1", b"click"), ("user-2", b"view"), ("user-1", b"buy")],
       "AMQP consumers get the user records")
    eq([p.headers["x-kpl-index"] for _, p, _ in got], [0, 1, 2], "sub-record index")
    kin.delete_stream(StreamName=s)
    conn.close()


if __name__ == "__main__":
    main()
