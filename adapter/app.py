"""The app factory: builds the Flask app from a Config, wiring the forwarder, client and metrics."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from . import log as logs
from .alert24 import Alert24Client
from .alertmanager import text
from .config import RESTART_ONLY, Config, changed_settings, from_env
from .errors import AdapterError, BodyTooLarge, ConfigError, LedgerError, UnknownRoute
from .forwarder import Forwarder, Target, refresh_every
from .heartbeat import Heartbeat
from .ledger import Ledger, open_ledger, unwritable
from .metrics import Metrics
from .reconciler import AlertmanagerAPI, Reconciler
from .views import bp, client_address

log = logging.getLogger("alert24_adapter")
access = logging.getLogger("alert24_adapter.webhook")
OUTCOMES = {
    400: "bad_request",
    401: "unauthorized",
    404: "unknown_route",
    408: "body_timeout",
    413: "too_large",
    415: "not_json",
}
# What /readyz shows a caller without a secret: no location and no free text. Keys whose value says where something
# is are left out; a string is kept only under a key of fixed words (a status, an outcome) or when it is one of the
# fixed phrases below, and is otherwise replaced by WITHHELD: an error message may name a URL, a path or a host.
LOCATION_KEYS = frozenset({"routes", "url", "alertmanagers", "host"})
FIXED_WORD_KEYS = frozenset({"status", "outcome"})
WITHHELD = "withheld: ask /readyz with a shared secret for the detail"
LEDGER_OFF = "STATE_DIRECTORY cannot be written: running without the ledger, every trigger is sent"
FIXED_PHRASES = frozenset({WITHHELD, LEDGER_OFF})


@dataclasses.dataclass(frozen=True)
class State:
    """One consistent view of the configuration and the targets it defines; replaced whole on reload."""

    config: Config
    default: Target | None
    routes: dict[str, Target]

    @classmethod
    def of(cls, config: Config) -> State:
        default = None
        # The rest format needs no integration key: the API key authenticates its calls.
        if config.integration_key or config.dry_run or config.format == "rest":
            default = Target(
                "default",
                config.integration_key,
                config.rules,
                config.shared_secrets,
                route="",
                heartbeat_matchers=config.heartbeat_matchers,
                format=config.format,
                api_url=config.api_url,
            )
        routes = {
            r.name: Target(
                r.name,
                r.integration_key,
                r.rules,
                config.shared_secrets if r.shared_secrets is None else r.shared_secrets,
                route=r.name,
                heartbeat_matchers=config.heartbeat_matchers if r.heartbeat_matchers is None else r.heartbeat_matchers,
                format=r.format,
                api_url=config.api_url,
            )
            for r in config.routes
        }
        return cls(config, default, routes)

    def secrets(self) -> tuple[str, ...]:
        """Every shared secret some webhook path accepts."""
        found = [*self.config.shared_secrets]
        for target in self.routes.values():
            found.extend(s for s in target.secrets if s not in found)
        return tuple(found)

    def target(self, route: str | None) -> Target:
        """The target of /alertmanager (route None) or /alertmanager/<route>; UnknownRoute when there is none."""
        if route is None:
            if self.default is None:
                raise UnknownRoute("no default route: set ALERT24_INTEGRATION_KEY, or post to /alertmanager/<route>")
            return self.default
        found = self.routes.get(route)
        if found is None:
            raise UnknownRoute("no such route; the routes are named in the ADAPTER_CONFIG file")
        return found


class Runtime:
    """What the views need at request time: the current State, the forwarder and the metrics."""

    def __init__(
        self,
        state: State,
        forwarder: Forwarder,
        metrics: Metrics,
        environ: Mapping[str, str] | None,
        build_client: Callable[[Config], Alert24Client | None] | None = None,
    ):
        self.state = state
        self.forwarder = forwarder
        self.metrics = metrics
        self.environ = environ
        self.reconciler: Reconciler | None = None
        # Why the default ledger is off (its directory cannot be written), or None.
        self.ledger_off: str | None = None
        # How a reload builds the Alert24 client anew; None when it was given (tests): a reload keeps it.
        self.build_client = build_client

    def readiness(self, authenticated: bool = False) -> dict[str, object]:
        """What /readyz reports: the configuration, and (never failing on them) deliveries, ledger, reconciler.

        The route names, where the ledger, the Alertmanagers and the heartbeat are, and any error text only to an
        authenticated caller: strangers learn nothing about which routes exist or where the adapter's services are."""
        config = self.state.config
        out: dict[str, object] = {"status": "ready", "dry_run": config.dry_run}
        out["routes"] = sorted(self.state.routes)
        out["last_delivery"] = self.forwarder.last_delivery
        if self.forwarder.heartbeat is not None:
            out["heartbeat"] = self.forwarder.heartbeat.readiness()
        if self.ledger_off:
            # The start-up warning names the directory; this says only what it means.
            out["ledger"] = {"url": config.ledger_display(), "on": False, "ok": False, "error": LEDGER_OFF}
        if self.forwarder.ledger is not None:
            out["ledger"] = {"url": config.ledger_display(), **(self.forwarder.ledger_status or {"ok": None})}
        if self.reconciler is not None and config.reconciler_on:
            out["reconciler"] = {
                "alertmanagers": list(config.alertmanager_urls),
                "leader": self.reconciler.leader,
                "last_pass": self.reconciler.last_pass,
            }
        return out if authenticated else public(out)

    def reload(self) -> bool:
        """Re-read the configuration (the ADAPTER_CONFIG file and any secret files) and put all of it in force;
        keep the old one if broken. One warning line names what only a restart can change."""
        try:
            config = from_env(self.environ)
        except ConfigError as exc:
            self.metrics.config_loaded(False)
            log.error(
                "configuration reload failed; the previous configuration stays in force",
                extra={"problems": str(exc).splitlines()},
            )
            return False
        changed = changed_settings(self.state.config, config)
        restart = changed_settings(self.state.config, config, RESTART_ONLY)
        config = self.apply(config)
        self.metrics.config_loaded(True)
        log.info(
            "configuration reloaded",
            extra={"routes": sorted(self.state.routes), "changed": changed},
        )
        if restart:
            log.warning(f"configuration reloaded; these settings change only at a restart: {', '.join(restart)}")
        return True

    def apply(self, config: Config) -> Config:
        """Put a configuration in force, and return it: the targets, the log settings, and new clients for
        Alert24 and Alertmanager built from it. What only a restart can change (RESTART_ONLY) keeps its running
        value. A call in flight finishes on the client it began with, which is never closed under it."""
        old = self.state.config
        config = dataclasses.replace(config, **{name: getattr(old, name) for name in RESTART_ONLY})
        client = self.forwarder.client if self.build_client is None else self.build_client(config)
        logs.setup(config.log_format, config.log_level)
        forwarder = self.forwarder
        forwarder.client, forwarder.time_budget, forwarder.dry_run = client, config.time_budget, config.dry_run
        forwarder.resend_interval, forwarder.rate_limit = config.resend_interval, config.rate_limit
        forwarder.refresh_every = refresh_every(config.reconcile_grace)
        forwarder.history = config.history_on and forwarder.ledger is not None
        if forwarder.ledger is not None:
            forwarder.ledger.history_retention = config.history_retention
            forwarder.ledger.history_max_rows = config.history_max_rows
        if self.reconciler is not None:
            self.reconciler.client = client
            self.reconciler.api = AlertmanagerAPI(config) if config.reconciler_on else None
        heartbeat = ("heartbeat_url", "heartbeat_min_interval")
        if any(getattr(config, name) != getattr(old, name) for name in heartbeat):
            # HEARTBEAT_URL_FILE may hold a new token; an unchanged heartbeat keeps its last ping.
            forwarder.heartbeat = Heartbeat.from_config(config)
        self.state = State.of(config)
        return config

    def log_webhook(self, notification, outcome: str, status: int, counts: dict, level: int | None = None) -> None:
        """The one log line per webhook: at INFO when answered 2xx, else at WARNING unless `level` says."""
        started = request.environ.get("alert24_adapter.started", time.monotonic())
        seconds = time.monotonic() - started
        self.metrics.webhook_seconds.observe(seconds)
        fields = {
            "outcome": outcome,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "client": client_address(request.environ, self.state.config.trusted_proxies),
        }
        route = request.view_args.get("route") if request.view_args else None
        if route:
            # The caller chose it, and an unknown one was never validated: bounded and made encodable.
            fields["route"] = text(route[:64])
        if notification is not None:
            fields.update(
                receiver=notification.receiver,
                group_key=notification.group_key,
                alerts=len(notification.alerts),
            )
        fields.update({k: v for k, v in counts.items() if k != "would_send"})
        if level is None:
            level = logging.INFO if status < 400 else logging.WARNING
        access.log(level, "webhook %s", outcome, extra=fields)


def create_app(
    config: Config | None = None,
    client=None,
    metrics: Metrics | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Flask:
    """Build the WSGI app.

    The config defaults to one built from `environ` (default: the process environment), which is also
    what `reload_config()` re-reads. `client`, `metrics` and `clock` can be injected for tests.
    """
    if config is None:
        config = from_env(environ)
    logs.setup(config.log_format, config.log_level)
    if not config.shared_secrets:
        log.warning("ALLOW_UNAUTHENTICATED=true: anyone who can reach this service can page your on-call")
    build_client = _client if client is None else None
    if config.dry_run:
        log.warning("DRY_RUN=true: events are logged and returned, never sent to Alert24")
    elif client is None:
        client = _client(config)
    metrics = metrics or Metrics()
    metrics.config_loaded(True)
    ledger_off = ledger_unwritable(config)
    if ledger_off:
        log.warning(ledger_off)
    ledger = None if ledger_off else _ledger(config, metrics)
    forwarder = Forwarder(
        client,
        metrics,
        config.time_budget,
        config.dry_run,
        clock=clock,
        ledger=ledger,
        heartbeat=Heartbeat.from_config(config),
        resend_interval=config.resend_interval,
        rate_limit=config.rate_limit,
        refresh_every=refresh_every(config.reconcile_grace),
        history=config.history_on,
    )
    forwarder.recorder.history_written = metrics.history_rows.labels("written").inc
    forwarder.recorder.history_failed = metrics.history_rows.labels("failed").inc
    if forwarder.heartbeat is not None:
        log.info(
            "heartbeat on: Watchdog alerts ping the heartbeat URL instead of paging",
            extra={"heartbeat_host": forwarder.heartbeat.host, "matchers": [str(m) for m in config.heartbeat_matchers]},
        )
    runtime = Runtime(State.of(config), forwarder, metrics, os.environ if environ is None else environ, build_client)
    runtime.ledger_off = ledger_off
    if ledger is not None:
        metrics.count_open_incidents(ledger.counts)
        api = AlertmanagerAPI(config) if config.reconciler_on else None
        runtime.reconciler = Reconciler(ledger, metrics, client, lambda: runtime.state, api)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.compact = True
    app.json.sort_keys = False
    app.extensions["alert24_adapter"] = runtime
    app.register_blueprint(bp)

    def reload_config() -> bool:
        ok = runtime.reload()
        app.config["MAX_CONTENT_LENGTH"] = runtime.state.config.max_body_bytes
        return ok

    # gunicorn's on_reload hook (SIGHUP) calls this in the master before forking new workers.
    app.reload_config = reload_config
    # gunicorn's post_worker_init hook calls this in each worker: the reconciler's loop (its leader acts).
    app.start_background = runtime.reconciler.start if runtime.reconciler is not None else lambda: None

    @app.errorhandler(AdapterError)
    def _adapter_error(exc: AdapterError):
        if isinstance(exc, BodyTooLarge):
            # Refused again at every group_interval, and never paged: an error, not a warning.
            route = (request.view_args or {}).get("route") or "default"
            runtime.metrics.oversized.labels(route).inc()
            return _error(exc.status, exc.message, exc.facts, logging.ERROR)
        return _error(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        response = _error(exc.code or 500, exc.description or exc.name)
        for name, value in exc.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error while handling a request")
        rid = request.environ.get("alert24_adapter.request_id", "")
        return _error(500, f"internal error; see the adapter's log for request id {rid}")

    def _error(status: int, message: str, fields: dict | None = None, level: int | None = None):
        response = jsonify(error=message)
        response.status_code = status
        if status in (408, 413):
            # The unread rest of the body would otherwise be drained from a client we just refused.
            response.headers["Connection"] = "close"
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="alert24-adapter", Basic realm="alert24-adapter"'
        if request.path.startswith("/alertmanager"):
            outcome = OUTCOMES.get(status, "error")
            runtime.metrics.webhooks.labels(outcome, str(status)).inc()
            runtime.log_webhook(None, outcome, status, {"error": message, **(fields or {})}, level)
        return response

    return app


def public(value: object, key: str = "") -> object:
    """What a caller without a secret may see of a /readyz body: no location, and no free text (see WITHHELD)."""
    if isinstance(value, dict):
        return {k: public(v, k) for k, v in value.items() if k not in LOCATION_KEYS}
    if isinstance(value, (list, tuple)):
        return [public(v, key) for v in value]
    if isinstance(value, str) and key not in FIXED_WORD_KEYS and value not in FIXED_PHRASES:
        return WITHHELD
    return value


def _client(config: Config) -> Alert24Client | None:
    """The Alert24 client a configuration describes; none in a dry run."""
    return None if config.dry_run else Alert24Client.from_config(config)


def ledger_unwritable(config: Config) -> str | None:
    """Why the default ledger (SQLite under STATE_DIRECTORY) cannot be used, in one line; None when it can, or
    when the ledger is a LEDGER_URL of the operator's, whose trouble is reported as it happens."""
    if not config.ledger_on or not config.ledger_implicit:
        return None
    reason = unwritable(config.ledger_url)
    if reason is None:
        return None
    lost = "RESEND_INTERVAL, the shared rate budget" + (" and the reconciler" if config.reconciler_on else "")
    return (
        f"the ledger's directory (STATE_DIRECTORY) cannot be written: {reason}; running without the ledger: "
        f"every trigger is sent, {lost} are off"
    )


def _ledger(config: Config, metrics: Metrics) -> Ledger | None:
    """The ledger, its schema ready; a store that cannot be used now is reported, never fatal: paging comes first."""
    if not config.ledger_on:
        return None
    ledger = open_ledger(config.ledger_url, config.ledger_display())
    ledger.accepted_retention = max(config.resend_interval, 60.0)
    ledger.history_retention, ledger.history_max_rows = config.history_retention, config.history_max_rows
    ledger.on_history_pruned = metrics.history_rows.labels("pruned").inc
    try:
        ledger.setup()
    except LedgerError as exc:
        metrics.ledger_errors.labels("setup").inc()
        log.error("ledger unavailable at start-up; webhooks are still delivered: %s", exc.message)
    finally:
        # Built in gunicorn's master: no connection may be inherited by the workers.
        ledger.close()
    return ledger
