"""boto3 SNS scenarios: topics, attributes, tags, pagination, errors (and the aws CLI)."""

import json
import os
import shutil
import subprocess

from _sns_common import REGION, check, eq, error_code, main, name, sns, test, topic


@test
def create_is_idempotent_and_listed():
    n = name("t")
    arn = sns.create_topic(Name=n)["TopicArn"]
    eq(arn, "arn:aws:sns:%s:000000000000:%s" % (REGION, n), "topic ARN")
    eq(sns.create_topic(Name=n)["TopicArn"], arn, "second CreateTopic")
    arns = []
    kwargs = {}
    while True:
        page = sns.list_topics(**kwargs)
        arns += [t["TopicArn"] for t in page["Topics"]]
        if "NextToken" not in page:
            break
        kwargs = {"NextToken": page["NextToken"]}
    check(arn in arns, "topic listed", arn)
    sns.delete_topic(TopicArn=arn)
    code, status, _ = error_code(sns.get_topic_attributes, TopicArn=arn)
    eq((code, status), ("NotFound", 404), "deleted topic")
    sns.delete_topic(TopicArn=arn)  # deleting twice succeeds


@test
def list_topics_paginates_by_100():
    prefix = name("page")
    made = [sns.create_topic(Name="%s-%03d" % (prefix, i))["TopicArn"] for i in range(105)]
    seen, pages, kwargs = [], 0, {}
    while True:
        page = sns.list_topics(**kwargs)
        pages += 1
        check(len(page["Topics"]) <= 100, "page size", len(page["Topics"]))
        seen += [t["TopicArn"] for t in page["Topics"]]
        if "NextToken" not in page:
            break
        kwargs = {"NextToken": page["NextToken"]}
    check(pages >= 2, "more than one page", pages)
    check(set(made) <= set(seen), "every topic seen once")
    eq(len(seen), len(set(seen)), "no duplicates across pages")
    for a in made:
        sns.delete_topic(TopicArn=a)


@test
def attributes_get_and_set():
    arn = topic(DisplayName="Alerts")
    a = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    eq(a["TopicArn"], arn, "TopicArn")
    eq(a["DisplayName"], "Alerts", "DisplayName")
    eq(a["Owner"], "000000000000", "Owner")
    eq(a["SubscriptionsConfirmed"], "0", "SubscriptionsConfirmed")
    check("Policy" in a and json.loads(a["Policy"])["Statement"], "default policy")
    sns.set_topic_attributes(TopicArn=arn, AttributeName="DisplayName", AttributeValue="Renamed")
    sns.set_topic_attributes(TopicArn=arn, AttributeName="SignatureVersion", AttributeValue="2")
    a = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    eq((a["DisplayName"], a["SignatureVersion"]), ("Renamed", "2"), "after SetTopicAttributes")
    code, _, _ = error_code(sns.set_topic_attributes, TopicArn=arn, AttributeName="Bogus", AttributeValue="x")
    eq(code, "InvalidParameter", "unknown attribute")
    code, _, _ = error_code(sns.set_topic_attributes, TopicArn=arn, AttributeName="SignatureVersion", AttributeValue="3")
    eq(code, "InvalidParameter", "bad SignatureVersion")
    code, _, err = error_code(sns.create_topic, Name=arn.split(":")[-1], Attributes={"DisplayName": "Other"})
    eq(code, "InvalidParameter", "same name, other attributes")
    check("different attributes" in err["Message"], "message", err["Message"])


@test
def fifo_topics():
    arn = topic(fifo=True, ContentBasedDeduplication="true")
    a = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    eq((a["FifoTopic"], a["ContentBasedDeduplication"]), ("true", "true"), "FIFO attributes")
    code, _, _ = error_code(sns.create_topic, Name=name("nofifo"), Attributes={"FifoTopic": "true"})
    eq(code, "InvalidParameter", "FifoTopic without .fifo")
    code, _, _ = error_code(sns.create_topic, Name=name("x") + ".fifo")
    eq(code, "InvalidParameter", ".fifo name without FifoTopic")
    std = topic()
    code, _, _ = error_code(sns.set_topic_attributes, TopicArn=std, AttributeName="ContentBasedDeduplication", AttributeValue="true")
    eq(code, "InvalidParameter", "ContentBasedDeduplication on a standard topic")


@test
def bad_names_and_unknown_topics():
    for bad in ["", "has space", "a" * 257, "dots.not.allowed"]:
        code, status, _ = error_code(sns.create_topic, Name=bad)
        eq((code, status), ("InvalidParameter", 400), "name %r" % bad)
    ghost = "arn:aws:sns:%s:000000000000:%s" % (REGION, name("ghost"))
    for fn, kw in [
        (sns.get_topic_attributes, {"TopicArn": ghost}),
        (sns.publish, {"TopicArn": ghost, "Message": "x"}),
        (sns.list_subscriptions_by_topic, {"TopicArn": ghost}),
        (sns.subscribe, {"TopicArn": ghost, "Protocol": "sqs", "Endpoint": "arn:aws:sqs:us-east-1:000000000000:q"}),
    ]:
        code, status, err = error_code(fn, **kw)
        eq((code, status), ("NotFound", 404), fn.__name__)
        eq(err["Message"], "Topic does not exist", fn.__name__ + " message")
    code, _, _ = error_code(sns.get_topic_attributes, TopicArn="not-an-arn")
    eq(code, "InvalidParameter", "malformed ARN")


@test
def tags():
    arn = topic()
    sns.tag_resource(ResourceArn=arn, Tags=[{"Key": "team", "Value": "a"}, {"Key": "env", "Value": "dev"}])
    tags = {t["Key"]: t["Value"] for t in sns.list_tags_for_resource(ResourceArn=arn)["Tags"]}
    eq(tags, {"team": "a", "env": "dev"}, "tags")
    sns.untag_resource(ResourceArn=arn, TagKeys=["env"])
    tags = {t["Key"]: t["Value"] for t in sns.list_tags_for_resource(ResourceArn=arn)["Tags"]}
    eq(tags, {"team": "a"}, "after untag")
    code, _, _ = error_code(sns.tag_resource, ResourceArn=arn, Tags=[{"Key": "k%d" % i, "Value": "v"} for i in range(60)])
    eq(code, "TagLimitExceeded", "over 50 tags")
    ghost = arn + "-ghost"
    code, status, _ = error_code(sns.list_tags_for_resource, ResourceArn=ghost)
    eq((code, status), ("ResourceNotFound", 404), "tags of a missing topic")
    tagged = sns.create_topic(Name=name("tagged"), Tags=[{"Key": "a", "Value": "1"}])["TopicArn"]
    eq(sns.list_tags_for_resource(ResourceArn=tagged)["Tags"], [{"Key": "a", "Value": "1"}], "CreateTopic tags")


@test
def aws_cli_if_present():
    aws = shutil.which("aws")
    if not aws:
        print("     (aws CLI not installed; skipped)")
        return
    env = dict(os.environ)
    n = name("cli")
    base = [aws, "--endpoint-url", os.environ["AWS_ENDPOINT_URL"], "--region", REGION, "--output", "json", "sns"]
    out = json.loads(subprocess.run(base + ["create-topic", "--name", n], env=env, check=True, capture_output=True, text=True).stdout)
    check(out["TopicArn"].endswith(":" + n), "aws sns create-topic", out)
    out = json.loads(subprocess.run(base + ["publish", "--topic-arn", out["TopicArn"], "--message", "hi"], env=env, check=True, capture_output=True, text=True).stdout)
    check(len(out["MessageId"]) == 36, "aws sns publish", out)
    listed = json.loads(subprocess.run(base + ["list-topics"], env=env, check=True, capture_output=True, text=True).stdout)
    check(any(t["TopicArn"].endswith(":" + n) for t in listed["Topics"]), "aws sns list-topics")


if __name__ == "__main__":
    main()
