"""The deployed shape: Alertmanager → nginx (the shipped site file) → gunicorn → adapter → Alert24 (fake)."""

import base64
import http.client
import json
import time

import pytest

from ..conftest import payload
from .conftest import BEARER, SECRET
from .harness import Alertmanager, Nginx, raw_request, wait_until, webhook_head

DISK_1 = ("alertname=DiskFull", "severity=warning", "instance=db-1:9100", "job=node")


@pytest.fixture
def stack(procs, fake, start_adapter):
    adapter = start_adapter()
    return adapter, Nginx(procs, adapter.port)


def request(nginx, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout=15):
    conn = http.client.HTTPSConnection("127.0.0.1", nginx.port, timeout=timeout, context=nginx.tls)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), data


@pytest.mark.parametrize(
    "http_config",
    [
        pytest.param(BEARER, id="bearer"),
        pytest.param({"basic_auth": {"username": "alertmanager", "password": SECRET}}, id="basic-auth"),
    ],
)
def test_fire_and_resolve_through_nginx(procs, fake, stack, http_config):
    adapter, nginx = stack
    tls = {"tls_config": {"ca_file": str(nginx.ca_file)}}
    am = Alertmanager(procs, f"{nginx.url}/alertmanager", http_config={**http_config, **tls})
    am.fire(*DISK_1)
    [trigger] = wait_until(lambda: [b for b in fake.accepted() if b["event_action"] == "trigger"], 20, "the trigger")
    am.resolve(*DISK_1)
    [resolve] = wait_until(lambda: [b for b in fake.accepted() if b["event_action"] == "resolve"], 20, "the resolve")
    assert resolve["dedup_key"] == trigger["dedup_key"]

    # nginx made a request id; the adapter logged it and sent it on to Alert24.
    delivered = [w for w in adapter.webhooks() if w["status"] == 200]
    sent_ids = {r["headers"].get("X-Request-Id") for r in fake.requests}
    assert delivered and all(w["request_id"] in sent_ids for w in delivered)
    # gunicorn trusts nginx on loopback, so the client address is Alertmanager's, from X-Forwarded-For.
    assert all(w["client"] == "127.0.0.1" for w in delivered)


@pytest.mark.parametrize(
    "authorization, code",
    [
        pytest.param(f"Bearer {SECRET}", 200, id="right-bearer"),
        pytest.param("Basic " + base64.b64encode(f"am:{SECRET}".encode()).decode(), 200, id="right-basic"),
        pytest.param("Bearer wrong", 401, id="wrong-secret"),
        pytest.param("", 401, id="no-secret"),
    ],
)
def test_auth_through_nginx(fake, stack, authorization, code):
    adapter, nginx = stack
    status, headers, data = request(
        nginx,
        "POST",
        "/alertmanager",
        json.dumps(payload("firing-single")).encode(),
        {"Authorization": authorization, "Content-Type": "application/json", "X-Request-Id": "from-client-1"},
    )
    assert status == code, data
    assert headers["X-Request-Id"] == "from-client-1"
    assert len(fake.accepted()) == (1 if code == 200 else 0)
    if code == 401:
        assert "WWW-Authenticate" in headers and json.loads(data) == {"error": "missing or wrong credentials"}


def test_huge_body_is_refused_by_nginx_before_gunicorn(fake, stack):
    """A 50 MB body: nginx answers 413 from Content-Length; nothing reaches the adapter or Alert24."""
    adapter, nginx = stack
    answer = raw_request(nginx.port, webhook_head(50 * 1024 * 1024, secret=SECRET), timeout=10, tls=nginx.tls)
    assert answer.startswith(b"HTTP/1.1 413")
    assert not fake.requests and not adapter.webhooks()


def test_trickling_body_is_cut_off_by_nginx(fake, stack):
    """A body that trickles in is cut off by nginx's client_body_timeout, never holding a gunicorn thread."""
    adapter, nginx = stack
    started = time.monotonic()
    # nginx closes the connection (with a 408, or without a word) after client_body_timeout.
    answer = raw_request(nginx.port, webhook_head(1000, secret=SECRET), b"{", timeout=30, tls=nginx.tls)
    assert time.monotonic() - started < 25
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408")
    assert not adapter.webhooks(), "the adapter never saw the request"


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/openapi.yaml", "/", "/alertmanagers"])
def test_only_the_webhook_and_liveness_are_exposed(stack, path):
    """/metrics and /readyz stay on the adapter's own port; nginx answers 404 without asking the adapter."""
    adapter, nginx = stack
    status, headers, data = request(nginx, "GET", path)
    assert status == 404 and json.loads(data) == {"error": "not found"}
    assert request(nginx, "GET", "/healthz")[0] == 200


def test_no_plain_http(stack):
    """The secret never crosses the network in clear text: the TLS port refuses plain HTTP, and nothing else
    listens."""
    adapter, nginx = stack
    answer = raw_request(nginx.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert b"400" in answer.split(b"\r\n", 1)[0] and b"HTTP request was sent to HTTPS port" in answer
