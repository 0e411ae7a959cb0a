"""boto3 SNS scenarios: every filter-policy operator, matching and non-matching, in both
scopes (MessageAttributes and nested MessageBody), checked by what the subscribed SQS queues
receive."""

import json

from _sns_common import drain, eq, leftover, main, receive, sns, subscribe_queue, test, topic

S, N, A = "String", "Number", "String.Array"

# (operator, condition list, [(type, value, should match)], [(body value, should match)])
CASES = [
    ("exact", ["red", "green"], [(S, "red", 1), (S, "green", 1), (S, "blue", 0), (A, '["x", "red"]', 1)], [("red", 1), ("blue", 0), (["x", "green"], 1)]),
    ("number", [5, 10.5], [(N, "5", 1), (N, "5.000", 1), (N, "10.5", 1), (N, "6", 0), (S, "5", 0)], [(5, 1), (10.5, 1), ("5", 0), (6, 0)]),
    ("prefix", [{"prefix": "eu-"}], [(S, "eu-west-1", 1), (S, "us-east-1", 0)], [("eu-central-1", 1), ("us", 0)]),
    ("suffix", [{"suffix": ".png"}], [(S, "a.png", 1), (S, "a.jpg", 0)], [("b.png", 1), ("png.gif", 0)]),
    ("ignore_case", [{"equals-ignore-case": "ReD"}], [(S, "RED", 1), (S, "reds", 0)], [("red", 1), ("blue", 0)]),
    ("anything_but", [{"anything-but": ["red", "green"]}], [(S, "blue", 1), (S, "red", 0), (A, '["blue", "red"]', 0)], [("blue", 1), ("green", 0)]),
    ("anything_but_number", [{"anything-but": 100}], [(N, "101", 1), (N, "100", 0)], [(99, 1), (100, 0)]),
    ("anything_but_prefix", [{"anything-but": {"prefix": "tmp"}}], [(S, "prod", 1), (S, "tmp-1", 0)], [("prod", 1), ("tmpx", 0)]),
    ("numeric_eq", [{"numeric": ["=", 301.5]}], [(N, "301.5", 1), (N, "301", 0)], [(301.5, 1), (300, 0)]),
    ("numeric_range", [{"numeric": [">", 0, "<=", 150]}], [(N, "0.5", 1), (N, "150", 1), (N, "0", 0), (N, "151", 0)], [(1, 1), (150, 1), (0, 0), (151, 0)]),
    ("numeric_open", [{"numeric": ["<", 0]}], [(N, "-1", 1), (N, "1", 0)], [(-5, 1), (5, 0)]),
    ("cidr", [{"cidr": "10.0.0.0/24"}], [(S, "10.0.0.7", 1), (S, "10.0.1.7", 0)], [("10.0.0.200", 1), ("192.168.0.1", 0)]),
    ("exists", [{"exists": True}], [(S, "anything", 1)], [("anything", 1)]),
]


def attr(op, t, v):
    return {"k_" + op: {"DataType": t, "StringValue": v}}


@test
def attributes_scope_every_operator():
    t = topic()
    queues = {op: subscribe_queue(t, policy={"k_" + op: cond})[0] for op, cond, _, _ in CASES}
    absent_url, _ = subscribe_queue(t, policy={"k_exact": [{"exists": False}], "k_number": [{"exists": False}]})
    expected = {op: [] for op, _, _, _ in CASES}
    n = 0
    for op, _, values, _ in CASES:
        for ty, v, match in values:
            n += 1
            body = "%s-%d" % (op, n)
            sns.publish(TopicArn=t, Message=body, MessageAttributes=attr(op, ty, v))
            if match:
                expected[op].append(body)
    sns.publish(TopicArn=t, Message="no-attribute")
    for op, url in queues.items():
        got = [json.loads(m["Body"])["Message"] for m in receive(url, want=len(expected[op])) + leftover(url)]
        own = sorted(b for b in got if b.startswith(op + "-"))
        eq(own, sorted(expected[op]), "%s: its own messages that match" % op)
    got = sorted(json.loads(m["Body"])["Message"] for m in receive(absent_url, want=1) + drain(absent_url))
    eq([g for g in got if g.startswith("exact-") or g.startswith("number-")], [], "exists false: none with the key")
    eq("no-attribute" in got, True, "exists false: the message without it")


@test
def body_scope_every_operator_nested():
    t = topic()
    queues = {op: subscribe_queue(t, policy={"detail": {op: cond}}, scope="MessageBody")[0] for op, cond, _, _ in CASES}
    expected = {op: [] for op, _, _, _ in CASES}
    n = 0
    for op, _, _, values in CASES:
        for v, match in values:
            n += 1
            tag = "%s-%d" % (op, n)
            sns.publish(TopicArn=t, Message=json.dumps({"tag": tag, "detail": {op: v}}))
            if match:
                expected[op].append(tag)
    sns.publish(TopicArn=t, Message="not json at all")
    for op, url in queues.items():
        got = [json.loads(json.loads(m["Body"])["Message"])["tag"] for m in receive(url, want=len(expected[op])) + leftover(url)]
        own = sorted(x for x in got if x.startswith(op + "-"))
        eq(own, sorted(expected[op]), "%s (body): its own messages that match" % op)


@test
def and_or_and_arrays_of_objects():
    t = topic()
    both, _ = subscribe_queue(t, policy={"color": ["red"], "size": [{"numeric": [">", 10]}]})
    either, _ = subscribe_queue(t, policy={"$or": [{"color": ["red"]}, {"size": [{"numeric": [">", 10]}]}]})
    records, _ = subscribe_queue(t, policy={"Records": {"event": [{"prefix": "Object"}]}}, scope="MessageBody")
    msgs = [
        ("red-big", {"color": (S, "red"), "size": (N, "11")}),
        ("red-small", {"color": (S, "red"), "size": (N, "1")}),
        ("blue-big", {"color": (S, "blue"), "size": (N, "20")}),
        ("blue-small", {"color": (S, "blue"), "size": (N, "2")}),
    ]
    for body, attrs in msgs:
        sns.publish(TopicArn=t, Message=body, MessageAttributes={k: {"DataType": ty, "StringValue": v} for k, (ty, v) in attrs.items()})
    sns.publish(TopicArn=t, Message=json.dumps({"Records": [{"event": "Other"}, {"event": "ObjectCreated"}]}))
    sns.publish(TopicArn=t, Message=json.dumps({"Records": [{"event": "Other"}]}))
    eq(sorted(json.loads(m["Body"])["Message"] for m in receive(both) + leftover(both)), ["red-big"], "AND")
    eq(sorted(json.loads(m["Body"])["Message"] for m in receive(either, want=3) + leftover(either)), ["blue-big", "red-big", "red-small"], "$or")
    got = [json.loads(json.loads(m["Body"])["Message"]) for m in receive(records) + leftover(records)]
    eq(got, [{"Records": [{"event": "Other"}, {"event": "ObjectCreated"}]}], "array of objects")


if __name__ == "__main__":
    main()
