// /login and /onboarding: the sign-in form, and the form that creates the
// first admin on a box with no people yet.

import { api, h, field } from '../lib.js';

export default async function (view, ctx) {
  const onboarding = ctx.name === 'onboarding';
  if (onboarding) {
    // A box whose database was damaged and set aside keeps onboarding
    // closed: whoever reached it first would become its admin.
    const state = await api('/api/v1/auth/state').catch(() => null);
    if (state && state.onboarding_refused) {
      view.append(refused(state.onboarding_refused));
      return;
    }
  }
  const error = h('div', { class: 'notice error', role: 'alert', hidden: true });
  const username = h('input', { name: 'username', id: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const password = h('input', {
    name: 'password', id: 'password', type: 'password', required: true,
    autocomplete: onboarding ? 'new-password' : 'current-password',
    minLength: onboarding ? 8 : undefined,
  });
  const button = h('button', { type: 'submit', class: 'primary' }, onboarding ? 'Create admin' : 'Sign in');

  const form = h('form', { class: 'stack', novalidate: onboarding ? undefined : true },
    field('Username', username),
    field('Password', password),
    onboarding ? h('p', { class: 'muted', id: 'pw-hint' }, 'At least 8 characters.') : null,
    error,
    button);
  if (onboarding) password.setAttribute('aria-describedby', 'pw-hint');

  form.addEventListener('submit', async e => {
    e.preventDefault();
    error.hidden = true;
    if (!username.value.trim() || !password.value) {
      error.textContent = 'Enter a username and a password.';
      error.hidden = false;
      return;
    }
    button.disabled = true;
    try {
      const state = await api(onboarding ? '/api/v1/auth/onboard' : '/api/v1/auth/login', {
        method: 'POST',
        body: { username: username.value.trim(), password: password.value },
      });
      ctx.setSession(state);
      const next = ctx.query.get('next');
      ctx.navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/overview', { replace: true });
    } catch (err) {
      if (onboarding && err.status === 403 && err.body && /had accounts/.test(err.body.error || '')) {
        view.replaceChildren(refused(err.body.error));
        return;
      }
      if (onboarding && err.status === 409) {
        // Someone else created the first admin meanwhile.
        ctx.setSession({ onboarding: false, user: null, csrf: null });
        ctx.navigate('/login', { replace: true });
        return;
      }
      error.textContent = err.status === 401 ? `Sign-in failed: ${err.message}` : err.message;
      error.hidden = false;
      password.select();
      password.focus();
    } finally {
      button.disabled = false;
    }
  });

  view.append(h('div', { class: 'auth card' },
    h('h1', null, onboarding ? 'Welcome to perch' : 'Sign in to perch'),
    onboarding ? h('p', null, 'No accounts exist yet. Create the first admin to set up this box.') : null,
    form));
  username.focus();
}

// The closed onboarding: what happened and the command that reopens the box.
function refused(reason) {
  const command = (reason.match(/perch user add .*$/) || [''])[0];
  return h('div', { class: 'auth card' },
    h('h1', null, 'This box needs an admin'),
    h('p', { class: 'notice error', role: 'alert' },
      'This box had accounts, but its database was damaged and set aside, so nobody can sign in. ' +
      'For safety, the first visitor cannot become admin here.'),
    h('p', null, 'On the box itself (over SSH or at its console), create an admin, then sign in:'),
    command ? h('pre', null, h('code', null, command)) : h('p', null, reason),
    h('p', { class: 'muted' }, 'Type the password on the next line. The damaged database is kept in the data directory under quarantine/.'));
}
