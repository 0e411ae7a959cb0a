#!/usr/bin/env python3
"""The aws CLI (v1, `pip install awscli`) against the broker: queue management, tags,
permissions, messages with attributes, DLQ sources, purge and delete, each command's JSON
output checked. (Current aws CLI v1 releases speak AWS JSON 1.0 to SQS; the query protocol
is covered by sqs_query.py.)"""

import json
import os
import shutil
import subprocess
import sys

from _sqs_common import check, eq, main, name, test

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]


def aws_command():
    """The aws CLI: on PATH, or the awscli module of this or the system Python."""
    if shutil.which("aws"):
        return ["aws"]
    for py in (sys.executable, "python3"):
        if subprocess.run([py, "-c", "import awscli"], capture_output=True).returncode == 0:
            return [py, "-m", "awscli"]
    raise SystemExit("the aws CLI is not installed: pip install awscli")


AWS = aws_command()


def aws(*args, expect_error=None):
    cmd = AWS + ["--endpoint-url", ENDPOINT, "--region", "us-east-1", "--output", "json", "sqs"] + list(args)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_PAGER="")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    if expect_error:
        check(p.returncode != 0 and expect_error in p.stderr, "aws %s should fail with %s" % (args[0], expect_error),
              p.returncode, p.stderr)
        return None
    check(p.returncode == 0, "aws %s" % " ".join(args), p.stderr)
    return json.loads(p.stdout) if p.stdout.strip() else {}


@test
def queue_lifecycle_tags_and_permissions():
    n = name("cli")
    url = aws("create-queue", "--queue-name", n, "--attributes", "VisibilityTimeout=20,DelaySeconds=0",
              "--tags", "team=cli")["QueueUrl"]
    eq(url, "%s/000000000000/%s" % (ENDPOINT, n), "queue url")
    eq(aws("get-queue-url", "--queue-name", n)["QueueUrl"], url, "get-queue-url")
    check(url in aws("list-queues", "--queue-name-prefix", "cli-")["QueueUrls"], "list-queues")
    attrs = aws("get-queue-attributes", "--queue-url", url, "--attribute-names", "All")["Attributes"]
    eq(attrs["VisibilityTimeout"], "20", "attribute")
    aws("set-queue-attributes", "--queue-url", url, "--attributes", "MessageRetentionPeriod=300")
    eq(aws("get-queue-attributes", "--queue-url", url, "--attribute-names", "MessageRetentionPeriod")["Attributes"],
       {"MessageRetentionPeriod": "300"}, "set-queue-attributes")
    aws("tag-queue", "--queue-url", url, "--tags", "env=ci")
    eq(aws("list-queue-tags", "--queue-url", url)["Tags"], {"team": "cli", "env": "ci"}, "tags")
    aws("untag-queue", "--queue-url", url, "--tag-keys", "team")
    eq(aws("list-queue-tags", "--queue-url", url)["Tags"], {"env": "ci"}, "untag")
    aws("add-permission", "--queue-url", url, "--label", "p", "--aws-account-ids", "111122223333",
        "--actions", "SendMessage")
    policy = json.loads(aws("get-queue-attributes", "--queue-url", url, "--attribute-names", "Policy")["Attributes"]["Policy"])
    eq(policy["Statement"][0]["Sid"], "p", "permission statement")
    aws("remove-permission", "--queue-url", url, "--label", "p")
    aws("delete-queue", "--queue-url", url)
    aws("get-queue-url", "--queue-name", n, expect_error="NonExistentQueue")


@test
def messages_and_dead_letter_sources():
    dlq = aws("create-queue", "--queue-name", name("clidlq"))["QueueUrl"]
    dlq_arn = aws("get-queue-attributes", "--queue-url", dlq, "--attribute-names", "QueueArn")["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})
    src = aws("create-queue", "--queue-name", name("clisrc"), "--attributes",
              json.dumps({"RedrivePolicy": redrive}))["QueueUrl"]
    eq(aws("list-dead-letter-source-queues", "--queue-url", dlq)["queueUrls"], [src], "dead-letter sources")
    sent = aws("send-message", "--queue-url", src, "--message-body", "from the cli", "--message-attributes",
               json.dumps({"k": {"DataType": "String", "StringValue": "v"}}))
    check(sent["MD5OfMessageBody"] and sent["MD5OfMessageAttributes"], "checksums", sent)
    batch = aws("send-message-batch", "--queue-url", src, "--entries",
                json.dumps([{"Id": "a", "MessageBody": "A"}, {"Id": "b", "MessageBody": "B"}]))
    eq(sorted(e["Id"] for e in batch["Successful"]), ["a", "b"], "batch")
    got = aws("receive-message", "--queue-url", src, "--max-number-of-messages", "10", "--wait-time-seconds", "1",
              "--message-attribute-names", "All")["Messages"]
    eq(sorted(m["Body"] for m in got), ["A", "B", "from the cli"], "received")
    first = [m for m in got if m["Body"] == "from the cli"][0]
    eq(first["MessageAttributes"]["k"]["StringValue"], "v", "attribute")
    aws("change-message-visibility", "--queue-url", src, "--receipt-handle", first["ReceiptHandle"],
        "--visibility-timeout", "0")
    aws("delete-message-batch", "--queue-url", src, "--entries",
        json.dumps([{"Id": "x%d" % i, "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]))
    aws("purge-queue", "--queue-url", src)
    eq(aws("get-queue-attributes", "--queue-url", src, "--attribute-names", "ApproximateNumberOfMessages")["Attributes"],
       {"ApproximateNumberOfMessages": "0"}, "empty after purge")
    aws("send-message", "--queue-url", src, "--message-body", "x", "--delay-seconds", "901",
        expect_error="InvalidParameterValue")
    for u in (src, dlq):
        aws("delete-queue", "--queue-url", u)


if __name__ == "__main__":
    main()
