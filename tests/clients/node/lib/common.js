'use strict';
// Shared helpers for the amqplib scenario scripts.
//
// Contract (same as the Python scripts):
//   * broker address from $AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2F)
//   * exit 0 = all checks passed, 1 = at least one failed
//   * failures go to stderr as "FAIL <script>.<test>: <what>: expected ..., got ..."
//   * $SCENARIO_TIMEOUT (s, default 60) is a watchdog for the whole script
//   * optional argv: substrings of test names to run
//   * last stdout line: "<script>: N passed, N failed"

const path = require('node:path');
const crypto = require('node:crypto');
const util = require('node:util');
const amqp = require('amqplib');

const AMQP_URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/%2F';
const SCRIPT = path.basename(process.argv[1] || 'script', '.js');
const DEFAULT_WAIT = Number(process.env.SCENARIO_WAIT || 5) * 1000;

const parsed = new URL(AMQP_URL);
const USER = decodeURIComponent(parsed.username || 'guest');
const PASSWORD = decodeURIComponent(parsed.password || 'guest');
const VHOST = parsed.pathname.length > 1 ? decodeURIComponent(parsed.pathname.slice(1)) : '/';

function urlWith({ user, password, vhost } = {}) {
  const u = new URL(AMQP_URL);
  if (user !== undefined) u.username = encodeURIComponent(user);
  if (password !== undefined) u.password = encodeURIComponent(password);
  if (vhost !== undefined) u.pathname = `/${encodeURIComponent(vhost)}`;
  return u.toString();
}

class Failure extends Error {}

const show = (v) => util.inspect(v, { depth: 8, breakLength: Infinity });

function fail(msg) {
  throw new Failure(msg);
}

function eq(got, expected, what) {
  if (!util.isDeepStrictEqual(got, expected)) {
    fail(`${what}: expected ${show(expected)}, got ${show(got)}`);
  }
}

function check(cond, what) {
  if (!cond) fail(what);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Wait for pred() to become true (events arrive on the event loop meanwhile);
// the 5 ms tick is only a polling period, the timeout a failure bound.
async function waitFor(pred, what, timeout = DEFAULT_WAIT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > deadline) fail(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(5);
  }
}

// amqplib error -> { code, text }
function replyOf(err) {
  const m = /with message "([\s\S]*)"$/.exec(err?.message || '');
  return { code: err?.code, text: m ? m[1] : undefined, classId: err?.classId, methodId: err?.methodId, message: err?.message };
}

// Run fn (returns a promise); it must be rejected by a server channel.close.
async function expectChannelClose(fn, code, textPrefix, what) {
  let err = null;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  if (!err) fail(`${what}: expected channel.close ${code} ${show(textPrefix)}, but the operation succeeded`);
  if (err instanceof Failure) throw err;
  const r = replyOf(err);
  if (r.code !== code || (textPrefix != null && !(r.text || '').startsWith(textPrefix))) {
    fail(`${what}: expected close ${code} ${show(textPrefix)}..., got ${show(r.code)} ${show(r.text ?? r.message)}`);
  }
  return r;
}

class Ctx {
  constructor(test) {
    this.test = test;
    this.conns = [];
    this.queues = [];
    this.exchanges = [];
    this.errors = [];
  }

  name(prefix = 'q') {
    return `sy.${SCRIPT}.${prefix}.${crypto.randomBytes(6).toString('hex')}`;
  }

  qname(prefix = 'q') {
    const n = this.name(prefix);
    this.queues.push(n);
    return n;
  }

  xname(prefix = 'x') {
    const n = this.name(prefix);
    this.exchanges.push(n);
    return n;
  }

  async connect(url = AMQP_URL, opts = {}) {
    const conn = await amqp.connect(url, {
      clientProperties: { connection_name: `${SCRIPT}.${this.test}` },
      ...opts,
    });
    // connection-level errors are also reported on 'error': record, don't crash
    conn.on('error', (e) => this.errors.push(e));
    this.conns.push(conn);
    return conn;
  }

  // A channel whose 'error' events (server channel.close) are recorded, not thrown.
  async channel(conn, confirm = false) {
    const c = conn || (await this.connect());
    const ch = confirm ? await c.createConfirmChannel() : await c.createChannel();
    ch.on('error', (e) => this.errors.push(e));
    return ch;
  }

  async cleanup() {
    for (const c of this.conns) {
      try {
        await c.close();
      } catch (_) {
        /* already closed */
      }
    }
    this.conns = [];
    if (!this.queues.length && !this.exchanges.length) return;
    let conn;
    try {
      conn = await amqp.connect(AMQP_URL);
      conn.on('error', () => {});
    } catch (_) {
      return;
    }
    let ch = null;
    const fresh = async () => {
      ch = await conn.createChannel();
      ch.on('error', () => {});
    };
    for (const [kind, names] of [
      ['q', this.queues],
      ['x', this.exchanges],
    ]) {
      for (const n of names) {
        try {
          if (!ch) await fresh();
          if (kind === 'q') await ch.deleteQueue(n);
          else await ch.deleteExchange(n);
        } catch (_) {
          ch = null;
        }
      }
    }
    try {
      await conn.close();
    } catch (_) {
      /* ignore */
    }
  }
}

// consume n messages (waiting for them), cancel, return them
async function consumeN(ch, queue, n, what, opts = { noAck: true }, timeout = DEFAULT_WAIT) {
  const msgs = [];
  const { consumerTag } = await ch.consume(queue, (m) => m && msgs.push(m), opts);
  await waitFor(() => msgs.length >= n, `${n} message(s) on ${queue} (${what}); got ${msgs.length}`, timeout);
  await ch.cancel(consumerTag);
  return msgs;
}

async function getAll(ch, queue, noAck = true) {
  const out = [];
  for (;;) {
    const m = await ch.get(queue, { noAck });
    if (m === false) return out;
    out.push(m);
  }
}

const bodies = (msgs) => msgs.map((m) => m.content.toString());

const tests = [];
function test(name, fn) {
  tests.push({ name, fn });
}

async function main(defaultTimeout = 60) {
  const limit = Number(process.env.SCENARIO_TIMEOUT || defaultTimeout);
  let current = null;
  const watchdog = setTimeout(() => {
    process.stderr.write(`FAIL ${SCRIPT}: watchdog: script exceeded ${limit}s (running test: ${current})\n`);
    process.exit(1);
  }, limit * 1000);
  const filters = process.argv.slice(2);
  const selected = tests.filter((t) => !filters.length || filters.some((f) => t.name.includes(f)));
  let passed = 0;
  let failed = 0;
  const t0 = Date.now();
  for (const t of selected) {
    current = t.name;
    const ctx = new Ctx(t.name);
    const start = Date.now();
    try {
      await t.fn(ctx);
      passed++;
      process.stdout.write(`ok   ${SCRIPT}.${t.name} (${((Date.now() - start) / 1000).toFixed(2)}s)\n`);
    } catch (e) {
      failed++;
      if (e instanceof Failure) process.stderr.write(`FAIL ${SCRIPT}.${t.name}: ${e.message}\n`);
      else process.stderr.write(`FAIL ${SCRIPT}.${t.name}: unexpected ${e?.stack || e}\n`);
    } finally {
      try {
        await ctx.cleanup();
      } catch (_) {
        /* ignore */
      }
    }
  }
  clearTimeout(watchdog);
  process.stdout.write(`${SCRIPT} took ${((Date.now() - t0) / 1000).toFixed(2)}s\n`);
  process.stdout.write(`${SCRIPT}: ${passed} passed, ${failed} failed\n`);
  process.exitCode = failed === 0 && selected.length ? 0 : 1;
  // let stdout flush, then exit even if a socket lingers
  setImmediate(() => process.exit(process.exitCode));
}

process.on('unhandledRejection', (e) => {
  process.stderr.write(`FAIL ${SCRIPT}: unhandled rejection: ${e?.stack || e}\n`);
  process.exit(1);
});

module.exports = {
  amqp,
  AMQP_URL,
  USER,
  PASSWORD,
  VHOST,
  SCRIPT,
  urlWith,
  Failure,
  fail,
  eq,
  check,
  sleep,
  waitFor,
  replyOf,
  expectChannelClose,
  consumeN,
  getAll,
  bodies,
  test,
  main,
};
