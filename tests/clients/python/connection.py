#!/usr/bin/env python3
"""Connection handshake: protocol header, tune negotiation, capabilities, heartbeats."""

import os
import socket
import time

from _common import (HOST, PORT, Collector, drain_bodies, eq, fail, main, test, wait_for)

CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": True,
}


@test
def server_properties_and_tune_defaults(ctx):
    conn = ctx.connect()
    props = conn._impl.server_properties
    eq(props.get("capabilities"), CAPABILITIES, "server capabilities")
    for k in ["product", "version", "platform", "copyright", "information", "cluster_name"]:
        if not isinstance(props.get(k), (str, bytes)):
            fail("server property %r: expected a string, got %r" % (k, props.get(k)))
    p = conn._impl.params
    eq((p.channel_max, p.frame_max, p.heartbeat), (2047, 131072, 60),
       "negotiated (channel_max, frame_max, heartbeat) with client defaults")


@test
def client_lower_tune_values_win(ctx):
    conn = ctx.connect(channel_max=10, frame_max=8192, heartbeat=30)
    p = conn._impl.params
    eq((p.channel_max, p.frame_max, p.heartbeat), (10, 8192, 30), "negotiated values when the client asks for less")
    ch = conn.channel()
    q = ctx.qname()
    ch.queue_declare(q)
    body = os.urandom(100000)  # many 8 KiB body frames
    ch.basic_publish("", q, body)
    col = Collector()
    ch.basic_consume(q, col, auto_ack=True)
    wait_for(conn, lambda: len(col) == 1, "large message over small frames")
    eq(col.msgs[0][2] == body, True, "body intact")
    for _ in range(9):
        conn.channel()  # up to channel_max channels


@test
def heartbeats_keep_idle_connection_alive(ctx):
    conn = ctx.connect(heartbeat=1)
    eq(conn._impl.params.heartbeat, 1, "negotiated heartbeat")
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    # idle for ~2.5 heartbeat intervals; pika drops the connection if the
    # broker sends no heartbeats, and the broker drops it if pika's are ignored
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        conn.process_data_events(time_limit=end - time.monotonic())
    eq(conn.is_open, True, "connection alive after idling with heartbeat=1")
    ch.basic_publish("", q, b"after-idle")
    eq(drain_bodies(ch, q), [b"after-idle"], "usable after idling")


def raw_exchange(data):
    s = socket.create_connection((HOST, PORT), timeout=5)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(4096)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


@test
def bad_protocol_header(ctx):
    for hdr in [b"GET / HTTP/1.1\r\n\r\n", b"AMQP\x00\x00\x09\x02", b"AMQP\x00\x00\x08\x00"]:
        got = raw_exchange(hdr)
        eq(got, b"AMQP\x00\x00\x09\x01", "reply to protocol header %r (then the socket is closed)" % hdr)


@test
def good_protocol_header_gets_connection_start(ctx):
    s = socket.create_connection((HOST, PORT), timeout=5)
    try:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        head = b""
        while len(head) < 11:
            chunk = s.recv(11 - len(head))
            if not chunk:
                break
            head += chunk
    finally:
        s.close()
    eq(head[:3], b"\x01\x00\x00", "method frame on channel 0")
    eq(head[7:11], b"\x00\x0a\x00\x0a", "connection.start (class 10, method 10)")


@test
def clean_close(ctx):
    conn = ctx.connect()
    ch = conn.channel()
    ch.close()
    conn.close()
    eq((conn.is_closed, ch.is_closed), (True, True), "closed")


if __name__ == "__main__":
    main()
