"""The alert24-adapter command: check-config, render, send-test and serve, with their outputs and exit codes."""

import io
import json
import threading

import pytest
from werkzeug.serving import make_server

from adapter import cli, create_app, rest
from adapter.metrics import Metrics

from .conftest import API_KEY, BASE_ENV, INTEGRATION_KEY, PAYLOADS, SECRET, make_config
from .fake_alert24 import FakeAlert24


@pytest.fixture
def env(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith(("SHARED_SECRET", "ALERT24_", "DRY_RUN", "ALLOW_UNAUTH", "ADAPTER_CONFIG")):
            monkeypatch.delenv(name)
    for name, value in BASE_ENV.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_check_config_prints_the_effective_config_masked(env, capsys):
    assert cli.main(["check-config"]) == 0
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert shown["integration_key"] == "********" and shown["shared_secrets"] == ["********"]
    assert shown["api_url"] == BASE_ENV["ALERT24_API_URL"] and shown["rules"]["dedup_by"] == "alert"
    assert "configuration OK" in err
    for secret in (SECRET, INTEGRATION_KEY, API_KEY):
        assert secret not in out + err


def test_check_config_reports_each_problem_on_its_own_line(env, capsys):
    env.delenv("SHARED_SECRET")
    env.setenv("DEDUP_BY", "nope")
    assert cli.main(["check-config"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("alert24-adapter: configuration error: SHARED_SECRET is not set")
    assert lines[1] == "alert24-adapter: configuration error: DEDUP_BY must be one of alert, group"


def test_render_explains_each_event(env, capsys):
    assert cli.main(["render", "--example", "multi"]) == 0
    out = capsys.readouterr().out
    assert "event 1 of 2: resolve dedup_key=913c8c434ab89a6b severity=warning" in out
    assert "event 2 of 2: trigger dedup_key=55b97254facb078e severity=warning" in out
    assert "severity: label severity='warning' maps to warning" in out
    assert "dedup: dedup_by=alert: the alert's fingerprint" in out
    assert INTEGRATION_KEY not in out


def test_render_json_from_a_file_in_group_mode(env, capsys):
    env.setenv("DEDUP_BY", "group")
    assert cli.main(["render", "--json", str(PAYLOADS / "firing-two-instances.json")]) == 0
    [line] = capsys.readouterr().out.splitlines()
    event = json.loads(line)
    assert event["dedup_key"].startswith("group-") and event["why"]["dedup"].startswith("dedup_by=group")


def test_render_reads_standard_input_and_needs_no_secrets(env, capsys):
    env.delenv("SHARED_SECRET")
    env.delenv("ALERT24_INTEGRATION_KEY")
    env.setattr("sys.stdin", io.StringIO((PAYLOADS / "firing-single.json").read_text()))
    assert cli.main(["render", "-"]) == 0
    assert "trigger dedup_key=114048fe91a99bfd severity=critical" in capsys.readouterr().out


def test_render_refuses_a_bad_payload(env, capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"alerts": [{"status": "firing"}]}')
    assert cli.main(["render", str(bad)]) == 1
    assert "alerts[0] has no 'labels' object" in capsys.readouterr().err


@pytest.fixture
def running_adapter(alert24):
    app = create_app(make_config(), metrics=Metrics())
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alertmanager"
    server.shutdown()
    thread.join(timeout=5)


def test_send_test_fires_and_resolves(env, capsys, running_adapter, alert24):
    alert24.add_passthru("http://127.0.0.1")
    assert cli.main(["send-test", "--url", running_adapter, "--resolve"]) == 0
    # The in-process adapter logs to the same stdout; keep the command's own lines.
    out = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("{")]
    assert out[0].startswith("firing: HTTP 200") and out[1].startswith("resolved: HTTP 200")
    sent = [json.loads(c.request.body) for c in alert24.calls if "alert24.test" in c.request.url]
    assert [s["event_action"] for s in sent] == ["trigger", "resolve"]
    assert sent[0]["dedup_key"] == sent[1]["dedup_key"]
    assert sent[0]["payload"]["custom_details"]["labels"]["alertname"] == "Alert24AdapterTest"


def test_send_test_fails_with_a_wrong_secret(env, capsys, running_adapter, alert24):
    alert24.add_passthru("http://127.0.0.1")
    env.setenv("SHARED_SECRET", "not-the-one")
    assert cli.main(["send-test", "--url", running_adapter]) == 1
    assert "firing: HTTP 401" in capsys.readouterr().out


def test_send_test_reports_an_unreachable_adapter(env, capsys):
    assert cli.main(["send-test", "--url", "http://127.0.0.1:9/alertmanager", "--timeout", "2"]) == 1
    assert "could not reach" in capsys.readouterr().err


def test_serve_runs_gunicorn_with_the_shipped_settings(env, monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execvp", lambda exe, argv: calls.append(argv))
    cli.main(["serve", "--", "--workers", "3"])
    [argv] = calls
    assert argv[1:] == [
        "-m",
        "gunicorn",
        "--config",
        "python:adapter.gunicorn_conf",
        "--workers",
        "3",
        "adapter.wsgi:app",
    ]


@pytest.mark.parametrize("command", ["check-config", "render", "send-test", "serve"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert "usage: alert24-adapter" in capsys.readouterr().out


def test_wrong_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["frobnicate"])
    assert done.value.code == 2


def test_render_for_a_route_shows_the_deciding_rule_and_drops(env, capsys, tmp_path):
    path = tmp_path / "adapter.yml"
    path.write_text(
        "rules:\n"
        "  - name: no-db-1\n    matchers: ['instance=\"db-1:9100\"']\n    action: drop\n"
        "routes:\n  db:\n    integration_key_env: DB_KEY\n"
        "    rules:\n      - name: disk-is-critical\n        matchers: ['instance=\"db-2:9100\"']\n"
        "        severity: critical\n"
    )
    env.setenv("ADAPTER_CONFIG", str(path))
    env.setenv("DB_KEY", "db-key")
    assert cli.main(["render", "--route", "db", "--example", "multi"]) == 0
    out = capsys.readouterr().out
    assert "event 1 of 2: trigger dedup_key=55b97254facb078e severity=critical" in out
    assert "severity: rule 'disk-is-critical' (instance=\"db-2:9100\"): severity critical" in out
    # db-1 has resolved: a drop rule never stops a resolve (the service with a ledger sends it only if open).
    assert "event 2 of 2: resolve dedup_key=913c8c434ab89a6b severity=warning" in out
    assert "held: drop rule 'no-db-1' stops pages, not resolves" in out
    assert cli.main(["render", "--route", "db", str(PAYLOADS / "firing-two-instances.json")]) == 0
    assert "dropped: alert 913c8c434ab89a6b (DiskFull) by rule 'no-db-1'" in capsys.readouterr().out
    assert cli.main(["render", "--route", "nope", "--example", "multi"]) == 1


@pytest.mark.parametrize(
    "edit, code, expected",
    [
        pytest.param(
            lambda t: t.replace('"HighErrorRate"', '"High\\ud800Rate"', 1), 0, "High\\ufffdRate", id="surrogate"
        ),
        pytest.param(lambda t: t[:-1] + ', "x": 1' + "0" * 5000 + "}", 0, "event 1 of 1", id="5000-digits-ignored"),
        pytest.param(
            lambda t: t[:-1] + ', "truncatedAlerts": 1' + "0" * 5000 + "}", 1, "'truncatedAlerts'", id="huge-count"
        ),
        pytest.param(lambda t: t[:-1] + ', "x": NaN}', 1, "NaN is not a JSON number", id="nan"),
    ],
)
def test_render_takes_hostile_payloads_as_the_service_does(env, capsys, tmp_path, edit, code, expected):
    """The same decoding as the webhook: strings repaired, unread huge numbers ignored, read ones checked."""
    path = tmp_path / "payload.json"
    path.write_text(edit((PAYLOADS / "firing-single.json").read_text().strip()))
    assert cli.main(["render", str(path)]) == code
    out, err = capsys.readouterr()
    assert expected in (out if code == 0 else err)
    (out + err).encode("utf-8")


@pytest.fixture
def ledger_env(env, tmp_path):
    """The reconciler on against a faked Alertmanager, with a SQLite ledger holding two open incidents."""
    from adapter.ledger import open_ledger

    from .ledgers import event

    env.setenv("ALERTMANAGER_URL", "http://am.test:9093")
    env.setenv("LEDGER_URL", f"sqlite://{tmp_path}/ledger.db")
    env.setenv("RECONCILE_GRACE", "10m")
    ledger = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    ledger.setup()
    ledger.record("", [event("aaaa", summary="Disk /var is 97% full")], 1_700_000_000.0)
    ledger.record("db", [event("bbbb", alertname="Replication")], 1_700_000_000.0)
    ledger.note_absence([("", "aaaa")], [], 1_700_000_000.0)
    ledger.close()
    return env


def test_incidents_lists_the_open_entries(ledger_env, capsys):
    assert cli.main(["incidents"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == (
        "default aaaa DiskFull warning first 2023-11-14T22:13:20Z last 2023-11-14T22:13:20Z "
        "absent since 2023-11-14T22:13:20Z: Disk /var is 97% full"
    )
    assert lines[1].startswith("db bbbb Replication warning first")
    assert "2 open incident(s) in sqlite:///" in err


def test_incidents_json(ledger_env, capsys):
    assert cli.main(["incidents", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["route"], r["dedup_key"], r["fingerprints"]) for r in rows] == [
        ("default", "aaaa", ["aaaa"]),
        ("db", "bbbb", ["bbbb"]),
    ]


def test_incidents_without_a_ledger_says_how_to_get_one(env, capsys):
    assert cli.main(["incidents"]) == 1
    assert "no ledger: set ALERTMANAGER_URL (reconciler) or LEDGER_URL" in capsys.readouterr().err


def test_reconcile_dry_run_says_what_it_would_resolve_and_why(ledger_env, capsys, tmp_path):
    import responses

    from adapter.ledger import open_ledger

    with responses.RequestsMock() as mock:
        mock.add(responses.GET, "http://am.test:9093/api/v2/alerts", json=[{"fingerprint": "cccc"}])
        assert cli.main(["reconcile", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert (
        "would resolve: default aaaa DiskFull: no Alertmanager reports its alerts since 2023-11-14T22:13:20Z, "
        "and the grace of 600 s has passed"
    ) in out
    assert "absent: db bbbb Replication: no Alertmanager reports its alerts; resolved from" in out
    assert "2 absent incident(s); 1 would resolve" in err
    ledger = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    assert [e.absent_since for e in ledger.entries()] == [1_700_000_000.0, None], "a dry run changes nothing"
    ledger.close()


def test_reconcile_dry_run_with_alertmanager_down_resolves_nothing(ledger_env, capsys):
    import responses

    with responses.RequestsMock() as mock:
        mock.add(responses.GET, "http://am.test:9093/api/v2/alerts", status=503)
        assert cli.main(["reconcile", "--dry-run"]) == 1
    assert "pass skipped, nothing would be resolved: Alertmanager http://am.test:9093 answered 503" in (
        capsys.readouterr().err
    )


def test_reconcile_defers_to_a_running_leader(ledger_env, capsys, tmp_path):
    from adapter.ledger import open_ledger

    leader = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    assert leader.try_lead()
    try:
        assert cli.main(["reconcile"]) == 1
    finally:
        leader.close()
    assert "a running adapter holds the reconciler's lock" in capsys.readouterr().err


def test_check_config_opens_the_ledger(ledger_env, capsys):
    assert cli.main(["check-config"]) == 0
    out, err = capsys.readouterr()
    assert "ledger OK: sqlite:///" in err and "2 open incident(s)" in err
    assert json.loads(out)["alertmanager_urls"] == ["http://am.test:9093"]


def test_check_config_reports_an_unusable_ledger(env, capsys, tmp_path):
    (tmp_path / "file").write_text("")
    env.setenv("LEDGER_URL", f"sqlite://{tmp_path}/file/ledger.db")
    assert cli.main(["check-config"]) == 1
    assert "ledger problem (webhooks would still be delivered)" in capsys.readouterr().err


def test_check_config_refuses_a_reconcile_grace_below_its_floor(env, capsys, tmp_path):
    env.setenv("ALERTMANAGER_URL", "http://am.test:9093")
    env.setenv("LEDGER_URL", f"sqlite://{tmp_path}/ledger.db")
    env.setenv("RECONCILE_GRACE", "0")
    assert cli.main(["check-config"]) == 1
    out, err = capsys.readouterr()
    [line] = err.strip().splitlines()
    assert out == "" and line.startswith("alert24-adapter: configuration error: RECONCILE_GRACE must be at least 5m")


@pytest.mark.parametrize("argv", [["reconcile"], ["reconcile", "--dry-run"]], ids=["pass", "dry-run"])
def test_reconcile_never_writes_into_the_services_metrics_directory(tmp_path, argv):
    """Run beside the service (kubectl exec) with its PROMETHEUS_MULTIPROC_DIR, it counts in its own registry."""
    import os
    import socket
    import subprocess
    import sys

    live = tmp_path / "metrics"
    live.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ALERT24_", "SHARED_SECRET", "LEDGER_"))},
        **BASE_ENV,
        "PROMETHEUS_MULTIPROC_DIR": str(live),
        "ALERTMANAGER_URL": f"http://127.0.0.1:{port}",
        "LEDGER_URL": f"sqlite://{tmp_path}/ledger.db",
    }
    result = subprocess.run(
        [sys.executable, "-m", "adapter.cli", *argv], env=env, capture_output=True, text=True, timeout=60
    )
    assert "pass skipped" in result.stderr, result.stderr
    assert sorted(os.listdir(live)) == []


def test_render_explains_a_skip_from_the_ledger(env, capsys, tmp_path):
    """With the default ledger holding the example's trigger, accepted 4 minutes ago: render says it is skipped,
    and why; a trigger it does not hold would be sent."""
    import time

    from adapter import alertmanager
    from adapter.ledger import open_ledger
    from adapter.mapping import map_notification

    env.delenv("RESEND_INTERVAL")
    env.setenv("STATE_DIRECTORY", str(tmp_path))
    events = map_notification(alertmanager.parse(cli.example("firing")), make_config().rules)
    ledger = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    ledger.setup()
    ledger.record("", events, time.time() - 240)
    ledger.close()
    assert cli.main(["render", "--example", "firing"]) == 0
    out = capsys.readouterr().out
    assert "  decision: skip: unchanged: Alert24 accepted this trigger, of this episode and severity, within " in out
    assert "trigger accepted 4 min ago, episode 2026-11-28T13:32:21.417216604Z, RESEND_INTERVAL 1h)" in out
    assert "(open since 20" in out
    assert cli.main(["render", "--example", "multi", "--json"]) == 0
    decisions = [json.loads(line)["decision"] for line in capsys.readouterr().out.splitlines()]
    assert [(d["verdict"], d["reason"]) for d in decisions] == [("send", "resolve"), ("send", "new")]


def test_check_config_says_when_the_default_ledger_cannot_be_written(env, capsys, tmp_path):
    (tmp_path / "file").write_text("")
    env.delenv("RESEND_INTERVAL")
    env.setenv("STATE_DIRECTORY", str(tmp_path / "file" / "state"))
    assert cli.main(["check-config"]) == 0
    err = capsys.readouterr().err
    assert "alert24-adapter: ledger off: the ledger's directory (STATE_DIRECTORY) cannot be written" in err
    assert "every trigger is sent" in err and "configuration OK" in err


def test_check_config_names_the_resend_interval_and_the_budget(env, capsys, tmp_path):
    env.delenv("RESEND_INTERVAL")
    env.setenv("STATE_DIRECTORY", str(tmp_path))
    env.setenv("ALERT24_RATE_LIMIT", "100")
    assert cli.main(["check-config"]) == 0
    err = capsys.readouterr().err
    assert f"ledger OK: sqlite://{tmp_path}/ledger.db, 0 open incident(s)" in err
    assert "RESEND_INTERVAL 1h ago is not sent again" in err
    assert f"at most 100 events a minute per integration key, kept in sqlite://{tmp_path}/ledger.db" in err


def test_send_test_reaches_alert24_every_time_even_with_the_ledger(env, capsys, alert24, tmp_path):
    """Each run is a new alert: the default ledger does not take a second test for an unchanged resend."""
    env.delenv("RESEND_INTERVAL")
    environ = {k: v for k, v in BASE_ENV.items() if k != "RESEND_INTERVAL"}
    app = create_app(environ={**environ, "STATE_DIRECTORY": str(tmp_path)}, metrics=Metrics())
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    alert24.add_passthru("http://127.0.0.1")
    try:
        for _ in range(2):
            assert cli.main(["send-test", "--url", f"http://127.0.0.1:{server.server_port}/alertmanager"]) == 0
    finally:
        server.shutdown()
        thread.join(timeout=5)
    sent = [json.loads(c.request.body) for c in alert24.calls if "alert24.test" in c.request.url]
    assert len(sent) == 2 and sent[0]["dedup_key"] != sent[1]["dedup_key"]


@pytest.mark.parametrize(
    "rest_mode, accepted, code",
    [
        pytest.param(True, "accepted: rest", 0, id="documented-rest-api"),
        pytest.param(False, "accepted: events", 0, id="article-events"),
    ],
)
def test_send_test_direct_tells_which_format_alert24_speaks(env, capsys, rest_mode, accepted, code):
    with FakeAlert24(rest=rest_mode) as fake:
        env.setenv("ALERT24_API_URL", fake.url)
        assert cli.main(["send-test", "--direct", "--format", "both", "--timeout", "5"]) == code
        calls = [(r["method"], r["status"]) for r in fake.requests]
    out = capsys.readouterr().out
    assert f"127.0.0.1:{fake.url.split(':')[2].split('/')[0]} {accepted} (tried: events, rest)" in out
    if rest_mode:
        assert "events: trigger: rejected (HTTP 400)" in out and "title is required" in out
        assert "rest: create: accepted (HTTP 201)" in out and "rest: resolve inc_0001: accepted (HTTP 200)" in out
        assert calls == [("POST", 400), ("POST", 201), ("PUT", 200)]
    else:
        assert "rest: create: accepted (HTTP 202)" in out and "not the REST API" in out
        assert calls == [("POST", 202), ("POST", 202), ("POST", 202)]
    for secret in (INTEGRATION_KEY, API_KEY):
        assert secret not in out


def test_send_test_direct_fails_when_the_chosen_format_is_refused(env, capsys):
    with FakeAlert24(rest=True) as fake:
        env.setenv("ALERT24_API_URL", fake.url)
        assert cli.main(["send-test", "--direct", "--timeout", "5"]) == 1
    assert "accepted: neither format (tried: events)" in capsys.readouterr().out


def test_send_test_needs_url_or_direct(env, capsys):
    assert cli.main(["send-test"]) == 2
    assert "give --url" in capsys.readouterr().err


def test_render_in_the_rest_format_shows_the_requests(env, capsys, tmp_path):
    env.setenv("ALERT24_FORMAT", "rest")
    env.setenv("STATE_DIRECTORY", str(tmp_path))
    assert cli.main(["render", "--example", "multi"]) == 0
    out = capsys.readouterr().out
    assert "event 2 of 2: trigger dedup_key=55b97254facb078e severity=high" in out
    looked_up_then_created = (
        "step: find: unknown to the ledger\n  request: GET /api/v1/incidents?status=open&limit=100&offset=0\n"
        "  request: POST /api/v1/incidents\n  body: {"
    )
    assert looked_up_then_created in out
    assert '"tags": [\n      "dedup:55b97254facb078e"' in out
    assert "step: find: unknown to the ledger" in out and "request: PUT /api/v1/incidents/{id}" in out
    assert not (tmp_path / "ledger.db").exists(), "a render changes nothing"
    assert cli.main(["render", "--example", "firing", "--json"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    shown = json.loads(line)
    assert shown["step"] == "find" and shown["requests"][0]["method"] == "GET"
    assert shown["requests"][1]["body"]["status"] == "open"


@pytest.mark.parametrize(
    "episode, step, call",
    [
        pytest.param("2026-11-28T13:32:21.417216604Z", "skip", None, id="same-episode-proven-open-sends-nothing"),
        pytest.param("2026-11-27T09:00:00.000000000Z", "check", "GET /api/v1/incidents/inc_7", id="new-episode-checks"),
    ],
)
def test_render_in_the_rest_format_checks_an_incident_nothing_proves_open(env, capsys, tmp_path, episode, step, call):
    import dataclasses
    import time

    from adapter import alertmanager
    from adapter.ledger import open_ledger
    from adapter.mapping import map_notification

    env.setenv("ALERT24_FORMAT", "rest")
    env.delenv("RESEND_INTERVAL")
    env.setenv("STATE_DIRECTORY", str(tmp_path))
    [event] = map_notification(alertmanager.parse(cli.example("firing")), make_config(ALERT24_FORMAT="rest").rules)
    ledger = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    ledger.setup()
    ledger.record("", [dataclasses.replace(event, episode=episode)], time.time() - 60)
    ledger.rest_open("", event.dedup_key, "inc_7", rest.title(event), rest.severity(event))
    ledger.close()
    capsys.readouterr()
    assert cli.main(["render", "--example", "firing", "--json"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    shown = json.loads(line)
    assert shown["step"] == step
    assert [f"{r['method']} {r['path']}" for r in shown["requests"]] == ([call] if call else [])


def test_render_in_the_events_format_names_the_request(env, capsys):
    assert cli.main(["render", "--example", "firing", "--json"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["request"] == {"method": "POST", "path": "/api/v1/incidents"}


def test_check_config_says_the_rest_format_keeps_ids_in_the_ledger(env, capsys, tmp_path):
    env.setenv("ALERT24_FORMAT", "rest")
    env.setenv("STATE_DIRECTORY", str(tmp_path))
    assert cli.main(["check-config"]) == 0
    err = capsys.readouterr().err
    assert "format rest on default: Alert24's documented API; the ledger keeps each incident's id" in err
    assert f"(sqlite://{tmp_path}/ledger.db)" in err
    assert "with a SQLite ledger, which this replica alone sees" in err and "one shared PostgreSQL ledger" in err
    env.setenv("STATE_DIRECTORY", "/proc/no-such-place")
    assert cli.main(["check-config"]) == 1
    assert "the rest format (default) needs the ledger" in capsys.readouterr().err


def test_incidents_show_the_alert24_id_of_the_rest_format(env, capsys, tmp_path):
    from adapter.ledger import open_ledger
    from adapter.mapping import Event

    env.setenv("LEDGER_URL", f"sqlite://{tmp_path}/ledger.db")
    ledger = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    ledger.setup()
    payload = {"summary": "disk full", "severity": "high", "source": "x", "custom_details": {}}
    ledger.record("", [Event(k, "trigger", payload, [], {}, ((k, "firing"),), "DiskFull") for k in ("a", "b")], 1e9)
    ledger.rest_open("", "a", "inc_7", "disk full", "high")
    ledger.close()
    assert cli.main(["incidents", "--json"]) == 0
    # Log lines of apps other tests built in this process may share the output: the incidents have no logger.
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    shown = {i["dedup_key"]: i.get("alert24_incident_id") for i in lines if "logger" not in i}
    assert shown == {"a": "inc_7", "b": None}


@pytest.fixture
def history_env(ledger_env, tmp_path):
    """The ledger of ledger_env, with the history of three notifications of alert aaaa: paged, skipped, resolved."""
    from adapter import history
    from adapter.ledger import open_ledger

    ledger = open_ledger(f"sqlite://{tmp_path}/ledger.db")
    base = {"fingerprint": "aaaa", "dedup_key": "aaaa", "alertname": "DiskFull", "route": "default"}
    alerts = [
        {**base, "status": "firing", "action": "trigger", "outcome": "accepted", "reason": "new", "status_code": 202},
        {**base, "status": "firing", "action": "trigger", "outcome": "unchanged", "accepted_at": 1_700_000_000.0},
        {**base, "status": "firing", "action": "trigger", "outcome": "dropped", "rule": "night-quiet"},
    ]
    ledger.add_history(
        [
            history.Entry(
                1_700_000_000.0 + 300 * i, "webhook", "default", "alert24", "{}", f"rid-{i}", 200, "h/1", (a,)
            )
            for i, a in enumerate(alerts)
        ]
    )
    ledger.close()
    return ledger_env


def test_history_lists_each_notification_newest_first(history_env, capsys):
    assert cli.main(["history", "--alertname", "DiskFull"]) == 0
    out, err = capsys.readouterr()
    heads = [line for line in out.splitlines() if not line.startswith("  ")]
    assert [h.split()[2] for h in heads] == ["rid-2", "rid-1", "rid-0"]
    assert "dropped: dropped by rule night-quiet" in out
    assert "3 notification(s) in sqlite:///" in err


def test_history_json_filters_by_outcome(history_env, capsys):
    assert cli.main(["history", "--outcome", "unchanged", "--json"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["request_id"], row["alerts"][0]["outcome"]) == ("rid-1", "unchanged")


def test_history_refuses_a_since_it_cannot_read(history_env, capsys):
    assert cli.main(["history", "--since", "yesterday"]) == 2
    assert "30m, 2h, 7d" in capsys.readouterr().err


def test_explain_tells_the_story_and_ends_with_the_verdict(history_env, capsys):
    assert cli.main(["explain", "DiskFull"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "sent (trigger, new to the ledger): Alert24 accepted it (202)" in lines[0]
    assert "not sent: Alert24 accepted this episode 5 min ago" in lines[1]
    assert "dropped by rule night-quiet" in lines[2]
    assert lines[3].startswith("The ledger holds its incident open since 2023-11-14 22:13:20")
    assert "The reconciler counts it absent from every Alertmanager" in lines[4]
    assert lines[-1] == "Verdict: paged at 2023-11-14 22:13:20 (Alert24 202)."


def test_explain_of_an_alert_never_seen_says_so(history_env, capsys):
    assert cli.main(["explain", "NeverFired", "instance=x"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "No notification in the history carried this alert."
    assert out.splitlines()[-1].startswith("Verdict: not paged: no notification carried it here")
