#!/usr/bin/env python3
"""Queue declaration, equivalence, exclusivity, auto-delete, expiry, purge, delete."""

import re

from _common import (VHOST, Collector, ChannelClosedByBroker, drain_bodies, eq, expect_channel_close, main, msg_count,
                     poll_until, test, wait_for)
from pika.exceptions import UnroutableError

LOCKED = ("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '%s' in vhost '%s'. It could be "
          "originally declared on another connection or the exclusive property value does not match that of the "
          "original declaration.")


def no_queue(q):
    return "NOT_FOUND - no queue '%s' in vhost '%s'" % (q, VHOST)


def queue_exists(conn, q):
    ch = conn.channel()
    try:
        ch.queue_declare(q, passive=True)
    except ChannelClosedByBroker as e:
        if e.reply_code == 404:
            return False
        raise
    ch.close()
    return True


@test
def server_named_queue(ctx):
    conn, ch = ctx.channel()
    names = set()
    for _ in range(3):
        ok = ch.queue_declare("", exclusive=True)
        q = ok.method.queue
        if not re.match(r"^amq\.gen-[A-Za-z0-9_-]{22}$", q):
            raise AssertionError("server-named queue: expected amq.gen-<22 url-safe base64 chars>, got %r" % q)
        eq((ok.method.message_count, ok.method.consumer_count), (0, 0), "declare-ok counts of new queue")
        names.add(q)
        ch.queue_declare(q, passive=True)
    eq(len(names), 3, "distinct server-generated names")
    ch.basic_publish("", q, b"to-generated")
    eq(drain_bodies(ch, q), [b"to-generated"], "default exchange routes to the generated name")


@test
def empty_name_means_last_declared_queue(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    expect_channel_close(lambda: ch.basic_get(""), 404, "NOT_FOUND - no previously declared queue",
                         "basic.get '' on a channel that declared nothing")
    ch = conn.channel()
    expect_channel_close(lambda: ch.queue_declare("", passive=True), 404, no_queue(""),
                         "passive declare '' on a channel that declared nothing")
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    x = ctx.xname()
    ch.exchange_declare(x, "fanout")
    ch.queue_bind("", x)  # '' = last queue declared on this channel
    ch.basic_publish(x, "", b"m1")
    ch.basic_publish(x, "", b"m2")
    ch.basic_publish(x, "", b"m3")
    m, _, b = ch.basic_get("", auto_ack=True)
    eq(b, b"m1", "basic.get ''")
    eq(ch.queue_purge("").method.message_count, 2, "queue.purge ''")
    col = Collector()
    ch.basic_consume("", col, auto_ack=True)
    ch.basic_publish("", q, b"m4")
    wait_for(conn, lambda: len(col) == 1, "delivery to consumer on ''")
    eq(col.bodies, [b"m4"], "basic.consume ''")
    # ...but queue.declare never substitutes: passive '' is a missing queue named ''
    expect_channel_close(lambda: ch.queue_declare("", passive=True), 404, no_queue(""),
                         "passive declare '' after a declare on the same channel")


@test
def passive_declare(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    missing = ctx.name("missing")
    expect_channel_close(lambda: ch.queue_declare(missing, passive=True), 404, no_queue(missing),
                         "passive declare of missing queue")
    ch = conn.channel()
    q = ctx.qname()
    ch.queue_declare(q, arguments={"x-message-ttl": 60000})
    ch.confirm_delivery()  # counts are only exact for confirmed publishes
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    ok = ch.queue_declare(q, passive=True, durable=True, exclusive=False, auto_delete=True,
                          arguments={"x-message-ttl": 5})
    eq((ok.method.queue, ok.method.message_count, ok.method.consumer_count), (q, 2, 0),
       "passive declare ignores flags/args and reports counts")


@test
def redeclare_equivalence(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    q, q2 = ctx.qname(), ctx.qname()
    ch.queue_declare(q)
    ch.queue_declare(q)  # identical redeclare is fine
    ch.queue_declare(q, arguments={"x-some-unknown-arg": "v"})  # unknown args are not compared
    ch.queue_declare(q2, arguments={"x-message-ttl": 1000})
    pre = "PRECONDITION_FAILED - inequivalent arg "
    cases = [
        (q, dict(durable=True), 406,
         pre + "'durable' for queue '%s' in vhost '%s': received 'true' but current is 'false'" % (q, VHOST)),
        (q, dict(auto_delete=True), 406,
         pre + "'auto_delete' for queue '%s' in vhost '%s': received 'true' but current is 'false'" % (q, VHOST)),
        # exclusive mismatch is reported as RESOURCE_LOCKED, not 406
        (q, dict(exclusive=True), 405, LOCKED % (q, VHOST)),
        (q, dict(arguments={"x-message-ttl": 2000}), 406,
         pre + "'x-message-ttl' for queue '%s' in vhost '%s': received the value '2000' of type 'signedint' but "
         "current is none" % (q, VHOST)),
        (q2, dict(arguments={"x-message-ttl": 2000}), 406,
         pre + "'x-message-ttl' for queue '%s' in vhost '%s': received '2000' but current is '1000'" % (q2, VHOST)),
        (q2, dict(), 406,
         pre + "'x-message-ttl' for queue '%s' in vhost '%s': received none but current is the value '1000' of "
         "type 'signedint'" % (q2, VHOST)),
        (q2, dict(arguments={"x-message-ttl": 2**40}), 406,
         pre + "'x-message-ttl' for queue '%s' in vhost '%s': received '1099511627776' but current is '1000'"
         % (q2, VHOST)),
    ]
    for name, kw, code, text in cases:
        ch = conn.channel()
        expect_channel_close(lambda: ch.queue_declare(name, **kw), code, text, "redeclare %s with %r" % (name, kw))
    ch = conn.channel()
    ch.queue_declare(q2, arguments={"x-message-ttl": 1000})


@test
def invalid_arguments(ctx):
    conn = ctx.connect()
    pre = "PRECONDITION_FAILED - invalid arg "
    cases = [
        ({"x-max-length": -1}, pre + "'x-max-length' for queue '%s' in vhost '%s': {value_negative,-1}"),
        ({"x-message-ttl": "100"}, pre + "'x-message-ttl' for queue '%s' in vhost '%s': \"expected integer, got longstr\""),
        ({"x-expires": 0}, pre + "'x-expires' for queue '%s' in vhost '%s': {value_zero,0}"),
        ({"x-overflow": "foo"}, pre + "'x-overflow' for queue '%s' in vhost '%s': invalid_overflow"),
        ({"x-max-priority": 300}, pre + "'x-max-priority' for queue '%s' in vhost '%s': {max_value_exceeded,300}"),
        ({"x-queue-type": "foo"}, pre + "'x-queue-type' for queue '%s' in vhost '%s': \"unsupported queue type 'foo'\""),
        ({"x-dead-letter-routing-key": "a"},
         pre + "'x-dead-letter-routing-key' for queue '%s' in vhost '%s': routing_key_but_no_dlx_defined"),
        ({"x-dead-letter-exchange": 1},
         "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '%s' in vhost '%s'"),
    ]
    for args, text in cases:
        ch = conn.channel()
        q = ctx.qname()
        expect_channel_close(lambda: ch.queue_declare(q, arguments=args), 406, text % (q, VHOST),
                             "declare with %r" % args)
        eq(queue_exists(conn, q), False, "queue with invalid args must not be created")


@test
def reserved_queue_names(ctx):
    conn = ctx.connect()
    for name in ["amq.sy-" + ctx.name("r")[-12:], "amq.gen-" + ctx.name("r")[-12:]]:
        ch = conn.channel()
        expect_channel_close(lambda: ch.queue_declare(name), 403,
                             "ACCESS_REFUSED - queue name '%s' contains reserved prefix 'amq.*'" % name,
                             "declare queue %s" % name)
        ch = conn.channel()
        expect_channel_close(lambda: ch.queue_declare(name, passive=True), 404, no_queue(name),
                             "passive declare of missing %s" % name)


@test
def exclusive_queue(ctx):
    owner = ctx.connect()
    other = ctx.connect()
    och = owner.channel()
    q = ctx.qname()
    och.queue_declare(q, exclusive=True)
    ops = [
        ("declare exclusive", lambda c: c.queue_declare(q, exclusive=True)),
        ("declare non-exclusive", lambda c: c.queue_declare(q)),
        ("passive declare", lambda c: c.queue_declare(q, passive=True)),
        ("basic.consume", lambda c: c.basic_consume(q, lambda *a: None)),
        ("basic.get", lambda c: c.basic_get(q)),
        ("queue.purge", lambda c: c.queue_purge(q)),
        ("queue.delete", lambda c: c.queue_delete(q)),
        ("queue.bind", lambda c: c.queue_bind(q, "amq.direct", q)),
    ]
    for what, fn in ops:
        ch = other.channel()
        expect_channel_close(lambda: fn(ch), 405, LOCKED % (q, VHOST), "exclusive queue from other connection: " + what)
    # unbind and publishing from another connection are allowed
    ch = other.channel()
    ch.queue_unbind(q, "amq.direct", q)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"from-other", mandatory=True)
    # the owner, on any channel, may use it; closing the declaring channel does not delete it
    och.close()
    och2 = owner.channel()
    eq(och2.queue_declare(q, passive=True).method.message_count, 1, "message published by other connection")
    eq(drain_bodies(och2, q), [b"from-other"], "owner reads it")
    # closing the owning connection deletes the queue
    owner.close()
    poll_until(lambda: not queue_exists(other, q), "exclusive queue deleted when its connection closes")


@test
def auto_delete_queue(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    q = ctx.qname()
    ch.queue_declare(q, auto_delete=True)
    ch.basic_publish("", q, b"x")
    eq(drain_bodies(ch, q), [b"x"], "auto-delete queue works before any consumer")
    eq(queue_exists(conn, q), True, "never-consumed auto-delete queue stays")
    t1 = ch.basic_consume(q, lambda *a: None)
    ch2 = conn.channel()
    t2 = ch2.basic_consume(q, lambda *a: None)
    eq(ch.queue_declare(q, passive=True).method.consumer_count, 2, "consumer_count")
    ch.basic_cancel(t1)
    eq(queue_exists(conn, q), True, "auto-delete queue stays while one consumer is left")
    ch2.basic_cancel(t2)
    poll_until(lambda: not queue_exists(conn, q), "auto-delete queue deleted after last consumer cancelled")
    # closing the channel of the last consumer also counts
    q2 = ctx.qname()
    ch.queue_declare(q2, auto_delete=True)
    ch3 = conn.channel()
    ch3.basic_consume(q2, lambda *a: None)
    ch3.close()
    poll_until(lambda: not queue_exists(conn, q2), "auto-delete queue deleted when its consumer's channel closed")


def routable(ch, q):
    """Existence probe that does not renew an x-expires lease (a passive
    declare would): mandatory publish via the default exchange on a confirm
    channel; basic.return means the queue is gone."""
    try:
        ch.basic_publish("", q, b"probe", mandatory=True)
        return True
    except UnroutableError:
        return False


@test
def queue_expires(ctx):
    conn, ch = ctx.channel()
    q_idle, q_used = ctx.qname("idle"), ctx.qname("used")
    ch.queue_declare(q_idle, arguments={"x-expires": 300})
    ch.queue_declare(q_used, arguments={"x-expires": 300})
    ch.basic_consume(q_used, lambda *a: None)  # a consumer keeps it alive
    pch = conn.channel()
    pch.confirm_delivery()
    poll_until(lambda: not routable(pch, q_idle), "x-expires=300 queue to be deleted (messages do not keep it)")
    eq(queue_exists(conn, q_used), True, "queue with a consumer does not expire")


@test
def queue_expires_renewed_by_redeclare(ctx):
    conn, ch = ctx.channel()
    q_clock, q_renewed = ctx.qname("clock"), ctx.qname("renewed")
    ch.queue_declare(q_renewed, arguments={"x-expires": 400})
    ch.queue_declare(q_clock, arguments={"x-expires": 1200})
    pch = conn.channel()
    pch.confirm_delivery()

    def clock_gone():
        ch.queue_declare(q_renewed, passive=True)  # renews the lease (404 here = failure)
        return not routable(pch, q_clock)
    poll_until(clock_gone, "the 1200 ms queue to expire", timeout=6)
    eq(queue_exists(conn, q_renewed), True, "400 ms queue kept alive by passive declares every ~20 ms")


@test
def purge(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    eq(ch.queue_purge(q).method.message_count, 0, "purge of empty queue")
    for i in range(5):
        ch.basic_publish("", q, b"%d" % i)
    m, _, _ = ch.basic_get(q, auto_ack=False)  # one unacked message
    eq(ch.queue_purge(q).method.message_count, 4, "purge-ok counts ready messages only")
    eq(msg_count(ch, q), 0, "message_count after purge")
    ch.basic_reject(m.delivery_tag, requeue=True)
    eq(drain_bodies(ch, q), [b"0"], "unacked message survives purge and can be requeued")


@test
def delete_conditions(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    for i in range(3):
        ch.basic_publish("", q, b"x")
    expect_channel_close(lambda: ch.queue_delete(q, if_empty=True), 406,
                         "PRECONDITION_FAILED - queue '%s' in vhost '%s' not empty" % (q, VHOST), "delete if-empty")
    ch = conn.channel()
    ch.basic_consume(q, lambda *a: None, auto_ack=True)
    ch2 = conn.channel()
    expect_channel_close(lambda: ch2.queue_delete(q, if_unused=True), 406,
                         "PRECONDITION_FAILED - queue '%s' in vhost '%s' in use" % (q, VHOST), "delete if-unused")
    ch.close()
    ch = conn.channel()
    q2 = ctx.qname()
    ch.queue_declare(q2)
    ch.confirm_delivery()
    for i in range(4):
        ch.basic_publish("", q2, b"x")
    eq(ch.queue_delete(q2, if_unused=True).method.message_count, 4, "delete-ok message_count")
    eq(queue_exists(conn, q2), False, "deleted")
    missing = ctx.name("missing")
    eq(ch.queue_delete(missing).method.message_count, 0, "delete of missing queue is ok with count 0")
    eq(ch.queue_delete(missing, if_empty=True, if_unused=True).method.message_count, 0, "conditional delete of missing")


@test
def declare_ok_counts(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    ch.confirm_delivery()  # declare-ok counts are only exact for confirmed publishes
    for i in range(3):
        ch.basic_publish("", q, b"%d" % i)
    ok = ch.queue_declare(q)
    eq((ok.method.message_count, ok.method.consumer_count), (3, 0), "(message_count, consumer_count) 3 ready")
    c1 = conn.channel()
    c1.basic_qos(prefetch_count=1)
    col1 = Collector()
    c1.basic_consume(q, col1)
    wait_for(conn, lambda: len(col1) == 1, "first consumer delivery")
    ok = ch.queue_declare(q, passive=True)
    eq((ok.method.message_count, ok.method.consumer_count), (2, 1), "unacked messages are not counted")
    c2 = conn.channel()
    c2.basic_qos(prefetch_count=1)
    col2 = Collector()
    c2.basic_consume(q, col2)
    wait_for(conn, lambda: len(col2) == 1, "second consumer delivery")
    ok = ch.queue_declare(q)
    eq((ok.method.message_count, ok.method.consumer_count), (1, 2), "two consumers, one ready message")


@test
def queue_and_exchange_names_are_separate(ctx):
    conn, ch = ctx.channel()
    n = ctx.qname("same")
    ctx.exchanges.append(n)
    ch.queue_declare(n)
    ch.exchange_declare(n, "fanout")
    ch.queue_bind(n, n)
    ch.basic_publish(n, "", b"via-exchange")
    ch.basic_publish("", n, b"via-default")
    eq(drain_bodies(ch, n), [b"via-exchange", b"via-default"], "queue and exchange with the same name")


if __name__ == "__main__":
    main()
