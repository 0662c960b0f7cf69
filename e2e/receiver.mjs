// A small HTTP target for the end-to-end test: takes every record, except
// one with `"reject"`, which it refuses with 422 and a reason, so the
// dashboard has Error transactions (and the target's answers) to show.
// `"reject": true` is a contact without consent; `"reject": CAUSE` names one
// of CAUSES below, so that one integration fails for more than one cause.
// Orders (`POST /orders`) take a few milliseconds each, as a real system
// would, so that a resume's progress can be watched.
//
// For the test itself, under /e2e/ (nothing of sluice calls these):
// - `POST /e2e/accept {"cause": CAUSE}`: from now on records rejected for
//   CAUSE are taken (the target was fixed), so that a retry delivers them;
// - `GET /e2e/received?path=/signups`: the records taken at that path, in
//   the order they came, each as {path, record, idempotency_key}.
// Prints `receiver listening on PORT` once it listens.
import http from 'node:http';

/** The answer of each cause, for a record: its id varies, the rest does not. */
const CAUSES = {
  duplicate: (r) => `signup ${r.id}: ${r.email} is already subscribed`,
  bounced: (r) => `signup ${r.id}: the mailbox does not exist, the address is not deliverable`,
};

let received = 0;
const taken = [];
const accepted = new Set();

const json = (res, status, value) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));

const server = http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk) => { body += chunk; });
  req.on('end', () => {
    const url = new URL(req.url, 'http://receiver');
    if (url.pathname === '/e2e/received' && req.method === 'GET') {
      const path = url.searchParams.get('path');
      json(res, 200, taken.filter((t) => !path || t.path === path));
      return;
    }
    if (url.pathname === '/e2e/accept' && req.method === 'POST') {
      const { cause } = JSON.parse(body || '{}');
      if (!CAUSES[cause]) {
        json(res, 400, { error: `no cause '${cause}': one of ${Object.keys(CAUSES).join(', ')}` });
        return;
      }
      accepted.add(cause);
      json(res, 200, { accepted: [...accepted] });
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`ok, ${received} records so far\n`);
      return;
    }
    let record = null;
    try { record = JSON.parse(body); } catch { /* answered below */ }
    if (!record || typeof record !== 'object') {
      json(res, 400, { error: 'the body is not a JSON object' });
      return;
    }
    if (record.reject === true) {
      const who = record.email || record.id || 'the record';
      json(res, 422, { error: `${who}: the CRM refuses contacts without a consent flag` });
      return;
    }
    if (record.reject && !accepted.has(record.reject)) {
      const cause = CAUSES[record.reject];
      json(res, 422, { error: cause ? cause(record) : `no such cause: ${record.reject}` });
      return;
    }
    received += 1;
    taken.push({ path: url.pathname, record, idempotency_key: req.headers['idempotency-key'] || null });
    const delay = url.pathname.startsWith('/orders') ? 3 : 0;
    setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'), delay);
  });
});

server.listen(0, '127.0.0.1', () => {
  console.log(`receiver listening on ${server.address().port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
