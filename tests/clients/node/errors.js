'use strict';
// Error paths with amqplib: 404 passive declare, 406 redeclare mismatch, 403 access refused,
// connection-level errors (530 duplicate consumer tag, auth failure, unknown vhost).
const {
  amqp,
  VHOST,
  urlWith,
  replyOf,
  eq,
  check,
  fail,
  expectChannelClose,
  waitFor,
  test,
  main,
} = require('./lib/common');

test('not_found_passive', async (ctx) => {
  const conn = await ctx.connect();
  const missingQ = ctx.name('missing-q');
  let ch = await ctx.channel(conn);
  const r = await expectChannelClose(
    () => ch.checkQueue(missingQ),
    404,
    `NOT_FOUND - no queue '${missingQ}' in vhost '${VHOST}'`,
    'checkQueue of missing queue',
  );
  // channel.close names the failing method: queue.declare = class 50, method 10
  eq([r.classId, r.methodId], [50, 10], 'channel.close class-id/method-id');
  const missingX = ctx.name('missing-x');
  ch = await ctx.channel(conn);
  await expectChannelClose(
    () => ch.checkExchange(missingX),
    404,
    `NOT_FOUND - no exchange '${missingX}' in vhost '${VHOST}'`,
    'checkExchange of missing exchange',
  );
  // the channel 'error' event carries the same code
  eq(
    ctx.errors.map((e) => e.code),
    [404, 404],
    'channel error events',
  );
  ch = await ctx.channel(conn);
  const q = ctx.qname();
  const ok = await ch.assertQueue(q);
  eq(ok.queue, q, 'connection still usable on a new channel');
});

test('precondition_failed_redeclare', async (ctx) => {
  const conn = await ctx.connect();
  let ch = await ctx.channel(conn);
  const q = ctx.qname();
  await ch.assertQueue(q, { durable: false, messageTtl: 1000 });
  await expectChannelClose(
    () => ch.assertQueue(q, { durable: true }),
    406,
    `PRECONDITION_FAILED - inequivalent arg 'durable' for queue '${q}' in vhost '${VHOST}': received 'true' but current is 'false'`,
    'redeclare queue with different durable',
  );
  ch = await ctx.channel(conn);
  await expectChannelClose(
    () => ch.assertQueue(q, { durable: false, messageTtl: 2000 }),
    406,
    `PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '${q}' in vhost '${VHOST}': received '2000' but current is '1000'`,
    'redeclare queue with different x-message-ttl',
  );
  const x = ctx.xname();
  ch = await ctx.channel(conn);
  await ch.assertExchange(x, 'direct', { durable: false });
  await expectChannelClose(
    () => ch.assertExchange(x, 'topic', { durable: false }),
    406,
    `PRECONDITION_FAILED - inequivalent arg 'type' for exchange '${x}' in vhost '${VHOST}': received 'topic' but current is 'direct'`,
    'redeclare exchange with a different type',
  );
  ch = await ctx.channel(conn);
  const m = await ch.get(q);
  eq(m, false, 'fine on a new channel');
});

test('access_refused', async (ctx) => {
  const conn = await ctx.connect();
  const name = `amq.sy-${ctx.name('r').slice(-12)}`;
  let ch = await ctx.channel(conn);
  await expectChannelClose(
    () => ch.assertExchange(name, 'direct'),
    403,
    `ACCESS_REFUSED - exchange name '${name}' contains reserved prefix 'amq.*'`,
    'declare amq.* exchange',
  );
  ch = await ctx.channel(conn);
  await expectChannelClose(
    () => ch.assertQueue(name),
    403,
    `ACCESS_REFUSED - queue name '${name}' contains reserved prefix 'amq.*'`,
    'declare amq.* queue',
  );
  ch = await ctx.channel(conn);
  const q = ctx.qname();
  await ch.assertQueue(q);
  await expectChannelClose(
    () => ch.bindQueue(q, '', 'k'),
    403,
    'ACCESS_REFUSED - operation not permitted on the default exchange',
    'bind to the default exchange',
  );
  ch = await ctx.channel(conn);
  await ch.consume(q, () => {}, { exclusive: true });
  const ch2 = await ctx.channel(conn);
  const r = await expectChannelClose(
    () => ch2.consume(q, () => {}),
    403,
    `ACCESS_REFUSED - queue '${q}' in vhost '${VHOST}' in exclusive use`,
    'consume next to an exclusive consumer',
  );
  eq([r.classId, r.methodId], [60, 20], 'channel.close names basic.consume');
});

test('resource_locked', async (ctx) => {
  const owner = await ctx.connect();
  const other = await ctx.connect();
  const q = ctx.qname();
  await (await ctx.channel(owner)).assertQueue(q, { exclusive: true });
  const ch = await ctx.channel(other);
  await expectChannelClose(
    () => ch.checkQueue(q),
    405,
    `RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '${q}' in vhost '${VHOST}'.`,
    'exclusive queue from another connection',
  );
});

test('duplicate_consumer_tag_closes_connection', async (ctx) => {
  const conn = await ctx.connect();
  let closed = null;
  conn.on('close', (e) => {
    closed = e || 'no error';
  });
  const ch = await ctx.channel(conn);
  const q = ctx.qname();
  await ch.assertQueue(q);
  await ch.consume(q, () => {}, { consumerTag: 'dup' });
  let err = null;
  try {
    await ch.consume(q, () => {}, { consumerTag: 'dup' });
  } catch (e) {
    err = e;
  }
  check(err !== null, 'second consume with the same tag fails');
  await waitFor(() => closed !== null, 'connection close');
  const connErr = ctx.errors.find((e) => e.code === 530);
  if (!connErr) fail(`expected a 530 connection error, got ${ctx.errors.map((e) => e.message)}`);
  const r = replyOf(connErr);
  eq(r.text, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'", 'connection.close text');
});

test('auth_and_vhost_failures', async (ctx) => {
  let err = null;
  try {
    await amqp.connect(urlWith({ password: 'wrong-password' }));
  } catch (e) {
    err = e;
  }
  check(err !== null, 'bad password must fail');
  eq(
    err.message,
    'Handshake terminated by server: 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."',
    'bad password error',
  );
  err = null;
  const vh = `no-such-vhost-${ctx.name('v').slice(-8)}`;
  try {
    await amqp.connect(urlWith({ vhost: vh }));
  } catch (e) {
    err = e;
  }
  check(err !== null, 'unknown vhost must fail');
  // amqplib does not surface the reply code/text here (RabbitMQ sends
  // connection.close 530 "NOT_ALLOWED - vhost <name> not found"; see errors.py)
  eq(err.message, 'Expected ConnectionOpenOk; got <ConnectionClose channel:0>', 'unknown vhost error');
});

test('publish_to_missing_exchange', async (ctx) => {
  const conn = await ctx.connect();
  const ch = await ctx.channel(conn);
  const missing = ctx.name('missing-x');
  ch.publish(missing, 'k', Buffer.from('x'));
  await waitFor(() => ctx.errors.length === 1, 'channel error');
  const r = replyOf(ctx.errors[0]);
  eq([r.code, r.text], [404, `NOT_FOUND - no exchange '${missing}' in vhost '${VHOST}'`], 'channel.close');
  eq([r.classId, r.methodId], [60, 40], 'channel.close names basic.publish (class 60, method 40)');
  const ch2 = await ctx.channel(conn);
  await ch2.assertQueue('', { exclusive: true });
});

main();
