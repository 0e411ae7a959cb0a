'use strict';
// @stomp/stompjs and mqtt.js over WebSocket, as a browser page would use them
// (the `ws` package stands in for the browser's WebSocket): STOMP on the Web-STOMP
// port and on the HTTP port, MQTT on the Web-MQTT port and on the HTTP port, and
// messages crossing between the two and AMQP.
//
// Endpoints from $WS_STOMP_URL, $WS_MQTT_URL and $HTTP_URL (set by the test harness);
// the rest of the contract is lib/common.js's.

const crypto = require('node:crypto');
const WebSocket = require('ws');
const { Client } = require('@stomp/stompjs');
const mqtt = require('mqtt');
const { eq, check, waitFor, test, main } = require('./lib/common');

const STOMP_URL = process.env.WS_STOMP_URL || 'ws://127.0.0.1:15674/ws';
const MQTT_URL = process.env.WS_MQTT_URL || 'ws://127.0.0.1:15675/ws';
const HTTP_URL = process.env.HTTP_URL || 'http://127.0.0.1:15672';
const HTTP_WS = HTTP_URL.replace(/^http/, 'ws');
const uniq = (kind) => `${kind}-${crypto.randomBytes(5).toString('hex')}`;

// A connected stompjs client over a real WebSocket; ctx.cleanup() deactivates it.
async function stomp(ctx, url) {
  const rec = { errors: [], protocol: null };
  const client = new Client({
    brokerURL: url,
    webSocketFactory: () => {
      const ws = new WebSocket(url, ['v12.stomp', 'v11.stomp', 'v10.stomp']);
      ws.on('open', () => {
        rec.protocol = ws.protocol;
      });
      return ws;
    },
    connectHeaders: { login: 'guest', passcode: 'guest' },
    reconnectDelay: 0,
    heartbeatIncoming: 1000,
    heartbeatOutgoing: 1000,
    debug: () => {},
  });
  let connected = null;
  client.onConnect = (frame) => {
    connected = frame;
  };
  client.onStompError = (frame) => rec.errors.push(frame);
  client.activate();
  ctx.conns.push({ close: () => client.deactivate() });
  await waitFor(() => connected, `STOMP CONNECTED over ${url}`);
  return { client, rec, connected };
}

async function mqttClient(url, opts = {}) {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  c.inbox = [];
  c.on('message', (topic, payload, packet) => c.inbox.push({ topic, payload, packet }));
  await new Promise((resolve, reject) => {
    c.once('connect', resolve);
    c.once('error', reject);
  });
  return c;
}

test('stompjs_over_websocket_both_ports', async (ctx) => {
  for (const url of [STOMP_URL, `${HTTP_WS}/ws/stomp`, `${HTTP_WS}/ws`]) {
    const s = await stomp(ctx, url);
    eq(s.connected.headers.version, '1.2', `${url}: negotiated version`);
    eq(s.rec.protocol, 'v12.stomp', `${url}: chosen subprotocol`);
    const dest = `/topic/${uniq('ws.stompjs')}`;
    const got = [];
    s.client.subscribe(dest, (m) => got.push(m), { id: 'sub-0' });
    // Wait for the subscription to exist before publishing (a receipt on a no-op frame).
    await new Promise((resolve) => {
      s.client.watchForReceipt('ready', resolve);
      s.client.subscribe(`/topic/${uniq('noop')}`, () => {}, { id: 'sub-1', receipt: 'ready' });
    });
    s.client.publish({ destination: dest, body: 'hello stompjs', headers: { 'x-app': 'node' } });
    const bin = new Uint8Array([0, 1, 2, 253, 254, 255]);
    s.client.publish({ destination: dest, binaryBody: bin, headers: { 'content-type': 'application/octet-stream' } });
    const big = 'x'.repeat(300 * 1024);
    s.client.publish({ destination: dest, body: big });
    await waitFor(() => got.length >= 3, `3 messages over ${url}; got ${got.length}`);
    eq(got[0].body, 'hello stompjs', 'text body');
    eq(got[0].headers['x-app'], 'node', 'header');
    eq(Array.from(got[1].binaryBody), Array.from(bin), 'binary body');
    eq(got[2].body.length, big.length, '300 KiB body');
    check(s.rec.errors.length === 0, `no ERROR frames: ${JSON.stringify(s.rec.errors.map((e) => e.headers))}`);
    await s.client.deactivate();
  }
});

test('stompjs_queue_acks_over_websocket', async (ctx) => {
  const s = await stomp(ctx, STOMP_URL);
  const q = `/queue/${uniq('ws.q')}`;
  const got = [];
  s.client.subscribe(q, (m) => got.push(m), { id: 'q', ack: 'client-individual', 'prefetch-count': '1' });
  for (let i = 0; i < 3; i++) s.client.publish({ destination: q, body: `m${i}` });
  await waitFor(() => got.length >= 1, 'first queued message');
  await new Promise((r) => setTimeout(r, 200));
  eq(got.length, 1, 'prefetch 1 holds the rest back');
  got[0].ack();
  await waitFor(() => got.length >= 2, 'second after ack');
  got[1].nack({ requeue: 'true' });
  await waitFor(() => got.length >= 3, 'redelivery after nack');
  eq(got[2].body, 'm1', 'nacked message comes back');
  got[2].ack();
  await waitFor(() => got.length >= 4, 'third');
  got[3].ack();
});

test('mqttjs_over_websocket_both_ports', async () => {
  for (const [url, protocolVersion] of [
    [MQTT_URL, 4],
    [MQTT_URL, 5],
    [`${HTTP_WS}/ws/mqtt`, 4],
    [`${HTTP_WS}/ws`, 5],
  ]) {
    const base = uniq('ws/mqttjs');
    const sub = await mqttClient(url, { protocolVersion });
    const granted = await sub.subscribeAsync(`${base}/#`, { qos: 1 });
    eq(granted[0].qos, 1, `${url} v${protocolVersion}: granted QoS`);
    const pub = await mqttClient(url, { protocolVersion });
    await pub.publishAsync(`${base}/a`, 'hello mqtt.js', { qos: 1 });
    await pub.publishAsync(`${base}/b`, Buffer.from([0, 255, 1]), { qos: 0 });
    await pub.publishAsync(`${base}/big`, Buffer.alloc(200 * 1024, 7), { qos: 1 });
    await waitFor(() => sub.inbox.length >= 3, `${url}: 3 messages; got ${sub.inbox.length}`);
    const byTopic = Object.fromEntries(sub.inbox.map((m) => [m.topic, m.payload]));
    eq(byTopic[`${base}/a`].toString(), 'hello mqtt.js', 'text payload');
    eq(Array.from(byTopic[`${base}/b`]), [0, 255, 1], 'binary payload');
    eq(byTopic[`${base}/big`].length, 200 * 1024, '200 KiB payload');
    await sub.endAsync();
    await pub.endAsync();
  }
});

test('mqtt_over_websocket_meets_stomp_over_websocket', async (ctx) => {
  const s = await stomp(ctx, STOMP_URL);
  const key = uniq('cross');
  const got = [];
  await new Promise((resolve) => {
    s.client.watchForReceipt('sub', resolve);
    s.client.subscribe(`/topic/${key}.*`, (m) => got.push(m), { id: 'x', receipt: 'sub' });
  });
  const m = await mqttClient(MQTT_URL);
  await m.publishAsync(`${key}/temp`, '21.5', { qos: 1 });
  await waitFor(() => got.length >= 1, 'MQTT message at the STOMP subscriber');
  eq(got[0].body, '21.5', 'payload');
  eq(got[0].headers.destination, `/topic/${key}.temp`, 'destination');
  await m.endAsync();
});

test('mqtt_session_is_shared_between_tcp_and_websocket', async () => {
  const clientId = uniq('shared');
  const tcpUrl = `mqtt://${process.env.MQTT_HOST || '127.0.0.1'}:${process.env.MQTT_PORT || '1883'}`;
  const overTcp = await mqttClient(tcpUrl, { clientId, clean: false });
  let tookOver = false;
  overTcp.on('close', () => {
    tookOver = true;
  });
  const overWs = await mqttClient(MQTT_URL, { clientId, clean: false });
  await waitFor(() => tookOver, 'the TCP connection taken over by the WebSocket one');
  await overWs.endAsync();
  overTcp.end(true);
});

main(90);
