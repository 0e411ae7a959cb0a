#!/usr/bin/env python3
"""Cross-protocol: STOMP /topic/<a.b> and MQTT topic a/b are the same amq.topic
routing key, so a STOMP SEND reaches an MQTT subscriber and an MQTT PUBLISH reaches
a STOMP subscriber, with the body and content type preserved."""

import os
import queue
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from _stomp_common import body, connect, eq, main, test

MQTT_HOST = os.environ.get("MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("MQTT_PORT", "1883"))
WAIT = float(os.environ.get("SCENARIO_WAIT", "5"))


def mqtt_client(got):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="interop-" + uuid.uuid4().hex[:8], protocol=mqtt.MQTTv5)
    c.username_pw_set("guest", "guest")
    c.on_message = lambda _c, _u, m: got.put(m)
    subscribed = queue.Queue()
    c.on_subscribe = lambda *a: subscribed.put(True)
    c.connect(MQTT_HOST, MQTT_PORT)
    c.loop_start()
    return c, subscribed


@test
def stomp_send_reaches_mqtt_subscriber(ctx):
    word = "w" + uuid.uuid4().hex[:8]
    got = queue.Queue()
    m, subscribed = mqtt_client(got)
    try:
        m.subscribe("interop/%s/+" % word, qos=1)
        subscribed.get(timeout=WAIT)
        s = connect(ctx)
        s.send("/topic/interop.%s.news" % word, b"from stomp", headers={"content-type": "text/plain"})
        msg = got.get(timeout=WAIT)
        eq(msg.topic, "interop/%s/news" % word, "MQTT topic of a STOMP /topic/ SEND")
        eq(msg.payload, b"from stomp", "payload")
        eq(getattr(msg.properties, "ContentType", None), "text/plain", "content type")
    finally:
        m.loop_stop()
        m.disconnect()


@test
def mqtt_publish_reaches_stomp_subscriber(ctx):
    word = "w" + uuid.uuid4().hex[:8]
    s = connect(ctx)
    s.subscribe("/topic/interop.%s.#" % word, "sub-" + word)
    got = queue.Queue()
    m, _ = mqtt_client(got)
    try:
        props = mqtt.Properties(mqtt.PacketTypes.PUBLISH)
        props.ContentType = "application/json"
        m.publish("interop/%s/deep/er" % word, b'{"k":1}', qos=1, properties=props).wait_for_publish(WAIT)
        (frame,) = s.l.take(1, "MQTT -> STOMP")
        eq(body(frame), b'{"k":1}', "body")
        eq(frame.headers.get("destination"), "/topic/interop.%s.deep.er" % word, "destination")
        eq(frame.headers.get("content-type"), "application/json", "content-type")
    finally:
        m.loop_stop()
        m.disconnect()


if __name__ == "__main__":
    main()
