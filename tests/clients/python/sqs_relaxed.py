#!/usr/bin/env python3
"""boto3 against a broker with `[aws] limits = "relaxed"`: messages over 1 MiB, a
retention of seconds (and lowering it expires queued messages), more than 10 message
attributes, a 24 h visibility timeout, and back-to-back PurgeQueue calls are accepted."""

import time

from _sqs_common import check, client, eq, main, name, test

sqs = client()


@test
def larger_messages_and_attributes():
    url = sqs.create_queue(QueueName=name("big"), Attributes={"MaximumMessageSize": str(4 * 1024 * 1024)})["QueueUrl"]
    body = "x" * (2 * 1024 * 1024)
    attrs = {"a%d" % i: {"DataType": "String", "StringValue": str(i)} for i in range(20)}
    sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attrs)
    m = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], VisibilityTimeout=86400)["Messages"][0]
    eq(len(m["Body"]), len(body), "2 MiB body")
    eq(len(m["MessageAttributes"]), 20, "20 attributes")
    sqs.delete_queue(QueueUrl=url)


@test
def lowering_retention_expires_queued_messages():
    url = sqs.create_queue(QueueName=name("ret"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="old")
    time.sleep(1.5)
    sqs.send_message(QueueUrl=url, MessageBody="new")
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": "1"})
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    eq([m["Body"] for m in got], ["new"], "the 1.5 s old message expired at once")
    time.sleep(1.2)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "0"})
    check(not sqs.receive_message(QueueUrl=url).get("Messages"), "the newer one expired after 1 s too")
    sqs.delete_queue(QueueUrl=url)



@test
def purges_are_not_rate_limited():
    url = sqs.create_queue(QueueName=name("purge"))["QueueUrl"]
    for _ in range(3):
        sqs.send_message(QueueUrl=url, MessageBody="x")
        sqs.purge_queue(QueueUrl=url)
    eq(sqs.receive_message(QueueUrl=url).get("Messages"), None, "purged each time")
    sqs.delete_queue(QueueUrl=url)

if __name__ == "__main__":
    main()
