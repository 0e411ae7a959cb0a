#!/usr/bin/env python3
"""Exchange types, routing, bindings, alternate exchanges, exchange errors."""

from _common import (VHOST, drain_bodies, eq, expect_channel_close, expect_connection_close, main, pika, test,
                     wait_for)
from pika.exceptions import UnroutableError


def fresh_queue(ctx, ch, prefix="q"):
    q = ctx.qname(prefix)
    ch.queue_declare(q)
    return q


def sync(ch, q):
    """A synchronous round trip on the publishing channel. Routing happens while
    the broker handles basic.publish, so after this returns on the same
    channel every earlier publish has been enqueued."""
    ch.queue_declare(q, passive=True)


# ---------------------------------------------------------------------------
# direct / fanout


@test
def direct_routing(ctx):
    conn, ch = ctx.channel()
    x = ctx.xname()
    ch.exchange_declare(x, "direct")
    q1, q2 = fresh_queue(ctx, ch), fresh_queue(ctx, ch)
    ch.queue_bind(q1, x, "k1")
    ch.queue_bind(q2, x, "k2")
    ch.queue_bind(q2, x, "k1")  # same queue, two keys
    ch.queue_bind(q2, x, "k1")  # duplicate binding is idempotent
    for k in ["k1", "k2", "k3", "", "K1"]:
        ch.basic_publish(x, k, k.encode() or b"<empty>")
    sync(ch, q1)
    eq(drain_bodies(ch, q1), [b"k1"], "q1 bound with k1")
    eq(drain_bodies(ch, q2), [b"k1", b"k2"], "q2 bound with k1 (twice) and k2: one copy each, keys case-sensitive")


@test
def amq_direct_and_empty_key(ctx):
    conn, ch = ctx.channel()
    q = fresh_queue(ctx, ch)
    ch.queue_bind(q, "amq.direct", q)
    ch.queue_bind(q, "amq.direct", "")
    ch.basic_publish("amq.direct", q, b"by-name")
    ch.basic_publish("amq.direct", "", b"by-empty-key")
    sync(ch, q)
    eq(drain_bodies(ch, q), [b"by-name", b"by-empty-key"], "amq.direct routing incl. empty key binding")
    ch.queue_unbind(q, "amq.direct", q)
    ch.queue_unbind(q, "amq.direct", "")


@test
def fanout_ignores_key(ctx):
    conn, ch = ctx.channel()
    x = ctx.xname()
    ch.exchange_declare(x, "fanout")
    qs = [fresh_queue(ctx, ch) for _ in range(3)]
    for i, q in enumerate(qs):
        ch.queue_bind(q, x, "whatever-%d" % i)
    ch.basic_publish(x, "any.key", b"m1")
    ch.basic_publish(x, "", b"m2")
    sync(ch, qs[0])
    for q in qs:
        eq(drain_bodies(ch, q), [b"m1", b"m2"], "fanout queue %s" % q)


# ---------------------------------------------------------------------------
# topic


def _words(s):
    return [] if s == "" else s.split(".")


def topic_match(pattern, key):
    """Reference matcher (RabbitMQ semantics): words are split on '.', the
    empty key has zero words, '*' is exactly one (possibly empty) word, '#' is
    zero or more words."""
    def m(p, k):
        if not p:
            return not k
        if p[0] == "#":
            return m(p[1:], k) or (bool(k) and m(p, k[1:]))
        if not k:
            return False
        return (p[0] == "*" or p[0] == k[0]) and m(p[1:], k[1:])
    return m(_words(pattern), _words(key))


TOPIC_PATTERNS = ["#", "*", "", "a", "a.*", "a.#", "#.a", "a.#.b", "*.b", "#.b.#", "a.*.#", "*.*", "a.#.#.b",
                  "#.#", "#.*", "*.#", "a.*.b", "..", "*.", ".*", "a.", "#.", ".#"]
TOPIC_KEYS = ["", "a", "b", "a.b", "a.c", "a.b.c", "a.x.b", "a.x.y.b", "x.a", "b.a", "a..b", ".", "a.", ".a",
              "..", "b.b.b"]

# A few spelled out, so the table above is not the only source of truth.
TOPIC_EXPLICIT = {
    "#": TOPIC_KEYS,  # everything, including the empty key
    "*": ["a", "b"],  # exactly one word; not the empty key
    "": [""],
    "a.#": ["a", "a.b", "a.c", "a.b.c", "a.x.b", "a.x.y.b", "a..b", "a."],  # '#' may match zero words
    "#.a": ["a", "x.a", "b.a", ".a"],
    "a.#.b": ["a.b", "a.x.b", "a.x.y.b", "a..b"],
    "a.*.b": ["a.x.b", "a..b"],  # '*' matches an empty word
    "*.*": ["a.b", "a.c", "x.a", "b.a", ".", "a.", ".a"],
}


@test
def topic_matching_table(ctx):
    conn, ch = ctx.channel()
    x = ctx.xname()
    ch.exchange_declare(x, "topic")
    qs = {}
    for p in TOPIC_PATTERNS:
        qs[p] = fresh_queue(ctx, ch)
        ch.queue_bind(qs[p], x, p)
    for k in TOPIC_KEYS:
        ch.basic_publish(x, k, k.encode())
    sync(ch, qs["#"])
    for p in TOPIC_PATTERNS:
        got = [b.decode() for b in drain_bodies(ch, qs[p])]
        want = [k for k in TOPIC_KEYS if topic_match(p, k)]
        if p in TOPIC_EXPLICIT:
            eq(want, TOPIC_EXPLICIT[p], "self-check of reference matcher for %r" % p)
        eq(got, want, "topic binding %r received keys" % p)


@test
def topic_overlapping_bindings_one_copy(ctx):
    conn, ch = ctx.channel()
    x = ctx.xname()
    ch.exchange_declare(x, "topic")
    q = fresh_queue(ctx, ch)
    for p in ["a.*", "#", "a.b", "*.b", "a.#"]:
        ch.queue_bind(q, x, p)
    ch.basic_publish(x, "a.b", b"once")
    sync(ch, q)
    eq(drain_bodies(ch, q), [b"once"], "5 matching bindings to one queue deliver one copy")
    ch.queue_unbind(q, x, "#")
    ch.queue_unbind(q, x, "a.*")
    ch.basic_publish(x, "a.c", b"still-a.#")
    ch.basic_publish(x, "c", b"nothing")
    sync(ch, q)
    eq(drain_bodies(ch, q), [b"still-a.#"], "after unbinding '#' and 'a.*'")


# ---------------------------------------------------------------------------
# headers


HEADER_BINDINGS = {
    "all-empty": {"x-match": "all"},
    "any-empty": {"x-match": "any"},
    "default-is-all": {"a": "1", "b": 2},
    "all": {"x-match": "all", "a": "1", "b": 2},
    "any": {"x-match": "any", "a": "1", "b": 2},
    "all-void": {"x-match": "all", "v": None},
    "all-ignores-x": {"x-match": "all", "a": "1", "x-foo": "bar"},
    "all-with-x": {"x-match": "all-with-x", "a": "1", "x-foo": "bar"},
    "any-with-x": {"x-match": "any-with-x", "x-foo": "bar"},
    "any-x-only": {"x-match": "any", "x-foo": "bar"},
    "int1": {"k": 1},
    "str1": {"k": "1"},
    "true": {"k": True},
}

HEADER_MESSAGES = [
    ("none", None),
    ("empty", {}),
    ("a1", {"a": "1"}),
    ("a1b2", {"a": "1", "b": 2}),
    ("b2", {"b": 2}),
    ("a1b3", {"a": "1", "b": 3}),
    ("a1b2extra", {"a": "1", "b": 2, "c": "extra"}),
    ("vnull", {"v": None}),
    ("vstr", {"v": "x"}),
    ("xfoo", {"x-foo": "bar"}),
    ("a1xfoo", {"a": "1", "x-foo": "bar"}),
    ("a1xbaz", {"a": "1", "x-foo": "baz"}),
    ("k1", {"k": 1}),
    ("kstr", {"k": "1"}),
    ("ktrue", {"k": True}),
]

HEADER_EXPECTED = {
    # x-match all with no other args matches every message, even one without headers
    "all-empty": [m for m, _ in HEADER_MESSAGES],
    # x-match any with no args matches nothing
    "any-empty": [],
    "default-is-all": ["a1b2", "a1b2extra"],
    "all": ["a1b2", "a1b2extra"],
    "any": ["a1", "a1b2", "b2", "a1b3", "a1b2extra", "a1xfoo", "a1xbaz"],
    # a void binding value only requires the header to be present (any value)
    "all-void": ["vnull", "vstr"],
    # plain all/any ignore binding keys starting with x-
    "all-ignores-x": ["a1", "a1b2", "a1b3", "a1b2extra", "a1xfoo", "a1xbaz"],
    "all-with-x": ["a1xfoo"],
    "any-with-x": ["xfoo", "a1xfoo"],
    "any-x-only": [],
    # values compare with their type: int 1, string "1" and true are all different
    "int1": ["k1"],
    "str1": ["kstr"],
    "true": ["ktrue"],
}


@test
def headers_exchange_matching(ctx):
    conn, ch = ctx.channel()
    x = ctx.xname()
    ch.exchange_declare(x, "headers")
    qs = {}
    for name, args in HEADER_BINDINGS.items():
        qs[name] = fresh_queue(ctx, ch)
        ch.queue_bind(qs[name], x, "ignored-key", arguments=args)
    for name, hdrs in HEADER_MESSAGES:
        ch.basic_publish(x, "rk", name.encode(), pika.BasicProperties(headers=hdrs))
    sync(ch, qs["all"])
    for name in HEADER_BINDINGS:
        got = [b.decode() for b in drain_bodies(ch, qs[name])]
        eq(got, HEADER_EXPECTED[name], "headers binding %s %r received" % (name, HEADER_BINDINGS[name]))


@test
def headers_unbind_needs_same_args(ctx):
    conn, ch = ctx.channel()
    x = ctx.xname()
    ch.exchange_declare(x, "headers")
    q = fresh_queue(ctx, ch)
    ch.queue_bind(q, x, "", arguments={"x-match": "any", "a": "1"})
    ch.queue_bind(q, x, "", arguments={"x-match": "any", "b": "2"})
    ch.queue_unbind(q, x, "", arguments={"x-match": "any", "a": "1"})
    ch.basic_publish(x, "", b"a", pika.BasicProperties(headers={"a": "1"}))
    ch.basic_publish(x, "", b"b", pika.BasicProperties(headers={"b": "2"}))
    sync(ch, q)
    eq(drain_bodies(ch, q), [b"b"], "only the binding with matching arguments was removed")


@test
def headers_bad_x_match(ctx):
    conn = ctx.connect()
    x = ctx.xname()
    q = ctx.qname()
    ch = conn.channel()
    ch.exchange_declare(x, "headers")
    ch.queue_declare(q)
    expect_channel_close(lambda: ch.queue_bind(q, x, "", arguments={"x-match": "foo"}), 406,
                         "PRECONDITION_FAILED - Invalid x-match field value <<\"foo\">>; expected all, any, "
                         "all-with-x, or any-with-x", "bind with x-match=foo")
    ch = conn.channel()
    expect_channel_close(lambda: ch.queue_bind(q, x, "", arguments={"x-match": 1}), 406,
                         "PRECONDITION_FAILED - Invalid x-match field type signedint (value 1); expected longstr",
                         "bind with x-match=1")


# ---------------------------------------------------------------------------
# exchange-to-exchange


@test
def exchange_to_exchange(ctx):
    conn, ch = ctx.channel()
    src, mid, leaf = ctx.xname("src"), ctx.xname("mid"), ctx.xname("leaf")
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(mid, "direct")
    ch.exchange_declare(leaf, "fanout")
    q_mid, q_leaf = fresh_queue(ctx, ch), fresh_queue(ctx, ch)
    ch.exchange_bind(mid, src, "orders.*")  # destination, source, key
    ch.exchange_bind(leaf, mid, "orders.eu")
    ch.queue_bind(q_mid, mid, "orders.us")
    ch.queue_bind(q_leaf, leaf, "")
    for k in ["orders.eu", "orders.us", "orders.asia", "other"]:
        ch.basic_publish(src, k, k.encode())
    sync(ch, q_mid)
    eq(drain_bodies(ch, q_mid), [b"orders.us"], "queue on middle exchange")
    eq(drain_bodies(ch, q_leaf), [b"orders.eu"], "queue on leaf exchange (2 hops, routing key kept)")
    m = None
    ch.basic_publish(src, "orders.eu", b"x")
    sync(ch, q_leaf)
    m, _, _ = ch.basic_get(q_leaf, auto_ack=True)
    eq((m.exchange, m.routing_key), (src, "orders.eu"), "delivery shows the exchange it was published to")
    ch.exchange_unbind(leaf, mid, "orders.eu")
    ch.basic_publish(src, "orders.eu", b"after-unbind")
    sync(ch, q_leaf)
    eq(drain_bodies(ch, q_leaf), [], "after exchange.unbind")


@test
def exchange_to_exchange_diamond_and_cycle(ctx):
    conn, ch = ctx.channel()
    a, b, c = ctx.xname("a"), ctx.xname("b"), ctx.xname("c")
    for x in (a, b, c):
        ch.exchange_declare(x, "fanout")
    q = fresh_queue(ctx, ch)
    ch.exchange_bind(b, a)
    ch.exchange_bind(c, a)
    ch.exchange_bind(a, b)  # cycle a -> b -> a
    ch.queue_bind(q, b)
    ch.queue_bind(q, c)
    ch.queue_bind(q, a)
    ch.basic_publish(a, "", b"one")
    ch.basic_publish(b, "", b"two")
    sync(ch, q)
    eq(drain_bodies(ch, q), [b"one", b"two"], "diamond + cycle still delivers one copy per queue")


@test
def internal_exchange(ctx):
    conn, ch = ctx.channel()
    src, internal = ctx.xname("src"), ctx.xname("internal")
    ch.exchange_declare(src, "fanout")
    ch.exchange_declare(internal, "fanout", internal=True)
    q = fresh_queue(ctx, ch)
    ch.exchange_bind(internal, src)
    ch.queue_bind(q, internal)
    ch.basic_publish(src, "", b"via-e2e")
    sync(ch, q)
    eq(drain_bodies(ch, q), [b"via-e2e"], "internal exchange reachable through e2e binding")

    def direct_publish():
        ch.basic_publish(internal, "", b"direct")
        sync(ch, q)
    expect_channel_close(direct_publish, 403,
                         "ACCESS_REFUSED - cannot publish to internal exchange '%s' in vhost '%s'" % (internal, VHOST),
                         "publish directly to internal exchange")


# ---------------------------------------------------------------------------
# alternate exchange


@test
def alternate_exchange(ctx):
    conn, ch = ctx.channel()
    main_x, ae, ae2 = ctx.xname("main"), ctx.xname("ae"), ctx.xname("ae2")
    ch.exchange_declare(ae2, "fanout")
    ch.exchange_declare(ae, "direct", arguments={"alternate-exchange": ae2})
    ch.exchange_declare(main_x, "direct", arguments={"alternate-exchange": ae})
    q_main, q_ae, q_ae2 = fresh_queue(ctx, ch), fresh_queue(ctx, ch), fresh_queue(ctx, ch)
    ch.queue_bind(q_main, main_x, "good")
    ch.queue_bind(q_ae, ae, "known-to-ae")
    ch.queue_bind(q_ae2, ae2)
    ch.confirm_delivery()
    ch.basic_publish(main_x, "good", b"routed", mandatory=True)
    ch.basic_publish(main_x, "known-to-ae", b"to-ae", mandatory=True)  # no UnroutableError: AE routed it
    ch.basic_publish(main_x, "unknown", b"to-ae2", mandatory=True)  # AE chain: main -> ae -> ae2
    eq(drain_bodies(ch, q_main), [b"routed"], "main queue")
    eq(drain_bodies(ch, q_ae), [b"to-ae"], "alternate exchange queue")
    eq(drain_bodies(ch, q_ae2), [b"to-ae2"], "alternate exchange of the alternate exchange")
    m, _, _ = None, None, None
    ch.basic_publish(main_x, "unknown", b"again")
    m, _, _ = ch.basic_get(q_ae2, auto_ack=True)
    eq((m.exchange, m.routing_key), (main_x, "unknown"), "AE-routed delivery keeps original exchange and key")


@test
def alternate_exchange_missing_or_unroutable(ctx):
    conn, ch = ctx.channel()
    main_x, ae = ctx.xname("main"), ctx.xname("ae")
    ch.exchange_declare(main_x, "direct", arguments={"alternate-exchange": ctx.name("missing")})
    ch.exchange_declare(ae, "direct")
    x2 = ctx.xname("main2")
    ch.exchange_declare(x2, "direct", arguments={"alternate-exchange": ae})
    ch.confirm_delivery()
    for x in (main_x, x2):
        try:
            ch.basic_publish(x, "nowhere", b"lost", mandatory=True)
        except UnroutableError as e:
            eq(len(e.messages), 1, "returned messages")
            r = e.messages[0].method
            eq((r.reply_code, r.reply_text, r.exchange, r.routing_key), (312, "NO_ROUTE", x, "nowhere"),
               "basic.return when AE missing / routes nowhere")
        else:
            raise AssertionError("expected basic.return (UnroutableError) for exchange %s" % x)


# ---------------------------------------------------------------------------
# lifecycle and errors


@test
def unbind_stops_routing_and_missing_unbind_ok(ctx):
    conn, ch = ctx.channel()
    x = ctx.xname()
    ch.exchange_declare(x, "direct")
    q = fresh_queue(ctx, ch)
    ch.queue_bind(q, x, "k")
    ch.queue_unbind(q, x, "k")
    ch.basic_publish(x, "k", b"after-unbind")
    sync(ch, q)
    eq(drain_bodies(ch, q), [], "no delivery after unbind")
    # unbinding a binding / exchange / queue that does not exist is a no-op in RabbitMQ
    ch.queue_unbind(q, x, "never-bound")
    ch.queue_unbind(q, ctx.name("no-such-x"), "k")
    ch.queue_unbind(ctx.name("no-such-q"), x, "k")
    ch.exchange_unbind(x, "amq.fanout", "never-bound")
    eq(ch.is_open, True, "channel open after no-op unbinds")


@test
def exchange_delete_if_unused(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    x, dst = ctx.xname(), ctx.xname("dst")
    ch.exchange_declare(x, "direct")
    ch.exchange_declare(dst, "fanout")
    q = fresh_queue(ctx, ch)
    ch.queue_bind(q, x, "k")
    expect_channel_close(lambda: ch.exchange_delete(x, if_unused=True), 406,
                         "PRECONDITION_FAILED - exchange '%s' in vhost '%s' in use" % (x, VHOST),
                         "exchange.delete if-unused with a queue binding")
    ch = conn.channel()
    ch.queue_unbind(q, x, "k")
    ch.exchange_bind(dst, x, "k")  # x is the *source* of an e2e binding -> in use
    expect_channel_close(lambda: ch.exchange_delete(x, if_unused=True), 406,
                         "PRECONDITION_FAILED - exchange '%s' in vhost '%s' in use" % (x, VHOST),
                         "exchange.delete if-unused with an e2e binding as source")
    ch = conn.channel()
    # dst is only a *destination*: counts as unused
    ch.exchange_delete(dst, if_unused=True)
    ch.exchange_delete(x, if_unused=True)
    expect_channel_close(lambda: ch.exchange_declare(x, passive=True), 404,
                         "NOT_FOUND - no exchange '%s' in vhost '%s'" % (x, VHOST), "exchange gone after delete")
    ch = conn.channel()
    ch.exchange_delete(ctx.name("never-existed"))  # delete of missing exchange is ok
    ch.exchange_delete(ctx.name("never-existed"), if_unused=True)


@test
def exchange_delete_removes_bindings(ctx):
    conn, ch = ctx.channel()
    x = ctx.xname()
    ch.exchange_declare(x, "direct")
    q = fresh_queue(ctx, ch)
    ch.queue_bind(q, x, "k")
    ch.exchange_delete(x)
    ch.exchange_declare(x, "direct")
    ch.basic_publish(x, "k", b"after-redeclare")
    sync(ch, q)
    eq(drain_bodies(ch, q), [], "bindings die with the exchange")
    ch.queue_bind(q, x, "k")
    ch.queue_delete(q)
    ch.queue_declare(q)
    ch.basic_publish(x, "k", b"after-queue-recreate")
    sync(ch, q)
    eq(drain_bodies(ch, q), [], "bindings die with the queue")


@test
def auto_delete_exchange(ctx):
    conn, ch = ctx.channel()
    x, y = ctx.xname(), ctx.xname()
    ch.exchange_declare(x, "direct", auto_delete=True)
    ch.exchange_declare(y, "direct", auto_delete=True)
    q = fresh_queue(ctx, ch)
    ch.queue_bind(q, x, "k")
    ch.queue_bind(q, x, "k2")
    ch.queue_unbind(q, x, "k")
    ch.exchange_declare(x, passive=True)  # still one binding left
    ch.queue_unbind(q, x, "k2")
    ch2 = conn.channel()
    expect_channel_close(lambda: ch2.exchange_declare(x, passive=True), 404,
                         "NOT_FOUND - no exchange '%s' in vhost '%s'" % (x, VHOST),
                         "auto-delete exchange after its last binding is removed")
    ch.exchange_declare(y, passive=True)  # never had a binding: stays


@test
def declare_errors(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    x = ctx.xname()
    missing = ctx.name("missing")
    expect_channel_close(lambda: ch.exchange_declare(missing, passive=True), 404,
                         "NOT_FOUND - no exchange '%s' in vhost '%s'" % (missing, VHOST), "passive declare of missing")
    ch = conn.channel()
    ch.exchange_declare(x, "direct")
    ch.exchange_declare(x, "direct")  # identical redeclare ok
    ch.exchange_declare(x, "fanout", passive=True)  # passive ignores the type
    ch.exchange_declare(x, "direct", arguments={"some-unknown-arg": "v"})  # unknown args not compared
    for kw, text in [
        (dict(exchange_type="fanout"),
         "inequivalent arg 'type' for exchange '%s' in vhost '%s': received 'fanout' but current is 'direct'"),
        (dict(exchange_type="direct", durable=True),
         "inequivalent arg 'durable' for exchange '%s' in vhost '%s': received 'true' but current is 'false'"),
        (dict(exchange_type="direct", auto_delete=True),
         "inequivalent arg 'auto_delete' for exchange '%s' in vhost '%s': received 'true' but current is 'false'"),
        (dict(exchange_type="direct", internal=True),
         "inequivalent arg 'internal' for exchange '%s' in vhost '%s': received 'true' but current is 'false'"),
        (dict(exchange_type="direct", arguments={"alternate-exchange": "foo"}),
         "inequivalent arg 'alternate-exchange' for exchange '%s' in vhost '%s': received the value 'foo' of "
         "type 'longstr' but current is none"),
    ]:
        ch = conn.channel()
        expect_channel_close(lambda: ch.exchange_declare(x, **kw), 406,
                             "PRECONDITION_FAILED - " + text % (x, VHOST), "redeclare with %r" % kw)
    ch = conn.channel()
    ch.exchange_declare(x, passive=True)  # still exists, unchanged


@test
def reserved_names(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    name = "amq.sy-test-" + ctx.name("r")[-12:]
    expect_channel_close(lambda: ch.exchange_declare(name, "direct"), 403,
                         "ACCESS_REFUSED - exchange name '%s' contains reserved prefix 'amq.*'" % name,
                         "declare amq.* exchange")
    ch = conn.channel()
    expect_channel_close(lambda: ch.exchange_declare(name, passive=True), 404,
                         "NOT_FOUND - no exchange '%s' in vhost '%s'" % (name, VHOST), "passive declare of missing amq.*")
    ch = conn.channel()
    # redeclaring an existing amq.* exchange with identical properties is allowed
    for n, t in [("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
                 ("amq.headers", "headers"), ("amq.match", "headers")]:
        ch.exchange_declare(n, t, durable=True)
        ch.exchange_declare(n, passive=True)
    expect_channel_close(lambda: ch.exchange_delete("amq.direct"), 403,
                         "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '%s' not allowed" % VHOST,
                         "delete amq.direct")
    for what, fn in [
        ("declare default exchange", lambda c: c.exchange_declare("", "direct")),
        ("passive declare default exchange", lambda c: c.exchange_declare("", passive=True)),
        ("delete default exchange", lambda c: c.exchange_delete("")),
        ("bind queue to default exchange", lambda c: c.queue_bind(fresh_queue(ctx, c), "", "k")),
        ("unbind queue from default exchange", lambda c: c.queue_unbind(fresh_queue(ctx, c), "", "k")),
        ("e2e bind from default exchange", lambda c: c.exchange_bind("amq.fanout", "", "k")),
        ("e2e bind to default exchange", lambda c: c.exchange_bind("", "amq.fanout", "k")),
    ]:
        ch = conn.channel()
        expect_channel_close(lambda: fn(ch), 403, "ACCESS_REFUSED - operation not permitted on the default exchange",
                             what)


@test
def bind_errors(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    x = ctx.xname()
    ch.exchange_declare(x, "direct")
    q = fresh_queue(ctx, ch)
    mq, mx = ctx.name("missing-q"), ctx.name("missing-x")
    cases = [
        ("bind missing queue", lambda c: c.queue_bind(mq, x, "k"), "NOT_FOUND - no queue '%s' in vhost '%s'" % (mq, VHOST)),
        ("bind to missing exchange", lambda c: c.queue_bind(q, mx, "k"),
         "NOT_FOUND - no exchange '%s' in vhost '%s'" % (mx, VHOST)),
        ("bind both missing (exchange reported)", lambda c: c.queue_bind(mq, mx, "k"),
         "NOT_FOUND - no exchange '%s' in vhost '%s'" % (mx, VHOST)),
        ("e2e bind missing source", lambda c: c.exchange_bind(x, mx, "k"),
         "NOT_FOUND - no exchange '%s' in vhost '%s'" % (mx, VHOST)),
        ("e2e bind missing destination", lambda c: c.exchange_bind(mx, x, "k"),
         "NOT_FOUND - no exchange '%s' in vhost '%s'" % (mx, VHOST)),
    ]
    for what, fn, text in cases:
        ch = conn.channel()
        expect_channel_close(lambda: fn(ch), 404, text, what)


@test
def unknown_exchange_type_closes_connection(ctx):
    # A hard error (connection.close 503). RabbitMQ says "unknown exchange type"
    # for a name that is not an Erlang atom yet, and "invalid exchange type" for
    # one that happens to be an existing atom (e.g. 'foo'); we only pin the
    # former, with names nobody has used before.
    for t in ["no-such-type-" + ctx.name("t")[-12:], "x-no-such-type-" + ctx.name("t")[-12:]]:
        conn = ctx.connect()
        ch = conn.channel()
        x = ctx.xname()
        expect_connection_close(lambda: ch.exchange_declare(x, t), 503,
                                "COMMAND_INVALID - unknown exchange type '%s'" % t, "declare with type %r" % t)
        eq(conn.is_open, False, "connection closed after 503")


@test
def publish_to_deleted_exchange(ctx):
    conn, ch = ctx.channel()
    x = ctx.xname()
    ch.exchange_declare(x, "fanout")
    ch.exchange_delete(x)

    def publish():
        ch.basic_publish(x, "", b"x")
        ch.exchange_declare("amq.direct", passive=True)
    expect_channel_close(publish, 404, "NOT_FOUND - no exchange '%s' in vhost '%s'" % (x, VHOST),
                         "publish to deleted exchange")
    wait_for(conn, lambda: True, "noop")


if __name__ == "__main__":
    main()
