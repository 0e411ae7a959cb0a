#!/usr/bin/env python3
"""Queue length limits (count/bytes, drop-head/reject-publish[-dlx]), priorities, single active consumer."""

from _common import (Collector, consume_n, drain_bodies, eq, fail, get_all, main, msg_count, pika, test, wait_for)
from pika.exceptions import NackError


def publish_expect(ch, q, body, nacked, what, props=None):
    """Publish on a confirm channel; nacked=True expects basic.nack."""
    try:
        ch.basic_publish("", q, body, props)
    except NackError:
        if not nacked:
            fail("%s: expected basic.ack for %r, got basic.nack" % (what, body))
        return
    if nacked:
        fail("%s: expected basic.nack for %r, got basic.ack" % (what, body))


@test
def max_length_drop_head(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q, arguments={"x-max-length": 3})
    ch.confirm_delivery()
    for i in range(5):
        publish_expect(ch, q, b"%d" % i, False, "drop-head publish")
    eq(msg_count(ch, q), 3, "message_count at the limit")
    eq(drain_bodies(ch, q), [b"2", b"3", b"4"], "oldest dropped")


@test
def max_length_counts_ready_only(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q, arguments={"x-max-length": 2})
    ch.confirm_delivery()
    for b in [b"u1", b"u2"]:
        ch.basic_publish("", q, b)
    unacked = [ch.basic_get(q)[0], ch.basic_get(q)[0]]
    for b in [b"r1", b"r2", b"r3"]:
        ch.basic_publish("", q, b)
    eq(msg_count(ch, q), 2, "ready count (unacked messages do not count against the limit)")
    ch.basic_nack(unacked[1].delivery_tag, multiple=True, requeue=True)
    # requeued messages go back to the head; the queue then trims from the head
    got = drain_bodies(ch, q)
    eq(got, [b"r2", b"r3"], "after requeue of 2 messages into a full max-length=2 queue")


@test
def max_length_zero(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q, arguments={"x-max-length": 0})
    ch.confirm_delivery()
    publish_expect(ch, q, b"gone", False, "max-length 0 drop-head")
    eq(get_all(ch, q), [], "nothing kept with x-max-length 0")
    col = Collector()
    ch.basic_consume(q, col, auto_ack=True)
    publish_expect(ch, q, b"direct", False, "max-length 0 with a consumer")
    wait_for(conn, lambda: len(col) == 1, "delivery straight to a waiting consumer")


@test
def reject_publish_nacks(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    publish_expect(ch, q, b"1", False, "reject-publish 1")
    publish_expect(ch, q, b"2", False, "reject-publish 2")
    publish_expect(ch, q, b"3", True, "reject-publish over the limit")
    publish_expect(ch, q, b"4", True, "reject-publish over the limit again")
    eq(drain_bodies(ch, q), [b"1", b"2"], "kept messages (no drop-head)")
    publish_expect(ch, q, b"5", False, "reject-publish after space freed")
    eq(drain_bodies(ch, q), [b"5"], "accepted after space freed")


@test
def reject_publish_without_confirms_drops(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    eq(drain_bodies(ch, q), [b"1"], "over-limit message silently dropped without confirms")
    eq(ch.is_open, True, "channel open")


@test
def reject_publish_dlx(ctx):
    conn, ch = ctx.channel()
    dlx, dlq, q = ctx.xname("dlx"), ctx.qname("dlq"), ctx.qname()
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(q, arguments={"x-max-length": 1, "x-overflow": "reject-publish-dlx",
                                   "x-dead-letter-exchange": dlx})
    ch.confirm_delivery()
    publish_expect(ch, q, b"kept", False, "reject-publish-dlx 1")
    publish_expect(ch, q, b"rejected", True, "reject-publish-dlx over the limit")
    [(m, p, b)] = consume_n(conn, ch, dlq, 1, "rejected publish dead-lettered")
    eq(b, b"rejected", "dead-lettered body")
    d = p.headers["x-death"][0]
    eq((d["reason"], d["queue"], d["count"], d["exchange"], d["routing-keys"]), ("maxlen", q, 1, "", [q]),
       "x-death of a reject-publish-dlx message")
    eq(drain_bodies(ch, q), [b"kept"], "queue keeps the first message")


@test
def max_length_bytes(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q, arguments={"x-max-length-bytes": 10})
    ch.confirm_delivery()
    for b in [b"aaaa", b"bbbb", b"cccc"]:  # 12 body bytes > 10 -> drop head
        publish_expect(ch, q, b, False, "max-length-bytes")
    eq(drain_bodies(ch, q), [b"bbbb", b"cccc"], "oldest dropped to get under 10 body bytes")
    # only the body counts: big headers do not
    big = pika.BasicProperties(headers={"pad": "x" * 1000})
    publish_expect(ch, q, b"0123456789", False, "10-byte body with 1000 bytes of headers", big)
    eq(drain_bodies(ch, q), [b"0123456789"], "message with exactly max bytes of body is kept")
    publish_expect(ch, q, b"0123456789A", False, "11-byte body")
    eq(get_all(ch, q), [], "a body larger than x-max-length-bytes is dropped at once")


@test
def max_length_bytes_reject_publish(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q, arguments={"x-max-length-bytes": 8, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    publish_expect(ch, q, b"12345", False, "5 of 8 bytes")
    publish_expect(ch, q, b"123", False, "8 of 8 bytes")
    publish_expect(ch, q, b"1", True, "9 of 8 bytes")
    # an empty body does not push the total over the limit, so it is accepted
    publish_expect(ch, q, b"", False, "empty body into a queue at 8 of 8 bytes")
    eq(drain_bodies(ch, q), [b"12345", b"123", b""], "kept")


@test
def priority_queue_order(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q, arguments={"x-max-priority": 5})
    ch.confirm_delivery()
    sent = [("p0", 0), ("p5a", 5), ("p1", 1), ("p9", 9), ("none", None), ("p5b", 5), ("p10", 10), ("p1b", 1),
            ("p255", 255)]
    for body, prio in sent:
        ch.basic_publish("", q, body.encode(), pika.BasicProperties(priority=prio))
    got = get_all(ch, q)
    # priorities above x-max-priority count as the maximum; no priority counts as 0; FIFO within a priority
    eq([b.decode() for (_, _, b) in got], ["p5a", "p9", "p5b", "p10", "p255", "p1", "p1b", "p0", "none"],
       "delivery order")
    eq([p.priority for (_, p, _) in got], [5, 9, 5, 10, 255, 1, 1, 0, None], "priority property unchanged")


@test
def priority_queue_with_consumer_and_requeue(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q, arguments={"x-max-priority": 10})
    ch.confirm_delivery()
    for body, prio in [("low", 1), ("high", 8), ("mid", 4)]:
        ch.basic_publish("", q, body.encode(), pika.BasicProperties(priority=prio))
    ch.basic_qos(prefetch_count=1)
    col = Collector()
    tag = ch.basic_consume(q, col)
    wait_for(conn, lambda: len(col) == 1, "first delivery")
    eq(col.bodies, [b"high"], "highest priority first")
    ch.basic_publish("", q, b"top", pika.BasicProperties(priority=10))
    ch.basic_ack(col.msgs[0][0].delivery_tag)
    wait_for(conn, lambda: len(col) == 2, "second delivery")
    eq(col.bodies[1], b"top", "newly published higher priority overtakes queued ones")
    ch.basic_cancel(tag)
    ch.basic_reject(col.msgs[1][0].delivery_tag, requeue=True)
    eq([b for (_, _, b) in get_all(ch, q)], [b"top", b"mid", b"low"], "requeued message returns at its priority")


@test
def single_active_consumer(ctx):
    conn = ctx.connect()
    pub = conn.channel()
    q = ctx.qname()
    pub.queue_declare(q, arguments={"x-single-active-consumer": True})
    pub.confirm_delivery()
    ch_a, ch_b = conn.channel(), conn.channel()
    col_a, col_b = Collector(), Collector()
    ch_a.basic_qos(prefetch_count=10)
    ch_b.basic_qos(prefetch_count=10)
    tag_a = ch_a.basic_consume(q, col_a)
    ch_b.basic_consume(q, col_b)
    eq(pub.queue_declare(q, passive=True).method.consumer_count, 2, "consumer_count counts waiting consumers too")
    for i in range(4):
        pub.basic_publish("", q, b"%d" % i)
    wait_for(conn, lambda: len(col_a) == 4, "all 4 messages to the active consumer (A)")
    eq(len(col_b), 0, "inactive consumer B got nothing")
    # ack 2, then cancel A: its 2 unacked messages are requeued and B takes over
    ch_a.basic_ack(col_a.msgs[1][0].delivery_tag, multiple=True)
    ch_a.basic_cancel(tag_a)
    ch_a.close()
    wait_for(conn, lambda: len(col_b) == 2, "unacked messages of A to B")
    eq(col_b.bodies, [b"2", b"3"], "B receives A's unacked messages in order")
    eq([m.redelivered for (m, _, _) in col_b.msgs], [True, True], "redelivered flag")
    pub.basic_publish("", q, b"4")
    wait_for(conn, lambda: len(col_b) == 3, "new message to B")
    ch_b.basic_ack(0, multiple=True)


@test
def single_active_consumer_channel_close_failover(ctx):
    conn_a = ctx.connect()
    conn_b = ctx.connect()
    q = ctx.qname()
    ch_a = conn_a.channel()
    ch_a.queue_declare(q, arguments={"x-single-active-consumer": True})
    col_a, col_b = Collector(), Collector()
    ch_a.basic_consume(q, col_a, auto_ack=True)
    ch_b = conn_b.channel()
    ch_b.basic_consume(q, col_b, auto_ack=True)
    ch_a.basic_publish("", q, b"to-a")
    wait_for(conn_a, lambda: len(col_a) == 1, "delivery to A")
    conn_a.close()
    ch_b.basic_publish("", q, b"to-b")
    wait_for(conn_b, lambda: len(col_b) == 1, "delivery to B after A's connection closed")
    eq(col_b.bodies, [b"to-b"], "B's messages")


if __name__ == "__main__":
    main()
