"""paho-mqtt (MQTT 3.1, 3.1.1 and 5.0) against the broker: QoS flows, wildcards, retained
messages, persistent sessions, wills, MQTT 5 properties, shared subscriptions, and the
AMQP side of the same messages (pika)."""

import os
import socket
import struct

from _mqtt_common import V5, V31, V311, Client, check, eq, run, test, uniq

from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402


@test
def qos_levels_and_wildcards_every_version():
    for proto in (V31, V311, V5):
        base = uniq("q")
        sub = Client(proto).connect()
        eq(sub.subscribe(base + "/+/x", 2), [2], "granted QoS")
        eq(sub.subscribe(base + "/all/#", 1), [1], "granted QoS")
        pub = Client(proto).connect()
        pub.publish(base + "/a/x", b"q0", 0)
        pub.publish(base + "/b/x", b"q1", 1)
        pub.publish(base + "/c/x", b"q2", 2)
        pub.publish(base + "/all", b"parent", 2)
        pub.publish(base + "/a/y", b"nomatch", 1)
        got = [sub.message() for _ in range(4)]
        # MQTT orders messages per topic, not across topics (a QoS 2 publish is routed on
        # PUBREL), so compare as a set.
        eq(sorted((m.topic, m.qos, m.payload) for m in got),
           sorted([(base + "/a/x", 0, b"q0"), (base + "/b/x", 1, b"q1"), (base + "/c/x", 2, b"q2"),
                   (base + "/all", 1, b"parent")]), "deliveries (%s)" % proto)
        sub.no_message()
        sub.disconnect()
        pub.disconnect()


@test
def retained_messages_set_replace_and_clear():
    t = uniq("r")
    pub = Client().connect()
    pub.publish(t + "/a", b"one", 1, retain=True)
    pub.publish(t + "/a", b"two", 1, retain=True)
    pub.publish(t + "/b", b"bee", 0, retain=True)
    sub = Client().connect()
    sub.subscribe(t + "/+", 1)
    got = sorted((m.topic, m.payload, m.retain) for m in (sub.message(), sub.message()))
    eq(got, [(t + "/a", b"two", True), (t + "/b", b"bee", True)], "retained on subscribe")
    # A live delivery of a retained publish has retain=0 for an existing subscription.
    pub.publish(t + "/a", b"three", 1, retain=True)
    m = sub.message()
    eq((m.payload, m.retain), (b"three", False), "live delivery")
    pub.publish(t + "/a", b"", 1, retain=True)
    eq(sub.message().payload, b"", "the clearing publish is delivered")
    later = Client().connect()
    later.subscribe(t + "/a", 1)
    later.no_message()


@test
def persistent_session_keeps_qos1_messages_while_offline():
    for proto in (V311, V5):
        cid = uniq("persist")
        t = uniq("t")
        s = Client(proto, client_id=cid, clean=(proto == V5), session_expiry=300).connect()
        check(not s.session_present(), "fresh session")
        s.subscribe(t, 1)
        s.disconnect()
        pub = Client(proto).connect()
        for i in range(3):
            pub.publish(t, b"m%d" % i, 1)
        s = Client(proto, client_id=cid, clean=False, session_expiry=300).connect()
        check(s.session_present(), "session present (%s)" % proto)
        eq([s.message().payload for _ in range(3)], [b"m0", b"m1", b"m2"], "queued while offline")
        s.disconnect()
        s = Client(proto, client_id=cid, clean=True).connect()
        check(not s.session_present(), "clean start discards the session")
        s.disconnect()


@test
def will_message_on_abnormal_disconnect_only():
    t = uniq("will")
    watcher = Client(V5).connect()
    watcher.subscribe(t + "/#", 1)
    good = Client(V311, will={"topic": t + "/good", "payload": b"bye", "qos": 1}).connect()
    good.disconnect()
    bad = Client(V311, will={"topic": t + "/bad", "payload": b"lost", "qos": 1}).connect()
    bad.kill()
    m = watcher.message()
    eq((m.topic, m.payload), (t + "/bad", b"lost"), "will of the dropped client only")


@test
def session_takeover():
    cid = uniq("take")
    first = Client(V5, client_id=cid).connect()
    second = Client(V5, client_id=cid).connect()
    ev = first.event("disconnect")
    rc = ev[1]
    eq(rc.value if hasattr(rc, "value") else rc, 0x8E, "first connection taken over")
    second.subscribe(uniq("x"), 1)
    second.disconnect()


@test
def mqtt5_properties_round_trip_and_request_response():
    t = uniq("p")
    responder = Client(V5).connect()
    responder.subscribe(t + "/req", 1)
    requester = Client(V5).connect()
    reply_topic = t + "/reply/" + requester.client_id
    requester.subscribe(reply_topic, 1)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = reply_topic
    props.CorrelationData = b"\x00\x01corr"
    props.ContentType = "application/json"
    props.MessageExpiryInterval = 60
    props.PayloadFormatIndicator = 1
    props.UserProperty = [("a", "1"), ("b", "2"), ("a", "3")]
    requester.publish(t + "/req", b'{"q":1}', 1, properties=props)
    req = responder.message()
    rp = req.properties
    eq(rp.ResponseTopic, reply_topic, "response topic")
    eq(rp.CorrelationData, b"\x00\x01corr", "correlation data")
    eq(rp.ContentType, "application/json", "content type")
    eq(rp.PayloadFormatIndicator, 1, "payload format indicator")
    check(0 < rp.MessageExpiryInterval <= 60, "remaining expiry", "1..60", rp.MessageExpiryInterval)
    eq(rp.UserProperty, [("a", "1"), ("b", "2"), ("a", "3")], "user properties in order")
    reply = Properties(PacketTypes.PUBLISH)
    reply.CorrelationData = rp.CorrelationData
    responder.publish(rp.ResponseTopic, b"answer", 1, properties=reply)
    m = requester.message()
    eq((m.payload, m.properties.CorrelationData), (b"answer", b"\x00\x01corr"), "reply")


@test
def mqtt5_subscription_options():
    t = uniq("o")
    me = Client(V5).connect()
    sub_props = Properties(PacketTypes.SUBSCRIBE)
    sub_props.SubscriptionIdentifier = 42
    me.subscribe(t + "/#", 1, no_local=True, properties=sub_props)
    me.publish(t + "/mine", b"self", 1)
    other = Client(V5).connect()
    other.publish(t + "/theirs", b"other", 1, retain=True)
    m = me.message()
    eq((m.topic, m.payload), (t + "/theirs", b"other"), "no-local skips my own message")
    eq(m.properties.SubscriptionIdentifier, [42], "subscription identifier")
    # Retain handling 2: no retained message on subscribe; 0: sent, with retain-as-published.
    me2 = Client(V5).connect()
    me2.subscribe(t + "/theirs", 1, retain_handling=2)
    me2.no_message()
    me3 = Client(V5).connect()
    me3.subscribe(t + "/theirs", 1, rap=True)
    eq(me3.message().retain, True, "retained on subscribe")
    other.publish(t + "/theirs", b"live", 1, retain=True)
    eq(me3.message().retain, True, "retain as published")
    other.publish(t + "/theirs", b"", 1, retain=True)


@test
def shared_subscription_spreads_messages():
    t = uniq("sh")
    g = uniq("g")
    a = Client(V5).connect()
    b = Client(V5).connect()
    a.subscribe("$share/%s/%s/+" % (g, t), 1)
    b.subscribe("$share/%s/%s/+" % (g, t), 1)
    pub = Client(V5).connect()
    for i in range(10):
        pub.publish("%s/x" % t, b"%d" % i, 1)
    got = []
    for c in (a, b):
        while True:
            try:
                got.append(c.message(timeout=1).payload)
            except Exception:  # noqa: BLE001
                break
    eq(sorted(got), sorted(b"%d" % i for i in range(10)), "every message once across the group")


@test
def no_subscriber_and_bad_topic_reason_codes():
    c = Client(V5).connect()
    info = c.c.publish(uniq("nobody"), b"x", qos=1)
    info.wait_for_publish(timeout=5)
    # paho reports the PUBACK reason through on_publish; 0x10 is still "published".
    check(info.is_published(), "PUBACK for an unrouted message")
    # A wildcard in a PUBLISH topic: paho refuses it client-side, so send raw bytes.
    s = socket.create_connection((os.environ.get("MQTT_HOST", "127.0.0.1"), int(os.environ.get("MQTT_PORT", "1883"))))
    s.settimeout(5)
    cid = uniq("raw").encode()
    body = b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + struct.pack(">H", len(cid)) + cid
    s.sendall(b"\x10" + bytes([len(body)]) + body)
    head = s.recv(2)
    eq(head[:1], b"\x20", "CONNACK")
    left = head[1]
    while left:
        left -= len(s.recv(left))
    s.sendall(b"\x30\x06\x00\x03a/+\x00")
    data = b""
    while True:
        chunk = s.recv(64)
        if not chunk:
            break
        data += chunk
    eq(data[:1], b"\xe0", "DISCONNECT")
    eq(data[2:3], b"\x90", "reason 0x90 Topic Name invalid")
    c.subscribe(uniq("still-alive"), 1)


@test
def amqp_and_mqtt_exchange_messages():
    import pika
    params = pika.URLParameters(os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    t = uniq("x")
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", routing_key=t + ".from-mqtt")
    sub = Client(V5).connect()
    sub.subscribe(t + "/from-amqp", 1)
    # AMQP -> MQTT: routing key a.b reaches topic a/b, content type and headers come along.
    ch.basic_publish("amq.topic", t + ".from-amqp", b"hello mqtt",
                     pika.BasicProperties(content_type="text/plain", delivery_mode=2,
                                          headers={"h": "v", "n": 5}, correlation_id="c-1"))
    m = sub.message()
    eq((m.topic, m.payload, m.qos), (t + "/from-amqp", b"hello mqtt", 1), "AMQP message over MQTT")
    eq(m.properties.ContentType, "text/plain", "content type")
    eq(sorted(m.properties.UserProperty), [("h", "v"), ("n", "5")], "headers as user properties")
    eq(m.properties.CorrelationData, b"c-1", "correlation id")
    # MQTT -> AMQP.
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/octet-stream"
    props.UserProperty = [("k", "v")]
    sub.publish(t + "/from-mqtt", b"hello amqp", 1, properties=props)
    for _ in range(50):
        method, hdr, body = ch.basic_get(q, auto_ack=True)
        if method:
            break
        conn.sleep(0.05)
    check(method is not None, "message on the AMQP queue")
    eq((method.routing_key, body), (t + ".from-mqtt", b"hello amqp"), "routing key and body")
    eq(hdr.content_type, "application/octet-stream", "content type")
    eq(hdr.delivery_mode, 2, "QoS 1 is persistent")
    eq(hdr.headers.get("k"), "v", "user property as header")
    eq(hdr.headers.get("x-mqtt-publish-qos"), 1, "publish QoS header")
    conn.close()


if __name__ == "__main__":
    run()
