// Signing in and out: the token opens a session whose cookie the page never
// reads; the header names who is signed in.

import { $ } from './dom.js';
import { api, errorText, showError } from './api.js';
import { modal, setFormError } from './modal.js';
import { hooks, st } from './state.js';

export async function loadSession() {
  try {
    return await api('GET', '/session');
  } catch (e) {
    if (e.status === 404) {
      // A daemon without sign-in: everyone on loopback is admin.
      return { name: 'anonymous', role: 'admin', csrf: '', auth: 'open', actions: [] };
    }
    if (e.status === 401) return null;
    throw e;
  }
}

export function showSignIn(message) {
  hooks.stop();
  $('app').hidden = true;
  $('user').hidden = true;
  $('site-tabs').hidden = true;
  $('site-select').parentElement.hidden = true;
  $('signin').hidden = false;
  setFormError($('signin-error'), message || '');
  $('signin-token').value = '';
  $('signin-token').focus();
  document.title = 'Sign in · sluice';
}

export function signedOut(message) {
  if (!$('signin').hidden) return;
  st.session = null;
  modal.close();
  showSignIn(message);
}

export async function signIn(ev) {
  ev.preventDefault();
  const token = $('signin-token').value.trim();
  if (!token) {
    setFormError($('signin-error'), 'Enter your token.');
    return;
  }
  $('signin-submit').disabled = true;
  try {
    st.session = await api('POST', '/session', { token });
    $('signin').hidden = true;
    await hooks.start();
  } catch (e) {
    setFormError($('signin-error'), e.status === 401 ? 'That token is not valid.' : errorText(e));
  } finally {
    $('signin-submit').disabled = false;
  }
}

export async function signOut() {
  try {
    await api('DELETE', '/session');
  } catch (e) {
    if (e.status !== 401) showError(e);
  }
  st.session = null;
  showSignIn('Signed out.');
}

export function renderUser() {
  const s = st.session;
  $('user').hidden = false;
  $('user-name').textContent = s.name;
  $('user-name').title = s.auth === 'open' ? 'open mode: no tokens, loopback only' : s.name;
  $('user-role').textContent = s.role;
  $('sign-out').hidden = s.auth === 'open';
}
