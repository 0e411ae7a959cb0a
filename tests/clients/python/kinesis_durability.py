#!/usr/bin/env python3
"""Kinesis durability helper, driven by tests/tests/kinesis.rs:

  kinesis_durability.py put STREAM N FILE       create STREAM (2 shards), PutRecords N records,
                                                write every acknowledged (seq, data) to FILE
  kinesis_durability.py put-forever STREAM FILE put until the broker goes away, appending each
                                                acknowledged record to FILE (flushed per batch)
  kinesis_durability.py check STREAM FILE       every record in FILE is in STREAM, intact
"""

import json
import sys

from _kinesis_common import client

kin = client()


def put_batch(stream, start, n, out):
    recs = [{"Data": b"rec-%08d" % (start + i), "PartitionKey": "pk-%d" % ((start + i) % 50)} for i in range(n)]
    r = kin.put_records(StreamName=stream, Records=recs)
    for rec, res in zip(recs, r["Records"]):
        if "SequenceNumber" in res:
            out.write(json.dumps([res["ShardId"], res["SequenceNumber"], rec["Data"].decode()]) + "\n")
    out.flush()


def main():
    cmd, stream = sys.argv[1], sys.argv[2]
    if cmd == "put":
        n, path = int(sys.argv[3]), sys.argv[4]
        kin.create_stream(StreamName=stream, ShardCount=2)
        with open(path, "w") as out:
            for start in range(0, n, 100):
                put_batch(stream, start, min(100, n - start), out)
    elif cmd == "put-forever":
        path = sys.argv[3]
        kin.create_stream(StreamName=stream, ShardCount=2)
        with open(path, "w") as out:
            out.write("ready\n")
            out.flush()
            start = 0
            try:
                while True:
                    put_batch(stream, start, 50, out)
                    start += 50
            except Exception as e:  # noqa: BLE001 - the broker was killed: that is the point
                print("stopped after %d: %s" % (start, type(e).__name__))
    elif cmd == "check":
        path = sys.argv[3]
        want = [json.loads(line) for line in open(path) if line.startswith("[")]
        got = {}
        for sh in kin.list_shards(StreamName=stream)["Shards"]:
            it = kin.get_shard_iterator(StreamName=stream, ShardId=sh["ShardId"],
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while it:
                r = kin.get_records(ShardIterator=it)
                for x in r["Records"]:
                    got[x["SequenceNumber"]] = (sh["ShardId"], x["Data"].decode())
                if not r["Records"] and r["MillisBehindLatest"] == 0:
                    break
                it = r.get("NextShardIterator")
        missing = [w for w in want if got.get(w[1]) != (w[0], w[2])]
        print("%d acknowledged, %d present, %d missing" % (len(want), len(got), len(missing)))
        if missing:
            print("first missing: %r" % missing[:5])
            sys.exit(1)
        if not want:
            print("nothing was acknowledged")
            sys.exit(1)
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
