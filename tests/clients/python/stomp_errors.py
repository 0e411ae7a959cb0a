#!/usr/bin/env python3
"""Bad input through stomp.py gets an ERROR frame (with a `message` header and
an explaining body) and the connection is closed, while other clients carry on."""

from _stomp_common import bodies, check, connect, dest_name, eq, main, test


def expect_error(c, message, what):
    e = c.l.wait_error(what)
    eq(e.headers.get("message"), message, what + ": ERROR message header")
    check(e.body, what + ": ERROR body explains", "a non-empty body", e.body)
    c.l.wait(lambda: c.l.disconnected, what + ": the broker closing the connection")
    return e


@test
def wrong_password(ctx):
    c = connect(ctx, passcode="wrong", expect_error=True)
    expect_error(c, "Bad CONNECT", "wrong passcode")


@test
def unknown_destination_prefix(ctx):
    c = connect(ctx)
    c.conn.send("/nowhere/x", b"lost")
    e = expect_error(c, "Unknown destination", "unknown prefix")
    check(b"/temp-queue/" in e.body, "body lists the valid prefixes", "/temp-queue/ in body", e.body)


@test
def send_without_destination(ctx):
    c = connect(ctx)
    c.conn.send_frame("SEND", {}, b"no destination")
    expect_error(c, "Missing header", "SEND without destination")


@test
def subscribe_without_id_in_1_1(ctx):
    c = connect(ctx, "1.1")
    c.conn.send_frame("SUBSCRIBE", {"destination": dest_name(ctx)})
    expect_error(c, "Missing header", "SUBSCRIBE without id")


@test
def ack_of_unknown_id(ctx):
    c = connect(ctx)
    c.conn.send_frame("ACK", {"id": "T_nope@@session-x@@12345"})
    expect_error(c, "Unknown message id", "ACK of an unknown id")


@test
def duplicate_subscription_id(ctx):
    c = connect(ctx)
    q = dest_name(ctx)
    c.subscribe(q, "dup")
    c.conn.subscribe(q, id="dup")
    expect_error(c, "Duplicated subscription identifier", "second SUBSCRIBE with the same id")


@test
def missing_queue_and_exchange(ctx):
    c = connect(ctx)
    c.conn.subscribe("/amq/queue/" + dest_name(ctx)[len("/queue/"):], id="x")
    e = expect_error(c, "not_found", "/amq/queue/ of a missing queue")
    check(b"NOT_FOUND - no queue" in e.body, "RabbitMQ's text", "NOT_FOUND - no queue ...", e.body)
    c = connect(ctx)
    c.conn.send("/exchange/no-such-exchange/k", b"x")
    expect_error(c, "not_found", "SEND to a missing exchange")


@test
def unknown_transaction(ctx):
    c = connect(ctx)
    c.conn.commit("never-begun")
    expect_error(c, "Bad transaction", "COMMIT of an unknown transaction")


@test
def others_carry_on(ctx):
    q = dest_name(ctx)
    bystander = connect(ctx)
    bystander.subscribe(q, "b")
    for _ in range(3):
        bad = connect(ctx)
        bad.conn.send("/bogus", b"x")
        bad.l.wait_error("bogus destination")
    p = connect(ctx)
    p.send(q, b"still working")
    eq(bodies(bystander.l.take(1, "bystander delivery")), [b"still working"], "bystander unaffected")


if __name__ == "__main__":
    main(default_timeout=40)
