"""SNS state survives a broker restart: `setup` creates a topic with attributes and tags and
a filtered raw subscription; `check` (after the restart) finds them and delivers through them."""

import json
import sys

from _sns_common import eq, main, receive, sns, sqs, test

TOPIC = "persisted-topic"
QUEUE = "persisted-queue"


@test
def setup_or_check():
    if sys.argv[1:] == ["setup"]:
        t = sns.create_topic(Name=TOPIC, Attributes={"DisplayName": "Kept"}, Tags=[{"Key": "k", "Value": "v"}])["TopicArn"]
        url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=t, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true", "FilterPolicy": json.dumps({"c": ["yes"]})})
        return
    t = [x["TopicArn"] for x in sns.list_topics()["Topics"] if x["TopicArn"].endswith(":" + TOPIC)][0]
    eq(sns.get_topic_attributes(TopicArn=t)["Attributes"]["DisplayName"], "Kept", "attribute after restart")
    eq(sns.list_tags_for_resource(ResourceArn=t)["Tags"], [{"Key": "k", "Value": "v"}], "tags after restart")
    (sub,) = sns.list_subscriptions_by_topic(TopicArn=t)["Subscriptions"]
    a = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"]
    eq((a["RawMessageDelivery"], json.loads(a["FilterPolicy"])), ("true", {"c": ["yes"]}), "subscription attributes after restart")
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    for c in ["no", "yes"]:
        sns.publish(TopicArn=t, Message="after restart " + c, MessageAttributes={"c": {"DataType": "String", "StringValue": c}})
    eq([m["Body"] for m in receive(url, want=2, wait=2)], ["after restart yes"], "filtered delivery after restart")


if __name__ == "__main__":
    main()
