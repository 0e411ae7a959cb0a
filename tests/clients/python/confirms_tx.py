#!/usr/bin/env python3
"""Publisher confirms, mandatory/basic.return, and AMQP transactions."""

from _common import (VHOST, Collector, ChannelClosedByBroker, drain_bodies, eq, expect_channel_close, fail, get_all, main,
                     msg_count, pika, test, wait_for)
from pika.exceptions import UnroutableError


@test
def confirms_blocking(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish("", q, b"%d" % i)  # raises unless acked
    ch.basic_publish("", ctx.name("nowhere"), b"unroutable, not mandatory")  # still acked
    eq(msg_count(ch, q), 20, "confirmed messages are in the queue")


class RawConfirms:
    """Drive pika's async channel underneath the blocking one, to see the raw
    basic.ack / basic.nack / basic.return frames and their delivery tags."""

    def __init__(self, conn):
        self.conn = conn
        self.ch = conn.channel()
        self.events = []
        self.ch._impl.add_on_return_callback(
            lambda c, m, p, b: self.events.append(("return", m.reply_code, m.reply_text, m.routing_key, b)))
        self.ch._impl.confirm_delivery(
            lambda fr: self.events.append((type(fr.method).__name__.lower(), fr.method.delivery_tag,
                                           fr.method.multiple)))
        # wait for confirm.select-ok
        self.ch.queue_declare("", exclusive=True)

    def publish(self, exchange, key, body, mandatory=False, props=None):
        self.ch._impl.basic_publish(exchange, key, body, props, mandatory)

    def confirmed(self, upto):
        done = set()
        for e in self.events:
            if e[0] in ("ack", "nack"):
                tag, multiple = e[1], e[2]
                if multiple:
                    done |= set(range(1, tag + 1))
                else:
                    done.add(tag)
        return done >= set(range(1, upto + 1))

    def wait(self, upto, what):
        wait_for(self.conn, lambda: self.confirmed(upto), what)


@test
def confirm_tags_and_multiple(ctx):
    conn = ctx.connect()
    raw = RawConfirms(conn)
    q = ctx.qname()
    raw.ch.queue_declare(q)
    n = 50
    for i in range(n):
        raw.publish("", q, b"%d" % i)
    raw.wait(n, "confirms for %d publishes" % n)
    tags = []
    seen = set()
    for kind, tag, multiple in raw.events:
        eq(kind, "ack", "confirm kind")
        covered = set(range(1, tag + 1)) - seen if multiple else {tag}
        if not multiple and tag in seen:
            fail("delivery tag %d confirmed twice" % tag)
        seen |= covered
        tags.append(tag)
    eq(seen, set(range(1, n + 1)), "every publish confirmed exactly once, tags 1..%d" % n)
    # (RabbitMQ does not promise increasing tags: an unroutable publish is
    # acked at once, ahead of multiple-acks for earlier queued messages)
    eq(max(tags), n, "highest confirm tag")


@test
def mandatory_return_before_ack(ctx):
    conn = ctx.connect()
    raw = RawConfirms(conn)
    q = ctx.qname()
    raw.ch.queue_declare(q)
    missing = ctx.name("missing")
    raw.publish("", q, b"ok-1")
    raw.publish("", missing, b"returned", mandatory=True)
    raw.publish("", missing, b"dropped")  # not mandatory: just acked
    raw.publish("", q, b"ok-2", mandatory=True)
    raw.wait(4, "4 confirms")
    returns = [e for e in raw.events if e[0] == "return"]
    eq(returns, [("return", 312, "NO_ROUTE", missing, b"returned")], "exactly one basic.return")
    idx_ret = raw.events.index(returns[0])
    idx_ack2 = next(i for i, e in enumerate(raw.events) if e[0] == "ack" and (e[1] == 2 or (e[2] and e[1] >= 2)))
    eq(idx_ret < idx_ack2, True, "basic.return arrives before the ack of that publish (events %r)" % raw.events)
    eq([e[0] for e in raw.events if e[0] != "return"], ["ack"] * len([e for e in raw.events if e[0] == "ack"]),
       "unroutable messages are acked, not nacked")


@test
def mandatory_unroutable_blocking(ctx):
    conn, ch = ctx.channel()
    x = ctx.xname()
    ch.exchange_declare(x, "direct")
    ch.confirm_delivery()
    props = pika.BasicProperties(message_id="r-1", headers={"h": 1})
    try:
        ch.basic_publish(x, "no-binding", b"back to sender", props, mandatory=True)
    except UnroutableError as e:
        eq(len(e.messages), 1, "returned messages")
        r = e.messages[0]
        eq((r.method.reply_code, r.method.reply_text, r.method.exchange, r.method.routing_key),
           (312, "NO_ROUTE", x, "no-binding"), "basic.return fields")
        eq((r.body, r.properties.message_id, r.properties.headers), (b"back to sender", "r-1", {"h": 1}),
           "returned body and properties")
    else:
        fail("expected UnroutableError (basic.return 312 NO_ROUTE) for mandatory publish to an unbound key")
    ch.basic_publish(x, "no-binding", b"not mandatory")  # silently dropped, acked
    eq(ch.is_open, True, "channel stays open")


@test
def mandatory_return_without_confirms(ctx):
    conn, ch = ctx.channel()
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m.reply_code, m.reply_text, m.exchange,
                                                                  m.routing_key, b)))
    missing = ctx.name("missing")
    ch.basic_publish("", missing, b"r", mandatory=True)
    wait_for(conn, lambda: len(returned) == 1, "basic.return")
    eq(returned, [(312, "NO_ROUTE", "", missing, b"r")], "basic.return")


@test
def tx_commit_and_rollback_publishes(ctx):
    conn = ctx.connect()
    tx = conn.channel()
    obs = conn.channel()
    q = ctx.qname()
    obs.queue_declare(q)
    tx.tx_select()
    tx.tx_select()  # selecting again is fine
    for i in range(3):
        tx.basic_publish("", q, b"t%d" % i)
    eq(obs.basic_get(q), (None, None, None), "uncommitted publishes are invisible")
    eq(msg_count(obs, q), 0, "message_count before commit")
    tx.tx_commit()
    wait_for(conn, lambda: msg_count(obs, q) == 3, "3 messages after commit")
    tx.basic_publish("", q, b"rolled-back-1")
    tx.basic_publish("", q, b"rolled-back-2")
    tx.tx_rollback()
    tx.basic_publish("", q, b"t3")
    tx.tx_commit()
    eq(drain_bodies(tx, q), [b"t0", b"t1", b"t2", b"t3"], "rollback discarded its publishes; channel stays in tx")


@test
def tx_acks(ctx):
    conn = ctx.connect()
    pub = conn.channel()
    q = ctx.qname()
    pub.queue_declare(q)
    pub.confirm_delivery()
    for i in range(3):
        pub.basic_publish("", q, b"m%d" % i)
    tx = conn.channel()
    tx.tx_select()
    a = tx.basic_get(q)[0]
    b = tx.basic_get(q)[0]
    tx.basic_ack(a.delivery_tag)
    tx.basic_reject(b.delivery_tag, requeue=False)
    tx.tx_rollback()  # the ack and the reject are forgotten; both stay unacked
    eq(msg_count(pub, q), 1, "ready after rollback (2 still unacked)")
    tx.basic_ack(a.delivery_tag)  # the same tags are still valid
    tx.tx_commit()
    tx.close()  # b is still unacked -> requeued
    got = get_all(pub, q)
    eq([(x, m.redelivered) for (m, _, x) in got], [(b"m1", True), (b"m2", False)],
       "committed ack removed m0; rolled-back reject left m1 unacked, requeued on close")


@test
def tx_nack_requeue_applies_on_commit(ctx):
    conn = ctx.connect()
    tx = conn.channel()
    q = ctx.qname()
    tx.queue_declare(q)
    tx.basic_publish("", q, b"x")
    tx.tx_select()
    m = tx.basic_get(q)[0]
    tx.basic_nack(m.delivery_tag, requeue=True)
    eq(tx.basic_get(q), (None, None, None), "nack not applied before commit")
    tx.tx_commit()
    m, _, body = tx.basic_get(q, auto_ack=True)
    eq((body, m.redelivered), (b"x", True), "requeued on commit")
    tx.tx_commit()


@test
def tx_mandatory_return_on_commit(ctx):
    conn, ch = ctx.channel()
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m.reply_code, m.reply_text, b)))
    ch.tx_select()
    ch.basic_publish("", ctx.name("missing"), b"r", mandatory=True)
    ch.tx_commit()
    wait_for(conn, lambda: len(returned) == 1, "basic.return after commit")
    eq(returned, [(312, "NO_ROUTE", b"r")], "return")


@test
def tx_and_confirm_errors(ctx):
    conn = ctx.connect()
    cases = [
        ("tx.commit without tx.select", lambda c: c.tx_commit(), "PRECONDITION_FAILED - channel is not transactional"),
        ("tx.rollback without tx.select", lambda c: c.tx_rollback(),
         "PRECONDITION_FAILED - channel is not transactional"),
        ("confirm.select on a tx channel", lambda c: (c.tx_select(), c.confirm_delivery()),
         "PRECONDITION_FAILED - cannot switch from tx to confirm mode"),
        ("tx.select on a confirm channel", lambda c: (c.confirm_delivery(), c.tx_select()),
         "PRECONDITION_FAILED - cannot switch from confirm to tx mode"),
    ]
    for what, fn, text in cases:
        ch = conn.channel()
        expect_channel_close(lambda: fn(ch), 406, text, what)
    eq(conn.is_open, True, "connection stays open")


@test
def confirm_nack_not_used_for_missing_exchange(ctx):
    """Publishing to a missing exchange on a confirm channel is a channel error (404), not a nack."""
    conn, ch = ctx.channel()
    ch.confirm_delivery()
    missing = ctx.name("missing-x")
    try:
        ch.basic_publish(missing, "k", b"x")
    except ChannelClosedByBroker as e:
        eq((e.reply_code, e.reply_text), (404, "NOT_FOUND - no exchange '%s' in vhost '%s'" % (missing, VHOST)), "channel close")
    else:
        fail("expected channel.close 404")


@test
def consume_confirmed_messages(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    ch.confirm_delivery()
    col = Collector()
    ch.basic_consume(q, col, auto_ack=True)
    for i in range(10):
        ch.basic_publish("", q, b"%d" % i)
    wait_for(conn, lambda: len(col) == 10, "deliveries on the confirm channel")
    eq(col.bodies, [b"%d" % i for i in range(10)], "order")


if __name__ == "__main__":
    main()
