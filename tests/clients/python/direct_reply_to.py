#!/usr/bin/env python3
"""RPC over the amq.rabbitmq.reply-to pseudo-queue (direct reply-to)."""

from _common import (VHOST, ChannelClosedByBroker, eq, expect_channel_close, fail, main, pika, test, wait_for)
from pika.exceptions import UnroutableError

RT = "amq.rabbitmq.reply-to"


def start_server(ctx, conn, reply_to_seen):
    """Echo server on its own queue: replies body.upper() with the request's correlation_id."""
    ch = conn.channel()
    q = ctx.qname("rpc")
    ch.queue_declare(q)

    def on_request(c, m, p, b):
        reply_to_seen.append(p.reply_to)
        c.basic_publish("", p.reply_to, b.upper(), pika.BasicProperties(correlation_id=p.correlation_id))
        c.basic_ack(m.delivery_tag)
    ch.basic_consume(q, on_request)
    return q


@test
def rpc_round_trip(ctx):
    server_conn = ctx.connect()
    seen = []
    q = start_server(ctx, server_conn, seen)
    client_conn = ctx.connect()
    ch = client_conn.channel()
    replies = []
    tag = ch.basic_consume(RT, lambda c, m, p, b: replies.append((m, p, b)), auto_ack=True)
    for i in range(5):
        ch.basic_publish("", q, b"req-%d" % i, pika.BasicProperties(reply_to=RT, correlation_id="c%d" % i))

    def pump():
        server_conn.process_data_events(time_limit=0)
        return len(replies) == 5
    wait_for(client_conn, pump, "5 replies")
    eq([(p.correlation_id, b) for (_, p, b) in replies], [("c%d" % i, b"REQ-%d" % i) for i in range(5)],
       "replies in order with correlation ids")
    name = seen[0]
    if not name.startswith(RT + ".") or len(name) <= len(RT) + 1:
        fail("server-side reply_to: expected 'amq.rabbitmq.reply-to.<opaque>', got %r" % name)
    eq(set(seen), {name}, "one reply address per channel")
    m = replies[0][0]
    eq((m.exchange, m.routing_key, m.consumer_tag, m.delivery_tag, m.redelivered), ("", name, tag, 1, False),
       "reply delivery fields")


@test
def reply_to_only_rewritten_when_exact(ctx):
    conn = ctx.connect()
    rec = conn.channel()
    rq = ctx.qname("rec")
    rec.queue_declare(rq)
    ch = conn.channel()
    ch.basic_consume(RT, lambda *a: None, auto_ack=True)
    for rt in [RT + ".custom", "plain-queue"]:
        ch.basic_publish("", rq, b"r", pika.BasicProperties(reply_to=rt))
    got = []
    rec.basic_consume(rq, lambda c, m, p, b: got.append(p.reply_to), auto_ack=True)
    wait_for(conn, lambda: len(got) == 2, "2 requests")
    eq(got, [RT + ".custom", "plain-queue"], "other reply_to values pass through unchanged")


@test
def declare_reply_to(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    ok = ch.queue_declare(RT, passive=True)
    eq((ok.method.queue, ok.method.message_count, ok.method.consumer_count), (RT, 0, 1),
       "passive declare of amq.rabbitmq.reply-to (always reports 1 consumer)")
    ok = ch.queue_declare(RT)
    eq((ok.method.queue, ok.method.message_count, ok.method.consumer_count), (RT, 0, 1),
       "declare of amq.rabbitmq.reply-to")


@test
def reply_address_lifecycle(ctx):
    conn = ctx.connect()
    cli = conn.channel()
    cli.basic_consume(RT, lambda *a: None, auto_ack=True)
    rec = conn.channel()
    rq = ctx.qname("rec")
    rec.queue_declare(rq)
    cli.basic_publish("", rq, b"r", pika.BasicProperties(reply_to=RT))
    got = []
    rec.basic_consume(rq, lambda c, m, p, b: got.append(p.reply_to), auto_ack=True)
    wait_for(conn, lambda: len(got) == 1, "request")
    name = got[0]
    srv = conn.channel()
    ok = srv.queue_declare(name, passive=True)
    eq((ok.method.queue, ok.method.message_count, ok.method.consumer_count), (name, 0, 1),
       "passive declare of a live reply address")
    srv.confirm_delivery()
    for bogus in [name + "x", RT + ".garbage"]:
        try:
            srv.basic_publish("", bogus, b"x", mandatory=True)
        except UnroutableError as e:
            r = e.messages[0].method
            eq((r.reply_code, r.reply_text, r.routing_key), (312, "NO_ROUTE", bogus), "return for bogus reply address")
        else:
            fail("expected basic.return for mandatory publish to bogus reply address %r" % bogus)
    srv.basic_publish("", RT + ".garbage", b"x")  # not mandatory: silently dropped
    cli.close()
    try:
        srv.basic_publish("", name, b"late", mandatory=True)
    except UnroutableError as e:
        eq(e.messages[0].method.reply_code, 312, "reply to a closed requester channel is returned")
    else:
        fail("expected basic.return for a reply to a closed requester channel")
    expect_channel_close(lambda: srv.queue_declare(name, passive=True), 404,
                         "NOT_FOUND - no queue '%s' in vhost '%s'" % (name, VHOST),
                         "passive declare of a dead reply address")


@test
def reply_to_errors(ctx):
    conn = ctx.connect()
    q = ctx.qname()
    conn.channel().queue_declare(q)
    ch = conn.channel()

    def publish_without_consumer():
        ch.basic_publish("", q, b"x", pika.BasicProperties(reply_to=RT))
        ch.queue_declare(q, passive=True)
    expect_channel_close(publish_without_consumer, 406, "PRECONDITION_FAILED - fast reply consumer does not exist",
                         "publish with reply_to=amq.rabbitmq.reply-to before consuming from it")
    ch = conn.channel()
    expect_channel_close(lambda: ch.basic_consume(RT, lambda *a: None, auto_ack=False), 406,
                         "PRECONDITION_FAILED - reply consumer cannot acknowledge", "consume reply-to with acks")
    ch = conn.channel()

    def twice():
        ch.basic_consume(RT, lambda *a: None, auto_ack=True)
        ch.basic_consume(RT, lambda *a: None, auto_ack=True)
    expect_channel_close(twice, 406, "PRECONDITION_FAILED - reply consumer already set", "second reply-to consumer")
    ch = conn.channel()
    expect_channel_close(lambda: ch.basic_get(RT), 404, "NOT_FOUND - no queue '%s' in vhost '%s'" % (RT, VHOST),
                         "basic.get from amq.rabbitmq.reply-to")


@test
def cancel_reply_consumer(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    tag = ch.basic_consume(RT, lambda *a: None, auto_ack=True)
    ch.basic_cancel(tag)
    q = ctx.qname()
    ch.queue_declare(q)
    try:
        ch.basic_publish("", q, b"x", pika.BasicProperties(reply_to=RT))
        ch.queue_declare(q, passive=True)
    except ChannelClosedByBroker as e:
        eq((e.reply_code, e.reply_text), (406, "PRECONDITION_FAILED - fast reply consumer does not exist"),
           "publish after cancelling the reply consumer")
    else:
        fail("expected 406 after cancelling the reply consumer")


if __name__ == "__main__":
    main()
