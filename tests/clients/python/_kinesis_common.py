"""Shared helpers for the boto3 Kinesis scenarios (kinesis_*.py).

The harness sets AWS_ENDPOINT_URL (the broker's "aws" listener) and test credentials. Each
test uses stream names of its own. `advance_clock(ms)` moves the broker's Kinesis clock
forward (the broker must run with `[aws.kinesis] test_clock = true`).
"""

import json
import os
import sys
import traceback
import urllib.request
import uuid

from _venv import bootstrap

bootstrap("boto3")

import boto3  # noqa: E402
import botocore.config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

_TESTS = []


def test(fn):
    _TESTS.append(fn)
    return fn


def client():
    return boto3.client(
        "kinesis",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        config=botocore.config.Config(retries={"max_attempts": 1}, read_timeout=30),
    )


def name(prefix="s"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def eq(got, want, what):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def check(cond, what, *context):
    if not cond:
        raise AssertionError("%s %r" % (what, context))


def error_code(fn, *args, **kwargs):
    """Runs fn, which must fail with a ClientError; returns (code, http status, message)."""
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        err = e.response["Error"]
        return err.get("Code"), e.response["ResponseMetadata"]["HTTPStatusCode"], err.get("Message", "")
    raise AssertionError("%s succeeded; an error was expected" % getattr(fn, "__name__", fn))


def raw(action, body):
    """One JSON 1.1 request outside boto3; returns (status, parsed body)."""
    req = urllib.request.Request(
        os.environ["AWS_ENDPOINT_URL"],
        data=json.dumps(body).encode(),
        headers={
            "X-Amz-Target": "Kinesis_20131202." + action,
            "Content-Type": "application/x-amz-json-1.1",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def advance_clock(ms):
    status, body = raw("SwitchyardAdvanceClock", {"Millis": ms})
    eq(status, 200, "advance clock %r" % body)


def read_shard(kin, stream, shard_id, start="TRIM_HORIZON", limit=None):
    """Every record of a shard from `start` up to now (stops at the tip or the shard's end).
    Returns (records, child shard ids or None when the shard is still open)."""
    it = kin.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType=start)["ShardIterator"]
    out = []
    while True:
        kwargs = {"ShardIterator": it}
        if limit:
            kwargs["Limit"] = limit
        r = kin.get_records(**kwargs)
        out.extend(r["Records"])
        nxt = r.get("NextShardIterator")
        if nxt is None:
            return out, [c["ShardId"] for c in r.get("ChildShards", [])]
        check(nxt != it, "GetRecords returned the same iterator")
        it = nxt
        if not r["Records"] and r["MillisBehindLatest"] == 0:
            return out, None


def main():
    failed = 0
    only = set(sys.argv[1:])
    for fn in _TESTS:
        if only and fn.__name__ not in only:
            continue
        try:
            fn()
            print("ok   %s" % fn.__name__, flush=True)
        except Exception:  # noqa: BLE001 - report every failure, then exit non-zero
            failed += 1
            print("FAIL %s" % fn.__name__, flush=True)
            traceback.print_exc()
    ran = len([f for f in _TESTS if not only or f.__name__ in only])
    print("%d passed, %d failed" % (ran - failed, failed), flush=True)
    sys.exit(1 if failed else 0)
