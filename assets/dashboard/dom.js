// Elements and text: every text that comes from the server goes into the
// page as a text node (never as HTML).

export const $ = (id) => document.getElementById(id);

/** Makes an element. Strings and numbers among the children become text nodes. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export function chip(text, colour, extra) {
  return h('span', { class: `chip ${colour || 'grey'}${extra ? ' ' + extra : ''}` }, text);
}

export function btn(label, cls, onclick, attrs) {
  return h('button', Object.assign({ type: 'button', class: `btn ${cls || ''}`, onclick }, attrs || {}), label);
}

export function table(headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  // On a phone the rows stack; each cell then shows its column's name.
  const labels = headers.map((hd) => (typeof hd === 'string' ? hd : hd.text));
  for (const row of rows) {
    [...row.children].forEach((td, n) => {
      if (labels[n]) td.dataset.label = labels[n];
      td.replaceChildren(h('div', { class: 'cell' }, [...td.childNodes]));
    });
  }
  return h('table', { class: 'stack' },
    h('thead', null, h('tr', null, headers.map((hd) =>
      typeof hd === 'string' ? h('th', null, hd) : h('th', { class: hd.class }, hd.text)))),
    h('tbody', null, rows));
}

const pad = (n) => String(n).padStart(2, '0');

export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return time;
  const month = d.toLocaleString('en', { month: 'short' });
  return `${pad(d.getDate())}-${month} ${time}`;
}

export function timeEl(iso) {
  return h('time', { datetime: iso || undefined, title: iso || undefined }, fmtTime(iso));
}

export function fmtDuration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return '—';
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export const fmtNum = (n) => (typeof n === 'number' ? n.toLocaleString('en') : String(n));

export const capital = (s) => (s ? s.charAt(0).toUpperCase() + s.slice(1) : s);
