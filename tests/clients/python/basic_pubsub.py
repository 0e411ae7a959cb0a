#!/usr/bin/env python3
"""Default-exchange publish/consume and a full basic.properties round trip."""

import datetime
import decimal
import os

from _common import (USER, Collector, consume_n, eq, main, pika, test, wait_for)


HEADERS = {
    "str": "hello",
    "unicode": "h\u00e9llo \u2603 \U0001F600",
    "empty-str": "",
    "int": 42,
    "negative": -7,
    "int32-max": 2**31 - 1,
    "int32-min": -(2**31),
    "bigint": 2**40 + 3,
    "bigint-neg": -(2**62),
    "true": True,
    "false": False,
    "nested": {"a": 1, "b": {"c": "deep", "d": [1, "two", False]}, "empty": {}},
    "list": [1, "two", True, {"k": "v"}, [3, 4], None, b"\x00\x01"],
    "empty-list": [],
    "bytes": b"\x00\xffbinary\x80",
    "decimal": decimal.Decimal("3.14"),
    "decimal-int": decimal.Decimal("12"),
    "datetime": datetime.datetime(2024, 2, 29, 12, 34, 56, tzinfo=datetime.timezone.utc),
    "none": None,
}


def full_props():
    return pika.BasicProperties(
        content_type="application/json",
        content_encoding="gzip",
        headers=dict(HEADERS),
        delivery_mode=2,
        priority=5,
        correlation_id="corr-123",
        reply_to="reply.queue",
        expiration="60000",
        message_id="msg-\u00e9-1",
        timestamp=1700000000,
        type="order.created",
        user_id=USER,
        app_id="switchyard-tests",
    )


PROP_NAMES = ["content_type", "content_encoding", "headers", "delivery_mode", "priority", "correlation_id",
              "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"]


def kind(v):
    """Python-level type category (pika decodes 'l' as a long subclass of int)."""
    for t in (bool, int, str, bytes, dict, list, decimal.Decimal, datetime.datetime):
        if isinstance(v, t):
            return t.__name__
    return type(v).__name__


def check_props(got, want, what):
    for name in PROP_NAMES:
        g, w = getattr(got, name), getattr(want, name)
        if name == "headers" and isinstance(g, dict) and isinstance(w, dict):
            for k in sorted(set(g) | set(w)):
                eq(g.get(k, "<missing>"), w.get(k, "<missing>"), "%s: header %r" % (what, k))
            # also the python types (int vs bool vs Decimal...)
            for k in w:
                eq(kind(g.get(k)), kind(w[k]), "%s: type of header %r" % (what, k))
        eq(g, w, "%s: property %s" % (what, name))


@test
def properties_round_trip_consume(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ok = ch.queue_declare(q)
    eq(ok.method.queue, q, "declare-ok queue name")
    want = full_props()
    ch.basic_publish("", q, b"payload", want)
    [(m, p, b)] = consume_n(conn, ch, q, 1, "full props")
    eq(b, b"payload", "body")
    eq(m.exchange, "", "deliver.exchange")
    eq(m.routing_key, q, "deliver.routing_key")
    eq(m.redelivered, False, "deliver.redelivered")
    eq(m.delivery_tag, 1, "first delivery tag on a fresh channel")
    check_props(p, want, "consumed message")


@test
def properties_round_trip_get(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    want = full_props()
    ch.basic_publish("", q, b"via-get", want)
    ch.basic_publish("", q, b"second", pika.BasicProperties())
    wait_for(conn, lambda: ch.queue_declare(q, passive=True).method.message_count == 2, "2 messages ready")
    m, p, b = ch.basic_get(q, auto_ack=True)
    eq(b, b"via-get", "body")
    eq(m.message_count, 1, "get-ok message_count (messages left)")
    eq(m.exchange, "", "get-ok exchange")
    eq(m.routing_key, q, "get-ok routing_key")
    eq(m.redelivered, False, "get-ok redelivered")
    check_props(p, want, "got message")
    m, p, b = ch.basic_get(q, auto_ack=True)
    eq(m.message_count, 0, "get-ok message_count of last message")
    check_props(p, pika.BasicProperties(), "message without properties (broker must add nothing)")
    m, p, b = ch.basic_get(q, auto_ack=True)
    eq(m, None, "basic.get on empty queue -> get-empty")


@test
def no_properties_stay_absent(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"x")
    [(m, p, b)] = consume_n(conn, ch, q, 1, "bare message")
    check_props(p, pika.BasicProperties(), "bare message")


@test
def empty_headers_table(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"x", pika.BasicProperties(headers={}))
    [(m, p, b)] = consume_n(conn, ch, q, 1, "empty headers")
    eq(p.headers, {}, "empty headers table is kept (present but empty)")


@test
def empty_body(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"", pika.BasicProperties(content_type="text/plain"))
    [(m, p, b)] = consume_n(conn, ch, q, 1, "empty body")
    eq(b, b"", "empty body via consume")
    eq(p.content_type, "text/plain", "content_type with empty body")
    ch.basic_publish("", q, b"")
    wait_for(conn, lambda: ch.queue_declare(q, passive=True).method.message_count == 1, "empty message ready")
    m, p, b = ch.basic_get(q, auto_ack=True)
    eq(b, b"", "empty body via get")


@test
def big_bodies(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    frame_max = conn._impl.params.frame_max
    # sizes around the body-frame boundary (frame_max - 8 bytes of frame overhead) and 1 MiB
    sizes = [frame_max - 9, frame_max - 8, frame_max - 7, 2 * (frame_max - 8), 1024 * 1024, 1024 * 1024 + 1]
    bodies = [os.urandom(n) for n in sizes]
    for b in bodies:
        ch.basic_publish("", q, b)
    msgs = consume_n(conn, ch, q, len(bodies), "big bodies", timeout=10)
    for i, (m, p, b) in enumerate(msgs):
        eq(len(b), sizes[i], "body %d length" % i)
        eq(b == bodies[i], True, "body %d (%d bytes) identical" % (i, sizes[i]))


@test
def default_exchange_unknown_queue_is_dropped(ctx):
    conn, ch = ctx.channel()
    ch.basic_publish("", ctx.name("nobody"), b"lost")
    # channel must still be fine
    q = ctx.qname()
    ok = ch.queue_declare(q)
    eq(ok.method.message_count, 0, "fresh queue message_count")


@test
def delivery_tags_shared_by_get_and_consume(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    wait_for(conn, lambda: ch.queue_declare(q, passive=True).method.message_count == 3, "3 ready")
    m, _, _ = ch.basic_get(q, auto_ack=False)
    eq(m.delivery_tag, 1, "get delivery tag")
    msgs = consume_n(conn, ch, q, 2, "rest", auto_ack=False)
    eq([x[0].delivery_tag for x in msgs], [2, 3], "consume delivery tags continue the channel's sequence")
    eq([x[2] for x in msgs], [b"1", b"2"], "FIFO order")
    ch.basic_ack(3, multiple=True)
    eq(ch.queue_declare(q, passive=True).method.message_count, 0, "all acked")


@test
def fifo_order_many(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    n = 500
    for i in range(n):
        ch.basic_publish("", q, b"%d" % i)
    col = Collector()
    ch.basic_consume(q, col, auto_ack=True)
    wait_for(conn, lambda: len(col) == n, "%d messages" % n)
    eq(col.bodies, [b"%d" % i for i in range(n)], "messages in publish order")


@test
def consume_from_other_connection(ctx):
    c1, ch1 = ctx.channel()
    c2, ch2 = ctx.channel()
    q = ctx.qname()
    ch1.queue_declare(q)
    col = Collector()
    tag = ch2.basic_consume(q, col, auto_ack=True)
    eq(tag.startswith("ctag"), True, "pika generated consumer tag")
    ch1.basic_publish("", q, b"cross", pika.BasicProperties(headers={"n": 1}))
    wait_for(c2, lambda: len(col) == 1, "delivery on second connection")
    eq(col.msgs[0][0].consumer_tag, tag, "deliver.consumer_tag")
    eq(col.msgs[0][1].headers, {"n": 1}, "headers")


if __name__ == "__main__":
    main()
