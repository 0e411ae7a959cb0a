#!/usr/bin/env python3
"""Cross-protocol: AMQP (pika) -> STOMP (stomp.py) and back through the same
queue and topic, checking the property mapping of docs/stomp.md."""

import pika

from _common import consume_n
from _stomp_common import body, connect, dest_name, eq, main, test


@test
def amqp_publish_stomp_consume(ctx):
    q = dest_name(ctx)
    name = q[len("/queue/"):]
    s = connect(ctx)
    s.subscribe(q, "from-amqp")  # declares the queue durable, as RabbitMQ's /queue/ does
    conn, ch = ctx.channel()
    ctx.track_queue(name)
    ch.confirm_delivery()
    props = pika.BasicProperties(
        content_type="text/plain",
        content_encoding="utf-8",
        delivery_mode=2,
        priority=5,
        correlation_id="corr-1",
        reply_to="replies",
        expiration="60000",
        message_id="msg-1",
        timestamp=1700000000,
        type="order.created",
        app_id="billing",
        headers={"colour": "red", "count": 7, "flag": True},
    )
    ch.basic_publish("", name, b"hello from amqp", props)
    (m,) = s.l.take(1, "AMQP -> STOMP")
    h = m.headers
    eq(body(m), b"hello from amqp", "body")
    expected = {
        "destination": q,
        "content-type": "text/plain",
        "content-encoding": "utf-8",
        "persistent": "true",
        "priority": "5",
        "correlation-id": "corr-1",
        "reply-to": "replies",
        "expiration": "60000",
        "amqp-message-id": "msg-1",
        "timestamp": "1700000000",
        "type": "order.created",
        "app-id": "billing",
        "colour": "red",
        "count": "7",
        "flag": "true",
    }
    eq({k: h.get(k) for k in expected}, expected, "STOMP headers from AMQP properties")


@test
def stomp_send_amqp_consume(ctx):
    q = dest_name(ctx)
    name = q[len("/queue/"):]
    s = connect(ctx)
    s.subscribe(q, "declare")
    s.unsubscribe("declare")
    ctx.track_queue(name)
    s.send(q, b"hello from stomp", headers={
        "content-type": "application/json",
        "persistent": "true",
        "priority": "4",
        "correlation-id": "corr-2",
        "reply-to": "/queue/answers",
        "amqp-message-id": "m-2",
        "type": "t",
        "app-id": "shop",
        "x-custom": "custom value",
    })
    conn, ch = ctx.channel()
    ((method, props, data),) = consume_n(conn, ch, name, 1, "STOMP -> AMQP")
    eq(data, b"hello from stomp", "body")
    got = {
        "content_type": props.content_type,
        "delivery_mode": props.delivery_mode,
        "priority": props.priority,
        "correlation_id": props.correlation_id,
        "reply_to": props.reply_to,
        "message_id": props.message_id,
        "type": props.type,
        "app_id": props.app_id,
    }
    eq(got, {
        "content_type": "application/json",
        "delivery_mode": 2,
        "priority": 4,
        "correlation_id": "corr-2",
        "reply_to": "/queue/answers",
        "message_id": "m-2",
        "type": "t",
        "app_id": "shop",
    }, "AMQP properties from STOMP headers")
    eq((props.headers or {}).get("x-custom"), "custom value", "custom header as a long string")
    eq(method.exchange, "", "published via the default exchange")
    eq(method.routing_key, name, "routing key is the queue name")


@test
def stomp_topic_to_amqp_binding(ctx):
    conn, ch = ctx.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "sy.interop.*")
    s = connect(ctx)
    s.send("/topic/sy.interop.news", b"topic message")
    ((method, _, data),) = consume_n(conn, ch, q, 1, "STOMP topic -> AMQP")
    eq((method.exchange, method.routing_key, data), ("amq.topic", "sy.interop.news", b"topic message"), "routed by amq.topic")
    # ... and an AMQP publish to amq.topic reaches a STOMP /topic/ subscriber.
    s.subscribe("/topic/sy.interop.#", "t")
    ch.basic_publish("amq.topic", "sy.interop.sports", b"from amqp")
    (m,) = s.l.take(1, "AMQP -> STOMP topic")
    eq((body(m), m.headers.get("destination")), (b"from amqp", "/topic/sy.interop.sports"), "topic delivery")


if __name__ == "__main__":
    main(default_timeout=40)
