"""Shared helpers for the paho-mqtt scenario scripts (mqtt_*.py).

Contract (as for the pika scripts, see README.md):
  * broker address from $MQTT_HOST / $MQTT_PORT (default 127.0.0.1:1883); AMQP, for
    cross-protocol checks, from $AMQP_URL;
  * exit code 0 = every check passed, 1 = at least one failed; the last stdout line is
    "<script>: N passed, N failed";
  * $SCENARIO_TIMEOUT (s, default 60) is a watchdog; events are awaited with a deadline of
    $SCENARIO_WAIT (s, default 5); there are no fixed sleeps;
  * optional argv: substrings of test names to run;
  * names are unique per run (uuid suffix), so scripts can run in parallel on one broker.
"""

import os
import sys


from _venv import bootstrap  # noqa: E402

bootstrap("paho.mqtt")

import queue  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

HOST = os.environ.get("MQTT_HOST", "127.0.0.1")
PORT = int(os.environ.get("MQTT_PORT", "1883"))
WAIT = float(os.environ.get("SCENARIO_WAIT", "5"))
SCRIPT = os.path.splitext(os.path.basename(sys.argv[0]))[0]

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
V31 = mqtt.MQTTv31


class Fail(Exception):
    pass


def check(cond, what, expected=None, got=None):
    if not cond:
        if expected is None and got is None:
            raise Fail(what)
        raise Fail("%s: expected %r, got %r" % (what, expected, got))


def eq(got, expected, what):
    check(got == expected, what, expected, got)


def uniq(kind):
    return "sy-%s-%s-%s" % (SCRIPT, kind, uuid.uuid4().hex[:12])


class Client:
    """A paho client whose events land in queues, used synchronously."""

    def __init__(self, protocol=V311, client_id=None, clean=True, session_expiry=None, will=None,
                 username=None, password=None, properties=None):
        self.protocol = protocol
        self.client_id = client_id if client_id is not None else uniq("c")
        kwargs = {}
        if protocol != V5:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol, **kwargs)
        self.messages = queue.Queue()
        self.events = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, props: self.events.put(("connect", flags, rc, props))
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.events.put(("suback", mid, rcs))
        self.c.on_unsubscribe = lambda c, u, mid, rcs, props: self.events.put(("unsuback", mid, rcs))
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.events.put(("disconnect", rc))
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            self.c.will_set(**will)
        self.clean = clean
        self.session_expiry = session_expiry
        self.connect_properties = properties

    def connect(self, expect_rc=0):
        kwargs = {}
        if self.protocol == V5:
            from paho.mqtt.properties import Properties
            from paho.mqtt.packettypes import PacketTypes
            props = self.connect_properties or Properties(PacketTypes.CONNECT)
            if self.session_expiry is not None:
                props.SessionExpiryInterval = self.session_expiry
            kwargs["properties"] = props
            kwargs["clean_start"] = self.clean
        self.c.connect(HOST, PORT, keepalive=30, **kwargs)
        self.c.loop_start()
        ev = self.event("connect")
        rc = ev[2]
        eq(rc.value if hasattr(rc, "value") else rc, expect_rc, "CONNACK code")
        self.flags = ev[1]
        self.connack_properties = ev[3]
        return self

    def session_present(self):
        return bool(self.flags.session_present)

    def event(self, kind, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail("no %s event within %ss" % (kind, timeout))
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev[0] == kind:
                return ev

    def subscribe(self, topic, qos=0, **kwargs):
        if self.protocol == V5:
            from paho.mqtt.subscribeoptions import SubscribeOptions
            opts = SubscribeOptions(qos=qos, noLocal=kwargs.pop("no_local", False),
                                    retainAsPublished=kwargs.pop("rap", False),
                                    retainHandling=kwargs.pop("retain_handling", 0))
            _, mid = self.c.subscribe(topic, options=opts, **kwargs)
        else:
            _, mid = self.c.subscribe(topic, qos)
        ev = self.event("suback")
        codes = [r.value if hasattr(r, "value") else r for r in ev[2]]
        return codes

    def unsubscribe(self, topic):
        self.c.unsubscribe(topic)
        return self.event("unsuback")

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout=WAIT)
        check(info.is_published(), "publish of %s acknowledged" % topic)
        return info

    def message(self, timeout=WAIT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise Fail("no message within %ss" % timeout)

    def no_message(self, timeout=0.3):
        """Nothing more arrives: checked after a round trip (a ping would do; paho has none
        exposed, so a subscribe round trip serves as the barrier)."""
        self.subscribe(uniq("barrier"), 0)
        check(self.messages.empty(), "no further message", None, None)

    def disconnect(self):
        self.c.disconnect()
        self.c.loop_stop()

    def kill(self):
        """Drop the TCP connection without DISCONNECT (the will fires)."""
        sock = self.c.socket()
        if sock is not None:
            import socket as _s
            try:
                sock.shutdown(_s.SHUT_RDWR)
            except OSError:
                pass
        self.c.loop_stop()


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def run():
    timeout = float(os.environ.get("SCENARIO_TIMEOUT", "60"))
    current = {"name": None}

    def watchdog():
        sys.stderr.write("FAIL %s.%s: watchdog: script exceeded %ss\n" % (SCRIPT, current["name"], timeout))
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(timeout, watchdog)
    timer.daemon = True
    timer.start()
    wanted = sys.argv[1:]
    passed = failed = 0
    for fn in TESTS:
        if wanted and not any(w in fn.__name__ for w in wanted):
            continue
        current["name"] = fn.__name__
        try:
            fn()
            passed += 1
            print("ok   %s" % fn.__name__)
        except Fail as e:
            failed += 1
            sys.stderr.write("FAIL %s.%s: %s\n" % (SCRIPT, fn.__name__, e))
        except Exception:  # noqa: BLE001
            failed += 1
            sys.stderr.write("FAIL %s.%s: unexpected exception\n%s" % (SCRIPT, fn.__name__, traceback.format_exc()))
    timer.cancel()
    print("%s: %d passed, %d failed" % (SCRIPT, passed, failed))
    sys.stdout.flush()
    os._exit(0 if failed == 0 else 1)
