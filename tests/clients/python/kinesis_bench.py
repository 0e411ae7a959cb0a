#!/usr/bin/env python3
"""Kinesis/stream throughput figures for the closing note (not part of the test suite).

  kinesis_bench.py ingest STREAM SHARDS SECONDS THREADS [MAX]  PutRecords of 500 x 1 KiB records
                                                           (stops at SECONDS or MAX records)
  kinesis_bench.py catchup STREAM                          GetRecords (Limit 10000) over every shard
  kinesis_bench.py amqp STREAM COUNT                       pika stream consumer from `first`

Run against a broker with `[aws.kinesis] throughput = "relaxed"`. Requests are pre-encoded
and sent over keep-alive HTTP connections, so the client does little work per record.
"""

import base64
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

from _venv import bootstrap

bootstrap("pika")

EP = urllib.parse.urlparse(os.environ["AWS_ENDPOINT_URL"])


def call(conn, action, body):
    conn.request("POST", "/", body=body, headers={
        "X-Amz-Target": "Kinesis_20131202." + action, "Content-Type": "application/x-amz-json-1.1"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError("%s: %s %s" % (action, r.status, data[:200]))
    return data


def ingest(stream, shards, seconds, threads, limit=None):
    c = http.client.HTTPConnection(EP.hostname, EP.port)
    call(c, "CreateStream", json.dumps({"StreamName": stream, "ShardCount": shards}))
    data = base64.b64encode(os.urandom(1024)).decode()
    bodies = [json.dumps({"StreamName": stream, "Records": [
        {"Data": data, "PartitionKey": "pk-%d-%d" % (t, i)} for i in range(500)]}).encode() for t in range(threads)]
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def run(t):
        conn = http.client.HTTPConnection(EP.hostname, EP.port)
        while time.monotonic() < stop and (limit is None or sum(counts) < limit):
            out = json.loads(call(conn, "PutRecords", bodies[t]))
            counts[t] += 500 - out["FailedRecordCount"]

    start = time.monotonic()
    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    el = time.monotonic() - start
    n = sum(counts)
    print("ingest: %d records of 1 KiB in %.1f s = %.0f records/s, %.1f MiB/s (%d shards, %d clients)"
          % (n, el, n / el, n / el / 1024, shards, threads))


def catchup(stream):
    c = http.client.HTTPConnection(EP.hostname, EP.port)
    shards = json.loads(call(c, "ListShards", json.dumps({"StreamName": stream})))["Shards"]
    n, nbytes, start = 0, 0, time.monotonic()
    for sh in shards:
        it = json.loads(call(c, "GetShardIterator", json.dumps(
            {"StreamName": stream, "ShardId": sh["ShardId"], "ShardIteratorType": "TRIM_HORIZON"})))["ShardIterator"]
        while it:
            raw = call(c, "GetRecords", json.dumps({"ShardIterator": it, "Limit": 10000}))
            nbytes += len(raw)
            out = json.loads(raw)
            n += len(out["Records"])
            if not out["Records"] and out["MillisBehindLatest"] == 0:
                break
            it = out.get("NextShardIterator")
    el = time.monotonic() - start
    print("catch-up: %d records in %.1f s = %.0f records/s (%.1f MiB/s of JSON responses)"
          % (n, el, n / el, nbytes / el / 1048576))


def amqp(stream, count):
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1000)
    n, start = 0, time.monotonic()
    for method, _props, _body in ch.consume(stream, arguments={"x-stream-offset": "first"}, inactivity_timeout=5):
        if method is None:
            break
        n += 1
        if n % 500 == 0:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if n >= count:
            break
    el = time.monotonic() - start
    print("amqp stream consumer from first: %d messages in %.1f s = %.0f msg/s (pika)" % (n, el, n / el))
    conn.close()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "ingest":
        ingest(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]),
               int(sys.argv[6]) if len(sys.argv) > 6 else None)
    elif cmd == "catchup":
        catchup(sys.argv[2])
    elif cmd == "amqp":
        amqp(sys.argv[2], int(sys.argv[3]))
