// The API's tokens, for those who may manage them: make one (shown once),
// revoke one.

import { $, btn, chip, h, replace, table, timeEl } from './dom.js';
import { act, api, errorText } from './api.js';
import { confirmModal, formError, modal, setFormError } from './modal.js';
import { offers, refreshSoon, renderIf, st } from './state.js';

export function renderTokens() {
  const card = $('tokens-card');
  card.hidden = !offers(st.session, 'manage-tokens');
  if (card.hidden) return;
  renderIf('tokens', st.tokens, () => {
    const rows = st.tokens.map((t) => h('tr', { dataset: { token: t.name } },
      h('td', null, h('strong', null, t.name), h('span', { class: 'sub' }, `by ${t.created_by}`)),
      h('td', null, chip(t.role, t.role === 'admin' ? 'red' : t.role === 'operator' ? 'amber' : 'grey')),
      h('td', null, t.last_used_at ? timeEl(t.last_used_at) : h('span', { class: 'muted' }, 'never')),
      h('td', { class: 'actions-cell' },
        t.name === (st.session && st.session.name)
          ? h('span', { class: 'muted small' }, 'yours')
          : btn('Revoke', 'danger small', () => revokeToken(t.name), { dataset: { action: 'revoke' } }))));
    replace($('tokens'), table(['Name', 'Role', 'Last used', ''], rows, 'No tokens.'));
  });
}

export function newToken() {
  const err = formError();
  const name = h('input', { id: 'token-name', type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: 'e.g. grafana' });
  const role = h('select', { id: 'token-role' },
    ['viewer', 'operator', 'admin'].map((r) => h('option', { value: r }, r)));
  modal.open('New API token', [
    h('p', { class: 'muted' }, 'The token is shown once, here; sluice keeps only its hash.'),
    h('label', { for: 'token-name' }, 'Name'), name,
    h('label', { for: 'token-role' }, 'Role'), role,
    err,
  ], [
    { label: 'Cancel', class: 'ghost', onClick: () => modal.close() },
    {
      label: 'Create', class: 'primary', primary: true, id: 'token-create',
      onClick: async (b) => {
        if (!name.value.trim()) {
          setFormError(err, 'Enter a name: who or what holds the token.');
          return;
        }
        b.disabled = true;
        try {
          const t = await api('POST', '/tokens', { name: name.value.trim(), role: role.value });
          modal.open(`Token ${t.name} (${t.role})`, [
            h('p', null, 'Copy it now: it is not shown again.'),
            h('pre', { id: 'token-secret', class: 'mono' }, t.token),
          ], [{ label: 'Done', class: 'primary', primary: true, onClick: () => modal.close() }]);
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

async function revokeToken(name) {
  const ok = await confirmModal('Revoke token', [
    h('p', null, 'Revoke the token ', h('strong', null, name), '? Whoever uses it is refused from the next request on.'),
  ], 'Revoke', 'danger');
  modal.close();
  if (ok) await act('DELETE', `/tokens/${encodeURIComponent(name)}`, undefined, `Token ${name} revoked`);
}
