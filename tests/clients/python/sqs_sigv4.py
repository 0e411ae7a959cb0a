#!/usr/bin/env python3
"""boto3 against a broker in strict SigV4 mode (`[aws] auth = "sigv4"`): requests signed
with the configured key work in both wire protocols; a wrong secret, an unknown key and an
unsigned request are refused with AWS's codes. Arguments: access key id, secret."""

import os
import sys
import urllib.error
import urllib.parse
import urllib.request

import boto3
import botocore.config
from botocore import UNSIGNED
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from _sqs_common import check, eq, error_code, main, name, test

KEY, SECRET = sys.argv[1], sys.argv[2]
ENDPOINT = os.environ["AWS_ENDPOINT_URL"]


def sqs(key=KEY, secret=SECRET, **cfg):
    return boto3.client("sqs", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret,
                        config=botocore.config.Config(retries={"max_attempts": 1}, **cfg))


@test
def good_signature_works():
    c = sqs()
    url = c.create_queue(QueueName=name("sig"))["QueueUrl"]
    c.send_message(QueueUrl=url, MessageBody="signed", MessageAttributes={"k": {"DataType": "String", "StringValue": "v v"}})
    eq(c.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"][0]["Body"], "signed", "round trip")
    c.delete_queue(QueueUrl=url)


@test
def bad_credentials_are_refused():
    code, status, _ = error_code(sqs(secret="wrong").list_queues)
    eq((code, status), ("SignatureDoesNotMatch", 403), "wrong secret")
    code, status, _ = error_code(sqs(key="AKIDUNKNOWN").list_queues)
    eq((code, status), ("InvalidClientTokenId", 403), "unknown key")
    code, status, _ = error_code(sqs(signature_version=UNSIGNED).list_queues)
    eq((code, status), ("MissingAuthenticationToken", 403), "unsigned")


def query(auth, params, method="POST"):
    body = urllib.parse.urlencode({"Version": "2012-11-05", **params})
    if method == "POST":
        req = AWSRequest(method="POST", url=ENDPOINT + "/", data=body.encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    else:
        req = AWSRequest(method="GET", url=ENDPOINT + "/?" + body)
    auth.add_auth(req)
    p = req.prepare()
    raw = urllib.request.Request(p.url, data=p.body if method == "POST" else None, headers=dict(p.headers), method=method)
    try:
        with urllib.request.urlopen(raw, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@test
def query_protocol_header_and_presigned_signatures():
    good = Credentials(KEY, SECRET)
    status, body = query(SigV4Auth(good, "sqs", "us-east-1"), {"Action": "ListQueues"})
    eq(status, 200, "header-signed query request: %s" % body)
    status, body = query(SigV4QueryAuth(good, "sqs", "us-east-1", expires=300), {"Action": "ListQueues"}, "GET")
    eq(status, 200, "query-string (presigned) signature: %s" % body)
    status, body = query(SigV4Auth(Credentials(KEY, "nope"), "sqs", "us-east-1"), {"Action": "ListQueues"})
    eq(status, 403, "bad query signature")
    check("<Code>SignatureDoesNotMatch</Code>" in body, "XML error code", body)


if __name__ == "__main__":
    main()
