"""The whole webhook answer, ledger write included, within WEBHOOK_TIME_BUDGET."""

import json
import sqlite3
import time

import pytest

from adapter import create_app
from adapter.metrics import Metrics

from .conftest import API_KEY, SECRET, make_config, payload
from .fake_alert24 import FakeAlert24
from .slow_alert24 import SlowAlert24

# How far past the budget an answer may come: the clock of one test process, not of the adapter.
SLACK = 0.15


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
def test_whole_answer_fits_the_time_budget(tmp_path, fake, env, ledger_locked, status):
    """Slow connects, slow answers and retries, then a ledger write: the answer still comes within the budget."""
    with SlowAlert24(**fake) as alert24:
        config = make_config(
            ALERT24_API_URL=alert24.url, ALERT24_RETRIES="10", LEDGER_URL=f"sqlite://{tmp_path}/ledger.db", **env
        )
        app = create_app(config, metrics=Metrics())
        hog = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, timeout=0)
        if ledger_locked:
            hog.execute("BEGIN EXCLUSIVE")
        headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
        started = time.monotonic()
        try:
            r = app.test_client().post("/alertmanager", data=json.dumps(payload("firing-single")), headers=headers)
        finally:
            took = time.monotonic() - started
            hog.close()
    budget = float(env["WEBHOOK_TIME_BUDGET"])
    assert r.status_code == status
    assert took <= budget + SLACK, f"answered after {took:.2f} s, budget {budget:g} s"


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
    assert calls == (["GET", "POST", "PUT"] if wire == "rest" else ["POST", "POST"])
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
