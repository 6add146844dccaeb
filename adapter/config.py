"""The adapter's configuration: one frozen object, built once from an environ mapping."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from .errors import ConfigError
from .mapping import DEDUP_MODES, SEVERITIES, EventRules

DEFAULT_API_URL = "https://app.alert24.io/api/v1/incidents"
DEFAULT_SEVERITY_MAP = "critical=critical,warning=warning,info=low"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})
MASK = "********"


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
    concurrency: int = 32
    max_body_bytes: int = 4 * 1024 * 1024
    rules: EventRules = EventRules()
    log_format: str = "json"
    log_level: str = "INFO"
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    body_timeout: float = 10.0

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
            out[f.name] = value
        return out


def from_env(environ: Mapping[str, str] | None = None) -> Config:
    """Build and validate a Config from an environ mapping.

    Raises ConfigError listing every problem found, one line each, each naming its variable.
    """
    env = _Env(os.environ if environ is None else environ)
    dry_run = env.boolean("DRY_RUN", False)
    allow_unauthenticated = env.boolean("ALLOW_UNAUTHENTICATED", False)

    secrets = tuple(s.strip() for s in (env.secret("SHARED_SECRET") or "").split(","))
    secrets = tuple(s for s in secrets if s)
    if not secrets and not allow_unauthenticated and "SHARED_SECRET" not in env.faulty:
        env.problem(
            "SHARED_SECRET is not set: set it (or SHARED_SECRET_FILE) to the secret "
            "Alertmanager sends, or set ALLOW_UNAUTHENTICATED=true"
        )
    integration_key = env.secret("ALERT24_INTEGRATION_KEY")
    if not integration_key and not dry_run and "ALERT24_INTEGRATION_KEY" not in env.faulty:
        env.problem(
            "ALERT24_INTEGRATION_KEY is not set: set it (or ALERT24_INTEGRATION_KEY_FILE) "
            "to the key of your Alert24 integration, or set DRY_RUN=true"
        )
    api_url = env.text("ALERT24_API_URL", DEFAULT_API_URL)
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        env.problem("ALERT24_API_URL must be an http:// or https:// URL")

    rules = EventRules(
        severity_label=env.text("SEVERITY_LABEL", "severity"),
        severity_map=env.severity_map("SEVERITY_MAP", DEFAULT_SEVERITY_MAP),
        default_severity=env.choice("DEFAULT_SEVERITY", "warning", SEVERITIES),
        dedup_by=env.choice("DEDUP_BY", "alert", DEDUP_MODES),
    )
    connect_timeout = env.number("ALERT24_CONNECT_TIMEOUT", 2.0, 0.1, 30)
    time_budget = env.number("WEBHOOK_TIME_BUDGET", 7.0, 0.5, 120)
    if time_budget <= connect_timeout:
        env.problem("WEBHOOK_TIME_BUDGET must be longer than ALERT24_CONNECT_TIMEOUT")

    config = Config(
        shared_secrets=secrets,
        allow_unauthenticated=allow_unauthenticated,
        integration_key=integration_key,
        api_key=env.secret("ALERT24_API_KEY"),
        api_url=api_url,
        dry_run=dry_run,
        connect_timeout=connect_timeout,
        read_timeout=env.number("ALERT24_READ_TIMEOUT", 3.0, 0.1, 60),
        retries=int(env.number("ALERT24_RETRIES", 4, 0, 10, integer=True)),
        time_budget=time_budget,
        concurrency=int(env.number("ALERT24_CONCURRENCY", 32, 1, 256, integer=True)),
        max_body_bytes=int(env.number("MAX_BODY_BYTES", 4 * 1024 * 1024, 1024, 64 * 1024 * 1024, integer=True)),
        rules=rules,
        log_format=env.choice("LOG_FORMAT", "json", ("json", "text")),
        log_level=env.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
        trusted_proxies=tuple(
            p.strip() for p in env.text("FORWARDED_ALLOW_IPS", "127.0.0.1,::1").split(",") if p.strip()
        ),
        body_timeout=env.number("BODY_READ_TIMEOUT", 10.0, 0.5, 120),
    )
    if env.problems:
        raise ConfigError("\n".join(env.problems))
    return config


class _Env:
    """Typed reads from an environ mapping, each failing with a line that names the variable."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.problems: list[str] = []
        self.faulty: set[str] = set()

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

    def secret(self, name: str) -> str | None:
        """A secret from NAME, or from the file named by NAME_FILE (Kubernetes and systemd credentials)."""
        direct = self.environ.get(name, "").strip()
        path = self.environ.get(f"{name}_FILE", "").strip()
        if direct and path:
            self.problem(f"set {name} or {name}_FILE, not both", name)
            return None
        if not path:
            return direct or None
        try:
            with open(path, encoding="utf-8") as fh:
                value = fh.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not readable UTF-8 text"
            self.problem(f"{name}_FILE: cannot read {path}: {reason}", name)
            return None
        if not value:
            self.problem(f"{name}_FILE: {path} is empty", name)
            return None
        return value

    def severity_map(self, name: str, default: str) -> tuple[tuple[str, str], ...]:
        pairs = []
        for item in self.text(name, default).split(","):
            if not item.strip():
                continue
            label, sep, target = item.partition("=")
            label, target = label.strip().lower(), target.strip().lower()
            if not sep or not label:
                self.problem(f"{name} must be a comma-separated list of label=severity pairs")
                return ()
            if target not in SEVERITIES:
                self.problem(f"{name} maps {label!r} to an unknown severity; use one of {', '.join(SEVERITIES)}")
                return ()
            pairs.append((label, target))
        return tuple(pairs)
