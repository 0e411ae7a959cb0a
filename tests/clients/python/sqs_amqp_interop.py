#!/usr/bin/env python3
"""One queue, three protocols: an SQS queue is the AMQP queue and STOMP /amq/queue/ of that name.
SQS SendMessage -> pika basic.get (attributes become headers), pika publish -> SQS
ReceiveMessage (headers become attributes), and an AMQP delivery never acked comes back
to SQS after the queue's visibility timeout; STOMP SEND -> SQS receive and delete."""

import os
import time

import pika
import stomp

from _sqs_common import check, client, eq, main, md5_hex, name, test

sqs = client()


def amqp():
    return pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))


@test
def sqs_send_amqp_consume():
    n = name("x2a")
    url = sqs.create_queue(QueueName=n)["QueueUrl"]
    sent = sqs.send_message(
        QueueUrl=url,
        MessageBody="from sqs",
        MessageAttributes={
            "colour": {"DataType": "String", "StringValue": "red"},
            "n": {"DataType": "Number", "StringValue": "7"},
            "raw": {"DataType": "Binary", "BinaryValue": b"\x01\x02"},
        },
    )
    conn = amqp()
    ch = conn.channel()
    # Declaring it passively from AMQP finds the SQS queue.
    ok = ch.queue_declare(queue=n, passive=True)
    eq(ok.method.message_count, 1, "one ready message seen from AMQP")
    method, props, body = ch.basic_get(queue=n, auto_ack=False)
    eq(body, b"from sqs", "body")
    eq(props.message_id, sent["MessageId"], "message id")
    eq(props.delivery_mode, 2, "persistent")
    eq(props.headers["colour"], b"red" if isinstance(props.headers["colour"], bytes) else "red", "string attribute")
    eq(props.headers["x-sqs-type.n"] in ("Number", b"Number"), True, "number type recorded")
    ch.basic_ack(method.delivery_tag)
    conn.close()
    eq(sqs.receive_message(QueueUrl=url).get("Messages"), None, "acked via AMQP = deleted")
    sqs.delete_queue(QueueUrl=url)


@test
def amqp_publish_sqs_receive():
    n = name("a2x")
    url = sqs.create_queue(QueueName=n)["QueueUrl"]
    conn = amqp()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish(
        exchange="",
        routing_key=n,
        body=b"from amqp",
        properties=pika.BasicProperties(
            delivery_mode=2, message_id="amqp-1", headers={"colour": "blue", "count": 5}
        ),
    )
    conn.close()
    m = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])["Messages"][0]
    eq(m["Body"], "from amqp", "body")
    eq(m["MessageId"], "amqp-1", "AMQP message-id is the SQS MessageId")
    eq(m["MessageAttributes"]["colour"], {"DataType": "String", "StringValue": "blue"}, "string header")
    eq(m["MessageAttributes"]["count"], {"DataType": "Number", "StringValue": "5"}, "integer header")
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    sqs.delete_queue(QueueUrl=url)


@test
def unacked_amqp_delivery_returns_after_visibility_timeout():
    n = name("lease")
    url = sqs.create_queue(QueueName=n, Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hold")
    conn = amqp()
    ch = conn.channel()
    method, _, body = ch.basic_get(queue=n, auto_ack=False)
    eq(body, b"hold", "AMQP got it")
    t0 = time.monotonic()
    m = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    check(time.monotonic() - t0 < 3, "back after about 1 s", time.monotonic() - t0)
    eq(m["Attributes"]["ApproximateReceiveCount"], "2", "second delivery")
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    conn.close()
    sqs.delete_queue(QueueUrl=url)


@test
def visibility_set_later_applies_to_amqp_consumers():
    # Created with a 60 s visibility, then shortened to 1 s: an AMQP consumer's unacked
    # delivery (basic.consume, not basic.get) comes back after the new value.
    n = name("relax")
    url = sqs.create_queue(QueueName=n, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "1"})
    sqs.send_message(QueueUrl=url, MessageBody="consumed")
    conn = amqp()
    ch = conn.channel()
    got = []
    ch.basic_consume(queue=n, on_message_callback=lambda c, m, p, b: got.append(m.delivery_tag), auto_ack=False)
    t0 = time.monotonic()
    while len(got) < 2 and time.monotonic() - t0 < 5:
        conn.process_data_events(time_limit=0.2)
    check(len(got) >= 2, "redelivered to the AMQP consumer after the new 1 s lease", got)
    check(time.monotonic() - t0 < 4, "after about 1 s", time.monotonic() - t0)
    conn.close()
    sqs.delete_queue(QueueUrl=url)


@test
def queue_redeclared_by_amqp_shows_its_new_settings():
    n = name("redecl")
    url = sqs.create_queue(QueueName=n, Attributes={"VisibilityTimeout": "10"})["QueueUrl"]
    eq(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"],
       {"VisibilityTimeout": "10"}, "as created")
    conn = amqp()
    ch = conn.channel()
    ch.queue_delete(queue=n)
    ch.queue_declare(queue=n, durable=True, arguments={"x-lease-timeout": 5000})
    eq(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"],
       {"VisibilityTimeout": "5"}, "the AMQP queue's lease timeout")
    ch.queue_delete(queue=n)
    conn.close()


@test
def stomp_send_sqs_receive_and_delete():
    n = name("s2x")
    url = sqs.create_queue(QueueName=n)["QueueUrl"]
    c = stomp.Connection([(os.environ["STOMP_HOST"], int(os.environ["STOMP_PORT"]))])
    c.connect("guest", "guest", wait=True, headers={"host": "/"})
    # /amq/queue/ publishes to an existing queue without declaring it; /queue/ would declare
    # it without the SQS queue's x- arguments and get precondition_failed, as in RabbitMQ.
    c.send(destination="/amq/queue/" + n, body="from stomp", headers={"colour": "green", "persistent": "true"})
    c.disconnect()
    m = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, MessageAttributeNames=["colour"])["Messages"][0]
    eq(m["Body"], "from stomp", "body")
    eq(m["MessageAttributes"]["colour"], {"DataType": "String", "StringValue": "green"}, "STOMP header")
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    eq((a["ApproximateNumberOfMessages"], a["ApproximateNumberOfMessagesNotVisible"]), ("0", "0"), "deleted")
    sqs.delete_queue(QueueUrl=url)



@test
def an_amqp_relay_that_changes_the_body_gets_a_fresh_md5():
    # SQS caches MD5OfMessageBody in a header at send. An AMQP app that forwards the message
    # with a new body but the same headers must not make SQS answer with the old MD5:
    # boto3 checks it and would raise.
    src, dst = name("relay-a"), name("relay-b")
    src_url = sqs.create_queue(QueueName=src)["QueueUrl"]
    dst_url = sqs.create_queue(QueueName=dst)["QueueUrl"]
    sqs.send_message(QueueUrl=src_url, MessageBody="original body")
    conn = amqp()
    ch = conn.channel()
    method, props, body = ch.basic_get(queue=src, auto_ack=True)
    eq(body, b"original body", "relayed from SQS")
    ch.basic_publish("", dst, b"changed body!", props)
    ch.basic_publish("", dst, body, props)
    conn.close()
    msgs = []
    while len(msgs) < 2:
        msgs += sqs.receive_message(QueueUrl=dst_url, MaxNumberOfMessages=2, WaitTimeSeconds=5)["Messages"]
    eq(sorted(m["Body"] for m in msgs), ["changed body!", "original body"], "both relayed")
    for m in msgs:
        eq(m["MD5OfBody"], md5_hex(m["Body"].encode()), "MD5 of the body as received")
    sqs.delete_queue(QueueUrl=src_url)
    sqs.delete_queue(QueueUrl=dst_url)

main()
