// Plays a newcomer's first hour in headless Chromium against a fresh perch:
// onboarding → the empty Overview's "Connect a device" → credentials made
// on that page → a device (mosquitto_pub, publishing what Tasmota
// publishes) sends with those credentials → the page says it arrived and
// what was stored → its chart, with a unit and an alias in the legend. A
// wrong password then shows up under the Overview's recent problems, and
// every page is checked for sideways scrolling at 390 px and 1440 px.
// Prints `ok <step>` per step and `# time to first chart: N s` (a figure,
// not an assertion); exits 1 with `FAIL <step>: <why>` at the first failure.
//
//   PERCH_URL        perch's HTTP address (required)
//   PERCH_MQTT_PORT  its MQTT port (required)
//   SCREENSHOT_DIR   where screenshots go (default test-artifacts/newcomer)
//   CHROMIUM         the browser (default /usr/bin/chromium)

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const BASE = (process.env.PERCH_URL || '').replace(/\/+$/, '');
const MQTT_PORT = process.env.PERCH_MQTT_PORT || '';
const SHOTS = process.env.SCREENSHOT_DIR || 'test-artifacts/newcomer';
const ADMIN = { name: 'admin', password: 'correct horse battery' };
const DEVICE_USER = 'kitchen';
const TOPIC = `tele/${DEVICE_USER}/SENSOR`;

if (!BASE || !MQTT_PORT) {
  console.error('FAIL setup: set PERCH_URL and PERCH_MQTT_PORT');
  process.exit(2);
}
fs.mkdirSync(SHOTS, { recursive: true });

let step = 'launch';
let browser = null;
let page = null;
const problems = [];

function watch(p) {
  p.on('pageerror', e => problems.push(`uncaught ${e.name}: ${e.message} (at ${p.url()})`));
  p.on('console', m => {
    if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) problems.push(`console error: ${m.text()} (at ${p.url()})`);
  });
  p.setDefaultTimeout(15000);
  return p;
}

async function run(name, fn) {
  step = name;
  await fn();
  if (problems.length) throw new Error('errors in the page:\n  ' + problems.join('\n  '));
  console.log(`ok ${name}`);
}

async function shot(name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

function expectPath(p) {
  return page.waitForURL(u => new URL(u).pathname === p, { timeout: 15000 });
}

/** A DS18B20 reading as Tasmota publishes it on tele/<topic>/SENSOR
 * (tasmota/docs docs/DS18x20.md, line 69: the single-sensor form), with
 * the device's clock (local time, no zone) set to now. */
function tasmotaSensor(temperature) {
  const time = new Date().toISOString().slice(0, 19);
  return JSON.stringify({ Time: time, DS18B20: { Id: '030597946B04', Temperature: temperature }, TempUnit: 'C' });
}

function mosquittoPub(user, password, topic, message) {
  return execFileSync('mosquitto_pub', ['-h', '127.0.0.1', '-p', MQTT_PORT, '-u', user, '-P', password,
    '-i', `${user}-device`, '-q', '1', '-t', topic, '-m', message], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Fails if the page scrolls sideways. */
async function fits(where) {
  const [sw, w] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  if (sw > w + 1) {
    // Name the widest culprit, so the failure says where to look.
    const culprit = await page.evaluate(width => {
      let worst = null;
      for (const el of document.querySelectorAll('main *')) {
        const r = el.getBoundingClientRect();
        if (r.right > width + 1 && (!worst || r.width < worst.w)) worst = { w: r.width, tag: el.tagName.toLowerCase(), cls: el.className, id: el.id, right: Math.round(r.right) };
      }
      return worst;
    }, w);
    throw new Error(`${where}: the page is ${sw} px wide on a ${w} px screen (e.g. <${culprit?.tag} id="${culprit?.id}" class="${culprit?.cls}"> reaches ${culprit?.right} px)`);
  }
}

async function main() {
  const started = Date.now();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = watch(await context.newPage());

  await run('onboarding on a fresh box', async () => {
    await page.goto(BASE + '/');
    await expectPath('/onboarding');
    // The first page anyone sees fits a phone too.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByLabel('Username', { exact: true }).waitFor();
    await fits('/onboarding at 390 px');
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.getByLabel('Username', { exact: true }).fill(ADMIN.name);
    await page.getByLabel('Password', { exact: true }).fill(ADMIN.password);
    await page.getByRole('button', { name: 'Create admin' }).click();
    await expectPath('/overview');
  });

  await run('the empty overview leads to Connect a device', async () => {
    const link = page.locator('main a[href="/connect"]').first();
    await link.waitFor();
    await shot('overview-empty');
    await link.click();
    await expectPath('/connect');
    await page.getByRole('heading', { name: 'Connect a device', level: 1 }).waitFor();
  });

  await run('the page says where the broker is', async () => {
    const ports = await page.locator('#connect-ports').textContent();
    if (!ports.includes(MQTT_PORT)) throw new Error(`the MQTT port ${MQTT_PORT} is not shown: ${ports}`);
    if (!/\.local/.test(ports)) throw new Error(`no <hostname>.local shown: ${ports}`);
    const hosts = await page.locator('#connect-host option').allTextContents();
    if (!hosts.length) throw new Error('no address to choose');
    // This test's perch listens on 127.0.0.1 only: the page must say that
    // no device on the LAN can reach it.
    await page.locator('#connect-loopback').waitFor();
  });

  let password = '';
  await run('credentials made on the page', async () => {
    await page.getByLabel('Device account name').fill(DEVICE_USER);
    password = await page.locator('#connect-password').inputValue();
    if (password.length < 12) throw new Error(`the generated password is ${JSON.stringify(password)}`);
    // A password Tasmota's Backlog would split is refused before it is made.
    await page.locator('#connect-password').fill('half;other');
    await page.getByRole('button', { name: 'Create credentials' }).click();
    const refusal = await page.locator('#connect-creds-msg [role="alert"]').textContent();
    if (!refusal.includes('";"')) throw new Error(`no refusal naming ";": ${refusal}`);
    await page.locator('#connect-password').fill(password);
    await page.getByRole('button', { name: 'Create credentials' }).click();
    await page.locator('#connect-creds-msg .notice.ok').waitFor();
    const cmd = await page.locator('#setup-mosquitto').textContent();
    for (const part of [`-p ${MQTT_PORT}`, `-u ${DEVICE_USER} `, `-P ${password} `]) {
      if (!cmd.includes(part)) throw new Error(`the mosquitto_pub line lacks ${part}: ${cmd}`);
    }
  });

  await run('every firmware guide is filled in', async () => {
    const expect = {
      Tasmota: [`MqttUser ${DEVICE_USER}`, `MqttPassword ${password}`, `MqttPort ${MQTT_PORT}`, 'Backlog MqttHost '],
      ESPHome: ['mqtt:', `username: "${DEVICE_USER}"`, `password: "${password}"`],
      zigbee2mqtt: ['base_topic: zigbee2mqtt', `user: "${DEVICE_USER}"`, `:${MQTT_PORT}"`],
      Shelly: [DEVICE_USER, password, `:${MQTT_PORT}`],
      'Home Assistant': [DEVICE_USER, password, MQTT_PORT],
      Telegraf: ['[[outputs.mqtt]]', `username = "${DEVICE_USER}"`, '[[outputs.influxdb_v2]]'],
    };
    for (const [name, parts] of Object.entries(expect)) {
      await page.getByRole('group', { name: 'Firmware' }).getByRole('button', { name, exact: true }).click();
      const text = await page.locator('#connect-guide').textContent();
      for (const part of parts) if (!text.includes(part)) throw new Error(`${name}: no ${JSON.stringify(part)} in ${text}`);
    }
    await page.getByRole('group', { name: 'Firmware' }).getByRole('button', { name: 'mosquitto_pub', exact: true }).click();
    await page.locator('#connect-wait').getByText(`Waiting for a device to connect as ${DEVICE_USER}`).waitFor();
    await shot('connect-waiting');
  });

  await run('the page says when the device arrived and what was stored', async () => {
    mosquittoPub(DEVICE_USER, password, TOPIC, tasmotaSensor(21.5));
    const first = page.locator('#connect-first');
    await first.waitFor({ timeout: 20000 });
    const text = await first.textContent();
    if (!text.includes(TOPIC)) throw new Error(`the first message's topic is not shown: ${text}`);
    if (!/Stored 1 sample/.test(text)) throw new Error(`not "Stored 1 sample": ${text}`);
    if (!text.includes(`temperature{device="${DEVICE_USER}"`)) throw new Error(`the stored series is not named: ${text}`);
    const connected = await page.locator('#connect-connected').textContent();
    if (!connected.includes('127.0.0.1') || !connected.includes(`${DEVICE_USER}-device`)) throw new Error(`connection facts: ${connected}`);
    await shot('connect-arrived');
    // A few more readings, for a line.
    for (const t of [21.75, 22, 22.25]) {
      await page.waitForTimeout(1100);
      mosquittoPub(DEVICE_USER, password, TOPIC, tasmotaSensor(t));
    }
  });

  await run('its chart, with the unit and an alias in the legend', async () => {
    await page.locator('#connect-first a[href^="/graph"]').first().click();
    await expectPath('/graph');
    await page.locator('.panel .chart canvas').first().waitFor();
    console.log(`# time to first chart: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const axis = (await page.locator('.panel .axis-unit').first().textContent()).trim();
    if (axis !== '°C') throw new Error(`the axis unit is ${JSON.stringify(axis)}, not °C`);
    await setAlias(page, '{{device}} ({{sensor}})');
    const alias = `${DEVICE_USER} (DS18B20)`;
    await page.waitForFunction(name => [...document.querySelectorAll('table.legend tbody button')].some(b => b.textContent.trim() === name), alias);
    if (new URL(page.url()).searchParams.get('legend') !== '{{device}} ({{sensor}})') throw new Error(`the alias is not kept in the URL: ${page.url()}`);
    // The readings after the first arrive within the auto-refresh (10 s).
    await page.waitForFunction(() => (document.querySelector('table.legend td.last')?.textContent || '').trim() === '22.25 °C', null, { timeout: 30000 })
      .catch(() => {});
    const last = (await page.locator('table.legend td.last').first().textContent()).trim();
    if (last !== '22.25 °C') throw new Error(`the legend's last value is ${JSON.stringify(last)}, not 22.25 °C`);
    await shot('first-chart');
  });

  await run('a refused MQTT login shows under recent problems', async () => {
    let refused = false;
    try { mosquittoPub(DEVICE_USER, 'not-the-password', TOPIC, tasmotaSensor(1)); } catch { refused = true; }
    if (!refused) throw new Error('mosquitto_pub with a wrong password succeeded');
    await page.goto(BASE + '/overview');
    const main = page.locator('main');
    await page.waitForFunction(user => {
      const t = document.querySelector('main').textContent;
      return t.includes(user) && t.includes('127.0.0.1');
    }, DEVICE_USER, { timeout: 20000 });
    await main.getByText(/Recent problems/i).first().waitFor();
    await shot('overview-problem');
  });

  await run('the Alerts page lists the built-in rules', async () => {
    await page.goto(BASE + '/alerts');
    await page.locator('main h1', { hasText: 'Alerts' }).waitFor();
    await page.locator('section.rule-group[data-group="perch"] tr[data-rule="DeviceOffline"]').waitFor({ timeout: 20000 });
    const query = (await page.locator('tr[data-rule="DeviceOffline"] td.query').textContent()).trim();
    if (query !== 'perch_device_up == 0') throw new Error(`DeviceOffline's query reads ${JSON.stringify(query)}`);
    await page.getByText(/Nothing is firing or pending|firing, \d+ pending/).first().waitFor();
  });

  await run('a firing alert shows on the Alerts page and the Overview', async () => {
    // A rule file through the API (as an admin with Basic auth): the
    // device's temperature above a threshold it is over, firing at once.
    const rules = 'groups:\n  - name: newcomer\n    interval: 1s\n    rules:\n' +
      '      - alert: WarmRoom\n        expr: temperature > 20\n' +
      "        annotations:\n          summary: 'It is {{ $value }} °C'\n";
    const r = await fetch(BASE + '/api/v1/rules/files/newcomer', {
      method: 'PUT', body: rules,
      headers: { Authorization: 'Basic ' + Buffer.from(`${ADMIN.name}:${ADMIN.password}`).toString('base64') },
    });
    if (r.status !== 200) throw new Error(`PUT rule file: ${r.status} ${await r.text()}`);
    await page.goto(BASE + '/alerts');
    await page.locator('tr[data-alert="WarmRoom"][data-state="firing"]').waitFor({ timeout: 20000 });
    // Silenced for 2 hours from its row, listed, then expired.
    await page.locator('tr[data-alert="WarmRoom"]').getByRole('button', { name: 'Silence 2 h' }).click();
    const silenceRow = page.locator('tr[data-silence]').filter({ hasText: 'alertname=WarmRoom' });
    await silenceRow.waitFor({ timeout: 15000 });
    await silenceRow.getByRole('button', { name: 'Expire' }).click();
    await silenceRow.waitFor({ state: 'detached', timeout: 15000 });
    // The history lists when it fired (from the ALERTS series).
    await page.goto(BASE + '/alerts');
    await page.locator('table.history tr[data-history-alert="WarmRoom"][data-state="firing"]').waitFor({ timeout: 20000 });
    // The rule's preview over the last 24 h: it would have fired, the
    // compared side charted with its threshold, where it fired shaded.
    await page.locator('tr[data-rule="WarmRoom"]').getByRole('button', { name: 'Preview' }).click();
    const said = page.locator('.rule-preview .preview-summary');
    await said.waitFor({ timeout: 30000 });
    const saidText = await said.textContent();
    if (!/would have fired [1-9]/.test(saidText) || !saidText.includes('threshold > 20')) throw new Error(`the preview says ${JSON.stringify(saidText)}`);
    await page.locator('.rule-preview .chart-bands li.band-firing').first().waitFor();
    await shot('rule-preview');
    // A new rule from the editor, saved as a rule file, is evaluated.
    await page.getByLabel('Name').fill('HotRoom');
    await page.getByLabel('Expression').fill('temperature > 30');
    await page.getByRole('button', { name: 'Preview' }).first().click();
    await page.getByText(/would not have fired/).waitFor({ timeout: 30000 });
    await page.getByRole('button', { name: 'Save as rule file' }).click();
    await page.locator('section.rule-group[data-group="HotRoom"] tr[data-rule="HotRoom"]').waitFor({ timeout: 20000 });
    // The Metrics chart of the device's temperature is shaded where it fired.
    await page.goto(BASE + '/graph?' + new URLSearchParams({ q: 'temperature', from: 'now-15m', to: 'now' }));
    const band = page.locator('.chart-bands li.band-firing', { hasText: 'WarmRoom' }).first();
    await band.waitFor({ timeout: 20000 });
    await shot('chart-alert-band');
    await page.goto(BASE + '/overview');
    const item = page.locator('#ov-firing li[data-alert="WarmRoom"]');
    await item.waitFor({ timeout: 20000 });
    const text = await item.textContent();
    if (!/It is 22\.25 °C/.test(text)) throw new Error(`the Overview says ${JSON.stringify(text)}`);
    await shot('overview-firing');
  });

  await run('every page fits a phone and a desktop', async () => {
    const pages = ['/overview', '/explorer', '/devices', `/devices/${DEVICE_USER}`, '/connect', '/alerts',
      '/graph?' + new URLSearchParams({ q: 'temperature', from: 'now-15m', to: 'now' }), '/cameras', '/search?q=DS18B20', '/settings'];
    for (const [width, height] of [[390, 844], [1440, 900]]) {
      await page.setViewportSize({ width, height });
      for (const p of pages) {
        await page.goto(BASE + p);
        await page.locator('main h1').first().waitFor();
        await page.waitForTimeout(800); // the page's first answers
        await fits(`${p} at ${width} px`);
        await shot(`${width === 390 ? 'phone' : 'desktop'}${p.split('?')[0].replace(/\//g, '-')}`);
      }
    }
  });

  await browser.close();
}

/** Sets the legend template of the first query (Grafana's "Legend"). */
async function setAlias(p, template) {
  await p.getByRole('button', { name: 'Edit' }).first().click();
  await p.getByLabel('Legend (query 1, panel 1)').fill(template);
  await p.getByRole('button', { name: 'Run' }).click();
}

main().catch(async e => {
  console.log(`FAIL ${step}: ${e.message.split('\n').join('\n  ')}`);
  try { if (page) await shot('failure'); } catch { /* the browser may be gone */ }
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
});
