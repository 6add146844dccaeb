"""The adapter's configuration: one frozen object, built once from an environ mapping."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit

from . import heartbeat
from .errors import ConfigError
from .mapping import DEDUP_MODES, SEVERITIES, EventRules
from .policy import Matcher, PolicyError, parse_matchers, parse_rules
from .rest import DEFAULT_REST_SEVERITY, DEFAULT_REST_SEVERITY_MAP, FORMATS, REST_SEVERITIES

DEFAULT_API_URL = "https://app.alert24.io/api/v1/incidents"
DEFAULT_STATE_DIRECTORY = "/var/lib/alert24-adapter"
LEDGER_FILE = "ledger.db"
LEDGER_SCHEMES = ("sqlite", "postgresql", "postgres")
# Alertmanager's (Prometheus') duration units; a duration may chain several, largest first: 1h30m.
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
DEFAULT_SEVERITY_MAP = "critical=critical,warning=warning,info=low"
# After an Alertmanager restart without its data, alerts come back only as Prometheus re-sends them, once
# every --rules.alert.resend-delay: a grace shorter than a few of those resolves alerts that still fire.
GRACE_RESENDS = 5
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})
MASK = "********"
# Query parameters of a connection URL that carry a password.
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
# What example files and tutorials put where a secret goes; refused as a secret outside a dry run, because
# anyone who read the same example could use it.
PLACEHOLDERS = frozenset(
    {"replaceme", "changeme", "changeit", "secret", "password", "example", "todo", "placeholder", "yoursecret"}
)
DEFAULT_HEARTBEAT_MATCHERS = parse_matchers(heartbeat.DEFAULT_MATCHERS)
ROUTE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
FILE_KEYS = {"rules", "routes"}
ROUTE_KEYS = {
    "integration_key_env",
    "integration_key_file",
    "shared_secret_env",
    "shared_secret_file",
    "severity_label",
    "severity_map",
    "default_severity",
    "dedup_by",
    "rules",
    "heartbeat_matchers",
    "format",
}


@dataclasses.dataclass(frozen=True)
class Route:
    """A named destination (`POST /alertmanager/<name>`): its own integration key, and optionally its own
    shared secrets, severity map, dedup mode and urgency rules."""

    name: str
    integration_key: str | None = dataclasses.field(default=None, repr=False)
    shared_secrets: tuple[str, ...] | None = dataclasses.field(default=None, repr=False)
    rules: EventRules = EventRules()
    heartbeat_matchers: tuple[Matcher, ...] | None = None  # None: the global HEARTBEAT_MATCHERS
    format: str = "events"  # the wire format: events (the article's) or rest (Alert24's documented API)

    def masked(self) -> dict[str, object]:
        return {
            "format": self.format,
            "integration_key": MASK if self.integration_key else None,
            "shared_secrets": "the global SHARED_SECRET"
            if self.shared_secrets is None
            else [MASK] * len(self.shared_secrets),
            "rules": self.rules.describe(),
            "heartbeat_matchers": "the global HEARTBEAT_MATCHERS"
            if self.heartbeat_matchers is None
            else [str(m) for m in self.heartbeat_matchers],
        }


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything the service needs to run; secrets are kept out of repr()."""

    shared_secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    allow_unauthenticated: bool = False
    integration_key: str | None = dataclasses.field(default=None, repr=False)
    api_key: str | None = dataclasses.field(default=None, repr=False)
    api_url: str = DEFAULT_API_URL
    dry_run: bool = False
    connect_timeout: float = 2.0
    read_timeout: float = 3.0
    retries: int = 4
    time_budget: float = 7.0
    concurrency: int = 25
    max_in_flight: int = 128
    max_body_bytes: int = 4 * 1024 * 1024
    rules: EventRules = EventRules()
    log_format: str = "json"
    log_level: str = "INFO"
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    body_timeout: float = 10.0
    config_file: str | None = None
    routes: tuple[Route, ...] = ()
    alertmanager_urls: tuple[str, ...] = ()
    alertmanager_token: str | None = dataclasses.field(default=None, repr=False)
    alertmanager_username: str = ""
    alertmanager_password: str | None = dataclasses.field(default=None, repr=False)
    ledger_url: str | None = dataclasses.field(default=None, repr=False)
    reconcile_interval: float = 300.0
    reconcile_grace: float = 600.0
    prometheus_resend_delay: float = 60.0
    ledger_max_age: float = 30 * 86400.0
    history_retention: float = 7 * 86400.0  # HISTORY_RETENTION; 0: no delivery history
    history_max_rows: int = 100_000
    heartbeat_url: str | None = dataclasses.field(default=None, repr=False)
    heartbeat_matchers: tuple[Matcher, ...] = DEFAULT_HEARTBEAT_MATCHERS
    heartbeat_min_interval: float = heartbeat.DEFAULT_MIN_INTERVAL
    resend_interval: float = 3600.0
    rate_limit: int = 0  # events a minute per integration key; 0: no budget
    ledger_implicit: bool = False  # the default SQLite file under STATE_DIRECTORY, not a LEDGER_URL
    format: str = "events"  # ALERT24_FORMAT: the wire format of plain /alertmanager and of routes that set none

    @property
    def reconciler_on(self) -> bool:
        return bool(self.alertmanager_urls)

    @property
    def ledger_on(self) -> bool:
        return self.ledger_url is not None

    @property
    def history_on(self) -> bool:
        """The delivery history is kept: in the ledger's store, while HISTORY_RETENTION is above 0."""
        return self.ledger_on and self.history_retention > 0

    def rest_routes(self) -> list[str]:
        """The routes that speak the REST format ("default" for plain /alertmanager), which need the ledger."""
        names = ["default"] if self.format == "rest" else []
        return names + [r.name for r in self.routes if r.format == "rest"]

    def ledger_display(self) -> str | None:
        """The ledger's URL without its password, for logs and check-config."""
        return redact_url(self.ledger_url) if self.ledger_url else None

    def masked(self) -> dict[str, object]:
        """The effective settings as plain data, with every secret replaced by a mask."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not f.repr and isinstance(value, tuple):
                value = [MASK] * len(value)
            elif not f.repr:
                value = MASK if value else None
            elif isinstance(value, EventRules):
                value = value.describe()
            elif f.name == "routes":
                value = {route.name: route.masked() for route in value}
            out[f.name] = value
        out["ledger_url"] = self.ledger_display()
        out["heartbeat_url"] = heartbeat.display(self.heartbeat_url) if self.heartbeat_url else None
        out["heartbeat_matchers"] = [str(m) for m in self.heartbeat_matchers]
        return out


# The variable behind each Config field, where its name does not say; a field not listed is its name upper-cased.
VARIABLES = {
    "shared_secrets": "SHARED_SECRET",
    "integration_key": "ALERT24_INTEGRATION_KEY",
    "api_key": "ALERT24_API_KEY",
    "api_url": "ALERT24_API_URL",
    "connect_timeout": "ALERT24_CONNECT_TIMEOUT",
    "read_timeout": "ALERT24_READ_TIMEOUT",
    "retries": "ALERT24_RETRIES",
    "time_budget": "WEBHOOK_TIME_BUDGET",
    "concurrency": "ALERT24_CONCURRENCY",
    "max_in_flight": "ALERT24_MAX_IN_FLIGHT",
    "rules": "rules",
    "trusted_proxies": "FORWARDED_ALLOW_IPS",
    "body_timeout": "BODY_READ_TIMEOUT",
    "config_file": "ADAPTER_CONFIG",
    "routes": "routes",
    "alertmanager_urls": "ALERTMANAGER_URL",
    "rate_limit": "ALERT24_RATE_LIMIT",
    "format": "ALERT24_FORMAT",
    "ledger_implicit": "LEDGER_URL",
}
# What a running process cannot change: the ledger is opened once, and its store holds the open incidents.
RESTART_ONLY = frozenset({"ledger_url", "ledger_implicit"})


def changed_settings(old: Config, new: Config, among: frozenset[str] | None = None) -> list[str]:
    """The settings whose value differs between two configurations (of `among` fields, default all), named by
    their variables, never by their values."""
    return sorted(
        {
            VARIABLES.get(f.name, f.name.upper())
            for f in dataclasses.fields(Config)
            if (among is None or f.name in among) and getattr(old, f.name) != getattr(new, f.name)
        }
    )


def redact_url(url: str) -> str:
    """A URL with any password in it replaced by the mask: before the host, or as a query parameter
    (`?password=`, `?sslpassword=`, which libpq reads too)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    secret_query = any(name.lower() in SECRET_PARAMETERS for name, _ in query)
    if parts.password is None and not secret_query:
        return url  # as given: geturl() would also rewrite sqlite:///path as sqlite:/path
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}")
    if secret_query:
        masked = [(name, MASK if name.lower() in SECRET_PARAMETERS else value) for name, value in query]
        parts = parts._replace(query=urlencode(masked, safe="*"))
    return parts.geturl()


def from_env(environ: Mapping[str, str] | None = None) -> Config:
    """Build and validate a Config from an environ mapping.

    Raises ConfigError listing every problem found, one line each, each naming its variable.
    """
    env = _Env(os.environ if environ is None else environ)
    dry_run = env.boolean("DRY_RUN", False)
    allow_unauthenticated = env.boolean("ALLOW_UNAUTHENTICATED", False)

    secrets = tuple(s.strip() for s in (env.secret("SHARED_SECRET", single=False) or "").split(","))
    secrets = tuple(s for s in secrets if s)
    if any(is_placeholder(s) for s in secrets):
        env.placeholders.append("SHARED_SECRET")
    if not secrets and not allow_unauthenticated and "SHARED_SECRET" not in env.faulty:
        env.problem(
            "SHARED_SECRET is not set: set it (or SHARED_SECRET_FILE) to the secret "
            "Alertmanager sends, or set ALLOW_UNAUTHENTICATED=true"
        )
    config_file = env.text("ADAPTER_CONFIG", "") or None
    integration_key = env.secret("ALERT24_INTEGRATION_KEY")
    api_url = env.text("ALERT24_API_URL", DEFAULT_API_URL)
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        env.problem("ALERT24_API_URL must be an http:// or https:// URL")

    wire_format = env.choice("ALERT24_FORMAT", "events", FORMATS)
    events_rules = EventRules(
        severity_label=env.text("SEVERITY_LABEL", "severity"),
        severity_map=env.severity_map("SEVERITY_MAP", DEFAULT_SEVERITY_MAP),
        default_severity=env.choice("DEFAULT_SEVERITY", "warning", SEVERITIES),
        dedup_by=env.choice("DEDUP_BY", "alert", DEDUP_MODES),
    )
    # The REST format's severities are the documented ones: its map and default are its own.
    bases = {
        "events": events_rules,
        "rest": dataclasses.replace(
            events_rules,
            severity_map=env.severity_map("REST_SEVERITY_MAP", DEFAULT_REST_SEVERITY_MAP, REST_SEVERITIES),
            default_severity=env.choice("REST_DEFAULT_SEVERITY", DEFAULT_REST_SEVERITY, REST_SEVERITIES),
        ),
    }
    rules = bases[wire_format]
    routes: tuple[Route, ...] = ()
    if config_file:
        rules, routes = _load_file(config_file, env, rules, dry_run, bases, wire_format)
    rest_in_use = wire_format == "rest" or any(r.format == "rest" for r in routes)
    api_key = env.secret("ALERT24_API_KEY")
    if rest_in_use and not api_key and not dry_run and "ALERT24_API_KEY" not in env.faulty:
        env.problem(
            "ALERT24_API_KEY is not set: the rest format (ALERT24_FORMAT, or a route's format) authenticates with "
            "an Alert24 API key of write scope; set it (or ALERT24_API_KEY_FILE), or set DRY_RUN=true"
        )
    if (
        not integration_key
        and not dry_run
        and not routes
        and wire_format != "rest"
        and "ALERT24_INTEGRATION_KEY" not in env.faulty
    ):
        env.problem(
            "ALERT24_INTEGRATION_KEY is not set: set it (or ALERT24_INTEGRATION_KEY_FILE) "
            "to the key of your Alert24 integration, or set DRY_RUN=true"
        )
    connect_timeout = env.number("ALERT24_CONNECT_TIMEOUT", 2.0, 0.1, 30)
    time_budget = env.number("WEBHOOK_TIME_BUDGET", 7.0, 0.5, 120)
    read_timeout = env.number("ALERT24_READ_TIMEOUT", 3.0, 0.1, 60)
    if time_budget <= connect_timeout or time_budget <= read_timeout:
        env.problem("WEBHOOK_TIME_BUDGET must be longer than ALERT24_CONNECT_TIMEOUT and ALERT24_READ_TIMEOUT")

    concurrency = int(env.number("ALERT24_CONCURRENCY", 25, 1, 256, integer=True))
    max_in_flight = int(env.number("ALERT24_MAX_IN_FLIGHT", 128, 1, 4096, integer=True))
    if max_in_flight < concurrency:
        env.problem("ALERT24_MAX_IN_FLIGHT must be at least ALERT24_CONCURRENCY: one webhook's calls count too")
    config = Config(
        shared_secrets=secrets,
        allow_unauthenticated=allow_unauthenticated,
        integration_key=integration_key,
        api_key=api_key,
        api_url=api_url,
        dry_run=dry_run,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries=int(env.number("ALERT24_RETRIES", 4, 0, 10, integer=True)),
        time_budget=time_budget,
        concurrency=concurrency,
        max_in_flight=max_in_flight,
        max_body_bytes=int(env.number("MAX_BODY_BYTES", 4 * 1024 * 1024, 1024, 64 * 1024 * 1024, integer=True)),
        rules=rules,
        log_format=env.choice("LOG_FORMAT", "json", ("json", "text")),
        log_level=env.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
        trusted_proxies=tuple(
            p.strip() for p in env.text("FORWARDED_ALLOW_IPS", "127.0.0.1,::1").split(",") if p.strip()
        ),
        body_timeout=env.number("BODY_READ_TIMEOUT", 10.0, 0.5, 120),
        config_file=config_file,
        routes=routes,
        format=wire_format,
        **_reconciling(env, *_traffic(env), needs_ledger=rest_in_use),
        **_heartbeat(env),
    )
    if not dry_run:
        for name in env.placeholders:
            env.problem(
                f"{name} holds a placeholder such as replace-me, not a secret: set the real value "
                "(or set DRY_RUN=true to try the adapter without one)"
            )
    if env.problems:
        raise ConfigError("\n".join(env.problems))
    return config


def is_placeholder(value: str) -> bool:
    """Whether a secret is a stand-in from an example: `replace-me`, `<your key>`, `...`, `xxxx`."""
    word = re.sub(r"[^a-z0-9]", "", value.lower())
    return (
        word in PLACEHOLDERS
        or not word
        or (len(word) >= 3 and set(word) == {"x"})
        or (value.startswith("<") and value.endswith(">"))
    )


def _traffic(env: _Env) -> tuple[float, int]:
    """RESEND_INTERVAL and ALERT24_RATE_LIMIT: what reaches Alert24 (both need the ledger)."""
    resend = env.duration("RESEND_INTERVAL", 3600.0, 0, 30 * 86400)
    limit = int(env.number("ALERT24_RATE_LIMIT", 0, 0, 1_000_000, integer=True))
    return resend, limit


def _reconciling(
    env: _Env, resend_interval: float = 0.0, rate_limit: int = 0, needs_ledger: bool = False
) -> dict[str, object]:
    """The ledger and reconciler settings. The ledger is LEDGER_URL, else the SQLite file under STATE_DIRECTORY
    whenever something needs it: the reconciler (ALERTMANAGER_URL), RESEND_INTERVAL (on by default), the
    rate budget, or the rest format (`needs_ledger`), whose incidents' ids it keeps."""
    urls = tuple(u.strip().rstrip("/") for u in env.text("ALERTMANAGER_URL", "").split(",") if u.strip())
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            env.problem("ALERTMANAGER_URL must be a comma-separated list of http:// or https:// base URLs")
            break
        if parts.username is not None or parts.password is not None:
            env.problem(
                "ALERTMANAGER_URL must not hold credentials; set ALERTMANAGER_TOKEN, or ALERTMANAGER_USERNAME "
                "and ALERTMANAGER_PASSWORD"
            )
            break
    token = env.secret("ALERTMANAGER_TOKEN")
    username = env.text("ALERTMANAGER_USERNAME", "")
    password = env.secret("ALERTMANAGER_PASSWORD")
    if token and (username or password):
        env.problem("set ALERTMANAGER_TOKEN (Bearer) or ALERTMANAGER_USERNAME/ALERTMANAGER_PASSWORD (Basic), not both")
    elif bool(username) != bool(password) and "ALERTMANAGER_PASSWORD" not in env.faulty:
        env.problem("ALERTMANAGER_USERNAME and ALERTMANAGER_PASSWORD go together (HTTP Basic auth)")

    ledger_url = env.secret("LEDGER_URL")
    implicit = False
    if ledger_url:
        parts = urlsplit(ledger_url)
        if parts.scheme not in LEDGER_SCHEMES:
            env.problem("LEDGER_URL must be sqlite:///absolute/path.db or postgresql://user@host/database")
        elif parts.scheme == "sqlite" and (parts.netloc or not parts.path.startswith("/") or parts.path == "/"):
            env.problem("LEDGER_URL: a SQLite ledger is sqlite:///absolute/path.db (three slashes, an absolute path)")
        elif parts.scheme != "sqlite" and not parts.hostname and "host=" not in parts.query:
            env.problem("LEDGER_URL: a PostgreSQL ledger names its host: postgresql://user@host/database")
        elif parts.scheme != "sqlite" and (missing := _postgresql_driver_missing()):
            env.problem(
                f"LEDGER_URL: a PostgreSQL ledger needs psycopg 3, which cannot be loaded ({missing}): "
                "install the adapter with its postgresql extra, pip install 'alert24-adapter[postgresql]'"
            )
    elif (urls or resend_interval > 0 or rate_limit or needs_ledger) and "LEDGER_URL" not in env.faulty:
        # systemd's StateDirectory= may list several directories; the first is the adapter's.
        state = env.text("STATE_DIRECTORY", DEFAULT_STATE_DIRECTORY).split(":")[0]
        ledger_url = "sqlite://" + os.path.join(os.path.abspath(state), LEDGER_FILE)
        implicit = True

    interval = env.duration("RECONCILE_INTERVAL", 300.0, 0.1, 86400)
    known = len(env.problems)
    grace = env.duration("RECONCILE_GRACE", 600.0, 0, 30 * 86400)
    resend_delay = env.duration("PROMETHEUS_RESEND_DELAY", 60.0, 0.1, 3600)
    if len(env.problems) == known and grace < GRACE_RESENDS * resend_delay:
        env.problem(
            f"RECONCILE_GRACE must be at least {_span(GRACE_RESENDS * resend_delay)} ({GRACE_RESENDS} times "
            "PROMETHEUS_RESEND_DELAY, Prometheus's --rules.alert.resend-delay): after an Alertmanager restart "
            "without its data, a shorter grace resolves alerts Prometheus has not yet sent again"
        )
    max_age = env.duration("LEDGER_MAX_AGE", 30 * 86400.0, 60, 10 * 365 * 86400)
    if max_age <= grace:
        env.problem("LEDGER_MAX_AGE must be longer than RECONCILE_GRACE")
    # The delivery history lives in the ledger's store, whenever there is one.
    history_retention = env.duration("HISTORY_RETENTION", 7 * 86400.0, 0, 366 * 86400)
    history_max_rows = int(env.number("HISTORY_MAX_ROWS", 100_000, 100, 10_000_000, integer=True))
    return {
        "alertmanager_urls": urls,
        "alertmanager_token": token,
        "alertmanager_username": username,
        "alertmanager_password": password,
        "ledger_url": ledger_url,
        "ledger_implicit": implicit,
        "resend_interval": resend_interval,
        "rate_limit": rate_limit,
        "reconcile_interval": interval,
        "reconcile_grace": grace,
        "prometheus_resend_delay": resend_delay,
        "ledger_max_age": max_age,
        "history_retention": history_retention,
        "history_max_rows": history_max_rows,
    }


def _span(seconds: float) -> str:
    """A duration as it may be written back: whole minutes as `5m`, anything else in seconds."""
    return f"{int(seconds // 60)}m" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g}s"


def _heartbeat(env: _Env) -> dict[str, object]:
    """The dead-man's switch: on with HEARTBEAT_URL; the matchers are checked either way."""
    url = env.secret("HEARTBEAT_URL")
    if url:
        problem = heartbeat.url_problem(url)
        if problem:
            env.problem(f"HEARTBEAT_URL {problem}", "HEARTBEAT_URL")
    matchers = DEFAULT_HEARTBEAT_MATCHERS
    text = env.text("HEARTBEAT_MATCHERS", heartbeat.DEFAULT_MATCHERS)
    try:
        matchers = parse_matchers(text)
    except PolicyError as exc:
        env.problem(f"HEARTBEAT_MATCHERS: {exc}")
    else:
        problem = heartbeat.matchers_problem(matchers)
        if problem:
            env.problem(f"HEARTBEAT_MATCHERS {problem}")
    return {
        "heartbeat_url": url,
        "heartbeat_matchers": matchers,
        "heartbeat_min_interval": env.duration("HEARTBEAT_MIN_INTERVAL", heartbeat.DEFAULT_MIN_INTERVAL, 0, 300),
    }


def _file_matchers(value, where: str, problems: list[str]) -> tuple[Matcher, ...] | None:
    """A route's heartbeat_matchers: a list of matchers (as in rules) or one string (as HEARTBEAT_MATCHERS)."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            matchers = parse_matchers(value)
        elif isinstance(value, list):
            matchers = tuple(Matcher.parse(text) for text in value)
        else:
            problems.append(f"{where}.heartbeat_matchers: must be a list of matchers")
            return None
    except PolicyError as exc:
        problems.append(f"{where}.heartbeat_matchers: {exc}")
        return None
    problem = heartbeat.matchers_problem(matchers)
    if problem:
        problems.append(f"{where}.heartbeat_matchers: {problem}")
        return None
    return matchers


def _postgresql_driver_missing() -> str | None:
    """Why psycopg cannot be imported, or None when it can."""
    try:
        import psycopg  # noqa: F401 - only whether it loads
    except ImportError as exc:
        return str(exc).splitlines()[0][:200] if str(exc) else "not installed"
    return None


def parse_duration(text: str) -> float | None:
    """Seconds from plain seconds (`90`, `0.5`) or an Alertmanager-style duration (`30s`, `5m`, `1h30m`)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        match = _DURATION.fullmatch(text)
        if not text or not match:
            return None
        units = ("y", "w", "d", "h", "m", "s", "ms")
        return float(sum(int(n) * _DURATION_UNITS[u] for n, u in zip(match.groups(), units, strict=True) if n))
    return value if math.isfinite(value) else None


def _load_file(
    path: str,
    env: _Env,
    base: EventRules,
    dry_run: bool,
    bases: dict[str, EventRules] | None = None,
    wire_format: str = "events",
) -> tuple[EventRules, tuple[Route, ...]]:
    """The urgency rules and routes of the ADAPTER_CONFIG file; problems are reported with the file's name.

    A route of another format than ALERT24_FORMAT starts from that format's rules in `bases`."""
    import yaml  # only needed with a configuration file

    problems: list[str] = []
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        env.problem(f"ADAPTER_CONFIG: cannot read {path}: {exc.strerror}")
        return base, ()
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        env.problem(f"{path}: not valid YAML{where}")
        return base, ()
    data = {} if data is None else data
    if not isinstance(data, dict):
        env.problem(f"{path}: the file must be a mapping with 'rules' and/or 'routes'")
        return base, ()
    for key in sorted(set(data) - FILE_KEYS, key=str):
        problems.append(f"unknown key {key!r} (expected rules, routes)")
    urgency = parse_rules(data.get("rules"), "rules", problems)
    rules = dataclasses.replace(base, urgency=urgency)
    routes = []
    raw_routes = data.get("routes") or {}
    if not isinstance(raw_routes, dict):
        problems.append("routes: must be a mapping of route names to routes")
        raw_routes = {}
    for name, spec in raw_routes.items():
        where = f"routes.{name}"
        if not isinstance(name, str) or not ROUTE_NAME.fullmatch(name):
            problems.append(f"{where}: a route name is 1-63 of a-z, 0-9, _ and -, starting with a letter or digit")
            continue
        if not isinstance(spec, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        for key in sorted(set(spec) - ROUTE_KEYS, key=str):
            problems.append(f"{where}: unknown key {key!r}")
        key = _file_secret(spec, "integration_key", where, env, problems)
        named = spec.get("integration_key_env") is not None or spec.get("integration_key_file") is not None
        route_format = _file_choice(spec, "format", FORMATS, wire_format, where, problems)
        start = rules
        if route_format != wire_format:
            start = dataclasses.replace((bases or {})[route_format], urgency=urgency)
        severities = REST_SEVERITIES if route_format == "rest" else SEVERITIES
        if not named and not dry_run and route_format != "rest":
            problems.append(f"{where}: no integration key; set integration_key_env or integration_key_file")
        secret_text = _file_secret(spec, "shared_secret", where, env, problems)
        secrets = None
        if secret_text is not None:
            secrets = tuple(s.strip() for s in secret_text.split(",") if s.strip())
            if not secrets:
                problems.append(f"{where}: the route's shared secret is empty")
            elif any(is_placeholder(s) for s in secrets):
                env.placeholders.append(f"{where}.shared_secret")
        route_rules = EventRules(
            severity_label=_file_choice(spec, "severity_label", None, start.severity_label, where, problems),
            severity_map=_file_severity_map(spec.get("severity_map"), start.severity_map, where, problems, severities),
            default_severity=_file_choice(
                spec, "default_severity", severities, start.default_severity, where, problems
            ),
            dedup_by=_file_choice(spec, "dedup_by", DEDUP_MODES, start.dedup_by, where, problems),
            urgency=parse_rules(spec.get("rules"), f"{where}.rules", problems) + urgency,
        )
        matchers = _file_matchers(spec.get("heartbeat_matchers"), where, problems)
        routes.append(Route(name, key, secrets, route_rules, matchers, route_format))
    for line in problems:
        env.problem(f"{path}: {line}")
    return rules, tuple(routes)


def _file_secret(spec: dict, what: str, where: str, env: _Env, problems: list[str]) -> str | None:
    """A route's secret from the environment variable or the file the route names; never from the file itself."""
    var, path = spec.get(f"{what}_env"), spec.get(f"{what}_file")
    if var is not None and path is not None:
        problems.append(f"{where}: set {what}_env or {what}_file, not both")
        return None
    if var is not None:
        value = env.environ.get(str(var), "").strip()
        if not value:
            # The variable's name is not repeated: a secret pasted there by mistake must not reach the log.
            problems.append(f"{where}.{what}_env: the environment variable it names is not set")
    elif path is not None:
        value, problem = _read_secret_file(str(path))
        if problem:
            problems.append(f"{where}.{what}_file: {problem}")
    else:
        return None
    # A list of shared secrets is checked item by item by its reader.
    if value and what == "integration_key" and is_placeholder(value):
        env.placeholders.append(f"{where}.{what}")
    return value or None


def _file_choice(spec: dict, key: str, allowed, default: str, where: str, problems: list[str]) -> str:
    value = spec.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or not value or (allowed and value.lower() not in allowed):
        problems.append(
            f"{where}.{key}: must be one of {', '.join(allowed)}" if allowed else f"{where}.{key}: must be a label name"
        )
        return default
    return value.lower() if allowed else value


def _file_severity_map(
    value, default, where: str, problems: list[str], severities: tuple[str, ...] = SEVERITIES
) -> tuple[tuple[str, str], ...]:
    if value is None:
        return default
    if not isinstance(value, dict) or not value:
        problems.append(f"{where}.severity_map: must map label values to Alert24 severities")
        return default
    pairs = []
    for label, target in value.items():
        if not isinstance(target, str) or target.lower() not in severities:
            problems.append(f"{where}.severity_map.{label}: {target!r} is not one of {', '.join(severities)}")
            continue
        pairs.append((str(label).lower(), target.lower()))
    return tuple(pairs)


def _read_secret_file(path: str) -> tuple[str | None, str | None]:
    """A secret from a file, and the problem if there is one."""
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read {path}: {getattr(exc, 'strerror', None) or 'not readable UTF-8 text'}"
    if not value:
        return None, f"{path} is empty"
    return value, None


class _Env:
    """Typed reads from an environ mapping, each failing with a line that names the variable."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.problems: list[str] = []
        self.faulty: set[str] = set()
        # Where a placeholder stands in for a secret; a problem unless the run is dry.
        self.placeholders: list[str] = []

    def problem(self, line: str, name: str = "") -> None:
        self.problems.append(line)
        if name:
            self.faulty.add(name)

    def text(self, name: str, default: str) -> str:
        value = self.environ.get(name, "").strip()
        return value or default

    def boolean(self, name: str, default: bool) -> bool:
        value = self.environ.get(name)
        if value is None:
            return default
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        self.problem(f"{name} must be true or false")
        return default

    def choice(self, name: str, default: str, allowed) -> str:
        value = self.text(name, default).lower()
        if value not in allowed:
            self.problem(f"{name} must be one of {', '.join(allowed)}")
            return default
        return value

    def number(self, name: str, default: float, low: float, high: float, integer: bool = False) -> float:
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            self.problem(f"{name} must be {kind} from {low:g} to {high:g}")
            return default
        if not math.isfinite(value) or not low <= value <= high:
            self.problem(f"{name} must be from {low:g} to {high:g}")
            return default
        return value

    def duration(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        value = parse_duration(raw)
        if value is None or not low <= value <= high:
            self.problem(
                f"{name} must be seconds (90, 0.5) or a duration such as 30s, 5m or 1h, from {low:g} s to {high:g} s"
            )
            return default
        return value

    def secret(self, name: str, single: bool = True) -> str | None:
        """A secret from NAME, or from the file named by NAME_FILE (Kubernetes and systemd credentials).

        A single secret that is a placeholder is noted; a list is checked item by item by its reader."""
        direct = self.environ.get(name, "").strip()
        path = self.environ.get(f"{name}_FILE", "").strip()
        if direct and path:
            self.problem(f"set {name} or {name}_FILE, not both", name)
            return None
        value, problem = _read_secret_file(path) if path else (direct or None, None)
        if problem:
            self.problem(f"{name}_FILE: {problem}", name)
        if single and value and is_placeholder(value):
            self.placeholders.append(name)
        return value

    def severity_map(
        self, name: str, default: str, severities: tuple[str, ...] = SEVERITIES
    ) -> tuple[tuple[str, str], ...]:
        pairs = []
        for item in self.text(name, default).split(","):
            if not item.strip():
                continue
            label, sep, target = item.partition("=")
            label, target = label.strip().lower(), target.strip().lower()
            if not sep or not label:
                self.problem(f"{name} must be a comma-separated list of label=severity pairs")
                return ()
            if target not in severities:
                self.problem(f"{name} maps {label!r} to an unknown severity; use one of {', '.join(severities)}")
                return ()
            pairs.append((label, target))
        return tuple(pairs)
