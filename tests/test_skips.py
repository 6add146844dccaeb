"""What a skip must prove: the sequences in which a ledger that did not see everything answered 200 while nobody was
paged, in both wire formats, through the app against the fake Alert24; and one property over every interleaving."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapter import create_app
from adapter.alertmanager import fingerprint
from adapter.errors import LedgerError
from adapter.metrics import Metrics

from .conftest import BASE_ENV, SECRET
from .fake_alert24 import FakeAlert24

LABELS = {"alertname": "DiskFull", "instance": "db-1", "job": "node", "severity": "critical"}
KEY = fingerprint(LABELS)
T0, T1, T2 = "2026-12-01T03:00:00Z", "2026-12-01T05:00:00Z", "2026-12-01T07:00:00Z"
# The ledger's writes, every one of which a test may make fail.
WRITES = ("record", "doubt", "claim", "rest_open", "rest_forget", "rest_uncertain", "rest_release")


def notification(status: str, starts: str, *others: str) -> dict:
    """Alertmanager's notification of the DiskFull group: our alert in `status` for the episode that began at
    `starts`, with other firing alerts of the group (by instance) beside it."""

    def alert(labels, state, began):
        ended = "0001-01-01T00:00:00Z" if state == "firing" else "2026-12-01T09:00:00Z"
        fp = fingerprint(labels)
        return {"status": state, "labels": labels, "annotations": {"summary": "disk full"}, "startsAt": began,
                "endsAt": ended, "generatorURL": "", "fingerprint": fp}  # fmt: skip

    alerts = [alert(LABELS, status, starts)] + [alert({**LABELS, "instance": i}, "firing", T0) for i in others]
    return {
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": "alert24",
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am.example:9093",
        "alerts": alerts,
    }


def send(app, body: dict, path: str = "/alertmanager"):
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    return app.test_client().post(path, data=json.dumps(body), headers=headers)


def open_keys(fake: FakeAlert24, route: str | None = None) -> set[str]:
    """The dedup keys whose incident is open at the fake Alert24 (in the REST format, on `route` when given)."""
    if fake.rest:
        return {
            tag.removeprefix("dedup:")
            for incident in fake.open_incidents()
            if route is None or f"route:{route}" in incident["tags"]
            for tag in incident["tags"]
            if tag.startswith("dedup:")
        }
    state: dict[str, bool] = {}
    for body in fake.accepted():
        state[body["dedup_key"]] = body["event_action"] == "trigger"
    return {key for key, firing in state.items() if firing}


@pytest.fixture(params=["events", "rest"])
def fake(request):
    with FakeAlert24(rest=request.param == "rest") as f:
        yield f


def replica(fake: FakeAlert24, state_directory, **env):
    """One adapter as a replica runs it: its own SQLite ledger under its own state directory, RESEND_INTERVAL at its
    default (1 h) unless given."""
    environ = {
        **BASE_ENV,
        "ALERT24_API_URL": fake.url,
        "ALERT24_FORMAT": "rest" if fake.rest else "events",
        "STATE_DIRECTORY": str(state_directory),
        **env,
    }
    if "RESEND_INTERVAL" not in env:
        del environ["RESEND_INTERVAL"]
    return create_app(environ=environ, metrics=Metrics())


def ledger_of(app):
    return app.extensions["alert24_adapter"].forwarder.ledger


@contextlib.contextmanager
def held(path):
    """Another process holds the SQLite ledger's write lock (reads still go through, as in WAL they do)."""
    hog = sqlite3.connect(path, isolation_level=None)
    hog.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        hog.rollback()
        hog.close()


def failing_writes(monkeypatch, app):
    """Every ledger write of this replica fails, as on a store that cannot be written."""

    for name in WRITES:
        monkeypatch.setattr(ledger_of(app), name, _fail)


# -- 1. a resolve the deciding ledger did not see --------------------------------------------------------------


def test_a_resolve_through_another_replica_never_silences_the_next_firing(fake, tmp_path):
    """Two replicas with their own ledgers: fire through A, resolve through B, fire again (a new episode) through A."""
    a, b = replica(fake, tmp_path / "a"), replica(fake, tmp_path / "b")
    assert send(a, notification("firing", T0)).status_code == 200
    assert send(b, notification("resolved", T0)).status_code == 200
    assert open_keys(fake) == set()
    again = send(a, notification("firing", T1))
    assert again.status_code == 200 and again.json["accepted"] == 1
    assert open_keys(fake) == {KEY}
    resend = send(a, notification("firing", T1))
    assert resend.json.get("unchanged") == 1, "the same episode again, proven open: skipped"
    assert send(b, notification("resolved", T1)).status_code == 200
    assert open_keys(fake) == set(), "B's resolve closes the incident A opened for the new episode"


def test_a_replica_that_kept_an_old_incident_closes_the_new_one_on_resolve(fake, tmp_path):
    """A resolve reaches the replica whose ledger holds the previous episode's incident (REST: its id)."""
    a, b = replica(fake, tmp_path / "a"), replica(fake, tmp_path / "b")
    send(a, notification("firing", T0))
    send(b, notification("resolved", T0))
    send(b, notification("firing", T1))
    assert open_keys(fake) == {KEY}
    assert send(a, notification("resolved", T1)).status_code == 200
    assert open_keys(fake) == set()


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param("locked", id="ledger-locked-through-the-resolve"),
        pytest.param("record", id="only-the-record-after-the-resolve-fails"),
    ],
)
def test_a_resolve_whose_record_failed_leaves_its_key_in_doubt(fake, tmp_path, monkeypatch, failure):
    """Alert24 accepts a resolve whose ledger write fails; the alert comes back with its old startsAt (Alertmanager
    resolved it on resolve_timeout): the trigger is sent, by this worker and by another on the same ledger."""
    a = replica(fake, tmp_path / "a")
    other_worker = replica(fake, tmp_path / "a")
    send(a, notification("firing", T0))
    assert send(other_worker, notification("firing", T0)).json.get("unchanged") == 1
    if failure == "locked":
        with held(tmp_path / "a" / "ledger.db"):
            assert send(a, notification("resolved", T0)).status_code == 200
    else:
        with monkeypatch.context() as patch:
            patch.setattr(ledger_of(a), "record", _fail)
            patch.setattr(ledger_of(a), "rest_forget", _fail)
            assert send(a, notification("resolved", T0)).status_code == 200
    assert open_keys(fake) == set()
    # Written ahead of the resolve, or, where the ledger refused that too, by the worker as soon as the ledger takes
    # it: the doubt is the ledger's, and another worker sees it too.
    wait_until(lambda: ledger_of(a).known("", [KEY])[KEY].doubt, "the doubt to reach the ledger")
    answer = send(other_worker, notification("firing", T0)).json
    assert answer["accepted"] == 1 and open_keys(fake) == {KEY}
    send(other_worker, notification("resolved", T0))
    answer = send(a, notification("firing", T0)).json
    assert answer["accepted"] == 1 and "unchanged" not in answer
    assert open_keys(fake) == {KEY}
    assert send(a, notification("firing", T0)).json.get("unchanged") == 1, "recorded now: proven again"


def test_a_trigger_whose_record_failed_never_lets_the_next_resolve_be_skipped(fake, tmp_path, monkeypatch):
    """After a resolve recorded, the alert comes back with its old startsAt and is sent, but its record fails: the
    ledger still says "resolved, this episode", and the next resolve must not be skipped as a copy of that one."""
    a = replica(fake, tmp_path / "a")
    send(a, notification("firing", T0))
    send(a, notification("resolved", T0))
    with monkeypatch.context() as patch:
        failing_writes(patch, a)
        assert send(a, notification("firing", T0)).json["accepted"] == 1
    assert open_keys(fake) == {KEY}
    answer = send(a, notification("resolved", T0)).json
    assert answer["accepted"] == 1 and "unchanged" not in answer
    assert open_keys(fake) == set()


def wait_until(predicate, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _fail(*args, **kwargs):
    raise LedgerError("the ledger (test) failed: disk I/O error")


# -- 2. routes stay apart ---------------------------------------------------------------------------------------


@pytest.fixture
def two_routes(tmp_path):
    path = tmp_path / "adapter.yml"
    path.write_text("routes:\n  payments:\n    format: rest\n  storage:\n    format: rest\n")
    return {"ADAPTER_CONFIG": str(path)}


def test_one_alert_sent_to_two_rest_routes_is_two_incidents_and_each_resolve_closes_its_own(tmp_path, two_routes):
    with FakeAlert24(rest=True) as fake:
        app = replica(fake, tmp_path / "a", **two_routes)
        for route in ("payments", "storage"):
            assert send(app, notification("firing", T0), f"/alertmanager/{route}").json["accepted"] == 1
        assert len(fake.open_incidents()) == 2
        assert open_keys(fake, "payments") == open_keys(fake, "storage") == {KEY}
        assert {i["alias"] for i in fake.open_incidents()} == {f"payments/{KEY}", f"storage/{KEY}"}
        send(app, notification("resolved", T0), "/alertmanager/payments")
        assert open_keys(fake, "payments") == set() and open_keys(fake, "storage") == {KEY}


def test_after_a_ledger_loss_a_lookup_never_takes_another_routes_incident(tmp_path, two_routes):
    with FakeAlert24(rest=True) as fake:
        app = replica(fake, tmp_path / "a", **two_routes)
        send(app, notification("firing", T0), "/alertmanager/storage")
        fresh = replica(fake, tmp_path / "lost", **two_routes)
        assert send(fresh, notification("firing", T0), "/alertmanager/payments").json["accepted"] == 1
        assert open_keys(fake, "payments") == open_keys(fake, "storage") == {KEY}
        assert len(fake.open_incidents()) == 2, "storage's incident neither adopted nor resolved as a duplicate"
        again = send(fresh, notification("firing", T0), "/alertmanager/payments")
        assert again.json.get("unchanged") == 1


# -- 3. a fair budget ---------------------------------------------------------------------------------------------


class Clock:
    """time.time() for the forwarder, moved by the test; monotonic and sleep as they are."""

    def __init__(self, real):
        self.now, self.monotonic, self.sleep = real.time(), real.monotonic, real.sleep

    def time(self):
        return self.now


@pytest.mark.parametrize("ledger", ["sqlite", "none"], ids=["budget-on-the-ledger", "budget-in-the-process"])
def test_a_budget_too_small_for_the_group_works_through_all_of_it(tmp_path, monkeypatch, ledger):
    """ALERT24_RATE_LIMIT=2, RESEND_INTERVAL=0, a group of 5: each resend spends the budget on what Alert24 has not
    accepted yet, then on what it accepted longest ago; never on the same first two forever."""
    import adapter.forwarder

    clock = Clock(adapter.forwarder.time)
    monkeypatch.setattr(adapter.forwarder, "time", clock)
    with FakeAlert24() as fake:
        env = {"RESEND_INTERVAL": "0", "ALERT24_RATE_LIMIT": "2"}
        if ledger == "sqlite":
            env["LEDGER_URL"] = f"sqlite://{tmp_path}/ledger.db"
        app = replica(fake, tmp_path / "a", **env)
        group = notification("firing", T0, "db-2", "db-3", "db-4", "db-5")
        everyone = {a["fingerprint"] for a in group["alerts"]}
        rounds = []
        for _ in range(3):
            answer = send(app, group)
            assert answer.status_code == 503 and answer.json["deferred"] == 3
            rounds.append({b["dedup_key"] for b in fake.accepted()[-2:]})
            clock.now += 62
        assert rounds[0] | rounds[1] | rounds[2] == everyone
        assert not rounds[0] & rounds[1], "the second resend goes to the three the first left out"


# -- the property ---------------------------------------------------------------------------------------------------

STEP = st.tuples(
    st.sampled_from(["fire", "resolve", "return"]),
    st.integers(0, 2),  # the replica Alertmanager's connection lands on
    st.booleans(),  # the other HA member's copy, delivered to the next replica
    st.booleans(),  # the replica's ledger cannot be written during this notification
)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(rest=st.booleans(), replicas=st.integers(1, 3), steps=st.lists(STEP, min_size=1, max_size=12))
# Fired through replica 1, resolved and returned through replica 2 (a second incident there), resolved through 1.
@example(
    rest=True,
    replicas=3,
    steps=[
        ("fire", 1, False, False),
        ("resolve", 2, False, False),
        ("return", 1, False, False),
        ("resolve", 1, False, False),
    ],
)
def test_every_firing_episode_ends_paged_and_every_resolve_ends_it(tmp_path_factory, rest, replicas, steps):
    """Any interleaving of fire, resolve and re-fire over K replicas with ledgers of their own, HA copies, and ledger
    writes that fail: after each notification Alert24 holds the alert's incident open exactly while it fires.

    `return` is an alert that Alertmanager resolved on resolve_timeout coming back with its old startsAt: its resolve
    went through one replica, and the return is proven only to that replica's ledger (docs/ledger.md, "Replicas")."""
    directory = tmp_path_factory.mktemp("replicas")
    with FakeAlert24(rest=rest) as fake, pytest.MonkeyPatch.context() as patch:
        apps = [replica(fake, directory / str(i)) for i in range(replicas)]
        episodes, firing, resolved_by = [T0, T1, T2, "2026-12-01T09:00:00Z"], False, 0
        for what, where, copy, broken in steps:
            where %= replicas
            if what == "return":
                if firing or not episodes:
                    continue
                firing, where = True, resolved_by
            elif what == "fire" and not firing:
                if len(episodes) < 2:
                    continue
                episodes.pop(0)
                firing = True
            elif what == "resolve" and firing:
                firing, resolved_by = False, where
            body = notification("firing" if firing else "resolved", episodes[0])
            targets = [where, (where + 1) % replicas] if copy else [where]
            for target in targets:
                with patch.context() as failing:
                    if broken:
                        failing_writes(failing, apps[target])
                    answer = send(apps[target], body)
                assert answer.status_code == 200, answer.json
                assert open_keys(fake) == ({KEY} if firing else set()), (what, target, broken)
