"""The app factory: builds the Flask app from a Config, wiring the forwarder, client and metrics."""

from __future__ import annotations

import logging
import time

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from . import log as logs
from .alert24 import Alert24Client
from .config import from_env
from .errors import AdapterError
from .forwarder import Forwarder, Target
from .metrics import Metrics
from .views import bp, client_address

access = logging.getLogger("alert24_adapter.webhook")
OUTCOMES = {
    400: "bad_request",
    401: "unauthorized",
    404: "unknown_route",
    408: "body_timeout",
    413: "too_large",
    415: "not_json",
}


class Runtime:
    """What the views need at request time: the config, the forwarder, the metrics and the default target."""

    def __init__(self, config, forwarder, metrics, default_target):
        self.config = config
        self.forwarder = forwarder
        self.metrics = metrics
        self.default_target = default_target

    def log_webhook(self, notification, outcome: str, status: int, counts: dict) -> None:
        """The one log line per webhook."""
        started = request.environ.get("alert24_adapter.started", time.monotonic())
        seconds = time.monotonic() - started
        self.metrics.webhook_seconds.observe(seconds)
        fields = {
            "outcome": outcome,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "client": client_address(request.environ, self.config.trusted_proxies),
        }
        if notification is not None:
            fields.update(
                receiver=notification.receiver,
                group_key=notification.group_key,
                alerts=len(notification.alerts),
            )
        fields.update({k: v for k, v in counts.items() if k != "would_send"})
        level = logging.INFO if status < 400 else logging.WARNING
        access.log(level, "webhook %s", outcome, extra=fields)


def create_app(config=None, client=None, metrics=None) -> Flask:
    """Build the WSGI app from a Config (default: from the environment), with an optional injected client."""
    if config is None:
        config = from_env()
    logs.setup(config.log_format, config.log_level)
    log = logging.getLogger("alert24_adapter")
    if not config.shared_secrets:
        log.warning("ALLOW_UNAUTHENTICATED=true: anyone who can reach this service can page your on-call")
    if config.dry_run:
        log.warning("DRY_RUN=true: events are logged and returned, never sent to Alert24")
    elif client is None:
        client = Alert24Client(
            config.api_url,
            config.api_key,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            retries=config.retries,
            concurrency=config.concurrency,
        )
    metrics = metrics or Metrics()
    metrics.reload_ok.set(1)
    metrics.reload_time.set_to_current_time()
    forwarder = Forwarder(client, metrics, config.time_budget, config.dry_run)
    target = Target("default", config.integration_key, config.rules)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.compact = True
    app.json.sort_keys = False
    app.extensions["alert24_adapter"] = Runtime(config, forwarder, metrics, target)
    app.register_blueprint(bp)

    @app.errorhandler(AdapterError)
    def _adapter_error(exc: AdapterError):
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
        return _error(500, "internal error; see the adapter's log")

    def _error(status: int, message: str):
        rt = app.extensions["alert24_adapter"]
        response = jsonify(error=message)
        response.status_code = status
        if status in (408, 413):
            # The unread rest of the body would otherwise be drained from a client we just refused.
            response.headers["Connection"] = "close"
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="alert24-adapter", Basic realm="alert24-adapter"'
        if request.path.startswith("/alertmanager"):
            outcome = OUTCOMES.get(status, "error")
            rt.metrics.webhooks.labels(outcome, str(status)).inc()
            rt.log_webhook(None, outcome, status, {"error": message})
        return response

    return app
