#!/usr/bin/env python3
"""boto3 (AWS JSON 1.0): FIFO queues — order within a group, a group blocked while one of
its messages is in flight, dedup by MessageDeduplicationId and by content (SHA-256),
SequenceNumber, DeduplicationScope/FifoThroughputLimit, ReceiveRequestAttemptId, and the
FIFO validation errors."""

from _sqs_common import check, client, eq, error_code, main, name, test

sqs = client()


def fifo_queue(**attrs):
    attrs = {"FifoQueue": "true", **{k: str(v) for k, v in attrs.items()}}
    return sqs.create_queue(QueueName=name("fifo", fifo=True), Attributes=attrs)["QueueUrl"]


@test
def order_and_sequence_numbers():
    url = fifo_queue(VisibilityTimeout=30)
    seqs = []
    for i in range(5):
        r = sqs.send_message(QueueUrl=url, MessageBody="m%d" % i, MessageGroupId="g", MessageDeduplicationId="d%d" % i)
        seqs.append(int(r["SequenceNumber"]))
    eq(seqs, sorted(seqs), "sequence numbers increase")
    check(len(set(seqs)) == 5, "distinct sequence numbers", seqs)
    got = []
    for _ in range(5):
        m = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["All"])["Messages"][0]
        eq(m["Attributes"]["MessageGroupId"], "g", "group attribute")
        check("SequenceNumber" in m["Attributes"], "sequence attribute", m["Attributes"])
        eq(m["Attributes"]["MessageDeduplicationId"], "d%d" % len(got), "dedup id attribute")
        got.append(m["Body"])
        # The group is blocked while this one is in flight.
        eq(sqs.receive_message(QueueUrl=url).get("Messages"), None, "group blocked while leased")
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    eq(got, ["m%d" % i for i in range(5)], "FIFO order")
    sqs.delete_queue(QueueUrl=url)


@test
def groups_are_independent():
    url = fifo_queue()
    for g in ["a", "b"]:
        for i in range(2):
            sqs.send_message(QueueUrl=url, MessageBody="%s%d" % (g, i), MessageGroupId=g, MessageDeduplicationId="%s%d" % (g, i))
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    heads = sorted(m["Body"] for m in msgs)
    check(heads[0] == "a0" and "b0" in heads, "first of each group", heads)
    check("a1" not in heads or heads.index("a1") > heads.index("a0"), "order in group", heads)
    for m in msgs:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    sqs.delete_queue(QueueUrl=url)


@test
def dedup_by_id_survives_delete():
    url = fifo_queue()
    r1 = sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g", MessageDeduplicationId="same")
    r2 = sqs.send_message(QueueUrl=url, MessageBody="two", MessageGroupId="g", MessageDeduplicationId="same")
    eq(r2["MessageId"], r1["MessageId"], "duplicate gets the original MessageId")
    m = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    eq([x["Body"] for x in m], ["one"], "duplicate not enqueued")
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m[0]["ReceiptHandle"])
    r3 = sqs.send_message(QueueUrl=url, MessageBody="three", MessageGroupId="g", MessageDeduplicationId="same")
    eq(r3["MessageId"], r1["MessageId"], "window outlives the deletion")
    eq(sqs.receive_message(QueueUrl=url).get("Messages"), None, "still not enqueued")
    sqs.delete_queue(QueueUrl=url)


@test
def content_based_dedup():
    url = fifo_queue(ContentBasedDeduplication="true")
    a = sqs.send_message(QueueUrl=url, MessageBody="payload", MessageGroupId="g")
    b = sqs.send_message(QueueUrl=url, MessageBody="payload", MessageGroupId="g")
    c = sqs.send_message(QueueUrl=url, MessageBody="other", MessageGroupId="g")
    eq(a["MessageId"], b["MessageId"], "same body deduplicated")
    check(c["MessageId"] != a["MessageId"], "different body kept")
    r = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "x", "MessageBody": "payload", "MessageGroupId": "g"},
        {"Id": "y", "MessageBody": "fresh", "MessageGroupId": "g"},
    ])
    eq(len(r["Successful"]), 2, "batch both succeed")
    bodies = []
    for _ in range(3):
        m = sqs.receive_message(QueueUrl=url)["Messages"][0]
        bodies.append(m["Body"])
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    eq(bodies, ["payload", "other", "fresh"], "order and dedup")
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["FifoQueue", "ContentBasedDeduplication"])
    eq(a["Attributes"], {"FifoQueue": "true", "ContentBasedDeduplication": "true"}, "fifo attributes")
    sqs.delete_queue(QueueUrl=url)


@test
def fifo_errors():
    url = fifo_queue()
    eq(error_code(sqs.send_message, QueueUrl=url, MessageBody="x", MessageDeduplicationId="d")[0],
       "MissingParameter", "no group id")
    eq(error_code(sqs.send_message, QueueUrl=url, MessageBody="x", MessageGroupId="g")[0],
       "InvalidParameterValue", "no dedup id and no content-based dedup")
    eq(error_code(sqs.send_message, QueueUrl=url, MessageBody="x", MessageGroupId="g",
                  MessageDeduplicationId="d", DelaySeconds=1)[0],
       "InvalidParameterValue", "per-message delay on FIFO")
    eq(error_code(sqs.create_queue, QueueName=name("nofifo", fifo=True))[0],
       "InvalidParameterValue", ".fifo name without FifoQueue")
    sqs.delete_queue(QueueUrl=url)


@test
def dedup_scope_message_group():
    url = fifo_queue(DeduplicationScope="messageGroup", FifoThroughputLimit="perMessageGroupId")
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["DeduplicationScope", "FifoThroughputLimit"])
    eq(a["Attributes"], {"DeduplicationScope": "messageGroup", "FifoThroughputLimit": "perMessageGroupId"}, "attrs")
    first = sqs.send_message(QueueUrl=url, MessageBody="a", MessageGroupId="g1", MessageDeduplicationId="same")
    # The same id in another group is a different message; in the same group, a duplicate.
    other = sqs.send_message(QueueUrl=url, MessageBody="b", MessageGroupId="g2", MessageDeduplicationId="same")
    dup = sqs.send_message(QueueUrl=url, MessageBody="c", MessageGroupId="g1", MessageDeduplicationId="same")
    check(first["MessageId"] != other["MessageId"], "other group is not a duplicate")
    eq(dup["MessageId"], first["MessageId"], "same group is a duplicate")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    eq(sorted(m["Body"] for m in got), ["a", "b"], "two messages stored")
    # Queue scope (the default) dedups across groups; switching scope is allowed later.
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"FifoThroughputLimit": "perQueue", "DeduplicationScope": "queue"})
    q = fifo_queue()
    x = sqs.send_message(QueueUrl=q, MessageBody="x", MessageGroupId="g1", MessageDeduplicationId="id")
    y = sqs.send_message(QueueUrl=q, MessageBody="y", MessageGroupId="g2", MessageDeduplicationId="id")
    eq(y["MessageId"], x["MessageId"], "queue scope dedups across groups")
    eq(error_code(sqs.set_queue_attributes, QueueUrl=q, Attributes={"FifoThroughputLimit": "perMessageGroupId"})[0],
       "InvalidParameterValue", "perMessageGroupId needs messageGroup scope")
    eq(error_code(sqs.set_queue_attributes, QueueUrl=q, Attributes={"DeduplicationScope": "everything"})[0],
       "InvalidParameterValue", "bad scope")
    for u in (url, q):
        sqs.delete_queue(QueueUrl=u)


@test
def receive_request_attempt_id_returns_the_same_batch():
    url = fifo_queue(VisibilityTimeout=30)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody="m%d" % i, MessageGroupId="g", MessageDeduplicationId="d%d" % i)
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, ReceiveRequestAttemptId="try-1")["Messages"]
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, ReceiveRequestAttemptId="try-1")["Messages"]
    eq([m["Body"] for m in again], [m["Body"] for m in first], "same messages")
    eq([m["ReceiptHandle"] for m in again], [m["ReceiptHandle"] for m in first], "same receipt handles")
    eq([m["Body"] for m in first], ["m0", "m1"], "one receive takes consecutive messages of one group")
    # Another attempt id is a new receive: the group is blocked while the batch is in flight.
    eq(sqs.receive_message(QueueUrl=url, ReceiveRequestAttemptId="try-2").get("Messages"), None, "group blocked")
    for m in first:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    # Once deleted, a retry of the first attempt is a fresh receive.
    later = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, ReceiveRequestAttemptId="try-1")["Messages"]
    eq([m["Body"] for m in later], ["m2"], "fresh receive after the batch was deleted")
    eq(error_code(sqs.receive_message, QueueUrl=url, ReceiveRequestAttemptId="x" * 129)[0],
       "InvalidParameterValue", "attempt id too long")
    sqs.delete_queue(QueueUrl=url)


main()
