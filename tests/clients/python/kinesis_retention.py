#!/usr/bin/env python3
"""Retention expiry end to end, on the broker's test clock (`SwitchyardAdvanceClock` moves the
stream clock that the retention timers read too).

A one-shard stream with 4 KiB segments (declared as an AMQP stream queue, so the segment size
can be small) gets batch A (40 x 1 KiB records, ~10 segments); the clock moves 23 h; batch B
(10 records) follows; the clock moves 2 h more. A is now past the 24 h retention, B is not:
TRIM_HORIZON must start at a segment boundary inside A's tail (whole segments only: at most one
segment of A may survive, the one B's records share), hold every B record in order, and the
segment files of A must be gone from disk. Another 24 h later the stream is empty and holds no
segment file; it still takes appends, with sequence numbers above the old ones.

Usage: kinesis_retention.py <broker data dir>
"""

import glob
import os
import sys
import time

from _kinesis_common import advance_clock, check, client, eq, main, name, read_shard, test

import pika  # noqa: E402  (installed with boto3 in the client venv)

kin = client()
DATA_DIR = sys.argv.pop(1) if len(sys.argv) > 1 else os.environ.get("SWITCHYARD_DATA_DIR", "")
HOUR_MS = 3600 * 1000
SEGMENT_BYTES = 4096


def segment_files(stream):
    """The stream's segment files on disk (`streams/<vhost>/<name hex>-<incarnation>/<shard>/`)."""
    hexname = stream.encode().hex()
    return sorted(glob.glob(os.path.join(DATA_DIR, "streams", "*", hexname + "-*", "*", "*.seg")))


def put(stream, tag, n):
    recs = [{"Data": (b"%s-%04d-" % (tag, i)).ljust(1024, b"x"), "PartitionKey": "k"} for i in range(n)]
    r = kin.put_records(StreamName=stream, Records=recs)
    eq(r["FailedRecordCount"], 0, "put %s" % tag)
    return [x["SequenceNumber"] for x in r["Records"]]


def wait_for(what, cond, timeout=15):
    deadline = time.time() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.time() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.1)


@test
def retention_drops_whole_expired_segments():
    check(os.path.isdir(DATA_DIR), "data dir", DATA_DIR)
    s = name("ret")
    conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
    conn.channel().queue_declare(
        s, durable=True, arguments={"x-queue-type": "stream", "x-stream-max-segment-size-bytes": SEGMENT_BYTES}
    )
    conn.close()
    shard = kin.list_shards(StreamName=s)["Shards"][0]["ShardId"]

    seq_a = put(s, b"A", 40)
    files_a = segment_files(s)
    check(len(files_a) >= 8, "batch A spans many segments", len(files_a))
    advance_clock(23 * HOUR_MS)
    seq_b = put(s, b"B", 10)
    recs, _ = read_shard(kin, s, shard)
    eq(len(recs), 50, "nothing expired at 23 h")

    advance_clock(2 * HOUR_MS)

    def expired():
        got, _ = read_shard(kin, s, shard)
        return got if len(got) < 50 else None

    recs = wait_for("batch A to expire", expired)
    seqs = [r["SequenceNumber"] for r in recs]
    eq(seqs[-10:], seq_b, "every B record survives, in order")
    a_left = seqs[:-10]
    eq(a_left, seq_a[len(seq_a) - len(a_left):], "what is left of A is its tail, in order")
    # Whole segments only: A's surviving tail is the part of one segment that B's first records
    # share (4 KiB segments hold at most 4 records of ~1 KiB).
    check(len(a_left) <= SEGMENT_BYTES // 1024, "at most one segment of A survives", len(a_left))
    # The log's writer thread deletes the files just after the index forgets them.
    gone = set(files_a[:-1])
    wait_for("A's full segments to be deleted from disk", lambda: not (gone & set(segment_files(s))))
    summary = kin.describe_stream_summary(StreamName=s)["StreamDescriptionSummary"]
    eq(summary["RetentionPeriodHours"], 24, "retention")

    advance_clock(24 * HOUR_MS)
    wait_for("every record to expire", lambda: not read_shard(kin, s, shard)[0])
    wait_for("every segment file to be deleted", lambda: not segment_files(s))

    # The stream goes on: new records, numbered above everything it ever held.
    seq_c = put(s, b"C", 3)
    check(int(seq_c[0]) > int(seq_b[-1]), "sequence numbers keep growing", seq_c[0], seq_b[-1])
    recs, _ = read_shard(kin, s, shard)
    eq([r["SequenceNumber"] for r in recs], seq_c, "only the new records")
    kin.delete_stream(StreamName=s)


if __name__ == "__main__":
    main()
