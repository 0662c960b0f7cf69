// What the dashboard knows and shows: one shared object, the sections
// already drawn, and the hooks by which a module asks for what one that
// imports it does (app.js sets them at boot).
//
// Which buttons a role and a state allow is not decided here: every answer
// about a site, integration, flow, endpoint or transaction carries the
// actions its caller may take now (and the session those beyond a site),
// and the page offers exactly those (`offers`).

export const st = {
  session: null,        // {name, role, csrf, auth, actions}
  sites: [],
  site: null,           // the selected site's name
  integrations: [],
  endpoints: [],
  audit: [],
  tokens: [],
  nodes: [],            // daemon-wide: [{name, address, alive, integrations: ['SITE/NAME']}]
  txIntegration: {},    // site -> integration whose transactions are shown
  txState: '',
  transactions: [],
  errorGroups: [],      // the txIntegration's errors grouped by cause
  errors: { of: null, at: 0, stale: true }, // whose groups those are, when read, whether to read again now
  pollTimer: null,
  polling: false,
  pollAgain: false,
  running: false,
  log: null,            // {source, site, lastId}
  rendered: {},         // section -> signature of what it shows
};

/** Re-renders a section only when what it shows has changed. */
export function renderIf(section, data, fn) {
  const sig = JSON.stringify(data);
  if (st.rendered[section] === sig) return;
  st.rendered[section] = sig;
  fn();
}

/** Whether the answer `about` offers `action` to whoever asked. */
export const offers = (about, action) => !!about && Array.isArray(about.actions) && about.actions.includes(action);

/** Set by app.js: poll now, stop and start the running app, end the session. */
export const hooks = {
  refresh() {},
  stop() {},
  async start() {},
  signedOut() {},
};

/** Asks for fresh data now (after a change, or a new choice). */
export const refreshSoon = () => hooks.refresh();
