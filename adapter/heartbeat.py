"""The dead-man's switch: Alertmanager's always-firing Watchdog alert becomes pings of an Alert24 heartbeat URL.

Pure parts first (which alerts are heartbeats, whether a ping is due, what the webhook answers), then the
I/O around them: a small client doing the GET, and `Heartbeat`, which collapses the pings of one worker
process. The heartbeat URL holds a token: it never appears in a log line, an error or /metrics; only its
host does.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from .alert24 import describe, service_session, within
from .alertmanager import Alert
from .errors import AdapterError, DeliveryFailed
from .policy import Matcher

DEFAULT_MATCHERS = 'alertname=~"Watchdog|DeadMansSwitch"'
DEFAULT_MIN_INTERVAL = 5.0
# A ping is one small GET; a slow one must not eat the webhook's budget. Alertmanager retries a 503.
TIMEOUT = 2.0
SENT, COLLAPSED, FAILED, DRY_RUN, RESOLVED = "sent", "collapsed", "failed", "dry_run", "resolved"
MASK = "********"


@dataclasses.dataclass(frozen=True)
class Split:
    """A notification's alerts sorted: pages go on as events; firing heartbeats ping; resolved ones ping not."""

    pages: tuple[Alert, ...]
    beats: tuple[Alert, ...] = ()
    stopped: tuple[Alert, ...] = ()


def is_heartbeat(labels: Mapping[str, str], matchers: tuple[Matcher, ...]) -> bool:
    """Whether an alert's labels match every heartbeat matcher (no matchers: nothing is a heartbeat)."""
    return bool(matchers) and all(m.matches(labels) for m in matchers)


def split(alerts: Iterable[Alert], matchers: tuple[Matcher, ...]) -> Split:
    """Sort alerts into pages, firing heartbeats and resolved heartbeats, each in their original order."""
    pages, beats, stopped = [], [], []
    for alert in alerts:
        if not is_heartbeat(alert.labels, matchers):
            pages.append(alert)
        elif alert.status == "firing":
            beats.append(alert)
        else:
            stopped.append(alert)
    return Split(tuple(pages), tuple(beats), tuple(stopped))


def due(last_success: float | None, now: float, min_interval: float) -> bool:
    """Whether a ping is due: none succeeded yet, or the last success is at least `min_interval` old."""
    return last_success is None or now - last_success >= min_interval


def verdict(outcome: str | None, events_error: AdapterError | None, detail: str = "") -> AdapterError | None:
    """The webhook's error, given the heartbeat's outcome (and a failed ping's detail) and the events' verdict.

    A failed ping is temporary trouble (503, so Alertmanager retries) and outranks a rejected event; a
    sent, collapsed, dry-run or absent ping leaves the events' verdict as it is.
    """
    if outcome != FAILED:
        return events_error
    ping = f"the heartbeat ping failed: {detail}" if detail else "the heartbeat ping failed"
    if events_error is not None and events_error.retryable:
        return DeliveryFailed(f"{events_error.message}; and {ping}")
    also = f"; and {events_error.message}" if events_error is not None else ""
    return DeliveryFailed(f"{ping}{also}")


def matchers_problem(matchers: tuple[Matcher, ...]) -> str | None:
    """Why a set of heartbeat matchers is unsafe, or None: it must not turn every alert into a heartbeat."""
    if not matchers:
        return 'needs at least one matcher, such as alertname="Watchdog"'
    if is_heartbeat({}, matchers):
        return (
            "would match an alert without labels, and so nearly every alert: give at least one matcher that "
            'needs a label, such as alertname="Watchdog"'
        )
    return None


def url_problem(url: str) -> str | None:
    """Why a heartbeat URL cannot be used, or None. Never quotes the URL: its path holds a token.

    https is required; http only towards a loopback host (a local relay, or a test's fake).
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("http", "https") or not host:
        return "must be an https:// URL such as https://app.alert24.net/api/hb/<token>"
    if parts.username is not None or parts.password is not None:
        return "must not hold credentials before the host"
    if any(c.isspace() for c in url):
        return "must not contain white space"
    if parts.scheme == "http" and not is_loopback(host):
        return "must be https://; http:// is allowed only for a loopback host (127.0.0.1, ::1, localhost)"
    return None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def display(url: str) -> str:
    """The URL as logs, check-config and /readyz show it: scheme and host, the token masked."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/{MASK}"


@dataclasses.dataclass(frozen=True)
class Ping:
    """What one ping did: whether it succeeded, the status code, the time it took and, when it failed, why."""

    ok: bool
    status: int | None
    seconds: float
    detail: str = ""


class HeartbeatClient:
    """GETs the heartbeat URL: one pooled requests Session, no retries of its own, a short timeout."""

    def __init__(self, url: str, timeout: float = TIMEOUT):
        parts = urlsplit(url)
        self.url = url
        self.host = parts.hostname or ""
        self.timeout = timeout
        # Every part of the URL that could carry the token, longest first, blanked out of any error text.
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        self._secrets = tuple(s for s in (url, tail, parts.query, *parts.path.split("/")) if len(s) >= 6)
        self.session = service_session(url, HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0))

    def ping(self, deadline: float) -> Ping:
        """One GET, within the deadline (time.monotonic) and the short timeout; never raises."""
        started = time.monotonic()
        remaining = deadline - started
        if remaining <= 0.05:
            return Ping(False, None, 0.0, "the webhook time budget was spent before the heartbeat ping")
        timeout = min(self.timeout, remaining)
        try:
            # Redirects are not followed: a heartbeat URL answers where it is.
            with within(min(deadline, started + self.timeout)):
                response = self.session.get(self.url, timeout=(timeout, timeout), allow_redirects=False)
                response.content  # noqa: B018 - reads the body, which hands the connection back to the pool
        except requests.RequestException as exc:
            return Ping(
                False,
                None,
                time.monotonic() - started,
                describe(exc, self._secrets, f"the heartbeat URL at {self.host}"),
            )
        seconds = time.monotonic() - started
        status = response.status_code
        if 200 <= status < 300:
            return Ping(True, status, seconds)
        return Ping(False, status, seconds, f"the heartbeat URL at {self.host} answered {status}")

    def close(self) -> None:
        self.session.close()


class Heartbeat:
    """The pings of one worker process: one in flight at a time, and at most one per `min_interval`.

    A webhook whose ping is due takes the lock and pings; a concurrent one waits for that ping (within its
    own budget) and, if it succeeded, is collapsed into it. A failed ping never suppresses the next try.
    """

    def __init__(
        self,
        client: HeartbeatClient,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client = client
        self.min_interval = min_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last_success: float | None = None
        self.last_success_at: float | None = None
        self.last_ping: dict[str, object] | None = None

    @classmethod
    def from_config(cls, config) -> Heartbeat | None:
        """The heartbeat a Config describes (adapter.config.Config), or None without HEARTBEAT_URL."""
        if not config.heartbeat_url:
            return None
        return cls(HeartbeatClient(config.heartbeat_url), config.heartbeat_min_interval)

    @property
    def host(self) -> str:
        return self.client.host

    def beat(self, deadline: float) -> tuple[str, Ping | None]:
        """Ping unless a recent ping succeeded: (SENT, ping), (FAILED, ping) or (COLLAPSED, None)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0.05 or not self._lock.acquire(timeout=remaining - 0.05):
            return FAILED, Ping(False, None, 0.0, "the webhook time budget ran out waiting for a heartbeat ping")
        try:
            if not due(self._last_success, self.clock(), self.min_interval):
                return COLLAPSED, None
            ping = self.client.ping(deadline)
            now = time.time()
            self.last_ping = {"ok": ping.ok, "at": now, "status": ping.status, "error": ping.detail or None}
            if ping.ok:
                self._last_success = self.clock()
                self.last_success_at = now
            return (SENT if ping.ok else FAILED), ping
        finally:
            self._lock.release()

    def readiness(self) -> dict[str, object]:
        """What /readyz shows: the host (never the URL), and this worker's last ping and last success."""
        return {
            "host": self.host,
            "min_interval": self.min_interval,
            "last_ping": self.last_ping,
            "last_success": self.last_success_at,
        }
