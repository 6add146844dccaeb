"""Shared fixtures: stored payloads, configs built from plain dicts, the app, and a faked Alert24."""

from __future__ import annotations

import json
import pathlib

import pytest
import responses

from adapter import create_app
from adapter.config import from_env
from adapter.ledger import open_ledger
from adapter.metrics import Metrics

PAYLOADS = pathlib.Path(__file__).parent / "payloads"
API_URL = "https://alert24.test/api/v1/incidents"
SECRET = "s3cret-token"
INTEGRATION_KEY = "int-key-0123456789"
API_KEY = "api-key-abcdef"
BASE_ENV = {
    "SHARED_SECRET": SECRET,
    "ALERT24_INTEGRATION_KEY": INTEGRATION_KEY,
    "ALERT24_API_KEY": API_KEY,
    "ALERT24_API_URL": API_URL,
    # Every event is sent, and so no default ledger is opened (it would live under STATE_DIRECTORY, by default
    # /var/lib/alert24-adapter): tests of skipping resends set RESEND_INTERVAL and STATE_DIRECTORY themselves.
    "RESEND_INTERVAL": "0",
}


def run_probe(script: str, *args: str) -> dict:
    """Run a Python script in a process of its own (one gevent patches whole) from the project root: its JSON."""
    import subprocess
    import sys

    probe = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=pathlib.Path(__file__).resolve().parents[1],
    )
    assert probe.returncode == 0, probe.stderr
    return json.loads(probe.stdout)


def payload(name: str) -> dict:
    """A stored Alertmanager payload by file stem."""
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def make_config(**overrides: str):
    """A Config from BASE_ENV with overrides; an override of None removes the variable."""
    env = {**BASE_ENV, **overrides}
    return from_env({k: v for k, v in env.items() if v is not None})


@pytest.fixture
def env_overrides() -> dict:
    """Variables a test module adds to BASE_ENV for its app."""
    return {}


@pytest.fixture
def app(env_overrides):
    return create_app(make_config(**env_overrides), metrics=Metrics())


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def alert24():
    """Alert24 faked at the transport: every POST to the API answers 202 unless a test says otherwise."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, API_URL, json={"status": "success"}, status=202)
        yield mock


@pytest.fixture
def post(client):
    """POST a payload (dict, or stored payload name) to /alertmanager with the right secret."""

    def _post(body, path="/alertmanager", headers=None, **kw):
        if isinstance(body, str):
            body = payload(body)
        h = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
        h.update(headers or {})
        return client.post(path, data=json.dumps(body), headers=h, **kw)

    return _post


def sent_bodies(mock: responses.RequestsMock) -> list[dict]:
    """The JSON bodies the adapter POSTed to the faked Alert24."""
    return [json.loads(c.request.body) for c in mock.calls]


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server for the session (Debian's postgresql, on 127.0.0.1)."""
    from .postgres import Postgres

    server = Postgres()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres):
    """The server's URL, its ledger tables dropped so that each test starts from an empty database."""
    postgres.sql(
        "DROP TABLE IF EXISTS alert24_adapter_incidents",
        "DROP TABLE IF EXISTS alert24_adapter_accepted",
        "DROP TABLE IF EXISTS alert24_adapter_budget",
        "DROP TABLE IF EXISTS alert24_adapter_rest",
        "DROP TABLE IF EXISTS alert24_adapter_meta",
        database="alert24",
    )
    return postgres.url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A ledger's URL, once for each store: a SQLite file, and the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/state/ledger.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def ledger(store_url):
    """A ledger set up on each store."""
    ledger = open_ledger(store_url, "test ledger")
    ledger.setup()
    yield ledger
    ledger.close()
