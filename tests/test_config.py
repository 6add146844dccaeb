"""Configuration from the environment: safe defaults, and one clear line for every bad value."""

import json
import sys

import pytest

from adapter.config import MASK, from_env, parse_duration
from adapter.errors import ConfigError

from .conftest import API_KEY, BASE_ENV, INTEGRATION_KEY, SECRET, make_config


def test_defaults_are_safe():
    c = make_config()
    assert c.dry_run is False, "never silently drop pages because DRY_RUN is unset"
    assert c.shared_secrets == (SECRET,)
    assert c.api_url == "https://alert24.test/api/v1/incidents"
    assert c.rules.dedup_by == "alert" and c.rules.default_severity == "warning"
    assert c.time_budget < 10, "Alertmanager gives a webhook at least 10 s"
    assert from_env({"SHARED_SECRET": "x", "ALERT24_INTEGRATION_KEY": "k"}).api_url == (
        "https://app.alert24.io/api/v1/incidents"
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        pytest.param({"SHARED_SECRET": None}, "SHARED_SECRET is not set", id="no-secret"),
        pytest.param({"SHARED_SECRET": " , "}, "SHARED_SECRET is not set", id="blank-secret-list"),
        pytest.param({"ALERT24_INTEGRATION_KEY": None}, "ALERT24_INTEGRATION_KEY is not set", id="no-key"),
        pytest.param({"ALERT24_API_URL": "ftp://x"}, "ALERT24_API_URL must be an http", id="url-scheme"),
        pytest.param({"ALERT24_API_URL": "https://"}, "ALERT24_API_URL must be an http", id="url-host"),
        pytest.param({"DRY_RUN": "maybe"}, "DRY_RUN must be true or false", id="dry-run-word"),
        pytest.param({"ALERT24_CONCURRENCY": "0"}, "ALERT24_CONCURRENCY must be from 1", id="concurrency-0"),
        pytest.param({"ALERT24_CONCURRENCY": "many"}, "ALERT24_CONCURRENCY must be a whole number", id="conc-word"),
        pytest.param({"ALERT24_READ_TIMEOUT": "nan"}, "ALERT24_READ_TIMEOUT must be from", id="timeout-nan"),
        pytest.param({"WEBHOOK_TIME_BUDGET": "1", "ALERT24_CONNECT_TIMEOUT": "2"}, "WEBHOOK_TIME_BUDGET", id="budget"),
        pytest.param(
            {"WEBHOOK_TIME_BUDGET": "7", "ALERT24_READ_TIMEOUT": "8"},
            "WEBHOOK_TIME_BUDGET must be longer than ALERT24_CONNECT_TIMEOUT and ALERT24_READ_TIMEOUT",
            id="budget-under-read-timeout",
        ),
        pytest.param({"MAX_BODY_BYTES": "10"}, "MAX_BODY_BYTES must be from", id="body-limit"),
        pytest.param(
            {"ALERT24_MAX_IN_FLIGHT": "10", "ALERT24_CONCURRENCY": "25"},
            "ALERT24_MAX_IN_FLIGHT must be at least ALERT24_CONCURRENCY",
            id="in-flight-below-fan-out",
        ),
        pytest.param({"ALERT24_MAX_IN_FLIGHT": "0"}, "ALERT24_MAX_IN_FLIGHT must be from 1", id="in-flight-0"),
        pytest.param({"DEFAULT_SEVERITY": "urgent"}, "DEFAULT_SEVERITY must be one of", id="default-severity"),
        pytest.param({"SEVERITY_MAP": "critical"}, "SEVERITY_MAP must be a comma-separated", id="map-shape"),
        pytest.param({"SEVERITY_MAP": "p1=urgent"}, "SEVERITY_MAP maps 'p1' to an unknown", id="map-target"),
        pytest.param({"DEDUP_BY": "label"}, "DEDUP_BY must be one of alert, group", id="dedup-mode"),
        pytest.param({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be one of", id="log-format"),
        pytest.param(
            {"SHARED_SECRET_FILE": "/nonexistent/secret"}, "set SHARED_SECRET or SHARED_SECRET_FILE", id="both"
        ),
    ],
)
def test_bad_values_stop_start_up_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        make_config(**overrides)
    text = str(err.value)
    assert message in text
    assert "\n" not in text, "one problem, one line"
    for secret in (SECRET, INTEGRATION_KEY, API_KEY):
        assert secret not in text


def test_unauthenticated_only_when_explicitly_allowed():
    c = make_config(SHARED_SECRET=None, ALLOW_UNAUTHENTICATED="true")
    assert c.shared_secrets == () and c.allow_unauthenticated


def test_dry_run_needs_no_integration_key():
    assert make_config(ALERT24_INTEGRATION_KEY=None, DRY_RUN="true").integration_key is None


def test_secret_list_allows_rotation():
    assert make_config(SHARED_SECRET="old, new").shared_secrets == ("old", "new")


def test_secrets_from_files(tmp_path):
    for name, value in (("secret", "a,b\n"), ("key", "file-int-key\n"), ("api", "file-api-key")):
        (tmp_path / name).write_text(value)
    env = {
        "SHARED_SECRET_FILE": str(tmp_path / "secret"),
        "ALERT24_INTEGRATION_KEY_FILE": str(tmp_path / "key"),
        "ALERT24_API_KEY_FILE": str(tmp_path / "api"),
    }
    c = from_env(env)
    assert (c.shared_secrets, c.integration_key, c.api_key) == (("a", "b"), "file-int-key", "file-api-key")


@pytest.mark.parametrize("content, message", [(None, "cannot read"), ("\n", "is empty")], ids=["missing", "empty"])
def test_unreadable_secret_file(tmp_path, content, message):
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    env = {**BASE_ENV, "SHARED_SECRET": "", "SHARED_SECRET_FILE": str(path)}
    with pytest.raises(ConfigError, match=f"SHARED_SECRET_FILE: .*{message}"):
        from_env(env)


def test_secrets_never_in_repr_or_masked_view():
    c = make_config()
    shown = repr(c) + repr(c.masked())
    for secret in (SECRET, INTEGRATION_KEY, API_KEY):
        assert secret not in shown
    assert c.masked()["integration_key"] == MASK
    assert c.masked()["shared_secrets"] == [MASK]


def test_every_problem_is_reported_one_line_each():
    with pytest.raises(ConfigError) as err:
        make_config(SHARED_SECRET=None, DRY_RUN="perhaps", ALERT24_CONCURRENCY="0")
    lines = str(err.value).splitlines()
    assert len(lines) == 3
    assert [line.split()[0] for line in lines] == ["DRY_RUN", "SHARED_SECRET", "ALERT24_CONCURRENCY"]


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90", 90.0),
        ("0.5", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("2d", 172800.0),
        ("1w", 604800.0),
    ],
)
def test_durations_in_seconds_or_alertmanager_units(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "1.5m", "m", "5m1h", "inf", "nan", "-"])
def test_bad_durations(text):
    assert parse_duration(text) is None


def test_reconciler_and_ledger_are_off_by_default():
    c = make_config()
    assert not c.reconciler_on and not c.ledger_on and c.ledger_url is None


@pytest.mark.parametrize(
    "overrides, ledger_url",
    [
        pytest.param(
            {"ALERTMANAGER_URL": "http://am:9093"}, "sqlite:///var/lib/alert24-adapter/ledger.db", id="default"
        ),
        pytest.param(
            {"ALERTMANAGER_URL": "http://am:9093", "STATE_DIRECTORY": "/var/lib/a24:/var/lib/other"},
            "sqlite:///var/lib/a24/ledger.db",
            id="systemd-state-directory",
        ),
        pytest.param({"LEDGER_URL": "sqlite:///data/l.db"}, "sqlite:///data/l.db", id="ledger-alone"),
        pytest.param(
            {"ALERTMANAGER_URL": "http://am:9093", "LEDGER_URL": "postgresql://u:pw@db:5432/a24"},
            "postgresql://u:pw@db:5432/a24",
            id="postgresql",
        ),
    ],
)
def test_where_the_ledger_lives(overrides, ledger_url):
    assert make_config(**overrides).ledger_url == ledger_url


def test_reconciler_settings():
    c = make_config(
        ALERTMANAGER_URL=" http://am1:9093/ , https://am2.example/alertmanager/",
        RECONCILE_INTERVAL="30s",
        RECONCILE_GRACE="15m",
        LEDGER_MAX_AGE="7d",
    )
    assert c.alertmanager_urls == ("http://am1:9093", "https://am2.example/alertmanager")
    assert (c.reconcile_interval, c.reconcile_grace, c.ledger_max_age) == (30.0, 900.0, 604800.0)
    assert c.reconciler_on and c.ledger_on
    defaults = make_config(ALERTMANAGER_URL="http://am:9093")
    assert (defaults.reconcile_interval, defaults.reconcile_grace) == (300.0, 600.0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        pytest.param(
            {"ALERTMANAGER_URL": "am:9093"}, "ALERTMANAGER_URL must be a comma-separated list", id="no-scheme"
        ),
        pytest.param(
            {"ALERTMANAGER_URL": "http://user:pw@am:9093"}, "ALERTMANAGER_URL must not hold credentials", id="userinfo"
        ),
        pytest.param(
            {"ALERTMANAGER_URL": "http://am", "ALERTMANAGER_TOKEN": "t", "ALERTMANAGER_USERNAME": "u"},
            "not both",
            id="bearer-and-basic",
        ),
        pytest.param({"ALERTMANAGER_USERNAME": "u"}, "go together", id="user-without-password"),
        pytest.param({"RECONCILE_INTERVAL": "soon"}, "RECONCILE_INTERVAL must be seconds", id="interval-word"),
        pytest.param({"RECONCILE_INTERVAL": "0"}, "RECONCILE_INTERVAL must be seconds", id="interval-zero"),
        pytest.param({"RECONCILE_GRACE": "-5"}, "RECONCILE_GRACE must be seconds", id="grace-negative"),
        pytest.param({"LEDGER_MAX_AGE": "10m", "RECONCILE_GRACE": "1h"}, "LEDGER_MAX_AGE must be longer", id="age"),
        pytest.param({"LEDGER_URL": "mysql://db/x"}, "LEDGER_URL must be sqlite:///", id="ledger-scheme"),
        pytest.param({"LEDGER_URL": "sqlite://relative.db"}, "three slashes, an absolute path", id="sqlite-relative"),
        pytest.param({"LEDGER_URL": "postgresql:///a24"}, "names its host", id="postgresql-no-host"),
    ],
)
def test_bad_reconciler_values_stop_start_up_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        make_config(**overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_ledger_password_is_masked_and_read_from_a_file(tmp_path):
    (tmp_path / "ledger-url").write_text("postgresql://a24:pg-pass-789@db.example:5432/a24\n")
    c = make_config(ALERTMANAGER_URL="http://am:9093", LEDGER_URL_FILE=str(tmp_path / "ledger-url"))
    assert c.ledger_url == "postgresql://a24:pg-pass-789@db.example:5432/a24"
    shown = repr(c) + repr(c.masked()) + c.ledger_display()
    assert "pg-pass-789" not in shown
    assert c.masked()["ledger_url"] == f"postgresql://a24:{MASK}@db.example:5432/a24"


def test_alertmanager_secrets_from_files_never_shown(tmp_path):
    (tmp_path / "token").write_text("am-token-from-file\n")
    c = make_config(ALERTMANAGER_URL="http://am:9093", ALERTMANAGER_TOKEN_FILE=str(tmp_path / "token"))
    assert c.alertmanager_token == "am-token-from-file"
    assert "am-token-from-file" not in repr(c) + repr(c.masked())
    assert c.masked()["alertmanager_token"] == MASK


@pytest.mark.parametrize(
    "overrides, grace",
    [
        pytest.param({"RECONCILE_GRACE": "5m"}, 300.0, id="at-the-floor"),
        pytest.param({"PROMETHEUS_RESEND_DELAY": "10s", "RECONCILE_GRACE": "50s"}, 50.0, id="shorter-resend-delay"),
        pytest.param({"PROMETHEUS_RESEND_DELAY": "2m", "RECONCILE_GRACE": "10m"}, 600.0, id="longer-resend-delay"),
    ],
)
def test_reconcile_grace_at_or_above_its_floor_is_taken(overrides, grace):
    assert make_config(ALERTMANAGER_URL="http://am:9093", **overrides).reconcile_grace == grace


@pytest.mark.parametrize(
    "overrides, floor",
    [
        pytest.param({"RECONCILE_GRACE": "0"}, "5m", id="zero"),
        pytest.param({"RECONCILE_GRACE": "299"}, "5m", id="just-below"),
        pytest.param({"PROMETHEUS_RESEND_DELAY": "2m", "RECONCILE_GRACE": "9m"}, "10m", id="below-five-resends"),
    ],
)
def test_reconcile_grace_below_its_floor_stops_start_up_with_one_line(overrides, floor):
    """After an Alertmanager restart without its data, a shorter grace resolves alerts Prometheus has not re-sent."""
    with pytest.raises(ConfigError) as err:
        make_config(ALERTMANAGER_URL="http://am:9093", **overrides)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"RECONCILE_GRACE must be at least {floor}")
    assert "PROMETHEUS_RESEND_DELAY" in message


@pytest.mark.parametrize(
    "name, value",
    [
        pytest.param("SHARED_SECRET", "replace-me", id="shared-secret-replace-me"),
        pytest.param("SHARED_SECRET", "CHANGE_ME", id="shared-secret-change-me"),
        pytest.param("ALERT24_INTEGRATION_KEY", "<your integration key>", id="integration-key-angle-brackets"),
        pytest.param("ALERT24_INTEGRATION_KEY", "...", id="integration-key-dots"),
        pytest.param("ALERT24_API_KEY", "xxxxxxxx", id="api-key-xxx"),
        pytest.param("ALERT24_API_KEY", "secret", id="api-key-secret"),
        pytest.param("ALERTMANAGER_TOKEN", "changeme", id="alertmanager-token"),
    ],
)
def test_a_placeholder_as_a_secret_stops_start_up_with_one_line(name, value):
    """Anyone who read the same example file could page with it: refused, naming the variable, not the value."""
    with pytest.raises(ConfigError) as err:
        make_config(**{name: value})
    assert str(err.value) == (
        f"{name} holds a placeholder such as replace-me, not a secret: set the real value "
        "(or set DRY_RUN=true to try the adapter without one)"
    )


def test_a_placeholder_from_a_file_or_a_route_is_refused_too(tmp_path):
    (tmp_path / "key").write_text("replace-me\n")
    (tmp_path / "adapter.yml").write_text("routes:\n  payments:\n    integration_key_file: " + str(tmp_path / "key"))
    with pytest.raises(ConfigError) as err:
        make_config(
            SHARED_SECRET=None, SHARED_SECRET_FILE=str(tmp_path / "key"), ADAPTER_CONFIG=str(tmp_path / "adapter.yml")
        )
    assert str(err.value).splitlines() == [
        "SHARED_SECRET holds a placeholder such as replace-me, not a secret: set the real value "
        "(or set DRY_RUN=true to try the adapter without one)",
        "routes.payments.integration_key holds a placeholder such as replace-me, not a secret: set the real value "
        "(or set DRY_RUN=true to try the adapter without one)",
    ]


@pytest.mark.parametrize("value", ["x", "s3cret-token", "replace-me-7f3a9c", "a-real-secret"])
def test_real_secrets_are_not_placeholders(value):
    assert make_config(SHARED_SECRET=value).shared_secrets == (value,)


def test_a_dry_run_may_use_a_placeholder():
    """`make run` serves a dry run with SHARED_SECRET=change-me: nothing can page."""
    assert make_config(DRY_RUN="true", SHARED_SECRET="change-me").shared_secrets == ("change-me",)


def test_a_postgresql_ledger_without_its_driver_is_a_configuration_error(monkeypatch):
    """Not a ModuleNotFoundError in create_app (which systemd restarts forever): one line naming the extra."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError) as err:
        make_config(LEDGER_URL="postgresql://alert24@db.example/alert24")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("LEDGER_URL: a PostgreSQL ledger needs psycopg 3, which cannot be loaded")
    assert str(err.value).endswith("pip install 'alert24-adapter[postgresql]'")


@pytest.mark.parametrize(
    "url, shown",
    [
        pytest.param("postgresql://a:pw-1@db/x", "postgresql://a:********@db/x", id="before-the-host"),
        pytest.param("postgresql://a@db/x?password=pw-1", "postgresql://a@db/x?password=********", id="query"),
        pytest.param(
            "postgresql://a@db/x?sslmode=require&sslpassword=pw-1",
            "postgresql://a@db/x?sslmode=require&sslpassword=********",
            id="ssl-key-password",
        ),
        pytest.param("postgresql://a@db/x?sslmode=require", "postgresql://a@db/x?sslmode=require", id="none"),
    ],
)
def test_the_ledger_password_is_masked_wherever_the_url_holds_it(url, shown):
    """libpq reads a password from the query too: it is masked there as well (check-config, /readyz, logs)."""
    config = make_config(LEDGER_URL=url)
    assert config.ledger_display() == shown
    assert "pw-1" not in json.dumps(config.masked())


@pytest.mark.parametrize(
    "overrides, ledger_url, implicit",
    [
        pytest.param(
            {"RESEND_INTERVAL": None, "STATE_DIRECTORY": "/srv/a24"},
            "sqlite:///srv/a24/ledger.db",
            True,
            id="default-on",
        ),
        pytest.param({"RESEND_INTERVAL": "0"}, None, False, id="resend-interval-0-needs-none"),
        pytest.param(
            {"ALERT24_RATE_LIMIT": "100", "STATE_DIRECTORY": "/srv/a24"},
            "sqlite:///srv/a24/ledger.db",
            True,
            id="the-budget-needs-one",
        ),
        pytest.param(
            {"RESEND_INTERVAL": None, "LEDGER_URL": "sqlite:///data/l.db"}, "sqlite:///data/l.db", False, id="given"
        ),
    ],
)
def test_the_ledger_is_on_whenever_something_needs_it(overrides, ledger_url, implicit):
    config = make_config(**overrides)
    assert (config.ledger_url, config.ledger_implicit) == (ledger_url, implicit)


@pytest.mark.parametrize(
    "overrides, resend, limit",
    [
        pytest.param({"RESEND_INTERVAL": None}, 3600.0, 0, id="defaults"),
        pytest.param({"RESEND_INTERVAL": "90s"}, 90.0, 0, id="seconds"),
        pytest.param({"RESEND_INTERVAL": "1h30m"}, 5400.0, 0, id="chained-units"),
        pytest.param({"RESEND_INTERVAL": "0", "ALERT24_RATE_LIMIT": "120"}, 0.0, 120, id="off-and-a-budget"),
    ],
)
def test_resend_interval_and_rate_limit(overrides, resend, limit):
    config = make_config(**overrides)
    assert (config.resend_interval, config.rate_limit) == (resend, limit)


@pytest.mark.parametrize(
    "overrides, problem",
    [
        pytest.param({"RESEND_INTERVAL": "soon"}, "RESEND_INTERVAL must be seconds", id="resend-not-a-duration"),
        pytest.param({"RESEND_INTERVAL": "-1"}, "RESEND_INTERVAL must be seconds", id="resend-negative"),
        pytest.param({"ALERT24_RATE_LIMIT": "1.5"}, "ALERT24_RATE_LIMIT must be a whole number", id="limit-fraction"),
        pytest.param({"ALERT24_RATE_LIMIT": "-3"}, "ALERT24_RATE_LIMIT must be from 0", id="limit-negative"),
    ],
)
def test_bad_traffic_settings_name_their_variable(overrides, problem):
    with pytest.raises(ConfigError) as err:
        make_config(**overrides)
    assert str(err.value).startswith(problem)


@pytest.mark.parametrize(
    "overrides, message",
    [
        pytest.param({"ALERT24_FORMAT": "soap"}, "ALERT24_FORMAT must be one of events, rest", id="unknown-format"),
        pytest.param(
            {"ALERT24_FORMAT": "rest", "ALERT24_API_KEY": None},
            "ALERT24_API_KEY is not set: the rest format",
            id="rest-needs-an-api-key",
        ),
        pytest.param(
            {"REST_SEVERITY_MAP": "warning=warning"},
            "REST_SEVERITY_MAP maps 'warning' to an unknown severity; use one of critical, high, medium, low, "
            "maintenance",
            id="rest-map-takes-documented-severities-only",
        ),
        pytest.param(
            {"REST_DEFAULT_SEVERITY": "warning"},
            "REST_DEFAULT_SEVERITY must be one of critical, high, medium, low, maintenance",
            id="rest-default-severity",
        ),
    ],
)
def test_bad_format_settings_name_their_variable(overrides, message):
    with pytest.raises(ConfigError) as err:
        make_config(**overrides)
    assert message in str(err.value)


def test_events_is_the_default_format():
    c = make_config()
    assert c.format == "events" and c.rest_routes() == [] and c.rules.default_severity == "warning"


def test_rest_format_needs_no_integration_key_and_always_has_the_ledger(tmp_path):
    """The ledger keeps each incident's id: the rest format turns on the default one even with RESEND_INTERVAL=0."""
    c = make_config(
        ALERT24_FORMAT="rest", ALERT24_INTEGRATION_KEY=None, RESEND_INTERVAL="0", STATE_DIRECTORY=str(tmp_path)
    )
    assert c.format == "rest" and c.rest_routes() == ["default"]
    assert c.ledger_url == f"sqlite://{tmp_path}/ledger.db" and c.ledger_implicit
    assert c.rules.severity_map == (("critical", "critical"), ("warning", "high"), ("info", "low"))
    assert c.rules.default_severity == "medium"
    assert c.masked()["format"] == "rest"
    mapped = make_config(ALERT24_FORMAT="rest", REST_SEVERITY_MAP="p1=critical", STATE_DIRECTORY=str(tmp_path))
    assert mapped.rules.severity_map == (("p1", "critical"),)
