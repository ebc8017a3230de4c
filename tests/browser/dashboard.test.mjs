// Browser test of the dashboard (GET /): a real `courier serve --demo` on a
// fresh SQLite file and a free loopback port, driven through Debian's headless
// Chromium by playwright-core. No mock: every answer comes from the server.
//
//   COURIER_BIN     the courier binary (default: target/debug/courier from the repo root)
//   CHROMIUM_BIN    the browser (default: /usr/bin/chromium)
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

// The page is compiled into the binary: an older binary serves an older
// page, and testing it would test something else than the repository's.
function assertCurrentPage(served) {
  const file = path.join(ROOT, 'web', 'assets', 'dashboard.html');
  assert.ok(
    fs.readFileSync(file, 'utf8') === served,
    `${BIN} serves another page than ${file}: rebuild it (cargo build --bin courier)`,
  );
}
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
          assertCurrentPage(body);
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
// `options` fills fields under "Options" by data-testid (emptied again after).
async function createViaForm(page, kind, input, options = {}) {
  await page.locator(sel('new-task-kind')).selectOption(kind);
  await page.locator(sel('new-task-input')).fill(JSON.stringify(input));
  const fields = Object.entries(options);
  if (fields.length && !(await page.locator('#new-task-options').evaluate((d) => d.open))) {
    await page.locator('#new-task-options summary').click();
  }
  for (const [testid, value] of fields) await page.locator(sel(testid)).fill(String(value));
  const [res] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/tasks' && r.request().method() === 'POST'),
    page.locator(sel('new-task-submit')).click(),
  ]);
  for (const [testid] of fields) await page.locator(sel(testid)).fill('');
  assert.equal(res.status(), 201, `POST /api/v1/tasks answered ${res.status()}: ${await res.text()}`);
  const task = await res.json();
  assert.equal(task.kind, kind);
  assert.deepEqual(task.input, input);
  return task;
}

const queueRowSel = (name) => `${sel('queue-row')}[data-queue="${name}"]`;

async function apiQueue(server, name) {
  const res = await server.api('GET', '/api/v1/queues');
  assert.equal(res.status, 200, res.text);
  return res.json.queues.find((q) => q.name === name);
}

// The counts a queue's row shows: { scheduled, pending, running, suspended,
// succeeded, failed, cancelled }.
function shownCounts(page, name) {
  return page.locator(queueRowSel(name)).evaluate((tr) =>
    Object.fromEntries([...tr.querySelectorAll('[data-count]')].map((td) => [td.dataset.count, Number(td.textContent.replaceAll(',', ''))])));
}

// Saves the queue form and returns the PUT's response.
async function saveQueueForm(page, name) {
  const [res] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === `/api/v1/queues/${name}` && r.request().method() === 'PUT'),
    page.locator(sel('queue-save')).click(),
  ]);
  return res;
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

  it('cancels several selected tasks at once', { timeout: TEST_MS }, step(env, async () => {
    const { page } = env.browser;
    const ids = [];
    for (let i = 0; i < 3; i++) {
      const res = await env.server.api('POST', '/api/v1/tasks', { body: { kind: 'demo.sleep', input: { ms: 60000 } } });
      assert.equal(res.status, 201, res.text);
      ids.push(res.json.id);
    }
    for (const id of ids) await waitRowState(page, id, 'running');
    const [a, b, keep] = ids;
    const button = page.locator(sel('cancel-picked'));
    assert.equal(await button.isVisible(), false, 'nothing selected, nothing offered');
    const hash = await page.evaluate(() => location.hash);
    await page.locator(`${rowSel(a)} ${sel('task-pick')}`).check();
    await page.locator(`${rowSel(b)} ${sel('task-pick')}`).check();
    assert.equal((await button.textContent()).trim(), 'Cancel 2 selected');
    assert.equal(await page.evaluate(() => location.hash), hash, 'ticking a task opened it');
    page.once('dialog', (d) => d.accept());
    await button.click();
    await waitRowState(page, a, 'cancelled');
    await waitRowState(page, b, 'cancelled');
    await button.waitFor({ state: 'hidden' });
    assert.equal((await env.server.api('GET', `/api/v1/tasks/${keep}`)).json.state, 'running', 'an unselected task was cancelled');
    // A cancelled task can be selected again, to retry it, not to cancel it.
    await page.locator(`${rowSel(a)} ${sel('task-pick')}`).check();
    assert.equal(await button.isVisible(), false, 'Cancel offered for a cancelled task');
    assert.equal((await page.locator(sel('retry-picked')).textContent()).trim(), 'Retry 1 now');
    await page.locator(`${rowSel(a)} ${sel('task-pick')}`).uncheck();
    await page.locator(sel('retry-picked')).waitFor({ state: 'hidden' });
    // A task that succeeded cannot be selected: nothing to do to it.
    const done = await env.server.api('POST', '/api/v1/tasks', { body: { kind: 'demo.echo', input: 1, wait_ms: 10000 } });
    assert.equal(done.json.state, 'succeeded', done.text);
    await waitRowState(page, done.json.id, 'succeeded');
    assert.equal(await page.locator(`${rowSel(done.json.id)} ${sel('task-pick')}`).isDisabled(), true);
    await env.server.api('POST', `/api/v1/tasks/${keep}/cancel`);
    await waitRowState(page, keep, 'cancelled');
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

describe('dashboard of queues, retries and task ids', () => {
  const env = {};
  before(async () => {
    env.server = await Server.start();
    env.browser = await openBrowser();
  }, { timeout: 60_000 });
  after(async () => {
    await env.browser?.close();
    env.server?.kill();
  });

  it('shows each queue with its counts, and pauses and resumes it', { timeout: TEST_MS }, step(env, async () => {
    const { server } = env;
    const { page } = env.browser;
    // A start ten minutes away: `default` holds a scheduled task throughout.
    const later = await server.api('POST', '/api/v1/tasks', { body: { kind: 'demo.echo', input: { later: true }, delay_ms: 600_000 } });
    assert.equal(later.status, 201, later.text);
    assert.equal(later.json.state, 'scheduled');
    await page.goto(`${server.base}/`);
    const row = page.locator(queueRowSel('default'));
    await row.waitFor();
    await until('the counts of `default` to be those of the API', async () => {
      const q = await apiQueue(server, 'default');
      const shown = await shownCounts(page, 'default');
      return q.scheduled >= 1 && ['scheduled', 'pending', 'running', 'suspended'].every((k) => shown[k] === q[k]);
    });
    assert.equal(await row.getAttribute('data-paused'), 'false');
    assert.match(await page.locator(`${rowSel(later.json.id)} ${sel('next-run')}`).textContent(), /^starts in \d+ min/);

    const toggle = row.locator(sel('queue-toggle'));
    assert.equal((await toggle.textContent()).trim(), 'Pause');
    await toggle.click();
    await page.waitForSelector(`${queueRowSel('default')}[data-paused="true"]`);
    assert.equal((await apiQueue(server, 'default')).paused, true);
    await until('the button to offer Resume', async () => (await toggle.textContent()).trim() === 'Resume');

    // Created while its queue is paused: it waits, and the page says why.
    const task = await createViaForm(page, 'demo.echo', { while: 'paused' });
    assert.equal(task.state, 'pending');
    await waitRowState(page, task.id, 'pending');
    assert.match(await page.locator(`${rowSel(task.id)} .flag`).textContent(), /paused/);
    await until('the queue to count it pending', async () => (await shownCounts(page, 'default')).pending >= 1);
    // Nothing of a paused queue starts, however long one waits.
    await sleep(1500);
    const still = await server.api('GET', `/api/v1/tasks/${task.id}`);
    assert.equal(still.json.state, 'pending', still.text);
    assert.equal(still.json.attempts, 0, still.text);

    await toggle.click();
    await page.waitForSelector(`${queueRowSel('default')}[data-paused="false"]`);
    assert.equal((await apiQueue(server, 'default')).paused, false);
    await waitRowState(page, task.id, 'succeeded');
  }));

  it('sets and lifts the limits of a queue, and shows a refusal', { timeout: TEST_MS }, step(env, async () => {
    const { server } = env;
    const { page } = env.browser;
    await page.locator(`${queueRowSel('default')} ${sel('queue-edit')}`).click();
    assert.equal(await page.locator(sel('queue-name')).inputValue(), 'default');
    await page.locator(sel('queue-concurrency')).fill('3');
    await page.locator(sel('queue-rate')).fill('2.5');
    let res = await saveQueueForm(page, 'default');
    assert.equal(res.status(), 200, await res.text());
    let q = await apiQueue(server, 'default');
    assert.equal(q.concurrency, 3);
    assert.equal(q.rate_per_s, 2.5);
    await page.waitForSelector(`${queueRowSel('default')} [data-concurrency="3"][data-rate="2.5"]`);

    // Refused: the server's own message, and the field it names marked.
    await page.locator(sel('queue-concurrency')).fill('0');
    res = await saveQueueForm(page, 'default');
    assert.equal(res.status(), 422);
    const refusal = (await res.json()).error;
    assert.equal(refusal.field, 'concurrency');
    await page.waitForFunction(
      ([s, text]) => document.querySelector(s)?.textContent.includes(text),
      [sel('queue-form-msg'), refusal.message],
    );
    assert.equal(await page.locator(sel('queue-concurrency')).getAttribute('aria-invalid'), 'true');
    assert.equal((await apiQueue(server, 'default')).concurrency, 3, 'a refused change changed the queue');

    // Empty fields lift both limits.
    await page.locator(sel('queue-concurrency')).fill('');
    await page.locator(sel('queue-rate')).fill('');
    res = await saveQueueForm(page, 'default');
    assert.equal(res.status(), 200, await res.text());
    q = await apiQueue(server, 'default');
    assert.equal(q.concurrency, null);
    assert.equal(q.rate_per_s, null);
    await page.waitForSelector(`${queueRowSel('default')} [data-concurrency=""][data-rate=""]`);
  }));

  it('shows a failed attempt waiting out its retry backoff', { timeout: TEST_MS }, step(env, async () => {
    const { server } = env;
    const { page } = env.browser;
    const task = await createViaForm(page, 'demo.flaky', { fail_times: 5 },
      { 'new-task-max-attempts': 3, 'new-task-backoff': 60 });
    assert.equal(task.max_attempts, 3);
    assert.equal(task.backoff_ms, 60_000);
    await waitRowState(page, task.id, 'scheduled');
    const t = (await server.api('GET', `/api/v1/tasks/${task.id}`)).json;
    assert.equal(t.state, 'scheduled');
    assert.equal(t.attempts, 1);
    assert.ok(t.run_at, `a scheduled task has its run_at: ${JSON.stringify(t)}`);
    assert.deepEqual(t.errors.map((e) => [e.attempt, e.code, e.error]), [[1, 'error', 'flaky attempt 1']]);

    const row = page.locator(rowSel(task.id));
    await until('the list to show attempt 1 of 3', async () => (await row.locator('td').nth(5).textContent()).trim() === '1/3');
    // Retry 1 waits 50 to 100 % of the 60 s backoff.
    assert.match(await row.locator(sel('next-run')).textContent(), /^retry in (\d+ s|1 min) at /);
    assert.equal(await row.locator(`${sel('next-run')} time`).getAttribute('datetime'), t.run_at);

    await openDetail(page, task.id);
    await waitDetailState(page, 'scheduled');
    const field = (name) => page.locator(`${sel('detail')} dd[data-field="${name}"]`);
    await until('the detail to show attempt 1 of 3', async () => /^1 of 3\b/.test(await field('attempts').textContent()));
    assert.match(await field('next-run').textContent(), /^in (\d+ s|1 min) · .* attempt 2 of 3/);
    assert.equal(await field('next-run').locator('time').getAttribute('datetime'), t.run_at);
    assert.match(await field('retry-backoff').textContent(), /^1 min\b/);
    assert.equal((await field('queue').textContent()).trim(), 'default');

    const errors = page.locator(`${sel('detail')} ${sel('error-row')}`);
    await until('one failed attempt in the detail', async () => (await errors.count()) === 1);
    const cells = await errors.first().locator('td').allTextContents();
    assert.deepEqual([cells[0], cells[2], cells[3]], ['1', 'error', 'flaky attempt 1']);
    assert.equal(await errors.first().locator('time').getAttribute('datetime'), t.errors[0].at);

    // The history ends attempt 1 as failed, to be retried.
    const attempt = page.locator(`#d-history ${sel('attempt-row')}`).first();
    await attempt.waitFor();
    assert.match(await attempt.textContent(), /failed\s*error\s*→ retry\s*scheduled/);
    await page.locator(sel('detail')).screenshot({ path: path.join(ROOT, 'target', 'dashboard-retry.png') });
  }));

  it('filters the list by queue, and creates a delayed task in another queue', { timeout: TEST_MS }, step(env, async () => {
    const { page } = env.browser;
    const task = await createViaForm(page, 'demo.echo', { in: 'mail' },
      { 'new-task-queue': 'mail', 'new-task-priority': 7, 'new-task-delay': 600 });
    assert.deepEqual([task.queue, task.priority, task.state], ['mail', 7, 'scheduled']);
    const row = page.locator(rowSel(task.id));
    await row.waitFor();
    const cells = await row.locator('td').allTextContents();
    assert.deepEqual([cells[3].trim(), cells[4].trim(), cells[5].trim()], ['mail', '7', '0/1']);
    assert.match(await row.locator(sel('next-run')).textContent(), /^starts in (10 min|9 min \d+ s)/);

    await page.locator(sel('queue-filter')).selectOption('mail');
    await until('only the task of `mail` listed', async () => {
      const ids = await page.locator(sel('task-row')).evaluateAll((rows) => rows.map((r) => r.dataset.taskId));
      return ids.length === 1 && ids[0] === task.id;
    });
    await page.locator(sel('state-filter')).selectOption('scheduled');
    await page.locator(rowSel(task.id)).waitFor();
    await page.locator(sel('state-filter')).selectOption('');
    await page.locator(sel('queue-filter')).selectOption('');
    await page.locator(queueRowSel('mail')).waitFor();
  }));

  it('tells task ids apart and copies the full id', { timeout: TEST_MS }, step(env, async () => {
    const { server } = env;
    const { page, context } = env.browser;
    const made = [];
    for (const n of [1, 2]) {
      const res = await server.api('POST', '/api/v1/tasks', { body: { kind: 'demo.echo', input: { n } } });
      assert.equal(res.status, 201, res.text);
      made.push(res.json.id);
    }
    const [a, b] = made;
    const idText = (id) => page.locator(`${rowSel(id)} ${sel('task-id')}`);
    await idText(a).waitFor();
    await idText(b).waitFor();
    const [ta, tb] = [await idText(a).textContent(), await idText(b).textContent()];
    assert.notEqual(ta, tb, 'two tasks show the same id');
    assert.equal(ta, a.slice(-12));
    assert.equal(tb, b.slice(-12));
    assert.equal(await idText(a).getAttribute('title'), a);

    // With the clipboard API (loopback is a secure context).
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.base });
    const hash = await page.evaluate(() => location.hash);
    await page.locator(`${rowSel(a)} ${sel('copy-id')}`).first().click();
    await page.waitForSelector(`${rowSel(a)} ${sel('copy-id')}[data-done]`);
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), a);
    assert.equal(await page.evaluate(() => location.hash), hash, 'the copy button opened the task');

    // Without it (plain http to another host): the id shown selected, for Ctrl+C.
    await page.evaluate(() => { Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined, configurable: true }); });
    await page.locator(`${rowSel(b)} ${sel('copy-id')}`).first().click();
    const box = page.locator(sel('copy-box'));
    await box.waitFor();
    const picked = await box.evaluate((el) => ({ focused: document.activeElement === el, selected: el.value.slice(el.selectionStart, el.selectionEnd) }));
    assert.deepEqual(picked, { focused: true, selected: b });
    await page.keyboard.press('Escape');
    await box.waitFor({ state: 'detached' });
    await page.reload();

    // Sub-tasks: their parent link and the parent's tree show the tails too.
    const fan = await server.api('POST', '/api/v1/tasks', { body: { kind: 'demo.fanout', input: { n: 2, kind: 'demo.echo', input: {} } } });
    assert.equal(fan.status, 201, fan.text);
    const parent = fan.json.id;
    await waitRowState(page, parent, 'succeeded');
    const kids = (await server.api('GET', `/api/v1/tasks/${parent}/children`)).json.tasks.map((t) => t.id);
    assert.equal(kids.length, 2);
    for (const kid of kids) {
      await waitRowState(page, kid, 'succeeded');
      assert.equal(await page.locator(`${rowSel(kid)} ${sel('parent-id')}`).textContent(), parent.slice(-12));
    }
    await openDetail(page, parent);
    assert.equal(await page.locator('#d-id .id-last').textContent(), parent.slice(-12));
    await until('the sub-tasks in the detail', async () => (await page.locator(`#d-children ${sel('child-id')}`).count()) === 2);
    const shown = await page.locator(`#d-children ${sel('child-id')}`).allTextContents();
    assert.deepEqual(shown.sort(), kids.map((k) => k.slice(-12)).sort());
    await page.locator(`#d-children ${sel('child-id')}`).first().click();
    await page.waitForFunction((p) => /^#task=/.test(location.hash) && !location.hash.includes(p), parent);
    await page.locator(`${sel('detail')} dd[data-field="parent"] ${sel('parent-id')}`).waitFor();
    assert.equal(await page.locator(`${sel('detail')} dd[data-field="parent"] ${sel('parent-id')}`).textContent(), parent.slice(-12));
  }));

  it('shows the counts by state, by queue, and the last hour of finishes', { timeout: TEST_MS }, step(env, async () => {
    const { server } = env;
    const { page } = env.browser;
    for (const body of [
      { kind: 'demo.echo', input: { n: 1 }, wait_ms: 10000 },
      { kind: 'demo.fail', input: { message: 'for the chart' }, max_attempts: 1, wait_ms: 10000 },
    ]) {
      const res = await server.api('POST', '/api/v1/tasks', { body });
      assert.equal(res.status, 200, res.text);
    }
    // A queue no executor serves: its task is cancelled before it starts.
    const held = await server.api('POST', '/api/v1/tasks', { body: { kind: 'demo.echo', input: {}, queue: 'reports' } });
    assert.equal(held.status, 201, held.text);
    assert.equal((await server.api('POST', `/api/v1/tasks/${held.json.id}/cancel`)).status, 202);
    await page.goto(`${server.base}/`);
    // Every tile shows what the API counts (the server is busy with nothing
    // else, so the two settle on the same numbers).
    await until('the tiles to show the API\'s counts', async () => {
      const { json } = await server.api('GET', '/api/v1/stats');
      const shown = await page.locator(sel('state-tile')).evaluateAll((ts) => Object.fromEntries(ts.map((t) => [t.dataset.state, Number(t.dataset.count)])));
      return json.states.failed >= 1 && JSON.stringify(shown) === JSON.stringify(json.states);
    });
    // By queue: the finished columns of `reports`.
    await until('the finished counts of `reports`', async () => {
      const { json } = await server.api('GET', '/api/v1/stats');
      const q = json.queues.find((x) => x.queue === 'reports').states;
      const shown = await shownCounts(page, 'reports').catch(() => ({}));
      return q.cancelled === 1 && shown.succeeded === q.succeeded && shown.failed === q.failed && shown.cancelled === q.cancelled;
    });
    // The chart: one group a minute, the summary adds them up.
    assert.equal(await page.locator(sel('chart-minute')).count(), 60);
    await until('the chart to count the finishes', async () => {
      const { json } = await server.api('GET', '/api/v1/stats');
      const want = json.minutes.reduce((a, m) => a + m.succeeded + m.failed + m.cancelled, 0);
      const summary = page.locator(sel('chart-summary'));
      const bars = await page.locator(sel('chart-minute')).evaluateAll((gs) =>
        gs.reduce((a, g) => a + Number(g.dataset.succeeded) + Number(g.dataset.failed) + Number(g.dataset.cancelled), 0));
      return Number(await summary.getAttribute('data-finished')) === want && bars === want && want >= 3;
    });
    assert.ok(Number(await page.locator(sel('chart-summary')).getAttribute('data-failed')) >= 1);
    assert.match(await page.locator(sel('chart-summary')).textContent(), /finished · [\d.]+\/min · [\d.]+ % failed/);
    assert.ok(await page.locator(`${sel('chart')} rect.bar-failed`).count() >= 1, 'no failed bar drawn');
    // A tile lists its tasks; pressed again, all of them.
    await page.locator(`${sel('state-tile')}[data-state="failed"]`).click();
    assert.equal(await page.locator(sel('state-filter')).inputValue(), 'failed');
    await until('only failed tasks listed', async () => {
      const states = await page.locator(sel('task-row')).evaluateAll((rows) => rows.map((r) => r.dataset.state));
      return states.length >= 1 && states.every((st) => st === 'failed');
    });
    assert.equal(await page.locator(`${sel('state-tile')}[data-state="failed"]`).getAttribute('aria-pressed'), 'true');
    await page.locator(`${sel('state-tile')}[data-state="failed"]`).click();
    assert.equal(await page.locator(sel('state-filter')).inputValue(), '');
    await page.locator(sel('overview')).screenshot({ path: path.join(ROOT, 'target', 'dashboard-overview.png') });
  }));

  it('retries failed tasks: one from its detail, several selected', { timeout: TEST_MS }, step(env, async () => {
    const { server } = env;
    const { page } = env.browser;
    const ids = [];
    for (let i = 0; i < 3; i++) {
      const res = await server.api('POST', '/api/v1/tasks', { body: { kind: 'demo.fail', input: { message: `once ${i}` }, max_attempts: 1, wait_ms: 10000 } });
      assert.equal(res.json.state, 'failed', res.text);
      ids.push(res.json.id);
    }
    const attempts = async (id) => (await server.api('GET', `/api/v1/tasks/${id}`)).json;
    const [one, ...many] = ids;
    for (const id of ids) await waitRowState(page, id, 'failed');
    // From its detail: it runs again (a second attempt) and fails again.
    await openDetail(page, one);
    await waitDetailState(page, 'failed');
    const retry = page.locator(sel('retry-button'));
    assert.equal((await retry.textContent()).trim(), 'Retry now');
    await retry.click();
    await until('the second attempt to end', async () => {
      const t = await attempts(one);
      return t.state === 'failed' && t.attempts === 2;
    });
    await waitDetailState(page, 'failed');
    await until('the detail to show two attempts', async () => /^2 of 2\b/.test(await page.locator(`${sel('detail')} dd[data-field="attempts"]`).textContent().catch(() => '')));
    await page.locator('#d-close').click();
    // Several at once.
    for (const id of many) await page.locator(`${rowSel(id)} ${sel('task-pick')}`).check();
    const button = page.locator(sel('retry-picked'));
    assert.equal((await button.textContent()).trim(), 'Retry 2 now');
    assert.equal(await page.locator(sel('cancel-picked')).isVisible(), false, 'Cancel offered for failed tasks');
    page.once('dialog', (d) => d.accept());
    await button.click();
    await button.waitFor({ state: 'hidden' });
    for (const id of many) {
      await until(`${id} to run a second time`, async () => {
        const t = await attempts(id);
        return t.state === 'failed' && t.attempts === 2;
      });
    }
    // A delayed task starts now from its detail.
    const later = await server.api('POST', '/api/v1/tasks', { body: { kind: 'demo.echo', input: { now: true }, delay_ms: 600_000 } });
    await page.locator(rowSel(later.json.id)).waitFor();
    await openDetail(page, later.json.id);
    await waitDetailState(page, 'scheduled');
    assert.equal((await retry.textContent()).trim(), 'Start now');
    await retry.click();
    await waitDetailState(page, 'succeeded');
    await retry.waitFor({ state: 'hidden' });
    await page.locator('#d-close').click();
  }));

  it('finds tasks by their id or its start', { timeout: TEST_MS }, step(env, async () => {
    const { server } = env;
    const { page } = env.browser;
    const made = [];
    for (const n of [1, 2]) {
      const res = await server.api('POST', '/api/v1/tasks', { body: { kind: 'demo.echo', input: { find: n } } });
      assert.equal(res.status, 201, res.text);
      made.push(res.json.id);
    }
    const [a, b] = made;
    const listed = () => page.locator(sel('task-row')).evaluateAll((rows) => rows.map((r) => r.dataset.taskId));
    const search = async (text, want, what) => {
      await page.locator(sel('id-filter')).fill(text);
      await until(what, async () => JSON.stringify((await listed()).sort()) === JSON.stringify([...want].sort()));
    };
    // A whole id, as copied (dashes and all): that task alone.
    await search(b, [b], 'the task of the whole id');
    // All but its last digits, without dashes, in capitals: still that one.
    await search(a.replaceAll('-', '').slice(0, 28).toUpperCase(), [a], 'the task of a long start');
    // A start both share (ids begin with their creation time): both, and
    // whatever else was created in that span.
    const common = [...a].findIndex((c, i) => c !== b[i]);
    await page.locator(sel('id-filter')).fill(a.slice(0, common));
    await until('both tasks of the shared start', async () => {
      const ids = await listed();
      return ids.includes(a) && ids.includes(b);
    });
    // A start no task has: an empty list, not an error.
    await search('ffffffff', [], 'no task for an unused start');
    assert.doesNotMatch(await page.locator('#tasks-meta').textContent(), /Could not/);
    await page.locator(sel('id-filter')).fill('');
    await page.locator(rowSel(a)).waitFor();
  }));

  it('logged no error in the page but the refusal it was made to show', step(env, async () => {
    // Chromium logs every 4xx answer; the one 422 is the refused concurrency.
    const unexpected = env.browser.problems.filter((p) => !/status of 422/.test(p));
    assert.deepEqual(unexpected, []);
    assert.equal(env.browser.problems.length, 1, env.browser.problems.join('\n'));
  }));
});

const scheduleRowSel = (name) => `${sel('schedule-row')}[data-schedule="${name}"]`;

// The schedule as the API has it, or null if it has none of this name.
async function apiSchedule(server, name) {
  const res = await server.api('GET', `/api/v1/schedules/${name}`);
  if (res.status === 404) return null;
  assert.equal(res.status, 200, res.text);
  return res.json;
}

// Saves the schedule form and returns the PUT's response.
async function saveScheduleForm(page, name) {
  const [res] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === `/api/v1/schedules/${name}` && r.request().method() === 'PUT'),
    page.locator(sel('schedule-save')).click(),
  ]);
  return res;
}

// Opens a task's detail through the page's own link form (#task=ID).
async function openDetailByHash(page, id) {
  await page.evaluate((h) => { location.hash = h; }, `task=${id}`);
  await page.locator(sel('detail')).waitFor({ state: 'visible' });
  await page.waitForFunction((want) => document.querySelector('#d-id .id-full')?.title === want, id);
}

describe('dashboard of schedules and durable steps', () => {
  const env = {};
  before(async () => {
    env.server = await Server.start();
    env.browser = await openBrowser();
  }, { timeout: 60_000 });
  after(async () => {
    await env.browser?.close();
    env.server?.kill();
  });

  it('creates a schedule through the form, follows its tasks, disables it, shows a refusal and deletes it', { timeout: TEST_MS }, step(env, async () => {
    const { server } = env;
    const { page } = env.browser;
    const name = 'every-second';
    const cron = '*/1 * * * * *';
    await page.goto(`${server.base}/`);
    await page.locator(sel('schedules')).waitFor();
    await page.waitForFunction(() => /^\d+ schedules?\b/.test(document.querySelector('#schedules-meta')?.textContent || ''));

    // Created through the form.
    await page.locator(sel('schedule-name')).fill(name);
    await page.locator(sel('schedule-cron')).fill(cron);
    await page.locator(sel('schedule-kind')).fill('demo.echo');
    await page.locator(sel('schedule-input')).fill('{"tick": true}');
    await page.locator(sel('schedule-catch-up')).selectOption('skip');
    await page.locator(sel('schedule-enabled')).check();
    let res = await saveScheduleForm(page, name);
    assert.equal(res.status(), 201, `PUT answered ${res.status()}: ${await res.text()}`);
    const made = await res.json();
    assert.deepEqual([made.name, made.cron, made.kind, made.catch_up, made.enabled], [name, cron, 'demo.echo', 'skip', true]);
    assert.deepEqual(made.input, { tick: true });
    assert.ok(Array.isArray(made.next_runs) && made.next_runs.length >= 2, `next_runs: ${JSON.stringify(made.next_runs)}`);
    await page.waitForFunction(([s, n]) => document.querySelector(s)?.textContent.includes(n), [sel('schedule-form-msg'), name]);

    // Listed, with its next runs: the first stressed, more after it.
    const row = page.locator(scheduleRowSel(name));
    await row.waitFor();
    assert.equal(await row.getAttribute('data-enabled'), 'true');
    const cells = await row.locator('td').allTextContents();
    assert.equal(cells[1].trim(), cron);
    assert.match(cells[2], /demo\.echo/);
    assert.equal(cells[4].trim(), 'skip');
    assert.match(cells[5], /enabled/);
    await row.locator(sel('schedule-next-first')).waitFor();
    await until('several next runs shown', async () => (await row.locator(`${sel('schedule-next')} time`).count()) >= 2);
    const first = await row.locator(`${sel('schedule-next-first')} time`).getAttribute('datetime');
    assert.ok(Date.parse(first) > Date.now() - 10_000, `the first next run is not to come: ${first}`);

    // Its tasks, through the row's link to the filtered list.
    await row.locator(sel('schedule-tasks')).click();
    await until('the schedule filter to be set', async () => (await page.locator(sel('schedule-filter')).inputValue()) === name);
    const done = await until('a task of the schedule succeeded in the filtered list', async () => {
      const rows = await page.locator(sel('task-row')).evaluateAll((trs) => trs.map((r) => [r.dataset.taskId, r.dataset.state]));
      const hit = rows.find(([, st]) => st === 'succeeded');
      return hit && { id: hit[0], shown: rows.map(([id]) => id) };
    }, 30_000);
    for (const id of done.shown.slice(0, 5)) {
      const t = (await server.api('GET', `/api/v1/tasks/${id}`)).json;
      assert.equal(t.schedule, name, `the filtered list shows a task of another schedule: ${JSON.stringify(t)}`);
    }
    const succeeded = (await server.api('GET', `/api/v1/tasks/${done.id}`)).json;
    assert.equal(succeeded.state, 'succeeded');
    assert.deepEqual(succeeded.input, { tick: true });
    assert.equal((await page.locator(`${rowSel(done.id)} ${sel('task-schedule')}`).textContent()).trim(), name);
    const listed = await server.api('GET', `/api/v1/tasks?schedule=${name}`);
    assert.equal(listed.status, 200, listed.text);
    assert.ok(listed.json.tasks.length >= 1 && listed.json.tasks.every((t) => t.schedule === name), listed.text);

    // Disabled with its toggle: the whole definition put back, enabled false.
    const toggle = row.locator(sel('schedule-toggle'));
    assert.equal((await toggle.textContent()).trim(), 'Disable');
    [res] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === `/api/v1/schedules/${name}` && r.request().method() === 'PUT'),
      toggle.click(),
    ]);
    assert.equal(res.status(), 200, await res.text());
    await page.waitForSelector(`${scheduleRowSel(name)}[data-enabled="false"]`);
    let sc = await apiSchedule(server, name);
    assert.equal(sc.enabled, false);
    assert.equal(sc.next_run_at, null);
    assert.deepEqual(sc.next_runs, []);
    assert.deepEqual([sc.cron, sc.kind, sc.catch_up], [cron, 'demo.echo', 'skip'], 'the toggle changed more than enabled');
    assert.deepEqual(sc.input, { tick: true });
    await until('the button to offer Enable', async () => (await toggle.textContent()).trim() === 'Enable');
    assert.equal(await row.locator(sel('schedule-next-first')).count(), 0, 'a disabled schedule shows a next run');

    // Its last task links to the task's detail, which links back to the schedule.
    const lastId = await until('the row to show the last task of the API', async () => {
      const id = (await apiSchedule(server, name)).last_task_id;
      const shown = await row.locator(sel('schedule-last-task')).getAttribute('title', { timeout: 1000 }).catch(() => null);
      return id && shown === id && id;
    });
    await row.locator(sel('schedule-last-task')).click();
    await page.locator(sel('detail')).waitFor({ state: 'visible' });
    await page.waitForFunction((want) => location.hash === want, `#task=${lastId}`);
    const link = page.locator(`${sel('detail')} dd[data-field="schedule"] ${sel('schedule-link')}`);
    await link.waitFor();
    assert.equal((await link.textContent()).trim(), name);
    await link.click();
    await page.waitForFunction((want) => location.hash === want, `#schedule=${name}`);
    await page.locator(sel('detail')).waitFor({ state: 'hidden' });

    // A bad cron: refused, the server's message and field shown, nothing changed.
    await row.locator(sel('schedule-edit')).click();
    assert.equal(await page.locator(sel('schedule-name')).inputValue(), name);
    assert.equal(await page.locator(sel('schedule-cron')).inputValue(), cron);
    await page.locator(sel('schedule-cron')).fill('every blue moon');
    res = await saveScheduleForm(page, name);
    assert.equal(res.status(), 422, await res.text());
    const refusal = (await res.json()).error;
    assert.equal(refusal.code, 'invalid_field');
    assert.equal(refusal.field, 'cron');
    await page.waitForFunction(
      ([s, text]) => { const t = document.querySelector(s)?.textContent || ''; return t.includes(text) && t.includes('cron'); },
      [sel('schedule-form-msg'), refusal.message],
    );
    assert.equal(await page.locator(sel('schedule-cron')).getAttribute('aria-invalid'), 'true');
    sc = await apiSchedule(server, name);
    assert.deepEqual([sc.cron, sc.enabled], [cron, false], 'a refused change changed the schedule');

    // Deleted after a confirm; the tasks it made stay.
    page.once('dialog', (d) => d.accept());
    [res] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === `/api/v1/schedules/${name}` && r.request().method() === 'DELETE'),
      row.locator(sel('schedule-delete')).click(),
    ]);
    assert.equal(res.status(), 204, await res.text());
    await row.waitFor({ state: 'detached' });
    assert.equal(await apiSchedule(server, name), null, 'the schedule is still there');
    await page.waitForFunction(([s, n]) => document.querySelector(s)?.textContent.includes(n), [sel('schedules-msg'), name]);
    const kept = (await server.api('GET', `/api/v1/tasks/${done.id}`)).json;
    assert.equal(kept.schedule, name);
    await page.locator(sel('schedule-filter')).selectOption('');
  }));

  it('shows the durable steps of a task in its detail', { timeout: TEST_MS }, step(env, async () => {
    const { server } = env;
    const { page } = env.browser;
    await page.goto(`${server.base}/`);
    const made = await server.api('POST', '/api/v1/tasks', { body: { kind: 'demo.steps', input: { n: 3, ms: 10 } } });
    assert.equal(made.status, 201, made.text);
    const id = made.json.id;
    await openDetailByHash(page, id);
    await waitDetailState(page, 'succeeded');
    const own = page.locator(`${sel('detail')} ${sel('step-row')}:not([data-internal])`);
    await until('three steps in the detail', async () => (await own.count()) === 3);
    const shown = await own.evaluateAll((trs) => trs.map((tr) => [tr.dataset.step, tr.dataset.state, tr.querySelector('[data-cell="name"]').textContent]));
    assert.deepEqual(shown, [0, 1, 2].map((i) => [`step ${i}`, 'succeeded', `step ${i}`]));
    for (const tr of await own.all()) assert.match(await tr.textContent(), /succeeded/);

    const t = (await server.api('GET', `/api/v1/tasks/${id}`)).json;
    assert.ok(Array.isArray(t.steps), `GET /tasks/{id} has steps: ${JSON.stringify(t)}`);
    const names = t.steps.filter((x) => !x.name.startsWith('courier.')).map((x) => x.name);
    assert.deepEqual(names, ['step 0', 'step 1', 'step 2']);
    // Internal steps, if any, are shown dimmed.
    const internal = t.steps.filter((x) => x.name.startsWith('courier.')).map((x) => x.name);
    const dimmed = page.locator(`${sel('detail')} ${sel('step-row')}[data-internal]`);
    await until(`the internal steps dimmed (${internal.join(', ') || 'none'})`, async () =>
      JSON.stringify(await dimmed.evaluateAll((trs) => trs.map((tr) => tr.dataset.step))) === JSON.stringify(internal));
  }));

  it('shows a suspended timer task with its wake time, then cancels it', { timeout: TEST_MS }, step(env, async () => {
    const { server } = env;
    const { page } = env.browser;
    await page.goto(`${server.base}/`);
    const made = await server.api('POST', '/api/v1/tasks', { body: { kind: 'demo.timer', input: { ms: 60000 } } });
    assert.equal(made.status, 201, made.text);
    const id = made.json.id;
    try {
      const t = await until('the task to sleep on its durable timer', async () => {
        const x = (await server.api('GET', `/api/v1/tasks/${id}`)).json;
        return x.state === 'suspended' && x.run_at && x;
      });
      assert.ok(t.waiting, `a suspended task says what it waits for: ${JSON.stringify(t)}`);
      await openDetailByHash(page, id);
      await waitDetailState(page, 'suspended');
      const field = (n) => page.locator(`${sel('detail')} dd[data-field="${n}"]`);
      await field('wakes-at').locator('time').waitFor();
      assert.equal(await field('wakes-at').locator('time').getAttribute('datetime'), t.run_at);
      assert.match(await field('wakes-at').textContent(), /^in (\d+ s|1 min)/);
      assert.equal((await field('waiting').textContent()).trim(), t.waiting);
      // The durable sleep is a step of courier's own: dimmed.
      for (const x of t.steps.filter((s) => s.name.startsWith('courier.'))) {
        await page.locator(`${sel('detail')} ${sel('step-row')}[data-step="${x.name}"][data-internal]`).waitFor({ state: 'attached' });
      }
      // The list tells when it wakes.
      const row = page.locator(rowSel(id));
      await row.waitFor({ state: 'attached' });
      assert.equal(await row.locator(`${sel('wakes')} time`).getAttribute('datetime'), t.run_at);
    } finally {
      const cancel = await server.api('POST', `/api/v1/tasks/${id}/cancel`);
      assert.equal(cancel.status, 202, cancel.text);
    }
    await until('the timer task to be cancelled', async () => (await server.api('GET', `/api/v1/tasks/${id}`)).json.state === 'cancelled');
    await waitDetailState(page, 'cancelled');
  }));

  it('logged no error in the page but the refusal it was made to show', step(env, async () => {
    // Chromium logs every 4xx answer; the one 422 is the refused cron.
    const unexpected = env.browser.problems.filter((p) => !/status of 422/.test(p));
    assert.deepEqual(unexpected, []);
    assert.equal(env.browser.problems.length, 1, env.browser.problems.join('\n'));
  }));
});
