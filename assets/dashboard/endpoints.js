// The endpoints: what is observed of each; test one now, give one new
// credentials.

import { $, btn, capital, chip, h, replace, table, timeEl } from './dom.js';
import { api, errorText, showError, sitePath } from './api.js';
import { formError, modal, setFormError } from './modal.js';
import { toast } from './notice.js';
import { offers, refreshSoon, renderIf, st } from './state.js';

const ENDPOINT_COLOUR = { online: 'green', offline: 'red', unauthorized: 'amber', disabled: 'grey' };

export function renderEndpoints() {
  renderIf('endpoints', st.endpoints, () => {
    const rows = st.endpoints.map((e) => {
      const actions = [];
      if (offers(e, 'test')) actions.push(btn('Test', 'small', () => testEndpoint(e.name), { dataset: { action: 'test' } }));
      if (offers(e, 'reauthorize')) {
        actions.push(btn('Reauthorize', 'small', () => reauthorize(e.name), { dataset: { action: 'reauthorize' } }));
      }
      return h('tr', { dataset: { endpoint: e.name } },
        h('td', null, h('strong', null, e.name), h('span', { class: 'sub' }, e.kind)),
        h('td', null, chip(capital(e.state), ENDPOINT_COLOUR[e.state], 'endpoint-state')),
        h('td', null, timeEl(e.since)),
        h('td', { class: e.last_test ? (e.last_test.ok ? '' : 'err') : 'muted', title: e.last_test ? e.last_test.detail : undefined },
          e.last_test ? [timeEl(e.last_test.at), ' ', e.last_test.ok ? 'reached' : 'not reached'] : '—'),
        h('td', { class: e.last_error ? 'err' : 'muted', title: e.last_error || undefined }, e.last_error || '—'),
        h('td', { class: 'actions-cell' }, actions));
    });
    replace($('endpoints'), table(['Endpoint', 'State', 'Since', 'Last test', 'Last error', ''], rows, 'This site has no endpoints.'));
  });
}

async function testEndpoint(name) {
  try {
    const a = await api('POST', sitePath(`/endpoints/${encodeURIComponent(name)}/test`), {});
    toast(`${name}: ${a.ok ? 'reachable' : 'not reachable'} (${a.latency_ms} ms) — ${capital(a.state)}${a.detail ? ': ' + a.detail : ''}`,
      a.ok ? 'ok' : 'error');
  } catch (e) {
    showError(e);
  }
  refreshSoon();
}

function reauthorize(name) {
  const err = formError();
  const token = h('input', { id: 'reauth-token', type: 'password', autocomplete: 'off', spellcheck: 'false' });
  const user = h('input', { id: 'reauth-username', type: 'text', autocomplete: 'off' });
  const pass = h('input', { id: 'reauth-password', type: 'password', autocomplete: 'off' });
  const tokenBox = h('div', { class: 'modal-body' }, h('label', { for: 'reauth-token' }, 'Bearer token'), token);
  const basicBox = h('div', { class: 'modal-body' },
    h('label', { for: 'reauth-username' }, 'Username'), user,
    h('label', { for: 'reauth-password' }, 'Password'), pass);
  basicBox.hidden = true;
  const pick = (mode) => {
    tokenBox.hidden = mode !== 'token';
    basicBox.hidden = mode !== 'basic';
    (mode === 'token' ? token : user).focus();
  };
  const radio = (value, label, checked) => h('label', null,
    h('input', { type: 'radio', name: 'reauth-mode', value, checked, onchange: () => pick(value) }), label);
  modal.open(`Reauthorize ${name}`, [
    h('p', { class: 'muted' }, 'New credentials are tested at once; if they work the endpoint comes back Online and its holds are lifted. They are kept in memory only and never shown again.'),
    h('div', { class: 'segmented' }, radio('token', 'Token', true), radio('basic', 'Username and password', false)),
    tokenBox, basicBox, err,
  ], [
    { label: 'Cancel', class: 'ghost', onClick: () => modal.close() },
    {
      label: 'Reauthorize', class: 'primary', primary: true, id: 'reauth-ok',
      onClick: async (b) => {
        const body = tokenBox.hidden
          ? { username: user.value.trim(), password: pass.value }
          : { token: token.value.trim() };
        if (tokenBox.hidden ? !body.username : !body.token) {
          setFormError(err, tokenBox.hidden ? 'Enter a username.' : 'Enter a token.');
          return;
        }
        b.disabled = true;
        try {
          const a = await api('POST', sitePath(`/endpoints/${encodeURIComponent(name)}/reauthorize`), body);
          modal.close();
          toast(`${name} reauthorized: ${capital(a.state)}`, 'ok');
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
