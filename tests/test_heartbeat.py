"""The dead-man's switch: which alerts are heartbeats, when a ping is due, what the webhook answers, and the
token that never shows."""

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import responses
import yaml

from adapter import cli, create_app, heartbeat
from adapter.alertmanager import parse
from adapter.config import DEFAULT_HEARTBEAT_MATCHERS
from adapter.errors import ConfigError, DeliveryFailed, DeliveryRejected
from adapter.heartbeat import COLLAPSED, DRY_RUN, FAILED, RESOLVED, SENT, Heartbeat, HeartbeatClient
from adapter.metrics import Metrics
from adapter.policy import PolicyError, parse_matchers

from .conftest import API_KEY, API_URL, BASE_ENV, INTEGRATION_KEY, SECRET, make_config, sent_bodies
from .e2e.harness import binary

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hb-token-5e3c9a1f"
HB_URL = f"https://hb.alert24.test/api/hb/{TOKEN}"
HB_ENV = {"HEARTBEAT_URL": HB_URL, "HEARTBEAT_MIN_INTERVAL": "0"}


def alert(alertname="Watchdog", status="firing", **labels):
    return {
        "status": status,
        "labels": {"alertname": alertname, **labels},
        "annotations": {},
        "startsAt": "2026-11-28T13:32:21Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-28T13:40:00Z",
    }


def notification(*alerts):
    return {"version": "4", "status": "firing", "receiver": "adapter", "groupKey": "{}:{}", "alerts": list(alerts)}


WATCHDOG = alert("Watchdog", severity="none", prometheus="monitoring/k8s")
DEADMAN = alert("DeadMansSwitch")
PAGE = alert("HighErrorRate", severity="critical", service="payments")


# --- the pure decisions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param('alertname="Watchdog"', ['alertname="Watchdog"'], id="one"),
        pytest.param('alertname=~"Watchdog|DeadMansSwitch"', ['alertname=~"Watchdog|DeadMansSwitch"'], id="regex"),
        pytest.param('{alertname="Watchdog", env!="test"}', ['alertname="Watchdog"', 'env!="test"'], id="braces"),
        pytest.param(
            'alertname="Watchdog",team=~"a{1,2},b"', ['alertname="Watchdog"', 'team=~"a{1,2},b"'], id="comma-in-quotes"
        ),
        pytest.param('alertname="say \\"hi\\", ok"', ['alertname="say \\"hi\\", ok"'], id="escaped-quote"),
        pytest.param("alertname=Watchdog", ['alertname="Watchdog"'], id="unquoted"),
        pytest.param('alertname="Watchdog",', ['alertname="Watchdog"'], id="trailing-comma"),
    ],
)
def test_matcher_lists_parse_as_alertmanager_writes_them(text, expected):
    assert [str(m) for m in parse_matchers(text)] == expected


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param('alertname="Watchdog', "not closed", id="open-quote"),
        pytest.param('alertname=~"("', "bad regular expression", id="bad-regex"),
        pytest.param("Watchdog", "is not a matcher", id="no-operator"),
    ],
)
def test_bad_matcher_lists_are_refused(text, message):
    with pytest.raises(PolicyError, match=message):
        parse_matchers(text)


@pytest.mark.parametrize(
    "labels, matchers, expected",
    [
        pytest.param({"alertname": "Watchdog"}, None, True, id="default-watchdog"),
        pytest.param({"alertname": "DeadMansSwitch", "severity": "none"}, None, True, id="default-deadmansswitch"),
        pytest.param({"alertname": "WatchdogLag"}, None, False, id="default-anchored-regex"),
        pytest.param({"alertname": "HighErrorRate"}, None, False, id="default-page"),
        pytest.param({"job": "watchdog"}, None, False, id="default-no-alertname"),
        pytest.param({"alertname": "Watchdog", "env": "prod"}, 'alertname="Watchdog",env="prod"', True, id="all-match"),
        pytest.param({"alertname": "Watchdog"}, 'alertname="Watchdog",env="prod"', False, id="one-misses"),
        pytest.param({"alertname": "Watchdog"}, "", False, id="no-matchers-no-heartbeat"),
    ],
)
def test_which_alerts_are_heartbeats(labels, matchers, expected):
    found = DEFAULT_HEARTBEAT_MATCHERS if matchers is None else parse_matchers(matchers)
    assert heartbeat.is_heartbeat(labels, found) is expected


def test_split_keeps_pages_and_sorts_heartbeats_by_status():
    n = parse(notification(PAGE, WATCHDOG, alert("Watchdog", "resolved", prometheus="b"), DEADMAN))
    found = heartbeat.split(n.alerts, DEFAULT_HEARTBEAT_MATCHERS)
    assert [a.labels["alertname"] for a in found.pages] == ["HighErrorRate"]
    assert [a.labels["alertname"] for a in found.beats] == ["Watchdog", "DeadMansSwitch"]
    assert [a.labels["prometheus"] for a in found.stopped] == ["b"]


@pytest.mark.parametrize(
    "last_success, now, interval, expected",
    [
        pytest.param(None, 100.0, 5.0, True, id="never-pinged"),
        pytest.param(98.0, 100.0, 5.0, False, id="recent-collapses"),
        pytest.param(95.0, 100.0, 5.0, True, id="exactly-the-interval"),
        pytest.param(10.0, 100.0, 5.0, True, id="long-ago"),
        pytest.param(100.0, 100.0, 0.0, True, id="no-interval-always-due"),
    ],
)
def test_whether_a_ping_is_due(last_success, now, interval, expected):
    assert heartbeat.due(last_success, now, interval) is expected


REJECTED = DeliveryRejected("Alert24 rejected 1 of 1 events")
FAILING = DeliveryFailed("1 of 1 events could not be delivered")


@pytest.mark.parametrize(
    "outcome, events_error, status",
    [
        pytest.param(None, None, None, id="no-heartbeat-delivered"),
        pytest.param(SENT, None, None, id="sent-delivered"),
        pytest.param(COLLAPSED, None, None, id="collapsed-delivered"),
        pytest.param(DRY_RUN, None, None, id="dry-run"),
        pytest.param(RESOLVED, None, None, id="resolved-watchdog-no-ping"),
        pytest.param(SENT, REJECTED, 422, id="sent-but-an-event-rejected"),
        pytest.param(SENT, FAILING, 503, id="sent-but-an-event-failed"),
        pytest.param(FAILED, None, 503, id="ping-failed"),
        pytest.param(FAILED, REJECTED, 503, id="ping-failure-outranks-rejection"),
        pytest.param(FAILED, FAILING, 503, id="both-failed"),
    ],
)
def test_what_the_webhook_answers(outcome, events_error, status):
    error = heartbeat.verdict(outcome, events_error)
    assert (error.status if error else None) == status
    if outcome == FAILED:
        assert error.retryable and "heartbeat ping failed" in error.message


@pytest.mark.parametrize(
    "matchers, problem",
    [
        pytest.param('alertname="Watchdog"', None, id="safe"),
        pytest.param('severity!="critical"', "without labels", id="matches-nearly-everything"),
        pytest.param('alertname=~".*"', "without labels", id="matches-everything"),
        pytest.param('alertname=~".*",job="prometheus"', None, id="one-label-needed-is-enough"),
        pytest.param("", "at least one matcher", id="none"),
    ],
)
def test_heartbeat_matchers_must_not_swallow_pages(matchers, problem):
    found = heartbeat.matchers_problem(parse_matchers(matchers))
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize(
    "url, problem",
    [
        pytest.param(HB_URL, None, id="https"),
        pytest.param("http://127.0.0.1:8099/api/hb/x", None, id="http-loopback"),
        pytest.param("http://localhost/api/hb/x", None, id="http-localhost"),
        pytest.param("http://[::1]:80/api/hb/x", None, id="http-ipv6-loopback"),
        pytest.param("http://app.alert24.net/api/hb/x", "only for a loopback host", id="http-remote"),
        pytest.param("ftp://app.alert24.net/x", "https:// URL", id="other-scheme"),
        pytest.param("app.alert24.net/api/hb/x", "https:// URL", id="no-scheme"),
        pytest.param("https://user:pw@app.alert24.net/x", "credentials", id="credentials"),
        pytest.param("https://app.alert24.net:99999/x", "not a URL", id="bad-port"),
    ],
)
def test_heartbeat_url_rules(url, problem):
    found = heartbeat.url_problem(url)
    assert (found is None) if problem is None else (problem in found)
    assert found is None or "/x" not in found


# --- configuration ------------------------------------------------------------------------------------------


def test_heartbeat_is_off_by_default_with_the_watchdog_matchers():
    config = make_config()
    assert config.heartbeat_url is None
    assert [str(m) for m in config.heartbeat_matchers] == ['alertname=~"Watchdog|DeadMansSwitch"']
    assert config.heartbeat_min_interval == 5.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        pytest.param(
            {"HEARTBEAT_URL": f"http://hb.example/api/hb/{TOKEN}"},
            "HEARTBEAT_URL must be https://; http:// is allowed only for a loopback host",
            id="http-remote",
        ),
        pytest.param({"HEARTBEAT_URL": TOKEN}, "HEARTBEAT_URL must be an https:// URL", id="not-a-url"),
        pytest.param({"HEARTBEAT_MATCHERS": "Watchdog"}, "HEARTBEAT_MATCHERS: 'Watchdog' is not", id="bad-matcher"),
        pytest.param({"HEARTBEAT_MATCHERS": 'env!="x"'}, "HEARTBEAT_MATCHERS would match", id="too-broad"),
        pytest.param({"HEARTBEAT_MIN_INTERVAL": "1h"}, "HEARTBEAT_MIN_INTERVAL must be", id="interval-too-long"),
    ],
)
def test_bad_heartbeat_settings_stop_start_up_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        make_config(**overrides)
    [line] = str(err.value).splitlines()
    assert line.startswith(message)
    assert TOKEN not in line


def test_heartbeat_url_from_a_file_is_masked_everywhere(tmp_path):
    path = tmp_path / "hb-url"
    path.write_text(HB_URL + "\n")
    config = make_config(HEARTBEAT_URL_FILE=str(path))
    assert config.heartbeat_url == HB_URL
    shown = json.dumps(config.masked()) + repr(config)
    assert TOKEN not in shown
    assert config.masked()["heartbeat_url"] == "https://hb.alert24.test/********"


ROUTES_FILE = """
routes:
  payments:
    integration_key_env: PAYMENTS_KEY
    heartbeat_matchers: ['alertname="PaymentsWatchdog"']
  database:
    integration_key_env: PAYMENTS_KEY
    heartbeat_matchers: 'alertname="DbWatchdog",env="prod"'
  plain:
    integration_key_env: PAYMENTS_KEY
"""


@pytest.fixture
def routes_env(tmp_path):
    path = tmp_path / "adapter.yml"
    path.write_text(ROUTES_FILE)
    return {**BASE_ENV, **HB_ENV, "ADAPTER_CONFIG": str(path), "PAYMENTS_KEY": "payments-key"}


def test_routes_may_have_their_own_heartbeat_matchers(routes_env):
    from adapter.config import from_env

    routes = {r.name: r for r in from_env(routes_env).routes}
    assert [str(m) for m in routes["payments"].heartbeat_matchers] == ['alertname="PaymentsWatchdog"']
    assert [str(m) for m in routes["database"].heartbeat_matchers] == ['alertname="DbWatchdog"', 'env="prod"']
    assert routes["plain"].heartbeat_matchers is None
    assert routes["plain"].masked()["heartbeat_matchers"] == "the global HEARTBEAT_MATCHERS"


@pytest.mark.parametrize(
    "value, message",
    [
        pytest.param("['Watchdog']", "routes.payments.heartbeat_matchers: 'Watchdog' is not a matcher", id="bad"),
        pytest.param("[]", "routes.payments.heartbeat_matchers: needs at least one matcher", id="empty"),
        pytest.param("{a: b}", "routes.payments.heartbeat_matchers: must be a list of matchers", id="mapping"),
        pytest.param("['env!=\"x\"']", "routes.payments.heartbeat_matchers: would match", id="too-broad"),
    ],
)
def test_bad_route_heartbeat_matchers_name_the_file_and_path(tmp_path, value, message):
    from adapter.config import from_env

    path = tmp_path / "adapter.yml"
    path.write_text(f"routes:\n  payments:\n    integration_key_env: K\n    heartbeat_matchers: {value}\n")
    with pytest.raises(ConfigError) as err:
        from_env({**BASE_ENV, "ADAPTER_CONFIG": str(path), "K": "key"})
    [line] = str(err.value).splitlines()
    assert line.startswith(f"{path}: {message}")


# --- the client and the collapsing ---------------------------------------------------------------------------


@pytest.fixture
def hb():
    """The heartbeat URL faked at the transport: 200 unless a test says otherwise."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def soon():
    return time.monotonic() + 5


@pytest.mark.parametrize(
    "answer, ok, detail",
    [
        pytest.param({"status": 200}, True, "", id="200"),
        pytest.param({"status": 204}, True, "", id="204"),
        pytest.param({"status": 404}, False, "answered 404", id="unknown-token"),
        pytest.param({"status": 503}, False, "answered 503", id="unavailable"),
        pytest.param(
            {"status": 302, "headers": {"Location": "https://elsewhere/"}}, False, "answered 302", id="redirect"
        ),
        pytest.param(
            {"body": requests.ConnectionError(f"refused for {HB_URL}")}, False, "could not be reached", id="down"
        ),
        pytest.param({"body": requests.ReadTimeout(f"/api/hb/{TOKEN} read timed out")}, False, "timed out", id="slow"),
    ],
)
def test_a_ping_is_one_get_and_never_shows_the_token(hb, answer, ok, detail):
    hb.add(responses.GET, HB_URL, **answer)
    ping = HeartbeatClient(HB_URL).ping(soon())
    assert ping.ok is ok
    assert detail in ping.detail
    assert TOKEN not in ping.detail
    assert ping.detail == "" or "hb.alert24.test" in ping.detail
    assert [c.request.method for c in hb.calls] == ["GET"]


def test_a_ping_never_runs_past_the_webhook_budget(hb):
    ping = HeartbeatClient(HB_URL).ping(time.monotonic() + 0.01)
    assert not ping.ok and "budget" in ping.detail
    assert len(hb.calls) == 0


def test_pings_within_the_interval_collapse_into_one(hb):
    hb.add(responses.GET, HB_URL, status=200)
    clock = Clock()
    beat = Heartbeat(HeartbeatClient(HB_URL), min_interval=5, clock=clock)
    outcomes = [beat.beat(soon())[0]]
    clock.now += 4.9
    outcomes.append(beat.beat(soon())[0])
    clock.now += 0.1
    outcomes.append(beat.beat(soon())[0])
    assert outcomes == [SENT, COLLAPSED, SENT]
    assert len(hb.calls) == 2


def test_a_failed_ping_never_suppresses_the_next(hb):
    hb.add(responses.GET, HB_URL, status=503)
    hb.add(responses.GET, HB_URL, status=200)
    beat = Heartbeat(HeartbeatClient(HB_URL), min_interval=5, clock=Clock())
    assert [beat.beat(soon())[0] for _ in range(3)] == [FAILED, SENT, COLLAPSED]
    assert len(hb.calls) == 2
    assert beat.last_ping["ok"] is True and beat.last_success_at is not None


def test_concurrent_webhooks_share_one_ping(hb):
    """Both members of an HA pair deliver at once: the second waits for the first's ping and is collapsed."""

    def slow(request):
        time.sleep(0.3)
        return 200, {}, ""

    hb.add_callback(responses.GET, HB_URL, callback=slow)
    beat = Heartbeat(HeartbeatClient(HB_URL), min_interval=5)
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(beat.beat(soon())[0])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(outcomes) == [COLLAPSED, COLLAPSED, COLLAPSED, SENT]
    assert len(hb.calls) == 1


# --- the webhook --------------------------------------------------------------------------------------------


@pytest.fixture
def metrics():
    return Metrics()


@pytest.fixture
def env_overrides():
    return HB_ENV


@pytest.fixture
def app(env_overrides, metrics):
    return create_app(make_config(**env_overrides), metrics=metrics)


def pings(mock):
    return [c for c in mock.calls if c.request.method == "GET"]


def value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    "alerts, ping, event, status, sent, outcome",
    [
        pytest.param([WATCHDOG], 200, 202, 200, 0, SENT, id="watchdog-pings-never-pages"),
        pytest.param([WATCHDOG, DEADMAN], 200, 202, 200, 0, SENT, id="two-heartbeats-one-ping"),
        pytest.param([WATCHDOG], 503, 202, 503, 0, FAILED, id="ping-fails-503"),
        pytest.param([WATCHDOG], requests.ConnectionError("down"), 202, 503, 0, FAILED, id="ping-unreachable-503"),
        pytest.param([WATCHDOG], 404, 202, 503, 0, FAILED, id="unknown-token-503"),
        pytest.param([WATCHDOG, PAGE], 200, 202, 200, 1, SENT, id="page-and-heartbeat"),
        pytest.param([WATCHDOG, PAGE], 200, 400, 422, 1, SENT, id="ping-ok-event-rejected"),
        pytest.param([WATCHDOG, PAGE], 503, 400, 503, 1, FAILED, id="ping-fails-event-rejected"),
        pytest.param([WATCHDOG, PAGE], 200, 503, 503, 1, SENT, id="ping-ok-event-failed"),
        pytest.param([PAGE], 200, 202, 200, 1, None, id="no-heartbeat-no-ping"),
    ],
)
def test_answer_codes(post, metrics, alerts, ping, event, status, sent, outcome):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        answer = {"body": ping} if isinstance(ping, Exception) else {"status": ping}
        mock.add(responses.GET, HB_URL, **answer)
        mock.add(responses.POST, API_URL, status=event, json={})
        r = post(notification(*alerts))
        assert r.status_code == status, r.json
        posted = [json.loads(c.request.body) for c in mock.calls if c.request.method == "POST"]
        assert len(pings(mock)) == (1 if outcome else 0)
    assert {b["payload"]["custom_details"]["labels"]["alertname"] for b in posted} <= {"HighErrorRate"}
    assert len({b["dedup_key"] for b in posted}) == sent
    assert r.json.get("heartbeat") == outcome
    assert value(metrics, "alert24_adapter_heartbeats_total", outcome=outcome) == (1 if outcome else 0)
    text = r.get_data(as_text=True)
    assert TOKEN not in text and HB_URL not in text


def test_a_resolved_watchdog_pings_not_and_warns(post, metrics, capsys):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, HB_URL, status=200)
        r = post(notification(alert("Watchdog", "resolved")))
        assert r.status_code == 200 and r.json["heartbeat"] == RESOLVED and r.json["events"] == 0
        assert len(mock.calls) == 0, "neither a ping nor a resolve event"
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines() if "heartbeat alert resolved" in x]
    assert line["level"] == "warning" and line["alertname"] == "Watchdog"
    assert value(metrics, "alert24_adapter_heartbeats_total", outcome=RESOLVED) == 1


@pytest.mark.parametrize("env_overrides", [{}], ids=["no-heartbeat-url"])
def test_without_a_heartbeat_url_the_watchdog_is_an_ordinary_alert(post, alert24, env_overrides):
    r = post(notification(WATCHDOG))
    assert r.status_code == 200 and "heartbeat" not in r.json
    [event] = sent_bodies(alert24)
    assert event["payload"]["custom_details"]["labels"]["alertname"] == "Watchdog"
    assert "heartbeat" not in create_app(make_config(), metrics=Metrics()).test_client().get("/readyz").json


@pytest.mark.parametrize("env_overrides", [{**HB_ENV, "DRY_RUN": "true"}], ids=["dry-run"])
def test_dry_run_pings_nothing(post, metrics, env_overrides):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        r = post(notification(WATCHDOG, PAGE))
        assert len(mock.calls) == 0
    assert r.status_code == 200 and r.json["heartbeat"] == DRY_RUN and len(r.json["would_send"]) == 1
    assert value(metrics, "alert24_adapter_heartbeats_total", outcome=DRY_RUN) == 1


@pytest.mark.parametrize("env_overrides", [{**HB_ENV, "DEDUP_BY": "group"}], ids=["group-mode"])
def test_group_mode_leaves_the_heartbeat_out_of_the_group_event(post, alert24, env_overrides):
    alert24.add(responses.GET, HB_URL, status=200)
    assert post(notification(WATCHDOG, PAGE)).status_code == 200
    [event] = [json.loads(c.request.body) for c in alert24.calls if c.request.method == "POST"]
    assert [m["labels"]["alertname"] for m in event["payload"]["custom_details"]["firing"]] == ["HighErrorRate"]
    assert len(pings(alert24)) == 1


@pytest.mark.parametrize("env_overrides", [{**HB_ENV, "HEARTBEAT_MIN_INTERVAL": "60"}], ids=["interval-60s"])
def test_repeated_webhooks_collapse_into_one_ping(post, metrics, env_overrides):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, HB_URL, status=200)
        answers = [post(notification(WATCHDOG)) for _ in range(3)]
        assert len(pings(mock)) == 1
    assert [(r.status_code, r.json["heartbeat"]) for r in answers] == [(200, SENT), (200, COLLAPSED), (200, COLLAPSED)]
    assert value(metrics, "alert24_adapter_heartbeats_total", outcome=COLLAPSED) == 2


def test_the_token_is_in_no_log_line_metric_or_readiness_answer(post, client, metrics, capsys):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, HB_URL, status=200)
        mock.add(responses.GET, HB_URL, body=requests.ConnectionError(f"cannot connect to {HB_URL}"))
        assert post(notification(WATCHDOG)).status_code == 200
        failed = post(notification(WATCHDOG))
        assert failed.status_code == 503
    assert "hb.alert24.test" in failed.json["error"]
    logs = capsys.readouterr().out
    assert "heartbeat ping sent" in logs and "heartbeat ping failed" in logs
    ready = client.get("/readyz", headers={"Authorization": f"Bearer {SECRET}"}).json["heartbeat"]
    assert ready["host"] == "hb.alert24.test" and ready["last_ping"]["ok"] is False
    assert "host" not in client.get("/readyz").json["heartbeat"], "where the heartbeat is: operators only"
    assert ready["last_success"] > 1.7e9
    text = logs + json.dumps(ready) + failed.get_data(as_text=True) + client.get("/metrics").get_data(as_text=True)
    for secret in (TOKEN, SECRET, INTEGRATION_KEY, API_KEY):
        assert secret not in text
    assert value(metrics, "alert24_adapter_last_successful_heartbeat_timestamp_seconds") > 1.7e9


def test_each_route_uses_its_own_heartbeat_matchers(routes_env):
    app = create_app(environ=routes_env, metrics=Metrics())
    client = app.test_client()
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    body = json.dumps(notification(WATCHDOG, alert("PaymentsWatchdog")))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, HB_URL, status=200)
        mock.add(responses.POST, API_URL, status=202)
        paid = client.post("/alertmanager/payments", data=body, headers=headers)
        plain = client.post("/alertmanager/plain", data=body, headers=headers)
        posted = [json.loads(c.request.body) for c in mock.calls if c.request.method == "POST"]
    assert (paid.json["heartbeats"], paid.json["events"]) == (1, 1), "PaymentsWatchdog pings; Watchdog pages"
    assert (plain.json["heartbeats"], plain.json["events"]) == (1, 1), "the global matchers: Watchdog pings"
    names = [b["payload"]["custom_details"]["labels"]["alertname"] for b in posted]
    assert names == ["Watchdog", "PaymentsWatchdog"]


def test_reload_takes_a_new_heartbeat_url_from_its_file(tmp_path):
    path = tmp_path / "hb-url"
    path.write_text(HB_URL)
    app = create_app(environ={**BASE_ENV, "HEARTBEAT_URL_FILE": str(path)}, metrics=Metrics())
    runtime = app.extensions["alert24_adapter"]
    before = runtime.forwarder.heartbeat
    assert app.reload_config() and runtime.forwarder.heartbeat is before, "same URL: the same pinger"
    path.write_text("https://hb.alert24.test/api/hb/rotated-token")
    assert app.reload_config()
    assert runtime.forwarder.heartbeat.client.url.endswith("/rotated-token")


def test_reload_puts_a_new_heartbeat_min_interval_in_force(tmp_path):
    env = {**BASE_ENV, "HEARTBEAT_URL": HB_URL, "HEARTBEAT_MIN_INTERVAL": "5"}
    app = create_app(environ=env, metrics=Metrics())
    runtime = app.extensions["alert24_adapter"]
    env["HEARTBEAT_MIN_INTERVAL"] = "60"
    assert app.reload_config()
    assert runtime.forwarder.heartbeat.min_interval == 60.0


@pytest.fixture
def cli_env(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith(("SHARED_SECRET", "ALERT24_", "DRY_RUN", "ALLOW_UNAUTH", "ADAPTER_CONFIG", "HEARTBEAT")):
            monkeypatch.delenv(name)
    for name, val in {**BASE_ENV, **HB_ENV}.items():
        monkeypatch.setenv(name, val)
    return monkeypatch


def test_check_config_shows_the_heartbeat_host_only(cli_env, capsys):
    assert cli.main(["check-config"]) == 0
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert shown["heartbeat_url"] == "https://hb.alert24.test/********"
    assert shown["heartbeat_matchers"] == ['alertname=~"Watchdog|DeadMansSwitch"']
    assert "heartbeat on: alerts matching" in err
    assert TOKEN not in out + err


def test_check_config_refuses_a_plain_http_heartbeat_url(cli_env, capsys):
    cli_env.setenv("HEARTBEAT_URL", f"http://hb.alert24.test/api/hb/{TOKEN}")
    assert cli.main(["check-config"]) == 1
    err = capsys.readouterr().err
    assert "HEARTBEAT_URL must be https://" in err and TOKEN not in err


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_render_says_heartbeat_not_a_page(cli_env, capsys, tmp_path, as_json):
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(notification(WATCHDOG, alert("Watchdog", "resolved", prometheus="b"), PAGE)))
    assert cli.main(["render", str(path), *(["--json"] if as_json else [])]) == 0
    out = capsys.readouterr().out
    if as_json:
        lines = [json.loads(x) for x in out.splitlines()]
        assert [x.get("ping") for x in lines if "heartbeat" in x] == [True, False]
        assert [x["event_action"] for x in lines if "event_action" in x] == ["trigger"]
    else:
        assert "heartbeat, not a page: alert" in out and "(Watchdog) pings https://hb.alert24.test/********" in out
        assert "heartbeat stopped:" in out
        assert "event 1 of 1: trigger" in out
    assert TOKEN not in out


def test_render_without_a_heartbeat_url_shows_the_watchdog_as_an_event(cli_env, capsys, tmp_path):
    cli_env.delenv("HEARTBEAT_URL")
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(notification(WATCHDOG)))
    assert cli.main(["render", str(path)]) == 0
    out = capsys.readouterr().out
    assert "heartbeat" not in out and "event 1 of 1: trigger" in out


def docs_block(page: str, after: str, language: str) -> str:
    """The first fenced block of `language` in docs/`page` after the text `after`."""
    text = (ROOT / "docs" / page).read_text()
    start = text.index(f"```{language}\n", text.index(after)) + len(language) + 4
    return text[start : text.index("```\n", start)]


def test_the_documented_watchdog_route_is_valid_alertmanager_configuration(tmp_path):
    """The Watchdog's route in docs/alertmanager.md: accepted by amtool, its own route, resent every minute at
    once."""
    config = yaml.safe_load(docs_block("alertmanager.md", "<!-- watchdog-route -->", "yaml"))
    [route] = config["route"]["routes"]
    assert (route["group_wait"], route["repeat_interval"]) == ("0s", "1m")
    assert heartbeat.is_heartbeat({"alertname": "Watchdog"}, parse_matchers(route["matchers"][0]))
    assert config["receivers"][0]["webhook_configs"][0]["send_resolved"] is True
    # The snippet shows the Watchdog's receiver only; the default one is the page's first receiver.
    config["receivers"].append({"name": config["route"]["receiver"], "webhook_configs": [{"url": "http://x/"}]})
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [binary("amtool"), "check-config", str(tmp_path / "am.yml")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_documented_watchdog_rule_is_a_valid_prometheus_rule(tmp_path):
    """The Watchdog rule in docs/heartbeat.md: promtool accepts it, and the default matchers take it."""
    rule = yaml.safe_load(docs_block("heartbeat.md", "**1. Prometheus**", "yaml"))
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "watchdog", "rules": rule}]}))
    result = subprocess.run(
        [binary("promtool"), "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and "SUCCESS: 1 rules found" in result.stdout, result.stdout + result.stderr
    assert heartbeat.is_heartbeat(rule[0]["labels"] | {"alertname": rule[0]["alert"]}, DEFAULT_HEARTBEAT_MATCHERS)
