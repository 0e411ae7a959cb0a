#!/usr/bin/env python3
"""boto3 (AWS JSON 1.0): RedrivePolicy moves a message to the dead-letter queue once it has
been received maxReceiveCount times; the DLQ must exist and be of the same type."""

import json
import time

from _sqs_common import check, client, eq, error_code, main, name, test

sqs = client()


def arn(url):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


@test
def redrive_after_max_receive_count():
    dlq = sqs.create_queue(QueueName=name("dlq"))["QueueUrl"]
    policy = json.dumps({"deadLetterTargetArn": arn(dlq), "maxReceiveCount": 2})
    src = sqs.create_queue(QueueName=name("src"), Attributes={"VisibilityTimeout": "1", "RedrivePolicy": policy})["QueueUrl"]
    eq(json.loads(sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]),
       json.loads(policy), "policy stored")
    sqs.send_message(QueueUrl=src, MessageBody="poison", MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
    for n in (1, 2):
        m = sqs.receive_message(QueueUrl=src, WaitTimeSeconds=5, AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
        eq(m["Attributes"]["ApproximateReceiveCount"], str(n), "receive %d" % n)
    # After the second lease expires, the message moves to the DLQ instead of coming back.
    dead = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=5, MessageAttributeNames=["All"],
                               MessageSystemAttributeNames=["DeadLetterQueueSourceArn"])
    eq(dead["Messages"][0]["Body"], "poison", "in the DLQ")
    eq(dead["Messages"][0]["Attributes"], {"DeadLetterQueueSourceArn": arn(src)}, "source of the dead letter")
    eq(dead["Messages"][0]["MessageAttributes"]["k"]["StringValue"], "v", "attributes kept")
    eq(sqs.receive_message(QueueUrl=src, WaitTimeSeconds=1).get("Messages"), None, "gone from the source")
    for u in (src, dlq):
        sqs.delete_queue(QueueUrl=u)


@test
def redrive_policy_errors():
    missing = "arn:aws:sqs:us-east-1:000000000000:" + name("nodlq")
    bad = json.dumps({"deadLetterTargetArn": missing, "maxReceiveCount": 3})
    eq(error_code(sqs.create_queue, QueueName=name("s"), Attributes={"RedrivePolicy": bad})[0],
       "InvalidParameterValue", "DLQ must exist")
    dlq = sqs.create_queue(QueueName=name("dlq"))["QueueUrl"]
    for count in (0, 1001):
        p = json.dumps({"deadLetterTargetArn": arn(dlq), "maxReceiveCount": count})
        eq(error_code(sqs.create_queue, QueueName=name("s"), Attributes={"RedrivePolicy": p})[0],
           "InvalidParameterValue", "maxReceiveCount %d" % count)
    eq(error_code(sqs.create_queue, QueueName=name("s"), Attributes={"RedrivePolicy": "{not json"})[0],
       "InvalidParameterValue", "not JSON")
    fifo_src = name("fs", fifo=True)
    p = json.dumps({"deadLetterTargetArn": arn(dlq), "maxReceiveCount": 3})
    eq(error_code(sqs.create_queue, QueueName=fifo_src, Attributes={"FifoQueue": "true", "RedrivePolicy": p})[0],
       "InvalidParameterValue", "FIFO source needs a FIFO DLQ")
    sqs.delete_queue(QueueUrl=dlq)


main()
