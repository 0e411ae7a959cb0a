#!/usr/bin/env python3
"""boto3 (AWS JSON 1.0): SendMessage(+Batch) with attributes and checksums, ReceiveMessage
(max, visibility, system attributes, long polling that wakes on send and on a visibility
change to 0), DeleteMessage(+Batch), ChangeMessageVisibility(+Batch) with the 12-hour cap,
visibility expiry, delays, and the validation errors."""

import base64
import threading
import time

from _sqs_common import attributes_md5, check, client, eq, error_code, main, md5_hex, name, test

sqs = client()


def new_queue(prefix, **attrs):
    return sqs.create_queue(QueueName=name(prefix), Attributes={k: str(v) for k, v in attrs.items()})["QueueUrl"]


@test
def send_receive_delete_with_attributes_and_md5():
    url = new_queue("msg")
    attrs = {
        "colour": {"DataType": "String", "StringValue": "red"},
        "count": {"DataType": "Number", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
        "kind": {"DataType": "String.custom", "StringValue": "special"},
    }
    body = "héllo wörld \U0001F600"
    r = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attrs)
    eq(r["MD5OfMessageBody"], md5_hex(body.encode()), "MD5OfMessageBody")
    eq(r["MD5OfMessageAttributes"], attributes_md5(attrs), "MD5OfMessageAttributes")
    check(len(r["MessageId"]) == 36, "uuid message id", r["MessageId"])
    got = sqs.receive_message(
        QueueUrl=url, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"]
    )["Messages"]
    eq(len(got), 1, "one message")
    m = got[0]
    eq(m["Body"], body, "body")
    eq(m["MessageId"], r["MessageId"], "message id")
    eq(m["MD5OfBody"], r["MD5OfMessageBody"], "MD5OfBody")
    eq(m["MessageAttributes"], attrs, "message attributes round trip")
    eq(m["MD5OfMessageAttributes"], attributes_md5(attrs), "received attributes md5")
    eq(m["Attributes"]["ApproximateReceiveCount"], "1", "receive count")
    for k in ["SentTimestamp", "ApproximateFirstReceiveTimestamp", "SenderId"]:
        check(k in m["Attributes"], "system attribute", k, m["Attributes"])
    only = sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes=attrs)
    check(only, "sent")
    m2 = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["colour", "cou.*"])["Messages"][0]
    eq(sorted(m2["MessageAttributes"]), ["colour"], "selected attribute names")
    check("Attributes" not in m2, "no system attributes unless asked", m2)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m2["ReceiptHandle"])
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    eq((a["ApproximateNumberOfMessages"], a["ApproximateNumberOfMessagesNotVisible"]), ("0", "0"), "all deleted")
    sqs.delete_queue(QueueUrl=url)


@test
def batches_and_batch_errors():
    url = new_queue("batch")
    entries = [{"Id": "e%d" % i, "MessageBody": "b%d" % i} for i in range(10)]
    entries[3]["MessageBody"] = "bad \x00 char"
    r = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    eq(sorted(e["Id"] for e in r["Successful"]), sorted("e%d" % i for i in range(10) if i != 3), "successful ids")
    eq([(f["Id"], f["Code"], f["SenderFault"]) for f in r["Failed"]], [("e3", "InvalidMessageContents", True)], "failed")
    msgs = []
    while len(msgs) < 9:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        check(got, "more messages", len(msgs))
        msgs += got
    eq(sorted(m["Body"] for m in msgs), sorted("b%d" % i for i in range(10) if i != 3), "bodies")
    d = sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[{"Id": "d%d" % i, "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)]
        + [{"Id": "junk", "ReceiptHandle": "garbage"}],
    )
    eq(len(d["Successful"]), 9, "deleted")
    eq([(f["Id"], f["Code"]) for f in d["Failed"]], [("junk", "ReceiptHandleIsInvalid")], "bad handle in batch")
    many = [{"Id": "i%d" % i, "MessageBody": "x"} for i in range(11)]
    eq(error_code(sqs.send_message_batch, QueueUrl=url, Entries=many)[0],
       "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", "11 entries")
    eq(error_code(sqs.send_message_batch, QueueUrl=url, Entries=[])[0],
       "AWS.SimpleQueueService.EmptyBatchRequest", "no entries")
    same = [{"Id": "a", "MessageBody": "x"}, {"Id": "a", "MessageBody": "y"}]
    eq(error_code(sqs.send_message_batch, QueueUrl=url, Entries=same)[0],
       "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", "duplicate ids")
    eq(error_code(sqs.send_message_batch, QueueUrl=url, Entries=[{"Id": "a b", "MessageBody": "x"}])[0],
       "AWS.SimpleQueueService.InvalidBatchEntryId", "bad id")
    big = [{"Id": "b%d" % i, "MessageBody": "x" * 200_000} for i in range(6)]
    eq(error_code(sqs.send_message_batch, QueueUrl=url, Entries=big)[0],
       "AWS.SimpleQueueService.BatchRequestTooLong", "batch over 1 MiB")
    sqs.delete_queue(QueueUrl=url)


@test
def validation_errors():
    url = new_queue("val", MaximumMessageSize=1024)
    eq(error_code(sqs.send_message, QueueUrl=url, MessageBody="x" * 1025)[0], "InvalidParameterValue", "too big")
    eq(error_code(sqs.send_message, QueueUrl=url, MessageBody="\x01")[0], "InvalidMessageContents", "bad char")
    eq(error_code(sqs.send_message, QueueUrl=url, MessageBody="x", DelaySeconds=901)[0], "InvalidParameterValue", "delay")
    eq(error_code(sqs.receive_message, QueueUrl=url, MaxNumberOfMessages=11)[0], "InvalidParameterValue", "max 11")
    eq(error_code(sqs.receive_message, QueueUrl=url, MaxNumberOfMessages=0)[0], "InvalidParameterValue", "max 0")
    eq(error_code(sqs.receive_message, QueueUrl=url, WaitTimeSeconds=21)[0], "InvalidParameterValue", "wait 21")
    eq(error_code(sqs.receive_message, QueueUrl=url, VisibilityTimeout=43201)[0], "InvalidParameterValue", "vis")
    eq(error_code(sqs.delete_message, QueueUrl=url, ReceiptHandle="nonsense")[0], "ReceiptHandleIsInvalid", "handle")
    attrs = {"a%d" % i: {"DataType": "String", "StringValue": "v"} for i in range(11)}
    eq(error_code(sqs.send_message, QueueUrl=url, MessageBody="x", MessageAttributes=attrs)[0],
       "InvalidParameterValue", "11 attributes")
    eq(error_code(sqs.send_message, QueueUrl=url, MessageBody="x",
                  MessageAttributes={"n": {"DataType": "Number", "StringValue": "abc"}})[0],
       "InvalidParameterValue", "bad number")
    eq(error_code(sqs.send_message, QueueUrl=url, MessageBody="x", MessageDeduplicationId="d")[0],
       "InvalidParameterValue", "dedup id on a standard queue")
    sqs.delete_queue(QueueUrl=url)


@test
def visibility_timeout_expiry_and_change():
    url = new_queue("vis", VisibilityTimeout=1)
    sqs.send_message(QueueUrl=url, MessageBody="v")
    m = sqs.receive_message(QueueUrl=url)["Messages"][0]
    eq(sqs.receive_message(QueueUrl=url).get("Messages"), None, "invisible while leased")
    # Comes back after the 1 s visibility timeout; the long poll wakes when it does.
    t0 = time.monotonic()
    m2 = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    check(time.monotonic() - t0 < 3, "woke at lease expiry", time.monotonic() - t0)
    eq(m2["Attributes"]["ApproximateReceiveCount"], "2", "received twice")
    check(m2["ReceiptHandle"] != m["ReceiptHandle"], "new receipt handle")
    # Old handle: delete is not an error (as SQS), change visibility is.
    eq(error_code(sqs.change_message_visibility, QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=5)[0],
       "AWS.SimpleQueueService.MessageNotInflight", "stale handle")
    # Extend, then the 12-hour cap.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m2["ReceiptHandle"], VisibilityTimeout=30)
    eq(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2).get("Messages"), None, "extended past the 1 s default")
    eq(error_code(sqs.change_message_visibility, QueueUrl=url, ReceiptHandle=m2["ReceiptHandle"], VisibilityTimeout=43201)[0],
       "InvalidParameterValue", "over 12 h")
    # Per-receive VisibilityTimeout=0 and ChangeMessageVisibility to 0 wake a waiting long poll.
    results = []
    waiter = threading.Thread(
        target=lambda: results.append(client().receive_message(QueueUrl=url, WaitTimeSeconds=10))
    )
    waiter.start()
    time.sleep(0.5)  # let the long poll start waiting (bounded; not a correctness sleep)
    t0 = time.monotonic()
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m2["ReceiptHandle"], VisibilityTimeout=0)
    waiter.join(12)
    check(time.monotonic() - t0 < 2, "long poll woke on visibility change to 0", time.monotonic() - t0)
    m3 = results[0]["Messages"][0]
    sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[{"Id": "a", "ReceiptHandle": m3["ReceiptHandle"], "VisibilityTimeout": 0}],
    )
    m4 = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, AttributeNames=["All"])["Messages"][0]
    eq(m4["Attributes"]["ApproximateReceiveCount"], "4", "fourth receive")
    m5 = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"][0]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m5["ReceiptHandle"])
    eq(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages"), None, "deleted")
    sqs.delete_queue(QueueUrl=url)


@test
def long_poll_wakes_on_send_and_times_out():
    url = new_queue("poll")
    t0 = time.monotonic()
    eq(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages"), None, "empty poll")
    check(0.9 <= time.monotonic() - t0 < 3, "waited about 1 s", time.monotonic() - t0)
    results = []
    waiter = threading.Thread(
        target=lambda: results.append((client().receive_message(QueueUrl=url, WaitTimeSeconds=10), time.monotonic()))
    )
    waiter.start()
    time.sleep(0.5)  # bounded: let the poll start
    sent = time.monotonic()
    sqs.send_message(QueueUrl=url, MessageBody="wake")
    waiter.join(12)
    resp, at = results[0]
    eq(resp["Messages"][0]["Body"], "wake", "long poll got the message")
    check(at - sent < 1.0, "woke at once", at - sent)
    sqs.delete_queue(QueueUrl=url)


@test
def delays_per_queue_and_per_message():
    url = new_queue("delay", DelaySeconds=1)
    sqs.send_message(QueueUrl=url, MessageBody="q-delay")
    sqs.send_message(QueueUrl=url, MessageBody="no-delay", DelaySeconds=0)
    eq(sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"], "no-delay", "per-message 0 overrides")
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    eq(a["Attributes"]["ApproximateNumberOfMessagesDelayed"], "1", "one delayed")
    t0 = time.monotonic()
    m = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"][0]
    eq(m["Body"], "q-delay", "delayed message arrives")
    check(time.monotonic() - t0 < 2.5, "long poll woke when the delay passed", time.monotonic() - t0)
    sqs.delete_queue(QueueUrl=url)


@test
def concurrent_receivers_never_share_a_message():
    url = new_queue("conc", VisibilityTimeout=60)
    for b in range(10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "%d-%d" % (b, i)} for i in range(10)])
    seen, lock = [], threading.Lock()

    def drain():
        c = client()
        while True:
            got = c.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return
            with lock:
                seen.extend(m["Body"] for m in got)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    [t.start() for t in threads]
    [t.join(20) for t in threads]
    eq(len(seen), 100, "every message received")
    eq(len(set(seen)), 100, "none received twice")
    sqs.delete_queue(QueueUrl=url)



@test
def trace_header_and_system_attribute_names():
    url = new_queue("trace")
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    r = sqs.send_message(QueueUrl=url, MessageBody="traced",
                         MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": trace}})
    check(r.get("MD5OfMessageSystemAttributes"), "system attributes checksum", r)
    m = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["AWSTraceHeader", "SenderId"])["Messages"][0]
    eq(m["Attributes"]["AWSTraceHeader"], trace, "trace header")
    eq(m["Attributes"]["SenderId"], "000000000000", "sender")
    eq(error_code(sqs.receive_message, QueueUrl=url, MessageSystemAttributeNames=["Bogus"])[0],
       "InvalidAttributeName", "unknown system attribute")
    eq(error_code(sqs.send_message, QueueUrl=url, MessageBody="x",
                  MessageSystemAttributes={"Other": {"DataType": "String", "StringValue": "v"}})[0],
       "InvalidParameterValue", "only AWSTraceHeader may be sent")
    sqs.delete_queue(QueueUrl=url)


main()
