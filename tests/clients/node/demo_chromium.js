'use strict';
// End to end in a real browser: headless Debian Chromium (driven by playwright-core
// through its executablePath; no downloaded browser build) opens the broker's /demo
// page, which connects to the JSON live API and subscribes to every topic; then this
// script publishes over AMQP (amqplib) and MQTT (mqtt.js) and over the page's own
// publish form, and each message must appear on the page. A screenshot is kept in
// target/test-artifacts/demo.png.
//
// Broker from $HTTP_URL, $AMQP_URL, $MQTT_HOST/$MQTT_PORT; $CHROMIUM overrides
// /usr/bin/chromium. Contract as lib/common.js.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { chromium } = require('playwright-core');
const mqtt = require('mqtt');
const { amqp, AMQP_URL, check, test, main } = require('./lib/common');

const HTTP_URL = process.env.HTTP_URL || 'http://127.0.0.1:15672';
const MQTT_URL = `mqtt://${process.env.MQTT_HOST || '127.0.0.1'}:${process.env.MQTT_PORT || '1883'}`;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.resolve(__dirname, '..', '..', '..', 'target', 'test-artifacts');
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

test('demo_page_shows_messages_published_over_amqp_mqtt_and_its_form', async (ctx) => {
  check(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: run tests/clients/setup.sh as root (it installs Debian's chromium)`);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1200, height: 800 },
  });
  ctx.conns.push({ close: async () => {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  } });
  const page = browser.pages()[0] || (await browser.newPage());
  const consoleErrors = [];
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  await page.goto(`${HTTP_URL}/demo`);
  await page.waitForSelector('#status.on', { timeout: 10000 });
  check((await page.textContent('#status')).includes('connected as guest'), 'status shows the login');
  await page.click('#subscribe');
  await page.waitForSelector('body[data-subscribed="yes"]', { timeout: 10000 });

  const tag = crypto.randomBytes(4).toString('hex');
  const conn = await ctx.connect(AMQP_URL);
  const ch = await conn.createChannel();
  ch.publish('amq.topic', `demo.amqp.${tag}`, Buffer.from(`hello from AMQP ${tag}`), { headers: { via: 'amqplib' } });
  const m = mqtt.connect(MQTT_URL, { reconnectPeriod: 0 });
  await new Promise((resolve, reject) => {
    m.once('connect', resolve);
    m.once('error', reject);
  });
  await m.publishAsync(`demo/mqtt/${tag}`, `hello from MQTT ${tag}`, { qos: 1 });
  await m.endAsync();
  await page.fill('#pubKey', `demo.form.${tag}`);
  await page.fill('#pubBody', `hello from the form ${tag}`);
  await page.click('#publish');

  for (const text of [`hello from AMQP ${tag}`, `hello from MQTT ${tag}`, `hello from the form ${tag}`]) {
    await page.waitForSelector(`li.message:has-text("${text}")`, { timeout: 10000 });
  }
  const keys = await page.$$eval('li.message .key', (els) => els.map((e) => e.textContent));
  check(keys.includes(`demo.amqp.${tag}`), `AMQP routing key shown: ${keys}`);
  check(keys.includes(`demo.mqtt.${tag}`), `MQTT topic shown as routing key: ${keys}`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo.png'), fullPage: true });
  check(consoleErrors.length === 0, `browser console errors: ${consoleErrors.join('; ')}`);
});

main(120);
