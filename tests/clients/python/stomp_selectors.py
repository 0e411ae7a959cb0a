#!/usr/bin/env python3
"""ActiveMQ-style JMS selectors (the `selector` SUBSCRIBE header): every
operator, JMS header identifiers, shared queues (non-matching messages stay
for others) and topics (non-matching messages are dropped), bad selectors.
RabbitMQ has no selectors: this script is Switchyard/ActiveMQ behaviour."""

from _stomp_common import bodies, connect, dest_name, eq, main, startswith, test

MESSAGES = [
    # body, headers
    (b"a", {"colour": "red", "n": "1", "name": "alpha"}),
    (b"b", {"colour": "blue", "n": "2", "name": "beta_x"}),
    (b"c", {"colour": "red", "n": "3", "name": "gamma", "type": "order", "priority": "8"}),
    (b"d", {"colour": "green", "n": "10", "name": "100%"}),
]

CASES = [
    ("colour = 'red'", [b"a", b"c"]),
    ("colour <> 'red'", [b"b", b"d"]),
    ("n > 2", [b"c", b"d"]),
    ("n >= 2 AND n < 10", [b"b", b"c"]),
    ("n <= 1 OR colour = 'green'", [b"a", b"d"]),
    ("NOT (colour = 'red')", [b"b", b"d"]),
    ("name LIKE 'a%'", [b"a"]),
    ("name LIKE '_eta!_x' ESCAPE '!'", [b"b"]),
    ("name LIKE '100!%' ESCAPE '!'", [b"d"]),
    ("name NOT LIKE '%a%'", [b"d"]),
    ("colour IN ('blue', 'green')", [b"b", b"d"]),
    ("colour NOT IN ('blue', 'green')", [b"a", b"c"]),
    ("n BETWEEN 2 AND 3", [b"b", b"c"]),
    ("n NOT BETWEEN 2 AND 3", [b"a", b"d"]),
    ("missing IS NULL AND name <> 'beta_x'", [b"a", b"c", b"d"]),
    ("JMSType IS NOT NULL", [b"c"]),
    ("n * 2 + 1 = 7", [b"c"]),
    ("(n - 1) / 3 = 3", [b"d"]),
    ("JMSType = 'order' AND JMSPriority > 5", [b"c"]),
    ("JMSPriority = 4", [b"a", b"b", b"d"]),
    ("JMSDeliveryMode = 'NON_PERSISTENT'", [b"a", b"b", b"c", b"d"]),
]


def publish_all(ctx, dest):
    p = connect(ctx)
    for b, h in MESSAGES:
        p.send(dest, b, headers=h)


@test
def every_operator_on_a_topic(ctx):
    topic = dest_name(ctx, "topic", "sel")
    subs = []
    for i, (sel, _) in enumerate(CASES):
        c = connect(ctx)
        c.subscribe(topic, "s%d" % i, headers={"selector": sel})
        subs.append(c)
    publish_all(ctx, topic)
    for (sel, want), c in zip(CASES, subs):
        eq(bodies(c.l.take(len(want), sel)), want, "selector %r" % sel)


@test
def shared_queue_leaves_non_matching_messages(ctx):
    q = dest_name(ctx)
    red = connect(ctx)
    red.subscribe(q, "red", headers={"selector": "colour = 'red'"})
    publish_all(ctx, q)
    eq(bodies(red.l.take(2, "red ones")), [b"a", b"c"], "red subscriber")
    rest = connect(ctx)
    rest.subscribe(q, "rest")
    eq(sorted(bodies(rest.l.take(2, "the rest"))), [b"b", b"d"], "non-matching messages stayed queued")


@test
def selector_with_client_acks(ctx):
    q = dest_name(ctx)
    c = connect(ctx)
    c.subscribe(q, "big", ack="client-individual", headers={"selector": "n >= 3"})
    publish_all(ctx, q)
    ms = c.l.take(2, "matching")
    eq(bodies(ms), [b"c", b"d"], "selected")
    for m in ms:
        c.ack(m)


@test
def invalid_selector_is_an_error(ctx):
    c = connect(ctx)
    c.conn.subscribe(dest_name(ctx), id="bad", headers={"selector": "colour = = 'red'"})
    e = c.l.wait_error("bad selector")
    eq(e.headers.get("message"), "Invalid selector", "ERROR message header")
    startswith(e.body.decode(), "invalid selector at position", "ERROR body")
    c.l.wait(lambda: c.l.disconnected, "the broker closing the connection")


if __name__ == "__main__":
    main(default_timeout=40)
