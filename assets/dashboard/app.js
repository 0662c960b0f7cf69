// sluice dashboard: plain JavaScript, no build step, nothing loaded from
// elsewhere. Every text that comes from the server goes into the page as a
// text node (never as HTML). Data is polled; the site log is streamed.
'use strict';

(() => {
  const POLL_MS = 1500;
  const PROGRESS_MS = 400;
  const LOG_KEEP = 1500;
  const RANK = { viewer: 0, operator: 1, admin: 2 };

  // ------------------------------------------------------------ state
  const st = {
    session: null,        // {name, role, csrf, auth}
    sites: [],
    site: null,           // the selected site's name
    integrations: [],
    endpoints: [],
    audit: [],
    tokens: [],
    txIntegration: {},    // site -> integration whose transactions are shown
    txState: '',
    transactions: [],
    pollTimer: null,
    polling: false,
    pollAgain: false,
    running: false,
    log: null,            // {source, site, lastId}
    rendered: {},         // section -> signature of what it shows
  };

  // ------------------------------------------------------------ DOM helpers
  const $ = (id) => document.getElementById(id);

  /** Makes an element. Strings and numbers among the children become text nodes. */
  function h(tag, attrs, ...children) {
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

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  function replace(el, ...children) {
    el.replaceChildren();
    append(el, children);
  }

  function chip(text, colour, extra) {
    return h('span', { class: `chip ${colour || 'grey'}${extra ? ' ' + extra : ''}` }, text);
  }

  function btn(label, cls, onclick, attrs) {
    return h('button', Object.assign({ type: 'button', class: `btn ${cls || ''}`, onclick }, attrs || {}), label);
  }

  function table(headers, rows, empty) {
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

  /** Re-renders a section only when what it shows has changed. */
  function renderIf(section, data, fn) {
    const sig = JSON.stringify([data, st.session && st.session.role]);
    if (st.rendered[section] === sig) return;
    st.rendered[section] = sig;
    fn();
  }

  // ------------------------------------------------------------ formatting
  const pad = (n) => String(n).padStart(2, '0');

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const now = new Date();
    if (d.toDateString() === now.toDateString()) return time;
    const month = d.toLocaleString('en', { month: 'short' });
    return `${pad(d.getDate())}-${month} ${time}`;
  }

  function timeEl(iso) {
    return h('time', { datetime: iso || undefined, title: iso || undefined }, fmtTime(iso));
  }

  function fmtDuration(s) {
    if (s === null || s === undefined || !Number.isFinite(s)) return '—';
    s = Math.max(0, Math.round(s));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  const fmtNum = (n) => (typeof n === 'number' ? n.toLocaleString('en') : String(n));
  const capital = (s) => (s ? s.charAt(0).toUpperCase() + s.slice(1) : s);

  const SITE_COLOUR = { running: 'green', stopped: 'red', starting: 'amber', stopping: 'amber' };
  const STATE_COLOUR = { active: 'green', paused: 'amber', stopped: 'grey' };
  const STATUS_COLOUR = {
    Running: 'green', Failed: 'red', Idle: 'grey', Disabled: 'grey',
    Restarting: 'blue', 'Server Reinitializing': 'blue', Unknown: 'amber',
  };
  const ENDPOINT_COLOUR = { online: 'green', offline: 'red', unauthorized: 'amber', disabled: 'grey' };
  const FLOW_COLOUR = {
    'Pending All': 'amber', 'Pending Changed': 'amber', Running: 'blue',
    Success: 'green', Failed: 'red', Halted: 'amber',
  };
  const RUN_COLOUR = { success: 'green', failed: 'red', halted: 'amber' };
  const TX_COLOUR = { queued: 'grey', sending: 'blue', sent: 'green', error: 'red', ignored: 'grey' };
  const HOLD_COLOUR = { operator: 'amber', 'endpoint-offline': 'red', unauthorized: 'amber', 'site-stopped': 'red' };

  // ------------------------------------------------------------ roles
  const can = (role) => !!st.session && RANK[st.session.role] >= RANK[role];

  // ------------------------------------------------------------ API
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET' && st.session && st.session.csrf) headers['X-CSRF-Token'] = st.session.csrf;
    let res;
    try {
      res = await fetch(`/api/v1${path}`, {
        method,
        headers,
        credentials: 'same-origin',
        cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, 'cannot reach the sluice daemon');
    }
    let data = null;
    const type = res.headers.get('content-type') || '';
    if (res.status !== 204) {
      if (type.includes('json')) data = await res.json().catch(() => null);
      else data = await res.text().catch(() => null);
    }
    if (res.ok) return data;
    const message = (data && typeof data === 'object' && data.error) || (typeof data === 'string' && data) || res.statusText;
    if (res.status === 401 && path !== '/session') {
      signedOut('Your session has ended; sign in again.');
    }
    throw new ApiError(res.status, message);
  }

  const sitePath = (rest) => `/sites/${encodeURIComponent(st.site)}${rest || ''}`;

  /** A write from a button: errors become toasts; 403 names the role. */
  async function act(method, path, body, okText) {
    try {
      const answer = await api(method, path, body);
      if (okText) toast(typeof okText === 'function' ? okText(answer) : okText, 'ok');
      refreshSoon();
      return answer;
    } catch (e) {
      showError(e);
      refreshSoon();
      return undefined;
    }
  }

  function errorText(e) {
    if (!(e instanceof ApiError)) return String(e && e.message ? e.message : e);
    if (e.status === 403) return `Not allowed for role ${st.session ? st.session.role : '?'}: ${e.message}`;
    return e.message;
  }

  function showError(e) {
    if (e instanceof ApiError && e.status === 401) return; // the sign-in screen says it
    toast(errorText(e), 'error');
  }

  // ------------------------------------------------------------ toasts and banner
  function toast(text, kind) {
    const box = $('toasts');
    const el = h('div', { class: `toast ${kind || ''}`, role: kind === 'error' ? 'alert' : 'status' },
      h('span', { class: 'toast-text' }, text),
      h('button', { type: 'button', 'aria-label': 'Dismiss', onclick: () => el.remove() }, '×'));
    box.append(el);
    while (box.children.length > 4) box.firstChild.remove();
    setTimeout(() => el.remove(), kind === 'error' ? 9000 : 4500);
  }

  function banner(text) {
    const el = $('banner');
    if (text) {
      el.textContent = text;
      el.hidden = false;
    } else {
      el.hidden = true;
    }
  }

  // ------------------------------------------------------------ modal
  const modal = {
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

  function closedModal() {
    const f = modal.onClose;
    modal.onClose = null;
    if (f) f();
  }

  function confirmModal(title, bodyNodes, okLabel, okClass) {
    return new Promise((resolve) => {
      let answered = false;
      modal.open(title, bodyNodes, [
        { label: 'Cancel', class: 'ghost', onClick: () => modal.close() },
        {
          label: okLabel, class: okClass || 'primary', primary: true, id: 'modal-ok',
          onClick: () => { answered = true; resolve(true); },
        },
      ], () => { if (!answered) resolve(false); });
    });
  }

  function formError(text) {
    const p = h('p', { class: 'form-error', role: 'alert' }, text || '');
    p.hidden = !text;
    return p;
  }

  function setFormError(p, text) {
    p.textContent = text || '';
    p.hidden = !text;
  }

  // ------------------------------------------------------------ session
  async function loadSession() {
    try {
      return await api('GET', '/session');
    } catch (e) {
      if (e.status === 404) {
        // A daemon without sign-in: everyone on loopback is admin.
        return { name: 'anonymous', role: 'admin', csrf: '', auth: 'open' };
      }
      if (e.status === 401) return null;
      throw e;
    }
  }

  function showSignIn(message) {
    stopRunning();
    $('app').hidden = true;
    $('user').hidden = true;
    $('site-tabs').hidden = true;
    $('site-select').parentElement.hidden = true;
    $('signin').hidden = false;
    setFormError($('signin-error'), message || '');
    $('signin-token').value = '';
    $('signin-token').focus();
    document.title = 'Sign in · sluice';
  }

  function signedOut(message) {
    if (!$('signin').hidden) return;
    st.session = null;
    modal.close();
    showSignIn(message);
  }

  async function signIn(ev) {
    ev.preventDefault();
    const token = $('signin-token').value.trim();
    if (!token) {
      setFormError($('signin-error'), 'Enter your token.');
      return;
    }
    $('signin-submit').disabled = true;
    try {
      st.session = await api('POST', '/session', { token });
      $('signin').hidden = true;
      await startApp();
    } catch (e) {
      setFormError($('signin-error'), e.status === 401 ? 'That token is not valid.' : errorText(e));
    } finally {
      $('signin-submit').disabled = false;
    }
  }

  async function signOut() {
    try {
      await api('DELETE', '/session');
    } catch (e) {
      if (e.status !== 401) showError(e);
    }
    st.session = null;
    showSignIn('Signed out.');
  }

  function renderUser() {
    const s = st.session;
    $('user').hidden = false;
    $('user-name').textContent = s.name;
    $('user-name').title = s.auth === 'open' ? 'open mode: no tokens, loopback only' : s.name;
    $('user-role').textContent = s.role;
    $('sign-out').hidden = s.auth === 'open';
  }

  // ------------------------------------------------------------ start and poll
  async function boot() {
    $('signin-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', signOut);
    $('site-select').addEventListener('change', (e) => selectSite(e.target.value));
    $('site-start').addEventListener('click', startSite);
    $('site-stop').addEventListener('click', stopSite);
    $('token-new').addEventListener('click', newToken);
    $('tx-integration').addEventListener('change', (e) => {
      st.txIntegration[st.site] = e.target.value;
      refreshSoon();
    });
    $('tx-state').addEventListener('change', (e) => {
      st.txState = e.target.value;
      refreshSoon();
    });
    $('modal').addEventListener('close', closedModal);
    $('modal-form').addEventListener('submit', (e) => {
      e.preventDefault();
      if (modal.primary && !modal.primary.disabled) modal.primary.click();
    });
    window.addEventListener('hashchange', () => {
      const name = decodeURIComponent(location.hash.slice(1));
      if (name && name !== st.site && st.sites.some((s) => s.name === name)) selectSite(name);
    });
    try {
      st.session = await loadSession();
    } catch (e) {
      banner(`The dashboard cannot start: ${errorText(e)}`);
      setTimeout(boot2, 3000);
      return;
    }
    if (!st.session) showSignIn();
    else await startApp();
  }

  async function boot2() {
    try {
      st.session = await loadSession();
      banner('');
      if (!st.session) showSignIn();
      else await startApp();
    } catch (e) {
      setTimeout(boot2, 3000);
    }
  }

  async function startApp() {
    renderUser();
    $('signin').hidden = true;
    $('app').hidden = false;
    $('site-tabs').hidden = false;
    $('site-select').parentElement.hidden = false;
    st.rendered = {};
    st.running = true;
    try {
      st.sites = await api('GET', '/sites');
    } catch (e) {
      showError(e);
      st.sites = [];
    }
    const wanted = decodeURIComponent(location.hash.slice(1));
    const first = st.sites.find((s) => s.name === wanted) || st.sites[0];
    renderSites();
    if (first) selectSite(first.name);
  }

  function stopRunning() {
    st.running = false;
    clearTimeout(st.pollTimer);
    closeLog();
  }

  function selectSite(name) {
    if (!name) return;
    const changed = st.site !== name;
    st.site = name;
    if (location.hash.slice(1) !== encodeURIComponent(name)) {
      history.replaceState(null, '', `#${encodeURIComponent(name)}`);
    }
    document.title = `${name} · sluice`;
    if (changed) {
      for (const k of Object.keys(st.rendered)) if (k !== 'sites') delete st.rendered[k];
      st.integrations = [];
      st.endpoints = [];
      st.audit = [];
      st.transactions = [];
      replace($('integrations'), h('p', { class: 'empty' }, 'Loading…'));
      replace($('endpoints'));
      replace($('transactions'));
      replace($('audit'));
      openLog();
    }
    st.rendered.sites = null;
    renderSites();
    refreshSoon();
  }

  function refreshSoon() {
    if (!st.running) return;
    clearTimeout(st.pollTimer);
    if (st.polling) {
      st.pollAgain = true;
      return;
    }
    poll();
  }

  async function poll() {
    if (!st.running || !st.site) return;
    st.polling = true;
    const site = st.site;
    try {
      const [sites, integrations, endpoints, audit] = await Promise.all([
        api('GET', '/sites'),
        api('GET', sitePath('/integrations')),
        api('GET', sitePath('/endpoints')),
        api('GET', sitePath('/audit?limit=50')),
      ]);
      // Tokens are daemon-wide and for admins only.
      st.tokens = can('admin') ? await api('GET', '/tokens') : [];
      if (site === st.site) {
        st.sites = sites;
        st.integrations = integrations;
        st.endpoints = endpoints;
        st.audit = audit;
        let txName = st.txIntegration[site];
        if (!integrations.some((i) => i.name === txName)) {
          txName = integrations.length ? integrations[0].name : null;
          st.txIntegration[site] = txName;
        }
        if (txName) {
          const q = new URLSearchParams({ limit: '50' });
          if (st.txState) q.set('state', st.txState);
          st.transactions = await api('GET', sitePath(`/integrations/${encodeURIComponent(txName)}/transactions?${q}`));
        } else {
          st.transactions = [];
        }
        banner('');
        renderAll();
      }
    } catch (e) {
      if (e.status === 0) banner('Cannot reach the sluice daemon; retrying…');
      else if (e.status !== 401) banner(`Cannot refresh: ${errorText(e)}`);
    } finally {
      st.polling = false;
      if (st.running) {
        if (st.pollAgain) {
          st.pollAgain = false;
          poll();
        } else {
          st.pollTimer = setTimeout(poll, POLL_MS);
        }
      }
    }
  }

  function renderAll() {
    renderSites();
    renderSite();
    renderIntegrations();
    renderEndpoints();
    renderTransactions();
    renderAudit();
    renderTokens();
  }

  // ------------------------------------------------------------ sites
  function renderSites() {
    const data = st.sites.map((s) => [s.name, s.state]);
    renderIf('sites', [data, st.site], () => {
      replace($('site-tabs'), st.sites.map((s) => h('button', {
        type: 'button', role: 'tab', class: 'site-tab',
        'aria-selected': s.name === st.site ? 'true' : 'false',
        title: `${s.name}: ${s.state}`,
        onclick: () => selectSite(s.name),
      }, h('span', { class: `dot ${SITE_COLOUR[s.state] || ''}` }), s.name)));
      replace($('site-select'), st.sites.map((s) => h('option', {
        value: s.name, selected: s.name === st.site,
      }, `${s.name} (${s.state})`)));
      $('site-select').value = st.site || '';
    });
  }

  function currentSite() {
    return st.sites.find((s) => s.name === st.site);
  }

  function renderSite() {
    const s = currentSite();
    if (!s) return;
    renderIf('site', s, () => {
      $('site-name').textContent = s.name;
      const state = $('site-state');
      state.className = `chip ${SITE_COLOUR[s.state] || 'grey'}`;
      state.textContent = capital(s.state);
      replace($('site-since'), 'since ', timeEl(s.since));
      const info = $('site-stop-info');
      if (s.state !== 'running' && s.stop_reason) {
        replace(info, 'Stopped by ', h('strong', null, s.stopped_by || 'someone'), ' at ', timeEl(s.stopped_at),
          ': “', s.stop_reason, '”');
        info.hidden = false;
      } else {
        info.hidden = true;
      }
      $('site-start').hidden = !(can('admin') && s.state === 'stopped');
      $('site-stop').hidden = !(can('admin') && (s.state === 'running' || s.state === 'starting'));
    });
  }

  async function startSite() {
    const name = st.site;
    await act('POST', `/sites/${encodeURIComponent(name)}/start`, {}, `Site ${name} started`);
  }

  function stopSite() {
    const name = st.site;
    const reason = h('input', {
      id: 'stop-reason', type: 'text', maxlength: '500',
      placeholder: 'e.g. Stopping integration due to stocktake',
    });
    const err = formError();
    reason.addEventListener('input', () => setFormError(err, ''));
    modal.open('Confirm Service Stop', [
      h('p', null, 'Stop site ', h('strong', null, name), '? Scheduled tasks do not run and running tasks are halted until it is started again. Nothing queued is lost.'),
      h('label', { for: 'stop-reason' }, 'Stoppage reason'),
      reason,
      err,
    ], [
      { label: 'Cancel', class: 'ghost', onClick: () => modal.close() },
      {
        label: 'Stop Site', class: 'danger', primary: true, id: 'confirm-stop',
        onClick: async (b) => {
          const text = reason.value.trim();
          if (!text) {
            setFormError(err, 'Enter a reason for the stop: it goes into the audit trail.');
            reason.focus();
            return;
          }
          b.disabled = true;
          try {
            await api('POST', `/sites/${encodeURIComponent(name)}/stop`, { reason: text });
            modal.close();
            toast(`Site ${name} stopped`, 'ok');
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

  // ------------------------------------------------------------ integrations
  function renderIntegrations() {
    const kinds = Object.fromEntries(st.endpoints.map((e) => [e.name, e.kind]));
    renderIf('integrations', [st.integrations, kinds], () => {
      const box = $('integrations');
      if (!st.integrations.length) {
        replace(box, h('p', { class: 'empty' }, 'This site has no integrations.'));
        return;
      }
      replace(box, st.integrations.map((i) => integrationCard(i, kinds)));
    });
  }

  function integrationActions(i) {
    const path = `/integrations/${encodeURIComponent(i.name)}`;
    const out = [];
    if (can('operator') && i.state === 'active') {
      out.push(btn('Pause', 'warn small', () => pauseIntegration(i), { dataset: { action: 'pause' } }));
    }
    if (can('operator') && i.state === 'paused') {
      out.push(btn('Resume', 'primary small', () => resumeIntegration(i), { dataset: { action: 'resume' } }));
    }
    if (can('admin') && i.state === 'stopped') {
      out.push(btn('Start', 'success small', () => act('POST', sitePath(`${path}/start`), {}, `Integration ${i.name} started`), { dataset: { action: 'start' } }));
    }
    if (can('admin') && i.state !== 'stopped') {
      out.push(btn('Stop', 'danger small', () => stopIntegration(i), { dataset: { action: 'stop' } }));
    }
    out.push(btn('Transactions', 'ghost small', () => showTransactions(i.name), { dataset: { action: 'transactions' } }));
    return out;
  }

  function integrationCard(i, kinds) {
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
        stat('Last run', lastFlowRun ? timeEl(lastFlowRun) : '—')),
      progress,
      notes.length ? h('div', { class: 'notes' }, notes) : null,
      i.flows.length ? h('div', { class: 'table-wrap' }, flowsTable(i, kinds)) : null);
  }

  function stat(label, value, key) {
    return h('div', { class: 'stat', dataset: key ? { stat: key } : undefined },
      h('span', { class: 'label' }, label), h('span', { class: 'value' }, value));
  }

  const RUN_COUNTS = [['captured', 'captured'], ['succeeded', 'succeeded'], ['failed', 'failed'], ['pages', 'page', 'pages']];

  function flowsTable(i, kinds) {
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
      const actions = [];
      if (can('operator') && !push && f.enabled) {
        actions.push(btn('Send All', 'small', () => runFlow(f.name, 'all'), { dataset: { action: 'send-all' } }));
        actions.push(btn('Send Changed', 'small', () => runFlow(f.name, 'changed'), { dataset: { action: 'send-changed' } }));
      }
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

  // ------------------------------------------------------------ endpoints
  function renderEndpoints() {
    renderIf('endpoints', st.endpoints, () => {
      const rows = st.endpoints.map((e) => {
        const actions = [];
        if (can('operator')) actions.push(btn('Test', 'small', () => testEndpoint(e.name), { dataset: { action: 'test' } }));
        if (can('admin') && e.kind === 'http') {
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

  // ------------------------------------------------------------ transactions
  function showTransactions(name) {
    st.txIntegration[st.site] = name;
    $('tx-integration').value = name;
    refreshSoon();
    $('tx-card').scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  function renderTransactions() {
    const names = st.integrations.map((i) => i.name);
    const current = st.txIntegration[st.site];
    renderIf('tx-select', [names, current], () => {
      replace($('tx-integration'), names.map((n) => h('option', { value: n, selected: n === current }, n)));
      $('tx-integration').value = current || '';
    });
    $('tx-state').value = st.txState;
    renderIf('transactions', [current, st.txState, st.transactions], () => {
      const rows = st.transactions.map((t) => h('tr', {
        class: `clickable${t.state === 'error' ? ' row-error' : ''}`,
        tabindex: '0',
        dataset: { seq: String(t.seq), state: t.state },
        title: 'Show this transaction',
        onclick: () => transactionModal(current, t),
        onkeydown: (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); transactionModal(current, t); } },
      },
      h('td', { class: 'num mono' }, `#${t.seq}`),
      h('td', null, t.flow, t.key ? h('span', { class: 'sub mono' }, t.key) : null),
      h('td', null, chip(t.state, TX_COLOUR[t.state], 'tx-state')),
      h('td', { class: 'hide-narrow' }, timeEl(t.created_at)),
      h('td', { class: 'num hide-narrow' }, String(t.attempts)),
      h('td', { class: t.last_error ? 'err' : 'muted', title: t.last_error || undefined }, t.last_error || '—')));
      const what = st.txState ? `${st.txState} transactions` : 'transactions';
      replace($('transactions'), table([{ text: 'Seq', class: 'num' }, 'Flow / key', 'State',
        { text: 'Created', class: 'hide-narrow' }, { text: 'Attempts', class: 'num hide-narrow' }, 'Last error'],
      rows, current ? `No ${what} in ${current}.` : 'No integration.'));
    });
  }

  async function openTransaction(integration, seq) {
    try {
      const t = await api('GET', sitePath(`/integrations/${encodeURIComponent(integration)}/transactions/${seq}`));
      transactionModal(integration, t);
    } catch (e) {
      showError(e);
    }
  }

  function transactionModal(integration, t) {
    const path = sitePath(`/integrations/${encodeURIComponent(integration)}/transactions/${t.seq}`);
    const kv = (k, v) => [h('dt', null, k), h('dd', null, v)];
    const buttons = [{ label: 'Close', class: 'ghost', primary: true, onClick: () => modal.close() }];
    const action = (label, verb, cls) => ({
      label, class: cls, id: `tx-${verb}`,
      onClick: async (b) => {
        b.disabled = true;
        const a = await act('POST', `${path}/${verb}`, undefined, (x) => `Transaction #${t.seq}: ${x.state}`);
        b.disabled = false;
        if (a) modal.close();
      },
    });
    if (can('operator')) {
      if (t.state === 'error') buttons.unshift(action('Ignore', 'ignore', 'warn'), action('Retry', 'retry', 'primary'));
      if (t.state === 'sent' || t.state === 'ignored' || t.state === 'error') buttons.unshift(action('Replay', 'replay', ''));
    }
    modal.open(`Transaction #${t.seq}`, [
      h('dl', { class: 'kv' },
        kv('Integration', integration),
        kv('Flow', t.flow),
        kv('Key', t.key || '—'),
        kv('State', chip(t.state, TX_COLOUR[t.state])),
        kv('Created', timeEl(t.created_at)),
        kv('Updated', timeEl(t.updated_at)),
        kv('Attempts', String(t.attempts))),
      h('h3', null, t.state === 'error' ? "The target's answer" : 'Last error'),
      h('pre', { id: 'tx-last-error' }, t.last_error || '—'),
      h('h3', null, 'Record'),
      h('pre', null, JSON.stringify(t.record, null, 2)),
    ], buttons);
  }

  // ------------------------------------------------------------ audit
  function renderAudit() {
    renderIf('audit', st.audit, () => {
      const rows = st.audit.map((a) => h('tr', { class: a.outcome === 'ok' ? null : 'row-refused' },
        h('td', null, timeEl(a.at)),
        h('td', null, a.actor),
        h('td', null, h('span', { class: 'mono' }, a.action), h('span', { class: 'sub' }, a.subject),
          a.outcome === 'ok' ? null : h('span', { class: 'sub err-text' }, a.outcome)),
        h('td', null, a.reason || h('span', { class: 'muted' }, '—'))));
      replace($('audit'), table(['When', 'Who', 'What', 'Reason'], rows, 'Nothing yet.'));
    });
  }

  // ------------------------------------------------------------ API tokens (admins)
  function renderTokens() {
    const card = $('tokens-card');
    card.hidden = !can('admin');
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

  function newToken() {
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

  // ------------------------------------------------------------ site log (server-sent events)
  function closeLog() {
    if (st.log && st.log.source) st.log.source.close();
    st.log = null;
  }

  function logStatus(text, colour) {
    const el = $('log-status');
    el.className = `chip ${colour}`;
    el.textContent = text;
  }

  function openLog() {
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

  document.addEventListener('DOMContentLoaded', boot);
})();
