#!/usr/bin/env python3
"""SQS and MQTT on one queue: an SQS queue bound (over AMQP) to `amq.topic` receives what a
paho MQTT 5 client publishes, with its user properties as SQS message attributes; and an
SQS message's attributes reach an MQTT 5 subscriber as user properties when the message is
relayed by an AMQP app (docs/conversion.md)."""

import os
import queue as stdq
import uuid

import paho.mqtt.client as mqtt
import pika
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from _sqs_common import check, client, eq, main, name, test

sqs = client()
HOST = os.environ.get("MQTT_HOST", "127.0.0.1")
PORT = int(os.environ.get("MQTT_PORT", "1883"))


def mqtt_client():
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sqs-%s" % uuid.uuid4().hex[:8], protocol=mqtt.MQTTv5)
    c.connect(HOST, PORT)
    c.loop_start()
    return c


@test
def mqtt5_publish_reaches_an_sqs_receiver_with_user_properties_as_attributes():
    n = name("mqtt2sqs")
    url = sqs.create_queue(QueueName=n)["QueueUrl"]
    topic = "sensors/%s/temp" % uuid.uuid4().hex[:8]
    conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
    conn.channel().queue_bind(queue=n, exchange="amq.topic", routing_key=topic.replace("/", "."))
    conn.close()
    c = mqtt_client()
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("site", "north"), ("unit", "celsius")]
    c.publish(topic, b"21.5", qos=1, properties=props).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()
    r = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, MessageAttributeNames=["All"])
    msgs = r.get("Messages", [])
    eq(len(msgs), 1, "one message from MQTT")
    m = msgs[0]
    eq(m["Body"], "21.5", "body")
    attrs = {k: v.get("StringValue") for k, v in m.get("MessageAttributes", {}).items()}
    eq(attrs.get("site"), "north", "user property site")
    eq(attrs.get("unit"), "celsius", "user property unit")
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    sqs.delete_queue(QueueUrl=url)


@test
def sqs_send_reaches_an_mqtt5_subscriber_with_attributes_as_user_properties():
    # SQS sends only to queues and MQTT subscribers read topics, so an AMQP app relays the
    # message unchanged (pika basic_get → publish to amq.topic): the SQS attribute travels as
    # an AMQP header and arrives as an MQTT 5 user property.
    n = name("sqs2mqtt")
    url = sqs.create_queue(QueueName=n)["QueueUrl"]
    topic = "alerts/%s" % uuid.uuid4().hex[:8]
    got = stdq.Queue()
    c = mqtt_client()
    c.on_message = lambda _c, _u, msg: got.put(msg)
    subscribed = stdq.Queue()
    c.on_subscribe = lambda *a: subscribed.put(True)
    c.subscribe(topic, qos=1)
    subscribed.get(timeout=5)
    sqs.send_message(
        QueueUrl=url,
        MessageBody="door open",
        MessageAttributes={"zone": {"DataType": "String", "StringValue": "b2"}},
    )
    conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
    ch = conn.channel()
    method, props, body = ch.basic_get(queue=n, auto_ack=True)
    check(method is not None, "the SQS message is in the AMQP queue")
    ch.basic_publish("amq.topic", topic.replace("/", "."), body, props)
    conn.close()
    msg = got.get(timeout=5)
    c.loop_stop()
    c.disconnect()
    eq(msg.payload, b"door open", "payload")
    user = dict(getattr(msg.properties, "UserProperty", []) or [])
    eq(user.get("zone"), "b2", "SQS attribute → AMQP header → MQTT 5 user property")
    sqs.delete_queue(QueueUrl=url)


if __name__ == "__main__":
    main()
