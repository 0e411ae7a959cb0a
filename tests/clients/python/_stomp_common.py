"""Shared helpers for the stomp.py scenario scripts (stomp_*.py).

Same contract as _common.py (exit 0 = pass, "FAIL <test>: expected ..., got ..."
on stderr, a watchdog, unique names, no fixed sleeps), plus:
  * broker address from $STOMP_HOST / $STOMP_PORT (default 127.0.0.1:61613);
  * $STOMP_VHOST, if set, is sent as the `host` header (RabbitMQ needs "/");
  * clients are stomp.py Connection10/11/12 objects with a Listener that
    records every MESSAGE, ERROR, RECEIPT and heart-beat, and waits for them
    with a deadline.
"""

import os
import threading
import time
import uuid

from _common import DEFAULT_WAIT, SCRIPT, Failure, check, eq, fail, main, startswith, test  # noqa: F401

import stomp  # noqa: E402

STOMP_HOST = os.environ.get("STOMP_HOST", "127.0.0.1")
STOMP_PORT = int(os.environ.get("STOMP_PORT", "61613"))
STOMP_VHOST = os.environ.get("STOMP_VHOST")


class Listener(stomp.ConnectionListener):
    """Records what the broker sends; wait_* block (with a deadline) until it arrived."""

    def __init__(self):
        self.cond = threading.Condition()
        self.messages = []
        self.errors = []
        self.receipts = set()
        self.heartbeats = 0
        self.disconnected = False

    def _add(self, fn):
        with self.cond:
            fn()
            self.cond.notify_all()

    def on_message(self, frame):
        self._add(lambda: self.messages.append(frame))

    def on_error(self, frame):
        self._add(lambda: self.errors.append(frame))

    def on_receipt(self, frame):
        self._add(lambda: self.receipts.add(frame.headers.get("receipt-id")))

    def on_heartbeat(self):
        def bump():
            self.heartbeats += 1
        self._add(bump)

    def on_disconnected(self):
        def gone():
            self.disconnected = True
        self._add(gone)

    def wait(self, pred, what, timeout=DEFAULT_WAIT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("timed out after %.1fs waiting for %s" % (timeout, what))
                self.cond.wait(left)

    def wait_messages(self, n, what, timeout=DEFAULT_WAIT):
        self.wait(lambda: len(self.messages) >= n, "%d message(s) (%s); got %d" % (n, what, len(self.messages)), timeout)
        return list(self.messages[:n])

    def take(self, n, what, timeout=DEFAULT_WAIT):
        """Wait for n messages and remove them from the record."""
        got = self.wait_messages(n, what, timeout)
        with self.cond:
            del self.messages[:n]
        return got

    def wait_error(self, what, timeout=DEFAULT_WAIT):
        self.wait(lambda: self.errors, "an ERROR frame (%s)" % what, timeout)
        return self.errors[0]


class Client:
    """A connected stomp.py connection and its listener (closed by Ctx.cleanup)."""

    def __init__(self, conn, listener, version):
        self.conn = conn
        self.l = listener
        self.version = version

    @property
    def is_open(self):
        return self.conn.is_connected()

    def close(self):
        self.conn.disconnect()

    def receipt(self):
        return "r-" + uuid.uuid4().hex[:10]

    def send(self, dest, body, headers=None, wait=True, **kw):
        """SEND with a receipt, and wait for the receipt."""
        h = dict(headers or {})
        rid = None
        if wait:
            rid = self.receipt()
            h["receipt"] = rid
        self.conn.send(dest, body, headers=h, **kw)
        if rid:
            self.wait_receipt(rid, "SEND to %s" % dest)

    def wait_receipt(self, rid, what):
        self.l.wait(lambda: rid in self.l.receipts or self.l.errors,
                    "RECEIPT %s for %s" % (rid, what))
        if self.l.errors:
            e = self.l.errors[0]
            fail("%s: expected RECEIPT, got ERROR %r %r" % (what, e.headers.get("message"), e.body))

    def subscribe(self, dest, sub_id, ack="auto", headers=None, wait=True):
        h = dict(headers or {})
        rid = self.receipt() if wait else None
        if rid:
            h["receipt"] = rid
        self.conn.subscribe(dest, id=sub_id, ack=ack, headers=h)
        if rid:
            self.wait_receipt(rid, "SUBSCRIBE to %s" % dest)

    def unsubscribe(self, sub_id, headers=None):
        rid = self.receipt()
        h = dict(headers or {})
        h["receipt"] = rid
        if self.version == "1.0":
            self.conn.unsubscribe(id=sub_id, headers=h)
        else:
            self.conn.unsubscribe(sub_id, headers=h)
        self.wait_receipt(rid, "UNSUBSCRIBE %s" % sub_id)

    def ack(self, frame, transaction=None, nack=False, headers=None):
        """ACK/NACK a MESSAGE frame the way this version identifies it; waits for a receipt."""
        rid = self.receipt()
        h = frame.headers
        extra = dict(headers or {})
        extra["receipt"] = rid
        if self.version == "1.2":
            ident = h["ack"]
            self.conn.send_frame("NACK" if nack else "ACK", dict(extra, id=ident, **({"transaction": transaction} if transaction else {})))
        elif self.version == "1.1":
            self.conn.send_frame("NACK" if nack else "ACK", dict(extra, **{"message-id": h["message-id"], "subscription": h["subscription"]}, **({"transaction": transaction} if transaction else {})))
        else:
            self.conn.send_frame("ACK", dict(extra, **{"message-id": h["message-id"]}, **({"transaction": transaction} if transaction else {})))
        self.wait_receipt(rid, "%s of %s" % ("NACK" if nack else "ACK", h.get("message-id")))


def connect(ctx, version="1.2", heartbeats=(0, 0), login="guest", passcode="guest", headers=None, expect_error=False):
    cls = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}[version]
    kw = dict(auto_decode=False, reconnect_attempts_max=1)
    if version != "1.0":
        kw["heartbeats"] = heartbeats
        if STOMP_VHOST:
            kw["vhost"] = STOMP_VHOST
    conn = cls([(STOMP_HOST, STOMP_PORT)], **kw)
    listener = Listener()
    conn.set_listener("rec", listener)
    client = Client(conn, listener, version)
    ctx.conns.append(client)
    h = dict(headers or {})
    if version == "1.0" and STOMP_VHOST:
        h["host"] = STOMP_VHOST
    if expect_error:
        conn.connect(login, passcode, wait=False, headers=h)
        return client
    conn.connect(login, passcode, wait=True, headers=h)
    return client


def dest_name(ctx, kind="queue", prefix="q"):
    """A unique destination: /queue/sy.<script>.<prefix>.<hex> (or /topic/...)."""
    return "/%s/sy.%s.%s.%s" % (kind, SCRIPT, prefix, uuid.uuid4().hex[:12])


def body(frame):
    return frame.body if isinstance(frame.body, bytes) else frame.body.encode()


def bodies(frames):
    return [body(f) for f in frames]
