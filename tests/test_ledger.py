"""The ledger of open incidents, against both stores: SQLite and a real PostgreSQL server."""

import contextlib
import dataclasses
import socket
import sqlite3
import threading
import time

import pytest

from adapter.errors import LedgerError
from adapter.ledger import SCHEMA_VERSION, SqliteLedger, merged, open_ledger
from adapter.mapping import Event
from adapter.rest import Record

from .conftest import run_probe


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
        ticks.append(time.monotonic())
        gevent.sleep(0.01)


ticker = gevent.spawn(tick)
gevent.sleep(0.05)
started = time.monotonic()
event = Event("a", "trigger", {"summary": "s", "severity": "warning"}, [], {}, (("a", "firing"),), "A")
try:
    ledger.record("", [event], 1000.0)
    outcome = "written"
except LedgerError as exc:
    outcome = exc.message
waited = time.monotonic() - started
ticker.kill()
gaps = [b - a for a, b in zip(ticks, ticks[1:])]
print(json.dumps({"outcome": outcome, "waited": waited, "max_gap": max(gaps)}))
"""


def test_waiting_for_sqlite_never_freezes_the_gevent_hub(tmp_path):
    """Under gevent, another greenlet keeps running while a ledger write waits for a lock held elsewhere."""
    found = run_probe(HUB_PROBE, str(tmp_path / "ledger.db"))
    assert "busy" in found["outcome"] or "locked" in found["outcome"], found
    assert found["waited"] >= 1.0, "the write waited for the lock"
    assert found["max_gap"] < 0.5, f"the hub froze for {found['max_gap']:.2f} s while the write waited"


def test_postgres_write_after_a_broken_connection_is_retried_on_a_fresh_one(postgres, postgres_url):
    ledger = open_ledger(postgres_url, "display")
    ledger.setup()
    ledger.record("", [event("a")], 1000.0)
    postgres.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'alert24-adapter'",
        database="alert24",
    )
    ledger.record("", [event("b")], 1001.0)
    assert keys(ledger) == [("", "a"), ("", "b")]
    ledger.close()


def test_postgres_connection_has_client_side_timeouts(postgres_url):
    """A half-open connection is given up by the client's TCP stack, not waited on forever."""
    ledger = open_ledger(postgres_url, "display")
    ledger.setup()
    ledger.record("", [event("a")], 1000.0)
    dsn = ledger._conn.info.dsn
    for setting in (
        "tcp_user_timeout=",
        "keepalives=1",
        "keepalives_idle=",
        "keepalives_interval=",
        "keepalives_count",
    ):
        assert setting in dsn
    ledger.close()


def test_concurrent_group_triggers_for_a_new_key_merge_their_members(store_url, monkeypatch):
    """Two replicas trigger the same new group incident at once, each with its own members: both are kept."""
    barrier = threading.Barrier(2, timeout=0.5)
    replicas = [open_ledger(store_url, "one"), open_ledger(store_url, "two")]
    replicas[0].setup()
    for replica in replicas:
        _pause_before_first_insert(replica, barrier, monkeypatch)
    errors = []

    def trigger(replica, member):
        try:
            replica.record("", [event("group-x", members=((member, "firing"), ("f0", "firing")))], 1000.0)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=trigger, args=(r, f"f{i + 1}")) for i, r in enumerate(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not errors
    [entry] = replicas[0].entries()
    assert entry.fingerprints == ("f0", "f1", "f2")
    for replica in replicas:
        replica.close()


def _pause_before_first_insert(ledger, barrier, monkeypatch):
    """Make each of the ledger's transactions wait for the other replica's before writing its first row."""
    original = ledger._connection

    class Cursor:
        def __init__(self, cur):
            self._cur, self._waited = cur, False

        def execute(self, sql, *args):
            if not self._waited and sql.lstrip().upper().startswith("INSERT INTO ALERT24_ADAPTER_INCIDENTS"):
                self._waited = True
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait()
            return self._cur.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._cur, name)

    @contextlib.contextmanager
    def connection(*args, **kw):
        with original(*args, **kw) as cur:
            yield Cursor(cur)

    monkeypatch.setattr(ledger, "_connection", connection)


def test_known_tells_open_incidents_and_the_last_accepted_event(ledger):
    """What decide() reads: open since when with what severity, and what Alert24 accepted last and when."""
    from adapter.traffic import Known

    ledger.record("", [event("a", severity="critical"), event("b")], 1000.0)
    ledger.record("", [event("b", "resolve")], 1010.0)
    ledger.record("", [event("a", summary="changed")], 1020.0, unchanged=[])
    ledger.record("", [], 1030.0, unchanged=[event("c")])
    many = [f"k{i}" for i in range(1200)] + ["a", "b", "c"]
    ledger.note_absence([("", "c")], [], 1040.0)
    assert ledger.known("", many) == {
        "a": Known(1000.0, "warning", "trigger", 1020.0, "warning", last_seen=1020.0),
        "b": Known(None, "", "resolve", 1010.0, "warning"),
        "c": Known(1030.0, "warning", "", None, "", last_seen=1030.0, absent=True),
    }
    assert ledger.known("db", ["a"]) == {}


def test_an_unchanged_trigger_refreshes_its_incident_not_its_acceptance(ledger):
    ledger.record("", [event("a")], 1000.0)
    ledger.record("", [], 1500.0, unchanged=[event("a", members=(("a", "firing"), ("b", "firing")))])
    [entry] = ledger.entries()
    assert entry.last_seen == 1500.0 and entry.fingerprints == ("a", "b")
    assert ledger.known("", ["a"])["a"].accepted_at == 1000.0


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


def test_the_rate_budget_is_one_for_every_process_on_the_store(store_url, ledger):
    other = open_ledger(store_url, "other")
    other.setup()
    try:
        assert ledger.take("key-1", 5, 3, 1000.0) == (3, 1000.0)
        assert other.take("key-1", 5, 3, 1001.0) == (2, 1061.0), "the other process sees what this one sent"
        assert other.take("key-2", 5, 3, 1001.0) == (3, 1001.0), "each integration key has its own budget"
        assert ledger.take("key-1", 5, 3, 1030.0) == (0, 1061.0)
        assert ledger.take("key-1", 5, 4, 1061.0) == (3, 1062.0), "the first sends left the window"
    finally:
        other.close()


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


class FrozenProxy:
    """A TCP proxy on 127.0.0.1 in front of PostgreSQL that can stop passing bytes on: the client's packets are
    still acknowledged (by this proxy's kernel), so to the client the connection looks alive — a half-open
    connection no TCP timeout ever ends."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.frozen = threading.Event()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.server.settimeout(0.1)
        while not self.stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst):
        src.settimeout(0.1)
        while not self.stop.is_set():
            if self.frozen.is_set():
                time.sleep(0.05)
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            with contextlib.suppress(OSError):
                dst.sendall(data)

    def close(self):
        self.stop.set()
        self.server.close()


def test_a_postgresql_write_on_a_half_open_connection_ends_at_its_deadline(postgres, postgres_url):
    """The connection's socket is shut down at the deadline: the write fails then (the webhook's answer is
    unchanged), instead of hanging the greenlet that holds the ledger's lock."""
    proxy = FrozenProxy(postgres.port)
    try:
        ledger = open_ledger(postgres_url.replace(f":{postgres.port}/", f":{proxy.port}/"), "display")
        ledger.setup()
        ledger.record("", [event("a")], 1000.0)
        proxy.frozen.set()
        outcome = []

        def write():
            started = time.monotonic()
            try:
                ledger.record("", [event("b")], 1001.0, deadline=started + 1.0)
                outcome.append(("written", time.monotonic() - started))
            except LedgerError as exc:
                outcome.append((exc.message, time.monotonic() - started))

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        writer.join(timeout=10)
        assert outcome, "the write hung on the half-open connection"
        [(message, took)] = outcome
        assert message.startswith("the ledger (display) failed") and took < 1.5, (message, took)
    finally:
        proxy.close()


def test_rest_claim_is_taken_once_then_settled_with_the_id(ledger):
    assert ledger.claim("", "k", "a", 1000.0, 10.0) == (True, None)
    assert ledger.claim("", "k", "b", 1001.0, 10.0) == (False, Record(None, "", "", 1000.0, False))
    ledger.rest_open("", "k", "inc_1", "Disk full", "high")
    assert ledger.claim("", "k", "c", 2000.0, 10.0) == (False, Record("inc_1", "Disk full", "high"))
    assert ledger.rest_records("", ["k", "other"]) == {"k": Record("inc_1", "Disk full", "high")}
    assert ledger.rest_records("payments", ["k"]) == {}
    ledger.rest_forget("", "k")
    assert ledger.rest_records("", ["k"]) == {}


@pytest.mark.parametrize("uncertain", [False, True], ids=["cut-off", "answer-lost"])
def test_rest_claim_is_taken_over_only_after_its_lease_and_stays_uncertain(ledger, uncertain):
    ledger.claim("", "k", "a", 1000.0, 10.0)
    if uncertain:
        ledger.rest_uncertain("", "k", "a")
    assert ledger.claim("", "k", "b", 1009.0, 10.0)[0] is False
    taken, held = ledger.claim("", "k", "b", 1010.0, 10.0)
    assert taken and held == Record(None, "", "", 1000.0, uncertain)
    assert ledger.rest_records("", ["k"])["k"] == Record(None, "", "", 1010.0, True)
    assert ledger.claim("", "k", "c", 1010.0, 10.0)[0] is False


def test_rest_release_and_uncertain_touch_only_the_claimants_own(ledger):
    ledger.claim("", "k", "a", 1000.0, 10.0)
    ledger.rest_uncertain("", "k", "b")
    ledger.rest_release("", "k", "b")
    assert ledger.rest_records("", ["k"]) == {"k": Record(None, "", "", 1000.0, False)}
    ledger.rest_release("", "k", "a")
    assert ledger.rest_records("", ["k"]) == {}


def test_expire_forgets_the_rest_formats_record_of_an_expired_incident(ledger):
    ledger.record("", [event("old"), event("new")], 1000.0)
    ledger.record("", [event("new")], 5000.0)
    for key in ("old", "new"):
        ledger.rest_open("", key, f"inc_{key}", "disk full", "high")
    ledger.expire(before=2000.0)
    assert list(ledger.rest_records("", ["old", "new"])) == ["new"]


def test_episodes_and_doubts_are_kept_per_key_and_route(ledger):
    """What a skip needs proven (traffic.decide): the episode Alert24 accepted, and a doubt written ahead of a resolve
    that only an event sent after it ends."""
    first = dataclasses.replace(event("a"), episode="E1")
    ledger.record("", [first, dataclasses.replace(event("b"), episode="E1")], 1000.0)
    ledger.record("team", [dataclasses.replace(event("a"), episode="E9")], 1000.0)
    assert (ledger.known("", ["a"])["a"].episode, ledger.known("", ["a"])["a"].doubt) == ("E1", False)
    ledger.doubt([("", "a", 1005.0), ("", "unknown", 1005.0)])
    assert ledger.known("", ["a", "b"])["a"].doubt and not ledger.known("", ["b"])["b"].doubt
    assert not ledger.known("team", ["a"])["a"].doubt, "another route's key is its own"
    assert "unknown" not in ledger.known("", ["unknown"]), "a doubt creates no record"
    ledger.record("", [dataclasses.replace(event("a"), episode="E2")], 1001.0)
    assert ledger.known("", ["a"])["a"].doubt, "a trigger sent before the doubt ends nothing"
    ledger.record("", [dataclasses.replace(event("a"), episode="E2")], 1006.0)
    assert (ledger.known("", ["a"])["a"].episode, ledger.known("", ["a"])["a"].doubt) == ("E2", False)
    ledger.record("", [], 1007.0, doubted=[("", "b", 1007.0)])
    assert ledger.known("", ["b"])["b"].doubt


@pytest.mark.parametrize(
    "first, second, expected",
    [
        pytest.param(("resolve", 1002.0), ("trigger", 1001.0), ("resolve", 1002.0), id="late-trigger-record-loses"),
        pytest.param(("trigger", 1002.0), ("resolve", 1001.0), ("trigger", 1002.0), id="late-resolve-record-loses"),
        pytest.param(("trigger", 1001.0), ("resolve", 1002.0), ("resolve", 1002.0), id="in-order-the-later-wins"),
    ],
)
def test_a_record_that_lands_late_never_overwrites_an_event_sent_after_it(ledger, first, second, expected):
    """Two webhooks' records may commit in another order than Alert24 accepted their events: the one sent last
    stays the key's record."""
    ledger.record("", [event("a")], 1000.0)
    for action, sent_at in (first, second):
        ledger.record("", [dataclasses.replace(event("a", action), episode="E1")], sent_at)
    known = ledger.known("", ["a"])["a"]
    assert (known.action, known.accepted_at) == expected


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


def test_postgresql_plans_each_statement_with_its_own_values(postgres_url):
    """No server-side prepared statements: their generic plans, made while the tables were small, went on scanning a
    route's every row for its dedup keys as the ledger grew (make bench, ledger sweep)."""
    ledger = open_ledger(postgres_url, "test ledger")
    conn = ledger._connect()
    try:
        assert conn.prepare_threshold is None
    finally:
        conn.close()
        ledger.close()


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
