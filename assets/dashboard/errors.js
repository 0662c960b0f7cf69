// The errors of the integration the Transactions card shows, grouped by
// cause (endpoint, status, the answer with numbers, ids and quoted values
// masked): each group's count, sequence range and latest answer, with
// Retry all / Ignore all when the answer offers them. Each asks first,
// naming how many transactions it acts on.

import { $, btn, chip, fmtNum, h, replace, table, timeEl } from './dom.js';
import { act, sitePath } from './api.js';
import { confirmModal, modal } from './modal.js';
import { offers, renderIf, st } from './state.js';

/** The buttons for what a group's answer offers, in this order. */
const BUTTONS = [
  ['retry', 'Retry all', 'primary small'],
  ['ignore', 'Ignore all', 'warn small'],
];

const seqRange = (g) => (g.first_seq === g.last_seq ? `#${g.first_seq}` : `#${g.first_seq}–#${g.last_seq}`);

/**
 * What a row shows of a group's latest answer: from the status it names on
 * (an `http` target writes `POST URL: 422 ANSWER`), without the request line.
 * The row is two lines at most: with the request line first, every group of
 * one endpoint read the same there (`POST` and the URL of the endpoint), and the
 * answer that tells them apart was cut off. The whole answer stays in the
 * row's title and the group's window. Without a status, the whole answer.
 */
function answerOf(g) {
  if (!g.status) return g.sample;
  const at = new RegExp(`: ${g.status}(?:\\s|$)`).exec(g.sample);
  return at ? g.sample.slice(at.index + 2) : g.sample;
}

export function renderErrors() {
  const current = st.txIntegration[st.site];
  renderIf('errors', [current, st.errorGroups], () => {
    $('errors-integration').textContent = current || '';
    const total = st.errorGroups.reduce((n, g) => n + g.count, 0);
    $('errors-summary').textContent = st.errorGroups.length
      ? `${fmtNum(total)} in error, ${fmtNum(st.errorGroups.length)} ${st.errorGroups.length === 1 ? 'cause' : 'causes'}`
      : '';
    const rows = st.errorGroups.map((g) => h('tr', {
      class: 'clickable row-error',
      tabindex: '0',
      dataset: { group: g.group, count: String(g.count) },
      title: 'Show this group',
      onclick: (ev) => { if (!ev.target.closest('button')) groupModal(current, g); },
      onkeydown: (ev) => {
        if (ev.target === ev.currentTarget && (ev.key === 'Enter' || ev.key === ' ')) { ev.preventDefault(); groupModal(current, g); }
      },
    },
    h('td', { class: 'num', dataset: { stat: 'count' } }, fmtNum(g.count)),
    h('td', { class: 'mono' }, seqRange(g), h('span', { class: 'sub' }, g.group)),
    h('td', { class: 'hide-narrow' }, g.endpoint || '—', g.status ? h('span', { class: 'sub' }, `HTTP ${g.status}`) : null),
    h('td', { class: 'hide-narrow' }, timeEl(g.last_at)),
    h('td', { class: 'err', title: g.sample }, answerOf(g)),
    h('td', { class: 'actions-cell' }, groupButtons(current, g))));
    replace($('errors'), table([{ text: 'Count', class: 'num' }, 'Seqs / group',
      { text: 'Endpoint', class: 'hide-narrow' }, { text: 'Last', class: 'hide-narrow' }, 'Latest answer', ''],
    rows, current ? `No errors in ${current}.` : 'No integration.'));
  });
}

function groupButtons(integration, g) {
  return BUTTONS.filter(([verb]) => offers(g, verb))
    .map(([verb, label, cls]) => btn(label, cls, () => actOnGroup(integration, g, verb), { dataset: { action: verb } }));
}

/** Asks, naming the count; then acts on the whole group. */
async function actOnGroup(integration, g, verb) {
  const n = fmtNum(g.count);
  const what = verb === 'retry'
    ? `Each goes back to the queue in its place and is sent again, in sequence order.`
    : `The queue moves on without them; they are never sent.`;
  const ok = await confirmModal(verb === 'retry' ? 'Retry all' : 'Ignore all', [
    h('p', null, `${verb === 'retry' ? 'Retry' : 'Ignore'} all `, h('strong', null, `${n} transaction${g.count === 1 ? '' : 's'}`),
      ' of this group in ', h('strong', null, integration), '?'),
    h('p', { class: 'muted' }, what),
    h('pre', null, g.sample),
  ], `${verb === 'retry' ? 'Retry' : 'Ignore'} ${n}`, verb === 'retry' ? 'primary' : 'warn');
  if (!ok) return;
  const path = sitePath(`/integrations/${encodeURIComponent(integration)}/errors/${encodeURIComponent(g.group)}/${verb}`);
  const done = await act('POST', path, undefined, (a) => {
    const past = a.action === 'retry' ? 'retried' : 'ignored';
    return `${fmtNum(a.done)} transaction${a.done === 1 ? '' : 's'} ${past}${a.skipped ? ` (${fmtNum(a.skipped)} no longer in error)` : ''}`;
  });
  modal.close();
  return done;
}

function groupModal(integration, g) {
  const kv = (k, v) => [h('dt', null, k), h('dd', null, v)];
  const buttons = BUTTONS.filter(([verb]) => offers(g, verb)).map(([verb, label, cls]) => ({
    label, class: cls.replace(' small', ''), id: `errors-${verb}`,
    onClick: () => actOnGroup(integration, g, verb),
  }));
  buttons.push({ label: 'Close', class: 'ghost', primary: true, onClick: () => modal.close() });
  modal.open(`Errors: ${fmtNum(g.count)} of one cause`, [
    h('dl', { class: 'kv' },
      kv('Integration', integration),
      kv('Group', h('span', { class: 'mono' }, g.group)),
      kv('Endpoint', g.endpoint || '—'),
      kv('Status', g.status ? chip(`HTTP ${g.status}`, 'red') : '—'),
      kv('Transactions', `${fmtNum(g.count)} (${seqRange(g)})`),
      kv('First', timeEl(g.first_at)),
      kv('Last', timeEl(g.last_at))),
    h('h3', null, 'What they have in common'),
    h('pre', { id: 'errors-cause' }, g.cause),
    h('h3', null, 'The latest answer'),
    h('pre', { id: 'errors-sample' }, g.sample),
  ], buttons);
}
