#!/usr/bin/env python3
"""boto3 (AWS JSON 1.0): tags (CreateQueue tags, TagQueue, UntagQueue, ListQueueTags),
permissions (AddPermission/RemovePermission in the Policy attribute),
ListDeadLetterSourceQueues, RedriveAllowPolicy, message move tasks
(Start/List/CancelMessageMoveTask), and SetQueueAttributes for every settable attribute."""

import json
import time

from _sqs_common import check, client, eq, error_code, main, name, test

sqs = client()


def arn(url):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def attrs(url, *names):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names) or ["All"]).get("Attributes", {})


@test
def tags_create_tag_untag_list():
    url = sqs.create_queue(QueueName=name("tags"), tags={"team": "orders", "env": "test"})["QueueUrl"]
    eq(sqs.list_queue_tags(QueueUrl=url).get("Tags"), {"team": "orders", "env": "test"}, "tags from CreateQueue")
    sqs.tag_queue(QueueUrl=url, Tags={"env": "prod", "cost": "42"})
    eq(sqs.list_queue_tags(QueueUrl=url)["Tags"], {"team": "orders", "env": "prod", "cost": "42"}, "after TagQueue")
    sqs.untag_queue(QueueUrl=url, TagKeys=["team", "absent"])
    eq(sqs.list_queue_tags(QueueUrl=url)["Tags"], {"env": "prod", "cost": "42"}, "after UntagQueue")
    sqs.untag_queue(QueueUrl=url, TagKeys=["env", "cost"])
    eq(sqs.list_queue_tags(QueueUrl=url).get("Tags"), None, "no tags left")
    # 50 tags is the limit.
    sqs.tag_queue(QueueUrl=url, Tags={"k%d" % i: "v" for i in range(50)})
    code, status, _ = error_code(sqs.tag_queue, QueueUrl=url, Tags={"one-more": "v"})
    eq((code, status), ("InvalidParameterValue", 400), "51st tag")
    code, _, _ = error_code(sqs.tag_queue, QueueUrl=url, Tags={"x" * 129: "v"})
    eq(code, "InvalidParameterValue", "tag key too long")
    code, _, _ = error_code(sqs.list_queue_tags, QueueUrl=url + "-nope")
    eq(code, "AWS.SimpleQueueService.NonExistentQueue", "tags of a missing queue")
    sqs.delete_queue(QueueUrl=url)


@test
def permissions_live_in_the_policy_attribute():
    url = sqs.create_queue(QueueName=name("perm"))["QueueUrl"]
    eq(attrs(url, "Policy"), {}, "no policy at first")
    sqs.add_permission(QueueUrl=url, Label="send", AWSAccountIds=["111122223333"], Actions=["SendMessage"])
    sqs.add_permission(QueueUrl=url, Label="recv", AWSAccountIds=["111122223333", "444455556666"],
                       Actions=["ReceiveMessage", "DeleteMessage"])
    policy = json.loads(attrs(url, "Policy")["Policy"])
    eq([s["Sid"] for s in policy["Statement"]], ["send", "recv"], "statements")
    send = policy["Statement"][0]
    eq(send["Effect"], "Allow", "effect")
    eq(send["Principal"], {"AWS": "arn:aws:iam::111122223333:root"}, "principal")
    eq(send["Action"], "SQS:SendMessage", "action")
    eq(send["Resource"], arn(url), "resource")
    eq(policy["Statement"][1]["Action"], ["SQS:ReceiveMessage", "SQS:DeleteMessage"], "two actions")
    code, _, _ = error_code(sqs.add_permission, QueueUrl=url, Label="send", AWSAccountIds=["1"], Actions=["SendMessage"])
    eq(code, "InvalidParameterValue", "duplicate label")
    code, _, _ = error_code(sqs.add_permission, QueueUrl=url, Label="x", AWSAccountIds=["1"], Actions=["Fly"])
    eq(code, "InvalidParameterValue", "unknown action")
    sqs.remove_permission(QueueUrl=url, Label="send")
    eq([s["Sid"] for s in json.loads(attrs(url, "Policy")["Policy"])["Statement"]], ["recv"], "after remove")
    code, _, _ = error_code(sqs.remove_permission, QueueUrl=url, Label="send")
    eq(code, "InvalidParameterValue", "remove unknown label")
    sqs.remove_permission(QueueUrl=url, Label="recv")
    eq(attrs(url, "Policy"), {}, "policy gone with its last statement")
    # A whole policy document may be set directly too.
    doc = {"Version": "2012-10-17", "Statement": [{"Sid": "all", "Effect": "Allow", "Principal": "*",
                                                  "Action": "SQS:*", "Resource": arn(url)}]}
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(doc)})
    eq(json.loads(attrs(url, "Policy")["Policy"]), doc, "policy set directly")
    code, _, _ = error_code(sqs.set_queue_attributes, QueueUrl=url, Attributes={"Policy": "not json"})
    eq(code, "InvalidParameterValue", "bad policy")
    sqs.delete_queue(QueueUrl=url)


@test
def dead_letter_sources_and_redrive_allow_policy():
    dlq = sqs.create_queue(QueueName=name("dlq"))["QueueUrl"]
    policy = json.dumps({"deadLetterTargetArn": arn(dlq), "maxReceiveCount": 3})
    a = sqs.create_queue(QueueName=name("srca"), Attributes={"RedrivePolicy": policy})["QueueUrl"]
    b = sqs.create_queue(QueueName=name("srcb"))["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=b, Attributes={"RedrivePolicy": policy})
    eq(sorted(sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"]), sorted([a, b]), "sources")
    page = sqs.list_dead_letter_source_queues(QueueUrl=dlq, MaxResults=1)
    eq(len(page["queueUrls"]), 1, "page size")
    rest = sqs.list_dead_letter_source_queues(QueueUrl=dlq, MaxResults=1, NextToken=page["NextToken"])
    eq(sorted(page["queueUrls"] + rest["queueUrls"]), sorted([a, b]), "paged sources")
    eq(sqs.list_dead_letter_source_queues(QueueUrl=a)["queueUrls"], [], "not a DLQ")
    # Removing the redrive policy removes the source.
    sqs.set_queue_attributes(QueueUrl=b, Attributes={"RedrivePolicy": ""})
    eq(sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"], [a], "after removing b's policy")
    # RedriveAllowPolicy on the DLQ: denyAll refuses, byQueue lets only the named queues in.
    sqs.set_queue_attributes(QueueUrl=dlq, Attributes={"RedriveAllowPolicy": json.dumps({"redrivePermission": "denyAll"})})
    code, _, err = error_code(sqs.set_queue_attributes, QueueUrl=b, Attributes={"RedrivePolicy": policy})
    eq(code, "InvalidParameterValue", "denyAll")
    allow_b = {"redrivePermission": "byQueue", "sourceQueueArns": [arn(b)]}
    sqs.set_queue_attributes(QueueUrl=dlq, Attributes={"RedriveAllowPolicy": json.dumps(allow_b)})
    sqs.set_queue_attributes(QueueUrl=b, Attributes={"RedrivePolicy": policy})
    code, _, _ = error_code(sqs.create_queue, QueueName=name("srcc"), Attributes={"RedrivePolicy": policy})
    eq(code, "InvalidParameterValue", "byQueue refuses another queue")
    for bad in [{"redrivePermission": "byQueue"}, {"redrivePermission": "sometimes"},
                {"redrivePermission": "allowAll", "sourceQueueArns": [arn(a)]}]:
        code, _, _ = error_code(sqs.set_queue_attributes, QueueUrl=dlq, Attributes={"RedriveAllowPolicy": json.dumps(bad)})
        eq(code, "InvalidParameterValue", "bad RedriveAllowPolicy %r" % bad)
    for u in (a, b, dlq):
        sqs.delete_queue(QueueUrl=u)


def dead_letter(src, dlq, bodies):
    """Sends bodies to src and lets each be received once (maxReceiveCount 1) so they land in dlq."""
    for b in bodies:
        sqs.send_message(QueueUrl=src, MessageBody=b)
    seen = 0
    while seen < len(bodies):
        got = sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=1)
        seen += len(got.get("Messages", []))
    deadline = time.time() + 10
    while int(attrs(dlq, "ApproximateNumberOfMessages")["ApproximateNumberOfMessages"]) < len(bodies):
        check(time.time() < deadline, "messages reach the DLQ")
        sqs.receive_message(QueueUrl=src, WaitTimeSeconds=0)
        time.sleep(0.1)


def wait_task(dlq_arn, status, timeout=15):
    deadline = time.time() + timeout
    while True:
        t = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0]
        if t["Status"] == status:
            return t
        check(time.time() < deadline, "task reaches %s" % status, t)
        time.sleep(0.1)


@test
def move_tasks_back_to_source_and_to_a_destination():
    dlq = sqs.create_queue(QueueName=name("mdlq"))["QueueUrl"]
    policy = json.dumps({"deadLetterTargetArn": arn(dlq), "maxReceiveCount": 1})
    src = sqs.create_queue(QueueName=name("msrc"), Attributes={"RedrivePolicy": policy})["QueueUrl"]
    dead_letter(src, dlq, ["m%d" % i for i in range(5)])
    # Back to where they came from (no DestinationArn).
    handle = sqs.start_message_move_task(SourceArn=arn(dlq))["TaskHandle"]
    check(handle, "task handle")
    done = wait_task(arn(dlq), "COMPLETED")
    eq(done["ApproximateNumberOfMessagesMoved"], 5, "moved")
    eq(done["ApproximateNumberOfMessagesToMove"], 5, "to move")
    eq(done["SourceArn"], arn(dlq), "source arn")
    check("TaskHandle" not in done, "no handle once finished", done)
    bodies = set()
    while True:
        got = sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                  AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
        if not got:
            break
        for m in got:
            bodies.add(m["Body"])
            eq(m["Attributes"]["ApproximateReceiveCount"], "1", "receive count starts again")
            sqs.delete_message(QueueUrl=src, ReceiptHandle=m["ReceiptHandle"])
    eq(bodies, {"m%d" % i for i in range(5)}, "all back in the source")
    eq(attrs(dlq, "ApproximateNumberOfMessages")["ApproximateNumberOfMessages"], "0", "DLQ empty")
    # To an explicit destination, rate limited: 3 messages at 1/s take ~2 s.
    other = sqs.create_queue(QueueName=name("mdst"))["QueueUrl"]
    dead_letter(src, dlq, ["r1", "r2", "r3"])
    t0 = time.time()
    sqs.start_message_move_task(SourceArn=arn(dlq), DestinationArn=arn(other), MaxNumberOfMessagesPerSecond=1)
    running = sqs.list_message_move_tasks(SourceArn=arn(dlq), MaxResults=10)["Results"]
    eq(len(running), 2, "both tasks listed")
    eq(running[0]["Status"], "RUNNING", "newest first, running")
    eq(running[0]["MaxNumberOfMessagesPerSecond"], 1, "rate")
    eq(running[0]["DestinationArn"], arn(other), "destination")
    code, _, _ = error_code(sqs.start_message_move_task, SourceArn=arn(dlq))
    eq(code, "AWS.SimpleQueueService.UnsupportedOperation", "one running task per queue")
    wait_task(arn(dlq), "COMPLETED")
    check(time.time() - t0 >= 1.8, "rate limit paced the move", time.time() - t0)
    eq(attrs(other, "ApproximateNumberOfMessages")["ApproximateNumberOfMessages"], "3", "moved to the destination")
    for u in (src, dlq, other):
        sqs.delete_queue(QueueUrl=u)


@test
def move_task_cancel_and_errors():
    dlq = sqs.create_queue(QueueName=name("cdlq"))["QueueUrl"]
    policy = json.dumps({"deadLetterTargetArn": arn(dlq), "maxReceiveCount": 1})
    src = sqs.create_queue(QueueName=name("csrc"), Attributes={"RedrivePolicy": policy})["QueueUrl"]
    dead_letter(src, dlq, ["c%d" % i for i in range(4)])
    handle = sqs.start_message_move_task(SourceArn=arn(dlq), MaxNumberOfMessagesPerSecond=1)["TaskHandle"]
    time.sleep(1.2)
    moved = sqs.cancel_message_move_task(TaskHandle=handle)["ApproximateNumberOfMessagesMoved"]
    check(moved < 4, "cancelled before the end", moved)
    t = wait_task(arn(dlq), "CANCELLED")
    check(t["ApproximateNumberOfMessagesMoved"] < 4, "stopped moving", t)
    code, _, _ = error_code(sqs.cancel_message_move_task, TaskHandle="no-such-task")
    eq(code, "ResourceNotFoundException", "unknown handle")
    code, _, _ = error_code(sqs.start_message_move_task, SourceArn=arn(src))
    eq(code, "InvalidParameterValue", "source must be a DLQ")
    code, _, _ = error_code(sqs.start_message_move_task, SourceArn=arn(dlq), MaxNumberOfMessagesPerSecond=501)
    eq(code, "InvalidParameterValue", "rate over 500")
    code, _, _ = error_code(sqs.list_message_move_tasks, SourceArn=arn(dlq), MaxResults=11)
    eq(code, "InvalidParameterValue", "MaxResults over 10")
    for u in (src, dlq):
        sqs.delete_queue(QueueUrl=u)


@test
def every_settable_attribute_can_be_set():
    url = sqs.create_queue(QueueName=name("set"))["QueueUrl"]
    new = {
        "VisibilityTimeout": "7",
        "DelaySeconds": "3",
        "MessageRetentionPeriod": "120",
        "MaximumMessageSize": "4096",
        "ReceiveMessageWaitTimeSeconds": "2",
        "SqsManagedSseEnabled": "false",
        "KmsMasterKeyId": "alias/aws/sqs",
        "KmsDataKeyReusePeriodSeconds": "600",
    }
    sqs.set_queue_attributes(QueueUrl=url, Attributes=new)
    got = attrs(url)
    for k, v in new.items():
        eq(got[k], v, k)
    check(int(got["LastModifiedTimestamp"]) >= int(got["CreatedTimestamp"]), "modified timestamp", got)
    # Read-only and create-only attributes are refused; unknown ones too.
    for bad in ["QueueArn", "ApproximateNumberOfMessages", "CreatedTimestamp", "FifoQueue", "Bogus"]:
        code, _, _ = error_code(sqs.set_queue_attributes, QueueUrl=url, Attributes={bad: "1"})
        eq(code, "InvalidAttributeName", "SetQueueAttributes %s" % bad)
    for k, v in [("VisibilityTimeout", "43201"), ("DelaySeconds", "901"), ("MessageRetentionPeriod", "59"),
                 ("MaximumMessageSize", "1023"), ("ReceiveMessageWaitTimeSeconds", "21"),
                 ("KmsDataKeyReusePeriodSeconds", "59"), ("SqsManagedSseEnabled", "maybe")]:
        code, _, _ = error_code(sqs.set_queue_attributes, QueueUrl=url, Attributes={k: v})
        eq(code, "InvalidParameterValue", "%s=%s" % (k, v))
    # FIFO-only attributes on a standard queue.
    code, _, _ = error_code(sqs.set_queue_attributes, QueueUrl=url, Attributes={"DeduplicationScope": "messageGroup"})
    eq(code, "InvalidAttributeName", "DeduplicationScope on a standard queue")
    # The new visibility timeout and delay apply to the next messages.
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "0", "VisibilityTimeout": "1"})
    sqs.send_message(QueueUrl=url, MessageBody="x")
    m = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"][0]
    again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    eq((again["Body"], again["Attributes"]["ApproximateReceiveCount"]), ("x", "2"), "1 s visibility applied")
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
    del m
    sqs.delete_queue(QueueUrl=url)


@test
def lowering_retention_expires_queued_messages():
    url = sqs.create_queue(QueueName=name("ret"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="old")
    time.sleep(1.2)
    # Relaxed limits would allow 1 s; strict mode's minimum is 60 s, so the message (1.2 s old)
    # survives the change to 60 s and is still there.
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": "60"})
    eq(attrs(url, "ApproximateNumberOfMessages")["ApproximateNumberOfMessages"], "1", "still within 60 s")
    sqs.delete_queue(QueueUrl=url)


if __name__ == "__main__":
    main()
