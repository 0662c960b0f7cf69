// The integrations: a card each, with its holds, the resume under way, its
// flows and, on a cluster, the node that sends it; pause, resume, start and
// stop.

import { $, btn, capital, chip, fmtDuration, fmtNum, h, replace, timeEl } from './dom.js';
import { act, api, errorText, showError, sitePath } from './api.js';
import { integrationChart } from './charts.js';
import { flowsTable } from './flows.js';
import { confirmModal, formError, modal, setFormError } from './modal.js';
import { toast } from './notice.js';
import { offers, refreshSoon, renderIf, st } from './state.js';
import { openTransaction, showTransactions } from './transactions.js';

const PROGRESS_MS = 400;

const STATE_COLOUR = { active: 'green', paused: 'amber', stopped: 'grey' };

const STATUS_COLOUR = {
  Running: 'green', Failed: 'red', Idle: 'grey', Disabled: 'grey',
  Restarting: 'blue', 'Server Reinitializing': 'blue', Unknown: 'amber',
};

const HOLD_COLOUR = { operator: 'amber', 'endpoint-offline': 'red', unauthorized: 'amber', 'site-stopped': 'red' };

export function renderIntegrations() {
  const kinds = Object.fromEntries(st.endpoints.map((e) => [e.name, e.kind]));
  // A lease is renewed at every heartbeat: its new end alone redraws nothing.
  const shown = st.integrations.map((i) => (i.owner
    ? Object.assign({}, i, { owner: { node: i.owner.node, epoch: i.owner.epoch } })
    : i));
  const listed = new Set(st.nodes.flatMap((n) => n.integrations));
  renderIf('integrations', [shown, kinds, [...listed]], () => {
    const box = $('integrations');
    if (!st.integrations.length) {
      replace(box, h('p', { class: 'empty' }, 'This site has no integrations.'));
      return;
    }
    replace(box, shown.map((i) => integrationCard(i, kinds, listed)));
  });
}

/**
 * Who sends it: the holder of its lease (`owner`, on a cluster). A single
 * daemon has no owners and lists every integration as its own: nothing to
 * say. With no owner and on no node's list, no node sends it now (until a
 * live one takes the lease).
 */
function sentBy(i, listed) {
  let el;
  if (i.owner) {
    el = stat('Sent by', i.owner.node, 'owner');
    el.title = `${i.owner.node} holds its lease (epoch ${i.owner.epoch})`;
  } else if (st.nodes.length && !listed.has(`${st.site}/${i.name}`)) {
    el = stat('Sent by', h('span', { class: 'muted' }, 'no node'), 'owner');
    el.title = 'No live node holds its lease now';
  } else {
    return null;
  }
  return el;
}

/** The buttons for the actions an integration's answer may offer, in this order. */
const BUTTONS = [
  ['pause', 'Pause', 'warn small', (i) => pauseIntegration(i)],
  ['resume', 'Resume', 'primary small', (i) => resumeIntegration(i)],
  ['start', 'Start', 'success small', (i) => startIntegration(i)],
  ['stop', 'Stop', 'danger small', (i) => stopIntegration(i)],
];

/** What the answer offers, and the integration's transactions. */
function integrationActions(i) {
  const out = BUTTONS.filter(([action]) => offers(i, action))
    .map(([action, label, cls, onClick]) => btn(label, cls, () => onClick(i), { dataset: { action } }));
  out.push(btn('Transactions', 'ghost small', () => showTransactions(i.name), { dataset: { action: 'transactions' } }));
  return out;
}

function startIntegration(i) {
  act('POST', sitePath(`/integrations/${encodeURIComponent(i.name)}/start`), {}, `Integration ${i.name} started`);
}

function integrationCard(i, kinds, listed) {
  const notes = [];
  for (const hold of i.holds) {
    notes.push(h('div', { class: `note ${hold.kind === 'operator' || hold.kind === 'unauthorized' ? 'amber' : 'red'}` },
      chip(`hold: ${hold.kind}`, HOLD_COLOUR[hold.kind] || 'amber'),
      h('span', null, hold.reason),
      h('span', { class: 'muted small' }, '— ', hold.by, ', since ', timeEl(hold.since))));
  }
  if (i.stalled) {
    notes.push(h('div', { class: 'note amber' }, chip('stalled', 'amber'), h('span', null, i.stalled)));
  }
  if (i.blocked) {
    notes.push(h('div', { class: 'note red' }, chip('blocked', 'red'),
      h('span', null, `Waiting behind transaction #${i.blocked.seq}: `, i.blocked.error),
      btn('Open', 'ghost small', () => openTransaction(i.name, i.blocked.seq))));
  }
  let progress = null;
  if (i.resume) {
    const pct = i.resume.total ? Math.min(100, (100 * i.resume.done) / i.resume.total) : 0;
    const bar = h('span');
    bar.style.width = `${pct}%`;
    progress = h('div', { class: 'inline-progress' },
      h('div', { class: 'small' }, h('strong', null, 'Resuming: '), `${fmtNum(i.resume.done)} / ${fmtNum(i.resume.total)}`,
        h('span', { class: 'muted' }, ` · ${i.resume.rate.toFixed(1)}/s · ${fmtDuration(i.resume.eta_s)} left`)),
      h('div', { class: 'progress thin' }, bar));
  }
  const lastFlowRun = i.flows.map((f) => f.last_run && f.last_run.started_at).filter(Boolean).sort().pop();
  return h('article', { class: 'integration', dataset: { integration: i.name } },
    h('div', { class: 'integration-head' },
      h('h3', null, i.name),
      chip(capital(i.state), STATE_COLOUR[i.state], 'state'),
      chip(i.status, STATUS_COLOUR[i.status], 'status'),
      h('div', { class: 'actions' }, integrationActions(i))),
    h('div', { class: 'stats' },
      stat('Queued', fmtNum(i.queued), 'queued'),
      stat('On error', i.on_error),
      stat('Last run', lastFlowRun ? timeEl(lastFlowRun) : '—'),
      sentBy(i, listed)),
    progress,
    notes.length ? h('div', { class: 'notes' }, notes) : null,
    integrationChart(i.name),
    i.flows.length ? h('div', { class: 'table-wrap' }, flowsTable(i, kinds)) : null);
}

function stat(label, value, key) {
  return h('div', { class: 'stat', dataset: key ? { stat: key } : undefined },
    h('span', { class: 'label' }, label), h('span', { class: 'value' }, value));
}

function reasonModal(title, text, okLabel, okClass, path, done) {
  const reason = h('input', { id: 'action-reason', type: 'text', maxlength: '500', placeholder: 'optional' });
  const err = formError();
  modal.open(title, [h('p', null, text), h('label', { for: 'action-reason' }, 'Reason'), reason, err], [
    { label: 'Cancel', class: 'ghost', onClick: () => modal.close() },
    {
      label: okLabel, class: okClass, primary: true, id: 'modal-ok',
      onClick: async (b) => {
        b.disabled = true;
        try {
          const r = reason.value.trim();
          await api('POST', path, r ? { reason: r } : {});
          modal.close();
          toast(done, 'ok');
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

function pauseIntegration(i) {
  reasonModal('Pause Integration',
    `Pause ${i.name}? Records are still captured and queue in creation order; nothing is sent until it is resumed.`,
    'Pause', 'warn', sitePath(`/integrations/${encodeURIComponent(i.name)}/pause`),
    `Integration ${i.name} is paused`);
}

function stopIntegration(i) {
  reasonModal('Stop Integration',
    `Stop (deactivate) ${i.name}? Nothing is captured or sent while it is stopped; its webhooks answer 503.`,
    'Stop', 'danger', sitePath(`/integrations/${encodeURIComponent(i.name)}/stop`),
    `Integration ${i.name} stopped`);
}

async function resumeIntegration(i) {
  const site = st.site;
  const ok = await confirmModal('Resume Integration', [
    h('p', null, 'Resume integration ', h('strong', null, i.name), '?'),
    h('p', { class: 'muted' }, `${fmtNum(i.queued)} queued transactions are sent in creation order, then live traffic follows.`),
  ], 'OK', 'primary');
  if (!ok) return;
  const path = `/sites/${encodeURIComponent(site)}/integrations/${encodeURIComponent(i.name)}`;
  let view;
  try {
    view = await api('POST', `${path}/resume`, {});
  } catch (e) {
    modal.close();
    showError(e);
    refreshSoon();
    return;
  }
  refreshSoon();
  followResume(path, i.name, view, i.queued);
}

/** The 'Resume Integration Worker' modal: follows `resume` until it is null. */
function followResume(path, name, view, queuedBefore) {
  const count = h('div', { class: 'progress-count', id: 'resume-count' }, '');
  const bar = h('span');
  const barBox = h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': '0' }, bar);
  const rate = h('span', { id: 'resume-rate' });
  const eta = h('span', { id: 'resume-eta' });
  const status = h('p', { class: 'muted', id: 'resume-status' }, 'Sending the queued transactions in creation order…');
  let open = true;
  const started = performance.now();
  let last = view && view.resume ? view.resume : null;
  modal.setTitle('Resume Integration Worker');
  replace($('modal-body'),
    h('p', null, 'Integration ', h('strong', null, name)),
    count, barBox, h('div', { class: 'progress-meta' }, rate, eta), status);
  modal.setButtons([{ label: 'Close', class: 'ghost', primary: true, id: 'resume-close', onClick: () => modal.close() }]);
  if (!$('modal').open) $('modal').showModal();
  modal.onClose = () => { open = false; };

  const show = (p, finished) => {
    const pct = p.total ? Math.min(100, (100 * p.done) / p.total) : 100;
    count.textContent = `${fmtNum(p.done)} / ${fmtNum(p.total)}`;
    bar.style.width = `${pct}%`;
    barBox.setAttribute('aria-valuemax', String(p.total));
    barBox.setAttribute('aria-valuenow', String(p.done));
    barBox.classList.toggle('done', !!finished);
    rate.textContent = p.rate !== undefined ? `${p.rate.toFixed(1)} transactions/s` : '';
    eta.textContent = finished ? '' : `time left: ${p.eta_s === null || p.eta_s === undefined ? 'estimating…' : fmtDuration(p.eta_s)}`;
  };

  const finish = (integration) => {
    const total = last ? last.total : queuedBefore;
    if (integration && integration.state !== 'active') {
      if (last) show(last, false);
      eta.textContent = '';
      status.textContent = `Stopped before the end: the integration is ${integration.state} now.`;
      return;
    }
    const secs = (performance.now() - started) / 1000;
    const rate = last && last.rate > 0 ? last.rate : (secs > 0 && total ? total / secs : undefined);
    show({ done: total, total, rate }, true);
    modal.setTitle('Resume Integration Worker — done');
    status.textContent = `Done: all ${fmtNum(total)} queued transactions were processed in order; live traffic follows.`;
  };

  if (last) show(last, false);
  else {
    finish(view);
    return;
  }
  const tick = async () => {
    if (!open) return;
    try {
      const now = await api('GET', path);
      if (!open) return;
      if (now.resume) {
        last = now.resume;
        show(last, false);
      } else {
        finish(now);
        refreshSoon();
        return;
      }
    } catch (e) {
      if (e.status === 401) return;
      status.textContent = `Cannot follow the progress: ${errorText(e)}; retrying…`;
    }
    setTimeout(tick, PROGRESS_MS);
  };
  setTimeout(tick, PROGRESS_MS);
}
