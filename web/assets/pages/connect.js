// Connect a device: where perch is (its LAN addresses, <hostname>.local,
// the broker's ports: GET /api/v1/connect), credentials for the device
// (admins: a device user limited to topic filters, or an API token for
// Telegraf's InfluxDB output), copyable set-up for the firmware people use,
// and a wait for the first message sent with those credentials
// (GET /api/v1/connect/arrivals/{user}, every 2 s): when it connected, from
// where, and what its first message stored.

import { api, h, field, fmtTime, fmtAgo, isAdmin, every, showError, notify, copyText } from '../lib.js';

const POLL_MS = 2000;

/** What each firmware needs, filled with the chosen host and credentials.
 * Formats from each project's own documentation (Tasmota's console
 * commands, ESPHome's `mqtt:` component, zigbee2mqtt's configuration.yaml,
 * Shelly's MQTT settings page, Home Assistant's MQTT integration,
 * Telegraf's outputs.mqtt and outputs.influxdb_v2). */
const GUIDES = [
  {
    id: 'mosquitto', name: 'mosquitto_pub',
    intro: 'From any machine with the Mosquitto clients (Debian: apt install mosquitto-clients):',
    text: c => `mosquitto_pub -h ${shell(c.host)} -p ${c.port} -u ${shell(c.user)} -P ${shell(c.password)} -t 'home/kitchen/temperature' -m 21.5`,
  },
  {
    id: 'tasmota', name: 'Tasmota',
    intro: 'In the device\'s web UI open Tools → Console and enter this line (the device restarts and then reports every TelePeriod, 300 s by default):',
    text: c => `Backlog MqttHost ${c.host}; MqttPort ${c.port}; MqttUser ${c.user}; MqttPassword ${c.password}; Topic ${c.slug}`,
  },
  {
    id: 'esphome', name: 'ESPHome',
    intro: 'Add to the device\'s YAML and install it (the `mqtt:` component; remove `api:` if Home Assistant should not talk to it directly):',
    text: c => `mqtt:\n  broker: ${yaml(c.host)}\n  port: ${c.port}\n  username: ${yaml(c.user)}\n  password: ${yaml(c.password)}`,
  },
  {
    id: 'zigbee2mqtt', name: 'zigbee2mqtt',
    intro: 'In zigbee2mqtt\'s configuration.yaml (data/configuration.yaml), then restart zigbee2mqtt:',
    text: c => `mqtt:\n  base_topic: zigbee2mqtt\n  server: ${yaml(`mqtt://${c.hostPort}`)}\n  user: ${yaml(c.user)}\n  password: ${yaml(c.password)}`,
  },
  {
    id: 'shelly', name: 'Shelly',
    intro: 'In the Shelly\'s web UI (Gen2 and later: Settings → MQTT; Gen1: Internet & Security → Advanced – Developer Settings), enable MQTT and fill in:',
    fields: c => [
      ['Server', c.hostPort],
      ['Username', c.user],
      ['Password', c.password],
      ['Client ID / prefix (optional)', c.slug],
      ['Gen2+: Generic status update over MQTT', 'on'],
      ['Gen2+: RPC status notifications over MQTT', 'on'],
    ],
  },
  {
    id: 'homeassistant', name: 'Home Assistant',
    intro: 'In Home Assistant: Settings → Devices & services → Add integration → MQTT, then:',
    fields: c => [
      ['Broker', c.host],
      ['Port', String(c.port)],
      ['Username', c.user],
      ['Password', c.password],
    ],
    after: 'Home Assistant then finds what announces itself on perch\'s broker with MQTT discovery: ESPHome, and zigbee2mqtt with homeassistant: {enabled: true} (Tasmota needs Home Assistant\'s Tasmota integration; Shelly has its own). perch reads what all of them publish.',
  },
  {
    id: 'telegraf', name: 'Telegraf',
    intro: 'In telegraf.conf, over MQTT (InfluxDB line protocol, read as series by perch):',
    text: c => `[[outputs.mqtt]]\n  servers = [${toml(`tcp://${c.hostPort}`)}]\n  topic = "telegraf/{{ .Hostname }}/{{ .PluginName }}"\n  username = ${toml(c.user)}\n  password = ${toml(c.password)}\n  data_format = "influx"`,
    more: c => ({
      intro: 'Or straight to perch\'s InfluxDB v2 write API, with an API token (make one with "Create a token" above):',
      text: `[[outputs.influxdb_v2]]\n  urls = [${toml(c.httpUrl)}]\n  token = ${toml(c.token || '<token>')}\n  organization = "perch"\n  bucket = "telegraf"`,
    }),
  },
];

export default async function (view, ctx) {
  const info = await api('/api/v1/connect', { signal: ctx.signal });
  const admin = isAdmin();
  const state = {
    host: null, user: '', password: '', token: '', slug: 'my_device',
  };

  view.append(h('h1', null, 'Connect a device'),
    h('p', { class: 'lede' }, 'Point a device\'s MQTT settings at perch: pick the address it can reach, make credentials for it, copy the set-up for its firmware. This page then waits for its first message and shows what perch stored.'));

  // ---- where perch is
  const hosts = [];
  // location.hostname keeps an IPv6 address's brackets.
  const browserHost = location.hostname.replace(/^\[(.*)\]$/, '$1');
  for (const a of info.addresses) hosts.push({ value: a, why: 'LAN address' });
  hosts.push({ value: info.mdns_name, why: 'mDNS name (phones, ESPHome, Home Assistant; some firmware cannot resolve .local)' });
  // The address this browser reached perch by works from the LAN: first.
  if (!['localhost', '127.0.0.1', '::1'].includes(browserHost)) {
    const known = hosts.findIndex(x => x.value === browserHost);
    const entry = known >= 0 ? hosts.splice(known, 1)[0] : { value: browserHost, why: 'the address this browser uses' };
    hosts.unshift(entry);
  }
  state.host = hosts[0].value;
  const hostSelect = h('select', { id: 'connect-host' }, hosts.map(x => h('option', { value: x.value }, `${x.value} — ${x.why}`)));
  const httpPort = location.port ? Number(location.port) : info.http_port;
  const ports = [
    ['MQTT', info.mqtt.tcp ? `${info.mqtt.tcp} (TCP)` : 'off'],
    ['MQTT over TLS', info.mqtt.tls ? `${info.mqtt.tls}` : 'off (set mqtt.tls_cert and mqtt.tls_key)'],
    ['MQTT over WebSocket', info.mqtt.websocket ? `port ${info.mqtt.websocket}, path ${info.mqtt.websocket_path}` : 'off'],
    ['HTTP (InfluxDB, OpenTSDB, Prometheus APIs, this UI)', String(httpPort)],
  ];
  view.append(h('section', { class: 'card', 'aria-labelledby': 'where-h' },
    h('h2', { id: 'where-h' }, '1. Where perch is'),
    h('dl', { class: 'kv', id: 'connect-ports' },
      h('dt', null, 'Host name'), h('dd', { class: 'mono' }, `${info.mdns_name}`),
      h('dt', null, 'Addresses'), h('dd', { class: 'mono' }, info.addresses.join(', ') || 'none found'),
      ports.map(([k, v]) => [h('dt', null, k), h('dd', { class: 'mono' }, v)])),
    info.mqtt.loopback_only ? h('p', { class: 'notice warn', id: 'connect-loopback' }, 'The broker listens on a loopback address only (mqtt.listen): devices on the LAN cannot reach it. Set mqtt.listen = "0.0.0.0:1883" in the configuration to let them.') : null,
    info.allow_anonymous ? h('p', { class: 'notice warn' }, 'Anonymous clients may connect (mqtt.allow_anonymous): devices work without credentials, with full access.') : null,
    field('Address devices use', hostSelect)));

  // ---- credentials
  const credsBox = h('div', { id: 'connect-creds' });
  const credsSection = h('section', { class: 'card', 'aria-labelledby': 'creds-h' },
    h('h2', { id: 'creds-h' }, '2. Credentials for the device'), credsBox);
  view.append(credsSection);

  // ---- set-up
  const guideSelect = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Firmware' });
  const guideBox = h('div', { id: 'connect-guide', 'aria-live': 'polite' });
  let guide = GUIDES.find(g => g.id === ctx.query.get('for')) || GUIDES[0];
  view.append(h('section', { class: 'card', 'aria-labelledby': 'setup-h' },
    h('h2', { id: 'setup-h' }, '3. Set up the device'), guideSelect, guideBox));

  // ---- waiting
  // Announced when what is known changes, not at every poll; the seconds
  // waited tick outside the live region.
  const waitBox = h('div', { id: 'connect-wait', 'aria-live': 'polite' });
  const waited = h('p', { class: 'muted', id: 'connect-waited', hidden: true });
  view.append(h('section', { class: 'card', 'aria-labelledby': 'wait-h' },
    h('h2', { id: 'wait-h' }, '4. First message'), waitBox, waited));

  const values = () => ({
    host: state.host,
    hostPort: `${hostForUrl(state.host)}:${info.mqtt.tcp || 1883}`,
    port: info.mqtt.tcp || 1883,
    user: state.user || '<user>',
    password: state.password || '<password>',
    slug: state.slug,
    token: state.token,
    httpUrl: `${location.protocol}//${hostForUrl(state.host)}:${httpPort}`,
  });

  function renderGuides() {
    guideSelect.replaceChildren(...GUIDES.map(g => h('button', {
      type: 'button', id: 'guide-' + g.id, 'aria-pressed': String(g === guide), 'aria-controls': 'connect-guide',
      onclick: () => { guide = g; renderGuides(); },
    }, g.name)));
    const c = values();
    const parts = [h('p', null, guide.intro)];
    if (guide.text) parts.push(copyable(guide.text(c), 'setup-' + guide.id, `the ${guide.name} set-up`));
    if (guide.fields) {
      parts.push(h('dl', { class: 'kv' }, guide.fields(c).map(([k, v]) => [h('dt', null, k), h('dd', null, copyable(v, null, k, true))])));
    }
    if (guide.after) parts.push(h('p', { class: 'muted' }, guide.after));
    if (guide.more) {
      const m = guide.more(c);
      parts.push(h('p', null, m.intro), copyable(m.text, 'setup-' + guide.id + '-http', `the ${guide.name} HTTP set-up`));
    }
    if (!state.user) parts.push(h('p', { class: 'muted' }, 'The placeholders are filled in once credentials are made or chosen above.'));
    guideBox.replaceChildren(...parts);
  }

  hostSelect.addEventListener('change', () => { state.host = hostSelect.value; renderGuides(); });

  // Waiting for the first message of state.user. Each watch has its own
  // generation: an answer for an earlier user is dropped.
  let stopPolling = null;
  let generation = 0;
  function watch(user) {
    if (stopPolling) stopPolling();
    stopPolling = null;
    const mine = ++generation;
    waited.hidden = true;
    if (!user) {
      waitBox.replaceChildren(h('p', { class: 'muted' }, 'Make or choose credentials above; this page then waits for the device.'));
      return;
    }
    if (!admin) {
      waitBox.replaceChildren(h('p', { class: 'muted' }, 'An admin\'s view of this page shows when the device connects.'));
      return;
    }
    const started = Date.now();
    let shownKey = null;
    const tick = async () => {
      let a;
      try {
        a = await api('/api/v1/connect/arrivals/' + encodeURIComponent(user), { signal: ctx.signal });
      } catch (e) {
        if (e.name !== 'AbortError' && mine === generation) showError(waitBox, e);
        return;
      }
      if (mine !== generation) return;
      const key = JSON.stringify([a.connected && a.connected.time_ms, a.first_message && a.first_message.time_ms, a.messages]);
      if (key !== shownKey) {
        shownKey = key;
        waitBox.replaceChildren(...arrivalView(user, a));
      }
      waited.hidden = !!a.first_message;
      waited.textContent = `Waiting for ${Math.round((Date.now() - started) / 1000)} s.`;
      if (a.first_message && stopPolling) { stopPolling(); stopPolling = null; }
    };
    stopPolling = every(POLL_MS, tick);
    ctx.cleanup(() => stopPolling && stopPolling());
  }

  if (admin) renderCredentials(); else {
    credsBox.append(h('p', { class: 'muted' }, 'Only admins make credentials: ask one for a device account, or for an API token for HTTP writers.'));
  }

  function renderCredentials() {
    const name = h('input', { id: 'connect-user', required: true, autocomplete: 'off', spellcheck: false, placeholder: 'kitchen-plug', pattern: '[A-Za-z0-9._\\-]+' });
    const password = h('input', { id: 'connect-password', required: true, autocomplete: 'new-password', spellcheck: false, value: newPassword() });
    const topics = h('textarea', { id: 'connect-topics', rows: 2, spellcheck: false }, '#');
    const msg = h('div', { id: 'connect-creds-msg' });
    const form = h('form', { class: 'stack', id: 'connect-form' },
      field('Device account name', name),
      field('Password (generated; change it if you like)', password),
      field('Topics it may use (one MQTT filter per line; # is every topic)', topics),
      h('div', { class: 'row' },
        h('button', { type: 'submit', class: 'primary', id: 'connect-create' }, 'Create credentials'),
        h('button', { type: 'button', id: 'connect-token' }, 'Create a token (Telegraf over HTTP)')),
      msg);
    form.addEventListener('submit', async e => {
      e.preventDefault();
      const bad = passwordProblem(password.value);
      if (bad) {
        msg.replaceChildren(h('p', { class: 'notice error', role: 'alert' }, bad));
        password.focus();
        return;
      }
      const body = {
        name: name.value.trim(), role: 'device', password: password.value,
        topics: topics.value.split(/\n+/).map(s => s.trim()).filter(Boolean),
      };
      try {
        await api('/api/v1/users', { method: 'POST', body });
      } catch (err) {
        showError(msg, err);
        return;
      }
      Object.assign(state, { user: body.name, password: body.password, slug: slugOf(body.name) });
      msg.replaceChildren(h('p', { class: 'notice ok', role: 'status' },
        `Device account ${body.name} created. Its password is in the set-up below; perch does not show it again after you leave this page.`));
      renderGuides();
      watch(body.name);
    });
    form.querySelector('#connect-token').addEventListener('click', async () => {
      const tokenName = (name.value.trim() || 'telegraf') + '-token';
      try {
        const t = await api('/api/v1/tokens', { method: 'POST', body: { name: tokenName, role: 'device' } });
        state.token = t.token;
        msg.replaceChildren(h('p', { class: 'notice ok', role: 'status' }, `Token ${t.name} (device) created; it is in the Telegraf set-up below, shown only while this page is open.`));
        guide = GUIDES.find(g => g.id === 'telegraf');
        renderGuides();
      } catch (err) {
        showError(msg, err);
      }
    });
    // Or wait for an account that already exists.
    const existing = h('input', { id: 'connect-watch-user', autocomplete: 'off', spellcheck: false, placeholder: 'sensor1' });
    const watchForm = h('form', { class: 'row', id: 'connect-watch' },
      field('…or wait for an existing account', existing),
      h('button', { type: 'submit' }, 'Wait for it'));
    watchForm.addEventListener('submit', e => {
      e.preventDefault();
      const u = existing.value.trim();
      if (!u) return;
      Object.assign(state, { user: u, password: '', slug: slugOf(u) });
      renderGuides();
      watch(u);
    });
    credsBox.append(form, watchForm);
  }

  renderGuides();
  watch('');
}

/** What the device did, in words. */
function arrivalView(user, a) {
  const out = [];
  if (!a.connected) {
    out.push(h('p', { class: 'waiting' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }),
      `Waiting for a device to connect as ${user}…`));
    out.push(h('p', { class: 'muted' }, 'Nothing yet? Check the address and port from the device\'s network, the user name and password; refused logins appear under Recent problems on the ',
      h('a', { href: '/overview' }, 'Overview'), '.'));
    return out;
  }
  const c = a.connected;
  out.push(h('p', { class: 'notice ok', id: 'connect-connected' },
    `Connected ${fmtAgo(c.time_ms)} (${fmtTime(c.time_ms)}) from ${c.address} as client `, h('code', null, c.client_id), ` over ${c.via === 'ws' ? 'WebSocket' : 'TCP'}.`));
  const m = a.first_message;
  if (!m) {
    out.push(h('p', { class: 'waiting' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Waiting for its first message…'));
    return out;
  }
  const stored = m.outcome === 'stored';
  out.push(h('div', { class: 'notice ' + (stored ? 'ok' : 'warn'), id: 'connect-first' },
    h('p', null, `First message ${fmtAgo(m.time_ms)} (${fmtTime(m.time_ms)}) on `,
      h('a', { href: '/explorer?topic=' + encodeURIComponent(m.topic) }, h('code', null, m.topic)), ': ',
      m.encoding === 'base64' ? h('span', null, h('code', { class: 'payload' }, m.payload), ' (binary, base64)') : h('code', { class: 'payload' }, m.payload)),
    stored
      ? h('p', null, `Stored ${m.samples} sample${m.samples === 1 ? '' : 's'} in:`)
      : h('p', null, `Stored nothing: ${m.note || (m.outcome === 'unparsed' ? 'the payload is in no format perch reads' : 'no numbers in it')}. The Explorer shows how each message on the topic was read.`),
    stored ? h('ul', { class: 'series-list' }, m.series.map(s => h('li', null,
      h('a', { href: '/graph?' + new URLSearchParams({ q: s, from: 'now-15m', to: 'now' }) }, h('code', null, s))))) : null));
  if (a.messages > 1) out.push(h('p', { class: 'muted' }, `${a.messages} messages so far, the last ${fmtAgo(a.last_message_ms)}.`));
  return out;
}

/** Text with a Copy button named after `what`. `inline` for a short
 * value in a list. */
function copyable(text, id, what, inline = false) {
  const code = inline ? h('code', { id }, text) : h('pre', { id, class: 'snippet', tabindex: 0 }, h('code', null, text));
  const button = h('button', { type: 'button', class: 'copy', 'aria-label': `Copy ${what}` }, 'Copy');
  button.addEventListener('click', async () => {
    if (await copyText(text)) notify(`Copied ${what}.`);
    else notify(`Could not copy ${what}: select it and copy it by hand.`, 'error');
  });
  return h('div', { class: inline ? 'copyable inline' : 'copyable' }, code, button);
}

function newPassword() {
  const alphabet = 'abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  const bytes = new Uint8Array(20);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, b => alphabet[b % alphabet.length]).join('');
}

/** Why a password cannot be pasted into every firmware's settings as is,
 * or null: Tasmota's Backlog splits at `;`, and spaces, quotes and
 * backslashes need escaping that web forms and consoles do differently. */
function passwordProblem(p) {
  if (p.length < 8) return 'The password needs at least 8 characters.';
  if (p.length > 128) return 'The password may have at most 128 characters.';
  const bad = [...new Set(p.match(/[^A-Za-z0-9!#$%&()*+,\-./:<=>?@^_{|}~[\]]/g) || [])];
  if (bad.length) return `The password cannot hold ${bad.map(c => JSON.stringify(c)).join(', ')}: device firmware (Tasmota's console, YAML, shell lines) would read it differently. Letters, digits and !#$%&()*+,-./:<=>?@[]^_{|}~ work everywhere.`;
  return null;
}

/** A word for a shell line: single-quoted unless plainly safe. */
function shell(s) {
  return /^[A-Za-z0-9._:@%+=,/-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

/** A YAML scalar: always double-quoted (user names such as `on` or `no`
 * would otherwise be booleans). */
function yaml(s) {
  return JSON.stringify(s);
}

/** A TOML basic string (JSON's escapes are valid TOML ones for these). */
function toml(s) {
  return JSON.stringify(s);
}

/** A Tasmota topic / Shelly prefix from an account name. */
function slugOf(name) {
  return name.toLowerCase().replace(/[^a-z0-9_]+/g, '_').replace(/^_+|_+$/g, '') || 'my_device';
}

function hostForUrl(host) {
  return host.includes(':') ? `[${host}]` : host;
}
