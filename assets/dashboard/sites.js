// The sites: the tabs (or the select on a phone), the chosen site's bar,
// and its start, stop and reload; and the nodes that run them (one on a
// single daemon, several on one PostgreSQL store), with what each sends.

import { $, capital, chip, h, replace, table, timeEl } from './dom.js';
import { act, api, errorText } from './api.js';
import { openLog } from './log.js';
import { confirmModal, formError, modal, setFormError } from './modal.js';
import { toast } from './notice.js';
import { offers, refreshSoon, renderIf, st } from './state.js';

const SITE_COLOUR = { running: 'green', stopped: 'red', starting: 'amber', stopping: 'amber' };

export function selectSite(name) {
  if (!name) return;
  const changed = st.site !== name;
  st.site = name;
  if (location.hash.slice(1) !== encodeURIComponent(name)) {
    history.replaceState(null, '', `#${encodeURIComponent(name)}`);
  }
  document.title = `${name} · sluice`;
  if (changed) {
    for (const k of Object.keys(st.rendered)) if (k !== 'sites') delete st.rendered[k];
    st.integrations = [];
    st.endpoints = [];
    st.audit = [];
    st.transactions = [];
    replace($('integrations'), h('p', { class: 'empty' }, 'Loading…'));
    replace($('endpoints'));
    replace($('transactions'));
    replace($('audit'));
    openLog();
  }
  st.rendered.sites = null;
  renderSites();
  refreshSoon();
}

export function renderSites() {
  const data = st.sites.map((s) => [s.name, s.state]);
  renderIf('sites', [data, st.site], () => {
    replace($('site-tabs'), st.sites.map((s) => h('button', {
      type: 'button', role: 'tab', class: 'site-tab',
      'aria-selected': s.name === st.site ? 'true' : 'false',
      title: `${s.name}: ${s.state}`,
      onclick: () => selectSite(s.name),
    }, h('span', { class: `dot ${SITE_COLOUR[s.state] || ''}` }), s.name)));
    replace($('site-select'), st.sites.map((s) => h('option', {
      value: s.name, selected: s.name === st.site,
    }, `${s.name} (${s.state})`)));
    $('site-select').value = st.site || '';
  });
}

function currentSite() {
  return st.sites.find((s) => s.name === st.site);
}

export function renderSite() {
  const s = currentSite();
  if (!s) return;
  renderIf('site', s, () => {
    $('site-name').textContent = s.name;
    const state = $('site-state');
    state.className = `chip ${SITE_COLOUR[s.state] || 'grey'}`;
    state.textContent = capital(s.state);
    replace($('site-since'), 'since ', timeEl(s.since));
    const info = $('site-stop-info');
    if (s.state !== 'running' && s.stop_reason) {
      replace(info, 'Stopped by ', h('strong', null, s.stopped_by || 'someone'), ' at ', timeEl(s.stopped_at),
        ': “', s.stop_reason, '”');
      info.hidden = false;
    } else {
      info.hidden = true;
    }
    $('site-start').hidden = !offers(s, 'start');
    $('site-stop').hidden = !offers(s, 'stop');
    $('site-reload').hidden = !offers(s, 'reload');
  });
}

export async function startSite() {
  const name = st.site;
  await act('POST', `/sites/${encodeURIComponent(name)}/start`, {}, `Site ${name} started`);
}

export async function reloadSite() {
  const name = st.site;
  const ok = await confirmModal('Reload the configuration', [
    h('p', null, 'Read the configuration file again and apply the part of site ', h('strong', null, name),
      '? States, holds and queues stay; a file with errors changes nothing.'),
  ], 'Reload', 'primary');
  modal.close();
  if (ok) await act('POST', `/sites/${encodeURIComponent(name)}/reload`, {}, (s) => `Site ${name} reloaded: ${s.state}`);
}

export function stopSite() {
  const name = st.site;
  const reason = h('input', {
    id: 'stop-reason', type: 'text', maxlength: '500',
    placeholder: 'e.g. Stopping integration due to stocktake',
  });
  const err = formError();
  reason.addEventListener('input', () => setFormError(err, ''));
  modal.open('Confirm Service Stop', [
    h('p', null, 'Stop site ', h('strong', null, name), '? Scheduled tasks do not run and running tasks are halted until it is started again. Nothing queued is lost.'),
    h('label', { for: 'stop-reason' }, 'Stoppage reason'),
    reason,
    err,
  ], [
    { label: 'Cancel', class: 'ghost', onClick: () => modal.close() },
    {
      label: 'Stop Site', class: 'danger', primary: true, id: 'confirm-stop',
      onClick: async (b) => {
        const text = reason.value.trim();
        if (!text) {
          setFormError(err, 'Enter a reason for the stop: it goes into the audit trail.');
          reason.focus();
          return;
        }
        b.disabled = true;
        try {
          await api('POST', `/sites/${encodeURIComponent(name)}/stop`, { reason: text });
          modal.close();
          toast(`Site ${name} stopped`, 'ok');
        } catch (e) {
          setFormError(err, errorText(e));
        } finally {
          b.disabled = false;
          refreshSoon();
        }
      },
    },
  ]);
}

/**
 * The nodes, daemon-wide like the tabs: alive or gone (its heartbeat within
 * a lease, as the daemon judges), where its own dashboard is, and the
 * integrations whose leases it holds, those of the chosen site first.
 */
export function renderNodes() {
  // A heartbeat alone redraws nothing (a focused link keeps its focus): its
  // time is set in place below.
  const shown = st.nodes.map((n) => Object.assign({}, n, { heartbeat_at: null }));
  renderIf('nodes', [shown, st.site], () => {
    const alive = st.nodes.filter((n) => n.alive).length;
    $('nodes-summary').textContent = st.nodes.length > 1 ? `${alive} of ${st.nodes.length} alive` : '';
    const rows = st.nodes.map((n) => {
      const here = `${st.site}/`;
      const sends = [...n.integrations].sort((a, b) => Number(!a.startsWith(here)) - Number(!b.startsWith(here)));
      // Its state beside its name: the side column has no room for a column more.
      return h('tr', { dataset: { node: n.name, alive: String(n.alive) } },
        h('td', null, h('div', { class: 'node-name' }, h('strong', null, n.name),
          chip(n.alive ? 'Alive' : 'Gone', n.alive ? 'green' : 'red', 'node-state'),
          isThisPage(n.address) ? h('span', { class: 'muted small' }, 'this page') : null),
        h('span', { class: 'sub' }, addressLink(n.address))),
        h('td', null, h('span', { class: 'heartbeat' }, timeEl(n.heartbeat_at)),
          h('span', { class: 'sub' }, 'up since ', timeEl(n.started_at))),
        h('td', null, sends.length
          ? h('div', { class: 'node-sends' }, sends.map((i) => h('span', {
            class: `chip plain ${i.startsWith(here) ? 'blue' : 'grey'}`, dataset: { sends: i },
          }, i)))
          : h('span', { class: 'muted' }, 'nothing')));
    });
    replace($('nodes'), table(['Node', 'Heartbeat', 'Sends'], rows, 'No node has registered.'));
  });
  $('nodes').querySelectorAll('.heartbeat').forEach((el, n) => replace(el, timeEl(st.nodes[n].heartbeat_at)));
}

/** Where a node's own dashboard is: a link only to an http(s) address. */
function addressLink(address) {
  let url = null;
  try {
    url = new URL(address);
  } catch (e) {
    url = null;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) return h('span', { class: 'mono' }, address || '—');
  return h('a', { class: 'mono', href: url.href, target: '_blank', rel: 'noopener noreferrer' }, address);
}

function isThisPage(address) {
  try {
    return new URL(address).origin === location.origin;
  } catch (e) {
    return false;
  }
}
