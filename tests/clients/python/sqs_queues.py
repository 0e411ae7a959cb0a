#!/usr/bin/env python3
"""boto3 (AWS JSON 1.0): CreateQueue with attributes, GetQueueUrl, ListQueues (prefix,
pagination), GetQueueAttributes (All and single), SetQueueAttributes, PurgeQueue,
DeleteQueue, and the error codes SDKs map to exceptions."""

import os

from _sqs_common import check, client, eq, error_code, main, name, test

sqs = client()
ENDPOINT = os.environ["AWS_ENDPOINT_URL"]


@test
def create_get_url_delete():
    n = name("cq")
    url = sqs.create_queue(QueueName=n)["QueueUrl"]
    eq(url, "%s/000000000000/%s" % (ENDPOINT, n), "queue url")
    eq(sqs.get_queue_url(QueueName=n)["QueueUrl"], url, "GetQueueUrl")
    # Same name, same attributes: idempotent.
    eq(sqs.create_queue(QueueName=n)["QueueUrl"], url, "CreateQueue again")
    sqs.delete_queue(QueueUrl=url)
    try:
        sqs.get_queue_url(QueueName=n)
        raise AssertionError("deleted queue still has a URL")
    except sqs.exceptions.QueueDoesNotExist:
        pass


@test
def attributes_all_and_single():
    n = name("attrs")
    url = sqs.create_queue(
        QueueName=n,
        Attributes={
            "VisibilityTimeout": "45",
            "DelaySeconds": "2",
            "MessageRetentionPeriod": "3600",
            "MaximumMessageSize": "2048",
            "ReceiveMessageWaitTimeSeconds": "1",
        },
    )["QueueUrl"]
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    eq(a["VisibilityTimeout"], "45", "VisibilityTimeout")
    eq(a["DelaySeconds"], "2", "DelaySeconds")
    eq(a["MessageRetentionPeriod"], "3600", "MessageRetentionPeriod")
    eq(a["MaximumMessageSize"], "2048", "MaximumMessageSize")
    eq(a["ReceiveMessageWaitTimeSeconds"], "1", "ReceiveMessageWaitTimeSeconds")
    eq(a["QueueArn"], "arn:aws:sqs:us-east-1:000000000000:" + n, "QueueArn")
    for k in ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
              "ApproximateNumberOfMessagesDelayed", "CreatedTimestamp", "LastModifiedTimestamp"]:
        check(k in a, "attribute present", k, a)
    sqs.send_message(QueueUrl=url, MessageBody="delayed")
    one = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    eq(one["Attributes"], {"ApproximateNumberOfMessagesDelayed": "1"}, "single attribute")
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "5", "DelaySeconds": "0"})
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout", "DelaySeconds"])["Attributes"]
    eq(a, {"VisibilityTimeout": "5", "DelaySeconds": "0"}, "after SetQueueAttributes")
    code, status, _ = error_code(sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["Bogus"])
    eq((code, status), ("InvalidAttributeName", 400), "unknown attribute")
    code, _, _ = error_code(sqs.set_queue_attributes, QueueUrl=url, Attributes={"VisibilityTimeout": "43201"})
    eq(code, "InvalidParameterValue", "visibility over 12 h")
    sqs.delete_queue(QueueUrl=url)


@test
def already_exists_with_other_attributes():
    n = name("dup")
    url = sqs.create_queue(QueueName=n, Attributes={"VisibilityTimeout": "10"})["QueueUrl"]
    code, status, _ = error_code(sqs.create_queue, QueueName=n, Attributes={"VisibilityTimeout": "11"})
    eq((code, status), ("QueueAlreadyExists", 400), "mismatching attributes")
    try:
        sqs.create_queue(QueueName=n, Attributes={"VisibilityTimeout": "12"})
        raise AssertionError("expected QueueNameExists")
    except sqs.exceptions.QueueNameExists:
        pass
    sqs.delete_queue(QueueUrl=url)


@test
def bad_names_and_values():
    for bad in ["", "has space", "x" * 81, "dot.ted"]:
        code, _, _ = error_code(sqs.create_queue, QueueName=bad) if bad else ("InvalidParameterValue", 0, None)
        check(code in ("InvalidParameterValue", "MissingParameter"), "bad name refused", bad, code)
    code, _, _ = error_code(sqs.create_queue, QueueName=name(), Attributes={"DelaySeconds": "901"})
    eq(code, "InvalidParameterValue", "DelaySeconds 901")
    code, _, _ = error_code(sqs.create_queue, QueueName=name(), Attributes={"NoSuchAttribute": "1"})
    eq(code, "InvalidAttributeName", "unknown attribute on create")
    code, _, _ = error_code(sqs.create_queue, QueueName=name(), Attributes={"FifoQueue": "true"})
    eq(code, "InvalidParameterValue", "FifoQueue on a name without .fifo")


@test
def list_prefix_and_pagination():
    prefix = name("lst")
    urls = [sqs.create_queue(QueueName="%s-%d" % (prefix, i))["QueueUrl"] for i in range(5)]
    got = sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"]
    eq(sorted(got), sorted(urls), "ListQueues by prefix")
    pages, token = [], None
    while True:
        kw = {"QueueNamePrefix": prefix, "MaxResults": 2}
        if token:
            kw["NextToken"] = token
        r = sqs.list_queues(**kw)
        pages.append(r.get("QueueUrls", []))
        token = r.get("NextToken")
        if not token:
            break
    eq([len(p) for p in pages], [2, 2, 1], "page sizes")
    eq(sorted(sum(pages, [])), sorted(urls), "all pages")
    eq(sqs.list_queues(QueueNamePrefix=name("none")).get("QueueUrls"), None, "empty list")
    for u in urls:
        sqs.delete_queue(QueueUrl=u)


@test
def purge_and_missing_queue_errors():
    url = sqs.create_queue(QueueName=name("purge"))["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody="m%d" % i)
    leased = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"][0]
    sqs.purge_queue(QueueUrl=url)
    eq(sqs.receive_message(QueueUrl=url).get("Messages"), None, "purged")
    # The in-flight message went with the ready ones: it does not come back when its
    # 1 s visibility timeout ends (a long poll of 3 s would see it), and its receipt handle
    # settles nothing (deleting it is still not an error, as on AWS).
    eq(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=3).get("Messages"), None, "in-flight purged too")
    sqs.delete_message(QueueUrl=url, ReceiptHandle=leased["ReceiptHandle"])
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    eq(attrs["ApproximateNumberOfMessagesNotVisible"], "0", "nothing in flight after a purge")
    # One purge per 60 s per queue.
    code, status, _ = error_code(sqs.purge_queue, QueueUrl=url)
    eq((code, status), ("AWS.SimpleQueueService.PurgeQueueInProgress", 400), "second purge")
    missing = url.rsplit("/", 1)[0] + "/" + name("missing")
    for op, kw in [
        (sqs.send_message, {"MessageBody": "x"}),
        (sqs.receive_message, {}),
        (sqs.purge_queue, {}),
        (sqs.delete_queue, {}),
        (sqs.get_queue_attributes, {"AttributeNames": ["All"]}),
    ]:
        code, status, _ = error_code(op, QueueUrl=missing, **kw)
        eq((code, status), ("AWS.SimpleQueueService.NonExistentQueue", 400), op.__name__)
    try:
        sqs.send_message(QueueUrl=missing, MessageBody="x")
    except sqs.exceptions.QueueDoesNotExist:
        pass
    sqs.delete_queue(QueueUrl=url)


main()
