"""The adapter under gunicorn alone: start-up failures, slow and huge clients, several workers."""

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import time
import urllib.request
from collections import Counter

import pytest

from .conftest import SECRET
from .harness import free_port, production_app, production_bin, raw_request, wait_until, webhook_head


def test_bad_config_stops_gunicorn_with_one_line(tmp_path):
    """No SHARED_SECRET: gunicorn exits with 4 at once, with one clear line, instead of respawning workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHARED_SECRET", "ALERT24_", "DRY_RUN"))}
    env.update(HOST="127.0.0.1", PORT=str(free_port()), ALERT24_INTEGRATION_KEY="k", ALERT24_CONCURRENCY="many")
    result = subprocess.run(
        [production_bin("gunicorn"), "wsgi:app"],
        cwd=production_app(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 4, "the exit code systemd's RestartPreventExitStatus=4 does not restart"
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert errors == [
        "alert24-adapter: configuration error: SHARED_SECRET is not set: set it (or SHARED_SECRET_FILE) to the "
        "secret Alertmanager sends, or set ALLOW_UNAUTHENTICATED=true",
        "alert24-adapter: configuration error: ALERT24_CONCURRENCY must be a whole number from 1 to 256",
    ]
    assert "Traceback" not in result.stderr + result.stdout
    assert "Booting worker" not in result.stderr


def test_huge_body_is_refused_from_content_length(fake, start_adapter):
    """A 50 MB Content-Length is answered 413 without keeping the body, and said in an error line."""
    adapter = start_adapter()
    started = time.monotonic()
    answer = raw_request(adapter.port, webhook_head(50 * 1024 * 1024, secret=SECRET), b"{")
    assert time.monotonic() - started < 5, "a body that stops arriving is not waited for"
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"error"' in answer
    assert not fake.requests
    [line] = adapter.webhooks()
    assert (line["level"], line["outcome"], line["content_length"]) == ("error", "too_large", 50 * 1024 * 1024)


def test_oversized_group_names_its_receiver_and_group_key(fake, start_adapter):
    """A group of 5 MB, written as Alertmanager writes it: 413, one error line naming it, and a metric."""
    adapter = start_adapter()
    alert = {"status": "firing", "labels": {"alertname": "DiskFull", "pad": "x" * 1000}}
    body = json.dumps(
        {
            "receiver": "team-db",
            "status": "firing",
            "alerts": [{**alert, "labels": {**alert["labels"], "instance": f"db-{i}"}} for i in range(5000)],
            "groupLabels": {"alertname": "DiskFull"},
            "version": "4",
            "groupKey": '{}:{alertname="DiskFull"}',
            "truncatedAlerts": 0,
        }
    ).encode()
    answer = raw_request(adapter.port, webhook_head(len(body), secret=SECRET), body)
    assert answer.startswith(b"HTTP/1.1 413") and b"max_alerts" in answer
    [line] = adapter.webhooks()
    assert line["level"] == "error" and line["content_length"] == len(body)
    assert (line["receiver"], line["group_key"]) == ("team-db", '{}:{alertname="DiskFull"}')
    assert scrape(adapter.url)['alert24_adapter_oversized_webhooks_total{route="default"}'] == 1
    assert not fake.requests


def test_trickling_body_is_cut_off(fake, start_adapter):
    """A body that stops arriving frees its thread after BODY_READ_TIMEOUT with a 408."""
    adapter = start_adapter(BODY_READ_TIMEOUT="1")
    started = time.monotonic()
    answer = raw_request(adapter.port, webhook_head(1000, secret=SECRET), b'{"alerts": [')
    assert time.monotonic() - started < 10
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    [line] = adapter.webhooks()
    assert line["outcome"] == "body_timeout"


@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_a_body_trickling_in_is_cut_off_when_the_whole_takes_too_long(fake, start_adapter, worker):
    """A byte every 0.2 s, each well within BODY_READ_TIMEOUT: the whole body is cut off with a 408 all the same."""
    adapter = start_adapter(BODY_READ_TIMEOUT="1", GUNICORN_WORKER_CLASS=worker)
    answer = trickle(adapter.port, webhook_head(1000, secret=SECRET), b" ", every=0.2, within=5)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200] or "no answer while the body kept trickling in"
    assert b"did not arrive within 1 s" in answer
    [line] = adapter.webhooks()
    assert line["outcome"] == "body_timeout"
    assert not fake.requests


def trickle(port: int, head: bytes, piece: bytes, every: float, within: float) -> bytes:
    """Send the head, then `piece` every `every` seconds until the adapter answers: its answer, or b"" when none came
    within `within` seconds of trickling (on loopback)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=within)
    data = b""
    try:
        sock.sendall(head)
        stop = time.monotonic() + within
        while not select.select([sock], [], [], every)[0]:
            if time.monotonic() > stop:
                return b""
            try:
                sock.sendall(piece)
            except OSError:  # closed under us: its answer, if any, waits to be read
                break
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    finally:
        sock.close()
    return data


def test_metrics_are_summed_over_workers(fake, start_adapter):
    """With 2 workers, every scrape returns the sum of what all workers counted."""
    # The same webhook each time, every one of them sent (RESEND_INTERVAL=0), so that each is counted.
    adapter = start_adapter(WEB_CONCURRENCY="2", GUNICORN_THREADS="1", RESEND_INTERVAL="0")
    body = json.dumps({"alerts": [{"status": "firing", "labels": {"alertname": "A"}}]}).encode()
    head = webhook_head(len(body), secret=SECRET, close=True)
    sent = 0
    # New connections go to whichever worker accepts first; send until both have served some (bounded).
    while sent < 40 or (len({w["pid"] for w in adapter.webhooks()}) < 2 and sent < 400):
        assert raw_request(adapter.port, head, body).startswith(b"HTTP/1.1 200")
        sent += 1
    served = Counter(w["pid"] for w in adapter.webhooks())
    assert len(served) == 2 and max(served.values()) < sent, "both workers served webhooks"
    for _ in range(4):  # whichever worker answers the scrape, the totals are the sum over both
        metrics = scrape(adapter.url)
        assert metrics['alert24_adapter_webhooks_total{code="200",outcome="delivered"}'] == sent
        assert metrics['alert24_adapter_events_total{action="trigger",dedup_by="alert",result="accepted"}'] == sent
        assert metrics['alert24_adapter_alerts_received_total{status="firing"}'] == sent


def scrape(url: str) -> dict[str, float]:
    """The samples of one /metrics scrape, by name with labels."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_sighup_reloads_the_file_and_keeps_the_old_one_when_broken(fake, start_adapter, tmp_path):
    """HUP with a good file and a new API key: new routes work, calls carry the new key. HUP with a broken file:
    the old routes keep working, metric 0."""
    path = tmp_path / "adapter.yml"
    path.write_text("routes:\n  payments:\n    integration_key_env: PAYMENTS_KEY\n")
    api_key = tmp_path / "api-key"
    api_key.write_text("old-api-key\n")
    adapter = start_adapter(
        ADAPTER_CONFIG=str(path),
        PAYMENTS_KEY="payments-key",
        ALERT24_INTEGRATION_KEY="",
        ALERT24_API_KEY="",
        ALERT24_API_KEY_FILE=str(api_key),
    )
    body = json.dumps({"alerts": [{"status": "firing", "labels": {"alertname": "A"}}]}).encode()

    def post(route):
        head = webhook_head(len(body), f"/alertmanager/{route}", SECRET, close=True)
        return int(raw_request(adapter.port, head, body).split(b" ", 2)[1])

    def hup_and_wait(reloads):
        adapter.process.signal(signal.SIGHUP)
        wait_until(lambda: adapter.process.output().count("Hang up") >= reloads, 15, "gunicorn to reload")
        wait_until(
            lambda: len(re.findall(r"Booting worker", adapter.process.output())) >= 2 + 2 * reloads, 15, "new workers"
        )
        # The old workers finish what they hold (and may accept for a moment more) before they exit.
        wait_until(lambda: adapter.process.output().count("Worker exiting") >= 2 * reloads, 15, "old workers to exit")

    def keys_sent():
        return [r["headers"].get("Authorization") for r in fake.requests]

    assert post("payments") == 200
    assert keys_sent() == ["Bearer old-api-key"]
    path.write_text("routes:\n  database:\n    integration_key_env: PAYMENTS_KEY\n")
    api_key.write_text("new-api-key\n")
    hup_and_wait(1)
    assert post("payments") == 404
    assert post("database") == 200
    assert keys_sent() == ["Bearer old-api-key", "Bearer new-api-key"], "the reload put the new API key in force"
    assert scrape(adapter.url)["alert24_adapter_config_last_reload_successful"] == 1
    assert "new-api-key" not in adapter.process.output()

    path.write_text("routes:\n  database:\n    colour: red\n")
    hup_and_wait(2)
    assert [post("database") for _ in range(4)] == [200] * 4, "the previous configuration keeps running"
    assert scrape(adapter.url)["alert24_adapter_config_last_reload_successful"] == 0
    assert "configuration reload failed" in adapter.process.output()
    assert {b["integration_key"] for b in fake.accepted()} == {"payments-key"}
    assert set(keys_sent()[1:]) == {"Bearer new-api-key"}
