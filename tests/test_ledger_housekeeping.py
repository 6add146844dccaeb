"""The ledger's housekeeping: its schema and migrations, the leader, expiry and pruning, and closing."""

import sqlite3
import threading

import pytest

from adapter.errors import LedgerError
from adapter.ledger import SCHEMA_VERSION, open_ledger

from .ledgers import event, keys


def test_expire_drops_and_returns_old_incidents(ledger):
    ledger.record("", [event("old")], 1000.0)
    ledger.record("", [event("new")], 5000.0)
    expired = ledger.expire(before=2000.0)
    assert [e.dedup_key for e in expired] == ["old"]
    assert keys(ledger) == [("", "new")]


def test_setup_is_idempotent_and_refuses_a_newer_schema(store_url, ledger):
    ledger.record("", [event("a")], 1000.0)
    again = open_ledger(store_url, "again")
    again.setup()
    assert keys(again) == [("", "a")], "a second start-up keeps the entries"
    again._run(
        lambda cur: cur.execute(
            again._sql("UPDATE alert24_adapter_meta SET value = ? WHERE name = ?"),
            (str(SCHEMA_VERSION + 1), "schema_version"),
        )
    )
    with pytest.raises(LedgerError, match=f"schema is version {SCHEMA_VERSION + 1}, newer than"):
        again.setup()
    again.close()


def test_only_one_process_leads_until_it_goes(store_url, ledger):
    other = open_ledger(store_url, "other")
    assert ledger.try_lead() is True
    assert ledger.try_lead() is True, "the leader stays the leader"
    assert other.try_lead() is False
    ledger.close()
    assert other.try_lead() is True
    other.close()


def test_old_acceptances_and_budget_sends_are_pruned_by_housekeeping_not_by_webhooks(ledger):
    ledger.accepted_retention = 100.0
    ledger.record("", [event("a")], 1000.0)
    ledger.record("", [event("b")], 1090.0)
    ledger.record("", [event("c")], 1150.0)
    assert ledger.known("", ["a"])["a"].accepted_at == 1000.0, "a webhook's write prunes nothing"
    ledger.take("key-1", 5, 3, 1000.0)
    ledger.housekeep(1150.0)
    assert ledger._run(lambda cur: cur.execute("SELECT COUNT(*) FROM alert24_adapter_budget").fetchone()[0]) == 0
    known = ledger.known("", ["a", "b", "c"])
    assert known["a"].accepted_at is None and known["a"].open, "the incident stays; its acceptance is forgotten"
    assert known["b"].accepted_at == 1090.0


def test_a_version_1_ledger_is_migrated_and_keeps_its_incidents(tmp_path):
    from adapter.ledger import MIGRATIONS

    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alert24_adapter_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO alert24_adapter_meta VALUES ('schema_version', '1')")
        conn.execute(MIGRATIONS[0][0])
        conn.execute(
            "INSERT INTO alert24_adapter_incidents VALUES ('', 'a', 'a', 'DiskFull', 'full', 'warning', 1, 2, NULL)"
        )
    ledger = open_ledger(f"sqlite://{path}")
    ledger.setup()
    try:
        assert keys(ledger) == [("", "a")]
        assert ledger.known("", ["a"])["a"].open_since == 1.0
        ledger.record("", [event("a")], 1000.0)
        assert ledger.known("", ["a"])["a"].accepted_at == 1000.0
    finally:
        ledger.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM alert24_adapter_meta").fetchone() == (str(SCHEMA_VERSION),)


def test_a_version_3_ledger_gains_episodes_and_doubts_and_two_processes_may_migrate_at_once(store_url):
    """Rows written before episodes were kept have none: nothing is proven for them, so their next trigger is sent."""
    from adapter.ledger import MIGRATIONS

    old = open_ledger(store_url, "test ledger")
    old._run(lambda cur: [cur.execute(s) for step in MIGRATIONS[:3] for s in step])
    old._execute("CREATE TABLE IF NOT EXISTS alert24_adapter_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    old._execute("INSERT INTO alert24_adapter_meta (name, value) VALUES ('schema_version', '3')")
    old._execute(
        "INSERT INTO alert24_adapter_accepted (route, dedup_key, action, severity, accepted_at) "
        "VALUES ('', 'a', 'trigger', 'warning', 1000)"
    )
    old.close()
    ledgers = [open_ledger(store_url, "test ledger") for _ in range(2)]
    try:
        failures = []

        def setup(store):
            try:
                store.setup()
            except LedgerError as exc:
                failures.append(exc.message)

        threads = [threading.Thread(target=setup, args=(store,)) for store in ledgers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert failures == []
        known = ledgers[0].known("", ["a"])["a"]
        assert (known.action, known.episode, known.doubt) == ("trigger", "", False)
    finally:
        for store in ledgers:
            store.close()


def test_the_housekeeping_of_a_closed_ledger_touches_no_connection(tmp_path):
    """close() waits for the housekeeping's work in flight (a checkpoint on a connection being closed crashed the
    process), and housekeeping that comes after it does nothing: no connection is used, none opened again."""
    ledger = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    ledger.setup()
    ledger.record("", [event("a")], 1000.0)
    ledger.close()
    ledger.housekeep(2000.0, ledger._closed)
    ledger._checkpoint(ledger._closed)
    assert ledger._conns == {}
