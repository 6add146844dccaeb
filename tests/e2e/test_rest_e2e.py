"""The rest format (ALERT24_FORMAT=rest) against a real Alertmanager; only Alert24 is a local fake, in its REST mode:
the behaviours the events format is tested for — trigger, repeat, resolve, reconcile, HA pair, an outage with no
loss — with one incident per key, through lost answers and a lost ledger."""

import sqlite3

import pytest

from ..fake_alert24 import FakeAlert24
from ..postgres import Postgres
from .conftest import BEARER, SECRET
from .harness import Alertmanager, Listener, post_alerts, wait_until
from .test_reconciler_e2e import FAST, passes

DISK = ("alertname=DiskFull", "severity=warning", "instance=db-1:9100", "job=node")
# Another alert of the same group: its trigger proves Alertmanager flushed the group again.
MARKER = ("alertname=DiskFull", "severity=warning", "instance=marker:9100", "job=node")


@pytest.fixture
def fake():
    with FakeAlert24(rest=True) as f:
        yield f


@pytest.fixture
def rest_env(tmp_path):
    return {"ALERT24_FORMAT": "rest", "LEDGER_URL": f"sqlite://{tmp_path}/ledger.db"}


def creates(fake):
    return fake.calls("POST", 201)


def resolving_puts(fake):
    return [c for c in fake.calls("PUT", 200) if (c["body"] or {}).get("status") == "resolved"]


def ok(**counts):
    """A webhook answered 200 whose counts are these."""
    return lambda w: w["status"] == 200 and all(w.get(k, 0) == v for k, v in counts.items())


def test_fire_repeat_resolve(procs, fake, start_adapter, rest_env):
    """Fire: one lookup by tag, then one create with the documented body; the group sent again: no second create;
    resolve: a PUT on the incident's id."""
    adapter = start_adapter(**rest_env)
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    am.fire(*DISK, annotations={"summary": "Disk /var is 95% full", "description": "95% on db-1"})
    adapter.wait_webhook(ok(trigger=1, accepted=1), 20, "the create")
    [create] = creates(fake)
    body = create["body"]
    assert (body["title"], body["severity"], body["status"], body["source"]) == (
        "Disk /var is 95% full",
        "high",
        "open",
        "prometheus",
    )
    assert body["tags"][:3] == [f"dedup:{body['alias']}", "route:default", "alertname:DiskFull"]
    assert body["description"].startswith("95% on db-1\n\nLabels:\n")
    assert create["headers"]["Authorization"] == "Bearer e2e-api-key"
    [incident] = fake.open_incidents()
    assert len(fake.calls("GET")) == 1, "a key new to the ledger is looked up by its tag before its create"

    before = len(adapter.webhooks())
    am.fire(*MARKER)
    adapter.wait_webhook(ok(trigger=2, accepted=1, unchanged=1), 20, "the flush that repeats the trigger", before)
    assert [c["body"]["alias"] for c in creates(fake)].count(body["alias"]) == 1, "no second create"

    before = len(adapter.webhooks())
    am.resolve(*DISK)
    adapter.wait_webhook(ok(resolve=1), 20, "the resolve", before)
    [put] = resolving_puts(fake)
    assert put["path"] == f"/api/v1/incidents/{incident['id']}"
    assert put["body"]["resolved_at"].endswith("Z")
    assert fake.incidents[incident["id"]]["status"] == "resolved"
    # The ledger knew the id: the PUT went to it at once; then one sweep for any other open incident of the key (one
    # another replica's ledger may have opened), besides the lookup of the new MARKER key.
    assert len(fake.calls("GET")) == 3
    assert fake.calls("GET")[-1]["at"] > put["at"], "the sweep comes after the PUT: what is known is resolved first"


def test_silenced_then_ended_is_resolved_by_the_reconcilers_put(procs, fake, start_adapter, rest_env):
    listener = Listener()
    am = Alertmanager(procs, f"{listener.url}/alertmanager", http_config=BEARER)
    adapter = start_adapter(listener=listener, ALERTMANAGER_URL=am.url, **rest_env, **FAST)
    am.fire(*DISK)
    adapter.wait_webhook(ok(accepted=1), 20, "the create")
    [incident] = fake.open_incidents()
    am.silence("alertname=DiskFull")
    am.resolve(*DISK)
    [put] = wait_until(lambda: resolving_puts(fake), 20, "the reconciler's PUT")
    assert put["path"] == f"/api/v1/incidents/{incident['id']}"
    adapter.wait_log(lambda line: line["msg"].startswith("reconciler: resolved an incident"), 10, "its log line")
    after = passes(adapter, "nothing_to_do")
    wait_until(lambda: passes(adapter, "nothing_to_do") >= after + 3, 20, "three more passes")
    assert len(resolving_puts(fake)) == 1 and len(creates(fake)) == 1
    assert [w for w in adapter.webhooks() if w.get("resolve")] == [], "Alertmanager itself sent no resolve"


def test_a_lost_ledger_finds_the_incident_by_its_tag(procs, fake, start_adapter, rest_env, tmp_path):
    """The ledger's records are lost between trigger and resolve: the resolve finds the incident among the open
    ones by its dedup tag, past someone else's, and resolves that one only."""
    adapter = start_adapter(**rest_env)
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    other = fake.add_incident(title="someone else's", tags=["dedup:0123456789abcdef"])
    am.fire(*DISK)
    adapter.wait_webhook(ok(accepted=1), 20, "the create")
    [create] = creates(fake)
    with sqlite3.connect(tmp_path / "ledger.db", timeout=10) as db:
        db.execute("DELETE FROM alert24_adapter_rest")
        db.execute("DELETE FROM alert24_adapter_incidents")
    db.close()
    before = len(adapter.webhooks())
    am.resolve(*DISK)
    adapter.wait_webhook(ok(resolve=1, accepted=1), 20, "the resolve", before)
    _, listing = fake.calls("GET")
    assert listing["path"] == "/api/v1/incidents?status=open&limit=100&offset=0"
    [put] = resolving_puts(fake)
    created_id = [i for i in fake.incidents.values() if i.get("alias") == create["body"]["alias"]][0]["id"]
    assert put["path"] == f"/api/v1/incidents/{created_id}"
    assert [i["id"] for i in fake.open_incidents()] == [other["id"]]


def test_ha_pair_creates_one_incident_and_resolves_it_once(procs, fake, start_adapter, rest_env):
    """Both members of an HA pair send to the adapter (two workers, one ledger), as they do when gossip is late:
    one create; both resolves arrive, one PUT."""
    adapter = start_adapter(**rest_env)
    # Two members that do not gossip: in a cluster, the second may rightly hear in time that the first sent.
    am1 = Alertmanager(procs, f"{adapter.url}/alertmanager", "am1", BEARER)
    am2 = Alertmanager(procs, f"{adapter.url}/alertmanager", "am2", BEARER)
    for am in (am1, am2):
        am.fire(*DISK)
    wait_until(lambda: len([w for w in adapter.webhooks() if ok(trigger=1)(w)]) >= 2, 30, "both members' triggers")
    assert len(creates(fake)) == 1 and len(fake.open_incidents()) == 1
    before = len(adapter.webhooks())
    for am in (am1, am2):
        am.resolve(*DISK)
    wait_until(
        lambda: len([w for w in adapter.webhooks()[before:] if ok(resolve=1)(w)]) >= 2, 30, "both members' resolves"
    )
    assert len(resolving_puts(fake)) == 1 and fake.open_incidents() == []
    assert len(creates(fake)) == 1


def test_two_adapters_on_one_postgresql_ledger_create_one_incident(procs, fake, start_adapter):
    """Each member of an HA pair sends to its own adapter, both on one PostgreSQL ledger, at the same moment: the
    key's claim lets one create; the other waits for its id. The second member's copy of the resolve, once the
    first is done, is a copy of a resolve Alert24 accepted for the same episode: skipped, with no call. One PUT."""
    pg = Postgres().start()
    try:
        one, two = Listener(), Listener()
        am1 = Alertmanager(procs, f"{one.url}/alertmanager", "am1", BEARER)
        am2 = Alertmanager(procs, f"{two.url}/alertmanager", "am2", BEARER)
        env = {"ALERT24_FORMAT": "rest", "LEDGER_URL": pg.url}
        first = start_adapter("adapter-1", listener=one, **env)
        second = start_adapter("adapter-2", listener=two, **env)
        fake.latency = 0.3  # both creates would be in flight at once without the claim
        alert = [{"labels": dict(label.split("=", 1) for label in DISK)}]
        post_alerts(am1.url, alert)
        post_alerts(am2.url, alert)
        first.wait_webhook(ok(trigger=1), 30, "am1's trigger")
        second.wait_webhook(ok(trigger=1), 30, "am2's trigger")
        assert len(creates(fake)) == 1 and len(fake.open_incidents()) == 1
        gone = [{**alert[0], "endsAt": "2000-01-01T00:00:00Z"}]
        before = len(first.webhooks())
        post_alerts(am1.url, gone)
        first.wait_webhook(ok(resolve=1, accepted=1), 30, "am1's resolve", before)
        before = len(second.webhooks())
        post_alerts(am2.url, gone)
        calls = len(fake.requests)
        second.wait_webhook(ok(resolve=1, accepted=0, unchanged=1), 30, "am2's copy of the resolve", before)
        assert len(fake.requests) == calls
        assert len(resolving_puts(fake)) == 1 and fake.open_incidents() == []
        assert len(creates(fake)) == 1
    finally:
        pg.stop()


def test_outage_loses_nothing_and_creates_once(procs, fake, start_adapter, rest_env):
    """Alert24 answers 503 for a while, during the trigger and again during the resolve: one incident, resolved;
    503 to Alertmanager meanwhile."""
    adapter = start_adapter(**rest_env)
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    fake.fail_for(5)
    am.fire(*DISK)
    adapter.wait_webhook(ok(accepted=1), 40, "the create after the outage")
    assert len(creates(fake)) == 1 and len(fake.open_incidents()) == 1
    before = len(adapter.webhooks())
    fake.fail_for(5)
    am.resolve(*DISK)
    adapter.wait_webhook(ok(resolve=1, accepted=1), 40, "the resolve after the outage", before)
    assert fake.open_incidents() == [] and len(resolving_puts(fake)) == 1
    assert len(creates(fake)) == 1
    assert [w["status"] for w in adapter.webhooks()].count(503) >= 2, "the adapter told Alertmanager both times"
    assert SECRET not in adapter.process.output()


def test_a_create_answered_too_late_is_found_not_made_twice(procs, fake, start_adapter, rest_env):
    """Alert24 creates the incident but answers after the read timeout: the adapter answers 503, and Alertmanager's
    retry finds the incident by its tag instead of creating a second one."""
    adapter = start_adapter(**rest_env)
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    fake.delay(1.5, method="POST")
    am.fire(*DISK)
    adapter.wait_webhook(lambda w: w["status"] == 503, 20, "the 503 for the lost answer")
    adapter.wait_webhook(ok(accepted=1), 30, "the retry's 200")
    assert len(fake.calls("POST")) == 1 and len(fake.open_incidents()) == 1
    assert fake.calls("GET"), "looked up before creating again"
