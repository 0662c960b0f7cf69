// sluice dashboard: plain JavaScript modules, no build step, nothing loaded
// from elsewhere. Every text that comes from the server goes into the page
// as a text node (never as HTML). Data is polled; the site log is streamed.
// This module starts the page and polls; each view is a module of its own.

import { $ } from './dom.js';
import { api, errorText, showError, sitePath } from './api.js';
import { renderAudit } from './audit.js';
import { renderCharts } from './charts.js';
import { renderEndpoints } from './endpoints.js';
import { renderErrors } from './errors.js';
import { renderIntegrations } from './integrations.js';
import { closeLog } from './log.js';
import { closedModal, modal } from './modal.js';
import { banner } from './notice.js';
import { loadSession, renderUser, showSignIn, signedOut, signIn, signOut } from './session.js';
import { reloadSite, renderNodes, renderSite, renderSites, selectSite, startSite, stopSite } from './sites.js';
import { hooks, offers, st } from './state.js';
import { newToken, renderTokens } from './tokens.js';
import { renderTransactions } from './transactions.js';

const POLL_MS = 1500;
// Grouping errors reads every transaction in Error of the integration: asked
// for this often, and at once after an action or a new choice.
const ERRORS_MS = 10000;

async function boot() {
  $('signin-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('site-select').addEventListener('change', (e) => selectSite(e.target.value));
  $('site-start').addEventListener('click', startSite);
  $('site-stop').addEventListener('click', stopSite);
  $('site-reload').addEventListener('click', reloadSite);
  $('token-new').addEventListener('click', newToken);
  $('tx-integration').addEventListener('change', (e) => {
    st.txIntegration[st.site] = e.target.value;
    pollSoon();
  });
  $('tx-state').addEventListener('change', (e) => {
    st.txState = e.target.value;
    pollSoon();
  });
  $('modal').addEventListener('close', closedModal);
  $('modal-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (modal.primary && !modal.primary.disabled) modal.primary.click();
  });
  window.addEventListener('hashchange', () => {
    const name = decodeURIComponent(location.hash.slice(1));
    if (name && name !== st.site && st.sites.some((s) => s.name === name)) selectSite(name);
  });
  try {
    st.session = await loadSession();
  } catch (e) {
    banner(`The dashboard cannot start: ${errorText(e)}`);
    setTimeout(boot2, 3000);
    return;
  }
  if (!st.session) showSignIn();
  else await startApp();
}

async function boot2() {
  try {
    st.session = await loadSession();
    banner('');
    if (!st.session) showSignIn();
    else await startApp();
  } catch (e) {
    setTimeout(boot2, 3000);
  }
}

async function startApp() {
  renderUser();
  $('signin').hidden = true;
  $('app').hidden = false;
  $('site-tabs').hidden = false;
  $('site-select').parentElement.hidden = false;
  st.rendered = {};
  st.running = true;
  try {
    st.sites = await api('GET', '/sites');
  } catch (e) {
    showError(e);
    st.sites = [];
  }
  const wanted = decodeURIComponent(location.hash.slice(1));
  const first = st.sites.find((s) => s.name === wanted) || st.sites[0];
  renderSites();
  if (first) selectSite(first.name);
}

function stopRunning() {
  st.running = false;
  clearTimeout(st.pollTimer);
  closeLog();
}

function pollSoon() {
  if (!st.running) return;
  st.errors.stale = true;
  clearTimeout(st.pollTimer);
  if (st.polling) {
    st.pollAgain = true;
    return;
  }
  poll();
}

async function poll() {
  if (!st.running || !st.site) return;
  st.polling = true;
  const site = st.site;
  try {
    const [sites, integrations, endpoints, audit, nodes] = await Promise.all([
      api('GET', '/sites'),
      api('GET', sitePath('/integrations')),
      api('GET', sitePath('/endpoints')),
      api('GET', sitePath('/audit?limit=50')),
      api('GET', '/nodes'),
    ]);
    // Tokens are daemon-wide, for those the session offers them to.
    st.tokens = offers(st.session, 'manage-tokens') ? await api('GET', '/tokens') : [];
    if (site === st.site) {
      st.sites = sites;
      st.integrations = integrations;
      st.endpoints = endpoints;
      st.audit = audit;
      st.nodes = nodes;
      let txName = st.txIntegration[site];
      if (!integrations.some((i) => i.name === txName)) {
        txName = integrations.length ? integrations[0].name : null;
        st.txIntegration[site] = txName;
      }
      if (txName) {
        const q = new URLSearchParams({ limit: '50' });
        if (st.txState) q.set('state', st.txState);
        st.transactions = await api('GET', sitePath(`/integrations/${encodeURIComponent(txName)}/transactions?${q}`));
        const of = `${site}/${txName}`;
        if (st.errors.stale || st.errors.of !== of || Date.now() - st.errors.at > ERRORS_MS) {
          st.errorGroups = await api('GET', sitePath(`/integrations/${encodeURIComponent(txName)}/errors`));
          Object.assign(st.errors, { of, at: Date.now(), stale: false });
        }
      } else {
        st.transactions = [];
        st.errorGroups = [];
      }
      banner('');
      renderAll();
    }
  } catch (e) {
    if (e.status === 0) banner('Cannot reach the sluice daemon; retrying…');
    else if (e.status !== 401) banner(`Cannot refresh: ${errorText(e)}`);
  } finally {
    st.polling = false;
    if (st.running) {
      if (st.pollAgain) {
        st.pollAgain = false;
        poll();
      } else {
        st.pollTimer = setTimeout(poll, POLL_MS);
      }
    }
  }
}

function renderAll() {
  renderSites();
  renderSite();
  renderIntegrations();
  renderCharts();
  renderEndpoints();
  renderTransactions();
  renderErrors();
  renderAudit();
  renderNodes();
  renderTokens();
}

Object.assign(hooks, { refresh: pollSoon, stop: stopRunning, start: startApp, signedOut });
boot();
