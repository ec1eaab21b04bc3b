// Drives perch's dashboard in headless Chromium, from a box with no users to
// a viewer who may not see Settings. Prints `ok <step>` per step; exits 1
// with `FAIL <step>: <why>` at the first failure (with a screenshot).
//
//   PERCH_URL      perch's HTTP address, e.g. http://127.0.0.1:18080 (required)
//   PERCH_SERIES   a metric name with samples, e.g. env_temp (required)
//   PERCH_CAMERA   a streaming camera's name; empty skips the video steps
//   PERCH_DEVICE   a device's id with recent samples (e.g. garden/shed, a
//                  zigbee2mqtt friendly name); empty skips the device steps
//   PERCH_DEVICE_METRIC, PERCH_DEVICE_UNIT   one of its metrics and that
//                  metric's unit (default temperature, °C)
//   PERCH_OFFLINE_DEVICE  a device that is offline (for the Overview)
//   SCREENSHOT_DIR where screenshots go (default: test-artifacts/browser)
//   CHROMIUM       the browser (default /usr/bin/chromium)
//
// Run: (cd tests/browser && npm ci) && node tests/browser/dashboard.mjs

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const BASE = (process.env.PERCH_URL || '').replace(/\/+$/, '');
const SERIES = process.env.PERCH_SERIES || '';
const CAMERA = process.env.PERCH_CAMERA || '';
const DEVICE = process.env.PERCH_DEVICE || '';
const DEVICE_METRIC = process.env.PERCH_DEVICE_METRIC || 'temperature';
const DEVICE_UNIT = process.env.PERCH_DEVICE_UNIT || '°C';
const OFFLINE_DEVICE = process.env.PERCH_OFFLINE_DEVICE || '';
const SHOTS = process.env.SCREENSHOT_DIR || 'test-artifacts/browser';
const ADMIN = { name: 'admin', password: 'correct horse battery' };
const VIEWER = { name: 'watcher', password: 'viewer password 1' };
const DASHBOARD = 'browser-test';

if (!BASE || !SERIES) {
  console.error('FAIL setup: set PERCH_URL and PERCH_SERIES');
  process.exit(2);
}
fs.mkdirSync(SHOTS, { recursive: true });

let step = 'launch';
let browser = null;
const pages = [];
const problems = [];
const seenLoadErrors = new Set();

function ok(name) { console.log(`ok ${name}`); }

/** Records uncaught errors and console errors of a page. Failed resource
 * loads (a 401 from a wrong password, a 404 for a missing snapshot) are
 * expected answers, logged but not failures. */
function watch(page, who) {
  pages.push(page);
  page.on('pageerror', e => problems.push(`${who}: uncaught ${e.name}: ${e.message} (at ${page.url()})`));
  page.on('console', m => {
    if (m.type() !== 'error') return;
    if (/^Failed to load resource/.test(m.text())) {
      const where = (m.location().url || '').replace(/\?.*$/, '');
      const key = `${who} ${m.text()} ${where}`;
      if (!seenLoadErrors.has(key)) { seenLoadErrors.add(key); console.log(`# ${who}: ${m.text()}: ${where}`); }
      return;
    }
    problems.push(`${who}: console error: ${m.text()} (at ${page.url()})`);
  });
  page.setDefaultTimeout(15000);
  return page;
}

function checkErrors() {
  if (problems.length) throw new Error('errors in the page:\n  ' + problems.join('\n  '));
}

async function run(name, fn) {
  step = name;
  await fn();
  checkErrors();
  ok(name);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** A device's page path: each segment of its id encoded, the slashes kept. */
function devicePath(id) {
  return '/devices/' + id.split('/').map(encodeURIComponent).join('/');
}

/** Fails if the page scrolls sideways (a phone must not). */
async function noSidewaysScroll(page) {
  const [sw, w] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  if (sw > w + 1) throw new Error(`the page is ${sw} px wide on a ${w} px screen`);
}

/** Pixels of a chart's canvas that are drawn in the first series' colour. */
async function seriesPixels(canvas) {
  return canvas.evaluate(c => {
    const colour = getComputedStyle(document.documentElement).getPropertyValue('--series').split(',')[0].trim();
    const probe = document.createElement('canvas').getContext('2d');
    probe.fillStyle = colour;
    probe.fillRect(0, 0, 1, 1);
    const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 60 && Math.abs(d[i] - r) < 40 && Math.abs(d[i + 1] - g) < 40 && Math.abs(d[i + 2] - b) < 40) n++;
    }
    return n;
  });
}

function expectPath(page, p) {
  return page.waitForURL(u => new URL(u).pathname === p, { timeout: 15000 });
}

async function signIn(page, user, password) {
  await page.getByLabel('Username', { exact: true }).fill(user);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

async function main() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required'],
  });
  const admin = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = watch(await admin.newPage(), 'admin');

  await run('onboarding', async () => {
    await page.goto(BASE + '/');
    await expectPath(page, '/onboarding');
    await shot(page, 'onboarding');
    await page.getByLabel('Username', { exact: true }).fill(ADMIN.name);
    await page.getByLabel('Password', { exact: true }).fill(ADMIN.password);
    await page.getByRole('button', { name: 'Create admin' }).click();
    await expectPath(page, '/overview');
    await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
  });

  await run('sign out', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await expectPath(page, '/login');
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    // The session is gone on the server too.
    // (A Basic-auth challenge on this answer would make the browser wait
    // for credentials: the timeout turns that into a failure.)
    const status = await page.evaluate(() => fetch('/api/v1/users', { signal: AbortSignal.timeout(10000) })
      .then(r => r.status, e => `no answer (${e.name}; a WWW-Authenticate challenge?)`));
    if (status !== 401) throw new Error(`after sign-out /api/v1/users answered ${status}, not 401`);
  });

  await run('wrong password refused', async () => {
    await signIn(page, ADMIN.name, 'not the password');
    const alert = page.getByRole('alert').filter({ hasText: /./ });
    await alert.first().waitFor();
    const text = (await alert.first().textContent()).trim();
    if (!text) throw new Error('no error text shown');
    if (new URL(page.url()).pathname !== '/login') throw new Error(`left the sign-in page for ${page.url()}`);
    await shot(page, 'login-failed');
  });

  await run('sign in', async () => {
    await signIn(page, ADMIN.name, ADMIN.password);
    await expectPath(page, '/overview');
  });

  const nav = page.getByRole('navigation', { name: 'Main' });
  for (const name of ['Overview', 'Explorer', 'Devices', 'Metrics', 'Cameras', 'Search', 'Settings']) {
    await run(`page ${name}`, async () => {
      await nav.getByRole('link', { name, exact: true }).click();
      // Metrics lives at /graph: /metrics is the Prometheus scrape endpoint.
      await expectPath(page, name === 'Metrics' ? '/graph' : '/' + name.toLowerCase());
      await page.getByRole('heading', { name, level: 1, exact: true }).waitFor();
      const current = await nav.getByRole('link', { name, exact: true }).getAttribute('aria-current');
      if (current !== 'page') throw new Error(`the ${name} link is not marked as the current page`);
      await page.waitForTimeout(1500); // let the page's first requests land
      await shot(page, name.toLowerCase());
    });
  }

  await run('overview shows host health', async () => {
    await nav.getByRole('link', { name: 'Overview', exact: true }).click();
    // CPU appears once self-metrics were stored (every few seconds).
    await page.waitForFunction(() => {
      const v = document.getElementById('ov-cpu');
      return v && /\d/.test(v.textContent);
    }, null, { timeout: 30000 }).catch(() => console.log('# note: no CPU reading yet (self-metrics not stored yet?)'));
    await shot(page, 'overview');
  });

  const lastValue = async () => {
    const cell = page.locator('table.legend td.last').first();
    await cell.waitFor();
    const v = await cell.getAttribute('data-value');
    const text = (await cell.textContent()).trim();
    if (v === null || v === '' || !Number.isFinite(Number(v)) || !/\d/.test(text)) {
      throw new Error(`legend's last value is ${JSON.stringify(text)} (data-value ${JSON.stringify(v)})`);
    }
    return text;
  };

  await run(`metrics chart of ${SERIES}`, async () => {
    await nav.getByRole('link', { name: 'Metrics', exact: true }).click();
    await page.getByRole('heading', { name: 'Metrics', level: 1 }).waitFor();
    await page.getByLabel('Find series').fill(SERIES);
    await page.locator('aside.browser ul').getByRole('button', { name: SERIES, exact: true }).click();
    await page.getByRole('button', { name: 'Add to chart' }).click();
    await page.locator('.panel .chart canvas').first().waitFor();
    const text = await lastValue();
    console.log(`# legend: last ${SERIES} = ${text}`);
    if (!new URL(page.url()).searchParams.getAll('q').includes(SERIES)) throw new Error(`the URL does not carry the query: ${page.url()}`);
    await shot(page, 'metrics-chart');
  });

  await run('metrics zoom by dragging', async () => {
    const over = page.locator('.panel .u-over').first();
    const box = await over.boundingBox();
    await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.9, box.y + box.height / 2, { steps: 5 });
    await page.mouse.up();
    await page.waitForURL(u => new URL(u).searchParams.has('from'));
    const u = new URL(page.url());
    const from = Number(u.searchParams.get('from')), to = Number(u.searchParams.get('to'));
    if (!(from < to) || to - from > 3600e3) throw new Error(`zoomed range is ${from}..${to}`);
    await page.getByLabel('Time range').selectOption('1h');
    await page.waitForURL(x => new URL(x).searchParams.get('range') === '1h');
    await page.locator('.panel .chart canvas').first().waitFor();
  });

  await run('metrics chart shows units', async () => {
    // A unit from /api/v1/metadata over the axis and after the legend's values.
    if (DEVICE) {
      await page.goto(BASE + '/graph?' + new URLSearchParams({ q: DEVICE_METRIC, range: '1h' }));
      await page.locator('.panel .chart canvas').first().waitFor();
      const units = await page.evaluate(async () => (await (await fetch('/api/v1/metadata')).json()).data);
      if (!(units[DEVICE_METRIC] || []).some(u => u.unit === DEVICE_UNIT)) throw new Error(`/api/v1/metadata says ${JSON.stringify(units[DEVICE_METRIC])} for ${DEVICE_METRIC}`);
      const axis = (await page.locator('.panel .axis-unit').first().textContent()).trim();
      if (axis !== DEVICE_UNIT) throw new Error(`the axis unit is ${JSON.stringify(axis)}, not ${DEVICE_UNIT}`);
      const last = (await page.locator('table.legend td.last').first().textContent()).trim();
      if (!last.endsWith(' ' + DEVICE_UNIT) || !/\d/.test(last)) throw new Error(`the legend's last value is ${JSON.stringify(last)}`);
      console.log(`# legend: last ${DEVICE_METRIC} = ${last}`);
      await shot(page, 'metrics-units');
      await page.goto(BASE + '/graph?' + new URLSearchParams({ q: SERIES, range: '1h' }));
      await page.locator('.panel .chart canvas').first().waitFor();
    }
    // A series without a unit has none over its axis.
    if (await page.locator('.panel .axis-unit').count()) throw new Error(`a unit is shown for ${SERIES}, which has none`);
  });

  await run('dashboard saved and found after reload', async () => {
    await page.getByLabel('Dashboard name').fill(DASHBOARD);
    await page.getByRole('button', { name: 'Save dashboard' }).click();
    await page.waitForURL(u => new URL(u).searchParams.get('dashboard') === DASHBOARD);
    await page.reload();
    await page.getByRole('heading', { name: 'Metrics', level: 1 }).waitFor();
    await page.waitForFunction(name => {
      const s = document.getElementById('dash-select');
      return s && s.value === name;
    }, DASHBOARD);
    await page.locator('.panel .chart canvas').first().waitFor();
    await lastValue();
    // And from a plain /graph, through the list.
    await page.goto(BASE + '/graph');
    await page.getByLabel('Dashboard', { exact: true }).selectOption(DASHBOARD);
    await page.locator('.panel .chart canvas').first().waitFor();
    await shot(page, 'metrics-dashboard');
  });

  // ---- charts people can read (issue 15) ----
  const canvasOf = p => p.locator('.panel .chart canvas').first();
  const legendNames = p => p.locator('table.legend tbody button').evaluateAll(bs => bs.map(b => b.textContent.trim()));

  await run('metrics range preset 5m and typed now-10m', async () => {
    await page.goto(BASE + '/graph?' + new URLSearchParams({ q: SERIES, range: '1h' }));
    await canvasOf(page).waitFor();
    await page.getByLabel('Time range').selectOption('5m');
    await page.waitForURL(u => new URL(u).searchParams.get('range') === '5m');
    await canvasOf(page).waitFor();
    // A live range refreshes by itself, at an interval chosen from the range.
    if (await page.locator('#refresh').inputValue() !== 'auto') throw new Error('auto-refresh is not on by default');
    const every = (await page.locator('#refresh-state').textContent()).trim();
    if (every !== 'every 10 s') throw new Error(`auto-refresh of a 5 m range says ${JSON.stringify(every)}`);
    // Typed as in Grafana; kept relative in the URL.
    await page.getByLabel('Time range').selectOption('custom');
    await page.getByLabel('From', { exact: true }).fill('now-10m');
    await page.getByLabel('To', { exact: true }).fill('now');
    await page.getByRole('button', { name: 'Apply range' }).click();
    await page.waitForURL(u => new URL(u).searchParams.get('from') === 'now-10m' && new URL(u).searchParams.get('to') === 'now');
    await canvasOf(page).waitFor();
    await page.reload();
    await canvasOf(page).waitFor();
    if (await page.locator('#range').inputValue() !== 'custom') throw new Error('the typed range is not shown as custom after a reload');
    const from = await page.getByLabel('From', { exact: true }).inputValue();
    if (from !== 'now-10m') throw new Error(`after a reload From is ${JSON.stringify(from)}, not now-10m`);
    if (!/every \d+ s/.test(await page.locator('#refresh-state').textContent())) throw new Error('now-10m to now does not auto-refresh');
    // An absolute start still works, and stops the refresh.
    const twoHoursAgo = new Date(Date.now() - 2 * 3600e3);
    const p2 = n => String(n).padStart(2, '0');
    const typed = `${twoHoursAgo.getFullYear()}-${p2(twoHoursAgo.getMonth() + 1)}-${p2(twoHoursAgo.getDate())} ${p2(twoHoursAgo.getHours())}:${p2(twoHoursAgo.getMinutes())}`;
    const oneHourAgo = new Date(Date.now() - 3600e3);
    const typedEnd = `${oneHourAgo.getFullYear()}-${p2(oneHourAgo.getMonth() + 1)}-${p2(oneHourAgo.getDate())} ${p2(oneHourAgo.getHours())}:${p2(oneHourAgo.getMinutes())}`;
    await page.getByLabel('From', { exact: true }).fill(typed);
    await page.getByLabel('To', { exact: true }).fill(typedEnd);
    await page.getByRole('button', { name: 'Apply range' }).click();
    await page.waitForURL(u => /^\d+$/.test(new URL(u).searchParams.get('from') || '') && /^\d+$/.test(new URL(u).searchParams.get('to') || ''));
    await page.waitForFunction(() => /paused/.test(document.getElementById('refresh-state').textContent));
    // Turned off, the choice is in the URL.
    await page.getByLabel('Time range').selectOption('15m');
    await page.getByLabel('Auto-refresh').selectOption('0');
    await page.waitForURL(u => new URL(u).searchParams.get('refresh') === 'off' && new URL(u).searchParams.get('range') === '15m');
    await page.getByLabel('Auto-refresh').selectOption('auto');
    await page.waitForURL(u => !new URL(u).searchParams.has('refresh'));
    await shot(page, 'metrics-range');
  });

  await run('relative dashboard reopens as relative', async () => {
    await page.goto(BASE + '/graph?' + new URLSearchParams({ q: SERIES, range: '6h' }));
    await canvasOf(page).waitFor();
    await page.getByLabel('Dashboard name').fill('relative-test');
    await page.getByRole('button', { name: 'Save dashboard' }).click();
    await page.waitForURL(u => new URL(u).searchParams.get('dashboard') === 'relative-test');
    const saved = await page.evaluate(async () => (await (await fetch('/api/v1/dashboards/relative-test')).json()));
    if (saved.range?.from !== 'now-6h' || saved.range?.to !== 'now') throw new Error(`saved range is ${JSON.stringify(saved.range)}`);
    await page.goto(BASE + '/graph?dashboard=relative-test');
    await page.waitForFunction(() => document.getElementById('dash-select')?.value === 'relative-test');
    await canvasOf(page).waitFor();
    if (await page.locator('#range').inputValue() !== '6h') throw new Error(`reopened on ${await page.locator('#range').inputValue()}, not the last 6 h`);
    if (new URL(page.url()).searchParams.get('range') !== '6h') throw new Error(`the URL says ${page.url()}`);
    // A dashboard saved by an older perch, with fixed timestamps, opens on them.
    const to = Date.now() - 60e3, from = to - 3600e3;
    const status = await page.evaluate(async ([f, t, q]) => {
      const st = await (await fetch('/api/v1/auth/state')).json();
      const csrf = (st.data || st).csrf;
      const r = await fetch('/api/v1/dashboards/old-fixed', {
        method: 'PUT', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
        body: JSON.stringify({ range: { from: f, to: t }, refresh: 0, panels: [{ title: '', kind: 'line', queries: [q], camera: '' }] }),
      });
      return r.status;
    }, [from, to, SERIES]);
    if (status !== 200) throw new Error(`saving an old-style dashboard answered ${status}`);
    await page.goto(BASE + '/graph?dashboard=old-fixed');
    await canvasOf(page).waitFor();
    if (await page.locator('#range').inputValue() !== 'custom') throw new Error('a fixed range is not shown as custom');
    const shownFrom = await page.getByLabel('From', { exact: true }).inputValue();
    if (!/^\d{4}-\d\d-\d\d \d\d:\d\d/.test(shownFrom)) throw new Error(`From shows ${JSON.stringify(shownFrom)}`);
    const u = new URL(page.url());
    if (u.searchParams.get('from') !== String(from) || u.searchParams.get('to') !== String(to)) throw new Error(`the URL says ${page.url()}`);
    await lastValue();
  });

  await run('legend alias from a template and unit on the axis', async () => {
    // The default legend: the metric and only the labels that differ.
    await page.goto(BASE + '/graph?' + new URLSearchParams({ q: SERIES, range: '1h' }));
    await canvasOf(page).waitFor();
    const plain = await legendNames(page);
    if (plain.join() !== SERIES) throw new Error(`the default legend is ${JSON.stringify(plain)}, not ${SERIES}`);
    // A template and a unit typed in the panel's editor.
    await page.getByRole('button', { name: 'Edit' }).first().click();
    await page.getByLabel('Legend (query 1, panel 1)').fill('Lab {{room}}');
    await page.getByLabel('Unit (query 1, panel 1)').fill('°C');
    await page.getByRole('button', { name: 'Run' }).click();
    await page.waitForFunction(() => [...document.querySelectorAll('table.legend tbody button')].some(b => b.textContent.trim() === 'Lab lab'));
    const axis = (await page.locator('.panel .axis-unit').first().textContent()).trim();
    if (axis !== '°C') throw new Error(`the axis unit is ${JSON.stringify(axis)}`);
    const last = (await page.locator('table.legend td.last').first().textContent()).trim();
    if (!/\d °C$/.test(last)) throw new Error(`the legend's last value is ${JSON.stringify(last)}`);
    const u = new URL(page.url());
    if (u.searchParams.get('legend') !== 'Lab {{room}}' || u.searchParams.get('unit') !== '°C') throw new Error(`the URL says ${page.url()}`);
    if (DEVICE) {
      await page.goto(BASE + '/graph?' + new URLSearchParams({ q: DEVICE_METRIC, legend: '{{device}}', range: '1h' }));
      await canvasOf(page).waitFor();
      const names = await legendNames(page);
      if (!names.includes(DEVICE)) throw new Error(`the legend shows ${JSON.stringify(names)}, not ${DEVICE}`);
      const axisD = (await page.locator('.panel .axis-unit').first().textContent()).trim();
      if (axisD !== DEVICE_UNIT) throw new Error(`the axis unit is ${JSON.stringify(axisD)}, not ${DEVICE_UNIT}`);
      // Without a template: the labels that differ, not the whole selector.
      await page.goto(BASE + '/graph?' + new URLSearchParams({ q: DEVICE_METRIC, range: '1h' }));
      await canvasOf(page).waitFor();
      const auto = await legendNames(page);
      const mine = auto.find(n => n.includes(`"${DEVICE}"`));
      if (!mine || !mine.startsWith(DEVICE_METRIC + '{')) throw new Error(`the default legend is ${JSON.stringify(auto)}`);
      console.log(`# legend: ${JSON.stringify(auto)}`);
    }
    await shot(page, 'metrics-legend');
  });

  await run('chart tooltip shows values', async () => {
    await page.goto(BASE + '/graph?' + new URLSearchParams({ q: SERIES, legend: 'Lab {{room}}', unit: '°C', range: '1h' }));
    await canvasOf(page).waitFor();
    const over = page.locator('.panel .u-over').first();
    const box = await over.boundingBox();
    await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2);
    const tip = page.locator('.panel .chart-tip').first();
    await tip.waitFor({ state: 'visible' });
    const text = (await tip.textContent()).trim();
    if (!/Lab lab/.test(text) || !/\d °C/.test(text)) throw new Error(`the tooltip says ${JSON.stringify(text)}`);
    const tb = await tip.boundingBox();
    const pb = await page.locator('.panel .chart').first().boundingBox();
    if (tb.x < pb.x - 1 || tb.x + tb.width > pb.x + pb.width + 1) throw new Error('the tooltip sticks out of its chart');
    console.log(`# tooltip: ${text}`);
    await shot(page, 'metrics-tooltip');
    await page.mouse.move(0, 0);
  });

  await run('find series by a label value', async () => {
    await page.goto(BASE + '/graph');
    await page.getByRole('heading', { name: 'Metrics', level: 1 }).waitFor();
    // perch's own metrics are apart, folded under "perch itself".
    // The list's buttons, not its first item: under load a placeholder item
    // came first and the names were read before they were there.
    await page.locator('aside.browser ul[aria-label="Metric names"] button', { hasText: SERIES }).first().waitFor();
    const mine = await page.locator('aside.browser ul[aria-label="Metric names"] button').evaluateAll(bs => bs.map(b => b.textContent));
    if (!mine.includes(SERIES) || mine.some(n => n.startsWith('perch_'))) throw new Error(`the user's metrics are ${JSON.stringify(mine)}`);
    const own = page.locator('aside.browser > details.own');
    if (await own.getAttribute('open') !== null) throw new Error('"perch itself" is open by default');
    if (!/perch itself/.test(await own.locator('summary').textContent())) throw new Error('no "perch itself" group');
    // env_temp has room="lab": typing the value finds it.
    const value = 'lab';
    await page.getByLabel('Find series').fill(value);
    const hit = page.locator('aside.browser ul[aria-label="Matching series"]').getByRole('button', { name: `${SERIES}{room="lab"}`, exact: true });
    await hit.waitFor();
    await hit.click();
    await page.waitForURL(u => new URL(u).searchParams.getAll('q').includes(`${SERIES}{room="lab"}`));
    await canvasOf(page).waitFor();
    if (DEVICE) {
      const part = DEVICE.split('/').at(-1);
      await page.getByLabel('Find series').fill(part);
      await page.locator('aside.browser ul[aria-label="Matching series"] button', { hasText: `device="${DEVICE}"` }).first().waitFor();
    }
    await shot(page, 'metrics-find');
  });

  if (DEVICE) {
    const row = page.locator(`table.devices tr[data-device="${DEVICE}"]`);
    await run(`devices list shows ${DEVICE}`, async () => {
      await nav.getByRole('link', { name: 'Devices', exact: true }).click();
      await expectPath(page, '/devices');
      // The list refreshes every 10 s: the device is there once its first
      // message was read.
      await row.waitFor({ timeout: 30000 });
      const badge = row.locator('.badge');
      const status = (await badge.textContent()).trim();
      if (status !== 'online') throw new Error(`${DEVICE} is ${JSON.stringify(status)}`);
      const why = await badge.getAttribute('title');
      if (!/^online: .+/.test(why || '')) throw new Error(`the status says no reason: ${JSON.stringify(why)}`);
      const chip = row.locator(`.chip[data-metric="${DEVICE_METRIC}"]`);
      await chip.waitFor({ timeout: 20000 });
      const text = (await chip.textContent()).trim();
      const value = Number(await chip.getAttribute('data-value'));
      if (!Number.isFinite(value) || !text.endsWith(` ${DEVICE_UNIT}`) || !/\d/.test(text)) throw new Error(`the last ${DEVICE_METRIC} shown is ${JSON.stringify(text)}`);
      const battery = (await row.locator('td.battery').textContent()).trim();
      if (!/^\d+ %$/.test(battery)) throw new Error(`the battery shown is ${JSON.stringify(battery)}`);
      const signal = (await row.locator('td.signal').textContent()).trim();
      if (!/\d/.test(signal)) throw new Error(`the signal shown is ${JSON.stringify(signal)}`);
      console.log(`# ${DEVICE}: ${status}, ${text}, battery ${battery}, signal ${signal}`);
      await shot(page, 'devices-list');
    });

    await run('devices search and status filter', async () => {
      const search = page.getByLabel('Search devices');
      const rows = page.locator('table.devices tbody tr');
      await search.fill(DEVICE.split('/').at(-1));
      await page.waitForURL(u => new URL(u).searchParams.get('q') === DEVICE.split('/').at(-1));
      await row.waitFor();
      for (const id of await rows.evaluateAll(trs => trs.map(tr => tr.dataset.device))) {
        if (!id.includes(DEVICE.split('/').at(-1))) throw new Error(`the search shows ${id}`);
      }
      await search.fill('no such device at all');
      await page.getByText('No device matches.').waitFor();
      await search.fill('');
      await page.getByLabel('Status').selectOption('offline');
      await row.waitFor({ state: 'detached' });
      if (OFFLINE_DEVICE) await page.locator(`table.devices tr[data-device="${OFFLINE_DEVICE}"] .badge.offline`).waitFor();
      await page.getByLabel('Status').selectOption('online');
      await row.waitFor();
      if (await page.locator('table.devices .badge.offline').count()) throw new Error('an offline device is listed as online');
      await page.getByLabel('Status').selectOption('all');
    });

    await run(`device page of ${DEVICE} with charts`, async () => {
      await row.getByRole('link').first().click();
      await expectPath(page, devicePath(DEVICE));
      await page.getByRole('heading', { level: 1 }).filter({ hasText: DEVICE }).waitFor();
      // Opened directly (the server answers the page for ids with a slash).
      await page.reload();
      await page.getByRole('heading', { level: 1 }).filter({ hasText: DEVICE }).waitFor();
      await page.getByLabel('Time range').selectOption('1h');
      const panel = page.locator(`.charts .panel[data-metric="${DEVICE_METRIC}"]`);
      const canvas = panel.locator('.chart canvas').first();
      await canvas.waitFor();
      const axis = (await panel.locator('.axis-unit').first().textContent()).trim();
      if (axis !== DEVICE_UNIT) throw new Error(`the axis unit is ${JSON.stringify(axis)}, not ${DEVICE_UNIT}`);
      const last = panel.locator('table.legend td.last').first();
      const v = await last.getAttribute('data-value');
      const text = (await last.textContent()).trim();
      if (!Number.isFinite(Number(v)) || v === '' || !text.endsWith(` ${DEVICE_UNIT}`)) throw new Error(`the legend's last value is ${JSON.stringify(text)}`);
      // uPlot draws after layout: wait for the line itself.
      let drawn = 0;
      for (let i = 0; i < 20 && !drawn; i++) { drawn = await seriesPixels(canvas); if (!drawn) await page.waitForTimeout(250); }
      if (!drawn) throw new Error(`the ${DEVICE_METRIC} chart's canvas has no line on it`);
      console.log(`# ${DEVICE} page: ${DEVICE_METRIC} last ${text}, ${drawn} px of line`);
      const links = await page.locator('ul.links a').evaluateAll(as => as.map(a => a.getAttribute('href')));
      if (!links.some(h => h.startsWith('/search?q='))) throw new Error(`no link to Search: ${links}`);
      await shot(page, 'device-page');
    });

    await run('device topic opens in the Explorer with how it was read', async () => {
      const topic = 'zigbee2mqtt/' + DEVICE;
      await page.locator('ul.links').getByRole('link', { name: topic, exact: true }).click();
      await page.waitForURL(u => new URL(u).pathname === '/explorer' && new URL(u).searchParams.get('topic') === topic);
      await page.getByRole('heading', { name: topic, level: 3 }).waitFor();
      const read = page.locator('.kv .read').first();
      await read.waitFor();
      const text = (await read.textContent()).trim();
      if (!/zigbee2mqtt/.test(text) || !/\d+ series, \d+ samples? stored/.test(text)) throw new Error(`the message was read as ${JSON.stringify(text)}`);
      await page.getByRole('list', { name: `Recent messages on ${topic}` }).locator('.read').first().waitFor();
      console.log(`# read: ${text}`);
      await shot(page, 'explorer-device-topic');
    });

    await run('explorer topic links to its chart', async () => {
      const topic = 'zigbee2mqtt/' + DEVICE;
      await page.goto(BASE + '/explorer?' + new URLSearchParams({ topic }));
      await page.getByRole('heading', { name: topic, level: 3 }).waitFor();
      const link = page.getByRole('link', { name: /^Chart its series/ });
      await link.waitFor();
      await link.click();
      await page.waitForURL(u => new URL(u).pathname === '/graph' && new URL(u).searchParams.getAll('q').some(q => q.includes(`topic="${topic}"`)));
      await canvasOf(page).waitFor();
      const names = await legendNames(page);
      if (!names.length) throw new Error('the chart has no series');
      console.log(`# ${topic} charted: ${JSON.stringify(names)}`);
      await shot(page, 'explorer-topic-chart');
    });

    if (OFFLINE_DEVICE) {
      await run('overview lists offline devices', async () => {
        await nav.getByRole('link', { name: 'Overview', exact: true }).click();
        const box = page.locator('#ov-offline');
        await box.getByRole('link', { name: OFFLINE_DEVICE, exact: true }).waitFor({ timeout: 20000 });
        if (await box.getByRole('link', { name: DEVICE, exact: true }).count()) throw new Error(`${DEVICE} is listed offline`);
        await shot(page, 'overview-offline');
      });
    }
  } else {
    console.log('# PERCH_DEVICE is empty: device steps skipped');
  }

  if (CAMERA) {
    await run(`camera ${CAMERA} plays live`, async () => {
      await nav.getByRole('link', { name: 'Cameras', exact: true }).click();
      const video = page.getByLabel(`Live view of ${CAMERA}`, { exact: true });
      await video.waitFor();
      const handle = await video.elementHandle();
      // The stream starts at the camera's clock: measure from the first frame.
      await page.waitForFunction(v => v.readyState >= 2 && v.currentTime > 0, handle, { timeout: 20000 });
      const t0 = await handle.evaluate(v => v.currentTime);
      await page.waitForFunction(([v, t]) => v.currentTime - t > 1, [handle, t0], { timeout: 20000 });
      const size = await handle.evaluate(v => `${v.videoWidth}x${v.videoHeight}`);
      console.log(`# video ${size}, currentTime advanced past ${t0.toFixed(2)} + 1 s`);
      await shot(page, 'cameras-live');
    });
    await run(`camera ${CAMERA} page`, async () => {
      await page.getByRole('link', { name: CAMERA, exact: true }).first().click();
      await expectPath(page, `/cameras/${CAMERA}`);
      await page.getByRole('heading', { name: CAMERA, level: 1 }).waitFor();
      await page.getByRole('button', { name: 'Take snapshot' }).click();
      await page.locator('.notice.ok, .notice.error').first().waitFor({ timeout: 20000 });
      const err = await page.locator('.view .notice.error').count();
      if (err) throw new Error('taking a snapshot failed: ' + await page.locator('.view .notice.error').first().textContent());
      await page.getByRole('img', { name: new RegExp(`^Snapshot of ${CAMERA} at`) }).waitFor();
      await shot(page, 'camera-page');
    });
  } else {
    console.log('# PERCH_CAMERA is empty: camera steps skipped');
  }

  const users = page.locator('#settings-users');
  await run('viewer created in Settings', async () => {
    await nav.getByRole('link', { name: 'Settings', exact: true }).click();
    await page.getByRole('heading', { name: 'Settings', level: 1 }).waitFor();
    await users.getByLabel('Name', { exact: true }).fill(VIEWER.name);
    await users.getByLabel('Role', { exact: true }).selectOption('viewer');
    await users.getByLabel('Password', { exact: true }).fill(VIEWER.password);
    await users.getByRole('button', { name: 'Add user' }).click();
    await users.locator('tbody tr', { hasText: VIEWER.name }).waitFor();
  });

  await run('API token shown once', async () => {
    const tokens = page.locator('#settings-api-tokens');
    await tokens.getByLabel('Token name').fill('browser-test');
    await tokens.getByRole('button', { name: 'Create token' }).click();
    const secret = (await tokens.locator('output.secret').textContent()).trim();
    if (!secret.startsWith('perch_')) throw new Error(`the token shown is ${JSON.stringify(secret)}`);
    await tokens.locator('tbody tr', { hasText: 'browser-test' }).waitFor();
    await shot(page, 'settings');
  });

  if (process.env.PERCH_FORWARD) {
    await run('forwarding status shown', async () => {
      const row = page.locator('#forward-targets tbody tr', { hasText: process.env.PERCH_FORWARD });
      await row.waitFor();
      const text = await row.textContent();
      if (!/disconnected/.test(text)) throw new Error(`the target's row says ${JSON.stringify(text)}`);
    });
  }

  await run('footprint shows memory and disk writes by component', async () => {
    const sec = page.locator('#settings-footprint');
    // The series written before the browser came: the head holds them, the
    // WAL has written them (once synced), and the heap is counted.
    const head = sec.locator('tr', { hasText: 'store_head' });
    await head.waitFor();
    if (!/\d+(\.\d)? (KiB|MiB)/.test(await head.textContent())) throw new Error(`store_head says ${JSON.stringify(await head.textContent())}`);
    await sec.locator('tr', { hasText: 'unattributed' }).waitFor();
    const wal = sec.locator('tbody tr', { hasText: 'write-ahead log (every' });
    await wal.waitFor();
    if (!/^wal/.test((await wal.textContent()).trim())) throw new Error(`the WAL row says ${JSON.stringify(await wal.textContent())}`);
    const text = await sec.textContent();
    if (!/Resident memory \d/.test(text) || !/of which perch's heap \d/.test(text)) throw new Error(`the section says ${JSON.stringify(text.slice(0, 200))}`);
  });

  await run('forwarding target added, changed and deleted in Settings', async () => {
    const sec = page.locator('#settings-forwarding');
    await sec.getByLabel('Kind').selectOption('kafka');
    if (await sec.getByLabel('URL', { exact: true }).isVisible()) throw new Error('a kafka target asks for a URL');
    await sec.getByLabel('Kind').selectOption('remote_write');
    await sec.getByLabel('Name', { exact: true }).fill('lab-vm');
    // Nothing listens on the discard port: the target is down.
    await sec.getByLabel('URL', { exact: true }).fill('http://127.0.0.1:9/api/v1/write');
    await sec.getByLabel('Series selectors (one per line; empty: all)').fill('{__name__=~"env_.*"}');
    await sec.getByLabel('Priority (1 = first)').fill('2');
    await sec.getByRole('button', { name: 'Add target' }).click();
    await sec.locator('.notice.ok', { hasText: 'Target lab-vm added' }).waitFor();
    const def = sec.locator('#forward-definitions tbody tr', { hasText: 'lab-vm' });
    await def.waitFor();
    const status = sec.locator('#forward-targets tbody tr', { hasText: 'lab-vm' });
    await status.waitFor({ timeout: 15000 });
    await status.filter({ hasText: 'disconnected' }).waitFor({ timeout: 15000 });
    await sec.getByRole('button', { name: 'Edit target lab-vm' }).click();
    if (await sec.getByLabel('URL', { exact: true }).inputValue() !== 'http://127.0.0.1:9/api/v1/write') throw new Error('the edit form lost the URL');
    await sec.getByLabel('Priority (1 = first)').fill('5');
    await sec.getByRole('button', { name: 'Save target' }).click();
    await sec.locator('.notice.ok', { hasText: 'Target lab-vm saved' }).waitFor();
    await def.locator('td', { hasText: /^5$/ }).waitFor();
    const fromApi = await page.evaluate(async () => (await (await fetch('/api/v1/forward/targets')).json()).find(t => t.name === 'lab-vm'));
    if (!fromApi || fromApi.priority !== 5 || fromApi.source !== 'api') throw new Error(`the API says ${JSON.stringify(fromApi)}`);
    await shot(page, 'settings-forwarding');
    page.once('dialog', d => d.accept());
    await sec.getByRole('button', { name: 'Delete target lab-vm' }).click();
    await def.waitFor({ state: 'detached' });
  });

  await run('backup download', async () => {
    const backup = page.locator('#settings-backup');
    const downloaded = page.waitForEvent('download', { timeout: 120000 });
    await backup.getByRole('button', { name: 'Download backup' }).click();
    // The page shows an error instead if the request fails.
    const failed = backup.locator('.notice.error').waitFor({ timeout: 120000 })
      .then(async () => { throw new Error('the page says: ' + await backup.locator('.notice.error').textContent()); });
    const download = await Promise.race([downloaded, failed]);
    failed.catch(() => {});
    downloaded.catch(() => {});
    const name = download.suggestedFilename();
    const file = await download.path();
    const head = Buffer.alloc(512);
    const fd = fs.openSync(file, 'r');
    const n = fs.readSync(fd, head, 0, 512, 0);
    fs.closeSync(fd);
    const size = fs.statSync(file).size;
    // A tar archive: "ustar" at offset 257 of the first header.
    if (n < 512 || head.toString('latin1', 257, 262) !== 'ustar') throw new Error(`${name} (${size} bytes) is not a tar archive`);
    const done = await backup.locator('progress').evaluate(p => p.value === p.max);
    if (!done) throw new Error('the progress bar did not reach the end');
    console.log(`# backup ${name}: ${size} bytes`);
    await download.delete();
  });

  await run('viewer may not see Settings', async () => {
    const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const vp = watch(await ctx.newPage(), 'viewer');
    await vp.goto(BASE + '/overview');
    await expectPath(vp, '/login');
    await signIn(vp, VIEWER.name, VIEWER.password);
    await expectPath(vp, '/overview');
    // A phone: the nav opens with the Menu button.
    await vp.getByRole('button', { name: 'Menu' }).click();
    const vnav = vp.getByRole('navigation', { name: 'Main' });
    await vnav.getByRole('link', { name: 'Explorer', exact: true }).waitFor();
    if (await vnav.getByRole('link', { name: 'Settings' }).count()) throw new Error('a viewer sees the Settings link');
    if (await vp.locator('a[href="/settings"]').count()) throw new Error('a viewer has a link to /settings');
    await shot(vp, 'viewer-overview-phone');
    await vp.goto(BASE + '/settings');
    await vp.getByText('Not allowed', { exact: false }).first().waitFor();
    const status = await vp.evaluate(() => fetch('/api/v1/users', { signal: AbortSignal.timeout(10000) })
      .then(r => r.status, e => `no answer (${e.name})`));
    if (status !== 403) throw new Error(`a viewer's GET /api/v1/users answered ${status}, not 403`);
    await shot(vp, 'viewer-settings');
    await ctx.close();
  });

  if (DEVICE) {
    await run('devices on a phone', async () => {
      const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
      const vp = watch(await ctx.newPage(), 'viewer');
      await vp.goto(BASE + '/devices');
      await expectPath(vp, '/login');
      await signIn(vp, VIEWER.name, VIEWER.password);
      await expectPath(vp, '/devices');
      const row = vp.locator(`table.devices tr[data-device="${DEVICE}"]`);
      await row.locator(`.chip[data-metric="${DEVICE_METRIC}"]`).waitFor();
      if (!await row.locator('td.battery').isVisible()) throw new Error('the battery is not shown on a phone');
      await noSidewaysScroll(vp);
      await shot(vp, 'devices-phone');
      await vp.goto(BASE + devicePath(DEVICE));
      await vp.locator(`.charts .panel[data-metric="${DEVICE_METRIC}"] .chart canvas`).first().waitFor();
      await vp.waitForTimeout(500);
      await noSidewaysScroll(vp);
      await shot(vp, 'device-page-phone');
      await ctx.close();
    });
  }

  await run('metrics, explorer and search fit a 390 px screen', async () => {
    const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const vp = watch(await ctx.newPage(), 'viewer');
    await vp.goto(BASE + '/graph?' + new URLSearchParams({ q: SERIES, range: '1h' }));
    await expectPath(vp, '/login');
    await signIn(vp, VIEWER.name, VIEWER.password);
    await expectPath(vp, '/graph');
    const fits = async what => {
      await vp.waitForTimeout(400);
      const sw = await vp.evaluate(() => document.documentElement.scrollWidth);
      if (sw > 390) throw new Error(`${what} is ${sw} px wide on a 390 px screen`);
    };
    await canvasOf(vp).waitFor();
    // (the series list above the chart has loaded: the chart stays put)
    await vp.locator('aside.browser ul[aria-label="Metric names"] button').first().waitFor();
    await fits('Metrics');
    // A tap on the chart shows the values there, inside the screen.
    await vp.locator('.panel .u-over').first().tap({ position: { x: 150, y: 100 } });
    const tip = vp.locator('.panel .chart-tip').first();
    await tip.waitFor({ state: 'visible' });
    const tb = await tip.boundingBox();
    if (tb.x < 0 || tb.x + tb.width > 390) throw new Error(`the tooltip spans ${tb.x}..${tb.x + tb.width} px`);
    if (!/\d/.test(await tip.textContent())) throw new Error('the tooltip shows no value');
    await fits('Metrics with its tooltip');
    await shot(vp, 'metrics-phone');
    // The editor of an empty panel, and the series found by a word.
    await vp.goto(BASE + '/graph');
    await vp.getByLabel('Query 1 (panel 1)').waitFor();
    await vp.getByLabel('Find series').fill('lab');
    await vp.locator('aside.browser ul[aria-label="Matching series"] button').first().waitFor();
    await fits('Metrics with its editor');
    await shot(vp, 'metrics-editor-phone');
    const topic = DEVICE ? 'zigbee2mqtt/' + DEVICE : '';
    await vp.goto(BASE + '/explorer' + (topic ? '?' + new URLSearchParams({ topic }) : ''));
    await vp.getByRole('heading', { name: 'Explorer', level: 1 }).waitFor();
    if (topic) await vp.getByRole('heading', { name: topic, level: 3 }).waitFor();
    await vp.locator('ul.tree li').first().waitFor({ timeout: 10000 }).catch(() => {});
    await fits('Explorer');
    await shot(vp, 'explorer-phone');
    await vp.goto(BASE + '/search?q=*&range=24h');
    await vp.getByRole('heading', { name: 'Search', level: 1 }).waitFor();
    await vp.locator('.hit, .hits .empty, .hits .notice').first().waitFor();
    await fits('Search');
    await shot(vp, 'search-phone');
    await ctx.close();
  });

  await run('no page errors', async () => {
    for (const p of pages) if (!p.isClosed()) await p.waitForTimeout(200);
  });
}

try {
  await main();
  await browser.close();
  console.log('all browser steps passed');
} catch (e) {
  console.error(`FAIL ${step}: ${e.message}`);
  for (const p of pages) {
    if (p.isClosed()) continue;
    console.error(`  page at ${p.url()}`);
    await p.screenshot({ path: path.join(SHOTS, `failure-${step.replace(/\W+/g, '-')}-${pages.indexOf(p)}.png`), fullPage: true }).catch(() => {});
  }
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
