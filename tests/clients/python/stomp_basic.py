#!/usr/bin/env python3
"""stomp.py 1.0 / 1.1 / 1.2: connect, SEND/SUBSCRIBE/UNSUBSCRIBE, receipts,
content-length bodies with NUL bytes, header escaping, custom headers,
every destination kind, heart-beats, DISCONNECT with receipt."""

from _stomp_common import body, bodies, check, connect, dest_name, eq, main, test


def round_trip(ctx, version):
    c = connect(ctx, version)
    q = dest_name(ctx)
    c.subscribe(q, "s-" + version)
    payload = b"bin\x00ary\x00" + version.encode()
    headers = {"colour": "red", "shape": "a:b" if version != "1.0" else "ab"}
    if version != "1.0":
        headers["multi"] = "line1\nline2\\end"
    c.send(q, payload, headers=headers, content_type="application/octet-stream")
    (m,) = c.l.take(1, "round trip " + version)
    eq(body(m), payload, version + " binary body with NUL bytes")
    eq(m.headers.get("destination"), q, version + " destination header")
    eq(m.headers.get("subscription"), "s-" + version, version + " subscription header")
    eq(m.headers.get("content-type"), "application/octet-stream", version + " content-type")
    eq(m.headers.get("colour"), "red", version + " custom header")
    eq(m.headers.get("shape"), headers["shape"], version + " header with a colon (escaped as \\c in 1.1+)")
    if version != "1.0":
        eq(m.headers.get("multi"), "line1\nline2\\end", version + " escaped newline and backslash")
    check(m.headers.get("message-id"), version + " message-id header present", "a message-id", m.headers)
    eq(m.headers.get("redelivered"), "false", version + " redelivered header")
    c.unsubscribe("s-" + version)


@test
def round_trip_1_0(ctx):
    round_trip(ctx, "1.0")


@test
def round_trip_1_1(ctx):
    round_trip(ctx, "1.1")


@test
def round_trip_1_2(ctx):
    round_trip(ctx, "1.2")


@test
def topic_fans_out_to_every_subscriber(ctx):
    key = dest_name(ctx, "topic", "t")
    subs = [connect(ctx) for _ in range(3)]
    for i, s in enumerate(subs):
        s.subscribe(key, "t%d" % i)
    p = connect(ctx)
    p.send(key, b"to everyone")
    for i, s in enumerate(subs):
        eq(bodies(s.l.take(1, "fan-out %d" % i)), [b"to everyone"], "subscriber %d" % i)


@test
def exchange_and_amq_queue_destinations(ctx):
    c = connect(ctx)
    q = dest_name(ctx)
    name = q[len("/queue/"):]
    # Declared by /queue/, then used by its plain AMQP name through /amq/queue/.
    c.subscribe(q, "declare")
    c.unsubscribe("declare")
    c.subscribe("/amq/queue/" + name, "amq")
    c.send("/exchange/amq.direct/" + name, b"no binding yet")  # amq.direct has no binding: dropped
    c.send("/queue/" + name, b"via default exchange")
    c.send("/amq/queue/" + name, b"via amq queue")
    eq(bodies(c.l.take(2, "amq/queue deliveries")), [b"via default exchange", b"via amq queue"], "deliveries")
    # /exchange/<x>/<pattern> subscription binds a private queue.
    c.subscribe("/exchange/amq.direct/" + name, "ex")
    c.send("/exchange/amq.direct/" + name, b"routed by amq.direct")
    (m,) = c.l.take(1, "exchange subscription")
    eq(body(m), b"routed by amq.direct", "exchange subscription body")
    eq(m.headers.get("destination"), "/exchange/amq.direct/" + name, "destination names exchange and key")


@test
def heart_beats_flow_both_ways(ctx):
    c = connect(ctx, "1.2", heartbeats=(1000, 1000))
    c.l.wait(lambda: c.l.heartbeats >= 2, "two heart-beats from the broker", timeout=6)
    check(c.is_open and not c.l.disconnected, "connection kept alive by client heart-beats")
    q = dest_name(ctx)
    c.subscribe(q, "hb")
    c.send(q, b"after heart-beats")
    eq(bodies(c.l.take(1, "message after heart-beats")), [b"after heart-beats"], "still usable")


@test
def disconnect_with_receipt(ctx):
    c = connect(ctx)
    c.conn.disconnect(receipt="bye-1")
    c.l.wait(lambda: "bye-1" in c.l.receipts or c.l.disconnected, "DISCONNECT receipt or close")
    check("bye-1" in c.l.receipts, "DISCONNECT receipt arrives before close", "bye-1 in receipts", c.l.receipts)


if __name__ == "__main__":
    main(default_timeout=30)
