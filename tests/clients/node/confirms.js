'use strict';
// Publisher confirms with amqplib's ConfirmChannel: per-message callbacks,
// waitForConfirms, mandatory returns, nacks from reject-publish.
const { VHOST, replyOf, eq, check, fail, getAll, bodies, waitFor, test, main } = require('./lib/common');

function publishAsync(ch, exchange, key, body, opts = {}) {
  return new Promise((resolve) => {
    ch.publish(exchange, key, Buffer.from(body), opts, (err) => resolve(err ? 'nack' : 'ack'));
  });
}

test('confirm_every_publish', async (ctx) => {
  const ch = await ctx.channel(null, true);
  const q = ctx.qname();
  await ch.assertQueue(q);
  const results = await Promise.all(Array.from({ length: 200 }, (_, i) => publishAsync(ch, '', q, `m${i}`)));
  eq(new Set(results), new Set(['ack']), 'all 200 publishes acked');
  eq((await ch.checkQueue(q)).messageCount, 200, 'confirmed messages are in the queue');
  for (let i = 0; i < 50; i++) ch.sendToQueue(q, Buffer.from('more'));
  await ch.waitForConfirms();
  eq((await ch.checkQueue(q)).messageCount, 250, 'after waitForConfirms');
});

test('unroutable_is_acked_and_mandatory_returned', async (ctx) => {
  const ch = await ctx.channel(null, true);
  const x = ctx.xname();
  await ch.assertExchange(x, 'direct');
  const returned = [];
  ch.on('return', (m) => returned.push(m));
  const r1 = await publishAsync(ch, x, 'nowhere', 'not-mandatory');
  eq(r1, 'ack', 'unroutable non-mandatory publish is acked');
  eq(returned.length, 0, 'no return for non-mandatory');
  const r2 = await publishAsync(ch, x, 'nowhere', 'mandatory', { mandatory: true, messageId: 'r1', headers: { h: 1 } });
  eq(r2, 'ack', 'unroutable mandatory publish is acked too');
  // basic.return precedes the basic.ack, so it has been seen by now
  eq(returned.length, 1, 'basic.return received before the ack');
  const m = returned[0];
  eq(
    [m.fields.replyCode, m.fields.replyText, m.fields.exchange, m.fields.routingKey],
    [312, 'NO_ROUTE', x, 'nowhere'],
    'basic.return fields',
  );
  eq([m.content.toString(), m.properties.messageId, m.properties.headers], ['mandatory', 'r1', { h: 1 }], 'returned message');
});

test('return_without_confirms', async (ctx) => {
  const ch = await ctx.channel();
  const returned = [];
  ch.on('return', (m) => returned.push(m));
  const missing = ctx.name('missing');
  ch.publish('', missing, Buffer.from('r'), { mandatory: true });
  await waitFor(() => returned.length === 1, 'basic.return');
  eq([returned[0].fields.replyCode, returned[0].fields.replyText, returned[0].fields.routingKey], [312, 'NO_ROUTE', missing], 'return');
});

test('reject_publish_nacks', async (ctx) => {
  const ch = await ctx.channel(null, true);
  const q = ctx.qname();
  await ch.assertQueue(q, { arguments: { 'x-max-length': 2, 'x-overflow': 'reject-publish' } });
  const results = [];
  for (let i = 0; i < 4; i++) results.push(await publishAsync(ch, '', q, `m${i}`));
  eq(results, ['ack', 'ack', 'nack', 'nack'], 'confirm results with x-max-length 2 / reject-publish');
  let waitErr = null;
  ch.sendToQueue(q, Buffer.from('m4'));
  try {
    await ch.waitForConfirms();
  } catch (e) {
    waitErr = e;
  }
  check(waitErr !== null, 'waitForConfirms rejects when a message was nacked');
  eq(bodies(await getAll(ch, q)), ['m0', 'm1'], 'kept messages');
});

test('confirms_with_consumer_on_same_channel', async (ctx) => {
  const ch = await ctx.channel(null, true);
  const q = ctx.qname();
  await ch.assertQueue(q);
  const got = [];
  await ch.consume(q, (m) => got.push(m.content.toString()), { noAck: true });
  const results = await Promise.all([0, 1, 2, 3, 4].map((i) => publishAsync(ch, '', q, String(i))));
  eq(results, ['ack', 'ack', 'ack', 'ack', 'ack'], 'acks');
  await waitFor(() => got.length === 5, '5 deliveries');
  eq(got, ['0', '1', '2', '3', '4'], 'order');
});

test('publish_to_missing_exchange_on_confirm_channel', async (ctx) => {
  const conn = await ctx.connect();
  const ch = await ctx.channel(conn, true);
  const missing = ctx.name('missing-x');
  let outcome = null;
  ch.publish(missing, 'k', Buffer.from('x'), {}, (err) => {
    outcome = err ? 'nack' : 'ack';
  });
  await waitFor(() => ctx.errors.length === 1, 'channel error');
  const r = replyOf(ctx.errors[0]);
  eq([r.code, r.text], [404, `NOT_FOUND - no exchange '${missing}' in vhost '${VHOST}'`], 'channel.close');
  // amqplib fails the pending confirm callback when the channel closes
  await waitFor(() => outcome !== null, 'confirm callback');
  eq(outcome, 'nack', 'pending confirm fails on channel close');
  const ch2 = await ctx.channel(conn, true);
  const q = ctx.qname();
  await ch2.assertQueue(q);
  eq(await publishAsync(ch2, '', q, 'ok'), 'ack', 'new confirm channel works');
  if (ctx.errors.length !== 1) fail(`unexpected extra errors: ${ctx.errors.map((e) => e.message)}`);
});

main();
