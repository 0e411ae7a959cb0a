#!/usr/bin/env python3
"""Many concurrent connections: each declares a queue, publishes and gets one message.

$MANY_CONNECTIONS (default 1000) connections are all held open at the same
time; $MANY_CONNECTIONS_THREADS (default 50) worker threads drive them.
The whole scenario must finish within $MANY_CONNECTIONS_BUDGET seconds
(default 45). Note: the broker needs more than 1000 file descriptors
(RabbitMQ's default ulimit of 1024 only allows ~830 sockets).
"""

import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor

from _common import (Ctx, eq, fail, main, pika, test)

N = int(os.environ.get("MANY_CONNECTIONS", "1000"))
THREADS = int(os.environ.get("MANY_CONNECTIONS_THREADS", "50"))
BUDGET = float(os.environ.get("MANY_CONNECTIONS_BUDGET", "45"))


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        fail("client needs %d file descriptors, RLIMIT_NOFILE is %d" % (need, soft))


@test
def thousand_connections(ctx):
    raise_fd_limit(N + 200)
    t0 = time.monotonic()
    deadline = t0 + BUDGET
    conns = [None] * N
    errors = []

    def open_one(i):
        try:
            c = Ctx.connect(ctx, socket_timeout=20, stack_timeout=30, heartbeat=0)
            conns[i] = c
        except Exception as e:  # collect, report below
            errors.append((i, "open", repr(e)))

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(open_one, range(N)))
    t_open = time.monotonic() - t0
    if errors:
        fail("%d of %d connections failed to open, first: %r" % (len(errors), N, errors[0]))
    eq(sum(1 for c in conns if c is not None and c.is_open), N, "connections open at the same time")

    results = [None] * N

    def work(i):
        c = conns[i]
        try:
            ch = c.channel()
            q = ch.queue_declare("", exclusive=True).method.queue
            body = b"conn-%d" % i
            ch.basic_publish("", q, body, pika.BasicProperties(correlation_id=str(i)))
            m, p, b = None, None, None
            while m is None and time.monotonic() < deadline:
                m, p, b = ch.basic_get(q, auto_ack=True)
            results[i] = (b, p.correlation_id if p else None, m.message_count if m else None)
        except Exception as e:
            errors.append((i, "work", repr(e)))

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(work, range(N)))
    t_work = time.monotonic() - t0 - t_open
    if errors:
        fail("%d of %d connections failed declare/publish/get, first: %r" % (len(errors), N, errors[0]))
    for i, r in enumerate(results):
        eq(r, (b"conn-%d" % i, str(i), 0), "connection %d: (body, correlation_id, message_count)" % i)

    def close_one(i):
        try:
            conns[i].close()
        except Exception as e:
            errors.append((i, "close", repr(e)))

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(close_one, range(N)))
    ctx.conns = []
    if errors:
        fail("%d connections failed to close cleanly, first: %r" % (len(errors), errors[0]))
    total = time.monotonic() - t0
    print("  %d connections: open %.2fs, work %.2fs, total %.2fs" % (N, t_open, t_work, total))
    if total > BUDGET:
        fail("took %.1fs, budget %.0fs" % (total, BUDGET))


if __name__ == "__main__":
    main(default_timeout=BUDGET + 30)
