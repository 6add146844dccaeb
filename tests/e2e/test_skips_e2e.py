"""No page lost to what a ledger cannot see, through gunicorn from the production install: replicas with ledgers of
their own, a resolve whose record the ledger refused, one alert on two REST routes, a budget smaller than the group,
and a REST account whose open list is long and slow. Only Alert24 is a local fake."""

import json
import time
import urllib.request

import pytest

from ..fake_alert24 import FakeAlert24
from ..test_skips import KEY, T0, T1, held, notification, open_keys
from .conftest import BEARER, SECRET
from .harness import Alertmanager, post_alerts, rfc3339, wait_until

DISK = ("alertname=DiskFull", "severity=critical", "instance=db-1", "job=node")


BOTH = pytest.mark.parametrize("fake", ["events", "rest"], indirect=True)
REST = pytest.mark.parametrize("fake", ["rest"], indirect=True)


@pytest.fixture
def fake(request):
    """The fake Alert24 in the format a test names (the events format by default)."""
    with FakeAlert24(rest=getattr(request, "param", "events") == "rest") as f:
        yield f


def fmt(fake):
    return {"ALERT24_FORMAT": "rest" if fake.rest else "events"}


def deliver(adapter, body: dict, path: str = "/alertmanager") -> dict:
    """POST an Alertmanager notification to the adapter as Alertmanager does; its JSON answer (200 only)."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        adapter.url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"},
    )
    with urllib.request.urlopen(request, timeout=15) as answer:  # noqa: S310 - loopback
        assert answer.status == 200
        return json.loads(answer.read())


@BOTH
def test_replicas_with_ledgers_of_their_own_page_the_next_firing(procs, fake, start_adapter):
    """The shipped Deployment's shape with RESEND_INTERVAL at its default: fire through replica A, resolve through
    replica B, fire again through A: A sends it (a new episode), and B's resolve of it closes it."""
    a = start_adapter("replica-a", **fmt(fake))
    b = start_adapter("replica-b", **fmt(fake))
    deliver(a, notification("firing", T0))
    deliver(b, notification("resolved", T0))
    assert open_keys(fake) == set()
    assert deliver(a, notification("firing", T1))["accepted"] == 1
    assert open_keys(fake) == {KEY}
    assert deliver(a, notification("firing", T1)).get("unchanged") == 1
    deliver(b, notification("resolved", T1))
    assert open_keys(fake) == set()


@BOTH
def test_a_resolve_delivered_while_the_ledger_is_locked_never_silences_a_later_firing(procs, fake, start_adapter):
    """The resolve reaches Alert24 but neither its doubt nor its record reaches the ledger: once the lock is gone
    the worker writes the doubt, and the alert's return with its old startsAt (Alertmanager's resolve_timeout) is
    sent by either worker; so is the next episode."""
    adapter = start_adapter(WEBHOOK_TIME_BUDGET="5", **fmt(fake))
    ledger = procs.workdir / "adapter-state" / "ledger.db"
    deliver(adapter, notification("firing", T0))
    with held(ledger):
        deliver(adapter, notification("resolved", T0))
    assert open_keys(fake) == set()
    adapter.wait_log(lambda line: line["msg"] == "keys in doubt written to the ledger", 10, "the doubt written")
    assert deliver(adapter, notification("firing", T0))["accepted"] == 1, "a return of the same episode is sent"
    assert open_keys(fake) == {KEY}
    deliver(adapter, notification("resolved", T0))
    assert deliver(adapter, notification("firing", T1))["accepted"] == 1, "and so is a new episode"
    assert open_keys(fake) == {KEY}


@REST
def test_one_alert_on_two_rest_routes_is_two_incidents(procs, fake, start_adapter, tmp_path):
    """A real Alertmanager sends the alert to two `rest` routes (`continue: true`): each route gets an incident of
    its own, and each resolve closes its own."""
    config = tmp_path / "adapter.yml"
    config.write_text("routes:\n  payments:\n    format: rest\n  storage:\n    format: rest\n")
    adapter = start_adapter(ADAPTER_CONFIG=str(config))
    routes = [f"{adapter.url}/alertmanager/{r}" for r in ("payments", "storage")]
    am = Alertmanager(procs, routes[0], http_config=BEARER, also=(routes[1],))
    am.fire(*DISK)
    wait_until(lambda: len(fake.open_incidents()) == 2, 20, "an incident on each route")
    tags = sorted(next(t for t in i["tags"] if t.startswith("route:")) for i in fake.open_incidents())
    assert tags == ["route:payments", "route:storage"]
    assert len({i["alias"] for i in fake.open_incidents()}) == 2
    am.resolve(*DISK)
    wait_until(lambda: not fake.open_incidents(), 20, "both resolved")
    assert len(fake.calls("POST", 201)) == 2


def test_a_budget_smaller_than_the_group_pages_every_alert(procs, fake, start_adapter):
    """ALERT24_RATE_LIMIT=3 and RESEND_INTERVAL=0, a group of 5 from a real Alertmanager: the first minute's budget
    goes to three alerts, the next minute's to the two left out, not to the same three again."""
    adapter = start_adapter(ALERT24_RATE_LIMIT="3", RESEND_INTERVAL="0")
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    # Starting now: a startsAt older than group_wait makes Alertmanager flush the new group with its first alert alone.
    started = rfc3339(time.time())
    alerts = [
        {"labels": {"alertname": "DiskFull", "instance": f"db-{i}", "job": "node"}, "startsAt": started}
        for i in range(5)
    ]
    post_alerts(am.url, alerts)
    adapter.wait_webhook(lambda w: w["status"] == 503 and w.get("deferred") == 2, 30, "the 503 for the rest")
    # The budget frees up 60 s after the first sends; then Alertmanager's next retry, whose backoff grows on a loaded
    # machine: a bound well past the minute, which a passing run never waits out.
    wait_until(lambda: len({b["dedup_key"] for b in fake.accepted()}) == 5, 160, "every alert accepted")
    assert len(fake.accepted()) <= 6, "the second minute went to the two left out first"


@REST
def test_a_new_key_reaches_a_rest_account_with_a_long_slow_open_list(procs, fake, start_adapter):
    """450 open incidents of other sources, each page of the list 0.4 s: the lookup cannot read it within the 2 s
    budget, and the incident is created all the same, at the first attempt; its resolve closes it."""
    for i in range(450):
        fake.add_incident(title=f"other {i}", tags=[f"dedup:other-{i}"])
    fake.list_latency = 0.4
    adapter = start_adapter(ALERT24_FORMAT="rest")
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    am.fire(*DISK)
    created = adapter.wait_webhook(lambda w: w["status"] == 200 and w.get("accepted") == 1, 20, "the create")
    assert created["failed"] == 0 and len(fake.calls("POST", 201)) == 1
    assert not [w for w in adapter.webhooks() if w["status"] == 503], "no retry was needed"
    [mine] = [i for i in fake.open_incidents() if "other" not in i["title"]]
    am.resolve(*DISK)
    wait_until(lambda: fake.incidents[mine["id"]]["status"] == "resolved", 20, "the resolve")
