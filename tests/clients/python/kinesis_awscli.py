#!/usr/bin/env python3
"""The aws CLI (v1, `awscli` in the client venv; it vendors its own botocore) against the
broker's Kinesis API: every action through `aws kinesis ... --endpoint-url`, each command's
JSON output checked, and AWS's error codes on the CLI's stderr. Commands run through the CLI's
own entry point (`awscli.clidriver`, what the `aws` script calls) in this process, a few as a
separate `python -m awscli` process; one process per command took 95 s on a loaded machine.

Actions: create-stream (provisioned and on-demand), describe-stream, describe-stream-summary,
list-streams, list-shards (pagination and a filter), put-record, put-records,
get-shard-iterator (every type), get-records, split-shard, merge-shards, update-shard-count,
increase/decrease-stream-retention-period, add-tags-to-stream, list-tags-for-stream,
remove-tags-from-stream, update-stream-mode, register/describe/list/deregister-stream-consumer,
delete-stream. SubscribeToShard is an event-stream operation that aws CLI v1 does not offer
(the script checks that it is absent); curl drives it in tests/tests/kinesis.rs."""

import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

from _kinesis_common import check, eq, main, name, test

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]


def aws_command():
    """The aws CLI as a command: the awscli module of this Python (the pinned venv one), else
    `aws` on PATH."""
    for py in (sys.executable, "python3"):
        if subprocess.run([py, "-c", "import awscli"], capture_output=True).returncode == 0:
            return [py, "-m", "awscli"]
    if shutil.which("aws"):
        return ["aws"]
    raise SystemExit("the aws CLI is not installed: run tests/clients/setup.sh (pins awscli)")


AWS = aws_command()
GLOBAL = ["--endpoint-url", ENDPOINT, "--region", "us-east-1", "--output", "json"]
os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_PAGER="")
os.environ.pop("AWS_PROFILE", None)

try:
    # The CLI's own entry point (what `aws` runs), in this process: ~60 commands would spend
    # most of the script's time starting Python and importing awscli once per command.
    from awscli.clidriver import create_clidriver
except ImportError:
    create_clidriver = None


def run_cli(argv, in_process=True):
    """Runs `aws <argv>`; returns (exit code, stdout, stderr)."""
    if create_clidriver is None or not in_process:
        p = subprocess.run(AWS + argv, capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = create_clidriver().main(argv)
        except SystemExit as e:  # argument errors end in argparse's exit
            rc = e.code if isinstance(e.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def aws(*args, expect_error=None, in_process=True):
    rc, stdout, stderr = run_cli(GLOBAL + ["kinesis"] + list(args), in_process)
    if expect_error:
        check(rc != 0 and expect_error in stderr, "aws %s should fail with %s" % (args[0], expect_error), rc, stderr)
        return None
    check(rc == 0, "aws %s" % " ".join(args), stderr)
    return json.loads(stdout) if stdout.strip() else {}


def shard_ids(stream, *extra):
    return [s["ShardId"] for s in aws("list-shards", "--stream-name", stream, *extra)["Shards"]]


def read_all(stream, shard, *start):
    it = aws("get-shard-iterator", "--stream-name", stream, "--shard-id", shard, *start)["ShardIterator"]
    out = []
    while True:
        r = aws("get-records", "--shard-iterator", it, "--limit", "100")
        out.extend(r["Records"])
        if r.get("NextShardIterator") is None or (not r["Records"] and r["MillisBehindLatest"] == 0):
            return out
        it = r["NextShardIterator"]


@test
def streams_lifecycle_and_listing():
    s, od = name("cli"), name("cli-od")
    # As a separate process too (the `aws` command line itself); the rest runs in process.
    aws("create-stream", "--stream-name", s, "--shard-count", "3", in_process=False)
    aws("create-stream", "--stream-name", od, "--stream-mode-details", "StreamMode=ON_DEMAND")
    d = aws("describe-stream", "--stream-name", s)["StreamDescription"]
    eq(d["StreamStatus"], "ACTIVE", "status")
    eq(len(d["Shards"]), 3, "shards")
    eq(d["StreamARN"], "arn:aws:kinesis:us-east-1:000000000000:stream/%s" % s, "arn")
    summary = aws("describe-stream-summary", "--stream-name", od)["StreamDescriptionSummary"]
    eq(summary["StreamModeDetails"]["StreamMode"], "ON_DEMAND", "on-demand mode")
    names = aws("list-streams")["StreamNames"]
    check(s in names and od in names, "list-streams", names)
    # Pages by hand: the CLI's own pagination of list-shards repeats StreamName with NextToken,
    # which AWS refuses (and so does the broker, with AWS's message).
    page = aws("list-shards", "--stream-name", s, "--max-results", "1", "--no-paginate")
    eq(len(page["Shards"]), 1, "first page")
    rest = aws("list-shards", "--next-token", page["NextToken"], "--no-paginate")
    eq(len(rest["Shards"]), 2, "second page")
    aws("list-shards", "--stream-name", s, "--page-size", "1",
        expect_error="NextToken and StreamName cannot be provided together")
    eq(shard_ids(s, "--shard-filter", "Type=AT_LATEST"), [x["ShardId"] for x in d["Shards"]], "shard filter")
    aws("update-stream-mode", "--stream-arn", d["StreamARN"], "--stream-mode-details", "StreamMode=ON_DEMAND")
    eq(aws("describe-stream-summary", "--stream-name", s)["StreamDescriptionSummary"]["StreamModeDetails"]["StreamMode"],
       "ON_DEMAND", "update-stream-mode")
    aws("delete-stream", "--stream-name", od)
    aws("describe-stream", "--stream-name", od, expect_error="ResourceNotFoundException")
    aws("create-stream", "--stream-name", s, "--shard-count", "1", expect_error="ResourceInUseException")
    aws("delete-stream", "--stream-name", s)


@test
def records_put_and_read_every_iterator_type():
    s = name("cli")
    aws("create-stream", "--stream-name", s, "--shard-count", "1")
    shard = shard_ids(s)[0]
    # awscli v1 sends a blob argument as its raw bytes (base64-encoded on the wire).
    one = aws("put-record", "--stream-name", s, "--partition-key", "pk", "--data", "hello", in_process=False)
    eq(one["ShardId"], shard, "put-record shard")
    # awscli v1 takes blobs inside JSON as raw text too (v2 would want base64).
    entries = [{"Data": "rec-%d" % i, "PartitionKey": "pk%d" % i} for i in range(5)]
    many = aws("put-records", "--stream-name", s, "--records", json.dumps(entries))
    eq(many["FailedRecordCount"], 0, "put-records")
    seqs = [one["SequenceNumber"]] + [r["SequenceNumber"] for r in many["Records"]]
    check(all(int(a) < int(b) for a, b in zip(seqs, seqs[1:])), "sequence numbers increase", seqs)

    recs = read_all(s, shard, "--shard-iterator-type", "TRIM_HORIZON")
    eq([r["SequenceNumber"] for r in recs], seqs, "TRIM_HORIZON")
    eq(base64.b64decode(recs[0]["Data"]), b"hello", "put-record data")
    eq([base64.b64decode(r["Data"]) for r in recs[1:]], [b"rec-%d" % i for i in range(5)], "put-records data")
    at = read_all(s, shard, "--shard-iterator-type", "AT_SEQUENCE_NUMBER", "--starting-sequence-number", seqs[2])
    eq([r["SequenceNumber"] for r in at], seqs[2:], "AT_SEQUENCE_NUMBER")
    after = read_all(s, shard, "--shard-iterator-type", "AFTER_SEQUENCE_NUMBER", "--starting-sequence-number", seqs[2])
    eq([r["SequenceNumber"] for r in after], seqs[3:], "AFTER_SEQUENCE_NUMBER")
    ts = read_all(s, shard, "--shard-iterator-type", "AT_TIMESTAMP", "--timestamp", "0")
    eq(len(ts), 6, "AT_TIMESTAMP 0")
    latest = aws("get-shard-iterator", "--stream-name", s, "--shard-id", shard, "--shard-iterator-type", "LATEST")
    aws("put-record", "--stream-name", s, "--partition-key", "pk", "--data", "late")
    r = aws("get-records", "--shard-iterator", latest["ShardIterator"])
    eq([base64.b64decode(x["Data"]) for x in r["Records"]], [b"late"], "LATEST")
    check("NextShardIterator" in r and r["NextShardIterator"] != latest["ShardIterator"], "new iterator every call")

    # AWS's errors, as the CLI reports them.
    aws("get-records", "--shard-iterator", "bm90IGFuIGl0ZXJhdG9y", expect_error="InvalidArgumentException")
    aws("get-shard-iterator", "--stream-name", s, "--shard-id", "shardId-000000000042", "--shard-iterator-type",
        "TRIM_HORIZON", expect_error="ResourceNotFoundException")
    aws("put-record", "--stream-name", name("missing"), "--partition-key", "pk", "--data", "x",
        expect_error="ResourceNotFoundException")
    aws("delete-stream", "--stream-name", s)


@test
def resharding_split_merge_update_shard_count():
    s = name("cli")
    aws("create-stream", "--stream-name", s, "--shard-count", "1")
    parent = aws("describe-stream", "--stream-name", s)["StreamDescription"]["Shards"][0]
    aws("put-record", "--stream-name", s, "--partition-key", "before", "--data", "b")
    lo = int(parent["HashKeyRange"]["StartingHashKey"])
    hi = int(parent["HashKeyRange"]["EndingHashKey"])
    aws("split-shard", "--stream-name", s, "--shard-to-split", parent["ShardId"],
        "--new-starting-hash-key", str((lo + hi + 1) // 2))
    shards = aws("list-shards", "--stream-name", s)["Shards"]
    eq(len(shards), 3, "parent + two children")
    children = [x for x in shards if x.get("ParentShardId") == parent["ShardId"]]
    eq(len(children), 2, "children name their parent")
    # The closed parent ends with a null iterator and names its children.
    it = aws("get-shard-iterator", "--stream-name", s, "--shard-id", parent["ShardId"],
             "--shard-iterator-type", "TRIM_HORIZON")["ShardIterator"]
    r = aws("get-records", "--shard-iterator", it)
    eq([base64.b64decode(x["Data"]) for x in r["Records"]], [b"b"], "parent keeps its records")
    if r.get("NextShardIterator") is not None:
        r = aws("get-records", "--shard-iterator", r["NextShardIterator"])
    check(r.get("NextShardIterator") is None, "closed parent: null iterator at the end", r)
    eq(sorted(c["ShardId"] for c in r["ChildShards"]), sorted(c["ShardId"] for c in children), "ChildShards")

    a, b = sorted(children, key=lambda x: int(x["HashKeyRange"]["StartingHashKey"]))
    aws("merge-shards", "--stream-name", s, "--shard-to-merge", a["ShardId"], "--adjacent-shard-to-merge", b["ShardId"])
    eq(len(shard_ids(s, "--shard-filter", "Type=AT_LATEST")), 1, "merged")
    r = aws("update-shard-count", "--stream-name", s, "--target-shard-count", "2", "--scaling-type", "UNIFORM_SCALING")
    eq(r["TargetShardCount"], 2, "update-shard-count")
    eq(len(shard_ids(s, "--shard-filter", "Type=AT_LATEST")), 2, "rescaled")
    eq(aws("describe-stream-summary", "--stream-name", s)["StreamDescriptionSummary"]["OpenShardCount"], 2, "open")
    aws("delete-stream", "--stream-name", s)


@test
def retention_tags_and_consumers():
    s = name("cli")
    aws("create-stream", "--stream-name", s, "--shard-count", "1")
    aws("increase-stream-retention-period", "--stream-name", s, "--retention-period-hours", "48")
    eq(aws("describe-stream-summary", "--stream-name", s)["StreamDescriptionSummary"]["RetentionPeriodHours"], 48,
       "increase")
    aws("decrease-stream-retention-period", "--stream-name", s, "--retention-period-hours", "24")
    eq(aws("describe-stream-summary", "--stream-name", s)["StreamDescriptionSummary"]["RetentionPeriodHours"], 24,
       "decrease")
    aws("decrease-stream-retention-period", "--stream-name", s, "--retention-period-hours", "1",
        expect_error="InvalidArgumentException")

    aws("add-tags-to-stream", "--stream-name", s, "--tags", "team=cli,env=ci")
    tags = {t["Key"]: t["Value"] for t in aws("list-tags-for-stream", "--stream-name", s)["Tags"]}
    eq(tags, {"team": "cli", "env": "ci"}, "tags")
    aws("remove-tags-from-stream", "--stream-name", s, "--tag-keys", "team")
    eq([t["Key"] for t in aws("list-tags-for-stream", "--stream-name", s)["Tags"]], ["env"], "untag")

    arn = aws("describe-stream-summary", "--stream-name", s)["StreamDescriptionSummary"]["StreamARN"]
    c = aws("register-stream-consumer", "--stream-arn", arn, "--consumer-name", "app")["Consumer"]
    check(c["ConsumerARN"].startswith(arn + "/consumer/app:"), "consumer arn", c)
    d = aws("describe-stream-consumer", "--consumer-arn", c["ConsumerARN"])["ConsumerDescription"]
    eq(d["ConsumerName"], "app", "describe-stream-consumer")
    eq([x["ConsumerName"] for x in aws("list-stream-consumers", "--stream-arn", arn)["Consumers"]], ["app"], "list")

    # SubscribeToShard (an event-stream operation) is not a command of aws CLI v1; it is
    # tested with curl over h2c and HTTP/1.1 in tests/tests/kinesis.rs.
    aws("subscribe-to-shard", "--consumer-arn", c["ConsumerARN"], "--shard-id", shard_ids(s)[0],
        "--starting-position", "Type=TRIM_HORIZON", expect_error="Invalid choice")

    aws("deregister-stream-consumer", "--consumer-arn", c["ConsumerARN"])
    eq(aws("list-stream-consumers", "--stream-arn", arn)["Consumers"], [], "deregistered")
    aws("delete-stream", "--stream-name", s)


if __name__ == "__main__":
    main()
