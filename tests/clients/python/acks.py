#!/usr/bin/env python3
"""Acknowledgements, requeueing, redelivery, basic.get, basic.recover, prefetch."""

from _common import (Collector, consume_n, drain_bodies, eq, expect_channel_close, expect_connection_close, get_all,
                     main, msg_count, test, wait_for)


def setup(ctx, n, prefix=b"m"):
    """Queue with n confirmed messages m0..m{n-1}."""
    conn = ctx.connect()
    ch = conn.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", q, prefix + b"%d" % i)
    return conn, conn.channel(), q


def sync(ch, q):
    ch.queue_declare(q, passive=True)


@test
def manual_ack(ctx):
    conn, ch, q = setup(ctx, 3)
    msgs = consume_n(conn, ch, q, 3, "manual-ack deliveries", auto_ack=False)
    eq([m.delivery_tag for (m, _, _) in msgs], [1, 2, 3], "delivery tags")
    for (m, _, _) in msgs:
        ch.basic_ack(m.delivery_tag)
    ch.close()
    eq(msg_count(conn.channel(), q), 0, "nothing requeued after acking everything and closing the channel")


@test
def ack_multiple(ctx):
    conn, ch, q = setup(ctx, 5)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(5)]
    eq(tags, [1, 2, 3, 4, 5], "basic.get delivery tags")
    ch.basic_ack(3, multiple=True)
    ch.close()
    got = get_all(conn.channel(), q)
    eq([b for (_, _, b) in got], [b"m3", b"m4"], "tags 1-3 acked by ack(3, multiple); 4-5 requeued on close")
    eq([m.redelivered for (m, _, _) in got], [True, True], "requeued messages are redelivered")


@test
def ack_zero_multiple_acks_all(ctx):
    conn, ch, q = setup(ctx, 3)
    consume_n(conn, ch, q, 3, "deliveries", auto_ack=False)
    ch.basic_ack(0, multiple=True)
    ch.close()
    eq(msg_count(conn.channel(), q), 0, "ack(0, multiple=True) acks every outstanding delivery")


@test
def nack_multiple_requeue_redelivers_in_order(ctx):
    conn, ch, q = setup(ctx, 5)
    col = Collector()
    ch.basic_consume(q, col)
    wait_for(conn, lambda: len(col) == 5, "first 5 deliveries")
    eq([m.redelivered for (m, _, _) in col.msgs], [False] * 5, "first deliveries not redelivered")
    ch.basic_nack(col.msgs[4][0].delivery_tag, multiple=True, requeue=True)
    wait_for(conn, lambda: len(col) == 10, "5 redeliveries to the same consumer")
    again = col.msgs[5:]
    eq([b for (_, _, b) in again], [b"m0", b"m1", b"m2", b"m3", b"m4"], "redelivered in original order")
    eq([m.redelivered for (m, _, _) in again], [True] * 5, "redelivered flag")
    eq([m.delivery_tag for (m, _, _) in again], [6, 7, 8, 9, 10], "new delivery tags for redeliveries")
    ch.basic_ack(10, multiple=True)


@test
def nack_requeue_false_without_dlx_drops(ctx):
    conn, ch, q = setup(ctx, 3)
    consume_n(conn, ch, q, 3, "deliveries", auto_ack=False)
    ch.basic_nack(2, multiple=True, requeue=False)
    ch.basic_nack(3, multiple=False, requeue=True)
    got = get_all(ch, q)
    eq([b for (_, _, b) in got], [b"m2"], "nacked-without-requeue messages are gone")


@test
def reject_requeue_keeps_original_position(ctx):
    conn, ch, q = setup(ctx, 3)
    a = ch.basic_get(q)[0]
    b = ch.basic_get(q)[0]
    ch.basic_reject(b.delivery_tag, requeue=True)
    ch.basic_reject(a.delivery_tag, requeue=True)
    got = get_all(ch, q)
    eq([x for (_, _, x) in got], [b"m0", b"m1", b"m2"], "requeued messages return to their original positions")
    eq([m.redelivered for (m, _, _) in got], [True, True, False], "redelivered flags")
    ch2 = conn.channel()
    q2 = ctx.qname()
    ch2.queue_declare(q2)
    ch2.basic_publish("", q2, b"r")
    m = ch2.basic_get(q2)[0]
    ch2.basic_reject(m.delivery_tag, requeue=False)
    eq(get_all(ch2, q2), [], "reject requeue=false discards")


@test
def basic_recover(ctx):
    conn, ch, q = setup(ctx, 3)
    col = Collector()
    ch.basic_consume(q, col)
    wait_for(conn, lambda: len(col) == 3, "deliveries")
    ch.basic_ack(1)
    ch.basic_recover(requeue=True)
    wait_for(conn, lambda: len(col) == 5, "2 unacked messages redelivered after basic.recover")
    eq([(b, m.redelivered) for (m, _, b) in col.msgs[3:]], [(b"m1", True), (b"m2", True)], "recovered deliveries")
    ch.basic_ack(0, multiple=True)
    expect_connection_close(lambda: ch.basic_recover(requeue=False), 540, "NOT_IMPLEMENTED - requeue=false",
                            "basic.recover requeue=false")


@test
def basic_get_and_get_empty(ctx):
    conn, ch, q = setup(ctx, 3)
    counts = []
    for i in range(3):
        m, p, b = ch.basic_get(q, auto_ack=(i != 1))
        counts.append((b, m.message_count, m.redelivered))
    eq(counts, [(b"m0", 2, False), (b"m1", 1, False), (b"m2", 0, False)],
       "(body, get-ok message_count, redelivered)")
    eq(ch.basic_get(q), (None, None, None), "get-empty")
    ch.basic_reject(2, requeue=True)  # the one fetched with auto_ack=False
    m, p, b = ch.basic_get(q, auto_ack=True)
    eq((b, m.message_count, m.redelivered), (b"m1", 0, True), "requeued message via get")


@test
def prefetch_limits_unacked(ctx):
    conn, pub, q = setup(ctx, 10)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2)
    col = Collector()
    ch.basic_consume(q, col)
    wait_for(conn, lambda: len(col) == 2, "2 deliveries")
    eq(msg_count(pub, q), 8, "ready messages with prefetch 2 (so exactly 2 were delivered)")
    ch.basic_ack(col.msgs[0][0].delivery_tag)
    wait_for(conn, lambda: len(col) == 3, "one more delivery after one ack")
    eq(msg_count(pub, q), 7, "ready messages after one ack")
    # per-consumer qos only applies to consumers created afterwards
    ch.basic_qos(prefetch_count=5)
    ch.basic_ack(col.msgs[1][0].delivery_tag)
    wait_for(conn, lambda: len(col) == 4, "one more delivery")
    eq(msg_count(pub, q), 6, "existing consumer keeps its prefetch of 2")
    col2 = Collector()
    ch.basic_consume(q, col2)
    wait_for(conn, lambda: len(col2) == 5, "new consumer gets up to its prefetch of 5")
    eq(msg_count(pub, q), 1, "ready messages with prefetch 2 + 5")
    ch.basic_ack(0, multiple=True)
    wait_for(conn, lambda: len(col) + len(col2) == 10, "rest delivered after acking all")


@test
def prefetch_does_not_limit_auto_ack_or_get(ctx):
    conn, pub, q = setup(ctx, 6)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)
    m1 = ch.basic_get(q)[0]
    m2 = ch.basic_get(q)[0]
    eq((m1 is not None, m2 is not None), (True, True), "basic.get is not limited by prefetch")
    col = Collector()
    ch.basic_consume(q, col, auto_ack=True)
    wait_for(conn, lambda: len(col) == 4, "auto-ack consumer ignores prefetch")


@test
def prefetch_global_is_per_channel(ctx):
    conn, pub, q1 = setup(ctx, 5, b"a")
    q2 = ctx.qname()
    pub.queue_declare(q2)
    for i in range(5):
        pub.basic_publish("", q2, b"b%d" % i)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=3, global_qos=True)
    col = Collector()
    ch.basic_consume(q1, col)
    ch.basic_consume(q2, col)
    wait_for(conn, lambda: len(col) == 3, "3 deliveries shared by two consumers")
    eq(msg_count(pub, q1) + msg_count(pub, q2), 7, "global prefetch 3 shared across the channel's consumers")
    ch.basic_ack(0, multiple=True)
    wait_for(conn, lambda: len(col) == 6, "3 more after acking all")
    eq(msg_count(pub, q1) + msg_count(pub, q2), 4, "ready messages after second window")


@test
def qos_prefetch_size_not_implemented(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=65535)  # max
    ch.basic_qos(prefetch_count=0)  # unlimited again
    ch.basic_qos(prefetch_size=0, prefetch_count=5, global_qos=True)
    expect_connection_close(lambda: ch.basic_qos(prefetch_size=1000), 540, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)",
                            "basic.qos with prefetch_size")


@test
def channel_close_requeues_unacked(ctx):
    conn, ch, q = setup(ctx, 3)
    consume_n(conn, ch, q, 3, "deliveries", auto_ack=False)
    ch.close()
    got = get_all(conn.channel(), q)
    eq([(b, m.redelivered) for (m, _, b) in got], [(b"m0", True), (b"m1", True), (b"m2", True)],
       "unacked messages requeued in order on channel close")


@test
def connection_close_requeues_unacked(ctx):
    conn, ch, q = setup(ctx, 2)
    c2 = ctx.connect()
    ch2 = c2.channel()
    consume_n(c2, ch2, q, 2, "deliveries", auto_ack=False)
    c2.close()
    got = get_all(ch, q)
    eq([(b, m.redelivered) for (m, _, b) in got], [(b"m0", True), (b"m1", True)],
       "unacked messages requeued on connection close")


@test
def double_ack_and_unknown_tags(ctx):
    conn, ch, q = setup(ctx, 3)
    m = ch.basic_get(q)[0]
    ch.basic_ack(m.delivery_tag)

    def double():
        ch.basic_ack(m.delivery_tag)
        sync(ch, q)
    expect_channel_close(double, 406, "PRECONDITION_FAILED - unknown delivery tag 1", "double ack")
    cases = [
        ("ack unknown tag", lambda c: c.basic_ack(5), "PRECONDITION_FAILED - unknown delivery tag 5"),
        ("ack unknown tag, multiple", lambda c: c.basic_ack(5, multiple=True),
         "PRECONDITION_FAILED - unknown delivery tag 5"),
        ("ack tag 0", lambda c: c.basic_ack(0), "PRECONDITION_FAILED - unknown delivery tag 0"),
        ("nack unknown tag", lambda c: c.basic_nack(7), "PRECONDITION_FAILED - unknown delivery tag 7"),
        ("reject unknown tag", lambda c: c.basic_reject(9), "PRECONDITION_FAILED - unknown delivery tag 9"),
    ]
    for what, fn, text in cases:
        c = conn.channel()

        def run():
            fn(c)
            sync(c, q)
        expect_channel_close(run, 406, text, what)
    c = conn.channel()
    m = c.basic_get(q, auto_ack=True)[0]

    def ack_autoacked():
        c.basic_ack(m.delivery_tag)
        sync(c, q)
    expect_channel_close(ack_autoacked, 406, "PRECONDITION_FAILED - unknown delivery tag 1", "ack of an auto-acked get")
    c = conn.channel()
    c.basic_ack(0, multiple=True)  # nothing outstanding: fine
    sync(c, q)


@test
def tags_are_per_channel(ctx):
    conn, ch1, q = setup(ctx, 2)
    ch2 = conn.channel()
    m1 = ch1.basic_get(q)[0]
    m2 = ch2.basic_get(q)[0]
    eq((m1.delivery_tag, m2.delivery_tag), (1, 1), "each channel counts from 1")

    def ack_on_other_channel():
        ch2.basic_ack(2)  # tag 2 does not exist on ch2 (only on neither)
        sync(ch2, q)
    expect_channel_close(ack_on_other_channel, 406, "PRECONDITION_FAILED - unknown delivery tag 2",
                         "ack of a tag unknown on this channel")
    ch1.basic_ack(1)
    ch1.close()
    eq(drain_bodies(conn.channel(), q), [b"m1"], "ch2's unacked message requeued when ch2 was closed by the error")


@test
def ack_after_consumer_cancelled(ctx):
    conn, ch, q = setup(ctx, 3)
    col = Collector()
    tag = ch.basic_consume(q, col)
    wait_for(conn, lambda: len(col) == 3, "deliveries")
    ch.basic_cancel(tag)
    # deliveries of a cancelled consumer stay unacked on the channel and can still be settled
    ch.basic_ack(col.msgs[0][0].delivery_tag)
    ch.basic_nack(col.msgs[1][0].delivery_tag, requeue=True)
    sync(ch, q)
    eq(ch.is_open, True, "channel open after acking a cancelled consumer's tag")
    got = get_all(ch, q)
    eq([(b, m.redelivered) for (m, _, b) in got], [(b"m1", True)], "nacked message requeued; acked one gone")
    ch.close()  # m2 still unacked -> requeued
    eq(drain_bodies(conn.channel(), q), [b"m2"], "unsettled message of the cancelled consumer requeued on close")


if __name__ == "__main__":
    main()
