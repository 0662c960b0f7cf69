// The site log, streamed (server-sent events): each line once, in id order.

import { $, h, replace } from './dom.js';
import { st } from './state.js';

const LOG_KEEP = 1500;

export function closeLog() {
  if (st.log && st.log.source) st.log.source.close();
  st.log = null;
}

function logStatus(text, colour) {
  const el = $('log-status');
  el.className = `chip ${colour}`;
  el.textContent = text;
}

export function openLog() {
  closeLog();
  const box = $('log');
  replace(box);
  const site = st.site;
  const source = new EventSource(`/api/v1/sites/${encodeURIComponent(site)}/log/stream?tail=200`);
  const log = { source, site, seen: new Set() };
  st.log = log;
  logStatus('connecting', 'amber');
  source.onopen = () => { if (st.log === log) logStatus('live', 'green'); };
  source.onerror = () => {
    if (st.log !== log) return;
    if (source.readyState === EventSource.CLOSED) logStatus('closed', 'red');
    else logStatus('reconnecting', 'amber');
  };
  source.onmessage = (ev) => {
    if (st.log !== log) return;
    const id = Number(ev.lastEventId || 0);
    // A reconnect sends the recent lines again: keep each line once.
    if (id) {
      if (log.seen.has(id)) return;
      log.seen.add(id);
      if (log.seen.size > 4 * LOG_KEEP) log.seen = new Set([...log.seen].slice(-LOG_KEEP));
    }
    appendLogLine(ev.data, id);
  };
}

/** Adds a line in id order: workers writing at once may be heard out of order. */
function appendLogLine(text, id) {
  const box = $('log');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const m = /\((\d)\) : /.exec(text);
  let cls = `log-line level-${m ? m[1] : 'x'}`;
  if (/ started successfully!$/.test(text)) cls += ' ok';
  else if (/ stopped successfully!$/.test(text)) cls += ' stop';
  const line = h('div', { class: cls, dataset: id ? { id: String(id) } : undefined }, text);
  let after = box.lastElementChild;
  if (id) {
    while (after && after.dataset.id && Number(after.dataset.id) > id) after = after.previousElementSibling;
  }
  if (after) after.after(line);
  else box.prepend(line);
  while (box.childElementCount > LOG_KEEP) box.firstElementChild.remove();
  if (atBottom) box.scrollTop = box.scrollHeight;
}
