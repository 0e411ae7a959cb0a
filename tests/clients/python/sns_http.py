"""boto3 SNS scenarios: HTTP endpoints on a local test server — the signed
SubscriptionConfirmation round trip (ConfirmSubscription and the SubscribeURL), signed
notifications and raw deliveries with SNS's headers, retries with the DeliveryPolicy, and the
subscription dead-letter queue."""

import json
import queue as pyqueue
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _sns_common import check, eq, main, queue, receive, sns, test, topic, verify_signature

FAST_RETRIES = json.dumps({"healthyRetryPolicy": {"numRetries": 3, "minDelayTarget": 1, "maxDelayTarget": 1, "numNoDelayRetries": 0, "backoffFunction": "linear"}})


class Endpoint:
    """A local HTTP server recording requests; `fail` answers 500 that many times first."""

    def __init__(self, fail=0):
        self.requests = pyqueue.Queue()
        self.fail = fail
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                outer.requests.put((dict((k.lower(), v) for k, v in self.headers.items()), body))
                if outer.fail > 0:
                    outer.fail -= 1
                    self.send_response(500)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]

    def next(self, timeout=10):
        try:
            return self.requests.get(timeout=timeout)
        except pyqueue.Empty:
            raise AssertionError("no request reached the endpoint within %ss" % timeout)

    def close(self):
        self.server.shutdown()


def confirmed(t, ep, attrs=None, via_url=False):
    r = sns.subscribe(TopicArn=t, Protocol="http", Endpoint=ep.url, Attributes=attrs or {})
    eq(r["SubscriptionArn"], "pending confirmation", "Subscribe answer")
    pending = [s for s in sns.list_subscriptions_by_topic(TopicArn=t)["Subscriptions"] if s["Endpoint"] == ep.url]
    eq([s["SubscriptionArn"] for s in pending], ["PendingConfirmation"], "listed as pending")
    headers, body = ep.next()
    msg = json.loads(body)
    eq(headers.get("x-amz-sns-message-type"), "SubscriptionConfirmation", "message type header")
    eq(headers.get("x-amz-sns-topic-arn"), t, "topic header")
    eq((msg["Type"], msg["TopicArn"]), ("SubscriptionConfirmation", t), "confirmation fields")
    check(msg["SubscribeURL"].startswith("http://") and msg["Token"] in msg["SubscribeURL"], "SubscribeURL", msg["SubscribeURL"])
    verify_signature(msg)
    if via_url:
        xml = urllib.request.urlopen(msg["SubscribeURL"], timeout=10).read().decode()
        check("<SubscriptionArn>" in xml, "GET SubscribeURL confirms", xml)
        arn = xml.split("<SubscriptionArn>")[1].split("</SubscriptionArn>")[0]
    else:
        arn = sns.confirm_subscription(TopicArn=t, Token=msg["Token"])["SubscriptionArn"]
    check(arn.startswith(t + ":"), "confirmed ARN", arn)
    eq(sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]["PendingConfirmation"], "false", "confirmed")
    return arn


@test
def confirmation_and_signed_notifications():
    t = topic()
    ep = Endpoint()
    try:
        arn = confirmed(t, ep)
        mid = sns.publish(TopicArn=t, Message="to http", Subject="S", MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})["MessageId"]
        headers, body = ep.next()
        msg = json.loads(body)
        eq((headers.get("x-amz-sns-message-type"), headers.get("x-amz-sns-message-id"), headers.get("x-amz-sns-subscription-arn")), ("Notification", mid, arn), "headers")
        eq((msg["Type"], msg["MessageId"], msg["Message"], msg["Subject"]), ("Notification", mid, "to http", "S"), "envelope")
        eq(msg["MessageAttributes"], {"k": {"Type": "String", "Value": "v"}}, "attributes")
        verify_signature(msg)
        # The same token confirms once; again it answers the same ARN.
    finally:
        ep.close()


@test
def subscribe_url_and_raw_delivery():
    t = topic()
    ep = Endpoint()
    try:
        arn = confirmed(t, ep, {"RawMessageDelivery": "true"}, via_url=True)
        sns.publish(TopicArn=t, Message="raw to http")
        headers, body = ep.next()
        eq(body, "raw to http", "raw body")
        eq(headers.get("x-amz-sns-rawdelivery"), "true", "raw header")
        sns.unsubscribe(SubscriptionArn=arn)
        sns.publish(TopicArn=t, Message="after unsubscribe")
        time.sleep(1)
        check(ep.requests.empty(), "nothing after unsubscribe")
    finally:
        ep.close()


@test
def retries_until_the_endpoint_recovers():
    t = topic()
    ep = Endpoint()
    try:
        confirmed(t, ep, {"DeliveryPolicy": FAST_RETRIES})
        ep.fail = 2
        started = time.time()
        sns.publish(TopicArn=t, Message="retry me")
        bodies = [json.loads(ep.next()[1])["Message"] for _ in range(3)]
        eq(bodies, ["retry me"] * 3, "two failures, then success")
        check(time.time() - started >= 1.5, "retries wait for the backoff", time.time() - started)
        time.sleep(1.5)
        check(ep.requests.empty(), "no attempt after the success")
    finally:
        ep.close()


@test
def dead_letter_queue_after_retries():
    t = topic()
    ep = Endpoint()
    dlq_url, dlq_arn = queue("dlq")
    try:
        policy = json.dumps({"healthyRetryPolicy": {"numRetries": 1, "minDelayTarget": 0, "maxDelayTarget": 0}})
        confirmed(t, ep, {"DeliveryPolicy": policy, "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn}), "RawMessageDelivery": "true"})
        ep.fail = 10**6
        sns.publish(TopicArn=t, Message="undeliverable", MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
        ep.next()
        ep.next()
        (m,) = receive(dlq_url, wait=10)
        eq(m["Body"], "undeliverable", "dead-lettered body")
        eq(m["MessageAttributes"]["ErrorCode"]["StringValue"], "EndpointUnavailable", "ErrorCode")
        eq(m["MessageAttributes"]["k"]["StringValue"], "v", "original attributes kept")
    finally:
        ep.close()


if __name__ == "__main__":
    main()
