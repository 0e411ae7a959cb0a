'use strict';
// @stomp/stompjs 7 over raw TCP (@stomp/tcp-wrapper as its webSocketFactory):
// SEND/SUBSCRIBE with receipts and headers, binary bodies, topic fan-out,
// client-individual ACK/NACK, transactions, selectors, and an ERROR frame.
//
// Broker from $STOMP_HOST/$STOMP_PORT (default 127.0.0.1:61613); $STOMP_VHOST,
// if set, goes in the CONNECT `host` header. Same contract as lib/common.js.

const { Client } = require('@stomp/stompjs');
const { TCPWrapper } = require('@stomp/tcp-wrapper');
const { eq, check, fail, waitFor, test, main } = require('./lib/common');

const HOST = process.env.STOMP_HOST || '127.0.0.1';
const PORT = Number(process.env.STOMP_PORT || 61613);
const VHOST = process.env.STOMP_VHOST;

// A connected stompjs client that records what arrives; ctx.cleanup() deactivates it.
async function connect(ctx, extra = {}) {
  const rec = { errors: [], receipts: new Set(), closed: false };
  const connectHeaders = { login: 'guest', passcode: 'guest', ...(VHOST ? { host: VHOST } : {}) };
  const client = new Client({
    webSocketFactory: () => new TCPWrapper(HOST, PORT),
    connectHeaders,
    reconnectDelay: 0,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    debug: () => {},
    ...extra,
  });
  let connected = null;
  client.onConnect = (frame) => {
    connected = frame;
  };
  client.onStompError = (frame) => rec.errors.push(frame);
  client.onWebSocketClose = () => {
    rec.closed = true;
  };
  client.onUnhandledReceipt = (frame) => rec.receipts.add(frame.headers['receipt-id']);
  client.activate();
  ctx.conns.push({ close: () => client.deactivate() });
  if (!extra.expectError) await waitFor(() => connected, 'CONNECTED');
  return { client, rec, connected: () => connected };
}

let receiptSeq = 0;
async function withReceipt(c, send) {
  const id = `r-${process.pid}-${++receiptSeq}`;
  let done = false;
  c.client.watchForReceipt(id, () => {
    done = true;
  });
  send(id);
  await waitFor(() => done || c.rec.errors.length, `RECEIPT ${id}`);
  if (!done) fail(`expected RECEIPT ${id}, got ERROR ${c.rec.errors[0].headers.message}: ${c.rec.errors[0].body}`);
}

function publish(c, destination, body, headers = {}) {
  return withReceipt(c, (receipt) => c.client.publish({ destination, body, headers: { ...headers, receipt } }));
}

async function subscribe(c, destination, headers = {}) {
  const got = [];
  let sub;
  await withReceipt(c, (receipt) => {
    sub = c.client.subscribe(destination, (m) => got.push(m), { ...headers, receipt });
  });
  return { got, sub };
}

async function take(got, n, what) {
  await waitFor(() => got.length >= n, `${n} message(s) (${what}); got ${got.length}`);
  return got.splice(0, n);
}

const uniq = (ctx, kind = 'queue') => `/${kind}/${ctx.name(kind[0])}`;

test('connected_headers', async (ctx) => {
  const c = await connect(ctx);
  const f = c.connected();
  eq(f.headers.version, '1.2', 'negotiated version');
  check(f.headers.session.startsWith('session-'), 'session header');
  check(f.headers.server.startsWith('Switchyard/'), 'server header');
});

test('send_subscribe_with_headers_and_binary_body', async (ctx) => {
  const c = await connect(ctx);
  const q = uniq(ctx);
  const s = await subscribe(c, q, { id: 'sub-1' });
  await publish(c, q, 'hello', { colour: 'red', 'content-type': 'text/plain', multi: 'a:b\nc\\d' });
  const bin = new Uint8Array([0, 1, 2, 0, 255]);
  await withReceipt(c, (receipt) => c.client.publish({ destination: q, binaryBody: bin, headers: { receipt } }));
  const [m1, m2] = await take(s.got, 2, 'two messages');
  eq(m1.body, 'hello', 'text body');
  eq(m1.headers.colour, 'red', 'custom header');
  eq(m1.headers.multi, 'a:b\nc\\d', 'header value with colon, newline and backslash (escaped)');
  eq(m1.headers.destination, q, 'destination');
  eq(m1.headers.subscription, 'sub-1', 'subscription');
  eq(Array.from(m2.binaryBody), Array.from(bin), 'binary body with NUL bytes');
});

test('topic_fan_out', async (ctx) => {
  const t = uniq(ctx, 'topic');
  const subs = [];
  for (let i = 0; i < 3; i++) subs.push(await subscribe(await connect(ctx), t));
  const p = await connect(ctx);
  await publish(p, t, 'all');
  for (const [i, s] of subs.entries()) eq((await take(s.got, 1, `subscriber ${i}`))[0].body, 'all', `subscriber ${i}`);
});

test('client_individual_ack_and_nack', async (ctx) => {
  const c = await connect(ctx);
  const q = uniq(ctx);
  const s = await subscribe(c, q, { ack: 'client-individual' });
  await publish(c, q, 'm0');
  await publish(c, q, 'm1');
  const [m0, m1] = await take(s.got, 2, 'deliveries');
  m1.ack();
  m0.nack();
  const [again] = await take(s.got, 1, 'redelivery after NACK');
  eq([again.body, again.headers.redelivered], ['m0', 'true'], 'NACK requeues, flagged redelivered');
  again.ack();
});

test('transactions', async (ctx) => {
  const c = await connect(ctx);
  const q = uniq(ctx);
  const s = await subscribe(c, q);
  const t1 = c.client.begin();
  c.client.publish({ destination: q, body: 'aborted', headers: { transaction: t1.id } });
  t1.abort();
  const t2 = c.client.begin();
  c.client.publish({ destination: q, body: 'committed', headers: { transaction: t2.id } });
  await publish(c, q, 'outside');
  eq((await take(s.got, 1, 'non-transactional'))[0].body, 'outside', 'transactional sends wait for COMMIT');
  t2.commit();
  eq((await take(s.got, 1, 'committed'))[0].body, 'committed', 'the aborted send never arrives');
});

test('selector', async (ctx) => {
  const c = await connect(ctx);
  const t = uniq(ctx, 'topic');
  const s = await subscribe(c, t, { selector: "kind = 'b' OR n > 5" });
  for (const [kind, n] of [['a', 1], ['b', 2], ['a', 9]]) await publish(c, t, `${kind}${n}`, { kind, n: String(n) });
  eq((await take(s.got, 2, 'selected')).map((m) => m.body), ['b2', 'a9'], 'selector');
});

test('error_frame_on_unknown_destination', async (ctx) => {
  const c = await connect(ctx);
  c.client.publish({ destination: '/nowhere/x', body: 'x' });
  await waitFor(() => c.rec.errors.length, 'ERROR frame');
  eq(c.rec.errors[0].headers.message, 'Unknown destination', 'ERROR message header');
  await waitFor(() => c.rec.closed, 'the broker closing the connection');
});

main(40);
