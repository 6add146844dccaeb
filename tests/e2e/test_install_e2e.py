"""What users install starts: the production install (the hashed lock, then the package without its
dependencies, as the Containerfile builds it) and a plain `pip install .`, each booted as users boot it."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from ..conftest import payload
from .conftest import SECRET
from .harness import PRODUCTION, ROOT, Adapter, free_port, production_app, production_bin

PACKAGE_FILES = ("setup.cfg", "pyproject.toml", "README.md")
# What pip itself brings into a venv.
TOOLING = {"pip", "setuptools", "wheel", "alert24-adapter"}


def run(argv, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def installed(venv) -> dict[str, str]:
    listing = run([production_bin("pip", venv), "list", "--format=json", "--disable-pip-version-check"])
    assert listing.returncode == 0, listing.stderr
    return {normal(p["name"]): p["version"] for p in json.loads(listing.stdout)}


def normal(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory):
    """A fresh venv with `pip install .` of a copy of the package: the newest versions setup.cfg allows."""
    work = tmp_path_factory.mktemp("plain")
    source = work / "source"
    shutil.copytree(ROOT / "adapter", source / "adapter", ignore=shutil.ignore_patterns("__pycache__"))
    for name in PACKAGE_FILES:
        shutil.copy(ROOT / name, source / name)
    venv = work / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr
    result = run([production_bin("pip", venv), "install", "--quiet", str(source)], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return venv


def serves(procs, venv, fake, worker: str) -> Adapter:
    """Boot `gunicorn wsgi:app` from the venv and answer a webhook (dry run) and /healthz."""
    adapter = Adapter(
        procs,
        {"DRY_RUN": "true", "SHARED_SECRET": SECRET, "GUNICORN_WORKER_CLASS": worker, "ALERT24_API_URL": fake.url},
        name=f"adapter-{worker}",
        venv=venv,
    )
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", adapter.port, timeout=10)
    conn.request(
        "POST",
        "/alertmanager",
        body=json.dumps(payload("firing-single")),
        headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"},
    )
    answer = conn.getresponse()
    assert answer.status == 200 and json.loads(answer.read())["dry_run"] is True
    conn.close()
    assert f"Using worker: {worker}" in adapter.process.output()
    return adapter


def test_the_production_install_is_the_lock_and_nothing_else():
    """pip check is clean, and every installed distribution is pinned at that version in requirements.txt."""
    check = run([production_bin("pip"), "check"])
    assert check.returncode == 0, check.stdout + check.stderr
    lock = (ROOT / "requirements.txt").read_text()
    pins = {normal(name): version for name, version in re.findall(r"^([a-z0-9._-]+)==(\S+?)(?: ;| \\|$)", lock, re.M)}
    found = installed(PRODUCTION)
    assert {"flask", "gunicorn", "gevent", "packaging", "psycopg"} <= set(found)
    for name, version in found.items():
        if name not in TOOLING:
            assert pins.get(name) == version, f"{name} {version} is not what the lock pins ({pins.get(name)})"


@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_the_production_install_serves(procs, fake, worker):
    serves(procs, PRODUCTION, fake, worker)


@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_a_plain_pip_install_serves(procs, fake, plain_install, worker):
    """`pip install .` alone, without the lock or the test extras, is enough: gunicorn's gevent worker finds
    every module it imports (packaging, through gunicorn's gevent extra)."""
    check = run([production_bin("pip", plain_install), "check"])
    assert check.returncode == 0, check.stdout + check.stderr
    assert "pytest" not in installed(plain_install)
    serves(procs, plain_install, fake, worker)


def test_a_postgresql_ledger_without_its_driver_exits_4_with_one_line(plain_install, tmp_path):
    """Exit 4 is the configuration error systemd does not restart (RestartPreventExitStatus=4), not a crash loop."""
    assert "psycopg" not in installed(plain_install)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "SHARED_SECRET": SECRET,
        "ALERT24_INTEGRATION_KEY": "k-0123456789",
        "LEDGER_URL": "postgresql://alert24@127.0.0.1:9/alert24",
    }
    result = run(
        [production_bin("gunicorn", plain_install), "wsgi:app"], env=env, cwd=production_app(tmp_path), timeout=60
    )
    assert result.returncode == 4
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1 and "pip install 'alert24-adapter[postgresql]'" in errors[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
