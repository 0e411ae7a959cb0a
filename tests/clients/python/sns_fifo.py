"""boto3 SNS scenarios: FIFO topics fanning out to FIFO queues — order within a group,
deduplication (explicit ids and content-based), sequence numbers, the FIFO errors."""

import json

from _sns_common import check, eq, error_code, main, receive, sns, subscribe_queue, test, topic


@test
def fan_out_keeps_group_order_on_every_queue():
    t = topic(fifo=True)
    raw_url, _ = subscribe_queue(t, raw=True, fifo=True)
    env_url, _ = subscribe_queue(t, fifo=True)
    seqs = []
    for i in range(20):
        r = sns.publish(TopicArn=t, Message="m%02d" % i, MessageGroupId="g%d" % (i % 2), MessageDeduplicationId="d%d" % i)
        seqs.append(int(r["SequenceNumber"]))
    eq(seqs, sorted(seqs), "sequence numbers grow")
    for url, unwrap in [(raw_url, lambda b: b), (env_url, lambda b: json.loads(b)["Message"])]:
        got = []
        while len(got) < 20:
            batch = receive(url, want=10, wait=5)
            check(batch, "messages keep coming", len(got))
            got += [(m["Attributes"]["MessageGroupId"], unwrap(m["Body"])) for m in batch]
        for g in ("g0", "g1"):
            bodies = [b for gg, b in got if gg == g]
            eq(bodies, sorted(bodies), "order within %s" % g)
            eq(len(bodies), 10, "all of %s" % g)
    m = None
    sns.publish(TopicArn=t, Message="last", MessageGroupId="g0", MessageDeduplicationId="last")
    (m,) = receive(env_url)
    env = json.loads(m["Body"])
    check("SequenceNumber" in env, "FIFO envelopes carry SequenceNumber", list(env))
    eq(m["Attributes"]["MessageDeduplicationId"], "last", "dedup id reaches the queue")


@test
def deduplication_explicit_and_content_based():
    t = topic(fifo=True)
    url, _ = subscribe_queue(t, raw=True, fifo=True)
    a = sns.publish(TopicArn=t, Message="x", MessageGroupId="g", MessageDeduplicationId="same")
    b = sns.publish(TopicArn=t, Message="y", MessageGroupId="g", MessageDeduplicationId="same")
    eq(b["MessageId"], a["MessageId"], "duplicate gets the original MessageId")
    eq(b["SequenceNumber"], a["SequenceNumber"], "and its SequenceNumber")
    eq([m["Body"] for m in receive(url, want=2, wait=2)], ["x"], "delivered once")
    code, _, err = error_code(sns.publish, TopicArn=t, Message="z", MessageGroupId="g")
    eq(code, "InvalidParameter", "no dedup id, no content-based dedup")
    check("ContentBasedDeduplication" in err["Message"], "message", err["Message"])
    cb = topic(fifo=True, ContentBasedDeduplication="true")
    url2, _ = subscribe_queue(cb, raw=True, fifo=True)
    c = sns.publish(TopicArn=cb, Message="same body", MessageGroupId="g")
    d = sns.publish(TopicArn=cb, Message="same body", MessageGroupId="g")
    eq(c["MessageId"], d["MessageId"], "content-based duplicate")
    sns.publish(TopicArn=cb, Message="other body", MessageGroupId="g")
    eq([m["Body"] for m in receive(url2, want=3, wait=2)], ["same body", "other body"], "content-based dedup delivered once")


@test
def fifo_errors():
    t = topic(fifo=True)
    code, _, err = error_code(sns.publish, TopicArn=t, Message="m", MessageDeduplicationId="d")
    eq((code, err["Message"]), ("InvalidParameter", "Invalid parameter: The MessageGroupId parameter is required for FIFO topics"), "group required")
    code, _, _ = error_code(sns.publish, TopicArn=t, Message="m", MessageGroupId="g" * 129, MessageDeduplicationId="d")
    eq(code, "InvalidParameter", "group id too long")
    std = topic()
    code, _, _ = error_code(sns.publish, TopicArn=std, Message="m", MessageDeduplicationId="d")
    eq(code, "InvalidParameter", "dedup id on a standard topic")
    r = sns.publish_batch(TopicArn=t, PublishBatchRequestEntries=[
        {"Id": "a", "Message": "1", "MessageGroupId": "g", "MessageDeduplicationId": "1"},
        {"Id": "b", "Message": "2", "MessageDeduplicationId": "2"},
    ])
    eq([e["Id"] for e in r["Successful"]], ["a"], "batch: good entry")
    check("SequenceNumber" in r["Successful"][0], "batch entry SequenceNumber")
    eq([f["Id"] for f in r["Failed"]], ["b"], "batch: entry without group")


if __name__ == "__main__":
    main()
