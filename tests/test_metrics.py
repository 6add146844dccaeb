"""Every metric moves when it should, and /metrics never shows a secret or a raw label value."""

import json

import pytest
import responses

from adapter import create_app
from adapter.metrics import Metrics

from .conftest import API_KEY, API_URL, INTEGRATION_KEY, SECRET, make_config, payload


@pytest.fixture
def metrics():
    return Metrics()


@pytest.fixture
def app(metrics, env_overrides):
    return create_app(make_config(**env_overrides), metrics=metrics)


def value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_delivered_webhook_moves_its_counters(post, alert24, metrics):
    post("mixed-one-resolved")
    assert value(metrics, "alert24_adapter_webhooks_total", outcome="delivered", code="200") == 1
    assert value(metrics, "alert24_adapter_alerts_received_total", status="firing") == 1
    assert value(metrics, "alert24_adapter_alerts_received_total", status="resolved") == 1
    for action in ("trigger", "resolve"):
        assert value(metrics, "alert24_adapter_events_total", action=action, result="accepted", dedup_by="alert") == 1
    assert value(metrics, "alert24_adapter_alert24_request_duration_seconds_count", result="accepted") == 2
    assert value(metrics, "alert24_adapter_webhook_duration_seconds_count") == 1
    assert value(metrics, "alert24_adapter_last_successful_delivery_timestamp_seconds") > 1.7e9
    assert value(metrics, "alert24_adapter_alert24_retries_total") == 0


@pytest.mark.parametrize(
    "answers, result, outcome, code",
    [
        pytest.param([503] * 10, "failed", "failed", "503", id="failed"),
        pytest.param([400], "rejected", "rejected", "422", id="rejected"),
    ],
)
def test_undelivered_events_are_counted_by_result(post, metrics, answers, result, outcome, code):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for status in answers:
            mock.add(responses.POST, API_URL, status=status)
        post("firing-single")
    assert value(metrics, "alert24_adapter_events_total", action="trigger", result=result, dedup_by="alert") == 1
    assert value(metrics, "alert24_adapter_webhooks_total", outcome=outcome, code=code) == 1
    assert value(metrics, "alert24_adapter_last_successful_delivery_timestamp_seconds") == 0


def test_retries_are_counted(post, metrics):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, API_URL, status=503)
        mock.add(responses.POST, API_URL, status=502, headers={"Retry-After": "0"})
        mock.add(responses.POST, API_URL, status=202)
        assert post("firing-single").status_code == 200
    assert value(metrics, "alert24_adapter_alert24_retries_total") == 2


@pytest.mark.parametrize(
    "body, headers, outcome, code",
    [
        pytest.param("firing-single", {"Authorization": "Bearer nope"}, "unauthorized", "401", id="unauthorized"),
        pytest.param({"alerts": "x"}, {}, "bad_request", "400", id="bad-request"),
        pytest.param("firing-single", {"Content-Type": "text/plain"}, "not_json", "415", id="not-json"),
    ],
)
def test_refused_webhooks_are_counted(post, alert24, metrics, body, headers, outcome, code):
    post(body, headers=headers)
    assert value(metrics, "alert24_adapter_webhooks_total", outcome=outcome, code=code) == 1


def test_truncated_alerts_are_counted_and_logged(post, alert24, metrics, capsys):
    data = payload("firing-single")
    data["truncatedAlerts"] = 5
    post(data)
    assert value(metrics, "alert24_adapter_truncated_alerts_total") == 5
    assert "their resolves will never arrive" in capsys.readouterr().out


@pytest.mark.parametrize("env_overrides", [{"DEDUP_BY": "group"}])
def test_group_mode_counts_folded_alerts(post, alert24, metrics, env_overrides):
    post("firing-two-instances")
    assert value(metrics, "alert24_adapter_grouped_alerts_total") == 2
    assert value(metrics, "alert24_adapter_events_total", action="trigger", result="accepted", dedup_by="group") == 1


@pytest.mark.parametrize("env_overrides", [{"DRY_RUN": "true"}])
def test_dry_run_events_are_counted_as_such(post, alert24, metrics, env_overrides):
    post("firing-two-instances")
    assert value(metrics, "alert24_adapter_events_total", action="trigger", result="dry_run", dedup_by="alert") == 2


def test_build_info(metrics):
    from adapter.version import __version__

    assert (
        metrics.registry.get_sample_value(
            "alert24_adapter_build_info", {"version": __version__, "python": __import__("platform").python_version()}
        )
        == 1
    )


def test_metrics_endpoint_shows_no_secret_and_no_label_value(post, alert24, client):
    data = payload("firing-single")
    data["alerts"][0]["labels"]["secretish"] = "label-value-must-not-leak"
    post(data)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, API_URL, status=400, json={"error": {"message": INTEGRATION_KEY}})
        post("firing-single")
    text = client.get("/metrics").get_data(as_text=True)
    assert "alert24_adapter_webhooks_total" in text
    for forbidden in (SECRET, INTEGRATION_KEY, API_KEY, "label-value-must-not-leak", "HighErrorRate", "payments"):
        assert forbidden not in text


def test_readyz_reports_the_last_delivery(post, client):
    assert client.get("/readyz").json == {"status": "ready", "dry_run": False, "last_delivery": None}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, API_URL, status=503)
        post("firing-single")
    ready = client.get("/readyz")
    assert ready.status_code == 200, "readiness never fails on Alert24's trouble"
    assert ready.json["last_delivery"]["ok"] is False
    text = ready.get_data(as_text=True)
    assert SECRET not in text and INTEGRATION_KEY not in text


def _worker_file(directory, name: str, samples: dict[str, float]) -> None:
    """A worker's multiprocess file, written as prometheus_client writes it."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    values = MmapedDict(str(directory / name))
    for key, n in samples.items():
        values.write_value(mmap_key(key, key, [], [], "Test counter."), n, 0.0)
    values.close()


def _corrupt(path) -> None:
    """Claims more than the file holds: prometheus_client's own 'file is corrupted' case."""
    with open(path, "r+b") as f:
        f.write((1 << 15).to_bytes(4, "little"))
        f.write(b"\0" * 4 + (1 << 14).to_bytes(4, "little"))


def _bad_key(path) -> None:
    """An entry whose key is not prometheus_client's JSON."""
    key = b"not json"
    entry = len(key).to_bytes(4, "little") + key + b" " * (8 - (len(key) + 4) % 8) + b"\0" * 16
    with open(path, "r+b") as f:
        f.write((8 + len(entry)).to_bytes(4, "little") + b"\0" * 4 + entry)


@pytest.mark.parametrize(
    "damage, warned",
    [
        pytest.param(lambda p: p.write_bytes(b""), False, id="empty-file-of-a-worker-starting-or-killed"),
        pytest.param(lambda p: p.write_bytes(b"\1\0"), True, id="shorter-than-its-header"),
        pytest.param(_corrupt, True, id="claims-more-than-it-holds"),
        pytest.param(_bad_key, True, id="key-not-json"),
    ],
)
def test_a_scrape_leaves_out_a_worker_file_it_cannot_read(tmp_path, monkeypatch, capsys, damage, warned):
    """One unreadable worker file costs its own samples, never the whole scrape (client_python#1199)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    _worker_file(tmp_path, "counter_100.db", {"alert24_adapter_test_total": 3.0})
    _worker_file(tmp_path, "counter_200.db", {"alert24_adapter_test_total": 4.0})
    damaged = tmp_path / "counter_300.db"
    _worker_file(tmp_path, damaged.name, {"alert24_adapter_test_total": 100.0})
    damage(damaged)
    metrics = Metrics()
    app = create_app(make_config(), metrics=metrics)
    for _ in range(2):
        response = app.test_client().get("/metrics")
        assert response.status_code == 200
        assert "alert24_adapter_test_total 7.0" in response.get_data(as_text=True)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    warnings = [line for line in lines if "metrics file cannot be read" in line["msg"]]
    assert len(warnings) == (1 if warned else 0), "warned once per file, and never for an empty one"
    if warned:
        assert warnings[0]["file"] == "counter_300.db"


def test_a_scrape_sums_every_readable_worker_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    _worker_file(tmp_path, "counter_100.db", {"alert24_adapter_test_total": 3.0})
    _worker_file(tmp_path, "counter_200.db", {"alert24_adapter_test_total": 4.0})
    data, _ = Metrics().exposition()
    assert "alert24_adapter_test_total 7.0" in data.decode()
