"""The HTTP interface: a thin blueprint that authenticates, decodes, forwards and answers."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from importlib import resources

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from . import alertmanager, history, log, status
from .alert24 import alarm, gevent_patched
from .errors import BodyTimeout, BodyTooLarge, PayloadError, Unauthorized, UnknownRoute, UnsupportedMediaType
from .report import Report
from .version import __version__

bp = Blueprint("adapter", __name__)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# What is read of a body over the limit, only to name its receiver and group key: its first and last bytes,
# the rest read in chunks and thrown away, never more than SKIM_LIMIT bytes in all.
SKIM_ENDS = 64 * 1024
SKIM_LIMIT = 64 * 1024 * 1024
# Alertmanager sends a body at network speed; a client that pauses this long is not waited for.
SKIM_READ_TIMEOUT = 1.0
# A body is read this much at a time, each read given no more than what is left of BODY_READ_TIMEOUT.
BODY_CHUNK = 64 * 1024
# The most entries GET /history answers with, and the entries the status page reads.
HISTORY_LIMIT, STATUS_ENTRIES = 1000, 300


def runtime():
    """The app's Runtime (config, forwarder, metrics, targets)."""
    return current_app.extensions["alert24_adapter"]


@bp.before_app_request
def _tag_request() -> None:
    given = request.headers.get("X-Request-Id", "")
    rid = given if given and _REQUEST_ID.fullmatch(given) else os.urandom(16).hex()
    request.environ["alert24_adapter.request_id"] = rid
    request.environ["alert24_adapter.started"] = time.monotonic()
    log.request_id.set(rid)


@bp.after_app_request
def _return_request_id(response: Response) -> Response:
    rid = request.environ.get("alert24_adapter.request_id")
    if rid:
        response.headers["X-Request-Id"] = rid
    return response


@bp.post("/alertmanager", defaults={"route": None})
@bp.post("/alertmanager/<route>")
def alertmanager_webhook(route: str | None):
    """Receive one Alertmanager notification and forward its alerts to Alert24, by route."""
    rt = runtime()
    state = rt.state
    header = request.headers.get("Authorization", "")
    try:
        target = state.target(route)
    except UnknownRoute:
        # Strangers learn nothing about which routes exist.
        authenticate(header, state.config.shared_secrets)
        raise
    authenticate(header, target.secrets)
    if not request.is_json:
        raise UnsupportedMediaType("the body must be JSON (Content-Type: application/json)")
    notification = alertmanager.parse(decode(read_body(state.config.body_timeout, state.config.max_body_bytes)))
    environ = request.environ
    report = rt.forwarder.forward(
        notification, target, environ["alert24_adapter.request_id"], environ["alert24_adapter.started"]
    )
    return answer(report, notification)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Readiness: the configuration is loaded; reports (never fails on) this worker's last delivery, its
    ledger writes and the reconciler. Route names only to a caller with a shared secret."""
    rt = runtime()
    return jsonify(rt.readiness(authenticated(request.headers.get("Authorization", ""), rt.state.secrets())))


@bp.get("/history")
def delivery_history():
    """The delivery history as JSON, newest first, with `history`'s filters as query parameters; needs the secret."""
    rt = runtime()
    authenticate(request.headers.get("Authorization", ""), rt.state.secrets())
    args = request.args
    try:
        since = history.since(args["since"], time.time()) if args.get("since") else 0.0
        limit = min(int(args.get("limit", "100")), HISTORY_LIMIT)
    except ValueError as exc:
        raise PayloadError(f"{exc}" if "since" in str(exc) else "limit must be a whole number") from None
    outcome = args.get("outcome", "")
    if outcome and outcome not in history.OUTCOMES:
        raise PayloadError(f"outcome must be one of {', '.join(history.OUTCOMES)}")
    filters = history.Filters(
        args.get("alertname", ""),
        args.get("fingerprint", ""),
        args.get("dedup_key", ""),
        args.get("route", ""),
        outcome,
        (),
        since,
        max(limit, 1),
    )
    ledger = rt.forwarder.ledger
    if ledger is None or not rt.forwarder.history:
        return jsonify(error="no delivery history is kept: it needs the ledger and HISTORY_RETENTION above 0"), 404
    rt.forwarder.recorder.write_history()  # this process's latest, written now rather than within the second
    return jsonify(entries=[e.to_json() for e in ledger.history(filters)])


@bp.get("/status")
def status_page():
    """The status page: open incidents, the last notifications (failures first), Alert24's pause, the last
    delivery, heartbeat and reconciler pass; needs the secret (HTTP Basic in a browser)."""
    rt = runtime()
    if not authenticated(request.headers.get("Authorization", ""), rt.state.secrets()):
        answer = Response("the shared secret is needed: any user name, the secret as password\n", 401)
        answer.headers["WWW-Authenticate"] = 'Basic realm="alert24-adapter", charset="UTF-8"'
        return answer
    ledger, now = rt.forwarder.ledger, time.time()
    entries, incidents, total = [], [], 0
    if ledger is not None:
        if rt.forwarder.history:
            rt.forwarder.recorder.write_history()
            entries = ledger.history(history.Filters(since=now - 7 * 86400, limit=STATUS_ENTRIES))
        incidents = ledger.entries(limit=status.SHOWN)
        total = sum(ledger.counts().values())
    page = status.page(entries, incidents, total, now, rt.forwarder.history)
    html = render_template("status.html", page=page, version=__version__, trouble=status.TROUBLE)
    answer = Response(html, content_type="text/html; charset=utf-8")
    answer.headers["Cache-Control"] = "no-store"
    return answer


@bp.get("/openapi.yaml")
def openapi():
    """The OpenAPI description of this interface."""
    text = resources.files("adapter").joinpath("openapi.yaml").read_bytes()
    return Response(text, content_type="application/yaml")


@bp.get("/metrics")
def metrics():
    """Prometheus exposition, summed over all gunicorn workers."""
    data, content_type = runtime().metrics.exposition()
    return Response(data, content_type=content_type)


def authenticate(header: str, secrets: tuple[str, ...]) -> None:
    """Accept the secret as a Bearer token, as any `<Type> <credentials>`, or as a Basic password."""
    if not authenticated(header, secrets):
        raise Unauthorized("missing or wrong credentials")


def authenticated(header: str, secrets: tuple[str, ...]) -> bool:
    """Whether the Authorization header carries one of the secrets (always, when there are none)."""
    if not secrets:
        return True
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        credentials = decoded.partition(":")[2]
    offered = credentials.encode("utf-8", "surrogatepass")
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(offered, secret.encode("utf-8"))
    return bool(credentials) and matched


def read_body(timeout: float, limit: int, clock: Callable[[], float] = time.monotonic) -> bytes:
    """The request body, refused (413) when over the limit and cut off (408) when the whole of it takes longer than
    `timeout` to arrive, however it trickles in.

    A body over the limit is never kept: its ends are skimmed for the receiver and group key to log.
    """
    deadline = clock() + timeout
    sock = request.environ.get("gunicorn.socket")
    length = request.content_length
    # gunicorn itself puts no time limit on reading a body; without one a slow client holds a worker forever.
    try:
        with cut_off(timeout, sock):
            if length is not None and length > limit:
                if sock is not None:
                    sock.settimeout(min(timeout, SKIM_READ_TIMEOUT))
                head, tail = skim(request.environ["wsgi.input"], length, deadline, clock)
                raise too_large(length, limit, head, tail)
            return read_within(request.stream, deadline, clock, sock.settimeout if sock is not None else None)
    except RequestEntityTooLarge:
        # A body without a Content-Length (chunked) that grew past the limit as it was read.
        raise too_large(None, limit, b"", b"") from None
    except (OSError, ClientDisconnected):  # a timeout is an OSError, as is a read side shut by cut_off
        raise BodyTimeout(f"the body did not arrive within {timeout:g} s") from None
    finally:
        if sock is not None:
            sock.settimeout(None)


def read_within(
    stream, deadline: float, clock: Callable[[], float], bound: Callable[[float], None] | None = None
) -> bytes:
    """All of a stream, read in chunks until it ends, each limited by bound(seconds left before the deadline), a
    socket timeout; TimeoutError once the deadline (a clock() time) has passed, however fast each chunk came."""
    parts = []
    while (left := deadline - clock()) > 0:
        if bound is not None:
            bound(left)
        chunk = stream.read(BODY_CHUNK)
        if not chunk:
            if clock() >= deadline:
                break  # cut off at the deadline (under gthread, a read side shut by cut_off ends short, not in error)
            return b"".join(parts)
        parts.append(chunk)
    raise TimeoutError("the body did not arrive before its deadline")


@contextlib.contextmanager
def cut_off(seconds: float, sock) -> Iterator[None]:
    """End a read of the body still waiting `seconds` from now, within one call of the stream's read as well
    (gunicorn's loops over many socket reads, each within the socket's timeout): under gevent it raises TimeoutError;
    a thread cannot be interrupted, so under gthread the connection's read side is shut and the read comes back
    short. Without gevent or gunicorn's socket, read_within's checks between reads are all there is."""
    if gevent_patched():
        from gevent import Timeout

        with Timeout(max(seconds, 0.001), TimeoutError("the body did not arrive before its deadline")):
            yield
    elif sock is not None:
        with alarm(seconds, _shut_reading, sock):
            yield
    else:
        yield


def _shut_reading(sock) -> None:
    # socket.socket's own shutdown: ssl.SSLSocket's would also drop TLS, and the answer must still go out in it.
    with contextlib.suppress(OSError):  # the connection is gone already
        socket.socket.shutdown(sock, socket.SHUT_RD)


def skim(stream, length: int, deadline: float, clock: Callable[[], float] = time.monotonic) -> tuple[bytes, bytes]:
    """The first and last SKIM_ENDS bytes of a body too large to keep, the rest read and thrown away.

    The tail is empty when the end was not reached: a body longer than SKIM_LIMIT, or one that stopped
    arriving (a pause over SKIM_READ_TIMEOUT, or the deadline, a clock() time).
    """
    head, tail, seen = b"", b"", 0
    try:
        while seen < min(length, SKIM_LIMIT) and clock() < deadline:
            chunk = stream.read(min(SKIM_ENDS, length - seen))
            if not chunk:
                break
            seen += len(chunk)
            if len(head) < SKIM_ENDS:
                room = SKIM_ENDS - len(head)
                head, chunk = head + chunk[:room], chunk[room:]
            tail = (tail + chunk)[-SKIM_ENDS:]
    except (OSError, ValueError, ClientDisconnected):  # a timeout is an OSError; what was read still counts
        pass
    return head, tail if seen == length else b""


def too_large(length: int | None, limit: int, head: bytes, tail: bytes) -> BodyTooLarge:
    """The 413 for a body over the limit, with what its ends tell (for the log line; never in the answer)."""
    size = f"{length} bytes" if length is not None else "larger"
    message = (
        f"the body is {size}, over MAX_BODY_BYTES ({limit}): this group can never page; set max_alerts on "
        "the webhook receiver in Alertmanager, or raise MAX_BODY_BYTES"
    )
    facts: dict[str, object] = {"max_body_bytes": limit, **alertmanager.glimpse(head, tail)}
    if length is not None:
        facts["content_length"] = length
    return BodyTooLarge(message, facts)


def client_address(environ: dict, trusted: tuple[str, ...]) -> str:
    """The client's address: the nearest X-Forwarded-For hop when the peer is a trusted proxy."""
    peer = environ.get("REMOTE_ADDR", "")
    forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
    if forwarded and ("*" in trusted or peer in trusted):
        return forwarded.split(",")[-1].strip()[:64]
    return peer


def decode(body: bytes):
    """Parse the body as JSON, refusing anything else with a PayloadError."""
    try:
        return alertmanager.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise PayloadError("the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise PayloadError("the body is nested too deeply") from None


def answer(report: Report, notification: alertmanager.Notification):
    """Turn a Report into the HTTP answer Alertmanager acts on, and record it."""
    rt = runtime()
    body = report.summary()
    status = report.status
    if report.error is not None:
        body = {"error": report.error.message, **body}
        outcome = "failed" if report.error.retryable else "rejected"
    else:
        body = {"ok": True, **body}
        outcome = "dry_run" if report.dry_run else "delivered"
        if report.dry_run:
            body["dry_run"] = True
            body["would_send"] = report.requests if report.requests is not None else [e.body() for e in report.events]
    rt.metrics.webhooks.labels(outcome, str(status)).inc()
    rt.log_webhook(notification, outcome, status, body)
    return jsonify(body), status
