"""The ledger of open incidents, against both stores: SQLite and a real PostgreSQL server."""

import sqlite3

import pytest

from adapter.errors import LedgerError
from adapter.ledger import SCHEMA_VERSION, merged, open_ledger
from adapter.mapping import Event


def event(key, action="trigger", members=None, alertname="DiskFull", summary="disk full", severity="warning"):
    members = members if members is not None else ((key, "firing" if action == "trigger" else "resolved"),)
    payload = {"summary": summary, "severity": severity, "source": "x", "custom_details": {}}
    return Event(key, action, payload, [], {}, members, alertname)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/state/ledger.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def ledger(store_url):
    ledger = open_ledger(store_url, "test ledger")
    ledger.setup()
    yield ledger
    ledger.close()


def keys(ledger):
    return [(e.route, e.dedup_key) for e in ledger.entries()]


@pytest.mark.parametrize(
    "webhooks, open_after",
    [
        pytest.param([[event("a")]], [("", "a")], id="trigger-opens"),
        pytest.param([[event("a")], [event("a", "resolve")]], [], id="resolve-closes"),
        pytest.param([[event("a"), event("b")], [event("a", "resolve")]], [("", "b")], id="only-its-own"),
        pytest.param([[event("a")], [event("a")]], [("", "a")], id="resent-trigger-is-one-entry"),
        pytest.param([[event("a", "resolve")]], [], id="resolve-of-unknown-is-harmless"),
        pytest.param([[event("a"), event("a", "resolve")]], [], id="in-order-within-a-webhook"),
    ],
)
def test_triggers_open_and_resolves_close(ledger, webhooks, open_after):
    for i, events in enumerate(webhooks):
        ledger.record("", events, 1000.0 + i)
    assert keys(ledger) == open_after


def test_entry_keeps_what_the_cli_shows_and_no_secret(ledger):
    ledger.record("payments", [event("a", summary="Error rate above 5%", severity="critical")], 1000.0)
    ledger.record("payments", [event("a", summary="Error rate above 9%", severity="critical")], 1060.0)
    [entry] = ledger.entries()
    assert entry.route == "payments" and entry.dedup_key == "a" and entry.fingerprints == ("a",)
    assert entry.alertname == "DiskFull" and entry.summary == "Error rate above 9%" and entry.severity == "critical"
    assert (entry.first_seen, entry.last_seen, entry.absent_since) == (1000.0, 1060.0, None)
    assert set(entry.as_dict()) == {
        "route",
        "dedup_key",
        "fingerprints",
        "alertname",
        "summary",
        "severity",
        "first_seen",
        "last_seen",
        "absent_since",
    }


def test_same_dedup_key_on_two_routes_is_two_incidents(ledger):
    ledger.record("", [event("a")], 1000.0)
    ledger.record("payments", [event("a")], 1000.0)
    ledger.record("payments", [event("a", "resolve")], 1001.0)
    assert keys(ledger) == [("", "a")]
    assert ledger.counts() == {"": 1}


@pytest.mark.parametrize(
    "old, members, expected",
    [
        pytest.param((), (("f1", "firing"), ("f2", "firing")), ("f1", "f2"), id="new-group"),
        pytest.param(("f1", "f2"), (("f2", "firing"),), ("f1", "f2"), id="member-left-out-stays"),
        pytest.param(("f1", "f2"), (("f1", "resolved"), ("f2", "firing")), ("f2",), id="resolved-member-goes"),
        pytest.param(("f1",), (("f3", "firing"),), ("f1", "f3"), id="new-member-joins"),
    ],
)
def test_group_incident_members(old, members, expected):
    assert merged(old, members) == expected


def test_group_incident_keeps_members_across_webhooks(ledger):
    ledger.record("", [event("group-x", members=(("f1", "firing"), ("f2", "firing")))], 1000.0)
    ledger.record("", [event("group-x", members=(("f1", "resolved"), ("f3", "firing")))], 1010.0)
    [entry] = ledger.entries()
    assert entry.fingerprints == ("f2", "f3")


def test_absence_is_marked_once_cleared_when_seen_and_by_a_trigger(ledger):
    ledger.record("", [event("a"), event("b"), event("c")], 1000.0)
    ledger.note_absence([("", "a"), ("", "b")], [], 2000.0)
    ledger.note_absence([("", "a")], [("", "b")], 3000.0)
    ledger.record("", [event("c")], 3500.0)
    ledger.note_absence([("", "c")], [], 4000.0)
    ledger.record("", [event("c")], 4100.0)
    absent = {e.dedup_key: e.absent_since for e in ledger.entries()}
    assert absent == {"a": 2000.0, "b": None, "c": None}


def test_forget_absence_clears_every_mark(ledger):
    ledger.record("", [event("a"), event("b")], 1000.0)
    ledger.note_absence([("", "a"), ("", "b")], [], 2000.0)
    ledger.forget_absence()
    assert [e.absent_since for e in ledger.entries()] == [None, None]


def test_remove_spares_an_incident_a_webhook_refreshed_meanwhile(ledger):
    ledger.record("", [event("a"), event("b")], 1000.0)
    seen = ledger.entries()
    ledger.record("", [event("b")], 1500.0)
    ledger.remove(seen)
    assert keys(ledger) == [("", "b")]


def test_expire_drops_and_returns_old_incidents(ledger):
    ledger.record("", [event("old")], 1000.0)
    ledger.record("", [event("new")], 5000.0)
    expired = ledger.expire(before=2000.0)
    assert [e.dedup_key for e in expired] == ["old"]
    assert keys(ledger) == [("", "new")]


def test_counts_by_route(ledger):
    ledger.record("", [event("a"), event("b")], 1000.0)
    ledger.record("db", [event("c")], 1000.0)
    assert ledger.counts() == {"": 2, "db": 1}


def test_setup_is_idempotent_and_refuses_a_newer_schema(store_url, ledger):
    ledger.record("", [event("a")], 1000.0)
    again = open_ledger(store_url, "again")
    again.setup()
    assert keys(again) == [("", "a")], "a second start-up keeps the entries"
    with again._transaction() as cur:
        cur.execute(
            again._sql("UPDATE alert24_adapter_meta SET value = ? WHERE name = ?"),
            (str(SCHEMA_VERSION + 1), "schema_version"),
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


def test_sqlite_file_is_in_wal_mode(tmp_path):
    ledger = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    ledger.setup()
    ledger.close()
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unusable_sqlite_location_fails_fast_and_then_backs_off(tmp_path):
    (tmp_path / "not-a-directory").write_text("")
    ledger = open_ledger(f"sqlite://{tmp_path}/not-a-directory/ledger.db")
    with pytest.raises(LedgerError, match="the ledger \\(sqlite://.*\\) failed: .*not-a-directory"):
        ledger.record("", [event("a")], 1000.0)
    with pytest.raises(LedgerError, match="failed moments ago; not retried yet"):
        ledger.record("", [event("a")], 1000.0)


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


def test_unreachable_postgres_is_a_ledger_error_without_the_password(postgres):
    url = f"postgresql://alert24:sup3r-secret@127.0.0.1:{postgres.port + 1 if postgres.port < 65535 else 1}/alert24"
    ledger = open_ledger(url, "postgresql://alert24:********@127.0.0.1/alert24")
    with pytest.raises(LedgerError) as err:
        ledger.setup()
    assert "sup3r-secret" not in err.value.message
    assert "postgresql://alert24:********@127.0.0.1/alert24" in err.value.message
    ledger.close()


def test_wrong_postgres_password_is_a_ledger_error_without_it(postgres):
    ledger = open_ledger(postgres.url.replace(postgres.PASSWORD, "wrong-secret"), "display")
    with pytest.raises(LedgerError) as err:
        ledger.setup()
    assert "wrong-secret" not in err.value.message and "password authentication failed" in err.value.message
    ledger.close()
