// What the page says by itself: toasts, and the banner at the top.

import { $, h } from './dom.js';

export function toast(text, kind) {
  const box = $('toasts');
  const el = h('div', { class: `toast ${kind || ''}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'toast-text' }, text),
    h('button', { type: 'button', 'aria-label': 'Dismiss', onclick: () => el.remove() }, '×'));
  box.append(el);
  while (box.children.length > 4) box.firstChild.remove();
  setTimeout(() => el.remove(), kind === 'error' ? 9000 : 4500);
}

export function banner(text) {
  const el = $('banner');
  if (text) {
    el.textContent = text;
    el.hidden = false;
  } else {
    el.hidden = true;
  }
}
