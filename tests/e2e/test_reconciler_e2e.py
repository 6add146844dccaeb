"""Stuck incidents against a real Alertmanager: the reconciler resolves what Alertmanager never resolves,
and only that. Short intervals: a pass every second, a grace of three seconds."""

import json
import sqlite3
import time
import urllib.request

import pytest

from ..postgres import Postgres
from .conftest import BEARER, SECRET
from .harness import Alertmanager, Listener, wait_until

DISK = ("alertname=DiskFull", "severity=warning", "instance=db-1:9100", "job=node")
# amtool stands in for Prometheus here, and sends an alert again at once: a resend delay of half a second.
FAST = {"RECONCILE_INTERVAL": "1", "RECONCILE_GRACE": "3", "PROMETHEUS_RESEND_DELAY": "0.5"}


def accepted(fake, action=None):
    return [b for b in fake.accepted() if action is None or b["event_action"] == action]


def metric(adapter, name: str) -> float:
    """The sum of a metric's samples over all its labels, as /metrics (all workers) reports it."""
    with urllib.request.urlopen(f"{adapter.url}/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def passes(adapter, outcome: str) -> float:
    return metric(adapter, f'alert24_adapter_reconcile_passes_total{{outcome="{outcome}"}}')


@pytest.fixture
def reconciling(procs, fake, start_adapter, tmp_path):
    """An adapter with the reconciler on against one real Alertmanager that sends to it."""
    listener = Listener()
    am = Alertmanager(procs, f"{listener.url}/alertmanager", http_config=BEARER)
    adapter = start_adapter(
        listener=listener, ALERTMANAGER_URL=am.url, LEDGER_URL=f"sqlite://{tmp_path}/ledger.db", **FAST
    )
    return am, adapter


def resolved_by_reconciler(adapter) -> list[dict]:
    return [line for line in adapter.log_lines() if line["msg"].startswith("reconciler: resolved an incident")]


def test_alert_ended_while_silenced_is_resolved_by_the_reconciler(reconciling, fake):
    """Alertmanager mutes the resolve of a silenced alert; the reconciler sends exactly one, same dedup_key."""
    am, adapter = reconciling
    am.fire(*DISK)
    [trigger] = wait_until(lambda: accepted(fake, "trigger"), 20, "the trigger")
    am.silence("alertname=DiskFull")
    am.resolve(*DISK)
    ended = time.monotonic()
    [resolve] = wait_until(lambda: accepted(fake, "resolve"), 20, "the reconciler's resolve")
    took = time.monotonic() - ended
    assert resolve["dedup_key"] == trigger["dedup_key"]
    assert resolve["payload"]["custom_details"]["reconciled"] is True
    assert took < 1 + 3 + 2 + 2, "within interval + grace (and a pass to notice)"
    assert [w for w in adapter.webhooks() if w.get("resolve")] == [], "Alertmanager itself sent no resolve"
    wait_until(lambda: resolved_by_reconciler(adapter), 10, "the reconciler's log line")
    after = passes(adapter, "nothing_to_do")
    wait_until(lambda: passes(adapter, "nothing_to_do") >= after + 3, 20, "three more passes")
    assert len(accepted(fake, "resolve")) == 1, "exactly one resolve"
    lines = resolved_by_reconciler(adapter)
    assert len(lines) == 1 and lines[0]["dedup_key"] == trigger["dedup_key"]


def test_silenced_alert_still_firing_stays_open(reconciling, fake):
    am, adapter = reconciling
    am.fire(*DISK)
    wait_until(lambda: accepted(fake, "trigger"), 20, "the trigger")
    am.silence("alertname=DiskFull")
    before = passes(adapter, "nothing_to_do")
    wait_until(lambda: passes(adapter, "nothing_to_do") >= before + 6, 20, "six passes past the grace period")
    assert accepted(fake, "resolve") == []
    assert metric(adapter, 'alert24_adapter_open_incidents{route="default"}') == 1


def test_alertmanager_down_skips_passes_and_resolves_nothing(reconciling, fake):
    am, adapter = reconciling
    am.fire(*DISK)
    wait_until(lambda: accepted(fake, "trigger"), 20, "the trigger")
    before = passes(adapter, "skipped")
    am.stop()
    wait_until(lambda: passes(adapter, "skipped") >= before + 6, 20, "six skipped passes (twice the grace period)")
    assert accepted(fake, "resolve") == []
    am.start()
    # Alertmanager keeps no alerts across a restart; Prometheus sends them again, as amtool does here.
    am.fire(*DISK)
    after = passes(adapter, "nothing_to_do")
    wait_until(lambda: passes(adapter, "nothing_to_do") >= after + 5, 20, "passes after the restart")
    assert accepted(fake, "resolve") == [], "the alert fires again: nothing is resolved"
    assert any("pass skipped, nothing resolved" in line["msg"] for line in adapter.log_lines())


def test_ha_pair_with_a_silent_member_resolves_nothing(procs, fake, start_adapter, tmp_path):
    listener = Listener()
    # The second member is down: its port refuses connections.
    silent = Listener(listen=False)
    am = Alertmanager(procs, f"{listener.url}/alertmanager", http_config=BEARER)
    adapter = start_adapter(
        listener=listener,
        ALERTMANAGER_URL=f"{am.url},{silent.url}",
        LEDGER_URL=f"sqlite://{tmp_path}/ledger.db",
        **FAST,
    )
    am.fire(*DISK)
    wait_until(lambda: accepted(fake, "trigger"), 20, "the trigger")
    am.silence("alertname=DiskFull")
    before = passes(adapter, "skipped")
    am.resolve(*DISK)
    wait_until(lambda: passes(adapter, "skipped") >= before + 6, 30, "six skipped passes")
    silent.close()
    assert accepted(fake, "resolve") == [], "one member could not be asked: never resolve on uncertainty"


def test_two_adapters_sharing_postgresql_send_one_resolve(procs, fake, start_adapter):
    """Two gunicorn masters (two workers each) on one real PostgreSQL: one reconciler acts, one resolve."""
    pg = Postgres().start()
    try:
        listener = Listener()
        am = Alertmanager(procs, f"{listener.url}/alertmanager", http_config=BEARER)
        env = {"ALERTMANAGER_URL": am.url, "LEDGER_URL": pg.url, **FAST}
        first = start_adapter("adapter-1", listener=listener, **env)
        second = start_adapter("adapter-2", **env)
        am.fire(*DISK)
        [trigger] = wait_until(lambda: accepted(fake, "trigger"), 20, "the trigger")
        am.silence("alertname=DiskFull")
        am.resolve(*DISK)
        [resolve] = wait_until(lambda: accepted(fake, "resolve"), 20, "the reconciler's resolve")
        assert resolve["dedup_key"] == trigger["dedup_key"]
        wait_until(lambda: resolved_by_reconciler(first) + resolved_by_reconciler(second), 10, "the resolve's log line")

        def idle_passes():
            return passes(first, "nothing_to_do") + passes(second, "nothing_to_do")

        after = idle_passes()
        wait_until(lambda: idle_passes() >= after + 4, 20, "four more passes after the resolve")
        assert len(accepted(fake, "resolve")) == 1
        actors = [a for a in (first, second) if resolved_by_reconciler(a)]
        assert len(actors) == 1 and len(resolved_by_reconciler(actors[0])) == 1, "exactly one reconciler acted"
        leaders = {
            (a.process.name, line["pid"])
            for a in (first, second)
            for line in a.log_lines()
            if line.get("logger") == "alert24_adapter.reconciler"
            # A process that merely failed to ask for the lock once has not led.
            and not line["msg"].startswith("reconciler: cannot take the ledger's lock")
        }
        assert len(leaders) == 1, f"one process ran every pass: {leaders}"
    finally:
        pg.stop()


def test_failed_ledger_write_does_not_change_the_answer(procs, fake, start_adapter, tmp_path):
    """Another process holds the SQLite file: the webhook is still answered 200, the error is counted."""
    # No reconciler: its passes would write to the held file too, and take this worker's time with it.
    listener = Listener()
    am = Alertmanager(procs, f"{listener.url}/alertmanager", http_config=BEARER)
    adapter = start_adapter(listener=listener, LEDGER_URL=f"sqlite://{tmp_path}/ledger.db")
    hog = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, timeout=10)
    hog.execute("BEGIN EXCLUSIVE")
    try:
        am.fire(*DISK)
        wait_until(lambda: adapter.webhooks(), 20, "the webhook")
    finally:
        hog.rollback()
        hog.close()
    [webhook] = adapter.webhooks()
    assert webhook["status"] == 200 and webhook["accepted"] == 1
    assert len(accepted(fake, "trigger")) == 1
    assert metric(adapter, 'alert24_adapter_ledger_errors_total{operation="record"}') == 1
    warning = [line for line in adapter.log_lines() if line["msg"].startswith("ledger not updated")]
    assert warning and "database is locked" in warning[0]["error"]
    with urllib.request.urlopen(f"{adapter.url}/readyz", timeout=5) as r:  # noqa: S310
        assert r.status == 200 and "ledger" in json.loads(r.read())
    assert SECRET not in adapter.process.output()
