#!/usr/bin/env python3
"""aio-pika (pamqp) scenarios: wire-level field types in headers survive
delivery, dead-lettering (which makes RabbitMQ re-encode the table) and BCC
stripping; x-death field types; concurrent publishing with confirms.

pamqp encodes ints with the smallest field type (b/s/u/I/i/l) and floats as
'f', which pika cannot produce. Decoding is patched so every scalar comes back
as Tagged(type-letter, value), so the checks see the exact wire types.
"""

import asyncio
import datetime
import decimal

from _common import AMQP_URL, eq, fail, main, test

import aio_pika  # noqa: E402
from pamqp import decode as _decode  # noqa: E402


class Tagged(tuple):
    def __new__(cls, tag, value):
        return tuple.__new__(cls, (tag, value))

    def __repr__(self):
        return "%s:%r" % (self[0], self[1])


def _tagging(tag, fn):
    def wrapper(data):
        n, v = fn(data)
        return n, (v if tag in ("A", "F") else Tagged(tag, v))
    return wrapper


for _k, _fn in list(_decode.TABLE_MAPPING.items()):
    _decode.TABLE_MAPPING[_k] = _tagging(_k.decode("latin-1"), _fn)


SENT = {
    "byte": 5,
    "neg-byte": -100,
    "short": -1000,
    "ushort": 40000,
    "int": 100000,
    "uint": 3000000000,
    "long": 2**40,
    "float": 1.5,
    "true": True,
    "decimal": decimal.Decimal("1.25"),
    "ts": datetime.datetime(2023, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc),
    "str": "text",
    "bytes": bytearray(b"\x00\x01\xfe"),
    "void": None,
    "array": [1, "two", 70000, 2.5],
    "table": {"inner": 300, "deeper": {"x": False}},
}

WANT = {
    "byte": ("b", 5),
    "neg-byte": ("b", -100),
    "short": ("s", -1000),
    "ushort": ("u", 40000),
    "int": ("I", 100000),
    "uint": ("i", 3000000000),
    "long": ("l", 2**40),
    "float": ("f", 1.5),
    "true": ("t", True),
    "decimal": ("D", decimal.Decimal("1.25")),
    "ts": ("T", datetime.datetime(2023, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)),
    "str": ("S", b"text"),
    "bytes": ("x", bytearray(b"\x00\x01\xfe")),
    "void": ("V", None),
    "array": [("b", 1), ("S", b"two"), ("I", 70000), ("f", 2.5)],
    "table": {"inner": ("s", 300), "deeper": {"x": ("t", False)}},
}


def norm(v):
    """Tagged -> plain (tag, value) tuples; longstr values as bytes."""
    if isinstance(v, Tagged):
        tag, val = v
        if tag == "S" and isinstance(val, str):
            val = val.encode()
        return (tag, val)
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    return v


def check_sent_headers(h, what):
    for k, want in WANT.items():
        eq(norm(h.get(k, "<missing>")), want, "%s: header %r (type, value)" % (what, k))


def atest(fn):
    def run(ctx):
        asyncio.run(asyncio.wait_for(fn(ctx), 20))
    run.__name__ = fn.__name__
    return test(run)


async def get_one(queue, what, timeout=5):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        msg = await queue.get(no_ack=True, fail=False)
        if msg is not None:
            return msg
        if asyncio.get_running_loop().time() > deadline:
            fail("timed out waiting for %s" % what)
        await asyncio.sleep(0.01)  # poll period of basic.get, not a guess at broker latency


@atest
async def field_types_round_trip(ctx):
    conn = await aio_pika.connect(AMQP_URL)
    try:
        ch = await conn.channel()  # publisher confirms on by default
        q = await ch.declare_queue(ctx.qname(), auto_delete=False)
        await ch.default_exchange.publish(aio_pika.Message(b"typed", headers=dict(SENT)), routing_key=q.name)
        msg = await get_one(q, "typed message")
        check_sent_headers(msg.headers, "delivered")
    finally:
        await conn.close()


@atest
async def field_types_survive_dead_lettering(ctx):
    conn = await aio_pika.connect(AMQP_URL)
    try:
        ch = await conn.channel()
        dlx = await ch.declare_exchange(ctx.xname("dlx"), aio_pika.ExchangeType.FANOUT)
        dlq = await ch.declare_queue(ctx.qname("dlq"))
        await dlq.bind(dlx)
        src = await ch.declare_queue(ctx.qname("src"), arguments={"x-dead-letter-exchange": dlx.name})
        await ch.default_exchange.publish(aio_pika.Message(b"typed", headers=dict(SENT)), routing_key=src.name)
        m = await src.get(no_ack=False)  # confirmed publish + basic.get on the same connection: it is there
        await m.reject(requeue=False)
        dead = await get_one(dlq, "dead-lettered message")
        h = dead.headers
        check_sent_headers(h, "dead-lettered")
        [death] = h["x-death"]
        eq(sorted(death.keys()), ["count", "exchange", "queue", "reason", "routing-keys", "time"], "x-death keys")
        eq(norm(death["count"]), ("l", 1), "x-death count is a long ('l')")
        eq(norm(death["reason"]), ("S", b"rejected"), "x-death reason")
        eq(norm(death["queue"]), ("S", src.name.encode()), "x-death queue")
        eq(norm(death["exchange"]), ("S", b""), "x-death exchange")
        eq(norm(death["routing-keys"]), [("S", src.name.encode())], "x-death routing-keys is an array of longstr")
        eq(death["time"][0], "T", "x-death time is a timestamp ('T')")
        for k, v in [("x-first-death-reason", b"rejected"), ("x-first-death-queue", src.name.encode()),
                     ("x-first-death-exchange", b"")]:
            eq(norm(h[k]), ("S", v), k)
    finally:
        await conn.close()


@atest
async def field_types_survive_bcc_stripping(ctx):
    conn = await aio_pika.connect(AMQP_URL)
    try:
        ch = await conn.channel()
        q1 = await ch.declare_queue(ctx.qname("to"))
        q2 = await ch.declare_queue(ctx.qname("bcc"))
        headers = dict(SENT)
        headers["BCC"] = [q2.name]
        await ch.default_exchange.publish(aio_pika.Message(b"bcc", headers=headers), routing_key=q1.name)
        for q in (q1, q2):
            m = await get_one(q, "copy in %s" % q.name)
            eq("BCC" in m.headers, False, "BCC removed in %s" % q.name)
            check_sent_headers(m.headers, "after BCC stripping (%s)" % q.name)
    finally:
        await conn.close()


@atest
async def concurrent_confirmed_publishes(ctx):
    conn = await aio_pika.connect(AMQP_URL)
    try:
        ch = await conn.channel()
        q = await ch.declare_queue(ctx.qname())
        n = 1000
        await asyncio.gather(*[ch.default_exchange.publish(aio_pika.Message(b"%d" % i), routing_key=q.name)
                               for i in range(n)])
        got = []
        done = asyncio.Event()

        async def on_msg(m):
            got.append(m.body)
            await m.ack()
            if len(got) == n:
                done.set()
        await ch.set_qos(prefetch_count=100)
        await q.consume(on_msg)
        try:
            await asyncio.wait_for(done.wait(), 10)
        except asyncio.TimeoutError:
            fail("received %d of %d messages" % (len(got), n))
        eq(got, [b"%d" % i for i in range(n)], "all confirmed messages delivered in order")
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
