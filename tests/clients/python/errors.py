#!/usr/bin/env python3
"""Error paths (channel vs connection errors, auth, vhosts, user_id) and CC/BCC sender-selected distribution."""

import re

from _common import (USER, VHOST, drain_bodies, eq, expect_channel_close, fail, main, pika, test, url_with)
from pika.exceptions import (AMQPConnectionError, ProbableAccessDeniedError, ProbableAuthenticationError)


def no_exchange(x):
    return "NOT_FOUND - no exchange '%s' in vhost '%s'" % (x, VHOST)


def no_queue(q):
    return "NOT_FOUND - no queue '%s' in vhost '%s'" % (q, VHOST)


@test
def publish_to_missing_exchange_closes_channel_only(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    missing = ctx.name("missing-x")

    def publish():
        ch.basic_publish(missing, "k", b"x")
        ch.queue_declare("", exclusive=True)  # the error surfaces on the next synchronous call
    expect_channel_close(publish, 404, no_exchange(missing), "publish to a missing exchange")
    eq(ch.is_closed, True, "channel closed")
    eq(conn.is_open, True, "connection still open")
    ch2 = conn.channel()
    q = ctx.qname()
    ch2.queue_declare(q)
    ch2.basic_publish("", q, b"works")
    eq(drain_bodies(ch2, q), [b"works"], "a new channel on the same connection works")
    # reusing the closed channel's number is fine too (pika hands out the lowest free number)
    eq(ch2.channel_number, ch.channel_number, "channel number reused after broker close")


@test
def queue_not_found_operations(ctx):
    conn = ctx.connect()
    missing = ctx.name("missing-q")
    for what, fn in [
        ("passive declare", lambda c: c.queue_declare(missing, passive=True)),
        ("basic.consume", lambda c: c.basic_consume(missing, lambda *a: None)),
        ("basic.get", lambda c: c.basic_get(missing)),
        ("queue.purge", lambda c: c.queue_purge(missing)),
        ("queue.bind", lambda c: c.queue_bind(missing, "amq.direct", "k")),
    ]:
        ch = conn.channel()
        expect_channel_close(lambda: fn(ch), 404, no_queue(missing), what + " of a missing queue")
    eq(conn.is_open, True, "connection survives channel errors")


@test
def channel_error_keeps_other_channels(ctx):
    conn = ctx.connect()
    good = conn.channel()
    q = ctx.qname()
    good.queue_declare(q)
    bad = conn.channel()
    expect_channel_close(lambda: bad.queue_declare(ctx.name("m"), passive=True), 404, "NOT_FOUND - ",
                         "passive declare")
    good.basic_publish("", q, b"still-fine")
    eq(drain_bodies(good, q), [b"still-fine"], "other channel unaffected by a channel error")


def _closed_by(e):
    """pika wraps the broker's connection.close in a string: (code, text)."""
    m = re.search(r"\((\d+)\) (['\"])(.*)\2", str(e.args[0]) if e.args else str(e))
    if not m:
        fail("could not find (code) 'text' in %r" % (e.args,))
    return int(m.group(1)), m.group(3)


@test
def wrong_password(ctx):
    try:
        ctx.connect(url_with(password="definitely-wrong"))
    except ProbableAuthenticationError as e:
        eq(_closed_by(e), (403, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
                                "For details see the broker logfile."), "connection.close on bad password")
    except AMQPConnectionError as e:
        fail("bad password: expected ProbableAuthenticationError (connection.close 403 during the handshake), got "
             "%s %r" % (type(e).__name__, e))
    else:
        fail("bad password: connection was accepted")


@test
def unknown_user(ctx):
    try:
        ctx.connect(url_with(user="no-such-user-sy", password="x"))
    except ProbableAuthenticationError as e:
        eq(_closed_by(e)[0], 403, "connection.close code for unknown user")
        eq(_closed_by(e)[1], "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
                             "For details see the broker logfile.", "same text as a bad password")
    else:
        fail("unknown user: expected ProbableAuthenticationError")


@test
def unknown_vhost(ctx):
    vh = "no-such-vhost-" + ctx.name("v")[-8:]
    try:
        ctx.connect(url_with(vhost=vh))
    except ProbableAccessDeniedError as e:
        eq(_closed_by(e), (530, "NOT_ALLOWED - vhost %s not found" % vh), "connection.close on connection.open")
    except AMQPConnectionError as e:
        fail("unknown vhost: expected ProbableAccessDeniedError (530), got %s %r" % (type(e).__name__, e))
    else:
        fail("unknown vhost: connection was accepted")


@test
def user_id_must_match(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"ok", pika.BasicProperties(user_id=USER))

    def spoof():
        ch.basic_publish("", q, b"x", pika.BasicProperties(user_id="someone-else"))
        ch.queue_declare(q, passive=True)
    expect_channel_close(spoof, 406, "PRECONDITION_FAILED - user_id property set to 'someone-else' but authenticated "
                         "user was '%s'" % USER, "publish with a foreign user_id")
    m, p, b = conn.channel().basic_get(q, auto_ack=True)
    eq((b, p.user_id), (b"ok", USER), "matching user_id is accepted and delivered")


@test
def cc_bcc_routing(ctx):
    conn, ch = ctx.channel()
    x = ctx.xname()
    ch.exchange_declare(x, "direct")
    qs = {}
    for k in ["k1", "k2", "k3", "k4"]:
        qs[k] = ctx.qname(k)
        ch.queue_declare(qs[k])
        ch.queue_bind(qs[k], x, k)
    ch.basic_publish(x, "k1", b"a", pika.BasicProperties(headers={"CC": ["k2", "k1"], "BCC": ["k3"], "o": 1}))
    ch.basic_publish(x, "nowhere", b"b", pika.BasicProperties(headers={"BCC": ["k3"]}))
    ch.basic_publish(x, "nowhere", b"c", pika.BasicProperties(headers={"CC": ["k2", 5]}))  # non-strings ignored
    ch.basic_publish(x, "nowhere", b"d", pika.BasicProperties(headers={"cc": ["k2"], "Bcc": ["k3"]}))  # case matters
    ch.basic_publish(x, "nowhere", b"e", pika.BasicProperties(headers={"CC": []}))
    got = {k: [(b, m.routing_key, p.headers) for (m, p, b) in
               [ch.basic_get(q, auto_ack=True) for _ in range(3)] if m is not None] for k, q in qs.items()}
    cc_a = {"CC": ["k2", "k1"], "o": 1}
    eq(got["k1"], [(b"a", "k1", cc_a)], "routing-key queue: one copy even though CC repeats the key; BCC stripped")
    eq(got["k2"], [(b"a", "k1", cc_a), (b"c", "nowhere", {"CC": ["k2", 5]})],
       "CC queue: delivered with the original routing key, CC header kept")
    eq(got["k3"], [(b"a", "k1", cc_a), (b"b", "nowhere", {})], "BCC queue: BCC header removed (empty table left)")
    eq(got["k4"], [], "unrelated queue")


@test
def cc_must_be_array(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)

    def publish():
        ch.basic_publish("", q, b"x", pika.BasicProperties(headers={"CC": "k2"}))
        ch.queue_declare(q, passive=True)
    expect_channel_close(publish, 406, "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,\"CC\","
                         "longstr}", "CC header that is a string, not an array")


@test
def cc_with_mandatory_and_confirms(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    ch.confirm_delivery()
    # the routing key matches nothing but a CC key does: routed, so no basic.return
    ch.basic_publish("", ctx.name("nowhere"), b"via-cc", pika.BasicProperties(headers={"CC": [q]}), mandatory=True)
    eq(drain_bodies(ch, q), [b"via-cc"], "delivered through the CC key")


if __name__ == "__main__":
    main()
