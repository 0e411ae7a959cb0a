"""boto3 SNS scenarios: sqs subscriptions, their attributes, listing with pagination,
unsupported protocols, and filter-policy validation (every limit, SNS's texts)."""

import json

from _sns_common import check, eq, error_code, main, queue, sns, subscribe_queue, test, topic


@test
def subscribe_list_attributes_unsubscribe():
    t = topic()
    url, qarn = queue()
    arn = sns.subscribe(TopicArn=t, Protocol="sqs", Endpoint=qarn)["SubscriptionArn"]
    check(arn.startswith(t + ":"), "subscription ARN under the topic", arn)
    again = sns.subscribe(TopicArn=t, Protocol="sqs", Endpoint=qarn)["SubscriptionArn"]
    eq(again, arn, "subscribing twice returns the same subscription")
    subs = sns.list_subscriptions_by_topic(TopicArn=t)["Subscriptions"]
    eq(len(subs), 1, "one subscription")
    s = subs[0]
    eq((s["Protocol"], s["Endpoint"], s["SubscriptionArn"], s["TopicArn"], s["Owner"]), ("sqs", qarn, arn, t, "000000000000"), "listed")
    check(any(x["SubscriptionArn"] == arn for x in sns.list_subscriptions()["Subscriptions"]), "in ListSubscriptions")
    a = sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]
    eq((a["Protocol"], a["Endpoint"], a["TopicArn"], a["RawMessageDelivery"], a["PendingConfirmation"]), ("sqs", qarn, t, "false", "false"), "attributes")
    sns.set_subscription_attributes(SubscriptionArn=arn, AttributeName="RawMessageDelivery", AttributeValue="true")
    sns.set_subscription_attributes(SubscriptionArn=arn, AttributeName="FilterPolicy", AttributeValue='{"k": ["v"]}')
    sns.set_subscription_attributes(SubscriptionArn=arn, AttributeName="FilterPolicyScope", AttributeValue="MessageBody")
    a = sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]
    eq((a["RawMessageDelivery"], json.loads(a["FilterPolicy"]), a["FilterPolicyScope"]), ("true", {"k": ["v"]}, "MessageBody"), "after set")
    sns.set_subscription_attributes(SubscriptionArn=arn, AttributeName="FilterPolicy", AttributeValue="")
    check("FilterPolicy" not in sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"], "policy removed")
    eq(sns.get_topic_attributes(TopicArn=t)["Attributes"]["SubscriptionsConfirmed"], "1", "SubscriptionsConfirmed")
    code, _, _ = error_code(sns.subscribe, TopicArn=t, Protocol="sqs", Endpoint=qarn, Attributes={"RawMessageDelivery": "false"})
    eq(code, "InvalidParameter", "same endpoint, different attributes")
    sns.unsubscribe(SubscriptionArn=arn)
    eq(sns.list_subscriptions_by_topic(TopicArn=t)["Subscriptions"], [], "after unsubscribe")
    code, status, _ = error_code(sns.get_subscription_attributes, SubscriptionArn=arn)
    eq((code, status), ("NotFound", 404), "unsubscribed")


@test
def set_attribute_errors():
    t = topic()
    _, arn = subscribe_queue(t)
    code, _, err = error_code(sns.set_subscription_attributes, SubscriptionArn=arn, AttributeName="RawMessageDelivery", AttributeValue="yes")
    eq(code, "InvalidParameter", "bad RawMessageDelivery")
    check("RawMessageDelivery" in err["Message"], "message", err["Message"])
    code, _, err = error_code(sns.set_subscription_attributes, SubscriptionArn=arn, AttributeName="Bogus", AttributeValue="x")
    eq((code, err["Message"]), ("InvalidParameter", "Invalid parameter: AttributeName"), "unknown attribute")
    code, _, err = error_code(sns.set_subscription_attributes, SubscriptionArn=arn, AttributeName="FilterPolicy", AttributeValue='{"a": []}')
    eq((code, err["Message"]), ("InvalidParameter", "Invalid parameter: FilterPolicy: Empty arrays are not allowed"), "bad policy")
    code, _, _ = error_code(sns.set_subscription_attributes, SubscriptionArn=arn, AttributeName="FilterPolicyScope", AttributeValue="Body")
    eq(code, "InvalidParameter", "bad scope")


@test
def list_subscriptions_paginates():
    t = topic()
    arns = {subscribe_queue(t)[1] for _ in range(103)}
    seen, pages, kwargs = [], 0, {}
    while True:
        page = sns.list_subscriptions_by_topic(TopicArn=t, **kwargs)
        pages += 1
        seen += [s["SubscriptionArn"] for s in page["Subscriptions"]]
        if "NextToken" not in page:
            break
        kwargs = {"NextToken": page["NextToken"]}
    eq(pages, 2, "pages")
    eq(set(seen), arns, "every subscription once")
    eq(len(seen), len(arns), "no duplicates")


@test
def unsupported_protocols():
    t = topic()
    for proto, endpoint, fragment in [
        ("https", "https://example.invalid/", "https endpoints are not supported"),
        ("email", "a@example.invalid", "email subscriptions are not supported"),
        ("sms", "+15555550100", "sms subscriptions are not supported"),
        ("lambda", "arn:aws:lambda:us-east-1:000000000000:function:f", "lambda subscriptions are not supported"),
        ("application", "arn:aws:sns:us-east-1:000000000000:endpoint/GCM/app/x", "application subscriptions are not supported"),
        ("carrier-pigeon", "coop", "does not support this protocol string"),
    ]:
        code, status, err = error_code(sns.subscribe, TopicArn=t, Protocol=proto, Endpoint=endpoint)
        eq((code, status), ("InvalidParameter", 400), proto)
        check(fragment in err["Message"], proto + " message", err["Message"])
    code, _, _ = error_code(sns.subscribe, TopicArn=t, Protocol="sqs", Endpoint="not-an-arn")
    eq(code, "InvalidParameter", "bad SQS ARN")
    code, _, _ = error_code(sns.subscribe, TopicArn=t, Protocol="sqs", Endpoint="arn:aws:sqs:us-east-1:000000000000:missing-q")
    eq(code, "InvalidParameter", "missing queue")
    _, fifo_q = queue(fifo=True)
    code, _, err = error_code(sns.subscribe, TopicArn=t, Protocol="sqs", Endpoint=fifo_q)
    check(code == "InvalidParameter" and "FIFO" in err["Message"], "FIFO queue on a standard topic", err)


def policy_error(policy, scope=None):
    t = topic()
    _, qarn = queue()
    attrs = {"FilterPolicy": policy if isinstance(policy, str) else json.dumps(policy)}
    if scope:
        attrs["FilterPolicyScope"] = scope
    code, status, err = error_code(sns.subscribe, TopicArn=t, Protocol="sqs", Endpoint=qarn, Attributes=attrs)
    eq((code, status), ("InvalidParameter", 400), "code for %r" % (policy,))
    return err["Message"]


@test
def invalid_policies_each_limit():
    R = "Invalid parameter: Attributes Reason: FilterPolicy: "
    eq(policy_error({k: ["x"] for k in "abcdef"}), R + "Filter policy can not have more than 5 keys", "6 keys")
    eq(policy_error({"a": list(range(13)), "b": list(range(12))}), R + "Filter policy is too complex", "156 combinations")
    eq(policy_error({"a": {"b": {"c": list(range(7))}}, "d": {"e": list(range(7))}}, "MessageBody"), R + "Filter policy is too complex", "nested combinations")
    eq(policy_error({"a": {"b": ["x"]}}), "Invalid parameter: Attributes Reason: Filter policy scope MessageAttributes does not support nested filter policy", "nesting in attributes scope")
    check("out of range" in policy_error({"a": [{"numeric": [">", 2e9]}]}), "number range")
    eq(policy_error({"a": [{"numeric": [">", 5, "<", 1]}]}), R + "Bottom must be less than top", "range order")
    eq(policy_error({"a": [{"numeric": ["<", 1, ">", 0]}]}), R + "Too many elements in numeric expression", "range shape")
    eq(policy_error({"a": [{"bogus": 1}]}), R + "Unrecognized match type bogus", "operator")
    eq(policy_error({"a": [{"exists": "yes"}]}), R + "exists match pattern must be either true or false.", "exists")
    eq(policy_error({"a": [{"cidr": "10.0.0.0"}]}), R + "Malformed CIDR, one '/' required", "cidr")
    eq(policy_error({"a": []}), R + "Empty arrays are not allowed", "empty array")
    eq(policy_error({"a": "x"}), R + '"a" must be an object or an array', "scalar")
    check(policy_error("{not json").startswith(R + "failed to parse JSON"), "not JSON")
    check("too long" in policy_error(json.dumps({"a": ["x" * (256 * 1024)]})), "256 KiB")
    # Right at the limits is fine.
    t = topic()
    ok = {"a": list(range(10)), "b": list(range(15))}
    subscribe_queue(t, policy=ok)
    subscribe_queue(t, policy={k: ["x"] for k in "abcde"})


if __name__ == "__main__":
    main()
