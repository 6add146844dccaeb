"""The ledger's record of open incidents and of what Alert24 accepted, per route and key, against both stores."""

import contextlib
import threading

import pytest

from adapter.ledger import merged, open_ledger

from .ledgers import event, keys


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


def test_counts_by_route(ledger):
    ledger.record("", [event("a"), event("b")], 1000.0)
    ledger.record("db", [event("c")], 1000.0)
    assert ledger.counts() == {"": 2, "db": 1}


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
