'use strict';
// Dead-lettering with amqplib: x-death contents (and decoded field types) for
// rejection, TTL expiry and max-length, x-dead-letter-routing-key.
const { eq, check, fail, consumeN, getAll, bodies, test, main } = require('./lib/common');

async function dlxSetup(ctx, ch, srcArgs = {}) {
  const dlx = ctx.xname('dlx');
  const dlq = ctx.qname('dlq');
  const src = ctx.qname('src');
  await ch.assertExchange(dlx, 'fanout');
  await ch.assertQueue(dlq);
  await ch.bindQueue(dlq, dlx, '');
  await ch.assertQueue(src, { deadLetterExchange: dlx, arguments: srcArgs });
  return { dlx, dlq, src };
}

function checkDeath(d, want, what) {
  const keys = Object.keys(d).sort();
  eq(keys, Object.keys({ ...want, time: 0 }).sort(), `${what}: x-death keys`);
  for (const [k, v] of Object.entries(want)) eq(d[k], v, `${what}: x-death ${k}`);
  // amqplib decodes a 'T' timestamp as {'!': 'timestamp', value: seconds}
  eq(d.time?.['!'], 'timestamp', `${what}: x-death time is a timestamp`);
  const now = Date.now() / 1000;
  check(Math.abs(d.time.value - now) < 120, `${what}: x-death time ${d.time.value} is about now (${now})`);
}

test('reject_x_death', async (ctx) => {
  const ch = await ctx.channel();
  const { dlx, dlq, src } = await dlxSetup(ctx, ch);
  ch.sendToQueue(src, Buffer.from('r'), { headers: { keep: 'me' }, messageId: 'id-1', priority: 2 });
  const [m] = await consumeN(ch, src, 1, 'source', { noAck: false });
  ch.reject(m, false);
  const [d] = await consumeN(ch, dlq, 1, 'dead-lettered');
  eq([d.fields.exchange, d.fields.routingKey], [dlx, src], 'dead-letter delivery exchange/key');
  eq([d.properties.messageId, d.properties.priority, d.properties.headers.keep], ['id-1', 2, 'me'], 'kept properties');
  eq(d.properties.headers['x-death'].length, 1, 'one x-death entry');
  checkDeath(
    d.properties.headers['x-death'][0],
    { count: 1, reason: 'rejected', queue: src, exchange: '', 'routing-keys': [src] },
    'reject',
  );
  eq(
    [
      d.properties.headers['x-first-death-reason'],
      d.properties.headers['x-first-death-queue'],
      d.properties.headers['x-first-death-exchange'],
    ],
    ['rejected', src, ''],
    'x-first-death-*',
  );
});

test('ttl_expiry_x_death', async (ctx) => {
  const ch = await ctx.channel();
  const { dlq, src } = await dlxSetup(ctx, ch, { 'x-message-ttl': 30 });
  ch.sendToQueue(src, Buffer.from('queue-ttl'));
  ch.sendToQueue(src, Buffer.from('msg-ttl'), { expiration: 10 }); // amqplib sends "10"
  const got = await consumeN(ch, dlq, 2, 'expired');
  eq(bodies(got), ['queue-ttl', 'msg-ttl'], 'expired in order');
  checkDeath(
    got[0].properties.headers['x-death'][0],
    { count: 1, reason: 'expired', queue: src, exchange: '', 'routing-keys': [src] },
    'queue ttl',
  );
  checkDeath(
    got[1].properties.headers['x-death'][0],
    { count: 1, reason: 'expired', queue: src, exchange: '', 'routing-keys': [src], 'original-expiration': '10' },
    'per-message ttl',
  );
  eq(got[1].properties.expiration, undefined, 'expiration property removed');
});

test('maxlen_x_death', async (ctx) => {
  const ch = await ctx.channel(null, true);
  const { dlq, src } = await dlxSetup(ctx, ch, { 'x-max-length': 1 });
  ch.sendToQueue(src, Buffer.from('first'));
  ch.sendToQueue(src, Buffer.from('second'));
  await ch.waitForConfirms();
  const [d] = await consumeN(ch, dlq, 1, 'maxlen');
  eq(d.content.toString(), 'first', 'head dropped');
  checkDeath(
    d.properties.headers['x-death'][0],
    { count: 1, reason: 'maxlen', queue: src, exchange: '', 'routing-keys': [src] },
    'maxlen',
  );
  eq(bodies(await getAll(ch, src)), ['second'], 'newest kept');
});

test('dead_letter_routing_key_and_count', async (ctx) => {
  const ch = await ctx.channel();
  const dlx = ctx.xname('dlx');
  await ch.assertExchange(dlx, 'direct');
  const dlq = ctx.qname('dlq');
  await ch.assertQueue(dlq);
  await ch.bindQueue(dlq, dlx, 'dead');
  const src = ctx.qname('src');
  await ch.assertQueue(src, { deadLetterExchange: dlx, deadLetterRoutingKey: 'dead' });
  // dlq sends rejected messages back to src through the default exchange
  const back = ctx.qname('back');
  await ch.assertQueue(back, { deadLetterExchange: '', deadLetterRoutingKey: src });
  await ch.bindQueue(back, dlx, 'dead');
  ch.sendToQueue(src, Buffer.from('loop'));
  let [m] = await consumeN(ch, src, 1, 'src 1', { noAck: false });
  ch.nack(m, false, false);
  const [d1] = await consumeN(ch, dlq, 1, 'dlq 1');
  eq([d1.fields.routingKey], ['dead'], 'routed with x-dead-letter-routing-key');
  const [b] = await consumeN(ch, back, 1, 'back', { noAck: false });
  ch.reject(b, false); // back -> src via default exchange
  [m] = await consumeN(ch, src, 1, 'src 2', { noAck: false });
  const deaths = m.properties.headers['x-death'];
  eq(
    deaths.map((e) => [e.queue, e.reason, e.count, e.exchange, e['routing-keys']]),
    [
      [back, 'rejected', 1, dlx, ['dead']],
      [src, 'rejected', 1, '', [src]],
    ],
    'x-death history, newest first',
  );
  ch.nack(m, false, false);
  const [d2] = await consumeN(ch, dlq, 1, 'dlq 2');
  const deaths2 = d2.properties.headers['x-death'];
  eq(
    deaths2.map((e) => [e.queue, e.reason, e.count]),
    [
      [src, 'rejected', 2],
      [back, 'rejected', 1],
    ],
    'second rejection from src: its entry counted up and moved first',
  );
  eq(d2.properties.headers['x-first-death-queue'], src, 'x-first-death-queue unchanged');
  if (ctx.errors.length) fail(`channel errors: ${ctx.errors.map((e) => e.message)}`);
});

main();
