"""The configuration file: routes per team, validation with file and path, reload without dropping a page."""

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
import responses

from adapter import create_app
from adapter.config import from_env
from adapter.errors import ConfigError
from adapter.metrics import Metrics

from .conftest import API_URL, BASE_ENV, INTEGRATION_KEY, SECRET, payload, sent_bodies

ROOT = Path(__file__).resolve().parents[1]

FILE = """
rules:
  - name: staging-low
    matchers: ['env="staging"']
    max_severity: low
routes:
  payments:
    integration_key_env: PAYMENTS_KEY
  database:
    integration_key_file: {key_file}
    shared_secret_env: DB_SECRET
    dedup_by: group
    severity_map: {{warning: high}}
"""


@pytest.fixture
def config_env(tmp_path):
    key_file = tmp_path / "db-key"
    key_file.write_text("db-integration-key\n")
    path = tmp_path / "adapter.yml"
    path.write_text(FILE.format(key_file=key_file))
    return {**BASE_ENV, "ADAPTER_CONFIG": str(path), "PAYMENTS_KEY": "payments-key", "DB_SECRET": "db-secret"}


@pytest.fixture
def metrics():
    return Metrics()


@pytest.fixture
def app(config_env, metrics):
    return create_app(environ=config_env, metrics=metrics)


def post_to(client, path, body="firing-two-instances", secret=SECRET):
    data = payload(body) if isinstance(body, str) else body
    return client.post(
        path,
        data=json.dumps(data),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    "path, secret, key, events, severity",
    [
        pytest.param("/alertmanager", SECRET, INTEGRATION_KEY, 2, "warning", id="default-route"),
        pytest.param("/alertmanager/payments", SECRET, "payments-key", 2, "warning", id="payments-route"),
        pytest.param("/alertmanager/database", "db-secret", "db-integration-key", 1, "high", id="database-route"),
    ],
)
def test_each_route_uses_its_own_key_and_rules(client, alert24, path, secret, key, events, severity):
    r = post_to(client, path, secret=secret)
    assert r.status_code == 200, r.json
    bodies = sent_bodies(alert24)
    assert len(bodies) == events
    assert {b["integration_key"] for b in bodies} == {key}
    assert {b["payload"]["severity"] for b in bodies} == {severity}


def test_route_with_its_own_secret_refuses_the_global_one(client, alert24):
    assert post_to(client, "/alertmanager/database", secret=SECRET).status_code == 401
    assert post_to(client, "/alertmanager/payments", secret="db-secret").status_code == 401
    assert len(alert24.calls) == 0


def test_unknown_route_is_404_and_sends_nothing(client, alert24):
    r = post_to(client, "/alertmanager/marketing")
    assert r.status_code == 404 and "no such route" in r.json["error"]
    assert post_to(client, "/alertmanager/marketing", secret="wrong").status_code == 401, "no route names to strangers"
    assert len(alert24.calls) == 0


def test_global_rules_apply_to_every_route(client, alert24):
    data = payload("firing-single")
    data["alerts"][0]["labels"]["env"] = "staging"
    post_to(client, "/alertmanager/payments", data)
    [body] = sent_bodies(alert24)
    assert body["payload"]["severity"] == "low"


def test_without_a_default_key_only_routes_work(config_env, alert24):
    env = {k: v for k, v in config_env.items() if k != "ALERT24_INTEGRATION_KEY"}
    client = create_app(environ=env, metrics=Metrics()).test_client()
    assert post_to(client, "/alertmanager").status_code == 404
    assert post_to(client, "/alertmanager/payments").status_code == 200


def problems_for(tmp_path, text, **env):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        from_env({**BASE_ENV, "ADAPTER_CONFIG": str(path), **env})
    return [line.replace(str(path), "FILE") for line in str(err.value).splitlines()]


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("colour: red\n", ["FILE: unknown key 'colour' (expected rules, routes)"], id="unknown-top-key"),
        pytest.param(
            "routes:\n  team:\n    severity_map: {warning: high}\n",
            ["FILE: routes.team: no integration key; set integration_key_env or integration_key_file"],
            id="route-without-key",
        ),
        pytest.param(
            "routes:\n  team:\n    integration_key_env: NOPE\n",
            ["FILE: routes.team.integration_key_env: the environment variable it names is not set"],
            id="key-variable-unset",
        ),
        pytest.param(
            "routes:\n  Team!:\n    integration_key_env: X\n",
            ["FILE: routes.Team!: a route name is 1-63 of a-z, 0-9, _ and -, starting with a letter or digit"],
            id="bad-route-name",
        ),
        pytest.param(
            "routes:\n  team:\n    integration_key_env: X\n    colour: red\n",
            ["FILE: routes.team: unknown key 'colour'"],
            id="route-unknown-key",
        ),
        pytest.param(
            "rules:\n  - matchers: ['a~\"b\"']\n    severity: low\n",
            ["FILE: rules[0].matchers[0]: 'a~\"b\"' is not a matcher such as 'service=\"payments\"'"],
            id="bad-matcher",
        ),
        pytest.param(
            "rules:\n  - severity: low\n    time_intervals: [{location: Nowhere/City}]\n",
            ["FILE: rules[0].time_intervals[0].location: 'Nowhere/City' is not an IANA time zone"],
            id="bad-zone",
        ),
        pytest.param("rules: [\n", ["FILE: not valid YAML at line 2, column 1"], id="yaml-syntax"),
        pytest.param("- a\n- b\n", ["FILE: the file must be a mapping with 'rules' and/or 'routes'"], id="not-mapping"),
    ],
)
def test_file_problems_are_one_line_each_with_file_and_path(tmp_path, text, expected):
    assert problems_for(tmp_path, text, X="x") == expected


def test_several_problems_each_get_a_line(tmp_path):
    text = "colour: red\nroutes:\n  a:\n    dedup_by: never\n"
    lines = problems_for(tmp_path, text)
    assert len(lines) == 3
    assert all(line.startswith("FILE: ") for line in lines)


def test_missing_file_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="ADAPTER_CONFIG: cannot read .*/nope.yml: No such file"):
        from_env({**BASE_ENV, "ADAPTER_CONFIG": str(tmp_path / "nope.yml")})


def test_shipped_example_file_is_valid(tmp_path):
    key = tmp_path / "db-key"
    key.write_text("k")
    text = (
        (ROOT / "deploy" / "alert24-adapter.example.yml")
        .read_text()
        .replace("/run/secrets/database-alert24-key", str(key))
    )
    path = tmp_path / "example.yml"
    path.write_text(text)
    config = from_env(
        {**BASE_ENV, "ADAPTER_CONFIG": str(path), "PAYMENTS_ALERT24_KEY": "p", "DATABASE_SHARED_SECRET": "d"}
    )
    assert [r.name for r in config.routes] == ["payments", "database"]
    assert [r.name for r in config.rules.urgency] == ["staging-is-low", "payments-after-hours", "no-watchdog"]
    database = config.routes[1]
    assert [r.name for r in database.rules.urgency][0] == "replica-lag-is-never-urgent"


def readme_example() -> str:
    """The urgency example of docs/routes.md."""
    page = (ROOT / "docs" / "routes.md").read_text()
    block = re.search(r"<!-- urgency-example -->\s*```yaml\n(.*?)```", page, re.S)
    assert block, "the urgency example of docs/routes.md is marked with <!-- urgency-example -->"
    return block.group(1)


@pytest.mark.parametrize(
    "labels, at, severity",
    [
        pytest.param(
            {"service": "payments", "severity": "warning"},
            "2026-11-25T22:30:00",
            "critical",
            id="wednesday-23-30-berlin",
        ),
        pytest.param(
            {"service": "payments", "severity": "warning"},
            "2026-11-26T05:59:00",
            "critical",
            id="thursday-06-59-berlin",
        ),
        pytest.param(
            {"service": "payments", "severity": "warning"},
            "2026-11-26T06:00:00",
            "warning",
            id="thursday-07-00-berlin-ends",
        ),
        pytest.param(
            {"service": "payments", "severity": "warning"}, "2026-11-26T12:00:00", "warning", id="thursday-noon"
        ),
        pytest.param(
            {"service": "payments", "severity": "warning"}, "2026-11-28T12:00:00", "critical", id="saturday-noon"
        ),
        pytest.param(
            {"service": "payments", "severity": "warning"}, "2026-07-15T20:00:00", "critical", id="summer-22-00-cest"
        ),
        pytest.param(
            {"service": "payments", "severity": "critical"}, "2026-11-26T12:00:00", "critical", id="critical-stays"
        ),
        pytest.param(
            {"service": "web", "severity": "warning"}, "2026-11-28T12:00:00", "warning", id="other-service-weekend"
        ),
        pytest.param(
            {"service": "payments", "severity": "warning", "env": "staging"},
            "2026-11-28T12:00:00",
            "low",
            id="staging-never-above-low",
        ),
        pytest.param(
            {"severity": "critical", "env": "staging"}, "2026-11-26T12:00:00", "low", id="staging-critical-is-low"
        ),
    ],
)
def test_readme_urgency_example_works_as_written(tmp_path, alert24, labels, at, severity):
    path = tmp_path / "readme.yml"
    path.write_text(readme_example())
    now = datetime.fromisoformat(at).replace(tzinfo=timezone.utc)
    app = create_app(environ={**BASE_ENV, "ADAPTER_CONFIG": str(path)}, metrics=Metrics(), clock=lambda: now)
    data = payload("firing-single")
    data["alerts"][0]["labels"] = {"alertname": "HighErrorRate", **labels}
    data["alerts"][0].pop("fingerprint")
    assert post_to(app.test_client(), "/alertmanager", data).status_code == 200
    [body] = sent_bodies(alert24)
    assert body["payload"]["severity"] == severity


def test_drop_rule_sends_nothing_and_counts(tmp_path, alert24, capsys):
    path = tmp_path / "drop.yml"
    path.write_text(
        "rules:\n  - name: no-disk\n"
        "    matchers: ['alertname=\"DiskFull\"', 'instance=~\"db-1.*\"']\n"
        "    action: drop\n"
    )
    metrics = Metrics()
    app = create_app(environ={**BASE_ENV, "ADAPTER_CONFIG": str(path)}, metrics=metrics)
    r = post_to(app.test_client(), "/alertmanager")
    assert r.status_code == 200 and r.json["dropped"] == 1 and r.json["events"] == 1
    assert [b["payload"]["custom_details"]["labels"]["instance"] for b in sent_bodies(alert24)] == ["db-2:9100"]
    assert metrics.registry.get_sample_value("alert24_adapter_dropped_alerts_total", {"rule": "no-disk"}) == 1
    assert "alert dropped by rule" in capsys.readouterr().out


def test_reload_applies_a_good_file_and_keeps_the_old_one_when_broken(config_env, app, metrics, alert24):
    client = app.test_client()
    path = Path(config_env["ADAPTER_CONFIG"])
    reload_ok = lambda: metrics.registry.get_sample_value("alert24_adapter_config_last_reload_successful")  # noqa: E731
    assert reload_ok() == 1

    path.write_text("routes:\n  marketing:\n    integration_key_env: PAYMENTS_KEY\n")
    assert app.reload_config() is True
    assert post_to(client, "/alertmanager/marketing").status_code == 200
    assert post_to(client, "/alertmanager/payments").status_code == 404
    assert reload_ok() == 1

    path.write_text("routes:\n  marketing:\n    colour: red\n")
    assert app.reload_config() is False
    assert reload_ok() == 0
    assert post_to(client, "/alertmanager/marketing").status_code == 200, "the previous configuration keeps running"


DROP_PAYMENTS = "rules:\n  - name: quiet-payments\n    matchers: ['service=\"payments\"']\n    action: drop\n"


@pytest.mark.parametrize(
    "ledger, opened, resolves_sent, dropped",
    [
        pytest.param(False, True, 1, 0, id="no-ledger-opened-resolve-goes-out"),
        pytest.param(True, True, 1, 0, id="ledger-open-resolve-goes-out"),
        pytest.param(True, False, 1, 0, id="ledger-never-opened-resolve-goes-out-harmlessly"),
        pytest.param(False, False, 1, 0, id="no-ledger-never-opened-resolve-goes-out-harmlessly"),
    ],
)
def test_a_drop_rule_added_by_reload_never_swallows_a_resolve(
    tmp_path, alert24, ledger, opened, resolves_sent, dropped
):
    """An alert pages; a reload adds a drop rule matching it; its resolve still closes the incident. The ledger
    may not know every open incident (one opened before it existed, or while it could not be written), so a
    resolve is never held back on its word."""
    path = tmp_path / "adapter.yml"
    path.write_text("" if opened else DROP_PAYMENTS)
    env = {**BASE_ENV, "ADAPTER_CONFIG": str(path)}
    if ledger:
        env["LEDGER_URL"] = f"sqlite://{tmp_path}/ledger.db"
    app = create_app(environ=env, metrics=Metrics())
    client = app.test_client()
    assert post_to(client, "/alertmanager", "firing-single").status_code == 200
    path.write_text(DROP_PAYMENTS)
    assert app.reload_config() is True

    r = post_to(client, "/alertmanager", "resolved-single")
    assert r.status_code == 200 and r.json.get("dropped", 0) == dropped
    sent = [(b["event_action"], b["dedup_key"]) for b in sent_bodies(alert24)]
    assert sent == [("trigger", "114048fe91a99bfd")] * opened + [("resolve", "114048fe91a99bfd")] * resolves_sent
    if ledger:
        runtime = app.extensions["alert24_adapter"]
        assert runtime.forwarder.ledger.entries() == [], "the incident is closed in the ledger too"


NEW_URL = "https://alert24-eu.test/api/v1/incidents"


def _new_key(env, tmp_path):
    (tmp_path / "api-key").write_text("new-api-key\n")


def _new_url(env, tmp_path):
    env["ALERT24_API_URL"] = NEW_URL


def _more_retries(env, tmp_path):
    env["ALERT24_RETRIES"] = "2"


@pytest.mark.parametrize(
    "edit, answers, before, after",
    [
        pytest.param(
            _new_key, [], ("Bearer old-api-key", API_URL, 200), ("Bearer new-api-key", API_URL, 200), id="api-key-file"
        ),
        pytest.param(
            _new_url, [], ("Bearer old-api-key", API_URL, 200), ("Bearer old-api-key", NEW_URL, 200), id="api-url"
        ),
        pytest.param(
            _more_retries,
            [503, 503],
            ("Bearer old-api-key", API_URL, 503),
            ("Bearer old-api-key", API_URL, 200),
            id="retries",
        ),
    ],
)
def test_reload_puts_the_new_client_settings_in_force(tmp_path, edit, answers, before, after):
    """After a reload, calls to Alert24 carry what the reload read: key file, URL, retries (each webhook meets
    `answers` before a 202)."""
    (tmp_path / "api-key").write_text("old-api-key\n")
    env = {**BASE_ENV, "ALERT24_API_KEY": "", "ALERT24_API_KEY_FILE": str(tmp_path / "api-key")}
    env["ALERT24_RETRIES"] = "0"
    app = create_app(environ=env, metrics=Metrics())
    client = app.test_client()

    def one_webhook():
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            for url in (API_URL, NEW_URL):
                for status in [*answers, 202]:
                    mock.add(responses.POST, url, status=status)
            code = post_to(client, "/alertmanager", "firing-single").status_code
            last = mock.calls[-1].request
            return last.headers["Authorization"], last.url, code

    assert one_webhook() == before
    edit(env, tmp_path)
    assert app.reload_config() is True
    assert one_webhook() == after


def test_reload_puts_new_alertmanager_credentials_in_force(tmp_path):
    """The reconciler asks Alertmanager with the token the reload read from ALERTMANAGER_TOKEN_FILE."""
    token = tmp_path / "am-token"
    token.write_text("old-token")
    env = {
        **BASE_ENV,
        "ALERTMANAGER_URL": "http://am.test:9093",
        "ALERTMANAGER_TOKEN_FILE": str(token),
        "LEDGER_URL": f"sqlite://{tmp_path}/ledger.db",
    }
    app = create_app(environ=env, metrics=Metrics())
    reconciler = app.extensions["alert24_adapter"].reconciler

    def one_pass():
        with responses.RequestsMock() as mock:
            mock.add(responses.GET, "http://am.test:9093/api/v2/alerts", json=[])
            reconciler.run_pass()
            return mock.calls[0].request.headers["Authorization"]

    assert one_pass() == "Bearer old-token"
    token.write_text("new-token")
    assert app.reload_config() is True
    assert one_pass() == "Bearer new-token"


def test_reload_applies_a_new_body_limit(tmp_path, alert24):
    env = {**BASE_ENV}
    app = create_app(environ=env, metrics=Metrics())
    client = app.test_client()
    big = payload("firing-single")
    big["commonAnnotations"] = {"padding": "x" * 3000}
    assert post_to(client, "/alertmanager", big).status_code == 200
    env["MAX_BODY_BYTES"] = "2048"
    assert app.reload_config() is True
    assert post_to(client, "/alertmanager", big).status_code == 413


def test_reload_names_in_one_line_what_needs_a_restart(tmp_path, alert24, capsys):
    """A new LEDGER_URL cannot be put in force by a reload: one warning line says so, without its value."""
    env = {**BASE_ENV, "LEDGER_URL": f"sqlite://{tmp_path}/one.db"}
    app = create_app(environ=env, metrics=Metrics())
    capsys.readouterr()
    env["LEDGER_URL"] = f"sqlite://{tmp_path}/two.db"
    env["ALERT24_RETRIES"] = "1"
    assert app.reload_config() is True
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [warning] = [line for line in lines if line["level"] == "warning"]
    assert warning["msg"] == "configuration reloaded; these settings change only at a restart: LEDGER_URL"
    assert "two.db" not in json.dumps(lines)
    [reloaded] = [line for line in lines if line["msg"] == "configuration reloaded"]
    assert reloaded["changed"] == ["ALERT24_RETRIES", "LEDGER_URL"]
    assert post_to(app.test_client(), "/alertmanager").status_code == 200


@pytest.mark.parametrize(
    "authorization, routes",
    [
        pytest.param("", None, id="no-secret"),
        pytest.param("Bearer wrong", None, id="wrong-secret"),
        pytest.param(f"Bearer {SECRET}", ["database", "payments"], id="global-secret"),
        pytest.param("Bearer db-secret", ["database", "payments"], id="a-routes-own-secret"),
    ],
)
def test_readyz_names_routes_only_to_a_caller_with_a_secret(client, authorization, routes):
    """/readyz needs no secret (probes have none), but strangers learn nothing about which routes exist."""
    ready = client.get("/readyz", headers={"Authorization": authorization} if authorization else {})
    assert ready.status_code == 200
    assert ready.json.get("routes") == routes
    assert "payments" not in ready.get_data(as_text=True) or routes


def test_a_route_may_speak_the_rest_format(tmp_path):
    """Its severities are the REST API's, starting from REST_SEVERITY_MAP; it needs no integration key."""
    path = tmp_path / "adapter.yml"
    path.write_text(
        "routes:\n"
        "  ops:\n    format: rest\n    severity_map: {page: critical, warning: high}\n"
        "  infra:\n    format: rest\n"
        "  db:\n    integration_key_env: DB_KEY\n"
    )
    env = {**BASE_ENV, "ADAPTER_CONFIG": str(path), "DB_KEY": "db-key-123456", "STATE_DIRECTORY": str(tmp_path)}
    c = from_env(env)
    routes = {r.name: r for r in c.routes}
    assert routes["ops"].format == "rest" and routes["ops"].integration_key is None
    assert dict(routes["ops"].rules.severity_map) == {"page": "critical", "warning": "high"}
    assert dict(routes["infra"].rules.severity_map) == {"critical": "critical", "warning": "high", "info": "low"}
    assert routes["infra"].rules.default_severity == "medium"
    assert routes["db"].format == "events" and routes["db"].rules.default_severity == "warning"
    assert c.rest_routes() == ["ops", "infra"]
    assert c.masked()["routes"]["ops"]["format"] == "rest"


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param(
            "routes:\n  ops:\n    format: soap\n", "routes.ops.format: must be one of events, rest", id="format"
        ),
        pytest.param(
            "routes:\n  ops:\n    format: rest\n    severity_map: {warning: warning}\n",
            "routes.ops.severity_map.warning: 'warning' is not one of critical, high, medium, low, maintenance",
            id="rest-severities",
        ),
        pytest.param(
            "routes:\n  ops:\n    format: rest\n    default_severity: warning\n",
            "routes.ops.default_severity: must be one of critical, high, medium, low, maintenance",
            id="rest-default-severity",
        ),
    ],
)
def test_a_routes_format_is_validated(tmp_path, text, expected):
    path = tmp_path / "adapter.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        from_env({**BASE_ENV, "ADAPTER_CONFIG": str(path), "STATE_DIRECTORY": str(tmp_path)})
    assert f"{path}: {expected}" in str(err.value)
