// The transactions of one integration, newest first; one opens in the
// modal with retry, replay and ignore.

import { $, chip, h, replace, table, timeEl } from './dom.js';
import { act, api, showError, sitePath } from './api.js';
import { modal } from './modal.js';
import { offers, refreshSoon, renderIf, st } from './state.js';

const TX_COLOUR = { queued: 'grey', sending: 'blue', sent: 'green', error: 'red', ignored: 'grey' };

export function showTransactions(name) {
  st.txIntegration[st.site] = name;
  $('tx-integration').value = name;
  refreshSoon();
  $('tx-card').scrollIntoView({ behavior: 'smooth', block: 'start' });
}

export function renderTransactions() {
  const names = st.integrations.map((i) => i.name);
  const current = st.txIntegration[st.site];
  renderIf('tx-select', [names, current], () => {
    replace($('tx-integration'), names.map((n) => h('option', { value: n, selected: n === current }, n)));
    $('tx-integration').value = current || '';
  });
  $('tx-state').value = st.txState;
  renderIf('transactions', [current, st.txState, st.transactions], () => {
    const rows = st.transactions.map((t) => h('tr', {
      class: `clickable${t.state === 'error' ? ' row-error' : ''}`,
      tabindex: '0',
      dataset: { seq: String(t.seq), state: t.state },
      title: 'Show this transaction',
      onclick: () => transactionModal(current, t),
      onkeydown: (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); transactionModal(current, t); } },
    },
    h('td', { class: 'num mono' }, `#${t.seq}`),
    h('td', null, t.flow, t.key ? h('span', { class: 'sub mono' }, t.key) : null),
    h('td', null, chip(t.state, TX_COLOUR[t.state], 'tx-state')),
    h('td', { class: 'hide-narrow' }, timeEl(t.created_at)),
    h('td', { class: 'num hide-narrow' }, String(t.attempts)),
    h('td', { class: t.last_error ? 'err' : 'muted', title: t.last_error || undefined }, t.last_error || '—')));
    const what = st.txState ? `${st.txState} transactions` : 'transactions';
    replace($('transactions'), table([{ text: 'Seq', class: 'num' }, 'Flow / key', 'State',
      { text: 'Created', class: 'hide-narrow' }, { text: 'Attempts', class: 'num hide-narrow' }, 'Last error'],
    rows, current ? `No ${what} in ${current}.` : 'No integration.'));
  });
}

export async function openTransaction(integration, seq) {
  try {
    const t = await api('GET', sitePath(`/integrations/${encodeURIComponent(integration)}/transactions/${seq}`));
    transactionModal(integration, t);
  } catch (e) {
    showError(e);
  }
}

function transactionModal(integration, t) {
  const path = sitePath(`/integrations/${encodeURIComponent(integration)}/transactions/${t.seq}`);
  const kv = (k, v) => [h('dt', null, k), h('dd', null, v)];
  const buttons = [{ label: 'Close', class: 'ghost', primary: true, onClick: () => modal.close() }];
  const action = (label, verb, cls) => ({
    label, class: cls, id: `tx-${verb}`,
    onClick: async (b) => {
      b.disabled = true;
      const a = await act('POST', `${path}/${verb}`, undefined, (x) => `Transaction #${t.seq}: ${x.state}`);
      b.disabled = false;
      if (a) modal.close();
    },
  });
  // What the answer offers, before Close.
  buttons.unshift(...[['replay', 'Replay', ''], ['ignore', 'Ignore', 'warn'], ['retry', 'Retry', 'primary']]
    .filter(([verb]) => offers(t, verb))
    .map(([verb, label, cls]) => action(label, verb, cls)));
  modal.open(`Transaction #${t.seq}`, [
    h('dl', { class: 'kv' },
      kv('Integration', integration),
      kv('Flow', t.flow),
      kv('Key', t.key || '—'),
      kv('State', chip(t.state, TX_COLOUR[t.state])),
      kv('Created', timeEl(t.created_at)),
      kv('Updated', timeEl(t.updated_at)),
      kv('Attempts', String(t.attempts))),
    h('h3', null, t.state === 'error' ? "The target's answer" : 'Last error'),
    h('pre', { id: 'tx-last-error' }, t.last_error || '—'),
    h('h3', null, 'Record'),
    h('pre', null, JSON.stringify(t.record, null, 2)),
  ], buttons);
}
