'use strict';
// Acks with amqplib: prefetch, nack/requeue -> redelivered, reject, get/get-empty,
// recover, close requeues, unknown delivery tag.
const { eq, expectChannelClose, getAll, bodies, waitFor, test, main } = require('./lib/common');

async function setup(ctx, n) {
  const conn = await ctx.connect();
  const pub = await ctx.channel(conn, true);
  const q = ctx.qname();
  await pub.assertQueue(q);
  for (let i = 0; i < n; i++) pub.sendToQueue(q, Buffer.from(`m${i}`));
  await pub.waitForConfirms();
  return { conn, pub, q };
}

test('prefetch_limits_unacked', async (ctx) => {
  const { conn, pub, q } = await setup(ctx, 10);
  const ch = await ctx.channel(conn);
  await ch.prefetch(3);
  const got = [];
  await ch.consume(q, (m) => got.push(m));
  await waitFor(() => got.length === 3, '3 deliveries');
  eq((await pub.checkQueue(q)).messageCount, 7, 'ready messages with prefetch 3 (exactly 3 delivered)');
  ch.ack(got[0]);
  ch.ack(got[1]);
  await waitFor(() => got.length === 5, '2 more after 2 acks');
  eq((await pub.checkQueue(q)).messageCount, 5, 'ready messages after 2 acks');
  ch.ack(got[4], true); // multiple: acks everything up to it
  await waitFor(() => got.length === 8, '3 more after ack-multiple');
  eq(bodies(got), ['m0', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7'], 'delivery order');
  eq(
    got.map((m) => m.fields.deliveryTag),
    [1, 2, 3, 4, 5, 6, 7, 8],
    'delivery tags',
  );
  ch.ackAll();
  await waitFor(() => got.length === 10, 'rest');
  ch.ackAll();
});

test('nack_requeue_redelivers_in_order', async (ctx) => {
  const { conn, q } = await setup(ctx, 4);
  const ch = await ctx.channel(conn);
  const got = [];
  await ch.consume(q, (m) => got.push(m));
  await waitFor(() => got.length === 4, '4 deliveries');
  ch.nack(got[3], true, true); // allUpTo, requeue
  await waitFor(() => got.length === 8, '4 redeliveries');
  const again = got.slice(4);
  eq(bodies(again), ['m0', 'm1', 'm2', 'm3'], 'redelivered in original order');
  eq(
    again.map((m) => m.fields.redelivered),
    [true, true, true, true],
    'redelivered flag',
  );
  eq(
    got.slice(0, 4).map((m) => m.fields.redelivered),
    [false, false, false, false],
    'first deliveries not redelivered',
  );
  ch.ackAll();
});

test('reject_and_nack_without_requeue', async (ctx) => {
  const { conn, q } = await setup(ctx, 3);
  const ch = await ctx.channel(conn);
  const a = await ch.get(q);
  const b = await ch.get(q);
  ch.reject(a, false);
  ch.nack(b, false, false);
  const rest = await getAll(ch, q);
  eq(bodies(rest), ['m2'], 'rejected/nacked without requeue are dropped');
  eq(rest[0].fields.redelivered, false, 'untouched message not redelivered');
});

test('get_and_get_empty', async (ctx) => {
  const { conn, q } = await setup(ctx, 3);
  const ch = await ctx.channel(conn);
  const seen = [];
  for (let i = 0; i < 3; i++) {
    const m = await ch.get(q, { noAck: true });
    seen.push([m.content.toString(), m.fields.messageCount, m.fields.deliveryTag]);
  }
  eq(
    seen,
    [
      ['m0', 2, 1],
      ['m1', 1, 2],
      ['m2', 0, 3],
    ],
    '(body, messageCount, deliveryTag)',
  );
  eq(await ch.get(q), false, 'get-empty');
});

test('recover_requeues_unacked', async (ctx) => {
  const { conn, q } = await setup(ctx, 2);
  const ch = await ctx.channel(conn);
  const got = [];
  await ch.consume(q, (m) => got.push(m));
  await waitFor(() => got.length === 2, 'deliveries');
  await ch.recover();
  await waitFor(() => got.length === 4, 'redeliveries after basic.recover');
  eq(
    got.slice(2).map((m) => [m.content.toString(), m.fields.redelivered]),
    [
      ['m0', true],
      ['m1', true],
    ],
    'recovered',
  );
  ch.ackAll();
});

test('channel_close_requeues', async (ctx) => {
  const { conn, pub, q } = await setup(ctx, 3);
  const ch = await ctx.channel(conn);
  const got = [];
  await ch.consume(q, (m) => got.push(m));
  await waitFor(() => got.length === 3, 'deliveries');
  ch.ack(got[0]);
  await ch.close();
  const rest = await getAll(pub, q);
  eq(
    rest.map((m) => [m.content.toString(), m.fields.redelivered]),
    [
      ['m1', true],
      ['m2', true],
    ],
    'unacked requeued on channel close',
  );
});

test('double_ack_unknown_delivery_tag', async (ctx) => {
  const { conn, q } = await setup(ctx, 1);
  const ch = await ctx.channel(conn);
  const m = await ch.get(q);
  ch.ack(m);
  ch.ack(m);
  await expectChannelClose(() => ch.checkQueue(q), 406, 'PRECONDITION_FAILED - unknown delivery tag 1', 'double ack');
});

test('ack_after_cancel', async (ctx) => {
  const { conn, pub, q } = await setup(ctx, 2);
  const ch = await ctx.channel(conn);
  const got = [];
  const { consumerTag } = await ch.consume(q, (m) => got.push(m));
  await waitFor(() => got.length === 2, 'deliveries');
  await ch.cancel(consumerTag);
  ch.ack(got[0]);
  ch.nack(got[1], false, true);
  await ch.checkQueue(q);
  const rest = await getAll(pub, q);
  eq(
    rest.map((m) => [m.content.toString(), m.fields.redelivered]),
    [['m1', true]],
    'cancelled consumer deliveries can still be acked/nacked',
  );
});

main();
