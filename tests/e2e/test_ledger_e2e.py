"""The ledger under contention: three gevent workers on one SQLite file, a burst of webhooks, and scrapes."""

import copy
import json
import sqlite3
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from ..conftest import payload
from .conftest import SECRET

WEBHOOKS = 300
AT_ONCE = 48
SCRAPES = 2  # at least: the check below is not vacuous, however fast or slow the machine


def post(url: str, body: dict) -> int:
    req = urllib.request.Request(  # noqa: S310
        f"{url}/alertmanager",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"},
    )
    with urllib.request.urlopen(req, timeout=20) as r:  # noqa: S310
        return r.status


def notification(i: int) -> dict:
    """One firing alert of its own (its own instance, so its own fingerprint and incident)."""
    body = copy.deepcopy(payload("firing-single"))
    for alert in body["alerts"]:
        alert["labels"]["instance"] = f"host-{i}:9100"
        alert.pop("fingerprint", None)
    return body


def test_every_accepted_trigger_is_in_the_ledger_under_contention(start_adapter, fake, tmp_path):
    """3 workers, many webhooks at once, /metrics every 50 ms: the ledger holds every trigger, and no error."""
    ledger = tmp_path / "ledger.db"
    adapter = start_adapter(WEB_CONCURRENCY="3", LEDGER_URL=f"sqlite://{ledger}", WEBHOOK_TIME_BUDGET="5")
    stop = threading.Event()
    scrapes: list[str] = []
    failed: list[str] = []

    def scrape() -> None:
        # From the first moment: each worker creates its metrics files while the first webhooks arrive.
        while not stop.wait(0.05):
            try:
                with urllib.request.urlopen(f"{adapter.url}/metrics", timeout=10) as r:  # noqa: S310
                    scrapes.append(r.read().decode())
            except Exception as exc:  # noqa: BLE001 - whatever a scrape meets is recorded, never lost with the thread
                failed.append(repr(exc))

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(AT_ONCE) as pool:
            statuses = list(pool.map(lambda i: post(adapter.url, notification(i)), range(WEBHOOKS), timeout=120))
    finally:
        took = time.monotonic() - started
        stop.set()
        scraper.join(timeout=15)
    assert not scraper.is_alive()
    assert statuses == [200] * WEBHOOKS
    triggers = {b["dedup_key"] for b in fake.accepted() if b["event_action"] == "trigger"}
    assert len(triggers) == WEBHOOKS
    with sqlite3.connect(ledger) as conn:
        recorded = {row[0] for row in conn.execute("SELECT dedup_key FROM alert24_adapter_incidents")}
    assert recorded == triggers, f"{len(triggers - recorded)} accepted triggers missing from the ledger"
    assert failed == [], f"{len(failed)} of {len(failed) + len(scrapes)} scrapes failed"
    # Scrapes ran while the webhooks did (how many depends on the machine's load: a count, not a rate).
    assert len(scrapes) >= SCRAPES, f"only {len(scrapes)} scrapes in {took:.1f} s"
    with urllib.request.urlopen(f"{adapter.url}/metrics", timeout=10) as r:  # noqa: S310
        final = r.read().decode()
    for text in (*scrapes, final):
        errors = [line for line in text.splitlines() if line.startswith("alert24_adapter_ledger_errors_total{")]
        assert all(float(line.rsplit(" ", 1)[1]) == 0 for line in errors), errors
    assert f'alert24_adapter_open_incidents{{route="default"}} {float(WEBHOOKS)}' in final
    pids = {line["pid"] for line in adapter.webhooks()}
    assert len(pids) == 3, f"the webhooks were served by workers {pids}"
