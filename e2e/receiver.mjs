// A small HTTP target for the end-to-end test: takes every record, except
// one with `"reject": true`, which it refuses with 422 and a reason, so the
// dashboard has an Error transaction (and the target's answer) to show.
// Orders (`POST /orders`) take a few milliseconds each, as a real system
// would, so that a resume's progress can be watched.
// Prints `receiver listening on PORT` once it listens.
import http from 'node:http';

let received = 0;
const server = http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk) => { body += chunk; });
  req.on('end', () => {
    if (req.method !== 'POST') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`ok, ${received} records so far\n`);
      return;
    }
    let record = null;
    try { record = JSON.parse(body); } catch { /* answered below */ }
    if (!record || typeof record !== 'object') {
      res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"the body is not a JSON object"}');
      return;
    }
    if (record.reject) {
      const who = record.email || record.id || 'the record';
      res.writeHead(422, { 'content-type': 'application/json' })
        .end(JSON.stringify({ error: `${who}: the CRM refuses contacts without a consent flag` }));
      return;
    }
    received += 1;
    const delay = req.url.startsWith('/orders') ? 3 : 0;
    setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'), delay);
  });
});

server.listen(0, '127.0.0.1', () => {
  console.log(`receiver listening on ${server.address().port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
