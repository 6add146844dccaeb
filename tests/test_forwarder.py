"""The whole webhook answer, ledger write included, within WEBHOOK_TIME_BUDGET."""

import json
import sqlite3
import time

import pytest

from adapter import create_app
from adapter.metrics import Metrics

from .conftest import SECRET, make_config, payload
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
