"""Shared helpers for the boto3 SQS scenarios (sqs_*.py).

The harness sets AWS_ENDPOINT_URL (the broker's "aws" listener), AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION. Every test uses queue names of its own.
"""

import hashlib
import os
import struct
import sys
import traceback
import uuid

import boto3
import botocore.config
from botocore.exceptions import ClientError

_TESTS = []


def test(fn):
    _TESTS.append(fn)
    return fn


def client():
    return boto3.client(
        "sqs",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        config=botocore.config.Config(retries={"max_attempts": 1}, read_timeout=30),
    )


def name(prefix="q", fifo=False):
    n = "%s-%s" % (prefix, uuid.uuid4().hex[:12])
    return n + ".fifo" if fifo else n


def eq(got, want, what):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def check(cond, what, *context):
    if not cond:
        raise AssertionError("%s %r" % (what, context))


def error_code(fn, *args, **kwargs):
    """Runs fn, which must fail with a ClientError; returns (code, http status, error dict)."""
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        err = e.response["Error"]
        return err.get("Code"), e.response["ResponseMetadata"]["HTTPStatusCode"], err
    raise AssertionError("%s succeeded; an error was expected" % getattr(fn, "__name__", fn))


def md5_hex(data):
    return hashlib.md5(data).hexdigest()


def attributes_md5(attrs):
    """AWS's documented MD5OfMessageAttributes (as the Java/.NET SDKs verify it)."""
    buf = b""

    def put(b):
        return struct.pack(">I", len(b)) + b

    for k in sorted(attrs):
        v = attrs[k]
        buf += put(k.encode()) + put(v["DataType"].encode())
        if "BinaryValue" in v:
            buf += b"\x02" + put(v["BinaryValue"])
        else:
            buf += b"\x01" + put(v["StringValue"].encode())
    return hashlib.md5(buf).hexdigest()


def main():
    failed = 0
    for fn in _TESTS:
        try:
            fn()
            print("ok   %s" % fn.__name__, flush=True)
        except Exception:  # noqa: BLE001 - report every failure, then exit non-zero
            failed += 1
            print("FAIL %s" % fn.__name__, flush=True)
            traceback.print_exc()
    print("%d passed, %d failed" % (len(_TESTS) - failed, failed), flush=True)
    sys.exit(1 if failed else 0)
