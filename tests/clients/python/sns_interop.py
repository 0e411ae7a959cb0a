"""Cross-protocol SNS scenarios: an AMQP (pika) or STOMP (stomp.py) publish to the topic's
exchange reaches SQS subscribers through the filter policies, enveloped or raw; an SNS publish reaches an MQTT
(paho) subscriber of `<topic>` / `<topic>/#` through amq.topic."""

import json
import os
import queue as pyqueue
import uuid

import paho.mqtt.client as mqtt
import pika
from paho.mqtt.enums import CallbackAPIVersion

from _sns_common import check, eq, main, receive, sns, subscribe_queue, test, topic, verify_signature

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


@test
def amqp_publish_reaches_sqs_subscribers_with_the_envelope():
    t = topic()
    name = t.split(":")[-1]
    env_url, sub = subscribe_queue(t, policy={"n": [{"numeric": [">", 3]}]})
    raw_url, _ = subscribe_queue(t, raw=True, policy={"color": ["red"]})
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    ch.confirm_delivery()
    props = pika.BasicProperties(headers={"color": "red", "n": 5}, delivery_mode=2)
    ch.basic_publish(exchange=name, routing_key="whatever", body=b"from amqp", properties=props)
    ch.basic_publish(exchange=name, routing_key="whatever", body=b"small", properties=pika.BasicProperties(headers={"n": 1}))
    conn.close()
    (m,) = receive(env_url, want=2, wait=3)
    env = json.loads(m["Body"])
    eq((env["Type"], env["TopicArn"], env["Message"]), ("Notification", t, "from amqp"), "envelope of an AMQP publish")
    eq(env["MessageAttributes"], {"color": {"Type": "String", "Value": "red"}, "n": {"Type": "Number", "Value": "5"}}, "AMQP headers as attributes")
    check(env["UnsubscribeURL"].endswith(sub), "UnsubscribeURL")
    verify_signature(env)
    (r,) = receive(raw_url, want=2, wait=2)
    eq(r["Body"], "from amqp", "raw copy")
    eq(r["MessageAttributes"]["color"], {"DataType": "String", "StringValue": "red"}, "raw attribute")


@test
def stomp_publish_reaches_sqs_subscribers():
    import stomp

    t = topic()
    name = t.split(":")[-1]
    url, _ = subscribe_queue(t, policy={"color": ["red"]})
    conn = stomp.Connection([(os.environ.get("STOMP_HOST", "127.0.0.1"), int(os.environ.get("STOMP_PORT", "61613")))])
    conn.connect("guest", "guest", wait=True)
    conn.send(destination="/exchange/%s/any" % name, body="from stomp", headers={"color": "red"})
    conn.send(destination="/exchange/%s/any" % name, body="filtered out", headers={"color": "blue"})
    conn.disconnect()
    (m,) = receive(url, want=2, wait=3)
    env = json.loads(m["Body"])
    eq((env["TopicArn"], env["Message"], env["MessageAttributes"]["color"]["Value"]), (t, "from stomp", "red"), "STOMP publish enveloped")
    verify_signature(env)


@test
def amqp_can_declare_and_bind_a_filter_policy_exchange():
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    ch = conn.channel()
    x = "x-%s" % uuid.uuid4().hex[:8]
    ch.exchange_declare(exchange=x, exchange_type="x-sns")
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(queue=q, exchange=x, routing_key="", arguments={"x-filter-policy": '{"k": [{"prefix": "a"}]}'})
    for v in ["abc", "xyz"]:
        ch.basic_publish(exchange=x, routing_key="", body=v.encode(), properties=pika.BasicProperties(headers={"k": v}))
    got = []
    for _ in range(2):
        method, _, body = ch.basic_get(q, auto_ack=True)
        if method:
            got.append(body.decode())
    eq(got, ["abc"], "only the matching message, unchanged (a plain AMQP binding is not an SNS subscription)")
    try:
        ch.queue_bind(queue=q, exchange=x, routing_key="", arguments={"x-filter-policy": '{"k": []}'})
        raise AssertionError("a bad policy was accepted")
    except pika.exceptions.ChannelClosedByBroker as e:
        eq(e.reply_code, 406, "PRECONDITION_FAILED")
        check("Empty arrays are not allowed" in e.reply_text, "reason", e.reply_text)
    conn.close()


@test
def sns_publish_reaches_mqtt_subscribers():
    t = topic()
    name = t.split(":")[-1]
    got = pyqueue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sns-" + uuid.uuid4().hex[:8], protocol=mqtt.MQTTv311)
    c.on_message = lambda _c, _u, msg: got.put((msg.topic, msg.payload.decode()))
    subscribed = pyqueue.Queue()
    c.on_subscribe = lambda *a: subscribed.put(True)
    c.connect(os.environ.get("MQTT_HOST", "127.0.0.1"), int(os.environ.get("MQTT_PORT", "1883")))
    c.loop_start()
    try:
        c.subscribe([(name, 1), (name + "/#", 1)])
        subscribed.get(timeout=5)
        sns.publish(TopicArn=t, Message="to mqtt", Subject="s")
        topic_name, payload = got.get(timeout=5)
        eq((topic_name, payload), (name, "to mqtt"), "MQTT delivery (the raw message)")
    finally:
        c.loop_stop()
        c.disconnect()


if __name__ == "__main__":
    main()
