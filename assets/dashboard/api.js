// The REST API under /api/v1, as the CLI uses it: the session's cookie and
// its CSRF value; every error an ApiError with the answer's message.

import { hooks, refreshSoon, st } from './state.js';
import { toast } from './notice.js';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function api(method, path, body) {
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
    hooks.signedOut('Your session has ended; sign in again.');
  }
  throw new ApiError(res.status, message);
}

export const sitePath = (rest) => `/sites/${encodeURIComponent(st.site)}${rest || ''}`;

/** A write from a button: errors become toasts; 403 names the role. */
export async function act(method, path, body, okText) {
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

export function errorText(e) {
  if (!(e instanceof ApiError)) return String(e && e.message ? e.message : e);
  if (e.status === 403) return `Not allowed for role ${st.session ? st.session.role : '?'}: ${e.message}`;
  return e.message;
}

export function showError(e) {
  if (e instanceof ApiError && e.status === 401) return; // the sign-in screen says it
  toast(errorText(e), 'error');
}
