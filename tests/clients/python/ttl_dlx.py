#!/usr/bin/env python3
"""Message TTL (queue and per-message) and dead-lettering with x-death headers."""

import datetime

from _common import (Collector, consume_n, drain_bodies, eq, expect_channel_close, fail, get_all, main, msg_count,
                     pika, poll_until, test, wait_for)


def setup_dlx(ctx, ch, src_args=None, dlrk=None, src_name=None):
    """src queue dead-letters into fanout exchange dlx -> dlq. Returns (src, dlx, dlq)."""
    dlx = ctx.xname("dlx")
    dlq = ctx.qname("dlq")
    src = src_name or ctx.qname("src")
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    args = {"x-dead-letter-exchange": dlx}
    if dlrk is not None:
        args["x-dead-letter-routing-key"] = dlrk
    args.update(src_args or {})
    ch.queue_declare(src, arguments=args)
    return src, dlx, dlq


def check_time(t, what):
    if not isinstance(t, datetime.datetime):
        fail("%s: expected a timestamp ('T' field, decoded as datetime), got %r" % (what, t))
    now = datetime.datetime.now(datetime.timezone.utc)
    if abs((now - t).total_seconds()) > 120:
        fail("%s: expected about now (%s), got %s" % (what, now, t))


def check_death(entry, what, **want):
    """Compare one x-death table; 'time' is checked separately."""
    want_keys = set(want) | {"time"}
    eq(sorted(entry.keys()), sorted(want_keys), "%s: x-death entry keys" % what)
    for k, v in want.items():
        eq(entry[k], v, "%s: x-death %s" % (what, k))
    eq(isinstance(entry["count"], int) and not isinstance(entry["count"], bool), True,
       "%s: x-death count is an integer" % what)
    check_time(entry["time"], "%s: x-death time" % what)


def first_death(h, reason, queue, exchange, what):
    eq((h.get("x-first-death-reason"), h.get("x-first-death-queue"), h.get("x-first-death-exchange")),
       (reason, queue, exchange), "%s: x-first-death-reason/queue/exchange" % what)


@test
def reject_dead_letters(ctx):
    conn, ch = ctx.channel()
    src, dlx, dlq = setup_dlx(ctx, ch)
    props = pika.BasicProperties(headers={"app": "v", "n": 7}, priority=3, message_id="m-1", content_type="text/plain",
                                 correlation_id="c-1")
    ch.basic_publish("", src, b"payload", props)
    [(m, _, _)] = consume_n(conn, ch, src, 1, "src delivery", auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    [(dm, dp, body)] = consume_n(conn, ch, dlq, 1, "dead-lettered message")
    eq(body, b"payload", "body")
    eq((dm.exchange, dm.routing_key, dm.redelivered), (dlx, src, False),
       "dead-letter delivery: exchange is the DLX, routing key the original one, not redelivered")
    eq((dp.priority, dp.message_id, dp.content_type, dp.correlation_id), (3, "m-1", "text/plain", "c-1"),
       "other properties kept")
    h = dp.headers
    eq((h.get("app"), h.get("n")), ("v", 7), "original headers kept")
    eq(sorted(h.keys()), sorted(["app", "n", "x-death", "x-first-death-exchange", "x-first-death-queue",
                                 "x-first-death-reason"]), "header keys after dead-lettering")
    eq(len(h["x-death"]), 1, "x-death entries")
    check_death(h["x-death"][0], "reject", count=1, reason="rejected", queue=src, exchange="", **{"routing-keys": [src]})
    first_death(h, "rejected", src, "", "reject")
    eq(msg_count(ch, src), 0, "source queue empty")


@test
def nack_multiple_dead_letters_in_order(ctx):
    conn, ch = ctx.channel()
    x = ctx.xname("in")
    ch.exchange_declare(x, "direct")
    src, dlx, dlq = setup_dlx(ctx, ch)
    ch.queue_bind(src, x, "rk-a")
    ch.queue_bind(src, x, "rk-b")
    ch.basic_publish(x, "rk-a", b"1")
    ch.basic_publish(x, "rk-b", b"2")
    ch.basic_publish(x, "rk-a", b"3")
    msgs = consume_n(conn, ch, src, 3, "src deliveries", auto_ack=False)
    ch.basic_nack(msgs[1][0].delivery_tag, multiple=True, requeue=False)  # 1 and 2
    ch.basic_nack(msgs[2][0].delivery_tag, multiple=False, requeue=True)  # 3 goes back, not dead-lettered
    got = consume_n(conn, ch, dlq, 2, "dead-lettered by nack")
    eq([b for (_, _, b) in got], [b"1", b"2"], "dead-lettered bodies in order")
    for (dm, dp, b), rk in zip(got, ["rk-a", "rk-b"]):
        eq((dm.exchange, dm.routing_key), (dlx, rk), "delivery of %r" % b)
        check_death(dp.headers["x-death"][0], "nack %r" % b, count=1, reason="rejected", queue=src, exchange=x,
                    **{"routing-keys": [rk]})
        first_death(dp.headers, "rejected", src, x, "nack")
    eq(drain_bodies(ch, src), [b"3"], "requeued message stays in source")


@test
def queue_ttl_expiry(ctx):
    conn, ch = ctx.channel()
    src, dlx, dlq = setup_dlx(ctx, ch, src_args={"x-message-ttl": 50})
    ch.basic_publish("", src, b"old", pika.BasicProperties(headers={"k": "v"}))
    ch.basic_publish("", src, b"older-not")
    got = consume_n(conn, ch, dlq, 2, "expired by x-message-ttl")
    eq([b for (_, _, b) in got], [b"old", b"older-not"], "expired messages dead-lettered in order")
    dm, dp, _ = got[0]
    eq(dp.expiration, None, "no expiration property")
    eq(dp.headers["k"], "v", "header kept")
    check_death(dp.headers["x-death"][0], "queue ttl", count=1, reason="expired", queue=src, exchange="",
                **{"routing-keys": [src]})
    first_death(dp.headers, "expired", src, "", "queue ttl")
    eq(msg_count(ch, src), 0, "source empty")


@test
def queue_ttl_without_dlx_drops(ctx):
    conn, ch = ctx.channel()
    q = ctx.qname()
    ch.queue_declare(q, arguments={"x-message-ttl": 30})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"x")
    poll_until(lambda: msg_count(ch, q) == 0, "message to expire (x-message-ttl=30)")
    eq(get_all(ch, q), [], "nothing to get")


@test
def per_message_expiration(ctx):
    conn, ch = ctx.channel()
    src, dlx, dlq = setup_dlx(ctx, ch)
    ch.basic_publish("", src, b"short", pika.BasicProperties(expiration="20", message_id="e1"))
    [(dm, dp, b)] = consume_n(conn, ch, dlq, 1, "per-message expiry")
    eq(b, b"short", "body")
    eq(dp.expiration, None, "expiration property removed when dead-lettered")
    eq(dp.message_id, "e1", "message_id kept")
    check_death(dp.headers["x-death"][0], "per-message ttl", count=1, reason="expired", queue=src, exchange="",
                **{"routing-keys": [src], "original-expiration": "20"})
    first_death(dp.headers, "expired", src, "", "per-message ttl")


@test
def rejected_message_with_expiration(ctx):
    """original-expiration is recorded (and expiration removed) for any
    dead-lettering reason, not only expiry."""
    conn, ch = ctx.channel()
    src, dlx, dlq = setup_dlx(ctx, ch)
    ch.basic_publish("", src, b"r", pika.BasicProperties(expiration="60000"))
    [(m, p, _)] = consume_n(conn, ch, src, 1, "src", auto_ack=False)
    eq(p.expiration, "60000", "expiration delivered unchanged")
    ch.basic_reject(m.delivery_tag, requeue=False)
    [(dm, dp, b)] = consume_n(conn, ch, dlq, 1, "dead-lettered")
    eq(dp.expiration, None, "expiration property removed")
    check_death(dp.headers["x-death"][0], "rejected with expiration", count=1, reason="rejected", queue=src,
                exchange="", **{"routing-keys": [src], "original-expiration": "60000"})


@test
def expiration_zero_and_min_of_ttls(ctx):
    conn, ch = ctx.channel()
    src, dlx, dlq = setup_dlx(ctx, ch, src_args={"x-message-ttl": 60000})
    # expiration "0": no consumer ready -> expires at once; smaller of queue/message TTL wins
    ch.basic_publish("", src, b"zero", pika.BasicProperties(expiration="0"))
    ch.basic_publish("", src, b"ten", pika.BasicProperties(expiration="10"))
    got = consume_n(conn, ch, dlq, 2, "expired")
    eq([b for (_, _, b) in got], [b"zero", b"ten"], "expired in order")
    eq(got[0][1].headers["x-death"][0]["original-expiration"], "0", "original-expiration of '0'")
    # with a consumer waiting, an expiration "0" message is delivered
    col = Collector()
    ch.basic_consume(src, col, auto_ack=True)
    ch.basic_publish("", src, b"delivered", pika.BasicProperties(expiration="0"))
    wait_for(conn, lambda: len(col) == 1, "expiration 0 message delivered to a ready consumer")
    eq(col.msgs[0][1].expiration, "0", "expiration property delivered unchanged")


@test
def expired_message_behind_head_never_delivered(ctx):
    conn, ch = ctx.channel()
    src, dlx, dlq = setup_dlx(ctx, ch)
    ch.confirm_delivery()
    ch.basic_publish("", src, b"head")
    ch.basic_publish("", src, b"expires", pika.BasicProperties(expiration="1"))
    ch.basic_publish("", src, b"tail")
    # the clock: a lone 1 ms message in another queue has certainly expired once it is dead-lettered
    clock_q, _, clock_dlq = setup_dlx(ctx, ch)
    ch.basic_publish("", clock_q, b"tick", pika.BasicProperties(expiration="1"))
    consume_n(conn, ch, clock_dlq, 1, "clock message")
    eq(drain_bodies(ch, src), [b"head", b"tail"], "expired message is skipped, never delivered")
    [(dm, dp, b)] = consume_n(conn, ch, dlq, 1, "expired message dead-lettered")
    eq(b, b"expires", "dead-lettered body")
    eq(dp.headers["x-death"][0]["reason"], "expired", "reason")


@test
def invalid_expiration(ctx):
    conn = ctx.connect()
    q = ctx.qname()
    conn.channel().queue_declare(q)
    for exp, text in [("abc", "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"),
                      ("-1", "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}"),
                      ("1.5", "PRECONDITION_FAILED - invalid expiration '1.5': {leftover_string,\".5\"}")]:
        ch = conn.channel()

        def publish():
            ch.basic_publish("", q, b"x", pika.BasicProperties(expiration=exp))
            ch.queue_declare(q, passive=True)
        expect_channel_close(publish, 406, text, "publish with expiration %r" % exp)


@test
def maxlen_dead_letters_head(ctx):
    conn, ch = ctx.channel()
    src, dlx, dlq = setup_dlx(ctx, ch, src_args={"x-max-length": 2})
    ch.confirm_delivery()
    for i in range(4):
        ch.basic_publish("", src, b"%d" % i)
    got = consume_n(conn, ch, dlq, 2, "maxlen dead-letters")
    eq([b for (_, _, b) in got], [b"0", b"1"], "oldest messages dropped (drop-head) and dead-lettered")
    check_death(got[0][1].headers["x-death"][0], "maxlen", count=1, reason="maxlen", queue=src, exchange="",
                **{"routing-keys": [src]})
    first_death(got[0][1].headers, "maxlen", src, "", "maxlen")
    eq(drain_bodies(ch, src), [b"2", b"3"], "newest kept")


@test
def dead_letter_routing_key(ctx):
    conn, ch = ctx.channel()
    dlx = ctx.xname("dlx")
    ch.exchange_declare(dlx, "direct")
    dlq, other = ctx.qname("dlq"), ctx.qname("other")
    ch.queue_declare(dlq)
    ch.queue_declare(other)
    ch.queue_bind(dlq, dlx, "dead")
    ch.queue_bind(other, dlx, "orig")
    src = ctx.qname("src")
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead"})
    x = ctx.xname("in")
    ch.exchange_declare(x, "direct")
    ch.queue_bind(src, x, "orig")
    ch.basic_publish(x, "orig", b"m", pika.BasicProperties(headers={"CC": ["cc-key"]}))
    [(m, _, _)] = consume_n(conn, ch, src, 1, "src", auto_ack=False)
    ch.basic_nack(m.delivery_tag, requeue=False)
    [(dm, dp, b)] = consume_n(conn, ch, dlq, 1, "dead-lettered with x-dead-letter-routing-key")
    eq((dm.exchange, dm.routing_key), (dlx, "dead"), "delivery routed with the dead-letter routing key")
    # routing-keys lists the original key and the CC keys; the CC header is
    # removed because a dead-letter routing key replaced the routing
    check_death(dp.headers["x-death"][0], "dlrk", count=1, reason="rejected", queue=src, exchange=x,
                **{"routing-keys": ["orig", "cc-key"]})
    eq(dp.headers.get("CC", "<absent>"), "<absent>", "CC header removed when x-dead-letter-routing-key is set")
    eq(drain_bodies(ch, other), [], "not routed with the original key")


@test
def cc_kept_without_dead_letter_routing_key(ctx):
    """Without x-dead-letter-routing-key the message is dead-lettered with all
    its original routing keys, CC keys included, and keeps its CC header."""
    conn, ch = ctx.channel()
    dlx = ctx.xname("dlx")
    ch.exchange_declare(dlx, "direct")
    src, cc, d_src, d_cc = ctx.qname("src"), ctx.qname("cc"), ctx.qname("d-src"), ctx.qname("d-cc")
    for q in (cc, d_src, d_cc):
        ch.queue_declare(q)
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_bind(d_src, dlx, src)
    ch.queue_bind(d_cc, dlx, cc)
    ch.basic_publish("", src, b"m", pika.BasicProperties(headers={"CC": [cc]}))
    [(cm, cp, _)] = get_all(ch, cc)
    eq((cm.routing_key, cp.headers), (src, {"CC": [cc]}), "CC copy: original routing key, CC header kept")
    [(m, _, _)] = consume_n(conn, ch, src, 1, "src", auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    for q in (d_src, d_cc):
        [(dm, dp, b)] = consume_n(conn, ch, q, 1, "dead-lettered copy in %s" % q)
        eq((dm.exchange, dm.routing_key), (dlx, src), "dead-letter delivery in %s" % q)
        eq(dp.headers.get("CC"), [cc], "CC header kept")
        eq(dp.headers["x-death"][0]["routing-keys"], [src, cc], "x-death routing-keys include CC keys")


@test
def default_exchange_as_dlx(ctx):
    conn, ch = ctx.channel()
    target = ctx.qname("target")
    ch.queue_declare(target)
    src = ctx.qname("src")
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": target})
    ch.basic_publish("", src, b"m")
    [(m, _, _)] = consume_n(conn, ch, src, 1, "src", auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    [(dm, dp, b)] = consume_n(conn, ch, target, 1, "dead-lettered via default exchange")
    eq((dm.exchange, dm.routing_key), ("", target), "delivery via default exchange")


@test
def repeated_dead_lettering_x_death_history(ctx):
    """q1 --reject--> q2 --ttl--> q1 --reject--> q2: the {q1, rejected} entry is
    counted up and moved to the front, x-first-death-* never changes."""
    conn, ch = ctx.channel()
    q1, q2 = ctx.qname("q1"), ctx.qname("q2")
    ch.queue_declare(q1, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q2})
    ch.queue_declare(q2, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q1,
                                    "x-message-ttl": 10})
    ch.basic_publish("", q1, b"bounce", pika.BasicProperties(headers={"keep": True}))
    [(m, p, _)] = consume_n(conn, ch, q1, 1, "first delivery", auto_ack=False)
    eq(p.headers, {"keep": True}, "headers before any dead-lettering")
    ch.basic_reject(m.delivery_tag, requeue=False)
    [(m, p, _)] = consume_n(conn, ch, q1, 1, "back in q1 after rejection and expiry in q2", auto_ack=False)
    d = p.headers["x-death"]
    eq([(e["queue"], e["reason"], e["count"]) for e in d], [(q2, "expired", 1), (q1, "rejected", 1)],
       "x-death after 2 dead-letterings (newest first)")
    eq(d[1]["exchange"], "", "first death exchange")
    eq(d[0]["exchange"], "", "second death exchange (dead-lettered via default exchange)")
    eq(d[0]["routing-keys"], [q2], "routing keys of the second death")
    first_death(p.headers, "rejected", q1, "", "after 2")
    ch.basic_reject(m.delivery_tag, requeue=False)
    [(m, p, _)] = consume_n(conn, ch, q1, 1, "back in q1 again", auto_ack=False)
    d = p.headers["x-death"]
    eq([(e["queue"], e["reason"], e["count"]) for e in d], [(q2, "expired", 2), (q1, "rejected", 2)],
       "x-death after 4 dead-letterings: one entry per (queue, reason), counts incremented")
    first_death(p.headers, "rejected", q1, "", "after 4")
    eq(p.headers["keep"], True, "original header survives")
    ch.basic_ack(m.delivery_tag)


@test
def expiry_only_cycle_is_dropped(ctx):
    """A queue that dead-letters expired messages back to itself: the second
    expiry is a cycle without rejection, so the message is dropped."""
    conn, ch = ctx.channel()
    loop_x = ctx.xname("loop")
    ch.exchange_declare(loop_x, "fanout")
    q, tap = ctx.qname("loop"), ctx.qname("tap")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": loop_x, "x-message-ttl": 20})
    ch.queue_declare(tap)
    ch.queue_bind(q, loop_x)
    ch.queue_bind(tap, loop_x)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"cycle")
    [(m, p, b)] = consume_n(conn, ch, tap, 1, "first dead-lettering seen on the tap queue")
    eq(p.headers["x-death"][0]["count"], 1, "first dead-lettering count")
    poll_until(lambda: msg_count(ch, q) == 0, "looping message dropped")
    eq(drain_bodies(ch, tap), [], "no second dead-lettering")


@test
def missing_dlx_drops_and_requeue_does_not_dead_letter(ctx):
    conn, ch = ctx.channel()
    src = ctx.qname("src")
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": ctx.name("missing")})
    ch.basic_publish("", src, b"a")
    ch.basic_publish("", src, b"b")
    msgs = consume_n(conn, ch, src, 2, "src", auto_ack=False)
    ch.basic_reject(msgs[0][0].delivery_tag, requeue=False)  # DLX missing -> dropped silently
    ch.basic_reject(msgs[1][0].delivery_tag, requeue=True)
    got = get_all(ch, src)
    eq([b for (_, _, b) in got], [b"b"], "only the requeued message remains")
    eq(got[0][0].redelivered, True, "requeued message is redelivered")
    eq(got[0][1].headers, None, "requeue adds no x-death")


if __name__ == "__main__":
    main()
