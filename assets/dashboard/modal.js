// The one modal window, and the forms in it.

import { $, h, btn, replace } from './dom.js';

export const modal = {
  onClose: null,
  primary: null,
  open(title, body, buttons, onClose) {
    const dlg = $('modal');
    // One modal at a time: a new one takes the place of the one shown.
    const previous = this.onClose;
    this.onClose = null;
    if (previous) previous();
    $('modal-title').textContent = title;
    replace($('modal-body'), body);
    this.primary = null;
    replace($('modal-actions'), buttons.map((b) => {
      const el = btn(b.label, b.class, () => b.onClick(el), { id: b.id });
      if (b.primary) this.primary = el;
      return el;
    }));
    this.onClose = onClose || null;
    if (!dlg.open) dlg.showModal();
    const first = $('modal-body').querySelector('input, textarea, select');
    if (first) first.focus();
    else if (this.primary) this.primary.focus();
  },
  setTitle(title) {
    $('modal-title').textContent = title;
  },
  setButtons(buttons) {
    this.primary = null;
    replace($('modal-actions'), buttons.map((b) => {
      const el = btn(b.label, b.class, () => b.onClick(el), { id: b.id });
      if (b.primary) this.primary = el;
      return el;
    }));
  },
  close() {
    const dlg = $('modal');
    if (dlg.open) dlg.close();
  },
  isOpen() {
    return $('modal').open;
  },
};

export function closedModal() {
  const f = modal.onClose;
  modal.onClose = null;
  if (f) f();
}

export function confirmModal(title, bodyNodes, okLabel, okClass) {
  return new Promise((resolve) => {
    let answered = false;
    modal.open(title, bodyNodes, [
      { label: 'Cancel', class: 'ghost', onClick: () => modal.close() },
      {
        label: okLabel, class: okClass || 'primary', primary: true, id: 'modal-ok',
        // Disabled once clicked: the action it confirms is under way.
        onClick: (el) => { el.disabled = true; answered = true; resolve(true); },
      },
    ], () => { if (!answered) resolve(false); });
  });
}

export function formError(text) {
  const p = h('p', { class: 'form-error', role: 'alert' }, text || '');
  p.hidden = !text;
  return p;
}

export function setFormError(p, text) {
  p.textContent = text || '';
  p.hidden = !text;
}
