// The operator's dashboard in a real Chromium, against a real daemon that
// e2e/run.sh starts (SLUICE_URL; tokens in SLUICE_ADMIN_TOKEN,
// SLUICE_OPERATOR_TOKEN and SLUICE_VIEWER_TOKEN), and a cluster of two
// nodes on PostgreSQL it starts too (SLUICE_CLUSTER_N1_URL, …_N2_URL and
// …_N2_PID; SLUICE_CLUSTER_SKIP says why not, when it could not), and the
// HTTP target of LIVE's integrations, e2e/receiver.mjs (SLUICE_E2E_RECEIVER).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const SHOTS = join(HERE, 'screenshots');
const DOCS = join(HERE, '..', 'docs');
const URL = process.env.SLUICE_URL;
const ADMIN = process.env.SLUICE_ADMIN_TOKEN || '';
const VIEWER = process.env.SLUICE_VIEWER_TOKEN || '';
const OPERATOR = process.env.SLUICE_OPERATOR_TOKEN || '';
const RECORDS = 500;
const CLUSTER = {
  n1: process.env.SLUICE_CLUSTER_N1_URL,
  n2: process.env.SLUICE_CLUSTER_N2_URL,
  n2Pid: Number(process.env.SLUICE_CLUSTER_N2_PID || 0),
  skip: process.env.SLUICE_CLUSTER_SKIP,
};

assert.ok(URL, 'SLUICE_URL is set (run this through e2e/run.sh)');
mkdirSync(SHOTS, { recursive: true });
mkdirSync(join(DOCS, 'images'), { recursive: true });

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
});
after(async () => {
  await browser?.close();
});

const shot = (page, name, opts) => page.screenshot({ path: join(SHOTS, name), ...opts });

/** A call to the daemon (BASE, the main one unless said) from the test itself (not through the page). */
async function call(method, path, { token, body, base = URL } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${base}${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text };
}

/** Opens the dashboard (of BASE) and signs in with TOKEN when the daemon asks for one. */
async function openSignedIn(context, token, shotName, base = URL) {
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // A failed request shows as a console error too; those are judged by
  // their answer below (4xx are the API's word, and expected in places).
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console: ${m.text()}`);
  });
  page.on('response', (r) => { if (r.status() >= 500) problems.push(`${r.status()} from ${r.url()}`); });
  page.problems = problems;
  await page.goto(`${base}/#LIVE`);
  const signin = page.locator('#signin');
  const app = page.locator('#app');
  await Promise.race([
    signin.waitFor({ state: 'visible' }),
    app.waitFor({ state: 'visible' }),
  ]);
  if (await signin.isVisible()) {
    assert.ok(token, 'the daemon asks for a token, and the test has one');
    if (shotName) await shot(page, shotName);
    await page.fill('#signin-token', 'not-a-token');
    await page.click('#signin-submit');
    await page.locator('#signin-error').getByText('not valid').waitFor();
    await page.fill('#signin-token', token);
    await page.click('#signin-submit');
  }
  await app.waitFor({ state: 'visible' });
  await page.locator('[data-integration="orders"]').waitFor();
  return page;
}

/** Waits until the live log panel shows TEXT on at least N lines. */
async function logLines(page, text, n = 1, timeout = 15_000) {
  const lines = page.locator('#log .log-line', { hasText: text });
  const deadline = Date.now() + timeout;
  while ((await lines.count()) < n) {
    if (Date.now() > deadline) {
      await shot(page, 'failure-log.png');
      const panel = await page.locator('#log').innerText();
      assert.fail(`the log shows '${text}' ${n} time(s); the panel has:\n${panel}`);
    }
    await page.waitForTimeout(100);
  }
}

const integration = (page, name) => page.locator(`[data-integration="${name}"]`);

/** The page's buttons for the actions an answer offers, by the answer's names. */
const ACTION_OF_BUTTON = {
  'send-all': 'run-all', 'send-changed': 'run-changed', 'site-start': 'start', 'site-stop': 'stop', 'site-reload': 'reload',
};
async function shown(locator) {
  const ids = await locator.evaluateAll((els) => els
    .filter((e) => e.offsetParent !== null)
    .map((e) => e.dataset.action || e.id));
  return ids.filter((a) => a !== 'transactions').map((a) => ACTION_OF_BUTTON[a] || a).sort();
}

/**
 * Waits until the page offers exactly the actions the API answers the same
 * caller (TOKEN) for SITE: the site's buttons, each integration's, each
 * flow's and each endpoint's. The page decides none of them itself.
 */
async function offersAsAnswered(page, token, site = 'LIVE') {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const get = async (path) => (await call('GET', `/api/v1/sites/${site}${path}`, { token })).json;
    const [about, integrations, endpoints] = await Promise.all([get(''), get('/integrations'), get('/endpoints')]);
    const want = { site: [...about.actions].sort() };
    const got = { site: await shown(page.locator('#site-actions button')) };
    for (const i of integrations) {
      want[`integration ${i.name}`] = [...i.actions].sort();
      got[`integration ${i.name}`] = await shown(integration(page, i.name).locator('.integration-head [data-action]'));
      for (const f of i.flows) {
        want[`flow ${f.name}`] = [...f.actions].sort();
        got[`flow ${f.name}`] = await shown(page.locator(`tr[data-flow="${f.name}"] [data-action]`));
      }
    }
    for (const e of endpoints) {
      want[`endpoint ${e.name}`] = [...e.actions].sort();
      got[`endpoint ${e.name}`] = await shown(page.locator(`tr[data-endpoint="${e.name}"] [data-action]`));
    }
    if (JSON.stringify(got) === JSON.stringify(want)) return want;
    if (Date.now() > deadline) assert.deepEqual(got, want, 'the page offers exactly what the API answers');
    await page.waitForTimeout(200);
  }
}

/** What the Nodes panel shows, a row a node, in the API's terms. */
const nodesShown = (page) => page.locator('#nodes tr[data-node]').evaluateAll((rows) => rows.map((r) => {
  const link = r.querySelector('a');
  return {
    name: r.dataset.node,
    alive: r.querySelector('.node-state').textContent === 'Alive',
    address: link ? link.textContent : null,
    href: link ? link.getAttribute('href') : null,
    started_at: r.querySelector('.heartbeat + .sub time')?.getAttribute('datetime'),
    heartbeat_at: r.querySelector('.heartbeat time')?.getAttribute('datetime'),
    integrations: [...r.querySelectorAll('[data-sends]')].map((e) => e.dataset.sends).sort(),
  };
}));

/**
 * Waits until the API's nodes (asked of BASE) are READY and the page's Nodes
 * panel shows exactly them: each name, alive or gone, address (a link to
 * it), start and the integrations it sends, in the API's order; the last
 * heartbeat within the poll of the API's (a gone node's exactly).
 * Returns the API's answer.
 */
async function nodesAsAnswered(page, { base = URL, token, ready = () => true } = {}) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const nodes = (await call('GET', '/api/v1/nodes', { token, base })).json;
    const got = await nodesShown(page);
    const beats = got.map((n) => Date.parse(n.heartbeat_at));
    const want = nodes.map((n) => ({
      name: n.name,
      alive: n.alive,
      address: n.address,
      href: new globalThis.URL(n.address).href,
      started_at: n.started_at,
      heartbeat_at: n.heartbeat_at,
      integrations: [...n.integrations].sort(),
    }));
    const heartbeatsAgree = nodes.length === got.length && nodes.every((n, k) => (n.alive
      ? Math.abs(Date.parse(n.heartbeat_at) - beats[k]) < 5_000
      : n.heartbeat_at === got[k].heartbeat_at));
    const strip = (list) => list.map((n) => ({ ...n, heartbeat_at: undefined }));
    if (ready(nodes) && heartbeatsAgree && JSON.stringify(strip(got)) === JSON.stringify(strip(want))) return nodes;
    if (Date.now() > deadline) {
      await shot(page, 'failure-nodes.png');
      assert.ok(ready(nodes), `the API's nodes never became ready: ${JSON.stringify(nodes)}`);
      assert.deepEqual(got, want, 'the Nodes panel shows what GET /api/v1/nodes answers');
    }
    await page.waitForTimeout(200);
  }
}

/**
 * Waits until each integration of LIVE (asked of BASE) has an owner as READY
 * wants, and its card names that owner ('Sent by') or, with none, no node.
 */
async function sendersAsAnswered(page, { base = URL, token, ready = () => true } = {}) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const integrations = (await call('GET', '/api/v1/sites/LIVE/integrations', { token, base })).json;
    const want = Object.fromEntries(integrations.map((i) => [i.name, i.owner ? i.owner.node : null]));
    const got = {};
    for (const i of integrations) {
      const sender = integration(page, i.name).locator('[data-stat="owner"] .value');
      got[i.name] = (await sender.count()) ? await sender.textContent() : null;
    }
    if (ready(integrations) && JSON.stringify(got) === JSON.stringify(want)) return integrations;
    if (Date.now() > deadline) {
      await shot(page, 'failure-senders.png');
      assert.ok(ready(integrations), `the API's owners never became ready: ${JSON.stringify(integrations)}`);
      assert.deepEqual(got, want, "each integration's card names the node the API says sends it");
    }
    await page.waitForTimeout(200);
  }
}

/** What a chart ([data-chart=NAME], '' the site's) plots now: its query and uPlot's data. */
const chartShown = (page, name) => page.locator(`[data-chart="${name}"]`).evaluate((el) => ({
  range: el.dataset.range,
  since: el.dataset.since,
  step: el.dataset.step,
  data: el.uplot ? el.uplot.data.map((series) => [...series]) : null,
  holds: el.holds,
  canvas: el.uplot ? [el.uplot.ctx.canvas.width, el.uplot.ctx.canvas.height] : null,
}));

/**
 * Waits until the chart of integration NAME of LIVE ('' the site's) shows
 * RANGE, drawn, and plots exactly what GET …/history answers the same query
 * (its time, delivered, failed and depth, point by point); with HOLDS, its
 * bands are what GET …/holds answers too. Returns the chart and the answer.
 */
async function chartAsAnswered(page, name, range, { holds = false } = {}) {
  const path = `/api/v1/sites/LIVE${name ? `/integrations/${name}` : ''}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const got = await chartShown(page, name);
    if (got.data && got.range === range) {
      const q = new URLSearchParams({ since: got.since, step: got.step });
      const answer = await call('GET', `${path}/history?${q}`, { token: ADMIN });
      assert.equal(answer.status, 200, answer.text);
      const want = [
        answer.json.map((p) => Date.parse(p.at) / 1000),
        answer.json.map((p) => p.delivered),
        answer.json.map((p) => p.failed),
        answer.json.map((p) => p.depth),
      ];
      const held = holds ? (await call('GET', `${path}/holds?since=${encodeURIComponent(got.since)}`, { token: ADMIN })).json : null;
      const same = JSON.stringify(got.data) === JSON.stringify(want)
        && (!holds || JSON.stringify(got.holds) === JSON.stringify(held));
      if (same) return { ...got, points: answer.json, held };
      if (Date.now() > deadline) {
        await shot(page, `failure-chart-${name || 'site'}.png`);
        assert.deepEqual(got.data, want, `the ${name || 'site'} chart plots what GET ${path}/history answers`);
        assert.deepEqual(got.holds, held, `the ${name || 'site'} chart's bands are what GET ${path}/holds answers`);
      }
    } else if (Date.now() > deadline) {
      await shot(page, `failure-chart-${name || 'site'}.png`);
      assert.fail(`the ${name || 'site'} chart never showed ${range}: ${JSON.stringify({ ...got, data: !!got.data })}`);
    }
    await page.waitForTimeout(250);
  }
}

/**
 * In the page, of a chart's element EL: the colours of its band for the hold
 * of REASON along the band's top edge, and where its middle is on the page.
 */
function bandOf(el, reason) {
  const u = el.uplot;
  const hold = el.holds.find((p) => p.reason === reason);
  const from = Date.parse(hold.since) / 1000;
  const to = hold.until ? Date.parse(hold.until) / 1000 : u.scales.x.max;
  const [left, right] = [u.bbox.left, u.bbox.left + u.bbox.width];
  const x0 = Math.max(left, u.valToPos(from, 'x', true));
  const x1 = Math.min(right, u.valToPos(to, 'x', true));
  const y = Math.round(u.bbox.top + 1);
  const colours = [];
  for (let x = Math.floor(x0); x <= Math.ceil(Math.max(x1, x0 + 1)); x += 1) colours.push([...u.ctx.getImageData(x, y, 1, 1).data]);
  const over = u.over.getBoundingClientRect();
  const mid = Math.min((from + to) / 2, u.scales.x.max);
  return { from, to, max: u.scales.x.max, colours, x: over.left + u.valToPos(mid, 'x'), y: over.top + over.height / 2 };
}

const sum = (list) => list.reduce((a, n) => a + n, 0);

test('admin: stop and start LIVE, pause orders, queue 500, resume with progress', { timeout: 180_000 }, async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await openSignedIn(context, ADMIN, '00-sign-in.png');
  const session = await page.evaluate(() => fetch('/api/v1/session').then((r) => (r.ok ? r.json() : null)));

  // Signed in: the header names the user and the role.
  await page.locator('#user-role').getByText('admin').waitFor();
  if (ADMIN) {
    assert.equal(session.role, 'admin');
    await page.locator('#user-name').getByText(session.name).waitFor();
  }
  await page.locator('#log .log-line').first().waitFor();
  await shot(page, '01-signed-in.png');
  const offered = await offersAsAnswered(page, ADMIN);
  assert.deepEqual(offered.site, ['reload', 'stop'], 'a running site offers an admin Stop and Reload');

  // One node on the SQLite store: this one, alive, sending every integration
  // of both sites; no integration names a sender (there is no lease).
  const [node] = await nodesAsAnswered(page, { token: ADMIN, ready: (nodes) => nodes.length === 1 });
  assert.equal(node.address, URL, 'the node is at the address the daemon printed');
  assert.deepEqual([...node.integrations].sort(), ['LIVE/contacts', 'LIVE/orders', 'LIVE/signups', 'LIVE/stock', 'STAGE/customers']);
  const row = page.locator(`#nodes tr[data-node="${node.name}"]`);
  await row.getByText('this page').waitFor();
  await row.locator('.node-state.green').getByText('Alive').waitFor();
  assert.deepEqual(await row.locator('[data-sends]').evaluateAll((els) => els.map((e) => e.textContent)),
    ['LIVE/contacts', 'LIVE/orders', 'LIVE/signups', 'LIVE/stock', 'STAGE/customers'], "the chosen site's integrations come first");
  await sendersAsAnswered(page, { token: ADMIN, ready: (list) => list.every((i) => i.owner === null) });
  assert.equal(await page.locator('[data-stat="owner"]').count(), 0, 'no Sent by on a single node');
  await page.locator('#nodes-card').screenshot({ path: join(SHOTS, '01b-nodes.png') });

  // The server refuses a stop without a reason, whatever the page does.
  const refused = await call('POST', '/api/v1/sites/LIVE/stop', { token: ADMIN, body: { reason: '' } });
  assert.equal(refused.status, 400, refused.text);
  assert.ok(refused.json?.error, 'the refusal is JSON {"error"}');

  // Stop Site: the 'Confirm Service Stop' window asks for a reason.
  await page.click('#site-stop');
  const modal = page.locator('#modal');
  await modal.getByText('Confirm Service Stop').waitFor();
  await page.click('#confirm-stop');
  await modal.getByText('Enter a reason').waitFor();
  assert.ok(await modal.isVisible(), 'an empty reason keeps the window open');
  await page.fill('#stop-reason', 'Stopping integration due to stocktake');
  await shot(page, '02-stop-confirm.png');
  const stopsBefore = await page.locator('#log .log-line', { hasText: 'Site LIVE stopped successfully!' }).count();
  await page.click('#confirm-stop');
  await modal.waitFor({ state: 'hidden' });
  await logLines(page, 'Site LIVE stopped successfully!', stopsBefore + 1);
  await page.locator('#site-state').getByText('Stopped').waitFor();
  await page.locator('#site-stop-info').getByText('Stopping integration due to stocktake').waitFor();
  await page.locator('#audit').getByText('Stopping integration due to stocktake').waitFor();
  await shot(page, '03-site-stopped.png');

  // Start Site.
  const startsBefore = await page.locator('#log .log-line', { hasText: 'Site LIVE started successfully!' }).count();
  await page.click('#site-start');
  await logLines(page, 'Site LIVE started successfully!', startsBefore + 1);
  await page.locator('#site-state').getByText('Running').waitFor();

  // Pause orders (with a reason): the hold shows who and why.
  const orders = integration(page, 'orders');
  await orders.locator('[data-action="pause"]').click();
  await modal.getByText('Pause Integration').waitFor();
  await page.fill('#action-reason', 'planned maintenance of the archive');
  await page.click('#modal-ok');
  await modal.waitFor({ state: 'hidden' });
  await orders.locator('.chip.state').getByText('Paused').waitFor();
  await orders.locator('.notes').getByText('planned maintenance of the archive').waitFor();
  assert.equal(await orders.locator('[data-action="pause"]').count(), 0, 'no Pause on a paused integration');
  assert.deepEqual((await offersAsAnswered(page, ADMIN))['integration orders'], ['resume', 'stop']);
  await shot(page, '04-paused.png');

  // Records arrive by webhook while it is paused: they queue.
  const records = Array.from({ length: RECORDS }, (_, n) => ({
    id: `W${String(n + 1).padStart(4, '0')}`, total: Math.round((n % 97) * 12.5) / 10, currency: 'EUR',
  }));
  const hook = await call('POST', '/hooks/LIVE/orders/web-orders', { body: records });
  assert.equal(hook.status, 202, hook.text);
  assert.equal(hook.json.queued, RECORDS);
  await orders.locator('[data-stat="queued"] .value').getByText(String(RECORDS)).waitFor();
  await shot(page, '05-queued.png');

  // Resume: a confirmation, then the 'Resume Integration Worker' progress.
  await orders.locator('[data-action="resume"]').click();
  await modal.getByText('Resume Integration', { exact: true }).waitFor();
  await shot(page, '06-resume-confirm.png');
  await page.click('#modal-ok');
  await modal.getByText('Resume Integration Worker').waitFor();
  const seen = new Set();
  let midway = false;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const text = (await page.locator('#resume-count').textContent()) || '';
    seen.add(text);
    const done = Number(text.split(' / ')[0].replace(/,/g, ''));
    if (!midway && done > 0 && done < RECORDS) {
      midway = true;
      await shot(page, '07-resume-progress.png');
    }
    if (text === `${RECORDS} / ${RECORDS}`) break;
    assert.ok(Date.now() < deadline, `the progress reaches ${RECORDS} / ${RECORDS} (saw ${[...seen].join(', ')})`);
    await page.waitForTimeout(100);
  }
  await modal.getByText('Done: all 500 queued transactions').waitFor();
  await shot(page, '08-resume-done.png');
  console.log(`progress seen: ${[...seen].join(' → ')}`);
  await page.click('#resume-close');
  await modal.waitFor({ state: 'hidden' });
  await orders.locator('.chip.state').getByText('Active').waitFor();
  await orders.locator('[data-stat="queued"] .value').getByText('0').waitFor();
  await logLines(page, 'Integration orders resumed');

  // A record the target refuses: an Error row, and its answer on a click.
  const contacts = await call('POST', '/hooks/LIVE/contacts/contact-forms', {
    body: [
      { email: 'ada@example.org', name: 'Ada' },
      { email: 'bob@example.org', name: 'Bob', reject: true },
      { email: 'cy@example.org', name: 'Cy' },
    ],
  });
  assert.equal(contacts.status, 202, contacts.text);
  await integration(page, 'contacts').locator('[data-action="transactions"]').click();
  await page.selectOption('#tx-state', 'error');
  const errorRow = page.locator('#transactions tr[data-state="error"]').first();
  await errorRow.waitFor({ timeout: 20_000 });
  await errorRow.click();
  await page.locator('#tx-last-error').getByText('refuses contacts without a consent flag').waitFor();
  await shot(page, '09-transaction-error.png');
  await page.keyboard.press('Escape');
  await modal.waitFor({ state: 'hidden' });

  // 'Send Changed' on a pull flow: a run with its counts.
  const stock = integration(page, 'stock');
  await stock.locator('[data-action="send-changed"]').click();
  await stock.locator('.chip.flow-status').getByText('Success').waitFor({ timeout: 20_000 });
  await stock.getByText('3 captured').waitFor();
  await stock.getByText(/3 succeeded · 0 failed · \d+ pages?/).waitFor();

  // STAGE: its target does not answer; the endpoint is Offline (red).
  await page.locator('.site-tab', { hasText: 'STAGE' }).click();
  await page.locator('[data-integration="customers"]').waitFor();
  await page.locator('[data-endpoint="legacy"] .chip.red').getByText('Offline').waitFor({ timeout: 20_000 });
  await page.locator('[data-endpoint="erp"] .chip.green').getByText('Online').waitFor();
  await offersAsAnswered(page, ADMIN, 'STAGE');
  await page.locator('[data-integration="customers"]').getByText('endpoint-offline').waitFor();
  await shot(page, '10-stage.png');
  // Test: the endpoint is called now, and the page says what was found.
  await page.locator('[data-endpoint="legacy"] [data-action="test"]').click();
  await page.locator('.toast.error').getByText('legacy: not reachable').waitFor();
  // Each kind of real system shows its kind, its state and its last test.
  for (const [name, kind] of [['warehouse-db', 'postgres'], ['shop-db', 'mysql'], ['orders-api', 'http_poll']]) {
    const row = page.locator(`tr[data-endpoint="${name}"]`);
    await row.getByText(kind, { exact: true }).waitFor();
    await row.locator('[data-action="test"]').click();
    await row.getByText('reached', { exact: false }).waitFor({ timeout: 20_000 });
    await row.locator('.chip.endpoint-state').getByText('Online').waitFor();
  }
  await shot(page, '10c-endpoint-kinds.png');
  // Reauthorize: the form posts the token as JSON; credentials that cannot
  // be tried (nothing answers) are refused, and the window says why.
  await page.locator('[data-endpoint="legacy"] [data-action="reauthorize"]').click();
  await modal.getByText('Reauthorize legacy').waitFor();
  await page.click('#reauth-ok');
  await modal.getByText('Enter a token.').waitFor();
  await page.fill('#reauth-token', 'new-secret-token');
  await page.click('#reauth-ok');
  await modal.locator('.form-error').filter({ hasNotText: 'Enter a token.' }).waitFor();
  await shot(page, '10b-reauthorize.png');
  await page.keyboard.press('Escape');
  await modal.waitFor({ state: 'hidden' });

  // Both the ad-hoc run and the refused reauthorization are in the audit
  // trails, with who, what and the outcome.
  const liveAudit = (await call('GET', '/api/v1/sites/LIVE/audit', { token: ADMIN })).json;
  assert.ok(liveAudit.some((e) => e.action === 'flow.run' && e.subject === 'flow/stock-levels'
    && e.actor === 'alice' && e.reason === 'Send Changed' && e.outcome === 'ok'), JSON.stringify(liveAudit));
  const stageAudit = (await call('GET', '/api/v1/sites/STAGE/audit', { token: ADMIN })).json;
  assert.ok(stageAudit.some((e) => e.action === 'endpoint.reauthorize' && e.subject === 'endpoint/legacy'
    && e.actor === 'alice' && e.outcome.startsWith('refused')), JSON.stringify(stageAudit));

  // The README's picture: LIVE, populated, with a person's hold on contacts.
  const held = await call('POST', '/api/v1/sites/LIVE/integrations/contacts/pause', {
    token: ADMIN, body: { reason: 'CRM upgrade tonight' },
  });
  assert.equal(held.status, 200, held.text);
  await page.locator('.site-tab', { hasText: 'LIVE' }).click();
  await integration(page, 'contacts').locator('.notes').getByText('CRM upgrade tonight').waitFor();
  await page.selectOption('#tx-state', '');
  await integration(page, 'orders').waitFor();
  await page.locator('#transactions tr[data-seq]').first().waitFor();
  await page.evaluate(() => {
    window.scrollTo(0, 0);
    for (const t of document.querySelectorAll('.toast')) t.remove();
  });
  await page.waitForTimeout(300);
  // `run.sh --docs` refreshes the README's picture; otherwise it is an artifact.
  const picture = process.env.SLUICE_E2E_DOCS ? join(DOCS, 'dashboard.png') : join(SHOTS, 'dashboard.png');
  await page.screenshot({ path: picture });

  // A phone: the same page at 390×844, nothing wider than the screen.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await phone.addCookies(await context.cookies());
  const small = await openSignedIn(phone, ADMIN);
  await small.locator('#site-select').waitFor();
  await small.locator('#log .log-line').first().waitFor();
  const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page fits a phone's width (overflows by ${overflow}px)`);
  await shot(small, '11-phone.png');
  await shot(small, '12-phone-full.png', { fullPage: true });
  await phone.close();

  assert.deepEqual(page.problems, [], 'no script errors in the page');
  await context.close();
});

test('charts: each integration and the site plot GET …/history as answered, 24 hours and 7 days ask with their steps', { timeout: 120_000 }, async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await openSignedIn(context, ADMIN);
  const asked = [];
  page.on('request', (r) => {
    const url = new globalThis.URL(r.url());
    if (url.pathname.endsWith('/history')) asked.push({ path: url.pathname, since: url.searchParams.get('since'), step: url.searchParams.get('step') });
  });

  // The admin's test delivered 500 orders and three contacts, one refused
  // (on_error skip: failed), within the hour: each chart plots them, as
  // the API answers them, a point a minute.
  const orders = await chartAsAnswered(page, 'orders', '1h');
  assert.equal(orders.step, '1m');
  assert.ok(orders.points.length >= 60 && orders.points.length <= 62, `an hour of minutes: ${orders.points.length}`);
  assert.ok(sum(orders.data[1]) >= RECORDS, `orders delivered ${RECORDS} within the hour: ${sum(orders.data[1])}`);
  assert.ok(orders.canvas[0] > 300 && orders.canvas[1] > 100, `the orders chart is drawn: ${orders.canvas}`);
  const contacts = await chartAsAnswered(page, 'contacts', '1h');
  assert.ok(sum(contacts.data[2]) >= 1, 'contacts failed once');
  assert.ok(sum(contacts.data[1]) >= 2, 'contacts delivered two');
  const site = await chartAsAnswered(page, '', '1h');
  assert.ok(sum(site.data[1]) >= sum(orders.data[1]) + sum(contacts.data[1]) - 5, 'the site adds its integrations');
  assert.ok(sum(site.data[2]) >= 1);
  // Title, axis labels and legend: what an operator reads beside the plot.
  const chart = page.locator('[data-chart="orders"]');
  await chart.locator('figcaption').getByText('Activity of orders, last hour').waitFor();
  assert.deepEqual(await chart.locator('.u-legend .u-label').allTextContents(), ['time', 'delivered', 'failed', 'queue depth']);
  assert.match(await chart.locator('canvas').getAttribute('aria-label'), /^orders, last hour: [\d,]+ delivered, \d+ failed; /);

  // The holds of the hour as bands, as GET …/holds answers them: the stop of
  // the site (every integration's, one band on the site's chart), the pause
  // of orders (over) and of contacts (still on), each with who and why.
  const ordersHeld = await chartAsAnswered(page, 'orders', '1h', { holds: true });
  const pause = ordersHeld.held.find((p) => p.kind === 'operator' && p.reason === 'planned maintenance of the archive');
  assert.ok(pause && pause.until && pause.by === 'alice', `the pause of orders is a hold period: ${JSON.stringify(ordersHeld.held)}`);
  assert.ok(ordersHeld.held.some((p) => p.kind === 'site-stopped' && p.until), 'so is the stop of the site');
  await page.locator('[data-chart="orders"] .chart-holds').getByText('paused by alice: planned maintenance of the archive').waitFor();
  const contactsHeld = await chartAsAnswered(page, 'contacts', '1h', { holds: true });
  assert.ok(contactsHeld.held.some((p) => p.reason === 'CRM upgrade tonight' && p.until === null), JSON.stringify(contactsHeld.held));
  await page.locator('[data-chart="contacts"] .chart-holds li', { hasText: 'CRM upgrade tonight' }).getByText('still held').waitFor();
  const siteHeld = await chartAsAnswered(page, '', '1h', { holds: true });
  const stops = siteHeld.held.filter((p) => p.kind === 'site-stopped');
  assert.ok(stops.length >= 3, `the stop held each integration of LIVE: ${JSON.stringify(stops)}`);
  assert.equal(await page.locator('[data-chart=""] .chart-holds li', { hasText: 'site stopped by alice: Stopping integration due to stocktake' }).count(), 1,
    "one stop of the site is one band on the site's chart");
  await page.locator('[data-chart=""] .chart-holds').getByText('orders paused by alice: planned maintenance of the archive').waitFor();
  // Drawn: the band's top edge has its colour (a person's hold: #e69f00) on
  // the canvas, and the cursor over it says who held it and why.
  const orange = ([r, g, b]) => Math.abs(r - 230) < 40 && Math.abs(g - 159) < 40 && b < 80;
  for (const [name, reason] of [['orders', 'planned maintenance of the archive'], ['contacts', 'CRM upgrade tonight']]) {
    const chart = page.locator(`[data-chart="${name}"]`);
    // Asked again until it holds: a refresh may shift the chart between a look and a move.
    const deadline = Date.now() + 15_000;
    for (;;) {
      await chart.scrollIntoViewIfNeeded();
      const band = await chart.evaluate(bandOf, reason);
      assert.ok(band.colours.some(orange), `${name}: the band of '${reason}' is drawn: ${JSON.stringify(band.colours)}`);
      await page.mouse.move(band.x, band.y);
      await page.waitForTimeout(150);
      const hover = chart.locator('.chart-hover');
      const said = (await hover.isVisible()) ? await hover.textContent() : '';
      if (said.includes(reason)) break;
      if (Date.now() > deadline) {
        await shot(page, `failure-chart-hover-${name}.png`);
        const cursor = await chart.evaluate((el) => el.uplot.cursor.left);
        assert.fail(`${name}: the cursor on the band of '${reason}' names it: ${JSON.stringify({ ...band, colours: undefined, cursor, said })}`);
      }
      console.log(`charts: hover again on ${name}: ${JSON.stringify({ ...band, colours: undefined, said })}`);
      await page.mouse.move(0, 0);
    }
  }
  await page.mouse.move(0, 0);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.locator('#activity-card').screenshot({ path: join(SHOTS, '20-chart-site.png') });
  await integration(page, 'orders').screenshot({ path: join(SHOTS, '21-chart-orders.png') });
  await integration(page, 'contacts').screenshot({ path: join(SHOTS, '21b-chart-contacts.png') });
  // The README's picture: the site's chart and the first integration's card.
  const clip = await page.evaluate(() => {
    const top = document.getElementById('activity-card').getBoundingClientRect();
    const first = document.querySelector('[data-integration]').getBoundingClientRect();
    return { x: top.left - 8, y: top.top + window.scrollY - 8, width: top.width + 16, height: first.bottom - top.top + 16 };
  });
  await page.setViewportSize({ width: 1280, height: Math.ceil(clip.y + clip.height + 20) });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(SHOTS, 'charts.png'), clip });
  if (process.env.SLUICE_E2E_DOCS) copyFileSync(join(SHOTS, 'charts.png'), join(DOCS, 'images', 'charts.png'));
  await page.setViewportSize({ width: 1280, height: 900 });

  // 24 hours: asked again, a point a minute; 7 days: a point an hour.
  for (const [range, step, hours] of [['24h', '1m', 24], ['7d', '1h', 168]]) {
    const before = asked.length;
    await page.click(`#chart-range label:has([data-range="${range}"])`);
    const got = await chartAsAnswered(page, 'orders', range);
    assert.equal(got.step, step, `${range} is asked with step ${step}`);
    const since = Date.parse(got.since);
    assert.ok(Math.abs(Date.now() - since - hours * 3_600_000) < 120_000, `${range} asks from ${hours} h ago: ${got.since}`);
    const ask = asked.slice(before).find((a) => a.path.endsWith('/integrations/orders/history') && a.since === got.since);
    assert.ok(ask, `switching to ${range} asks for the orders' history again`);
    assert.equal(ask.step, step, `the page asks with step ${step} for ${range}`);
    assert.ok(sum(got.data[1]) >= RECORDS, `${range}: the 500 orders are in it`);
    await chartAsAnswered(page, '', range);
    await page.locator('[data-chart="orders"] figcaption').getByText(range === '7d' ? 'last 7 days' : 'last 24 hours').waitFor();
  }
  await page.locator('#activity-card').screenshot({ path: join(SHOTS, '22-chart-site-7d.png') });
  await page.click('#chart-range label:has([data-range="1h"])');
  await chartAsAnswered(page, 'orders', '1h');

  assert.deepEqual(page.problems, [], 'no script errors in the page');
  await context.close();
});

/** What the Errors panel shows, a row a group, in the API's terms. */
const errorsShown = (page) => page.locator('#errors tr[data-group]').evaluateAll((rows) => rows.map((r) => {
  const cells = [...r.children].map((td) => td.querySelector('.cell'));
  return {
    group: r.dataset.group,
    count: cells[0].textContent,
    seqs: cells[1].firstChild.textContent,
    id: cells[1].querySelector('.sub')?.textContent,
    endpoint: cells[2].firstChild.textContent,
    status: cells[2].querySelector('.sub')?.textContent || null,
    last_at: cells[3].querySelector('time')?.getAttribute('datetime'),
    answer: r.querySelector('td.err').textContent,
    sample: r.querySelector('td.err').getAttribute('title'),
    actions: [...r.querySelectorAll('[data-action]')].map((b) => b.dataset.action),
  };
}));

/**
 * Waits until GET …/integrations/NAME/errors of LIVE answers as READY wants
 * and the Errors panel shows exactly its groups, in its order: each one's
 * id, count, seq range, endpoint, status, latest time, latest answer (from
 * its status on, and in full as the title) and the buttons its actions
 * offer. Returns the API's answer.
 */
async function errorsAsAnswered(page, name, { ready = () => true, timeout = 20_000 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const answer = await call('GET', `/api/v1/sites/LIVE/integrations/${name}/errors`, { token: ADMIN });
    assert.equal(answer.status, 200, answer.text);
    const groups = answer.json;
    const want = groups.map((g) => ({
      group: g.group,
      count: String(g.count),
      seqs: g.first_seq === g.last_seq ? `#${g.first_seq}` : `#${g.first_seq}–#${g.last_seq}`,
      id: g.group,
      endpoint: g.endpoint || '—',
      status: g.status ? `HTTP ${g.status}` : null,
      last_at: g.last_at,
      // On the row, from the status on (the endpoint is beside it); in full, its title.
      answer: g.status ? g.sample.slice(g.sample.indexOf(`: ${g.status} `) + 2) : g.sample,
      sample: g.sample,
      actions: ['retry', 'ignore'].filter((a) => g.actions.includes(a)),
    }));
    const got = await errorsShown(page);
    const shownOf = (await page.locator('#errors-integration').textContent()) === name;
    if (ready(groups) && shownOf && JSON.stringify(got) === JSON.stringify(want)) return groups;
    if (Date.now() > deadline) {
      await shot(page, `failure-errors-${name}.png`);
      assert.ok(ready(groups), `the API's groups of ${name} never became ready: ${JSON.stringify(groups)}`);
      assert.ok(shownOf, `the Errors panel is of ${name}`);
      assert.deepEqual(got, want, `the Errors panel shows what GET …/${name}/errors answers`);
    }
    await page.waitForTimeout(200);
  }
}

/**
 * In the page, of a table cell TD: whether TEXT is in it and drawn within
 * the cell's box (a clamped cell lays out its hidden lines below the box).
 */
function unclipped(td, text) {
  const box = td.querySelector('.cell') || td;
  const walker = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const at = node.textContent.indexOf(text);
    if (at < 0) continue;
    const range = document.createRange();
    range.setStart(node, at);
    range.setEnd(node, at + text.length);
    const outer = box.getBoundingClientRect();
    const rects = [...range.getClientRects()];
    return rects.length > 0 && rects.every((r) => r.top >= outer.top - 1 && r.bottom <= outer.bottom + 1);
  }
  return false;
}

/** The test's HTTP target (e2e/receiver.mjs): what it took at PATH, and telling it to take a cause it refused. */
const RECEIVER = process.env.SLUICE_E2E_RECEIVER;
const receivedAt = async (path) => (await (await fetch(`${RECEIVER}/e2e/received?path=${encodeURIComponent(path)}`)).json());
async function receiverAccepts(cause) {
  const res = await fetch(`${RECEIVER}/e2e/accept`, { method: 'POST', body: JSON.stringify({ cause }) });
  assert.equal(res.status, 200, await res.text());
}

/** Waits until the transactions of integration NAME of LIVE are as READY wants; returns them. */
async function transactionsWhen(name, ready, what, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const answer = await call('GET', `/api/v1/sites/LIVE/integrations/${name}/transactions?limit=200`, { token: ADMIN });
    assert.equal(answer.status, 200, answer.text);
    if (ready(answer.json)) return answer.json;
    if (Date.now() > deadline) {
      assert.fail(`the transactions of ${name} never became ${what}: ${JSON.stringify(answer.json.map((t) => [t.seq, t.key, t.state]))}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

test('errors: refusals of two causes are two groups in the Errors panel, as the API answers; Retry all delivers exactly one group, Ignore all empties the panel', { timeout: 90_000 }, async () => {
  assert.ok(RECEIVER, 'run.sh names the receiver (SLUICE_E2E_RECEIVER)');
  // Seven sign-ups for `signups` (on_error = "skip"): the mailer takes two,
  // refuses three as already subscribed and two as bounced, each answer
  // naming its own record (ids and addresses vary; the cause does not).
  const causes = [null, 'duplicate', 'bounced', 'duplicate', null, 'bounced', 'duplicate'];
  const signups = causes.map((reject, n) => ({
    id: `S-${1001 + n}`, email: `s-${1001 + n}@example.org`, ...(reject ? { reject } : {}),
  }));
  const idsOf = (cause) => signups.filter((s) => s.reject === cause).map((s) => s.id);
  const hook = await call('POST', '/hooks/LIVE/signups/newsletter', { body: signups });
  assert.equal(hook.status, 202, hook.text);
  assert.equal(hook.json.queued, signups.length);
  const settled = (list) => list.length === signups.length && list.every((t) => t.state === 'sent' || t.state === 'error');
  const txs = await transactionsWhen('signups', settled, 'sent or error');
  const seqOf = Object.fromEntries(txs.map((t) => [t.key, t.seq]));
  const stateOf = (list) => Object.fromEntries(list.map((t) => [t.key, t.state]));
  assert.deepEqual(stateOf(txs), Object.fromEntries(signups.map((s) => [s.id, s.reject ? 'error' : 'sent'])));
  assert.deepEqual((await receivedAt('/signups')).map((t) => t.record.id), idsOf(undefined), 'the mailer took the two it does not refuse');

  // The API's groups: two, the larger first, each with its records' seqs,
  // the mailer, 422, and its answer masked to what the records share.
  const answered = (await call('GET', '/api/v1/sites/LIVE/integrations/signups/errors', { token: ADMIN })).json;
  assert.equal(answered.length, 2, `two causes, two groups: ${JSON.stringify(answered)}`);
  const [duplicate, bounced] = answered;
  for (const [g, cause, text] of [[duplicate, 'duplicate', 'is already subscribed'], [bounced, 'bounced', 'the address is not deliverable']]) {
    const seqs = idsOf(cause).map((id) => seqOf[id]);
    assert.equal(g.count, seqs.length, `${cause}: ${JSON.stringify(g)}`);
    assert.deepEqual([g.first_seq, g.last_seq], [Math.min(...seqs), Math.max(...seqs)], `${cause}: its seq range`);
    assert.equal(g.endpoint, 'mailer');
    assert.equal(g.status, 422);
    assert.ok(g.sample.includes(text) && idsOf(cause).some((id) => g.sample.includes(id)), `${cause}: its latest answer in full: ${g.sample}`);
    assert.ok(g.cause.includes('S-#') && !/S-\d/.test(g.cause), `${cause}: the ids are masked in its cause: ${g.cause}`);
    assert.deepEqual(g.actions, ['retry', 'ignore'], `${cause}: an admin may retry or ignore it`);
  }

  // The page: the Errors panel follows the Transactions card's integration.
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await openSignedIn(context, ADMIN);
  await integration(page, 'signups').locator('[data-action="transactions"]').click();
  const card = page.locator('#errors-card');
  const shownGroups = await errorsAsAnswered(page, 'signups', { ready: (groups) => groups.length === 2 });
  assert.deepEqual(shownGroups.map((g) => [g.group, g.count]), [[duplicate.group, 3], [bounced.group, 2]]);
  await card.locator('#errors-summary').getByText('5 in error, 2 causes').waitFor();
  // The latest answer is on its row, and in full in the group's window.
  // The row is two lines at most: the target's answer (after the status)
  // must begin within them, not be cut off behind the request line.
  const row = (g) => page.locator(`#errors tr[data-group="${g.group}"]`);
  for (const g of [duplicate, bounced]) {
    const cell = row(g).locator('td.err');
    assert.ok(await cell.isVisible(), `the answer of ${g.group} is visible on its row`);
    const start = g.sample.slice(g.sample.indexOf(': 422 ') + 6).slice(0, 12);
    assert.ok(await cell.evaluate(unclipped, start), `the row of ${g.group} shows its answer's start '${start}' (not cut off): ${g.sample}`);
  }
  await card.scrollIntoViewIfNeeded();
  await card.screenshot({ path: join(SHOTS, '30-errors.png') });
  if (process.env.SLUICE_E2E_DOCS) copyFileSync(join(SHOTS, '30-errors.png'), join(DOCS, 'images', 'errors.png'));
  const modal = page.locator('#modal');
  await row(bounced).locator('td.err').click();
  await modal.getByText('Errors: 2 of one cause').waitFor();
  assert.equal(await page.locator('#errors-sample').textContent(), bounced.sample);
  assert.equal(await page.locator('#errors-cause').textContent(), bounced.cause);
  await shot(page, '31-errors-group.png');
  await page.keyboard.press('Escape');
  await modal.waitFor({ state: 'hidden' });

  // The mailer is fixed for the duplicates: Retry all on their group asks
  // first, naming the count, then sends exactly those three again.
  await receiverAccepts('duplicate');
  const before = await receivedAt('/signups');
  await row(duplicate).locator('[data-action="retry"]').click();
  await modal.getByText('Retry all', { exact: true }).waitFor();
  await modal.getByText('Retry all 3 transactions of this group in signups?').waitFor();
  assert.equal((await page.locator('#modal-ok').textContent()).trim(), 'Retry 3');
  await shot(page, '32-errors-retry-confirm.png');
  await page.click('#modal-ok');
  await modal.waitFor({ state: 'hidden' });
  await page.locator('.toast').getByText('3 transactions retried').waitFor();
  const retried = await transactionsWhen('signups',
    (list) => idsOf('duplicate').every((id) => stateOf(list)[id] === 'sent'), 'sent for the duplicates');
  assert.deepEqual(stateOf(retried), Object.fromEntries(signups.map((s) => [s.id, s.reject === 'bounced' ? 'error' : 'sent'])),
    'the retry sent the duplicates, and only them');
  await page.waitForTimeout(300);
  const after = await receivedAt('/signups');
  assert.deepEqual(after.slice(0, before.length), before);
  assert.deepEqual(after.slice(before.length).map((t) => t.record.id), idsOf('duplicate'),
    'the mailer took exactly the three of the group, once each, in sequence order');
  // The group is gone from the panel; the other is as it was.
  await row(duplicate).waitFor({ state: 'detached' });
  const left = await errorsAsAnswered(page, 'signups', { ready: (groups) => groups.length === 1 });
  assert.deepEqual(left, [bounced], 'the bounced group is as it was');
  await card.locator('#errors-summary').getByText('2 in error, 1 cause').waitFor();

  // Ignore all on the bounced: asked first, naming the count; then the queue
  // moves on without them and the panel is empty.
  await row(bounced).locator('[data-action="ignore"]').click();
  await modal.getByText('Ignore all 2 transactions of this group in signups?').waitFor();
  assert.equal((await page.locator('#modal-ok').textContent()).trim(), 'Ignore 2');
  await page.click('#modal-ok');
  await modal.waitFor({ state: 'hidden' });
  await page.locator('.toast').getByText('2 transactions ignored').waitFor();
  await errorsAsAnswered(page, 'signups', { ready: (groups) => groups.length === 0 });
  await page.locator('#errors .empty').getByText('No errors in signups.').waitFor();
  assert.equal(await page.locator('#errors-summary').textContent(), '');
  const ignored = await transactionsWhen('signups', (list) => idsOf('bounced').every((id) => stateOf(list)[id] === 'ignored'), 'ignored for the bounced');
  assert.deepEqual(stateOf(ignored), Object.fromEntries(signups.map((s) => [s.id, s.reject === 'bounced' ? 'ignored' : 'sent'])));
  assert.deepEqual((await receivedAt('/signups')).map((t) => t.record.id), after.map((t) => t.record.id), 'nothing ignored was sent');
  await card.screenshot({ path: join(SHOTS, '33-errors-empty.png') });

  // Each whole group is one audit entry, by alice, with how many.
  const audit = (await call('GET', '/api/v1/sites/LIVE/audit?limit=50', { token: ADMIN })).json;
  for (const [action, g, outcome] of [['errors.retry', duplicate, 'ok: 3 retried'], ['errors.ignore', bounced, 'ok: 2 ignored']]) {
    assert.equal(audit.filter((e) => e.action === action && e.subject === `integration/signups/errors/${g.group}`
      && e.actor === 'alice' && e.outcome === outcome).length, 1, `one ${action} entry: ${JSON.stringify(audit.slice(0, 5))}`);
  }
  assert.deepEqual(page.problems, [], 'no script errors in the page');
  await context.close();
});

test('viewer: no Pause button, and a forged pause is answered 403', { timeout: 60_000 }, async (t) => {
  if (!VIEWER) {
    t.skip('this daemon has no tokens (no `sluice token`): nobody is a viewer');
    return;
  }
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await openSignedIn(context, VIEWER);
  await page.locator('#user-role').getByText('viewer').waitFor();
  await integration(page, 'orders').locator('.chip.state').first().waitFor();
  await page.waitForTimeout(500);
  assert.equal(await page.locator('[data-action="pause"]').count(), 0, 'a viewer is offered no Pause');
  assert.equal(await page.locator('[data-action="resume"]').count(), 0, 'nor Resume');
  assert.equal(await page.locator('[data-action="stop"]').count(), 0, 'nor Stop');
  assert.ok(!(await page.locator('#site-stop').isVisible()), 'nor Stop Site');
  assert.ok(!(await page.locator('#site-start').isVisible()), 'nor Start Site');
  const offered = await offersAsAnswered(page, VIEWER);
  assert.ok(Object.values(offered).every((a) => a.length === 0), `a viewer is offered nothing: ${JSON.stringify(offered)}`);
  await shot(page, '13-viewer.png');

  const forged = await page.evaluate(async (token) => {
    const r = await fetch('/api/v1/sites/LIVE/integrations/orders/pause', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'forged' }),
    });
    return { status: r.status, body: await r.json().catch(() => null) };
  }, VIEWER);
  assert.equal(forged.status, 403, JSON.stringify(forged));
  assert.ok(forged.body?.error, 'the refusal is JSON {"error"}');

  // The same write on the cookie alone, without the CSRF header: refused too.
  const noCsrf = await page.evaluate(async () => {
    const r = await fetch('/api/v1/sites/LIVE/integrations/orders/pause', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}',
    });
    return r.status;
  });
  assert.equal(noCsrf, 403);

  // Sign out: back to the sign-in screen.
  await page.click('#sign-out');
  await page.locator('#signin').waitFor();
  assert.deepEqual(page.problems, [], 'no script errors in the page');
  await context.close();
});

test('operator: pauses and resumes, is offered no start or stop; an admin makes a token and revokes hers, which signs her page out', { timeout: 60_000 }, async () => {
  assert.ok(OPERATOR && ADMIN, 'run.sh made an operator and an admin token');
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await openSignedIn(context, OPERATOR);
  await page.locator('#user-role').getByText('operator').waitFor();
  const stock = integration(page, 'stock');
  await stock.locator('.chip.state').getByText('Active').waitFor();
  assert.equal(await page.locator('[data-action="stop"]').count(), 0, 'an operator is offered no integration Stop');
  assert.equal(await page.locator('[data-action="start"]').count(), 0, 'nor Start');
  assert.ok(!(await page.locator('#site-stop').isVisible()), 'nor Stop Site');
  assert.equal(await page.locator('[data-action="reauthorize"]').count(), 0, 'nor Reauthorize');
  const offered = await offersAsAnswered(page, OPERATOR);
  assert.deepEqual(offered['integration stock'], ['pause']);
  assert.deepEqual(offered.site, [], 'an operator may not start, stop or reload a site');

  // What an operator may: pause (with a reason) and resume.
  const modal = page.locator('#modal');
  await stock.locator('[data-action="pause"]').click();
  await modal.getByText('Pause Integration').waitFor();
  await page.fill('#action-reason', 'operator check');
  await page.click('#modal-ok');
  await modal.waitFor({ state: 'hidden' });
  await stock.locator('.chip.state').getByText('Paused').waitFor();
  await stock.locator('.notes').getByText('operator check').waitFor();
  await shot(page, '14-operator-paused.png');
  await stock.locator('[data-action="resume"]').click();
  await page.click('#modal-ok');
  await modal.getByText('Resume Integration Worker').waitFor();
  await page.click('#resume-close');
  await modal.waitFor({ state: 'hidden' });
  await stock.locator('.chip.state').getByText('Active').waitFor();
  const audit = await call('GET', '/api/v1/sites/LIVE/audit?limit=20', { token: ADMIN });
  assert.ok(
    audit.json.some((e) => e.action === 'integration.pause' && e.actor === 'olga' && e.reason === 'operator check'),
    'the audit trail names the operator and her reason',
  );

  assert.ok(!(await page.locator('#tokens-card').isVisible()), 'an operator sees no token management');

  // An admin, in her own page, makes a token and revokes the operator's:
  // the operator's open page is signed out.
  const adminContext = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const admin = await openSignedIn(adminContext, ADMIN);
  const tokens = admin.locator('#tokens-card');
  await tokens.locator('[data-token="olga"]').waitFor();
  await admin.click('#token-new');
  await admin.fill('#token-name', 'grafana');
  await admin.selectOption('#token-role', 'viewer');
  await admin.click('#token-create');
  const secret = (await admin.locator('#token-secret').textContent()).trim();
  assert.match(secret, /^sluice_[0-9a-f]{64}$/);
  assert.equal((await call('GET', '/api/v1/sites', { token: secret })).status, 200, 'the new token works');
  await shot(admin, '16-token-created.png');
  await admin.locator('#modal').getByText('Done').click();
  await tokens.locator('[data-token="olga"] [data-action="revoke"]').click();
  await admin.click('#modal-ok');
  await admin.locator('[data-token="olga"]').waitFor({ state: 'detached' });
  await page.locator('#signin').waitFor({ timeout: 15_000 });
  const changes = await call('GET', '/api/v1/audit', { token: ADMIN });
  assert.ok(changes.json.some((e) => e.action === 'token.revoke' && e.subject === 'olga' && e.actor === 'alice'),
    'the revocation is in the token audit, by alice');
  assert.deepEqual(admin.problems, [], 'no script errors in the admin page');
  await adminContext.close();
  await shot(page, '15-revoked.png');
  assert.deepEqual(page.problems, [], 'no script errors in the page');
  await context.close();
});

test('cluster: two nodes on one PostgreSQL store; the Nodes panel and each sender follow the API; a frozen node shows gone and the other sends its integration', { timeout: 90_000 }, async (t) => {
  if (!CLUSTER.n1) {
    t.skip(CLUSTER.skip || 'run.sh started no cluster');
    return;
  }
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await openSignedIn(context, '', null, CLUSTER.n1);

  // Both nodes alive, each sending one of the two integrations (the leases
  // are balanced), and every card names the node that sends it.
  const settled = (nodes) => nodes.length === 2 && nodes.every((n) => n.alive && n.integrations.length === 1);
  const nodes = await nodesAsAnswered(page, { base: CLUSTER.n1, ready: settled });
  assert.deepEqual(nodes.map((n) => [n.name, n.address]), [['n1', CLUSTER.n1], ['n2', CLUSTER.n2]]);
  await page.locator('#nodes tr[data-node="n1"]').getByText('this page').waitFor();
  assert.equal(await page.locator('#nodes tr[data-node="n2"]').getByText('this page').count(), 0);
  await page.locator('#nodes-summary').getByText('2 of 2 alive').waitFor();
  const sent = await sendersAsAnswered(page, { base: CLUSTER.n1, ready: (list) => list.every((i) => i.owner) });
  const senders = (list) => list.map((i) => [i.name, i.owner && i.owner.node]);
  for (const [name, node] of senders(sent)) {
    assert.ok(nodes.find((n) => n.name === node).integrations.includes(`LIVE/${name}`), `${node} lists ${name}`);
  }
  // Any node answers the same: n2 names the same senders.
  const fromN2 = (await call('GET', '/api/v1/sites/LIVE/integrations', { base: CLUSTER.n2 })).json;
  assert.deepEqual(senders(fromN2), senders(sent), 'n2 names the senders n1 names');
  await shot(page, '17-cluster-nodes.png', { fullPage: true });
  await page.locator('#nodes-card').screenshot({ path: join(SHOTS, '17b-cluster-nodes-panel.png') });

  // n2 freezes (SIGSTOP, as a hung or cut-off node: no heartbeat, and no
  // word to the registry; run.sh wakes it at the end to stop it): within a
  // lease the panel shows it gone, sending nothing, and n1 sends both.
  const lost = nodes.find((n) => n.name === 'n2').integrations[0];
  process.kill(CLUSTER.n2Pid, 'SIGSTOP');
  const failedOver = (list) => {
    const [n1, n2] = ['n1', 'n2'].map((name) => list.find((n) => n.name === name));
    return n1.alive && !n2.alive && n2.integrations.length === 0 && n1.integrations.length === 2;
  };
  await nodesAsAnswered(page, { base: CLUSTER.n1, ready: failedOver });
  await page.locator('#nodes tr[data-node="n2"] .node-state.red').getByText('Gone').waitFor();
  await page.locator('#nodes-summary').getByText('1 of 2 alive').waitFor();
  await sendersAsAnswered(page, { base: CLUSTER.n1, ready: (list) => list.every((i) => i.owner?.node === 'n1') });
  await integration(page, lost.split('/')[1]).locator('[data-stat="owner"] .value').getByText('n1').waitFor();
  await shot(page, '18-cluster-node-gone.png', { fullPage: true });
  assert.deepEqual(page.problems, [], 'no script errors in the page');
  await context.close();
});
