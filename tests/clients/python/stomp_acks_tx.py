#!/usr/bin/env python3
"""Ack modes (auto, client = cumulative, client-individual), NACK with and
without requeue (dead-lettering per queue policy), prefetch-count,
redelivery after disconnect, and transactions covering SEND and ACK."""

from _stomp_common import bodies, body, check, connect, dest_name, eq, main, test


def fill(ctx, q, n, **headers):
    p = connect(ctx)
    for i in range(n):
        p.send(q, b"m%d" % i, headers=headers)
    return p


@test
def auto_ack_consumes(ctx):
    q = dest_name(ctx)
    fill(ctx, q, 3)
    c = connect(ctx)
    c.subscribe(q, "a", ack="auto")
    eq(bodies(c.l.take(3, "auto")), [b"m0", b"m1", b"m2"], "auto deliveries")
    c.close()
    c = connect(ctx)
    c.subscribe(q, "b", ack="auto")
    c.send(q, b"marker")
    eq(bodies(c.l.take(1, "after auto ack")), [b"marker"], "nothing redelivered after ack:auto")


def client_cumulative(ctx, version):
    q = dest_name(ctx)
    fill(ctx, q, 4)
    c = connect(ctx, version)
    c.subscribe(q, "c", ack="client")
    ms = c.l.take(4, "client-mode deliveries")
    c.ack(ms[1])  # acks m0 and m1
    c.close()
    c = connect(ctx, version)
    c.subscribe(q, "c2", ack="client-individual")
    again = c.l.take(2, "redeliveries")
    eq(bodies(again), [b"m2", b"m3"], version + " cumulative ACK of m1 acked m0 too")
    eq([m.headers.get("redelivered") for m in again], ["true", "true"], "redelivered flag")


@test
def client_ack_is_cumulative_1_1(ctx):
    client_cumulative(ctx, "1.1")


@test
def client_ack_is_cumulative_1_2(ctx):
    client_cumulative(ctx, "1.2")


@test
def client_ack_1_0(ctx):
    q = dest_name(ctx)
    fill(ctx, q, 2)
    c = connect(ctx, "1.0")
    c.subscribe(q, "c", ack="client")
    ms = c.l.take(2, "1.0 client deliveries")
    c.ack(ms[1])
    c.close()
    c = connect(ctx)
    c.subscribe(q, "x")
    c.send(q, b"marker")
    eq(bodies(c.l.take(1, "after 1.0 ack")), [b"marker"], "1.0 ACK by message-id acked both")


@test
def client_individual_acks_one(ctx):
    q = dest_name(ctx)
    fill(ctx, q, 3)
    c = connect(ctx)
    c.subscribe(q, "ci", ack="client-individual")
    ms = c.l.take(3, "deliveries")
    c.ack(ms[2])
    c.close()
    c = connect(ctx)
    c.subscribe(q, "ci2", ack="client-individual")
    eq(bodies(c.l.take(2, "redeliveries")), [b"m0", b"m1"], "only m2 was acked")


@test
def nack_requeues_by_default(ctx):
    q = dest_name(ctx)
    fill(ctx, q, 1)
    c = connect(ctx)
    c.subscribe(q, "n", ack="client-individual")
    (m,) = c.l.take(1, "first delivery")
    c.ack(m, nack=True)
    (again,) = c.l.take(1, "redelivery after NACK")
    eq(body(again), b"m0", "same message back")
    eq(again.headers.get("redelivered"), "true", "redelivered after NACK")
    c.ack(again)


@test
def nack_without_requeue_dead_letters(ctx):
    q = dest_name(ctx)
    dlq = dest_name(ctx, prefix="dlq")
    c = connect(ctx)
    c.subscribe(dlq, "dead")
    dlq_name = dlq[len("/queue/"):]
    # /queue/ declarations take x- arguments from the headers, as in RabbitMQ.
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq_name}
    c.subscribe(q, "live", ack="client-individual", headers=args)
    # A plain SEND to /queue/ would re-declare without the arguments: PRECONDITION_FAILED,
    # as in RabbitMQ. /amq/queue/ sends to the existing queue without declaring it.
    c.send("/amq/queue/" + q[len("/queue/"):], b"poison")
    (m,) = c.l.take(1, "delivery")
    c.ack(m, nack=True, headers={"requeue": "false"})
    (dead,) = c.l.take(1, "dead-lettered copy")
    eq(body(dead), b"poison", "NACK requeue:false dead-letters via the queue's DLX")
    eq(dead.headers.get("subscription"), "dead", "arrives on the DLQ subscription")


@test
def prefetch_count_bounds_unacked(ctx):
    q = dest_name(ctx)
    fill(ctx, q, 5)
    c = connect(ctx)
    c.subscribe(q, "p", ack="client-individual", headers={"prefetch-count": "2"})
    first = c.l.take(2, "first two")
    probe = connect(ctx)
    probe.send(q, b"probe")  # a round trip through the broker: any third delivery would be out by now
    eq(len(c.l.messages), 0, "no more than prefetch-count unacked deliveries")
    c.ack(first[0])
    eq(bodies(c.l.take(1, "one more after an ACK")), [b"m2"], "credit returned by ACK")


@test
def transaction_covers_send(ctx):
    q = dest_name(ctx)
    c = connect(ctx)
    c.subscribe(q, "t")
    tx = c.conn.begin()
    c.send(q, b"in tx", headers={"transaction": tx})
    c.conn.abort(tx)
    tx = c.conn.begin()
    c.send(q, b"committed", headers={"transaction": tx})
    marker = connect(ctx)
    marker.send(q, b"outside tx")
    eq(bodies(c.l.take(1, "non-transactional send")), [b"outside tx"], "transactional SENDs wait for COMMIT")
    c.conn.commit(tx)
    eq(bodies(c.l.take(1, "committed send")), [b"committed"], "aborted SEND never delivered")


@test
def transaction_covers_ack(ctx):
    q = dest_name(ctx)
    fill(ctx, q, 2)
    c = connect(ctx)
    c.subscribe(q, "t", ack="client-individual")
    m0, m1 = c.l.take(2, "deliveries")
    tx = c.conn.begin()
    c.ack(m0, transaction=tx)
    c.conn.abort(tx)
    tx = c.conn.begin()
    c.ack(m1, transaction=tx)
    c.conn.commit(tx)
    c.close()
    c = connect(ctx)
    c.subscribe(q, "t2", ack="client-individual")
    (m,) = c.l.take(1, "redelivery")
    eq(body(m), b"m0", "aborted ACK left m0 unacked; committed ACK removed m1")
    c.send(q, b"marker")
    eq(bodies(c.l.take(1, "marker")), [b"marker"], "m1 is gone")


if __name__ == "__main__":
    main(default_timeout=40)
