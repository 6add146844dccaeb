"""Fixtures for the end-to-end tests: a fake Alert24, process ownership, and the adapter under gunicorn."""

import pytest

from ..fake_alert24 import FakeAlert24
from .harness import Adapter, Processes

SECRET = "e2e-shared-secret"
INTEGRATION_KEY = "e2e-integration-key"


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def procs(tmp_path):
    owner = Processes(tmp_path)
    yield owner
    owner.stop_all()


@pytest.fixture
def fake():
    with FakeAlert24() as f:
        yield f


@pytest.fixture
def start_adapter(procs, fake):
    """Start the adapter under gunicorn against the fake Alert24, with extra environment."""

    def _start(name="adapter", **env):
        base = {
            "SHARED_SECRET": SECRET,
            "ALERT24_INTEGRATION_KEY": INTEGRATION_KEY,
            "ALERT24_API_KEY": "e2e-api-key",
            "ALERT24_API_URL": fake.url,
            "WEBHOOK_TIME_BUDGET": "2",
            "ALERT24_CONNECT_TIMEOUT": "1",
            "ALERT24_READ_TIMEOUT": "1",
            "ALERT24_RETRIES": "2",
        }
        return Adapter(procs, {**base, **env}, name=name)

    return _start


BEARER = {"authorization": {"credentials": SECRET}}
