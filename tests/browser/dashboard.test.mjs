// Browser test of the dashboard (GET /): a real `courier serve --demo` on a
// fresh SQLite file and a free loopback port, driven through Debian's headless
// Chromium by playwright-core. No mock: every answer comes from the server.
//
//   COURIER_BIN   the courier binary (default: target/debug/courier from the repo root)
//   CHROMIUM_BIN  the browser (default: /usr/bin/chromium)
//
// Run with tests/browser/run.sh, or `node --test` in this folder after `npm ci`.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const BIN = process.env.COURIER_BIN
  ? path.resolve(process.env.COURIER_BIN)
  : path.join(ROOT, 'target', 'debug', 'courier');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SCREENSHOT = path.join(ROOT, 'target', 'dashboard.png');
const TOKEN = 'secret-token';
const UI_MS = 20_000; // longest wait for one thing to show on the page
const TEST_MS = 90_000;

// ---------------------------------------------------------------- server

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const running = new Set();
process.on('exit', () => { for (const child of running) child.kill('SIGKILL'); });

class Server {
  static async start(extraArgs = []) {
    if (!fs.existsSync(BIN)) {
      throw new Error(`courier binary not found at ${BIN}: run \`cargo build\` in ${ROOT} first, or set COURIER_BIN`);
    }
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'courier-browser-'));
    const port = await freePort();
    const args = ['serve', '--demo', '--db', `sqlite://${dir}/c.db`, '--listen', `127.0.0.1:${port}`, ...extraArgs];
    const child = spawn(BIN, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    const server = new Server(child, dir, `http://127.0.0.1:${port}`, args);
    for (const stream of [child.stdout, child.stderr]) {
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => server.log(chunk));
    }
    await server.ready();
    return server;
  }

  constructor(child, dir, base, args) {
    this.child = child;
    this.dir = dir;
    this.base = base;
    this.args = args;
    this.lines = [];
    this.exit = new Promise((resolve) => {
      child.on('exit', (code, signal) => { running.delete(child); resolve({ code, signal }); });
    });
  }

  log(chunk) {
    this.lines.push(...chunk.split('\n').filter(Boolean));
    if (this.lines.length > 300) this.lines.splice(0, this.lines.length - 300);
  }

  tail(n = 60) {
    return this.lines.slice(-n).join('\n');
  }

  // Ready when the dashboard itself is served (GET / needs no token).
  async ready() {
    const deadline = Date.now() + 30_000;
    let last = '';
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`courier ${this.args.join(' ')} exited early (${this.child.exitCode ?? this.child.signalCode}):\n${this.tail()}`);
      }
      try {
        const res = await fetch(`${this.base}/`);
        const body = await res.text();
        if (res.ok) {
          assert.match(res.headers.get('content-type') || '', /text\/html/, 'GET / is not served as HTML');
          assert.match(body, /<title>courier<\/title>/, 'GET / does not look like the dashboard');
          return;
        }
        last = `GET / answered ${res.status}`;
      } catch (e) {
        last = e.cause?.code || e.message;
      }
      await sleep(100);
    }
    throw new Error(`courier did not serve ${this.base}/ within 30 s (${last}):\n${this.tail()}`);
  }

  async api(method, urlPath, { body, token } = {}) {
    const headers = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(this.base + urlPath, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = null; }
    return { status: res.status, json, text };
  }

  // SIGTERM, then the process must end by itself, cleanly.
  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const result = await Promise.race([this.exit, sleep(15_000).then(() => null)]);
    if (!result) {
      this.child.kill('SIGKILL');
      await this.exit;
      throw new Error(`courier did not stop within 15 s of SIGTERM:\n${this.tail()}`);
    }
    await fsp.rm(this.dir, { recursive: true, force: true });
    return result;
  }

  kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

// An executor process on the server's database, with the fastest failure
// detection; it runs only `kinds`.
function spawnExecutor(server, node, kinds) {
  const args = ['executor', '--demo', '--kinds', kinds, '--db', `sqlite://${server.dir}/c.db`,
    '--node', node, '--heartbeat-ms', '300', '--dead-after-ms', '3000'];
  const child = spawn(BIN, args, { cwd: server.dir, stdio: ['ignore', 'ignore', 'pipe'] });
  running.add(child);
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => server.log(`[${node}] ${chunk}`));
  child.on('exit', () => running.delete(child));
  return child;
}

async function until(what, fn, ms = UI_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------- browser

async function openBrowser() {
  const profile = await fsp.mkdtemp(path.join(os.tmpdir(), 'courier-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1440, height: 900 },
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(UI_MS);
  const problems = [];
  const requests = [];
  page.on('console', (msg) => { if (msg.type() === 'error') problems.push(`console.error: ${msg.text()}`); });
  page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`));
  page.on('request', (req) => requests.push(`${req.method()} ${new URL(req.url()).pathname}`));
  return {
    context, page, problems, requests,
    async close() {
      await context.close().catch(() => {});
      await fsp.rm(profile, { recursive: true, force: true });
    },
  };
}

const sel = (testid) => `[data-testid="${testid}"]`;
const rowSel = (id) => `${sel('task-row')}[data-task-id="${id}"]`;

// Waits for a task row in the list to show `state`; says what it saw if not.
async function waitRowState(page, id, state) {
  try {
    await page.waitForSelector(`${rowSel(id)}[data-state="${state}"]`, { state: 'attached', timeout: UI_MS });
  } catch (e) {
    const seen = await page.locator(rowSel(id)).getAttribute('data-state', { timeout: 1000 }).catch(() => 'no row');
    throw new Error(`task ${id} did not reach ${state} in the list (shows: ${seen})`, { cause: e });
  }
}

// Waits for the detail panel's state badge to read `state`.
async function waitDetailState(page, state) {
  try {
    await page.waitForFunction(
      ([s, want]) => document.querySelector(s)?.textContent.trim() === want,
      [sel('detail-state'), state],
      { timeout: UI_MS },
    );
  } catch (e) {
    const seen = await page.locator(sel('detail-state')).textContent({ timeout: 1000 }).catch(() => 'nothing');
    throw new Error(`the detail did not reach ${state} (shows: ${seen})`, { cause: e });
  }
}

// Submits the new-task form and returns the task the API answered with.
async function createViaForm(page, kind, input) {
  await page.locator(sel('new-task-kind')).selectOption(kind);
  await page.locator(sel('new-task-input')).fill(JSON.stringify(input));
  const [res] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/tasks' && r.request().method() === 'POST'),
    page.locator(sel('new-task-submit')).click(),
  ]);
  assert.equal(res.status(), 201, `POST /api/v1/tasks answered ${res.status()}: ${await res.text()}`);
  const task = await res.json();
  assert.equal(task.kind, kind);
  assert.deepEqual(task.input, input);
  return task;
}

async function openDetail(page, id) {
  await page.locator(rowSel(id)).locator('a').first().click();
  await page.locator(sel('detail')).waitFor({ state: 'visible' });
  await page.waitForFunction((want) => location.hash === want, `#task=${id}`);
}

// On failure: the server's last lines and a screenshot beside the good one.
function step(env, fn) {
  return async (t) => {
    try {
      await fn(t);
    } catch (e) {
      const name = t.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60);
      const shot = path.join(ROOT, 'target', `dashboard-failed-${name}.png`);
      if (env.browser) await env.browser.page.screenshot({ path: shot, fullPage: true }).then(() => console.error(`screenshot: ${shot}`), () => {});
      if (env.server) console.error(`--- courier output (last lines) ---\n${env.server.tail()}\n---`);
      throw e;
    }
  };
}

await fsp.mkdir(path.join(ROOT, 'target'), { recursive: true });

// ---------------------------------------------------------------- scenarios

describe('dashboard without a token', () => {
  const env = {};
  before(async () => {
    env.server = await Server.start();
    env.browser = await openBrowser();
  }, { timeout: 60_000 });
  after(async () => {
    await env.browser?.close();
    env.server?.kill();
  });

  it('serves the page with its kinds and executors', { timeout: TEST_MS }, step(env, async () => {
    const { page } = env.browser;
    await page.goto(`${env.server.base}/`);
    assert.equal(await page.title(), 'courier');
    assert.match(await page.locator('header').textContent(), /courier/);
    for (const kind of ['demo.echo', 'demo.sleep', 'demo.await_event']) {
      await page.waitForSelector(`${sel('new-task-kind')} option[value="${kind}"]`, { state: 'attached' });
      await page.waitForSelector(`${sel('kind-filter')} option[value="${kind}"]`, { state: 'attached' });
    }
    await page.waitForSelector(`${sel('executor-row')}[data-state="alive"]`);
    assert.equal(await page.locator(sel('token-input')).isVisible(), false, 'asked for a token the server does not need');
  }));

  it('creates a demo.echo task through the form and sees it succeed', { timeout: TEST_MS }, step(env, async () => {
    const { page } = env.browser;
    const task = await createViaForm(page, 'demo.echo', { hello: 'browser' });
    await page.locator(rowSel(task.id)).waitFor();
    assert.match(await page.locator(rowSel(task.id)).textContent(), /demo\.echo/);
    await waitRowState(page, task.id, 'succeeded');

    await openDetail(page, task.id);
    await waitDetailState(page, 'succeeded');
    await page.waitForFunction(
      (s) => [...document.querySelectorAll(`${s} pre`)].some((p) => p.textContent.includes('"browser"')),
      sel('detail'),
    );
    assert.equal(await page.locator(sel('cancel-button')).isVisible(), false, 'Cancel is offered on a finished task');
  }));

  it('cancels a running demo.sleep task from its detail', { timeout: TEST_MS }, step(env, async () => {
    const { page } = env.browser;
    const task = await createViaForm(page, 'demo.sleep', { ms: 60000 });
    await page.locator(rowSel(task.id)).waitFor();
    await openDetail(page, task.id);
    await waitDetailState(page, 'running');
    await page.locator(sel('cancel-button')).click();
    await waitDetailState(page, 'cancelled');
    await waitRowState(page, task.id, 'cancelled');
    await page.locator(sel('cancel-button')).waitFor({ state: 'hidden' });

    const api = await env.server.api('GET', `/api/v1/tasks/${task.id}`);
    assert.equal(api.status, 200);
    assert.equal(api.json.state, 'cancelled');

    // The open task is kept in the URL: a reload shows it again.
    await page.reload();
    await page.locator(sel('detail')).waitFor({ state: 'visible' });
    await waitDetailState(page, 'cancelled');
    await page.waitForFunction(
      (s) => /cancelled/.test(document.querySelector(s)?.textContent || ''),
      '#d-history',
    ).catch(() => {}); // only so that the screenshot shows the history
    await waitRowState(page, task.id, 'cancelled');
    await page.screenshot({ path: SCREENSHOT });
  }));

  it('sends an event to a suspended task', { timeout: TEST_MS }, step(env, async () => {
    const { page } = env.browser;
    const task = await createViaForm(page, 'demo.await_event', { name: 'go' });
    await page.locator(rowSel(task.id)).waitFor();
    await openDetail(page, task.id);
    await waitDetailState(page, 'suspended');
    await page.locator(sel('event-name')).fill('go');
    await page.locator(sel('event-payload')).fill('{"approved_by": "browser"}');
    const [res] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === `/api/v1/tasks/${task.id}/events` && r.request().method() === 'POST'),
      page.locator(sel('event-send')).click(),
    ]);
    assert.equal(res.status(), 202, `POST events answered ${res.status()}: ${await res.text()}`);
    await waitDetailState(page, 'succeeded');
    const api = await env.server.api('GET', `/api/v1/tasks/${task.id}`);
    assert.deepEqual(api.json.output, { approved_by: 'browser' });
  }));

  it('logged no error in the page', step(env, async () => {
    assert.deepEqual(env.browser.problems, []);
  }));

  it('stops cleanly on SIGTERM', { timeout: 30_000 }, step(env, async () => {
    const server = env.server;
    await env.browser.close(); // closes the open watch stream, if any
    env.browser = null;
    const { code, signal } = await server.stop();
    assert.equal(signal, null, `courier was killed by ${signal}`);
    assert.equal(code, 0, `courier exited with ${code}:\n${server.tail()}`);
  }));
});

describe(`dashboard with --api-token`, () => {
  const env = {};
  before(async () => {
    env.server = await Server.start(['--api-token', TOKEN]);
    env.browser = await openBrowser();
  }, { timeout: 60_000 });
  after(async () => {
    await env.browser?.close();
    env.server?.kill();
  });

  it('answers 401 without the token and 200 with it', { timeout: TEST_MS }, step(env, async () => {
    const { server } = env;
    const denied = await server.api('GET', '/api/v1/tasks');
    assert.equal(denied.status, 401, denied.text);
    assert.equal(typeof denied.json?.error?.message, 'string', `401 body: ${denied.text}`);
    const wrong = await server.api('GET', '/api/v1/tasks', { token: 'not-the-token' });
    assert.equal(wrong.status, 401, wrong.text);
    const ok = await server.api('GET', '/api/v1/tasks', { token: TOKEN });
    assert.equal(ok.status, 200, ok.text);
    const made = await server.api('POST', '/api/v1/tasks', { token: TOKEN, body: { kind: 'demo.echo', input: { via: 'api' } } });
    assert.equal(made.status, 201, made.text);
    env.apiTask = made.json;
  }));

  it('asks for the token, refuses a wrong one, then lists the tasks', { timeout: TEST_MS }, step(env, async () => {
    const { page } = env.browser;
    await page.goto(`${env.server.base}/`);
    const input = page.locator(sel('token-input'));
    await input.waitFor({ state: 'visible' });
    assert.equal(await page.locator(sel('task-row')).count(), 0, 'tasks were shown before the token was given');

    await input.fill('not-the-token');
    await page.locator(sel('token-submit')).click();
    await page.waitForFunction(() => document.querySelector('#token-msg')?.textContent.trim() !== '');
    assert.equal(await input.isVisible(), true, 'a wrong token closed the prompt');

    await input.fill(TOKEN);
    await page.locator(sel('token-submit')).click();
    await input.waitFor({ state: 'hidden' });
    await waitRowState(page, env.apiTask.id, 'succeeded');
    await page.waitForSelector(`${sel('executor-row')}[data-state="alive"]`);

    // Kept for the tab: a reload does not ask again.
    await page.reload();
    await waitRowState(page, env.apiTask.id, 'succeeded');
    assert.equal(await input.isVisible(), false, 'asked for the token again after a reload');
  }));

  it('creates a task and follows it without EventSource', { timeout: TEST_MS }, step(env, async () => {
    const { page, requests } = env.browser;
    const task = await createViaForm(page, 'demo.sleep', { ms: 1500 });
    await page.locator(rowSel(task.id)).waitFor();
    await openDetail(page, task.id);
    await waitDetailState(page, 'succeeded');
    await waitRowState(page, task.id, 'succeeded');
    assert.deepEqual(requests.filter((r) => r.endsWith('/watch')), [], 'EventSource cannot send the token');
  }));

  it('logged no error in the page but the expected 401s', step(env, async () => {
    const unexpected = env.browser.problems.filter((p) => !/status of 401/.test(p));
    assert.deepEqual(unexpected, []);
  }));

  it('stops cleanly on SIGTERM', { timeout: 30_000 }, step(env, async () => {
    const server = env.server;
    await env.browser.close();
    env.browser = null;
    const { code, signal } = await server.stop();
    assert.equal(signal, null, `courier was killed by ${signal}`);
    assert.equal(code, 0, `courier exited with ${code}:\n${server.tail()}`);
  }));
});

describe('dashboard after an executor died', () => {
  const env = {};
  before(async () => {
    // The server's own executor runs everything but demo.sleep; the sleeps
    // go to executor processes that the test kills.
    env.server = await Server.start(['--kinds', 'demo.echo,demo.fail,demo.await_event,demo.fanout,demo.provision',
      '--heartbeat-ms', '300', '--dead-after-ms', '3000']);
    env.browser = await openBrowser();
  }, { timeout: 60_000 });
  after(async () => {
    await env.browser?.close();
    env.server?.kill();
  });

  it('shows the dead executor, who took over, and each attempt of its task', { timeout: TEST_MS }, step(env, async () => {
    const { server } = env;
    const first = spawnExecutor(server, 'exec-x', 'demo.sleep');
    await until('exec-x to register', async () =>
      (await server.api('GET', '/api/v1/executors')).json.executors.some((e) => e.node === 'exec-x' && e.state === 'alive'));
    const created = await server.api('POST', '/api/v1/tasks', { body: { kind: 'demo.sleep', input: { ms: 600000 } } });
    assert.equal(created.status, 201, created.text);
    const id = created.json.id;
    const ran = await until('the task to run on exec-x', async () => {
      const t = (await server.api('GET', `/api/v1/tasks/${id}`)).json;
      return t.state === 'running' && t.executor_id?.startsWith('exec-x-') && t;
    });
    first.kill('SIGKILL');
    const second = spawnExecutor(server, 'exec-y', 'demo.sleep');
    try {
      await until('the task to run again on exec-y', async () => {
        const t = (await server.api('GET', `/api/v1/tasks/${id}`)).json;
        // Run again as the same attempt: an executor's death uses none.
        return t.state === 'running' && t.executor_id?.startsWith('exec-y-') && t.attempts === 1;
      });
      const ex = (await server.api('GET', '/api/v1/executors')).json.executors;
      const dead = ex.find((e) => e.id === ran.executor_id);
      assert.equal(dead.state, 'dead');
      assert.ok(dead.ended_by && dead.ended_at, `the API says when and by whom: ${JSON.stringify(dead)}`);

      const { page } = env.browser;
      await page.goto(`${server.base}/#task=${id}`);
      await page.locator(sel('detail')).waitFor({ state: 'visible' });
      const rows = page.locator(`#d-history ${sel('attempt-row')}`);
      await until('two attempts in the detail', async () => (await rows.count()) === 2);
      const one = await rows.nth(0).textContent();
      assert.match(one, /exec-x-/, one);
      assert.match(one, new RegExp(`taken over by\\s*${dead.ended_by}`), one);
      const two = await rows.nth(1).textContent();
      assert.match(two, /exec-y-/, two);
      assert.match(two, /in progress/, two);
      await page.locator('#d-history').screenshot({ path: path.join(ROOT, 'target', 'dashboard-attempts.png') });

      const row = page.locator(`${sel('executor-row')}[data-executor-id="${dead.id}"]`);
      await row.waitFor({ state: 'attached' });
      assert.equal(await row.getAttribute('data-state'), 'dead');
      assert.match(await row.textContent(), new RegExp(`taken over by\\s*${dead.ended_by}`));
      assert.deepEqual(env.browser.problems, []);
    } finally {
      second.kill('SIGKILL');
    }
  }));
});
