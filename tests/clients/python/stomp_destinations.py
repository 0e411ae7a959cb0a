#!/usr/bin/env python3
"""Durable topic subscriptions (RabbitMQ `durable:true` + id, ActiveMQ
`client-id` + `activemq.subscriptionName`), /temp-queue/ reply-to rewriting
and /reply-queue/, and the `host` header as virtual host."""

from _stomp_common import body, bodies, check, connect, dest_name, eq, main, startswith, test


@test
def durable_subscription_rabbitmq_style(ctx):
    topic = dest_name(ctx, "topic", "dur")
    sub = {"durable": "true", "auto-delete": "false"}
    c = connect(ctx)
    c.subscribe(topic, "d1", ack="client-individual", headers=sub)
    c.close()
    p = connect(ctx)
    p.send(topic, b"kept while away", headers={"persistent": "true"})
    c = connect(ctx)
    c.subscribe(topic, "d1", ack="client-individual", headers=sub)
    (m,) = c.l.take(1, "message kept for the durable subscription")
    eq(body(m), b"kept while away", "durable subscription body")
    eq(m.headers.get("persistent"), "true", "persistent header round trip")
    c.ack(m)
    c.unsubscribe("d1", headers={"durable": "true"})  # removes the subscription's queue
    p.send(topic, b"nobody listens")
    c.subscribe(topic, "d1", headers=sub)
    p.send(topic, b"fresh")
    eq(bodies(c.l.take(1, "after re-subscribing")), [b"fresh"], "old queue was deleted by UNSUBSCRIBE durable:true")


@test
def durable_subscription_activemq_style(ctx):
    topic = dest_name(ctx, "topic", "amq")
    client_id = "cid-" + topic.rsplit(".", 1)[1]
    c = connect(ctx, headers={"client-id": client_id})
    c.subscribe(topic, "x", headers={"activemq.subscriptionName": "orders"})
    c.close()
    p = connect(ctx)
    p.send(topic, b"for orders")
    c = connect(ctx, headers={"client-id": client_id})
    c.subscribe(topic, "y", headers={"activemq.subscriptionName": "orders"})
    eq(bodies(c.l.take(1, "ActiveMQ durable subscriber")), [b"for orders"], "kept by (client-id, name)")
    c.unsubscribe("y", headers={"activemq.subscriptionName": "orders"})


@test
def temp_queue_request_reply(ctx):
    service = dest_name(ctx, prefix="svc")
    server = connect(ctx)
    server.subscribe(service, "srv")
    client = connect(ctx)
    for i in range(2):
        client.send(service, b"ping%d" % i, headers={"reply-to": "/temp-queue/replies", "correlation-id": "c%d" % i})
    reqs = server.l.take(2, "requests")
    reply_to = reqs[0].headers.get("reply-to")
    startswith(reply_to, "/reply-queue/", "reply-to rewritten for the responder")
    eq(reqs[1].headers.get("reply-to"), reply_to, "one temp queue per name per connection")
    for r in reqs:
        server.send(r.headers["reply-to"], b"pong-" + r.body, headers={"correlation-id": r.headers["correlation-id"]})
    reps = client.l.take(2, "replies")
    eq(bodies(reps), [b"pong-ping0", b"pong-ping1"], "replies")
    eq([m.headers.get("subscription") for m in reps], ["/temp-queue/replies"] * 2, "subscription names the temp queue")
    eq([m.headers.get("correlation-id") for m in reps], ["c0", "c1"], "correlation ids")


@test
def temp_queue_goes_with_the_connection(ctx):
    service = dest_name(ctx, prefix="svc")
    server = connect(ctx)
    server.subscribe(service, "srv")
    client = connect(ctx)
    client.send(service, b"ping", headers={"reply-to": "/temp-queue/r"})
    (req,) = server.l.take(1, "request")
    client.close()
    other = connect(ctx, "1.2")
    other.conn.send(req.headers["reply-to"], b"late reply", headers={"receipt": "late"})
    other.l.wait(lambda: "late" in other.l.receipts or other.l.errors, "receipt for a reply to a gone temp queue")
    check(not other.l.errors, "replying to a deleted temp queue is not an error (message is unroutable)")


@test
def host_header_selects_the_vhost(ctx):
    # "/" exists; a host name that is no vhost falls back to the default vhost.
    for host in ("/", "localhost"):
        c = connect(ctx, "1.2", headers={"host": host})
        q = dest_name(ctx)
        c.subscribe(q, "h")
        c.send(q, b"on " + host.encode())
        eq(bodies(c.l.take(1, "host " + host)), [b"on " + host.encode()], "host %r" % host)


if __name__ == "__main__":
    main(default_timeout=40)
