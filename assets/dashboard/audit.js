// The site's audit trail: who did what, and what was refused.

import { $, h, replace, table, timeEl } from './dom.js';
import { renderIf, st } from './state.js';

/** Done: `ok`, or `ok: …` with what it did (`ok: 120 retried`, a group of errors). */
const done = (outcome) => outcome === 'ok' || outcome.startsWith('ok: ');

export function renderAudit() {
  renderIf('audit', st.audit, () => {
    const rows = st.audit.map((a) => h('tr', { class: done(a.outcome) ? null : 'row-refused' },
      h('td', null, timeEl(a.at)),
      h('td', null, a.actor),
      h('td', null, h('span', { class: 'mono' }, a.action), h('span', { class: 'sub' }, a.subject),
        a.outcome === 'ok' ? null : h('span', { class: done(a.outcome) ? 'sub' : 'sub err-text' }, a.outcome)),
      h('td', null, a.reason || h('span', { class: 'muted' }, '—'))));
    replace($('audit'), table(['When', 'Who', 'What', 'Reason'], rows, 'Nothing yet.'));
  });
}
