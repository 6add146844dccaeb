"""The SQLite ledger: WAL, a location it cannot use, other writers, contention, the gevent hub, and indexes."""

import sqlite3
import threading
import time

import pytest

from adapter.errors import LedgerError
from adapter.ledger import SqliteLedger, open_ledger

from .conftest import run_probe
from .ledgers import event, keys


def test_sqlite_file_is_in_wal_mode(tmp_path):
    ledger = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    ledger.setup()
    ledger.close()
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unusable_sqlite_location_fails_fast_and_then_backs_off(tmp_path):
    (tmp_path / "not-a-directory").write_text("")
    ledger = open_ledger(f"sqlite://{tmp_path}/not-a-directory/ledger.db")
    try:
        with pytest.raises(LedgerError, match="the ledger \\(sqlite://.*\\) failed: .*not-a-directory"):
            ledger.record("", [event("a")], 1000.0)
        with pytest.raises(LedgerError, match="failed moments ago; not retried yet"):
            ledger.record("", [event("a")], 1000.0)
    finally:
        ledger.close()  # its housekeeping would go on failing, every second, for the rest of the test process


def test_sqlite_held_by_another_writer_is_a_ledger_error(tmp_path):
    ledger = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    ledger.setup()
    hog = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    hog.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LedgerError, match="database is locked"):
            ledger.record("", [event("a")], 1000.0)
    finally:
        hog.rollback()
        hog.close()
        ledger.close()


# -- under contention ------------------------------------------------------------------------------


@pytest.fixture
def hog(tmp_path):
    """Another process's connection to the SQLite ledger at tmp_path/ledger.db, to hold its locks with."""
    conns = []

    def _hold(mode="IMMEDIATE"):
        conn = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, timeout=0, check_same_thread=False)
        conn.execute(f"BEGIN {mode}")
        conns.append(conn)
        return conn

    yield _hold
    for conn in conns:
        conn.rollback()
        conn.close()


@pytest.fixture
def sqlite_ledger(tmp_path, monkeypatch):
    import adapter.ledger

    monkeypatch.setattr(adapter.ledger, "TIMEOUT_SECONDS", 0.3)
    ledger = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    ledger.setup()
    yield ledger
    ledger.close()


def test_reads_take_no_write_lock(sqlite_ledger, hog):
    """A writer in another process holds the write lock: the incidents can still be listed and counted."""
    sqlite_ledger.record("", [event("a")], 1000.0)
    hog("IMMEDIATE")
    assert keys(sqlite_ledger) == [("", "a")]
    assert sqlite_ledger.counts() == {"": 1}


def test_reads_never_queue_behind_this_processs_waiting_writes(sqlite_ledger, hog, monkeypatch):
    """While one of this process's writes waits for another process's lock, a scrape's count answers at once."""
    import adapter.ledger

    monkeypatch.setattr(adapter.ledger, "TIMEOUT_SECONDS", 5.0)
    sqlite_ledger.record("", [event("a")], 1000.0)
    held = hog("EXCLUSIVE")
    writing = threading.Thread(target=sqlite_ledger.record, args=("", [event("b")], 1001.0))
    writing.start()
    try:
        time.sleep(0.05)
        assert writing.is_alive(), "the write is waiting for the lock"
        counted = sqlite_ledger.counts()
        assert writing.is_alive(), "the count waited until the write gave up"
    finally:
        held.rollback()
        writing.join(timeout=10)
    assert counted == {"": 1}
    assert sqlite_ledger.counts() == {"": 2}, "the write went in once the lock was free"


def test_contention_is_retried_and_never_treated_as_an_outage(sqlite_ledger, hog):
    """A lock held past the wait fails that write alone; the next write goes to the store at once."""
    held = hog("EXCLUSIVE")
    with pytest.raises(LedgerError, match="busy"):
        sqlite_ledger.record("", [event("a")], 1000.0)
    held.rollback()
    sqlite_ledger.record("", [event("b")], 1001.0)
    assert keys(sqlite_ledger) == [("", "b")]


def test_a_lock_held_briefly_is_waited_for(sqlite_ledger, hog):
    held = hog("EXCLUSIVE")
    threading.Timer(0.1, held.rollback).start()
    sqlite_ledger.record("", [event("a")], 1000.0)
    assert keys(sqlite_ledger) == [("", "a")]


HUB_PROBE = """
from gevent import monkey

monkey.patch_all()

import json, sqlite3, sys, time

import gevent

from adapter.errors import LedgerError
from adapter.ledger import open_ledger
from adapter.mapping import Event

path = sys.argv[1]
ledger = open_ledger("sqlite://" + path)
ledger.setup()
hog = sqlite3.connect(path, isolation_level=None, timeout=0)
hog.execute("BEGIN EXCLUSIVE")
ticks = []


def tick():
    while True:
        ticks.append(1)
        gevent.sleep(0.01)


ticker = gevent.spawn(tick)
gevent.sleep(0.05)
before = len(ticks)
event = Event("a", "trigger", {"summary": "s", "severity": "warning"}, [], {}, (("a", "firing"),), "A")
try:
    ledger.record("", [event], 1000.0)
    outcome = "written"
except LedgerError as exc:
    outcome = exc.message
during = len(ticks) - before
ticker.kill()
print(json.dumps({"outcome": outcome, "ticks_while_waiting": during}))
"""


def test_waiting_for_sqlite_never_freezes_the_gevent_hub(tmp_path):
    """Under gevent, another greenlet keeps running while a ledger write waits for a lock held elsewhere."""
    found = run_probe(HUB_PROBE, str(tmp_path / "ledger.db"))
    assert "busy" in found["outcome"] or "locked" in found["outcome"], found
    assert found["ticks_while_waiting"] >= 5, "the other greenlet ran, again and again, while the write waited"


HOT_PATH = [
    pytest.param(SqliteLedger._select_open.format(marks="?, ?"), ("", "a", "b"), id="known-open-incidents"),
    pytest.param(SqliteLedger._select_accepted.format(marks="?, ?"), ("", "a", "b"), id="known-accepted-events"),
    pytest.param(SqliteLedger._select_rest_keys.format(marks="?, ?"), ("", "a", "b"), id="rest-records"),
    pytest.param(SqliteLedger._select_members, ("", "a"), id="group-members"),
    pytest.param(
        "UPDATE alert24_adapter_accepted SET doubted_at = ? WHERE route = ? AND dedup_key = ?",
        (1.0, "", "a"),
        id="doubt",
    ),
    pytest.param("DELETE FROM alert24_adapter_incidents WHERE route = ? AND dedup_key = ?", ("", "a"), id="resolve"),
    pytest.param("SELECT sent_at, events FROM alert24_adapter_budget WHERE key_id = ?", ("k",), id="budget-of-a-key"),
    pytest.param(
        "DELETE FROM alert24_adapter_budget WHERE key_id = ? AND sent_at <= ?", ("k", 1.0), id="budget-window"
    ),
    pytest.param("DELETE FROM alert24_adapter_accepted WHERE accepted_at < ?", (1.0,), id="housekeeping-prune"),
]


@pytest.mark.parametrize("sql, params", HOT_PATH)
def test_every_query_of_a_webhook_is_served_by_an_index(tmp_path, sql, params):
    """However many incidents the ledger holds, each of a webhook's queries searches an index, never scans a table."""
    ledger = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    ledger.setup()
    try:
        plan = ledger._run(lambda cur: cur.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall(), write=False)
    finally:
        ledger.close()
    details = [row[-1] for row in plan]
    assert details and all(d.startswith("SEARCH") and "INDEX" in d for d in details), details
