"""boto3 SNS scenarios: Publish/PublishBatch to SQS subscribers — the exact envelope (signed,
verified with the served certificate), raw delivery with attributes, Subject, message
structure, and the errors: oversize messages, bad attributes, bad batches."""

import base64
import json
import re

from _sns_common import check, eq, error_code, main, receive, sns, subscribe_queue, test, topic, verify_signature

ATTRS = {
    "color": {"DataType": "String", "StringValue": "red"},
    "size": {"DataType": "Number", "StringValue": "42.5"},
    "tags": {"DataType": "String.Array", "StringValue": '["a", "b"]'},
    "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
}


@test
def enveloped_delivery_is_sns_json_and_signed():
    t = topic()
    url, sub = subscribe_queue(t)
    mid = sns.publish(TopicArn=t, Message="hello", Subject="Greeting", MessageAttributes=ATTRS)["MessageId"]
    (m,) = receive(url)
    check("MessageAttributes" not in m, "an enveloped copy has no SQS attributes", m.get("MessageAttributes"))
    env = json.loads(m["Body"])
    keys = list(env)
    eq(keys, ["Type", "MessageId", "TopicArn", "Subject", "Message", "Timestamp", "SignatureVersion", "Signature", "SigningCertURL", "UnsubscribeURL", "MessageAttributes"], "envelope keys in SNS's order")
    eq((env["Type"], env["MessageId"], env["TopicArn"], env["Subject"], env["Message"]), ("Notification", mid, t, "Greeting", "hello"), "fields")
    check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", env["Timestamp"]), "timestamp format", env["Timestamp"])
    eq(env["SignatureVersion"], "1", "SignatureVersion")
    check(env["UnsubscribeURL"].endswith("Action=Unsubscribe&SubscriptionArn=" + sub), "UnsubscribeURL", env["UnsubscribeURL"])
    eq(env["MessageAttributes"], {
        "blob": {"Type": "Binary", "Value": base64.b64encode(b"\x00\x01\xff").decode()},
        "color": {"Type": "String", "Value": "red"},
        "size": {"Type": "Number", "Value": "42.5"},
        "tags": {"Type": "String.Array", "Value": '["a", "b"]'},
    }, "MessageAttributes")
    verify_signature(env)
    # SignatureVersion 2 (SHA256withRSA), no Subject.
    sns.set_topic_attributes(TopicArn=t, AttributeName="SignatureVersion", AttributeValue="2")
    sns.publish(TopicArn=t, Message='{"json": "inside"}')
    (m,) = receive(url)
    env = json.loads(m["Body"])
    eq(env["SignatureVersion"], "2", "SignatureVersion 2")
    check("Subject" not in env and "MessageAttributes" not in env, "no Subject/MessageAttributes keys when absent")
    eq(env["Message"], '{"json": "inside"}', "message text kept as a string")
    verify_signature(env)


@test
def raw_delivery_keeps_body_and_attributes():
    t = topic()
    raw_url, _ = subscribe_queue(t, raw=True)
    env_url, _ = subscribe_queue(t)
    sns.publish(TopicArn=t, Message="raw body", Subject="ignored for raw", MessageAttributes=ATTRS)
    (m,) = receive(raw_url)
    eq(m["Body"], "raw body", "raw body")
    got = m["MessageAttributes"]
    eq(got["color"], {"DataType": "String", "StringValue": "red"}, "String attribute")
    eq(got["size"], {"DataType": "Number", "StringValue": "42.5"}, "Number attribute")
    eq(got["tags"], {"DataType": "String.Array", "StringValue": '["a", "b"]'}, "String.Array attribute")
    eq(got["blob"], {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"}, "Binary attribute")
    eq(sorted(got), ["blob", "color", "size", "tags"], "no internal attributes leak")
    (e,) = receive(env_url)
    eq(json.loads(e["Body"])["Message"], "raw body", "the enveloped subscriber got the same publish")


@test
def message_structure_json_picks_the_protocol_entry():
    t = topic()
    url, _ = subscribe_queue(t)
    raw_url, _ = subscribe_queue(t, raw=True)
    sns.publish(TopicArn=t, MessageStructure="json", Message=json.dumps({"default": "dflt", "sqs": "for sqs"}))
    eq(json.loads(receive(url)[0]["Body"])["Message"], "for sqs", "sqs entry")
    eq(receive(raw_url)[0]["Body"], "for sqs", "raw sqs entry")
    sns.publish(TopicArn=t, MessageStructure="json", Message=json.dumps({"default": "only default"}))
    eq(json.loads(receive(url)[0]["Body"])["Message"], "only default", "default entry")
    code, _, err = error_code(sns.publish, TopicArn=t, MessageStructure="json", Message='{"sqs": "x"}')
    eq((code, err["Message"]), ("InvalidParameter", "Invalid parameter: Message Structure - No default entry in JSON message body"), "no default")
    code, _, _ = error_code(sns.publish, TopicArn=t, MessageStructure="json", Message="not json")
    eq(code, "InvalidParameter", "not JSON")


@test
def oversize_and_bad_input():
    t = topic()
    url, _ = subscribe_queue(t)
    sns.publish(TopicArn=t, Message="x" * (256 * 1024))  # exactly the limit
    eq(len(json.loads(receive(url)[0]["Body"])["Message"]), 256 * 1024, "256 KiB message delivered")
    code, status, err = error_code(sns.publish, TopicArn=t, Message="x" * (256 * 1024 + 1))
    eq((code, status, err["Message"]), ("InvalidParameter", 400, "Invalid parameter: Message too long"), "oversize")
    code, _, err = error_code(sns.publish, TopicArn=t, Message="x" * (256 * 1024 - 3), MessageAttributes={"k": {"DataType": "String", "StringValue": "vvvv"}})
    eq(err["Message"], "Invalid parameter: Message too long", "attributes count toward the limit")
    code, _, _ = error_code(sns.publish, TopicArn=t, Message="")
    eq(code, "InvalidParameter", "empty message")
    code, _, _ = error_code(sns.publish, TopicArn=t, Message="m", Subject="line\nbreak")
    eq(code, "InvalidParameter", "bad subject")
    code, _, _ = error_code(sns.publish, TopicArn=t, Message="m", Subject="s" * 101)
    eq(code, "InvalidParameter", "long subject")
    for attrs, fragment in [
        ({"n": {"DataType": "Number", "StringValue": "abc"}}, "Could not cast message attribute 'n' value to number."),
        ({"n": {"DataType": "Blob", "StringValue": "abc"}}, "supported type prefixes is Binary, Number, and String"),
        ({"n": {"DataType": "String.Array", "StringValue": "{}"}}, "valid JSON array"),
        ({"AWS.x": {"DataType": "String", "StringValue": "v"}}, "name 'AWS.x' is invalid"),
    ]:
        code, status, err = error_code(sns.publish, TopicArn=t, Message="m", MessageAttributes=attrs)
        eq((code, status), ("ParameterValueInvalid", 400), "code for %r" % attrs)
        check(fragment in err["Message"], "message for %r" % attrs, err["Message"])
    code, _, _ = error_code(sns.publish, TopicArn=t, Message="m", MessageGroupId="g")
    eq(code, "InvalidParameter", "MessageGroupId on a standard topic")
    code, _, _ = error_code(sns.publish, PhoneNumber="+15555550100", Message="m")
    eq(code, "InvalidParameter", "SMS")
    receive(url, want=0, wait=0)


@test
def publish_batch():
    t = topic()
    url, _ = subscribe_queue(t, raw=True)
    r = sns.publish_batch(TopicArn=t, PublishBatchRequestEntries=[
        {"Id": "a", "Message": "one", "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}},
        {"Id": "b", "Message": "two"},
        {"Id": "bad", "Message": "three", "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "x"}}},
    ])
    eq(sorted(e["Id"] for e in r["Successful"]), ["a", "b"], "successful entries")
    eq([(f["Id"], f["Code"], f["SenderFault"]) for f in r["Failed"]], [("bad", "ParameterValueInvalid", True)], "failed entry")
    eq(sorted(m["Body"] for m in receive(url, want=2)), ["one", "two"], "delivered")
    for entries, code in [
        ([], "EmptyBatchRequest"),
        ([{"Id": str(i), "Message": "m"} for i in range(11)], "TooManyEntriesInBatchRequest"),
        ([{"Id": "x", "Message": "m"}, {"Id": "x", "Message": "n"}], "BatchEntryIdsNotDistinct"),
        ([{"Id": "bad id!", "Message": "m"}], "InvalidBatchEntryId"),
        ([{"Id": "a", "Message": "x" * 200000}, {"Id": "b", "Message": "x" * 100000}], "BatchRequestTooLong"),
    ]:
        got, _, _ = error_code(sns.publish_batch, TopicArn=t, PublishBatchRequestEntries=entries)
        eq(got, code, code)


@test
def filtered_out_subscribers_get_nothing():
    t = topic()
    url, _ = subscribe_queue(t, policy={"color": ["blue"]})
    sns.publish(TopicArn=t, Message="red one", MessageAttributes={"color": {"DataType": "String", "StringValue": "red"}})
    sns.publish(TopicArn=t, Message="blue one", MessageAttributes={"color": {"DataType": "String", "StringValue": "blue"}})
    got = receive(url, want=2, wait=2)
    eq([json.loads(m["Body"])["Message"] for m in got], ["blue one"], "only the matching message")


if __name__ == "__main__":
    main()
