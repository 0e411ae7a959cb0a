#!/usr/bin/env python3
"""boto3 (AWS JSON 1.0) and pika: SQS fair queues. A standard queue whose messages carry
MessageGroupId serves quiet tenants before a noisy neighbour: one that holds more than a
tenth of the in-flight messages and at least 30 of its own. Messages without a group are
tenants of their own. The same order holds for an AMQP consumer of the queue."""

import os

import pika

from _sqs_common import check, client, eq, error_code, main, name, test

sqs = client()


def send(url, tenant, count, prefix=None):
    prefix = prefix or tenant
    for start in range(0, count, 10):
        entries = [
            {"Id": str(i), "MessageBody": "%s-%d" % (prefix, i), "MessageGroupId": tenant}
            for i in range(start, min(start + 10, count))
        ]
        r = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        eq(r.get("Failed", []), [], "batch accepted")


def receive(url, n):
    """Receive n messages (leased for a minute, not deleted), in the order SQS returned them."""
    got = []
    while len(got) < n:
        r = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, n - len(got)),
            VisibilityTimeout=60,
            MessageSystemAttributeNames=["MessageGroupId"],
        )
        msgs = r.get("Messages", [])
        check(msgs, "a receive returned messages", len(got))
        got.extend(msgs)
    return got


@test
def a_noisy_tenant_waits_behind_quiet_ones():
    url = sqs.create_queue(QueueName=name("fair"))["QueueUrl"]
    send(url, "noisy", 100)
    send(url, "quiet", 3)
    sqs.send_message(QueueUrl=url, MessageBody="no-group")
    # The noisy tenant's backlog is first in line: until it holds 30 in flight, arrival order.
    first = receive(url, 30)
    eq({m["Attributes"]["MessageGroupId"] for m in first}, {"noisy"}, "the first 30 are the noisy tenant's")
    # Now it holds all the in-flight messages: the quiet tenant and the message without a
    # group overtake its 70 waiting messages.
    nxt = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=5, VisibilityTimeout=60)["Messages"]
    eq([m["Body"] for m in nxt], ["quiet-0", "quiet-1", "quiet-2", "no-group", "noisy-30"], "quiet tenants first")
    # Deleting the noisy tenant's in-flight messages makes it quiet again.
    for i in range(0, 30, 10):
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(first[i : i + 10])],
        )
    send(url, "quiet", 1, prefix="late")
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)["Messages"]
    eq([m["Body"] for m in again], ["noisy-31", "noisy-32"], "arrival order once nobody is noisy")
    sqs.delete_queue(QueueUrl=url)


@test
def group_ids_on_a_standard_queue_come_back_and_dedup_ids_are_refused():
    url = sqs.create_queue(QueueName=name("fair-attrs"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="tenant-7")
    m = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["All"])["Messages"][0]
    eq(m["Attributes"].get("MessageGroupId"), "tenant-7", "group id returned on a standard queue")
    code, status, _ = error_code(sqs.send_message, QueueUrl=url, MessageBody="y", MessageGroupId="t", MessageDeduplicationId="d")
    eq((code, status), ("InvalidParameterValue", 400), "dedup id on a standard queue")
    sqs.delete_queue(QueueUrl=url)


@test
def an_amqp_consumer_gets_the_fair_order_too():
    url = sqs.create_queue(QueueName=name("fair-amqp"))["QueueUrl"]
    qname = url.rsplit("/", 1)[1]
    send(url, "noisy", 50)
    send(url, "quiet", 1)
    conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=33)
    bodies = []
    for method, props, body in ch.consume(qname, auto_ack=False, inactivity_timeout=5):
        check(method is not None, "a delivery within 5 s", len(bodies))
        bodies.append(body.decode())
        if len(bodies) == 33:
            break
    # 30 of the noisy tenant's make it noisy; the quiet tenant's message is next.
    eq(bodies[30], "quiet-0", "the quiet tenant's message overtakes the backlog")
    eq(bodies[:30], ["noisy-%d" % i for i in range(30)], "arrival order before that")
    ch.cancel()
    conn.close()
    sqs.delete_queue(QueueUrl=url)


if __name__ == "__main__":
    main()
