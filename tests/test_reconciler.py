"""The reconciler: the pure verdict table, and passes against a faked Alertmanager API and Alert24."""

import base64
import json

import pytest
import requests
import responses

from adapter import create_app
from adapter.errors import LedgerError
from adapter.ledger import Entry, open_ledger
from adapter.metrics import Metrics
from adapter.reconciler import FAILED, NOTHING_TO_DO, RESOLVED, SKIPPED, stale

from .conftest import API_URL, INTEGRATION_KEY, SECRET, make_config, payload
from .ledgers import event

AM1, AM2 = "http://am1.test:9093", "http://am2.test:9093"
GRACE = 600.0
NOW = 10_000.0


def entry(key="a", fingerprints=None, absent_since=None, route=""):
    return Entry(route, key, fingerprints or (key,), "DiskFull", "disk full", "warning", 1000.0, 1000.0, absent_since)


@pytest.mark.parametrize(
    "incident, reported, expected",
    [
        pytest.param(entry(), {"a"}, None, id="present"),
        pytest.param(entry(absent_since=NOW - 60), {"a"}, "back", id="present-again-after-absence"),
        pytest.param(entry(), set(), "newly_absent", id="absent-first-time"),
        pytest.param(entry(absent_since=NOW - 60), set(), "waiting", id="absent-less-than-grace"),
        pytest.param(entry(absent_since=NOW - GRACE), set(), "resolve", id="absent-exactly-grace"),
        pytest.param(entry(absent_since=NOW - GRACE - 1), {"other"}, "resolve", id="absent-past-grace"),
        pytest.param(entry("g", ("f1", "f2"), NOW - GRACE - 1), {"f2"}, "back", id="group-one-member-reported"),
        pytest.param(entry("g", ("f1", "f2"), NOW - GRACE - 1), set(), "resolve", id="group-no-member-reported"),
        pytest.param(entry("g", ("f1", "f2")), {"f1", "f2"}, None, id="group-all-reported"),
    ],
)
def test_verdict(incident, reported, expected):
    verdict = stale([incident], reported, NOW, GRACE)
    found = [name for name in ("resolve", "newly_absent", "waiting", "back") if getattr(verdict, name)]
    assert found == ([expected] if expected else [])


def test_zero_grace_resolves_at_first_absence():
    assert stale([entry()], set(), NOW, 0).resolve == [entry()]


@pytest.fixture
def clock():
    class Clock:
        now = NOW

        def __call__(self):
            return self.now

    return Clock()


@pytest.fixture
def setup(tmp_path, clock):
    """An app with the reconciler on (SQLite ledger, two Alertmanagers), its ledger and reconciler."""

    def _setup(**env):
        config = make_config(
            ALERTMANAGER_URL=f"{AM1},{AM2}",
            LEDGER_URL=f"sqlite://{tmp_path}/ledger.db",
            RECONCILE_GRACE=str(GRACE),
            **env,
        )
        app = create_app(config, metrics=Metrics())
        runtime = app.extensions["alert24_adapter"]
        runtime.reconciler.clock = clock
        return app, runtime.forwarder.ledger, runtime.reconciler

    return _setup


@pytest.fixture
def mock():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as m:
        m.add(responses.POST, API_URL, status=202, json={"status": "success"})
        yield m


def am(mock, url, fingerprints=(), status=200, body=None):
    listed = [{"fingerprint": fp, "labels": {}, "status": {"state": "suppressed"}} for fp in fingerprints]
    mock.upsert(responses.GET, url + "/api/v2/alerts", status=status, json=listed if body is None else body)


def sent(mock):
    return [json.loads(c.request.body) for c in mock.calls if c.request.method == "POST"]


def sample(app, name, labels=None):
    return app.extensions["alert24_adapter"].metrics.registry.get_sample_value(name, labels or {})


def test_stale_incident_is_resolved_after_grace_with_its_reason(setup, mock, clock):
    app, ledger, reconciler = setup()
    ledger.record("", [event("a", summary="Disk /var is 97% full", severity="critical"), event("b")], 1000.0)
    am(mock, AM1, ["b"])
    am(mock, AM2, ["b"])
    assert reconciler.run_pass().outcome == NOTHING_TO_DO
    assert not sent(mock), "absent for the first time: the grace period starts"
    clock.now += GRACE - 1
    assert reconciler.run_pass().outcome == NOTHING_TO_DO
    clock.now += 1
    report = reconciler.run_pass()
    assert report.outcome == RESOLVED
    [body] = sent(mock)
    assert body["event_action"] == "resolve" and body["dedup_key"] == "a"
    assert body["integration_key"] == INTEGRATION_KEY
    assert body["payload"]["severity"] == "critical" and body["payload"]["summary"] == "Disk /var is 97% full"
    details = body["payload"]["custom_details"]
    assert details["reconciled"] is True and details["absent_since"] == "1970-01-01T02:46:40Z"
    assert "no Alertmanager has reported this alert since 1970-01-01T02:46:40Z" in details["reason"]
    assert [e.dedup_key for e in ledger.entries()] == ["b"]
    assert sample(app, "alert24_adapter_reconciled_resolves_total", {"result": "accepted"}) == 1
    assert sample(app, "alert24_adapter_reconcile_passes_total", {"outcome": "resolved"}) == 1
    assert sample(app, "alert24_adapter_reconcile_last_success_timestamp_seconds") > 0


def test_silenced_alert_that_still_fires_is_never_resolved(setup, mock, clock):
    """Alertmanager lists silenced and inhibited alerts (state suppressed): they are present."""
    _, ledger, reconciler = setup()
    ledger.record("", [event("a")], 1000.0)
    am(mock, AM1, ["a"])
    am(mock, AM2, ["a"])
    for _ in range(5):
        assert reconciler.run_pass().outcome == NOTHING_TO_DO
        clock.now += GRACE
    assert not sent(mock)
    query = mock.calls[0].request.params
    assert query == {"active": "true", "silenced": "true", "inhibited": "true", "unprocessed": "true"}


def test_alert_reported_by_only_one_of_the_pair_is_present(setup, mock, clock):
    _, ledger, reconciler = setup()
    ledger.record("", [event("a")], 1000.0)
    am(mock, AM1, [])
    am(mock, AM2, ["a"])
    reconciler.run_pass()
    clock.now += 2 * GRACE
    reconciler.run_pass()
    assert not sent(mock) and ledger.entries()[0].absent_since is None


@pytest.mark.parametrize(
    "trouble",
    [
        pytest.param({"status": 503}, id="answers-503"),
        pytest.param({"status": 401}, id="answers-401"),
        pytest.param({"body": {"not": "a list"}}, id="answers-no-list"),
        pytest.param({"body": [{"labels": {}}]}, id="alert-without-fingerprint"),
        pytest.param({"exception": True}, id="unreachable"),
    ],
)
def test_any_alertmanager_in_trouble_skips_the_pass_and_resolves_nothing(setup, mock, clock, trouble):
    app, ledger, reconciler = setup()
    ledger.record("", [event("a")], 1000.0)
    am(mock, AM1, [])
    am(mock, AM2, [])
    reconciler.run_pass()
    clock.now += 2 * GRACE
    if trouble.get("exception"):
        mock.upsert(responses.GET, AM2 + "/api/v2/alerts", body=requests.exceptions.ConnectionError("refused"))
    else:
        am(mock, AM2, status=trouble.get("status", 200), body=trouble.get("body"))
    report = reconciler.run_pass()
    assert report.outcome == SKIPPED and AM2 in report.reason
    assert not sent(mock)
    assert sample(app, "alert24_adapter_reconcile_passes_total", {"outcome": "skipped"}) == 1
    [incident] = ledger.entries()
    assert incident.absent_since is None, "absence must be seen anew after a pass that could not look"
    am(mock, AM2, [])
    reconciler.run_pass()
    assert not sent(mock), "after the trouble, a whole grace period passes again before a resolve"


def test_alert24_failure_keeps_the_incident_for_the_next_pass(setup, mock, clock):
    app, ledger, reconciler = setup()
    ledger.record("", [event("a")], 1000.0)
    ledger.note_absence([("", "a")], [], NOW - GRACE)
    am(mock, AM1, [])
    am(mock, AM2, [])
    mock.upsert(responses.POST, API_URL, status=400, json={"error": {"message": "nope"}})
    assert reconciler.run_pass().outcome == FAILED
    assert [e.dedup_key for e in ledger.entries()] == ["a"]
    assert sample(app, "alert24_adapter_reconciled_resolves_total", {"result": "rejected"}) == 1
    mock.upsert(responses.POST, API_URL, status=202, json={})
    assert reconciler.run_pass().outcome == RESOLVED
    assert ledger.entries() == []


def test_group_incident_is_resolved_only_when_no_member_is_reported(setup, mock, clock):
    _, ledger, reconciler = setup(DEDUP_BY="group")
    members = (("f1", "firing"), ("f2", "firing"))
    ledger.record("", [event("group-x", members=members)], 1000.0)
    am(mock, AM1, ["f2"])
    am(mock, AM2, [])
    for _ in range(3):
        reconciler.run_pass()
        clock.now += GRACE
    assert not sent(mock)
    am(mock, AM1, [])
    reconciler.run_pass()
    clock.now += GRACE
    reconciler.run_pass()
    [body] = sent(mock)
    assert body["dedup_key"] == "group-x" and body["payload"]["custom_details"]["fingerprints"] == ["f1", "f2"]


def test_route_incident_uses_the_routes_current_key_and_unknown_route_waits(setup, mock, clock, tmp_path):
    (tmp_path / "routes.yml").write_text("routes:\n  db:\n    integration_key_env: DB_KEY\n")
    _, ledger, reconciler = setup(ADAPTER_CONFIG=str(tmp_path / "routes.yml"), DB_KEY="db-integration-key")
    ledger.record("db", [event("a")], 1000.0)
    ledger.record("gone", [event("b")], 1000.0)
    ledger.note_absence([("db", "a"), ("gone", "b")], [], NOW - GRACE)
    am(mock, AM1, [])
    am(mock, AM2, [])
    report = reconciler.run_pass()
    [body] = sent(mock)
    assert body["dedup_key"] == "a" and body["integration_key"] == "db-integration-key"
    assert [e.dedup_key for e in report.unsendable] == ["b"]
    assert [e.route for e in ledger.entries()] == ["gone"], "kept until it expires"


def test_dry_run_sends_nothing_and_changes_nothing(setup, mock, clock):
    _, ledger, reconciler = setup()
    ledger.record("", [event("a"), event("b")], 1000.0)
    ledger.note_absence([("", "a")], [], NOW - GRACE)
    am(mock, AM1, [])
    am(mock, AM2, [])
    before = ledger.entries()
    report = reconciler.run_pass(dry_run=True)
    assert [e.dedup_key for e in report.verdict.resolve] == ["a"]
    assert [e.dedup_key for e in report.verdict.newly_absent] == ["b"]
    assert not sent(mock) and ledger.entries() == before


def test_only_the_leader_acts_and_it_expires_old_incidents(setup, mock, clock, tmp_path):
    app, ledger, reconciler = setup(LEDGER_MAX_AGE="1h")
    ledger.record("", [event("ancient")], NOW - 3601)
    ledger.record("", [event("recent")], NOW - 60)
    am(mock, AM1, ["ancient", "recent"])
    am(mock, AM2, [])
    other = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    assert other.try_lead()
    assert reconciler.tick() is None and not reconciler.leader
    assert len(ledger.entries()) == 2
    other.close()
    assert reconciler.tick().outcome == NOTHING_TO_DO and reconciler.leader
    assert [e.dedup_key for e in ledger.entries()] == ["recent"]
    assert sample(app, "alert24_adapter_ledger_expired_total") == 1


@pytest.mark.parametrize(
    "env, expected",
    [
        pytest.param({"ALERTMANAGER_TOKEN": "am-token-123"}, "Bearer am-token-123", id="bearer"),
        pytest.param(
            {"ALERTMANAGER_USERNAME": "adapter", "ALERTMANAGER_PASSWORD": "am-pass-456"},
            "Basic " + base64.b64encode(b"adapter:am-pass-456").decode(),
            id="basic",
        ),
    ],
)
def test_alertmanager_credentials_are_sent_and_never_shown(setup, mock, capsys, env, expected):
    app, _, reconciler = setup(**env)
    am(mock, AM1, [])
    mock.upsert(responses.GET, AM2 + "/api/v2/alerts", status=500)
    reconciler.run_pass()
    assert mock.calls[0].request.headers["Authorization"] == expected
    shown = capsys.readouterr().out + json.dumps(app.test_client().get("/readyz").json)
    shown += app.test_client().get("/metrics").get_data(as_text=True)
    for secret in env.values():
        if secret != "adapter":
            assert secret not in shown


def test_webhooks_fill_the_ledger_and_it_is_seen_in_metrics_and_readyz(setup, mock):
    app, ledger, _ = setup()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    assert (
        client.post("/alertmanager", data=json.dumps(payload("firing-two-instances")), headers=headers).status_code
        == 200
    )
    assert (
        client.post("/alertmanager", data=json.dumps(payload("mixed-one-resolved")), headers=headers).status_code == 200
    )
    assert [e.dedup_key for e in ledger.entries()] == ["55b97254facb078e"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'alert24_adapter_open_incidents{route="default"} 1.0' in metrics
    ready = client.get("/readyz", headers=headers).json
    assert ready["ledger"]["ok"] is True and ready["ledger"]["url"].startswith("sqlite:///")
    assert ready["reconciler"]["alertmanagers"] == [AM1, AM2]
    stranger = client.get("/readyz").json
    assert stranger["ledger"]["ok"] is True and "url" not in stranger["ledger"], "where the ledger is: operators only"
    assert "alertmanagers" not in stranger["reconciler"] and "leader" in stranger["reconciler"]


def test_only_accepted_events_are_recorded(setup, mock):
    app, ledger, _ = setup()
    mock.upsert(responses.POST, API_URL, status=503)
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    r = app.test_client().post("/alertmanager", data=json.dumps(payload("firing-single")), headers=headers)
    assert r.status_code == 503 and ledger.entries() == []


def test_ledger_failure_does_not_change_the_answer(setup, mock, tmp_path):
    """The ledger is secondary to paging: Alert24 has the event, so the answer stays 200."""
    import sqlite3

    app, ledger, _ = setup()
    hog = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    hog.execute("BEGIN EXCLUSIVE")
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    try:
        r = app.test_client().post("/alertmanager", data=json.dumps(payload("firing-single")), headers=headers)
    finally:
        hog.rollback()
        hog.close()
    assert r.status_code == 200 and r.json["accepted"] == 1
    assert sample(app, "alert24_adapter_ledger_errors_total", {"operation": "record"}) == 1
    ready = app.test_client().get("/readyz", headers={"Authorization": f"Bearer {SECRET}"})
    assert ready.status_code == 200 and ready.json["ledger"]["ok"] is False
    assert "database is locked" in ready.json["ledger"]["error"]


def _refresh(ledger):
    """A webhook for the same alert arrives: its trigger refreshes the entry."""
    ledger.record("", [event("a", summary="Disk /var is 98% full", severity="critical")], NOW + 1)


def _resolve(ledger):
    """Alertmanager's own resolve arrives: the entry goes."""
    ledger.record("", [event("a", "resolve")], NOW + 1)


@pytest.mark.parametrize(
    "meanwhile, when, actions, left",
    [
        pytest.param(_refresh, "resolve-sent", ["resolve", "trigger"], ["a"], id="refreshed-while-resolving-reopens"),
        pytest.param(_resolve, "resolve-sent", ["resolve"], [], id="resolved-while-resolving-stays-closed"),
        pytest.param(_refresh, "alertmanager-asked", [], ["a"], id="refreshed-before-resolving-is-spared"),
    ],
)
def test_a_webhook_during_the_pass_never_leaves_a_live_incident_closed(setup, mock, meanwhile, when, actions, left):
    app, ledger, reconciler = setup()
    ledger.record("", [event("a", summary="Disk /var is 97% full", severity="critical")], 1000.0)
    ledger.note_absence([("", "a")], [], NOW - GRACE)
    am(mock, AM2, [])

    def alertmanager(request):
        if when == "alertmanager-asked":
            meanwhile(ledger)
        return (200, {}, "[]")

    def alert24(request):
        if when == "resolve-sent" and json.loads(request.body)["event_action"] == "resolve":
            meanwhile(ledger)
        return (202, {}, "{}")

    mock.add_callback(responses.GET, AM1 + "/api/v2/alerts", callback=alertmanager)
    mock.remove(responses.POST, API_URL)
    mock.add_callback(responses.POST, API_URL, callback=alert24)
    reconciler.run_pass()
    bodies = sent(mock)
    assert [b["event_action"] for b in bodies] == actions
    if "trigger" in actions:
        trigger = bodies[1]
        assert trigger["dedup_key"] == "a" and trigger["integration_key"] == INTEGRATION_KEY
        assert trigger["payload"]["severity"] == "critical"
        assert trigger["payload"]["summary"] == "Disk /var is 98% full", "as the webhook left it"
        assert trigger["payload"]["custom_details"]["reopened"] is True
    assert [e.dedup_key for e in ledger.entries()] == left


def test_a_stale_incident_of_the_rest_format_is_resolved_by_a_put_on_its_id(setup, mock, clock):
    _, ledger, reconciler = setup(ALERT24_FORMAT="rest")
    ledger.record("", [event("a")], 1000.0)
    ledger.rest_open("", "a", "inc_1", "disk full", "high")
    mock.add(responses.PUT, f"{API_URL}/inc_1", json={"data": {"id": "inc_1", "status": "resolved"}})
    # Then the key's other open incidents are swept: another replica's ledger may have opened one.
    mock.add(responses.GET, API_URL, json={"data": [], "meta": {"total": 0}})
    am(mock, AM1, [])
    am(mock, AM2, [])
    reconciler.run_pass()
    clock.now += GRACE
    assert reconciler.run_pass().outcome == RESOLVED
    [put] = [c for c in mock.calls if c.request.method == "PUT"]
    assert json.loads(put.request.body)["status"] == "resolved"
    assert [c.request.method for c in mock.calls if c.request.url.startswith(API_URL)] == ["PUT", "GET"]
    assert not sent(mock), "no event is posted in the rest format"
    assert ledger.entries() == [] and ledger.rest_records("", ["a"]) == {}


def test_a_resolve_whose_removal_from_the_ledger_failed_never_lets_the_next_trigger_be_skipped(
    setup, mock, clock, monkeypatch
):
    """The reconciler's resolve reached Alert24 but the ledger kept the incident: the alert comes back with its old
    startsAt (Alertmanager lost its state, Prometheus resent it), and its trigger is sent, not skipped as unchanged."""
    app, ledger, reconciler = setup(RESEND_INTERVAL="3600")
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    notify = lambda: app.test_client().post("/alertmanager", data=json.dumps(payload("firing-single")), headers=headers)  # noqa: E731
    assert notify().json["accepted"] == 1
    assert notify().json["unchanged"] == 1, "the same episode, proven open: skipped"
    am(mock, AM1, [])
    am(mock, AM2, [])
    reconciler.run_pass()
    clock.now += GRACE

    def broken(entries):
        raise LedgerError("the ledger (test) failed: disk I/O error")

    monkeypatch.setattr(ledger, "remove", broken)
    assert reconciler.run_pass().outcome == RESOLVED
    assert [b["event_action"] for b in sent(mock)] == ["trigger", "resolve"]
    answer = notify().json
    assert answer["accepted"] == 1 and "unchanged" not in answer
    assert [b["event_action"] for b in sent(mock)] == ["trigger", "resolve", "trigger"]
