"""Fixtures for the end-to-end tests: a fake Alert24, process ownership, and the adapter under gunicorn."""

import os
import subprocess

import pytest

from ..fake_alert24 import FakeAlert24
from .harness import PRODUCTION, ROOT, Adapter, Processes

SECRET = "e2e-shared-secret"
INTEGRATION_KEY = "e2e-integration-key"


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def production():
    """The production install the adapter runs from, brought up to date with the package (`make production`)."""
    if "ADAPTER_VENV" not in os.environ:
        subprocess.run(["make", "--no-print-directory", "-s", "production"], cwd=ROOT, check=True, timeout=600)
    return PRODUCTION


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

    def _start(name="adapter", listener=None, **env):
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
        return Adapter(procs, {**base, **env}, name=name, listener=listener)

    return _start


BEARER = {"authorization": {"credentials": SECRET}}
