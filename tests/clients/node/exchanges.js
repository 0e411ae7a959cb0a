'use strict';
// Exchange routing with amqplib: topic, headers, fanout, exchange-to-exchange, alternate exchange.
const { eq, getAll, bodies, test, main } = require('./lib/common');

async function queues(ctx, ch, n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const q = ctx.qname();
    await ch.assertQueue(q);
    out.push(q);
  }
  return out;
}

// Publishes are routed while the broker handles basic.publish; a confirm
// channel's waitForConfirms makes sure every one has been enqueued.
async function published(ch) {
  await ch.waitForConfirms();
}

test('topic', async (ctx) => {
  const ch = await ctx.channel(null, true);
  const x = ctx.xname();
  await ch.assertExchange(x, 'topic');
  const cases = {
    '#': ['', 'a', 'a.b', 'a.b.c', 'x.a'],
    '*': ['a'],
    'a.*': ['a.b'],
    'a.#': ['a', 'a.b', 'a.b.c'],
    '#.a': ['a', 'x.a'],
    'a.#.c': ['a.b.c'],
    '*.*': ['a.b', 'x.a'],
    '': [''],
  };
  const keys = ['', 'a', 'a.b', 'a.b.c', 'x.a'];
  const qs = {};
  for (const p of Object.keys(cases)) {
    qs[p] = ctx.qname();
    await ch.assertQueue(qs[p]);
    await ch.bindQueue(qs[p], x, p);
  }
  for (const k of keys) ch.publish(x, k, Buffer.from(k === '' ? '<empty>' : k));
  await published(ch);
  for (const [p, want] of Object.entries(cases)) {
    eq(
      bodies(await getAll(ch, qs[p])),
      want.map((k) => (k === '' ? '<empty>' : k)),
      `topic binding '${p}'`,
    );
  }
});

test('headers', async (ctx) => {
  const ch = await ctx.channel(null, true);
  const x = ctx.xname();
  await ch.assertExchange(x, 'headers');
  const [qAll, qAny, qAllX, qNum] = await queues(ctx, ch, 4);
  await ch.bindQueue(qAll, x, '', { 'x-match': 'all', a: '1', b: 'two' });
  await ch.bindQueue(qAny, x, '', { 'x-match': 'any', a: '1', b: 'two' });
  await ch.bindQueue(qAllX, x, '', { 'x-match': 'all-with-x', 'x-k': 'v' });
  await ch.bindQueue(qNum, x, '', { n: 42 });
  const msgs = [
    ['ab', { a: '1', b: 'two' }],
    ['a', { a: '1' }],
    ['b-wrong', { a: '2', b: 'two' }],
    ['xk', { 'x-k': 'v' }],
    ['n42', { n: 42 }],
    ['n42str', { n: '42' }],
    ['none', undefined],
  ];
  for (const [body, headers] of msgs) ch.publish(x, 'ignored', Buffer.from(body), { headers });
  await published(ch);
  eq(bodies(await getAll(ch, qAll)), ['ab'], 'x-match all');
  eq(bodies(await getAll(ch, qAny)), ['ab', 'a', 'b-wrong'], 'x-match any');
  eq(bodies(await getAll(ch, qAllX)), ['xk'], 'x-match all-with-x');
  eq(bodies(await getAll(ch, qNum)), ['n42'], 'numeric header match (string "42" does not match 42)');
});

test('fanout', async (ctx) => {
  const ch = await ctx.channel(null, true);
  const x = ctx.xname();
  await ch.assertExchange(x, 'fanout');
  const qs = await queues(ctx, ch, 3);
  for (const q of qs) await ch.bindQueue(q, x, 'any-key');
  ch.publish(x, 'k1', Buffer.from('one'));
  ch.publish(x, '', Buffer.from('two'));
  await published(ch);
  for (const q of qs) eq(bodies(await getAll(ch, q)), ['one', 'two'], `fanout queue ${q}`);
});

test('exchange_to_exchange', async (ctx) => {
  const ch = await ctx.channel(null, true);
  const src = ctx.xname('src');
  const dst = ctx.xname('dst');
  await ch.assertExchange(src, 'topic');
  await ch.assertExchange(dst, 'fanout');
  const [q, qDirect] = await queues(ctx, ch, 2);
  await ch.bindExchange(dst, src, 'logs.#'); // destination, source, pattern
  await ch.bindQueue(q, dst, '');
  await ch.bindQueue(qDirect, src, 'logs.error');
  ch.publish(src, 'logs.error', Buffer.from('e'));
  ch.publish(src, 'logs.info.x', Buffer.from('i'));
  ch.publish(src, 'metrics', Buffer.from('m'));
  await published(ch);
  const got = await getAll(ch, q);
  eq(bodies(got), ['e', 'i'], 'via e2e binding');
  eq([got[0].fields.exchange, got[0].fields.routingKey], [src, 'logs.error'], 'delivery keeps the publish exchange and key');
  eq(bodies(await getAll(ch, qDirect)), ['e'], 'direct binding on the source');
  await ch.unbindExchange(dst, src, 'logs.#');
  ch.publish(src, 'logs.error', Buffer.from('after'));
  await published(ch);
  eq(bodies(await getAll(ch, q)), [], 'after unbindExchange');
});

test('alternate_exchange', async (ctx) => {
  const ch = await ctx.channel(null, true);
  const ae = ctx.xname('ae');
  const main = ctx.xname('main');
  await ch.assertExchange(ae, 'fanout');
  await ch.assertExchange(main, 'direct', { alternateExchange: ae });
  const [qMain, qAe] = await queues(ctx, ch, 2);
  await ch.bindQueue(qMain, main, 'known');
  await ch.bindQueue(qAe, ae, '');
  const returned = [];
  ch.on('return', (m) => returned.push(m));
  ch.publish(main, 'known', Buffer.from('routed'), { mandatory: true });
  ch.publish(main, 'unknown', Buffer.from('to-ae'), { mandatory: true });
  await published(ch);
  eq(returned.length, 0, 'no basic.return when the alternate exchange routes the message');
  eq(bodies(await getAll(ch, qMain)), ['routed'], 'main queue');
  const viaAe = await getAll(ch, qAe);
  eq(bodies(viaAe), ['to-ae'], 'alternate exchange queue');
  eq([viaAe[0].fields.exchange, viaAe[0].fields.routingKey], [main, 'unknown'], 'AE delivery keeps original exchange/key');
});

main();
