'use strict';
// mqtt.js (MQTT 3.1.1 and 5.0) against the broker: QoS flows, retained messages,
// persistent sessions, MQTT 5 properties and topic aliases, shared subscriptions.
// Broker address from $MQTT_HOST / $MQTT_PORT; the rest of the contract is lib/common.js's.

const crypto = require('node:crypto');
const mqtt = require('mqtt');
const { eq, check, test, main, waitFor } = require('./lib/common');

const URL = `mqtt://${process.env.MQTT_HOST || '127.0.0.1'}:${process.env.MQTT_PORT || '1883'}`;
const uniq = (kind) => `sy-mqttjs-${kind}-${crypto.randomBytes(6).toString('hex')}`;

// A connected client whose messages collect in `inbox`.
async function client(opts = {}) {
  const c = mqtt.connect(URL, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  c.inbox = [];
  c.on('message', (topic, payload, packet) => c.inbox.push({ topic, payload: payload.toString(), packet }));
  c.connack = await new Promise((resolve, reject) => {
    c.once('connect', resolve);
    c.once('error', reject);
  });
  return c;
}

async function next(c, what) {
  await waitFor(() => c.inbox.length > 0, what);
  return c.inbox.shift();
}

test('qos_levels_both_versions', async () => {
  for (const protocolVersion of [4, 5]) {
    const base = uniq('q');
    const sub = await client({ protocolVersion });
    const granted = await sub.subscribeAsync(`${base}/#`, { qos: 2 });
    eq(granted[0].qos, 2, 'granted QoS');
    const pub = await client({ protocolVersion });
    for (const qos of [0, 1, 2]) await pub.publishAsync(`${base}/q${qos}`, `m${qos}`, { qos });
    for (const qos of [0, 1, 2]) {
      const m = await next(sub, `QoS ${qos} message`);
      eq([m.topic, m.payload, m.packet.qos], [`${base}/q${qos}`, `m${qos}`, qos], `v${protocolVersion} delivery`);
    }
    await sub.endAsync();
    await pub.endAsync();
  }
});

test('retained_and_persistent_session', async () => {
  const t = uniq('r');
  const pub = await client();
  await pub.publishAsync(t, 'kept', { qos: 1, retain: true });
  const clientId = uniq('sess');
  let s = await client({ clientId, clean: false });
  await s.subscribeAsync(t, { qos: 1 });
  const r = await next(s, 'retained message');
  eq([r.payload, r.packet.retain], ['kept', true], 'retained on subscribe');
  await s.endAsync();
  await pub.publishAsync(t, 'offline', { qos: 1 });
  s = await client({ clientId, clean: false });
  eq(s.connack.sessionPresent, true, 'session present');
  const m = await next(s, 'queued message');
  eq(m.payload, 'offline', 'queued while offline');
  await pub.publishAsync(t, '', { qos: 1, retain: true });
  await s.endAsync();
  await pub.endAsync();
});

test('mqtt5_properties_and_topic_alias', async () => {
  const t = uniq('p');
  const sub = await client({ protocolVersion: 5, properties: { topicAliasMaximum: 10 } });
  await sub.subscribeAsync(t, { qos: 1, properties: { subscriptionIdentifier: 5 } });
  const pub = await client({ protocolVersion: 5 });
  check(pub.connack.properties && pub.connack.properties.topicAliasMaximum > 0, 'server accepts aliases');
  const properties = {
    contentType: 'text/plain',
    userProperties: { a: '1', b: ['2', '3'] },
    responseTopic: `${t}/reply`,
    correlationData: Buffer.from('c1'),
    topicAlias: 1,
  };
  await pub.publishAsync(t, 'one', { qos: 1, properties });
  // Second publish by alias only (mqtt.js sends an empty topic with alias 1).
  await pub.publishAsync(t, 'two', { qos: 1, properties: { topicAlias: 1 } });
  const m1 = await next(sub, 'first');
  const m2 = await next(sub, 'second');
  eq([m1.topic, m1.payload, m2.topic, m2.payload], [t, 'one', t, 'two'], 'topics resolved');
  const p = m1.packet.properties;
  eq(p.contentType, 'text/plain', 'content type');
  eq({ ...p.userProperties }, { a: '1', b: ['2', '3'] }, 'user properties');
  eq(p.responseTopic, `${t}/reply`, 'response topic');
  eq(p.correlationData.toString(), 'c1', 'correlation data');
  eq(p.subscriptionIdentifier, 5, 'subscription identifier');
  await sub.endAsync();
  await pub.endAsync();
});

test('shared_subscription', async () => {
  const t = uniq('sh');
  const g = uniq('g');
  const a = await client({ protocolVersion: 5 });
  const b = await client({ protocolVersion: 5 });
  await a.subscribeAsync(`$share/${g}/${t}`, { qos: 1 });
  await b.subscribeAsync(`$share/${g}/${t}`, { qos: 1 });
  const pub = await client({ protocolVersion: 5 });
  for (let i = 0; i < 10; i++) await pub.publishAsync(t, `${i}`, { qos: 1 });
  await waitFor(() => a.inbox.length + b.inbox.length >= 10, 'all 10 messages');
  const all = [...a.inbox, ...b.inbox].map((m) => Number(m.payload)).sort((x, y) => x - y);
  eq(all, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'each once');
  check(a.inbox.length > 0 && b.inbox.length > 0, 'both members got some');
  for (const c of [a, b, pub]) await c.endAsync();
});

main();
