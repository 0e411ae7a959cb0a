"""Shared helpers for the pika / aio-pika scenario scripts.

Contract (same for every script in this directory):
  * broker address comes from $AMQP_URL
    (default amqp://guest:guest@127.0.0.1:5672/%2F);
  * exit code 0 = every check passed, 1 = at least one failed;
  * failures are printed to stderr as "FAIL <test>: <what>: expected ..., got ...";
  * $SCENARIO_TIMEOUT (seconds, default 60) bounds the whole script: a watchdog
    kills it with exit 1 if it hangs (e.g. a broker that never answers);
  * optional argv: names (or substrings) of tests to run, default all.

Every test gets its own Ctx which hands out unique names (uuid suffix) so the
scripts can run in parallel against one broker, and deletes what it declared
at the end of the test.
"""

import os
import sys


from _venv import bootstrap  # noqa: E402

bootstrap("pika")

import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402
import urllib.parse  # noqa: E402

import pika  # noqa: E402
from pika.exceptions import (  # noqa: E402,F401
    AMQPConnectionError,
    ChannelClosed,
    ChannelClosedByBroker,
    ConnectionClosed,
    ConnectionClosedByBroker,
)

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
SCRIPT = os.path.splitext(os.path.basename(sys.argv[0]))[0]


def url_parts(url=AMQP_URL):
    """Return (user, password, host, port, vhost) from an amqp URL."""
    u = urllib.parse.urlparse(url)
    vhost = urllib.parse.unquote(u.path[1:]) if len(u.path) > 1 else "/"
    return (
        urllib.parse.unquote(u.username or "guest"),
        urllib.parse.unquote(u.password or "guest"),
        u.hostname or "127.0.0.1",
        u.port or 5672,
        vhost,
    )


USER, PASSWORD, HOST, PORT, VHOST = url_parts()


def url_with(user=None, password=None, vhost=None):
    """AMQP_URL with some parts replaced."""
    u = urllib.parse.urlparse(AMQP_URL)
    netloc = "%s:%s@%s:%d" % (
        urllib.parse.quote(user if user is not None else USER, safe=""),
        urllib.parse.quote(password if password is not None else PASSWORD, safe=""),
        HOST if ":" not in HOST else "[%s]" % HOST,
        PORT,
    )
    path = "/" + urllib.parse.quote(vhost if vhost is not None else VHOST, safe="")
    return urllib.parse.urlunparse((u.scheme, netloc, path, "", u.query, ""))


class Failure(AssertionError):
    pass


def fail(msg):
    raise Failure(msg)


def eq(got, expected, what):
    if got != expected:
        fail("%s: expected %r, got %r" % (what, expected, got))


def check(cond, what, expected=None, got=None):
    if not cond:
        if expected is None and got is None:
            fail(what)
        fail("%s: expected %s, got %r" % (what, expected, got))


def startswith(got, prefix, what):
    if not isinstance(got, str) or not got.startswith(prefix):
        fail("%s: expected text starting with %r, got %r" % (what, prefix, got))


# ---------------------------------------------------------------------------
# Expected-error helpers


def _match_close(exc, code, text_prefix, what, kind):
    eq(exc.reply_code, code, "%s: %s reply code" % (what, kind))
    if text_prefix is not None:
        startswith(exc.reply_text, text_prefix, "%s: %s reply text" % (what, kind))


def expect_channel_close(fn, code, text_prefix, what):
    """Run fn(); it must fail with a broker channel.close(code, text...)."""
    try:
        fn()
    except ChannelClosedByBroker as e:
        _match_close(e, code, text_prefix, what, "channel.close")
        return e
    except ConnectionClosedByBroker as e:
        fail("%s: expected channel.close %d %r, got connection.close %d %r" % (what, code, text_prefix, e.reply_code, e.reply_text))
    fail("%s: expected channel.close %d %r, but the operation succeeded" % (what, code, text_prefix))


def expect_connection_close(fn, code, text_prefix, what):
    """Run fn(); it must fail with a broker connection.close(code, text...)."""
    try:
        fn()
    except ConnectionClosedByBroker as e:
        _match_close(e, code, text_prefix, what, "connection.close")
        return e
    except ChannelClosedByBroker as e:
        fail("%s: expected connection.close %d %r, got channel.close %d %r" % (what, code, text_prefix, e.reply_code, e.reply_text))
    fail("%s: expected connection.close %d %r, but the operation succeeded" % (what, code, text_prefix))


# ---------------------------------------------------------------------------
# Waiting helpers (never fixed sleeps: events are awaited with a deadline)

DEFAULT_WAIT = float(os.environ.get("SCENARIO_WAIT", "5"))


def wait_for(conn, pred, what, timeout=DEFAULT_WAIT):
    """Pump conn's I/O until pred() is true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        left = deadline - time.monotonic()
        if left <= 0:
            fail("timed out after %.1fs waiting for %s" % (timeout, what))
        conn.process_data_events(time_limit=min(0.05, left))


def poll_until(fn, what, timeout=DEFAULT_WAIT, interval=0.02):
    """Call fn() until it returns a truthy value (returned); fail after timeout.

    Used only for broker-side state changes that send the client no event
    (TTL expiry, x-expires, auto-delete) -- the interval is a poll period, not
    a guess at how long the broker takes."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            fail("timed out after %.1fs waiting for %s (last value %r)" % (timeout, what, last))
        time.sleep(interval)


class Collector:
    """basic_consume callback that records (method, properties, body)."""

    def __init__(self, ch=None, ack=False):
        self.msgs = []
        self.ch = ch
        self.ack = ack

    def __call__(self, ch, method, props, body):
        self.msgs.append((method, props, body))
        if self.ack:
            ch.basic_ack(method.delivery_tag)

    def __len__(self):
        return len(self.msgs)

    @property
    def bodies(self):
        return [m[2] for m in self.msgs]


def consume_n(conn, ch, queue, n, what, auto_ack=True, timeout=DEFAULT_WAIT, **kw):
    """Consume exactly n messages from queue (waiting for them), cancel, return them."""
    col = Collector()
    tag = ch.basic_consume(queue, col, auto_ack=auto_ack, **kw)
    wait_for(conn, lambda: len(col) >= n, "%d message(s) on %s (%s); got %d" % (n, queue, what, len(col)), timeout)
    ch.basic_cancel(tag)
    return col.msgs


def get_all(ch, queue, auto_ack=True):
    """basic.get until get-empty; returns list of (method, props, body)."""
    out = []
    while True:
        m, p, b = ch.basic_get(queue, auto_ack=auto_ack)
        if m is None:
            return out
        out.append((m, p, b))


def msg_count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def drain_bodies(ch, queue):
    return [b for (_, _, b) in get_all(ch, queue)]


# ---------------------------------------------------------------------------
# Per-test context


class Ctx:
    def __init__(self, test_name):
        self.test = test_name
        self.conns = []
        self.queues = []
        self.exchanges = []

    def name(self, prefix="q"):
        return "sy.%s.%s.%s" % (SCRIPT, prefix, uuid.uuid4().hex[:12])

    def qname(self, prefix="q"):
        n = self.name(prefix)
        self.queues.append(n)
        return n

    def xname(self, prefix="x"):
        n = self.name(prefix)
        self.exchanges.append(n)
        return n

    def track_queue(self, q):
        self.queues.append(q)
        return q

    def connect(self, url=None, **params):
        p = pika.URLParameters(url or AMQP_URL)
        p.connection_attempts = 1
        p.socket_timeout = 5
        p.stack_timeout = 10
        p.blocked_connection_timeout = 10
        p.client_properties = {"connection_name": "%s.%s" % (SCRIPT, self.test)}
        for k, v in params.items():
            setattr(p, k, v)
        c = pika.BlockingConnection(p)
        self.conns.append(c)
        return c

    def channel(self, conn=None):
        conn = conn or self.connect()
        return conn, conn.channel()

    def cleanup(self):
        for c in self.conns:
            try:
                if c.is_open:
                    c.close()
            except Exception:
                pass
        self.conns = []
        if not (self.queues or self.exchanges):
            return
        try:
            c = self.connect()
        except Exception:
            return
        ch = None
        for kind, names in (("q", self.queues), ("x", self.exchanges)):
            for n in names:
                try:
                    if ch is None or not ch.is_open:
                        ch = c.channel()
                    if kind == "q":
                        ch.queue_delete(n)
                    else:
                        ch.exchange_delete(n)
                except Exception:
                    ch = None
        try:
            c.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------
# Runner

TESTS = []
_current = {"name": None}


def test(fn):
    TESTS.append(fn)
    return fn


def _watchdog(limit):
    def fire():
        sys.stderr.write("FAIL %s: watchdog: script exceeded %ss (running test: %s)\n" % (SCRIPT, limit, _current["name"]))
        sys.stderr.flush()
        os._exit(1)

    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()


def main(default_timeout=60):
    _watchdog(float(os.environ.get("SCENARIO_TIMEOUT", default_timeout)))
    filters = sys.argv[1:]
    selected = [t for t in TESTS if not filters or any(f in t.__name__ for f in filters)]
    passed = failed = 0
    t_all = time.monotonic()
    for fn in selected:
        _current["name"] = fn.__name__
        ctx = Ctx(fn.__name__)
        t0 = time.monotonic()
        try:
            fn(ctx)
        except Failure as e:
            failed += 1
            sys.stderr.write("FAIL %s.%s: %s\n" % (SCRIPT, fn.__name__, e))
        except Exception as e:  # unexpected client/broker behaviour
            failed += 1
            sys.stderr.write("FAIL %s.%s: unexpected %s: %s\n" % (SCRIPT, fn.__name__, type(e).__name__, e))
            traceback.print_exc(file=sys.stderr)
        else:
            passed += 1
            print("ok   %s.%s (%.2fs)" % (SCRIPT, fn.__name__, time.monotonic() - t0))
        finally:
            try:
                ctx.cleanup()
            except Exception:
                pass
        sys.stdout.flush()
        sys.stderr.flush()
    print("%s took %.2fs" % (SCRIPT, time.monotonic() - t_all))
    print("%s: %d passed, %d failed" % (SCRIPT, passed, failed))
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: don't let a stuck pika thread keep the process alive
    os._exit(0 if failed == 0 and selected else 1)
