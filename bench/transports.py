"""CPU per call of the ways to POST one event, measured side by side against the same instant fake."""

from __future__ import annotations

import http.client
import statistics
import time
from urllib.parse import urlsplit

import requests
import urllib3

from adapter.alert24 import Alert24Client
from adapter.mapping import Event

BODY = b'{"event_action":"trigger","dedup_key":"0123456789abcdef","payload":{"summary":"bench"}}'
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer bench"}


def measure(url: str, calls: int = 2000, rounds: int = 5) -> dict[str, float]:
    """Median CPU microseconds per call for each transport, interleaved over several rounds."""
    parts = urlsplit(url)
    session = requests.Session()
    client = Alert24Client(url, "bench", connect_timeout=2, read_timeout=3, retries=4, concurrency=1)
    event = Event("0123456789abcdef", "trigger", {"summary": "bench", "custom_details": {}}, [], {})
    pool = urllib3.PoolManager().connection_from_url(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port)

    def plain_session():
        session.post(url, data=BODY, headers=HEADERS, timeout=(2, 3))

    def adapter_client():
        client.send([event], "bench", time.monotonic() + 60)

    def urllib3_pool():
        pool.urlopen("POST", parts.path, body=BODY, headers=HEADERS, retries=False).data  # noqa: B018

    def raw_http_client():
        conn.request("POST", parts.path, body=BODY, headers=HEADERS)
        conn.getresponse().read()

    ways = {
        "requests Session.post (plain)": plain_session,
        "requests adapter, prepared (the adapter's)": adapter_client,
        "urllib3 pool.urlopen": urllib3_pool,
        "http.client": raw_http_client,
    }
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            fn()
            started = time.process_time()
            for _ in range(calls):
                fn()
            samples[name].append(1e6 * (time.process_time() - started) / calls)
    client.close()
    conn.close()
    return {name: statistics.median(values) for name, values in samples.items()}
