// The Node adapter of the article the adapter's design starts from (express + axios), as a benchmark
// peer. Only the Alert24 URL and the port come from the environment, so that it runs against the
// benchmark's fake on 127.0.0.1; everything else is as the article writes it.
const express = require('express');
const axios = require('axios');
const app = express();
app.use(express.json());
const ALERT24_API_KEY = process.env.ALERT24_API_KEY;
const ALERT24_INTEGRATION_KEY = process.env.ALERT24_INTEGRATION_KEY;
const SHARED_SECRET = process.env.SHARED_SECRET;
const ALERT24_API_URL = process.env.ALERT24_API_URL;
const PORT = Number(process.env.PORT);
app.post('/alertmanager', async (req, res) => {
  const authHeader = req.headers['authorization'] || '';
  if (authHeader !== `Bearer ${SHARED_SECRET}`) {
    return res.status(401).json({ error: 'Unauthorized' });
  }
  const { status, alerts, groupKey } = req.body;
  for (const alert of alerts) {
    const { alertname, severity, service } = alert.labels;
    const summary = alert.annotations?.summary || alertname;
    const dedupeKey = `${groupKey}-${alertname}`;
    if (alert.status === 'firing') {
      await axios.post(
        ALERT24_API_URL,
        {
          integration_key: ALERT24_INTEGRATION_KEY,
          event_action: 'trigger',
          dedup_key: dedupeKey,
          payload: {
            summary: summary,
            severity: severity === 'critical' ? 'critical' : 'warning',
            source: service || 'prometheus',
            custom_details: alert.labels,
          },
          links: alert.annotations?.runbook_url
            ? [{ href: alert.annotations.runbook_url, text: 'Runbook' }]
            : [],
        },
        { headers: { 'Content-Type': 'application/json' } }
      );
    } else if (alert.status === 'resolved') {
      await axios.post(
        ALERT24_API_URL,
        { integration_key: ALERT24_INTEGRATION_KEY, event_action: 'resolve', dedup_key: dedupeKey },
        { headers: { 'Content-Type': 'application/json' } }
      );
    }
  }
  res.status(200).json({ ok: true });
});
app.get('/healthz', (req, res) => res.json({ status: 'ok' }));
app.listen(PORT, '127.0.0.1', () => console.log(`article adapter listening on 127.0.0.1:${PORT}`));
