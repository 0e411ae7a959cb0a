"""Shared helpers for the boto3 SNS scenarios (sns_*.py).

Same contract as _sqs_common.py: the harness sets AWS_ENDPOINT_URL and credentials; every
test uses names of its own; the last line is "N passed, N failed".
"""

import base64
import json
import os
import time
import urllib.request

import boto3
import botocore.config

from _sqs_common import check, client as sqs_client, eq, error_code, main, name, test  # noqa: F401

REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")


def sns_client():
    return boto3.client(
        "sns",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=REGION,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        config=botocore.config.Config(retries={"max_attempts": 1}, read_timeout=30),
    )


sns = sns_client()
sqs = sqs_client()


def topic(prefix="t", fifo=False, **attrs):
    """Creates a topic; returns its ARN."""
    n = name(prefix, fifo)
    if fifo:
        attrs["FifoTopic"] = "true"
    return sns.create_topic(Name=n, Attributes=attrs)["TopicArn"]


def queue(prefix="q", fifo=False, **attrs):
    """Creates a queue; returns (url, arn)."""
    n = name(prefix, fifo)
    if fifo:
        attrs["FifoQueue"] = "true"
    url = sqs.create_queue(QueueName=n, Attributes=attrs)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def subscribe_queue(topic_arn, raw=False, policy=None, scope=None, fifo=False):
    """A new queue subscribed to the topic; returns (queue url, subscription arn)."""
    url, arn = queue(fifo=fifo)
    attrs = {}
    if raw:
        attrs["RawMessageDelivery"] = "true"
    if policy is not None:
        attrs["FilterPolicy"] = json.dumps(policy)
    if scope is not None:
        attrs["FilterPolicyScope"] = scope
    sub = sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attrs)["SubscriptionArn"]
    return url, sub


def receive(url, want=1, wait=5.0, **kwargs):
    """Receives until `want` messages arrived or `wait` seconds passed; deletes them."""
    out = []
    deadline = time.time() + wait
    while len(out) < want and time.time() < deadline:
        left = max(0, min(20, int(deadline - time.time() + 0.999)))
        r = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, want - len(out)),
            WaitTimeSeconds=left,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
            **kwargs,
        )
        for m in r.get("Messages", []):
            out.append(m)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return out


def leftover(url):
    """Whatever is still in the queue right now (no wait); deletes it. Publishing routes
    synchronously, so after a Publish returns its copies are already queued."""
    r = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
    msgs = r.get("Messages", [])
    for m in msgs:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return msgs


def drain(url):
    """Everything in the queue right now (see `leftover`)."""
    out = []
    while True:
        batch = leftover(url)
        if not batch:
            return out
        out += batch


def receive_none(url, wait=1):
    """Asserts the queue stays empty for `wait` seconds."""
    r = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=wait, MaxNumberOfMessages=10)
    msgs = r.get("Messages", [])
    check(not msgs, "queue should be empty", [m["Body"] for m in msgs])


def verify_signature(msg):
    """Checks an SNS message's signature against the certificate at SigningCertURL."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if msg["Type"] == "Notification":
        keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    text = "".join("%s\n%s\n" % (k, msg[k]) for k in keys if k in msg)
    pem = urllib.request.urlopen(msg["SigningCertURL"], timeout=10).read()
    cert = x509.load_pem_x509_certificate(pem)
    algo = hashes.SHA1() if msg["SignatureVersion"] == "1" else hashes.SHA256()
    cert.public_key().verify(base64.b64decode(msg["Signature"]), text.encode(), padding.PKCS1v15(), algo)
