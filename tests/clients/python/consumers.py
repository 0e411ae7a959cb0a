#!/usr/bin/env python3
"""Consumers: round-robin, cancel notifications, exclusivity, tags, priorities, many channels."""

from _common import (VHOST, Collector, drain_bodies, eq, expect_channel_close, expect_connection_close, main, test,
                     wait_for)
from pika import spec


def confirmed_publisher(ctx, conn, q=None):
    ch = conn.channel()
    if q:
        ch.queue_declare(q)
    ch.confirm_delivery()
    return ch


@test
def round_robin(ctx):
    conn = ctx.connect()
    q = ctx.qname()
    pub = confirmed_publisher(ctx, conn, q)
    cols = []
    for i in range(3):
        ch = conn.channel()
        col = Collector()
        ch.basic_consume(q, col, auto_ack=True)
        cols.append(col)
    for i in range(9):
        pub.basic_publish("", q, b"%d" % i)
    wait_for(conn, lambda: sum(len(c) for c in cols) == 9, "9 deliveries")
    eq([len(c) for c in cols], [3, 3, 3], "deliveries per consumer")
    for k, c in enumerate(cols):
        residues = {int(b) % 3 for b in c.bodies}
        eq(len(residues), 1, "consumer %d gets every 3rd message (strict rotation), got %r" % (k, c.bodies))
        eq(c.bodies, sorted(c.bodies, key=int), "consumer %d receives its messages in order" % k)


@test
def round_robin_skips_blocked_consumers(ctx):
    conn = ctx.connect()
    q = ctx.qname()
    pub = confirmed_publisher(ctx, conn, q)
    slow, fast = conn.channel(), conn.channel()
    slow.basic_qos(prefetch_count=1)
    c_slow, c_fast = Collector(), Collector()
    slow.basic_consume(q, c_slow)
    fast.basic_consume(q, c_fast, auto_ack=True)
    for i in range(6):
        pub.basic_publish("", q, b"%d" % i)
    wait_for(conn, lambda: len(c_slow) + len(c_fast) == 6, "6 deliveries")
    eq(len(c_slow), 1, "consumer at its prefetch limit is skipped")


@test
def cancel_notification_on_queue_delete(ctx):
    conn = ctx.connect()
    q = ctx.qname()
    ch = conn.channel()
    ch.queue_declare(q)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method))
    col = Collector()
    tag = ch.basic_consume(q, col, auto_ack=True)
    other = conn.channel()
    other.basic_publish("", q, b"before")
    wait_for(conn, lambda: len(col) == 1, "delivery before delete")
    other.queue_delete(q)
    wait_for(conn, lambda: len(cancelled) == 1, "basic.cancel from the broker")
    eq(type(cancelled[0]).__name__, "Cancel", "method")
    eq(cancelled[0].consumer_tag, tag, "cancelled consumer tag")
    eq(ch.is_open, True, "channel stays open after a broker cancel")
    ch.queue_declare(ctx.qname())  # channel usable


@test
def client_cancel_stops_deliveries(ctx):
    conn = ctx.connect()
    q = ctx.qname()
    pub = confirmed_publisher(ctx, conn, q)
    ch = conn.channel()
    col = Collector()
    tag = ch.basic_consume(q, col, auto_ack=True)
    pub.basic_publish("", q, b"1")
    wait_for(conn, lambda: len(col) == 1, "first delivery")
    ch.basic_cancel(tag)
    pub.basic_publish("", q, b"2")
    eq(pub.queue_declare(q, passive=True).method.consumer_count, 0, "consumer_count after cancel")
    eq(drain_bodies(pub, q), [b"2"], "message after cancel stays in the queue")
    eq(col.bodies, [b"1"], "nothing delivered after cancel-ok")


@test
def exclusive_consumer(ctx):
    conn = ctx.connect()
    q = ctx.qname()
    ch1 = conn.channel()
    ch1.queue_declare(q)
    tag = ch1.basic_consume(q, lambda *a: None, exclusive=True)
    text = "ACCESS_REFUSED - queue '%s' in vhost '%s' in exclusive use" % (q, VHOST)
    other = ctx.connect()
    ch = other.channel()
    expect_channel_close(lambda: ch.basic_consume(q, lambda *a: None), 403, text, "consume while exclusive consumer")
    ch = conn.channel()
    expect_channel_close(lambda: ch.basic_consume(q, lambda *a: None, exclusive=True), 403, text,
                         "second exclusive consumer (same connection)")
    ch1.basic_cancel(tag)
    ch = conn.channel()
    t2 = ch.basic_consume(q, lambda *a: None)
    ch3 = conn.channel()
    expect_channel_close(lambda: ch3.basic_consume(q, lambda *a: None, exclusive=True), 403, text,
                         "exclusive consume while another consumer exists")
    ch.basic_cancel(t2)
    ch4 = conn.channel()
    ch4.basic_consume(q, lambda *a: None, exclusive=True)  # free again


@test
def duplicate_consumer_tag(ctx):
    conn = ctx.connect()
    q = ctx.qname()
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *a: None, consumer_tag="dup-tag")
    # the same tag on another channel is fine: tags are per channel
    conn.channel().basic_consume(q, lambda *a: None, consumer_tag="dup-tag")

    def reuse():
        # pika refuses duplicates client-side, so send the raw method
        ch._impl._send_method(spec.Basic.Consume(queue=q, consumer_tag="dup-tag"))
        wait_for(conn, lambda: False, "connection.close for duplicate consumer tag", timeout=3)
    expect_connection_close(reuse, 530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup-tag'",
                            "basic.consume with a tag already used on the channel")


@test
def consumer_priorities(ctx):
    conn = ctx.connect()
    q = ctx.qname()
    pub = confirmed_publisher(ctx, conn, q)
    hi, lo = conn.channel(), conn.channel()
    hi.basic_qos(prefetch_count=2)
    c_hi, c_lo = Collector(), Collector()
    lo.basic_consume(q, c_lo, auto_ack=True)
    hi.basic_consume(q, c_hi, arguments={"x-priority": 10})
    for i in range(5):
        pub.basic_publish("", q, b"%d" % i)
    wait_for(conn, lambda: len(c_hi) + len(c_lo) == 5, "5 deliveries")
    eq(c_hi.bodies, [b"0", b"1"], "high-priority consumer gets messages while it has capacity")
    eq(c_lo.bodies, [b"2", b"3", b"4"], "low-priority consumer gets the rest")
    hi.basic_ack(0, multiple=True)
    pub.basic_publish("", q, b"5")
    wait_for(conn, lambda: len(c_hi) + len(c_lo) == 6, "6th delivery")
    eq(c_hi.bodies[-1], b"5", "high-priority consumer preferred again once it has capacity")


@test
def hundred_channels(ctx):
    conn = ctx.connect()
    chans = []
    for i in range(100):
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        col = Collector()
        ch.basic_consume(q, col, auto_ack=True)
        chans.append((ch, q, col))
    eq(len({ch.channel_number for (ch, _, _) in chans}), 100, "distinct channel numbers")
    for i, (ch, q, col) in enumerate(chans):
        ch.basic_publish("", q, b"ch-%d" % i)
    wait_for(conn, lambda: all(len(col) == 1 for (_, _, col) in chans), "one delivery on each of 100 channels")
    for i, (ch, q, col) in enumerate(chans):
        eq(col.bodies, [b"ch-%d" % i], "channel %d got its own message" % ch.channel_number)
        eq(col.msgs[0][0].delivery_tag, 1, "delivery tag on channel %d" % ch.channel_number)
    for ch, _, _ in chans[::2]:
        ch.close()
    for i, (ch, q, col) in enumerate(chans[1::2]):
        ch.basic_publish("", q, b"again")
    wait_for(conn, lambda: all(len(col) == 2 for (_, _, col) in chans[1::2]),
             "second delivery on the 50 channels still open")


if __name__ == "__main__":
    main()
