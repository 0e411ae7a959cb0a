#!/usr/bin/env python3
"""The SQS query protocol (form-encoded Action=..., XML answers) as older SDKs and the aws
CLI v1 era speak it: every one of the 23 actions as a form POST signed by botocore's own
SigV4 signer, the answers parsed as XML, plus a GET with the parameters in the query
string, and the XML error shape (<ErrorResponse><Error><Code>)."""

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from _sqs_common import attributes_md5, check, eq, main, md5_hex, name, test

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
CREDS = Credentials(os.environ.get("AWS_ACCESS_KEY_ID", "test"), os.environ.get("AWS_SECRET_ACCESS_KEY", "test"))
NS = "{http://queue.amazonaws.com/doc/2012-11-05/}"


def call(action, params=None, url=ENDPOINT + "/", method="POST"):
    """Sends one signed query request; returns (status, XML root)."""
    form = {"Action": action, "Version": "2012-11-05", **(params or {})}
    body = urllib.parse.urlencode(form)
    if method == "GET":
        req = AWSRequest(method="GET", url=url + "?" + body)
    else:
        req = AWSRequest(method="POST", url=url, data=body.encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(CREDS, "sqs", REGION).add_auth(req)
    prepared = req.prepare()
    raw = urllib.request.Request(prepared.url, data=prepared.body if method == "POST" else None,
                                 headers=dict(prepared.headers), method=method)
    try:
        with urllib.request.urlopen(raw, timeout=30) as resp:
            return resp.status, ET.fromstring(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, ET.fromstring(e.read())


def ok(action, params=None, **kw):
    status, root = call(action, params, **kw)
    eq(status, 200, "%s status (%s)" % (action, ET.tostring(root)[:300]))
    eq(root.tag, NS + action + "Response", "%s response element" % action)
    check(root.find(NS + "ResponseMetadata/" + NS + "RequestId") is not None, "request id", action)
    return root.find(NS + action + "Result")


def err(action, params=None, **kw):
    status, root = call(action, params, **kw)
    check(status >= 400, "%s should fail" % action, status)
    eq(root.tag, NS + "ErrorResponse", "error element")
    return root.find(NS + "Error/" + NS + "Code").text


def text(el, path):
    found = el.find("/".join(NS + p for p in path.split("/")))
    return None if found is None else found.text


def all_text(el, path):
    return [x.text for x in el.findall("/".join(NS + p for p in path.split("/")))]


def attributes(result):
    return {a.find(NS + "Name").text: a.find(NS + "Value").text for a in result.findall(NS + "Attribute")}


@test
def queue_actions():
    n = name("qry")
    r = ok("CreateQueue", {"QueueName": n, "Attribute.1.Name": "VisibilityTimeout", "Attribute.1.Value": "40",
                           "Tag.1.Key": "team", "Tag.1.Value": "legacy"})
    url = text(r, "QueueUrl")
    eq(url, "%s/000000000000/%s" % (ENDPOINT, n), "queue url")
    eq(text(ok("GetQueueUrl", {"QueueName": n}), "QueueUrl"), url, "GetQueueUrl")
    check(url in all_text(ok("ListQueues", {"QueueNamePrefix": "qry-"}), "QueueUrl"), "ListQueues")
    a = attributes(ok("GetQueueAttributes", {"QueueUrl": url, "AttributeName.1": "All"}))
    eq(a["VisibilityTimeout"], "40", "attribute")
    ok("SetQueueAttributes", {"QueueUrl": url, "Attribute.1.Name": "DelaySeconds", "Attribute.1.Value": "0",
                              "Attribute.2.Name": "MessageRetentionPeriod", "Attribute.2.Value": "600"})
    # Posted to the queue URL, QueueUrl may be left out.
    a = attributes(ok("GetQueueAttributes", {"AttributeName.1": "MessageRetentionPeriod"}, url=url))
    eq(a, {"MessageRetentionPeriod": "600"}, "after SetQueueAttributes, posted to the queue URL")
    # Tags.
    tags = ok("ListQueueTags", {"QueueUrl": url})
    eq({t.find(NS + "Key").text: t.find(NS + "Value").text for t in tags.findall(NS + "Tag")}, {"team": "legacy"}, "tags")
    ok("TagQueue", {"QueueUrl": url, "Tag.1.Key": "env", "Tag.1.Value": "qa"})
    ok("UntagQueue", {"QueueUrl": url, "TagKey.1": "team"})
    tags = ok("ListQueueTags", {"QueueUrl": url})
    eq({t.find(NS + "Key").text: t.find(NS + "Value").text for t in tags.findall(NS + "Tag")}, {"env": "qa"}, "tags")
    # Permissions.
    ok("AddPermission", {"QueueUrl": url, "Label": "p", "AWSAccountId.1": "111122223333",
                         "ActionName.1": "SendMessage", "ActionName.2": "ReceiveMessage"})
    policy = json.loads(attributes(ok("GetQueueAttributes", {"QueueUrl": url, "AttributeName.1": "Policy"}))["Policy"])
    eq(policy["Statement"][0]["Action"], ["SQS:SendMessage", "SQS:ReceiveMessage"], "policy actions")
    ok("RemovePermission", {"QueueUrl": url, "Label": "p"})
    ok("PurgeQueue", {"QueueUrl": url})
    ok("DeleteQueue", {"QueueUrl": url})
    eq(err("GetQueueUrl", {"QueueName": n}), "AWS.SimpleQueueService.NonExistentQueue", "deleted")


@test
def message_actions():
    url = text(ok("CreateQueue", {"QueueName": name("qmsg")}), "QueueUrl")
    r = ok("SendMessage", {"QueueUrl": url, "MessageBody": "hello <&>",
                           "MessageAttribute.1.Name": "k", "MessageAttribute.1.Value.DataType": "String",
                           "MessageAttribute.1.Value.StringValue": "v"})
    eq(text(r, "MD5OfMessageBody"), md5_hex("hello <&>".encode()), "body md5")
    eq(text(r, "MD5OfMessageAttributes"), attributes_md5({"k": {"DataType": "String", "StringValue": "v"}}), "attr md5")
    b = ok("SendMessageBatch", {"QueueUrl": url,
                                "SendMessageBatchRequestEntry.1.Id": "a", "SendMessageBatchRequestEntry.1.MessageBody": "A",
                                "SendMessageBatchRequestEntry.2.Id": "b", "SendMessageBatchRequestEntry.2.MessageBody": "B"})
    eq(sorted(all_text(b, "SendMessageBatchResultEntry/Id")), ["a", "b"], "batch ids")
    got = ok("ReceiveMessage", {"QueueUrl": url, "MaxNumberOfMessages": "10", "AttributeName.1": "All",
                                "MessageAttributeName.1": "All", "WaitTimeSeconds": "1"})
    msgs = got.findall(NS + "Message")
    eq(sorted(text(m, "Body") for m in msgs), ["A", "B", "hello <&>"], "received")
    first = [m for m in msgs if text(m, "Body") == "hello <&>"][0]
    eq(text(first, "MessageAttribute/Value/StringValue"), "v", "message attribute")
    check("SentTimestamp" in attributes(first), "system attributes", attributes(first))
    handles = {text(m, "Body"): text(m, "ReceiptHandle") for m in msgs}
    ok("ChangeMessageVisibility", {"QueueUrl": url, "ReceiptHandle": handles["A"], "VisibilityTimeout": "60"})
    cb = ok("ChangeMessageVisibilityBatch", {"QueueUrl": url,
                                             "ChangeMessageVisibilityBatchRequestEntry.1.Id": "x",
                                             "ChangeMessageVisibilityBatchRequestEntry.1.ReceiptHandle": handles["B"],
                                             "ChangeMessageVisibilityBatchRequestEntry.1.VisibilityTimeout": "60"})
    eq(all_text(cb, "ChangeMessageVisibilityBatchResultEntry/Id"), ["x"], "visibility batch")
    ok("DeleteMessage", {"QueueUrl": url, "ReceiptHandle": handles["hello <&>"]})
    db = ok("DeleteMessageBatch", {"QueueUrl": url,
                                   "DeleteMessageBatchRequestEntry.1.Id": "a", "DeleteMessageBatchRequestEntry.1.ReceiptHandle": handles["A"],
                                   "DeleteMessageBatchRequestEntry.2.Id": "b", "DeleteMessageBatchRequestEntry.2.ReceiptHandle": "garbage"})
    eq(all_text(db, "DeleteMessageBatchResultEntry/Id"), ["a"], "deleted")
    eq(all_text(db, "BatchResultErrorEntry/Code"), ["ReceiptHandleIsInvalid"], "per-entry failure")
    # A GET with everything in the query string works too (old tools, presigned URLs).
    r = ok("SendMessage", {"QueueUrl": url, "MessageBody": "via GET"}, method="GET")
    check(text(r, "MessageId"), "GET send")
    eq(err("SendMessage", {"QueueUrl": url}), "MissingParameter", "missing body")
    eq(err("NoSuchAction", {}), "InvalidAction", "unknown action")
    ok("DeleteQueue", {"QueueUrl": url})


@test
def dead_letter_actions():
    dlq = text(ok("CreateQueue", {"QueueName": name("qdlq")}), "QueueUrl")
    dlq_arn = attributes(ok("GetQueueAttributes", {"QueueUrl": dlq, "AttributeName.1": "QueueArn"}))["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
    src = text(ok("CreateQueue", {"QueueName": name("qsrc"), "Attribute.1.Name": "RedrivePolicy",
                                  "Attribute.1.Value": policy}), "QueueUrl")
    eq(all_text(ok("ListDeadLetterSourceQueues", {"QueueUrl": dlq}), "QueueUrl"), [src], "dead-letter sources")
    ok("SendMessage", {"QueueUrl": src, "MessageBody": "poison"})
    ok("ReceiveMessage", {"QueueUrl": src, "VisibilityTimeout": "0", "WaitTimeSeconds": "1"})
    deadline = time.time() + 10
    while attributes(ok("GetQueueAttributes", {"QueueUrl": dlq, "AttributeName.1": "ApproximateNumberOfMessages"}))["ApproximateNumberOfMessages"] != "1":
        ok("ReceiveMessage", {"QueueUrl": src})
        check(time.time() < deadline, "dead-lettered")
        time.sleep(0.1)
    handle = text(ok("StartMessageMoveTask", {"SourceArn": dlq_arn, "MaxNumberOfMessagesPerSecond": "1"}), "TaskHandle")
    check(handle, "task handle")
    tasks = ok("ListMessageMoveTasks", {"SourceArn": dlq_arn, "MaxResults": "10"})
    check(all_text(tasks, "ListMessageMoveTasksResultEntry/Status")[0] in ("RUNNING", "COMPLETED"), "task listed")
    code = err("CancelMessageMoveTask", {"TaskHandle": "nope"})
    eq(code, "ResourceNotFoundException", "cancel unknown")
    deadline = time.time() + 10
    while all_text(ok("ListMessageMoveTasks", {"SourceArn": dlq_arn}), "ListMessageMoveTasksResultEntry/Status") != ["COMPLETED"]:
        check(time.time() < deadline, "task completes")
        time.sleep(0.1)
    eq(text(ok("ReceiveMessage", {"QueueUrl": src, "WaitTimeSeconds": "2"}), "Message/Body"), "poison", "moved back")
    for u in (src, dlq):
        ok("DeleteQueue", {"QueueUrl": u})


if __name__ == "__main__":
    main()
