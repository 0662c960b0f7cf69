// The flows of an integration: their status, last run, and 'Send All' /
// 'Send Changed'.

import { btn, chip, fmtNum, h, table, timeEl } from './dom.js';
import { act, sitePath } from './api.js';
import { offers } from './state.js';

const FLOW_COLOUR = {
  'Pending All': 'amber', 'Pending Changed': 'amber', Running: 'blue',
  Success: 'green', Failed: 'red', Halted: 'amber',
};

const RUN_COLOUR = { success: 'green', failed: 'red', halted: 'amber' };

/** The runs a flow's answer may offer: its action, the button, the mode, the button's id. */
const RUNS = [
  ['run-all', 'Send All', 'all', 'send-all'],
  ['run-changed', 'Send Changed', 'changed', 'send-changed'],
];

const RUN_COUNTS = [['captured', 'captured'], ['succeeded', 'succeeded'], ['failed', 'failed'], ['pages', 'page', 'pages']];

export function flowsTable(i, kinds) {
  const rows = i.flows.map((f) => {
    const push = kinds[f.source] === 'webhook';
    const run = f.last_run;
    let runCell = h('span', { class: 'muted' }, push ? 'by webhook' : 'never');
    if (run) {
      const counts = RUN_COUNTS.filter(([k]) => typeof run[k] === 'number')
        .map(([k, one, many]) => `${fmtNum(run[k])} ${run[k] === 1 || !many ? one : many}`).join(' · ');
      runCell = h('div', null,
        run.result ? chip(run.result, RUN_COLOUR[run.result] || 'grey') : chip('running', 'blue'),
        ' ', h('span', { class: 'small' }, `#${run.id} ${run.mode} `, timeEl(run.started_at)),
        h('span', { class: 'sub' }, counts),
        run.error ? h('span', { class: 'sub err-text' }, run.error) : null);
    }
    const actions = RUNS.filter(([action]) => offers(f, action))
      .map(([, label, mode, id]) => btn(label, 'small', () => runFlow(f.name, mode), { dataset: { action: id } }));
    return h('tr', { dataset: { flow: f.name } },
      h('td', null, h('strong', null, f.name),
        h('span', { class: 'sub' }, `${f.source} → ${f.target}`),
        push ? h('span', { class: 'sub mono hide-narrow' }, `POST /hooks/${i.site}/${i.name}/${f.name}`) : null),
      h('td', { class: 'hide-narrow' }, f.schedule || h('span', { class: 'muted' }, push ? 'webhook' : 'ad hoc'),
        f.enabled ? null : h('span', { class: 'sub' }, 'disabled')),
      h('td', null, f.status ? chip(f.status, FLOW_COLOUR[f.status] || 'grey', 'flow-status') : h('span', { class: 'muted' }, '—'),
        f.stalled ? h('span', { class: 'sub' }, `stalled: ${f.stalled}`) : null),
      h('td', null, runCell),
      h('td', { class: 'actions-cell' }, actions));
  });
  return table(['Flow', { text: 'Schedule', class: 'hide-narrow' }, 'Status', 'Last run', ''], rows, 'No flows.');
}

function runFlow(flow, mode) {
  const label = mode === 'all' ? 'Send All' : 'Send Changed';
  act('POST', sitePath(`/flows/${encodeURIComponent(flow)}/run`), { mode },
    (a) => `${label} ${flow}: ${a && a.status ? a.status : 'requested'}`);
}
