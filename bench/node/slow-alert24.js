// A fake Alert24 for the storm: answers every POST with 202 after LATENCY_MS, counts what it accepted
// and how many calls it had in flight at most (GET /stats). Node's event loop makes the wait free,
// so the fake's own cost stays small beside the adapters it serves.
const http = require('http');
const LATENCY_MS = Number(process.env.LATENCY_MS || 50);
const PORT = Number(process.env.PORT);
let accepted = 0;
let inFlight = 0;
let maxInFlight = 0;
const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ accepted, max_in_flight: maxInFlight }));
    return;
  }
  if (req.method === 'GET') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end('{"status":"ok"}');
    return;
  }
  inFlight += 1;
  maxInFlight = Math.max(maxInFlight, inFlight);
  req.resume();
  req.on('end', () => {
    setTimeout(() => {
      inFlight -= 1;
      accepted += 1;
      res.writeHead(202, { 'Content-Type': 'application/json' });
      res.end('{"status":"success"}');
    }, LATENCY_MS);
  });
});
server.keepAliveTimeout = 120000;
server.listen(PORT, '127.0.0.1', 1024, () => console.log(`slow fake Alert24 on 127.0.0.1:${PORT}`));
