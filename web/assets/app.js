// The dashboard's shell: session, router, nav, theme. Each page is a module
// under pages/ exporting `default async function (view, ctx)`; it renders
// into `view` and registers what to stop (timers, sockets) with
// ctx.cleanup(fn), which runs when the user leaves the page.

import { session, api, h, goLogin, notify } from './lib.js';

const PAGES = {
  overview: { title: 'Overview', load: () => import('./pages/overview.js') },
  explorer: { title: 'Explorer', load: () => import('./pages/explorer.js') },
  devices: { title: 'Devices', load: () => import('./pages/devices.js') },
  connect: { title: 'Connect a device', load: () => import('./pages/connect.js') },
  // The Metrics page lives at /graph (as in Prometheus): /metrics is where
  // Prometheus scrapes perch.
  graph: { title: 'Metrics', load: () => import('./pages/metrics.js') },
  alerts: { title: 'Alerts', load: () => import('./pages/alerts.js') },
  cameras: { title: 'Cameras', load: () => import('./pages/cameras.js') },
  search: { title: 'Search', load: () => import('./pages/search.js') },
  settings: { title: 'Settings', load: () => import('./pages/settings.js') },
  login: { title: 'Sign in', load: () => import('./pages/login.js'), bare: true },
  onboarding: { title: 'Create the first admin', load: () => import('./pages/login.js'), bare: true },
};

const main = document.getElementById('main');
const settingsLink = document.getElementById('nav-settings');
let current = null; // { abort: AbortController, cleanups: [] }

export async function refreshSession() {
  const s = await api('/api/v1/auth/state');
  Object.assign(session, { onboarding: !!s.onboarding, user: s.user || null, csrf: s.csrf || null });
  return session;
}

export function setSession(s) {
  Object.assign(session, { onboarding: !!s.onboarding, user: s.user || null, csrf: s.csrf || null });
  updateChrome();
}

export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  render();
}

function updateChrome() {
  const top = document.getElementById('top');
  const user = session.user;
  const path = location.pathname;
  top.hidden = !user || path === '/login' || path === '/onboarding';
  document.getElementById('who').textContent = user ? `${user.name} (${user.role})` : '';
  // Settings is for admins only: the link is absent, not just hidden, for others.
  const nav = document.getElementById('nav');
  if (user && user.role === 'admin') { settingsLink.hidden = false; nav.append(settingsLink); }
  else settingsLink.remove();
  for (const a of document.querySelectorAll('#nav a')) {
    const p = a.getAttribute('href');
    if (path === p || path.startsWith(p + '/')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

/** Where the session says this path may go instead (or null to stay). */
function redirectFor(path) {
  if (session.onboarding) return path === '/onboarding' ? null : '/onboarding';
  if (path === '/onboarding') return session.user ? '/overview' : '/login';
  if (!session.user) {
    if (path === '/login') return null;
    return '/login?next=' + encodeURIComponent(path + location.search);
  }
  if (path === '/login') {
    const next = new URLSearchParams(location.search).get('next');
    return next && next.startsWith('/') && !next.startsWith('//') ? next : '/overview';
  }
  if (path === '/') return '/overview';
  if (path === '/metrics') return '/graph' + location.search;
  return null;
}

async function render() {
  if (current) {
    current.abort.abort();
    for (const fn of current.cleanups) { try { fn(); } catch (e) { console.warn(e); } }
  }
  const ctx = { abort: new AbortController(), cleanups: [] };
  current = ctx;
  const path = location.pathname.replace(/\/+$/, '') || '/';
  const target = redirectFor(path);
  if (target) { history.replaceState(null, '', target); return render(); }

  const [, first, ...rest] = path.split('/');
  const page = PAGES[first];
  updateChrome();
  const view = h('div', { class: 'view' });
  main.replaceChildren(view);
  if (!page) {
    document.title = 'Not found · perch';
    view.append(h('h1', null, 'Not found'), h('p', null, 'No page at ', h('code', null, path), '. ',
      h('a', { href: '/overview' }, 'Go to the overview'), '.'));
    return;
  }
  document.title = `${page.title} · perch`;
  if (session.user && session.user.role === 'device' && !page.bare) {
    view.append(h('h1', null, 'Not allowed'),
      h('p', { class: 'notice error', role: 'alert' }, 'Not allowed: device accounts cannot use the dashboard.'));
    return;
  }
  try {
    const mod = await page.load();
    if (current !== ctx) return;
    await mod.default(view, {
      name: first,
      params: rest.map(decodeURIComponent),
      query: new URLSearchParams(location.search),
      signal: ctx.abort.signal,
      cleanup: fn => ctx.cleanups.push(fn),
      navigate,
      setSession,
    });
  } catch (e) {
    if (e.name === 'AbortError' || current !== ctx) return;
    console.warn(e);
    view.append(h('div', { class: 'notice error', role: 'alert' }, e.message || String(e)));
  }
}

// Same-origin links go through the router; API links, downloads and new
// tabs are left to the browser.
document.addEventListener('click', e => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/') || url.pathname.startsWith('/assets/')) return;
  e.preventDefault();
  document.getElementById('nav').classList.remove('open');
  document.getElementById('nav-toggle').setAttribute('aria-expanded', 'false');
  if (url.pathname + url.search !== location.pathname + location.search) {
    navigate(url.pathname + url.search + url.hash);
    main.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
});
window.addEventListener('popstate', render);

// Phone nav.
document.getElementById('nav-toggle').addEventListener('click', e => {
  const nav = document.getElementById('nav');
  const open = nav.classList.toggle('open');
  e.currentTarget.setAttribute('aria-expanded', String(open));
});

// Theme: automatic → light → dark → automatic.
const themeButton = document.getElementById('theme-toggle');
function showTheme() {
  const t = document.documentElement.dataset.theme || 'automatic';
  themeButton.setAttribute('aria-label', `Theme: ${t}`);
  themeButton.title = `Theme: ${t} (click to change)`;
  themeButton.textContent = t === 'light' ? '☀' : t === 'dark' ? '☾' : '◐';
}
themeButton.addEventListener('click', () => {
  const order = [undefined, 'light', 'dark'];
  const next = order[(order.indexOf(document.documentElement.dataset.theme) + 1) % order.length];
  if (next) document.documentElement.dataset.theme = next;
  else delete document.documentElement.dataset.theme;
  try {
    if (next) localStorage.setItem('perch-theme', next); else localStorage.removeItem('perch-theme');
  } catch { /* private mode */ }
  showTheme();
  window.dispatchEvent(new Event('perch-theme'));
});
showTheme();

document.getElementById('signout').addEventListener('click', async () => {
  try {
    await api('/api/v1/auth/logout', { method: 'POST' });
  } catch (e) {
    notify(e.message, 'error');
  }
  setSession({ onboarding: false, user: null, csrf: null });
  navigate('/login', { replace: true });
});

(async () => {
  try {
    await refreshSession();
  } catch (e) {
    main.replaceChildren(h('div', { class: 'notice error', role: 'alert' }, 'Cannot load the session: ' + e.message));
    if (e.status === 401) goLogin();
    return;
  }
  render();
})();
