"""The whole webhook: its answer, ledger write included, within WEBHOOK_TIME_BUDGET; the same behaviour over both wire
formats; and each fallback when the ledger fails."""

import json
import sqlite3

import pytest

from adapter import create_app
from adapter.errors import LedgerError
from adapter.forwarder import LEDGER_SHARE, LEDGER_SHARE_MAX
from adapter.metrics import Metrics

from .conftest import API_KEY, SECRET, make_config, payload
from .fake_alert24 import FakeAlert24
from .slow_alert24 import SlowAlert24


@pytest.mark.parametrize(
    "fake, env, ledger_locked, status",
    [
        pytest.param(
            {"accept_every": None, "answer_after": 0},
            {"WEBHOOK_TIME_BUDGET": "3.3", "ALERT24_CONNECT_TIMEOUT": "1", "ALERT24_READ_TIMEOUT": "0.1"},
            False,
            503,
            id="connections-never-taken",
        ),
        pytest.param(
            {"accept_every": 0.7, "answer_after": 1.0},
            {"WEBHOOK_TIME_BUDGET": "2.5", "ALERT24_CONNECT_TIMEOUT": "1", "ALERT24_READ_TIMEOUT": "0.4"},
            False,
            503,
            id="connections-taken-slowly-answers-too-slow",
        ),
        pytest.param(
            {"accept_every": 0.01, "answer_after": 0.3, "status": 202, "full": False},
            {"WEBHOOK_TIME_BUDGET": "1", "ALERT24_CONNECT_TIMEOUT": "0.5", "ALERT24_READ_TIMEOUT": "0.5"},
            True,
            200,
            id="accepted-slowly-ledger-locked",
        ),
    ],
)
def test_whole_answer_fits_the_time_budget(tmp_path, monkeypatch, fake, env, ledger_locked, status):
    """Slow connects, slow answers and retries, then a ledger write: every wait of the webhook is given a deadline
    within its budget, from when the request arrived, and sending's ends early enough for the ledger's write."""
    with SlowAlert24(**fake) as alert24:
        config = make_config(
            ALERT24_API_URL=alert24.url, ALERT24_RETRIES="10", LEDGER_URL=f"sqlite://{tmp_path}/ledger.db", **env
        )
        app = create_app(config, metrics=Metrics())
        forwarder = app.extensions["alert24_adapter"].forwarder
        deadlines = spy_deadlines(monkeypatch, forwarder)
        hog = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, timeout=0)
        if ledger_locked:
            hog.execute("BEGIN EXCLUSIVE")
        headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
        try:
            r = app.test_client().post("/alertmanager", data=json.dumps(payload("firing-single")), headers=headers)
        finally:
            hog.close()
    budget = float(env["WEBHOOK_TIME_BUDGET"])
    answer_by = deadlines["started"] + budget
    assert r.status_code == status
    assert deadlines["send"] == [answer_by - min(LEDGER_SHARE_MAX, LEDGER_SHARE * budget)]
    assert deadlines["record"] == ([answer_by] if status == 200 else [])


def spy_deadlines(monkeypatch, forwarder) -> dict:
    """The deadlines (time.monotonic) a webhook hands its calls to Alert24 and its ledger write, and when it began."""
    seen: dict = {"send": [], "record": []}
    forward, send, record = forwarder.forward, forwarder.client.send, forwarder.ledger.record

    def spied_forward(notification, target, request_id="", started=None):
        seen["started"] = started
        return forward(notification, target, request_id, started)

    def spied_send(events, integration_key, deadline, request_id=""):
        seen["send"].append(deadline)
        return send(events, integration_key, deadline, request_id)

    def spied_record(route, events, now, deadline=None, *args, **kwargs):
        seen["record"].append(deadline)
        return record(route, events, now, deadline, *args, **kwargs)

    monkeypatch.setattr(forwarder, "forward", spied_forward)
    monkeypatch.setattr(forwarder.client, "send", spied_send)
    monkeypatch.setattr(forwarder.ledger, "record", spied_record)
    return seen


def webhook(client, name):
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    return client.post("/alertmanager", data=json.dumps(payload(name)), headers=headers)


@pytest.mark.parametrize("wire", ["events", "rest"])
def test_either_format_triggers_once_absorbs_the_repeat_and_resolves(tmp_path, wire):
    """The same behaviour over both wire formats: the trigger reaches Alert24 once, its repeat is absorbed (the
    ledger knows it), the resolve arrives; each answered 200 once Alert24 holds it."""
    with FakeAlert24(rest=wire == "rest") as fake:
        config = make_config(
            ALERT24_API_URL=fake.url, ALERT24_FORMAT=wire, RESEND_INTERVAL="1h", LEDGER_URL=f"sqlite://{tmp_path}/l.db"
        )
        client = create_app(config, metrics=Metrics()).test_client()
        answers = [webhook(client, name) for name in ("firing-single", "firing-single", "resolved-single")]
        calls = [r["method"] for r in fake.requests]
        left_open = fake.open_incidents()
    counts = [(r.status_code, r.json["accepted"], r.json.get("unchanged", 0)) for r in answers]
    assert counts == [(200, 1, 0), (200, 0, 1), (200, 1, 0)]
    # rest: the lookup and create of the trigger, then the resolve's PUT and its sweep for other open incidents.
    assert calls == (["GET", "POST", "PUT", "GET"] if wire == "rest" else ["POST", "POST"])
    assert left_open == []


@pytest.mark.parametrize(
    "fail, status",
    [
        pytest.param(lambda fake: fake.fail(400, method="POST"), 422, id="refused-is-422"),
        pytest.param(lambda fake: fake.fail_for(30), 503, id="outage-is-503"),
    ],
)
def test_the_rest_format_answers_alertmanager_as_the_events_format_does(tmp_path, fail, status):
    with FakeAlert24(rest=True) as fake:
        config = make_config(ALERT24_API_URL=fake.url, ALERT24_FORMAT="rest", LEDGER_URL=f"sqlite://{tmp_path}/l.db")
        client = create_app(config, metrics=Metrics()).test_client()
        fail(fake)
        r = webhook(client, "firing-single")
    assert r.status_code == status and API_KEY not in r.get_data(as_text=True)


def test_a_dry_run_in_the_rest_format_answers_the_exact_requests(tmp_path):
    config = make_config(DRY_RUN="true", ALERT24_FORMAT="rest", STATE_DIRECTORY=str(tmp_path))
    client = create_app(config, metrics=Metrics()).test_client()
    [create] = webhook(client, "firing-single").json["would_send"]
    assert (create["method"], create["path"]) == ("POST", "/api/v1/incidents")
    assert create["body"]["title"] == "Error rate above 5% for 10 minutes"
    assert create["body"]["tags"][0] == "dedup:114048fe91a99bfd"
    [resolve] = webhook(client, "resolved-single").json["would_send"]
    assert (resolve["method"], resolve["path"]) == ("PUT", "/api/v1/incidents/{id}")
    assert resolve["body"]["status"] == "resolved"


# -- the webhook when the ledger fails: each fallback ------------------------------------------------------------


def _fail(*args, **kwargs):
    raise LedgerError("the ledger (test) failed: disk I/O error")


def ledger_app(fake, tmp_path, wire="events", **env):
    env = {"RESEND_INTERVAL": "1h", "LEDGER_URL": f"sqlite://{tmp_path}/l.db", **env}
    config = make_config(ALERT24_API_URL=fake.url, ALERT24_FORMAT=wire, **env)
    return create_app(config, metrics=Metrics())


def failing(monkeypatch, app, *calls):
    """These ledger calls of the app fail from now on."""
    for name in calls:
        monkeypatch.setattr(app.extensions["alert24_adapter"].forwarder.ledger, name, _fail)


def ledger_errors(app, operation):
    registry = app.extensions["alert24_adapter"].metrics.registry
    return registry.get_sample_value("alert24_adapter_ledger_errors_total", {"operation": operation})


def test_a_lookup_that_fails_sends_the_unchanged_trigger_again(tmp_path, monkeypatch):
    """Events format: the ledger cannot be read, so nothing is proven and the repeat is sent (and accepted)."""
    with FakeAlert24() as fake:
        app = ledger_app(fake, tmp_path)
        assert webhook(app.test_client(), "firing-single").json["accepted"] == 1
        failing(monkeypatch, app, "state")
        again = webhook(app.test_client(), "firing-single")
        posts = len(fake.calls("POST"))
    assert (again.status_code, again.json["accepted"], again.json.get("unchanged", 0)) == (200, 1, 0)
    assert posts == 2 and ledger_errors(app, "lookup") == 1


@pytest.mark.parametrize(
    "broken, calls",
    [
        pytest.param(("state",), [("GET", "inc_0001")], id="lookup-fails-the-lifecycle-reads-its-records-and-checks"),
        pytest.param(("state", "rest_records"), [("GET", "incidents")], id="no-records-degraded-it-looks-up-by-tag"),
    ],
)
def test_a_rest_lookup_that_fails_never_creates_a_second_incident(tmp_path, monkeypatch, broken, calls):
    """REST format: with the ledger's read gone, the repeat is checked by its id (the lifecycle's own read of its
    records) or, with those gone too (degraded), looked up by its tag and adopted; never created again."""
    with FakeAlert24(rest=True) as fake:
        app = ledger_app(fake, tmp_path, "rest")
        assert webhook(app.test_client(), "firing-single").json["accepted"] == 1
        before = len(fake.calls())
        failing(monkeypatch, app, *broken)
        again = webhook(app.test_client(), "firing-single")
        made = [(c["method"], c["path"].split("?")[0].rsplit("/", 1)[-1]) for c in fake.calls()[before:]]
        resolved = webhook(app.test_client(), "resolved-single")
        left_open = fake.open_incidents()
    assert (again.status_code, again.json["accepted"]) == (200, 1)
    assert made == calls
    assert resolved.status_code == 200 and left_open == []
    assert ledger_errors(app, "lookup") == 2


def test_the_rest_format_without_a_ledger_looks_every_incident_up(tmp_path):
    """Degraded from the start (no ledger): each trigger is looked up by its tag before a create, so the repeat
    adopts the incident; the resolve finds it by its tag too."""
    with FakeAlert24(rest=True) as fake:
        (tmp_path / "a-file").write_text("")
        unwritable = str(tmp_path / "a-file" / "state")
        config = make_config(ALERT24_API_URL=fake.url, ALERT24_FORMAT="rest", STATE_DIRECTORY=unwritable)
        client = create_app(config, metrics=Metrics()).test_client()
        answers = [webhook(client, name).status_code for name in ("firing-single", "firing-single", "resolved-single")]
        calls = [c["method"] for c in fake.calls()]
        left_open = fake.open_incidents()
    assert answers == [200, 200, 200]
    assert calls == ["GET", "POST", "GET", "GET", "PUT"] and left_open == []


def test_a_budget_the_ledger_cannot_keep_is_kept_by_the_process(tmp_path, monkeypatch):
    """ALERT24_RATE_LIMIT=1 on a ledger that fails: the process's own budget grants one event, then none."""
    with FakeAlert24() as fake:
        app = ledger_app(fake, tmp_path, ALERT24_RATE_LIMIT="1", RESEND_INTERVAL="0")
        failing(monkeypatch, app, "take")
        first = webhook(app.test_client(), "firing-two-instances")
        second = webhook(app.test_client(), "firing-two-instances")
    assert (first.status_code, first.json["accepted"], first.json["deferred"]) == (503, 1, 1)
    assert (second.status_code, second.json["accepted"], second.json["deferred"]) == (503, 0, 2)
    assert ledger_errors(app, "budget") == 2
