'use strict';
// Default-exchange publish/consume with amqplib: properties and headers round trip
// (every type amqplib can encode), empty and 1 MiB bodies, server-named consumer tags.
const crypto = require('node:crypto');
const { USER, eq, check, consumeN, getAll, bodies, waitFor, test, main } = require('./lib/common');

const HEADERS = {
  str: 'hello',
  unicode: 'h\u00e9llo \u2603 \u{1F600}',
  emptyStr: '',
  byte: 5, // b
  negByte: -100, // b
  short: 1000, // s
  int: 100000, // I
  long: 2 ** 40, // l
  negLong: -(2 ** 40), // l
  double: 1.25, // d
  negDouble: -0.5, // d
  bool: true,
  boolFalse: false,
  nul: null, // V
  buf: Buffer.from([0, 1, 255]), // x
  arr: [1, 'two', true, null, 2.5, [3], { k: 'v' }],
  emptyArr: [],
  obj: { a: 1, b: { c: 'deep', d: [false] } },
  emptyObj: {},
  // explicit wire types via amqplib's {'!': type, value} notation
  ts: { '!': 'timestamp', value: 1700000000 },
  dec: { '!': 'decimal', value: { places: 2, digits: 314 } },
  f32: { '!': 'float', value: 1.5 },
  ubyte: { '!': 'unsignedbyte', value: 200 },
  ushort: { '!': 'unsignedshort', value: 60000 },
  uint: { '!': 'unsignedint', value: 4000000000 },
  int64: { '!': 'int64', value: 5 },
  int8: { '!': 'int8', value: -5 },
  int16: { '!': 'int16', value: -300 },
  int32: { '!': 'int32', value: 7 },
  double64: { '!': 'double', value: 2 },
};

// what amqplib decodes each header back to
const EXPECTED_HEADERS = {
  ...HEADERS,
  ts: { '!': 'timestamp', value: 1700000000 },
  dec: { '!': 'decimal', value: { places: 2, digits: 314 } },
  f32: 1.5,
  ubyte: 200,
  ushort: 60000,
  uint: 4000000000,
  int64: 5,
  int8: -5,
  int16: -300,
  int32: 7,
  double64: 2,
};

const PUBLISH_OPTS = {
  contentType: 'application/json',
  contentEncoding: 'gzip',
  headers: HEADERS,
  deliveryMode: 2,
  priority: 7,
  correlationId: 'corr-1',
  replyTo: 'reply.here',
  expiration: '60000',
  messageId: 'msg-\u00e9',
  timestamp: 1700000001,
  type: 'order.created',
  userId: USER,
  appId: 'switchyard-tests',
};

const EXPECTED_PROPS = {
  contentType: 'application/json',
  contentEncoding: 'gzip',
  headers: EXPECTED_HEADERS,
  deliveryMode: 2,
  priority: 7,
  correlationId: 'corr-1',
  replyTo: 'reply.here',
  expiration: '60000',
  messageId: 'msg-\u00e9',
  timestamp: 1700000001,
  type: 'order.created',
  userId: USER,
  appId: 'switchyard-tests',
  clusterId: undefined,
};

function checkProps(got, want, what) {
  for (const k of Object.keys(want)) {
    if (k === 'headers' && want.headers && got.headers) {
      for (const h of new Set([...Object.keys(want.headers), ...Object.keys(got.headers)])) {
        eq(got.headers[h], want.headers[h], `${what}: header ${h}`);
      }
    }
    eq(got[k], want[k], `${what}: property ${k}`);
  }
}

test('properties_round_trip', async (ctx) => {
  const ch = await ctx.channel();
  const q = ctx.qname();
  const ok = await ch.assertQueue(q);
  eq([ok.queue, ok.messageCount, ok.consumerCount], [q, 0, 0], 'declare-ok');
  ch.sendToQueue(q, Buffer.from('payload'), PUBLISH_OPTS);
  const [m] = await consumeN(ch, q, 1, 'full properties');
  eq(m.content.toString(), 'payload', 'body');
  eq(
    [m.fields.exchange, m.fields.routingKey, m.fields.redelivered, m.fields.deliveryTag],
    ['', q, false, 1],
    'deliver fields',
  );
  checkProps(m.properties, EXPECTED_PROPS, 'consumed');
  ch.sendToQueue(q, Buffer.from('via-get'), PUBLISH_OPTS);
  ch.sendToQueue(q, Buffer.from('bare'));
  await waitFor(async () => (await ch.checkQueue(q)).messageCount === 2, '2 messages ready');
  const g = await ch.get(q, { noAck: true });
  eq([g.content.toString(), g.fields.messageCount, g.fields.exchange, g.fields.routingKey], ['via-get', 1, '', q], 'get-ok');
  checkProps(g.properties, EXPECTED_PROPS, 'got');
  const bare = await ch.get(q, { noAck: true });
  checkProps(
    bare.properties,
    // amqplib always sends a (here empty) headers table
    { ...Object.fromEntries(Object.keys(EXPECTED_PROPS).map((k) => [k, undefined])), headers: {} },
    'message published without properties (broker adds none)',
  );
  eq(await ch.get(q), false, 'get-empty');
});

test('empty_and_large_bodies', async (ctx) => {
  const ch = await ctx.channel();
  const q = ctx.qname();
  await ch.assertQueue(q);
  const big = crypto.randomBytes(1024 * 1024);
  const sizes = [0, 131063, 131064, 131065, 1024 * 1024];
  const sent = sizes.map((n) => (n === big.length ? big : crypto.randomBytes(n)));
  for (const b of sent) ch.sendToQueue(q, b, { contentType: 'application/octet-stream' });
  const got = await consumeN(ch, q, sent.length, 'bodies', { noAck: true }, 10000);
  got.forEach((m, i) => {
    eq(m.content.length, sizes[i], `body ${i} length`);
    check(m.content.equals(sent[i]), `body ${i} (${sizes[i]} bytes) identical`);
    eq(m.properties.contentType, 'application/octet-stream', `body ${i} content type`);
  });
});

test('server_generated_consumer_tag', async (ctx) => {
  const ch = await ctx.channel();
  const q = ctx.qname();
  await ch.assertQueue(q);
  const tags = new Set();
  for (let i = 0; i < 3; i++) {
    const { consumerTag } = await ch.consume(q, () => {});
    check(/^amq\.ctag-[A-Za-z0-9_-]{22}$/.test(consumerTag), `server-generated consumer tag: got ${consumerTag}`);
    tags.add(consumerTag);
  }
  eq(tags.size, 3, 'distinct consumer tags');
  const { consumerTag } = await ch.consume(q, () => {}, { consumerTag: 'my-tag' });
  eq(consumerTag, 'my-tag', 'client-chosen tag echoed');
  eq((await ch.checkQueue(q)).consumerCount, 4, 'consumer_count');
  const r = await ch.cancel('my-tag');
  eq(r.consumerTag, 'my-tag', 'cancel-ok tag');
});

test('fifo_and_server_named_queue', async (ctx) => {
  const ch = await ctx.channel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  check(/^amq\.gen-[A-Za-z0-9_-]{22}$/.test(queue), `server-named queue, got ${queue}`);
  for (let i = 0; i < 300; i++) ch.sendToQueue(queue, Buffer.from(String(i)));
  const got = await consumeN(ch, queue, 300, 'fifo');
  eq(
    bodies(got),
    Array.from({ length: 300 }, (_, i) => String(i)),
    'publish order kept',
  );
  eq(await getAll(ch, queue), [], 'drained');
});

main();
